//! `forget`: which snapshots a retention policy keeps, and why.
//!
//! The rules follow restic's, which users already know: snapshots are taken newest first;
//! `--keep-last N` keeps the N newest; `--keep-daily N` keeps the newest snapshot of each of
//! the N most recent days that have one (likewise hourly, weekly by ISO week, monthly,
//! yearly); `--keep-tag T` keeps every snapshot tagged T. A snapshot kept by any rule stays.
//! Snapshots of different hosts or paths are judged separately, so a laptop's daily
//! snapshots never push a server's out.
//!
//! Forgetting only removes snapshot files: a snapshot's parent is a soft reference, so no
//! other snapshot changes. The data they alone used is freed by `prune`.

use crate::error::{Error, Result};
use crate::snapshot::SnapshotEntry;
use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::Serialize;
use std::collections::HashMap;

/// A retention policy. Counts of `None` mean "rule not given".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub tags: Vec<String>,
}

impl Policy {
    /// True when no rule was given at all (distinct from rules that happen to keep nothing).
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.tags.is_empty()
    }
}

/// One snapshot as the policy sees it: its time in the user's time zone (days and weeks
/// begin at local midnight), its tags, and the group it is judged in.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: String,
    pub time: NaiveDateTime,
    pub tags: Vec<String>,
    pub group: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    /// Why it stays ("last", "daily", "tag nightly", ...), or why it goes.
    pub reasons: Vec<String>,
}

/// The bucket a time falls in for a calendar rule; a new bucket value means a new period.
fn bucket(rule: &str, t: &NaiveDateTime) -> i64 {
    let (y, m, d, h) = (
        t.year() as i64,
        t.month() as i64,
        t.day() as i64,
        t.hour() as i64,
    );
    match rule {
        "hourly" => ((y * 100 + m) * 100 + d) * 100 + h,
        "daily" => (y * 100 + m) * 100 + d,
        "weekly" => {
            let w = t.iso_week();
            w.year() as i64 * 100 + w.week() as i64
        }
        "monthly" => y * 100 + m,
        _ => y,
    }
}

/// Decide for every candidate, keeping the input order in the output. Pure: the caller
/// supplies local times, so tests can use fixed calendars.
pub fn apply(candidates: &[Candidate], policy: &Policy) -> Vec<Decision> {
    let mut by_group: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        by_group.entry(c.group.as_str()).or_default().push(i);
    }
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); candidates.len()];
    let calendar = [
        ("hourly", policy.hourly),
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
        ("yearly", policy.yearly),
    ];
    for members in by_group.values() {
        let mut order = members.clone();
        // Newest first; ties broken by id so the outcome never depends on input order.
        order.sort_by(|&a, &b| {
            candidates[b]
                .time
                .cmp(&candidates[a].time)
                .then(candidates[a].id.cmp(&candidates[b].id))
        });
        if let Some(n) = policy.last {
            for &i in order.iter().take(n as usize) {
                reasons[i].push("last".into());
            }
        }
        for (rule, count) in calendar {
            let Some(mut left) = count else { continue };
            let mut previous: Option<i64> = None;
            for &i in &order {
                if left == 0 {
                    break;
                }
                let b = bucket(rule, &candidates[i].time);
                if previous != Some(b) {
                    reasons[i].push(rule.into());
                    previous = Some(b);
                    left -= 1;
                }
            }
        }
        for &i in &order {
            for t in &policy.tags {
                if candidates[i].tags.contains(t) {
                    reasons[i].push(format!("tag {t}"));
                }
            }
        }
    }
    candidates
        .iter()
        .zip(reasons)
        .map(|(c, r)| Decision {
            id: c.id.clone(),
            keep: !r.is_empty(),
            reasons: if r.is_empty() {
                vec!["matched no keep rule".into()]
            } else {
                r
            },
        })
        .collect()
}

/// The candidates of real snapshots, with times converted by `local` (the CLI passes the
/// user's time zone) and grouped by host and paths.
pub fn candidates(
    snapshots: &[SnapshotEntry],
    local: impl Fn(i64) -> NaiveDateTime,
) -> Vec<Candidate> {
    snapshots
        .iter()
        .map(|s| Candidate {
            id: s.id.clone(),
            time: local(s.snapshot.time_ns),
            tags: s.snapshot.tags.clone(),
            group: format!("{}\0{}", s.snapshot.hostname, s.snapshot.paths.join("\0")),
        })
        .collect()
}

/// Apply `policy`, refusing (unless `force`) one that would remove every snapshot: that is
/// almost always a mistake in the flags, and it cannot be undone.
pub fn plan(candidates: &[Candidate], policy: &Policy, force: bool) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::NoPolicy);
    }
    let decisions = apply(candidates, policy);
    if !force && !decisions.is_empty() && decisions.iter().all(|d| !d.keep) {
        return Err(Error::PolicyKeepsNothing {
            snapshots: decisions.len(),
        });
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    fn cand(name: &str, t: NaiveDateTime) -> Candidate {
        Candidate {
            id: name.into(),
            time: t,
            tags: vec![],
            group: "g".into(),
        }
    }

    /// Ids kept, in input order.
    fn kept(cands: &[Candidate], p: &Policy) -> Vec<String> {
        apply(cands, p)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect()
    }

    /// One snapshot every 6 hours through January 2024 (Mon 1st .. Wed 31st), named by date.
    fn january() -> Vec<Candidate> {
        let mut v = Vec::new();
        for d in 1..=31 {
            for h in [0, 6, 12, 18] {
                v.push(cand(&format!("01-{d:02}T{h:02}"), at(2024, 1, d, h, 0)));
            }
        }
        v
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let p = Policy {
            last: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&january(), &p), ["01-31T06", "01-31T12", "01-31T18"]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_snapshot_of_each_recent_day() {
        let p = Policy {
            daily: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&january(), &p), ["01-29T18", "01-30T18", "01-31T18"]);
    }

    #[test]
    fn keep_hourly_counts_hours_that_have_a_snapshot_not_clock_hours() {
        let p = Policy {
            hourly: Some(2),
            ..Default::default()
        };
        // The two most recent hours holding snapshots are 12:00 and 18:00 on the 31st.
        assert_eq!(kept(&january(), &p), ["01-31T12", "01-31T18"]);
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_that_start_on_monday() {
        let p = Policy {
            weekly: Some(3),
            ..Default::default()
        };
        // Jan 2024: Mondays are the 1st, 8th, 15th, 22nd, 29th. Newest of the last three
        // weeks: Sun 21st 18:00, Sun 28th 18:00, Wed 31st 18:00.
        assert_eq!(kept(&january(), &p), ["01-21T18", "01-28T18", "01-31T18"]);
    }

    #[test]
    fn keep_weekly_across_a_year_boundary_follows_the_iso_calendar() {
        // 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 2020-W53.
        let c = vec![
            cand("dec28", at(2020, 12, 28, 9, 0)),
            cand("dec31", at(2020, 12, 31, 9, 0)),
            cand("jan03", at(2021, 1, 3, 9, 0)),
            cand("jan04", at(2021, 1, 4, 9, 0)),
        ];
        let p = Policy {
            weekly: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p), ["jan03", "jan04"]);
    }

    #[test]
    fn keep_monthly_and_yearly_over_three_years() {
        // The 1st and 15th of every month, 2021–2023.
        let mut c = Vec::new();
        for y in 2021..=2023 {
            for m in 1..=12 {
                for d in [1, 15] {
                    c.push(cand(&format!("{y}-{m:02}-{d:02}"), at(y, m, d, 12, 0)));
                }
            }
        }
        let monthly = Policy {
            monthly: Some(4),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &monthly),
            ["2023-09-15", "2023-10-15", "2023-11-15", "2023-12-15"]
        );
        let yearly = Policy {
            yearly: Some(10),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &yearly),
            ["2021-12-15", "2022-12-15", "2023-12-15"]
        );
    }

    #[test]
    fn rules_combine_and_each_reason_is_named() {
        let mut c = january();
        c[0].tags = vec!["release".into()];
        let p = Policy {
            last: Some(1),
            daily: Some(2),
            tags: vec!["release".into()],
            ..Default::default()
        };
        let d = apply(&c, &p);
        let kept: Vec<(&str, Vec<String>)> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| (d.id.as_str(), d.reasons.clone()))
            .collect();
        assert_eq!(
            kept,
            [
                ("01-01T00", vec!["tag release".to_string()]),
                ("01-30T18", vec!["daily".to_string()]),
                ("01-31T18", vec!["last".to_string(), "daily".to_string()]),
            ]
        );
        let gone = d.iter().find(|d| d.id == "01-15T06").unwrap();
        assert_eq!(gone.reasons, ["matched no keep rule"]);
    }

    #[test]
    fn groups_are_judged_separately() {
        let mut c = vec![
            cand("laptop-old", at(2024, 3, 1, 9, 0)),
            cand("laptop-new", at(2024, 3, 2, 9, 0)),
            cand("server", at(2024, 2, 1, 9, 0)),
        ];
        c[2].group = "server".into();
        let p = Policy {
            last: Some(1),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p), ["laptop-new", "server"]);
    }

    #[test]
    fn a_policy_that_keeps_nothing_is_refused_unless_forced() {
        let c = january();
        let p = Policy {
            last: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            plan(&c, &p, false),
            Err(Error::PolicyKeepsNothing { snapshots: 124 })
        ));
        assert!(plan(&c, &p, true).unwrap().iter().all(|d| !d.keep));
        let tag_nobody_has = Policy {
            tags: vec!["nope".into()],
            ..Default::default()
        };
        assert!(plan(&c, &tag_nobody_has, false).is_err());
        assert!(matches!(
            plan(&c, &Policy::default(), true),
            Err(Error::NoPolicy)
        ));
    }
}
