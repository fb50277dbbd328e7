//! What a snapshot learns from one listing of the pack store before it starts:
//!
//! - which packs are present, so dedup never trusts an index entry (or a parent's chunk
//!   list) whose pack is gone — those objects are stored again from the files on disk;
//! - which packs no index lists. A snapshot killed before it wrote its index (SIGKILL,
//!   power loss) leaves complete packs behind; each is checked against its name (the
//!   BLAKE3 hash of its bytes) and its header is decrypted and parsed, then an index file
//!   is written for those that pass, so their objects are reused instead of stored again.
//!   A pack that fails is left alone (and named); `prune` removes it as before.

use crate::error::Result;
use crate::index::IndexedPack;
use crate::pack::store::PackStore;
use crate::pack::PackId;
use crate::repository::Repository;
use rayon::prelude::*;
use std::collections::HashSet;

pub(crate) struct PackScan {
    /// Every pack in the store, adopted ones included.
    pub present: HashSet<PackId>,
    /// Packs no index listed that passed verification, now listed in `index_file`.
    pub adopted: Vec<IndexedPack>,
    pub index_file: Option<String>,
    /// Unlisted packs that failed verification: (pack, why).
    pub rejected: Vec<(PackId, String)>,
}

/// Check one unlisted pack; its entries, or why it cannot be adopted.
fn verify(repo: &Repository, id: &PackId) -> std::result::Result<IndexedPack, String> {
    let bytes = repo.store().get(id).map_err(|e| e.to_string())?;
    if PackId::of_bytes(&bytes) != *id {
        return Err("its bytes do not hash to its name".into());
    }
    let entries = crate::pack::read_header(&repo.keys().data, &id.hex(), &bytes)
        .map_err(|e| e.to_string())?;
    Ok(IndexedPack {
        id: *id,
        size: bytes.len() as u64,
        entries,
    })
}

pub(crate) fn scan(repo: &Repository) -> Result<PackScan> {
    let listed = repo.store().list()?;
    let index = repo.index()?;
    let present: HashSet<PackId> = listed.iter().map(|p| p.0).collect();
    let unlisted: Vec<PackId> = listed
        .iter()
        .map(|p| p.0)
        .filter(|p| !index.has_pack(p))
        .collect();
    let checked: Vec<(PackId, std::result::Result<IndexedPack, String>)> = unlisted
        .par_iter()
        .map(|id| (*id, verify(repo, id)))
        .collect();
    let mut adopted = Vec::new();
    let mut rejected = Vec::new();
    for (id, r) in checked {
        match r {
            Ok(p) => adopted.push(p),
            Err(why) => rejected.push((id, why)),
        }
    }
    let index_file = if adopted.is_empty() {
        None
    } else {
        Some(repo.write_index_file(&adopted)?)
    };
    Ok(PackScan {
        present,
        adopted,
        index_file,
        rejected,
    })
}
