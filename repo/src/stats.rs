//! `stats`: how much a snapshot (or the repository) holds, and what deduplication and
//! compression save.
//!
//! * logical bytes: the sum of file sizes, each path counted (what a plain copy would take);
//! * unique bytes: the plaintext of the distinct chunks (after deduplication);
//! * stored bytes: what those distinct objects (chunks and trees) take in packs, sealed;
//! * dedup ratio = logical / unique; compression ratio = unique / stored.

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::pack::store::PackStore;
use crate::repository::Repository;
use crate::tree::{Kind, Tree};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Usage {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub logical_bytes: u64,
    pub chunks: u64,
    pub trees: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
}

/// Decoded trees, shared between the snapshots of one `stats` run.
#[derive(Default)]
pub struct TreeCache(HashMap<ObjectId, Arc<Tree>>);

impl TreeCache {
    fn get(&mut self, repo: &Repository, id: &ObjectId) -> Result<Arc<Tree>> {
        if let Some(t) = self.0.get(id) {
            return Ok(t.clone());
        }
        let t = Arc::new(repo.read_tree(id)?);
        self.0.insert(*id, t.clone());
        Ok(t)
    }
}

pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// Usage of the snapshots with these root trees taken together: files and logical bytes
/// add up per snapshot, objects are counted once however many snapshots share them.
pub fn usage(repo: &Repository, roots: &[ObjectId], cache: &mut TreeCache) -> Result<Usage> {
    let mut u = Usage::default();
    let mut chunks: HashSet<ObjectId> = HashSet::new();
    let mut trees: HashSet<ObjectId> = HashSet::new();
    for root in roots {
        let mut stack = vec![*root];
        while let Some(t) = stack.pop() {
            trees.insert(t);
            let tree = cache.get(repo, &t)?;
            for n in &tree.nodes {
                match n.kind {
                    Kind::File => {
                        u.files += 1;
                        u.logical_bytes += n.size;
                        chunks.extend(n.chunks.iter().copied());
                    }
                    Kind::Dir => {
                        u.dirs += 1;
                        if let Some(s) = n.subtree {
                            stack.push(s);
                        }
                    }
                    Kind::Symlink => u.symlinks += 1,
                    // FIFOs and devices hold no data: nothing to add up.
                    Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => {}
                }
            }
        }
    }
    let index = repo.index()?;
    let typed = chunks
        .iter()
        .map(|c| (ObjType::Chunk, c))
        .chain(trees.iter().map(|t| (ObjType::Tree, t)));
    for (ty, id) in typed {
        let loc = index
            .get(ty, id)
            .ok_or_else(|| Error::ObjectMissing { id: id.hex() })?;
        u.stored_bytes += loc.stored_len as u64;
        if ty == ObjType::Chunk {
            u.unique_bytes += loc.plain_len as u64;
        }
    }
    u.chunks = chunks.len() as u64;
    u.trees = trees.len() as u64;
    u.dedup_ratio = ratio(u.logical_bytes, u.unique_bytes);
    u.compression_ratio = ratio(u.unique_bytes, u.stored_bytes);
    Ok(u)
}

/// The repository as a whole: what snapshots need, and what the files on disk take.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RepositoryUsage {
    pub snapshots: usize,
    pub usage: Usage,
    pub packs: usize,
    pub pack_bytes: u64,
    pub index_files: usize,
    pub index_bytes: u64,
    pub snapshot_bytes: u64,
    /// Bytes in packs that no snapshot needs (what `prune` can free).
    pub unused_bytes: u64,
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn repository_usage(
    repo: &Repository,
    roots: &[ObjectId],
    cache: &mut TreeCache,
) -> Result<RepositoryUsage> {
    let usage = usage(repo, roots, cache)?;
    let packs = repo.store().list()?;
    let pack_bytes: u64 = packs.iter().map(|p| p.1).sum();
    Ok(RepositoryUsage {
        snapshots: roots.len(),
        packs: packs.len(),
        pack_bytes,
        index_files: repo.index_files()?.len(),
        index_bytes: dir_bytes(&repo.root().join("index")),
        snapshot_bytes: dir_bytes(&repo.root().join("snapshots")),
        unused_bytes: pack_bytes.saturating_sub(usage.stored_bytes),
        usage,
    })
}
