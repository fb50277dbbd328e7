use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use pluto_repo::restore::{restore, RestoreOptions};
use pluto_repo::tar::{write_tar, TarOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Restore a snapshot (or paths in it) into a directory, or write it as a tar archive.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto checkout latest --target /tmp/restore
  pluto checkout 1a2b3c4d --target /tmp/r docs/a.txt     # lands in /tmp/r/docs/a.txt
  pluto checkout latest --target ~/Documents --force      # over existing files
  pluto checkout latest --tar backup.tar                  # tar -xf backup.tar gives the same tree
  pluto checkout latest --tar - docs | ssh host tar -x    # to stdout")]
pub struct Args {
    /// Snapshot id (any unique prefix) or `latest`.
    snapshot: String,
    /// Paths inside the snapshot to restore (default: everything).
    paths: Vec<String>,
    /// Where to restore (default: the tracked directory).
    #[arg(long, short, conflicts_with = "tar")]
    target: Option<PathBuf>,
    /// Restore into a directory that already holds files, replacing them.
    #[arg(long, conflicts_with = "tar")]
    force: bool,
    /// Write a tar archive to FILE (`-` for standard output) instead of restoring files.
    #[arg(long, value_name = "FILE")]
    tar: Option<PathBuf>,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let snap = repo.find_snapshot(&a.snapshot)?;
    if let Some(tar) = &a.tar {
        return to_tar(g, &repo, &snap, tar, a.paths);
    }
    let target = match a.target {
        Some(t) => t,
        None => super::tracked_dir(&repo, None)?,
    };
    let progress = Arc::new(Progress::default());
    let stats = {
        let _bar = crate::progress::Bar::start(progress.clone(), "checkout", g.quiet);
        restore(
            &repo,
            &snap.snapshot,
            &snap.id,
            &target,
            &RestoreOptions {
                force: a.force,
                paths: a.paths,
                progress: Some(progress),
            },
        )
        .with_context(|| {
            format!(
                "checkout of snapshot {} into {}",
                snap.short_id(),
                target.display()
            )
        })?
    };
    if !g.quiet {
        println!(
            "restored snapshot {} into {}: {} files ({}), {} dirs, {} symlinks, {} hard links",
            snap.short_id(),
            target.display(),
            stats.files,
            bytes(stats.bytes),
            stats.dirs,
            stats.symlinks,
            stats.hardlinks
        );
    }
    Ok(exit::OK)
}

fn to_tar(
    g: &Global,
    repo: &pluto_repo::Repository,
    snap: &pluto_repo::snapshot::SnapshotEntry,
    dest: &Path,
    paths: Vec<String>,
) -> Result<u8> {
    let progress = Arc::new(Progress::default());
    let opts = TarOptions {
        paths,
        progress: Some(progress.clone()),
    };
    let _bar = crate::progress::Bar::start(progress, "tar", g.quiet);
    let stats = if dest == Path::new("-") {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            bail!("refusing to write a tar archive to a terminal: redirect it, or pass --tar FILE");
        }
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        write_tar(
            repo,
            &snap.snapshot,
            &snap.id,
            out,
            Path::new("<stdout>"),
            &opts,
        )?
    } else {
        // Written beside the destination and renamed when complete, so a failed or killed
        // export never leaves a truncated archive under the final name.
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .with_context(|| format!("--tar {}: not a file name", dest.display()))?;
        let tmp = dir.join(format!(".{}.pluto-tmp", name.to_string_lossy()));
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let res = write_tar(repo, &snap.snapshot, &snap.id, &mut out, dest, &opts).and_then(|s| {
            let f = out.into_inner().map_err(|e| pluto_repo::Error::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(|e| pluto_repo::Error::Io {
                path: tmp.clone(),
                source: e,
            })?;
            Ok(s)
        });
        match res {
            Ok(s) => {
                if let Err(e) = std::fs::rename(&tmp, dest) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e)
                        .with_context(|| format!("cannot move the archive to {}", dest.display()));
                }
                s
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).with_context(|| {
                    format!("tar of snapshot {} to {}", snap.short_id(), dest.display())
                });
            }
        }
    };
    drop(_bar);
    if !g.quiet {
        let _ = std::io::stdout().flush();
        eprintln!(
            "wrote snapshot {} as tar to {}: {} files ({}), {} dirs, {} symlinks, {} hard links",
            snap.short_id(),
            dest.display(),
            stats.files,
            bytes(stats.bytes),
            stats.dirs,
            stats.symlinks,
            stats.hardlinks
        );
    }
    Ok(exit::OK)
}
