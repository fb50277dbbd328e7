use crate::output::time_short;
use crate::{exit, Global};
use anyhow::{bail, Result};
use chrono::{Local, TimeZone};
use pluto_repo::forget::{candidates, plan, Decision, Policy};
use pluto_repo::repository::LockMode;
use pluto_repo::snapshot::abbrev_len;

/// The `--keep-…` rules of a retention policy (also `pluto serve`'s, applied after each
/// scheduled snapshot).
#[derive(clap::Args, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
}

impl KeepArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            tags: self.keep_tags.clone(),
        }
    }
}

/// Remove snapshots by a retention policy (or by id). The data only they used stays until
/// `pluto prune`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run
  pluto forget --keep-last 10 --keep-tag release
  pluto forget 1a2b3c4d                  # this snapshot
  pluto forget --keep-last 3 && pluto prune

Snapshots are judged newest first, per host and path. --keep-daily N keeps the newest
snapshot of each of the N most recent days that have one (likewise hourly, weekly, monthly,
yearly, in local time). A policy that would remove every snapshot is refused without --force.")]
pub struct Args {
    /// Forget these snapshots (ids, prefixes or `latest`) instead of applying a policy.
    snapshots: Vec<String>,
    #[command(flatten)]
    keep: KeepArgs,
    /// Show what would go and why; remove nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Apply a policy even if it removes every snapshot.
    #[arg(long)]
    force: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let policy = a.keep.policy();
    // Deleting takes the repository to itself (the format's rule I4): no snapshot may be
    // choosing its parent, and no reader listing snapshots, while files disappear.
    let repo = super::open_repo(g, LockMode::Exclusive)?;
    // A damaged snapshot file is skipped (and named) by policies, which keep it; it is
    // removed only when named by id.
    let (all, damaged) = repo.snapshots_and_damaged()?;
    super::print_warnings(&repo);
    let mut damaged_named: Vec<String> = Vec::new();
    let decisions: Vec<Decision> = if !a.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give either snapshot ids or --keep-* rules, not both");
        }
        let mut drop = Vec::new();
        for spec in &a.snapshots {
            let name = repo.resolve_snapshot_name(spec)?;
            if damaged.contains(&name) {
                if !damaged_named.contains(&name) {
                    damaged_named.push(name);
                }
            } else {
                drop.push(name);
            }
        }
        all.iter()
            .map(|s| {
                let go = drop.contains(&s.id);
                Decision {
                    id: s.id.clone(),
                    keep: !go,
                    reasons: vec![if go {
                        "named on the command line"
                    } else {
                        "not named"
                    }
                    .into()],
                }
            })
            .collect()
    } else {
        let local = |ns: i64| {
            Local
                .timestamp_opt(ns.div_euclid(1_000_000_000), 0)
                .single()
                .map(|t| t.naive_local())
                .unwrap_or_default()
        };
        plan(&candidates(&all, local), &policy, a.force)?
    };
    if !a.dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            repo.remove_snapshot(&d.id)?;
        }
        for d in &damaged_named {
            repo.remove_snapshot(d)?;
        }
    }
    let ids: Vec<&str> = all
        .iter()
        .map(|s| s.id.as_str())
        .chain(damaged.iter().map(|d| d.as_str()))
        .collect();
    let ab = abbrev_len(&ids);
    let removed = decisions.iter().filter(|d| !d.keep).count() + damaged_named.len();
    if a.json {
        let one = |d: &Decision| {
            let s = all
                .iter()
                .find(|s| s.id == d.id)
                .expect("decided snapshots exist");
            serde_json::json!({
                "id": d.id,
                "short_id": &d.id[..ab],
                "time_ns": s.snapshot.time_ns,
                "reasons": d.reasons,
            })
        };
        let mut remove: Vec<serde_json::Value> = decisions
            .iter()
            .rev()
            .filter(|d| !d.keep)
            .map(one)
            .collect();
        remove.extend(damaged_named.iter().map(|d| {
            serde_json::json!({
                "id": d,
                "short_id": &d[..ab],
                "time_ns": null,
                "reasons": ["named on the command line", "damaged snapshot file"],
            })
        }));
        let doc = serde_json::json!({
            "dry_run": a.dry_run,
            "keep": decisions.iter().rev().filter(|d| d.keep).map(one).collect::<Vec<_>>(),
            "remove": remove,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit::OK);
    }
    // Newest first, as `log` shows them.
    for (d, s) in decisions.iter().zip(all.iter()).rev() {
        outln!(
            "{:<12} {} {} {:<12} {:<30} [{}]",
            if d.keep {
                "keep"
            } else if a.dry_run {
                "would remove"
            } else {
                "remove"
            },
            &d.id[..ab],
            time_short(s.snapshot.time_ns),
            s.snapshot.hostname,
            s.snapshot.message.lines().next().unwrap_or(""),
            d.reasons.join(", "),
        );
    }
    for d in &damaged_named {
        println!(
            "{:<12} {} (damaged snapshot file) [named on the command line]",
            if a.dry_run { "would remove" } else { "remove" },
            &d[..ab],
        );
    }
    if !g.quiet {
        outln!(
            "{} snapshot(s) kept, {} {}{}",
            decisions.iter().filter(|d| d.keep).count(),
            removed,
            if a.dry_run {
                "would be removed"
            } else {
                "removed"
            },
            if removed > 0 && !a.dry_run {
                "; run `pluto prune` to free the space they alone used"
            } else {
                ""
            }
        );
    }
    Ok(exit::OK)
}
