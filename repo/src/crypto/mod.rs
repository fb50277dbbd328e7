//! Object ids, AES-256-GCM sealing (ring's implementation, byte-identical to the
//! `aes-gcm` crate; a test checks), subkey derivation and the sealed-file format.

use crate::error::{Error, Result};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes an object grows by when sealed: nonce in front, tag behind.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
pub const SALT_LEN: usize = 32;

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random source failed");
}

/// A 32-byte object id: BLAKE3 keyed hash of the plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    pub fn compute(id_key: &[u8; 32], plaintext: &[u8]) -> Self {
        ObjectId(*blake3::keyed_hash(id_key, plaintext).as_bytes())
    }
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(ObjectId(b))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.hex()[..16])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// What an object holds; bound into its associated data so a chunk can never be
/// passed off as a tree or the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjType {
    Chunk = 1,
    Tree = 2,
}

impl ObjType {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(ObjType::Chunk),
            2 => Some(ObjType::Tree),
            _ => None,
        }
    }
}

/// Flag bit: the plaintext was zstd-compressed before sealing.
pub const FLAG_ZSTD: u8 = 1;

/// Associated data of an object: type, flags, id.
pub fn object_aad(ty: ObjType, flags: u8, id: &ObjectId) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[0] = ty as u8;
    aad[1] = flags;
    aad[2..].copy_from_slice(&id.0);
    aad
}

/// A per-pack or per-file AES-256-GCM key, derived from the data key and a random salt,
/// so the number of random nonces under any one key stays tiny however large the repository.
pub struct SubKey {
    key: LessSafeKey,
}

impl SubKey {
    pub fn derive(data_key: &[u8; 32], salt: &[u8; SALT_LEN]) -> Self {
        let mut material = Zeroizing::new([0u8; 64]);
        material[..32].copy_from_slice(data_key);
        material[32..].copy_from_slice(salt);
        let k = Zeroizing::new(blake3::derive_key("pluto v1 subkey", &material[..]));
        Self::from_raw(&k)
    }

    pub fn from_raw(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&aead::AES_256_GCM, key).expect("32-byte AES key");
        SubKey {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Seal `plain` into `out` as nonce || ciphertext || tag (appended to `out`).
    pub fn seal_into(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        self.seal_with_nonce(nonce, aad, plain, out)
    }

    pub fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.reserve(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("AES-GCM seal of a bounded buffer");
        out.extend_from_slice(tag.as_ref());
    }

    /// Open nonce || ciphertext || tag; `None` if it was tampered with or the key is wrong.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .ok()?
            .len();
        buf.truncate(plain);
        Some(buf)
    }
}

/// Sealed files (config, index, snapshot): `magic[8] || salt[32] || nonce || ct || tag`,
/// the magic bound in as associated data.
pub fn seal_file(data_key: &[u8; 32], magic: &[u8; 8], plain: &[u8]) -> Vec<u8> {
    let mut salt = [0u8; SALT_LEN];
    random_bytes(&mut salt);
    let key = SubKey::derive(data_key, &salt);
    let mut out = Vec::with_capacity(8 + SALT_LEN + plain.len() + SEAL_OVERHEAD);
    out.extend_from_slice(magic);
    out.extend_from_slice(&salt);
    key.seal_into(magic, plain, &mut out);
    out
}

pub fn open_file(
    data_key: &[u8; 32],
    magic: &[u8; 8],
    what: &'static str,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    if bytes.len() < 8 + SALT_LEN + SEAL_OVERHEAD {
        return Err(Error::corrupt(
            what,
            name,
            format!("truncated ({} bytes)", bytes.len()),
        ));
    }
    if &bytes[..8] != magic {
        return Err(Error::corrupt(what, name, "wrong magic bytes"));
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&bytes[8..8 + SALT_LEN]);
    SubKey::derive(data_key, &salt)
        .open(magic, &bytes[8 + SALT_LEN..])
        .ok_or_else(|| Error::corrupt(what, name, "authentication failed (tampered, or wrong key)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit, Payload};

    #[test]
    fn ring_and_aes_gcm_crate_produce_identical_bytes() {
        let key = [42u8; 32];
        let nonce = [9u8; 12];
        for len in [0usize, 1, 15, 16, 17, 1000, 65536 + 3] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let aad = b"pluto aad";
            let mut ours = Vec::new();
            SubKey::from_raw(&key).seal_with_nonce(nonce, aad, &plain, &mut ours);
            let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
            let theirs = cipher
                .encrypt(
                    aes_gcm::Nonce::from_slice(&nonce),
                    Payload { msg: &plain, aad },
                )
                .unwrap();
            assert_eq!(&ours[NONCE_LEN..], &theirs[..], "len {len}");
            let back = SubKey::from_raw(&key).open(aad, &ours).unwrap();
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn tampered_or_rebound_objects_do_not_open() {
        let k = SubKey::from_raw(&[1u8; 32]);
        let id = ObjectId([5; 32]);
        let mut sealed = Vec::new();
        k.seal_into(&object_aad(ObjType::Chunk, 0, &id), b"hello", &mut sealed);
        assert!(k
            .open(&object_aad(ObjType::Tree, 0, &id), &sealed)
            .is_none());
        assert!(k
            .open(&object_aad(ObjType::Chunk, FLAG_ZSTD, &id), &sealed)
            .is_none());
        let mut flipped = sealed.clone();
        flipped[14] ^= 1;
        assert!(k
            .open(&object_aad(ObjType::Chunk, 0, &id), &flipped)
            .is_none());
        assert_eq!(
            k.open(&object_aad(ObjType::Chunk, 0, &id), &sealed)
                .unwrap(),
            b"hello"
        );
    }
}
