//! Replays every input kept under `fuzz/regressions/<target>/` for the wire targets through
//! the same function the libFuzzer target runs (`fuzz/harness/wire.rs`), without cargo-fuzz.

#[path = "../../fuzz/harness/wire.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_saved_wire_fuzz_input_runs_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for (name, run) in harness::TARGETS {
        for input in [&b""[..], b"\0", &[0xff; 64]] {
            run(input);
        }
        let Ok(rd) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            eprintln!("replaying {}", f.display());
            run(&std::fs::read(&f).unwrap());
            n += 1;
        }
    }
    eprintln!("{n} saved inputs replayed");
}
