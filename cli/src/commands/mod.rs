pub mod check;
pub mod checkout;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod friend;
pub mod init;
pub mod leave;
pub mod log;
pub mod ls;
pub mod prune;
pub mod pull;
pub mod push;
pub mod repair;
pub mod retrack;
pub mod serve;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod tag;
pub mod ui;

use crate::Global;
use anyhow::{bail, Context, Result};
use pluto_repo::repository::{discover, LockMode};
use pluto_repo::snapshot::SnapshotEntry;
use pluto_repo::Repository;
use std::path::{Path, PathBuf};

/// Open the repository named by --repo/PLUTO_REPO, or found by walking up from here.
pub fn open_repo(g: &Global, mode: LockMode) -> Result<Repository> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = discover(g.repo.as_deref(), &cwd)?;
    let timeout = lock_wait()?;
    let holder = format!("{} (pid {})", command_line(), std::process::id());
    let mut on_wait = |who: &str| {
        eprintln!(
            "pluto: waiting for the repository lock held by {who} (up to {}s; PLUTO_LOCK_WAIT)",
            timeout.as_secs()
        )
    };
    let wait = pluto_repo::repository::LockWait {
        timeout,
        holder: &holder,
        on_wait: &mut on_wait,
    };
    Ok(Repository::open_waiting(&root, mode, Some(wait))?)
}

/// How long a command waits for a repository another pluto process has locked:
/// `PLUTO_LOCK_WAIT` seconds, 60 by default; 0 refuses at once.
pub fn lock_wait() -> Result<std::time::Duration> {
    match std::env::var("PLUTO_LOCK_WAIT") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| {
                anyhow::anyhow!(
                    "PLUTO_LOCK_WAIT={v:?}: give a whole number of seconds (0: do not wait)"
                )
            }),
        _ => Ok(std::time::Duration::from_secs(60)),
    }
}

/// This process's command line, shortened, to name it to a command waiting for the lock.
fn command_line() -> String {
    let mut words = vec!["pluto".to_string()];
    words.extend(std::env::args().skip(1));
    let line = words.join(" ");
    match line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

/// Name on standard error each damaged file a reader skipped (a snapshot file, an index
/// file), so a command that worked around damage never hides it.
pub fn print_warnings(repo: &Repository) {
    for w in repo.take_warnings() {
        eprintln!("warning: {w}");
    }
}

/// The directory a snapshot records (see [`pluto_netsync::node::ops::tracked_dir`]).
pub fn tracked_dir(repo: &Repository, given: Option<PathBuf>) -> Result<PathBuf> {
    Ok(pluto_netsync::node::ops::tracked_dir(repo, given)?)
}

/// The folder `latest` is taken of: `--path` when given, else the tracked folder when one
/// is known (recorded, or the folder holding `.pluto`). Canonical when it exists.
pub fn latest_scope(repo: &Repository, path: Option<&Path>) -> Option<PathBuf> {
    let p = match path {
        Some(p) => p.to_path_buf(),
        None => match repo.worktree() {
            Some(w) => w,
            None => {
                let holder = repo
                    .root()
                    .file_name()
                    .is_some_and(|n| n == pluto_repo::repository::REPO_DIR)
                    .then(|| repo.root().parent().map(Path::to_path_buf))
                    .flatten()?;
                holder
            }
        },
    };
    Some(std::fs::canonicalize(&p).unwrap_or(p))
}

/// Resolve a snapshot named on the command line. `latest` (and `HEAD`) is the newest
/// snapshot *of the tracked folder* (or of `path`): snapshots of other folders in the same
/// repository are chosen by id. When the folder has none, a repository whose snapshots are
/// all of one other folder (a recovery on a new machine, into a new place) gives its newest;
/// with several folders the user is asked to choose.
pub fn resolve_snapshot(
    repo: &Repository,
    spec: &str,
    path: Option<&Path>,
) -> Result<SnapshotEntry> {
    if spec != "latest" && spec != "HEAD" {
        return Ok(repo.find_snapshot(spec)?);
    }
    let all = repo.snapshots()?;
    if all.is_empty() {
        return Err(pluto_repo::Error::NoSnapshots.into());
    }
    let Some(scope) = latest_scope(repo, path) else {
        return Ok(all[all.len() - 1].clone());
    };
    let scope_s = scope.to_string_lossy();
    if let Some(s) = all
        .iter()
        .rev()
        .find(|s| s.snapshot.paths.iter().any(|p| *p == scope_s))
    {
        return Ok(s.clone());
    }
    let mut folders: Vec<&str> = all
        .iter()
        .flat_map(|s| s.snapshot.paths.iter().map(String::as_str))
        .collect();
    folders.sort();
    folders.dedup();
    if folders.len() == 1 && path.is_none() {
        return Ok(all[all.len() - 1].clone());
    }
    bail!(
        "no snapshot of {} yet; this repository has snapshots of {}: name one by id (`pluto log \
         --path DIR`), or pass --path DIR",
        scope.display(),
        folders.join(", ")
    )
}

/// A path as the user typed it (absolute, relative to the current directory, or relative
/// to the snapshot's root) as candidates for a path inside snapshot `snap`, best first.
/// `base` is the folder the snapshot's paths stand for on disk now (the tracked folder).
pub fn snapshot_path_candidates(snap: &SnapshotEntry, base: Option<&Path>, p: &str) -> Vec<String> {
    let cwd = std::env::current_dir()
        .ok()
        .map(|c| std::fs::canonicalize(&c).unwrap_or(c));
    let mut roots: Vec<PathBuf> = snap.snapshot.paths.iter().map(PathBuf::from).collect();
    if let Some(b) = base {
        roots.push(std::fs::canonicalize(b).unwrap_or_else(|_| b.to_path_buf()));
    }
    let mut out = Vec::new();
    let given = Path::new(p);
    let absolute = if given.is_absolute() {
        Some(normalize(given))
    } else {
        cwd.as_ref().map(|c| normalize(&c.join(given)))
    };
    if let Some(abs) = &absolute {
        for r in &roots {
            if let Ok(rel) = abs.strip_prefix(r) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    // as a path inside the snapshot (from its root)
    out.push(p.trim_start_matches('/').to_string());
    out.dedup();
    out
}

/// `a/./b/../c` → `a/c`, without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
