//! One-shot operations of an owner, shared by the node and the CLI: take a snapshot of the
//! tracked folder, push with the repository's placement. Each opens (and locks) the
//! repository only for as long as it runs, so a node never keeps other commands out.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use pluto_repo::repository::LockMode;
use pluto_repo::Repository;

use super::hosts::{placement, Placement};
use super::{NodeError, Result};
use crate::coord_client::CoordClient;
use crate::erasure::Scheme;
use crate::peer::client::HostAddr;
use crate::peer::shares;
use crate::peer::sync::{self, PeerState, ProgressFn, PushReport, SyncOptions};
use crate::wire::NodeId;

/// The directory a snapshot records: the one given, else the one recorded at init, else
/// the directory holding `.pluto`, else the current one.
///
/// A `.pluto` folder that was moved or copied with its folder still names the old place:
/// that is refused with what to do (`pluto retrack`), rather than failing on a path that is
/// gone, or quietly backing up the original from inside the copy.
pub fn tracked_dir(repo: &Repository, given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    let holder = repo
        .root()
        .file_name()
        .is_some_and(|n| n == pluto_repo::repository::REPO_DIR)
        .then(|| repo.root().parent().map(Path::to_path_buf))
        .flatten();
    if let Some(w) = repo.worktree() {
        if let Some(h) = &holder {
            check_not_moved(repo, &w, h)?;
        }
        return Ok(w);
    }
    if let Some(p) = holder {
        return Ok(p);
    }
    std::env::current_dir().map_err(|source| NodeError::Io {
        path: ".".into(),
        source,
    })
}

/// `w` is the recorded tracked folder, `holder` the folder `.pluto` is in now.
fn check_not_moved(repo: &Repository, w: &Path, holder: &Path) -> Result<()> {
    let here = std::fs::canonicalize(holder).unwrap_or_else(|_| holder.to_path_buf());
    match std::fs::canonicalize(w) {
        Err(_) => Err(NodeError::Invalid(format!(
            "this repository tracks {}, which no longer exists; its .pluto is now in {}. \
             If the folder was moved or renamed, run `pluto retrack` to track {} (snapshots of \
             the old path stay readable by id); or pass the directory: `pluto snapshot DIR`",
            w.display(),
            here.display(),
            here.display()
        ))),
        Ok(cw) if cw != here => {
            // The original folder still has its own .pluto with the same config: this one
            // is a copy. (A repository kept elsewhere on purpose, with `init --repo`, is not
            // named .pluto inside another folder, or has no twin.)
            let twin = cw.join(pluto_repo::repository::REPO_DIR).join("config");
            let ours = repo.root().join("config");
            if let (Ok(a), Ok(b)) = (std::fs::read(&twin), std::fs::read(&ours)) {
                if a == b {
                    return Err(NodeError::Invalid(format!(
                        "this .pluto (in {}) is a copy of the repository of {}, which it still \
                         tracks: a snapshot here would back up {}. Run `pluto retrack` to track \
                         {} with this copy instead, or work in {}",
                        here.display(),
                        cw.display(),
                        cw.display(),
                        here.display(),
                        cw.display()
                    )));
                }
            }
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// What a snapshot taken by the node recorded.
#[derive(Debug, Clone)]
pub struct SnapshotTaken {
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    pub bytes_added: u64,
    /// Paths that could not be read, or changed while read.
    pub partial: usize,
    pub warnings: Vec<String>,
}

/// Snapshot the tracked folder as `pluto snapshot` does with no options, holding the
/// repository (shared) only meanwhile. Blocking: run it off the async threads.
pub fn snapshot_tracked(
    root: &Path,
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> Result<SnapshotTaken> {
    let repo = Repository::open(root, LockMode::Shared)?;
    repo.clean_tmp_older_than(std::time::Duration::from_secs(6 * 3600));
    let dir = tracked_dir(&repo, None)?;
    let out = pluto_repo::archive::create_snapshot(
        &repo,
        &dir,
        &pluto_repo::archive::SnapshotOptions {
            message: "scheduled by the node".into(),
            cancel,
            ..Default::default()
        },
    )?;
    let s = &out.snapshot;
    Ok(SnapshotTaken {
        id: out.id.clone(),
        files: s.stats.files,
        bytes: s.stats.bytes,
        bytes_added: s.stats.bytes_added,
        partial: s.stats.unreadable.len() + s.stats.changed_during_read.len(),
        warnings: out.warnings,
    })
}

/// The time (unix seconds) of the newest snapshot in the repository, if any. Reads the
/// snapshot files only; no lock needed beyond the shared one taken here.
pub fn latest_snapshot_unix(root: &Path) -> Result<Option<u64>> {
    let repo = Repository::open(root, LockMode::Shared)?;
    let all = repo.snapshots()?;
    Ok(all
        .iter()
        .map(|s| (s.snapshot.time_ns.max(0) / 1_000_000_000) as u64)
        .max())
}

/// The push lock (`.pluto/push.lock`): one push of this repository's data at a time, the
/// node's or a `pluto push` beside it — two uploads of the same file to the same host
/// would refuse each other ("another connection is uploading this file").
pub struct PushLock(#[allow(dead_code)] std::fs::File);

impl PushLock {
    /// Take the lock, waiting for a push in progress to finish. `waiting` is called once
    /// if it has to wait.
    pub async fn take(root: &Path, waiting: &(dyn Fn() + Send + Sync)) -> Result<PushLock> {
        let path = root.join("push.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| NodeError::Io {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(PushLock(f));
        }
        waiting();
        tokio::task::spawn_blocking(move || {
            // SAFETY: as above; blocks this worker thread only.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                Ok(PushLock(f))
            } else {
                Err(NodeError::Io {
                    path,
                    source: std::io::Error::last_os_error(),
                })
            }
        })
        .await
        .map_err(|e| NodeError::Invalid(format!("push lock: {e}")))?
    }
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    pub report: PushReport,
    /// "as 4/8 shares " or "" (full copies), as the summary line says it.
    pub placed_as: String,
    /// Hosts that took part and answered.
    pub hosts_reached: usize,
    /// Hosts tried.
    pub hosts_tried: usize,
    /// Copies wanted (full-copy placement), or 0 for shares.
    pub copies: usize,
    /// Hosts that hold this node's data now and did not before (replacements).
    pub new_hosts: Vec<NodeId>,
    /// The (k, n) of an erasure-coded placement.
    pub shares: Option<(u8, u8)>,
    /// What the user should know besides (the coordinator did not record the shares).
    pub notes: Vec<String>,
}

impl PushOutcome {
    /// What is not placed, in a sentence, or `None` when everything is.
    pub fn not_placed(&self) -> Option<String> {
        let n = self.report.under_replicated;
        if n == 0 {
            return None;
        }
        Some(match self.shares {
            Some(_) => format!("{n} pack(s) or file(s) are not fully placed yet"),
            None => format!("{n} file(s) have fewer than {} copies", self.copies),
        })
    }
}

fn holders(root: &Path) -> Result<std::collections::HashSet<NodeId>> {
    let st = PeerState::load(root)?;
    Ok(st
        .hosts
        .iter()
        .filter(|(_, r)| !r.failed && !r.stored.is_empty())
        .map(|(id, _)| *id)
        .collect())
}

/// Push this node's data to `hosts` with the repository's placement (`scheme`, chosen by
/// [`super::hosts::chosen_scheme`]): shares on n hosts, or k full copies — the hosts
/// already holding copies first, and when some host does not answer, the next idle one in
/// its place. Hosts this node stopped counting are passed over. Holds the push lock and
/// the repository (shared) while it runs.
#[allow(clippy::too_many_arguments)]
pub async fn push_own(
    key: &SigningKey,
    root: &Path,
    hosts: Vec<HostAddr>,
    scheme: &Option<Scheme>,
    coordinator: Option<&CoordClient>,
    opts: &SyncOptions,
    progress: ProgressFn,
    waiting: &(dyn Fn() + Send + Sync),
) -> Result<PushOutcome> {
    let _push = PushLock::take(root, waiting).await?;
    let _repo = Repository::open(root, LockMode::Shared)?;
    let hosts = super::hosts::without_failed(root, hosts)?;
    if hosts.is_empty() {
        return Err(NodeError::NoHosts);
    }
    let before = holders(root)?;
    let mut out = PushOutcome::default();
    match placement(root, scheme, hosts.len())? {
        Placement::Shares(params) => {
            out.report = shares::push_shares(key, root, &hosts, params, opts, progress).await?;
            out.hosts_tried = hosts.len();
            out.placed_as = format!("as {}/{} shares ", params.k(), params.n());
            out.shares = Some((params.k(), params.n()));
            if let Some(c) = coordinator {
                // The coordinator learns where the shares are, to have a lost one rebuilt
                // while this node is away.
                let groups = shares::placed_groups(root)?;
                if !groups.is_empty() {
                    if let Err(e) = c.record_shares(groups).await {
                        out.notes
                            .push(format!("the coordinator did not record the shares: {e}"));
                    }
                }
            }
        }
        Placement::Copies(k) => {
            out.copies = k;
            // the hosts already holding copies first, then the others in the order given
            let (mut queue, rest): (Vec<HostAddr>, Vec<HostAddr>) =
                hosts.into_iter().partition(|h| before.contains(&h.node));
            queue.extend(rest);
            let mut queue = std::collections::VecDeque::from(queue);
            let mut round: Vec<HostAddr> =
                (0..k.max(1)).filter_map(|_| queue.pop_front()).collect();
            loop {
                out.hosts_tried += round.len();
                let rep = sync::push(key, root, &round, k, opts, progress.clone()).await?;
                let down: Vec<NodeId> = rep.errors.iter().map(|(h, _)| *h).collect();
                out.report.uploaded += rep.uploaded;
                out.report.bytes += rep.bytes;
                out.report.already += rep.already;
                out.report.errors.extend(rep.errors);
                out.report.paths.extend(rep.paths);
                out.report.under_replicated = rep.under_replicated;
                // A host that did not answer leaves its copies to the next idle host.
                if rep.under_replicated == 0 || down.is_empty() || queue.is_empty() {
                    break;
                }
                round = (0..down.len()).filter_map(|_| queue.pop_front()).collect();
            }
        }
    }
    let failed: std::collections::HashSet<NodeId> =
        out.report.errors.iter().map(|(h, _)| *h).collect();
    out.hosts_reached = out.hosts_tried.saturating_sub(failed.len());
    let after = holders(root)?;
    out.new_hosts = after.difference(&before).copied().collect();
    Ok(out)
}

/// Packs the index names that are not in this repository's pack store: a recovery that
/// could not reach every host, or a disk that lost files.
pub fn packs_missing_here(repo: &Repository) -> Result<Vec<[u8; 32]>> {
    let store = repo.store();
    Ok(repo
        .index()?
        .packs()
        .filter(|(p, _)| !store.path_of(p).exists())
        .map(|(p, _)| p.0)
        .collect())
}

/// What [`fetch_missing_packs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedBack {
    /// Packs the index named that were missing here.
    pub missing: usize,
    /// Of those, brought back (checked against their names).
    pub fetched: usize,
    /// Still missing: no `k` shares and no whole copy could be had from the hosts now.
    pub still_missing: Vec<[u8; 32]>,
}

/// Fetch back from `hosts` the packs the index names and this repository lacks: from any
/// `k` of their shares, else whole. A node runs this before it pushes, so that a
/// repository recovered while some hosts were away — whose snapshots need packs it does
/// not hold — gets them as soon as the hosts are back, and then places them again (until
/// then those packs' shares are on record nowhere: not challenged, not repaired). Holds the
/// repository (shared) meanwhile; `None` when nothing is missing.
pub async fn fetch_missing_packs(
    key: &SigningKey,
    root: &Path,
    hosts: &[HostAddr],
    opts: &SyncOptions,
) -> Result<Option<FetchedBack>> {
    let repo = Repository::open(root, LockMode::Shared)?;
    // (the repository stays open, and shared-locked, until the packs are in)
    let (_repo, missing) = tokio::task::spawn_blocking(move || {
        let missing = packs_missing_here(&repo);
        (repo, missing)
    })
    .await
    .map_err(|e| NodeError::Invalid(format!("listing missing packs: {e}")))?;
    let missing = missing?;
    if missing.is_empty() {
        return Ok(None);
    }
    let here = |p: &[u8; 32]| sync::dest_of(root, crate::peer::proto::Kind::Pack, p).exists();
    // Shares the placement names belong to packs held here: their headers need no reading.
    let known: std::collections::HashSet<[u8; 32]> = sync::PeerStore::open(root)
        .read_placement()?
        .packs
        .values()
        .flat_map(|p| p.shares.iter().map(|s| s.name))
        .collect();
    let wanted: std::collections::HashSet<[u8; 32]> = missing.iter().copied().collect();
    let got = shares::packs_from_shares(
        key,
        root,
        hosts,
        Some(&wanted),
        &known,
        opts,
        sync::no_progress(),
    )
    .await?;
    // (a repository pulled with --no-packs learns its scheme here)
    super::hosts::adopt_scheme_of_shares(root, &got.share_schemes)?;
    let left: Vec<[u8; 32]> = missing.iter().filter(|p| !here(p)).copied().collect();
    if !left.is_empty() {
        // placed as whole copies (or by an older version)
        sync::pull(
            key,
            root,
            hosts,
            sync::PackSelection::PacksOnly(left.clone()),
            opts,
            sync::no_progress(),
        )
        .await?;
    }
    let still_missing: Vec<[u8; 32]> = left.into_iter().filter(|p| !here(p)).collect();
    Ok(Some(FetchedBack {
        missing: missing.len(),
        fetched: missing.len() - still_missing.len(),
        still_missing,
    }))
}

/// Forget the snapshots `policy` does not keep (as `pluto forget --keep-…`; the data only
/// they used stays until `pluto prune`). Needs the repository to itself: when another
/// command holds it, nothing is done (`None`) and the next scheduled snapshot tries again.
/// Returns (removed, kept).
pub fn apply_retention(
    root: &Path,
    policy: &pluto_repo::forget::Policy,
) -> Result<Option<(usize, usize)>> {
    use chrono::{Local, TimeZone};
    let repo = match Repository::open(root, LockMode::Exclusive) {
        Err(pluto_repo::Error::Locked(_)) => return Ok(None),
        r => r?,
    };
    let (all, _damaged) = repo.snapshots_and_damaged()?;
    let local = |ns: i64| {
        Local
            .timestamp_opt(ns.div_euclid(1_000_000_000), 0)
            .single()
            .map(|t| t.naive_local())
            .unwrap_or_default()
    };
    let decisions =
        pluto_repo::forget::plan(&pluto_repo::forget::candidates(&all, local), policy, false)?;
    let mut removed = 0;
    for d in decisions.iter().filter(|d| !d.keep) {
        repo.remove_snapshot(&d.id)?;
        removed += 1;
    }
    Ok(Some((removed, decisions.len() - removed)))
}

/// Hosts that must have passed a challenge this recently for "all verified" (seconds).
pub const VERIFIED_WITHIN: u64 = 24 * 3600;

/// The protection verdict on the newest snapshot of the repository at `root`, from the
/// local records only (works offline): its snapshot file, the index files, the config and
/// every pack must come back from the hosts that count. `pluto status` and the node's
/// `ProtectionChanged` events both say this.
pub fn protection(root: &Path) -> Result<crate::verdict::Protection> {
    use crate::peer::proto::Kind;
    use crate::peer::sync::{ItemKey, PeerStore};
    use crate::verdict::{self, SnapshotRef};
    let repo = Repository::open(root, LockMode::Shared)?;
    let store = PeerStore::open(root);
    let state = store.read()?;
    let placement = store.read_placement()?;
    let items = sync::local_items(root)?;
    let latest = repo.snapshots()?.into_iter().last().and_then(|s| {
        let mut id = [0u8; 32];
        hex::decode_to_slice(&s.id, &mut id).ok()?;
        Some(SnapshotRef {
            id,
            time_unix: u64::try_from(s.snapshot.time_ns / 1_000_000_000).unwrap_or(0),
        })
    });
    // Packs the index names that are missing here count too (a recovery that could not
    // reach every host): until fetched back and placed again, they are not protected.
    let missing_here: Vec<ItemKey> = packs_missing_here(&repo)?
        .into_iter()
        .map(|p| ItemKey::new(Kind::Pack, p))
        .collect();
    drop(repo);
    let mut files: Vec<ItemKey> = items
        .iter()
        .filter(|i| i.kind != Kind::Snapshot || latest.is_some_and(|l| l.id == i.name))
        .map(|i| i.key())
        .collect();
    files.extend(missing_here.iter().copied());
    // Whole files should be on as many hosts as the placement survives losses of:
    // n − k + 1 with shares, k with copies (2 until a scheme is chosen).
    let whole_copies_wanted = match super::hosts::scheme_of(root, None)? {
        Some(s) => match s.params() {
            Some(p) => usize::from(p.n() - p.k()) + 1,
            None => usize::from(s.n()),
        },
        None => placement
            .packs
            .values()
            .next()
            .map_or(2, |p| usize::from(p.n - p.k) + 1),
    };
    Ok(verdict::verdict(&verdict::Inputs {
        state: &state,
        placement: &placement,
        latest,
        files: &files,
        missing_here: &missing_here,
        whole_copies_wanted,
        verified_within: VERIFIED_WITHIN,
        now: sync::now_unix(),
    }))
}
