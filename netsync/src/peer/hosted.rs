//! A host's store of other nodes' files, under the hosting node's repository:
//!
//! ```text
//! .pluto/hosted/                         local to this node: never pushed anywhere
//!   tmp/                                 temp files of atomic writes
//!   <owner hex>/<packs|index|snapshots|config>/<name hex>   obfuscated file
//!   <owner hex>/packs/<name hex>.obao    bao-tree post-order outboard (16 KiB blocks), plain
//!   <owner hex>/partial/<kind>-<name hex>-<size>            an unfinished upload, obfuscated
//!                                                          (given up after a week untouched)
//! ```
//!
//! Bytes are obfuscated ([`super::obfuscate`]) before they touch the disk. A file counts as
//! stored only once all its bytes arrived and hash to its name; then the outboard (built in
//! that same pass) and the file are moved into place atomically. Partial uploads count
//! against the owner's quota. Only owners on the [`AllowList`] (filled from the coordinator's
//! relationships) may store; an owner may always read, list and remove what it stored.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use bao_tree::io::outboard::PostOrderMemOutboard;
use bao_tree::BaoTree;
use zeroize::Zeroizing;

use super::challenge::{self, BLOCK_SIZE};
use super::obfuscate::Obfuscator;
use super::proto::{Kind, Range, RefusalCode, MAX_CHUNK, MAX_LIST_PAGE};
use crate::wire::NodeId;

/// A refusal from the store: the code and what to tell the peer.
pub type Refused = (RefusalCode, String);
type R<T> = std::result::Result<T, Refused>;

fn internal(e: impl std::fmt::Display) -> Refused {
    (RefusalCode::Internal, e.to_string())
}

/// Owners this node agreed to host, with their quota in bytes. Filled by the coordinator
/// client from the relationships (`as_host`), or by hand in tests and for friends.
///
/// With a capacity (the node's `--offer`), the quotas granted together never exceed it,
/// whatever a coordinator (broken or malicious) or the command line asks for: a grant
/// beyond what is left is cut to what is left.
#[derive(Default)]
pub struct AllowList {
    owners: RwLock<HashMap<NodeId, u64>>,
    capacity: Option<u64>,
}

impl AllowList {
    pub fn new() -> Self {
        Self::default()
    }
    /// An allow list whose quotas add up to at most `capacity` bytes.
    pub fn with_capacity(capacity: u64) -> Self {
        AllowList {
            owners: RwLock::default(),
            capacity: Some(capacity),
        }
    }
    /// Grant `owner` a quota; returns the quota granted (less than asked when the capacity
    /// would be exceeded).
    pub fn set(&self, owner: NodeId, quota: u64) -> u64 {
        let mut owners = self.owners.write().unwrap_or_else(|e| e.into_inner());
        let granted = match self.capacity {
            Some(cap) => {
                let others: u64 = owners
                    .iter()
                    .filter(|(k, _)| **k != owner)
                    .map(|(_, v)| *v)
                    .fold(0, u64::saturating_add);
                quota.min(cap.saturating_sub(others))
            }
            None => quota,
        };
        owners.insert(owner, granted);
        granted
    }
    pub fn remove(&self, owner: &NodeId) {
        self.owners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner);
    }
    pub fn quota(&self, owner: &NodeId) -> Option<u64> {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .copied()
    }
    pub fn owners(&self) -> Vec<(NodeId, u64)> {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

/// Reads a stored file as plain bytes at any offset (for proofs).
pub struct PlainFile {
    file: fs::File,
    obf: Obfuscator,
    size: u64,
}

impl bao_tree::io::sync::ReadAt for PlainFile {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = FileExt::read_at(&self.file, buf, pos)?;
        self.obf.apply_at(pos, &mut buf[..n]);
        Ok(n)
    }
}

impl bao_tree::io::sync::Size for PlainFile {
    fn size(&self) -> std::io::Result<Option<u64>> {
        Ok(Some(self.size))
    }
}

/// An unfinished upload untouched for this long is given up: it counts against its
/// owner's quota at its full size (see [`HostedStore::used`]), and an owner that still
/// wants the file starts it again.
pub const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Remove unfinished uploads (`<owner>/partial/*`) not written to for `max_age`.
fn remove_abandoned_partials(root: &Path, max_age: std::time::Duration) {
    let Some(cutoff) = std::time::SystemTime::now().checked_sub(max_age) else {
        return;
    };
    let Ok(owners) = fs::read_dir(root) else {
        return;
    };
    for owner in owners.flatten() {
        let Ok(rd) = fs::read_dir(owner.path().join("partial")) else {
            continue;
        };
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

pub struct HostedStore {
    root: PathBuf,
    host_key: Zeroizing<[u8; 32]>,
    allow: std::sync::Arc<AllowList>,
    busy: Mutex<HashSet<(NodeId, Kind, [u8; 32])>>,
    reserving: Mutex<()>,
}

impl HostedStore {
    /// `root` is `<repository>/hosted`; `host_key` is the node's `Keys::host`.
    pub fn open(
        root: impl Into<PathBuf>,
        host_key: &[u8; 32],
        allow: std::sync::Arc<AllowList>,
    ) -> std::io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("tmp"))?;
        // Temp files are garbage from a killed process: nothing refers to them.
        if let Ok(rd) = fs::read_dir(root.join("tmp")) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        remove_abandoned_partials(&root, PARTIAL_MAX_AGE);
        Ok(HostedStore {
            root,
            host_key: Zeroizing::new(*host_key),
            allow,
            busy: Mutex::new(HashSet::new()),
            reserving: Mutex::new(()),
        })
    }

    pub fn allow_list(&self) -> &std::sync::Arc<AllowList> {
        &self.allow
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn owner_dir(&self, owner: &NodeId) -> PathBuf {
        self.root.join(owner.to_hex())
    }
    /// Where a complete file lives (obfuscated).
    pub fn path_of(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> PathBuf {
        self.owner_dir(owner)
            .join(kind.dir())
            .join(hex::encode(name))
    }
    fn outboard_path(&self, owner: &NodeId, name: &[u8; 32]) -> PathBuf {
        self.owner_dir(owner)
            .join("packs")
            .join(format!("{}.obao", hex::encode(name)))
    }
    fn partial_path(&self, owner: &NodeId, kind: Kind, name: &[u8; 32], size: u64) -> PathBuf {
        self.owner_dir(owner).join("partial").join(format!(
            "{}-{}-{size}",
            kind.dir(),
            hex::encode(name)
        ))
    }
    fn find_partial(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> Option<(PathBuf, u64)> {
        let prefix = format!("{}-{}-", kind.dir(), hex::encode(name));
        let rd = fs::read_dir(self.owner_dir(owner).join("partial")).ok()?;
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_str()?;
            if let Some(size) = n.strip_prefix(&prefix).and_then(|s| s.parse::<u64>().ok()) {
                return Some((e.path(), size));
            }
        }
        None
    }
    fn obfuscator(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> Obfuscator {
        Obfuscator::new(&self.host_key, &owner.0, kind.byte(), name)
    }

    /// Claim the right to upload one file (one connection at a time per file).
    pub fn claim(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> bool {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((*owner, kind, *name))
    }
    pub fn release(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(*owner, kind, *name));
    }

    /// Bytes an owner uses here: complete files, and unfinished uploads at the size they
    /// will have (so that uploads running side by side cannot each fit in the same space).
    pub fn used(&self, owner: &NodeId) -> u64 {
        let mut total = 0u64;
        // every kind's folder (a new kind counts without a change here), and the partials
        for sub in Kind::ALL.iter().map(|k| k.dir()).chain(["partial"]) {
            if let Ok(rd) = fs::read_dir(self.owner_dir(owner).join(sub)) {
                for e in rd.flatten() {
                    let name = e.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name.ends_with(".obao") {
                        continue;
                    }
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    let declared = (sub == "partial")
                        .then(|| name.rsplit_once('-')?.1.parse::<u64>().ok())
                        .flatten();
                    total = total.saturating_add(declared.unwrap_or(0).max(len));
                }
            }
        }
        total
    }

    pub fn status(&self, owner: &NodeId) -> R<(u64, u64)> {
        let quota = self.allow.quota(owner).ok_or_else(not_matched)?;
        Ok((quota, self.used(owner)))
    }

    /// Size of a stored file.
    pub fn size(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> R<u64> {
        self.complete_size(owner, kind, name).ok_or_else(|| {
            (
                RefusalCode::NotFound,
                format!("{} is not stored here", hex::encode(name)),
            )
        })
    }

    fn complete_size(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> Option<u64> {
        fs::metadata(self.path_of(owner, kind, name))
            .ok()
            .map(|m| m.len())
    }

    /// Start or resume an upload: returns (bytes already held, complete).
    pub fn put_begin(
        &self,
        owner: &NodeId,
        kind: Kind,
        name: &[u8; 32],
        size: u64,
    ) -> R<(u64, bool)> {
        let quota = self.allow.quota(owner).ok_or_else(not_matched)?;
        if let Some(s) = self.complete_size(owner, kind, name) {
            if s == size {
                return Ok((size, true));
            }
            return Err((
                RefusalCode::BadName,
                format!(
                    "a file named {} of {s} bytes is already stored",
                    hex::encode(name)
                ),
            ));
        }
        // One check-and-reserve at a time: two uploads side by side must not both fit in
        // the space one of them leaves.
        let _reserving = self.reserving.lock().unwrap_or_else(|e| e.into_inner());
        let (mut have, mut resumed) = (0, false);
        if let Some((p, psize)) = self.find_partial(owner, kind, name) {
            if psize == size {
                have = fs::metadata(&p).map(|m| m.len()).unwrap_or(0).min(size);
                resumed = true;
            } else {
                fs::remove_file(&p).map_err(internal)?;
            }
        }
        // a resumed upload is already counted at its full size
        let used = self.used(owner);
        let after = if resumed {
            used
        } else {
            used.saturating_add(size)
        };
        if after > quota {
            return Err((
                RefusalCode::OverQuota,
                format!("storing {size} bytes would use {after} of the {quota}-byte quota"),
            ));
        }
        let p = self.partial_path(owner, kind, name, size);
        fs::create_dir_all(p.parent().expect("partial has a parent")).map_err(internal)?;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(internal)?;
        f.set_len(have).map_err(internal)?;
        Ok((have, false))
    }

    /// Append bytes at `offset`, which must be exactly what the host holds.
    pub fn put_data(
        &self,
        owner: &NodeId,
        kind: Kind,
        name: &[u8; 32],
        offset: u64,
        data: &[u8],
    ) -> R<u64> {
        if self.allow.quota(owner).is_none() {
            return Err(not_matched());
        }
        let (p, size) = self.find_partial(owner, kind, name).ok_or_else(|| {
            (
                RefusalCode::BadRequest,
                "no upload of this file was begun".to_string(),
            )
        })?;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(internal)?;
        let have = f.metadata().map_err(internal)?.len();
        if offset != have {
            return Err((
                RefusalCode::BadRequest,
                format!("data at offset {offset}, but the host holds {have} bytes"),
            ));
        }
        if offset + data.len() as u64 > size {
            return Err((
                RefusalCode::BadRequest,
                format!("data past the announced size {size}"),
            ));
        }
        let mut buf = data.to_vec();
        self.obfuscator(owner, kind, name)
            .apply_at(offset, &mut buf);
        f.write_all_at(&buf, offset).map_err(internal)?;
        Ok(offset + data.len() as u64)
    }

    /// Finish an upload: check the name in one pass that also builds the outboard, then
    /// move outboard and file into place.
    pub fn put_end(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> R<()> {
        if self.complete_size(owner, kind, name).is_some() {
            return Ok(());
        }
        let (p, size) = self.find_partial(owner, kind, name).ok_or_else(|| {
            (
                RefusalCode::BadRequest,
                "no upload of this file was begun".to_string(),
            )
        })?;
        let f = fs::File::open(&p).map_err(internal)?;
        let have = f.metadata().map_err(internal)?.len();
        if have != size {
            return Err((
                RefusalCode::BadRequest,
                format!("only {have} of {size} bytes arrived"),
            ));
        }
        f.sync_all().map_err(internal)?;
        let reader = DeobfuscatingReader {
            file: f,
            obf: self.obfuscator(owner, kind, name),
            pos: 0,
        };
        let ob = challenge::build_outboard(reader, size).map_err(internal)?;
        if ob.root.as_bytes() != name {
            let _ = fs::remove_file(&p);
            return Err((
                RefusalCode::BadName,
                format!(
                    "the bytes hash to {}, not to their name {}",
                    ob.root.to_hex(),
                    hex::encode(name)
                ),
            ));
        }
        if matches!(kind, Kind::Pack | Kind::Share) {
            self.write_atomic(&self.outboard_path(owner, name), &ob.data)
                .map_err(internal)?;
        }
        let dest = self.path_of(owner, kind, name);
        let dir = dest.parent().expect("has a parent");
        fs::create_dir_all(dir).map_err(internal)?;
        fs::rename(&p, &dest).map_err(internal)?;
        sync_dir(dir).map_err(internal)?;
        if kind == Kind::Config {
            // One config per owner: the newest replaces the others.
            for (other, _) in self.list_all(owner, Kind::Config) {
                if &other != name {
                    let _ = fs::remove_file(self.path_of(owner, Kind::Config, &other));
                }
            }
        }
        Ok(())
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut suffix = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
        let tmp = self.root.join("tmp").join(hex::encode(suffix));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        let dir = dest.parent().expect("has a parent");
        fs::create_dir_all(dir)?;
        fs::rename(&tmp, dest)?;
        sync_dir(dir)
    }

    fn open_plain(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> R<PlainFile> {
        let p = self.path_of(owner, kind, name);
        let file = fs::File::open(&p).map_err(|_| {
            (
                RefusalCode::NotFound,
                format!("{} is not stored here", hex::encode(name)),
            )
        })?;
        let size = file.metadata().map_err(internal)?.len();
        Ok(PlainFile {
            file,
            obf: self.obfuscator(owner, kind, name),
            size,
        })
    }

    /// A pack — or a share: challenges and proofs address either by its name (both are
    /// named by the BLAKE3 hash of their bytes, so a name cannot be both).
    fn open_challenged(&self, owner: &NodeId, name: &[u8; 32]) -> R<PlainFile> {
        self.open_plain(owner, Kind::Pack, name)
            .or_else(|_| self.open_plain(owner, Kind::Share, name))
    }

    /// Plain bytes of a stored file.
    pub fn get(
        &self,
        owner: &NodeId,
        kind: Kind,
        name: &[u8; 32],
        offset: u64,
        len: u32,
    ) -> R<Vec<u8>> {
        let f = self.open_plain(owner, kind, name)?;
        let len = (len as usize).min(MAX_CHUNK);
        if offset.checked_add(len as u64).is_none_or(|e| e > f.size) {
            return Err((
                RefusalCode::BadRequest,
                format!("bytes {offset}+{len} lie past the end ({} bytes)", f.size),
            ));
        }
        let mut buf = vec![0u8; len];
        read_exact_at(&f, &mut buf, offset)?;
        Ok(buf)
    }

    fn list_all(&self, owner: &NodeId, kind: Kind) -> Vec<([u8; 32], u64)> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(self.owner_dir(owner).join(kind.dir())) {
            for e in rd.flatten() {
                let Some(n) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let mut name = [0u8; 32];
                if n.len() == 64 && hex::decode_to_slice(&n, &mut name).is_ok() {
                    out.push((name, e.metadata().map(|m| m.len()).unwrap_or(0)));
                }
            }
        }
        out.sort();
        out
    }

    /// One page of stored files, names after `after`.
    pub fn list(
        &self,
        owner: &NodeId,
        kind: Kind,
        after: Option<[u8; 32]>,
    ) -> (Vec<([u8; 32], u64)>, bool) {
        let all: Vec<_> = self
            .list_all(owner, kind)
            .into_iter()
            .filter(|(n, _)| after.is_none_or(|a| *n > a))
            .collect();
        let more = all.len() > MAX_LIST_PAGE;
        (all.into_iter().take(MAX_LIST_PAGE).collect(), more)
    }

    pub fn remove(&self, owner: &NodeId, kind: Kind, name: &[u8; 32]) -> R<()> {
        let p = self.path_of(owner, kind, name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal(e)),
        }
        if kind == Kind::Pack {
            let _ = fs::remove_file(self.outboard_path(owner, name));
        }
        if let Some((p, _)) = self.find_partial(owner, kind, name) {
            let _ = fs::remove_file(p);
        }
        Ok(())
    }

    /// The keyed challenge answer over ranges of a stored pack.
    pub fn challenge(
        &self,
        owner: &NodeId,
        pack: &[u8; 32],
        nonce: &[u8; 32],
        ranges: &[Range],
    ) -> R<[u8; 32]> {
        let f = self.open_challenged(owner, pack)?;
        let bytes = challenge::read_ranges(ranges, |off, len| {
            if off.checked_add(len).is_none_or(|e| e > f.size) {
                return Err((
                    RefusalCode::BadRequest,
                    "range past the end of the pack".to_string(),
                ));
            }
            let mut b = vec![0u8; len as usize];
            read_exact_at(&f, &mut b, off)?;
            Ok(b)
        })?;
        Ok(challenge::keyed_answer(nonce, pack, ranges, &bytes))
    }

    /// The bao-tree proof of ranges of a stored pack.
    pub fn prove(&self, owner: &NodeId, pack: &[u8; 32], ranges: &[Range]) -> R<Vec<u8>> {
        let f = self.open_challenged(owner, pack)?;
        let ob_bytes = fs::read(self.outboard_path(owner, pack)).map_err(|_| {
            (
                RefusalCode::NotFound,
                "the pack's outboard is missing".to_string(),
            )
        })?;
        let tree = BaoTree::new(f.size, BLOCK_SIZE);
        if ob_bytes.len() as u64 != tree.outboard_size() {
            return Err((
                RefusalCode::Internal,
                "the pack's outboard has the wrong size".into(),
            ));
        }
        let ob = PostOrderMemOutboard {
            root: blake3::Hash::from_bytes(*pack),
            tree,
            data: ob_bytes,
        };
        challenge::prove(f, &ob, ranges).map_err(internal)
    }
}

fn not_matched() -> Refused {
    (
        RefusalCode::NotMatched,
        "this node was not matched to host your data".to_string(),
    )
}

fn read_exact_at(f: &PlainFile, buf: &mut [u8], offset: u64) -> R<()> {
    use bao_tree::io::sync::ReadAt;
    let mut done = 0;
    while done < buf.len() {
        let n = f
            .read_at(offset + done as u64, &mut buf[done..])
            .map_err(internal)?;
        if n == 0 {
            return Err((
                RefusalCode::Internal,
                "stored file is shorter than expected".into(),
            ));
        }
        done += n;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

struct DeobfuscatingReader {
    file: fs::File,
    obf: Obfuscator,
    pos: u64,
}

impl Read for DeobfuscatingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.obf.apply_at(self.pos, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn grants_beyond_the_offer_are_cut_to_what_is_left() {
        let allow = AllowList::with_capacity(100);
        let (a, b, c) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        assert_eq!(allow.set(a, 60), 60);
        // a coordinator asking for far more than the node offers gets what is left
        assert_eq!(allow.set(b, u64::MAX), 40);
        assert_eq!(allow.set(c, 1), 0);
        // a new grant for the same owner replaces its old one, it does not add to it
        assert_eq!(allow.set(a, 10), 10);
        assert_eq!(allow.set(c, 1 << 40), 50);
        let total: u64 = allow.owners().iter().map(|(_, q)| q).sum();
        assert_eq!(total, 100);
        // without a capacity (friends by hand in tests), grants are taken as given
        assert_eq!(AllowList::new().set(a, u64::MAX), u64::MAX);
    }

    fn store() -> (tempfile::TempDir, HostedStore, NodeId) {
        let d = tempfile::tempdir().unwrap();
        let allow = Arc::new(AllowList::new());
        let owner = NodeId([7; 32]);
        allow.set(owner, 1 << 20);
        let s = HostedStore::open(d.path().join("hosted"), &[1; 32], allow).unwrap();
        (d, s, owner)
    }

    #[test]
    fn upload_resume_check_and_obfuscation() {
        let (_d, s, o) = store();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let name = *blake3::hash(&data).as_bytes();
        assert_eq!(
            s.put_begin(&o, Kind::Pack, &name, data.len() as u64)
                .unwrap(),
            (0, false)
        );
        s.put_data(&o, Kind::Pack, &name, 0, &data[..40_000])
            .unwrap();
        // cut: a new begin resumes where it stopped; a half file is not listed
        assert_eq!(
            s.put_begin(&o, Kind::Pack, &name, data.len() as u64)
                .unwrap(),
            (40_000, false)
        );
        assert!(s.list(&o, Kind::Pack, None).0.is_empty());
        assert!(s.put_end(&o, Kind::Pack, &name).is_err());
        assert!(
            s.put_data(&o, Kind::Pack, &name, 39_999, &data[39_999..])
                .is_err(),
            "wrong offset"
        );
        s.put_data(&o, Kind::Pack, &name, 40_000, &data[40_000..])
            .unwrap();
        s.put_end(&o, Kind::Pack, &name).unwrap();
        assert_eq!(
            s.list(&o, Kind::Pack, None).0,
            vec![(name, data.len() as u64)]
        );
        let on_disk = fs::read(s.path_of(&o, Kind::Pack, &name)).unwrap();
        assert_eq!(on_disk.len(), data.len());
        assert_ne!(on_disk, data, "stored obfuscated");
        assert_eq!(
            s.get(&o, Kind::Pack, &name, 99_000, 1000).unwrap(),
            &data[99_000..]
        );
        assert!(s.get(&o, Kind::Pack, &name, 99_500, 1000).is_err());
        assert_eq!(
            s.put_begin(&o, Kind::Pack, &name, data.len() as u64)
                .unwrap(),
            (data.len() as u64, true)
        );
        // challenges
        let r = [Range {
            offset: 10,
            len: 100,
        }];
        let a = s.challenge(&o, &name, &[3; 32], &r).unwrap();
        assert_eq!(
            a,
            challenge::keyed_answer(&[3; 32], &name, &r, &[data[10..110].to_vec()])
        );
        let proof = s.prove(&o, &name, &r).unwrap();
        challenge::verify_proof(&name, data.len() as u64, &r, &proof).unwrap();
        s.remove(&o, Kind::Pack, &name).unwrap();
        assert!(s.get(&o, Kind::Pack, &name, 0, 1).is_err());
    }

    #[test]
    fn an_upload_abandoned_for_a_week_gives_its_space_back_at_the_next_start() {
        let (d, s, o) = store(); // 1 MiB quota
        let (old, recent) = ([1u8; 32], [2u8; 32]);
        s.put_begin(&o, Kind::Pack, &old, 600 << 10).unwrap();
        s.put_begin(&o, Kind::Pack, &recent, 100 << 10).unwrap();
        let (p, _) = s.find_partial(&o, Kind::Pack, &old).unwrap();
        let eight_days = std::time::Duration::from_secs(8 * 24 * 3600);
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - eight_days)
            .unwrap();
        assert_eq!(s.used(&o), 700 << 10);
        let allow = s.allow_list().clone();
        drop(s);
        let s = HostedStore::open(d.path().join("hosted"), &[1; 32], allow).unwrap();
        assert_eq!(
            s.used(&o),
            100 << 10,
            "the week-old upload is gone, the recent one kept"
        );
        assert!(s.find_partial(&o, Kind::Pack, &recent).is_some());
    }

    #[test]
    fn uploads_side_by_side_cannot_both_fit_in_the_space_one_leaves() {
        let (_d, s, o) = store(); // 1 MiB quota
        let (a, b) = ([1u8; 32], [2u8; 32]);
        // neither has sent a byte yet: the first reserves its size
        assert_eq!(
            s.put_begin(&o, Kind::Pack, &a, 600 << 10).unwrap(),
            (0, false)
        );
        assert_eq!(
            s.put_begin(&o, Kind::Pack, &b, 600 << 10).unwrap_err().0,
            RefusalCode::OverQuota
        );
        assert_eq!(s.used(&o), 600 << 10);
        // resuming the first is not counted twice
        s.put_data(&o, Kind::Pack, &a, 0, &[0u8; 1000]).unwrap();
        assert_eq!(
            s.put_begin(&o, Kind::Pack, &a, 600 << 10).unwrap(),
            (1000, false)
        );
        assert_eq!(s.used(&o), 600 << 10);
    }

    #[test]
    fn wrong_name_quota_and_strangers_are_refused() {
        let (_d, s, o) = store();
        let data = vec![5u8; 1000];
        let lie = [9u8; 32];
        s.put_begin(&o, Kind::Pack, &lie, 1000).unwrap();
        s.put_data(&o, Kind::Pack, &lie, 0, &data).unwrap();
        assert_eq!(
            s.put_end(&o, Kind::Pack, &lie).unwrap_err().0,
            RefusalCode::BadName
        );
        assert!(s.list(&o, Kind::Pack, None).0.is_empty());
        assert_eq!(s.used(&o), 0, "the refused upload is gone");
        assert_eq!(
            s.put_begin(&o, Kind::Pack, &lie, 2 << 20).unwrap_err().0,
            RefusalCode::OverQuota
        );
        let stranger = NodeId([8; 32]);
        assert_eq!(
            s.put_begin(&stranger, Kind::Pack, &lie, 10).unwrap_err().0,
            RefusalCode::NotMatched
        );
        assert_eq!(
            s.get(&stranger, Kind::Pack, &lie, 0, 1).unwrap_err().0,
            RefusalCode::NotFound
        );
    }
}
