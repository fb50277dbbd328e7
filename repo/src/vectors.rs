//! Deterministic constructors for the book's test vectors (`book/src/test-vectors.md`).
//!
//! The real writers draw salts and nonces from the operating system; these take them as
//! arguments and otherwise build exactly the same bytes. `repo/tests/test_vectors.rs`
//! checks that (it takes a pack and a sealed file made by the real writers, reads their
//! salts and nonces back, and rebuilds them here byte for byte), and recomputes every
//! vector in the book. Not for production use: a fixed nonce must never be reused.
#![doc(hidden)]

use crate::crypto::{object_aad, ObjType, ObjectId, SubKey, NONCE_LEN, SALT_LEN};
use crate::pack::{encode_entries, PackEntry, PackId, PACK_MAGIC};

/// The raw per-pack / per-file AES-256-GCM key:
/// `blake3::derive_key("pluto v1 subkey", data_key || salt)`.
pub fn subkey_bytes(data_key: &[u8; 32], salt: &[u8; SALT_LEN]) -> [u8; 32] {
    let mut material = [0u8; 64];
    material[..32].copy_from_slice(data_key);
    material[32..].copy_from_slice(salt);
    blake3::derive_key("pluto v1 subkey", &material)
}

/// One object to put into a vector pack: `stored` is sealed as is (already compressed
/// when `flags` says so).
pub struct VectorObject<'a> {
    pub ty: ObjType,
    pub flags: u8,
    pub id: ObjectId,
    pub stored: &'a [u8],
    pub plain_len: u32,
    pub nonce: [u8; NONCE_LEN],
}

/// A complete pack with the given salt and nonces: its bytes, name and header entries.
pub fn build_pack(
    data_key: &[u8; 32],
    salt: &[u8; SALT_LEN],
    objects: &[VectorObject<'_>],
    header_nonce: [u8; NONCE_LEN],
) -> (PackId, Vec<u8>, Vec<PackEntry>) {
    let key = SubKey::derive(data_key, salt);
    let mut out = Vec::new();
    out.extend_from_slice(PACK_MAGIC);
    out.extend_from_slice(salt);
    let mut entries = Vec::with_capacity(objects.len());
    for o in objects {
        let offset = out.len();
        key.seal_with_nonce(
            o.nonce,
            &object_aad(o.ty, o.flags, &o.id),
            o.stored,
            &mut out,
        );
        entries.push(PackEntry {
            ty: o.ty,
            flags: o.flags,
            id: o.id,
            offset: offset as u32,
            stored_len: (out.len() - offset) as u32,
            plain_len: o.plain_len,
        });
    }
    let header_start = out.len();
    key.seal_with_nonce(
        header_nonce,
        PACK_MAGIC,
        &encode_entries(&entries),
        &mut out,
    );
    let header_len = (out.len() - header_start) as u32;
    out.extend_from_slice(&header_len.to_le_bytes());
    (PackId::of_bytes(&out), out, entries)
}

/// A sealed file (config, index, snapshot) with the given salt and nonce:
/// `magic || salt || nonce || ciphertext || tag`, the magic as associated data.
pub fn seal_file_with(
    data_key: &[u8; 32],
    magic: &[u8; 8],
    salt: &[u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    plain: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(magic);
    out.extend_from_slice(salt);
    SubKey::derive(data_key, salt).seal_with_nonce(nonce, magic, plain, &mut out);
    out
}
