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

/// Names whose values are text; every other value is hex (whitespace ignored).
pub fn is_text(name: &str) -> bool {
    name.ends_with("_words") || name.ends_with("_json")
}

/// `name = value` lines of a book page's ```` ```vectors ```` blocks; indented lines continue
/// a value. Shared by the tests that recompute the book's vectors (repository and wire).
pub fn parse_book(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let t = line.trim_end();
        if t.starts_with("```") {
            in_block = !in_block && t.trim_start_matches('`').trim() == "vectors";
            continue;
        }
        if !in_block || t.trim().is_empty() || t.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let last = out
                .last_mut()
                .ok_or_else(|| format!("continuation line before any name: {line:?}"))?;
            let sep = if is_text(&last.0) { " " } else { "" };
            last.1.push_str(sep);
            last.1.push_str(t.trim());
            continue;
        }
        let (name, value) = t
            .split_once(" = ")
            .ok_or_else(|| format!("not a `name = value` line: {line:?}"))?;
        let name = name.trim().to_string();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("{name} appears twice"));
        }
        out.push((name, value.trim().to_string()));
    }
    if in_block {
        return Err("unterminated ```vectors block".into());
    }
    Ok(out)
}

/// A value laid out as the book writes it: hex in lines of 64 digits.
pub fn format_value(name: &str, v: &str) -> String {
    let width = 64;
    if is_text(name) || v.len() <= width {
        return v.to_string();
    }
    let mut s = String::new();
    for (i, c) in v.as_bytes().chunks(width).enumerate() {
        if i > 0 {
            s.push_str("\n    ");
        }
        s.push_str(std::str::from_utf8(c).unwrap());
    }
    s
}
