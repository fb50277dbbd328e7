use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{Context, Result};
use pluto_repo::archive::{create_snapshot, SnapshotOptions};
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The signal that asked the snapshot to stop (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The library's cancel flag, raised by the handler.
static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_stop(sig: libc::c_int) {
    // Only async-signal-safe work: atomics, or the default action at once on a second signal
    // (a user who presses Ctrl-C twice does not want to wait for the packs to close).
    if STOP_SIGNAL.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    if let Some(c) = CANCEL.get() {
        c.store(true, Ordering::SeqCst);
    }
}

/// SIGINT and SIGTERM stop the snapshot cleanly: the packs in hand are finished and indexed.
fn stop_on_signals() -> Arc<AtomicBool> {
    let flag = CANCEL
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler touches atomics or restores the default action, nothing else.
        unsafe {
            libc::signal(
                sig,
                on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
    flag
}

/// Record the tracked directory as a new snapshot; only what changed is read and stored.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto snapshot -m \"before the upgrade\"
  pluto snapshot --tag nightly --exclude '*.tmp' --exclude 'node_modules/'
  pluto snapshot --json | jq .id

Files listed in .plutoignore files (gitignore syntax, any directory) are left out, and so are
directories holding a CACHEDIR.TAG. Exit code 3: saved, but some files could not be read, or
kept changing while they were read (recorded as read, and named).")]
pub struct Args {
    /// The directory to record (default: the tracked directory).
    dir: Option<PathBuf>,
    /// A message describing the snapshot.
    #[arg(short, long, default_value = "")]
    message: String,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Leave out paths matching this gitignore-style pattern (repeatable). An absolute path
    /// under the directory recorded means that path.
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Read more --exclude patterns from FILE, one a line (`#` comments; repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Leave out files larger than SIZE (e.g. 500M, 1.5G).
    #[arg(long, value_name = "SIZE", value_parser = crate::output::parse_size)]
    exclude_larger_than: Option<u64>,
    /// Stay on the directory's file system: leave out directories that are other mounts.
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Also record nested repositories (`.pluto` folders), left out by default.
    #[arg(long)]
    include_repositories: bool,
    /// Also record directories marked as caches by CACHEDIR.TAG.
    #[arg(long)]
    include_caches: bool,
    /// Record this host name instead of the machine's.
    #[arg(long)]
    host: Option<String>,
    /// Compare against this snapshot instead of the latest of this host and path.
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even those whose metadata says they are unchanged.
    #[arg(long)]
    force_read: bool,
    /// Record this time instead of now ("2024-01-31 18:00:00" local, or RFC 3339), e.g.
    /// when importing old backups.
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Print one JSON document describing the snapshot.
    #[arg(long)]
    json: bool,
}

/// Nanoseconds since the epoch for a `--time` value.
fn parse_time(s: &str) -> Result<i64> {
    use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
    let t = s.trim();
    let at = if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        d.timestamp()
    } else {
        let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
            .ok_or_else(|| {
                anyhow::anyhow!("--time {s:?}: expected \"YYYY-MM-DD HH:MM:SS\" or RFC 3339")
            })?;
        Local
            .from_local_datetime(&naive)
            .earliest()
            .ok_or_else(|| anyhow::anyhow!("--time {s:?} does not exist in the local time zone"))?
            .timestamp()
    };
    // Snapshot times are i64 nanoseconds: years 1678 to 2262.
    at.checked_mul(1_000_000_000)
        .ok_or_else(|| anyhow::anyhow!("--time {s:?} is outside the years 1678 to 2262"))
}

pub fn run(g: &Global, mut a: Args) -> Result<u8> {
    for f in &a.exclude_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--exclude-file {}", f.display()))?;
        a.excludes.extend(
            text.lines()
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    let time_ns = a.time.as_deref().map(parse_time).transpose()?;
    // Snapshots only add files under unique names, so they run beside readers, `serve`
    // and each other; only prune needs the repository to itself.
    let mut repo = super::open_repo(g, LockMode::Shared)?;
    repo.clean_tmp_older_than(std::time::Duration::from_secs(6 * 3600));
    let dir = super::tracked_dir(&repo, a.dir)?;
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    // Installed before the bar, which then leaves SIGINT to this handler.
    let cancel = stop_on_signals();
    let outcome = {
        let _bar = crate::progress::Bar::start(progress.clone(), "snapshot", g.quiet || a.json);
        // Count what there is to do beside the snapshot, so the bar fills against the real
        // total. Only metadata is read; the thread is left to finish or die with the process.
        if !(g.quiet || a.json) && crate::output::is_tty_stderr() {
            let (p, d, ex, caches, repos) = (
                progress.clone(),
                dir.clone(),
                a.excludes.clone(),
                a.include_caches,
                a.include_repositories,
            );
            let skip = vec![repo.root().to_path_buf()];
            std::thread::spawn(move || {
                pluto_repo::progress::count_tree(&d, &ex, caches, repos, &skip, &p)
            });
        }
        create_snapshot(
            &repo,
            &dir,
            &SnapshotOptions {
                message: a.message,
                tags: a.tags,
                hostname: a.host,
                parent: a.parent,
                force_read: a.force_read,
                excludes: a.excludes,
                include_caches: a.include_caches,
                exclude_larger_than: a.exclude_larger_than,
                one_file_system: a.one_file_system,
                include_repositories: a.include_repositories,
                progress: Some(progress.clone()),
                time_ns,
                cancel: Some(cancel),
            },
        )
    };
    let outcome = match outcome {
        Err(e @ pluto_repo::Error::Cancelled { .. }) => {
            let sig = STOP_SIGNAL.load(Ordering::SeqCst);
            // Where it stopped, then what was kept.
            eprintln!(
                "pluto: snapshot interrupted at {}",
                crate::progress::summary(&progress)
            );
            eprintln!("pluto: {e}");
            // As a process ended by the signal would: 128 + its number (130 for Ctrl-C).
            return Ok((128 + sig.clamp(1, 127)) as u8);
        }
        r => r?,
    };
    for w in &outcome.warnings {
        eprintln!("pluto: warning: {w}");
    }
    if !g.quiet {
        for n in &outcome.notes {
            eprintln!("pluto: note: {n}");
        }
    }
    let s = &outcome.snapshot;
    let unreadable = s.stats.unreadable.len();
    let changed = s.stats.changed_during_read.len();
    let partial = unreadable + changed > 0;
    if s.stats.sockets_skipped > 0 && !g.quiet {
        eprintln!(
            "pluto: note: {} socket(s) not recorded (a socket is made anew by the program that listens on it)",
            s.stats.sockets_skipped
        );
    }
    if g.verbose && !a.json {
        // the snapshot just wrote index files this handle has not loaded
        repo.reload_index()?;
        if let Some(parent) = &s.parent {
            let old = repo.read_snapshot(parent)?;
            let d = pluto_repo::diff::diff_trees(&repo, &old.tree, &s.tree)?;
            for c in &d.changes {
                let mark = match c.change {
                    pluto_repo::diff::ChangeKind::Added => '+',
                    pluto_repo::diff::ChangeKind::Removed => '-',
                    pluto_repo::diff::ChangeKind::Modified => 'M',
                    pluto_repo::diff::ChangeKind::Metadata => 'U',
                };
                outln!("{mark} {}", c.path);
            }
        } else {
            outln!(
                "(first snapshot of {}: everything is new)",
                s.paths.join(", ")
            );
        }
    }
    if a.json {
        // The JSON document always has the list, empty or not (the snapshot file leaves it
        // out when empty).
        let mut stats = serde_json::to_value(&s.stats)?;
        stats["changed_during_read"] = serde_json::json!(s.stats.changed_during_read);
        let doc = serde_json::json!({
            "id": outcome.id,
            "short_id": &outcome.id[..8],
            "parent": s.parent,
            "time_ns": s.time_ns,
            "hostname": s.hostname,
            "paths": s.paths,
            "tags": s.tags,
            "message": s.message,
            "stats": stats,
            "partial": partial,
            "notes": outcome.notes,
            "warnings": outcome.warnings,
            "seconds": started.elapsed().as_secs_f64(),
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else if !g.quiet {
        outln!(
            "snapshot {} saved: {} files, {} ({} files read, {} new, {} stored) in {:.1}s{}",
            &outcome.id[..8],
            s.stats.files,
            bytes(s.stats.bytes),
            s.stats.files_read,
            bytes(s.stats.bytes_added),
            bytes(s.stats.stored_added),
            started.elapsed().as_secs_f64(),
            match (unreadable, changed) {
                (0, 0) => String::new(),
                (u, 0) => format!(" — PARTIAL: {u} path(s) could not be read"),
                (0, c) => format!(" — PARTIAL: {c} file(s) changed while read"),
                (u, c) => format!(
                    " — PARTIAL: {u} path(s) could not be read, {c} file(s) changed while read"
                ),
            }
        );
    }
    Ok(if partial { exit::PARTIAL } else { exit::OK })
}
