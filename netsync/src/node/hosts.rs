//! Host choice for an owner's data: the coordinator (its URL remembered, its key pinned on
//! first contact), `--host`s, and the local record of hosts in good standing; and the
//! placement (erasure-coded shares or full copies). Used by the node and by `pluto push`,
//! `pull` and `status`, so they choose hosts the same way.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;

use super::{NodeError, Result};
use crate::coord_client::{ClientConfig, ClientError, CoordClient, CoordEvent};
use crate::erasure::{Params, Scheme};
use crate::peer::client::HostAddr;
use crate::peer::sync::{now_unix, FailureKind, PeerState, PeerStore};
use crate::wire::{NodeId, RelationState, Relationship};

/// The default placement of a repository that chose none.
pub const DEFAULT_SCHEME: (u8, u8) = (4, 8);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `NODEID@ws://HOST:PORT`.
pub fn parse_host(s: &str) -> Result<HostAddr> {
    let (id, url) = s
        .split_once('@')
        .ok_or_else(|| NodeError::Invalid(format!("{s:?}: a host is NODEID@ws://HOST:PORT")))?;
    let node: NodeId = id
        .parse()
        .map_err(|e| NodeError::Invalid(format!("host {id:?}: {e}")))?;
    crate::peer::client::dial_addr(url)?;
    Ok(HostAddr {
        node,
        url: url.to_string(),
    })
}

/// The coordinator URL: given (and then remembered), or remembered (`.pluto/peers/coordinator`, local).
pub fn coordinator_url(root: &Path, given: &Option<String>) -> Result<Option<String>> {
    let file = root.join("peers").join("coordinator");
    if let Some(u) = given {
        let dir = root.join("peers");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        pluto_repo::fsutil::write_atomic(&root.join("tmp"), &file, u.as_bytes(), 0o600)?;
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
    key: &SigningKey,
    suffix: Option<&str>,
) -> Result<(CoordClient, tokio::sync::mpsc::Receiver<CoordEvent>)> {
    let pin = root.join("peers").join("coordinator-key");
    let mut cfg = ClientConfig::new(url, key.clone());
    cfg.client_suffix = suffix.map(str::to_string);
    if let Ok(h) = std::fs::read_to_string(&pin) {
        let mut b = [0u8; 32];
        hex::decode_to_slice(h.trim(), &mut b).map_err(|_| {
            NodeError::Invalid(format!(
                "{}: the pinned coordinator key is malformed",
                pin.display()
            ))
        })?;
        cfg.coordinator_key = Some(ed25519_dalek::VerifyingKey::from_bytes(&b).map_err(|_| {
            NodeError::Invalid(format!(
                "{}: the pinned coordinator key is invalid",
                pin.display()
            ))
        })?);
    }
    let (c, ev) = CoordClient::connect(cfg)
        .await
        .map_err(|source| NodeError::Coordinator {
            context: format!("cannot reach the coordinator at {url}"),
            source,
        })?;
    if let Some(k) = c.coordinator_key() {
        if !pin.exists() {
            let dir = root.join("peers");
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            pluto_repo::fsutil::write_atomic(
                &root.join("tmp"),
                &pin,
                hex::encode(k.as_bytes()).as_bytes(),
                0o600,
            )?;
        }
    }
    Ok((c, ev))
}

/// Whether a failure to connect is worth retrying (the coordinator may come back), rather
/// than a refusal that will not change.
pub fn retryable(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::Coordinator {
            source: ClientError::Connect(_) | ClientError::Timeout(_) | ClientError::Closed,
            ..
        }
    )
}

/// Connect, retrying with exponential backoff (1 s, 2 s, 4 s, … at most 30 s apart) until
/// `wait` has passed. A coordinator that answers but refuses is not retried. `on_retry` is
/// told of each failed attempt and the delay before the next.
pub async fn connect_with_backoff(
    root: &Path,
    url: &str,
    key: &SigningKey,
    suffix: &str,
    wait: Duration,
    on_retry: &(dyn Fn(&NodeError, Duration) + Send + Sync),
) -> Result<CoordClient> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_secs(1);
    loop {
        match connect_coordinator(root, url, key, Some(suffix)).await {
            Ok((c, _ev)) => return Ok(c),
            Err(e) => {
                let now = tokio::time::Instant::now();
                if !retryable(&e) || now + delay > deadline {
                    return Err(e);
                }
                on_retry(&e, delay);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// `hosts`, then the local record's hosts in good standing; each once, never this node.
pub fn with_known_hosts(
    root: &Path,
    key: &SigningKey,
    mut hosts: Vec<HostAddr>,
) -> Result<Vec<HostAddr>> {
    hosts.extend(PeerState::load(root)?.good_hosts());
    let me = NodeId::of(key);
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| h.node != me && seen.insert(h.node));
    Ok(hosts)
}

/// Stop counting on hosts the coordinator lists as moving (with the relationship's
/// `since_unix`, so that only a later match undoes it); a line for each that counted until now.
fn moved_off(root: &Path, hosts: &[(NodeId, u64)], why: &str) -> Result<Vec<String>> {
    let ids: Vec<NodeId> = hosts.iter().map(|(h, _)| *h).collect();
    mark_hosts(root, &ids, why, |r, now, i| {
        r.mark_moved(now, why, hosts[i].1)
    })
}

/// Apply `mark` (record, now, index in `hosts`) to each host's record in one update of the
/// owner's record; a line for each host that was still counted before.
fn mark_hosts(
    root: &Path,
    hosts: &[NodeId],
    why: &str,
    mark: impl Fn(&mut crate::peer::state::HostRecord, u64, usize),
) -> Result<Vec<String>> {
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_unix();
    let newly = PeerStore::open(root).update(|st| {
        let mut newly = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            if let Some(r) = st.hosts.get_mut(h) {
                if !r.failed {
                    newly.push(*h);
                }
                mark(r, now, i);
            }
        }
        newly
    })?;
    Ok(newly
        .into_iter()
        .map(|h| {
            format!(
                "host {}: {why}; its copies no longer count",
                &h.to_hex()[..16]
            )
        })
        .collect())
}

/// The owner's active hosts as the coordinator records them, and what the caller should
/// be told (hosts that stopped counting, a coordinator short of hosts).
#[derive(Debug, Default)]
pub struct Matched {
    pub hosts: Vec<HostAddr>,
    /// Hosts the coordinator has this owner moving off (excluded, left, released): no
    /// place for new data, but they may still hold shares a pull can read back.
    pub moving: Vec<HostAddr>,
    pub notes: Vec<String>,
}

/// The owner's active hosts as the coordinator records them. With `ask_copies`, first ask
/// the coordinator for new hosts when fewer than that many stand (a first push, or a host
/// that was excluded).
pub async fn matched_hosts(
    root: &Path,
    c: &CoordClient,
    ask_copies: Option<usize>,
) -> Result<Matched> {
    let mut notes = Vec::new();
    let (mine, _) = c
        .relationships()
        .await
        .map_err(|source| NodeError::Coordinator {
            context: "cannot list this node's hosts at the coordinator".into(),
            source,
        })?;
    // Hosts the coordinator has moving away (excluded, left, released): the move order may
    // have been sent while this node was away, so the list is the record that counts.
    let me = c.node_id();
    let addr_of = |r: &Relationship| HostAddr {
        node: r.host,
        // no address: the coordinator's dial-back did not reach the host, so it is
        // reached through the relay (or a punch) at once
        url: r
            .peer_addrs
            .iter()
            .find(|u| u.starts_with("ws://"))
            .cloned()
            .unwrap_or_default(),
    };
    let moving_addrs: Vec<HostAddr> = mine
        .iter()
        .filter(|r| r.state == RelationState::Moving && r.host != me)
        .map(addr_of)
        .collect();
    let moving_since: Vec<(NodeId, u64)> = mine
        .iter()
        .filter(|r| r.state == RelationState::Moving)
        .map(|r| (r.host, r.since_unix))
        .collect();
    notes.extend(moved_off(
        root,
        &moving_since,
        "the coordinator has it leaving",
    )?);
    // Hosts this node stopped counting itself (failed a challenge, gone past the grace)
    // are no hosts, even while the coordinator still lists them.
    let state = PeerState::load(root)?;
    let failed = |h: &NodeId| state.is_failed(h);
    let mut active: Vec<Relationship> = mine
        .into_iter()
        .filter(|r| r.state == RelationState::Active)
        .collect();
    if let Some(k) = ask_copies {
        if active.iter().filter(|r| !failed(&r.host)).count() < k {
            match c.request_matches().await {
                Ok((hosts, missing)) => {
                    if missing > 0 {
                        notes.push(format!(
                            "the coordinator found only {} of {k} hosts; the rest later",
                            hosts.len()
                        ));
                    }
                    active = hosts;
                }
                Err(e) => notes.push(format!("the coordinator matched no new hosts: {e}")),
            }
        }
    }
    // A host the coordinator had this owner move off (it was away past the grace) and has
    // matched again since counts again.
    let back: Vec<(NodeId, u64)> = active
        .iter()
        .filter(|r| r.state == RelationState::Active && r.host != me)
        .map(|r| (r.host, r.since_unix))
        .collect();
    if back.iter().any(|(h, _)| failed(h)) {
        let again = PeerStore::open(root).update(|st| {
            back.iter()
                .filter(|(h, since)| st.hosts.get_mut(h).is_some_and(|r| r.rematched(*since)))
                .map(|(h, _)| *h)
                .collect::<Vec<_>>()
        })?;
        notes.extend(again.iter().map(|h| {
            format!(
                "host {}: matched again by the coordinator; its copies count again",
                &h.to_hex()[..16]
            )
        }));
    }
    // A coordinator that matched this node with itself (broken or malicious) is ignored:
    // a copy on its own disk is no copy.
    let hosts = active
        .iter()
        .filter(|r| r.state == RelationState::Active && r.host != me)
        .map(addr_of)
        .collect();
    Ok(Matched {
        hosts,
        moving: moving_addrs,
        notes,
    })
}

/// Mark `hosts` as failed in the owner's record: their copies no longer count, and the next
/// push places them elsewhere. Returns a line for each host that was still counted.
pub fn stop_counting_on(
    root: &Path,
    hosts: &[NodeId],
    kind: FailureKind,
    why: &str,
) -> Result<Vec<String>> {
    mark_hosts(root, hosts, why, |r, now, _| r.mark_failed(kind, now, why))
}

/// Where an owner's hosts come from.
#[derive(Debug, Clone, Default)]
pub struct HostSources {
    /// The coordinator URL given (remembered in the repository after first use).
    pub coordinator: Option<String>,
    /// Hosts given directly, as `NODEID@ws://HOST:PORT`.
    pub hosts: Vec<String>,
    /// How long to keep retrying an unreachable coordinator before going on with the hosts
    /// this node knows.
    pub coordinator_wait: Duration,
}

/// The hosts of this owner: the given ones, the coordinator's active relationships (asking
/// it for new ones when `ask_copies` are not yet matched), and the hosts in the local record
/// in good standing. The coordinator connection is
/// handed back so transfers can fall back to its relay. `say` is told what the user should
/// know (a coordinator out of reach, hosts that stopped counting).
pub async fn owner_hosts(
    root: &Path,
    key: &SigningKey,
    src: &HostSources,
    suffix: &str,
    ask_copies: Option<usize>,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<(Vec<HostAddr>, Option<CoordClient>)> {
    let mut out: Vec<HostAddr> = src
        .hosts
        .iter()
        .map(|h| parse_host(h))
        .collect::<Result<_>>()?;
    let mut client = None;
    if let Some(url) = coordinator_url(root, &src.coordinator)? {
        let retry = |e: &NodeError, d: Duration| say(format!("{e}; retrying in {d:?}"));
        match connect_with_backoff(root, &url, key, suffix, src.coordinator_wait, &retry).await {
            // A coordinator that takes the connection but does not answer (or answers
            // nonsense) is treated like an unreachable one, not waited on again.
            Ok(c) => match matched_hosts(root, &c, ask_copies).await {
                Ok(m) => {
                    m.notes.into_iter().for_each(say);
                    out.extend(m.hosts);
                    // A pull reads from every host that may still hold something: after a
                    // lost disk, hosts the owner was moved off often hold most of the shares
                    // (found by the churn soak: recoveries restored nothing without them).
                    if suffix == "pull" {
                        for h in m.moving {
                            if !out.iter().any(|o| o.node == h.node) {
                                out.push(h);
                            }
                        }
                    }
                    client = Some(c);
                }
                Err(e) => say(format!("{e}; going on with the hosts this node knows")),
            },
            // Local work never depends on the coordinator: go on with the hosts we know.
            Err(e) => say(format!("{e}; going on with the hosts this node knows")),
        }
    }
    Ok((with_known_hosts(root, key, out)?, client))
}

/// How a push places the packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Shares(Params),
    Copies(usize),
}

/// The placement scheme: given (and then remembered), or remembered.
pub fn scheme_of(root: &Path, given: Option<Scheme>) -> Result<Option<Scheme>> {
    let file = root.join("peers").join("scheme");
    if let Some(s) = given {
        let dir = root.join("peers");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        pluto_repo::fsutil::write_atomic(
            &root.join("tmp"),
            &file,
            s.to_string().as_bytes(),
            0o600,
        )?;
        return Ok(Some(s));
    }
    match std::fs::read_to_string(&file) {
        Ok(s) => Ok(Some(s.trim().parse().map_err(|e| {
            NodeError::Invalid(format!("{}: {e}", file.display()))
        })?)),
        Err(_) => Ok(None),
    }
}

/// A repository recovered from its words has no scheme of its own (`peers/scheme` is not
/// among the files the hosts keep): it takes the one most of its shares on the hosts were
/// made with, so that its pushes go on placing as before instead of falling back to full
/// copies (found by the churn soak: a recovered owner placed 2 copies where it had 4/8).
/// A scheme already chosen here is kept. Returns the scheme taken, if one was.
pub fn adopt_scheme_of_shares(
    root: &Path,
    seen: &std::collections::HashMap<Params, usize>,
) -> Result<Option<Scheme>> {
    if scheme_of(root, None)?.is_some() {
        return Ok(None);
    }
    // the most shares; on a tie, the larger n (the safer spread)
    let Some((&p, _)) = seen.iter().max_by_key(|(p, c)| (**c, p.n(), p.k())) else {
        return Ok(None);
    };
    scheme_of(root, Some(Scheme::Erasure(p)))
}

/// `-k` alone means that many full copies (not remembered); `--scheme` is remembered; else
/// the remembered scheme; else none chosen yet (see [`placement`]).
pub fn chosen_scheme(
    root: &Path,
    given: Option<Scheme>,
    copies: Option<usize>,
) -> Result<Option<Scheme>> {
    match (given, copies) {
        (None, Some(k)) => Ok(Some(
            Scheme::copies(k.clamp(1, 255) as u8).map_err(|e| NodeError::Invalid(e.to_string()))?,
        )),
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
            let s = Scheme::erasure(DEFAULT_SCHEME.0, DEFAULT_SCHEME.1)
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            scheme_of(root, Some(s))?;
            Placement::Shares(s.params().expect("an erasure scheme"))
        }
        None => Placement::Copies(2),
    })
}

/// `hosts` without those this node stopped counting (failed a challenge, excluded, gone
/// past the grace): new data never goes to them, even while the coordinator lists them.
pub fn without_failed(root: &Path, mut hosts: Vec<HostAddr>) -> Result<Vec<HostAddr>> {
    let state = PeerState::load(root)?;
    hosts.retain(|h| !state.is_failed(&h.node));
    Ok(hosts)
}
