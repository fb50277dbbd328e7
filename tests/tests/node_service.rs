//! The node as a service, with the real binaries: a coordinator and eleven hosts on
//! 127.0.0.1, and an owner who starts `pluto serve` with a short schedule and a hook, then
//! only changes files. Its snapshots reach 8 hosts with no other command; three hosts die;
//! the node places their shares on spare hosts by itself, and the hook hears of it.
//!
//! Eleven hosts, not eight: 4/8 keeps each pack's shares on 8 distinct hosts, so putting
//! back the shares of 3 dead hosts takes 3 hosts that hold none yet.
//!
//! Every wait is bounded; every child is killed when the test ends, pass or fail.

use pluto_e2e::*;
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Names of the files of `owner` under `sub` (`snapshots`, `shares`) a host keeps.
fn hosted(host_dir: &Path, owner: &str, sub: &str) -> HashSet<String> {
    std::fs::read_dir(host_dir.join(".pluto/hosted").join(owner).join(sub))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 64)
                .collect()
        })
        .unwrap_or_default()
}

fn snapshots(repo_dir: &Path) -> HashSet<String> {
    std::fs::read_dir(repo_dir.join(".pluto/snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .collect()
}

/// The alerts the hook wrote, one JSON document a line.
fn alerts(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("hook line {l:?}: {e}")))
        .collect()
}

/// `pluto status`: its exit code and its first line (the verdict).
fn verdict(repo_dir: &Path) -> (Option<i32>, String) {
    let o = pluto(repo_dir, &["status"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (
        o.status.code(),
        out.lines().next().unwrap_or("").to_string(),
    )
}

#[test]
fn a_node_left_alone_backs_up_on_its_schedule_and_replaces_dead_hosts() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (mut coord, url) =
        start_coordinator(&base.join("coordinator"), &["--ping-interval", "3600"]);
    let mut hosts = new_hosts(base, &url, 11);

    // The owner: some files, a repository, and the node — nothing else, ever.
    let a = base.join("a");
    std::fs::create_dir_all(&a).unwrap();
    write(&a.join("notes.txt"), b"first draft\n");
    write(&a.join("photo.raw"), &pseudo_random(3 << 20, 7));
    ok(&a, &["init"]);
    let a_id = node_id(&a);
    let hook = base.join("alerts.jsonl");
    let mut c = Command::new(pluto_bin());
    c.current_dir(&a).env_remove("PLUTO_REPO").args([
        "serve",
        "--coordinator",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--offer",
        "1G",
        "--snapshot-every",
        "2",
        "--challenge-every",
        "1",
        "--host-grace",
        "3",
        "--notify-every",
        "1",
        "--notify-cmd",
        &format!("cat >> {}", hook.display()),
    ]);
    let mut node = Daemon::spawn("a", c);
    node.wait_containing("serving peers on ws://", Duration::from_secs(30));

    // A second node on the same repository is refused, naming the first.
    let second = pluto(
        &a,
        &["serve", "--listen", "127.0.0.1:0", "--snapshot-every", "0"],
    );
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains(&format!("pid {}", node.child.id())),
        "{}",
        stderr(&second)
    );

    // The node took a snapshot at start and pushed it as 4/8 shares to 8 hosts.
    node.wait_containing("snapshot ", Duration::from_secs(60));
    let holding = |snap: &str| {
        hosts
            .iter()
            .filter(|(d, _)| hosted(d, &a_id, "snapshots").contains(snap))
            .count()
    };
    wait_until(
        "the first snapshot on 8 hosts",
        Duration::from_secs(60),
        &mut [&mut node, &mut coord],
        || snapshots(&a).iter().any(|s| holding(s) >= 8),
    );
    eprintln!("[{:?}] first snapshot on 8 hosts", t0.elapsed());

    // The owner edits a file. A snapshot taken after the edit reaches 8 hosts by itself.
    write(&a.join("notes.txt"), b"second draft, much better\n");
    let before_edit_seen = {
        let s0 = snapshots(&a);
        wait_until(
            "a snapshot after the edit",
            Duration::from_secs(30),
            &mut [&mut node],
            || snapshots(&a).len() > s0.len(),
        );
        snapshots(&a)
    };
    let mut edited = None;
    wait_until(
        "a snapshot of the edit on 8 hosts",
        Duration::from_secs(60),
        &mut [&mut node, &mut coord],
        || {
            edited = snapshots(&a)
                .difference(&before_edit_seen)
                .find(|s| holding(s) >= 8)
                .cloned();
            edited.is_some()
        },
    );
    let edited = edited.unwrap();
    // Every share on a host that answers: status says so first, and exits 0.
    let mut said = (None, String::new());
    wait_until(
        "status: Protected",
        Duration::from_secs(30),
        &mut [&mut node],
        || {
            said = verdict(&a);
            said.0 == Some(0)
        },
    );
    assert!(said.1.starts_with("Protected: snapshot "), "{said:?}");
    assert!(said.1.contains("as 4/8"), "{said:?}");
    // On 127.0.0.1 every host is reached directly; status says how each was reached.
    let st = status_json(&a);
    let direct = st["hosts"]
        .as_object()
        .unwrap()
        .values()
        .filter(|h| h["last_path"] == "direct" && h["bytes_direct"].as_u64() > Some(0))
        .count();
    assert!(direct >= 8, "hosts reached directly: {direct}: {st}");
    // Commands run beside the node: it holds the repository only while it writes.
    let shown = ok(&a, &["dump", &edited[..8], "notes.txt"]);
    assert_eq!(shown, "second draft, much better\n");
    eprintln!("[{:?}] the edit on 8 hosts", t0.elapsed());

    // Three hosts holding shares die.
    let holders: Vec<usize> = (0..hosts.len())
        .filter(|&i| !hosted(&hosts[i].0, &a_id, "shares").is_empty())
        .collect();
    assert_eq!(holders.len(), 8, "shares on 8 hosts");
    let spares: Vec<usize> = (0..hosts.len()).filter(|i| !holders.contains(i)).collect();
    for &i in &holders[..3] {
        let _ = hosts[i].1.child.kill();
        let _ = hosts[i].1.child.wait();
    }
    eprintln!("[{:?}] killed 3 hosts", t0.elapsed());

    // Within a challenge round or two the node finds them unreachable: At risk (exit 5).
    wait_until(
        "status: At risk",
        Duration::from_secs(20),
        &mut [&mut node],
        || {
            said = verdict(&a);
            said.0 == Some(5)
        },
    );
    assert!(said.1.starts_with("At risk: "), "{said:?}");
    eprintln!("[{:?}] at risk: {}", t0.elapsed(), said.1);

    // Past the grace, the node stops counting them and puts their shares on the spares.
    let packs = || {
        std::fs::read_dir(a.join(".pluto/packs"))
            .unwrap()
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).unwrap().count())
            .sum::<usize>()
    };
    wait_until(
        "the dead hosts' shares on the spares",
        Duration::from_secs(60),
        &mut [&mut node, &mut coord],
        || {
            let n = packs();
            spares
                .iter()
                .all(|&i| hosted(&hosts[i].0, &a_id, "shares").len() >= n)
        },
    );
    let st = status_json(&a);
    assert_eq!(st["shares"]["scheme"], "4/8", "{st}");
    for &i in &holders[..3] {
        let id = node_id(&hosts[i].0);
        assert_eq!(st["hosts"][&id]["failed"], true, "{id} still counted: {st}");
    }
    eprintln!("[{:?}] replaced", t0.elapsed());

    // Their shares stand on the spares: Protected again, with the dead hosts not counted.
    wait_until(
        "status: Protected again",
        Duration::from_secs(30),
        &mut [&mut node],
        || {
            said = verdict(&a);
            said.0 == Some(0)
        },
    );
    assert!(said.1.starts_with("Protected: "), "{said:?}");
    eprintln!("[{:?}] protected again: {}", t0.elapsed(), said.1);

    // The hook heard of each loss and of the replacement.
    wait_until(
        "the hook hears of the replacement",
        Duration::from_secs(20),
        &mut [&mut node],
        || {
            let seen = alerts(&hook);
            let levels: Vec<&str> = seen
                .iter()
                .filter(|e| e["event"] == "protection_changed")
                .filter_map(|e| e["level"].as_str())
                .collect();
            // each loss is told, or folded into a later alert of its kind
            let lost_told: u64 = seen
                .iter()
                .filter(|e| e["event"] == "host_lost")
                .map(|e| 1 + e["coalesced"].as_u64().unwrap_or(0))
                .sum();
            lost_told >= 3
                && seen.iter().any(|e| e["event"] == "host_replaced")
                && levels.contains(&"at_risk")
                && levels.last() == Some(&"protected")
        },
    );
    let seen = alerts(&hook);
    let lost: HashSet<String> = seen
        .iter()
        .filter(|e| e["event"] == "host_lost")
        .filter_map(|e| e["host"].as_str().map(str::to_string))
        .collect();
    let folded: u64 = seen
        .iter()
        .filter(|e| e["event"] == "host_lost")
        .map(|e| e["coalesced"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        lost.len() as u64 + folded >= 3,
        "three losses told (some folded): {seen:?}"
    );
    let log = node.drain();
    assert!(log.contains("its copies no longer count"), "{log}");

    let st = node.terminate(Duration::from_secs(20));
    assert!(st.success(), "serve exit {st:?}:\n{}", node.drain());
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "{:?}",
        t0.elapsed()
    );
}
