//! Counters the library bumps while it works; the CLI reads them to draw progress bars.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Progress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    /// The totals are final (the count of what there is to do has finished); until then
    /// they only grow.
    pub total_known: AtomicBool,
    /// The file being worked on, for display.
    current: Mutex<PathBuf>,
}

impl Progress {
    pub fn add_done(&self, files: u64, bytes: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn add_total(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Totals set in one go (a plan known up front) are final.
    pub fn set_total(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.total_known.store(true, Ordering::Relaxed);
    }
    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.files_done.load(Ordering::Relaxed),
            self.bytes_done.load(Ordering::Relaxed),
            self.files_total.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
        )
    }
    pub fn set_current(&self, path: &Path) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.push(path);
        }
    }
    pub fn current(&self) -> PathBuf {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Count the files and bytes a snapshot of `root` will go through, into `progress`'s
/// totals, as it finds them (so a bar shows a growing total at once, the final one soon):
/// the same entries the snapshot visits — `.plutoignore` files, `excludes`, cache
/// directories unless `include_caches`, nested repositories and `skip_dirs` (the
/// repository itself) left out. Meant for a thread of its own beside the snapshot; it only
/// reads metadata. Unreadable directories are passed over (the snapshot reports them).
pub fn count_tree(
    root: &Path,
    excludes: &[String],
    include_caches: bool,
    include_repositories: bool,
    skip_dirs: &[PathBuf],
    progress: &Progress,
) {
    use crate::archive::ignore::{is_cache_dir, is_nested_repository, Rules};
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::canonicalize(root) else {
        return;
    };
    let skip: Vec<(u64, u64)> = skip_dirs
        .iter()
        .filter_map(|d| std::fs::metadata(d).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let Ok(rules) = Rules::from_patterns(&root, excludes) else {
        return;
    };
    let mut stack = vec![(root, rules)];
    while let Some((dir, rules)) = stack.pop() {
        if !include_caches && is_cache_dir(&dir) {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let rules = rules.enter(&dir, &mut |_| {});
        let (mut files, mut bytes) = (0u64, 0u64);
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let path = e.path();
            if m.is_dir() {
                if skip.contains(&(m.dev(), m.ino()))
                    || (!include_repositories && is_nested_repository(&path))
                    || rules.is_excluded(&path, true)
                {
                    continue;
                }
                stack.push((path, rules.clone()));
            } else if m.is_file() && !rules.is_excluded(&path, false) {
                files += 1;
                bytes += m.len();
            }
        }
        progress.add_total(files, bytes);
    }
    progress.total_known.store(true, Ordering::Relaxed);
}
