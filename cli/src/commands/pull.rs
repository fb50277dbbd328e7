//! `pluto pull`: fetch config, index files and snapshots back from the hosts, then packs.

use super::push::{hosts_for, progress_fn, runtime, PeerArgs};
use crate::{exit, Global};
use anyhow::{bail, Result};
use pluto_netsync::node::hosts;
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

/// What a pull brought back, from how many hosts, and what it could not.
pub struct Pulled {
    pub hosts: usize,
    pub fetched: usize,
    pub bytes: u64,
    pub missing: Vec<String>,
    pub errors: Vec<(pluto_netsync::wire::NodeId, String)>,
    /// The placement scheme this repository had, taken from its shares on the hosts (a
    /// repository recovered from its words).
    pub scheme_adopted: Option<pluto_netsync::erasure::Scheme>,
}

impl Pulled {
    /// Not one host answered and nothing came: nothing is known of what they hold, so
    /// nothing can be called complete (a recovery that "succeeds" with no snapshot is the
    /// worst answer).
    pub fn reached_none(&self) -> bool {
        let failed: std::collections::HashSet<_> = self.errors.iter().map(|(h, _)| *h).collect();
        self.fetched == 0 && failed.len() >= self.hosts
    }

    pub fn complete(&self) -> bool {
        !self.reached_none() && self.missing.is_empty()
    }

    /// What went wrong, a sentence each (hosts that failed, files no host gave back).
    pub fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .errors
            .iter()
            .map(|(h, e)| format!("host {}: {e}", &h.to_hex()[..16]))
            .collect();
        if self.reached_none() {
            v.push(format!(
                "none of the {} host(s) could be reached; nothing was pulled (pull again later)",
                self.hosts
            ));
        }
        if !self.missing.is_empty() {
            v.push(format!(
                "{} file(s) could not be fetched from any host: {}",
                self.missing.len(),
                self.missing
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        v
    }
}

/// Config, index files and snapshots, then (unless `no_packs`) packs and the shares of
/// packs placed as erasure-coded shares, from this owner's hosts. Holds the repository
/// exclusively meanwhile. `pluto pull` and the page's recovery both run this.
pub async fn pull_everything(
    root: &std::path::Path,
    peers: &PeerArgs,
    no_packs: bool,
    parallel: usize,
    progress: Arc<Progress>,
) -> Result<Pulled> {
    let repo = super::open_repo(
        &crate::Global {
            repo: Some(root.to_path_buf()),
            quiet: true,
            verbose: false,
        },
        LockMode::Exclusive,
    )?;
    let key = repo.keys().node.clone();
    let (hosts, coordinator) = hosts_for(root, &key, peers, "pull", None).await?;
    if hosts.is_empty() {
        bail!("no hosts: pass --coordinator URL (or --host NODEID@ws://HOST:PORT)");
    }
    let opts = SyncOptions {
        parallel: parallel.max(1),
        relay: coordinator.clone(),
        ..Default::default()
    };
    let sel = if no_packs {
        PackSelection::None
    } else {
        PackSelection::All
    };
    let pf = progress_fn(progress);
    let mut rep = sync::pull(&key, root, &hosts, sel, &opts, pf.clone()).await?;
    let mut scheme_adopted = None;
    if !no_packs {
        // Packs placed as erasure-coded shares: any k hosts' shares of each bring it back.
        let more = shares::pull_shares(&key, root, &hosts, None, &opts, pf).await?;
        rep.fetched += more.fetched;
        rep.bytes += more.bytes;
        rep.missing.extend(more.missing);
        rep.errors.extend(more.errors);
        scheme_adopted = hosts::adopt_scheme_of_shares(root, &more.share_schemes)?;
        // Packs the index names that no host gave back — their shares may sit on hosts
        // away now, and no listing named them: the snapshots that need them cannot be
        // restored yet, and saying "pulled" would end a recovery too soon.
        let said: std::collections::HashSet<String> = rep.missing.iter().cloned().collect();
        for p in pluto_netsync::node::ops::packs_missing_here(&repo)? {
            let name = format!("packs/{}", hex::encode(p));
            if !said.contains(&name) {
                rep.missing.push(name);
            }
        }
    }
    drop(repo);
    if let Some(c) = coordinator {
        let _ = c.close().await;
    }
    // Each phase (files, then shares) tries every host: one line per host is enough.
    let mut seen = std::collections::HashSet::new();
    rep.errors.retain(|(h, _)| seen.insert(*h));
    Ok(Pulled {
        hosts: hosts.len(),
        fetched: rep.fetched,
        bytes: rep.bytes,
        missing: rep.missing,
        errors: rep.errors,
        scheme_adopted,
    })
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    // Found (and checked) before anything is asked of the hosts.
    let root = super::open_repo(g, LockMode::Shared)?.root().to_path_buf();
    let progress = Arc::new(Progress::default());
    let bar = crate::progress::Bar::start(progress.clone(), "pull", g.quiet);
    let rep = runtime()?.block_on(pull_everything(
        &root, &a.peers, a.no_packs, a.parallel, progress,
    ))?;
    drop(bar);
    for (h, e) in &rep.errors {
        eprintln!("pluto: host {}: {e}", &h.to_hex()[..16]);
    }
    if !g.quiet {
        outln!(
            "Pulled {} file(s), {} bytes, from {} host(s).",
            rep.fetched,
            rep.bytes,
            rep.hosts
        );
        if let Some(s) = rep.scheme_adopted {
            outln!("Placement {s}, as the shares on the hosts were made (remembered in .pluto/peers/scheme).");
        }
    }
    if rep.reached_none() {
        eprintln!(
            "pluto: none of the {} host(s) could be reached; nothing was pulled (pull again later)",
            rep.hosts
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
