//! A repository on disk:
//!
//! ```text
//! .pluto/
//!   secret            the entropy (mode 0600) — the only file that never leaves the machine
//!   worktree          the tracked directory's path (local only; not needed to restore)
//!   config            sealed JSON: version, repository id, chunker sizes, compression
//!   packs/xx/<id>     pack files, named by the BLAKE3 hash of their bytes
//!   index/<id>        sealed index files, named by the BLAKE3 hash of their bytes
//!   snapshots/<id>    sealed snapshot files, named by the BLAKE3 hash of their bytes
//!   tmp/              temp files; anything here is garbage from an interrupted command
//!   lock              flock()ed while a command runs
//! ```

use crate::chunker::ChunkerParams;
use crate::crypto::{open_file, seal_file, ObjType, ObjectId, SubKey};
use crate::error::{Error, IoContext, Result};
use crate::index::{
    decode_index_file, encode_index_file, Index, IndexedPack, Location, INDEX_MAGIC,
};
use crate::keys::{read_secret, write_secret, Entropy, Keys};
use crate::pack::store::{LocalPackStore, PackStore};
use crate::pack::{pack_key, PackId, PACK_PREFIX_LEN};
use crate::snapshot::{Snapshot, SnapshotEntry, SNAPSHOT_MAGIC};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub const REPO_DIR: &str = ".pluto";
pub const CONFIG_MAGIC: &[u8; 8] = b"PLUTOCF1";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub repo_id: String,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_target_size: u64,
}

impl Config {
    pub fn new() -> Self {
        let mut id = [0u8; 16];
        crate::crypto::random_bytes(&mut id);
        Config {
            version: FORMAT_VERSION,
            repo_id: hex::encode(id),
            chunker: ChunkerParams::default(),
            compression_level: crate::compress::DEFAULT_LEVEL,
            pack_target_size: crate::pack::PACK_TARGET_SIZE,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

pub struct Repository {
    root: PathBuf,
    keys: Keys,
    config: Config,
    store: LocalPackStore,
    index: OnceLock<Index>,
    pack_keys: Mutex<HashMap<PackId, Arc<SubKey>>>,
    /// Damaged files the lenient readers skipped, for the caller to show as warnings.
    warnings: Mutex<Vec<String>>,
    _lock: fs::File,
}

/// Find the repository: an explicit path, else `.pluto` in `start` or a parent.
pub fn discover(explicit: Option<&Path>, start: &Path) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let mut dir = Some(start);
    while let Some(d) = dir {
        let cand = d.join(REPO_DIR);
        if cand.join("config").is_file() {
            return Ok(cand);
        }
        dir = d.parent();
    }
    Err(Error::RepositoryNotFound(start.to_path_buf()))
}

/// How to behave when another process holds the repository lock: wait up to `timeout`,
/// calling `on_wait` once (with who holds it, when known) before the first pause.
pub struct LockWait<'a> {
    pub timeout: std::time::Duration,
    /// Written into the lock file while this process holds the lock, for a waiter to name
    /// (e.g. "pluto serve (pid 4242)").
    pub holder: &'a str,
    pub on_wait: &'a mut dyn FnMut(&str),
}

/// Who the lock file says holds it: the last holder's description, when that process is
/// still alive.
fn lock_holder(f: &fs::File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 512];
    let n = f.read_at(&mut buf, 0).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let text = text.trim();
    let pid: i32 = text
        .rsplit_once("pid ")?
        .1
        .trim_end_matches(')')
        .parse()
        .ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    (alive && pid != std::process::id() as i32).then(|| text.to_string())
}

fn lock_file(root: &Path, mode: LockMode, mut wait: Option<LockWait<'_>>) -> Result<fs::File> {
    let path = root.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .at(&path)?;
    let op = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(20);
    let mut said = false;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    while unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        let Some(w) = wait.as_mut() else {
            return Err(Error::Locked(path));
        };
        let left = w.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Error::Locked(path));
        }
        if !said {
            said = true;
            (w.on_wait)(&lock_holder(&f).unwrap_or_else(|| "another pluto process".into()));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
    if let Some(w) = &wait {
        // Best effort: a waiter's message only. Shared holders overwrite each other.
        use std::os::unix::fs::FileExt;
        let line = format!("{}\n", w.holder);
        if f.set_len(0).is_ok() {
            let _ = f.write_all_at(line.as_bytes(), 0);
        }
    }
    Ok(f)
}

impl Repository {
    /// Create a new repository at `root` with fresh keys (or the given entropy, for recovery
    /// into an empty place). Returns the repository; the caller shows the words.
    pub fn init(root: &Path, entropy: &Entropy, worktree: Option<&Path>) -> Result<Repository> {
        if root.join("config").exists() {
            return Err(Error::AlreadyExists(root.to_path_buf()));
        }
        for sub in ["", "packs", "index", "snapshots", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).at(&d)?;
        }
        let tmp = root.join("tmp");
        write_secret(&tmp, &root.join("secret"), entropy)?;
        if let Some(w) = worktree {
            crate::fsutil::write_atomic(
                &tmp,
                &root.join("worktree"),
                w.as_os_str().as_encoded_bytes(),
                0o644,
            )?;
        }
        let keys = entropy.derive();
        let config = Config::new();
        let sealed = seal_file(
            &keys.data,
            CONFIG_MAGIC,
            &serde_json::to_vec(&config).expect("config serializes"),
        );
        crate::fsutil::write_atomic(&tmp, &root.join("config"), &sealed, 0o644)?;
        Self::open(root, LockMode::Exclusive)
    }

    /// Recreate the secret of an existing repository from the words, refusing words that
    /// do not open it.
    pub fn recover(root: &Path, entropy: &Entropy) -> Result<Repository> {
        let keys = entropy.derive();
        let config_path = root.join("config");
        if !config_path.is_file() {
            return Err(Error::NotARepository(root.to_path_buf()));
        }
        read_config(root, &keys, KeySource::Words)?;
        for sub in ["packs", "index", "snapshots", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).at(&d)?;
        }
        write_secret(&root.join("tmp"), &root.join("secret"), entropy)?;
        Self::open(root, LockMode::Exclusive)
    }

    pub fn open(root: &Path, mode: LockMode) -> Result<Repository> {
        Self::open_waiting(root, mode, None)
    }

    /// [`Self::open`], waiting for a lock another process holds as `wait` says (none:
    /// refuse at once with [`Error::Locked`]).
    pub fn open_waiting(
        root: &Path,
        mode: LockMode,
        wait: Option<LockWait<'_>>,
    ) -> Result<Repository> {
        if !root.join("config").is_file() {
            return Err(Error::NotARepository(root.to_path_buf()));
        }
        let secret = root.join("secret");
        if !secret.exists() {
            return Err(Error::SecretMissing(root.to_path_buf()));
        }
        let lock = lock_file(root, mode, wait)?;
        let keys = read_secret(&secret)?.derive();
        let config = read_config(root, &keys, KeySource::SecretFile)?;
        if config.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: config.version,
                supported: FORMAT_VERSION,
            });
        }
        config
            .chunker
            .validate()
            .map_err(|reason| Error::ConfigDamaged {
                path: root.join("config"),
                reason,
            })?;
        // Offsets inside a pack are u32: a pack must stay well below 4 GiB.
        if !(1 << 20..=1 << 30).contains(&config.pack_target_size) {
            return Err(Error::ConfigDamaged {
                path: root.join("config"),
                reason: format!(
                    "pack_target_size {} is outside 1 MiB..1 GiB",
                    config.pack_target_size
                ),
            });
        }
        let repo = Repository {
            store: LocalPackStore::new(root.join("packs"), root.join("tmp")),
            root: root.to_path_buf(),
            keys,
            config,
            index: OnceLock::new(),
            pack_keys: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Vec::new()),
            _lock: lock,
        };
        if mode == LockMode::Exclusive {
            repo.clean_tmp();
        }
        Ok(repo)
    }

    /// Temp files left by a killed command are garbage: nothing refers to them.
    fn clean_tmp(&self) {
        self.clean_tmp_older_than(std::time::Duration::ZERO);
    }

    /// Remove temp files older than `age`. Safe under a shared lock when `age` is far longer
    /// than any write takes: a concurrent command's temp file is younger.
    pub fn clean_tmp_older_than(&self, age: std::time::Duration) {
        let Ok(rd) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        let now = std::time::SystemTime::now();
        for e in rd.flatten() {
            let old_enough = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= age)
                .unwrap_or(false);
            if old_enough {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn store(&self) -> &LocalPackStore {
        &self.store
    }

    /// The tracked directory recorded at init, if any.
    pub fn worktree(&self) -> Option<PathBuf> {
        let p = self.root.join("worktree");
        let bytes = fs::read(p).ok()?;
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }

    pub fn set_worktree(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_atomic(
            &self.tmp_dir(),
            &self.root.join("worktree"),
            dir.as_os_str().as_encoded_bytes(),
            0o644,
        )
    }

    // ---------- index ----------

    pub fn index_files(&self) -> Result<Vec<String>> {
        list_names(&self.root.join("index"))
    }

    pub fn read_index_file(&self, name: &str) -> Result<Vec<IndexedPack>> {
        let path = self.root.join("index").join(name);
        let bytes = fs::read(&path).at(&path)?;
        if PackId::of_bytes(&bytes).hex() != name {
            return Err(Error::corrupt(
                "index",
                name,
                "file does not hash to its name",
            ));
        }
        let plain = open_file(&self.keys.data, INDEX_MAGIC, "index", name, &bytes)?;
        let raw = zstd::stream::decode_all(&plain[..])
            .map_err(|e| Error::corrupt("index", name, format!("zstd: {e}")))?;
        decode_index_file(&raw, name)
    }

    /// Write an index file listing `packs`; returns its name.
    pub fn write_index_file(&self, packs: &[IndexedPack]) -> Result<String> {
        let raw = encode_index_file(packs);
        let z = zstd::bulk::compress(&raw, 3).map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
        let sealed = seal_file(&self.keys.data, INDEX_MAGIC, &z);
        let name = PackId::of_bytes(&sealed).hex();
        crate::fsutil::write_atomic(
            &self.tmp_dir(),
            &self.root.join("index").join(&name),
            &sealed,
            0o644,
        )?;
        Ok(name)
    }

    pub fn remove_index_file(&self, name: &str) -> Result<()> {
        let p = self.root.join("index").join(name);
        fs::remove_file(&p).at(&p)
    }

    /// Every readable index file; one that cannot be read is skipped and named in the
    /// warnings (its objects then look missing: snapshots store them again, restores name
    /// what they could not restore, and `prune` refuses until `pluto repair index`).
    fn load_index(&self) -> Result<Index> {
        use rayon::prelude::*;
        let names = self.index_files()?;
        let files: Vec<(String, Result<Vec<IndexedPack>>)> = names
            .into_par_iter()
            .map(|n| {
                let r = self.read_index_file(&n);
                (n, r)
            })
            .collect();
        let mut idx = Index::new();
        for (name, f) in files {
            match f {
                Ok(packs) => {
                    for p in &packs {
                        idx.add_pack(p);
                    }
                }
                Err(e) if e.is_damage() => self.warn(format!(
                    "index file {name} cannot be read and was skipped ({e}): run `pluto check`, then `pluto repair index`"
                )),
                Err(e) => return Err(e),
            }
        }
        // One listing of the pack store: where an object has a copy in a pack that is gone
        // and one in a pack that is here (a snapshot stored it again), the index points at
        // the one that is here.
        let present: std::collections::HashSet<PackId> =
            self.store.list()?.into_iter().map(|p| p.0).collect();
        idx.finish_preferring(|p| present.contains(p));
        Ok(idx)
    }

    /// Note a damaged file a reader skipped.
    pub fn warn(&self, w: String) {
        let mut ws = self.warnings.lock().unwrap();
        if !ws.contains(&w) {
            ws.push(w);
        }
    }

    /// The damaged files skipped so far (each once), emptied by the call.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap())
    }

    /// The index, loaded on first use.
    pub fn index(&self) -> Result<&Index> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let idx = self.load_index()?;
        Ok(self.index.get_or_init(|| idx))
    }

    /// Forget the loaded index (after this process wrote new index files).
    pub fn reload_index(&mut self) -> Result<&Index> {
        self.index = OnceLock::new();
        self.index()
    }

    // ---------- objects ----------

    pub fn pack_key(&self, pack: &PackId) -> Result<Arc<SubKey>> {
        if let Some(k) = self.pack_keys.lock().unwrap().get(pack) {
            return Ok(k.clone());
        }
        let prefix = self.store.get_range(pack, 0, PACK_PREFIX_LEN as u64)?;
        let k = Arc::new(pack_key(&self.keys.data, &pack.hex(), &prefix)?);
        self.pack_keys.lock().unwrap().insert(*pack, k.clone());
        Ok(k)
    }

    /// Open one sealed object body, decompress it and check it against its id.
    pub fn open_object(&self, id: &ObjectId, loc: &Location, sealed: &[u8]) -> Result<Vec<u8>> {
        let key = self.pack_key(&loc.pack)?;
        let aad = crate::crypto::object_aad(loc.ty, loc.flags, id);
        let stored = key.open(&aad, sealed).ok_or_else(|| {
            Error::corrupt(
                "pack",
                loc.pack.hex(),
                format!("object {} fails authentication", id.hex()),
            )
        })?;
        let plain = crate::compress::decompress(loc.flags, stored, loc.plain_len as usize)
            .ok_or_else(|| {
                Error::corrupt(
                    "pack",
                    loc.pack.hex(),
                    format!("object {} does not decompress", id.hex()),
                )
            })?;
        if ObjectId::compute(&self.keys.id, &plain) != *id {
            return Err(Error::corrupt(
                "pack",
                loc.pack.hex(),
                format!("object {} does not match its id", id.hex()),
            ));
        }
        Ok(plain)
    }

    pub fn read_object(&self, id: &ObjectId, ty: ObjType) -> Result<Vec<u8>> {
        // Looked up by type and id: an object of another type with the same id (equal
        // plaintext) is a different object and never stands in for this one.
        let loc = self
            .index()?
            .get(ty, id)
            .ok_or_else(|| Error::ObjectMissing { id: id.hex() })?;
        let sealed = self
            .store
            .get_range(&loc.pack, loc.offset as u64, loc.stored_len as u64)?;
        self.open_object(id, &loc, &sealed)
    }

    pub fn read_tree(&self, id: &ObjectId) -> Result<crate::tree::Tree> {
        let bytes = self.read_object(id, ObjType::Tree)?;
        crate::tree::Tree::decode(&bytes, id)
    }

    // ---------- snapshots ----------

    pub fn snapshot_names(&self) -> Result<Vec<String>> {
        list_names(&self.root.join("snapshots"))
    }

    pub fn read_snapshot(&self, name: &str) -> Result<Snapshot> {
        let path = self.root.join("snapshots").join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::UnknownSnapshot(name.to_string()))
            }
            Err(e) => return Err(e).at(&path),
        };
        if PackId::of_bytes(&bytes).hex() != name {
            return Err(Error::corrupt(
                "snapshot",
                name,
                "file does not hash to its name",
            ));
        }
        let plain = open_file(&self.keys.data, SNAPSHOT_MAGIC, "snapshot", name, &bytes)?;
        Snapshot::decode(&plain, name)
    }

    /// All readable snapshots, oldest first. A snapshot file that cannot be read is
    /// skipped and named in the warnings: one damaged file must not hide the others.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        Ok(self.snapshots_and_damaged()?.0)
    }

    /// The readable snapshots (oldest first) and the names of the damaged ones, each
    /// also named in the warnings.
    pub fn snapshots_and_damaged(&self) -> Result<(Vec<SnapshotEntry>, Vec<String>)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for name in self.snapshot_names()? {
            match self.read_snapshot(&name) {
                Ok(snapshot) => out.push(SnapshotEntry { id: name, snapshot }),
                // Forgotten by a concurrent command since the listing.
                Err(Error::UnknownSnapshot(_)) => {}
                Err(e) if e.is_damage() => {
                    self.warn(format!(
                        "snapshot {name} cannot be read and was skipped ({e}); `pluto forget {}` removes it",
                        &name[..8]
                    ));
                    damaged.push(name);
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            a.snapshot
                .time_ns
                .cmp(&b.snapshot.time_ns)
                .then(a.id.cmp(&b.id))
        });
        Ok((out, damaged))
    }

    /// Resolve `latest`, an id or a unique prefix among the readable snapshots. A spec that
    /// names only a damaged snapshot file gets that file's damage as the error.
    pub fn find_snapshot(&self, spec: &str) -> Result<SnapshotEntry> {
        let (all, damaged) = self.snapshots_and_damaged()?;
        match crate::snapshot::resolve(&all, spec) {
            Ok(i) => Ok(all[i].clone()),
            Err(Error::UnknownSnapshot(s)) => {
                let spec_l = spec.to_lowercase();
                let hits: Vec<&String> = damaged
                    .iter()
                    .filter(|d| !spec_l.is_empty() && d.starts_with(&spec_l))
                    .collect();
                match hits.as_slice() {
                    [one] => Err(self
                        .read_snapshot(one)
                        .err()
                        .unwrap_or(Error::UnknownSnapshot(s))),
                    _ => Err(Error::UnknownSnapshot(s)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The full name of the snapshot file `spec` names (`latest`, an id or a unique prefix),
    /// readable or not: `forget` must be able to remove a damaged snapshot file.
    pub fn resolve_snapshot_name(&self, spec: &str) -> Result<String> {
        match self.find_snapshot(spec) {
            Ok(s) => Ok(s.id),
            Err(e) if e.is_damage() => {
                let spec_l = spec.to_lowercase();
                let hits: Vec<String> = self
                    .snapshot_names()?
                    .into_iter()
                    .filter(|n| n.starts_with(&spec_l))
                    .collect();
                match hits.len() {
                    1 => Ok(hits[0].clone()),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub fn write_snapshot(&self, s: &Snapshot) -> Result<String> {
        let sealed = seal_file(&self.keys.data, SNAPSHOT_MAGIC, &s.encode());
        let name = PackId::of_bytes(&sealed).hex();
        crate::fsutil::write_atomic(
            &self.tmp_dir(),
            &self.root.join("snapshots").join(&name),
            &sealed,
            0o644,
        )?;
        Ok(name)
    }

    pub fn remove_snapshot(&self, name: &str) -> Result<()> {
        let p = self.root.join("snapshots").join(name);
        fs::remove_file(&p).at(&p)?;
        crate::fsutil::sync_dir(&self.root.join("snapshots"))
    }
}

/// Where the key that opens the config came from, to name it when it does not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeySource {
    Words,
    SecretFile,
}

fn read_config(root: &Path, keys: &Keys, source: KeySource) -> Result<Config> {
    let path = root.join("config");
    let bytes = fs::read(&path).at(&path)?;
    let damaged = |reason: String| Error::ConfigDamaged {
        path: path.clone(),
        reason,
    };
    let plain = match open_file(&keys.data, CONFIG_MAGIC, "config", "config", &bytes) {
        Ok(p) => p,
        Err(Error::Corrupt { reason, .. }) if reason.starts_with("authentication") => {
            // A tag that fails says only "wrong key or changed bytes". The other sealed
            // files use the same key: if one opens, the key is right and the config is
            // damaged; if there are some and none opens, the key is wrong.
            return Err(match key_opens_other_files(root, keys) {
                Some(true) => damaged("it fails authentication, though the same key opens the repository's other files".into()),
                Some(false) => match source {
                    KeySource::Words => Error::WrongKey(root.to_path_buf()),
                    KeySource::SecretFile => Error::SecretDoesNotOpen {
                        secret: root.join("secret"),
                        root: root.to_path_buf(),
                    },
                },
                None => Error::WrongKeyOrDamagedConfig(root.to_path_buf()),
            });
        }
        // Cut short or not a config at all: damage, whatever the key.
        Err(Error::Corrupt { reason, .. }) => return Err(damaged(reason)),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&plain).map_err(|e| damaged(format!("does not decode: {e}")))
}

/// Whether `keys` open some of the repository's snapshot and index files (a few are
/// tried); `None` when it has none to try.
fn key_opens_other_files(root: &Path, keys: &Keys) -> Option<bool> {
    let mut tried = false;
    for (dir, magic) in [("snapshots", SNAPSHOT_MAGIC), ("index", INDEX_MAGIC)] {
        let d = root.join(dir);
        for name in list_names(&d).unwrap_or_default().iter().take(8) {
            let Ok(bytes) = fs::read(d.join(name)) else {
                continue;
            };
            tried = true;
            if open_file(&keys.data, magic, dir, name, &bytes).is_ok() {
                return Some(true);
            }
        }
    }
    tried.then_some(false)
}

/// File names of a flat directory that look like 64-hex ids.
fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).at(dir),
    };
    for e in rd {
        let e = e.at(dir)?;
        if let Some(n) = e.file_name().to_str() {
            if n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}
