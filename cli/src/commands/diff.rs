use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{bail, Result};
use pluto_repo::diff::{diff_trees, diff_worktree, ChangeKind};
use pluto_repo::repository::LockMode;

/// Show what changed between two snapshots, or between a snapshot and the files now.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto diff 1a2b3c4d latest        # from an older snapshot to the newest
  pluto diff latest --worktree      # what `pluto snapshot` would record now
  pluto diff A B --json | jq .totals

Lines start with + (added), - (removed), M (content modified) or U (only mode, owner or
mtime changed). The last line sums the bytes.")]
pub struct Args {
    /// The older side: a snapshot id (any unique prefix) or `latest`.
    old: String,
    /// The newer side: a snapshot (omit with --worktree).
    new: Option<String>,
    /// Compare OLD with the tracked directory as it is now.
    #[arg(long, conflicts_with = "new")]
    worktree: bool,
    /// With --worktree: also leave out paths matching this pattern (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN", requires = "worktree")]
    excludes: Vec<String>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let old = super::resolve_snapshot(&repo, &a.old, None)?;
    let (new_name, d) = if a.worktree {
        let dir = super::tracked_dir(&repo, None)?;
        let d = diff_worktree(&repo, &old.snapshot.tree, &dir, &a.excludes)?;
        ("worktree".to_string(), d)
    } else {
        let Some(new) = a.new.as_deref() else {
            bail!("diff needs two snapshots, or one and --worktree");
        };
        let new = super::resolve_snapshot(&repo, new, None)?;
        let d = diff_trees(&repo, &old.snapshot.tree, &new.snapshot.tree)?;
        (new.id, d)
    };
    for w in &d.warnings {
        eprintln!("pluto: warning: {w}");
    }
    if a.json {
        let doc = serde_json::json!({
            "old": old.id,
            "new": new_name,
            "changes": d.changes,
            "totals": d.totals,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit::OK);
    }
    for c in &d.changes {
        let mark = match c.change {
            ChangeKind::Added => "+",
            ChangeKind::Removed => "-",
            ChangeKind::Modified => "M",
            ChangeKind::Metadata => "U",
        };
        let slash = if c.kind == "dir" { "/" } else { "" };
        let detail = match c.change {
            ChangeKind::Metadata => format!("  ({})", c.fields.join(", ")),
            ChangeKind::Modified if c.kind == "file" => format!(
                "  ({} -> {})",
                bytes(c.old_size.unwrap_or(0)),
                bytes(c.new_size.unwrap_or(0))
            ),
            _ => String::new(),
        };
        outln!("{mark} {}{slash}{detail}", c.path);
    }
    let t = &d.totals;
    if !g.quiet {
        outln!(
            "{} added ({}), {} removed ({}), {} modified ({} -> {}), {} metadata only",
            t.added,
            bytes(t.bytes_added),
            t.removed,
            bytes(t.bytes_removed),
            t.modified,
            bytes(t.bytes_modified_old),
            bytes(t.bytes_modified_new),
            t.metadata
        );
    }
    Ok(exit::OK)
}
