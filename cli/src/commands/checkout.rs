use super::push::{hosts_for, progress_fn, runtime, PeerArgs};
use crate::output::bytes;
use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_netsync::peer::shares;
use pluto_netsync::peer::sync::{self, PackSelection, SyncOptions};
use pluto_repo::diff;
use pluto_repo::pack::store::PackStore;
use pluto_repo::pack::PackId;
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use pluto_repo::restore::{self, lookup, restore, RestoreOptions};
use pluto_repo::snapshot::SnapshotEntry;
use pluto_repo::tar::{write_tar, TarOptions};
use pluto_repo::tree::{Kind, Node};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Restore a snapshot (or paths in it) into a directory, or write it as a tar archive.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto checkout latest notes.txt                         # in place, like git checkout -- notes.txt
  pluto checkout latest --target /tmp/restore
  pluto checkout 1a2b3c4d --target /tmp/r docs/a.txt     # lands in /tmp/r/docs/a.txt
  pluto checkout latest --target ~/Documents --force      # over existing files
  pluto checkout latest --tar backup.tar                  # tar -xf backup.tar gives the same tree
  pluto checkout latest --tar - docs | ssh host tar -x    # to stdout
  pluto checkout latest --target ~/r --from-peers docs/   # after `pull --no-packs`: fetch only what docs/ needs")]
pub struct Args {
    /// Snapshot id (any unique prefix) or `latest` (the newest of the tracked folder, or of
    /// --path).
    snapshot: String,
    /// Paths to restore (default: everything): inside the snapshot, relative to the current
    /// directory, or absolute under the tracked folder. Each lands at the same place under
    /// the target and replaces only what is there.
    paths: Vec<String>,
    /// `latest` is the newest snapshot of this folder (default: the tracked one).
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
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
    /// Print one JSON document describing what was restored.
    #[arg(long, conflicts_with = "tar")]
    json: bool,
    #[command(flatten)]
    peers: PeerArgs,
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    if a.from_peers {
        fetch_from_peers(g, &a)?;
    }
    let repo = super::open_repo(g, LockMode::Shared)?;
    let snap = super::resolve_snapshot(&repo, &a.snapshot, a.path.as_deref())?;
    let tracked = super::latest_scope(&repo, None);
    let paths = snapshot_paths(&repo, &snap, tracked.as_deref(), &a.paths)?;
    if let Some(tar) = &a.tar {
        return to_tar(g, &repo, &snap, tar, paths);
    }
    let in_place = a.target.is_none();
    let target = match a.target {
        Some(t) => t,
        None => super::tracked_dir(&repo, None)?,
    };
    // Named paths replace only themselves: refused where that would lose changes no
    // snapshot holds (unless --force); a path already as the snapshot has it is left be.
    if !paths.is_empty() && !a.force {
        let latest = if in_place {
            super::resolve_snapshot(&repo, "latest", None).ok()
        } else {
            None
        };
        let mut changed = Vec::new();
        for p in &paths {
            let live = target.join(p);
            let restoring = lookup(&repo, &snap.snapshot.tree, p)?;
            if !live_differs(&repo, restoring.as_ref(), &live)? {
                continue;
            }
            if let Some(l) = &latest {
                let node = lookup(&repo, &l.snapshot.tree, p)?;
                if node.is_some() && !live_differs(&repo, node.as_ref(), &live)? {
                    continue;
                }
            }
            changed.push(live.display().to_string());
        }
        if !changed.is_empty() {
            bail!(
                "{} {} changes that {}: pass --force to replace {} anyway, or snapshot first",
                changed.join(", "),
                if changed.len() == 1 { "has" } else { "have" },
                if in_place {
                    "no snapshot holds (it differs from the latest snapshot of this folder)"
                } else {
                    "the snapshot being restored does not hold"
                },
                if changed.len() == 1 { "it" } else { "them" },
            );
        }
    }
    let progress = Arc::new(Progress::default());
    let stats = {
        let _bar = crate::progress::Bar::start(progress.clone(), "checkout", g.quiet || a.json);
        restore(
            &repo,
            &snap.snapshot,
            &snap.id,
            &target,
            &RestoreOptions {
                // named paths were checked above; only a whole restore wants an empty target
                force: a.force || !paths.is_empty(),
                paths: paths.clone(),
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
    super::print_warnings(&repo);
    if a.json {
        let doc = serde_json::json!({
            "snapshot": snap.id,
            "short_id": snap.short_id(),
            "target": target,
            "paths": paths,
            "stats": stats,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else if !g.quiet {
        outln!(
            "restored snapshot {} into {}: {} files ({}), {} dirs, {} symlinks, {} hard links{}{}",
            snap.short_id(),
            target.display(),
            stats.files,
            bytes(stats.bytes),
            stats.dirs,
            stats.symlinks,
            stats.hardlinks,
            specials(&stats),
            if stats.skipped > 0 {
                format!("; {} files already in place", stats.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok(report_not_restored(&stats))
}

/// ", 2 FIFOs and device nodes" when there are any.
fn specials(stats: &restore::RestoreStats) -> String {
    match stats.specials {
        0 => String::new(),
        n => format!(", {n} FIFOs and device nodes"),
    }
}

/// Name each path a partial restore left out, and the exit code: 3 when some were.
fn report_not_restored(stats: &restore::RestoreStats) -> u8 {
    if stats.not_restored.is_empty() {
        return exit::OK;
    }
    for n in &stats.not_restored {
        eprintln!("not restored: {}: {}", n.path, n.reason);
    }
    eprintln!(
        "pluto: {} path(s) NOT restored (listed above): their data is damaged or missing; everything else was restored. Run `pluto check` to see the damage and the repair to run.",
        stats.not_restored.len()
    );
    exit::PARTIAL
}

/// Fetch the packs a checkout of `a.paths` of `a.snapshot` reads and this repository lacks:
/// the tree packs first (to walk the snapshot at all), then the packs of the files' chunks.
fn fetch_from_peers(g: &Global, a: &Args) -> Result<()> {
    let repo = super::open_repo(g, LockMode::Shared)?;
    let root = repo.root().to_path_buf();
    let key = repo.keys().node.clone();
    let snap = super::resolve_snapshot(&repo, &a.snapshot, a.path.as_deref())?;
    let here: HashSet<PackId> = repo
        .store()
        .list()
        .context("cannot list the local packs")?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let rt = runtime()?;
    let (hosts, coordinator) = rt.block_on(hosts_for(&root, &key, &a.peers, "checkout", None))?;
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
    // The paths can be mapped into the snapshot only now that its trees are here.
    let tracked = super::latest_scope(&repo, None);
    let paths = snapshot_paths(&repo, &snap, tracked.as_deref(), &a.paths)?;
    let needed = restore::packs_needed(&repo, &snap.snapshot, &snap.id, &paths)?;
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

/// The paths the user named, as paths inside the snapshot (see
/// [`super::snapshot_path_candidates`]): the first candidate the snapshot has, else the
/// first one (whose absence the restore reports).
fn snapshot_paths(
    repo: &pluto_repo::Repository,
    snap: &SnapshotEntry,
    tracked: Option<&Path>,
    given: &[String],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in given {
        let cands = super::snapshot_path_candidates(snap, tracked, p);
        let mut chosen = None;
        for c in &cands {
            if c.is_empty() || lookup(repo, &snap.snapshot.tree, c)?.is_some() {
                chosen = Some(c.clone());
                break;
            }
        }
        let c = chosen.unwrap_or_else(|| cands[0].clone());
        if c.is_empty() {
            // the whole snapshot root was named: same as naming nothing
            return Ok(Vec::new());
        }
        out.push(c);
    }
    Ok(out)
}

/// Does what is at `live` differ in content from `node` (absent: from nothing)? Only what
/// a restore would lose counts: content, a symlink's target, a file where the snapshot has
/// a directory or the reverse. Files only on disk inside a named directory stay untouched by
/// a restore, so they do not count; nor do mode or mtime.
fn live_differs(repo: &pluto_repo::Repository, node: Option<&Node>, live: &Path) -> Result<bool> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::symlink_metadata(live) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", live.display())),
    };
    let Some(node) = node else {
        return Ok(true);
    };
    Ok(match node.kind {
        Kind::File => {
            if !meta.is_file() || meta.len() != node.size {
                true
            } else {
                diff::live_chunk_ids(repo, live)? != node.chunks
            }
        }
        Kind::Symlink => {
            !meta.file_type().is_symlink()
                || std::fs::read_link(live)
                    .map(|t| t.as_os_str().as_bytes() != node.target.as_deref().unwrap_or_default())
                    .unwrap_or(true)
        }
        Kind::Dir => {
            if !meta.is_dir() {
                return Ok(true);
            }
            let Some(sub) = node.subtree else {
                return Ok(false);
            };
            let d = diff::diff_worktree(repo, &sub, live, &[])?;
            d.changes
                .iter()
                .any(|c| c.change == diff::ChangeKind::Modified)
        }
        Kind::Fifo => !meta.file_type().is_fifo(),
        Kind::CharDevice => !meta.file_type().is_char_device() || meta.rdev() != node.rdev,
        Kind::BlockDevice => !meta.file_type().is_block_device() || meta.rdev() != node.rdev,
    })
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
        unended_if_partial: false,
    };
    let _bar = crate::progress::Bar::start(progress, "tar", g.quiet);
    let tar_failed = |e: pluto_repo::Error| {
        anyhow::Error::new(e).context(format!(
            "tar of snapshot {} to {}",
            snap.short_id(),
            dest.display()
        ))
    };
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
        )
        .map_err(quiet_on_closed_pipe)
        .map_err(tar_failed)?
    } else {
        match tar_dest(dest)? {
            TarDest::Stream(file) => {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                write_tar(repo, &snap.snapshot, &snap.id, &mut out, dest, &opts)
                    .and_then(|s| {
                        out.flush().map_err(|source| pluto_repo::Error::Io {
                            path: dest.to_path_buf(),
                            source,
                        })?;
                        Ok(s)
                    })
                    .map_err(quiet_on_closed_pipe)
                    .map_err(tar_failed)?
            }
            TarDest::Replace(dest) => write_tar_file(repo, snap, &dest, &opts)?,
        }
    };
    drop(_bar);
    if !g.quiet {
        let _ = std::io::stdout().flush();
        eprintln!(
            "wrote snapshot {} as tar to {}: {} files ({}), {} dirs, {} symlinks, {} hard links{}",
            snap.short_id(),
            dest.display(),
            stats.files,
            bytes(stats.bytes),
            stats.dirs,
            stats.symlinks,
            stats.hardlinks,
            specials(&stats)
        );
    }
    super::print_warnings(repo);
    Ok(report_not_restored(&stats))
}

/// A reader that went away (`--tar - | head -c 10`) ends the process as it would `git`.
fn quiet_on_closed_pipe(e: pluto_repo::Error) -> pluto_repo::Error {
    match &e {
        pluto_repo::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => {
            crate::output::stdout_closed()
        }
        _ => e,
    }
}

/// Where `--tar FILE` writes.
enum TarDest {
    /// An existing FIFO, device, or path under /dev or /proc (`/dev/stdout`): written to as
    /// it is (opened without creating or truncating), never replaced.
    Stream(std::fs::File),
    /// A regular file, or nothing yet: a temporary file beside it, renamed over it when
    /// complete. Through a symlink, the file it points to is replaced, never the link.
    Replace(PathBuf),
}

fn tar_dest(dest: &Path) -> Result<TarDest> {
    use std::io::ErrorKind::NotFound;
    let stream = || -> Result<TarDest> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dest)
            .with_context(|| format!("--tar {}: cannot open it for writing", dest.display()))?;
        use std::io::IsTerminal;
        if f.is_terminal() {
            bail!("refusing to write a tar archive to a terminal: redirect it, or pass --tar FILE");
        }
        Ok(TarDest::Stream(f))
    };
    let lmeta = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == NotFound => return Ok(TarDest::Replace(dest.to_path_buf())),
        Err(e) => return Err(e).with_context(|| format!("--tar {}", dest.display())),
    };
    if lmeta.is_file() {
        return Ok(TarDest::Replace(dest.to_path_buf()));
    }
    if lmeta.is_dir() {
        bail!("--tar {}: is a directory", dest.display());
    }
    if !lmeta.file_type().is_symlink() {
        // FIFO, character or block device (a tape), socket
        return stream();
    }
    // A symlink the user named: go where it points. /dev/stdout and /dev/fd/N lead to
    // whatever the shell opened, which is to be written as it is, whatever it is.
    if dest.starts_with("/dev") || dest.starts_with("/proc") {
        return stream();
    }
    match std::fs::metadata(dest) {
        Ok(m) if m.is_file() => Ok(TarDest::Replace(
            std::fs::canonicalize(dest).with_context(|| format!("--tar {}", dest.display()))?,
        )),
        Ok(m) if m.is_dir() => bail!("--tar {}: is a symlink to a directory", dest.display()),
        Ok(_) => stream(),
        Err(e) if e.kind() == NotFound => bail!(
            "--tar {}: is a symlink to {}, which does not exist: name the file itself",
            dest.display(),
            std::fs::read_link(dest).unwrap_or_default().display()
        ),
        Err(e) => Err(e).with_context(|| format!("--tar {}", dest.display())),
    }
}

/// Write the archive to a new temporary file beside `dest` and rename it over `dest` when
/// complete, so a failed or killed export never leaves a truncated archive under the final
/// name.
fn write_tar_file(
    repo: &pluto_repo::Repository,
    snap: &pluto_repo::snapshot::SnapshotEntry,
    dest: &Path,
    opts: &TarOptions,
) -> Result<pluto_repo::restore::RestoreStats> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .with_context(|| format!("--tar {}: not a file name", dest.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.pluto-tmp",
        name.to_string_lossy(),
        pluto_repo::fsutil::random_suffix()
    ));
    // A new name, created exclusively: never a file or link that was already there.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let res = write_tar(repo, &snap.snapshot, &snap.id, &mut out, dest, opts).and_then(|s| {
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
            Ok(s)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e).with_context(|| {
                format!("tar of snapshot {} to {}", snap.short_id(), dest.display())
            })
        }
    }
}
