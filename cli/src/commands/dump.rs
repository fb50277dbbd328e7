use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_repo::crypto::ObjType;
use pluto_repo::repository::LockMode;
use pluto_repo::restore::lookup;
use pluto_repo::tree::Kind;
use std::io::Write;
use std::path::PathBuf;

/// Write one file of a snapshot to standard output.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto dump latest notes.txt               # print it
  pluto dump 1a2b3c4d docs/report.pdf > /tmp/report-then.pdf
  pluto dump latest ~/Documents/a.txt | diff - ~/Documents/a.txt

A directory is refused: use `pluto checkout SNAP DIR --tar -` for a whole tree.")]
pub struct Args {
    /// Snapshot id (any unique prefix) or `latest` (the newest of the tracked folder).
    snapshot: String,
    /// The file: inside the snapshot, relative to the current directory, or absolute.
    file: String,
    /// `latest` is the newest snapshot of this folder (default: the tracked one).
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let snap = super::resolve_snapshot(&repo, &a.snapshot, a.path.as_deref())?;
    let tracked = super::latest_scope(&repo, None);
    let mut node = None;
    let mut tried = Vec::new();
    for c in super::snapshot_path_candidates(&snap, tracked.as_deref(), &a.file) {
        if let Some(n) = lookup(&repo, &snap.snapshot.tree, &c)? {
            node = Some((c, n));
            break;
        }
        tried.push(c);
    }
    let Some((path, node)) = node else {
        bail!(
            "{} is not in snapshot {} (looked for {})",
            a.file,
            snap.short_id(),
            tried.join(", ")
        );
    };
    match node.kind {
        Kind::File => {}
        Kind::Dir => bail!(
            "{path} is a directory in snapshot {}: `pluto checkout {} {path} --tar -` writes it as a tar archive",
            snap.short_id(),
            snap.short_id()
        ),
        Kind::Symlink => bail!(
            "{path} is a symbolic link in snapshot {} (to {})",
            snap.short_id(),
            String::from_utf8_lossy(node.target.as_deref().unwrap_or_default())
        ),
        Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => bail!(
            "{path} is a {} in snapshot {}: it has no content to print",
            pluto_repo::ls::kind_name(node.kind),
            snap.short_id()
        ),
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    for id in &node.chunks {
        let data = repo
            .read_object(id, ObjType::Chunk)
            .with_context(|| format!("{path} in snapshot {}", snap.short_id()))?;
        if let Err(e) = out.write_all(&data) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                crate::output::stdout_closed();
            }
            return Err(e).context("cannot write to standard output");
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => crate::output::stdout_closed(),
        Err(e) => Err(e).context("cannot write to standard output"),
        Ok(()) => Ok(exit::OK),
    }
}
