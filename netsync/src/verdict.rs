//! The protection verdict: in one line, whether the owner's newest snapshot can be brought
//! back from its hosts, and how many more losses it would survive. A pure function of the
//! owner's records ([`PeerState`], [`Placement`]), the snapshot and the time, so that
//! `pluto status`, the node's events and any front end say the same thing.
//!
//! Only hosts in good standing that were reachable the last time they were tried count:
//! a host that failed a challenge, was excluded, or could not be reached holds nothing
//! as far as the verdict is concerned.

use serde::Serialize;

use crate::peer::proto::Kind;
use crate::peer::state::{ItemKey, PeerState, Placement};
use crate::wire::NodeId;

/// How protected the data is. The CLI's exit codes follow it (0, 5, 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The newest snapshot is fully placed on reachable, trusted hosts and survives the
    /// loss of at least one more of them.
    Protected,
    /// It can be restored now, but it is short of its placement (hosts unreachable or
    /// failed, not all pushed) or one more loss would make it unrestorable.
    AtRisk,
    /// Nothing to restore from the hosts: no snapshot, nothing pushed, or too few of the
    /// newest snapshot's files on hosts that count.
    NotProtected,
}

/// The newest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRef {
    pub id: [u8; 32],
    pub time_unix: u64,
}

/// What the verdict is computed from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub state: &'a PeerState,
    pub placement: &'a Placement,
    pub latest: Option<SnapshotRef>,
    /// Every file the newest snapshot needs: its snapshot file, the index files, the
    /// config and the packs.
    pub files: &'a [ItemKey],
    /// Of `files`, the packs the index names that are not on this computer (a recovery
    /// that could not reach every host): the node fetches them back.
    pub missing_here: &'a [ItemKey],
    /// Hosts that should hold each whole file (not a share): the target of the placement
    /// (k copies; with k-of-n shares, n − k + 1, which survives as many losses).
    pub whole_copies_wanted: usize,
    /// A host counts as verified when it passed a challenge this recently (seconds).
    pub verified_within: u64,
    pub now: u64,
}

/// How one host stands, as the verdict counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStanding {
    /// Reachable, trusted, passed a challenge within `verified_within`.
    Verified,
    /// Reachable and trusted, but not challenged (and passed) recently.
    Unverified,
    Unreachable,
    Failed,
}

/// One row per host, for `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    pub node: String,
    pub url: String,
    pub standing: HostStanding,
    /// Files of the newest snapshot it holds (whole files and shares).
    pub files: usize,
    pub last_seen_unix: Option<u64>,
    pub unreachable_since: Option<u64>,
    pub last_challenge_unix: Option<u64>,
    pub last_challenge_passed: Option<bool>,
    pub failure: Option<String>,
    /// How the last push reached it: direct or through the coordinator's relay.
    pub path: Option<crate::peer::state::PathKind>,
}

/// The verdict: the level, one line saying it, the reasons behind it, and the hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protection {
    pub level: Level,
    pub summary: String,
    pub reasons: Vec<String>,
    /// Losses of counted hosts the newest snapshot survives now (absent when it cannot be
    /// restored, or there is none).
    pub survives_losses: Option<usize>,
    pub hosts: Vec<HostRow>,
}

/// A duration in human units: "40 s", "12 min", "5 h", "3 days".
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 90 => format!("{s} s"),
        s if s < 90 * 60 => format!("{} min", (s + 30) / 60),
        s if s < 36 * 3600 => format!("{} h", (s + 1800) / 3600),
        s => format!("{} days", (s + 43_200) / 86_400),
    }
}

fn short(id: &[u8; 32]) -> String {
    hex::encode(&id[..2])
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Compute the verdict.
pub fn verdict(i: &Inputs<'_>) -> Protection {
    let standing = |id: &NodeId| -> HostStanding {
        let Some(r) = i.state.hosts.get(id) else {
            return HostStanding::Unreachable;
        };
        if r.failed {
            HostStanding::Failed
        } else if r.unreachable_since.is_some() {
            HostStanding::Unreachable
        } else if r
            .last_challenge
            .as_ref()
            .is_some_and(|c| c.passed && i.now.saturating_sub(c.unix) <= i.verified_within)
        {
            HostStanding::Verified
        } else {
            HostStanding::Unverified
        }
    };
    let counts = |id: &NodeId| {
        matches!(
            standing(id),
            HostStanding::Verified | HostStanding::Unverified
        )
    };
    // Per file: (holders that count, holders needed, holders wanted, holders at all).
    let mut held_by: std::collections::BTreeMap<NodeId, usize> = Default::default();
    let mut worst_margin: Option<i64> = None;
    let (mut short_of_target, mut never_placed, mut unrestorable) = (0usize, 0usize, 0usize);
    // missing here and on record at no host: only the hosts' listings can bring them back
    let mut lost_here = 0usize;
    let missing_here: std::collections::HashSet<&ItemKey> = i.missing_here.iter().collect();
    for f in i.files {
        let (counted, needed, wanted, anywhere) = match i.placement.packs.get(&f.name) {
            Some(p) if f.kind == Kind::Pack => {
                let holders: Vec<NodeId> = p
                    .shares
                    .iter()
                    .filter_map(|s| {
                        s.host.filter(|h| {
                            i.state.hosts.get(h).is_some_and(|r| {
                                r.stored.contains_key(&ItemKey::new(Kind::Share, s.name))
                            })
                        })
                    })
                    .collect();
                for h in &holders {
                    *held_by.entry(*h).or_default() += 1;
                }
                let counted = holders.iter().filter(|h| counts(h)).count();
                (counted, usize::from(p.k), usize::from(p.n), holders.len())
            }
            _ => {
                let holders: Vec<NodeId> = i
                    .state
                    .hosts
                    .iter()
                    .filter(|(_, r)| r.stored.contains_key(f))
                    .map(|(h, _)| *h)
                    .collect();
                for h in &holders {
                    *held_by.entry(*h).or_default() += 1;
                }
                let counted = holders.iter().filter(|h| counts(h)).count();
                (counted, 1, i.whole_copies_wanted.max(1), holders.len())
            }
        };
        let margin = counted as i64 - needed as i64;
        worst_margin = Some(worst_margin.map_or(margin, |w| w.min(margin)));
        if counted < wanted {
            short_of_target += 1;
        }
        if anywhere == 0 {
            if missing_here.contains(f) {
                lost_here += 1;
            } else {
                never_placed += 1;
            }
        }
        if margin < 0 {
            unrestorable += 1;
        }
    }

    let mut hosts: Vec<HostRow> = i
        .state
        .hosts
        .iter()
        .map(|(id, r)| HostRow {
            node: id.to_hex(),
            url: r.url.clone(),
            standing: standing(id),
            files: held_by.get(id).copied().unwrap_or(0),
            last_seen_unix: (r.last_seen_unix > 0).then_some(r.last_seen_unix),
            unreachable_since: r.unreachable_since,
            last_challenge_unix: r.last_challenge.as_ref().map(|c| c.unix),
            last_challenge_passed: r.last_challenge.as_ref().map(|c| c.passed),
            path: r.last_path,
            failure: r.failure.as_ref().map(|f| f.reason.clone()).or_else(|| {
                r.failed
                    .then(|| "failed (recorded before failures had reasons)".into())
            }),
        })
        .collect();
    hosts.sort_by(|a, b| b.files.cmp(&a.files).then(a.node.cmp(&b.node)));

    let Some(snap) = i.latest else {
        return Protection {
            level: Level::NotProtected,
            summary: "Not protected: no snapshot yet (pluto snapshot, then pluto push)".into(),
            reasons: vec!["the repository has no snapshot".into()],
            survives_losses: None,
            hosts,
        };
    };
    let age = human_duration(i.now.saturating_sub(snap.time_unix));
    let name = format!("snapshot {} ({age} old)", short(&snap.id));
    // The hosts that hold any of it, and how they stand.
    let holding: Vec<&HostRow> = hosts.iter().filter(|h| h.files > 0).collect();
    let of = |s: HostStanding| holding.iter().filter(|h| h.standing == s).count();
    let (unreachable, failed, verified) = (
        of(HostStanding::Unreachable),
        of(HostStanding::Failed),
        of(HostStanding::Verified),
    );
    let mut reasons = Vec::new();
    if unreachable > 0 {
        let longest = holding
            .iter()
            .filter_map(|h| h.unreachable_since)
            .min()
            .map(|t| human_duration(i.now.saturating_sub(t)))
            .unwrap_or_default();
        reasons.push(format!(
            "{unreachable} of {} unreachable (the first for {longest})",
            plural(holding.len(), "host", "hosts")
        ));
    }
    if failed > 0 {
        reasons.push(format!(
            "{} failed a challenge or {} excluded: {} copies do not count",
            plural(failed, "host", "hosts"),
            if failed == 1 { "was" } else { "were" },
            if failed == 1 { "its" } else { "their" }
        ));
    }
    let placement_desc = match i.placement.packs.values().next() {
        Some(p) => format!("as {}/{}", p.k, p.n),
        None => format!(
            "as {}",
            plural(i.whole_copies_wanted.max(1), "copy", "copies")
        ),
    };
    let counted_hosts = holding
        .iter()
        .filter(|h| {
            matches!(
                h.standing,
                HostStanding::Verified | HostStanding::Unverified
            )
        })
        .count();

    if holding.is_empty() || never_placed + lost_here == i.files.len() {
        reasons.push("no host holds any of its files".into());
        return Protection {
            level: Level::NotProtected,
            summary: format!("Not protected: nothing pushed yet ({name} is only here)"),
            reasons,
            survives_losses: None,
            hosts,
        };
    }
    if unrestorable > 0 {
        if never_placed > 0 {
            reasons.push(format!(
                "{} not on any host yet (push)",
                plural(never_placed, "file", "files")
            ));
        }
        if lost_here > 0 {
            reasons.push(format!(
                "{} the snapshots need {} missing here and on record at no host (the node asks the hosts for {})",
                plural(lost_here, "pack", "packs"),
                if lost_here == 1 { "is" } else { "are" },
                if lost_here == 1 { "it" } else { "them" }
            ));
        }
        reasons.push(format!(
            "{} cannot be rebuilt from the hosts that count",
            plural(unrestorable, "file", "files")
        ));
        return Protection {
            level: Level::NotProtected,
            summary: format!(
                "Not protected: {name} cannot be restored from its hosts — {}",
                reasons.join("; ")
            ),
            reasons,
            survives_losses: None,
            hosts,
        };
    }
    let margin = worst_margin.unwrap_or(0).max(0) as usize;
    let verified_text = if verified == counted_hosts {
        format!(
            "all verified in the last {}",
            human_duration(i.verified_within)
        )
    } else {
        format!(
            "{verified} of {counted_hosts} verified in the last {}",
            human_duration(i.verified_within)
        )
    };
    if short_of_target > 0 {
        reasons.push(format!(
            "{} short of the placement {placement_desc}",
            plural(short_of_target, "file is", "files are")
        ));
    }
    // Unreachable and failed hosts matter through what they leave short: once their files
    // are placed elsewhere, the data is protected again.
    if margin == 0 || short_of_target > 0 {
        let losses = format!(
            "{} more {} and {} cannot be restored",
            margin + 1,
            if margin == 0 { "loss" } else { "losses" },
            format_args!("snapshot {}", short(&snap.id))
        );
        let head = if reasons.is_empty() {
            format!("{name} on {}", plural(counted_hosts, "host", "hosts"))
        } else {
            reasons.join("; ")
        };
        reasons.push(losses.clone());
        return Protection {
            level: Level::AtRisk,
            summary: format!("At risk: {head}; {losses}"),
            reasons,
            survives_losses: Some(margin),
            hosts,
        };
    }
    reasons.push(verified_text.clone());
    reasons.push(format!(
        "survives the loss of {}",
        plural(margin, "host", "hosts")
    ));
    Protection {
        level: Level::Protected,
        summary: format!(
            "Protected: {name} on {} {placement_desc}, {verified_text}",
            plural(counted_hosts, "host", "hosts")
        ),
        reasons,
        survives_losses: Some(margin),
        hosts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::client::HostAddr;
    use crate::peer::state::{
        ChallengeOutcome, ChallengeRecord, FailureKind, PackPlacement, SharePlacement,
    };

    const NOW: u64 = 1_000_000;
    const DAY: u64 = 86_400;

    fn addr(i: u8) -> HostAddr {
        HostAddr {
            node: NodeId([i; 32]),
            url: format!("ws://h{i}"),
        }
    }

    #[derive(Clone, Copy)]
    enum H {
        /// passed a challenge this long ago
        Verified(u64),
        Unverified,
        Down(u64),
        Failed,
    }

    /// A repository of `packs` packs plus a snapshot file, on `hosts.len()` hosts: as
    /// `shares` (k, n) groups over the hosts, or whole copies on each of them.
    fn world(
        hosts: &[H],
        shares: Option<(u8, u8)>,
        packs: u8,
    ) -> (PeerState, Placement, Vec<ItemKey>) {
        let mut st = PeerState::default();
        let mut pl = Placement::default();
        let mut files = vec![ItemKey::new(Kind::Snapshot, [0x5f; 32])];
        for p in 0..packs {
            files.push(ItemKey::new(Kind::Pack, [p; 32]));
        }
        for (i, h) in hosts.iter().enumerate() {
            let r = st.host(&addr(i as u8));
            r.mark_seen(NOW - 10);
            match *h {
                H::Verified(ago) => r.record_challenge(
                    ChallengeRecord {
                        unix: NOW - ago,
                        pack: String::new(),
                        proof: true,
                        passed: true,
                        detail: String::new(),
                    },
                    ChallengeOutcome::Passed,
                ),
                H::Unverified => {}
                H::Down(ago) => {
                    r.last_seen_unix = NOW - ago - 1;
                    r.mark_unreachable(NOW - ago)
                }
                H::Failed => r.mark_failed(FailureKind::Challenge, NOW - 50, "wrong answer"),
            }
            // whole files on every host; packs whole only without shares
            r.stored.insert(files[0], 100);
            if shares.is_none() {
                for f in &files[1..] {
                    r.stored.insert(*f, 100);
                }
            }
        }
        if let Some((k, n)) = shares {
            for p in 0..packs {
                let mut ps = Vec::new();
                for s in 0..n {
                    let name = [100 + p * 16 + s; 32];
                    let host = (usize::from(s) < hosts.len()).then_some(NodeId([s; 32]));
                    if let Some(h) = host {
                        st.hosts
                            .get_mut(&h)
                            .unwrap()
                            .stored
                            .insert(ItemKey::new(Kind::Share, name), 10);
                    }
                    ps.push(SharePlacement {
                        name,
                        len: 10,
                        host,
                    });
                }
                pl.packs.insert([p; 32], PackPlacement { k, n, shares: ps });
            }
        }
        (st, pl, files)
    }

    fn judge(hosts: &[H], shares: Option<(u8, u8)>, whole: usize) -> Protection {
        let (st, pl, files) = world(hosts, shares, 3);
        verdict(&Inputs {
            state: &st,
            placement: &pl,
            latest: Some(SnapshotRef {
                id: [0x5f; 32],
                time_unix: NOW - 2 * 3600,
            }),
            files: &files,
            missing_here: &[],
            whole_copies_wanted: whole,
            verified_within: DAY,
            now: NOW,
        })
    }

    use H::*;

    /// (case, hosts, shares k/n or whole copies, whole copies wanted, level, losses
    /// survived, words in the summary)
    type Row = (
        &'static str,
        Vec<H>,
        Option<(u8, u8)>,
        usize,
        Level,
        Option<usize>,
        &'static [&'static str],
    );

    #[test]
    fn the_verdict_table() {
        let ok = Verified(3600);
        // (case, hosts, placement, whole copies wanted, level, survives, words in the summary)
        let table: Vec<Row> = vec![
            ("4/8 on 8 verified hosts", vec![ok; 8], Some((4, 8)), 5, Level::Protected, Some(4),
                &["Protected: snapshot 5f5f (2 h old) on 8 hosts as 4/8, all verified in the last 24 h"]),
            ("4/8, one host not challenged lately", [vec![ok; 7], vec![Verified(3 * DAY)]].concat(), Some((4, 8)), 5,
                Level::Protected, Some(4), &["7 of 8 verified in the last 24 h"]),
            ("4/8, never challenged", vec![Unverified; 8], Some((4, 8)), 5, Level::Protected, Some(4),
                &["0 of 8 verified"]),
            ("4/8 with 3 hosts down", [vec![ok; 5], vec![Down(600); 3]].concat(), Some((4, 8)), 5,
                Level::AtRisk, Some(1), &["At risk: 3 of 8 hosts unreachable (the first for 10 min)", "2 more losses and snapshot 5f5f cannot be restored"]),
            ("4/8 with 4 down: nothing to spare", [vec![ok; 4], vec![Down(7200); 4]].concat(), Some((4, 8)), 5,
                Level::AtRisk, Some(0), &["4 of 8 hosts unreachable (the first for 2 h)", "1 more loss and"]),
            ("4/8 with 5 down", [vec![ok; 3], vec![Down(60); 5]].concat(), Some((4, 8)), 5,
                Level::NotProtected, None, &["Not protected: snapshot 5f5f (2 h old) cannot be restored", "3 files cannot be rebuilt"]),
            ("4/8 with a failed host", [vec![ok; 7], vec![Failed]].concat(), Some((4, 8)), 5,
                Level::AtRisk, Some(3), &["1 host failed a challenge or was excluded", "4 more losses"]),
            ("4/8 on 6 hosts: 2 shares unplaced", vec![ok; 6], Some((4, 8)), 5,
                Level::AtRisk, Some(2), &["3 files are short of the placement as 4/8"]),
            ("2 copies, both verified", vec![ok; 2], None, 2, Level::Protected, Some(1),
                &["Protected: snapshot 5f5f (2 h old) on 2 hosts as 2 copies, all verified in the last 24 h"]),
            ("2 copies, one down", vec![ok, Down(100)], None, 2, Level::AtRisk, Some(0),
                &["1 of 2 hosts unreachable (the first for 2 min)", "1 more loss and snapshot 5f5f cannot be restored"]),
            ("2 copies, both down", vec![Down(100); 2], None, 2, Level::NotProtected, None,
                &["cannot be restored from its hosts"]),
            ("1 copy wanted, 1 held", vec![ok], None, 1, Level::AtRisk, Some(0), &["1 more loss"]),
            ("3 copies, one failed", vec![ok, ok, Failed], None, 3, Level::AtRisk, Some(1),
                &["1 host failed a challenge", "its copies do not count"]),
            ("no hosts at all", vec![], None, 2, Level::NotProtected, None,
                &["Not protected: nothing pushed yet (snapshot 5f5f (2 h old) is only here)"]),
        ];
        for (case, hosts, shares, whole, level, survives, words) in table {
            let v = judge(&hosts, shares, whole);
            assert_eq!(v.level, level, "{case}: {}", v.summary);
            assert_eq!(v.survives_losses, survives, "{case}: {}", v.summary);
            for w in words {
                assert!(v.summary.contains(w), "{case}: {:?} lacks {w:?}", v.summary);
            }
            assert_eq!(v.hosts.len(), hosts.len(), "{case}");
        }
    }

    #[test]
    fn without_a_snapshot_nothing_is_protected() {
        let (st, pl, _) = world(&[Verified(10); 2], None, 1);
        let v = verdict(&Inputs {
            state: &st,
            placement: &pl,
            latest: None,
            files: &[],
            missing_here: &[],
            whole_copies_wanted: 2,
            verified_within: DAY,
            now: NOW,
        });
        assert_eq!(v.level, Level::NotProtected);
        assert!(
            v.summary.starts_with("Not protected: no snapshot yet"),
            "{}",
            v.summary
        );
    }

    #[test]
    fn packs_missing_here_and_on_record_nowhere_are_named_apart_from_unpushed_ones() {
        // a repository recovered while some hosts were away: its index names packs it
        // could not fetch, and no record says where their shares are
        let (st, pl, mut files) = world(&[Verified(10); 8], Some((4, 8)), 2);
        let lost = ItemKey::new(Kind::Pack, [0xdd; 32]);
        files.push(lost);
        let v = verdict(&Inputs {
            state: &st,
            placement: &pl,
            latest: Some(SnapshotRef {
                id: [0x5f; 32],
                time_unix: NOW - 30,
            }),
            files: &files,
            missing_here: std::slice::from_ref(&lost),
            whole_copies_wanted: 5,
            verified_within: DAY,
            now: NOW,
        });
        assert_eq!(v.level, Level::NotProtected, "{}", v.summary);
        assert!(
            v.summary
                .contains("1 pack the snapshots need is missing here and on record at no host"),
            "{}",
            v.summary
        );
        assert!(!v.summary.contains("(push)"), "{}", v.summary);
    }

    #[test]
    fn a_snapshot_not_pushed_yet_is_named() {
        let (st, pl, mut files) = world(&[Verified(10); 2], None, 1);
        files.push(ItemKey::new(Kind::Pack, [0xee; 32])); // a new pack, here only
        let v = verdict(&Inputs {
            state: &st,
            placement: &pl,
            latest: Some(SnapshotRef {
                id: [0x5f; 32],
                time_unix: NOW - 30,
            }),
            files: &files,
            missing_here: &[],
            whole_copies_wanted: 2,
            verified_within: DAY,
            now: NOW,
        });
        assert_eq!(v.level, Level::NotProtected, "{}", v.summary);
        assert!(
            v.summary.contains("1 file not on any host yet (push)"),
            "{}",
            v.summary
        );
        assert!(v.summary.contains("(30 s old)"), "{}", v.summary);
    }

    #[test]
    fn durations_read_in_human_units() {
        for (s, want) in [
            (0, "0 s"),
            (89, "89 s"),
            (90, "2 min"),
            (3599, "60 min"),
            (2 * 3600, "2 h"),
            (35 * 3600, "35 h"),
            (3 * 86_400, "3 days"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }
}
