//! What a writer is told when a revision precondition fails.

use meridian_store::{ObjectKey, StateMachineStore};

pub(crate) fn conflict_message(
    sm: &StateMachineStore,
    key: &ObjectKey,
    expected: u64,
    actual: u64,
) -> String {
    let current = sm.get(key);
    match (expected, current) {
        (0, Some(obj)) => format!(
            "{key}: already exists (revision {}, changed at {}); get it and retry with --revision {}",
            obj.revision,
            fmt_ms(obj.updated_at_ms),
            obj.revision
        ),
        (_, None) => format!("{key}: expected revision {expected}, but it does not exist (deleted or never created)"),
        (_, Some(obj)) => format!(
            "{key}: expected revision {expected}, but it is at revision {} (changed at {}); get it again, re-apply your change and retry",
            if actual == 0 { obj.revision } else { actual },
            fmt_ms(obj.updated_at_ms)
        ),
    }
}

fn fmt_ms(ms: u64) -> String {
    // RFC 3339 in UTC without pulling in a date crate.
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_ms_as_rfc3339() {
        assert_eq!(super::fmt_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::fmt_ms(1_764_175_000_000), "2025-11-26T16:36:40Z");
    }
}
