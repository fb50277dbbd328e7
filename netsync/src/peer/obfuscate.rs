//! A host's obfuscation of what it stores for others: ChaCha20 (RustCrypto `chacha20`)
//! with a per-file key derived from the host's own key, seekable so any byte range can be
//! read back alone.
//!
//! `file key = BLAKE3-derive_key("pluto v1 host obfuscation file", host_key ‖ owner ‖ kind ‖ name)`,
//! nonce = 12 zero bytes (each key obfuscates one file), byte `i` of the file on disk =
//! byte `i` of the received file XOR keystream byte `i`.

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use zeroize::Zeroizing;

pub const OBFUSCATION_CONTEXT: &str = "pluto v1 host obfuscation file";

/// The keystream of one stored file.
pub struct Obfuscator {
    key: Zeroizing<[u8; 32]>,
}

impl Obfuscator {
    pub fn new(host_key: &[u8; 32], owner: &[u8; 32], kind: u8, name: &[u8; 32]) -> Self {
        let mut material = Zeroizing::new(Vec::with_capacity(97));
        material.extend_from_slice(host_key);
        material.extend_from_slice(owner);
        material.push(kind);
        material.extend_from_slice(name);
        Obfuscator {
            key: Zeroizing::new(blake3::derive_key(OBFUSCATION_CONTEXT, &material)),
        }
    }

    /// XOR `buf` with the keystream starting at byte `offset` (obfuscates and recovers alike).
    pub fn apply_at(&self, offset: u64, buf: &mut [u8]) {
        let mut c = ChaCha20::new((&*self.key).into(), &[0u8; 12].into());
        c.seek(offset);
        c.apply_keystream(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_gives_the_same_bytes_as_streaming() {
        let o = Obfuscator::new(&[1; 32], &[2; 32], 0, &[3; 32]);
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut whole = plain.clone();
        o.apply_at(0, &mut whole);
        assert_ne!(whole, plain);
        for (start, end) in [(0, 1), (63, 65), (64, 128), (1000, 5003), (9999, 10_000)] {
            let mut part = plain[start..end].to_vec();
            o.apply_at(start as u64, &mut part);
            assert_eq!(part, whole[start..end], "range {start}..{end}");
            o.apply_at(start as u64, &mut part);
            assert_eq!(part, plain[start..end]);
        }
    }

    #[test]
    fn keys_differ_per_host_owner_kind_and_name() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        Obfuscator::new(&[1; 32], &[2; 32], 0, &[3; 32]).apply_at(0, &mut a);
        for o in [
            Obfuscator::new(&[9; 32], &[2; 32], 0, &[3; 32]),
            Obfuscator::new(&[1; 32], &[9; 32], 0, &[3; 32]),
            Obfuscator::new(&[1; 32], &[2; 32], 1, &[3; 32]),
            Obfuscator::new(&[1; 32], &[2; 32], 0, &[9; 32]),
        ] {
            b.fill(0);
            o.apply_at(0, &mut b);
            assert_ne!(a, b);
        }
    }

    /// Test vector (also in book/src/wire-peer.md).
    #[test]
    fn vector() {
        let mut buf = [0u8; 16];
        Obfuscator::new(&[0x11; 32], &[0x22; 32], 0, &[0x33; 32]).apply_at(1_000_000, &mut buf);
        println!("obfuscation vector: {}", hex::encode(buf));
        assert_eq!(hex::encode(buf), VECTOR);
    }
    const VECTOR: &str = "34c051705c06e6324aab24b7e1a0268d";
}
