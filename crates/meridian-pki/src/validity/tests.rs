use std::time::{Duration, UNIX_EPOCH};

use super::*;

#[test]
fn periods() {
    assert_eq!(parse_period("10y").unwrap(), CA_VALIDITY);
    assert_eq!(parse_period("365d").unwrap(), LEAF_VALIDITY);
    assert_eq!(parse_period("12h").unwrap(), Duration::from_secs(12 * 3600));
    assert_eq!(parse_period(" 30m ").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_period("90s").unwrap(), Duration::from_secs(90));
    for bad in ["", "y", "10", "1.5y", "-1d", "10w", "0d"] {
        let err = parse_period(bad).unwrap_err();
        assert!(err.contains(&format!("{:?}", bad.trim())), "{bad:?}: {err}");
    }
    assert!(parse_period("1001y").unwrap_err().contains("at most 1000y"));
    assert!(parse_period("99999999999999999999y").is_err());
}

#[test]
fn windows_and_dates() {
    let v = Validity::for_period(Duration::from_secs(3600));
    assert!(v.not_before < SystemTime::now() && v.not_after > SystemTime::now());
    let t = UNIX_EPOCH + Duration::from_secs(1_796_156_100);
    assert_eq!(format_utc(t), "2026-12-01 20:15:00 UTC");
}
