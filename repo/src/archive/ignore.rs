//! What a snapshot leaves out: `.plutoignore` files (gitignore syntax, nested), `--exclude`
//! patterns, and cache directories marked by CACHEDIR.TAG.

use crate::error::{Error, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::path::Path;
use std::sync::Arc;

pub const IGNORE_FILE: &str = ".plutoignore";
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Ignore rules in force in one directory: its own `.plutoignore` and its ancestors'.
#[derive(Clone, Default)]
pub struct Rules {
    stack: Vec<Arc<Gitignore>>,
}

impl Rules {
    /// Global rules from `--exclude` patterns, anchored at the snapshot root.
    pub fn from_patterns(root: &Path, patterns: &[String]) -> Result<Rules> {
        if patterns.is_empty() {
            return Ok(Rules::default());
        }
        let mut b = GitignoreBuilder::new(root);
        for p in patterns {
            b.add_line(None, p)
                .map_err(|e| Error::Invalid(format!("bad exclude pattern {p:?}: {e}")))?;
        }
        let g = b
            .build()
            .map_err(|e| Error::Invalid(format!("bad exclude patterns: {e}")))?;
        Ok(Rules {
            stack: vec![Arc::new(g)],
        })
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
        for g in self.stack.iter().rev() {
            let m = g.matched(path, is_dir);
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
