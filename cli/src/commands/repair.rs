use crate::{exit, Global};
use anyhow::Result;
use pluto_repo::progress::Progress;
use pluto_repo::repair::{repair_index, repair_snapshots, RepairOptions};
use pluto_repo::repository::LockMode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Repair what `pluto check` found: rebuild the index from the packs, or write snapshots
/// without the files whose data is gone.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto check                                # names the repairs to run
  pluto repair index                         # rebuild the index from the packs
  pluto repair snapshots --dry-run           # what would be left out
  pluto repair snapshots                     # new snapshots tagged `repaired`; originals stay
  pluto repair snapshots --forget && pluto prune

Run `repair index` first: it brings back what only the index had lost. Both are safe to
interrupt: new files are written before old ones are removed.")]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rebuild the index from the pack headers: every pack is read and checked against its
    /// name; the sound objects of a damaged pack are copied to a new pack.
    Index(IndexArgs),
    /// Write a new snapshot, tagged `repaired`, for each snapshot naming data that is gone:
    /// without the files whose chunks are gone, and with directories whose tree is gone
    /// left empty. The originals stay until forgotten.
    Snapshots(SnapshotArgs),
}

#[derive(clap::Args)]
struct IndexArgs {
    /// Show what would be done; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SnapshotArgs {
    /// Show what would be left out; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Forget each original once its repaired snapshot is written.
    #[arg(long)]
    forget: bool,
    /// Also read every chunk the snapshots name, to find damaged content the index does
    /// not know about (slow; `repair index` finds it too).
    #[arg(long)]
    read_data: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// For tests: `PLUTO_TEST_KILL_AFTER=<step>:<n>` kills this process with SIGKILL right after
/// the n-th time the repair reaches <step> (pack-written, index-written, index-deleted,
/// snapshot-written), to prove an interrupted repair leaves a valid repository.
type StepHook = Box<dyn Fn(&str) + Sync>;

fn kill_hook() -> Option<StepHook> {
    let spec = std::env::var("PLUTO_TEST_KILL_AFTER").ok()?;
    let (step, n) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
    let (step, n) = (step.to_string(), n.parse::<u64>().unwrap_or(1));
    let seen = AtomicU64::new(0);
    Some(Box::new(move |s: &str| {
        if s == step && seen.fetch_add(1, Ordering::SeqCst) + 1 == n {
            // SAFETY: sending a signal to our own process id.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }))
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    // Both rewrite the index or the snapshots: the repository to themselves.
    let repo = super::open_repo(g, LockMode::Exclusive)?;
    let progress = Arc::new(Progress::default());
    let hook = kill_hook();
    match a.what {
        What::Index(a) => {
            let r = {
                let _bar =
                    crate::progress::Bar::start(progress.clone(), "repair", g.quiet || a.json);
                repair_index(
                    &repo,
                    &RepairOptions {
                        dry_run: a.dry_run,
                        progress: Some(progress),
                        on_step: hook.as_deref(),
                        ..Default::default()
                    },
                )?
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(exit::OK);
            }
            for p in &r.packs_missing {
                println!("pack {p}: missing from the pack store; no longer indexed");
            }
            for p in &r.damaged_packs {
                println!(
                    "pack {}: {}; {} of its {} objects are sound{}; the pack is left unindexed (`pluto prune` removes it)",
                    p.pack,
                    p.reason,
                    p.salvaged,
                    p.objects,
                    if p.salvaged > 0 && !r.dry_run {
                        " and were copied to a new pack"
                    } else {
                        ""
                    }
                );
            }
            println!(
                "{}: {} packs read, {} indexed ({} objects), {} damaged, {} missing; {} new pack(s); {} index file(s) written, {} removed",
                if r.dry_run { "plan" } else { "index rebuilt" },
                r.packs,
                r.packs_indexed,
                r.objects_indexed,
                r.damaged_packs.len(),
                r.packs_missing.len(),
                r.packs_written,
                r.index_files_written,
                r.index_files_removed
            );
            if !r.damaged_packs.is_empty() || !r.packs_missing.is_empty() {
                println!("data is lost: run `pluto check`, then `pluto repair snapshots`");
            }
            Ok(exit::OK)
        }
        What::Snapshots(a) => {
            let r = {
                let _bar =
                    crate::progress::Bar::start(progress.clone(), "repair", g.quiet || a.json);
                repair_snapshots(
                    &repo,
                    &RepairOptions {
                        dry_run: a.dry_run,
                        forget: a.forget,
                        read_data: a.read_data,
                        progress: Some(progress),
                        on_step: hook.as_deref(),
                    },
                )?
            };
            super::print_warnings(&repo);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(exit::OK);
            }
            for s in &r.repaired {
                let head = match &s.new {
                    Some(n) => format!(
                        "snapshot {} -> {} (tagged repaired{})",
                        &s.original[..8],
                        &n[..8],
                        if s.forgotten {
                            "; the original is forgotten"
                        } else {
                            ""
                        }
                    ),
                    None => format!("snapshot {} would be repaired", &s.original[..8]),
                };
                println!("{head}: {} path(s) left out", s.dropped.len());
                for d in &s.dropped {
                    println!("  dropped {}: {}", d.path, d.reason);
                }
            }
            for u in &r.unreadable {
                println!(
                    "snapshot {u}: the file cannot be read, there is nothing to repair; `pluto forget {}` removes it",
                    &u[..8]
                );
            }
            let n = r.repaired.len();
            println!(
                "{} snapshots read, {n} {}{}",
                r.snapshots,
                if r.dry_run {
                    "would be repaired"
                } else {
                    "repaired"
                },
                if n > 0 && !r.dry_run && !a.forget {
                    "; the originals stay until you forget them (`pluto forget ID`), then `pluto prune`"
                } else {
                    ""
                }
            );
            Ok(exit::OK)
        }
    }
}
