//! Replays every input kept under `fuzz/regressions/<target>/` through the same function
//! the libFuzzer target runs (`fuzz/harness/repo.rs`), without cargo-fuzz: each one once
//! crashed or hung a target, and must now come back with an error or success, never a panic.
//! Inputs saved by `cargo fuzz` (crash-*, oom-*, timeout-*) are copied there by hand.

#[path = "../../fuzz/harness/repo.rs"]
mod harness;

use std::path::Path;

fn replay(targets: &[harness::Target]) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for (name, run) in targets {
        // Every target also takes the trivial inputs.
        for input in [&b""[..], b"\0", &[0xff; 64]] {
            run(input);
        }
        let Ok(rd) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            eprintln!("replaying {}", f.display());
            run(&bytes);
            n += 1;
        }
    }
    n
}

#[test]
fn every_saved_fuzz_input_runs_without_panic() {
    let n = replay(harness::TARGETS);
    eprintln!("{n} saved inputs replayed");
}

#[test]
fn the_fuzz_words_are_the_fuzz_entropy() {
    let e = pluto_repo::keys::Entropy::from_words(harness::FUZZ_WORDS).unwrap();
    assert_eq!(e.as_bytes(), &harness::FUZZ_ENTROPY);
}

/// Used by `fuzz/seed.sh`: plaintext seeds from the repository it made.
#[test]
#[ignore = "run by fuzz/seed.sh"]
fn write_fuzz_seeds() {
    let repo = std::env::var("PLUTO_FUZZ_SEED_REPO").expect("PLUTO_FUZZ_SEED_REPO");
    let corpus = std::env::var("PLUTO_FUZZ_CORPUS").expect("PLUTO_FUZZ_CORPUS");
    harness::write_plain_seeds(Path::new(&repo), Path::new(&corpus));
}
