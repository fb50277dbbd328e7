//! The owner's record of its hosts (`.pluto/peers/state.json`) and of where its shares went
//! (`.pluto/peers/shares.json`), and [`PeerStore`], the one way to change them.
//!
//! Several writers meet on these files: a node's push and its challenge round run at once,
//! and a `pluto push` in another shell runs beside the node. A writer that loads the file,
//! works for minutes over the network and saves what it loaded would throw away whatever the
//! others learned meanwhile (a failed challenge forgotten, a counter gone backwards). So no
//! one holds a copy across network work: each fact is written when it is learned, by
//! [`PeerStore::update`], which takes an in-process mutex and an exclusive `flock` on
//! `.pluto/peers/lock` (for other processes), re-reads the file, applies the change and
//! writes the file atomically (temp file, fsync, rename). The changes themselves merge
//! (counters add, timestamps only move forward, a failure is cleared only by a later pass),
//! so the order in which two writers' facts land does not matter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::HostAddr;
use super::proto::Kind;
use super::{PeerError, Result};
use crate::wire::NodeId;

/// The version written into `state.json` and `shares.json`. Version 1 (no `version` field)
/// had the same keys and is read as is; the fields added since default to "unknown".
pub const STATE_VERSION: u32 = 2;

/// One file of the repository as peers know it: its kind and name. On disk, a JSON string
/// `<kind dir>/<name hex>` (`packs/3f2a…`), readable as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey {
    pub kind: Kind,
    pub name: [u8; 32],
}

impl ItemKey {
    pub fn new(kind: Kind, name: [u8; 32]) -> ItemKey {
        ItemKey { kind, name }
    }
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.dir(), hex::encode(self.name))
    }
}

impl std::str::FromStr for ItemKey {
    type Err = String;
    fn from_str(k: &str) -> std::result::Result<ItemKey, String> {
        let bad = || format!("{k:?} is not <kind>/<64 hex digits>");
        let (d, h) = k.split_once('/').ok_or_else(bad)?;
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.dir() == d)
            .ok_or_else(bad)?;
        let mut name = [0u8; 32];
        hex::decode_to_slice(h, &mut name).map_err(|_| bad())?;
        Ok(ItemKey { kind, name })
    }
}

impl Serialize for ItemKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ItemKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ItemKey, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Keys written as hex strings in the JSON files (node ids, pack and share names).
trait HexKey: Sized {
    fn to_hex_key(&self) -> String;
    fn from_hex_key(s: &str) -> Option<Self>;
}

impl HexKey for NodeId {
    fn to_hex_key(&self) -> String {
        self.to_hex()
    }
    fn from_hex_key(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl HexKey for [u8; 32] {
    fn to_hex_key(&self) -> String {
        hex::encode(self)
    }
    fn from_hex_key(s: &str) -> Option<Self> {
        let mut n = [0u8; 32];
        hex::decode_to_slice(s, &mut n).ok().map(|_| n)
    }
}

fn parse_hex<K: HexKey, E: serde::de::Error>(s: &str) -> std::result::Result<K, E> {
    K::from_hex_key(s).ok_or_else(|| E::custom(format!("{s:?} is not 64 hex digits")))
}

/// A map keyed by node id or name, as a JSON object keyed by hex.
mod hex_map {
    use super::*;
    pub fn serialize<K: HexKey, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k.to_hex_key(), v)))
    }
    pub fn deserialize<'de, K: HexKey + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<BTreeMap<K, V>, D::Error> {
        let m = BTreeMap::<String, V>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| Ok((parse_hex(&k)?, v)))
            .collect()
    }
}

/// A name or node id as a hex string.
mod hex_one {
    use super::*;
    pub fn serialize<K: HexKey, S: Serializer>(
        k: &K,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&k.to_hex_key())
    }
    pub fn deserialize<'de, K: HexKey, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<K, D::Error> {
        parse_hex(&String::deserialize(d)?)
    }
}

/// An optional node id as a hex string or null.
mod hex_opt {
    use super::*;
    pub fn serialize<K: HexKey, S: Serializer>(
        k: &Option<K>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match k {
            Some(k) => s.serialize_some(&k.to_hex_key()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, K: HexKey, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<K>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse_hex(&s))
            .transpose()
    }
}

/// The outcome of the last challenge of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// When the challenge was asked (unix seconds).
    pub unix: u64,
    pub pack: String,
    pub proof: bool,
    pub passed: bool,
    pub detail: String,
}

/// Why a host's copies stopped counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// It failed a challenge: evidence. A challenge it passes later (asked after the
    /// failure) restores it.
    Challenge,
    /// The coordinator excluded it or moves copies off it: only the coordinator undoes that.
    Excluded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// When it was learned (unix seconds).
    pub unix: u64,
    pub reason: String,
    /// An exclusion: the `since_unix` (the coordinator's clock) of the relationship the
    /// coordinator listed as moving. A later match (a newer `since_unix`) undoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_since: Option<u64>,
    /// An exclusion that came on top of a failed challenge: the host's own evidence
    /// stands, and no match undoes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_challenge: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub url: String,
    #[serde(default)]
    pub quota: u64,
    /// Files the host confirmed stored, with their sizes.
    #[serde(default)]
    pub stored: BTreeMap<ItemKey, u64>,
    /// Lost trust (failed a challenge, excluded): its copies do not count.
    #[serde(default)]
    pub failed: bool,
    /// Why and since when `failed` (absent in version 1 files: treated as a challenge
    /// failure of unknown time, so a later pass restores the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default)]
    pub last_challenge: Option<ChallengeRecord>,
    #[serde(default)]
    pub challenges_passed: u64,
    #[serde(default)]
    pub challenges_failed: u64,
    #[serde(default)]
    pub last_push_unix: u64,
    /// The last time the host answered (a listing, an upload, a challenge), unix seconds.
    #[serde(default)]
    pub last_seen_unix: u64,
    /// Set when the host could not be reached and has not answered since.
    #[serde(default)]
    pub unreachable_since: Option<u64>,
    /// Bytes pushed to the host over a direct connection, in all.
    #[serde(default)]
    pub bytes_direct: u64,
    /// Bytes pushed to the host through the coordinator's relay, in all.
    #[serde(default)]
    pub bytes_relayed: u64,
    /// How the last push that moved bytes to the host reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_path: Option<PathKind>,
}

/// How a push reached a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    Direct,
    Relayed,
    /// A direct connection opened by hole punching through both sides' NATs.
    Punched,
}

impl HostRecord {
    /// A push moved `direct`, `relayed` and `punched` bytes to the host: counters add
    /// (punched bytes count as direct: they did not go through the relay); the path is the
    /// one most bytes took (left as it was when nothing moved).
    pub fn count_path(&mut self, direct: u64, relayed: u64, punched: u64) {
        self.bytes_direct = self
            .bytes_direct
            .saturating_add(direct)
            .saturating_add(punched);
        self.bytes_relayed = self.bytes_relayed.saturating_add(relayed);
        if direct + relayed + punched > 0 {
            self.last_path = Some(if relayed > direct.max(punched) {
                PathKind::Relayed
            } else if punched > direct {
                PathKind::Punched
            } else {
                PathKind::Direct
            });
        }
    }

    /// The host answered at `at`. A later "unreachable" (begun after `at`) stands; an
    /// earlier one is over.
    pub fn mark_seen(&mut self, at: u64) {
        self.last_seen_unix = self.last_seen_unix.max(at);
        if self.unreachable_since.is_some_and(|t| t <= at) {
            self.unreachable_since = None;
        }
    }

    /// An attempt begun at `at` could not reach the host. Ignored when the host answered
    /// at or after `at` (another writer's newer fact); the first failed time is kept.
    pub fn mark_unreachable(&mut self, at: u64) {
        if self.last_seen_unix >= at && self.last_seen_unix > 0 {
            return;
        }
        self.unreachable_since = Some(self.unreachable_since.map_or(at, |t| t.min(at)));
    }

    /// The coordinator lists this host's relationship as moving (its `since_unix` is
    /// `since`): stop counting it. A failed challenge is kept as it is (a pass asked after
    /// it restores the host; the next listing marks it again while it is moving).
    pub fn mark_moved(&mut self, at: u64, reason: &str, since: u64) {
        if self
            .failure
            .as_ref()
            .is_some_and(|f| f.kind == FailureKind::Challenge)
        {
            self.failed = true;
            return;
        }
        self.mark_failed(FailureKind::Excluded, at, reason);
        if let Some(f) = self.failure.as_mut() {
            f.moved_since = Some(f.moved_since.map_or(since, |m| m.max(since)));
        }
    }

    /// The coordinator lists this host as active again with `since` (its clock): when that
    /// is a newer match than the move it had listed, the move no longer holds. Compared on
    /// the coordinator's clock only. A failed challenge stays (only a pass clears it), and
    /// so does an exclusion that came on top of one. True if the host counts again.
    pub fn rematched(&mut self, since: u64) -> bool {
        let clears = self.failure.as_ref().is_some_and(|f| {
            f.kind == FailureKind::Excluded
                && !f.after_challenge
                && f.moved_since.is_some_and(|m| since > m)
        });
        if self.failed && clears {
            self.failed = false;
            self.failure = None;
            return true;
        }
        false
    }

    /// Stop counting this host's copies (kept the earliest failure's time and kind, an
    /// exclusion winning over a challenge failure).
    pub fn mark_failed(&mut self, kind: FailureKind, at: u64, reason: &str) {
        let stronger = match &self.failure {
            None => true,
            Some(f) => f.kind == FailureKind::Challenge && kind == FailureKind::Excluded,
        };
        if !self.failed || stronger {
            let after_challenge = self.failure.as_ref().is_some_and(|f| {
                f.after_challenge
                    || (f.kind == FailureKind::Challenge && kind == FailureKind::Excluded)
            });
            self.failure = Some(Failure {
                kind,
                unix: at,
                reason: reason.to_string(),
                moved_since: None,
                after_challenge,
            });
        }
        self.failed = true;
    }

    /// Record a challenge asked at `c.unix` and its outcome. Counters add; the last
    /// challenge shown is the one asked last, whatever order the results arrive in; a
    /// failure is cleared only by a pass of a challenge asked after it.
    pub fn record_challenge(&mut self, c: ChallengeRecord, outcome: ChallengeOutcome) {
        let at = c.unix;
        match outcome {
            ChallengeOutcome::Passed => {
                self.challenges_passed += 1;
                self.mark_seen(at);
                let clears = match &self.failure {
                    Some(f) => f.kind == FailureKind::Challenge && f.unix < at,
                    None => true,
                };
                if self.failed && clears {
                    self.failed = false;
                    self.failure = None;
                }
            }
            ChallengeOutcome::Failed => {
                self.challenges_failed += 1;
                self.mark_seen(at);
                // Evidence: its copies no longer count; repair moves them elsewhere.
                self.mark_failed(FailureKind::Challenge, at, &c.detail);
            }
            ChallengeOutcome::Unreachable => self.mark_unreachable(at),
        }
        if self.last_challenge.as_ref().is_none_or(|l| l.unix <= at) {
            self.last_challenge = Some(c);
        }
    }

    /// What the host listed at a time when this record held `before`: files it lists are
    /// stored (`keep` chooses which: all, or those of the sizes expected), and files of
    /// `before` it does not list are lost. Files recorded by another writer after `before`
    /// was read are left alone, whether listed or not.
    pub fn apply_listing(
        &mut self,
        before: &BTreeSet<ItemKey>,
        listed: &HashMap<(Kind, [u8; 32]), u64>,
        keep: impl Fn(ItemKey, u64) -> bool,
    ) {
        self.stored
            .retain(|k, _| !before.contains(k) || listed.contains_key(&(k.kind, k.name)));
        for ((kind, name), size) in listed {
            let k = ItemKey::new(*kind, *name);
            if keep(k, *size) {
                self.stored.insert(k, *size);
            }
        }
    }
}

/// A challenge's outcome as the state records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeOutcome {
    Passed,
    Failed,
    Unreachable,
}

/// The owner's record of its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    #[serde(default = "version_one")]
    pub version: u32,
    #[serde(with = "hex_map", default)]
    pub hosts: BTreeMap<NodeId, HostRecord>,
}

fn version_one() -> u32 {
    1
}

impl Default for PeerState {
    fn default() -> Self {
        PeerState {
            version: STATE_VERSION,
            hosts: BTreeMap::new(),
        }
    }
}

impl PeerState {
    pub fn path(repo_root: &Path) -> PathBuf {
        repo_root.join("peers").join("state.json")
    }

    /// Read the record (absent: empty). For changes, use [`PeerStore::update`].
    pub fn load(repo_root: &Path) -> Result<PeerState> {
        Ok(load_record::<PeerState>(&Self::path(repo_root), "peer state")?.0)
    }

    /// The record of `h` (created when new), with its address brought up to date.
    pub fn host(&mut self, h: &HostAddr) -> &mut HostRecord {
        let r = self.hosts.entry(h.node).or_default();
        r.url = h.url.clone();
        r
    }

    /// Hosts in good standing.
    pub fn good_hosts(&self) -> Vec<HostAddr> {
        self.hosts
            .iter()
            .filter(|(_, r)| !r.failed)
            .map(|(id, r)| HostAddr {
                node: *id,
                url: r.url.clone(),
            })
            .collect()
    }

    /// Whether `host` is in good standing and confirmed holding `key`.
    pub fn holds(&self, host: &NodeId, key: &ItemKey) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|r| !r.failed && r.stored.contains_key(key))
    }

    /// How many good hosts hold the item.
    pub fn copies(&self, key: &ItemKey) -> usize {
        self.hosts
            .values()
            .filter(|r| !r.failed && r.stored.contains_key(key))
            .count()
    }

    pub fn is_failed(&self, host: &NodeId) -> bool {
        self.hosts.get(host).is_some_and(|r| r.failed)
    }
}

/// Where the shares of one pack went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackPlacement {
    pub k: u8,
    pub n: u8,
    /// By share index: the share's name, its length, and the host given it.
    pub shares: Vec<SharePlacement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharePlacement {
    #[serde(with = "hex_one")]
    pub name: [u8; 32],
    pub len: u64,
    #[serde(with = "hex_opt", default)]
    pub host: Option<NodeId>,
}

impl SharePlacement {
    pub fn key(&self) -> ItemKey {
        ItemKey::new(Kind::Share, self.name)
    }
}

/// The owner's placement record, by pack name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default = "version_one")]
    pub version: u32,
    #[serde(with = "hex_map", default)]
    pub packs: BTreeMap<[u8; 32], PackPlacement>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            version: STATE_VERSION,
            packs: BTreeMap::new(),
        }
    }
}

impl Placement {
    pub fn path(repo_root: &Path) -> PathBuf {
        repo_root.join("peers").join("shares.json")
    }

    /// Read the record (absent: empty). For changes, use [`PeerStore::update_placement`].
    pub fn load(repo_root: &Path) -> Result<Placement> {
        Ok(load_record::<Placement>(&Self::path(repo_root), "share placement")?.0)
    }
}

/// Read one of the owner's JSON records (absent: the default), with the bytes read.
fn load_record<T: serde::de::DeserializeOwned + Default>(
    p: &Path,
    what: &str,
) -> Result<(T, Vec<u8>)> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(|v| (v, b))
            .map_err(|e| PeerError::Protocol(format!("{}: malformed {what}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((T::default(), Vec::new())),
        Err(e) => Err(PeerError::Io {
            path: p.to_path_buf(),
            source: e,
        }),
    }
}

/// The in-process mutex of each repository's records, shared by every handle of one
/// process (threads of one process must not rely on `flock` alone: where it is emulated
/// with `fcntl` locks, they would not exclude each other).
fn process_mutex(root: &Path) -> Arc<Mutex<()>> {
    static ALL: OnceLock<Mutex<HashMap<PathBuf, Weak<Mutex<()>>>>> = OnceLock::new();
    let key = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.retain(|_, w| w.strong_count() > 0);
    if let Some(m) = all.get(&key).and_then(Weak::upgrade) {
        return m;
    }
    let m = Arc::new(Mutex::new(()));
    all.insert(key, Arc::downgrade(&m));
    m
}

/// The one owner of a repository's peer records: a cheap, cloneable handle.
#[derive(Clone)]
pub struct PeerStore {
    root: PathBuf,
    mutex: Arc<Mutex<()>>,
}

impl std::fmt::Debug for PeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerStore({})", self.root.display())
    }
}

/// Held while a change is applied: the process's mutex and the file lock.
struct Held<'a> {
    _guard: std::sync::MutexGuard<'a, ()>,
    _file: std::fs::File,
}

impl PeerStore {
    /// The records of the repository at `repo_root` (its `.pluto` directory).
    pub fn open(repo_root: &Path) -> PeerStore {
        PeerStore {
            root: repo_root.to_path_buf(),
            mutex: process_mutex(repo_root),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock file beside the records.
    pub fn lock_path(repo_root: &Path) -> PathBuf {
        repo_root.join("peers").join("lock")
    }

    fn hold(&self) -> Result<Held<'_>> {
        let guard = self.mutex.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.root.join("peers");
        std::fs::create_dir_all(&dir).map_err(PeerError::io(&dir))?;
        let path = Self::lock_path(&self.root);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(PeerError::io(&path))?;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(PeerError::Io { path, source: e });
            }
        }
        Ok(Held {
            _guard: guard,
            _file: file,
        })
    }

    fn write<T: Serialize>(&self, p: &Path, value: &T, old: &[u8]) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).expect("a record serializes");
        if bytes == old {
            return Ok(());
        }
        pluto_repo::fsutil::write_atomic(&self.root.join("tmp"), p, &bytes, 0o600)?;
        Ok(())
    }

    /// The hosts' record as it is now (a copy: never write it back; use [`Self::update`]).
    pub fn read(&self) -> Result<PeerState> {
        PeerState::load(&self.root)
    }

    /// The placement record as it is now.
    pub fn read_placement(&self) -> Result<Placement> {
        Placement::load(&self.root)
    }

    /// Apply `f` to the hosts' record as it is on disk now, under the lock, and write the
    /// result atomically. Keep `f` short and free of I/O: other writers wait for it.
    pub fn update<T>(&self, f: impl FnOnce(&mut PeerState) -> T) -> Result<T> {
        let _held = self.hold()?;
        let p = PeerState::path(&self.root);
        let (mut st, old) = load_record::<PeerState>(&p, "peer state")?;
        let out = f(&mut st);
        st.version = STATE_VERSION;
        self.write(&p, &st, &old)?;
        Ok(out)
    }

    /// [`Self::update`] for the placement record.
    pub fn update_placement<T>(&self, f: impl FnOnce(&mut Placement) -> T) -> Result<T> {
        self.update_both(|_, p| f(p))
    }

    /// Change both records in one step (a share's host and what that host holds).
    pub fn update_both<T>(&self, f: impl FnOnce(&mut PeerState, &mut Placement) -> T) -> Result<T> {
        let _held = self.hold()?;
        let sp = PeerState::path(&self.root);
        let pp = Placement::path(&self.root);
        let (mut st, old_st) = load_record::<PeerState>(&sp, "peer state")?;
        let (mut pl, old_pl) = load_record::<Placement>(&pp, "share placement")?;
        let out = f(&mut st, &mut pl);
        st.version = STATE_VERSION;
        pl.version = STATE_VERSION;
        self.write(&pp, &pl, &old_pl)?;
        self.write(&sp, &st, &old_st)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn bytes_by_path_add_up_and_the_path_is_the_one_most_bytes_took() {
        let mut r = HostRecord::default();
        r.count_path(0, 0, 0);
        assert_eq!(r.last_path, None, "nothing moved: no path yet");
        r.count_path(1000, 10, 0);
        assert_eq!(r.last_path, Some(PathKind::Direct));
        r.count_path(5, 700, 0);
        assert_eq!(r.last_path, Some(PathKind::Relayed));
        r.count_path(0, 0, 0);
        assert_eq!(
            r.last_path,
            Some(PathKind::Relayed),
            "kept when nothing moved"
        );
        assert_eq!((r.bytes_direct, r.bytes_relayed), (1005, 710));
        // a record written before these fields reads as nothing counted
        let old: HostRecord = serde_json::from_str(r#"{"url":"ws://h:1"}"#).unwrap();
        assert_eq!(
            (old.bytes_direct, old.bytes_relayed, old.last_path),
            (0, 0, None)
        );
    }

    use super::*;

    fn host(i: u8) -> HostAddr {
        HostAddr {
            node: NodeId([i; 32]),
            url: format!("ws://127.0.0.1:{}", 7000 + u16::from(i)),
        }
    }

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        d
    }

    /// A handle with a mutex of its own, as another process has: only the file lock
    /// stands between it and the others.
    fn separate(root: &Path) -> PeerStore {
        PeerStore {
            root: root.to_path_buf(),
            mutex: Arc::default(),
        }
    }

    fn passed(unix: u64) -> ChallengeRecord {
        ChallengeRecord {
            unix,
            pack: "ab".repeat(32),
            proof: false,
            passed: true,
            detail: String::new(),
        }
    }

    fn failed(unix: u64) -> ChallengeRecord {
        ChallengeRecord {
            passed: false,
            detail: "wrong answer to a keyed challenge".into(),
            ..passed(unix)
        }
    }

    #[test]
    fn many_threads_updating_at_once_lose_nothing() {
        let d = repo();
        let handles: Vec<PeerStore> = (0..4)
            .map(|i| {
                if i % 2 == 0 {
                    PeerStore::open(d.path())
                } else {
                    separate(d.path())
                }
            })
            .collect();
        std::thread::scope(|s| {
            for (t, store) in handles.iter().enumerate() {
                s.spawn(move || {
                    for i in 0..50u8 {
                        store
                            .update(|st| {
                                let r = st.host(&host(t as u8));
                                r.stored.insert(ItemKey::new(Kind::Pack, [i; 32]), 1);
                                st.host(&host(9)).challenges_passed += 1;
                            })
                            .unwrap();
                    }
                });
            }
        });
        let st = PeerStore::open(d.path()).read().unwrap();
        assert_eq!(st.hosts[&NodeId([9; 32])].challenges_passed, 200);
        for t in 0..4u8 {
            assert_eq!(st.hosts[&NodeId([t; 32])].stored.len(), 50, "thread {t}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_updating_at_once_lose_nothing() {
        let d = repo();
        let store = PeerStore::open(d.path());
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u8 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..20u64 {
                    store
                        .update(|st| {
                            let r = st.host(&host(1));
                            r.challenges_failed += 1;
                            r.last_push_unix = r.last_push_unix.max(i);
                            r.stored
                                .insert(ItemKey::new(Kind::Snapshot, [t; 32]), i + 1);
                        })
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let r = &store.read().unwrap().hosts[&NodeId([1; 32])];
        assert_eq!(r.challenges_failed, 160);
        assert_eq!(r.last_push_unix, 19);
        assert_eq!(r.stored.len(), 8);
        assert!(r.stored.values().all(|&v| v == 20));
    }

    /// Run by [`two_processes_updating_at_once_lose_nothing`] in a child process.
    #[test]
    #[ignore = "a child of two_processes_updating_at_once_lose_nothing"]
    fn child_process_writer() {
        let Ok(root) = std::env::var("PLUTO_STATE_TEST_ROOT") else {
            return;
        };
        let store = PeerStore::open(Path::new(&root));
        for _ in 0..100 {
            store
                .update(|st| st.host(&host(2)).challenges_passed += 1)
                .unwrap();
        }
    }

    #[test]
    fn two_processes_updating_at_once_lose_nothing() {
        let d = repo();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "peer::state::tests::child_process_writer",
                        "--ignored",
                        "--test-threads=1",
                    ])
                    .env("PLUTO_STATE_TEST_ROOT", d.path())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let store = PeerStore::open(d.path());
        for _ in 0..100 {
            store
                .update(|st| st.host(&host(2)).challenges_passed += 1)
                .unwrap();
        }
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let st = store.read().unwrap();
        assert_eq!(st.hosts[&NodeId([2; 32])].challenges_passed, 300);
    }

    #[test]
    fn a_failure_outlives_a_pass_of_a_challenge_asked_before_it() {
        let d = repo();
        let (a, b) = (PeerStore::open(d.path()), separate(d.path()));
        // Round one asks at t=100; round two asks at t=105 and catches the host lying;
        // round one's pass (a slow host) is written last.
        b.update(|st| {
            st.host(&host(3))
                .record_challenge(failed(105), ChallengeOutcome::Failed)
        })
        .unwrap();
        a.update(|st| {
            st.host(&host(3))
                .record_challenge(passed(100), ChallengeOutcome::Passed)
        })
        .unwrap();
        let st = a.read().unwrap();
        let r = &st.hosts[&NodeId([3; 32])];
        assert!(r.failed, "a stale pass does not clear a failure");
        assert_eq!((r.challenges_passed, r.challenges_failed), (1, 1));
        assert_eq!(r.last_challenge.as_ref().unwrap().unix, 105);
        assert!(!r.last_challenge.as_ref().unwrap().passed);
        // A challenge asked after the failure, and passed, restores it.
        a.update(|st| {
            st.host(&host(3))
                .record_challenge(passed(200), ChallengeOutcome::Passed)
        })
        .unwrap();
        assert!(!a.read().unwrap().hosts[&NodeId([3; 32])].failed);
    }

    #[test]
    fn an_exclusion_is_not_undone_by_a_pass() {
        let mut r = HostRecord::default();
        r.mark_failed(FailureKind::Excluded, 10, "excluded by the coordinator");
        r.record_challenge(passed(50), ChallengeOutcome::Passed);
        assert!(r.failed);
    }

    #[test]
    fn a_move_is_undone_only_by_a_match_made_after_it() {
        // the owner's clock (1,000) runs ahead of the coordinator's: only the coordinator's
        // own times are compared
        let mut r = HostRecord::default();
        r.mark_moved(1_000, "the coordinator has it leaving", 90);
        assert!(
            !r.rematched(90),
            "the same relationship, still the moved one"
        );
        assert!(r.failed);
        assert!(r.rematched(95), "matched again after the move");
        assert!(!r.failed && r.failure.is_none());
        // an exclusion told without a listing is undone only once a listing saw it moving
        let mut x = HostRecord::default();
        x.mark_failed(FailureKind::Excluded, 100, "excluded by the coordinator");
        assert!(!x.rematched(500));
        // a failed challenge is evidence of the host's own: a move keeps it, no match undoes it
        let mut c = HostRecord::default();
        c.record_challenge(failed(100), ChallengeOutcome::Failed);
        c.mark_moved(120, "the coordinator has it leaving", 90);
        assert_eq!(c.failure.as_ref().unwrap().kind, FailureKind::Challenge);
        assert!(!c.rematched(500));
        assert!(c.failed);
        // ...and so is an exclusion on top of one (a coordinator cannot launder it)
        let mut e = HostRecord::default();
        e.record_challenge(failed(100), ChallengeOutcome::Failed);
        e.mark_failed(FailureKind::Excluded, 110, "excluded by the coordinator");
        e.mark_moved(120, "the coordinator has it leaving", 90);
        assert!(!e.rematched(500));
        assert!(e.failed);
    }

    #[test]
    fn a_failed_flag_survives_a_concurrent_writer_that_read_before_it() {
        let d = repo();
        let store = PeerStore::open(d.path());
        store
            .update(|st| {
                st.host(&host(4))
                    .stored
                    .insert(ItemKey::new(Kind::Pack, [1; 32]), 10)
            })
            .unwrap();
        // A push reads the record, then works over the network...
        let before: BTreeSet<ItemKey> = store.read().unwrap().hosts[&NodeId([4; 32])]
            .stored
            .keys()
            .copied()
            .collect();
        // ...meanwhile a challenge round catches the host...
        separate(d.path())
            .update(|st| {
                st.host(&host(4))
                    .record_challenge(failed(100), ChallengeOutcome::Failed)
            })
            .unwrap();
        // ...and the push writes what it learned.
        let listed: HashMap<(Kind, [u8; 32]), u64> =
            [((Kind::Pack, [1; 32]), 10), ((Kind::Pack, [2; 32]), 20)].into();
        store
            .update(|st| {
                let r = st.host(&host(4));
                r.mark_seen(90);
                r.apply_listing(&before, &listed, |_, _| true);
            })
            .unwrap();
        let r = &store.read().unwrap().hosts[&NodeId([4; 32])];
        assert!(r.failed);
        assert_eq!(r.challenges_failed, 1);
        assert_eq!(r.stored.len(), 2);
        assert_eq!(r.last_seen_unix, 100);
    }

    #[test]
    fn a_listing_forgets_what_was_lost_but_not_what_another_writer_added_since() {
        let mut r = HostRecord::default();
        let (p1, p2, p3) = (
            ItemKey::new(Kind::Pack, [1; 32]),
            ItemKey::new(Kind::Pack, [2; 32]),
            ItemKey::new(Kind::Pack, [3; 32]),
        );
        r.stored.insert(p1, 1);
        r.stored.insert(p2, 2);
        let before: BTreeSet<ItemKey> = r.stored.keys().copied().collect();
        r.stored.insert(p3, 3); // confirmed by another push after the listing began
        let listed: HashMap<(Kind, [u8; 32]), u64> = [((Kind::Pack, [1; 32]), 1)].into();
        r.apply_listing(&before, &listed, |_, _| true);
        assert_eq!(r.stored.keys().copied().collect::<Vec<_>>(), vec![p1, p3]);
    }

    #[test]
    fn unreachable_and_seen_merge_by_time() {
        let mut r = HostRecord::default();
        r.mark_unreachable(100);
        r.mark_unreachable(120);
        assert_eq!(
            r.unreachable_since,
            Some(100),
            "the first failed time is kept"
        );
        r.mark_seen(90); // an older answer, written late
        assert_eq!(r.unreachable_since, Some(100));
        r.mark_seen(130);
        assert_eq!(r.unreachable_since, None);
        r.mark_unreachable(125); // an attempt begun before the answer, written late
        assert_eq!(r.unreachable_since, None);
        assert_eq!(r.last_seen_unix, 130);
    }

    #[test]
    fn a_version_one_file_is_read_and_written_back_as_version_two() {
        let d = repo();
        let id = "11".repeat(32);
        let v1 = format!(
            r#"{{"hosts":{{"{id}":{{"url":"ws://h:1","quota":0,
            "stored":{{"packs/{p}":5,"shares/{p}":6}},"failed":true,
            "last_challenge":{{"unix":7,"pack":"{p}","proof":true,"passed":false,"detail":"x"}},
            "challenges_passed":2,"challenges_failed":1,"last_push_unix":9}}}}}}"#,
            p = "ab".repeat(32)
        );
        std::fs::create_dir_all(d.path().join("peers")).unwrap();
        std::fs::write(PeerState::path(d.path()), v1).unwrap();
        let shares = format!(
            r#"{{"packs":{{"{p}":{{"k":1,"n":2,"shares":[{{"name":"{p}","len":3,"host":"{id}"}},{{"name":"{p}","len":3,"host":null}}]}}}}}}"#,
            p = "cd".repeat(32)
        );
        std::fs::write(Placement::path(d.path()), shares).unwrap();
        let store = PeerStore::open(d.path());
        let st = store.read().unwrap();
        assert_eq!(st.version, 1);
        let r = &st.hosts[&NodeId([0x11; 32])];
        assert!(r.failed && r.failure.is_none());
        assert_eq!(r.stored[&ItemKey::new(Kind::Share, [0xab; 32])], 6);
        let pl = store.read_placement().unwrap();
        assert_eq!(
            pl.packs[&[0xcd; 32]].shares[0].host,
            Some(NodeId([0x11; 32]))
        );
        // A pass asked later restores a host a version-1 file marked failed.
        store
            .update(|st| {
                st.host(&host(0x11))
                    .record_challenge(passed(8), ChallengeOutcome::Passed)
            })
            .unwrap();
        store.update_placement(|_| ()).unwrap();
        let st = store.read().unwrap();
        assert_eq!(st.version, STATE_VERSION);
        assert!(!st.hosts[&NodeId([0x11; 32])].failed);
        let text = std::fs::read_to_string(PeerState::path(d.path())).unwrap();
        assert!(
            text.contains(&format!("\"packs/{}\"", "ab".repeat(32))),
            "{text}"
        );
        assert!(text.contains(&format!("\"{id}\"")), "{text}");
        assert_eq!(store.read_placement().unwrap().version, STATE_VERSION);
    }

    #[test]
    fn a_malformed_record_is_named() {
        let d = repo();
        std::fs::create_dir_all(d.path().join("peers")).unwrap();
        std::fs::write(PeerState::path(d.path()), r#"{"hosts":{"zz":{}}}"#).unwrap();
        let e = PeerStore::open(d.path()).update(|_| ()).unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
    }
}
