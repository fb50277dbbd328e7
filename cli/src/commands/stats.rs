use crate::output::{bytes, time_short};
use crate::{exit, Global};
use anyhow::Result;
use pluto_repo::repository::LockMode;
use pluto_repo::stats::{repository_usage, usage, TreeCache, Usage};

/// How much the snapshots hold, and what deduplication and compression save.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto stats                 # every snapshot, then the repository as a whole
  pluto stats latest
  pluto stats --json | jq .repository.usage.dedup_ratio

logical = the files' sizes added up; unique = after deduplication; stored = in packs,
compressed and encrypted. dedup = logical / unique, compression = unique / stored.")]
pub struct Args {
    /// Only this snapshot (id, unique prefix or `latest`).
    snapshot: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

fn line(label: &str, u: &Usage) -> String {
    format!(
        "{label:<18} {:>8} {:>11} {:>11} {:>11} {:>6.2}x {:>6.2}x",
        u.files,
        bytes(u.logical_bytes),
        bytes(u.unique_bytes),
        bytes(u.stored_bytes),
        u.dedup_ratio,
        u.compression_ratio
    )
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let all = repo.snapshots()?;
    let chosen = match &a.snapshot {
        Some(s) => vec![super::resolve_snapshot(&repo, s, None)?],
        None => all.clone(),
    };
    let mut cache = TreeCache::default();
    let mut per = Vec::new();
    for s in &chosen {
        per.push((s, usage(&repo, &[s.snapshot.tree], &mut cache)?));
    }
    let roots: Vec<_> = all.iter().map(|s| s.snapshot.tree).collect();
    let whole = repository_usage(&repo, &roots, &mut cache)?;
    if a.json {
        let snaps: Vec<_> = per
            .iter()
            .map(|(s, u)| {
                serde_json::json!({
                    "id": s.id,
                    "short_id": s.short_id(),
                    "time_ns": s.snapshot.time_ns,
                    "usage": u,
                })
            })
            .collect();
        let doc = serde_json::json!({ "snapshots": snaps, "repository": whole });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit::OK);
    }
    outln!(
        "{:<18} {:>8} {:>11} {:>11} {:>11} {:>7} {:>7}",
        "snapshot",
        "files",
        "logical",
        "unique",
        "stored",
        "dedup",
        "compr"
    );
    for (s, u) in &per {
        outln!(
            "{}",
            line(
                &format!(
                    "{} {}",
                    s.short_id(),
                    // The date only; a time outside chrono's range prints shorter.
                    time_short(s.snapshot.time_ns)
                        .chars()
                        .take(10)
                        .collect::<String>()
                ),
                u
            )
        );
    }
    outln!("{}", line("all snapshots", &whole.usage));
    outln!(
        "repository: {} snapshots, {} packs ({}), {} index files ({}); {} in packs no snapshot needs{}",
        whole.snapshots,
        whole.packs,
        bytes(whole.pack_bytes),
        whole.index_files,
        bytes(whole.index_bytes),
        bytes(whole.unused_bytes),
        if whole.unused_bytes > whole.pack_bytes / 20 {
            " (`pluto prune` frees it)"
        } else {
            ""
        }
    );
    Ok(exit::OK)
}
