//! The node's actor: the peer server, the coordinator session (with backoff), the
//! schedules, and the one worker that does this node's own work one job at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tracing::{info_span, Instrument};

use super::event::{Event, HostError};
use super::hosts::{self, chosen_scheme, hosts_to_ask, matched_hosts, parse_host};
use super::{
    ops, schedule, Command, NodeConfig, NodeError, NodeHandle, NodeLock, NodeStatus, Result,
};
use crate::coord_client::{CoordClient, CoordEvent};
use crate::nat::portmap::{self, PortMapState};
use crate::peer::challenge;
use crate::peer::hosted::{AllowList, HostedStore};
use crate::peer::proto::{self, Request, Response};
use crate::peer::server::{answer_relayed_challenge, Server, ServerConfig};
use crate::peer::shares;
use crate::peer::sync::{self, now_unix, FailureKind, PeerState, PeerStore, SyncOptions, Verdict};
use crate::wire::{Announce, CoordMsg, NodeId, PeerMode};

/// How many replies, repairs and relayed sessions for the coordinator may run at once.
/// More are dropped (and logged): the event loop never waits on the coordinator, so a
/// coordinator that floods the node or never answers cannot stall it or grow its memory.
const COORDINATOR_WORK_AT_ONCE: usize = 8;
/// Relayed proof challenges this node waits on at most (as owner).
const PENDING_CHALLENGES_MAX: usize = 1024;
/// Hosts waiting to be marked lost (move orders) at most; more are taken at the next push
/// from the coordinator's list.
const MOVES_MAX: usize = 256;

/// Everything the node's tasks share.
struct Shared {
    root: PathBuf,
    key: SigningKey,
    cfg: NodeConfig,
    store: Arc<HostedStore>,
    allow: Arc<AllowList>,
    events: broadcast::Sender<Event>,
    coordinator_key: Arc<std::sync::OnceLock<ed25519_dalek::VerifyingKey>>,
    client: watch::Sender<Option<CoordClient>>,
    /// Work asked of the worker, folded: each kind at most once in the queue.
    pending: Mutex<Pending>,
    wake: Notify,
    cancel: Arc<AtomicBool>,
    status: Mutex<NodeStatus>,
    /// The peer listener's port (hole punches dial from it).
    punch: crate::peer::punch::PunchPort,
}

#[derive(Default)]
struct Pending {
    snapshot: bool,
    push: bool,
    challenge: bool,
    /// Hosts the coordinator moves copies off, with why.
    moves: BTreeMap<NodeId, String>,
}

impl Shared {
    fn emit(&self, e: Event) {
        match &e {
            // Told through the events (serve prints them): logged below the default level,
            // so that a terminal does not show each twice.
            Event::Error { during, message } => tracing::info!(%during, "{message}"),
            Event::Warning { message } => tracing::info!("{message}"),
            _ => tracing::debug!(kind = e.kind(), "event"),
        }
        let _ = self.events.send(e);
    }

    fn client(&self) -> Option<CoordClient> {
        self.client.borrow().clone()
    }

    fn opts(&self) -> SyncOptions {
        let d = SyncOptions::default();
        SyncOptions {
            relay: self.client(),
            // A host that drops mid-push is waited for no longer than the grace after which
            // the node stops counting it anyway: the node's other work (challenges, failover)
            // waits behind the push.
            outage: d.outage.min(self.cfg.host_grace),
            punch_from: Some(self.punch.clone()),
            ..d
        }
    }

    fn ask(&self, f: impl FnOnce(&mut Pending)) {
        if let Ok(mut p) = self.pending.lock() {
            f(&mut p);
        }
        self.wake.notify_one();
    }

    fn pushes(&self) -> bool {
        !self.cfg.push_every.is_zero()
    }

    /// Let `owner` store up to `quota` bytes here, within what this node offers; says so
    /// when less fits.
    fn grant(&self, owner: NodeId, quota: u64, by: &str) {
        let granted = self.allow.set(owner, quota);
        if granted < quota {
            self.emit(Event::Warning {
                message: format!(
                    "{by} asked to host {} for {}; only {} fit in this node's offer",
                    super::offer::human_bytes(quota),
                    &owner.to_hex()[..16],
                    super::offer::human_bytes(granted)
                ),
            });
        }
    }
}

pub(super) async fn spawn(root: PathBuf, cfg: NodeConfig) -> Result<NodeHandle> {
    let lock = NodeLock::take(&root)?;
    // The repository is opened for the keys and let go: the node locks it only while a
    // job of its own reads or writes it.
    let (key, host_key) = {
        let repo = pluto_repo::Repository::open(&root, pluto_repo::repository::LockMode::Shared)?;
        (repo.keys().node.clone(), repo.keys().host.clone())
    };
    for h in &cfg.sources.hosts {
        parse_host(h)?;
    }
    if let Some(u) = &cfg.notify.url {
        super::notify::parse_webhook(u)?;
    }
    let allow = Arc::new(AllowList::with_capacity(cfg.offer));
    let store = Arc::new(
        HostedStore::open(root.join("hosted"), &host_key, allow.clone()).map_err(|source| {
            NodeError::Io {
                path: root.join("hosted"),
                source,
            }
        })?,
    );
    let coordinator_key: Arc<std::sync::OnceLock<ed25519_dalek::VerifyingKey>> = Arc::default();
    let mut scfg = ServerConfig::new(key.clone(), store.clone());
    scfg.coordinator_key = coordinator_key.clone();
    let server = Server::bind(&cfg.listen, scfg).await?;
    let url = server.url();
    let node = NodeId::of(&key);
    let (events, first) = broadcast::channel(1024);
    let (commands, command_rx) = mpsc::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        root,
        key,
        store,
        allow,
        events: events.clone(),
        coordinator_key,
        client: watch::channel(None).0,
        pending: Mutex::default(),
        wake: Notify::new(),
        cancel: Arc::default(),
        status: Mutex::new(NodeStatus {
            node: node.to_hex(),
            url: url.clone(),
            ..Default::default()
        }),
        punch: server.punch.clone(),
        cfg,
    });
    for (owner, quota) in shared.cfg.allow.clone() {
        shared.grant(owner, quota, "--allow");
    }
    let _ = super::notify::spawn(shared.cfg.notify.clone(), events.subscribe(), {
        let s = shared.clone();
        move |w| s.emit(Event::Warning { message: w })
    })?;
    shared.emit(Event::Serving {
        node: node.to_hex(),
        url: url.clone(),
        offer: shared.cfg.offer,
    });
    let span = info_span!("node", node = %&node.to_hex()[..16]);
    // The port mapping runs beside the node from the start: the search for a router never
    // holds up serving peers, and the first announce waits for it only briefly.
    let (mapping, mapper) = (shared.cfg.port_mapping && portmap::should_map(server.local_addr))
        .then(|| {
            let s = shared.clone();
            let note = move |n| match n {
                portmap::Note::Mapped(m) => s.emit(Event::PortMapped {
                    external: m.url(),
                    protocol: m.protocol.into(),
                    lease_secs: m.lease_secs.into(),
                }),
                portmap::Note::Failed(message) => s.emit(Event::Warning { message }),
            };
            portmap::spawn(server.local_addr, note, stop_rx.clone())
        })
        .unzip();
    let done = tokio::spawn(
        async move {
            let worker = tokio::spawn(worker(shared.clone()).in_current_span());
            main_loop(shared.clone(), server, command_rx, stop_rx, mapping).await;
            // the mapping is removed (best effort, bounded) while the worker winds down
            if let Some(mut m) = mapper {
                let within = portmap::REMOVE_WITHIN + Duration::from_secs(1);
                if tokio::time::timeout(within, &mut m).await.is_err() {
                    m.abort();
                }
            }
            shared.cancel.store(true, Ordering::SeqCst);
            shared.wake.notify_one();
            // A snapshot stops at its next file (its packs finished and indexed); a push
            // is cut (the next one continues where it stopped).
            let mut worker = worker;
            if tokio::time::timeout(Duration::from_secs(5), &mut worker)
                .await
                .is_err()
            {
                worker.abort();
                let _ = worker.await;
            }
            if let Some(c) = shared.client.send_replace(None) {
                let _ = c.close().await;
            }
            drop(lock);
        }
        .instrument(span),
    );
    Ok(NodeHandle {
        node,
        url,
        commands,
        events,
        first: Arc::new(Mutex::new(Some(first))),
        stop: Arc::new(stop),
        done: Arc::new(tokio::sync::Mutex::new(Some(done))),
    })
}

/// Connect as the node's main session, announce, learn the owners this node hosts, and —
/// once there is something to back up — ask for hosts until `copies` stand.
async fn join_coordinator(
    s: &Shared,
    url: &str,
    addrs: Vec<String>,
) -> Result<(CoordClient, mpsc::Receiver<CoordEvent>, Announce)> {
    let (c, ev) = hosts::connect_coordinator(&s.root, url, &s.key, None).await?;
    let items = sync::local_items(&s.root)?;
    let have: u64 = items.iter().map(|i| i.size).sum();
    let has_snapshot = items.iter().any(|i| i.kind == proto::Kind::Snapshot);
    let scheme = chosen_scheme(&s.root, None, s.cfg.copies.map(usize::from))?;
    let ask = hosts_to_ask(&scheme).clamp(1, 255) as u8;
    let balanced = s.cfg.offer / u64::from(ask);
    let want = s
        .cfg
        .want
        .unwrap_or_else(|| have.saturating_mul(4).max(256 << 20).min(balanced));
    if have > want {
        s.emit(Event::Warning {
            message: format!(
                "this repository holds {} but --want reserves {} on each host; offer more",
                super::offer::human_bytes(have),
                super::offer::human_bytes(want)
            ),
        });
    }
    let refused = |context: &str| {
        let context = context.to_string();
        move |source| NodeError::Coordinator { context, source }
    };
    let announce = Announce {
        addrs,
        offer_bytes: s.cfg.offer,
        want_bytes: want,
        copies: ask,
        mode: PeerMode::Mixed,
    };
    c.announce(announce.clone())
        .await
        .map_err(refused("announce refused"))?;
    let (_, as_host) = c
        .relationships()
        .await
        .map_err(refused("cannot list this node's relationships"))?;
    for r in as_host {
        s.grant(r.owner, r.quota_bytes, "the coordinator");
    }
    s.emit(Event::CoordinatorConnected {
        url: url.to_string(),
    });
    // Nothing to back up before the first snapshot: no hosts to reserve yet.
    if want > 0 && has_snapshot {
        let m = matched_hosts(&s.root, &c, Some(ask.into())).await?;
        for n in m.notes {
            s.emit(Event::Warning { message: n });
        }
        s.emit(Event::HostsMatched {
            count: m.hosts.len(),
        });
    }
    Ok((c, ev, announce))
}

/// The node's first own work: a snapshot when one is due (a push follows it), else a push.
fn start(s: &Shared, snap_in: Option<Duration>) {
    if snap_in == Some(Duration::ZERO) {
        s.ask(|p| p.snapshot = true);
    } else if s.pushes() {
        s.ask(|p| p.push = true);
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn interval_after(first_in: Duration, every: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(
        tokio::time::Instant::now() + first_in,
        every.max(Duration::from_secs(1)),
    );
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

async fn main_loop(
    s: Arc<Shared>,
    server: Server,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
    mut mapping: Option<watch::Receiver<PortMapState>>,
) {
    let public = s.cfg.public_addr.clone().unwrap_or_else(|| server.url());
    let addrs = |m: &Option<watch::Receiver<PortMapState>>| {
        let mapped = match m.as_ref().map(|r| *r.borrow()) {
            Some(PortMapState::Mapped(m)) => Some(m),
            _ => None,
        };
        portmap::announced_addrs(&public, mapped.as_ref())
    };
    // what this session last announced (re-sent with new addresses when the mapping changes)
    let mut announced: Option<Announce> = None;
    let url = match hosts::coordinator_url(&s.root, &s.cfg.sources.coordinator) {
        Ok(u) => u,
        Err(e) => {
            s.emit(Event::Error {
                during: "reading the coordinator's address".into(),
                message: e.to_string(),
            });
            None
        }
    };
    let mut events: Option<mpsc::Receiver<CoordEvent>> = None;
    // The node serves its peers whether or not the coordinator is reachable; it retries
    // the coordinator with exponential backoff (1 s … 5 min) until it answers.
    let mut retry_at = url.as_ref().map(|_| tokio::time::Instant::now());
    let mut backoff = Duration::from_secs(1);
    let mut started = false;
    let newest = ops::latest_snapshot_unix(&s.root).ok().flatten();
    let snap_in = schedule::first_snapshot_in(s.cfg.snapshot_every, newest, now_unix());
    // The first snapshot (when due at once) is asked for at start; the ticks take the rest.
    let snap_first = match snap_in {
        Some(Duration::ZERO) => s.cfg.snapshot_every,
        Some(d) => d,
        None => Duration::from_secs(100 * 365 * 86400),
    };
    let mut snap_tick = interval_after(snap_first, s.cfg.snapshot_every);
    let mut push_tick = interval_after(s.cfg.push_every, s.cfg.push_every);
    let mut chal_tick = interval_after(s.cfg.challenge_every, s.cfg.challenge_every);
    // challenge id → (pack, size, ranges) of proof challenges relayed by the coordinator
    let pending: PendingProofs = Arc::default();
    let work = Arc::new(tokio::sync::Semaphore::new(COORDINATOR_WORK_AT_ONCE));
    let (mut dropped, mut last_drop_said) = (0u64, None::<std::time::Instant>);
    loop {
        // The first snapshot and push wait for the first try of the coordinator (hosts come
        // from it), or start at once without one.
        if !started && url.is_none() {
            started = true;
            start(&s, snap_in);
        }
        tokio::select! {
            _ = stop.changed() => break,
            cmd = commands.recv() => match cmd {
                None => break,
                Some(Command::SnapshotNow) => s.ask(|p| p.snapshot = true),
                Some(Command::PushNow) => s.ask(|p| p.push = true),
                Some(Command::Status(tx)) => {
                    let mut st = s.status.lock().map(|g| g.clone()).unwrap_or_default();
                    st.coordinator_connected = s.client().is_some();
                    let _ = tx.send(st);
                }
            },
            _ = sleep_opt(retry_at) => {
                let Some(u) = &url else { retry_at = None; continue };
                // A stop is heard while the coordinator is being reached: an absent one must
                // not hold the node up for a connect's whole timeout (soak finding).
                let joined = tokio::select! {
                    r = async {
                        if let Some(m) = mapping.as_mut() {
                            // a router that answers at once is in the first announce; one that does
                            // not holds it up at most this long (a mapping later is announced then)
                            let _ = tokio::time::timeout(portmap::FIRST_ANNOUNCE_WAIT, m.wait_for(|st| *st != PortMapState::Searching)).await;
                        }
                        join_coordinator(&s, u, addrs(&mapping)).await
                    } => r,
                    _ = stop.changed() => break,
                };
                match joined {
                    Ok((c, e, a)) => {
                        announced = Some(a);
                        if let Some(k) = c.coordinator_key() {
                            let _ = s.coordinator_key.set(k);
                        }
                        s.client.send_replace(Some(c));
                        events = Some(e);
                        retry_at = None;
                        backoff = Duration::from_secs(1);
                    }
                    Err(e) => {
                        s.emit(Event::CoordinatorUnreachable { error: e.to_string(), retry_secs: backoff.as_secs() });
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(300));
                    }
                }
                // back up with or without the coordinator: local work never waits on it
                if !started {
                    started = true;
                    start(&s, snap_in);
                }
            }
            _ = snap_tick.tick(), if snap_in.is_some() && started => {
                s.ask(|p| p.snapshot = true);
            }
            _ = push_tick.tick(), if s.pushes() => {
                s.ask(|p| p.push = true);
            }
            _ = chal_tick.tick(), if !s.cfg.challenge_every.is_zero() => {
                s.ask(|p| p.challenge = true);
            }
            changed = async { match mapping.as_mut() { Some(m) => m.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() {
                    mapping = None; // the task ended (the node stops)
                    continue;
                }
                // a mapping appeared, changed or went: tell the coordinator, whose dial-back
                // tests the new addresses
                let now = addrs(&mapping);
                let (Some(c), Some(a)) = (s.client(), announced.as_mut()) else { continue };
                if a.addrs == now {
                    continue;
                }
                a.addrs = now;
                let (a, s2) = (a.clone(), s.clone());
                tokio::spawn(async move {
                    if let Err(e) = c.announce(a).await {
                        s2.emit(Event::Warning { message: format!("announcing the mapped address: {e}") });
                    }
                }.in_current_span());
            }
            ev = async { match events.as_mut() { Some(e) => e.recv().await, None => std::future::pending().await } } => {
                let Some(ev) = ev else {
                    // the session ended: keep serving peers, and get it back
                    s.emit(Event::CoordinatorLost);
                    events = None;
                    s.client.send_replace(None);
                    if url.is_some() {
                        retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    continue;
                };
                let Some(c) = s.client() else { continue };
                let CoordEvent::Message(msg) = ev else { continue };
                match msg {
                    CoordMsg::NewOwner { owner, quota_bytes, .. } => {
                        s.grant(owner, quota_bytes, "the coordinator");
                        continue;
                    }
                    CoordMsg::Excluded { reason } => {
                        s.emit(Event::Excluded { reason });
                        continue;
                    }
                    // told here, in the order sent: a dial-back's verdict follows the note
                    // of the announce that started it (and an announce's own note, 0 while
                    // its dial-back runs, says nothing yet)
                    CoordMsg::Reachability { observed, addrs, reachable } => {
                        if reachable != 0 {
                            s.emit(Event::Reachability { observed, addrs, reachable: reachable == 1 });
                        }
                        continue;
                    }
                    CoordMsg::MoveCopies { host, reason } => {
                        // many orders at once make one push (which asks the coordinator
                        // for replacement hosts)
                        s.ask(|p| {
                            if p.moves.len() < MOVES_MAX {
                                p.moves.insert(host, format!("the coordinator moves copies off it ({reason})"));
                            }
                            p.push = true;
                        });
                        continue;
                    }
                    _ => {}
                }
                let Ok(permit) = work.clone().try_acquire_owned() else {
                    // said at most every few seconds: a flood must not flood the log too
                    dropped += 1;
                    if last_drop_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        s.emit(Event::Warning { message: format!("coordinator: too much work at once; dropped {dropped} order(s), the last {}", msg_kind(&msg)) });
                        (dropped, last_drop_said) = (0, Some(std::time::Instant::now()));
                    }
                    continue;
                };
                let (s2, pending) = (s.clone(), pending.clone());
                tokio::spawn(async move {
                    coordinator_job(&s2, &c, &pending, msg).await;
                    drop(permit);
                }.in_current_span());
            }
        }
    }
    s.emit(Event::Stopping);
    server.shutdown().await;
}

/// The node's own work, one job at a time: moves, snapshot (and retention), push, challenge.
async fn worker(s: Arc<Shared>) {
    let mut lost: Vec<NodeId> = Vec::new();
    let mut unreachable: HashMap<NodeId, u64> = HashMap::new();
    let mut level = None;
    let mut fetch_back = FetchBackClock::default();
    loop {
        if s.cancel.load(Ordering::SeqCst) {
            return;
        }
        let job = s
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        if !job.snapshot && !job.push && !job.challenge && job.moves.is_empty() {
            s.wake.notified().await;
            continue;
        }
        let mut push = job.push;
        if !job.moves.is_empty() {
            for (host, why) in &job.moves {
                match hosts::stop_counting_on(&s.root, &[*host], FailureKind::Excluded, why) {
                    Ok(said) if !said.is_empty() => {
                        lost.push(*host);
                        s.emit(Event::HostLost {
                            host: host.to_hex(),
                            reason: why.clone(),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => s.emit(Event::Error {
                        during: "marking a host lost".into(),
                        message: e.to_string(),
                    }),
                }
            }
        }
        if job.snapshot {
            set_working(&s, Some("snapshot"));
            let (root, cancel) = (s.root.clone(), s.cancel.clone());
            let r = tokio::task::spawn_blocking(move || ops::snapshot_tracked(&root, Some(cancel)))
                .await
                .unwrap_or_else(|e| Err(NodeError::Invalid(format!("snapshot task: {e}"))));
            match r {
                Ok(t) => {
                    if let Ok(mut st) = s.status.lock() {
                        st.last_snapshot = Some(t.id.clone());
                        st.last_snapshot_unix = Some(now_unix());
                    }
                    for w in t.warnings {
                        s.emit(Event::Warning { message: w });
                    }
                    s.emit(Event::SnapshotTaken {
                        id: t.id,
                        files: t.files,
                        bytes: t.bytes,
                        bytes_added: t.bytes_added,
                        partial: t.partial,
                    });
                    if let Some(policy) = s.cfg.retention.clone() {
                        let root = s.root.clone();
                        match tokio::task::spawn_blocking(move || {
                            ops::apply_retention(&root, &policy)
                        })
                        .await
                        {
                            Ok(Ok(Some((removed, kept)))) => {
                                s.emit(Event::Forgotten { removed, kept })
                            }
                            Ok(Ok(None)) => {}
                            Ok(Err(e)) => s.emit(Event::Error {
                                during: "retention".into(),
                                message: e.to_string(),
                            }),
                            Err(e) => s.emit(Event::Error {
                                during: "retention".into(),
                                message: e.to_string(),
                            }),
                        }
                    }
                    push |= s.pushes();
                }
                Err(_) if s.cancel.load(Ordering::SeqCst) => return,
                Err(e) => s.emit(Event::SnapshotMissed {
                    error: e.to_string(),
                }),
            }
        }
        if s.cancel.load(Ordering::SeqCst) {
            return;
        }
        if push {
            set_working(&s, Some("push"));
            match own_push(&s, &mut fetch_back).await {
                Ok(Some(out)) => {
                    if let Ok(mut st) = s.status.lock() {
                        st.last_push_unix = Some(now_unix());
                    }
                    if !lost.is_empty() && !out.new_hosts.is_empty() {
                        s.emit(Event::HostReplaced {
                            lost: lost.drain(..).map(|h| h.to_hex()).collect(),
                            by: out.new_hosts.iter().map(|h| h.to_hex()).collect(),
                        });
                    }
                    s.emit(Event::PushDone {
                        uploaded: out.report.uploaded,
                        bytes: out.report.bytes,
                        already: out.report.already,
                        hosts: out.hosts_reached,
                        not_placed: out.not_placed(),
                        errors: out
                            .report
                            .errors
                            .iter()
                            .map(|(h, e)| HostError {
                                host: h.to_hex(),
                                error: e.clone(),
                            })
                            .collect(),
                    });
                }
                Ok(None) => {}
                Err(e) => s.emit(Event::Error {
                    during: "push".into(),
                    message: e.to_string(),
                }),
            }
        }
        if job.challenge && !s.cancel.load(Ordering::SeqCst) {
            set_working(&s, Some("challenge"));
            let newly_lost = challenge_round(&s, &mut unreachable).await;
            if !newly_lost.is_empty() {
                lost.extend(newly_lost);
                s.ask(|p| p.push = true);
            }
        }
        set_working(&s, None);
        judge(&s, &mut level).await;
    }
}

/// Judge the protection again from the records; say so when its level changed (and the
/// first time, so that a front end and the alerts know where the node starts from).
async fn judge(s: &Shared, last: &mut Option<crate::verdict::Level>) {
    let root = s.root.clone();
    let p = match tokio::task::spawn_blocking(move || ops::protection(&root)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return s.emit(Event::Error {
                during: "judging the protection".into(),
                message: e.to_string(),
            })
        }
        Err(_) => return,
    };
    let changed = *last != Some(p.level);
    *last = Some(p.level);
    if let Ok(mut st) = s.status.lock() {
        st.protection = Some(p.clone());
    }
    if changed {
        s.emit(Event::ProtectionChanged {
            level: p.level,
            protected: p.level == crate::verdict::Level::Protected,
            verdict: p.summary,
            reasons: p.reasons,
        });
    }
}

fn set_working(s: &Shared, what: Option<&str>) {
    if let Ok(mut st) = s.status.lock() {
        st.working = what.map(str::to_string);
    }
}

/// When the node next asks its hosts for the packs its index names and it lacks (costly:
/// every host lists what it holds), and what it last said of them.
#[derive(Default)]
struct FetchBackClock {
    next: Option<std::time::Instant>,
    /// How many were still missing when last told.
    told: Option<usize>,
}

impl FetchBackClock {
    /// At most once per challenge interval (once an hour when the node does not
    /// challenge): how often the node looks at its hosts anyway.
    fn due(&mut self, every: Duration) -> bool {
        let now = std::time::Instant::now();
        if self.next.is_some_and(|n| now < n) {
            return false;
        }
        let every = if every.is_zero() {
            Duration::from_secs(3600)
        } else {
            every
        };
        self.next = Some(now + every);
        true
    }
}

/// Packs the index names that are missing here fetched back from `hosts` (when due), and
/// said once per change.
async fn fetch_back(
    s: &Shared,
    clock: &mut FetchBackClock,
    hosts: &[crate::peer::client::HostAddr],
) {
    if !clock.due(s.cfg.challenge_every) {
        return;
    }
    match ops::fetch_missing_packs(&s.key, &s.root, hosts, &s.opts()).await {
        Ok(None) => clock.told = None,
        Ok(Some(f)) => {
            let left = f.still_missing.len();
            if f.fetched > 0 || clock.told != Some(left) {
                s.emit(Event::PacksFetchedBack {
                    missing: f.missing,
                    fetched: f.fetched,
                    still_missing: left,
                });
            }
            clock.told = Some(left);
        }
        Err(e) => s.emit(Event::Error {
            during: "fetching back missing packs".into(),
            message: e.to_string(),
        }),
    }
}

/// Push (and repair: lost hosts are passed over) with the repository's placement. `None`
/// when there is no host to push to at all. Packs the snapshots need that are missing here
/// are fetched back after the push, to be placed again by the next one: the push comes
/// first, so what this node made is placed even when the fetch-back — every host listed,
/// away ones waited for — outlasts the node's time online (found by the churn soak:
/// recovered nodes that fetched back first completed a push in 3 % of their sessions, and
/// their new packs waited unplaced).
async fn own_push(s: &Shared, clock: &mut FetchBackClock) -> Result<Option<ops::PushOutcome>> {
    let scheme = chosen_scheme(&s.root, None, s.cfg.copies.map(usize::from))?;
    let mut hosts: Vec<_> = s
        .cfg
        .sources
        .hosts
        .iter()
        .map(|h| parse_host(h))
        .collect::<Result<_>>()?;
    let client = s.client();
    let mut moving = Vec::new();
    if let Some(c) = &client {
        match matched_hosts(&s.root, c, Some(hosts_to_ask(&scheme))).await {
            Ok(m) => {
                for n in m.notes {
                    s.emit(Event::Warning { message: n });
                }
                hosts.extend(m.hosts);
                moving = m.moving;
            }
            Err(e) => s.emit(Event::Warning {
                message: format!("{e}; going on with the hosts this node knows"),
            }),
        }
    }
    let known = hosts::with_known_hosts(&s.root, &s.key, hosts)?;
    // Missing packs are asked of every host that may still hold a share of them, as a pull
    // does: those the owner is moved off and those it stopped counting included (what they
    // give is checked against its name; nothing new is placed on them).
    let mut readable = known.clone();
    for h in moving {
        if !readable.iter().any(|o| o.node == h.node) {
            readable.push(h);
        }
    }
    let hosts = hosts::without_failed(&s.root, known)?;
    if hosts.is_empty() {
        return Ok(None);
    }
    let (done, total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let last = Arc::new(Mutex::new(std::time::Instant::now()));
    let ev = s.events.clone();
    let progress: sync::ProgressFn = Arc::new(move |p| {
        match p {
            sync::Progress::Total(b) => {
                total.fetch_add(b, Ordering::Relaxed);
            }
            sync::Progress::Bytes(b) => {
                done.fetch_add(b, Ordering::Relaxed);
            }
            _ => return,
        }
        // at most one progress event a second
        if let Ok(mut l) = last.lock() {
            if l.elapsed() >= Duration::from_secs(1) {
                *l = std::time::Instant::now();
                let _ = ev.send(Event::PushProgress {
                    bytes_done: done.load(Ordering::Relaxed),
                    bytes_total: total.load(Ordering::Relaxed),
                });
            }
        }
    });
    let opts = s.opts();
    let pushed = ops::push_own(
        &s.key,
        &s.root,
        hosts,
        &scheme,
        client.as_ref(),
        &opts,
        progress,
        &|| {},
    )
    .await
    .map(Some);
    fetch_back(s, clock, &readable).await;
    pushed
}

/// Challenge this node's hosts directly. A host caught failing is released at the
/// coordinator; one that has not answered for longer than the grace stops counting too.
/// Returns the hosts lost in this round (their data is to be placed elsewhere).
async fn challenge_round(s: &Shared, unreachable: &mut HashMap<NodeId, u64>) -> Vec<NodeId> {
    let mut lost = Vec::new();
    let opts = s.opts();
    let hosts = PeerState::load(&s.root)
        .map(|st| st.good_hosts())
        .unwrap_or_default();
    for h in hosts {
        if s.cancel.load(Ordering::SeqCst) {
            break;
        }
        let id = h.node.to_hex();
        let reason = match sync::challenge_host(&s.key, &s.root, &h, false, opts.timeout).await {
            Ok(Verdict::Passed) => {
                unreachable.remove(&h.node);
                s.emit(Event::ChallengePassed { host: id });
                continue;
            }
            Ok(Verdict::Nothing) => continue,
            Ok(Verdict::Failed(why)) => {
                unreachable.remove(&h.node);
                s.emit(Event::ChallengeFailed {
                    host: id.clone(),
                    reason: why.clone(),
                });
                format!("failed a challenge: {why}")
            }
            Ok(Verdict::Unreachable(why)) => {
                let now = now_unix();
                // The grace runs from the first failed attempt the peer records hold, so a
                // restarted node does not start the host's clock again.
                let recorded = PeerStore::open(&s.root)
                    .read()
                    .ok()
                    .and_then(|st| st.hosts.get(&h.node).and_then(|r| r.unreachable_since));
                let first = !unreachable.contains_key(&h.node);
                let since = *unreachable
                    .entry(h.node)
                    .or_insert(recorded.unwrap_or(now).min(now));
                if first {
                    s.emit(Event::HostUnreachable {
                        host: id.clone(),
                        since_unix: since,
                    });
                }
                if !schedule::absent_past_grace(since, now, s.cfg.host_grace) {
                    continue;
                }
                unreachable.remove(&h.node);
                let said = hosts::stop_counting_on(
                    &s.root,
                    &[h.node],
                    FailureKind::Challenge,
                    "unreachable past the grace",
                )
                .unwrap_or_default();
                if said.is_empty() {
                    continue;
                }
                format!(
                    "{}{} s ({why})",
                    crate::wire::RELEASE_UNREACHABLE,
                    now.saturating_sub(since)
                )
            }
            Err(e) => {
                s.emit(Event::Error {
                    during: "challenge".into(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        if let Some(c) = s.client() {
            // the coordinator takes reasons of at most 256 bytes
            let mut cut = reason.len().min(200);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Err(e) = c.release_host(h.node, &reason[..cut]).await {
                s.emit(Event::Error {
                    during: "releasing a host at the coordinator".into(),
                    message: e.to_string(),
                });
            }
        }
        s.emit(Event::HostLost {
            host: h.node.to_hex(),
            reason,
        });
        lost.push(h.node);
    }
    if let Ok(mut st) = s.status.lock() {
        st.unreachable = unreachable.iter().map(|(h, t)| (h.to_hex(), *t)).collect();
    }
    lost
}

fn msg_kind(m: &CoordMsg) -> &'static str {
    match m {
        CoordMsg::Reply { .. } => "a reply",
        CoordMsg::Ping { .. } => "a ping",
        CoordMsg::ChallengeDue { .. } => "a challenge order",
        CoordMsg::Challenge { .. } => "a relayed challenge",
        CoordMsg::ChallengeAnswer { .. } => "a relayed answer",
        CoordMsg::NewOwner { .. } => "a new owner",
        CoordMsg::RelayOffer { .. } => "a relay offer",
        CoordMsg::MoveCopies { .. } => "a move order",
        CoordMsg::Excluded { .. } => "an exclusion",
        CoordMsg::RepairShare { .. } => "a repair order",
        CoordMsg::Reachability { .. } => "a reachability note",
        CoordMsg::PunchOffer { .. } => "a punch offer",
    }
}

/// A relayed proof challenge this node sent as owner: its file, size and ranges.
type ProofAsked = ([u8; 32], u64, Vec<proto::Range>);
/// Relayed proof challenges awaiting the host's answer, by challenge id.
type PendingProofs = Arc<Mutex<HashMap<u64, ProofAsked>>>;

/// A proof challenge for one of the files this node keeps on `host`, picked at random.
fn relayed_proof_for(st: &PeerState, host: &NodeId) -> Option<ProofAsked> {
    let files: Vec<([u8; 32], u64)> = st
        .hosts
        .get(host)?
        .stored
        .iter()
        .filter(|(k, _)| matches!(k.kind, proto::Kind::Pack | proto::Kind::Share))
        .map(|(k, s)| (k.name, *s))
        .collect();
    if files.is_empty() {
        return None;
    }
    let pick = u64::from_le_bytes(challenge::fresh_nonce()[..8].try_into().ok()?);
    let (pack, size) = files[(pick % files.len() as u64) as usize];
    let ranges = challenge::pick_ranges(
        size,
        challenge::RELAYED_RANGES,
        challenge::DEFAULT_RANGE_LEN,
    );
    Some((pack, size, ranges))
}

/// What a coordinator's message asks of this node, done in a task of its own so that the
/// event loop never waits on the coordinator (see [`COORDINATOR_WORK_AT_ONCE`]).
async fn coordinator_job(s: &Shared, c: &CoordClient, pending: &PendingProofs, msg: CoordMsg) {
    let warn = |message: String| s.emit(Event::Warning { message });
    match msg {
        CoordMsg::Challenge {
            challenge_id,
            owner,
            payload,
            ..
        } => {
            let st = s.store.clone();
            let ans = tokio::task::spawn_blocking(move || {
                answer_relayed_challenge(&st, &owner, &payload)
            })
            .await
            .unwrap_or_default();
            if let Err(e) = c.answer_challenge(challenge_id, ans).await {
                warn(format!("cannot answer challenge {challenge_id}: {e}"));
            }
        }
        CoordMsg::ChallengeDue { host } => {
            let st = PeerState::load(&s.root).unwrap_or_default();
            let Some((pack, size, ranges)) = relayed_proof_for(&st, &host) else {
                return;
            };
            if pending.lock().map(|p| p.len()).unwrap_or(usize::MAX) >= PENDING_CHALLENGES_MAX {
                warn(format!(
                    "{PENDING_CHALLENGES_MAX} relayed challenges unanswered; not sending more"
                ));
                return;
            }
            let Ok(payload) = proto::encode(&Request::Prove {
                pack,
                ranges: ranges.clone(),
            }) else {
                return;
            };
            match c.send_challenge(host, payload).await {
                Ok(id) => {
                    if let Ok(mut p) = pending.lock() {
                        p.insert(id, (pack, size, ranges));
                    }
                }
                Err(e) => warn(format!(
                    "cannot challenge host {}: {e}",
                    &host.to_hex()[..16]
                )),
            }
        }
        CoordMsg::ChallengeAnswer {
            challenge_id,
            payload,
            ..
        } => {
            let Some((pack, size, ranges)) = pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&challenge_id))
            else {
                return;
            };
            let passed = matches!(proto::decode::<Response>(&payload), Ok(Response::Proof { encoded })
                if challenge::verify_proof(&pack, size, &ranges, &encoded).is_ok());
            if !passed {
                warn(format!("host failed relayed challenge {challenge_id}"));
            }
            if let Err(e) = c.report_challenge(challenge_id, passed).await {
                warn(format!("cannot report challenge {challenge_id}: {e}"));
            }
        }
        CoordMsg::RelayOffer { url, token, .. } => {
            let mut cfg = ServerConfig::new(s.key.clone(), s.store.clone());
            cfg.coordinator_key = s.coordinator_key.clone();
            if let Err(e) = crate::peer::server::serve_relay_offer(&cfg, &url, &token).await {
                warn(format!("relayed session: {e}"));
            }
        }
        CoordMsg::PunchOffer {
            peer,
            addr,
            delay_ms,
        } => {
            let mut cfg = ServerConfig::new(s.key.clone(), s.store.clone());
            cfg.coordinator_key = s.coordinator_key.clone();
            if let Err(e) =
                crate::peer::server::serve_punch_offer(&cfg, &s.punch, &addr, delay_ms).await
            {
                // The owner falls back to the relay; nothing to tell the user.
                tracing::info!(%peer, "punched session: {e}");
            }
        }
        msg @ CoordMsg::RepairShare { .. } => {
            let Some(order) = shares::RepairOrder::of(msg) else {
                return;
            };
            match shares::rebuild_for_owner(&s.key, &s.store, &order, &s.opts()).await {
                Ok(()) => {
                    s.emit(Event::RepairDone {
                        owner: order.owner.to_hex(),
                        share: hex::encode(order.lost_name),
                        holders: order.sources.len(),
                    });
                    if let Err(e) = c.repair_done(order.owner, order.lost_name).await {
                        warn(format!("cannot report the repair: {e}"));
                    }
                }
                Err(e) => warn(format!("repair for {}: {e}", &order.owner.to_hex()[..16])),
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::sync::{HostRecord, ItemKey};

    #[test]
    fn a_relayed_proof_is_asked_of_a_file_the_host_confirmed_and_nothing_else() {
        let host = NodeId([9; 32]);
        let mut st = PeerState::default();
        assert_eq!(relayed_proof_for(&st, &host), None, "unknown host");
        let mut rec = HostRecord::default();
        rec.stored
            .insert(ItemKey::new(proto::Kind::Snapshot, [0xab; 32]), 500);
        st.hosts.insert(host, rec.clone());
        assert_eq!(
            relayed_proof_for(&st, &host),
            None,
            "only packs and shares are proved"
        );
        rec.stored
            .insert(ItemKey::new(proto::Kind::Pack, [0xcd; 32]), 300_000);
        rec.stored
            .insert(ItemKey::new(proto::Kind::Share, [0xef; 32]), 70_000);
        st.hosts.insert(host, rec);
        for _ in 0..50 {
            let (name, size, ranges) = relayed_proof_for(&st, &host).unwrap();
            assert!(
                (name == [0xcd; 32] && size == 300_000) || (name == [0xef; 32] && size == 70_000),
                "{name:?} {size}"
            );
            assert_eq!(ranges.len(), challenge::RELAYED_RANGES);
            assert!(ranges.iter().all(|r| r.offset + u64::from(r.len) <= size));
        }
        assert_eq!(relayed_proof_for(&st, &NodeId([8; 32])), None);
    }
}
