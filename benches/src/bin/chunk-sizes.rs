//! Which FastCDC sizes (min / avg / max) suit a corpus? For each candidate, cut every file of
//! BEFORE, deduplicate the chunks by hash and compress them as a snapshot would (zstd level 3
//! where the probe says it pays, plus the 28 bytes of AES-GCM per object): chunks, stored
//! bytes, and the index's size at 46.5 bytes per entry. With AFTER (the same tree after an
//! edit), also what a second snapshot would add.
//!
//!     cargo run --release -p pluto-benches --bin chunk-sizes -- BEFORE [AFTER]
//!
//! It models the stored bytes of pluto's pipeline without writing a repository, so many
//! candidates can be compared on one corpus in one run.

use pluto_repo::chunker::ChunkerParams;
use pluto_repo::compress::maybe_compress;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const SEAL_OVERHEAD: u64 = 28;
const INDEX_BYTES_PER_ENTRY: f64 = 46.5;
const LEVEL: i32 = 3;

#[derive(Default, Clone, Copy)]
struct Tally {
    chunks: u64,
    unique_chunks: u64,
    unique_plain: u64,
    stored: u64,
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if e.file_name() != ".pluto" {
                    stack.push(e.path());
                }
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Add the chunks of every file under `root` to `seen`; tally what is new.
fn add_tree(root: &Path, params: &ChunkerParams, seen: &Mutex<HashSet<[u8; 32]>>) -> Tally {
    use rayon::prelude::*;
    let files = files_under(root);
    let tallies: Vec<Tally> = files
        .par_iter()
        .map(|p| {
            let mut t = Tally::default();
            let Ok(data) = std::fs::read(p) else {
                return t;
            };
            for (off, len) in params.cut(&data) {
                let chunk = &data[off..off + len];
                t.chunks += 1;
                let id = *blake3::hash(chunk).as_bytes();
                if !seen.lock().unwrap().insert(id) {
                    continue;
                }
                t.unique_chunks += 1;
                t.unique_plain += len as u64;
                t.stored += maybe_compress(chunk, LEVEL).1.len() as u64 + SEAL_OVERHEAD;
            }
            t
        })
        .collect();
    tallies.into_iter().fold(Tally::default(), |a, b| Tally {
        chunks: a.chunks + b.chunks,
        unique_chunks: a.unique_chunks + b.unique_chunks,
        unique_plain: a.unique_plain + b.unique_plain,
        stored: a.stored + b.stored,
    })
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() > 2 || args[0].starts_with('-') {
        eprintln!("usage: chunk-sizes BEFORE [AFTER]");
        std::process::exit(2);
    }
    let before = PathBuf::from(&args[0]);
    let after = args.get(1).map(PathBuf::from);
    const KIB: u32 = 1024;
    let candidates = [
        (128 * KIB, 256 * KIB, 2048 * KIB),
        (256 * KIB, 512 * KIB, 4096 * KIB),
        (512 * KIB, 1024 * KIB, 8192 * KIB),
        (1024 * KIB, 2048 * KIB, 8192 * KIB),
    ];
    println!(
        "{:>22} {:>9} {:>12} {:>12} {:>10}{}",
        "min/avg/max (KiB)",
        "chunks",
        "unique MB",
        "stored MB",
        "index MB",
        if after.is_some() {
            "   edit adds MB"
        } else {
            ""
        }
    );
    for (min, avg, max) in candidates {
        let params = ChunkerParams { min, avg, max };
        if let Err(e) = params.validate() {
            eprintln!("{min}/{avg}/{max}: {e}");
            continue;
        }
        let seen = Mutex::new(HashSet::new());
        let first = add_tree(&before, &params, &seen);
        let edit = after.as_ref().map(|a| add_tree(a, &params, &seen));
        println!(
            "{:>22} {:>9} {:>12.1} {:>12.1} {:>10.2}{}",
            format!("{}/{}/{}", min / KIB, avg / KIB, max / KIB),
            first.chunks,
            mb(first.unique_plain),
            mb(first.stored),
            first.unique_chunks as f64 * INDEX_BYTES_PER_ENTRY / 1e6,
            edit.map(|e| format!("   {:>12.1}", mb(e.stored)))
                .unwrap_or_default()
        );
    }
}
