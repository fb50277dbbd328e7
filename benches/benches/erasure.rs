//! Erasure coding throughput (netsync::erasure) next to raw BLAKE3 hashing of the same
//! bytes. Throughput is per byte of pack (the group's original data).
//!
//! cargo bench -p pluto-benches --bench erasure
//!
//! - `blake3`: `blake3::hash` of the pack (what naming a pack costs).
//! - `encode`: `erasure::encode` — names the pack, splits it, Reed–Solomon parity, names
//!   every share.
//! - `decode/data`: the k data shares arrive (the common pull): names checked, packs
//!   reassembled and checked against their names, no Reed–Solomon.
//! - `decode/worst`: as many data shares as possible are lost (n − k of them), so
//!   Reed–Solomon restores them from parity shares.
//! - `rebuild`: a host rebuilds a lost parity share from k others (names checked,
//!   data restored, packs checked, parity re-encoded): owner-less repair.

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, Bencher, BenchmarkId, Criterion, Throughput,
};
use pluto_netsync::erasure::{encode, Decoder, Params, Share, ShareId};

const MIB: usize = 1024 * 1024;

fn pack(len: usize) -> Vec<u8> {
    // Incompressible, deterministic (packs are ciphertext).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn inputs(shares: &[Share], which: &[usize]) -> Vec<(ShareId, Vec<u8>)> {
    which
        .iter()
        .map(|&i| (shares[i].id(), shares[i].as_bytes().to_vec()))
        .collect()
}

fn decode(b: &mut Bencher, shares: &[Share], which: &[usize]) {
    b.iter_batched(
        || inputs(shares, which),
        |list| {
            let mut d = Decoder::new();
            for (id, bytes) in list {
                d.add(id, bytes).unwrap();
            }
            d.finish().unwrap()
        },
        BatchSize::LargeInput,
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("erasure");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for mib in [16usize, 64] {
        let data = pack(mib * MIB);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(BenchmarkId::new("blake3", format!("{mib}MiB")), |b| {
            b.iter(|| blake3::hash(&data))
        });
        for (k, n) in [(4u8, 8u8), (10, 16)] {
            let params = Params::new(k, n).unwrap();
            let id = format!("{k}of{n}/{mib}MiB");
            g.bench_function(BenchmarkId::new("encode", &id), |b| {
                b.iter(|| encode(params, &[&data]).unwrap())
            });
            let shares = encode(params, &[&data]).unwrap();
            let (k, n) = (usize::from(k), usize::from(n));
            // k data shares.
            let firsts: Vec<usize> = (0..k).collect();
            g.bench_function(BenchmarkId::new("decode/data", &id), |b| {
                decode(b, &shares, &firsts)
            });
            // Lose the first n - k data shares (all of them for 4/8).
            let lost = (n - k).min(k);
            let worst: Vec<usize> = (lost..lost + k).collect();
            g.bench_function(BenchmarkId::new("decode/worst", &id), |b| {
                decode(b, &shares, &worst)
            });
            // Rebuild the last parity share from the first k shares.
            let from: Vec<usize> = (0..k).collect();
            let target = (n - 1) as u8;
            g.bench_function(BenchmarkId::new("rebuild", &id), |b| {
                b.iter_batched(
                    || inputs(&shares, &from),
                    |list| {
                        let mut d = Decoder::new();
                        for (id, bytes) in list {
                            d.add(id, bytes).unwrap();
                        }
                        d.rebuild(target).unwrap()
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
