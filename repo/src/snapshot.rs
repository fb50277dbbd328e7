//! Snapshots: small sealed files of their own under `snapshots/`, named by the BLAKE3
//! hash of their bytes. The plaintext is JSON (stable, documented in the book).

use crate::crypto::ObjectId;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"PLUTOSN1";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs and device nodes recorded, sockets left out (absent when 0: older
    /// snapshots have none of these fields).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fifos: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub devices: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sockets_skipped: u64,
    /// Logical size of all files.
    pub bytes: u64,
    /// Files read (the rest were unchanged since the parent).
    pub files_read: u64,
    pub bytes_read: u64,
    /// New objects stored by this snapshot: their plaintext and stored (sealed) size.
    pub objects_added: u64,
    pub bytes_added: u64,
    pub stored_added: u64,
    /// Paths that could not be read (the snapshot is partial when this is not empty).
    pub unreadable: Vec<String>,
    /// Files that kept changing while they were read: each is recorded as it was read (its
    /// size is what its chunks hold), and the snapshot is partial. Left out of the JSON when
    /// empty, so older snapshots decode and their bytes do not change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_during_read: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Unix time in nanoseconds.
    pub time_ns: i64,
    /// Soft reference: used only to find unchanged files faster; forgetting it breaks nothing.
    pub parent: Option<String>,
    /// The root tree's id, as 64 hex digits.
    #[serde(with = "hex_object_id")]
    pub tree: ObjectId,
    pub hostname: String,
    pub username: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub message: String,
    pub stats: SnapshotStats,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshots always serialize")
    }
    pub fn decode(bytes: &[u8], name: &str) -> Result<Snapshot> {
        let s: Snapshot = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt("snapshot", name, format!("does not decode: {e}")))?;
        if s.version != 1 {
            return Err(Error::corrupt(
                "snapshot",
                name,
                format!("unknown version {}", s.version),
            ));
        }
        Ok(s)
    }
}

/// Object ids in JSON documents are hex strings, like every other id a user sees.
mod hex_object_id {
    use crate::crypto::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        let s = String::deserialize(d)?;
        ObjectId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("tree is not 64 hex digits"))
    }
}

/// A snapshot with its id (the file name).
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: String,
    pub snapshot: Snapshot,
}

impl SnapshotEntry {
    pub fn short_id(&self) -> &str {
        &self.id[..8]
    }
}

/// Resolve `latest`, a full id or a unique prefix among `ids` (sorted by time, oldest first).
pub fn resolve(entries: &[SnapshotEntry], spec: &str) -> Result<usize> {
    if entries.is_empty() {
        return Err(Error::NoSnapshots);
    }
    if spec == "latest" || spec == "HEAD" {
        return Ok(entries.len() - 1);
    }
    let spec_l = spec.to_lowercase();
    if spec_l.is_empty() || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::UnknownSnapshot(spec.to_string()));
    }
    let hits: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].id.starts_with(&spec_l))
        .collect();
    match hits.len() {
        0 => Err(Error::UnknownSnapshot(spec.to_string())),
        1 => Ok(hits[0]),
        _ => Err(Error::AmbiguousSnapshot {
            prefix: spec.to_string(),
            candidates: hits
                .iter()
                .map(|&i| entries[i].short_id().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Shortest prefix length (at least 8) that tells every id apart, like git's abbreviations.
pub fn abbrev_len(ids: &[&str]) -> usize {
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort();
    let mut len = 8;
    for w in sorted.windows(2) {
        let common = w[0]
            .bytes()
            .zip(w[1].bytes())
            .take_while(|(a, b)| a == b)
            .count();
        len = len.max(common + 1);
    }
    len.min(64)
}
