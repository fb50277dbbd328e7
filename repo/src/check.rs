//! `check`: is every index, pack, snapshot and tree readable and consistent?
//! With `read_data`, every object is decrypted and checked against its id.

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::index::{Index, IndexedPack};
use crate::pack::store::PackStore;
use crate::pack::{read_header, PackId};
use crate::progress::Progress;
use crate::repository::Repository;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only this fraction (0..=1] of the packs, chosen at random.
    pub read_data_subset: Option<f64>,
    pub progress: Option<Arc<Progress>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// "index", "pack", "snapshot", "tree" or "object".
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
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
    fn err(&mut self, kind: &str, name: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            kind: kind.into(),
            name: name.into(),
            message: message.into(),
            affected_snapshots: Vec::new(),
        });
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

pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    let mut r = CheckReport::default();

    // 1. Index files, each on its own so one bad file does not hide the others.
    let mut index = Index::new();
    let mut indexed: HashMap<PackId, IndexedPack> = HashMap::new();
    let names = repo.index_files()?;
    r.index_files = names.len();
    for name in &names {
        match repo.read_index_file(name) {
            Ok(packs) => {
                for p in packs {
                    index.add_pack(&p);
                    indexed.insert(p.id, p);
                }
            }
            Err(e) => {
                let (k, n, m) = problem_of(&e);
                r.err(&k, n, m);
            }
        }
    }
    index.finish();
    r.packs = indexed.len();

    // 2. Every indexed pack exists, has the recorded size, and its header agrees.
    let on_disk: HashMap<PackId, u64> = repo.store().list()?.into_iter().collect();
    for (id, size) in &on_disk {
        if !indexed.contains_key(id) {
            r.warnings.push(format!(
                "pack {} ({size} bytes) is in no index: left by an interrupted command; `pluto prune` removes it",
                id.hex()
            ));
        }
    }
    let mut pack_list: Vec<&IndexedPack> = indexed.values().collect();
    pack_list.sort_by_key(|p| p.id);
    let header_problems: Vec<(String, String)> = pack_list
        .par_iter()
        .filter_map(|p| {
            check_pack_header(repo, p, on_disk.get(&p.id).copied())
                .err()
                .map(|m| (p.id.hex(), m))
        })
        .collect();
    for (n, m) in header_problems {
        r.err("pack", n, m);
    }

    // 3. Snapshots and every tree they reach; every chunk they name is indexed.
    let mut snapshot_trees: Vec<(String, ObjectId)> = Vec::new();
    for name in repo.snapshot_names()? {
        match repo.read_snapshot(&name) {
            Ok(s) => snapshot_trees.push((name, s.tree)),
            Err(e) => {
                let (k, n, m) = problem_of(&e);
                r.err(&k, n, m);
            }
        }
    }
    r.snapshots = snapshot_trees.len();
    let mut seen_trees: HashSet<ObjectId> = HashSet::new();
    for (snap, root) in &snapshot_trees {
        let mut stack = vec![*root];
        while let Some(t) = stack.pop() {
            if !seen_trees.insert(t) {
                continue;
            }
            let tree = match index.get(ObjType::Tree, &t) {
                None => {
                    r.errors.push(Problem {
                        kind: "tree".into(),
                        name: t.hex(),
                        message: "not in the index".into(),
                        affected_snapshots: vec![snap.clone()],
                    });
                    continue;
                }
                Some(loc) => repo
                    .store()
                    .get_range(&loc.pack, loc.offset as u64, loc.stored_len as u64)
                    .and_then(|b| repo.open_object(&t, &loc, &b))
                    .and_then(|b| crate::tree::Tree::decode(&b, &t)),
            };
            let tree = match tree {
                Ok(tree) => tree,
                Err(e) => {
                    let (k, n, m) = problem_of(&e);
                    r.errors.push(Problem {
                        kind: k,
                        name: n,
                        message: format!("tree {}: {m}", t.hex()),
                        affected_snapshots: vec![snap.clone()],
                    });
                    continue;
                }
            };
            for n in &tree.nodes {
                if let Some(s) = n.subtree {
                    stack.push(s);
                }
                for c in &n.chunks {
                    if !index.contains(ObjType::Chunk, c) {
                        r.errors.push(Problem {
                            kind: "object".into(),
                            name: c.hex(),
                            message: format!("chunk of {:?} is not in the index", n.name_lossy()),
                            affected_snapshots: vec![snap.clone()],
                        });
                    }
                }
            }
        }
    }
    r.trees = seen_trees.len();

    // 4. Read every object (or a random subset of the packs).
    if opts.read_data {
        let mut chosen: Vec<&IndexedPack> = pack_list.clone();
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
        let bad_objects: Mutex<BTreeSet<ObjectId>> = Mutex::new(BTreeSet::new());
        let counts: Vec<PackReadResult> = chosen
            .par_iter()
            .map(|p| {
                let res = read_pack(repo, p, &bad_objects);
                if let Some(pr) = &opts.progress {
                    pr.add_done(1, p.size);
                }
                res
            })
            .collect();
        for (objs, bytes, probs) in counts {
            r.objects_read += objs;
            r.bytes_read += bytes;
            for (n, m) in probs {
                r.err("pack", n, m);
            }
        }
        r.packs_read = chosen.len();
        let bad = bad_objects.into_inner().unwrap();
        if !bad.is_empty() {
            let affected = snapshots_using(repo, &index, &snapshot_trees, &bad);
            for p in r.errors.iter_mut() {
                if p.kind == "pack" && p.affected_snapshots.is_empty() {
                    let pack_objs: HashSet<ObjectId> = indexed
                        .get(&PackId::from_hex(&p.name).unwrap_or(PackId([0; 32])))
                        .map(|ip| ip.entries.iter().map(|e| e.id).collect())
                        .unwrap_or_default();
                    p.affected_snapshots = affected
                        .iter()
                        .filter(|(_, ids)| ids.iter().any(|i| pack_objs.contains(i)))
                        .map(|(s, _)| s.clone())
                        .collect();
                }
            }
        }
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

/// Read a whole pack: its bytes hash to its name, and every object opens and matches its id.
/// Objects read, bytes read, and (pack, problem) pairs.
type PackReadResult = (u64, u64, Vec<(String, String)>);

fn read_pack(
    repo: &Repository,
    p: &IndexedPack,
    bad: &Mutex<BTreeSet<ObjectId>>,
) -> (u64, u64, Vec<(String, String)>) {
    let mut probs = Vec::new();
    let name = p.id.hex();
    let bytes = match repo.store().get(&p.id) {
        Ok(b) => b,
        Err(e) => {
            bad.lock().unwrap().extend(p.entries.iter().map(|e| e.id));
            return (0, 0, vec![(name, e.to_string())]);
        }
    };
    if PackId::of_bytes(&bytes) != p.id {
        probs.push((
            name.clone(),
            "content does not hash to the pack's name (damaged on disk)".to_string(),
        ));
    }
    let entries = match read_header(&repo.keys().data, &name, &bytes) {
        Ok(e) => e,
        Err(_) => p.entries.clone(),
    };
    let mut n = 0;
    for e in &entries {
        let loc = crate::index::Location {
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
            bad.lock().unwrap().insert(e.id);
            let msg = match err {
                Error::Corrupt { reason, .. } => reason,
                o => o.to_string(),
            };
            probs.push((
                name.clone(),
                format!(
                    "{} {}: {msg}",
                    if e.ty == ObjType::Tree {
                        "tree"
                    } else {
                        "chunk"
                    },
                    e.id.hex()
                ),
            ));
        }
        n += 1;
    }
    (n, bytes.len() as u64, probs)
}

/// For each snapshot, the bad objects it references.
fn snapshots_using(
    repo: &Repository,
    index: &Index,
    snaps: &[(String, ObjectId)],
    bad: &BTreeSet<ObjectId>,
) -> Vec<(String, Vec<ObjectId>)> {
    let mut out = Vec::new();
    for (name, root) in snaps {
        let mut hits = Vec::new();
        let mut stack = vec![*root];
        let mut seen = HashSet::new();
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            if bad.contains(&t) {
                hits.push(t);
                continue;
            }
            let Some(loc) = index.get(ObjType::Tree, &t) else {
                continue;
            };
            let Ok(tree) = repo
                .store()
                .get_range(&loc.pack, loc.offset as u64, loc.stored_len as u64)
                .and_then(|b| repo.open_object(&t, &loc, &b))
                .and_then(|b| crate::tree::Tree::decode(&b, &t))
            else {
                continue;
            };
            for n in &tree.nodes {
                if let Some(s) = n.subtree {
                    stack.push(s);
                }
                hits.extend(n.chunks.iter().filter(|c| bad.contains(c)));
            }
        }
        if !hits.is_empty() {
            out.push((name.clone(), hits));
        }
    }
    out
}
