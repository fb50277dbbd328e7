//! `snapshot`: walk a directory tree and record it.
//!
//! Directories are walked in parallel (rayon); each file is read, cut into chunks, and each
//! new chunk hashed, compressed and sealed by whichever worker holds it. Large files are
//! read in blocks whose chunks are processed in parallel, so one big file still keeps every
//! core busy. In-flight memory is bounded by (threads × block size). A file whose size,
//! mtime, ctime and inode match the parent snapshot reuses its chunk list unread; a
//! directory whose entries are all unchanged encodes to the same tree and is not stored again.
//!
//! Write order: packs, then index, then trees' packs and index, then the snapshot file.
//! A snapshot killed at any moment leaves only unreferenced packs (or temp files) behind.

pub mod ignore;
mod packer;

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SnapshotEntry, SnapshotStats};
use crate::tree::{Kind, Node, Tree};
use packer::Packer;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Files up to this size are read whole; larger ones in blocks of this size.
const BLOCK: usize = 16 * 1024 * 1024;
/// Write an index file whenever this many packs are closed, so a long snapshot that is
/// killed keeps most of its work.
const INDEX_EVERY_PACKS: usize = 32;

#[derive(Default)]
pub struct SnapshotOptions {
    pub message: String,
    pub tags: Vec<String>,
    pub hostname: Option<String>,
    /// Parent snapshot (id, prefix or `latest`); by default the newest snapshot of the same
    /// host and path.
    pub parent: Option<String>,
    /// Read every file even when its metadata says it is unchanged.
    pub force_read: bool,
    pub excludes: Vec<String>,
    /// Snapshot cache directories (CACHEDIR.TAG) too.
    pub include_caches: bool,
    /// Leave out files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
    /// Stay on the file system of the root: directories of other mounts are left out.
    pub one_file_system: bool,
    /// Also record nested repositories (`.pluto` folders), left out by default.
    pub include_repositories: bool,
    pub progress: Option<Arc<Progress>>,
    /// Time to record (for tests and imports); now by default.
    pub time_ns: Option<i64>,
}

pub struct SnapshotOutcome {
    pub id: String,
    pub snapshot: Snapshot,
    /// Warnings (unreadable files, bad ignore files, excludes that matched nothing);
    /// unreadable files are also in `snapshot.stats.unreadable`.
    pub warnings: Vec<String>,
    /// What was left out by default and the user may want to know (nested repositories).
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
    files_read: AtomicU64,
    bytes_read: AtomicU64,
    objects_added: AtomicU64,
    bytes_added: AtomicU64,
}

struct Archiver<'r> {
    repo: &'r Repository,
    id_key: [u8; 32],
    level: i32,
    chunker: crate::chunker::ChunkerParams,
    force_read: bool,
    include_caches: bool,
    larger_than: Option<u64>,
    /// The root's device when staying on one file system.
    one_fs: Option<u64>,
    include_repositories: bool,
    skip: (u64, u64),
    data: Packer<'r>,
    trees: Packer<'r>,
    /// Objects this run stores, by type and id (a chunk and a tree may share an id).
    claimed: Mutex<HashSet<(ObjType, ObjectId)>>,
    hardlinks: Mutex<HashMap<(u64, u64), Vec<ObjectId>>>,
    unreadable: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
    index_files: Mutex<Vec<String>>,
    n: Counters,
    progress: Option<Arc<Progress>>,
    root: PathBuf,
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Record `root` as a new snapshot.
pub fn create_snapshot(
    repo: &Repository,
    root: &Path,
    opts: &SnapshotOptions,
) -> Result<SnapshotOutcome> {
    let root = fs::canonicalize(root).at(root)?;
    let meta = fs::metadata(&root).at(&root)?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let hostname = opts.hostname.clone().unwrap_or_else(hostname);
    let root_str = root.to_string_lossy().into_owned();
    let parent: Option<SnapshotEntry> =
        match &opts.parent {
            Some(spec) => Some(repo.find_snapshot(spec)?),
            None => repo.snapshots()?.into_iter().rev().find(|s| {
                s.snapshot.hostname == hostname && s.snapshot.paths == [root_str.clone()]
            }),
        };
    let parent_tree = match &parent {
        Some(p) if !opts.force_read => Some(repo.read_tree(&p.snapshot.tree)?),
        _ => None,
    };
    let repo_meta = fs::metadata(repo.root()).at(repo.root())?;
    let rules = ignore::Rules::from_patterns(&root, &opts.excludes)?;
    let a = Archiver {
        repo,
        id_key: *repo.keys().id,
        level: repo.config().compression_level,
        chunker: repo.config().chunker,
        force_read: opts.force_read,
        include_caches: opts.include_caches,
        larger_than: opts.exclude_larger_than,
        one_fs: opts.one_file_system.then_some(meta.dev()),
        include_repositories: opts.include_repositories,
        skip: (repo_meta.dev(), repo_meta.ino()),
        data: Packer::new(repo, ObjType::Chunk),
        trees: Packer::new(repo, ObjType::Tree),
        claimed: Mutex::new(HashSet::new()),
        hardlinks: Mutex::new(HashMap::new()),
        unreadable: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
        index_files: Mutex::new(Vec::new()),
        n: Counters::default(),
        progress: opts.progress.clone(),
        root: root.clone(),
    };
    // Reading files blocks on the disk whenever they are not cached: twice as many
    // workers as cores keep the cores busy meanwhile (in-flight memory stays bounded by
    // workers × block size).
    let run = || a.dir(&root, parent_tree.as_ref(), &rules);
    let tree = match rayon::ThreadPoolBuilder::new()
        .num_threads(io_threads())
        .build()
    {
        Ok(pool) => pool.install(run)?,
        Err(_) => run()?,
    };
    a.data.flush()?;
    a.trees.flush()?;
    a.write_index(true)?;

    let n = &a.n;
    let unreadable = std::mem::take(&mut *a.unreadable.lock().unwrap());
    let mut warnings = std::mem::take(&mut *a.warnings.lock().unwrap());
    for p in rules.unmatched_patterns(&opts.excludes, &root) {
        warnings.push(format!(
            "--exclude {p:?} matched nothing under {}",
            root.display()
        ));
    }
    warnings.extend(unreadable.iter().cloned());
    let mut notes = std::mem::take(&mut *a.notes.lock().unwrap());
    notes.sort();
    let snapshot = Snapshot {
        version: 1,
        time_ns: opts.time_ns.unwrap_or_else(now_ns),
        parent: parent.map(|p| p.id),
        tree,
        hostname,
        username: std::env::var("USER").unwrap_or_else(|_| unsafe { libc::getuid() }.to_string()),
        paths: vec![root_str],
        tags: opts.tags.clone(),
        message: opts.message.clone(),
        stats: SnapshotStats {
            files: n.files.load(Ordering::Relaxed),
            dirs: n.dirs.load(Ordering::Relaxed),
            symlinks: n.symlinks.load(Ordering::Relaxed),
            bytes: n.bytes.load(Ordering::Relaxed),
            files_read: n.files_read.load(Ordering::Relaxed),
            bytes_read: n.bytes_read.load(Ordering::Relaxed),
            objects_added: n.objects_added.load(Ordering::Relaxed),
            bytes_added: n.bytes_added.load(Ordering::Relaxed),
            stored_added: a.data.stored_bytes.load(Ordering::Relaxed)
                + a.trees.stored_bytes.load(Ordering::Relaxed),
            unreadable,
        },
    };
    let id = repo.write_snapshot(&snapshot)?;
    Ok(SnapshotOutcome {
        id,
        snapshot,
        warnings,
        notes,
    })
}

/// Workers for phases that mix CPU work with waiting on the disk: twice the cores.
pub(crate) fn io_threads() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}
fn ctime_ns(m: &fs::Metadata) -> i64 {
    m.ctime() * 1_000_000_000 + m.ctime_nsec()
}

fn node_from_meta(name: &[u8], kind: Kind, m: &fs::Metadata) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: mtime_ns(m),
        ctime_ns: ctime_ns(m),
        dev: m.dev(),
        inode: m.ino(),
        nlink: m.nlink(),
        size: if kind == Kind::File { m.size() } else { 0 },
        chunks: Vec::new(),
        subtree: None,
        target: None,
    }
}

impl Archiver<'_> {
    fn note_unreadable(&self, path: &Path, e: impl std::fmt::Display) {
        self.unreadable
            .lock()
            .unwrap()
            .push(format!("{}: {e}", path.display()));
    }

    fn write_index(&self, all: bool) -> Result<()> {
        let mut packs = self.data.take_finished();
        packs.extend(self.trees.take_finished());
        if packs.is_empty() && !all {
            return Ok(());
        }
        if !packs.is_empty() {
            let name = self.repo.write_index_file(&packs)?;
            self.index_files.lock().unwrap().push(name);
        }
        Ok(())
    }

    /// Store `plain` unless the repository or this run already has it.
    fn store(&self, ty: ObjType, plain: &[u8]) -> Result<ObjectId> {
        let id = ObjectId::compute(&self.id_key, plain);
        // Dedup by type and id: a file chunk whose bytes happen to equal a tree's encoding
        // is still stored as a chunk (and the other way round).
        if self.repo.index()?.contains(ty, &id) || !self.claimed.lock().unwrap().insert((ty, id)) {
            return Ok(id);
        }
        let (flags, stored) = crate::compress::maybe_compress(plain, self.level);
        let packer = if ty == ObjType::Tree {
            &self.trees
        } else {
            &self.data
        };
        packer.add(id, flags, &stored, plain.len() as u32)?;
        self.n.objects_added.fetch_add(1, Ordering::Relaxed);
        self.n
            .bytes_added
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        if packer.finished_count() >= INDEX_EVERY_PACKS {
            self.write_index(false)?;
        }
        Ok(id)
    }

    fn store_chunks(&self, buf: &[u8], cuts: &[(usize, usize)]) -> Result<Vec<ObjectId>> {
        if cuts.len() > 1 && buf.len() > 4 * 1024 * 1024 {
            cuts.par_iter()
                .map(|&(o, l)| self.store(ObjType::Chunk, &buf[o..o + l]))
                .collect()
        } else {
            cuts.iter()
                .map(|&(o, l)| self.store(ObjType::Chunk, &buf[o..o + l]))
                .collect()
        }
    }

    /// Read a file and store its content; `Ok(None)` when it cannot be read.
    fn file(&self, path: &Path, size: u64) -> Result<Option<Vec<ObjectId>>> {
        let mut f = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.note_unreadable(path, e);
                return Ok(None);
            }
        };
        let mut chunks = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity((size as usize).min(BLOCK) + 1);
        let mut total = 0u64;
        loop {
            // Fill the block (a short read is not the end of the file).
            let want = BLOCK.saturating_sub(buf.len()).max(1);
            let start = buf.len();
            let got = match (&mut f).take(want as u64).read_to_end(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    self.note_unreadable(path, e);
                    return Ok(None);
                }
            };
            debug_assert_eq!(buf.len(), start + got);
            total += got as u64;
            let eof = got == 0 || buf.len() < BLOCK;
            if !eof {
                // Ask for the next block now, so the disk reads it while this one is cut,
                // hashed and compressed.
                use std::os::unix::io::AsRawFd;
                // SAFETY: advice on a descriptor we own; no memory is involved.
                unsafe {
                    libc::posix_fadvise(
                        f.as_raw_fd(),
                        total as libc::off_t,
                        BLOCK as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    );
                }
            }
            if buf.is_empty() {
                break;
            }
            let mut cuts = self.chunker.cut(&buf);
            // Without EOF the last chunk may have been cut by the block's end: carry it over.
            let carry = if eof { None } else { cuts.pop() };
            chunks.extend(self.store_chunks(&buf, &cuts)?);
            if let Some(p) = &self.progress {
                p.add_done(0, cuts.iter().map(|c| c.1 as u64).sum());
                // per block, so a big file being read shows while small ones come and go
                p.set_current(path);
            }
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
        self.n.files_read.fetch_add(1, Ordering::Relaxed);
        self.n.bytes_read.fetch_add(total, Ordering::Relaxed);
        Ok(Some(chunks))
    }

    fn entry(
        &self,
        dir: &Path,
        e: &fs::DirEntry,
        parent: Option<&Tree>,
        rules: &ignore::Rules,
    ) -> Result<Option<Node>> {
        let name = e.file_name();
        let name = name.as_os_str();
        let path = dir.join(name);
        // fstatat relative to the open directory: no walk of the whole path per file.
        let m = match e.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.note_unreadable(&path, e);
                return Ok(None);
            }
        };
        let ft = m.file_type();
        if ft.is_dir() && (m.dev(), m.ino()) == self.skip {
            return Ok(None);
        }
        if rules.is_excluded(&path, ft.is_dir()) {
            return Ok(None);
        }
        if ft.is_dir() && self.one_fs.is_some_and(|d| d != m.dev()) {
            return Ok(None);
        }
        if ft.is_dir() && !self.include_repositories && ignore::is_nested_repository(&path) {
            self.notes.lock().unwrap().push(format!(
                "left out {}: another repository (pass --include-repositories to back it up)",
                path.display()
            ));
            return Ok(None);
        }
        if ft.is_file() && self.larger_than.is_some_and(|l| m.size() > l) {
            return Ok(None);
        }
        let name_b = name.as_bytes();
        let old = parent.and_then(|t| t.find(name_b));
        if ft.is_file() {
            let mut node = node_from_meta(name_b, Kind::File, &m);
            self.n.files.fetch_add(1, Ordering::Relaxed);
            self.n.bytes.fetch_add(node.size, Ordering::Relaxed);
            // Reuse only if every chunk is still indexed: a damaged index must not turn into a
            // snapshot that silently references missing data.
            let index = self.repo.index()?;
            let reuse = old.filter(|o| {
                !self.force_read
                    && node.unchanged_since(o)
                    && o.chunks.iter().all(|c| index.contains(ObjType::Chunk, c))
            });
            if let Some(o) = reuse {
                node.chunks = o.chunks.clone();
                if let Some(p) = &self.progress {
                    p.add_done(1, node.size);
                }
                return Ok(Some(node));
            }
            let link_key = (node.nlink > 1).then_some((node.dev, node.inode));
            if let Some(k) = link_key {
                if let Some(c) = self.hardlinks.lock().unwrap().get(&k) {
                    node.chunks = c.clone();
                    if let Some(p) = &self.progress {
                        p.add_done(1, node.size);
                    }
                    return Ok(Some(node));
                }
            }
            match self.file(&path, node.size)? {
                Some(c) => node.chunks = c,
                None => return Ok(None),
            }
            if let Some(k) = link_key {
                self.hardlinks
                    .lock()
                    .unwrap()
                    .insert(k, node.chunks.clone());
            }
            if let Some(p) = &self.progress {
                p.add_done(1, 0);
            }
            Ok(Some(node))
        } else if ft.is_dir() {
            let mut node = node_from_meta(name_b, Kind::Dir, &m);
            let old_tree = match old.and_then(|o| o.subtree) {
                Some(t) => Some(self.repo.read_tree(&t)?),
                None => None,
            };
            match self.dir(&path, old_tree.as_ref(), rules) {
                Ok(t) => node.subtree = Some(t),
                Err(Error::Io { path, source })
                    if path.starts_with(&self.root) && !path.starts_with(self.repo.root()) =>
                {
                    self.note_unreadable(&path, source);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            Ok(Some(node))
        } else if ft.is_symlink() {
            let mut node = node_from_meta(name_b, Kind::Symlink, &m);
            match fs::read_link(&path) {
                Ok(t) => node.target = Some(t.as_os_str().as_bytes().to_vec()),
                Err(e) => {
                    self.note_unreadable(&path, e);
                    return Ok(None);
                }
            }
            self.n.symlinks.fetch_add(1, Ordering::Relaxed);
            Ok(Some(node))
        } else {
            // Sockets, FIFOs and devices are not backed up.
            Ok(None)
        }
    }

    /// Record one directory; returns its tree id.
    fn dir(&self, path: &Path, parent: Option<&Tree>, rules: &ignore::Rules) -> Result<ObjectId> {
        self.n.dirs.fetch_add(1, Ordering::Relaxed);
        let mut names: Vec<fs::DirEntry> = Vec::new();
        let cache = !self.include_caches && ignore::is_cache_dir(path);
        if !cache {
            for e in fs::read_dir(path).at(path)? {
                names.push(e.at(path)?);
            }
        }
        let rules = rules.enter(path, &mut |w| self.warnings.lock().unwrap().push(w));
        let results: Vec<Result<Option<Node>>> = names
            .par_iter()
            .with_max_len(16)
            .map(|n| self.entry(path, n, parent, &rules))
            .collect();
        let mut nodes = Vec::with_capacity(results.len());
        for r in results {
            if let Some(n) = r? {
                nodes.push(n);
            }
        }
        let tree = Tree::new(nodes);
        self.store(ObjType::Tree, &tree.encode())
    }
}
