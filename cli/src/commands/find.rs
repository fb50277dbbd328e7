use crate::output::{bytes, time, time_short};
use crate::{exit, Global};
use anyhow::Result;
use pluto_repo::ls::{kind_name, list};
use pluto_repo::repository::LockMode;
use pluto_repo::snapshot::abbrev_len;
use pluto_repo::tree::Kind;
use std::path::PathBuf;

/// Find files by name across snapshots, newest snapshot first.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto find notes.txt              # every snapshot that has a notes.txt, anywhere
  pluto find '*.pdf' --path ~/Documents
  pluto find 'docs/*.txt' --json    # a pattern with / matches the whole path

* matches any run of characters but /, ? one character. A pattern without / is matched
against names, one with / against whole paths inside the snapshot.")]
pub struct Args {
    /// The name or path pattern.
    pattern: String,
    /// Only in these snapshots (id or prefix; repeatable).
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    snapshots: Vec<String>,
    /// Only in snapshots of this folder.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// Shell-style wildcard match: `*` any run of characters except `/`, `?` one character.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' && t[ti] != '/' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            if t[st] == '/' {
                return false;
            }
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let all = repo.snapshots()?;
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    let ab = abbrev_len(&ids);
    let mut chosen = Vec::new();
    if a.snapshots.is_empty() {
        let scope = a
            .path
            .as_deref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        for s in all.iter().rev() {
            if scope.as_ref().is_none_or(|p| {
                s.snapshot
                    .paths
                    .iter()
                    .any(|sp| *sp == *p.to_string_lossy())
            }) {
                chosen.push(s.clone());
            }
        }
    } else {
        for spec in &a.snapshots {
            chosen.push(super::resolve_snapshot(&repo, spec, a.path.as_deref())?);
        }
    }
    let by_path = a.pattern.contains('/');
    let pattern = a.pattern.trim_start_matches('/');
    let mut docs = Vec::new();
    let mut found = 0usize;
    for s in &chosen {
        let entries = list(&repo, &s.snapshot.tree, &s.id, "", true)?;
        let hits: Vec<_> = entries
            .iter()
            .filter(|e| {
                if by_path {
                    wildcard(pattern, &e.path)
                } else {
                    wildcard(pattern, &e.node.name_lossy())
                }
            })
            .collect();
        if hits.is_empty() {
            continue;
        }
        found += hits.len();
        if a.json {
            for e in hits {
                docs.push(serde_json::json!({
                    "snapshot": s.id,
                    "short_id": &s.id[..ab],
                    "time_ns": s.snapshot.time_ns,
                    "time": time(s.snapshot.time_ns),
                    "snapshot_paths": s.snapshot.paths,
                    "path": e.path,
                    "kind": kind_name(e.node.kind),
                    "size": e.node.size,
                    "mtime_ns": e.node.mtime_ns,
                }));
            }
            continue;
        }
        outln!(
            "snapshot {} {} {}",
            &s.id[..ab],
            time_short(s.snapshot.time_ns),
            s.snapshot.paths.join(", ")
        );
        for e in hits {
            let size = if e.node.kind == Kind::File {
                bytes(e.node.size)
            } else {
                kind_name(e.node.kind).to_string()
            };
            outln!(
                "  {:>10}  {}  {}",
                size,
                time_short(e.node.mtime_ns),
                e.path
            );
        }
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&docs)?);
    } else if found == 0 && !g.quiet {
        eprintln!(
            "pluto: nothing matches {:?} in {} snapshot(s)",
            a.pattern,
            chosen.len()
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard("*.txt", "notes.txt"));
        assert!(!wildcard("*.txt", "notes.txt.bak"));
        assert!(wildcard("n?tes.*", "notes.md"));
        assert!(wildcard("docs/*.txt", "docs/a.txt"));
        assert!(!wildcard("docs/*.txt", "docs/deep/a.txt"));
        assert!(wildcard("*", "x"));
        assert!(!wildcard("a", "ab"));
    }
}
