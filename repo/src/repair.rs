//! `repair index` and `repair snapshots`: what to do after `check` finds damage.
//!
//! `repair_index` rebuilds the index from the packs themselves: every pack is read whole and
//! checked against its name; a sound pack is indexed from its own header; the objects of a
//! damaged pack that still open and match their id are copied into a new pack and indexed,
//! the damaged pack itself is left unindexed (`prune` removes it). Order, so that SIGKILL at
//! any instant leaves a valid repository: new packs, then new index files, then the old
//! index files are deleted — at every moment the index files present name only packs that
//! are there (or were already gone before the repair).
//!
//! `repair_snapshots` writes, for each snapshot that names data which is gone, a new
//! snapshot without the files whose chunks are gone and with each directory whose tree is
//! gone left empty. The new one keeps the original's time, host and paths, is tagged
//! `repaired` and its message names the original, which stays until it is forgotten
//! (`forget: true` does that once the new one is written).

use crate::crypto::{object_aad, ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::index::{Index, IndexedPack};
use crate::pack::store::PackStore;
use crate::pack::writer::PackWriter;
use crate::pack::{read_header, PackId};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::restore::NotRestored;
use crate::snapshot::Snapshot;
use crate::tree::{Kind, Tree};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Packs listed per new index file, as `prune` writes them.
const PACKS_PER_INDEX_FILE: usize = 512;

/// The tag every snapshot written by `repair_snapshots` carries.
pub const REPAIRED_TAG: &str = "repaired";

#[derive(Default)]
pub struct RepairOptions<'a> {
    /// Report what would be done; write and delete nothing.
    pub dry_run: bool,
    /// `repair_snapshots`: forget each original once its repaired snapshot is written.
    pub forget: bool,
    /// `repair_snapshots`: also read every chunk a snapshot names (finds damaged content
    /// in packs that are still indexed; `repair_index` is the cheaper way to find it).
    pub read_data: bool,
    pub progress: Option<Arc<Progress>>,
    /// Called after each durable step ("pack-written", "index-written", "index-deleted",
    /// "snapshot-written"); tests use it to kill the repair at chosen points.
    pub on_step: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// A pack that does not hash to its name, or whose header does not open.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedPack {
    pub pack: String,
    pub reason: String,
    /// Objects it listed, and those still sound that were copied to a new pack.
    pub objects: usize,
    pub salvaged: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    /// Packs in the pack store, read and checked.
    pub packs: usize,
    /// Sound packs indexed from their own header.
    pub packs_indexed: usize,
    pub objects_indexed: u64,
    pub damaged_packs: Vec<DamagedPack>,
    /// New packs holding the sound objects of damaged ones.
    pub packs_written: usize,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    /// Packs the old index listed that are gone from the pack store.
    pub packs_missing: Vec<String>,
}

/// What one pack holds, as found by reading it.
enum PackState {
    Sound(IndexedPack),
    /// Damaged: the reason, how many objects its header lists, and the sound ones as
    /// (type, flags, id, stored bytes before sealing, plain length).
    Damaged(String, usize, Vec<(ObjType, u8, ObjectId, Vec<u8>, u32)>),
}

fn read_pack_state(repo: &Repository, id: PackId, size: u64) -> Result<PackState> {
    let name = id.hex();
    let bytes = match repo.store().get(&id) {
        Ok(b) => b,
        Err(e) if e.is_damage() => return Ok(PackState::Damaged(e.to_string(), 0, Vec::new())),
        Err(e) => return Err(e),
    };
    let sound_bytes = PackId::of_bytes(&bytes) == id;
    let entries = match read_header(&repo.keys().data, &name, &bytes) {
        Ok(e) => e,
        Err(e) => {
            let why = if sound_bytes {
                format!("its header does not open ({e}): not a pack of this repository?")
            } else {
                format!("does not hash to its name and its header does not open ({e})")
            };
            return Ok(PackState::Damaged(why, 0, Vec::new()));
        }
    };
    if sound_bytes {
        return Ok(PackState::Sound(IndexedPack { id, size, entries }));
    }
    let key = repo.pack_key(&id)?;
    let mut sound = Vec::new();
    for e in &entries {
        let Some(sealed) = bytes.get(e.offset as usize..e.offset as usize + e.stored_len as usize)
        else {
            continue;
        };
        let Some(stored) = key.open(&object_aad(e.ty, e.flags, &e.id), sealed) else {
            continue;
        };
        let Some(plain) =
            crate::compress::decompress(e.flags, stored.clone(), e.plain_len as usize)
        else {
            continue;
        };
        if ObjectId::compute(&repo.keys().id, &plain) == e.id {
            sound.push((e.ty, e.flags, e.id, stored, e.plain_len));
        }
    }
    Ok(PackState::Damaged(
        "does not hash to its name (damaged on disk)".into(),
        entries.len(),
        sound,
    ))
}

/// Write `packs` as new index files; returns their names.
fn write_index_files(
    repo: &Repository,
    packs: &[IndexedPack],
    step: &dyn Fn(&str),
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for group in packs.chunks(PACKS_PER_INDEX_FILE) {
        names.push(repo.write_index_file(group)?);
        step("index-written");
    }
    Ok(names)
}

/// Rebuild the index from the packs in the pack store.
pub fn repair_index(repo: &Repository, opts: &RepairOptions) -> Result<RepairIndexReport> {
    let step = |s: &str| {
        if let Some(f) = opts.on_step {
            f(s)
        }
    };
    let mut r = RepairIndexReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let old_files = repo.index_files()?;
    // Packs the old index names, from the files that can still be read: to name the lost.
    let mut old_packs: HashSet<PackId> = HashSet::new();
    for f in &old_files {
        if let Ok(packs) = repo.read_index_file(f) {
            old_packs.extend(packs.iter().map(|p| p.id));
        }
    }
    let on_disk = repo.store().list()?;
    r.packs = on_disk.len();
    let present: HashSet<PackId> = on_disk.iter().map(|p| p.0).collect();
    let mut missing: Vec<String> = old_packs
        .iter()
        .filter(|p| !present.contains(p))
        .map(|p| p.hex())
        .collect();
    missing.sort();
    r.packs_missing = missing;
    if let Some(p) = &opts.progress {
        p.add_total(on_disk.len() as u64, on_disk.iter().map(|p| p.1).sum());
    }
    let states: Vec<(PackId, PackState)> = on_disk
        .par_iter()
        .map(|&(id, size)| {
            let s = read_pack_state(repo, id, size);
            if let Some(p) = &opts.progress {
                p.add_done(1, size);
            }
            s.map(|s| (id, s))
        })
        .collect::<Result<_>>()?;
    let mut sound: Vec<IndexedPack> = Vec::new();
    let mut salvage = Vec::new();
    for (id, s) in states {
        match s {
            PackState::Sound(p) => sound.push(p),
            PackState::Damaged(reason, objects, objs) => {
                r.damaged_packs.push(DamagedPack {
                    pack: id.hex(),
                    reason,
                    objects,
                    salvaged: objs.len(),
                });
                salvage.extend(objs);
            }
        }
    }
    sound.sort_by_key(|p| p.id);
    r.packs_indexed = sound.len();
    r.objects_indexed = sound.iter().map(|p| p.entries.len() as u64).sum();
    // Objects a sound pack already holds need no copy.
    let held: HashSet<(u8, ObjectId)> = sound
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| (e.ty as u8, e.id)))
        .collect();
    let mut seen = HashSet::new();
    salvage.retain(|o| !held.contains(&(o.0 as u8, o.2)) && seen.insert((o.0 as u8, o.2)));
    if opts.dry_run {
        return Ok(r);
    }

    // 1. Sound objects of damaged packs into new packs, trees apart from chunks.
    let mut writers: HashMap<u8, PackWriter> = HashMap::new();
    let target = repo.config().pack_target_size;
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let close = |w: PackWriter, out: &mut Vec<IndexedPack>| -> Result<()> {
        let f = w.finish()?;
        repo.store().put_file(&f.id, &f.tmp_path)?;
        out.push(IndexedPack {
            id: f.id,
            size: f.size,
            entries: f.entries,
        });
        step("pack-written");
        Ok(())
    };
    for (ty, flags, id, stored, plain_len) in &salvage {
        let slot = *ty as u8;
        let mut w = match writers.remove(&slot) {
            Some(w) => w,
            None => PackWriter::create(&repo.tmp_dir(), &repo.keys().data)?,
        };
        w.add(*ty, *flags, *id, stored, *plain_len)?;
        if w.len() >= target {
            close(w, &mut new_packs)?;
        } else {
            writers.insert(slot, w);
        }
    }
    let mut rest: Vec<(u8, PackWriter)> = writers.into_iter().collect();
    rest.sort_by_key(|w| w.0);
    for (_, w) in rest {
        close(w, &mut new_packs)?;
    }
    r.packs_written = new_packs.len();
    sound.extend(new_packs);

    // 2. New index files, then 3. the old ones go.
    let written = write_index_files(repo, &sound, &step)?;
    r.index_files_written = written.len();
    crate::fsutil::sync_dir(&repo.root().join("index"))?;
    for f in &old_files {
        if !written.contains(f) {
            repo.remove_index_file(f)?;
            r.index_files_removed += 1;
            step("index-deleted");
        }
    }
    crate::fsutil::sync_dir(&repo.root().join("index"))?;
    Ok(r)
}

/// One snapshot that names data which is gone.
#[derive(Debug, Clone, Serialize)]
pub struct RepairedSnapshot {
    pub original: String,
    /// The repaired snapshot written in its place (none on a dry run).
    pub new: Option<String>,
    /// Paths (relative to the snapshot's root) left out, and why; a directory ending in
    /// `/` is kept, empty.
    pub dropped: Vec<NotRestored>,
    /// The original was forgotten (`forget`).
    pub forgotten: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    /// Snapshots read.
    pub snapshots: usize,
    pub repaired: Vec<RepairedSnapshot>,
    /// Snapshot files that cannot be read at all: only `forget` helps them.
    pub unreadable: Vec<String>,
}

/// A tree after repair.
#[derive(Clone)]
enum Fixed {
    Same,
    New(ObjectId, Vec<NotRestored>, u64, u64),
    Gone(String),
}

struct Fixer<'r> {
    repo: &'r Repository,
    index: &'r Index,
    present: HashSet<PackId>,
    read_data: bool,
    verified: HashMap<(ObjType, ObjectId), Option<String>>,
    memo: HashMap<ObjectId, Fixed>,
    /// New trees to store: id → plaintext.
    new_trees: Vec<(ObjectId, Vec<u8>)>,
    new_ids: HashSet<ObjectId>,
    unindexed: Option<HashSet<(ObjType, ObjectId)>>,
}

impl Fixer<'_> {
    /// Objects in sound packs that no index lists (read on the first miss).
    fn unindexed(&mut self) -> Result<&HashSet<(ObjType, ObjectId)>> {
        if self.unindexed.is_none() {
            let mut ids = HashSet::new();
            for p in &self.present {
                if self.index.has_pack(p) {
                    continue;
                }
                let Ok(bytes) = self.repo.store().get(p) else {
                    continue;
                };
                if PackId::of_bytes(&bytes) != *p {
                    continue;
                }
                if let Ok(entries) = read_header(&self.repo.keys().data, &p.hex(), &bytes) {
                    ids.extend(entries.iter().map(|e| (e.ty, e.id)));
                }
            }
            self.unindexed = Some(ids);
        }
        Ok(self.unindexed.as_ref().expect("just filled"))
    }

    /// Why the object cannot be read, or `None` when it can. An object that is only
    /// missing from the index is not gone: that is `repair index`'s to bring back.
    fn gone(&mut self, ty: ObjType, id: &ObjectId) -> Result<Option<String>> {
        let g = self.gone_inner(ty, id);
        if let Some(why) = &g {
            if self.index.get(ty, id).is_none() && self.unindexed()?.contains(&(ty, *id)) {
                return Err(Error::Invalid(format!(
                    "{} is in a pack that no index lists ({why}): run `pluto repair index` first, then `pluto repair snapshots`",
                    id.hex()
                )));
            }
        }
        Ok(g)
    }

    fn gone_inner(&mut self, ty: ObjType, id: &ObjectId) -> Option<String> {
        let Some(loc) = self.index.get(ty, id) else {
            return Some(format!("{} is not in the index", id.hex()));
        };
        if !self.present.contains(&loc.pack) {
            return Some(format!(
                "{} is in pack {}, which is missing",
                id.hex(),
                loc.pack.hex()
            ));
        }
        if !self.read_data && ty == ObjType::Chunk {
            return None;
        }
        if let Some(v) = self.verified.get(&(ty, *id)) {
            return v.clone();
        }
        let v = self.repo.read_object(id, ty).err().map(|e| e.to_string());
        self.verified.insert((ty, *id), v.clone());
        v
    }

    fn fix(&mut self, id: ObjectId) -> Result<Fixed> {
        if let Some(f) = self.memo.get(&id) {
            return Ok(f.clone());
        }
        let out = self.fix_uncached(id)?;
        self.memo.insert(id, out.clone());
        Ok(out)
    }

    fn fix_uncached(&mut self, id: ObjectId) -> Result<Fixed> {
        if let Some(why) = self.gone(ObjType::Tree, &id)? {
            return Ok(Fixed::Gone(format!("tree {why}")));
        }
        let tree = match self.repo.read_tree(&id) {
            Ok(t) => t,
            Err(e) if e.is_damage() => return Ok(Fixed::Gone(e.to_string())),
            Err(e) => return Err(e),
        };
        let mut changed = false;
        let mut dropped = Vec::new();
        let (mut files_lost, mut bytes_lost) = (0u64, 0u64);
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut n in tree.nodes {
            let name = n.name_lossy();
            match n.kind {
                Kind::Dir => {
                    if let Some(sub) = n.subtree {
                        match self.fix(sub)? {
                            Fixed::Same => {}
                            Fixed::New(t, d, f, b) => {
                                n.subtree = Some(t);
                                changed = true;
                                files_lost += f;
                                bytes_lost += b;
                                dropped.extend(d.into_iter().map(|x| NotRestored {
                                    path: format!("{name}/{}", x.path),
                                    reason: x.reason,
                                }));
                            }
                            Fixed::Gone(why) => {
                                // Kept as an empty directory: the path still says what was there.
                                n.subtree = None;
                                changed = true;
                                dropped.push(NotRestored {
                                    path: format!("{name}/"),
                                    reason: format!("its contents are gone ({why}); kept empty"),
                                });
                            }
                        }
                    }
                    nodes.push(n);
                }
                Kind::File => {
                    let mut why = None;
                    for c in &n.chunks {
                        if let Some(w) = self.gone(ObjType::Chunk, c)? {
                            why = Some(format!("chunk {w}"));
                            break;
                        }
                    }
                    match why {
                        Some(w) => {
                            changed = true;
                            files_lost += 1;
                            bytes_lost += n.size;
                            dropped.push(NotRestored {
                                path: name,
                                reason: w,
                            });
                        }
                        None => nodes.push(n),
                    }
                }
                _ => nodes.push(n),
            }
        }
        if !changed {
            return Ok(Fixed::Same);
        }
        let plain = Tree::new(nodes).encode();
        let new_id = ObjectId::compute(&self.repo.keys().id, &plain);
        let stored = matches!(self.index.get(ObjType::Tree, &new_id), Some(l) if self.present.contains(&l.pack));
        if !stored && self.new_ids.insert(new_id) {
            self.new_trees.push((new_id, plain));
        }
        Ok(Fixed::New(new_id, dropped, files_lost, bytes_lost))
    }
}

/// Write repaired snapshots for every snapshot that names data which is gone.
pub fn repair_snapshots(repo: &Repository, opts: &RepairOptions) -> Result<RepairSnapshotsReport> {
    let step = |s: &str| {
        if let Some(f) = opts.on_step {
            f(s)
        }
    };
    // From a partial index, data that is there would look gone and be dropped.
    for f in repo.index_files()? {
        if let Err(e) = repo.read_index_file(&f) {
            return Err(Error::Invalid(format!(
                "index file {f} cannot be read ({e}): run `pluto repair index` first, then `pluto repair snapshots`"
            )));
        }
    }
    let (snaps, unreadable) = repo.snapshots_and_damaged()?;
    let mut r = RepairSnapshotsReport {
        dry_run: opts.dry_run,
        snapshots: snaps.len(),
        unreadable,
        ..Default::default()
    };
    let index = repo.index()?;
    let mut fixer = Fixer {
        repo,
        index,
        present: repo.store().list()?.into_iter().map(|p| p.0).collect(),
        read_data: opts.read_data,
        verified: HashMap::new(),
        memo: HashMap::new(),
        new_trees: Vec::new(),
        new_ids: HashSet::new(),
        unindexed: None,
    };
    if let Some(p) = &opts.progress {
        p.add_total(snaps.len() as u64, 0);
    }
    let mut plans: Vec<(usize, Snapshot, Vec<NotRestored>)> = Vec::new();
    for (i, s) in snaps.iter().enumerate() {
        let fixed = fixer.fix(s.snapshot.tree)?;
        if let Some(p) = &opts.progress {
            p.add_done(1, 0);
        }
        let (tree, dropped, files, bytes) = match fixed {
            Fixed::Same => continue,
            Fixed::New(t, d, f, b) => (t, d, f, b),
            Fixed::Gone(why) => {
                // Nothing of it is left: an empty root stands in.
                let plain = Tree::new(Vec::new()).encode();
                let id = ObjectId::compute(&repo.keys().id, &plain);
                if index.get(ObjType::Tree, &id).is_none() && fixer.new_ids.insert(id) {
                    fixer.new_trees.push((id, plain));
                }
                let d = vec![NotRestored {
                    path: "/".into(),
                    reason: format!("the whole snapshot is gone ({why})"),
                }];
                (id, d, s.snapshot.stats.files, s.snapshot.stats.bytes)
            }
        };
        let mut new = s.snapshot.clone();
        new.tree = tree;
        new.stats.files = new.stats.files.saturating_sub(files);
        new.stats.bytes = new.stats.bytes.saturating_sub(bytes);
        if !new.tags.iter().any(|t| t == REPAIRED_TAG) {
            new.tags.push(REPAIRED_TAG.into());
        }
        let note = format!(
            "repaired from snapshot {}: {} path(s) whose data is gone were left out",
            s.id,
            dropped.len()
        );
        new.message = if new.message.is_empty() {
            note
        } else {
            format!("{}\n\n{note}", new.message)
        };
        plans.push((i, new, dropped));
    }
    if opts.dry_run {
        r.repaired = plans
            .into_iter()
            .map(|(i, _, dropped)| RepairedSnapshot {
                original: snaps[i].id.clone(),
                new: None,
                dropped,
                forgotten: false,
            })
            .collect();
        return Ok(r);
    }

    // New trees, then their index file, then the snapshots, then (asked) the originals go.
    if !fixer.new_trees.is_empty() {
        let mut w = PackWriter::create(&repo.tmp_dir(), &repo.keys().data)?;
        let mut packs = Vec::new();
        let level = repo.config().compression_level;
        for (id, plain) in &fixer.new_trees {
            let (flags, stored) = crate::compress::maybe_compress(plain, level);
            w.add(ObjType::Tree, flags, *id, &stored, plain.len() as u32)?;
            if w.len() >= repo.config().pack_target_size {
                let full = std::mem::replace(
                    &mut w,
                    PackWriter::create(&repo.tmp_dir(), &repo.keys().data)?,
                );
                packs.push(finish_pack(repo, full)?);
                step("pack-written");
            }
        }
        if w.is_empty() {
            w.abandon();
        } else {
            packs.push(finish_pack(repo, w)?);
            step("pack-written");
        }
        write_index_files(repo, &packs, &step)?;
    }
    for (i, new, dropped) in plans {
        let name = repo.write_snapshot(&new)?;
        step("snapshot-written");
        let original = snaps[i].id.clone();
        if opts.forget {
            repo.remove_snapshot(&original)?;
        }
        r.repaired.push(RepairedSnapshot {
            original,
            new: Some(name),
            dropped,
            forgotten: opts.forget,
        });
    }
    Ok(r)
}

fn finish_pack(repo: &Repository, w: PackWriter) -> Result<IndexedPack> {
    let f = w.finish()?;
    repo.store().put_file(&f.id, &f.tmp_path)?;
    Ok(IndexedPack {
        id: f.id,
        size: f.size,
        entries: f.entries,
    })
}
