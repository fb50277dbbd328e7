//! Storage challenges.
//!
//! **Keyed answer.** The owner picks ranges of a pack it stored on a host and a fresh
//! 32-byte nonce; the host answers
//! `BLAKE3-keyed(nonce, "pluto v1 challenge\0" ‖ pack ‖ for each range: offset u64 LE ‖ len u32 LE ‖ bytes)`.
//! The owner computes the same over its local copy. A fresh nonce makes old answers useless.
//!
//! **Proof.** The host answers with a bao-tree encoding (16 KiB blocks, post-order
//! outboard kept since the pack arrived) of the chunk groups covering the ranges. Its root
//! is plain `blake3::hash(pack)` — the pack's name — so anyone who knows the name and the
//! true size verifies it ([`verify_proof`]): the coordinator, or an owner whose disk is gone.
//! Every challenge includes the pack's last byte ([`pick_ranges`]), so a host holding a
//! truncated pack fails even when it claims the true size.

use bao_tree::io::outboard::PostOrderMemOutboard;
use bao_tree::io::sync::{encode_ranges, DecodeResponseIter, ReadAt, Size};
use bao_tree::io::{round_up_to_chunks, BaoContentItem};
use bao_tree::{BaoTree, BlockSize, ByteRanges, ChunkRanges};
use rand_core::{OsRng, RngCore};

use super::proto::Range;

/// 16 KiB chunk groups.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);
pub const CHALLENGE_CONTEXT: &[u8] = b"pluto v1 challenge\0";
/// Default: ranges per challenge and their length.
pub const DEFAULT_RANGES: usize = 16;
pub const DEFAULT_RANGE_LEN: u32 = 1024;
/// Ranges of a proof challenge relayed by the coordinator: each costs up to two 16 KiB chunk
/// groups in the answer, and the answer must fit one MQTT frame
/// ([`crate::wire::MAX_CHALLENGE_ANSWER`]). Relayed rounds repeat, so coverage comes over time.
pub const RELAYED_RANGES: usize = 1;

/// The keyed answer over the bytes of `ranges` (given in the same order).
pub fn keyed_answer(
    nonce: &[u8; 32],
    pack: &[u8; 32],
    ranges: &[Range],
    bytes: &[Vec<u8>],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(nonce);
    h.update(CHALLENGE_CONTEXT);
    h.update(pack);
    for (r, b) in ranges.iter().zip(bytes) {
        h.update(&r.offset.to_le_bytes());
        h.update(&r.len.to_le_bytes());
        h.update(b);
    }
    *h.finalize().as_bytes()
}

pub fn fresh_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    OsRng.fill_bytes(&mut n);
    n
}

/// `count` random ranges of up to `len` bytes inside a pack of `size` bytes, plus the last
/// `len` bytes (which pins the size). Sorted, possibly overlapping.
pub fn pick_ranges(size: u64, count: usize, len: u32) -> Vec<Range> {
    if size == 0 {
        return Vec::new();
    }
    let len = (len as u64).min(size).max(1);
    let mut out: Vec<Range> = (0..count.max(1).saturating_sub(1))
        .map(|_| Range {
            offset: OsRng.next_u64() % (size - len + 1),
            len: len as u32,
        })
        .collect();
    out.push(Range {
        offset: size - len,
        len: len as u32,
    });
    out.sort_by_key(|r| r.offset);
    out
}

fn chunk_ranges(ranges: &[Range]) -> ChunkRanges {
    let mut br = ByteRanges::empty();
    for r in ranges {
        br |= ByteRanges::from(r.offset..r.offset.saturating_add(r.len as u64));
    }
    round_up_to_chunks(&br)
}

/// Build the post-order outboard of `data` (read once) and return it with the root hash.
pub fn build_outboard(
    data: impl std::io::Read,
    size: u64,
) -> std::io::Result<PostOrderMemOutboard> {
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let mut ob = Vec::with_capacity(tree.outboard_size() as usize);
    let root = bao_tree::io::sync::outboard_post_order(data, tree, &mut ob)?;
    Ok(PostOrderMemOutboard {
        root,
        tree,
        data: ob,
    })
}

/// Host side: encode the proof of `ranges` from the (plain) data and its outboard.
pub fn prove<D: ReadAt + Size>(
    data: D,
    outboard: &PostOrderMemOutboard,
    ranges: &[Range],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_ranges(data, outboard, &chunk_ranges(ranges), &mut out)
        .map_err(|e| format!("cannot encode proof: {e:?}"))?;
    Ok(out)
}

/// Verify a proof knowing only the pack's name and true size; returns the bytes of each
/// requested range, in order.
pub fn verify_proof(
    name: &[u8; 32],
    size: u64,
    ranges: &[Range],
    encoded: &[u8],
) -> Result<Vec<Vec<u8>>, String> {
    for r in ranges {
        if r.offset.checked_add(r.len as u64).is_none_or(|e| e > size) {
            return Err(format!(
                "range {}+{} lies outside the pack's {size} bytes",
                r.offset, r.len
            ));
        }
    }
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let cr = chunk_ranges(ranges);
    let root = blake3::Hash::from_bytes(*name);
    let mut cursor = std::io::Cursor::new(encoded);
    let mut leaves: Vec<(u64, bytes::Bytes)> = Vec::new();
    for item in DecodeResponseIter::new(root, tree, &mut cursor, &cr) {
        match item.map_err(|e| format!("proof does not verify: {e}"))? {
            BaoContentItem::Leaf(l) => leaves.push((l.offset, l.data)),
            BaoContentItem::Parent(_) => {}
        }
    }
    if (cursor.position() as usize) != encoded.len() {
        return Err("trailing bytes after the proof".into());
    }
    ranges
        .iter()
        .map(|r| {
            let mut out = Vec::with_capacity(r.len as usize);
            let end = r.offset + r.len as u64;
            let mut pos = r.offset;
            while pos < end {
                let (lo, data) = leaves
                    .iter()
                    .find(|(o, d)| *o <= pos && pos < *o + d.len() as u64)
                    .ok_or_else(|| format!("proof does not cover byte {pos}"))?;
                let from = (pos - lo) as usize;
                let take = ((end - pos) as usize).min(data.len() - from);
                out.extend_from_slice(&data[from..from + take]);
                pos += take as u64;
            }
            Ok(out)
        })
        .collect()
}

/// Read the bytes of `ranges` through `read(offset, len)`.
pub fn read_ranges<E>(
    ranges: &[Range],
    mut read: impl FnMut(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Vec<Vec<u8>>, E> {
    ranges
        .iter()
        .map(|r| read(r.offset, r.len as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
            .collect()
    }

    #[test]
    fn outboard_root_is_the_plain_blake3_hash() {
        for n in [0usize, 1, 1024, 16 * 1024, 16 * 1024 + 1, 200_000] {
            let d = data(n);
            let ob = build_outboard(&d[..], n as u64).unwrap();
            assert_eq!(ob.root, blake3::hash(&d), "size {n}");
        }
    }

    #[test]
    fn proof_verifies_with_name_and_size_only_and_catches_lies() {
        let d = data(1_000_000);
        let name = *blake3::hash(&d).as_bytes();
        let ob = build_outboard(&d[..], d.len() as u64).unwrap();
        let ranges = pick_ranges(d.len() as u64, 8, 1024);
        assert_eq!(ranges.last().unwrap().offset, d.len() as u64 - 1024);
        let proof = prove(&d[..], &ob, &ranges).unwrap();
        let got = verify_proof(&name, d.len() as u64, &ranges, &proof).unwrap();
        for (r, b) in ranges.iter().zip(&got) {
            assert_eq!(
                &d[r.offset as usize..(r.offset + r.len as u64) as usize],
                &b[..]
            );
        }
        // A flipped byte anywhere in the proof fails.
        for i in [0, proof.len() / 3, proof.len() - 1] {
            let mut bad = proof.clone();
            bad[i] ^= 1;
            assert!(
                verify_proof(&name, d.len() as u64, &ranges, &bad).is_err(),
                "flip at {i}"
            );
        }
        // Truncated proof, wrong size, wrong name fail.
        assert!(verify_proof(&name, d.len() as u64, &ranges, &proof[..proof.len() - 1]).is_err());
        assert!(verify_proof(&name, d.len() as u64 + 1, &ranges, &proof).is_err());
        assert!(verify_proof(&[0; 32], d.len() as u64, &ranges, &proof).is_err());
        // A host whose data is corrupt cannot produce a valid proof.
        let mut bad = d.clone();
        bad[ranges[0].offset as usize] ^= 0xff;
        let proof = prove(&bad[..], &ob, &ranges).unwrap();
        assert!(verify_proof(&name, d.len() as u64, &ranges, &proof).is_err());
    }

    #[test]
    fn proof_of_a_range_of_a_large_pack_is_small() {
        let d = data(32 << 20);
        let ob = build_outboard(&d[..], d.len() as u64).unwrap();
        let r = [Range {
            offset: 12_345_678,
            len: 1024,
        }];
        let proof = prove(&d[..], &ob, &r).unwrap();
        // one or two 16 KiB groups plus the hash path
        assert!(proof.len() < 34 * 1024, "{}", proof.len());
        verify_proof(blake3::hash(&d).as_bytes(), d.len() as u64, &r, &proof).unwrap();
    }

    #[test]
    fn keyed_answer_depends_on_nonce_ranges_and_bytes() {
        let r = [Range { offset: 0, len: 3 }];
        let a = keyed_answer(&[1; 32], &[2; 32], &r, &[b"abc".to_vec()]);
        assert_ne!(a, keyed_answer(&[3; 32], &[2; 32], &r, &[b"abc".to_vec()]));
        assert_ne!(a, keyed_answer(&[1; 32], &[2; 32], &r, &[b"abd".to_vec()]));
        assert_ne!(
            a,
            keyed_answer(
                &[1; 32],
                &[2; 32],
                &[Range { offset: 1, len: 3 }],
                &[b"abc".to_vec()]
            )
        );
        println!("keyed vector: {}", hex::encode(a));
        assert_eq!(hex::encode(a), KEYED_VECTOR);
    }
    const KEYED_VECTOR: &str = "d2272381f316e2493914788a10aacd696524fe6f571414794d11950f78351111";

    #[test]
    fn ranges_stay_inside_the_pack() {
        for size in [1u64, 10, 1024, 1025, 100_000] {
            for r in pick_ranges(size, 10, 1024) {
                assert!(r.offset + r.len as u64 <= size);
                assert!(r.len > 0);
            }
        }
        assert!(pick_ranges(0, 4, 1024).is_empty());
    }
}
