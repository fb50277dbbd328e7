//! `forget` removes snapshots by policy and says why; `prune` then frees the space they
//! alone used — measured — while every remaining snapshot restores byte for byte, even
//! when prune is killed with SIGKILL part way.

mod common;
use common::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

fn snapshot_at(src: &Path, time: &str, extra: &[&str]) -> String {
    let mut a = vec!["snapshot", "--json", "--time", time];
    a.extend_from_slice(extra);
    json(src, &a)["id"].as_str().unwrap().to_string()
}

fn log_ids(src: &Path) -> Vec<String> {
    json(src, &["log", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn forget_applies_the_policy_and_explains_each_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.txt"), b"a");
    ok(&src, &["init"]);
    // Two a day, 1st to 10th of March 2024 (TZ=UTC); the 2nd is tagged "release".
    let mut ids = Vec::new();
    for day in 1..=10 {
        for hour in [9, 21] {
            let tag: &[&str] = if day == 2 && hour == 9 {
                &["--tag", "release"]
            } else {
                &[]
            };
            ids.push(snapshot_at(
                &src,
                &format!("2024-03-{day:02} {hour:02}:00:00"),
                tag,
            ));
        }
    }
    let policy = [
        "--keep-daily",
        "3",
        "--keep-last",
        "2",
        "--keep-tag",
        "release",
    ];
    let mut dry = vec!["forget", "--dry-run", "--json"];
    dry.extend_from_slice(&policy);
    let plan = json(&src, &dry);
    let kept: Vec<(String, serde_json::Value)> = plan["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k["reasons"].clone()))
        .collect();
    use serde_json::json as j;
    assert_eq!(
        kept,
        vec![
            (ids[19].clone(), j!(["last", "daily"])),
            (ids[18].clone(), j!(["last"])),
            (ids[17].clone(), j!(["daily"])),
            (ids[15].clone(), j!(["daily"])),
            (ids[2].clone(), j!(["tag release"])),
        ]
    );
    assert_eq!(plan["remove"].as_array().unwrap().len(), 15);
    assert_eq!(plan["remove"][0]["reasons"], j!(["matched no keep rule"]));
    assert_eq!(log_ids(&src).len(), 20, "a dry run removes nothing");

    let text = {
        let mut a = vec!["forget"];
        a.extend_from_slice(&policy);
        ok(&src, &a)
    };
    assert!(text.contains("5 snapshot(s) kept, 15 removed"), "{text}");
    assert!(text.contains("run `pluto prune`"), "{text}");
    let mut left = log_ids(&src);
    left.sort();
    let mut want: Vec<String> = kept.into_iter().map(|k| k.0).collect();
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn a_policy_that_keeps_nothing_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.txt"), b"a");
    ok(&src, &["init"]);
    snapshot_at(&src, "2024-01-01 10:00:00", &[]);
    snapshot_at(&src, "2024-01-02 10:00:00", &[]);
    for args in [
        &["forget", "--keep-last", "0"][..],
        &["forget", "--keep-tag", "nobody-has-this"],
    ] {
        let err = fails(&src, args, 1);
        assert!(err.contains("keeps none of the 2 snapshots"), "{err}");
        assert!(err.contains("--force"), "{err}");
    }
    let err = fails(&src, &["forget"], 1);
    assert!(err.contains("no keep rule given"), "{err}");
    assert_eq!(log_ids(&src).len(), 2, "nothing was removed");
    ok(&src, &["forget", "--keep-last", "0", "--force"]);
    assert!(log_ids(&src).is_empty());
}

/// A tree whose second state drops half of many small files: the pack holding them
/// becomes half unused, which only repacking frees.
fn two_states(tmp: &Path) -> (PathBuf, Vec<(String, PathBuf)>) {
    let src = tmp.join("t");
    for i in 0..40 {
        write(
            &src.join(format!("small/{i:02}.bin")),
            &pseudo_random(50_000, i),
        );
    }
    write(&src.join("old-big.bin"), &pseudo_random(3_000_000, 100));
    ok(&src, &["init"]);
    let mut states = Vec::new();
    let first = snapshot_at(&src, "2024-05-01 12:00:00", &[]);
    let copy = tmp.join("state-1");
    copy_tree(&src, &copy);
    states.push((first, copy));
    for i in 20..40 {
        fs::remove_file(src.join(format!("small/{i:02}.bin"))).unwrap();
    }
    fs::remove_file(src.join("old-big.bin")).unwrap();
    write(&src.join("new.bin"), &pseudo_random(500_000, 200));
    let second = snapshot_at(&src, "2024-05-02 12:00:00", &[]);
    let copy = tmp.join("state-2");
    copy_tree(&src, &copy);
    states.push((second, copy));
    (src, states)
}

fn packs_bytes(src: &Path) -> u64 {
    du(&src.join(".pluto/packs"))
}

/// Every snapshot still listed restores to exactly the tree it recorded.
fn assert_snapshots_restore(src: &Path, states: &[(String, PathBuf)], scratch: &Path) {
    let listed = log_ids(src);
    for (id, tree) in states.iter().filter(|(id, _)| listed.contains(id)) {
        let out = scratch.join(format!("restore-{}", &id[..8]));
        let _ = fs::remove_dir_all(&out);
        ok(src, &["checkout", id, "--target", out.to_str().unwrap()]);
        assert_same_tree(tree, &out);
        fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn prune_after_forget_frees_the_space_and_every_remaining_snapshot_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, states) = two_states(tmp.path());
    let before = packs_bytes(&src);

    ok(&src, &["forget", &states[0].0]);
    // Dry run: a plan, no change.
    let plan = json(&src, &["prune", "--dry-run", "--max-unused", "0", "--json"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(packs_bytes(&src), before);
    assert!(plan["packs_repacked"].as_u64().unwrap() >= 1, "{plan}");

    let r = json(&src, &["prune", "--max-unused", "0", "--json"]);
    let after = packs_bytes(&src);
    let freed = before - after;
    // The forgotten snapshot alone held old-big.bin (3 MB) and 20 × 50 kB small files.
    assert!(freed >= 3_900_000, "freed only {freed} bytes: {r}");
    assert_eq!(r["bytes_freed"].as_u64(), Some(freed));
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["bytes_unused_after"], 0);
    println!("packs: {before} -> {after} bytes, {freed} freed");

    let check = ok(&src, &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
    assert_snapshots_restore(&src, &states, tmp.path());
    // A second prune finds nothing to do.
    let again = json(&src, &["prune", "--max-unused", "0", "--json"]);
    assert_eq!(again["bytes_freed"], 0);
    assert_eq!(packs_bytes(&src), after);
    // And the repository takes new snapshots that reuse what stayed.
    let s = json(&src, &["snapshot", "--json"]);
    assert_eq!(s["stats"]["bytes_added"], 0, "{s}");
}

#[test]
fn prune_killed_at_any_step_leaves_a_repository_that_checks_and_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, states) = two_states(tmp.path());
    ok(&src, &["forget", &states[0].0]);
    let pristine = tmp.path().join("pristine.pluto");
    // A command killed earlier left an unindexed pack: prune must delete it too.
    let junk = src.join(".pluto/packs/ab").join("ab".repeat(32));
    write(&junk, b"left by a killed snapshot");
    copy_tree(&src.join(".pluto"), &pristine);
    let fully_pruned = {
        ok(&src, &["prune", "--max-unused", "0"]);
        let b = packs_bytes(&src);
        fs::remove_dir_all(src.join(".pluto")).unwrap();
        b
    };
    for point in [
        "pack-written:1",
        "index-written:1",
        "index-deleted:1",
        "index-deleted:2",
        "pack-deleted:1",
        "pack-deleted:3",
    ] {
        let _ = fs::remove_dir_all(src.join(".pluto"));
        copy_tree(&pristine, &src.join(".pluto"));
        let o = pluto_cmd(&src)
            .args(["prune", "--max-unused", "0"])
            .env("PLUTO_TEST_KILL_AFTER", point)
            .output()
            .unwrap();
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: prune was not killed: {}",
            stderr(&o)
        );
        let check = pluto(&src, &["check", "--read-data"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "after a kill at {point}: {}{}",
            stdout(&check),
            stderr(&check)
        );
        assert_snapshots_restore(&src, &states, tmp.path());
        // The next prune finishes the job.
        ok(&src, &["prune", "--max-unused", "0"]);
        assert_eq!(packs_bytes(&src), fully_pruned, "after a kill at {point}");
        ok(&src, &["check", "--read-data"]);
    }
}

#[test]
fn prune_refuses_to_run_beside_another_command() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.txt"), b"a");
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    let lock = fs::File::open(src.join(".pluto/lock")).unwrap();
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH) }, 0);
    // PLUTO_LOCK_WAIT=0: no waiting, refused at once.
    let t0 = std::time::Instant::now();
    let o = pluto_cmd(&src)
        .env("PLUTO_LOCK_WAIT", "0")
        .arg("prune")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("locked by another pluto process"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    // With a short wait, refused with the same message once it has passed.
    let o = pluto_cmd(&src)
        .env("PLUTO_LOCK_WAIT", "1")
        .arg("prune")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("waiting for the repository lock"), "{err}");
    assert!(err.contains("locked by another pluto process"), "{err}");
}

#[test]
fn a_command_waits_for_a_lock_held_briefly_and_then_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.txt"), b"a");
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    // Another command (a `pluto prune`, say) holds the exclusive lock for 2 s.
    let lock = fs::File::open(src.join(".pluto/lock")).unwrap();
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        drop(lock);
    });
    write(&src.join("b.txt"), b"b");
    let t0 = std::time::Instant::now();
    let o = pluto(&src, &["snapshot"]);
    let took = t0.elapsed();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches("waiting for the repository lock").count(),
        1,
        "said once: {err}"
    );
    assert!(took >= std::time::Duration::from_millis(1000), "{took:?}");
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    holder.join().unwrap();
    assert_eq!(json(&src, &["log", "--json"]).as_array().unwrap().len(), 2);
}

#[test]
fn prune_refuses_a_repository_it_cannot_fully_read_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, states) = two_states(tmp.path());
    ok(&src, &["forget", &states[0].0]);
    // Damage the smallest pack: a tree pack, which the remaining snapshot needs.
    let mut packs: Vec<PathBuf> = Vec::new();
    for d in fs::read_dir(src.join(".pluto/packs")).unwrap().flatten() {
        packs.extend(fs::read_dir(d.path()).unwrap().flatten().map(|f| f.path()));
    }
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let listing = |src: &Path| {
        let mut v: Vec<String> = Vec::new();
        for d in ["packs", "index"] {
            let mut stack = vec![src.join(".pluto").join(d)];
            while let Some(p) = stack.pop() {
                for e in fs::read_dir(&p).unwrap().flatten() {
                    if e.file_type().unwrap().is_dir() {
                        stack.push(e.path());
                    } else {
                        v.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        v.sort();
        v
    };
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[60] ^= 0xff;
    fs::write(&packs[0], &bytes).unwrap();
    let before = listing(&src);
    let err = fails(&src, &["prune", "--max-unused", "0"], 4);
    assert!(err.contains("prune refused"), "{err}");
    assert!(err.contains("run `pluto check`"), "{err}");
    assert_eq!(listing(&src), before, "nothing deleted or written");
}

#[test]
fn forget_by_id_removes_exactly_those_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.txt"), b"a");
    ok(&src, &["init"]);
    let a = snapshot_at(&src, "2024-01-01 10:00:00", &[]);
    let b = snapshot_at(&src, "2024-01-02 10:00:00", &[]);
    let c = snapshot_at(&src, "2024-01-03 10:00:00", &[]);
    let v = json(&src, &["forget", &b[..10], "--json"]);
    assert_eq!(v["remove"][0]["id"], b.as_str());
    assert_eq!(
        v["remove"][0]["reasons"],
        serde_json::json!(["named on the command line"])
    );
    assert_eq!(log_ids(&src), [c.clone(), a.clone()]);
    let err = fails(&src, &["forget", &a, "--keep-last", "1"], 1);
    assert!(
        err.contains("either snapshot ids or --keep-* rules"),
        "{err}"
    );
}

#[test]
fn prune_killed_at_arbitrary_moments_leaves_a_valid_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, states) = two_states(tmp.path());
    ok(&src, &["forget", &states[0].0]);
    let pristine = tmp.path().join("pristine.pluto");
    copy_tree(&src.join(".pluto"), &pristine);
    let mut killed = 0;
    // Spread over the few tens of milliseconds prune takes here: reading trees, writing
    // packs, swapping index files, deleting packs.
    for delay_ms in [0u64, 3, 6, 10, 15, 20, 30, 45] {
        let _ = fs::remove_dir_all(src.join(".pluto"));
        copy_tree(&pristine, &src.join(".pluto"));
        let mut child = pluto_cmd(&src)
            .args(["prune", "--max-unused", "0"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed += 1;
        }
        let check = pluto(&src, &["check", "--read-data"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "after a kill at {delay_ms} ms: {}{}",
            stdout(&check),
            stderr(&check)
        );
        assert_snapshots_restore(&src, &states, tmp.path());
    }
    assert!(
        killed > 0,
        "no run was interrupted: the delays are too long"
    );
}
