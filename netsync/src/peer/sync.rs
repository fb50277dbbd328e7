//! Push, pull, challenge rounds and repair over a set of hosts, and the owner's local
//! record of what each host holds (`.pluto/peers/state.json`, local: never pushed).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::challenge;
use super::client::{HostAddr, PeerClient};
use super::proto::{Kind, RefusalCode};
use super::route::{PathBytes, Routes};
pub use super::state::{
    ChallengeOutcome, ChallengeRecord, FailureKind, HostRecord, ItemKey, PathKind, PeerState,
    PeerStore,
};
use super::{PeerError, Result};
use crate::wire::NodeId;
use ed25519_dalek::SigningKey;

/// One file of the repository that peers hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: Kind,
    pub name: [u8; 32],
    pub size: u64,
    pub path: PathBuf,
}

impl Item {
    pub fn key(&self) -> ItemKey {
        ItemKey::new(self.kind, self.name)
    }
}

pub fn item_key(kind: Kind, name: &[u8; 32]) -> String {
    ItemKey::new(kind, *name).to_string()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Every file of the local repository that peers should hold.
pub fn local_items(repo_root: &Path) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    let cfg = repo_root.join("config");
    let bytes = std::fs::read(&cfg).map_err(PeerError::io(&cfg))?;
    out.push(Item {
        kind: Kind::Config,
        name: *blake3::hash(&bytes).as_bytes(),
        size: bytes.len() as u64,
        path: cfg,
    });
    let flat = |dir: PathBuf, kind: Kind, out: &mut Vec<Item>| -> Result<()> {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(PeerError::Io {
                    path: dir,
                    source: e,
                })
            }
        };
        for e in rd {
            let e = e.map_err(PeerError::io(&dir))?;
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let mut name = [0u8; 32];
            if n.len() == 64 && hex::decode_to_slice(&n, &mut name).is_ok() {
                let size = e.metadata().map_err(PeerError::io(e.path()))?.len();
                out.push(Item {
                    kind,
                    name,
                    size,
                    path: e.path(),
                });
            }
        }
        Ok(())
    };
    flat(repo_root.join("index"), Kind::Index, &mut out)?;
    flat(repo_root.join("snapshots"), Kind::Snapshot, &mut out)?;
    if let Ok(rd) = std::fs::read_dir(repo_root.join("packs")) {
        for sub in rd.flatten() {
            if sub.path().is_dir() {
                flat(sub.path(), Kind::Pack, &mut out)?;
            }
        }
    }
    // Packs before index files before snapshots before config: a host never holds an
    // index that names packs it does not have yet.
    out.sort_by_key(|i| (i.kind, i.name));
    Ok(out)
}

/// What a transfer reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Bytes that will move in all (known once hosts were listed).
    Total(u64),
    Bytes(u64),
    Done {
        host: NodeId,
        kind: Kind,
        name: [u8; 32],
    },
    HostFailed {
        host: NodeId,
        error: String,
    },
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

/// Settings of push and pull.
#[derive(Clone)]
pub struct SyncOptions {
    /// Files in flight per host.
    pub parallel: usize,
    pub timeout: Duration,
    /// Attempts per file (a cut transfer continues where it stopped).
    pub attempts: usize,
    /// When set, a host whose direct address fails is reached through the coordinator's relay.
    pub relay: Option<crate::coord_client::CoordClient>,
    /// With a relay at hand, a direct TCP dial that has no answer in this time falls back
    /// to the relay.
    pub dial_timeout: Duration,
    /// A host that was reached in this push and whose connection then drops is retried
    /// (with backoff) for this long before the push gives up on it.
    pub outage: Duration,
    /// Which hosts go through the relay, and bytes by path (shared by clones).
    pub routes: Routes,
    /// This node's peer port, to punch holes from (a serving node; none for a one-off
    /// `pluto push`, which has no listener and goes to the relay).
    pub punch_from: Option<super::punch::PunchPort>,
}

/// Dial a host: directly, unless it is known to need the relay (no address, or its direct
/// way failed in this push); a failed direct dial — no answer, a refused connection, a
/// failed handshake, or another node at the address — falls back to the coordinator's
/// relay at once, and while the host is relayed direct is tried again in the background.
pub async fn connect(key: &SigningKey, host: &HostAddr, opts: &SyncOptions) -> Result<PeerClient> {
    let known = if host.url.is_empty() {
        Some("the coordinator found no address that reaches it".to_string())
    } else if opts.routes.punched(&host.node) {
        Some("its direct address did not answer".to_string())
    } else {
        opts.routes.relayed(&host.node)
    };
    let why = match known {
        Some(why) => why,
        None => {
            let dial = if opts.relay.is_some() {
                opts.dial_timeout.min(opts.timeout)
            } else {
                opts.timeout
            };
            match PeerClient::connect_within(key, host, dial, opts.timeout).await {
                Ok(c) => return Ok(c),
                Err(
                    e @ (PeerError::Connect { .. }
                    | PeerError::Timeout(_)
                    | PeerError::Handshake { .. }
                    | PeerError::WrongPeer { .. }),
                ) if opts.relay.is_some() => match e {
                    // said once: the relay's error names the address again
                    PeerError::Connect { addr, reason } if addr == host.url => reason,
                    e => e.to_string(),
                },
                Err(e) => return Err(e),
            }
        }
    };
    // Before the relay: a hole punch, when this node has a peer port to punch from and no
    // punch to this host failed yet.
    if opts.punch_from.is_some() && opts.routes.may_punch(&host.node) {
        match punched(key, host, opts).await {
            Ok(c) => {
                opts.routes.punch_result(host.node, true);
                return Ok(c);
            }
            Err(e) => {
                tracing::info!(host = %host.node, "no punched connection: {e}");
                opts.routes.punch_result(host.node, false);
            }
        }
    }
    if !host.url.is_empty() && opts.routes.mark_relayed(host.node, why.clone()) {
        spawn_direct_retries(key, host, opts);
    }
    relayed(key, host, opts, &why).await
}

/// Punch through to `host` (see [`super::punch`]): the coordinator tells both sides where
/// the other is; both dial at once from their peer ports; the handshake proves the host.
async fn punched(key: &SigningKey, host: &HostAddr, opts: &SyncOptions) -> Result<PeerClient> {
    let (Some(coord), Some(port)) = (&opts.relay, &opts.punch_from) else {
        return Err(PeerError::Protocol(
            "no coordinator or peer port to punch with".into(),
        ));
    };
    let fail = |reason: String| PeerError::Connect {
        addr: host.url.clone(),
        reason,
    };
    let (addr, delay_ms) = coord
        .punch(host.node, port.port)
        .await
        .map_err(|e| fail(format!("punch refused: {e}")))?;
    let to: std::net::SocketAddr = addr.parse().map_err(|_| {
        fail(format!(
            "punch: the coordinator gave {addr:?}, not an IP:PORT"
        ))
    })?;
    tokio::time::sleep(Duration::from_millis(u64::from(delay_ms.min(5000)))).await;
    let tcp = port
        .dial(to, super::punch::WINDOW)
        .await
        .map_err(|e| fail(e.to_string()))?;
    PeerClient::over_tcp(
        key,
        host.node,
        &format!("ws://{to}"),
        tcp,
        opts.timeout,
        PathKind::Punched,
    )
    .await
}

async fn relayed(
    key: &SigningKey,
    host: &HostAddr,
    opts: &SyncOptions,
    why: &str,
) -> Result<PeerClient> {
    let Some(coord) = &opts.relay else {
        return Err(PeerError::Connect {
            addr: host.url.clone(),
            reason: format!("{why}; no coordinator relay at hand"),
        });
    };
    let refused = |ce: String| PeerError::Connect {
        addr: host.url.clone(),
        reason: format!("{why}; relay refused: {ce}"),
    };
    // (asked a moment ago: the answer stands; see `RELAY_REFUSAL_MEMORY`)
    if let Some(ce) = opts.routes.relay_refused_lately(&host.node) {
        return Err(refused(ce));
    }
    let (url, token) = coord.relay_ticket(host.node).await.map_err(|ce| {
        opts.routes.relay_refused(host.node, ce.to_string());
        refused(ce.to_string())
    })?;
    PeerClient::connect_relayed(key, &host.node, &url, &token, opts.timeout).await
}

/// While `host` is relayed, try its direct address now and then (bounded:
/// [`super::route::DIRECT_RETRY_DELAYS`]); once it answers, new connections go direct.
fn spawn_direct_retries(key: &SigningKey, host: &HostAddr, opts: &SyncOptions) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        opts.routes.retry_ended(&host.node, false);
        return;
    };
    let (key, host, routes, timeout) = (
        key.clone(),
        host.clone(),
        opts.routes.clone(),
        opts.dial_timeout.max(Duration::from_secs(1)),
    );
    rt.spawn(async move {
        for d in super::route::DIRECT_RETRY_DELAYS {
            tokio::time::sleep(d).await;
            if routes.relayed(&host.node).is_none() {
                return; // forgotten meanwhile
            }
            if let Ok(c) = PeerClient::connect_within(&key, &host, timeout, timeout * 2).await {
                c.close().await;
                tracing::info!(host = %host.node, url = %host.url, "direct way found again");
                routes.retry_ended(&host.node, true);
                return;
            }
        }
        routes.retry_ended(&host.node, false);
    });
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            parallel: 4,
            timeout: Duration::from_secs(30),
            attempts: 4,
            relay: None,
            dial_timeout: Duration::from_secs(5),
            outage: Duration::from_secs(120),
            routes: Routes::default(),
            punch_from: None,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub uploaded: usize,
    pub bytes: u64,
    pub already: usize,
    /// Hosts that failed, with why.
    pub errors: Vec<(NodeId, String)>,
    /// Items with fewer than k good copies after the push.
    pub under_replicated: usize,
    /// Bytes uploaded per host, by path (direct or through the relay).
    pub paths: BTreeMap<NodeId, PathBytes>,
}

impl PushReport {
    /// Bytes of this push that went through the coordinator's relay, and in all.
    pub fn relayed_share(&self) -> (u64, u64) {
        self.paths.values().fold((0, 0), |(r, t), p| {
            (r + p.relayed, t + p.relayed + p.direct + p.punched)
        })
    }
}

pub(crate) async fn list_host(
    key: &SigningKey,
    host: &HostAddr,
    opts: &SyncOptions,
) -> Result<HashMap<(Kind, [u8; 32]), u64>> {
    let mut c = connect(key, host, opts).await?;
    let mut out = HashMap::new();
    for kind in Kind::ALL {
        for (n, s) in c.list(kind).await? {
            out.insert((kind, n), s);
        }
    }
    c.close().await;
    Ok(out)
}

/// Whether an error says the host could not be reached (rather than that it answered and
/// refused or sent bad data).
pub fn is_unreachable(e: &PeerError) -> bool {
    matches!(
        e,
        PeerError::Connect { .. }
            | PeerError::Handshake { .. }
            | PeerError::Timeout(_)
            | PeerError::Closed
    )
}

/// The keys of what the record says `host` holds now (read before asking the host, so
/// that what it lists can be told apart from what another writer records meanwhile).
fn stored_before(store: &PeerStore, host: &NodeId) -> Result<BTreeSet<ItemKey>> {
    Ok(store
        .read()?
        .hosts
        .get(host)
        .map(|r| r.stored.keys().copied().collect())
        .unwrap_or_default())
}

/// Files a host confirmed, written to the peer state as they come — batched to about one
/// write a second (and one at the end): rewriting the whole record for every small file of
/// a large push would cost more than the upload, and a confirmation lost to a crash is
/// found again by the next push's listing.
struct Confirmed {
    store: PeerStore,
    host: HostAddr,
    pending: Mutex<(Vec<(ItemKey, u64)>, std::time::Instant)>,
}

impl Confirmed {
    fn new(store: PeerStore, host: HostAddr) -> Confirmed {
        Confirmed {
            store,
            host,
            pending: Mutex::new((Vec::new(), std::time::Instant::now())),
        }
    }

    fn note(&self, key: ItemKey, size: u64) -> Result<()> {
        let due = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.0.push((key, size));
            if p.1.elapsed() >= Duration::from_secs(1) {
                p.1 = std::time::Instant::now();
                std::mem::take(&mut p.0)
            } else {
                Vec::new()
            }
        };
        self.write(due)
    }

    fn flush(&self) -> Result<()> {
        let all = std::mem::take(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()).0);
        self.write(all)
    }

    fn write(&self, batch: Vec<(ItemKey, u64)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_unix();
        self.store.update(|st| {
            let r = st.host(&self.host);
            r.mark_seen(now);
            r.stored.extend(batch);
        })
    }
}

/// Upload every item the host lacks; returns (uploaded, bytes, already there). What the
/// host confirms is recorded in the peer state as it is learned; a host that cannot be
/// reached is recorded as such.
pub(crate) async fn push_host(
    key: Arc<SigningKey>,
    host: HostAddr,
    items: Arc<Vec<Item>>,
    opts: SyncOptions,
    progress: ProgressFn,
    store: PeerStore,
) -> Result<(usize, u64, usize)> {
    let confirmed = Arc::new(Confirmed::new(store.clone(), host.clone()));
    let res = push_host_inner(key, &host, items, opts, progress, &store, &confirmed).await;
    let flushed = confirmed.flush();
    if let Err(e) = &res {
        if is_unreachable(e) {
            let now = now_unix();
            store.update(|st| st.host(&host).mark_unreachable(now))?;
        }
    }
    flushed?;
    res
}

async fn push_host_inner(
    key: Arc<SigningKey>,
    host: &HostAddr,
    items: Arc<Vec<Item>>,
    opts: SyncOptions,
    progress: ProgressFn,
    store: &PeerStore,
    confirmed: &Arc<Confirmed>,
) -> Result<(usize, u64, usize)> {
    let before = stored_before(store, &host.node)?;
    let listed = list_host(&key, host, &opts).await?;
    let mut already = 0;
    let mut todo = VecDeque::new();
    let wanted: HashMap<ItemKey, u64> = items.iter().map(|i| (i.key(), i.size)).collect();
    for it in items.iter() {
        if listed.get(&(it.kind, it.name)) == Some(&it.size) {
            already += 1;
        } else {
            todo.push_back(it.clone());
        }
    }
    // What the host lists is what it holds: forget what it lost, record what it has.
    let now = now_unix();
    store.update(|st| {
        let r = st.host(host);
        r.mark_seen(now);
        r.apply_listing(&before, &listed, |k, s| wanted.get(&k) == Some(&s));
    })?;
    progress(Progress::Total(todo.iter().map(|i| i.size).sum()));
    // Packs go first and in parallel; index files, snapshots and config after all packs.
    let (packs, rest): (VecDeque<Item>, VecDeque<Item>) =
        todo.into_iter().partition(|i| i.kind == Kind::Pack);
    let mut uploaded = 0;
    let mut bytes = 0;
    for batch in [packs, rest] {
        let queue = Arc::new(Mutex::new(batch));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..opts.parallel.max(1) {
            let (key, host, queue, opts, progress, confirmed) = (
                key.clone(),
                host.clone(),
                queue.clone(),
                opts.clone(),
                progress.clone(),
                confirmed.clone(),
            );
            tasks.spawn(async move {
                push_worker(&key, &host, &queue, &opts, &progress, &confirmed).await
            });
        }
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok((n, b))) => {
                    uploaded += n;
                    bytes += b;
                }
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(e) => {
                    first_err = first_err.or(Some(PeerError::Protocol(format!(
                        "upload task failed: {e}"
                    ))))
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    Ok((uploaded, bytes, already))
}

async fn push_worker(
    key: &SigningKey,
    host: &HostAddr,
    queue: &Mutex<VecDeque<Item>>,
    opts: &SyncOptions,
    progress: &ProgressFn,
    confirmed: &Confirmed,
) -> Result<(usize, u64)> {
    let mut conn: Option<PeerClient> = None;
    let (mut n, mut total) = (0, 0);
    loop {
        let Some(item) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
            break;
        };
        let bytes = tokio::fs::read(&item.path)
            .await
            .map_err(PeerError::io(&item.path))?;
        if bytes.len() as u64 != item.size || blake3::hash(&bytes).as_bytes() != &item.name {
            if item.kind == Kind::Config {
                continue; // rewritten since listed; the next push sends it
            }
            return Err(PeerError::BadData {
                what: "local file",
                name: item.path.display().to_string(),
            });
        }
        let mut attempt = 0;
        // The host was reached in this push (it was listed): a connection that drops now is
        // an outage, retried with backoff until `opts.outage` has passed with no progress.
        let mut down_since: Option<std::time::Instant> = None;
        let mut backoff = Duration::from_millis(250);
        // A relayed connection is left for a direct one as soon as the direct way is back.
        if conn.as_ref().is_some_and(|c| c.relayed()) && opts.routes.relayed(&host.node).is_none() {
            if let Some(c) = conn.take() {
                c.close().await;
            }
        }
        loop {
            attempt += 1;
            let mut path = PathKind::Direct;
            let res = async {
                if conn.is_none() {
                    conn = Some(connect(key, host, opts).await?);
                }
                let c = conn.as_mut().expect("connected");
                path = c.path();
                c.put(item.kind, &bytes, &mut |b| progress(Progress::Bytes(b)))
                    .await
            }
            .await;
            match res {
                Ok(()) => {
                    opts.routes.count(host.node, item.size, path);
                    break;
                }
                Err(e @ PeerError::Refused(_)) => {
                    let busy = matches!(&e, PeerError::Refused(r) if r.code == RefusalCode::Busy);
                    if !busy || attempt >= opts.attempts {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e @ PeerError::BadData { .. }) => return Err(e),
                Err(e) => {
                    conn = None;
                    let since = *down_since.get_or_insert_with(std::time::Instant::now);
                    if attempt >= opts.attempts && since.elapsed() >= opts.outage {
                        return Err(PeerError::Connect {
                            addr: host.url.clone(),
                            reason: format!(
                                "gave up after {}s of retries: {e}",
                                since.elapsed().as_secs()
                            ),
                        });
                    }
                    tracing::info!(host = %host.node, error = %e, "connection lost; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        confirmed.note(item.key(), item.size)?;
        progress(Progress::Done {
            host: host.node,
            kind: item.kind,
            name: item.name,
        });
        n += 1;
        total += item.size;
    }
    if let Some(c) = conn {
        c.close().await;
    }
    Ok((n, total))
}

/// Replicate the repository at `repo_root` to `hosts` (all of them, concurrently), and
/// record what each holds in the peer state. A host that fails is reported, not fatal.
pub async fn push(
    key: &SigningKey,
    repo_root: &Path,
    hosts: &[HostAddr],
    k: usize,
    opts: &SyncOptions,
    progress: ProgressFn,
) -> Result<PushReport> {
    let items = Arc::new(local_items(repo_root)?);
    let store = PeerStore::open(repo_root);
    let key = Arc::new(key.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let before = opts.routes.bytes();
    for h in hosts {
        let (key, h2, items, opts, progress, store) = (
            key.clone(),
            h.clone(),
            items.clone(),
            opts.clone(),
            progress.clone(),
            store.clone(),
        );
        tasks.spawn(async move {
            (
                h2.node,
                push_host(key, h2, items, opts, progress, store).await,
            )
        });
    }
    let mut report = PushReport::default();
    let mut pushed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((node, Ok((n, b, a)))) => {
                report.uploaded += n;
                report.bytes += b;
                report.already += a;
                pushed.push(node);
            }
            Ok((node, Err(e))) => {
                progress(Progress::HostFailed {
                    host: node,
                    error: e.to_string(),
                });
                report.errors.push((node, e.to_string()));
            }
            Err(e) => report
                .errors
                .push((NodeId([0; 32]), format!("push task failed: {e}"))),
        }
    }
    let now = now_unix();
    report.paths = paths_since(&opts.routes, &before, hosts);
    let st = store.update(|st| {
        for h in hosts {
            let r = st.host(h);
            if pushed.contains(&h.node) {
                r.last_push_unix = r.last_push_unix.max(now);
            }
            if let Some(p) = report.paths.get(&h.node) {
                r.count_path(p.direct, p.relayed, p.punched);
            }
        }
        st.clone()
    })?;
    report.under_replicated = items.iter().filter(|i| st.copies(&i.key()) < k).count();
    Ok(report)
}

/// Bytes moved to `hosts` since `before` (a snapshot of `routes`).
pub(crate) fn paths_since(
    routes: &Routes,
    before: &HashMap<NodeId, PathBytes>,
    hosts: &[HostAddr],
) -> BTreeMap<NodeId, PathBytes> {
    let now = routes.bytes();
    hosts
        .iter()
        .map(|h| {
            let (a, b) = (
                now.get(&h.node).copied().unwrap_or_default(),
                before.get(&h.node).copied().unwrap_or_default(),
            );
            (
                h.node,
                PathBytes {
                    direct: a.direct - b.direct,
                    relayed: a.relayed - b.relayed,
                    punched: a.punched - b.punched,
                },
            )
        })
        .collect()
}

/// Which packs a pull fetches.
#[derive(Debug, Clone)]
pub enum PackSelection {
    All,
    None,
    Only(Vec<[u8; 32]>),
    /// These packs and nothing else: no config, index file or snapshot (a node fetching
    /// back packs its index names, which must not bring back snapshots it forgot).
    PacksOnly(Vec<[u8; 32]>),
}

#[derive(Debug, Default, Clone)]
pub struct PullReport {
    pub fetched: usize,
    pub bytes: u64,
    /// The repository's config was taken from the peers (a recovered repository).
    pub config_replaced: bool,
    /// Files no host could give back.
    pub missing: Vec<String>,
    pub errors: Vec<(NodeId, String)>,
    /// Shares listed on the hosts, by the scheme their headers name: how a repository
    /// recovered from its words learns the placement it had (it is not among the files).
    pub share_schemes: std::collections::HashMap<crate::erasure::Params, usize>,
}

pub(crate) fn dest_of(repo_root: &Path, kind: Kind, name: &[u8; 32]) -> PathBuf {
    let h = hex::encode(name);
    match kind {
        Kind::Pack => repo_root.join("packs").join(&h[..2]).join(h),
        Kind::Index => repo_root.join("index").join(h),
        Kind::Snapshot => repo_root.join("snapshots").join(h),
        Kind::Config => repo_root.join("config"),
        Kind::Share => repo_root.join("peers").join("staged").join(h),
    }
}

/// Fetch one file from the first host that has it and gives the right bytes; move it in place.
#[allow(clippy::too_many_arguments)]
async fn fetch_one(
    key: &SigningKey,
    repo_root: &Path,
    kind: Kind,
    name: &[u8; 32],
    size: u64,
    sources: &[HostAddr],
    opts: &SyncOptions,
    progress: &ProgressFn,
    errors: &Mutex<Vec<(NodeId, String)>>,
    unreachable: &Mutex<HashSet<NodeId>>,
) -> Result<bool> {
    let partial = repo_root.join("peers").join("partial");
    std::fs::create_dir_all(&partial).map_err(PeerError::io(&partial))?;
    let part = partial.join(format!("{}-{}", kind.dir(), hex::encode(name)));
    // Hosts that could not be reached earlier in this pull are asked last, once: a
    // recovery after months away lists dozens of hosts, many gone, and asking each of them
    // again for every file (with retries) made a pull take hours (long churn soak).
    let known_down = |n: &NodeId| {
        unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(n)
    };
    let mut order: Vec<&HostAddr> = sources.iter().collect();
    order.sort_by_key(|h| known_down(&h.node));
    for h in order {
        let tries = if known_down(&h.node) {
            1
        } else {
            opts.attempts
        };
        for attempt in 1..=tries {
            let mut reached = false;
            let res = async {
                let mut c = connect(key, h, opts).await?;
                reached = true;
                unreachable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&h.node);
                let b = c
                    .download(kind, name, size, &part, &mut |n| {
                        progress(Progress::Bytes(n))
                    })
                    .await;
                c.close().await;
                b
            }
            .await;
            match res {
                Ok(_) => {
                    let dest = dest_of(repo_root, kind, name);
                    let dir = dest.parent().expect("has a parent");
                    std::fs::create_dir_all(dir).map_err(PeerError::io(dir))?;
                    std::fs::File::open(&part)
                        .and_then(|f| f.sync_all())
                        .map_err(PeerError::io(&part))?;
                    std::fs::rename(&part, &dest).map_err(PeerError::io(&dest))?;
                    pluto_repo::fsutil::sync_dir(dir)?;
                    progress(Progress::Done {
                        host: h.node,
                        kind,
                        name: *name,
                    });
                    return Ok(true);
                }
                Err(e @ (PeerError::BadData { .. } | PeerError::Refused(_))) => {
                    errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((h.node, e.to_string()));
                    break; // this host cannot give it: next host
                }
                Err(_) if !reached && attempt < tries => {
                    // a host restarting refuses for a moment: tried again (as before) the
                    // first time it cannot be reached in this pull
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e) if !reached => {
                    // no way to it now: next host, and last from now on
                    unreachable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(h.node);
                    errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((h.node, e.to_string()));
                    break;
                }
                Err(e) => {
                    if attempt == tries {
                        errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((h.node, e.to_string()));
                    } else {
                        tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                    }
                }
            }
        }
    }
    Ok(false)
}

/// Bring back from `hosts`: config (only into a repository with no index and no snapshots
/// yet), index files and snapshots, then the selected packs. Downloads are resumable
/// (`.pluto/peers/partial/`), checked against their names, and moved in atomically.
pub async fn pull(
    key: &SigningKey,
    repo_root: &Path,
    hosts: &[HostAddr],
    packs: PackSelection,
    opts: &SyncOptions,
    progress: ProgressFn,
) -> Result<PullReport> {
    let mut report = PullReport::default();
    // Who has what.
    let mut have: BTreeMap<(Kind, [u8; 32]), (u64, Vec<HostAddr>)> = BTreeMap::new();
    let unreachable = Arc::new(Mutex::new(HashSet::new()));
    let store = PeerStore::open(repo_root);
    // All hosts are asked at once: after a lost disk a pull may list dozens of hosts, many
    // of them gone, and each one that does not answer costs a dial timeout.
    let mut befores = Vec::with_capacity(hosts.len());
    for h in hosts {
        befores.push(stored_before(&store, &h.node)?);
    }
    let asked = now_unix();
    // (at most 16 at a time: each costs the coordinator messages when it is relayed; the
    // futures are made in a loop, as a stream over a borrowing closure is not `Send` for
    // the compiler inside a spawned task)
    let mut asks = Vec::with_capacity(hosts.len());
    for h in hosts {
        asks.push(list_host(key, h, opts));
    }
    let listings: Vec<_> = futures_util::stream::iter(asks)
        .buffered(16)
        .collect()
        .await;
    for ((h, before), listing) in hosts.iter().zip(befores).zip(listings) {
        match listing {
            Ok(l) => {
                let now = now_unix();
                store.update(|st| {
                    let r = st.host(h);
                    r.mark_seen(now);
                    r.apply_listing(&before, &l, |_, _| true);
                })?;
                for ((k, n), s) in l {
                    have.entry((k, n))
                        .or_insert((s, Vec::new()))
                        .1
                        .push(h.clone());
                }
            }
            Err(e) => {
                if is_unreachable(&e) {
                    store.update(|st| st.host(h).mark_unreachable(asked))?;
                    unreachable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(h.node);
                }
                report.errors.push((h.node, e.to_string()))
            }
        }
    }
    let local: std::collections::HashSet<(Kind, [u8; 32])> = local_items(repo_root)?
        .into_iter()
        .map(|i| (i.kind, i.name))
        .collect();
    let fresh = !local
        .iter()
        .any(|(k, _)| matches!(k, Kind::Index | Kind::Snapshot));
    let wanted_packs: Option<std::collections::HashSet<[u8; 32]>> = match &packs {
        PackSelection::All => None,
        PackSelection::None => Some(Default::default()),
        PackSelection::Only(v) | PackSelection::PacksOnly(v) => Some(v.iter().copied().collect()),
    };
    let packs_only = matches!(packs, PackSelection::PacksOnly(_));
    let mut todo: Vec<(Kind, [u8; 32], u64, Vec<HostAddr>)> = Vec::new();
    for ((kind, name), (size, srcs)) in &have {
        if local.contains(&(*kind, *name)) {
            continue;
        }
        let want = match kind {
            Kind::Config => fresh && !packs_only,
            Kind::Index | Kind::Snapshot => !packs_only,
            Kind::Pack => wanted_packs.as_ref().is_none_or(|w| w.contains(name)),
            // shares are decoded into packs by `shares::pull_shares`
            Kind::Share => false,
        };
        if want {
            todo.push((*kind, *name, *size, srcs.clone()));
        }
    }
    if let PackSelection::Only(v) | PackSelection::PacksOnly(v) = &packs {
        for n in v {
            if !have.contains_key(&(Kind::Pack, *n)) && !local.contains(&(Kind::Pack, *n)) {
                report.missing.push(item_key(Kind::Pack, n));
            }
        }
    }
    progress(Progress::Total(todo.iter().map(|t| t.2).sum()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let key = Arc::new(key.clone());
    // config, index, snapshots first (in that order), then packs in parallel.
    todo.sort_by_key(|t| match t.0 {
        Kind::Config => 0,
        Kind::Index => 1,
        Kind::Snapshot => 2,
        Kind::Pack => 3,
        Kind::Share => 4,
    });
    let (meta, packs_todo): (Vec<_>, Vec<_>) = todo.into_iter().partition(|t| t.0 != Kind::Pack);
    for (kind, name, size, srcs) in meta {
        if fetch_one(
            &key,
            repo_root,
            kind,
            &name,
            size,
            &srcs,
            opts,
            &progress,
            &errors,
            &unreachable,
        )
        .await?
        {
            report.fetched += 1;
            report.bytes += size;
            if kind == Kind::Config {
                report.config_replaced = true;
            }
        } else {
            report.missing.push(item_key(kind, &name));
        }
    }
    let queue = Arc::new(Mutex::new(VecDeque::from(packs_todo)));
    let done = Arc::new(Mutex::new((0usize, 0u64, Vec::new())));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.parallel.max(1) {
        let (key, root, queue, opts, progress, errors, done, unreachable) = (
            key.clone(),
            repo_root.to_path_buf(),
            queue.clone(),
            opts.clone(),
            progress.clone(),
            errors.clone(),
            done.clone(),
            unreachable.clone(),
        );
        tasks.spawn(async move {
            loop {
                let Some((kind, name, size, srcs)) =
                    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                else {
                    return Ok::<(), PeerError>(());
                };
                let ok = fetch_one(
                    &key,
                    &root,
                    kind,
                    &name,
                    size,
                    &srcs,
                    &opts,
                    &progress,
                    &errors,
                    &unreachable,
                )
                .await?;
                let mut d = done.lock().unwrap_or_else(|e| e.into_inner());
                if ok {
                    d.0 += 1;
                    d.1 += size;
                } else {
                    d.2.push(item_key(kind, &name));
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| PeerError::Protocol(format!("download task failed: {e}")))??;
    }
    let d = done.lock().unwrap_or_else(|e| e.into_inner());
    report.fetched += d.0;
    report.bytes += d.1;
    report.missing.extend(d.2.iter().cloned());
    report
        .errors
        .extend(errors.lock().unwrap_or_else(|e| e.into_inner()).drain(..));
    Ok(report)
}

/// Result of challenging a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// Evidence the host does not hold the data.
    Failed(String),
    /// No evidence either way (unreachable, timeout).
    Unreachable(String),
    /// Nothing to challenge (the host holds no pack of ours).
    Nothing,
}

/// Challenge `host` on a random pack it holds: a keyed challenge checked against the local
/// copy when there is one, otherwise (or with `proof`) a bao-tree proof checked against the
/// pack's name and size. The result is recorded in the peer state.
pub async fn challenge_host(
    key: &SigningKey,
    repo_root: &Path,
    host: &HostAddr,
    proof: bool,
    timeout: Duration,
) -> Result<Verdict> {
    let store = PeerStore::open(repo_root);
    let rec = store.read()?.hosts.remove(&host.node).unwrap_or_default();
    // shares are challenged exactly like packs (by name; proofs, as the owner keeps no
    // copy of them)
    let packs: Vec<([u8; 32], u64, Kind)> = rec
        .stored
        .iter()
        .filter(|(k, _)| matches!(k.kind, Kind::Pack | Kind::Share))
        .map(|(k, s)| (k.name, *s, k.kind))
        .collect();
    if packs.is_empty() {
        return Ok(Verdict::Nothing);
    }
    let (pack, size, kind) =
        packs[(rand_core::RngCore::next_u64(&mut rand_core::OsRng) % packs.len() as u64) as usize];
    let ranges = challenge::pick_ranges(
        size,
        challenge::DEFAULT_RANGES,
        challenge::DEFAULT_RANGE_LEN,
    );
    let local = dest_of(repo_root, kind, &pack);
    let use_proof = proof || !local.exists();
    let asked = now_unix();
    let outcome = async {
        let mut c = PeerClient::connect(key, host, timeout).await?;
        let v = if use_proof {
            let enc = c.prove(&pack, &ranges).await;
            match enc {
                Ok(enc) => match challenge::verify_proof(&pack, size, &ranges, &enc) {
                    Ok(_) => Verdict::Passed,
                    Err(why) => Verdict::Failed(why),
                },
                Err(PeerError::Refused(r)) => Verdict::Failed(format!("host refused: {r}")),
                Err(e) => return Err(e),
            }
        } else {
            let nonce = challenge::fresh_nonce();
            match c.challenge(&pack, &nonce, &ranges).await {
                Ok(ans) => {
                    let f = std::fs::File::open(&local).map_err(PeerError::io(&local))?;
                    let bytes = challenge::read_ranges(&ranges, |off, len| {
                        let mut b = vec![0u8; len as usize];
                        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, off).map(|_| b)
                    })
                    .map_err(PeerError::io(&local))?;
                    if challenge::keyed_answer(&nonce, &pack, &ranges, &bytes) == ans {
                        Verdict::Passed
                    } else {
                        Verdict::Failed("wrong answer to a keyed challenge".into())
                    }
                }
                Err(PeerError::Refused(r)) => Verdict::Failed(format!("host refused: {r}")),
                Err(e) => return Err(e),
            }
        };
        c.close().await;
        Ok(v)
    }
    .await;
    let verdict = match outcome {
        Ok(v) => v,
        Err(e) => Verdict::Unreachable(e.to_string()),
    };
    let (passed, detail, outcome) = match &verdict {
        Verdict::Passed | Verdict::Nothing => (true, String::new(), ChallengeOutcome::Passed),
        Verdict::Failed(w) => (false, w.clone(), ChallengeOutcome::Failed),
        Verdict::Unreachable(w) => (
            false,
            format!("unreachable: {w}"),
            ChallengeOutcome::Unreachable,
        ),
    };
    let record = ChallengeRecord {
        unix: asked,
        pack: hex::encode(pack),
        proof: use_proof,
        passed,
        detail,
    };
    store.update(|st| st.host(host).record_challenge(record, outcome))?;
    Ok(verdict)
}

/// Make k good copies stand again: the good hosts first, then `candidates` (new hosts
/// from the coordinator) until k hosts are in use; push to them all.
pub async fn repair(
    key: &SigningKey,
    repo_root: &Path,
    candidates: &[HostAddr],
    k: usize,
    opts: &SyncOptions,
    progress: ProgressFn,
) -> Result<PushReport> {
    let state = PeerStore::open(repo_root).read()?;
    let mut use_hosts = state.good_hosts();
    use_hosts.truncate(k);
    for c in candidates {
        if use_hosts.len() >= k {
            break;
        }
        if !state.is_failed(&c.node) && !use_hosts.iter().any(|h| h.node == c.node) {
            use_hosts.push(c.clone());
        }
    }
    push(key, repo_root, &use_hosts, k, opts, progress).await
}
