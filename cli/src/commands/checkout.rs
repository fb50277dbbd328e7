use super::push::{owner_hosts, progress_fn, runtime, PeerArgs};
use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_netsync::peer::shares;
use pluto_netsync::peer::sync::{self, PackSelection, SyncOptions};
use pluto_repo::pack::store::PackStore;
use pluto_repo::pack::PackId;
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use pluto_repo::restore::{self, restore, RestoreOptions};
use pluto_repo::tar::{write_tar, TarOptions};
use std::collections::HashSet;
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
  pluto checkout latest --tar - docs | ssh host tar -x    # to stdout
  pluto checkout latest --target ~/r --from-peers docs/   # after `pull --no-packs`: fetch only what docs/ needs")]
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
    /// First fetch from this node's hosts the packs this checkout reads that are not here
    /// (trees, then only the contents of the paths asked for).
    #[arg(long)]
    from_peers: bool,
    #[command(flatten)]
    peers: PeerArgs,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    if a.from_peers {
        fetch_from_peers(g, &a)?;
    }
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

/// Fetch the packs a checkout of `a.paths` of `a.snapshot` reads and this repository lacks:
/// the tree packs first (to walk the snapshot at all), then the packs of the files' chunks.
fn fetch_from_peers(g: &Global, a: &Args) -> Result<()> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let root = repo.root().to_path_buf();
    let key = repo.keys().node.clone();
    let snap = repo.find_snapshot(&a.snapshot)?;
    let here: HashSet<PackId> = repo
        .store()
        .list()
        .context("cannot list the local packs")?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let rt = runtime()?;
    let (hosts, coordinator) = rt.block_on(owner_hosts(&root, &key, &a.peers, "checkout", None))?;
    if hosts.is_empty() {
        bail!("--from-peers: no hosts: pass --coordinator URL (or --host NODEID@ws://HOST:PORT)");
    }
    let opts = SyncOptions {
        relay: coordinator.clone(),
        ..Default::default()
    };
    let progress = Arc::new(Progress::default());
    let bar = crate::progress::Bar::start(progress.clone(), "fetch", g.quiet);
    let mut fetched = (0usize, 0u64);
    let store = repo.store();
    let mut fetch = |packs: Vec<[u8; 32]>| -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let wanted: HashSet<[u8; 32]> = packs.iter().copied().collect();
        let mut rep = rt.block_on(sync::pull(
            &key,
            &root,
            &hosts,
            PackSelection::Only(packs),
            &opts,
            progress_fn(progress.clone()),
        ))?;
        if !rep.missing.is_empty() {
            // not held whole anywhere: maybe as erasure-coded shares
            let more = rt.block_on(shares::pull_shares(
                &key,
                &root,
                &hosts,
                Some(&wanted),
                &opts,
                progress_fn(progress.clone()),
            ))?;
            rep.fetched += more.fetched;
            rep.bytes += more.bytes;
            rep.missing = wanted
                .iter()
                .filter(|p| !store.path_of(&PackId(**p)).exists())
                .map(|p| format!("packs/{}", hex::encode(p)))
                .collect();
        }
        fetched.0 += rep.fetched;
        fetched.1 += rep.bytes;
        if !rep.missing.is_empty() {
            bail!(
                "{} file(s) this checkout needs are on none of the hosts: {}",
                rep.missing.len(),
                rep.missing.join(", ")
            );
        }
        Ok(())
    };
    let trees = restore::tree_packs(&repo)?;
    fetch(
        trees
            .iter()
            .filter(|p| !here.contains(p))
            .map(|p| p.0)
            .collect(),
    )?;
    let needed = restore::packs_needed(&repo, &snap.snapshot, &snap.id, &a.paths)?;
    fetch(
        needed
            .iter()
            .filter(|p| !here.contains(p))
            .map(|p| p.0)
            .collect(),
    )?;
    drop(bar);
    if let Some(c) = coordinator {
        let _ = rt.block_on(c.close());
    }
    if !g.quiet {
        eprintln!(
            "fetched {} file(s), {} from the hosts",
            fetched.0,
            bytes(fetched.1)
        );
    }
    Ok(())
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
