//! `pluto push`: replicate packs, index files, snapshots and config to k hosts. Also the
//! pieces the other peer commands share: finding hosts (coordinator or `--host`), progress.

use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_netsync::coord_client::{ClientConfig, ClientError, CoordClient};
use pluto_netsync::erasure::{Params, Scheme};
use pluto_netsync::peer::client::HostAddr;
use pluto_netsync::peer::shares;
use pluto_netsync::peer::sync::{
    self, FailureKind, PeerState, PeerStore, Progress as PeerProgress, ProgressFn, PushReport,
    SyncOptions,
};
use pluto_netsync::wire::{NodeId, RelationState, Relationship};
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use std::path::Path;
use std::sync::Arc;

/// Where the hosts come from.
#[derive(clap::Args, Clone, Default)]
pub struct PeerArgs {
    /// The coordinator (mqtt://HOST:PORT); remembered in the repository after first use.
    #[arg(long, env = "PLUTO_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    /// A host to use directly, as NODEID@ws://HOST:PORT (repeatable; friends without a coordinator).
    #[arg(long = "host", value_name = "NODEID@URL")]
    pub hosts: Vec<String>,
    /// How long to keep retrying (with backoff) an unreachable coordinator before going on
    /// with the hosts this node already knows.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub coordinator_wait: u64,
}

pub fn parse_host(s: &str) -> Result<HostAddr> {
    let (id, url) = s
        .split_once('@')
        .context("a host is NODEID@ws://HOST:PORT")?;
    let node: NodeId = id
        .parse()
        .map_err(|e| anyhow::anyhow!("host {id:?}: {e}"))?;
    pluto_netsync::peer::client::dial_addr(url)?;
    Ok(HostAddr {
        node,
        url: url.to_string(),
    })
}

/// The coordinator URL: given (and then remembered), or remembered (`.pluto/peers/coordinator`, local).
pub fn coordinator_url(root: &Path, given: &Option<String>) -> Result<Option<String>> {
    let file = root.join("peers").join("coordinator");
    if let Some(u) = given {
        std::fs::create_dir_all(root.join("peers"))?;
        std::fs::write(&file, u).with_context(|| format!("cannot write {}", file.display()))?;
        return Ok(Some(u.clone()));
    }
    Ok(std::fs::read_to_string(&file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// Connect to the coordinator, pinning its key on first contact (`.pluto/peers/coordinator-key`).
pub async fn connect_coordinator(
    root: &Path,
    url: &str,
    key: &ed25519_dalek::SigningKey,
    suffix: Option<&str>,
) -> Result<(
    CoordClient,
    tokio::sync::mpsc::Receiver<pluto_netsync::coord_client::CoordEvent>,
)> {
    let pin = root.join("peers").join("coordinator-key");
    let mut cfg = ClientConfig::new(url, key.clone());
    cfg.client_suffix = suffix.map(str::to_string);
    if let Ok(h) = std::fs::read_to_string(&pin) {
        let mut b = [0u8; 32];
        hex::decode_to_slice(h.trim(), &mut b).context("pinned coordinator key is malformed")?;
        cfg.coordinator_key = Some(
            ed25519_dalek::VerifyingKey::from_bytes(&b)
                .context("pinned coordinator key is invalid")?,
        );
    }
    let (c, ev) = CoordClient::connect(cfg)
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    if let Some(k) = c.coordinator_key() {
        if !pin.exists() {
            std::fs::create_dir_all(root.join("peers"))?;
            std::fs::write(&pin, hex::encode(k.as_bytes()))?;
        }
    }
    Ok((c, ev))
}

/// Connect, retrying with exponential backoff (1 s, 2 s, 4 s, … at most 30 s apart) until
/// `wait` has passed. A coordinator that answers but refuses is not retried.
pub async fn connect_with_backoff(
    root: &Path,
    url: &str,
    key: &ed25519_dalek::SigningKey,
    suffix: &str,
    wait: std::time::Duration,
) -> Result<CoordClient> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        match connect_coordinator(root, url, key, Some(suffix)).await {
            Ok((c, _ev)) => return Ok(c),
            Err(e) => {
                let retryable = e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<ClientError>(),
                        Some(
                            ClientError::Connect(_) | ClientError::Timeout(_) | ClientError::Closed
                        )
                    )
                });
                let now = tokio::time::Instant::now();
                if !retryable || now + delay > deadline {
                    return Err(e);
                }
                eprintln!("pluto: {e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// `hosts`, then the local record's hosts in good standing; each once, never this node.
pub fn with_known_hosts(
    root: &Path,
    key: &ed25519_dalek::SigningKey,
    mut hosts: Vec<HostAddr>,
) -> Result<Vec<HostAddr>> {
    hosts.extend(PeerState::load(root)?.good_hosts());
    let me = NodeId::of(key);
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| h.node != me && seen.insert(h.node));
    Ok(hosts)
}

/// The owner's active hosts as the coordinator records them. With `ask_copies`, first ask
/// the coordinator for new hosts when fewer than that many stand (a first push, or a host
/// that was excluded).
pub async fn matched_hosts(
    root: &Path,
    c: &CoordClient,
    ask_copies: Option<usize>,
) -> Result<Vec<HostAddr>> {
    let (mine, _) = c
        .relationships()
        .await
        .context("cannot list this node's hosts at the coordinator")?;
    // Hosts the coordinator has moving away (excluded, left, released): the move order may
    // have been sent while this node was away, so the list is the record that counts.
    let moving: Vec<NodeId> = mine
        .iter()
        .filter(|r| r.state == RelationState::Moving)
        .map(|r| r.host)
        .collect();
    stop_counting_on(root, &moving, "the coordinator has it leaving")?;
    let mut active: Vec<Relationship> = mine
        .into_iter()
        .filter(|r| r.state == RelationState::Active)
        .collect();
    if let Some(k) = ask_copies {
        if active.len() < k {
            match c.request_matches().await {
                Ok((hosts, missing)) => {
                    if missing > 0 {
                        eprintln!(
                            "pluto: the coordinator found only {} of {k} hosts; the rest later",
                            hosts.len()
                        );
                    }
                    active = hosts;
                }
                Err(e) => eprintln!("pluto: the coordinator matched no new hosts: {e}"),
            }
        }
    }
    // A coordinator that matched this node with itself (broken or malicious) is ignored:
    // a copy on its own disk is no copy.
    let me = c.node_id();
    Ok(active
        .into_iter()
        .filter(|r| r.state == RelationState::Active && r.host != me)
        .filter_map(|r| {
            let url = r.peer_addrs.iter().find(|u| u.starts_with("ws://"))?;
            Some(HostAddr {
                node: r.host,
                url: url.clone(),
            })
        })
        .collect())
}

/// Mark `hosts` as failed in the owner's record: their copies no longer count, and the next
/// push places them elsewhere. Says so for each host that was still counted.
pub fn stop_counting_on(root: &Path, hosts: &[NodeId], why: &str) -> Result<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    let now = sync::now_unix();
    let newly = PeerStore::open(root).update(|st| {
        let mut newly = Vec::new();
        for h in hosts {
            if let Some(r) = st.hosts.get_mut(h) {
                if !r.failed {
                    newly.push(*h);
                }
                r.mark_failed(FailureKind::Excluded, now, why);
            }
        }
        newly
    })?;
    for h in newly {
        eprintln!(
            "pluto: host {}: {why}; its copies no longer count",
            &h.to_hex()[..16]
        );
    }
    Ok(())
}

/// The hosts of this owner: `--host`s, the coordinator's active relationships (asking it
/// for new ones when `ask_copies` are not yet matched), and the hosts in the local record
/// that are in good standing. The coordinator connection is handed back so transfers can
/// fall back to its relay.
pub async fn owner_hosts(
    root: &Path,
    key: &ed25519_dalek::SigningKey,
    a: &PeerArgs,
    suffix: &str,
    ask_copies: Option<usize>,
) -> Result<(Vec<HostAddr>, Option<CoordClient>)> {
    let mut out: Vec<HostAddr> = a
        .hosts
        .iter()
        .map(|h| parse_host(h))
        .collect::<Result<_>>()?;
    let mut client = None;
    if let Some(url) = coordinator_url(root, &a.coordinator)? {
        let wait = std::time::Duration::from_secs(a.coordinator_wait);
        match connect_with_backoff(root, &url, key, suffix, wait).await {
            // A coordinator that takes the connection but does not answer (or answers
            // nonsense) is treated like an unreachable one, not waited on again.
            Ok(c) => match matched_hosts(root, &c, ask_copies).await {
                Ok(hosts) => {
                    out.extend(hosts);
                    client = Some(c);
                }
                Err(e) => eprintln!("pluto: {e:#}; going on with the hosts this node knows"),
            },
            // Local work never depends on the coordinator: go on with the hosts we know.
            Err(e) => eprintln!("pluto: {e:#}; going on with the hosts this node knows"),
        }
    }
    Ok((with_known_hosts(root, key, out)?, client))
}

/// The default placement of a repository that chose none.
pub const DEFAULT_SCHEME: (u8, u8) = (4, 8);

/// How this push places the packs.
pub enum Placement {
    Shares(Params),
    Copies(usize),
}

/// `-k` alone means that many full copies (not remembered); `--scheme` is remembered; else
/// the remembered scheme; else none chosen yet (see [`placement`]).
pub fn chosen_scheme(
    root: &Path,
    given: Option<Scheme>,
    copies: Option<usize>,
) -> Result<Option<Scheme>> {
    match (given, copies) {
        (None, Some(k)) => Ok(Some(Scheme::copies(k.clamp(1, 255) as u8)?)),
        (s, _) => scheme_of(root, s),
    }
}

/// Hosts to ask the coordinator for: the scheme's n (8 when none is chosen yet).
pub fn hosts_to_ask(scheme: &Option<Scheme>) -> usize {
    scheme
        .as_ref()
        .map(|s| usize::from(s.n()))
        .unwrap_or(usize::from(DEFAULT_SCHEME.1))
}

/// With no scheme chosen, a repository goes 4/8 (and remembers it) once 8 hosts are there,
/// and keeps 2 full copies until then.
pub fn placement(root: &Path, scheme: &Option<Scheme>, hosts: usize) -> Result<Placement> {
    Ok(match scheme {
        Some(s) => match s.params() {
            Some(p) => Placement::Shares(p),
            None => Placement::Copies(usize::from(s.n())),
        },
        None if hosts >= usize::from(DEFAULT_SCHEME.1) => {
            let s = Scheme::erasure(DEFAULT_SCHEME.0, DEFAULT_SCHEME.1)?;
            scheme_of(root, Some(s))?;
            Placement::Shares(s.params().expect("an erasure scheme"))
        }
        None => Placement::Copies(2),
    })
}

/// `push` with erasure coding: N hosts, each pack as N shares.
#[allow(clippy::too_many_arguments)]
fn push_erasure(
    g: &Global,
    rt: &tokio::runtime::Runtime,
    root: &Path,
    key: &ed25519_dalek::SigningKey,
    a: &Args,
    params: Params,
    hosts: Vec<HostAddr>,
    coordinator: Option<CoordClient>,
) -> Result<u8> {
    let n = usize::from(params.n());
    if hosts.len() < n {
        eprintln!(
            "pluto: {} host(s) for a {}/{} scheme: shares without a host wait for the next push",
            hosts.len(),
            params.k(),
            n
        );
    }
    if hosts.is_empty() {
        bail!("no hosts: pass --coordinator URL (or --host NODEID@ws://HOST:PORT)");
    }
    let progress = Arc::new(Progress::default());
    let bar = crate::progress::Bar::start(progress.clone(), "push", g.quiet);
    let opts = SyncOptions {
        parallel: a.parallel.max(1),
        relay: coordinator.clone(),
        ..Default::default()
    };
    let rep = rt.block_on(shares::push_shares(
        key,
        root,
        &hosts,
        params,
        &opts,
        progress_fn(progress),
    ))?;
    drop(bar);
    if let Some(c) = coordinator {
        // The coordinator learns where the shares are, to have a lost one rebuilt while
        // this node is away.
        let groups = shares::placed_groups(root)?;
        if !groups.is_empty() {
            if let Err(e) = rt.block_on(c.record_shares(groups)) {
                eprintln!("pluto: the coordinator did not record the shares: {e}");
            }
        }
        let _ = rt.block_on(c.close());
    }
    Ok(report_push(
        g,
        &rep,
        &format!("as {}/{} shares ", params.k(), n),
        hosts.len(),
        "pack(s) or file(s) are not fully placed yet",
    ))
}

/// The end of a push: what each host refused, the summary line, and the exit code (an
/// error while anything is short of its placement).
fn report_push(g: &Global, rep: &PushReport, placed: &str, hosts: usize, short: &str) -> u8 {
    for (h, e) in &rep.errors {
        eprintln!("pluto: host {}: {e}", &h.to_hex()[..16]);
    }
    if !g.quiet {
        outln!(
            "Pushed {} file(s), {} bytes, {placed}to {hosts} host(s); {} already there.",
            rep.uploaded,
            rep.bytes,
            rep.already
        );
    }
    if rep.under_replicated > 0 {
        eprintln!("pluto: {} {short}; push again later", rep.under_replicated);
        return exit::ERROR;
    }
    exit::OK
}

/// Feed peer progress into the CLI's progress bar.
pub fn progress_fn(p: Arc<Progress>) -> ProgressFn {
    Arc::new(move |e| match e {
        PeerProgress::Total(b) => p.add_total(0, b),
        PeerProgress::Bytes(b) => p.add_done(0, b),
        PeerProgress::Done { .. } => p.add_done(1, 0),
        PeerProgress::HostFailed { .. } => {}
    })
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Replicate every pack, index file, snapshot and the config not yet on k hosts.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto push                                   # hosts from the coordinator
  pluto push --host 3f2a…@ws://203.0.113.5:7447 --host 9c1d…@ws://198.51.100.7:7447")]
pub struct Args {
    #[command(flatten)]
    peers: PeerArgs,
    /// Full copies wanted (k) [default: 2 when 4/8 cannot be placed yet].
    #[arg(long, short = 'k')]
    copies: Option<usize>,
    /// Placement: `K/N` erasure coding (each pack as N shares on N distinct hosts, any K
    /// restore it), or `copies:C` full copies. Remembered in the repository
    /// (`.pluto/peers/scheme`). Default: 4/8 as soon as 8 hosts are matched (then
    /// remembered), 2 full copies until then.
    #[arg(long, value_name = "K/N|copies:C")]
    scheme: Option<Scheme>,
    /// Files in flight per host.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

/// The placement scheme: given (and then remembered), or remembered.
pub fn scheme_of(root: &Path, given: Option<Scheme>) -> Result<Option<Scheme>> {
    let file = root.join("peers").join("scheme");
    if let Some(s) = given {
        std::fs::create_dir_all(root.join("peers"))?;
        std::fs::write(&file, s.to_string())
            .with_context(|| format!("cannot write {}", file.display()))?;
        return Ok(Some(s));
    }
    match std::fs::read_to_string(&file) {
        Ok(s) => Ok(Some(
            s.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
        )),
        Err(_) => Ok(None),
    }
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let root = repo.root().to_path_buf();
    let key = repo.keys().node.clone();
    let rt = runtime()?;
    let scheme = chosen_scheme(&root, a.scheme, a.copies)?;
    let (hosts, coordinator) = rt.block_on(owner_hosts(
        &root,
        &key,
        &a.peers,
        "push",
        Some(hosts_to_ask(&scheme)),
    ))?;
    let copies = match placement(&root, &scheme, hosts.len())? {
        Placement::Shares(params) => {
            return push_erasure(g, &rt, &root, &key, &a, params, hosts, coordinator)
        }
        Placement::Copies(k) => k,
    };
    if hosts.is_empty() {
        bail!("no hosts: pass --coordinator URL (or --host NODEID@ws://HOST:PORT)");
    }
    let hosts: Vec<HostAddr> = hosts.into_iter().take(copies.max(1)).collect();
    let progress = Arc::new(Progress::default());
    let bar = crate::progress::Bar::start(progress.clone(), "push", g.quiet);
    let opts = SyncOptions {
        parallel: a.parallel.max(1),
        relay: coordinator.clone(),
        ..Default::default()
    };
    let rep = rt.block_on(sync::push(
        &key,
        &root,
        &hosts,
        copies,
        &opts,
        progress_fn(progress),
    ))?;
    drop(bar);
    if let Some(c) = coordinator {
        let _ = rt.block_on(c.close());
    }
    Ok(report_push(
        g,
        &rep,
        "",
        hosts.len(),
        &format!("file(s) have fewer than {copies} copies"),
    ))
}
