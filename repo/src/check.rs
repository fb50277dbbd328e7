//! `check`: is every index, pack, snapshot and tree readable and consistent?
//! With `read_data`, every object is decrypted and checked against its id.
//!
//! `check` is the proof a restore relies on: everything `checkout` reads is verified here
//! (contents with `read_data`), so that when `check --read-data` reports no errors,
//! `checkout` of every snapshot succeeds. Each reference a tree makes is followed to the
//! index (the object is there, with the type the reference expects), to the pack (present,
//! with the header the index copied) and, with `read_data`, to the object's bytes.

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::index::{Index, IndexedPack, Location};
use crate::pack::store::PackStore;
use crate::pack::{read_header, PackId};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::tree::Kind;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

#[derive(Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only this fraction (0..=1] of the packs, chosen at random.
    pub read_data_subset: Option<f64>,
    pub progress: Option<Arc<Progress>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// "index", "pack", "snapshot", "tree", "object" or "file".
    pub kind: String,
    pub name: String,
    pub message: String,
    /// Snapshots that cannot be fully restored because of this problem.
    pub affected_snapshots: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub index_files: usize,
    pub packs: usize,
    pub snapshots: usize,
    pub trees: usize,
    pub packs_read: usize,
    pub objects_read: u64,
    pub bytes_read: u64,
    pub errors: Vec<Problem>,
    pub warnings: Vec<String>,
    /// The commands that repair what was found, in the order to run them.
    pub repairs: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
    fn err(&mut self, kind: &str, name: impl Into<String>, message: impl Into<String>) -> usize {
        self.errors.push(Problem {
            kind: kind.into(),
            name: name.into(),
            message: message.into(),
            affected_snapshots: Vec::new(),
        });
        self.errors.len() - 1
    }
}

fn problem_of(e: &Error) -> (String, String, String) {
    match e {
        Error::Corrupt { what, name, reason } => (what.to_string(), name.clone(), reason.clone()),
        Error::PackMissing { pack } => ("pack".into(), pack.clone(), "missing".into()),
        Error::ObjectMissing { id } => ("object".into(), id.clone(), "not in the index".into()),
        other => ("repository".into(), String::new(), other.to_string()),
    }
}

/// The index entry of `id` as an object of type `ty`, or why there is none.
fn locate(index: &Index, ty: ObjType, id: &ObjectId) -> Result<Location, String> {
    index.get(ty, id).ok_or_else(|| {
        if index.get(other(ty), id).is_some() {
            format!(
                "is not in the index as a {ty:?} (only as a {:?})",
                other(ty)
            )
        } else {
            "not in the index".into()
        }
    })
}

fn other(ty: ObjType) -> ObjType {
    match ty {
        ObjType::Tree => ObjType::Chunk,
        ObjType::Chunk => ObjType::Tree,
    }
}

/// What one tree holds that matters to the snapshots reaching it.
#[derive(Default)]
struct TreeInfo {
    subtrees: Vec<ObjectId>,
    /// Problems (positions in the report's errors) found in this tree or what it names.
    problems: Vec<usize>,
    /// Files with more than one link: (dev, inode) → (size, chunks, name).
    links: Vec<((u64, u64), u64, blake3::Hash, String)>,
}

pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    let mut r = CheckReport::default();

    // 1. Index files, each on its own so one bad file does not hide the others.
    let mut index = Index::new();
    let mut indexed: HashMap<PackId, IndexedPack> = HashMap::new();
    let names = repo.index_files()?;
    r.index_files = names.len();
    let mut index_damaged = false;
    for name in &names {
        match repo.read_index_file(name) {
            Ok(packs) => {
                for p in packs {
                    index.add_pack(&p);
                    indexed.insert(p.id, p);
                }
            }
            Err(e) => {
                index_damaged = true;
                let (k, n, m) = problem_of(&e);
                r.err(&k, n, m);
            }
        }
    }
    index.finish();
    r.packs = indexed.len();

    // 2. Every indexed pack exists, has the recorded size, and its header agrees.
    let on_disk: HashMap<PackId, u64> = repo.store().list()?.into_iter().collect();
    let mut unindexed = 0usize;
    for (id, size) in &on_disk {
        if !indexed.contains_key(id) {
            unindexed += 1;
            r.warnings.push(format!(
                "pack {} ({size} bytes) is in no index: left by an interrupted command; `pluto prune` removes it",
                id.hex()
            ));
        }
    }
    let mut pack_list: Vec<&IndexedPack> = indexed.values().collect();
    pack_list.sort_by_key(|p| p.id);
    let header_problems: Vec<(PackId, String)> = pack_list
        .par_iter()
        .filter_map(|p| {
            check_pack_header(repo, p, on_disk.get(&p.id).copied())
                .err()
                .map(|m| (p.id, m))
        })
        .collect();
    // Packs whose objects cannot be trusted: every snapshot reaching one of them is affected.
    let mut bad_packs: HashMap<PackId, usize> = HashMap::new();
    for (id, m) in header_problems {
        let i = r.err("pack", id.hex(), m);
        bad_packs.insert(id, i);
    }

    // 3. Read every object (or a random subset of the packs).
    let mut bad_objects: HashMap<(ObjType, ObjectId), usize> = HashMap::new();
    if opts.read_data {
        let mut chosen: Vec<&IndexedPack> = pack_list
            .iter()
            .copied()
            .filter(|p| on_disk.contains_key(&p.id))
            .collect();
        if let Some(f) = opts.read_data_subset {
            let want = ((chosen.len() as f64) * f.clamp(0.0, 1.0)).ceil() as usize;
            let mut keyed: Vec<(u64, &IndexedPack)> = chosen
                .into_iter()
                .map(|p| {
                    let mut b = [0u8; 8];
                    crate::crypto::random_bytes(&mut b);
                    (u64::from_le_bytes(b), p)
                })
                .collect();
            keyed.sort_by_key(|k| k.0);
            chosen = keyed.into_iter().take(want).map(|k| k.1).collect();
        }
        if let Some(p) = &opts.progress {
            p.add_total(chosen.len() as u64, chosen.iter().map(|p| p.size).sum());
        }
        let results: Vec<(PackId, PackReadResult)> = chosen
            .par_iter()
            .map(|p| {
                let res = read_pack(repo, p);
                if let Some(pr) = &opts.progress {
                    pr.add_done(1, p.size);
                }
                (p.id, res)
            })
            .collect();
        for (pack, res) in results {
            r.objects_read += res.objects;
            r.bytes_read += res.bytes;
            if let Some(m) = res.pack_problem {
                let i = r.err("pack", pack.hex(), m);
                bad_packs.entry(pack).or_insert(i);
            }
            for (key, m) in res.bad {
                let i = r.err("pack", pack.hex(), m);
                bad_objects.insert(key, i);
            }
        }
        r.packs_read = chosen.len();
    }

    // 4. Snapshots and every tree they reach: each reference is followed to the index, the
    //    pack and (with read_data) the object, and each file's size is the sum of its chunks.
    let mut snapshot_trees: Vec<(String, ObjectId)> = Vec::new();
    let mut bad_snapshots = Vec::new();
    for name in repo.snapshot_names()? {
        match repo.read_snapshot(&name) {
            Ok(s) => snapshot_trees.push((name, s.tree)),
            Err(e) => {
                let (k, n, m) = problem_of(&e);
                r.err(&k, n, m);
                bad_snapshots.push(name);
            }
        }
    }
    r.snapshots = snapshot_trees.len();
    let mut trees: HashMap<ObjectId, TreeInfo> = HashMap::new();
    let mut stack: Vec<ObjectId> = snapshot_trees.iter().map(|s| s.1).collect();
    let mut missing_refs = false;
    while let Some(t) = stack.pop() {
        if trees.contains_key(&t) {
            continue;
        }
        let mut info = TreeInfo::default();
        let tree = match locate(&index, ObjType::Tree, &t) {
            Err(m) => {
                missing_refs = true;
                info.problems.push(r.err("tree", t.hex(), m));
                None
            }
            Ok(loc) => {
                if let Some(&i) = bad_packs.get(&loc.pack) {
                    info.problems.push(i);
                }
                if let Some(&i) = bad_objects.get(&(ObjType::Tree, t)) {
                    info.problems.push(i);
                }
                let read = repo
                    .store()
                    .get_range(&loc.pack, loc.offset as u64, loc.stored_len as u64)
                    .and_then(|b| repo.open_object(&t, &loc, &b))
                    .and_then(|b| crate::tree::Tree::decode(&b, &t));
                match read {
                    Ok(tree) => Some(tree),
                    Err(e) => {
                        // A missing pack is reported once, as the pack's problem.
                        if !bad_packs.contains_key(&loc.pack) {
                            let (k, n, m) = problem_of(&e);
                            let msg = if n == t.hex() {
                                m
                            } else {
                                format!("tree {}: {m}", t.hex())
                            };
                            info.problems.push(r.err(&k, n, msg));
                        }
                        None
                    }
                }
            }
        };
        for n in tree.iter().flat_map(|t| t.nodes.iter()) {
            if let Some(s) = n.subtree {
                if n.kind == Kind::Dir {
                    info.subtrees.push(s);
                    stack.push(s);
                }
            }
            if n.kind != Kind::File {
                continue;
            }
            let mut size = 0u64;
            let mut complete = true;
            let mut missing = 0usize;
            let mut first_missing = String::new();
            for c in &n.chunks {
                match locate(&index, ObjType::Chunk, c) {
                    Err(m) => {
                        complete = false;
                        missing += 1;
                        if first_missing.is_empty() {
                            first_missing = format!("chunk {} {m}", c.hex());
                        }
                    }
                    Ok(loc) => {
                        size += loc.plain_len as u64;
                        if let Some(&i) = bad_packs.get(&loc.pack) {
                            info.problems.push(i);
                        }
                        if let Some(&i) = bad_objects.get(&(ObjType::Chunk, *c)) {
                            info.problems.push(i);
                        }
                    }
                }
            }
            if missing > 0 {
                missing_refs = true;
                let msg = if missing == 1 {
                    first_missing
                } else {
                    format!("{missing} chunks are missing, e.g. {first_missing}")
                };
                info.problems.push(r.err(
                    "file",
                    n.name_lossy(),
                    format!("{msg} (tree {})", t.hex()),
                ));
            } else if complete && size != n.size {
                info.problems.push(r.err(
                    "file",
                    n.name_lossy(),
                    format!(
                        "its chunks hold {size} bytes but its entry says {} (tree {})",
                        n.size,
                        t.hex()
                    ),
                ));
            }
            if n.nlink > 1 {
                let mut h = blake3::Hasher::new();
                for c in &n.chunks {
                    h.update(&c.0);
                }
                info.links
                    .push(((n.dev, n.inode), n.size, h.finalize(), n.name_lossy()));
            }
        }
        info.problems.sort_unstable();
        info.problems.dedup();
        trees.insert(t, info);
    }
    r.trees = trees.len();

    // 5. Per snapshot: which problems it reaches, and whether its hard-link groups agree
    //    (a restore writes a group's first path and links the others to it).
    let any_links = trees.values().any(|t| !t.links.is_empty());
    let any_problems = trees.values().any(|t| !t.problems.is_empty());
    if any_links || any_problems {
        for (snap, root) in &snapshot_trees {
            let mut seen: HashSet<ObjectId> = HashSet::new();
            let mut hit: BTreeSet<usize> = BTreeSet::new();
            let mut groups: HashMap<(u64, u64), (u64, blake3::Hash, String)> = HashMap::new();
            let mut stack = vec![*root];
            while let Some(t) = stack.pop() {
                if !seen.insert(t) {
                    continue;
                }
                let Some(info) = trees.get(&t) else { continue };
                hit.extend(info.problems.iter().copied());
                stack.extend(info.subtrees.iter().copied());
                for (key, size, hash, name) in &info.links {
                    match groups.get(key) {
                        None => {
                            groups.insert(*key, (*size, *hash, name.clone()));
                        }
                        Some((s, h, first)) if s != size || h != hash => {
                            let msg = format!(
                                "hard-linked to {first:?} (inode {}) but differs from it in size or content",
                                key.1
                            );
                            let i = r.err("file", name.clone(), msg);
                            hit.insert(i);
                        }
                        Some(_) => {}
                    }
                }
            }
            for i in hit {
                let a = &mut r.errors[i].affected_snapshots;
                if !a.contains(snap) {
                    a.push(snap.clone());
                }
            }
        }
    }

    // 6. What to run: the index first (it can be rebuilt from the packs), then the
    //    snapshots whose data is gone, and forget the snapshot files that cannot be read.
    let pack_damage = !bad_packs.is_empty();
    if index_damaged || pack_damage || missing_refs || (unindexed > 0 && !r.errors.is_empty()) {
        r.repairs.push("pluto repair index".into());
    }
    let data_lost = r.errors.iter().any(|p| !p.affected_snapshots.is_empty());
    if data_lost {
        r.repairs.push("pluto repair snapshots".into());
    }
    for s in &bad_snapshots {
        r.repairs.push(format!("pluto forget {s}"));
    }
    Ok(r)
}

fn check_pack_header(
    repo: &Repository,
    p: &IndexedPack,
    size_on_disk: Option<u64>,
) -> Result<(), String> {
    let Some(size) = size_on_disk else {
        return Err("missing from the pack store".into());
    };
    if size != p.size {
        return Err(format!("is {size} bytes but the index says {}", p.size));
    }
    let tail_len =
        (size as usize).min(4 + p.entries.len() * crate::pack::HEADER_ENTRY_LEN + 64 + 28);
    let head = repo
        .store()
        .get_range(&p.id, 0, crate::pack::PACK_PREFIX_LEN as u64)
        .map_err(|e| e.to_string())?;
    let tail = repo
        .store()
        .get_range(&p.id, size - tail_len as u64, tail_len as u64)
        .map_err(|e| e.to_string())?;
    if tail.len() < 4 {
        return Err("too short to hold a header".into());
    }
    let header_len = u32::from_le_bytes(tail[tail.len() - 4..].try_into().unwrap()) as usize;
    if header_len + 4 > tail.len() {
        return Err("header length does not match the index".into());
    }
    let header = &tail[tail.len() - 4 - header_len..tail.len() - 4];
    let body_end = size - 4 - header_len as u64;
    let entries =
        crate::pack::parse_header(&repo.keys().data, &p.id.hex(), &head, header, body_end)
            .map_err(|e| match e {
                Error::Corrupt { reason, .. } => reason,
                o => o.to_string(),
            })?;
    if entries != p.entries {
        return Err("header does not match the index".into());
    }
    Ok(())
}

/// What reading a whole pack found.
struct PackReadResult {
    objects: u64,
    bytes: u64,
    /// The pack as a whole is damaged (does not hash to its name, cannot be read).
    pack_problem: Option<String>,
    /// Objects that do not open or do not match their id.
    bad: Vec<((ObjType, ObjectId), String)>,
}

/// Read a whole pack: its bytes hash to its name, and every object opens and matches its id.
fn read_pack(repo: &Repository, p: &IndexedPack) -> PackReadResult {
    let mut out = PackReadResult {
        objects: 0,
        bytes: 0,
        pack_problem: None,
        bad: Vec::new(),
    };
    let name = p.id.hex();
    let bytes = match repo.store().get(&p.id) {
        Ok(b) => b,
        Err(e) => {
            out.pack_problem = Some(e.to_string());
            return out;
        }
    };
    out.bytes = bytes.len() as u64;
    if PackId::of_bytes(&bytes) != p.id {
        out.pack_problem =
            Some("content does not hash to the pack's name (damaged on disk)".to_string());
    }
    let entries = match read_header(&repo.keys().data, &name, &bytes) {
        Ok(e) => e,
        Err(_) => p.entries.clone(),
    };
    for e in &entries {
        let loc = Location {
            pack: p.id,
            ty: e.ty,
            flags: e.flags,
            offset: e.offset,
            stored_len: e.stored_len,
            plain_len: e.plain_len,
        };
        let slice = bytes.get(e.offset as usize..(e.offset as usize + e.stored_len as usize));
        let res = match slice {
            Some(s) => repo.open_object(&e.id, &loc, s).map(|_| ()),
            None => Err(Error::corrupt(
                "pack",
                name.clone(),
                "object lies past the end (truncated)",
            )),
        };
        if let Err(err) = res {
            let msg = match err {
                Error::Corrupt { reason, .. } => reason,
                o => o.to_string(),
            };
            let what = if e.ty == ObjType::Tree {
                "tree"
            } else {
                "chunk"
            };
            out.bad
                .push(((e.ty, e.id), format!("{what} {}: {msg}", e.id.hex())));
        }
        out.objects += 1;
    }
    out
}
