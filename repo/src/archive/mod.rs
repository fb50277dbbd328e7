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

mod adopt;
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
/// Reads of a file that keeps changing before it is recorded as read and reported.
const READ_TRIES: usize = 3;

/// A hard-linked file already read in this snapshot: its content and the metadata of that
/// read, shared by its other names.
struct Link {
    chunks: Vec<ObjectId>,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

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
    /// Raised (e.g. by a signal handler) to stop early: the packs in hand are finished and
    /// indexed, then `Error::Cancelled` is returned.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
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
    fifos: AtomicU64,
    devices: AtomicU64,
    sockets_skipped: AtomicU64,
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
    /// Packs in the store when the snapshot began (adopted ones included): dedup trusts an
    /// index entry only if its pack is here, so what a lost pack held is stored again.
    present: HashSet<crate::pack::PackId>,
    hardlinks: Mutex<HashMap<(u64, u64), Link>>,
    unreadable: Mutex<Vec<String>>,
    /// Files that changed while they were read: (path, warning).
    changed: Mutex<Vec<(String, String)>>,
    /// The all-zero chunk long holes are made of: (length, id), once known.
    zero: Mutex<Option<(u64, ObjectId)>>,
    warnings: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
    index_files: Mutex<Vec<String>>,
    /// Packs listed by the index files this run wrote.
    packs_indexed: AtomicU64,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
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
    // The parent only saves reading unchanged files: a damaged parent tree means reading
    // them, not failing (the damage is `check`'s to report).
    let parent_tree = match &parent {
        Some(p) if !opts.force_read => match repo.read_tree(&p.snapshot.tree) {
            Ok(t) => Some(t),
            Err(e) if e.is_damage() => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    let scan = adopt::scan(repo)?;
    let mut claimed = HashSet::new();
    for p in &scan.adopted {
        claimed.extend(p.entries.iter().map(|e| (e.ty, e.id)));
    }
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
        claimed: Mutex::new(claimed),
        present: scan.present,
        hardlinks: Mutex::new(HashMap::new()),
        unreadable: Mutex::new(Vec::new()),
        changed: Mutex::new(Vec::new()),
        zero: Mutex::new(None),
        warnings: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
        index_files: Mutex::new(scan.index_file.into_iter().collect()),
        packs_indexed: AtomicU64::new(0),
        cancel: opts.cancel.clone(),
        n: Counters::default(),
        progress: opts.progress.clone(),
        root: root.clone(),
    };
    // Reading files blocks on the disk whenever they are not cached: twice as many
    // workers as cores keep the cores busy meanwhile (in-flight memory stays bounded by
    // workers × block size).
    let run = || a.dir(&root, parent_tree.as_ref(), &rules);
    let walked = match rayon::ThreadPoolBuilder::new()
        .num_threads(io_threads())
        .build()
    {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    };
    let tree = match walked {
        Ok(t) => t,
        Err(Error::Cancelled { .. }) => {
            // Keep the work: finish the packs in hand and index them, so the next snapshot
            // reuses them instead of reading and storing them again.
            a.data.flush()?;
            a.trees.flush()?;
            a.write_index(true)?;
            return Err(Error::Cancelled {
                packs: a.packs_indexed.load(Ordering::Relaxed),
                bytes: a.data.stored_bytes.load(Ordering::Relaxed)
                    + a.trees.stored_bytes.load(Ordering::Relaxed),
            });
        }
        Err(e) => return Err(e),
    };
    a.data.flush()?;
    a.trees.flush()?;
    a.write_index(true)?;

    let n = &a.n;
    let unreadable = std::mem::take(&mut *a.unreadable.lock().unwrap());
    let mut changed = std::mem::take(&mut *a.changed.lock().unwrap());
    changed.sort();
    let mut warnings = std::mem::take(&mut *a.warnings.lock().unwrap());
    for p in rules.unmatched_patterns(&opts.excludes, &root) {
        warnings.push(format!(
            "--exclude {p:?} matched nothing under {}",
            root.display()
        ));
    }
    warnings.extend(unreadable.iter().cloned());
    let mut notes = std::mem::take(&mut *a.notes.lock().unwrap());
    if !scan.adopted.is_empty() {
        notes.push(format!(
            "{} pack(s) ({} bytes) that no index listed, left by an interrupted snapshot, were checked and reused",
            scan.adopted.len(),
            scan.adopted.iter().map(|p| p.size).sum::<u64>()
        ));
    }
    for (pack, why) in &scan.rejected {
        warnings.push(format!(
            "pack {pack} is in no index and cannot be reused ({why}); `pluto prune` removes it"
        ));
    }
    notes.sort();
    warnings.extend(changed.iter().map(|c| c.1.clone()));
    let changed_during_read: Vec<String> = changed.into_iter().map(|c| c.0).collect();
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
            fifos: n.fifos.load(Ordering::Relaxed),
            devices: n.devices.load(Ordering::Relaxed),
            sockets_skipped: n.sockets_skipped.load(Ordering::Relaxed),
            bytes: n.bytes.load(Ordering::Relaxed),
            files_read: n.files_read.load(Ordering::Relaxed),
            bytes_read: n.bytes_read.load(Ordering::Relaxed),
            objects_added: n.objects_added.load(Ordering::Relaxed),
            bytes_added: n.bytes_added.load(Ordering::Relaxed),
            stored_added: a.data.stored_bytes.load(Ordering::Relaxed)
                + a.trees.stored_bytes.load(Ordering::Relaxed),
            unreadable,
            changed_during_read,
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

/// Where a sparse file's data lies, found with SEEK_DATA/SEEK_HOLE as the read goes.
struct Regions {
    fd: std::os::unix::io::RawFd,
    /// The size when the read began: the read stops there (a file that grew is read again).
    size: u64,
    /// The data region at or after the last position asked about.
    data: std::ops::Range<u64>,
}

enum Region {
    /// Data up to this offset.
    Data(u64),
    /// A hole (zeros) up to this offset.
    Hole(u64),
    End,
}

impl Regions {
    fn at(&mut self, pos: u64) -> std::io::Result<Region> {
        if pos >= self.size {
            return Ok(Region::End);
        }
        if pos >= self.data.end {
            let seek = |off: u64, whence| {
                // SAFETY: lseek on a descriptor the caller holds open; no memory involved.
                let r = unsafe { libc::lseek(self.fd, off as libc::off_t, whence) };
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r as u64)
                }
            };
            self.data = match seek(pos, libc::SEEK_DATA) {
                Ok(start) => {
                    let start = start.min(self.size);
                    let end = seek(start, libc::SEEK_HOLE).unwrap_or(self.size);
                    // A region that moved meanwhile: read the rest plainly, so the read
                    // always advances (holes read as zeros; a change shows after the read).
                    let end = if end <= start {
                        self.size
                    } else {
                        end.min(self.size)
                    };
                    start..end
                }
                // No data after `pos`: a hole up to the end.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => self.size..self.size,
                // A file system without the calls: all of it is data.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => pos..self.size,
                Err(e) => return Err(e),
            };
        }
        Ok(if pos < self.data.start {
            Region::Hole(self.data.start)
        } else {
            Region::Data(self.data.end)
        })
    }
}

/// The same version of one open file: nothing a write or truncation disturbs has moved.
fn same_version(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.size() == b.size()
        && mtime_ns(a) == mtime_ns(b)
        && ctime_ns(a) == ctime_ns(b)
        && (a.dev(), a.ino()) == (b.dev(), b.ino())
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
        rdev: if kind.is_device() { m.rdev() } else { 0 },
        xattrs: Vec::new(),
    }
}

impl Archiver<'_> {
    fn note_unreadable(&self, path: &Path, e: impl std::fmt::Display) {
        self.unreadable
            .lock()
            .unwrap()
            .push(format!("{}: {e}", path.display()));
    }

    /// `Err(Cancelled)` once the caller asked to stop.
    fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Cancelled { packs: 0, bytes: 0 }),
            _ => Ok(()),
        }
    }

    fn note_changed(&self, path: &Path, what: &str) {
        self.changed.lock().unwrap().push((
            path.to_string_lossy().into_owned(),
            format!("{}: {what}", path.display()),
        ));
    }

    fn write_index(&self, all: bool) -> Result<()> {
        let mut packs = self.data.take_finished();
        packs.extend(self.trees.take_finished());
        if packs.is_empty() && !all {
            return Ok(());
        }
        if !packs.is_empty() {
            let name = self.repo.write_index_file(&packs)?;
            self.packs_indexed
                .fetch_add(packs.len() as u64, Ordering::Relaxed);
            self.index_files.lock().unwrap().push(name);
        }
        Ok(())
    }

    /// Store `plain` unless the repository or this run already has it.
    fn store(&self, ty: ObjType, plain: &[u8]) -> Result<ObjectId> {
        let id = ObjectId::compute(&self.id_key, plain);
        // Dedup by type and id: a file chunk whose bytes happen to equal a tree's encoding
        // is still stored as a chunk (and the other way round).
        // An index entry whose pack is gone is not trusted: the object is stored again.
        let stored = self
            .repo
            .index()?
            .get(ty, &id)
            .is_some_and(|l| self.present.contains(&l.pack));
        if stored || !self.claimed.lock().unwrap().insert((ty, id)) {
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

    /// Read an open file from its start and store its content: the chunk ids and the
    /// number of bytes it covers, or `Ok(None)` when a read fails (noted as unreadable).
    ///
    /// A sparse file is read region by region (SEEK_DATA/SEEK_HOLE): its holes are never
    /// read. They are chunked as the zeros they read as, so the chunks are the very ones the
    /// same bytes stored densely give; inside a long hole every chunk is the all-zero chunk
    /// of one length, listed without touching a byte.
    fn read_content(
        &self,
        path: &Path,
        f: &fs::File,
        meta: &fs::Metadata,
    ) -> Result<Option<(Vec<ObjectId>, u64)>> {
        use std::os::unix::fs::FileExt;
        use std::os::unix::io::AsRawFd;
        let size = meta.size();
        // Fewer blocks allocated than the size needs: there are holes to skip.
        let mut regions = (meta.blocks().saturating_mul(512) < size).then(|| Regions {
            fd: f.as_raw_fd(),
            size,
            data: 0..0,
        });
        let max = self.chunker.max as u64;
        let mut chunks = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity((size as usize).min(BLOCK) + 1);
        // Logical offset of the byte after `buf`.
        let mut pos = 0u64;
        loop {
            // Fill the block (a short read is not the end of the file), up to a long hole.
            let mut eof = false;
            let mut long_hole = None;
            while buf.len() < BLOCK && !eof {
                let room = BLOCK - buf.len();
                let (want, hole_end) = match regions.as_mut().map(|r| r.at(pos)) {
                    // Up to the size the read began with, and one byte more to see whether
                    // the file grew: a file that keeps growing is not chased forever.
                    None => (room.min((size + 1).saturating_sub(pos) as usize), None),
                    Some(Err(e)) => {
                        self.note_unreadable(path, e);
                        return Ok(None);
                    }
                    Some(Ok(Region::End)) => {
                        eof = true;
                        break;
                    }
                    Some(Ok(Region::Data(end))) => (room.min((end - pos) as usize), None),
                    Some(Ok(Region::Hole(end))) => (room.min((end - pos) as usize), Some(end)),
                };
                if let Some(end) = hole_end {
                    let n = if end - pos > 2 * max {
                        // Enough zeros to end the chunk in hand; the rest is skipped below.
                        long_hole = Some(end);
                        want.min(max as usize)
                    } else {
                        want
                    };
                    buf.resize(buf.len() + n, 0);
                    pos += n as u64;
                    if long_hole.is_some() {
                        break;
                    }
                    continue;
                }
                let start = buf.len();
                buf.resize(start + want, 0);
                let mut got = 0usize;
                while got < want {
                    match f.read_at(&mut buf[start + got..], pos + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            self.note_unreadable(path, e);
                            return Ok(None);
                        }
                    }
                }
                buf.truncate(start + got);
                pos += got as u64;
                if got < want || pos > size {
                    eof = true;
                }
            }
            if !eof && regions.is_none() {
                // Ask for the next block now, so the disk reads it while this one is cut,
                // hashed and compressed.
                // SAFETY: advice on a descriptor we own; no memory is involved.
                unsafe {
                    libc::posix_fadvise(
                        f.as_raw_fd(),
                        pos as libc::off_t,
                        BLOCK as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    );
                }
            }
            if buf.is_empty() && eof {
                break;
            }
            self.check_cancel()?;
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
            if eof {
                break;
            }
            // In a long hole, once a chunk starts on a zero with at least `max` zeros after
            // it, the chunker cuts the same all-zero chunk again and again: list it.
            if let Some(end) = long_hole {
                let chunk_start = pos - buf.len() as u64;
                if chunk_start + max <= end && buf.iter().all(|&b| b == 0) {
                    let (zlen, zid) = self.zero_chunk()?;
                    let n = (end - chunk_start - max) / zlen + 1;
                    chunks.extend(std::iter::repeat_n(zid, n as usize));
                    buf.clear();
                    pos = chunk_start + n * zlen;
                    if let Some(p) = &self.progress {
                        p.add_done(0, n * zlen);
                    }
                }
            }
        }
        Ok(Some((chunks, pos)))
    }

    /// The length and id of the chunk the chunker cuts from a long run of zeros, stored
    /// once per snapshot.
    fn zero_chunk(&self) -> Result<(u64, ObjectId)> {
        let mut z = self.zero.lock().unwrap();
        if let Some(c) = *z {
            return Ok(c);
        }
        let zeros = vec![0u8; self.chunker.max as usize];
        let len = self.chunker.cut(&zeros)[0].1;
        let id = self.store(ObjType::Chunk, &zeros[..len])?;
        *z = Some((len as u64, id));
        Ok((len as u64, id))
    }

    /// Read a regular file and fill `node` (metadata, size and chunks) from one consistent
    /// read of it; `Ok(false)` when it is left out (unreadable, or no longer a file).
    ///
    /// The entry must never contradict its content, so the metadata comes from the open
    /// descriptor, not from the directory walk, and is taken before and after the read: a
    /// file that changed meanwhile (grown, truncated, rewritten) is read again, up to
    /// `READ_TRIES` times, and then recorded as it was read and reported.
    fn file(&self, path: &Path, node: &mut Node) -> Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: a path swapped for a FIFO must not hang the snapshot; O_NOFOLLOW: nor
        // be read through a symlink put in its place.
        let f = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.note_changed(
                    path,
                    "was replaced by a symlink while it was read, left out",
                );
                return Ok(false);
            }
            Err(e) => {
                self.note_unreadable(path, e);
                return Ok(false);
            }
        };
        let mut last = None;
        for _ in 0..READ_TRIES {
            let before = match f.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.note_unreadable(path, e);
                    return Ok(false);
                }
            };
            if !before.is_file() {
                self.note_changed(path, "is no longer a regular file, left out");
                return Ok(false);
            }
            let Some((chunks, total)) = self.read_content(path, &f, &before)? else {
                return Ok(false);
            };
            self.n.files_read.fetch_add(1, Ordering::Relaxed);
            self.n.bytes_read.fetch_add(total, Ordering::Relaxed);
            let after = match f.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.note_unreadable(path, e);
                    return Ok(false);
                }
            };
            if total == before.size() && same_version(&before, &after) {
                *node = node_from_meta(&node.name, Kind::File, &after);
                node.chunks = chunks;
                return Ok(true);
            }
            last = Some((chunks, total, before));
        }
        let (chunks, total, before) = last.expect("READ_TRIES > 0");
        // Recorded as read: the size is what the chunks hold. The change time is set to 0
        // (never a real file's), so the next snapshot cannot take the file for unchanged and
        // reads it again; ctime is only for change detection and is never restored.
        *node = node_from_meta(&node.name, Kind::File, &before);
        node.size = total;
        node.ctime_ns = 0;
        node.chunks = chunks;
        self.note_changed(
            path,
            &format!(
                "changed while it was read ({READ_TRIES} tries); recorded as read, {total} bytes"
            ),
        );
        Ok(true)
    }

    /// Record one directory entry with its extended attributes.
    fn entry(
        &self,
        dir: &Path,
        e: &fs::DirEntry,
        parent: Option<&Tree>,
        rules: &ignore::Rules,
    ) -> Result<Option<Node>> {
        let Some(mut node) = self.entry_node(dir, e, parent, rules)? else {
            return Ok(None);
        };
        let path = dir.join(e.file_name());
        match crate::fsmeta::read_xattrs(&path) {
            Ok(x) => node.xattrs = x,
            // The entry is recorded without them, and the snapshot says it is partial.
            Err(e) => self.note_unreadable(&path, format!("extended attributes: {e}")),
        }
        Ok(Some(node))
    }

    fn entry_node(
        &self,
        dir: &Path,
        e: &fs::DirEntry,
        parent: Option<&Tree>,
        rules: &ignore::Rules,
    ) -> Result<Option<Node>> {
        self.check_cancel()?;
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
            // Reuse only if every chunk is still indexed, in a pack still here: a damaged
            // index or a lost pack must not turn into a snapshot that silently references
            // missing data (the file is read and its chunks stored again instead).
            let index = self.repo.index()?;
            let reuse = old.filter(|o| {
                !self.force_read
                    && node.unchanged_since(o)
                    && o.chunks.iter().all(|c| {
                        index
                            .get(ObjType::Chunk, c)
                            .is_some_and(|l| self.present.contains(&l.pack))
                    })
            });
            if let Some(o) = reuse {
                node.chunks = o.chunks.clone();
                self.n.bytes.fetch_add(node.size, Ordering::Relaxed);
                if let Some(p) = &self.progress {
                    p.add_done(1, node.size);
                }
                return Ok(Some(node));
            }
            let link_key = (node.nlink > 1).then_some((node.dev, node.inode));
            if let Some(k) = link_key {
                if let Some(l) = self.hardlinks.lock().unwrap().get(&k) {
                    // The content and the metadata of the read that stored it, so the entry
                    // agrees with its chunks even if the file changed since.
                    node.chunks = l.chunks.clone();
                    node.size = l.size;
                    node.mtime_ns = l.mtime_ns;
                    node.ctime_ns = l.ctime_ns;
                    self.n.bytes.fetch_add(node.size, Ordering::Relaxed);
                    if let Some(p) = &self.progress {
                        p.add_done(1, node.size);
                    }
                    return Ok(Some(node));
                }
            }
            if !self.file(&path, &mut node)? {
                return Ok(None);
            }
            self.n.bytes.fetch_add(node.size, Ordering::Relaxed);
            if let Some(k) = link_key {
                self.hardlinks.lock().unwrap().insert(
                    k,
                    Link {
                        chunks: node.chunks.clone(),
                        size: node.size,
                        mtime_ns: node.mtime_ns,
                        ctime_ns: node.ctime_ns,
                    },
                );
            }
            if let Some(p) = &self.progress {
                p.add_done(1, 0);
            }
            Ok(Some(node))
        } else if ft.is_dir() {
            let mut node = node_from_meta(name_b, Kind::Dir, &m);
            let old_tree = match old.and_then(|o| o.subtree) {
                Some(t) => match self.repo.read_tree(&t) {
                    Ok(t) => Some(t),
                    // As for the root: a damaged parent tree only means reading the files.
                    Err(e) if e.is_damage() => None,
                    Err(e) => return Err(e),
                },
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
            use std::os::unix::fs::FileTypeExt;
            let (kind, count) = if ft.is_fifo() {
                (Kind::Fifo, &self.n.fifos)
            } else if ft.is_char_device() {
                (Kind::CharDevice, &self.n.devices)
            } else if ft.is_block_device() {
                (Kind::BlockDevice, &self.n.devices)
            } else {
                // A socket is made by the program listening on it, with nothing to keep:
                // counted in the stats, not recorded (like restic and tar).
                self.n.sockets_skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            };
            count.fetch_add(1, Ordering::Relaxed);
            Ok(Some(node_from_meta(name_b, kind, &m)))
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
