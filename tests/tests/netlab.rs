//! The NAT lab's short run (tests/netlab/netlab.py): the real coordinator and nodes on an
//! emulated internet of network namespaces — 3 public hosts, 5 behind NAT routers (one
//! symmetric; the cone ones map ports — home 2's by NAT-PMP only, home 3's not at all, home
//! 4's only from after its node's first announce), the owner behind NAT — a 4/8 push that reaches every host, directly but for
//! the symmetric home, and a restore on a new machine that is byte-identical. Needs root
//! (CI runs as root); elsewhere the script says SKIPPED with the reason, and so does this
//! test. The long runs are by hand (see the book's NAT lab page).

use pluto_e2e::*;
use std::process::Command;

#[test]
fn a_push_from_behind_nat_reaches_hosts_behind_nat_and_restores() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("netlab/netlab.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--pluto", pluto_bin().to_str().unwrap()])
        .args(["--coordinator-bin", coordinator_bin().to_str().unwrap()])
        .args([
            "--mib",
            "4",
            "--delay-ms",
            "10",
            "--rate",
            "50mbit",
            "--limit",
            "170",
            // home4's router starts UPnP only after home4 announced: its node maps at the
            // next try (30 s on) and announces again
            "--late-upnp",
            "4",
            // home3's router has no UPnP: the owner punches a hole to it
            "--no-upnp-on",
            "3",
            // home2's router speaks NAT-PMP only (as Apple's and some others do)
            "--natpmp-only-on",
            "2",
        ])
        .output()
        .expect("run python3 tests/netlab/netlab.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    if text.contains("netlab: SKIPPED") {
        eprintln!("SKIPPED: the NAT lab could not run here (see its line above)");
        return;
    }
    assert!(out.status.success(), "the NAT lab failed:\n{text}");
    assert!(text.contains("netlab: PASSED"), "{text}");
    // The figures line: the public hosts are reachable; the homes behind a cone NAT whose
    // router runs UPnP-IGD (miniupnpd) mapped their peer port, the dial-back reached the
    // mapped address, and the push went to them directly; the symmetric home (no UPnP)
    // stays unreachable and relayed.
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("netlab: figures "))
        .expect("a figures line");
    let f: serde_json::Value = serde_json::from_str(line).expect("figures are JSON");
    for h in ["pub1", "pub2", "pub3", "home1", "home2", "home4"] {
        assert_eq!(f["reachability"][h], "reachable", "{h}: {line}");
    }
    assert_eq!(f["reachability"]["home3"], "unreachable", "no UPnP: {line}");
    assert_eq!(f["reachability"]["home5"], "unreachable", "{line}");
    for (i, h) in [(1, "home1"), (2, "home2"), (4, "home4")] {
        assert_eq!(
            f["mapped"][h],
            format!("ws://198.51.101.{}:7447", 20 + i),
            "{h} announces its router's mapped address: {line}"
        );
    }
    assert_eq!(f["mapped_by"]["home1"], "UPnP-IGD", "{line}");
    assert_eq!(
        f["mapped_by"]["home2"], "NAT-PMP",
        "a router without UPnP-IGD maps through NAT-PMP: {line}"
    );
    // home3 (a cone NAT without UPnP) is reached by punching a hole through both NATs.
    assert_eq!(f["hosts_direct"], 7, "{line}");
    assert_eq!(f["hosts_punched"], 1, "{line}");
    assert_eq!(
        f["hosts_relayed"], 1,
        "only the symmetric home is relayed: {line}"
    );
    assert!(f["relayed_share"].as_f64().unwrap() < 0.2, "{line}");
    assert_eq!(f["owner_mapping_removed_on_stop"], true, "{line}");
    assert_eq!(
        f["reachable_after_late_mapping"],
        serde_json::json!(["home4"]),
        "a mapping that appears later is announced again and confirmed: {line}"
    );
}
