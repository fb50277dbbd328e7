//! `pluto push`: replicate packs, index files, snapshots and config to k hosts. A shell over
//! `pluto_netsync::node` (host choice, placement, the push itself), as `serve` is; also the
//! pieces the other peer commands share: where hosts come from, progress, the runtime.

use crate::{exit, Global};
use anyhow::Result;
use pluto_netsync::erasure::Scheme;
use pluto_netsync::node::hosts::{chosen_scheme, hosts_to_ask, owner_hosts, HostSources};
use pluto_netsync::node::ops::{push_own, PushOutcome};
use pluto_netsync::peer::client::HostAddr;
use pluto_netsync::peer::sync::{Progress as PeerProgress, ProgressFn, SyncOptions};
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

impl PeerArgs {
    pub fn sources(&self) -> HostSources {
        HostSources {
            coordinator: self.coordinator.clone(),
            hosts: self.hosts.clone(),
            coordinator_wait: std::time::Duration::from_secs(self.coordinator_wait),
        }
    }
}

/// The hosts of this owner (see [`owner_hosts`]), what the user should know said on stderr.
pub async fn hosts_for(
    root: &Path,
    key: &ed25519_dalek::SigningKey,
    a: &PeerArgs,
    suffix: &str,
    ask_copies: Option<usize>,
) -> Result<(
    Vec<HostAddr>,
    Option<pluto_netsync::coord_client::CoordClient>,
)> {
    let say = |s: String| eprintln!("pluto: {s}");
    Ok(owner_hosts(root, key, &a.sources(), suffix, ask_copies, &say).await?)
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

/// The end of a push: what each host refused, the summary line, what is not placed, and
/// the exit code (an error while anything is short of its placement).
fn report_push(g: &Global, out: &PushOutcome) -> u8 {
    let rep = &out.report;
    for (h, e) in &rep.errors {
        eprintln!("pluto: host {}: {e}", &h.to_hex()[..16]);
    }
    for n in &out.notes {
        eprintln!("pluto: {n}");
    }
    if !g.quiet {
        outln!(
            "Pushed {} file(s), {} bytes, {}to {} host(s); {} already there.",
            rep.uploaded,
            rep.bytes,
            out.placed_as,
            out.hosts_reached,
            rep.already
        );
        let (relayed, total) = rep.relayed_share();
        if total > 0 {
            let through = rep.paths.values().filter(|p| p.relayed > 0).count();
            let direct = rep
                .paths
                .values()
                .filter(|p| p.direct + p.punched > 0 && p.relayed == 0)
                .count();
            let punched = rep.paths.values().filter(|p| p.punched > 0).count();
            outln!(
                "Paths: {direct} host(s) direct, {through} through the relay; {relayed} of {total} bytes through the relay{}.",
                if punched > 0 {
                    format!("; {punched} host(s) reached by hole punching")
                } else {
                    String::new()
                }
            );
        }
    }
    if let Some(short) = out.not_placed() {
        eprintln!("pluto: {short}; push again later");
        return exit::ERROR;
    }
    exit::OK
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    // Shared, and only to find the repository and its key: the push takes the repository
    // (shared) and the push lock itself while it runs, beside a running node.
    let (root, key) = {
        let repo = super::open_repo(g, LockMode::Shared)?;
        (repo.root().to_path_buf(), repo.keys().node.clone())
    };
    let rt = runtime()?;
    let scheme = chosen_scheme(&root, a.scheme, a.copies)?;
    let (hosts, coordinator) = rt.block_on(hosts_for(
        &root,
        &key,
        &a.peers,
        "push",
        Some(hosts_to_ask(&scheme)),
    ))?;
    let progress = Arc::new(Progress::default());
    let bar = crate::progress::Bar::start(progress.clone(), "push", g.quiet);
    // With a coordinator, hosts behind NATs can be punched through from a port of this
    // push's own (the node's listener belongs to the node).
    let punch_from = match &coordinator {
        Some(_) => rt.block_on(async { pluto_netsync::peer::punch::PunchPort::bind_own().ok() }),
        None => None,
    };
    let opts = SyncOptions {
        parallel: a.parallel.max(1),
        relay: coordinator.clone(),
        punch_from,
        ..Default::default()
    };
    let waiting = || {
        eprintln!("pluto: another push of this repository is running (the node's?); waiting for it to finish")
    };
    let out = rt.block_on(push_own(
        &key,
        &root,
        hosts,
        &scheme,
        coordinator.as_ref(),
        &opts,
        progress_fn(progress),
        &waiting,
    ));
    drop(bar);
    if let Some(c) = coordinator {
        let _ = rt.block_on(c.close());
    }
    let out = out?;
    if let Some((k, n)) = out.shares {
        if out.hosts_tried < usize::from(n) {
            eprintln!(
                "pluto: {} host(s) for a {k}/{n} scheme: shares without a host wait for the next push",
                out.hosts_tried
            );
        }
    }
    Ok(report_push(g, &out))
}
