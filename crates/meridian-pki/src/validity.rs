//! How long a certificate is valid.

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

const DAY: u64 = 24 * 3600;

/// Default lifetime of node, agent, Envoy and operator certificates.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * DAY);
/// Default lifetime of a CA: long enough that a development setup does not
/// have to rotate it, short enough to end one day.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);

/// Backdating `not_before` a little keeps a certificate usable on a peer
/// whose clock runs slightly behind the issuer's.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A certificate's validity window. Any window may be given, including one
/// entirely in the past (tests of expiry handling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From (a few minutes before) now for `period`.
    pub fn for_period(period: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + period,
        }
    }

    pub fn leaf_default() -> Validity {
        Validity::for_period(LEAF_VALIDITY)
    }

    pub fn ca_default() -> Validity {
        Validity::for_period(CA_VALIDITY)
    }
}

/// Parses `10y`, `365d`, `12h`, `30m` or `90s` (a year is 365 days).
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("{s:?} is not a validity period; use e.g. 10y, 365d, 12h, 30m");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "y" => 365 * DAY,
        "d" => DAY,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("{s:?}: a validity period must be longer than 0"));
    }
    // Beyond 1000 years the dates no longer fit X.509's GeneralizedTime
    // comfortably, and no certificate should live that long anyway.
    n.checked_mul(unit_secs)
        .filter(|secs| *secs <= 1000 * 365 * DAY)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: at most 1000y"))
}

/// `2027-12-01 20:15:00 UTC`, for what the CLI prints.
pub fn format_utc(t: SystemTime) -> String {
    let secs = crate::x509::unix_seconds(t);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("unix time {secs}"),
    }
}
