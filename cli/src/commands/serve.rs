//! `pluto serve`: the node. Hosts matched owners' files (under `.pluto/hosted/`, local),
//! answers challenges, and — on a schedule — pushes its own new data and challenges its hosts.
//! Runs in the foreground until Ctrl-C or SIGTERM.

use super::push::{
    chosen_scheme, connect_coordinator, coordinator_url, hosts_to_ask, matched_hosts, parse_host,
    placement, runtime, stop_counting_on, with_known_hosts, PeerArgs, Placement,
};
use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_netsync::coord_client::CoordEvent;
use pluto_netsync::peer::challenge;
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::proto::{self, Request, Response};
use pluto_netsync::peer::server::{answer_relayed_challenge, Server, ServerConfig};
use pluto_netsync::peer::shares;
use pluto_netsync::peer::sync::{self, PeerState, SyncOptions, Verdict};
use pluto_netsync::wire::{Announce, CoordMsg, NodeId, PeerMode};
use pluto_repo::repository::LockMode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto serve --coordinator mqtt://coord.example:1883 --offer 100G
  pluto serve --listen 0.0.0.0:7447 --allow 3f2a…=10G     # host a friend without a coordinator")]
pub struct Args {
    #[command(flatten)]
    peers: PeerArgs,
    /// Address of the peer port.
    #[arg(long, default_value = "0.0.0.0:7447")]
    listen: String,
    /// Address peers use to reach this node (default: ws://<listen>).
    #[arg(long, value_name = "ws://HOST:PORT")]
    public_addr: Option<String>,
    /// Disk given to others (e.g. 50G, 1.5G, 512M; default 10G).
    #[arg(long = "offer", value_name = "SIZE", value_parser = crate::output::parse_size)]
    offer_given: Option<u64>,
    /// The offer in force: --offer, or the default.
    #[arg(skip)]
    offer: u64,
    /// Also host this owner without the coordinator: NODEID=SIZE (repeatable).
    #[arg(long = "allow", value_name = "NODEID=SIZE")]
    allow: Vec<String>,
    /// Full copies wanted of this node's own data (as `pluto push -k`); without it, the
    /// repository's scheme (default: 4/8 once 8 hosts are matched, 2 copies until then).
    #[arg(long, short = 'k')]
    copies: Option<u8>,
    /// Space to reserve for this node's own data on each host (default: four times what
    /// the repository holds, at least 256M, at most what the offer balances: offer / copies).
    #[arg(long, value_parser = crate::output::parse_size)]
    want: Option<u64>,
    /// Push this node's new data this often (seconds; 0 = never).
    #[arg(long, default_value_t = 3600)]
    push_every: u64,
    /// Challenge this node's hosts this often (seconds; 0 = never).
    #[arg(long, default_value_t = 600)]
    challenge_every: u64,
}

/// Connect as the node's main session, announce, learn the owners this node hosts, and —
/// once there is something to back up — ask for hosts until `copies` stand.
async fn join_coordinator(
    root: &std::path::Path,
    url: &str,
    key: &ed25519_dalek::SigningKey,
    public: &str,
    a: &Args,
    allow: &AllowList,
    quiet: bool,
) -> Result<(
    pluto_netsync::coord_client::CoordClient,
    tokio::sync::mpsc::Receiver<CoordEvent>,
)> {
    let (c, ev) = connect_coordinator(root, url, key, None).await?;
    let items = sync::local_items(root)?;
    let have: u64 = items.iter().map(|i| i.size).sum();
    let has_snapshot = items.iter().any(|i| i.kind == proto::Kind::Snapshot);
    let scheme = chosen_scheme(root, None, a.copies.map(usize::from))?;
    let ask = hosts_to_ask(&scheme).clamp(1, 255) as u8;
    let balanced = a.offer / u64::from(ask);
    let want = a
        .want
        .unwrap_or_else(|| have.saturating_mul(4).max(256 << 20).min(balanced));
    if have > want {
        eprintln!(
            "pluto: this repository holds {} but --want reserves {} on each host; offer more",
            crate::output::bytes(have),
            crate::output::bytes(want)
        );
    }
    c.announce(Announce {
        addrs: vec![public.to_string()],
        offer_bytes: a.offer,
        want_bytes: want,
        copies: ask,
        mode: PeerMode::Mixed,
    })
    .await
    .context("announce refused")?;
    let (_, as_host) = c.relationships().await?;
    for r in as_host {
        grant(allow, r.owner, r.quota_bytes, "the coordinator");
    }
    if !quiet {
        outln!("connected to the coordinator at {url}");
    }
    // Nothing to back up before the first snapshot: no hosts to reserve yet.
    if want > 0 && has_snapshot {
        let hosts = matched_hosts(root, &c, Some(ask.into())).await?;
        if !quiet {
            outln!("{} host(s) matched for this node's data", hosts.len());
        }
    }
    Ok((c, ev))
}

/// Push (and repair: hosts that failed are passed over) with the repository's placement:
/// shares on n hosts, or k full copies.
async fn scheduled_push(
    key: &ed25519_dalek::SigningKey,
    root: &std::path::Path,
    copies: Option<u8>,
    given_hosts: &[String],
    client: Option<&pluto_netsync::coord_client::CoordClient>,
    opts: &SyncOptions,
    quiet: bool,
) -> Result<()> {
    let scheme = chosen_scheme(root, None, copies.map(usize::from))?;
    let hosts = candidate_hosts(root, key, given_hosts, client, hosts_to_ask(&scheme)).await?;
    if hosts.is_empty() {
        return Ok(());
    }
    let rep = match placement(root, &scheme, hosts.len())? {
        Placement::Shares(params) => {
            let rep =
                shares::push_shares(key, root, &hosts, params, opts, sync::no_progress()).await?;
            if let Some(c) = client {
                let groups = shares::placed_groups(root)?;
                if !groups.is_empty() {
                    c.record_shares(groups).await?;
                }
            }
            rep
        }
        // the hosts already holding copies first, then new ones
        Placement::Copies(k) => {
            sync::repair(key, root, &hosts, k, opts, sync::no_progress()).await?
        }
    };
    if !quiet && rep.uploaded > 0 {
        outln!("pushed {} file(s)", rep.uploaded);
    }
    Ok(())
}

/// This node's own pushes (scheduled, and repairs), run in the background one at a time:
/// the event loop keeps answering the coordinator — relayed challenges have deadlines —
/// while a push of any length runs. A push asked for while one runs follows it.
#[derive(Clone)]
struct OwnPushes {
    key: ed25519_dalek::SigningKey,
    root: std::path::PathBuf,
    copies: Option<u8>,
    given_hosts: Vec<String>,
    quiet: bool,
    running: Arc<AtomicBool>,
    again: Arc<AtomicBool>,
}

impl OwnPushes {
    fn start(
        &self,
        client: Option<pluto_netsync::coord_client::CoordClient>,
        opts: SyncOptions,
        what: &'static str,
    ) {
        if self.running.swap(true, Ordering::SeqCst) {
            self.again.store(true, Ordering::SeqCst);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let r = scheduled_push(
                    &me.key,
                    &me.root,
                    me.copies,
                    &me.given_hosts,
                    client.as_ref(),
                    &opts,
                    me.quiet,
                )
                .await;
                if let Err(e) = r {
                    eprintln!("pluto: {what}: {e:#}");
                }
                if !me.again.swap(false, Ordering::SeqCst) {
                    break;
                }
            }
            me.running.store(false, Ordering::SeqCst);
        });
    }
}

/// Challenge this node's hosts; a host caught failing is released at the coordinator and
/// its data placed elsewhere.
async fn challenge_own_hosts(
    key: ed25519_dalek::SigningKey,
    root: std::path::PathBuf,
    client: Option<pluto_netsync::coord_client::CoordClient>,
    opts: SyncOptions,
    pushes: OwnPushes,
) {
    for h in PeerState::load(&root)
        .map(|s| s.good_hosts())
        .unwrap_or_default()
    {
        match sync::challenge_host(&key, &root, &h, false, opts.timeout).await {
            Ok(Verdict::Failed(why)) => {
                eprintln!(
                    "pluto: host {} failed a challenge: {why}; repairing",
                    &h.node.to_hex()[..16]
                );
                if let Some(c) = client.as_ref() {
                    if let Err(e) = c.release_host(h.node, &why).await {
                        eprintln!("pluto: coordinator: cannot release the host: {e}");
                    }
                }
                pushes.start(client.clone(), opts.clone(), "repair");
            }
            Ok(_) => {}
            Err(e) => eprintln!("pluto: challenge: {e}"),
        }
    }
}

/// Hosts for this node's own data: `--host`s, the coordinator's matches (asking for more
/// when fewer than `copies` stand), and the local record's hosts in good standing.
async fn candidate_hosts(
    root: &std::path::Path,
    key: &ed25519_dalek::SigningKey,
    given: &[String],
    coordinator: Option<&pluto_netsync::coord_client::CoordClient>,
    copies: usize,
) -> Result<Vec<pluto_netsync::peer::client::HostAddr>> {
    let mut out: Vec<_> = given.iter().map(|s| parse_host(s)).collect::<Result<_>>()?;
    if let Some(c) = coordinator {
        out.extend(matched_hosts(root, c, Some(copies)).await?);
    }
    let mut out = with_known_hosts(root, key, out)?;
    // a host this node caught failing stays out, even while the coordinator still lists it
    let state = PeerState::load(root)?;
    out.retain(|h| !state.is_failed(&h.node));
    Ok(out)
}

/// Let `owner` store up to `quota` bytes here, within what this node offers (see
/// [`AllowList::with_capacity`]); says so when less fits.
fn grant(allow: &AllowList, owner: NodeId, quota: u64, by: &str) {
    let granted = allow.set(owner, quota);
    if granted < quota {
        eprintln!(
            "pluto: {by} asked to host {} for {}; only {} fit in this node's offer",
            crate::output::bytes(quota),
            &owner.to_hex()[..16],
            crate::output::bytes(granted)
        );
    }
}

/// How many replies, repairs and relayed sessions for the coordinator may run at once.
/// More are dropped (and logged): the event loop never waits on the coordinator, so a
/// coordinator that floods the node or never answers cannot stall it or grow its memory.
const COORDINATOR_WORK_AT_ONCE: usize = 8;
/// Relayed proof challenges this node waits on at most (as owner).
const PENDING_CHALLENGES_MAX: usize = 1024;

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// The offer when --offer is not given.
const DEFAULT_OFFER: u64 = 10 << 30;

/// Less than this is no offer at all (a typo for a size, most likely: `--offer 100`).
const MIN_OFFER: u64 = 8 << 20;

/// Refuse an offer this node cannot keep: below [`MIN_OFFER`], or more than the disk under
/// the repository has free (plus what it already hosts, which counts against the offer).
/// The default offer is not refused for want of disk (that would stop a node the user never
/// asked to offer anything in particular): it is only warned about.
fn check_offer(root: &std::path::Path, offer: u64, explicit: bool) -> Result<()> {
    use crate::output::bytes;
    if offer < MIN_OFFER {
        anyhow::bail!(
            "--offer {}: too little to host anything (at least {}; sizes take units, e.g. 500M, 1.5G, 100G)",
            bytes(offer),
            bytes(MIN_OFFER)
        );
    }
    let hosted = dir_bytes(&root.join("hosted"));
    if let Some(free) = free_bytes(root) {
        if offer > free.saturating_add(hosted) && !explicit {
            eprintln!(
                "pluto: warning: offering {} (the default) but the disk under {} has only {} free: pass --offer SIZE",
                bytes(offer),
                root.display(),
                bytes(free)
            );
        } else if offer > free.saturating_add(hosted) {
            anyhow::bail!(
                "--offer {}: the disk under {} has only {} free{}; offer at most that",
                bytes(offer),
                root.display(),
                bytes(free),
                if hosted > 0 {
                    format!(" (besides the {} already hosted)", bytes(hosted))
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

/// Bytes free to an unprivileged user on the file system holding `path` (statvfs).
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn run(g: &Global, mut a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let root = repo.root().to_path_buf();
    a.offer = a.offer_given.unwrap_or(DEFAULT_OFFER);
    check_offer(&root, a.offer, a.offer_given.is_some())?;
    let keys = repo.keys();
    let key = keys.node.clone();
    let allow = Arc::new(AllowList::with_capacity(a.offer));
    for s in &a.allow {
        let (id, size) = s.split_once('=').context("--allow takes NODEID=SIZE")?;
        let id: NodeId = id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        grant(
            &allow,
            id,
            crate::output::parse_size(size).map_err(anyhow::Error::msg)?,
            "--allow",
        );
    }
    let store = Arc::new(
        HostedStore::open(root.join("hosted"), &keys.host, allow.clone())
            .context("cannot open the hosted store")?,
    );
    let rt = runtime()?;
    let quiet = g.quiet;
    // Repair tickets are honoured when signed by the pinned coordinator (set once it is known).
    let coordinator_key: Arc<std::sync::OnceLock<ed25519_dalek::VerifyingKey>> = Arc::default();
    let res: Result<()> = rt.block_on(async {
        let mut scfg = ServerConfig::new(key.clone(), store.clone());
        scfg.coordinator_key = coordinator_key.clone();
        let server = Server::bind(&a.listen, scfg).await?;
        let public = a.public_addr.clone().unwrap_or_else(|| server.url());
        if !quiet {
            outln!("node {} serving peers on {} (offering {})", NodeId::of(&key), server.url(), crate::output::bytes(a.offer));
        }
        let url = coordinator_url(&root, &a.peers.coordinator)?;
        let (mut client, mut events) = (None, None);
        // The node serves its peers whether or not the coordinator is reachable; it retries
        // the coordinator with exponential backoff (1 s … 5 min) until it answers.
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_secs(1);
        if let Some(u) = &url {
            match join_coordinator(&root, u, &key, &public, &a, &allow, quiet).await {
                Ok((c, e)) => {
                    if let Some(k) = c.coordinator_key() {
                        let _ = coordinator_key.set(k);
                    }
                    (client, events) = (Some(c), Some(e))
                }
                Err(e) => {
                    eprintln!("pluto: {e:#}; serving peers meanwhile, retrying in {backoff:?}");
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                }
            }
        }
        let mut opts = SyncOptions { relay: client.clone(), ..Default::default() };
        let mut push_tick = tokio::time::interval(Duration::from_secs(a.push_every.max(1)));
        let mut chal_tick = tokio::time::interval(Duration::from_secs(a.challenge_every.max(1)));
        push_tick.tick().await;
        chal_tick.tick().await;
        // challenge id → (pack, size, ranges) of proof challenges relayed by the coordinator
        let pending: PendingProofs = Arc::default();
        let work = Arc::new(tokio::sync::Semaphore::new(COORDINATOR_WORK_AT_ONCE));
        let mut repair_soon = false;
        let pushes = OwnPushes {
            key: key.clone(),
            root: root.clone(),
            copies: a.copies,
            given_hosts: a.peers.hosts.clone(),
            quiet,
            running: Arc::default(),
            again: Arc::default(),
        };
        let mut challenging: Option<tokio::task::JoinHandle<()>> = None;
        let (mut dropped, mut last_drop_said) = (0u64, None::<std::time::Instant>);
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = async { match retry_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    let Some(u) = &url else { retry_at = None; continue };
                    match join_coordinator(&root, u, &key, &public, &a, &allow, quiet).await {
                        Ok((c, e)) => {
                            if let Some(k) = c.coordinator_key() {
                                let _ = coordinator_key.set(k);
                            }
                            opts.relay = Some(c.clone());
                            (client, events) = (Some(c), Some(e));
                            retry_at = None;
                            backoff = Duration::from_secs(1);
                        }
                        Err(e) => {
                            backoff = (backoff * 2).min(Duration::from_secs(300));
                            eprintln!("pluto: {e:#}; retrying in {backoff:?}");
                            retry_at = Some(tokio::time::Instant::now() + backoff);
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)), if repair_soon => {
                    repair_soon = false;
                    pushes.start(client.clone(), opts.clone(), "repair");
                }
                _ = push_tick.tick(), if a.push_every > 0 => {
                    pushes.start(client.clone(), opts.clone(), "push");
                }
                _ = chal_tick.tick(), if a.challenge_every > 0 => {
                    // one round at a time: a round still running (slow hosts) is not doubled
                    if challenging.as_ref().is_none_or(|t| t.is_finished()) {
                        challenging = Some(tokio::spawn(challenge_own_hosts(
                            key.clone(), root.clone(), client.clone(), opts.clone(), pushes.clone(),
                        )));
                    }
                }
                ev = async { match events.as_mut() { Some(e) => e.recv().await, None => std::future::pending().await } } => {
                    let Some(ev) = ev else {
                        // the session ended: keep serving peers, and get it back
                        eprintln!("pluto: lost the coordinator; reconnecting");
                        (client, events) = (None, None);
                        opts.relay = None;
                        if url.is_some() {
                            retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        }
                        continue;
                    };
                    let Some(c) = client.as_ref() else { continue };
                    let CoordEvent::Message(msg) = ev else { continue };
                    if let CoordMsg::NewOwner { owner, quota_bytes, .. } = msg {
                        grant(&allow, owner, quota_bytes, "the coordinator");
                        continue;
                    }
                    if let CoordMsg::Excluded { reason } = &msg {
                        eprintln!("pluto: this node was excluded by the coordinator: {reason}");
                        continue;
                    }
                    if let CoordMsg::MoveCopies { host, reason } = &msg {
                        if let Err(e) = stop_counting_on(&root, &[*host], &format!("the coordinator moves copies off it ({reason})")) {
                            eprintln!("pluto: {e:#}");
                        }
                        // one push soon asks the coordinator for replacement hosts (many orders
                        // at once make one push)
                        repair_soon = true;
                        continue;
                    }
                    let Ok(permit) = work.clone().try_acquire_owned() else {
                        // said at most every few seconds: a flood must not flood the log too
                        dropped += 1;
                        if last_drop_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                            eprintln!("pluto: coordinator: too much work at once; dropped {dropped} order(s), the last {}", msg_kind(&msg));
                            (dropped, last_drop_said) = (0, Some(std::time::Instant::now()));
                        }
                        continue;
                    };
                    let job = CoordinatorJob {
                        key: key.clone(),
                        root: root.clone(),
                        store: store.clone(),
                        client: c.clone(),
                        opts: opts.clone(),
                        pending: pending.clone(),
                        coordinator_key: coordinator_key.clone(),
                        quiet,
                    };
                    tokio::spawn(async move {
                        job.run(msg).await;
                        drop(permit);
                    });
                }
            }
        }
        if !quiet {
            outln!("stopping");
        }
        server.shutdown().await;
        if let Some(c) = client {
            let _ = c.close().await;
        }
        Ok(())
    });
    if let Err(e) = res {
        bail!(e);
    }
    Ok(exit::OK)
}

/// What a coordinator's message asks of this node, done in a task of its own so that the
/// event loop never waits on the coordinator (see [`COORDINATOR_WORK_AT_ONCE`]).
struct CoordinatorJob {
    key: ed25519_dalek::SigningKey,
    root: std::path::PathBuf,
    store: Arc<HostedStore>,
    client: pluto_netsync::coord_client::CoordClient,
    opts: SyncOptions,
    pending: PendingProofs,
    coordinator_key: Arc<std::sync::OnceLock<ed25519_dalek::VerifyingKey>>,
    quiet: bool,
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

impl CoordinatorJob {
    async fn run(self, msg: CoordMsg) {
        let c = &self.client;
        match msg {
            CoordMsg::Challenge {
                challenge_id,
                owner,
                payload,
                ..
            } => {
                let st = self.store.clone();
                let ans = tokio::task::spawn_blocking(move || {
                    answer_relayed_challenge(&st, &owner, &payload)
                })
                .await
                .unwrap_or_default();
                if let Err(e) = c.answer_challenge(challenge_id, ans).await {
                    eprintln!("pluto: cannot answer challenge {challenge_id}: {e}");
                }
            }
            CoordMsg::ChallengeDue { host } => {
                let st = PeerState::load(&self.root).unwrap_or_default();
                let Some((pack, size, ranges)) = relayed_proof_for(&st, &host) else {
                    return;
                };
                if self.pending.lock().map(|p| p.len()).unwrap_or(usize::MAX)
                    >= PENDING_CHALLENGES_MAX
                {
                    eprintln!("pluto: {PENDING_CHALLENGES_MAX} relayed challenges unanswered; not sending more");
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
                        if let Ok(mut p) = self.pending.lock() {
                            p.insert(id, (pack, size, ranges));
                        }
                    }
                    Err(e) => {
                        eprintln!("pluto: cannot challenge host {}: {e}", &host.to_hex()[..16])
                    }
                }
            }
            CoordMsg::ChallengeAnswer {
                challenge_id,
                payload,
                ..
            } => {
                let Some((pack, size, ranges)) = self
                    .pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&challenge_id))
                else {
                    return;
                };
                let passed = matches!(proto::decode::<Response>(&payload), Ok(Response::Proof { encoded })
                    if challenge::verify_proof(&pack, size, &ranges, &encoded).is_ok());
                if !passed {
                    eprintln!("pluto: host failed relayed challenge {challenge_id}");
                }
                if let Err(e) = c.report_challenge(challenge_id, passed).await {
                    eprintln!("pluto: cannot report challenge {challenge_id}: {e}");
                }
            }
            CoordMsg::RelayOffer { url, token, .. } => {
                let mut cfg = ServerConfig::new(self.key.clone(), self.store.clone());
                cfg.coordinator_key = self.coordinator_key.clone();
                if let Err(e) =
                    pluto_netsync::peer::server::serve_relay_offer(&cfg, &url, &token).await
                {
                    eprintln!("pluto: relayed session: {e}");
                }
            }
            msg @ CoordMsg::RepairShare { .. } => {
                let Some(order) = shares::RepairOrder::of(msg) else {
                    return;
                };
                match shares::rebuild_for_owner(&self.key, &self.store, &order, &self.opts).await {
                    Ok(()) => {
                        if !self.quiet {
                            outln!(
                                "rebuilt share {} of {} from {} holders",
                                &hex::encode(order.lost_name)[..16],
                                &order.owner.to_hex()[..16],
                                order.sources.len()
                            );
                        }
                        if let Err(e) = c.repair_done(order.owner, order.lost_name).await {
                            eprintln!("pluto: cannot report the repair: {e}");
                        }
                    }
                    Err(e) => eprintln!("pluto: repair for {}: {e}", &order.owner.to_hex()[..16]),
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pluto_netsync::peer::sync::{HostRecord, ItemKey};

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
