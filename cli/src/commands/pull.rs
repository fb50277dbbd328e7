//! `pluto pull`: fetch config, index files and snapshots back from the hosts, then packs.

use super::push::{hosts_for, progress_fn, runtime, PeerArgs};
use crate::{exit, Global};
use anyhow::{bail, Result};
use pluto_netsync::peer::shares;
use pluto_netsync::peer::sync::{self, PackSelection, SyncOptions};
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use std::sync::Arc;

/// Bring the repository back from its hosts (after `pluto init --recover` on a new machine).
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto init --recover --repo ~/.pluto-new && pluto pull --repo ~/.pluto-new --coordinator mqtt://coord.example:1883
  pluto pull --no-packs        # only index and snapshots; `checkout` fetches nothing by itself yet")]
pub struct Args {
    #[command(flatten)]
    peers: PeerArgs,
    /// Fetch config, index files and snapshots, but no packs.
    #[arg(long)]
    no_packs: bool,
    /// Files in flight.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Exclusive)?;
    let root = repo.root().to_path_buf();
    let key = repo.keys().node.clone();
    let rt = runtime()?;
    let (hosts, coordinator) = rt.block_on(hosts_for(&root, &key, &a.peers, "pull", None))?;
    if hosts.is_empty() {
        bail!("no hosts: pass --coordinator URL (or --host NODEID@ws://HOST:PORT)");
    }
    let progress = Arc::new(Progress::default());
    let bar = crate::progress::Bar::start(progress.clone(), "pull", g.quiet);
    let opts = SyncOptions {
        parallel: a.parallel.max(1),
        relay: coordinator.clone(),
        ..Default::default()
    };
    let sel = if a.no_packs {
        PackSelection::None
    } else {
        PackSelection::All
    };
    let pf = progress_fn(progress);
    let mut rep = rt.block_on(sync::pull(&key, &root, &hosts, sel, &opts, pf.clone()))?;
    if !a.no_packs {
        // Packs placed as erasure-coded shares: any k hosts' shares of each bring it back.
        let more = rt.block_on(shares::pull_shares(&key, &root, &hosts, None, &opts, pf))?;
        rep.fetched += more.fetched;
        rep.bytes += more.bytes;
        rep.missing.extend(more.missing);
        rep.errors.extend(more.errors);
    }
    drop(bar);
    drop(repo);
    if let Some(c) = coordinator {
        let _ = rt.block_on(c.close());
    }
    for (h, e) in &rep.errors {
        eprintln!("pluto: host {}: {e}", &h.to_hex()[..16]);
    }
    if !g.quiet {
        outln!(
            "Pulled {} file(s), {} bytes, from {} host(s).",
            rep.fetched,
            rep.bytes,
            hosts.len()
        );
    }
    // Not one host answered: nothing is known of what they hold, so nothing can be called
    // complete (a recovery that "succeeds" with no snapshot is the worst answer).
    let failed: std::collections::HashSet<_> = rep.errors.iter().map(|(h, _)| *h).collect();
    if rep.fetched == 0 && failed.len() >= hosts.len() {
        eprintln!(
            "pluto: none of the {} host(s) could be reached; nothing was pulled (pull again later)",
            hosts.len()
        );
        return Ok(exit::ERROR);
    }
    if !rep.missing.is_empty() {
        eprintln!(
            "pluto: {} file(s) could not be fetched from any host:",
            rep.missing.len()
        );
        for m in rep.missing.iter().take(20) {
            eprintln!("  {m}");
        }
        return Ok(exit::DAMAGED);
    }
    Ok(exit::OK)
}
