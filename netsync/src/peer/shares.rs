//! Erasure-coded placement over peers: each pack is Reed–Solomon encoded into `n` shares
//! (any `k` restore it) placed on `n` distinct hosts; index files, snapshots and the config
//! — small — go whole to every host. Pull needs no local record: shares describe
//! themselves (their header names the pack), so after a disk loss any `k` hosts' shares of a
//! pack bring it back, each share checked against its BLAKE3 name and the pack against its.
//!
//! The owner's record of where each share went is `.pluto/peers/shares.json` (local, like
//! `state.json`); shares wait in `.pluto/peers/staged/` until their host confirmed them.

use super::client::HostAddr;
use super::proto::Kind;
use super::state::{ItemKey, PeerState, PeerStore};
pub use super::state::{PackPlacement, Placement, SharePlacement};
use super::sync::{
    connect, dest_of, list_host, local_items, now_unix, pull, push_host, Item, PackSelection,
    ProgressFn, PullReport, PushReport, SyncOptions,
};
use super::{PeerError, Result};
use crate::erasure::{self, Decoder, Params, Share, ShareHeader, ShareId};
use crate::wire::NodeId;
use ed25519_dalek::SigningKey;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Give every share slot without a usable host one that holds no other share of the pack,
/// the least loaded first (then in the order given). Slots whose host is unusable (failed)
/// are reassigned; slots on a host merely absent from `hosts` keep it (it may be offline).
pub fn assign_hosts<H: Clone + Eq + Hash>(
    slots: &mut [Option<H>],
    hosts: &[H],
    failed: &HashSet<H>,
    load: &mut HashMap<H, usize>,
) {
    for s in slots.iter_mut() {
        if s.as_ref().is_some_and(|h| failed.contains(h)) {
            *s = None;
        }
    }
    for i in 0..slots.len() {
        if slots[i].is_some() {
            continue;
        }
        let taken: HashSet<&H> = slots.iter().flatten().collect();
        let pick = hosts
            .iter()
            .filter(|h| !taken.contains(h) && !failed.contains(*h))
            .min_by_key(|h| load.get(*h).copied().unwrap_or(0))
            .cloned();
        if let Some(h) = pick {
            *load.entry(h.clone()).or_default() += 1;
            slots[i] = Some(h);
        }
    }
}

fn staged_path(repo_root: &Path, name: &[u8; 32]) -> PathBuf {
    repo_root
        .join("peers")
        .join("staged")
        .join(hex::encode(name))
}

/// Push with erasure coding: every pack as `params.n()` shares on distinct hosts, the other
/// files whole to every host. `under_replicated` counts packs with a share not confirmed on
/// its host, and files held by fewer than `n − k + 1` hosts (what survives the same losses).
///
/// The placement is decided on a copy read at the start (encoding packs takes time, and
/// no lock is held meanwhile), then written pack by pack: a pack whose entry another
/// writer changed in between keeps that writer's entry, and its shares wait for the next
/// push.
pub async fn push_shares(
    key: &SigningKey,
    repo_root: &Path,
    hosts: &[HostAddr],
    params: Params,
    opts: &SyncOptions,
    progress: ProgressFn,
) -> Result<PushReport> {
    let (k, n) = (params.k(), params.n());
    let items = local_items(repo_root)?;
    let store = PeerStore::open(repo_root);
    adopt_rebuilt_shares(key, &store, hosts, opts).await?;
    let state = store.read()?;
    let seen = store.read_placement()?;
    let mut placement = seen.clone();
    let failed: HashSet<NodeId> = state
        .hosts
        .iter()
        .filter(|(_, r)| r.failed)
        .map(|(h, _)| *h)
        .collect();
    let host_ids: Vec<NodeId> = hosts.iter().map(|h| h.node).collect();
    let mut load: HashMap<NodeId, usize> = HashMap::new();
    for p in placement.packs.values() {
        for s in p.shares.iter().filter_map(|s| s.host) {
            *load.entry(s).or_default() += 1;
        }
    }
    let staged_dir = repo_root.join("peers").join("staged");
    std::fs::create_dir_all(&staged_dir).map_err(PeerError::io(&staged_dir))?;
    // host → (pack, share) to upload
    let mut per_host: HashMap<NodeId, Vec<([u8; 32], Item)>> = HashMap::new();
    for pack in items.iter().filter(|i| i.kind == Kind::Pack) {
        let stale = placement
            .packs
            .get(&pack.name)
            .is_none_or(|p| p.k != k || p.n != n || p.shares.len() != usize::from(n));
        let needs_bytes = stale
            || placement.packs[&pack.name].shares.iter().any(|s| {
                !s.host.is_some_and(|h| state.holds(&h, &s.key()))
                    && !staged_path(repo_root, &s.name).exists()
            });
        // Encoding is deterministic: a pack encoded again gives the same shares.
        let encoded: Option<Vec<Share>> = if needs_bytes {
            let bytes = std::fs::read(&pack.path).map_err(PeerError::io(&pack.path))?;
            let shares = erasure::encode(params, &[&bytes]).map_err(|e| {
                PeerError::Protocol(format!("pack {}: {e}", hex::encode(pack.name)))
            })?;
            Some(shares)
        } else {
            None
        };
        if stale {
            let shares = encoded.as_ref().expect("encoded when stale");
            placement.packs.insert(
                pack.name,
                PackPlacement {
                    k,
                    n,
                    shares: shares
                        .iter()
                        .map(|s| SharePlacement {
                            name: s.id().0,
                            len: s.len() as u64,
                            host: None,
                        })
                        .collect(),
                },
            );
        }
        let entry = placement.packs.get_mut(&pack.name).expect("inserted");
        let mut slots: Vec<Option<NodeId>> = entry.shares.iter().map(|s| s.host).collect();
        assign_hosts(&mut slots, &host_ids, &failed, &mut load);
        for (i, (slot, sp)) in slots.into_iter().zip(entry.shares.iter_mut()).enumerate() {
            sp.host = slot;
            let Some(h) = sp.host else { continue };
            if state.holds(&h, &sp.key()) {
                continue;
            }
            let path = staged_path(repo_root, &sp.name);
            if !path.exists() {
                let share = &encoded
                    .as_ref()
                    .expect("encoded when a share is not staged")[i];
                pluto_repo::fsutil::write_atomic(
                    &repo_root.join("tmp"),
                    &path,
                    share.as_bytes(),
                    0o600,
                )?;
            }
            per_host.entry(h).or_default().push((
                pack.name,
                Item {
                    kind: Kind::Share,
                    name: sp.name,
                    size: sp.len,
                    path,
                },
            ));
        }
    }
    // Write the decisions, pack by pack, unless another writer changed the pack meanwhile.
    let kept_theirs: HashSet<[u8; 32]> = store.update_placement(|pl| {
        let mut theirs = HashSet::new();
        for (name, mine) in &placement.packs {
            if seen.packs.get(name) == Some(mine) {
                continue;
            }
            if pl.packs.get(name) == seen.packs.get(name) {
                pl.packs.insert(*name, mine.clone());
            } else {
                theirs.insert(*name);
            }
        }
        theirs
    })?;

    // Every host gets the small files whole, and its own shares.
    let meta: Vec<Item> = items
        .iter()
        .filter(|i| i.kind != Kind::Pack)
        .cloned()
        .collect();
    let key = Arc::new(key.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let before = opts.routes.bytes();
    for h in hosts {
        if failed.contains(&h.node) {
            continue;
        }
        let mut mine: Vec<Item> = per_host
            .remove(&h.node)
            .unwrap_or_default()
            .into_iter()
            .filter(|(pack, _)| !kept_theirs.contains(pack))
            .map(|(_, item)| item)
            .collect();
        mine.extend(meta.iter().cloned());
        let (key, h2, opts, progress, store) = (
            key.clone(),
            h.clone(),
            opts.clone(),
            progress.clone(),
            store.clone(),
        );
        tasks.spawn(async move {
            (
                h2.node,
                push_host(key, h2, Arc::new(mine), opts, progress, store).await,
            )
        });
    }
    let mut report = PushReport::default();
    let mut pushed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((node, Ok((up, b, a)))) => {
                report.uploaded += up;
                report.bytes += b;
                report.already += a;
                pushed.push(node);
            }
            Ok((node, Err(e))) => report.errors.push((node, e.to_string())),
            Err(e) => report
                .errors
                .push((NodeId([0; 32]), format!("push task failed: {e}"))),
        }
    }
    let now = now_unix();
    // Forget packs that are gone locally (pruned) — as they are now, not as listed at the
    // start: a pack snapshotted meanwhile may have been placed by another push. A pack the
    // index still names is not gone but missing (a damaged disk): its shares stay on record,
    // challenged and repaired, until the node fetches it back from them.
    // (the index is read only when some placed pack is missing here: rare, and a push
    // must not load the whole index for nothing)
    let named = if store
        .read_placement()?
        .packs
        .keys()
        .any(|p| !dest_of(repo_root, Kind::Pack, p).exists())
    {
        index_packs(repo_root)
    } else {
        HashSet::new()
    };
    report.paths = super::sync::paths_since(&opts.routes, &before, hosts);
    let (state, placement) = store.update_both(|st, pl| {
        for h in hosts.iter().filter(|h| pushed.contains(&h.node)) {
            let r = st.host(h);
            r.last_push_unix = r.last_push_unix.max(now);
        }
        for h in hosts {
            if let Some(p) = report.paths.get(&h.node) {
                st.host(h).count_path(p.direct, p.relayed, p.punched);
            }
        }
        pl.packs
            .retain(|p, _| named.contains(p) || dest_of(repo_root, Kind::Pack, p).exists());
        (st.clone(), pl.clone())
    })?;

    // Shares their host confirmed leave the staging area; count what is not placed yet.
    for p in placement.packs.values() {
        let mut placed = 0;
        for s in &p.shares {
            if s.host.is_some_and(|h| state.holds(&h, &s.key())) {
                placed += 1;
                let _ = std::fs::remove_file(staged_path(repo_root, &s.name));
            }
        }
        if placed < usize::from(n) {
            report.under_replicated += 1;
        }
    }
    let need = usize::from(n - k) + 1;
    report.under_replicated += meta
        .iter()
        .filter(|i| state.copies(&i.key()) < need)
        .count();
    Ok(report)
}

/// The packs the repository's index names (none when it cannot be read: then only the
/// packs present count, as before).
fn index_packs(repo_root: &Path) -> HashSet<[u8; 32]> {
    use pluto_repo::repository::LockMode;
    pluto_repo::Repository::open(repo_root, LockMode::Shared)
        .and_then(|r| Ok(r.index()?.packs().map(|(p, _)| p.0).collect()))
        .unwrap_or_default()
}

/// Shares whose recorded holder failed may already sit on another of the hosts: a node
/// that rebuilt them while this owner was away (the coordinator made it a host of this
/// owner). Ask the hosts what they hold, once, and take such a host as the share's holder
/// instead of placing the share again. A host's listing is its claim; challenges test it
/// like any other.
async fn adopt_rebuilt_shares(
    key: &SigningKey,
    store: &PeerStore,
    hosts: &[HostAddr],
    opts: &SyncOptions,
) -> Result<()> {
    let state = store.read()?;
    let placement = store.read_placement()?;
    let orphaned: HashMap<[u8; 32], u64> = placement
        .packs
        .values()
        .flat_map(|p| p.shares.iter())
        .filter(|s| s.host.is_some_and(|h| state.is_failed(&h)))
        .map(|s| (s.name, s.len))
        .collect();
    if orphaned.is_empty() {
        return Ok(());
    }
    let candidates: Vec<&HostAddr> = hosts.iter().filter(|h| !state.is_failed(&h.node)).collect();
    let listings = futures_util::future::join_all(
        candidates
            .iter()
            .map(|h| async move { (*h, list_host(key, h, opts).await) }),
    )
    .await;
    let mut found: HashMap<[u8; 32], &HostAddr> = HashMap::new();
    for (h, res) in listings {
        for ((kind, name), size) in res.into_iter().flatten() {
            if kind == Kind::Share && orphaned.get(&name) == Some(&size) {
                found.entry(name).or_insert(h);
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    store.update_both(|st, pl| {
        for p in pl.packs.values_mut() {
            for i in 0..p.shares.len() {
                let Some(h) = found.get(&p.shares[i].name) else {
                    continue;
                };
                // only a share still orphaned now (another writer may have placed it)
                if !p.shares[i].host.is_some_and(|o| st.is_failed(&o)) {
                    continue;
                }
                if p.shares.iter().any(|s| s.host == Some(h.node)) {
                    continue; // a group keeps one share per host
                }
                let s = &mut p.shares[i];
                s.host = Some(h.node);
                st.host(h).stored.insert(s.key(), s.len);
            }
        }
    })
}

/// The groups the coordinator is to record (for repair while the owner is away): every
/// share given a host, and at least k of them confirmed on theirs. A share not uploaded yet
/// names the host it waits for: should that host stay away past the grace, the coordinator
/// has the share built elsewhere from k others. (Recording only groups whose every share
/// stood left a window: an owner whose disk died while one host of a group was away left
/// that group to no one, and churn took it — found by the churn soak.)
pub fn placed_groups(repo_root: &Path) -> Result<Vec<crate::wire::ShareGroupRecord>> {
    let store = PeerStore::open(repo_root);
    Ok(groups_placed(&store.read()?, &store.read_placement()?))
}

fn groups_placed(state: &PeerState, placement: &Placement) -> Vec<crate::wire::ShareGroupRecord> {
    let mut out = Vec::new();
    'packs: for p in placement.packs.values() {
        let mut shares = Vec::new();
        let mut standing = 0;
        for s in &p.shares {
            let Some(host) = s.host else {
                continue 'packs;
            };
            if state.holds(&host, &s.key()) {
                standing += 1;
            }
            shares.push(crate::wire::ShareSlot {
                name: s.name,
                len: s.len,
                host,
            });
        }
        if standing < usize::from(p.k) || shares.len() != usize::from(p.n) {
            continue;
        }
        out.push(crate::wire::ShareGroupRecord {
            k: p.k,
            n: p.n,
            shares,
        });
    }
    out
}

/// How many of a pack's shares are confirmed on a host in good standing.
pub fn shares_held(state: &PeerState, p: &PackPlacement) -> usize {
    p.shares
        .iter()
        .filter(|s| {
            s.host
                .is_some_and(|h| state.holds(&h, &ItemKey::new(Kind::Share, s.name)))
        })
        .count()
}

/// One share a host lists, with the header read from its first bytes.
struct Listed {
    host: HostAddr,
    name: [u8; 32],
    size: u64,
    header: ShareHeader,
}

/// Bring back the config, index files and snapshots whole (from any host), then every pack
/// this repository lacks (of `only`, when given) from any `k` of its shares, whichever
/// hosts answer first.
pub async fn pull_shares(
    key: &SigningKey,
    repo_root: &Path,
    hosts: &[HostAddr],
    only: Option<&HashSet<[u8; 32]>>,
    opts: &SyncOptions,
    progress: ProgressFn,
) -> Result<PullReport> {
    let mut report = pull(
        key,
        repo_root,
        hosts,
        PackSelection::None,
        opts,
        progress.clone(),
    )
    .await?;
    let more =
        packs_from_shares(key, repo_root, hosts, only, &HashSet::new(), opts, progress).await?;
    report.fetched += more.fetched;
    report.bytes += more.bytes;
    report.missing.extend(more.missing);
    report.errors.extend(more.errors);
    report.share_schemes = more.share_schemes;
    Ok(report)
}

/// Every pack this repository lacks (of `only`, when given) rebuilt from any `k` of its
/// shares on `hosts`. Shares named in `known` are not asked for their headers (the owner's
/// placement already says which pack they belong to: packs it holds).
pub async fn packs_from_shares(
    key: &SigningKey,
    repo_root: &Path,
    hosts: &[HostAddr],
    only: Option<&HashSet<[u8; 32]>>,
    known: &HashSet<[u8; 32]>,
    opts: &SyncOptions,
    progress: ProgressFn,
) -> Result<PullReport> {
    let mut report = PullReport::default();
    // What each reachable host holds: shares, by the packs their headers name. All hosts
    // are asked at once: one slow host must not hold up reading the others.
    let listings = futures_util::future::join_all(hosts.iter().map(|h| async move {
        let res = async {
            let names = list_host(key, h, opts).await?;
            let mut c = connect(key, h, opts).await?;
            let (mut out, mut bad) = (Vec::new(), Vec::new());
            for ((kind, name), size) in names {
                if kind != Kind::Share || known.contains(&name) {
                    continue;
                }
                let head = c.get(Kind::Share, &name, 0, size.min(4096) as u32).await?;
                match ShareHeader::parse_prefix(&head) {
                    Ok(header) => out.push(Listed {
                        host: h.clone(),
                        name,
                        size,
                        header,
                    }),
                    Err(e) => bad.push(format!("share {}: {e}", hex::encode(name))),
                }
            }
            c.close().await;
            Ok::<_, PeerError>((out, bad))
        }
        .await;
        (h.node, res)
    }))
    .await;
    let mut listed: Vec<Listed> = Vec::new();
    for (host, res) in listings {
        match res {
            Ok((v, bad)) => {
                listed.extend(v);
                for e in bad {
                    report_err(&mut report, host, e);
                }
            }
            Err(e) => report.errors.push((host, e.to_string())),
        }
    }
    for l in &listed {
        *report.share_schemes.entry(l.header.params).or_default() += 1;
    }
    // Group shares by the packs they restore; fetch groups whose packs are missing here.
    let mut groups: BTreeMap<Vec<[u8; 32]>, Vec<Listed>> = BTreeMap::new();
    for l in listed {
        let ids: Vec<[u8; 32]> = l.header.packs.iter().map(|p| p.id.0).collect();
        groups.entry(ids).or_default().push(l);
    }
    // Groups are fetched several at a time (`opts.parallel`), like whole packs.
    let todo: Vec<(Vec<[u8; 32]>, Vec<Listed>)> = groups
        .into_iter()
        .filter(|(packs, _)| {
            !packs
                .iter()
                .all(|p| dest_of(repo_root, Kind::Pack, p).exists())
                && only.is_none_or(|o| packs.iter().any(|p| o.contains(p)))
        })
        .collect();
    let key = Arc::new(key.clone());
    let queue = Arc::new(Mutex::new(todo));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.parallel.max(1) {
        let (key, root, queue, opts, progress) = (
            key.clone(),
            repo_root.to_path_buf(),
            queue.clone(),
            opts.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let mut out = PullReport::default();
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((packs, shares)) = next else { break };
                fetch_group(&key, &root, &packs, shares, &opts, &progress, &mut out).await?;
            }
            Ok::<_, PeerError>(out)
        });
    }
    while let Some(r) = tasks.join_next().await {
        let part = r.map_err(|e| PeerError::Protocol(format!("pull task failed: {e}")))??;
        report.fetched += part.fetched;
        report.bytes += part.bytes;
        report.missing.extend(part.missing);
        report.errors.extend(part.errors);
    }
    Ok(report)
}

/// What a repair order asks of this node (from [`crate::wire::CoordMsg::RepairShare`]).
#[derive(Debug, Clone)]
pub struct RepairOrder {
    pub owner: NodeId,
    pub lost_index: u8,
    pub lost_name: [u8; 32],
    pub lost_len: u64,
    pub sources: Vec<crate::wire::RepairSource>,
    pub ticket: Vec<u8>,
}

impl RepairOrder {
    /// The order a [`crate::wire::CoordMsg::RepairShare`] carries; `None` for other messages.
    pub fn of(msg: crate::wire::CoordMsg) -> Option<RepairOrder> {
        match msg {
            crate::wire::CoordMsg::RepairShare {
                owner,
                lost_index,
                lost_name,
                lost_len,
                sources,
                ticket,
                ..
            } => Some(RepairOrder {
                owner,
                lost_index,
                lost_name,
                lost_len,
                sources,
                ticket,
            }),
            _ => None,
        }
    }
}

/// Repair without the owner: read `k` of the order's source shares with its ticket (each
/// checked against its name), rebuild the lost share — byte for byte the owner's — check it
/// against its expected name, and keep it for the owner in this node's hosted store.
/// No key is involved: shares are ciphertext.
pub async fn rebuild_for_owner(
    key: &SigningKey,
    store: &super::hosted::HostedStore,
    order: &RepairOrder,
    opts: &SyncOptions,
) -> Result<()> {
    let mut sources = order.sources.clone();
    sources.sort_by_key(|s| s.index);
    let mut decoder = Decoder::new();
    let mut last_err = None;
    for s in &sources {
        if decoder.is_ready() {
            break;
        }
        let Some(url) = s.addrs.iter().find(|u| u.starts_with("ws://")) else {
            continue;
        };
        let host = HostAddr {
            node: s.host,
            url: url.clone(),
        };
        let got = async {
            let mut c = connect(key, &host, opts).await?;
            let b = c
                .get_share_for(&order.owner, &s.name, s.len, &order.ticket)
                .await;
            c.close().await;
            b
        }
        .await;
        match got.and_then(|b| {
            Share::verified(ShareId(s.name), b).map_err(|e| PeerError::BadData {
                what: "share",
                name: e.to_string(),
            })
        }) {
            Ok(share) => {
                if let Err(e) = decoder.add_share(share) {
                    last_err = Some(e.to_string());
                }
            }
            Err(e) => last_err = Some(format!("{}: {e}", s.host)),
        }
    }
    if !decoder.is_ready() {
        return Err(PeerError::Protocol(format!(
            "repair of share {} for {}: fewer than k sources answered ({})",
            hex::encode(order.lost_name),
            order.owner,
            last_err.unwrap_or_default()
        )));
    }
    let rebuilt = decoder
        .rebuild(order.lost_index)
        .map_err(|e| PeerError::Protocol(format!("rebuilding share {}: {e}", order.lost_index)))?;
    if rebuilt.id().0 != order.lost_name || rebuilt.len() as u64 != order.lost_len {
        return Err(PeerError::BadData {
            what: "rebuilt share",
            name: hex::encode(order.lost_name),
        });
    }
    let refused = |(c, m): (super::proto::RefusalCode, String)| {
        PeerError::Refused(super::proto::Refusal {
            code: c,
            message: m,
        })
    };
    let name = order.lost_name;
    let owner = order.owner;
    let bytes = rebuilt.into_bytes();
    let res = (|| {
        let (have, complete) = store.put_begin(&owner, Kind::Share, &name, bytes.len() as u64)?;
        if !complete {
            store.put_data(&owner, Kind::Share, &name, have, &bytes[have as usize..])?;
            store.put_end(&owner, Kind::Share, &name)?;
        }
        Ok(())
    })()
    .map_err(refused);
    store.release(&owner, Kind::Share, &name);
    res
}

/// Fetch k shares of one group (data shares first, whichever hosts answer), decode, check
/// every pack against its name and move it in atomically.
async fn fetch_group(
    key: &SigningKey,
    repo_root: &Path,
    packs: &[[u8; 32]],
    mut shares: Vec<Listed>,
    opts: &SyncOptions,
    progress: &ProgressFn,
    report: &mut PullReport,
) -> Result<()> {
    // Data shares first (no decoding work when all k of them come back), one per host.
    shares.sort_by_key(|s| (!s.header.is_data(), s.header.index));
    let mut decoder = Decoder::new();
    let mut used_hosts = HashSet::new();
    for s in &shares {
        if decoder.is_ready() {
            break;
        }
        if !used_hosts.insert((s.host.node, s.header.index)) {
            continue;
        }
        let part = repo_root
            .join("peers")
            .join("partial")
            .join(format!("share-{}", hex::encode(s.name)));
        if let Some(d) = part.parent() {
            std::fs::create_dir_all(d).map_err(PeerError::io(d))?;
        }
        let got = async {
            let mut c = connect(key, &s.host, opts).await?;
            let b = c
                .download(Kind::Share, &s.name, s.size, &part, &mut |b| {
                    progress(super::sync::Progress::Bytes(b))
                })
                .await;
            c.close().await;
            b
        }
        .await;
        let _ = std::fs::remove_file(&part);
        let bytes = match got {
            Ok(b) => b,
            Err(e) => {
                report.errors.push((s.host.node, e.to_string()));
                continue;
            }
        };
        let share = match Share::verified(ShareId(s.name), bytes) {
            Ok(sh) => sh,
            Err(e) => {
                report.errors.push((s.host.node, e.to_string()));
                continue;
            }
        };
        if let Err(e) = decoder.add_share(share) {
            report.errors.push((s.host.node, e.to_string()));
        }
    }
    if !decoder.is_ready() {
        for p in packs {
            report.missing.push(format!("packs/{}", hex::encode(p)));
        }
        return Ok(());
    }
    let restored = decoder.finish().map_err(|e| {
        PeerError::Protocol(format!("decoding pack {}: {e}", hex::encode(packs[0])))
    })?;
    for p in restored {
        let dest = dest_of(repo_root, Kind::Pack, &p.id.0);
        let dir = dest.parent().expect("has a parent");
        std::fs::create_dir_all(dir).map_err(PeerError::io(dir))?;
        pluto_repo::fsutil::write_atomic(&repo_root.join("tmp"), &dest, &p.bytes, 0o644)?;
        report.fetched += 1;
        report.bytes += p.bytes.len() as u64;
    }
    Ok(())
}

fn report_err(report: &mut PullReport, node: NodeId, e: String) {
    report.errors.push((node, e));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("h{i}")).collect()
    }

    /// A 4/8 pack whose shares went to hosts 1..=8; `confirmed` of them are on their hosts.
    fn pack_on_eight(confirmed: usize) -> (PeerState, Placement) {
        let hosts: Vec<NodeId> = (1..=8u8).map(|i| NodeId([i; 32])).collect();
        let shares: Vec<SharePlacement> = (0..8u8)
            .map(|i| SharePlacement {
                name: [100 + i; 32],
                len: 10,
                host: Some(hosts[usize::from(i)]),
            })
            .collect();
        let mut st = PeerState::default();
        for s in shares.iter().take(confirmed) {
            st.hosts
                .entry(s.host.unwrap())
                .or_default()
                .stored
                .insert(s.key(), s.len);
        }
        let mut pl = Placement::default();
        pl.packs
            .insert([1; 32], PackPlacement { k: 4, n: 8, shares });
        (st, pl)
    }

    #[test]
    fn a_group_goes_on_record_once_k_shares_stand_naming_the_hosts_the_others_wait_for() {
        let (st, pl) = pack_on_eight(3);
        assert!(
            groups_placed(&st, &pl).is_empty(),
            "3 of 4 needed: nothing to rebuild from"
        );
        let (st, pl) = pack_on_eight(4);
        let g = groups_placed(&st, &pl);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].k, g[0].n), (4, 8));
        let hosts: Vec<NodeId> = g[0].shares.iter().map(|s| s.host).collect();
        assert_eq!(
            hosts,
            (1..=8u8).map(|i| NodeId([i; 32])).collect::<Vec<_>>()
        );
        // a share with no host yet (fewer hosts than n): not on record, the owner places it
        let (st, mut pl) = pack_on_eight(7);
        pl.packs.get_mut(&[1; 32]).unwrap().shares[7].host = None;
        assert!(groups_placed(&st, &pl).is_empty());
    }

    #[test]
    fn shares_of_a_pack_go_to_distinct_hosts_and_spread_the_load() {
        let hosts = ids(8);
        let mut load = HashMap::new();
        for _ in 0..3 {
            let mut slots = vec![None; 8];
            assign_hosts(&mut slots, &hosts, &HashSet::new(), &mut load);
            let set: HashSet<_> = slots.iter().flatten().collect();
            assert_eq!(set.len(), 8, "{slots:?}");
        }
        assert!(load.values().all(|&v| v == 3), "{load:?}");
    }

    #[test]
    fn a_failed_host_loses_its_slot_and_an_absent_one_keeps_it() {
        let mut slots: Vec<Option<String>> = ids(4).into_iter().map(Some).collect();
        let failed: HashSet<String> = ["h1".to_string()].into();
        // h3 is not in this push's host list (offline): it keeps its share; h1 failed.
        let hosts = vec!["h0".into(), "h1".into(), "h2".into(), "h9".into()];
        assign_hosts(&mut slots, &hosts, &failed, &mut HashMap::new());
        assert_eq!(slots[1].as_deref(), Some("h9"));
        assert_eq!(slots[3].as_deref(), Some("h3"));
    }

    #[test]
    fn too_few_hosts_leave_slots_empty_rather_than_doubling_up() {
        let mut slots = vec![None; 8];
        assign_hosts(&mut slots, &ids(5), &HashSet::new(), &mut HashMap::new());
        assert_eq!(slots.iter().flatten().count(), 5);
        let set: HashSet<_> = slots.iter().flatten().collect();
        assert_eq!(set.len(), 5);
    }
}
