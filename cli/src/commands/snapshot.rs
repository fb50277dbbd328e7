use crate::output::bytes;
use crate::{exit, Global};
use anyhow::Result;
use pluto_repo::archive::{create_snapshot, SnapshotOptions};
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Record the tracked directory as a new snapshot; only what changed is read and stored.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto snapshot -m \"before the upgrade\"
  pluto snapshot --tag nightly --exclude '*.tmp' --exclude 'node_modules/'
  pluto snapshot --json | jq .id

Files listed in .plutoignore files (gitignore syntax, any directory) are left out, and so are
directories holding a CACHEDIR.TAG. Exit code 3: saved, but some files could not be read.")]
pub struct Args {
    /// The directory to record (default: the tracked directory).
    dir: Option<PathBuf>,
    /// A message describing the snapshot.
    #[arg(short, long, default_value = "")]
    message: String,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Leave out paths matching this gitignore-style pattern (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
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

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let time_ns = a.time.as_deref().map(parse_time).transpose()?;
    // Snapshots only add files under unique names, so they run beside readers, `serve`
    // and each other; only prune needs the repository to itself.
    let repo = super::open_repo(g, LockMode::Shared)?;
    repo.clean_tmp_older_than(std::time::Duration::from_secs(6 * 3600));
    let dir = super::tracked_dir(&repo, a.dir)?;
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let outcome = {
        let _bar = crate::progress::Bar::start(progress.clone(), "snapshot", g.quiet || a.json);
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
                progress: Some(progress),
                time_ns,
            },
        )?
    };
    for w in &outcome.warnings {
        eprintln!("pluto: warning: {w}");
    }
    let s = &outcome.snapshot;
    let partial = !s.stats.unreadable.is_empty();
    if a.json {
        let doc = serde_json::json!({
            "id": outcome.id,
            "short_id": &outcome.id[..8],
            "parent": s.parent,
            "time_ns": s.time_ns,
            "hostname": s.hostname,
            "paths": s.paths,
            "tags": s.tags,
            "message": s.message,
            "stats": s.stats,
            "partial": partial,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if !g.quiet {
        println!(
            "snapshot {} saved: {} files, {} ({} files read, {} new, {} stored) in {:.1}s{}",
            &outcome.id[..8],
            s.stats.files,
            bytes(s.stats.bytes),
            s.stats.files_read,
            bytes(s.stats.bytes_added),
            bytes(s.stats.stored_added),
            started.elapsed().as_secs_f64(),
            if partial {
                format!(
                    " — PARTIAL: {} path(s) could not be read",
                    s.stats.unreadable.len()
                )
            } else {
                String::new()
            }
        );
    }
    Ok(if partial { exit::PARTIAL } else { exit::OK })
}
