use crate::{exit, Global};
use anyhow::{Context, Result};
use pluto_repo::repository::LockMode;
use std::path::PathBuf;

/// Record the folder this repository tracks: after moving or renaming it, or in a copy.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  mv ~/Documents ~/Docs && cd ~/Docs && pluto retrack   # snapshots go on from ~/Docs
  pluto retrack ~/Elsewhere                             # track another folder

Snapshots of the old path stay as they are (choose them by id); the next snapshot of the
new path reads every file once, then only what changes.")]
pub struct Args {
    /// The folder to track (default: the folder holding .pluto).
    dir: Option<PathBuf>,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let dir = match a.dir {
        Some(d) => d,
        None => repo
            .root()
            .parent()
            .filter(|_| {
                repo.root()
                    .file_name()
                    .is_some_and(|n| n == pluto_repo::repository::REPO_DIR)
            })
            .map(|p| p.to_path_buf())
            .context(
                "this repository is not a .pluto folder inside the folder it tracks: name the \
                 folder, `pluto retrack DIR`",
            )?,
    };
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot track {}", dir.display()))?;
    if !dir.is_dir() {
        anyhow::bail!("cannot track {}: not a directory", dir.display());
    }
    let old = repo.worktree();
    repo.set_worktree(&dir)?;
    if !g.quiet {
        match old {
            Some(o) if o != dir => outln!("now tracking {} (was {})", dir.display(), o.display()),
            _ => outln!("now tracking {}", dir.display()),
        }
    }
    Ok(exit::OK)
}
