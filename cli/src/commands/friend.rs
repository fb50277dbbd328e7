//! `pluto friend invite | add CODE`: pair with someone you know, through the coordinator.
//! Friends are matched before strangers (and only friends with `--mode friends-only`).

use super::push::runtime;
use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_netsync::coord_client::ClientError;
use pluto_netsync::node::hosts::{connect_coordinator, coordinator_url};
use pluto_netsync::wire::RefusalCode;
use pluto_repo::repository::LockMode;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto friend invite                 # prints a short code; give it to your friend
  pluto friend add K7QD-2MWX          # on the friend's machine: the two nodes are now friends")]
pub struct Args {
    /// The coordinator (mqtt://HOST:PORT); remembered in the repository after first use.
    #[arg(long, env = "PLUTO_COORDINATOR", value_name = "URL", global = true)]
    coordinator: Option<String>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Make a one-time code that pairs whoever adds it with this node.
    Invite,
    /// Pair with the node that made CODE.
    Add { code: String },
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let root = repo.root().to_path_buf();
    let key = repo.keys().node.clone();
    let Some(url) = coordinator_url(&root, &a.coordinator)? else {
        bail!("no coordinator: pass --coordinator mqtt://HOST:PORT (it is remembered)");
    };
    let rt = runtime()?;
    rt.block_on(async {
        let (c, _ev) = connect_coordinator(&root, &url, &key, Some("friend")).await?;
        let res = match &a.action {
            Action::Invite => c.friend_invite().await.map(|code| {
                outln!("{code}");
                if !g.quiet {
                    eprintln!("Give this code to your friend: `pluto friend add {code}`.");
                }
            }),
            Action::Add { code } => c.friend_add(code.trim()).await.map(|friend| {
                outln!("Now friends with node {friend}.");
            }),
        };
        let _ = c.close().await;
        match res {
            Err(ClientError::Refused(r)) if r.code == RefusalCode::UnknownNode => bail!(
                "the coordinator does not know this node yet: run `pluto serve` once (it announces the node)"
            ),
            r => r.context("the coordinator refused")?,
        }
        Ok(exit::OK)
    })
}
