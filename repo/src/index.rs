//! The index: (object type, object id) → (pack, offset, lengths). Stored as sealed files under
//! `index/`, held in memory as one sorted array of 46-byte records (binary search, no per-entry
//! allocation), with a small side table for the rare object too large for the packed form.
//!
//! Lookups are by type *and* id: ids are keyed hashes of the plaintext alone, so a chunk and
//! a tree with the same bytes share an id. Keying on the id alone let one stand in for the
//! other (a 2-byte file equal to the empty tree's encoding made a snapshot that checked
//! clean and could not be restored: the type-confusion class of borg's CVE-2023-36811).

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::pack::{decode_entries, encode_entries, PackEntry, PackId, HEADER_ENTRY_LEN};
use std::collections::HashMap;

pub const INDEX_MAGIC: &[u8; 8] = b"PLUTOIX1";

/// Where an object lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub ty: ObjType,
    pub flags: u8,
    pub offset: u32,
    pub stored_len: u32,
    pub plain_len: u32,
}

/// One pack's entries, as listed in an index file.
#[derive(Clone, Debug)]
pub struct IndexedPack {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

/// Index file plaintext (before zstd and sealing):
/// `pack_count u32 LE`, then per pack `id[32] size u64 LE` followed by the pack header's
/// entries encoding (`count u32 LE` + 46-byte records).
pub fn encode_index_file(packs: &[IndexedPack]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.size.to_le_bytes());
        out.extend_from_slice(&encode_entries(&p.entries));
    }
    out
}

pub fn decode_index_file(bytes: &[u8], name: &str) -> Result<Vec<IndexedPack>> {
    let bad = |r: &str| Error::corrupt("index", name, r);
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
        let s = bytes.get(*pos..*pos + n).ok_or_else(|| bad("truncated"))?;
        *pos += n;
        Ok(s)
    };
    let count = u32::from_le_bytes(take(&mut pos, 4)?.try_into().unwrap()) as usize;
    if count > bytes.len() / 44 + 1 {
        return Err(bad("pack count larger than the file"));
    }
    let mut packs = Vec::with_capacity(count);
    for _ in 0..count {
        let id = PackId(take(&mut pos, 32)?.try_into().unwrap());
        let size = u64::from_le_bytes(take(&mut pos, 8)?.try_into().unwrap());
        let n = u32::from_le_bytes(
            bytes
                .get(pos..pos + 4)
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .unwrap(),
        ) as usize;
        let len = n
            .checked_mul(HEADER_ENTRY_LEN)
            .and_then(|l| l.checked_add(4))
            .ok_or_else(|| bad("entry count overflows"))?;
        let rec = take(&mut pos, len)?;
        let entries = decode_entries(rec, size, &id.hex()).map_err(|e| match e {
            Error::Corrupt { reason, .. } => {
                Error::corrupt("index", name, format!("pack {}: {reason}", id.hex()))
            }
            other => other,
        })?;
        packs.push(IndexedPack { id, size, entries });
    }
    if pos != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(packs)
}

const REC: usize = 46;

/// Packed record: id[32] | pack u24 | offset u32 | stored u24 | plain u24 | type<<4|flags.
#[derive(Clone, Copy)]
struct Rec([u8; REC]);

impl Rec {
    fn id(&self) -> &[u8; 32] {
        self.0[..32].try_into().unwrap()
    }
    fn ty(&self) -> u8 {
        self.0[45] >> 4
    }
    /// Sort key: id, then type (records of one id but different types sit side by side).
    fn key(&self) -> (&[u8; 32], u8) {
        (self.id(), self.ty())
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}

#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_sizes: Vec<u64>,
    pack_pos: HashMap<PackId, u32>,
    recs: Vec<Rec>,
    /// `starts[p]`: the first record whose id's top `bucket_bits` bits are ≥ p. Ids are
    /// uniformly random, so a lookup binary-searches only ~8 records instead of all.
    starts: Vec<u32>,
    bucket_bits: u32,
    large: HashMap<(ObjType, ObjectId), Location>,
    sorted: bool,
}

impl Index {
    pub fn new() -> Self {
        Index {
            sorted: true,
            ..Default::default()
        }
    }

    /// Add a pack's entries; call `finish` before lookups.
    pub fn add_pack(&mut self, pack: &IndexedPack) {
        let pos = *self.pack_pos.entry(pack.id).or_insert_with(|| {
            self.packs.push(pack.id);
            self.pack_sizes.push(pack.size);
            (self.packs.len() - 1) as u32
        });
        for e in &pack.entries {
            let fits = pos < (1 << 24) && e.stored_len < (1 << 24) && e.plain_len < (1 << 24);
            if !fits {
                self.large.insert(
                    (e.ty, e.id),
                    Location {
                        pack: pack.id,
                        ty: e.ty,
                        flags: e.flags,
                        offset: e.offset,
                        stored_len: e.stored_len,
                        plain_len: e.plain_len,
                    },
                );
                continue;
            }
            let mut r = [0u8; REC];
            r[..32].copy_from_slice(&e.id.0);
            r[32..35].copy_from_slice(&pos.to_le_bytes()[..3]);
            r[35..39].copy_from_slice(&e.offset.to_le_bytes());
            r[39..42].copy_from_slice(&e.stored_len.to_le_bytes()[..3]);
            r[42..45].copy_from_slice(&e.plain_len.to_le_bytes()[..3]);
            r[45] = ((e.ty as u8) << 4) | (e.flags & 0x0f);
            self.recs.push(Rec(r));
        }
        self.sorted = false;
        self.starts.clear();
    }

    pub fn finish(&mut self) {
        self.finish_preferring(|_| true);
    }

    /// `finish`, keeping for an object stored in several packs a copy in a pack for which
    /// `present` holds: a snapshot that stored again what a lost pack held must be read
    /// from the new copy, not from the pack that is gone.
    pub fn finish_preferring(&mut self, present: impl Fn(&PackId) -> bool) {
        if !self.sorted {
            let gone: Vec<bool> = self.packs.iter().map(|p| !present(p)).collect();
            let gone = |r: &Rec| gone[u24(&r.0[32..35]) as usize];
            self.recs
                .sort_unstable_by(|a, b| a.key().cmp(&b.key()).then(gone(a).cmp(&gone(b))));
            self.recs.dedup_by(|a, b| a.key() == b.key());
            self.recs.shrink_to_fit();
            self.build_starts();
            self.sorted = true;
        }
    }

    fn build_starts(&mut self) {
        // About one bucket per 8 records: half a byte per entry.
        let bits = (usize::BITS - (self.recs.len() / 8).leading_zeros()).min(24);
        self.bucket_bits = bits;
        let buckets = 1usize << bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut i = 0usize;
        for b in 0..buckets {
            while i < self.recs.len() && (Self::prefix(self.recs[i].id(), bits) as usize) < b {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(self.recs.len() as u32);
        self.starts = starts;
    }

    fn prefix(id: &[u8; 32], bits: u32) -> u32 {
        if bits == 0 {
            return 0;
        }
        u32::from_be_bytes(id[..4].try_into().unwrap()) >> (32 - bits)
    }

    /// Position of the record of (`ty`, `id`) among the packed records.
    fn find(&self, ty: ObjType, id: &[u8; 32]) -> Option<usize> {
        let (lo, hi) = if self.starts.is_empty() {
            (0, self.recs.len())
        } else {
            let p = Self::prefix(id, self.bucket_bits) as usize;
            (self.starts[p] as usize, self.starts[p + 1] as usize)
        };
        let key = (id, ty as u8);
        self.recs[lo..hi]
            .binary_search_by(|r| r.key().cmp(&key))
            .ok()
            .map(|i| lo + i)
    }

    fn location(&self, r: &Rec) -> Option<Location> {
        let r = &r.0;
        Some(Location {
            pack: self.packs[u24(&r[32..35]) as usize],
            ty: ObjType::from_u8(r[45] >> 4)?,
            flags: r[45] & 0x0f,
            offset: u32::from_le_bytes(r[35..39].try_into().unwrap()),
            stored_len: u24(&r[39..42]),
            plain_len: u24(&r[42..45]),
        })
    }

    /// Where the object of this type and id is. An object of another type with the same id
    /// is not it.
    pub fn get(&self, ty: ObjType, id: &ObjectId) -> Option<Location> {
        debug_assert!(self.sorted);
        if let Some(i) = self.find(ty, &id.0) {
            return self.location(&self.recs[i]);
        }
        self.large.get(&(ty, *id)).copied()
    }

    pub fn contains(&self, ty: ObjType, id: &ObjectId) -> bool {
        self.find(ty, &id.0).is_some() || self.large.contains_key(&(ty, *id))
    }

    pub fn len(&self) -> usize {
        self.recs.len() + self.large.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packs the index knows, with their sizes.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs
            .iter()
            .copied()
            .zip(self.pack_sizes.iter().copied())
    }

    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// Every object, as (id, location); order unspecified. An id may appear twice, once
    /// per type.
    pub fn iter(&self) -> impl Iterator<Item = (ObjectId, Location)> + '_ {
        self.recs
            .iter()
            .filter_map(|r| self.location(r).map(|l| (ObjectId(*r.id()), l)))
            .chain(self.large.iter().map(|(k, v)| (k.1, *v)))
    }

    /// Memory held by the object table, for the bytes-per-entry figure.
    pub fn heap_bytes(&self) -> usize {
        self.recs.capacity() * REC
            + self.starts.capacity() * 4
            + self.large.capacity() * (32 + std::mem::size_of::<Location>() + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8, ty: ObjType) -> PackEntry {
        PackEntry {
            ty,
            flags: i & 1,
            id: ObjectId([i; 32]),
            offset: 40 + i as u32 * 100,
            stored_len: 100,
            plain_len: 200 + i as u32,
        }
    }

    #[test]
    fn index_file_round_trips_and_lookups_find_every_object() {
        let p = IndexedPack {
            id: PackId([9; 32]),
            size: 100_000,
            entries: (1..50)
                .map(|i| {
                    entry(
                        i,
                        if i % 3 == 0 {
                            ObjType::Tree
                        } else {
                            ObjType::Chunk
                        },
                    )
                })
                .collect(),
        };
        let bytes = encode_index_file(std::slice::from_ref(&p));
        let back = decode_index_file(&bytes, "x").unwrap();
        assert_eq!(back[0].entries, p.entries);
        let mut idx = Index::new();
        idx.add_pack(&back[0]);
        idx.finish();
        for e in &p.entries {
            let l = idx.get(e.ty, &e.id).unwrap();
            assert_eq!(
                (l.ty, l.flags, l.offset, l.plain_len),
                (e.ty, e.flags, e.offset, e.plain_len)
            );
            let other = if e.ty == ObjType::Tree {
                ObjType::Chunk
            } else {
                ObjType::Tree
            };
            assert!(idx.get(other, &e.id).is_none());
        }
        assert!(idx.get(ObjType::Chunk, &ObjectId([200; 32])).is_none());
        assert!(idx.heap_bytes() / idx.len() < 48);
    }

    #[test]
    fn bucketed_lookups_find_every_object_of_a_large_index() {
        let mut idx = Index::new();
        let ids: Vec<ObjectId> = (0..20_000u32)
            .map(|i| ObjectId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        for (p, group) in ids.chunks(1000).enumerate() {
            idx.add_pack(&IndexedPack {
                id: PackId([p as u8; 32]),
                size: 1 << 30,
                entries: group
                    .iter()
                    .enumerate()
                    .map(|(i, id)| PackEntry {
                        id: *id,
                        offset: 40 + i as u32,
                        ..entry(0, ObjType::Chunk)
                    })
                    .collect(),
            });
        }
        idx.finish();
        for (i, id) in ids.iter().enumerate() {
            let l = idx.get(ObjType::Chunk, id).unwrap();
            assert_eq!(l.pack, PackId([(i / 1000) as u8; 32]));
            assert_eq!(l.offset, 40 + (i % 1000) as u32);
        }
        for i in 20_000u32..21_000 {
            let id = ObjectId(*blake3::hash(&i.to_le_bytes()).as_bytes());
            assert!(!idx.contains(ObjType::Chunk, &id));
        }
        let id = ObjectId(*blake3::hash(&0u32.to_le_bytes()).as_bytes());
        assert!(idx.contains(ObjType::Chunk, &id));
        assert!(!idx.contains(ObjType::Tree, &id));
        assert!(idx.heap_bytes() / idx.len() < 48);
    }

    #[test]
    fn a_chunk_and_a_tree_with_the_same_id_are_two_objects() {
        let id = ObjectId([7; 32]);
        let mut idx = Index::new();
        for (p, ty) in [(1u8, ObjType::Tree), (2, ObjType::Chunk)] {
            idx.add_pack(&IndexedPack {
                id: PackId([p; 32]),
                size: 100_000,
                entries: vec![PackEntry {
                    ty,
                    id,
                    ..entry(7, ty)
                }],
            });
        }
        idx.finish();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get(ObjType::Tree, &id).unwrap().pack, PackId([1; 32]));
        assert_eq!(idx.get(ObjType::Chunk, &id).unwrap().pack, PackId([2; 32]));
        assert_eq!(idx.iter().count(), 2);
    }

    #[test]
    fn truncated_or_garbage_index_files_are_errors_not_panics() {
        let p = IndexedPack {
            id: PackId([9; 32]),
            size: 100_000,
            entries: vec![entry(1, ObjType::Chunk)],
        };
        let bytes = encode_index_file(&[p]);
        for cut in 0..bytes.len() {
            assert!(decode_index_file(&bytes[..cut], "x").is_err());
        }
        assert!(decode_index_file(&[0xff; 64], "x").is_err());
    }
}
