//! `pluto leave`: this node leaves the network for good. The coordinator excludes it, tells
//! the owners it hosted for to move their copies, and has its shares rebuilt elsewhere at
//! once — rather than after the grace period that plain absence gets.

use super::push::runtime;
use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_netsync::node::hosts::{connect_coordinator, coordinator_url};
use pluto_repo::repository::LockMode;

#[derive(clap::Args)]
#[command(after_help = "Example:
  pluto leave --yes          # before wiping this disk: others' data is moved elsewhere now")]
pub struct Args {
    /// The coordinator (mqtt://HOST:PORT); remembered in the repository after first use.
    #[arg(long, env = "PLUTO_COORDINATOR", value_name = "URL")]
    coordinator: Option<String>,
    /// Really leave: this node will get no new data and its peers stop counting on it.
    #[arg(long)]
    yes: bool,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    if !a.yes {
        bail!("leaving cannot be undone with this node's identity: pass --yes to leave");
    }
    let repo = super::open_repo(g, LockMode::Shared)?;
    let root = repo.root().to_path_buf();
    let key = repo.keys().node.clone();
    let Some(url) = coordinator_url(&root, &a.coordinator)? else {
        bail!("no coordinator: pass --coordinator mqtt://HOST:PORT");
    };
    let rt = runtime()?;
    rt.block_on(async {
        let (c, _ev) = connect_coordinator(&root, &url, &key, Some("leave")).await?;
        let r = c.leave().await;
        let _ = c.close().await;
        r.context("the coordinator refused")
    })?;
    if !g.quiet {
        outln!(
            "Left the network: the owners this node hosted for are moving their data elsewhere."
        );
    }
    Ok(exit::OK)
}
