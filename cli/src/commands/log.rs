use crate::output::{bytes, time, time_short};
use crate::{exit, Global};
use anyhow::Result;
use pluto_repo::repository::LockMode;
use pluto_repo::snapshot::abbrev_len;

/// List snapshots, newest first.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto log
  pluto log --oneline --tag nightly
  pluto log --json | jq '.[0].id'")]
pub struct Args {
    /// One line per snapshot.
    #[arg(long)]
    oneline: bool,
    /// Only snapshots with this tag (repeatable: any of them).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots of this path.
    #[arg(long)]
    path: Option<String>,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let all = repo.snapshots()?;
    super::print_warnings(&repo);
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    let ab = abbrev_len(&ids);
    // Snapshots record canonical paths; accept `--path .` or a relative path that exists.
    let wanted_path: Option<String> = a
        .path
        .as_deref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.to_string_lossy().into_owned());
    let chosen: Vec<_> = all
        .iter()
        .rev()
        .filter(|s| a.tags.is_empty() || s.snapshot.tags.iter().any(|t| a.tags.contains(t)))
        .filter(|s| a.host.as_ref().is_none_or(|h| &s.snapshot.hostname == h))
        .filter(|s| {
            a.path.as_ref().is_none_or(|p| {
                let p = p.trim_end_matches('/');
                s.snapshot
                    .paths
                    .iter()
                    .any(|sp| sp == p || Some(sp) == wanted_path.as_ref())
            })
        })
        .collect();
    if a.json {
        let docs: Vec<_> = chosen
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "short_id": &s.id[..ab],
                    "parent": s.snapshot.parent,
                    "time_ns": s.snapshot.time_ns,
                    "time": time(s.snapshot.time_ns),
                    "hostname": s.snapshot.hostname,
                    "username": s.snapshot.username,
                    "paths": s.snapshot.paths,
                    "tags": s.snapshot.tags,
                    "message": s.snapshot.message,
                    "tree": s.snapshot.tree.hex(),
                    "stats": s.snapshot.stats,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(exit::OK);
    }
    for s in chosen {
        let sn = &s.snapshot;
        if a.oneline {
            let tags = if sn.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", sn.tags.join(","))
            };
            outln!(
                "{} {} {}:{}{} {:>7} files {:>10} +{:<10} {}",
                &s.id[..ab],
                time_short(sn.time_ns),
                sn.hostname,
                sn.paths.join(","),
                tags,
                sn.stats.files,
                bytes(sn.stats.bytes),
                bytes(sn.stats.stored_added),
                sn.message
            );
            continue;
        }
        outln!("snapshot {}", &s.id[..ab]);
        if let Some(p) = &sn.parent {
            outln!("Parent:  {}", &p[..ab.min(p.len())]);
        }
        outln!("Date:    {}", time(sn.time_ns));
        outln!("Host:    {} ({})", sn.hostname, sn.paths.join(", "));
        if !sn.tags.is_empty() {
            outln!("Tags:    {}", sn.tags.join(", "));
        }
        outln!(
            "Files:   {} ({}), {} added ({} stored){}",
            sn.stats.files,
            bytes(sn.stats.bytes),
            bytes(sn.stats.bytes_added),
            bytes(sn.stats.stored_added),
            match (
                sn.stats.unreadable.len(),
                sn.stats.changed_during_read.len()
            ) {
                (0, 0) => String::new(),
                (u, 0) => format!(", PARTIAL: {u} unreadable"),
                (u, c) => format!(", PARTIAL: {u} unreadable, {c} changed while read"),
            }
        );
        if !sn.message.is_empty() {
            outln!();
            for l in sn.message.lines() {
                outln!("    {l}");
            }
        }
        outln!();
    }
    Ok(exit::OK)
}
