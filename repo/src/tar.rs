//! `checkout --tar`: a snapshot (or paths in it) as a tar archive, written as a stream.
//!
//! Entries come in tree order, each directory before its contents, so `tar -x` rebuilds
//! the same tree a normal checkout writes: modes, numeric owners, symlinks, and hard links
//! (the first path of a group is the file, the others link to it), FIFOs and device nodes.
//! Times are kept to the nanosecond with a PAX `mtime` record, because the plain header
//! holds whole seconds only; extended attributes go in PAX `SCHILY.xattr.<name>` records,
//! as GNU tar (`--xattrs`) and bsdtar write and read them.

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::restore::{NotRestored, RestoreStats};
use crate::snapshot::Snapshot;
use crate::tree::{Kind, Node};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Default)]
pub struct TarOptions {
    /// Paths inside the snapshot to export (all when empty).
    pub paths: Vec<String>,
    pub progress: Option<Arc<Progress>>,
    /// Leave the archive unended (no end-of-archive blocks) when entries could not be
    /// read, so that a reader sees a cut archive, not a whole one missing files (for a
    /// download, where the per-entry report cannot travel with the bytes).
    pub unended_if_partial: bool,
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `len` counts the whole record
/// including its own digits. The value is raw bytes (xattr values may be binary).
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while format!("{len}").len() + body_len != len {
        len = format!("{len}").len() + body_len;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// The PAX record `"<len> mtime=<s>.<ns>\n"`.
pub fn pax_mtime_record(mtime_ns: i64) -> Vec<u8> {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let nanos = mtime_ns.rem_euclid(1_000_000_000);
    pax_record(b"mtime", format!("{secs}.{nanos:09}").as_bytes())
}

/// Reads a file's chunks one by one and yields exactly the size its tar header promised.
/// A chunk that turns out damaged is noted in `damage` and the rest of the file is zeros
/// (the header is already written: a shorter or longer entry would shift every entry after
/// it). Any other error from the repository is kept aside for the caller to report as what
/// it is rather than as an I/O error.
struct ChunkReader<'r> {
    repo: &'r Repository,
    chunks: std::slice::Iter<'r, ObjectId>,
    current: Vec<u8>,
    pos: usize,
    emitted: u64,
    expected: u64,
    zero_fill: bool,
    damage: Option<String>,
    failure: &'r RefCell<Option<Error>>,
}

impl ChunkReader<'_> {
    fn damaged(&mut self, why: String) {
        self.damage.get_or_insert(format!(
            "{why}; the archive holds zeros from byte {} on",
            self.emitted
        ));
        self.zero_fill = true;
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.expected - self.emitted;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if !self.zero_fill {
            while self.pos == self.current.len() {
                let Some(id) = self.chunks.next() else {
                    let why = format!(
                        "file content is {} bytes but its entry says {}",
                        self.emitted, self.expected
                    );
                    self.damaged(why);
                    break;
                };
                match self.repo.read_object(id, ObjType::Chunk) {
                    Ok(data) => {
                        self.current = data;
                        self.pos = 0;
                    }
                    Err(e) if e.is_damage() => {
                        self.damaged(e.to_string());
                        break;
                    }
                    Err(e) => {
                        *self.failure.borrow_mut() = Some(e);
                        return Err(io::Error::other("a chunk could not be read"));
                    }
                }
            }
        }
        let n = if self.zero_fill {
            let n = buf.len().min(left as usize);
            buf[..n].fill(0);
            n
        } else {
            let n = buf
                .len()
                .min(self.current.len() - self.pos)
                .min(left as usize);
            buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
            self.pos += n;
            n
        };
        self.emitted += n as u64;
        Ok(n)
    }
}

/// The output, until shut: then every write fails (so nothing more reaches the reader).
struct Gate<W> {
    inner: W,
    open: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<W: Write> Write for Gate<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.open.get() {
            return Err(io::Error::other("the archive was left unended"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct TarWriter<'r, W: Write> {
    repo: &'r Repository,
    builder: ::tar::Builder<Gate<W>>,
    out_name: PathBuf,
    /// First path written for each hard-link group (device, inode), and whether its
    /// content is damaged.
    link_primary: HashMap<(u64, u64), (PathBuf, bool)>,
    stats: RestoreStats,
    progress: Option<Arc<Progress>>,
    failure: RefCell<Option<Error>>,
}

impl<W: Write> TarWriter<'_, W> {
    fn io(&self, e: io::Error) -> Error {
        if let Some(f) = self.failure.borrow_mut().take() {
            return f;
        }
        Error::Io {
            path: self.out_name.clone(),
            source: e,
        }
    }

    /// Every chunk of `n` is indexed as a chunk and together they hold `n.size` bytes.
    fn locate_chunks(&self, n: &Node) -> std::result::Result<(), String> {
        let index = self.repo.index().map_err(|e| e.to_string())?;
        let mut size = 0u64;
        for c in &n.chunks {
            match index.get(ObjType::Chunk, c) {
                Some(l) => size += l.plain_len as u64,
                None => return Err(Error::ObjectMissing { id: c.hex() }.to_string()),
            }
        }
        if size != n.size {
            return Err(format!(
                "file content is {size} bytes but its entry says {}",
                n.size
            ));
        }
        Ok(())
    }

    fn header(n: &Node, ty: ::tar::EntryType) -> ::tar::Header {
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(n.mode);
        h.set_uid(n.uid as u64);
        h.set_gid(n.gid as u64);
        h.set_mtime(n.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
        h.set_size(0);
        h
    }

    /// The PAX extended header for `n`, when its mtime has a fraction of a second (or is
    /// before 1970) or it has extended attributes.
    fn pax(&mut self, path: &Path, n: &Node) -> Result<()> {
        let mut rec = Vec::new();
        if n.mtime_ns.rem_euclid(1_000_000_000) != 0 || n.mtime_ns < 0 {
            rec.extend(pax_mtime_record(n.mtime_ns));
        }
        for (name, value) in &n.xattrs {
            // The key ends at the first '=': such a name cannot be written.
            if name.contains(&b'=') || name.contains(&b'\n') {
                self.stats.not_restored.push(NotRestored::new(
                    path,
                    format!(
                        "extended attribute {:?} not written: '=' or newline in its name",
                        String::from_utf8_lossy(name)
                    ),
                ));
                continue;
            }
            rec.extend(pax_record(&[&b"SCHILY.xattr."[..], name].concat(), value));
        }
        if rec.is_empty() {
            return Ok(());
        }
        let mut h = ::tar::Header::new_ustar();
        h.set_entry_type(::tar::EntryType::XHeader);
        h.set_path("pax_header").map_err(|e| self.io(e))?;
        h.set_mode(0o644);
        h.set_size(rec.len() as u64);
        h.set_cksum();
        self.builder.append(&h, &rec[..]).map_err(|e| self.io(e))
    }

    fn node(&mut self, path: &Path, n: &Node) -> Result<()> {
        match n.kind {
            Kind::Dir => {
                self.pax(path, n)?;
                let mut h = Self::header(n, ::tar::EntryType::Directory);
                self.builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(|e| self.io(e))?;
                self.stats.dirs += 1;
                if let Some(t) = n.subtree {
                    // A damaged tree costs only what is under it.
                    let tree = match self.repo.read_tree(&t) {
                        Ok(t) => t,
                        Err(e) if e.is_damage() => {
                            self.stats.not_restored.push(NotRestored::new(
                                path,
                                format!("the directory's contents are not in the archive: {e}"),
                            ));
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    };
                    for child in tree.nodes {
                        self.node(&path.join(OsStr::from_bytes(&child.name)), &child)?;
                    }
                }
            }
            Kind::Symlink => {
                self.pax(path, n)?;
                let mut h = Self::header(n, ::tar::EntryType::Symlink);
                let target = OsStr::from_bytes(n.target.as_deref().unwrap_or_default());
                self.builder
                    .append_link(&mut h, path, target)
                    .map_err(|e| self.io(e))?;
                self.stats.symlinks += 1;
            }
            Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => {
                self.pax(path, n)?;
                let ty = match n.kind {
                    Kind::Fifo => ::tar::EntryType::Fifo,
                    Kind::CharDevice => ::tar::EntryType::Char,
                    _ => ::tar::EntryType::Block,
                };
                let mut h = Self::header(n, ty);
                if n.kind.is_device() {
                    let d = n.rdev as libc::dev_t;
                    h.set_device_major(libc::major(d)).map_err(|e| self.io(e))?;
                    h.set_device_minor(libc::minor(d)).map_err(|e| self.io(e))?;
                }
                self.builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(|e| self.io(e))?;
                self.stats.specials += 1;
            }
            Kind::File => {
                if n.nlink > 1 {
                    if let Some((first, damaged)) =
                        self.link_primary.get(&(n.dev, n.inode)).cloned()
                    {
                        let mut h = Self::header(n, ::tar::EntryType::Link);
                        self.builder
                            .append_link(&mut h, path, &first)
                            .map_err(|e| self.io(e))?;
                        self.stats.hardlinks += 1;
                        if damaged {
                            self.stats.not_restored.push(NotRestored::new(
                                path,
                                format!(
                                    "hard link to {}, whose content is damaged",
                                    first.display()
                                ),
                            ));
                        }
                        return Ok(());
                    }
                }
                // Left out whole when its chunks are known to be missing before its header
                // is written.
                if let Err(why) = self.locate_chunks(n) {
                    self.stats.not_restored.push(NotRestored::new(path, why));
                    return Ok(());
                }
                self.pax(path, n)?;
                let mut h = Self::header(n, ::tar::EntryType::Regular);
                h.set_size(n.size);
                let mut reader = ChunkReader {
                    repo: self.repo,
                    chunks: n.chunks.iter(),
                    current: Vec::new(),
                    pos: 0,
                    emitted: 0,
                    expected: n.size,
                    zero_fill: false,
                    damage: None,
                    failure: &self.failure,
                };
                let res = self.builder.append_data(&mut h, path, &mut reader);
                let damage = reader.damage.take();
                res.map_err(|e| self.io(e))?;
                if n.nlink > 1 {
                    self.link_primary
                        .insert((n.dev, n.inode), (path.to_path_buf(), damage.is_some()));
                }
                match damage {
                    Some(d) => self.stats.not_restored.push(NotRestored::new(path, d)),
                    None => {
                        self.stats.files += 1;
                        self.stats.bytes += n.size;
                    }
                }
                if let Some(p) = &self.progress {
                    p.add_done(1, n.size);
                }
            }
        }
        Ok(())
    }
}

/// Write `snapshot` (or `opts.paths` in it) as a tar archive to `out`; `out_name` names the
/// destination in error messages. The archive is finished (two zero blocks) on success.
pub fn write_tar<W: Write>(
    repo: &Repository,
    snapshot: &Snapshot,
    snapshot_id: &str,
    out: W,
    out_name: &Path,
    opts: &TarOptions,
) -> Result<RestoreStats> {
    let root = repo.read_tree(&snapshot.tree)?;
    let mut entries: Vec<(PathBuf, Node)> = Vec::new();
    let mut lost: Vec<NotRestored> = Vec::new();
    if opts.paths.is_empty() {
        for n in root.nodes {
            entries.push((PathBuf::from(OsStr::from_bytes(&n.name)), n));
        }
    } else {
        for p in &opts.paths {
            let rel: PathBuf = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            let node = match crate::restore::lookup(repo, &snapshot.tree, p) {
                Ok(n) => n,
                // A damaged tree on the way: this path is lost, the others are not.
                Err(e) if e.is_damage() => {
                    lost.push(NotRestored::new(&rel, e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let node = node.ok_or_else(|| Error::PathNotInSnapshot {
                path: p.clone(),
                snapshot: snapshot_id[..8.min(snapshot_id.len())].to_string(),
            })?;
            entries.push((rel, node));
        }
    }
    if let Some(p) = &opts.progress {
        // Totals for the bar come from the snapshot's own stats when exporting everything.
        if opts.paths.is_empty() {
            p.add_total(snapshot.stats.files, snapshot.stats.bytes);
        }
    }
    let open = std::rc::Rc::new(std::cell::Cell::new(true));
    let mut w = TarWriter {
        repo,
        builder: ::tar::Builder::new(Gate {
            inner: out,
            open: open.clone(),
        }),
        out_name: out_name.to_path_buf(),
        link_primary: HashMap::new(),
        stats: RestoreStats::default(),
        progress: opts.progress.clone(),
        failure: RefCell::new(None),
    };
    w.stats.not_restored = lost;
    for (path, n) in &entries {
        w.node(path, n)?;
    }
    if opts.unended_if_partial && !w.stats.not_restored.is_empty() {
        // The builder ends the archive when dropped: shut the gate first.
        open.set(false);
        return Err(Error::Invalid(format!(
            "{} entries could not be read; the archive was left unended",
            w.stats.not_restored.len()
        )));
    }
    w.builder.finish().map_err(|e| w.io(e))?;
    let out_name = w.out_name.clone();
    let stats = w.stats.clone();
    w.builder
        .into_inner()
        .and_then(|mut o| o.inner.flush())
        .map_err(|source| Error::Io {
            path: out_name,
            source,
        })?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        for ns in [1_700_000_000_123_456_789i64, 5, -1_500_000_000] {
            let r = pax_mtime_record(ns);
            let s = String::from_utf8(r.clone()).unwrap();
            let (len, _) = s.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{s:?}");
            assert!(s.ends_with('\n'));
        }
        assert_eq!(
            pax_mtime_record(1_700_000_000_123_456_789),
            b"30 mtime=1700000000.123456789\n"
        );
        assert_eq!(pax_mtime_record(-1_500_000_000), b"22 mtime=-2.500000000\n");
        assert_eq!(pax_record(b"k", b"\0v\xff"), b"8 k=\0v\xff\n");
        // 8 bytes + 1 digit would make 9; 98 bytes + 2 digits make 100, which has 3.
        assert_eq!(pax_record(b"k", &[b'v'; 94]).len(), 101);
        assert_eq!(
            pax_record(b"SCHILY.xattr.user.a", b""),
            b"24 SCHILY.xattr.user.a=\n"
        );
    }
}
