use crate::output::{bytes, time_short};
use crate::{exit, Global};
use anyhow::Result;
use pluto_repo::fsmeta::rdev_string;
use pluto_repo::ls::{kind_name, list, mode_string};
use pluto_repo::repository::LockMode;
use pluto_repo::tree::Kind;

/// List the entries of a snapshot, like `ls -l`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto ls latest                  # the top directory of the newest snapshot
  pluto ls 1a2b3c4d docs -r        # everything under docs/
  pluto ls latest notes.txt --json")]
pub struct Args {
    /// Snapshot id (any unique prefix) or `latest`.
    snapshot: String,
    /// A directory (its entries are listed) or a file inside the snapshot.
    #[arg(default_value = "")]
    path: String,
    /// Descend into subdirectories.
    #[arg(long, short)]
    recursive: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let snap = super::resolve_snapshot(&repo, &a.snapshot, None)?;
    let entries = list(&repo, &snap.snapshot.tree, &snap.id, &a.path, a.recursive)?;
    if a.json {
        let docs: Vec<_> = entries
            .iter()
            .map(|e| {
                let n = &e.node;
                serde_json::json!({
                    "path": e.path,
                    "name": n.name_lossy(),
                    "kind": kind_name(n.kind),
                    "mode": n.mode,
                    "mode_string": mode_string(n.kind, n.mode),
                    "uid": n.uid,
                    "gid": n.gid,
                    "size": n.size,
                    "mtime_ns": n.mtime_ns,
                    "mtime": crate::output::time(n.mtime_ns),
                    "target": n.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
                    "rdev": n.kind.is_device().then(|| rdev_string(n.rdev)),
                    "xattrs": n.xattrs.iter().map(|(k, _)| String::from_utf8_lossy(k)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "snapshot": snap.id,
            "path": a.path,
            "entries": docs,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit::OK);
    }
    for e in &entries {
        let n = &e.node;
        let suffix = match n.kind {
            Kind::Dir => "/".to_string(),
            Kind::Symlink => format!(
                " -> {}",
                String::from_utf8_lossy(n.target.as_deref().unwrap_or_default())
            ),
            Kind::File | Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => String::new(),
        };
        // Like `ls -l`: a device shows its numbers where a file shows its size.
        let size = match n.kind {
            Kind::File => bytes(n.size),
            Kind::CharDevice | Kind::BlockDevice => rdev_string(n.rdev),
            _ => String::new(),
        };
        outln!(
            "{} {:>5} {:>5} {:>10} {} {}{}",
            mode_string(n.kind, n.mode),
            n.uid,
            n.gid,
            size,
            time_short(n.mtime_ns),
            e.path,
            suffix
        );
    }
    Ok(exit::OK)
}
