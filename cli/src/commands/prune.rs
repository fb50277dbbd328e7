use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{bail, Result};
use pluto_repo::progress::Progress;
use pluto_repo::prune::{prune, PruneOptions};
use pluto_repo::repository::LockMode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Remove the data no snapshot needs any more (after `pluto forget`).
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto forget --keep-daily 7 && pluto prune
  pluto prune --dry-run
  pluto prune --max-unused 0       # rewrite every partly used pack: smallest repository
  pluto prune --max-unused 20%     # rewrite less: faster, leaves more unused space

Prune needs the repository to itself and is safe to interrupt at any point: new packs are
written first, then the new index, and only then are old index files and packs deleted.")]
pub struct Args {
    /// Unused space tolerated in packs after pruning, as a percentage of the packs' size.
    #[arg(long, value_name = "PERCENT", default_value = "5%")]
    max_unused: String,
    /// Show what would be removed and rewritten; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow::anyhow!("--max-unused: {s:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        bail!("--max-unused must be between 0% and 100%, got {s}");
    }
    Ok(v / 100.0)
}

/// For tests: `PLUTO_TEST_KILL_AFTER=<step>:<n>` kills this process with SIGKILL right after
/// the n-th time prune reaches <step> (pack-written, index-written, index-deleted,
/// pack-deleted), to prove an interrupted prune leaves a valid repository.
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
    let max_unused = parse_percent(&a.max_unused)?;
    let repo = super::open_repo(g, LockMode::Exclusive)?;
    let progress = Arc::new(Progress::default());
    let hook = kill_hook();
    let r = {
        let _bar = crate::progress::Bar::start(progress.clone(), "prune", g.quiet || a.json);
        prune(
            &repo,
            &PruneOptions {
                max_unused,
                dry_run: a.dry_run,
                progress: Some(progress),
                on_step: hook.as_deref(),
            },
        )?
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(exit::OK);
    }
    let done = |verb: &str| {
        if r.dry_run {
            format!("would be {verb}")
        } else {
            verb.to_string()
        }
    };
    outln!(
        "{} snapshots need {} objects ({}); {} objects ({}) are unused",
        r.snapshots,
        r.objects_used,
        bytes(r.bytes_used),
        r.objects_unused,
        bytes(r.bytes_unused)
    );
    outln!(
        "packs: {} kept, {} {} ({} objects, {}), {} {}, {} unindexed {} ({})",
        r.packs_kept,
        r.packs_repacked,
        done("repacked"),
        r.objects_repacked,
        bytes(r.bytes_repacked),
        r.packs_deleted,
        done("deleted"),
        r.packs_unindexed,
        done("deleted"),
        bytes(r.bytes_unindexed)
    );
    outln!(
        "{}: {} in {} packs -> {} in {} packs; {} {}{}",
        if r.dry_run { "plan" } else { "done" },
        bytes(r.bytes_before),
        r.packs_before,
        bytes(r.bytes_after),
        r.packs_after,
        bytes(r.bytes_freed),
        done("freed"),
        if r.bytes_unused_after > 0 {
            format!(
                " ({} unused left in kept packs)",
                bytes(r.bytes_unused_after)
            )
        } else {
            String::new()
        }
    );
    Ok(exit::OK)
}
