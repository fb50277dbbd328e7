//! `prune`: remove the objects no snapshot needs.
//!
//! Packs that hold only unneeded objects are deleted; packs that hold some are rewritten
//! ("repacked") with only the needed ones, most wasteful first, until the unused space left
//! is within `max_unused`; packs that no index lists (left by a killed command) are deleted.
//!
//! Order, so that SIGKILL at any instant leaves a valid repository:
//!   1. write the new packs (fsynced, renamed into place) — until step 2 they are unindexed
//!      garbage that the next prune removes;
//!   2. write new index files listing every pack that stays — from here both old and new
//!      index files are valid, and every object they name exists;
//!   3. delete the old index files — the remaining ones still name only existing packs;
//!   4. delete the old packs — no index names them any more.
//!
//! Prune needs the repository to itself (an exclusive lock), and refuses to run when a
//! snapshot cannot be read completely: deciding what is unused from a partial view would
//! delete data that a damaged snapshot still needs.

use crate::crypto::{object_aad, ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::index::IndexedPack;
use crate::pack::store::PackStore;
use crate::pack::writer::PackWriter;
use crate::pack::PackId;
use crate::progress::Progress;
use crate::repository::Repository;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Packs listed per new index file: small enough to rewrite cheaply, few enough files.
const PACKS_PER_INDEX_FILE: usize = 512;

#[derive(Default)]
pub struct PruneOptions<'a> {
    /// Unused bytes tolerated after prune, as a fraction (0..=1) of the bytes in packs.
    pub max_unused: f64,
    pub dry_run: bool,
    pub progress: Option<Arc<Progress>>,
    /// Called after each durable step ("pack-written", "index-written", "index-deleted",
    /// "pack-deleted"); tests use it to kill prune at chosen points.
    pub on_step: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// What prune found and did (or, with `dry_run`, would do). Sizes are bytes on disk.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs_before: usize,
    pub bytes_before: u64,
    pub objects_used: u64,
    pub objects_unused: u64,
    pub bytes_used: u64,
    pub bytes_unused: u64,
    /// Packs whose every object is still needed.
    pub packs_kept: usize,
    /// Packs rewritten without their unused objects.
    pub packs_repacked: usize,
    /// Packs holding nothing needed.
    pub packs_deleted: usize,
    /// Packs in no index file (left by an interrupted command).
    pub packs_unindexed: usize,
    pub bytes_unindexed: u64,
    pub objects_repacked: u64,
    pub bytes_repacked: u64,
    pub packs_written: usize,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    /// Unused bytes left in kept packs (within `max_unused`).
    pub bytes_unused_after: u64,
    pub packs_after: usize,
    pub bytes_after: u64,
    pub bytes_freed: u64,
}

/// An object's identity: its type and id (a chunk and a tree may share an id).
pub type ObjKey = (ObjType, ObjectId);

/// Every object (tree or chunk) some snapshot needs.
pub fn used_objects(repo: &Repository) -> Result<HashSet<ObjKey>> {
    let mut used = HashSet::new();
    for name in repo.snapshot_names()? {
        // An unreadable snapshot may name any pack: deleting nothing is the only safe guess.
        let snap = repo.read_snapshot(&name).map_err(|e| {
            Error::PruneRefused(format!(
                "snapshot {} cannot be read ({e}), so the data it needs is unknown; put the file back from a copy, or forget it with `pluto forget {}`, then prune",
                &name[..8],
                &name[..8]
            ))
        })?;
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            if !used.insert((ObjType::Tree, t)) {
                continue;
            }
            let tree = repo.read_tree(&t).map_err(|e| {
                Error::PruneRefused(format!(
                    "snapshot {} cannot be read completely ({e}); run `pluto repair index`, then `pluto repair snapshots` and forget the originals it replaces, then prune",
                    &name[..8]
                ))
            })?;
            for n in tree.nodes {
                if let Some(s) = n.subtree {
                    stack.push(s);
                }
                used.extend(n.chunks.into_iter().map(|c| (ObjType::Chunk, c)));
            }
        }
    }
    Ok(used)
}

/// One pack as prune sees it.
#[derive(Clone, Debug)]
pub struct PackUse {
    pub pack: IndexedPack,
    /// Entries (by position) holding a needed object that this pack is chosen to supply.
    pub keep: Vec<usize>,
    pub used_bytes: u64,
    pub unused_bytes: u64,
}

/// Assign every needed object to exactly one pack holding it, so duplicates (the same
/// object stored twice by concurrent snapshots) count as unused. Returns the packs and the
/// needed objects that no present pack holds.
pub fn assign(
    packs: &[IndexedPack],
    present: &HashSet<PackId>,
    used: &HashSet<ObjKey>,
) -> (Vec<PackUse>, Vec<ObjKey>) {
    let mut supplied: HashSet<ObjKey> = HashSet::new();
    let mut out = Vec::new();
    // Prefer the fullest packs as suppliers, so duplicates land in packs that go anyway.
    let mut order: Vec<&IndexedPack> = packs.iter().filter(|p| present.contains(&p.id)).collect();
    order.sort_by_key(|p| {
        let needed = p
            .entries
            .iter()
            .filter(|e| used.contains(&(e.ty, e.id)))
            .count();
        (std::cmp::Reverse(needed), p.id)
    });
    for p in order {
        let mut u = PackUse {
            pack: p.clone(),
            keep: Vec::new(),
            used_bytes: 0,
            unused_bytes: 0,
        };
        for (i, e) in p.entries.iter().enumerate() {
            if used.contains(&(e.ty, e.id)) && supplied.insert((e.ty, e.id)) {
                u.keep.push(i);
                u.used_bytes += e.stored_len as u64;
            } else {
                u.unused_bytes += e.stored_len as u64;
            }
        }
        out.push(u);
    }
    let mut missing: Vec<ObjKey> = used.difference(&supplied).copied().collect();
    missing.sort();
    (out, missing)
}

/// Which partly-used packs to rewrite: the most wasteful first, until the unused bytes that
/// stay are at most `max_unused` of the bytes in packs after prune. Returns pack positions.
pub fn choose_repacks(packs: &[PackUse], max_unused: f64) -> Vec<usize> {
    let mut partly: Vec<usize> = (0..packs.len())
        .filter(|&i| !packs[i].keep.is_empty() && packs[i].unused_bytes > 0)
        .collect();
    partly.sort_by(|&a, &b| {
        let frac = |i: usize| packs[i].unused_bytes as f64 / packs[i].pack.size.max(1) as f64;
        frac(b)
            .total_cmp(&frac(a))
            .then(packs[a].pack.id.cmp(&packs[b].pack.id))
    });
    let used: u64 = packs.iter().map(|p| p.used_bytes).sum();
    let mut unused: u64 = partly.iter().map(|&i| packs[i].unused_bytes).sum();
    let mut chosen = Vec::new();
    for i in partly {
        let limit = max_unused.clamp(0.0, 1.0) * (used + unused) as f64;
        if unused as f64 <= limit {
            break;
        }
        unused -= packs[i].unused_bytes;
        chosen.push(i);
    }
    chosen
}

pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let step = |s: &str| {
        if let Some(f) = opts.on_step {
            f(s)
        }
    };
    let mut r = PruneReport {
        dry_run: opts.dry_run,
        snapshots: repo.snapshot_names()?.len(),
        ..Default::default()
    };
    let used = used_objects(repo)?;

    // Every index file must be readable: the packs of an unreadable one would look
    // unindexed and be deleted.
    let old_index_files = repo.index_files()?;
    let mut indexed: BTreeMap<PackId, IndexedPack> = BTreeMap::new();
    for name in &old_index_files {
        let packs = repo.read_index_file(name).map_err(|e| {
            Error::PruneRefused(format!(
                "index file {} cannot be read ({e}), so the packs it lists would look unused; run `pluto repair index` first",
                &name[..8]
            ))
        })?;
        for p in packs {
            indexed.insert(p.id, p);
        }
    }
    let on_disk: HashMap<PackId, u64> = repo.store().list()?.into_iter().collect();
    r.packs_before = on_disk.len();
    r.bytes_before = on_disk.values().sum();
    let present: HashSet<PackId> = on_disk.keys().copied().collect();
    let packs: Vec<IndexedPack> = indexed.values().cloned().collect();
    let (uses, missing) = assign(&packs, &present, &used);
    if let Some(m) = missing.first() {
        return Err(Error::PruneRefused(format!(
            "{} object(s) that snapshots need are in no pack present, e.g. {} {}; run `pluto repair index`, then `pluto repair snapshots --forget`, then prune",
            missing.len(),
            if m.0 == ObjType::Tree {
                "tree"
            } else {
                "chunk"
            },
            m.1.hex()
        )));
    }
    let unindexed: Vec<(PackId, u64)> = on_disk
        .iter()
        .filter(|(id, _)| !indexed.contains_key(id))
        .map(|(id, s)| (*id, *s))
        .collect();
    r.packs_unindexed = unindexed.len();
    r.bytes_unindexed = unindexed.iter().map(|u| u.1).sum();
    r.objects_used = uses.iter().map(|u| u.keep.len() as u64).sum();
    r.objects_unused = uses
        .iter()
        .map(|u| (u.pack.entries.len() - u.keep.len()) as u64)
        .sum();
    r.bytes_used = uses.iter().map(|u| u.used_bytes).sum();
    r.bytes_unused = uses.iter().map(|u| u.unused_bytes).sum();

    let repack: HashSet<usize> = choose_repacks(&uses, opts.max_unused).into_iter().collect();
    let mut keep: Vec<&PackUse> = Vec::new();
    let mut rewrite: Vec<&PackUse> = Vec::new();
    let mut delete: Vec<PackId> = unindexed.iter().map(|u| u.0).collect();
    for (i, u) in uses.iter().enumerate() {
        if u.keep.is_empty() {
            r.packs_deleted += 1;
            delete.push(u.pack.id);
        } else if repack.contains(&i) {
            rewrite.push(u);
            delete.push(u.pack.id);
        } else {
            r.bytes_unused_after += u.unused_bytes;
            keep.push(u);
        }
    }
    r.packs_kept = keep.len();
    r.packs_repacked = rewrite.len();
    r.objects_repacked = rewrite.iter().map(|u| u.keep.len() as u64).sum();
    r.bytes_repacked = rewrite.iter().map(|u| u.used_bytes).sum();
    // Index entries of packs that are gone from disk (and hold nothing needed) are dropped too.
    let stale_entries = indexed.keys().any(|id| !present.contains(id));
    let nothing_to_do = delete.is_empty() && !stale_entries;

    if nothing_to_do {
        r.packs_after = on_disk.len();
        r.bytes_after = r.bytes_before;
        return Ok(r);
    }
    if opts.dry_run {
        // An estimate: rewritten objects fill new packs of the target size.
        let target = repo.config().pack_target_size.max(1);
        r.packs_after = keep.len() + r.bytes_repacked.div_ceil(target) as usize;
        r.bytes_after = keep.iter().map(|u| u.pack.size).sum::<u64>() + r.bytes_repacked;
        r.bytes_freed = r.bytes_before.saturating_sub(r.bytes_after);
        return Ok(r);
    }

    if let Some(p) = &opts.progress {
        p.add_total(
            rewrite.len() as u64,
            rewrite.iter().map(|u| u.pack.size).sum(),
        );
    }

    // 1. New packs: the needed objects of each rewritten pack, trees apart from chunks as
    //    `snapshot` writes them.
    let mut written: Vec<IndexedPack> = Vec::new();
    let mut writers: HashMap<u8, PackWriter> = HashMap::new();
    let target = repo.config().pack_target_size;
    let close = |w: PackWriter, written: &mut Vec<IndexedPack>| -> Result<()> {
        let f = w.finish()?;
        repo.store().put_file(&f.id, &f.tmp_path)?;
        written.push(IndexedPack {
            id: f.id,
            size: f.size,
            entries: f.entries,
        });
        step("pack-written");
        Ok(())
    };
    for u in &rewrite {
        let bytes = repo.store().get(&u.pack.id)?;
        let key = repo.pack_key(&u.pack.id)?;
        for &i in &u.keep {
            let e = &u.pack.entries[i];
            let name = u.pack.id.hex();
            let sealed = bytes
                .get(e.offset as usize..e.offset as usize + e.stored_len as usize)
                .ok_or_else(|| Error::corrupt("pack", &name, "object lies past the end"))?;
            // Carry the stored (compressed) bytes over as they are, but only after proving
            // they open and match their id: a repack must never launder damage.
            let stored = key
                .open(&object_aad(e.ty, e.flags, &e.id), sealed)
                .ok_or_else(|| {
                    Error::corrupt(
                        "pack",
                        &name,
                        format!("object {} fails authentication", e.id.hex()),
                    )
                })?;
            let plain = crate::compress::decompress(e.flags, stored.clone(), e.plain_len as usize)
                .ok_or_else(|| {
                    Error::corrupt(
                        "pack",
                        &name,
                        format!("object {} does not decompress", e.id.hex()),
                    )
                })?;
            if ObjectId::compute(&repo.keys().id, &plain) != e.id {
                return Err(Error::corrupt(
                    "pack",
                    &name,
                    format!("object {} does not match its id", e.id.hex()),
                ));
            }
            let slot = e.ty as u8;
            let mut w = match writers.remove(&slot) {
                Some(w) => w,
                None => PackWriter::create(&repo.tmp_dir(), &repo.keys().data)?,
            };
            w.add(e.ty, e.flags, e.id, &stored, e.plain_len)?;
            if w.len() >= target {
                close(w, &mut written)?;
            } else {
                writers.insert(slot, w);
            }
        }
        if let Some(p) = &opts.progress {
            p.add_done(1, u.pack.size);
        }
    }
    for ty in [ObjType::Chunk as u8, ObjType::Tree as u8] {
        if let Some(w) = writers.remove(&ty) {
            close(w, &mut written)?;
        }
    }
    r.packs_written = written.len();

    // 2. New index files: every pack that stays.
    let mut stays: Vec<IndexedPack> = keep.iter().map(|u| u.pack.clone()).collect();
    stays.extend(written.iter().cloned());
    let mut new_names = Vec::new();
    for group in stays.chunks(PACKS_PER_INDEX_FILE) {
        new_names.push(repo.write_index_file(group)?);
        step("index-written");
    }
    r.index_files_written = new_names.len();

    // 3. Old index files.
    for name in &old_index_files {
        if !new_names.contains(name) {
            repo.remove_index_file(name)?;
            r.index_files_removed += 1;
            step("index-deleted");
        }
    }
    crate::fsutil::sync_dir(&repo.root().join("index"))?;

    // 4. Old packs.
    for id in &delete {
        repo.store().remove(id)?;
        step("pack-deleted");
    }
    let after = repo.store().list()?;
    r.packs_after = after.len();
    r.bytes_after = after.iter().map(|a| a.1).sum();
    r.bytes_freed = r.bytes_before.saturating_sub(r.bytes_after);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::PackEntry;

    fn pack(n: u8, objs: &[u8]) -> IndexedPack {
        IndexedPack {
            id: PackId([n; 32]),
            size: 40 + 100 * objs.len() as u64 + 50,
            entries: objs
                .iter()
                .enumerate()
                .map(|(i, &o)| PackEntry {
                    ty: ObjType::Chunk,
                    flags: 0,
                    id: ObjectId([o; 32]),
                    offset: 40 + 100 * i as u32,
                    stored_len: 100,
                    plain_len: 72,
                })
                .collect(),
        }
    }

    fn ids(v: &[u8]) -> HashSet<ObjKey> {
        v.iter()
            .map(|&o| (ObjType::Chunk, ObjectId([o; 32])))
            .collect()
    }

    #[test]
    fn each_needed_object_is_supplied_once_and_missing_ones_are_named() {
        let packs = [pack(1, &[1, 2, 3]), pack(2, &[3, 4]), pack(3, &[9])];
        let present: HashSet<PackId> = [PackId([1; 32]), PackId([2; 32])].into();
        let (uses, missing) = assign(&packs, &present, &ids(&[1, 3, 4, 9]));
        assert_eq!(
            missing,
            vec![(ObjType::Chunk, ObjectId([9; 32]))],
            "pack 3 is not on disk"
        );
        let total_kept: usize = uses.iter().map(|u| u.keep.len()).sum();
        assert_eq!(total_kept, 3, "object 3 is supplied by one pack only");
        let unused: u64 = uses.iter().map(|u| u.unused_bytes).sum();
        assert_eq!(unused, 200, "object 2 and the duplicate of 3");
    }

    #[test]
    fn repacking_stops_once_the_unused_space_is_within_the_limit() {
        // Pack 1 is 75% unused, pack 2 25%, pack 3 fully used.
        let packs = [
            pack(1, &[1, 2, 3, 4]),
            pack(2, &[5, 6, 7, 8]),
            pack(3, &[9, 10, 11, 12]),
        ];
        let present = packs.iter().map(|p| p.id).collect();
        let (uses, _) = assign(&packs, &present, &ids(&[1, 5, 6, 7, 9, 10, 11, 12]));
        let pos = |n: u8| {
            uses.iter()
                .position(|u| u.pack.id == PackId([n; 32]))
                .unwrap()
        };
        // Unused: 400 of 1200. Zero tolerance rewrites both partly used packs, worst first.
        assert_eq!(choose_repacks(&uses, 0.0), [pos(1), pos(2)]);
        // 10% tolerance: after pack 1, 100 of 900 (11%) is still too much.
        assert_eq!(choose_repacks(&uses, 0.10), [pos(1), pos(2)]);
        // 15%: after rewriting pack 1, 100 of 900 unused is fine.
        assert_eq!(choose_repacks(&uses, 0.15), [pos(1)]);
        // 50%: 400 of 1200 unused is already within the limit.
        assert!(choose_repacks(&uses, 0.5).is_empty());
    }
}
