//! `pluto status`: first the verdict (protected, at risk, not protected — also the exit
//! code), then hosts holding my data, copies per snapshot, last challenge per host, and
//! what this node hosts for others. Reads only local records; works offline.

use crate::{exit, Global};
use anyhow::Result;
use pluto_netsync::peer::sync::{self, PeerStore};
use pluto_netsync::verdict::Level;
use pluto_repo::repository::LockMode;

#[derive(clap::Args)]
pub struct Args {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
pub struct HostedOwner {
    pub owner: String,
    pub files: u64,
    pub bytes: u64,
}

/// What this node keeps for each owner it hosts (its files and bytes on disk, outboards
/// left out), from `.pluto/hosted/`.
pub fn hosted_owners(root: &std::path::Path) -> Vec<HostedOwner> {
    let mut hosted = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("hosted")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() != 64 {
                continue;
            }
            let (mut files, mut bytes) = (0, 0);
            for sub in ["packs", "index", "snapshots", "config", "shares"] {
                for f in std::fs::read_dir(e.path().join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if !f.file_name().to_string_lossy().ends_with(".obao") {
                        files += 1;
                        bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                }
            }
            hosted.push(HostedOwner {
                owner: name,
                files,
                bytes,
            });
        }
    }
    hosted.sort_by(|a, b| a.owner.cmp(&b.owner));
    hosted
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let root = repo.root().to_path_buf();
    let store = PeerStore::open(&root);
    let state = store.read()?;
    let items = sync::local_items(&root)?;
    let placement = store.read_placement()?;
    let protection = pluto_netsync::node::ops::protection(&root)?;
    let code = match protection.level {
        Level::Protected => exit::OK,
        Level::AtRisk => exit::AT_RISK,
        Level::NotProtected => exit::NOT_PROTECTED,
    };
    let snaps: Vec<(String, usize)> = items
        .iter()
        .filter(|i| i.kind == pluto_netsync::peer::proto::Kind::Snapshot)
        .map(|i| (hex::encode(i.name), state.copies(&i.key())))
        .collect();
    // Packs placed as erasure-coded shares count as placed when every share's host holds it.
    let share_placed = |pack: &[u8; 32]| {
        placement
            .packs
            .get(pack)
            .is_some_and(|p| pluto_netsync::peer::shares::shares_held(&state, p) == p.shares.len())
    };
    let (shared_total, shared_placed) = (
        placement.packs.len(),
        placement.packs.keys().filter(|p| share_placed(p)).count(),
    );
    let min_copies = items
        .iter()
        .filter(|i| {
            !(i.kind == pluto_netsync::peer::proto::Kind::Pack
                && placement.packs.contains_key(&i.name))
        })
        .map(|i| state.copies(&i.key()))
        .min()
        .unwrap_or(0);
    let hosted = hosted_owners(&root);
    if a.json {
        let v = serde_json::json!({
            "verdict": protection,
            "node": repo.keys().node_id_hex(),
            "files": items.len(),
            "min_copies": min_copies,
            "shares": {
                "scheme": placement.packs.values().next().map(|p| format!("{}/{}", p.k, p.n)),
                "packs": shared_total,
                "placed": shared_placed,
            },
            "snapshots": snaps.iter().map(|(s, c)| serde_json::json!({"id": s, "copies": c})).collect::<Vec<_>>(),
            "hosts": serde_json::to_value(&state)?["hosts"],
            "hosting": hosted,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(code);
    }
    outln!("{}", protection.summary);
    outln!("node {}", repo.keys().node_id_hex());
    outln!(
        "{} file(s) to replicate; fewest copies of any: {min_copies}",
        items.len()
    );
    if let Some(p) = placement.packs.values().next() {
        outln!(
            "{shared_placed} of {shared_total} pack(s) placed as {}/{} shares",
            p.k,
            p.n
        );
    }
    if state.hosts.is_empty() {
        outln!("no hosts yet: `pluto push --coordinator URL`");
    }
    for (id, h) in &state.hosts {
        let bytes: u64 = h.stored.values().sum();
        let last = match &h.last_challenge {
            Some(c) => format!(
                "last challenge {} ({}{})",
                if c.passed { "passed" } else { "FAILED" },
                if c.proof { "proof" } else { "keyed" },
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.detail)
                }
            ),
            None => "not challenged yet".into(),
        };
        let path = match h.last_path {
            Some(pluto_netsync::peer::sync::PathKind::Direct) => " (direct)",
            Some(pluto_netsync::peer::sync::PathKind::Relayed) => " (relayed)",
            Some(pluto_netsync::peer::sync::PathKind::Punched) => " (punched)",
            None => "",
        };
        outln!(
            "host {} {}{path} {} file(s), {bytes} bytes, {}/{} challenges passed, {last}{}",
            &id.to_hex()[..16],
            if h.url.is_empty() {
                "(no address)"
            } else {
                &h.url
            },
            h.stored.len(),
            h.challenges_passed,
            h.challenges_passed + h.challenges_failed,
            if h.failed {
                " — not trusted, copies moved"
            } else {
                ""
            }
        );
    }
    let (direct, relayed) = state.hosts.values().fold((0u64, 0u64), |(d, r), h| {
        (d + h.bytes_direct, r + h.bytes_relayed)
    });
    if direct + relayed > 0 {
        outln!(
            "pushed {} in all, {} ({:.0} %) through the coordinator's relay",
            crate::output::bytes(direct + relayed),
            crate::output::bytes(relayed),
            100.0 * relayed as f64 / (direct + relayed) as f64
        );
    }
    for (s, c) in &snaps {
        outln!(
            "snapshot {} {c} cop{}",
            &s[..8],
            if *c == 1 { "y" } else { "ies" }
        );
    }
    for h in &hosted {
        outln!(
            "hosting for {}: {} file(s), {} bytes",
            &h.owner[..16],
            h.files,
            h.bytes
        );
    }
    Ok(code)
}
