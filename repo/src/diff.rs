//! `diff`: what changed between two snapshots, or between a snapshot and the live tree.
//!
//! Both sides are walked together, directory by directory, names merged in sorted order;
//! identical subtrees (same tree id) are skipped without reading them. A file is
//! "modified" when its content differs (its chunk ids), "metadata" when only its mode,
//! owner or mtime do. Directory mtimes are not compared: they change whenever an entry
//! does, which the entry's own line already says.
//!
//! The live side reads a file only when its size, mtime, ctime or inode differ from the
//! snapshot's record, as `snapshot` would, and then compares chunk ids computed the same
//! way (nothing is stored).

use crate::archive::ignore::{is_cache_dir, is_nested_repository, Rules};
use crate::crypto::ObjectId;
use crate::error::{IoContext, Result};
use crate::repository::Repository;
use crate::tree::{Kind, Node};
use serde::Serialize;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
    Metadata,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub change: ChangeKind,
    /// "file", "dir", "symlink", "fifo", "chardev" or "blockdev" (the new entry's kind, or
    /// the old one's when removed).
    pub kind: &'static str,
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
    /// For metadata changes: which of "mode", "owner", "mtime", "xattrs" differ.
    pub fields: Vec<&'static str>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffTotals {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    /// Bytes of added files, of removed files, and of modified files before and after.
    pub bytes_added: u64,
    pub bytes_removed: u64,
    pub bytes_modified_old: u64,
    pub bytes_modified_new: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub totals: DiffTotals,
    /// Live files that could not be read (reported as modified).
    pub warnings: Vec<String>,
}

/// A directory on one side: a tree in the repository, or a directory on disk with the
/// ignore rules in force there.
#[derive(Clone)]
enum Dir {
    Tree(Option<ObjectId>),
    Live(PathBuf, Rules),
    Empty,
}

struct Walker<'r> {
    repo: &'r Repository,
    /// The repository's own directory, never part of the live tree.
    skip: Option<(u64, u64)>,
    out: Diff,
}

fn join(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir.is_empty() {
        name.into_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn kind_name(k: Kind) -> &'static str {
    crate::ls::kind_name(k)
}

fn live_node(name: &[u8], m: &fs::Metadata, kind: Kind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        dev: m.dev(),
        inode: m.ino(),
        nlink: m.nlink(),
        size: if kind == Kind::File { m.size() } else { 0 },
        chunks: Vec::new(),
        subtree: None,
        target: None,
        rdev: if kind.is_device() { m.rdev() } else { 0 },
        xattrs: Vec::new(),
    }
}

/// Which metadata fields differ between two entries of the same kind.
pub fn metadata_fields(a: &Node, b: &Node) -> Vec<&'static str> {
    let mut f = Vec::new();
    if a.mode != b.mode {
        f.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        f.push("owner");
    }
    if a.kind != Kind::Dir && a.mtime_ns != b.mtime_ns {
        f.push("mtime");
    }
    if a.xattrs != b.xattrs {
        f.push("xattrs");
    }
    f
}

impl Walker<'_> {
    fn entries(&mut self, dir: &Dir) -> Result<Vec<(Node, Dir)>> {
        match dir {
            Dir::Empty | Dir::Tree(None) => Ok(Vec::new()),
            Dir::Tree(Some(t)) => Ok(self
                .repo
                .read_tree(t)?
                .nodes
                .into_iter()
                .map(|n| {
                    let sub = Dir::Tree(n.subtree);
                    (n, sub)
                })
                .collect()),
            Dir::Live(path, rules) => {
                if is_cache_dir(path) {
                    return Ok(Vec::new());
                }
                let rules = rules.enter(path, &mut |w| self.out.warnings.push(w));
                let mut out = Vec::new();
                for e in fs::read_dir(path).at(path)? {
                    let e = e.at(path)?;
                    let p = e.path();
                    let m = match fs::symlink_metadata(&p) {
                        Ok(m) => m,
                        Err(err) => {
                            self.out.warnings.push(format!("{}: {err}", p.display()));
                            continue;
                        }
                    };
                    let ft = m.file_type();
                    // the repository, and other repositories (left out by `snapshot` too)
                    if ft.is_dir()
                        && (Some((m.dev(), m.ino())) == self.skip || is_nested_repository(&p))
                    {
                        continue;
                    }
                    if rules.is_excluded(&p, ft.is_dir()) {
                        continue;
                    }
                    let name = e.file_name();
                    let name = name.as_bytes();
                    use std::os::unix::fs::FileTypeExt;
                    let (mut n, sub) = if ft.is_file() {
                        (live_node(name, &m, Kind::File), Dir::Empty)
                    } else if ft.is_dir() {
                        let sub = Dir::Live(p.clone(), rules.clone());
                        (live_node(name, &m, Kind::Dir), sub)
                    } else if ft.is_symlink() {
                        let mut n = live_node(name, &m, Kind::Symlink);
                        n.target = fs::read_link(&p)
                            .ok()
                            .map(|t| t.as_os_str().as_bytes().to_vec());
                        (n, Dir::Empty)
                    } else if ft.is_fifo() {
                        (live_node(name, &m, Kind::Fifo), Dir::Empty)
                    } else if ft.is_char_device() {
                        (live_node(name, &m, Kind::CharDevice), Dir::Empty)
                    } else if ft.is_block_device() {
                        (live_node(name, &m, Kind::BlockDevice), Dir::Empty)
                    } else {
                        // sockets: `snapshot` does not record them either
                        continue;
                    };
                    match crate::fsmeta::read_xattrs(&p) {
                        Ok(x) => n.xattrs = x,
                        Err(err) => self.out.warnings.push(format!("{}: {err}", p.display())),
                    }
                    out.push((n, sub));
                }
                out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
                Ok(out)
            }
        }
    }

    fn push(&mut self, path: String, change: ChangeKind, old: Option<&Node>, new: Option<&Node>) {
        let size = |n: Option<&Node>| n.filter(|n| n.kind == Kind::File).map(|n| n.size);
        let t = &mut self.out.totals;
        match change {
            ChangeKind::Added => {
                t.added += 1;
                t.bytes_added += size(new).unwrap_or(0);
            }
            ChangeKind::Removed => {
                t.removed += 1;
                t.bytes_removed += size(old).unwrap_or(0);
            }
            ChangeKind::Modified => {
                t.modified += 1;
                t.bytes_modified_old += size(old).unwrap_or(0);
                t.bytes_modified_new += size(new).unwrap_or(0);
            }
            ChangeKind::Metadata => t.metadata += 1,
        }
        let fields = match (change, old, new) {
            (ChangeKind::Metadata, Some(a), Some(b)) => metadata_fields(a, b),
            _ => Vec::new(),
        };
        self.out.changes.push(Change {
            path,
            change,
            kind: kind_name(new.or(old).map(|n| n.kind).unwrap_or(Kind::File)),
            old_size: size(old),
            new_size: size(new),
            fields,
        });
    }

    /// Everything under a directory that exists on one side only.
    fn one_sided(&mut self, at: &str, dir: &Dir, change: ChangeKind) -> Result<()> {
        for (n, sub) in self.entries(dir)? {
            let path = join(at, &n.name);
            let (old, new) = if change == ChangeKind::Added {
                (None, Some(&n))
            } else {
                (Some(&n), None)
            };
            self.push(path.clone(), change, old, new);
            if n.kind == Kind::Dir {
                self.one_sided(&path, &sub, change)?;
            }
        }
        Ok(())
    }

    /// Is the content of `new` (possibly live, at `live_path`) the same as `old`'s?
    fn same_content(&mut self, old: &Node, new: &Node, live_path: Option<&Path>) -> bool {
        if old.size != new.size {
            return false;
        }
        match live_path {
            None => old.chunks == new.chunks,
            Some(_) if new.unchanged_since(old) => true,
            Some(p) => match live_chunk_ids(self.repo, p) {
                Ok(ids) => ids == old.chunks,
                Err(e) => {
                    self.out.warnings.push(e.to_string());
                    false
                }
            },
        }
    }

    fn dirs(&mut self, at: &str, a: &Dir, b: &Dir) -> Result<()> {
        if let (Dir::Tree(x), Dir::Tree(y)) = (a, b) {
            if x == y {
                return Ok(());
            }
        }
        let left = self.entries(a)?;
        let right = self.entries(b)?;
        let (mut i, mut j) = (0, 0);
        while i < left.len() || j < right.len() {
            let ord = match (left.get(i), right.get(j)) {
                (Some(l), Some(r)) => l.0.name.cmp(&r.0.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    let (n, sub) = &left[i];
                    let path = join(at, &n.name);
                    self.push(path.clone(), ChangeKind::Removed, Some(n), None);
                    if n.kind == Kind::Dir {
                        self.one_sided(&path, sub, ChangeKind::Removed)?;
                    }
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let (n, sub) = &right[j];
                    let path = join(at, &n.name);
                    self.push(path.clone(), ChangeKind::Added, None, Some(n));
                    if n.kind == Kind::Dir {
                        self.one_sided(&path, sub, ChangeKind::Added)?;
                    }
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (o, osub) = &left[i];
                    let (n, nsub) = &right[j];
                    let path = join(at, &n.name);
                    if o.kind != n.kind {
                        // A file became a directory (or the like): gone, then new.
                        self.push(path.clone(), ChangeKind::Removed, Some(o), None);
                        if o.kind == Kind::Dir {
                            self.one_sided(&path, osub, ChangeKind::Removed)?;
                        }
                        self.push(path.clone(), ChangeKind::Added, None, Some(n));
                        if n.kind == Kind::Dir {
                            self.one_sided(&path, nsub, ChangeKind::Added)?;
                        }
                    } else {
                        let content_same = match n.kind {
                            Kind::File => {
                                let live = match b {
                                    Dir::Live(p, _) => Some(p.join(OsStr::from_bytes(&n.name))),
                                    _ => None,
                                };
                                self.same_content(o, n, live.as_deref())
                            }
                            Kind::Symlink => o.target == n.target,
                            Kind::CharDevice | Kind::BlockDevice => o.rdev == n.rdev,
                            Kind::Dir | Kind::Fifo => true,
                        };
                        if !content_same {
                            self.push(path.clone(), ChangeKind::Modified, Some(o), Some(n));
                        } else if !metadata_fields(o, n).is_empty() {
                            self.push(path.clone(), ChangeKind::Metadata, Some(o), Some(n));
                        }
                        if n.kind == Kind::Dir {
                            self.dirs(&path, osub, nsub)?;
                        }
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }
}

/// Differences from snapshot tree `old` to snapshot tree `new`.
pub fn diff_trees(repo: &Repository, old: &ObjectId, new: &ObjectId) -> Result<Diff> {
    let mut w = Walker {
        repo,
        skip: None,
        out: Diff::default(),
    };
    w.dirs("", &Dir::Tree(Some(*old)), &Dir::Tree(Some(*new)))?;
    Ok(w.out)
}

/// Differences from snapshot tree `old` to the directory `live` as it is now, leaving out
/// what `snapshot` would (the repository, `.plutoignore`d paths, `excludes`, caches).
pub fn diff_worktree(
    repo: &Repository,
    old: &ObjectId,
    live: &Path,
    excludes: &[String],
) -> Result<Diff> {
    let live = fs::canonicalize(live).at(live)?;
    let skip = fs::metadata(repo.root()).ok().map(|m| (m.dev(), m.ino()));
    let rules = Rules::from_patterns(&live, excludes)?;
    let mut w = Walker {
        repo,
        skip,
        out: Diff::default(),
    };
    w.dirs("", &Dir::Tree(Some(*old)), &Dir::Live(live, rules))?;
    Ok(w.out)
}

/// Chunk ids of a file on disk, cut exactly as `snapshot` cuts them.
pub fn live_chunk_ids(repo: &Repository, path: &Path) -> Result<Vec<ObjectId>> {
    const BLOCK: usize = 16 * 1024 * 1024;
    let chunker = repo.config().chunker;
    let id_key: [u8; 32] = *repo.keys().id;
    let mut f = fs::File::open(path).at(path)?;
    let mut ids = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let want = BLOCK.saturating_sub(buf.len()).max(1);
        let got = (&mut f).take(want as u64).read_to_end(&mut buf).at(path)?;
        let eof = got == 0 || buf.len() < BLOCK;
        if buf.is_empty() {
            break;
        }
        let mut cuts = chunker.cut(&buf);
        // Without EOF the last chunk may have been cut short by the block: carry it over.
        let carry = if eof { None } else { cuts.pop() };
        ids.extend(
            cuts.iter()
                .map(|&(o, l)| ObjectId::compute(&id_key, &buf[o..o + l])),
        );
        match carry {
            Some((o, _)) => {
                buf.drain(..o);
            }
            None => buf.clear(),
        }
        if eof && buf.is_empty() {
            break;
        }
    }
    Ok(ids)
}
