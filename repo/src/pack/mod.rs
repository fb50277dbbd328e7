//! Pack files: many sealed objects appended, then an encrypted header listing them.
//!
//! ```text
//! "PLUTOPK1" | salt[32] | object bodies ... | header body | header_len: u32 LE
//! object body = nonce[12] | AES-256-GCM(subkey, aad = type|flags|id, plaintext) | tag[16]
//! header body = nonce[12] | AES-256-GCM(subkey, aad = "PLUTOPK1", entries) | tag[16]
//! entries     = count: u32 LE, then count × (type u8, flags u8, id[32], offset u32 LE,
//!               stored_len u32 LE, plain_len u32 LE)
//! ```
//! The subkey is derived from the data key and the pack's salt. A pack's name is the
//! BLAKE3 hash of all its bytes, so anyone can check a pack without keys.

pub mod store;
pub mod writer;

use crate::crypto::{ObjType, ObjectId, SubKey, SALT_LEN, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

pub const PACK_MAGIC: &[u8; 8] = b"PLUTOPK1";
pub const PACK_PREFIX_LEN: usize = 8 + SALT_LEN;
pub const HEADER_ENTRY_LEN: usize = 1 + 1 + 32 + 4 + 4 + 4;
/// Packs are closed once they pass this size (tens of MiB, per the design).
pub const PACK_TARGET_SIZE: u64 = 16 * 1024 * 1024;

/// A pack's name: BLAKE3 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        PackId(*blake3::hash(bytes).as_bytes())
    }
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(PackId(b))
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.hex()[..16])
    }
}
impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// One object's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub ty: ObjType,
    pub flags: u8,
    pub id: ObjectId,
    pub offset: u32,
    pub stored_len: u32,
    pub plain_len: u32,
}

pub fn encode_entries(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * HEADER_ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.push(e.ty as u8);
        out.push(e.flags);
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.plain_len.to_le_bytes());
    }
    out
}

/// Parse header entries, checking each lies inside the object area `[PACK_PREFIX_LEN, body_end)`.
pub fn decode_entries(bytes: &[u8], body_end: u64, pack: &str) -> Result<Vec<PackEntry>> {
    let bad = |r: String| Error::corrupt("pack", pack, r);
    if bytes.len() < 4 {
        return Err(bad("header too short".into()));
    }
    let count = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    if bytes.len() != 4 + count * HEADER_ENTRY_LEN {
        return Err(bad(format!(
            "header says {count} entries but holds {} bytes",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for rec in bytes[4..].chunks_exact(HEADER_ENTRY_LEN) {
        let ty = ObjType::from_u8(rec[0])
            .ok_or_else(|| bad(format!("unknown object type {}", rec[0])))?;
        if rec[1] & !crate::crypto::FLAG_ZSTD != 0 {
            return Err(bad(format!("unknown object flags {:#04x}", rec[1])));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&rec[2..34]);
        let u = |i: usize| u32::from_le_bytes(rec[i..i + 4].try_into().unwrap());
        let e = PackEntry {
            ty,
            flags: rec[1],
            id: ObjectId(id),
            offset: u(34),
            stored_len: u(38),
            plain_len: u(42),
        };
        let end = e.offset as u64 + e.stored_len as u64;
        if (e.offset as usize) < PACK_PREFIX_LEN
            || end > body_end
            || (e.stored_len as usize) < SEAL_OVERHEAD
        {
            return Err(bad(format!(
                "entry for {} points outside the pack",
                e.id.hex()
            )));
        }
        out.push(e);
    }
    Ok(out)
}

/// Read the header of a complete pack held in memory.
pub fn read_header(data_key: &[u8; 32], pack: &str, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let len = bytes.len();
    let tail_start = len
        .checked_sub(4)
        .filter(|&t| t >= PACK_PREFIX_LEN)
        .ok_or_else(|| Error::corrupt("pack", pack, format!("truncated ({len} bytes)")))?;
    let header_len = u32::from_le_bytes(bytes[tail_start..].try_into().unwrap()) as usize;
    let header_start = tail_start
        .checked_sub(header_len)
        .filter(|&h| h >= PACK_PREFIX_LEN)
        .ok_or_else(|| {
            Error::corrupt(
                "pack",
                pack,
                "header length points outside the pack (truncated?)",
            )
        })?;
    parse_header(
        data_key,
        pack,
        &bytes[..PACK_PREFIX_LEN],
        &bytes[header_start..tail_start],
        header_start as u64,
    )
}

/// Decrypt and parse a header given the pack's first bytes (magic + salt) and the header body.
pub fn parse_header(
    data_key: &[u8; 32],
    pack: &str,
    prefix: &[u8],
    header: &[u8],
    body_end: u64,
) -> Result<Vec<PackEntry>> {
    if prefix.len() < PACK_PREFIX_LEN || &prefix[..8] != PACK_MAGIC {
        return Err(Error::corrupt("pack", pack, "wrong magic bytes"));
    }
    let key = SubKey::derive(data_key, prefix[8..PACK_PREFIX_LEN].try_into().unwrap());
    let plain = key
        .open(PACK_MAGIC, header)
        .ok_or_else(|| Error::corrupt("pack", pack, "header authentication failed"))?;
    decode_entries(&plain, body_end, pack)
}

/// The subkey of a pack, from its first 40 bytes.
pub fn pack_key(data_key: &[u8; 32], pack: &str, prefix: &[u8]) -> Result<SubKey> {
    if prefix.len() < PACK_PREFIX_LEN || &prefix[..8] != PACK_MAGIC {
        return Err(Error::corrupt("pack", pack, "wrong magic bytes"));
    }
    Ok(SubKey::derive(
        data_key,
        prefix[8..PACK_PREFIX_LEN].try_into().unwrap(),
    ))
}
