//! `pluto serve`: the node (see `pluto_netsync::node`), in the foreground: parse the
//! flags, spawn the node, print its events, stop on Ctrl-C or SIGTERM.

use super::push::{runtime, PeerArgs};
use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{Context, Result};
use pluto_netsync::node::{schedule::parse_every, Event, Node, NodeConfig};
use pluto_repo::repository::LockMode;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto serve --coordinator mqtt://coord.example:1883 --offer 100G
  pluto serve --snapshot-every 15m --notify-cmd 'notify-send pluto \"$PLUTO_EVENT\"'
  pluto serve --listen 0.0.0.0:7447 --allow 3f2a…=10G     # host a friend without a coordinator")]
pub struct Args {
    #[command(flatten)]
    peers: PeerArgs,
    /// Address of the peer port.
    #[arg(long, default_value = "0.0.0.0:7447")]
    listen: String,
    /// Address peers use to reach this node (default: ws://<listen>).
    #[arg(long, value_name = "ws://HOST:PORT")]
    public_addr: Option<String>,
    /// Do not ask the home router to forward the peer port (UPnP-IGD). By default the node
    /// asks, and announces the router's external address when the router agrees.
    #[arg(long)]
    no_port_mapping: bool,
    /// Disk given to others (e.g. 50G, 1.5G, 512M; default 10G).
    #[arg(long = "offer", value_name = "SIZE", value_parser = crate::output::parse_size)]
    offer: Option<u64>,
    /// Also host this owner without the coordinator: NODEID=SIZE (repeatable).
    #[arg(long = "allow", value_name = "NODEID=SIZE")]
    allow: Vec<String>,
    /// Full copies wanted of this node's own data (as `pluto push -k`); without it, the
    /// repository's scheme (default: 4/8 once 8 hosts are matched, 2 copies until then).
    #[arg(long, short = 'k')]
    copies: Option<u8>,
    /// Space to reserve for this node's own data on each host (default: four times what
    /// the repository holds, at least 256M, at most what the offer balances: offer / copies).
    #[arg(long, value_parser = crate::output::parse_size)]
    want: Option<u64>,
    /// Snapshot the tracked folder this often (seconds, or 90s, 15m, 1h, 1d; 0 = never).
    /// The first is taken at start unless a snapshot younger than that exists.
    #[arg(long, value_name = "DURATION", default_value = "3600", value_parser = parse_every)]
    snapshot_every: Duration,
    /// Push this node's new data this often, once at start and after each snapshot
    /// (seconds or a duration; 0 = the node pushes nothing by itself; repairs still run).
    #[arg(long, value_name = "DURATION", default_value = "3600", value_parser = parse_every)]
    push_every: Duration,
    /// Challenge this node's hosts this often (seconds or a duration; 0 = never).
    #[arg(long, value_name = "DURATION", default_value = "600", value_parser = parse_every)]
    challenge_every: Duration,
    /// A host that does not answer challenges for this long stops counting, and its data is
    /// placed on another host (default 3d, the grace of the durability page).
    #[arg(long, value_name = "DURATION", default_value = "3d", value_parser = parse_every)]
    host_grace: Duration,
    /// Run this shell command on an alert (protection changed, snapshot missed, host lost
    /// or replaced, repair done, excluded): the event's JSON on stdin and in $PLUTO_EVENT.
    #[arg(long, value_name = "CMD")]
    notify_cmd: Option<String>,
    /// POST each alert's JSON to this http:// URL.
    #[arg(long, value_name = "URL")]
    notify_url: Option<String>,
    /// At most one alert of a kind this often (the rest are folded into the next).
    #[arg(long, value_name = "DURATION", default_value = "60", value_parser = parse_every)]
    notify_every: Duration,
    /// Print every event as one JSON line on stdout instead of the usual lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    keep: super::forget::KeepArgs,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let root = super::open_repo(g, LockMode::Shared)?.root().to_path_buf();
    let offer = a.offer.unwrap_or(pluto_netsync::node::offer::DEFAULT_OFFER);
    if let Some(w) = pluto_netsync::node::offer::check_offer(&root, offer, a.offer.is_some())? {
        eprintln!("pluto: {w}");
    }
    let mut allow = Vec::new();
    for s in &a.allow {
        let (id, size) = s.split_once('=').context("--allow takes NODEID=SIZE")?;
        let id = id
            .parse()
            .map_err(|e| anyhow::anyhow!("--allow {s}: {e}"))?;
        allow.push((
            id,
            crate::output::parse_size(size).map_err(anyhow::Error::msg)?,
        ));
    }
    let policy = a.keep.policy();
    let cfg = NodeConfig {
        listen: a.listen,
        public_addr: a.public_addr,
        offer,
        allow,
        copies: a.copies,
        want: a.want,
        sources: a.peers.sources(),
        snapshot_every: a.snapshot_every,
        push_every: a.push_every,
        challenge_every: a.challenge_every,
        host_grace: a.host_grace,
        retention: (!policy.is_empty()).then_some(policy),
        notify: pluto_netsync::node::notify::NotifyConfig {
            cmd: a.notify_cmd,
            url: a.notify_url,
            min_interval: a.notify_every,
        },
        port_mapping: !a.no_port_mapping,
    };
    let (quiet, json) = (g.quiet, a.json);
    runtime()?.block_on(async move {
        let node = Node::builder(&root, cfg).spawn().await?;
        let mut events = node.subscribe();
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                e = events.recv() => match e {
                    Ok(e) if json => outln!("{}", e.to_json()),
                    Ok(e) => print_event(&e, quiet),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("pluto: {n} event(s) not shown"),
                    Err(_) => break,
                }
            }
        }
        node.stop().await;
        while let Ok(e) = events.try_recv() {
            if json { outln!("{}", e.to_json()) } else { print_event(&e, quiet) }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(exit::OK)
}

/// One event as the lines `pluto serve` has always printed (stdout: what happened;
/// stderr, as `pluto: …`: what went wrong or needs the user).
fn print_event(e: &Event, quiet: bool) {
    let short = |h: &str| h.get(..16).unwrap_or(h).to_string();
    match e {
        Event::Serving { node, url, offer } if !quiet => outln!(
            "node {node} serving peers on {url} (offering {})",
            bytes(*offer)
        ),
        Event::CoordinatorConnected { url } if !quiet => {
            outln!("connected to the coordinator at {url}")
        }
        Event::CoordinatorUnreachable { error, retry_secs } => {
            eprintln!("pluto: {error}; serving peers meanwhile, retrying in {retry_secs}s")
        }
        Event::CoordinatorLost => eprintln!("pluto: lost the coordinator; reconnecting"),
        Event::HostsMatched { count } if !quiet => {
            outln!("{count} host(s) matched for this node's data")
        }
        Event::SnapshotTaken {
            id,
            files,
            bytes: b,
            bytes_added,
            partial,
        } if !quiet => outln!(
            "snapshot {} saved: {files} files, {} ({} new){}",
            id.get(..8).unwrap_or(id),
            bytes(*b),
            bytes(*bytes_added),
            if *partial > 0 {
                format!(" — PARTIAL: {partial} path(s) could not be read or changed while read")
            } else {
                String::new()
            }
        ),
        Event::SnapshotMissed { error } => eprintln!("pluto: scheduled snapshot missed: {error}"),
        Event::Forgotten { removed, kept } if !quiet => {
            outln!("retention: {removed} snapshot(s) forgotten, {kept} kept")
        }
        Event::PushDone {
            uploaded,
            not_placed,
            errors,
            ..
        } => {
            for h in errors {
                eprintln!("pluto: host {}: {}", short(&h.host), h.error);
            }
            if !quiet && *uploaded > 0 {
                outln!("pushed {uploaded} file(s)");
            }
            if let Some(n) = not_placed {
                eprintln!("pluto: {n}; the next push tries again");
            }
        }
        Event::ChallengeFailed { host, reason } => eprintln!(
            "pluto: host {} failed a challenge: {reason}; repairing",
            short(host)
        ),
        Event::HostUnreachable { host, .. } => {
            eprintln!("pluto: host {} does not answer", short(host))
        }
        Event::HostLost { host, reason } => eprintln!(
            "pluto: host {}: {reason}; its copies no longer count",
            short(host)
        ),
        Event::HostReplaced { lost, by } if !quiet => outln!(
            "placed the data of {} lost host(s) on {}",
            lost.len(),
            by.iter().map(|h| short(h)).collect::<Vec<_>>().join(", ")
        ),
        Event::Reachability {
            observed,
            addrs,
            reachable,
        } if !quiet => {
            if let Some(line) = pluto_netsync::nat::reachability_line(
                observed,
                addrs,
                if *reachable { 1 } else { 2 },
            ) {
                outln!("{line}");
            }
        }
        Event::PortMapped {
            external,
            protocol,
            lease_secs,
        } if !quiet => outln!(
            "port mapped by the router ({}): announcing {external}{}",
            match protocol.as_str() {
                "upnp-igd" => "UPnP-IGD",
                "nat-pmp" => "NAT-PMP",
                other => other,
            },
            if *lease_secs > 0 {
                format!(" (lease {lease_secs}s, renewed at half)")
            } else {
                " (permanent, removed when the node stops)".to_string()
            }
        ),
        Event::ProtectionChanged { verdict, .. } => outln!("{verdict}"),
        Event::RepairDone {
            owner,
            share,
            holders,
        } if !quiet => outln!(
            "rebuilt share {} of {} from {holders} holders",
            short(share),
            short(owner)
        ),
        Event::PacksFetchedBack {
            missing,
            fetched,
            still_missing,
        } => {
            if *fetched > 0 && !quiet {
                outln!(
                    "fetched back {fetched} of {missing} pack(s) the snapshots need that were missing here"
                );
            }
            if *still_missing > 0 {
                eprintln!(
                    "pluto: {still_missing} pack(s) the snapshots need are missing here and no host gives them back yet (asked again later)"
                );
            }
        }
        Event::Warning { message } => eprintln!("pluto: {message}"),
        Event::Excluded { reason } => {
            eprintln!("pluto: this node was excluded by the coordinator: {reason}")
        }
        Event::Error { during, message } => eprintln!("pluto: {during}: {message}"),
        Event::Stopping if !quiet => outln!("stopping"),
        _ => {}
    }
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}
