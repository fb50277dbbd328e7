use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{Context, Result};
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use pluto_repo::restore::{restore, RestoreOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// Restore a snapshot (or paths in it) into a directory.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto checkout latest --target /tmp/restore
  pluto checkout 1a2b3c4d --target /tmp/r docs/a.txt     # lands in /tmp/r/docs/a.txt
  pluto checkout latest --target ~/Documents --force      # over existing files")]
pub struct Args {
    /// Snapshot id (any unique prefix) or `latest`.
    snapshot: String,
    /// Paths inside the snapshot to restore (default: everything).
    paths: Vec<String>,
    /// Where to restore (default: the tracked directory).
    #[arg(long, short)]
    target: Option<PathBuf>,
    /// Restore into a directory that already holds files, replacing them.
    #[arg(long)]
    force: bool,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let snap = repo.find_snapshot(&a.snapshot)?;
    let target = match a.target {
        Some(t) => t,
        None => super::tracked_dir(&repo, None)?,
    };
    let progress = Arc::new(Progress::default());
    let stats = {
        let _bar = crate::progress::Bar::start(progress.clone(), "checkout", g.quiet);
        restore(
            &repo,
            &snap.snapshot,
            &snap.id,
            &target,
            &RestoreOptions {
                force: a.force,
                paths: a.paths,
                progress: Some(progress),
            },
        )
        .with_context(|| {
            format!(
                "checkout of snapshot {} into {}",
                snap.short_id(),
                target.display()
            )
        })?
    };
    if !g.quiet {
        println!(
            "restored snapshot {} into {}: {} files ({}), {} dirs, {} symlinks, {} hard links",
            snap.short_id(),
            target.display(),
            stats.files,
            bytes(stats.bytes),
            stats.dirs,
            stats.symlinks,
            stats.hardlinks
        );
    }
    Ok(exit::OK)
}
