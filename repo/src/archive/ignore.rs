//! What a snapshot leaves out: `.plutoignore` files (gitignore syntax, nested), `--exclude`
//! patterns, and cache directories marked by CACHEDIR.TAG.

use crate::error::{Error, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const IGNORE_FILE: &str = ".plutoignore";
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Ignore rules in force in one directory: its own `.plutoignore` and its ancestors'.
#[derive(Clone, Default)]
pub struct Rules {
    stack: Vec<Arc<Gitignore>>,
    /// The `--exclude` patterns that matched something (the first layer of `stack`), so
    /// the snapshot can warn about those that matched nothing.
    global_hits: Option<Arc<Mutex<HashSet<String>>>>,
}

/// A repository's folder: left out of snapshots by default (its secret, its packs and
/// what it hosts for others are no files to back up as such).
pub fn is_nested_repository(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == crate::repository::REPO_DIR)
}

/// An `--exclude` pattern as the user means it: an absolute path under `root` becomes a
/// pattern anchored at the root (`/home/u/docs/build` → `/build` when snapshotting
/// `/home/u/docs`); anything else is a gitignore pattern as it stands.
pub fn normalize_pattern(root: &Path, pattern: &str) -> String {
    let (neg, body) = match pattern.strip_prefix('!') {
        Some(b) => ("!", b),
        None => ("", pattern),
    };
    let p = Path::new(body.trim_end_matches('/'));
    if !p.is_absolute() || p == Path::new("/") {
        return pattern.to_string();
    }
    let dir_only = if body.ends_with('/') { "/" } else { "" };
    let canon = std::fs::canonicalize(p).ok();
    for cand in [Some(p.to_path_buf()), canon].into_iter().flatten() {
        if let Ok(rel) = cand.strip_prefix(root) {
            if !rel.as_os_str().is_empty() {
                return format!("{neg}/{}{dir_only}", rel.display());
            }
        }
    }
    pattern.to_string()
}

impl Rules {
    /// Global rules from `--exclude` patterns, anchored at the snapshot root.
    pub fn from_patterns(root: &Path, patterns: &[String]) -> Result<Rules> {
        if patterns.is_empty() {
            return Ok(Rules::default());
        }
        let mut b = GitignoreBuilder::new(root);
        for p in patterns {
            let p = &normalize_pattern(root, p);
            b.add_line(None, p)
                .map_err(|e| Error::Invalid(format!("bad exclude pattern {p:?}: {e}")))?;
        }
        let g = b
            .build()
            .map_err(|e| Error::Invalid(format!("bad exclude patterns: {e}")))?;
        Ok(Rules {
            stack: vec![Arc::new(g)],
            global_hits: Some(Arc::new(Mutex::new(HashSet::new()))),
        })
    }

    /// The `--exclude` patterns (as normalized) that matched nothing so far.
    pub fn unmatched_patterns(&self, patterns: &[String], root: &Path) -> Vec<String> {
        let Some(hits) = &self.global_hits else {
            return Vec::new();
        };
        let hits = hits.lock().unwrap();
        patterns
            .iter()
            .filter(|p| {
                let n = normalize_pattern(root, p);
                let t = n.trim();
                !t.is_empty() && !t.starts_with('#') && !hits.contains(t)
            })
            .cloned()
            .collect()
    }

    /// The rules for `dir`'s entries: these plus `dir/.plutoignore` if present.
    /// A malformed ignore file is reported through `warn` and the rest of it still applies.
    pub fn enter(&self, dir: &Path, warn: &mut dyn FnMut(String)) -> Rules {
        let file = dir.join(IGNORE_FILE);
        if !file.is_file() {
            return self.clone();
        }
        let mut b = GitignoreBuilder::new(dir);
        if let Some(e) = b.add(&file) {
            warn(format!("{}: {e}", file.display()));
        }
        match b.build() {
            Ok(g) => {
                let mut r = self.clone();
                r.stack.push(Arc::new(g));
                r
            }
            Err(e) => {
                warn(format!("{}: {e}", file.display()));
                self.clone()
            }
        }
    }

    pub fn is_excluded(&self, path: &Path, is_dir: bool) -> bool {
        for (i, g) in self.stack.iter().enumerate().rev() {
            let m = g.matched(path, is_dir);
            if i == 0 && !m.is_none() {
                if let (Some(hits), Some(glob)) = (&self.global_hits, m.inner()) {
                    hits.lock()
                        .unwrap()
                        .insert(glob.original().trim().to_string());
                }
            }
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        false
    }
}

/// A directory holding a valid CACHEDIR.TAG is a cache: not worth backing up.
pub fn is_cache_dir(dir: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(dir.join("CACHEDIR.TAG")) else {
        return false;
    };
    let mut head = [0u8; 43];
    f.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE
}
