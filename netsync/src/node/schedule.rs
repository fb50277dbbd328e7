//! When the node's scheduled work is due, as pure functions of the clock (unit-tested
//! without waiting).

use std::time::Duration;

/// Seconds from `now` until the next scheduled snapshot, given the newest snapshot's time:
/// at once when there is none or it is `every` old already, else when it will be. `None`
/// when snapshots are off.
pub fn first_snapshot_in(
    every: Duration,
    newest_unix: Option<u64>,
    now_unix: u64,
) -> Option<Duration> {
    if every.is_zero() {
        return None;
    }
    Some(match newest_unix {
        None => Duration::ZERO,
        Some(t) => {
            let due = t.saturating_add(every.as_secs());
            Duration::from_secs(due.saturating_sub(now_unix))
        }
    })
}

/// Whether a host that has not answered since `since_unix` is lost: no answer for longer
/// than the grace. (A failed challenge is evidence and needs no grace.)
pub fn absent_past_grace(since_unix: u64, now_unix: u64, grace: Duration) -> bool {
    now_unix.saturating_sub(since_unix) >= grace.as_secs()
}

/// A duration as a flag gives it: seconds (`3600`), or a number with a unit (`90s`,
/// `15m`, `1h`, `3d`); `0` turns the schedule off.
pub fn parse_every(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?}: expected seconds or a number with s, m, h or d (e.g. 90s, 15m, 1h, 3d)")
    })?;
    let mul = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        u => return Err(format!("{s:?}: unknown unit {u:?} (s, m, h or d)")),
    };
    n.checked_mul(mul)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_snapshot_is_at_once_unless_a_recent_one_exists() {
        let h = Duration::from_secs(3600);
        assert_eq!(first_snapshot_in(h, None, 10_000), Some(Duration::ZERO));
        assert_eq!(
            first_snapshot_in(h, Some(1_000), 10_000),
            Some(Duration::ZERO),
            "overdue"
        );
        assert_eq!(
            first_snapshot_in(h, Some(9_000), 10_000),
            Some(Duration::from_secs(2_600))
        );
        assert_eq!(first_snapshot_in(Duration::ZERO, None, 10_000), None, "off");
    }

    #[test]
    fn a_host_is_lost_only_past_the_grace() {
        let g = Duration::from_secs(3 * 86400);
        assert!(!absent_past_grace(1_000, 1_000 + 3 * 86400 - 1, g));
        assert!(absent_past_grace(1_000, 1_000 + 3 * 86400, g));
        assert!(
            !absent_past_grace(5_000, 1_000, g),
            "a clock gone back is no absence"
        );
    }

    #[test]
    fn schedules_read_seconds_or_units() {
        assert_eq!(parse_every("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_every("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_every("0"), Ok(Duration::ZERO));
        assert_eq!(parse_every("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_every("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_every("3d"), Ok(Duration::from_secs(3 * 86400)));
        assert!(parse_every("1w").unwrap_err().contains("unit"));
        assert!(parse_every("soon").is_err());
    }
}
