//! `checkout`: write a snapshot (or paths in it) into a directory.
//!
//! Files are written in parallel, each once, chunk by chunk in order; chunks of zeros
//! become holes. Hard links are linked to the first copy written. Symlinks are made after
//! all files, and directory metadata is set last, deepest first, so writing into a
//! directory does not disturb its restored mtime.

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Kind, Node, Tree};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Default)]
pub struct RestoreOptions {
    /// Restore over a target that already holds files.
    pub force: bool,
    /// Paths inside the snapshot to restore (all when empty); each lands at target/<path>.
    pub paths: Vec<String>,
    pub progress: Option<Arc<Progress>>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
}

/// Everything to restore, as flat lists.
#[derive(Default)]
pub struct Plan {
    pub dirs: Vec<(PathBuf, Node)>,
    pub files: Vec<(PathBuf, Node)>,
    pub symlinks: Vec<(PathBuf, Node)>,
}

/// Find the node at `path` (components separated by '/') inside the tree `root`.
pub fn lookup(repo: &Repository, root: &ObjectId, path: &str) -> Result<Option<Node>> {
    let mut tree = repo.read_tree(root)?;
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let Some(n) = tree.find(c.as_bytes()).cloned() else {
            return Ok(None);
        };
        if i + 1 == comps.len() {
            return Ok(Some(n));
        }
        match n.subtree {
            Some(t) if n.kind == Kind::Dir => tree = repo.read_tree(&t)?,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Walk `tree` (rooted at `at`) into the plan.
pub fn plan_tree(repo: &Repository, tree: &Tree, at: &Path, plan: &mut Plan) -> Result<()> {
    for n in &tree.nodes {
        plan_node(repo, n.clone(), at.join(OsStr::from_bytes(&n.name)), plan)?;
    }
    Ok(())
}

fn plan_node(repo: &Repository, n: Node, path: PathBuf, plan: &mut Plan) -> Result<()> {
    match n.kind {
        Kind::File => plan.files.push((path, n)),
        Kind::Symlink => plan.symlinks.push((path, n)),
        Kind::Dir => {
            let sub = match n.subtree {
                Some(t) => repo.read_tree(&t)?,
                None => Tree::default(),
            };
            plan.dirs.push((path.clone(), n));
            plan_tree(repo, &sub, &path, plan)?;
        }
    }
    Ok(())
}

fn is_nonempty_dir(p: &Path) -> Result<bool> {
    match fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).at(p),
    }
}

pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    snapshot_id: &str,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    if !opts.force && is_nonempty_dir(target)? {
        return Err(Error::TargetNotEmpty(target.to_path_buf()));
    }
    if target.exists() && !target.is_dir() {
        return Err(Error::Invalid(format!(
            "target {} exists and is not a directory",
            target.display()
        )));
    }
    fs::create_dir_all(target).at(target)?;
    let mut plan = Plan::default();
    if opts.paths.is_empty() {
        plan_tree(repo, &repo.read_tree(&snapshot.tree)?, target, &mut plan)?;
    } else {
        for p in &opts.paths {
            let node =
                lookup(repo, &snapshot.tree, p)?.ok_or_else(|| Error::PathNotInSnapshot {
                    path: p.clone(),
                    snapshot: snapshot_id[..8.min(snapshot_id.len())].to_string(),
                })?;
            let rel: PathBuf = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            let dest = target.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).at(parent)?;
            }
            plan_node(repo, node, dest, &mut plan)?;
        }
    }
    write_plan(repo, &plan, opts)
}

pub fn write_plan(repo: &Repository, plan: &Plan, opts: &RestoreOptions) -> Result<RestoreStats> {
    let mut stats = RestoreStats::default();
    if let Some(p) = &opts.progress {
        p.add_total(
            plan.files.len() as u64,
            plan.files.iter().map(|(_, n)| n.size).sum(),
        );
    }
    for (path, _) in &plan.dirs {
        make_dir(path)?;
        stats.dirs += 1;
    }
    // First path of each hard-link group is written; the others link to it.
    let mut primary: HashMap<(u64, u64), &Path> = HashMap::new();
    let mut writes = Vec::new();
    let mut links = Vec::new();
    for (path, n) in &plan.files {
        if n.nlink > 1 {
            if let Some(first) = primary.get(&(n.dev, n.inode)) {
                links.push((*first, path.as_path(), n));
                continue;
            }
            primary.insert((n.dev, n.inode), path);
        }
        writes.push((path.as_path(), n));
    }
    let written: Vec<u64> = writes
        .par_iter()
        .map(|(path, n)| {
            let b = write_file(repo, path, n)?;
            set_meta(path, n, false)?;
            if let Some(p) = &opts.progress {
                p.add_done(1, b);
            }
            Ok(b)
        })
        .collect::<Result<_>>()?;
    stats.files = written.len() as u64;
    stats.bytes = written.iter().sum();
    for (first, path, _) in &links {
        remove_existing(path)?;
        fs::hard_link(first, path).at(path)?;
        stats.hardlinks += 1;
    }
    for (path, n) in &plan.symlinks {
        remove_existing(path)?;
        let target = OsStr::from_bytes(n.target.as_deref().unwrap_or_default());
        std::os::unix::fs::symlink(target, path).at(path)?;
        set_meta(path, n, true)?;
        stats.symlinks += 1;
    }
    let mut dirs: Vec<&(PathBuf, Node)> = plan.dirs.iter().collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, n) in dirs {
        set_meta(path, n, false)?;
    }
    Ok(stats)
}

fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

/// Make a directory, replacing whatever non-directory (a symlink above all) is in its way,
/// so a restore never writes through a link into somewhere else.
fn make_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(path).at(path)?;
            fs::create_dir(path).at(path)
        }
        Err(_) => fs::create_dir_all(path).at(path),
    }
}

/// Zero runs of this size are left as holes.
const HOLE_GRAIN: usize = 64 * 1024;

fn write_file(repo: &Repository, path: &Path, n: &Node) -> Result<u64> {
    remove_existing(path)?;
    let mut f = fs::File::create(path).at(path)?;
    let mut written = 0u64;
    let mut pending_hole = false;
    for id in &n.chunks {
        let data = repo.read_object(id, ObjType::Chunk)?;
        // Runs of zeros (whole 64 KiB pieces) become holes, even inside a chunk: a sparse
        // region rarely lines up with content-defined chunk boundaries.
        for piece in data.chunks(HOLE_GRAIN) {
            if piece.len() == HOLE_GRAIN && piece.iter().all(|&b| b == 0) {
                f.seek(SeekFrom::Current(piece.len() as i64)).at(path)?;
                pending_hole = true;
            } else {
                f.write_all(piece).at(path)?;
                pending_hole = false;
            }
        }
        written += data.len() as u64;
    }
    if written != n.size {
        return Err(Error::corrupt(
            "tree",
            path.display().to_string(),
            format!(
                "file content is {written} bytes but its entry says {}",
                n.size
            ),
        ));
    }
    if pending_hole {
        f.set_len(written).at(path)?;
    }
    Ok(written)
}

fn set_meta(path: &Path, n: &Node, symlink: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Ownership only matters (and only works) for root; others keep their own.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::os::unix::fs::lchown(path, Some(n.uid), Some(n.gid));
    }
    if !symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(n.mode)).at(path)?;
    }
    let t = filetime::FileTime::from_unix_time(
        n.mtime_ns.div_euclid(1_000_000_000),
        n.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    if symlink {
        filetime::set_symlink_file_times(path, t, t).at(path)
    } else {
        filetime::set_file_times(path, t, t).at(path)
    }
}
