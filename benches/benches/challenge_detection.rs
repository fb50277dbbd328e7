//! How fast do storage challenges catch a host that silently dropped part of a pack?
//!
//! A real hosted store holds a 4 MiB pack; the cheating host then loses a fraction of it
//! — random 1 KiB blocks, overwritten on its disk, the last block kept so the pack's size
//! still looks right (a host that truncates is caught by the first challenge, which always
//! reads the last KiB). The owner sends real keyed challenges (`DEFAULT_RANGES` random
//! 1 KiB ranges, fresh nonce) and compares the host's answer with the one its local copy
//! gives. For each kept fraction: challenges until the first failure over many trials.
//!
//!     cargo bench -p pluto-benches --bench challenge_detection

use std::sync::Arc;

use pluto_netsync::peer::challenge::{self, DEFAULT_RANGES, DEFAULT_RANGE_LEN};
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::proto::Kind;
use pluto_netsync::wire::NodeId;

const SIZE: usize = 4 << 20;
const BLOCK: usize = 1024;

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let trials = if smoke { 20 } else { 2000 };
    let pack = pluto_benches::random_data(SIZE, 42);
    let name = *blake3::hash(&pack).as_bytes();
    println!(
        "{} KiB pack, challenges of {DEFAULT_RANGES} × {DEFAULT_RANGE_LEN} B ranges, {trials} trials each",
        SIZE / 1024
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>12}",
        "kept", "mean", "p99", "max", "caught by 1"
    );
    for kept in [0.99f64, 0.90, 0.50] {
        let dir = tempfile::tempdir().unwrap();
        let owner = NodeId([7; 32]);
        let allow = Arc::new(AllowList::new());
        allow.set(owner, 1 << 30);
        let store = HostedStore::open(dir.path().join("hosted"), &[9; 32], allow).unwrap();
        store
            .put_begin(&owner, Kind::Pack, &name, SIZE as u64)
            .unwrap();
        store.put_data(&owner, Kind::Pack, &name, 0, &pack).unwrap();
        store.put_end(&owner, Kind::Pack, &name).unwrap();
        // lose random blocks on the host's disk (deterministic pattern, last block kept)
        let on_disk = dir
            .path()
            .join("hosted")
            .join(owner.to_hex())
            .join("packs")
            .join(hex::encode(name));
        let mut bytes = std::fs::read(&on_disk).unwrap();
        let blocks = SIZE / BLOCK;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut lost = 0;
        for b in 0..blocks - 1 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (x % 10_000) as f64 >= kept * 10_000.0 {
                bytes[b * BLOCK..(b + 1) * BLOCK].fill(0);
                lost += 1;
            }
        }
        std::fs::write(&on_disk, bytes).unwrap();
        let mut counts = Vec::with_capacity(trials);
        for _ in 0..trials {
            let mut n = 0u64;
            loop {
                n += 1;
                let ranges = challenge::pick_ranges(SIZE as u64, DEFAULT_RANGES, DEFAULT_RANGE_LEN);
                let nonce = challenge::fresh_nonce();
                let local: Vec<Vec<u8>> = ranges
                    .iter()
                    .map(|r| pack[r.offset as usize..(r.offset + r.len as u64) as usize].to_vec())
                    .collect();
                let expected = challenge::keyed_answer(&nonce, &name, &ranges, &local);
                let answer = store.challenge(&owner, &name, &nonce, &ranges);
                if answer.ok() != Some(expected) || n >= 10_000 {
                    break;
                }
            }
            counts.push(n);
        }
        counts.sort_unstable();
        let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
        let p99 = counts[counts.len() * 99 / 100];
        let first = counts.iter().filter(|&&c| c == 1).count() as f64 / counts.len() as f64;
        println!(
            "{:>5.0}% {:>10.2} {:>10} {:>10} {:>11.1}%   ({lost} of {blocks} blocks lost)",
            kept * 100.0,
            mean,
            p99,
            counts[counts.len() - 1],
            first * 100.0
        );
    }
}
