use crate::{exit, Global};
use anyhow::{bail, Result};
use pluto_repo::repository::LockMode;

/// Add or remove tags of snapshots that exist. A snapshot's id is the hash of its file, so
/// a snapshot with new tags gets a new id: the new file is written first, then the old one
/// removed.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto tag latest --add keep
  pluto tag 1a2b3c4d 5e6f7a8b --remove nightly --add monthly
  pluto tag latest --set release --json")]
pub struct Args {
    /// Snapshots (ids, prefixes or `latest`).
    #[arg(required = true)]
    snapshots: Vec<String>,
    /// Tags to add (repeatable).
    #[arg(long = "add", value_name = "TAG")]
    add: Vec<String>,
    /// Tags to remove (repeatable).
    #[arg(long = "remove", value_name = "TAG")]
    remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ''` clears them).
    #[arg(long = "set", value_name = "TAG")]
    set: Vec<String>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        bail!("nothing to do: pass --add TAG, --remove TAG or --set TAG");
    }
    if !a.set.is_empty() && (!a.add.is_empty() || !a.remove.is_empty()) {
        bail!("--set replaces every tag: give it alone, or use --add and --remove");
    }
    // Like forget: snapshot files change, so nobody may be listing them meanwhile.
    let repo = super::open_repo(g, LockMode::Exclusive)?;
    let mut chosen = Vec::new();
    for spec in &a.snapshots {
        let s = super::resolve_snapshot(&repo, spec, None)?;
        if !chosen
            .iter()
            .any(|c: &pluto_repo::snapshot::SnapshotEntry| c.id == s.id)
        {
            chosen.push(s);
        }
    }
    let mut docs = Vec::new();
    for s in chosen {
        let mut snap = s.snapshot.clone();
        if !a.set.is_empty() {
            snap.tags = a.set.iter().filter(|t| !t.is_empty()).cloned().collect();
        }
        snap.tags.retain(|t| !a.remove.contains(t));
        for t in &a.add {
            if !snap.tags.contains(t) {
                snap.tags.push(t.clone());
            }
        }
        if snap.tags == s.snapshot.tags {
            if !a.json && !g.quiet {
                outln!(
                    "snapshot {} unchanged: tags {}",
                    s.short_id(),
                    tags(&snap.tags)
                );
            }
            docs.push(serde_json::json!({"old": s.id, "id": s.id, "tags": snap.tags}));
            continue;
        }
        // New file first, then the old one: a crash in between leaves both (a duplicate
        // snapshot), never neither.
        let id = repo.write_snapshot(&snap)?;
        repo.remove_snapshot(&s.id)?;
        if !a.json && !g.quiet {
            outln!(
                "snapshot {} is now {}: tags {}",
                s.short_id(),
                &id[..8],
                tags(&snap.tags)
            );
        }
        docs.push(serde_json::json!({"old": s.id, "id": id, "tags": snap.tags}));
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&docs)?);
    }
    Ok(exit::OK)
}

fn tags(t: &[String]) -> String {
    if t.is_empty() {
        "(none)".into()
    } else {
        t.join(", ")
    }
}
