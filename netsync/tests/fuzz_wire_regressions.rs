//! Replays every input kept under `fuzz/regressions/<target>/` for the wire targets through
//! the same function the libFuzzer target runs (`fuzz/harness/wire.rs`, `fuzz/harness/noise.rs`),
//! without cargo-fuzz.

#[path = "../../fuzz/harness/wire.rs"]
mod harness;
#[path = "../../fuzz/harness/noise.rs"]
mod noise_harness;

use std::path::Path;

#[test]
fn every_saved_wire_fuzz_input_runs_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for (name, run) in harness::TARGETS.iter().chain(noise_harness::TARGETS) {
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

/// The handshake harness is only worth its fuzzing time if its honest end really gets
/// through: an honest handshake followed by two messages (one in two fragments) arrives
/// as two messages, and an identity that does not verify is refused.
#[test]
fn the_handshake_harness_reaches_the_channel_and_refuses_a_lying_identity() {
    let mut input = vec![3u8];
    for m in [&b"\x00hello"[..], b"\x01ab", b"\x00cd"] {
        input.extend_from_slice(&(m.len() as u16).to_le_bytes());
        input.extend_from_slice(m);
    }
    assert_eq!(noise_harness::handshake_outcome(&input), Some(2));
    assert_eq!(noise_harness::handshake_outcome(&[3]), Some(0));
    // a bad fragment header ends the channel after what came before it
    input.extend_from_slice(&[1, 0, 7]);
    input.extend_from_slice(&[6, 0, 0, b'l', b'a', b't', b'e', b'r']);
    assert_eq!(noise_harness::handshake_outcome(&input), Some(2));
    let mut lying = vec![1u8];
    lying.extend_from_slice(&[0u8; pluto_netsync::peer::noise::IDENTITY_LEN]);
    assert_eq!(noise_harness::handshake_outcome(&lying), None);
    assert_eq!(noise_harness::handshake_outcome(&[0, 32, 0]), None);
}
