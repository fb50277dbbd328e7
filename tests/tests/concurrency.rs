//! The user's commands beside a busy node. While `pluto serve` pushes and challenges its
//! hosts every second (a coordinator and three host nodes on 127.0.0.1), the user runs
//! snapshot, push, forget, prune, pull and check in a loop for about 20 s. None of them is
//! refused or waits long for the repository lock; afterwards `check --read-data` passes;
//! and a thread reading the owner's peer record all along never sees a counter or a
//! timestamp go backwards (two writers each saving what they loaded would).
//!
//! Every wait is bounded; every child process is killed when the test ends, pass or fail.

use pluto_e2e::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the user's loop runs.
const BUSY_FOR: Duration = Duration::from_secs(20);
/// The longest any one user command may take (it may wait for the node's brief writes).
const COMMAND_BOUND: Duration = Duration::from_secs(30);

/// Per host: the fields that must never go backwards.
type Marks = BTreeMap<String, [u64; 5]>;

fn marks(state: &serde_json::Value) -> Marks {
    let mut out = Marks::new();
    for (id, h) in state["hosts"].as_object().into_iter().flatten() {
        let n = |k: &str| h[k].as_u64().unwrap_or(0);
        out.insert(
            id.clone(),
            [
                n("challenges_passed"),
                n("challenges_failed"),
                n("last_push_unix"),
                n("last_seen_unix"),
                h["last_challenge"]["unix"].as_u64().unwrap_or(0),
            ],
        );
    }
    out
}

/// Read the record until `stop`; return (reads, what went backwards).
fn watch(state_file: &Path, stop: &AtomicBool) -> (usize, Vec<String>) {
    const FIELDS: [&str; 5] = [
        "challenges_passed",
        "challenges_failed",
        "last_push_unix",
        "last_seen_unix",
        "last_challenge.unix",
    ];
    let (mut reads, mut backwards) = (0, Vec::new());
    let mut last = Marks::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(bytes) = std::fs::read(state_file) {
            // written atomically: every read is a whole file
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("a torn or malformed peer record: {e}"));
            reads += 1;
            let now = marks(&v);
            for (host, before) in &last {
                let Some(after) = now.get(host) else {
                    backwards.push(format!("host {} vanished from the record", &host[..16]));
                    continue;
                };
                for i in 0..FIELDS.len() {
                    if after[i] < before[i] {
                        backwards.push(format!(
                            "host {}: {} went from {} to {}",
                            &host[..16],
                            FIELDS[i],
                            before[i],
                            after[i]
                        ));
                    }
                }
            }
            for (h, m) in now {
                last.insert(h, m);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (reads, backwards)
}

#[test]
fn commands_run_beside_a_node_that_pushes_and_challenges_every_second() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let cdir = base.join("coordinator");
    let (_coord, url) = start_coordinator(
        &cdir,
        &["--relay-listen", "127.0.0.1:0", "--challenge-interval", "1"],
    );
    let mut hosts = Vec::new();
    for i in 0..3 {
        let dir = base.join(format!("host{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        ok(&dir, &["init"]);
        let args = [
            "--coordinator",
            &url,
            "--offer",
            "1G",
            "--push-every",
            "0",
            "--challenge-every",
            "0",
        ];
        hosts.push(start_serve(&format!("host{i}"), &dir, &args).0);
    }

    // The owner: a small tree, one snapshot, its node pushing and challenging every second.
    let a = base.join("a");
    for i in 0..20u64 {
        write(
            &a.join(format!("f{i}.bin")),
            &pseudo_random(64 << 10, i + 1),
        );
    }
    ok(&a, &["init"]);
    ok(&a, &["snapshot", "-m", "first"]);
    let (mut node, _) = start_serve(
        "a",
        &a,
        &[
            "--coordinator",
            &url,
            "--offer",
            "1G",
            "-k",
            "2",
            "--push-every",
            "1",
            "--challenge-every",
            "1",
        ],
    );
    node.wait_containing("host(s) matched", Duration::from_secs(30));

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (file, stop) = (a.join(".pluto/peers/state.json"), stop.clone());
        std::thread::spawn(move || watch(&file, &stop))
    };

    // The user, busy beside the node.
    let t0 = Instant::now();
    let mut ran: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    let mut round = 0u64;
    while t0.elapsed() < BUSY_FOR {
        round += 1;
        write(
            &a.join(format!("new-{round}.bin")),
            &pseudo_random(32 << 10, 1000 + round),
        );
        std::fs::remove_file(a.join(format!("f{}.bin", round % 20))).ok();
        for args in [
            &["snapshot", "-q", "-m", "by hand"][..],
            &["push", "-q", "-k", "2"],
            &["forget", "--keep-last", "3"],
            &["prune"],
            &["pull", "-q"],
            &["check"],
        ] {
            let started = Instant::now();
            let o = pluto(&a, args);
            let took = started.elapsed();
            let err = stderr(&o);
            // push may exit 1 while a copy is short (a host busy); nothing may be refused
            // for the lock, and nothing may wait long.
            assert!(
                !err.contains("locked by another pluto process"),
                "round {round}: {args:?} was refused: {err}"
            );
            assert!(
                o.status.success() || args[0] == "push",
                "round {round}: {args:?} failed ({:?}): {err}",
                o.status.code()
            );
            assert!(
                took < COMMAND_BOUND,
                "round {round}: {args:?} took {took:?}: {err}"
            );
            let e = ran.entry(args[0]).or_default();
            e.0 += 1;
            e.1 = e.1.max(took);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, backwards) = watcher.join().unwrap();
    assert!(node.alive(), "the node died: {}", node.drain());
    node.terminate(Duration::from_secs(30));
    for h in &mut hosts {
        h.terminate(Duration::from_secs(30));
    }

    let check = pluto(&a, &["check", "--read-data"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(reads > 100, "the record was read only {reads} times");
    assert!(
        backwards.is_empty(),
        "{} field(s) went backwards in {reads} reads:\n{}",
        backwards.len(),
        backwards.join("\n")
    );
    let st = status_json(&a);
    let challenged: u64 = st["hosts"]
        .as_object()
        .unwrap()
        .values()
        .map(|h| h["challenges_passed"].as_u64().unwrap_or(0))
        .sum();
    assert!(challenged > 0, "the node challenged no host: {st}");
    eprintln!(
        "{round} rounds in {:?}; {reads} reads of the record, none backwards; longest per command: {:?}",
        t0.elapsed(),
        ran
    );
}
