//! pluto's hot paths next to the raw primitive beneath each (the physical limit here):
//!
//! | group          | pluto                                   | raw primitive              |
//! |----------------|-----------------------------------------|----------------------------|
//! | chunker        | `ChunkerParams::cut` (default sizes)    | `fastcdc::v2020` iterator  |
//! | object-id      | `ObjectId::compute` (keyed BLAKE3)      | `blake3::hash`             |
//! | compress-seal  | `maybe_compress` + `SubKey::seal_into`  | zstd bulk, ring AES-GCM    |
//! | pack-write     | `PackWriter::add` (seal+write+hash)     | ring AES-256-GCM seal      |
//! | index-lookup   | `Index::get` (type, id) on 1M entries | `HashMap<[u8; 32], u64>`   |
//!
//! Run: `cargo bench -p pluto-benches` (set CARGO_TARGET_DIR to keep builds apart).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pluto_benches::{random_data, text_data};
use pluto_repo::chunker::ChunkerParams;
use pluto_repo::compress::{maybe_compress, DEFAULT_LEVEL};
use pluto_repo::crypto::{object_aad, ObjType, ObjectId, SubKey};
use pluto_repo::index::{Index, IndexedPack};
use pluto_repo::pack::writer::PackWriter;
use pluto_repo::pack::{PackEntry, PackId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn ring_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap())
}

fn chunker(c: &mut Criterion) {
    let data = random_data(16 * MIB, 1);
    let p = ChunkerParams::default();
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("pluto cut (256K/512K/4M)", |b| {
        b.iter(|| black_box(p.cut(black_box(&data))).len())
    });
    g.bench_function("raw fastcdc v2020", |b| {
        b.iter(|| fastcdc::v2020::FastCDC::new(black_box(&data), p.min, p.avg, p.max).count())
    });
    g.finish();
}

fn object_id(c: &mut Criterion) {
    let data = random_data(512 * 1024, 2);
    let key = [3u8; 32];
    let mut g = c.benchmark_group("object-id");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("pluto ObjectId::compute 512K", |b| {
        b.iter(|| ObjectId::compute(&key, black_box(&data)))
    });
    g.bench_function("raw blake3::hash 512K", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    g.finish();
}

fn compress_seal(c: &mut Criterion) {
    let key = SubKey::from_raw(&[5u8; 32]);
    let raw = ring_key();
    let id = ObjectId([1; 32]);
    let mut g = c.benchmark_group("compress-seal");
    for (name, data) in [
        ("text", text_data(512 * 1024, 3)),
        ("random", random_data(512 * 1024, 4)),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        let mut out = Vec::with_capacity(data.len() + 64);
        g.bench_with_input(
            BenchmarkId::new("pluto compress+seal", name),
            &data,
            |b, d| {
                b.iter(|| {
                    let (flags, stored) = maybe_compress(d, DEFAULT_LEVEL);
                    out.clear();
                    key.seal_into(&object_aad(ObjType::Chunk, flags, &id), &stored, &mut out);
                    out.len()
                })
            },
        );
        for level in [-1, 1, 3] {
            g.bench_with_input(
                BenchmarkId::new(format!("raw zstd level {level}"), name),
                &data,
                |b, d| b.iter(|| zstd::bulk::compress(d, level).unwrap().len()),
            );
        }
        let mut buf = data.clone();
        g.bench_with_input(
            BenchmarkId::new("raw ring AES-256-GCM", name),
            &data,
            |b, _| {
                b.iter(|| {
                    raw.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([0; 12]),
                        Aad::from(&[0u8; 34]),
                        &mut buf,
                    )
                    .unwrap()
                })
            },
        );
        let z = zstd::bulk::compress(&data, 3).unwrap();
        println!(
            "compress-seal/{name}: zstd ratios -1: {:.2}  1: {:.2}  3: {:.2}",
            data.len() as f64 / zstd::bulk::compress(&data, -1).unwrap().len() as f64,
            data.len() as f64 / zstd::bulk::compress(&data, 1).unwrap().len() as f64,
            data.len() as f64 / z.len() as f64
        );
    }
    g.finish();
}

fn pack_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = random_data(512 * 1024, 5);
    let raw = ring_key();
    let mut g = c.benchmark_group("pack-write");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let mut w = PackWriter::create(dir.path(), &[9u8; 32]).unwrap();
    let mut n = 0u32;
    g.bench_function("pluto PackWriter::add 512K", |b| {
        b.iter(|| {
            n += 1;
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            if w.len() > 64 * MIB as u64 {
                let old =
                    std::mem::replace(&mut w, PackWriter::create(dir.path(), &[9u8; 32]).unwrap());
                old.abandon();
            }
            w.add(ObjType::Chunk, 0, ObjectId(id), &data, data.len() as u32)
                .unwrap()
        })
    });
    let mut buf = data.clone();
    g.bench_function("raw ring AES-256-GCM 512K", |b| {
        b.iter(|| {
            raw.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&[0u8; 34]),
                &mut buf,
            )
            .unwrap()
        })
    });
    g.finish();
    w.abandon();
}

fn index_lookup(c: &mut Criterion) {
    const N: usize = 1_000_000;
    const PER_PACK: usize = 1000;
    let ids: Vec<[u8; 32]> = (0..N as u64)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    let mut idx = Index::new();
    for (p, group) in ids.chunks(PER_PACK).enumerate() {
        let pack = IndexedPack {
            id: PackId(*blake3::hash(&(p as u64).to_be_bytes()).as_bytes()),
            size: 512 * 1024 * PER_PACK as u64,
            entries: group
                .iter()
                .enumerate()
                .map(|(i, id)| PackEntry {
                    ty: ObjType::Chunk,
                    flags: 1,
                    id: ObjectId(*id),
                    offset: 40 + i as u32 * 1000,
                    stored_len: 1000,
                    plain_len: 3000,
                })
                .collect(),
        };
        idx.add_pack(&pack);
    }
    idx.finish();
    println!(
        "index: {} entries, {} heap bytes, {:.1} bytes per entry",
        idx.len(),
        idx.heap_bytes(),
        idx.heap_bytes() as f64 / idx.len() as f64
    );
    let map: HashMap<[u8; 32], u64> = ids.iter().map(|id| (*id, 0u64)).collect();
    let probe: Vec<ObjectId> = (0..1024).map(|i| ObjectId(ids[(i * 977) % N])).collect();
    let mut g = c.benchmark_group("index-lookup");
    g.throughput(Throughput::Elements(probe.len() as u64));
    g.bench_function("pluto Index::get (1M entries)", |b| {
        b.iter(|| {
            probe
                .iter()
                .filter(|id| idx.get(ObjType::Chunk, id).is_some())
                .count()
        })
    });
    g.bench_function("raw HashMap<[u8;32],u64>::get (1M)", |b| {
        b.iter(|| probe.iter().filter(|id| map.contains_key(&id.0)).count())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = chunker, object_id, compress_seal, pack_write, index_lookup
}
criterion_main!(benches);
