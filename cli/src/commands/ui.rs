//! `pluto ui`: the node with a page on 127.0.0.1 (see `crate::web`). Without a repository the
//! page starts with the first run (new words, or "I have my words").

use super::push::runtime;
use crate::{exit, Global};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto ui                       # open the link it prints; first run if there is no repository
  pluto --repo ~/backup ui --listen 127.0.0.1:9800

The page is served on 127.0.0.1 only; the link it prints works once and sets a cookie for
that browser. --allow-remote (with a --listen address other machines reach) is for a
trusted network: anyone with the link can then see your files.")]
pub struct Args {
    /// Address of the page.
    #[arg(long, default_value = "127.0.0.1:9747")]
    listen: std::net::SocketAddr,
    /// Allow a --listen address other machines can reach.
    #[arg(long)]
    allow_remote: bool,
    /// Address of the node's peer port (default: the settings' 0.0.0.0:7447).
    #[arg(long, value_name = "ADDR")]
    peer_listen: Option<String>,
    /// Do not ask the home router to forward the peer port (UPnP-IGD).
    #[arg(long)]
    no_port_mapping: bool,
}

/// Where the page keeps the repository when none is named or found: the usual place for
/// an application's data ($XDG_DATA_HOME/pluto, else ~/.local/share/pluto).
fn default_home() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("pluto"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: pass --repo PATH")?;
    Ok(PathBuf::from(home).join(".local/share/pluto"))
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = match &g.repo {
        Some(r) if r.is_absolute() => r.clone(),
        Some(r) => cwd.join(r),
        None => match pluto_repo::repository::discover(None, &cwd) {
            Ok(r) => r,
            Err(_) => default_home()?.join("repository"),
        },
    };
    let opts = crate::web::Options {
        root,
        listen: a.listen,
        allow_remote: a.allow_remote,
        port_mapping: !a.no_port_mapping,
        peer_listen: a.peer_listen,
    };
    runtime()?.block_on(crate::web::serve(opts, super::serve::shutdown_signal()))?;
    Ok(exit::OK)
}
