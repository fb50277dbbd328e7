pub mod check;
pub mod checkout;
pub mod diff;
pub mod forget;
pub mod friend;
pub mod init;
pub mod leave;
pub mod log;
pub mod ls;
pub mod prune;
pub mod pull;
pub mod push;
pub mod serve;
pub mod snapshot;
pub mod stats;
pub mod status;

use crate::Global;
use anyhow::{Context, Result};
use pluto_repo::repository::{discover, LockMode};
use pluto_repo::Repository;
use std::path::PathBuf;

/// Open the repository named by --repo/PLUTO_REPO, or found by walking up from here.
pub fn open_repo(g: &Global, mode: LockMode) -> Result<Repository> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = discover(g.repo.as_deref(), &cwd)?;
    Ok(Repository::open(&root, mode)?)
}

/// The directory a snapshot records: the one given, else the one recorded at init, else
/// the directory holding `.pluto`, else the current one.
pub fn tracked_dir(repo: &Repository, given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    if let Some(w) = repo.worktree() {
        return Ok(w);
    }
    if repo
        .root()
        .file_name()
        .is_some_and(|n| n == pluto_repo::repository::REPO_DIR)
    {
        if let Some(p) = repo.root().parent() {
            return Ok(p.to_path_buf());
        }
    }
    Ok(std::env::current_dir()?)
}
