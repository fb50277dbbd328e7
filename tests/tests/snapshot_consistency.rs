//! Files that change while `pluto snapshot` reads them: live logs, mailboxes, databases.
//! Whatever the timing, a snapshot that saves must pass `check --read-data` and restore,
//! and each file must come back with content it really had (or be named as changed).

use pluto_e2e::*;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const MIB: usize = 1024 * 1024;

const BLOCK: usize = 64 * 1024;

/// Block `k` of the growing log: every prefix of the log is a version it really had.
fn log_block(k: u64) -> Vec<u8> {
    pseudo_random(BLOCK, 1000 + k)
}

/// `restored` is the first bytes of `live` (the log as it is now, only ever appended to).
fn assert_is_prefix(restored: &Path, live: &Path) {
    let mut a = fs::File::open(restored).unwrap();
    let mut b = fs::File::open(live).unwrap();
    let (mut x, mut y) = (vec![0u8; MIB], vec![0u8; MIB]);
    let mut pos = 0u64;
    loop {
        let n = read_full(&mut a, &mut x);
        if n == 0 {
            break;
        }
        let m = read_full(&mut b, &mut y[..n]);
        assert_eq!(m, n, "restored log is longer than the log ever was");
        assert!(
            x[..n] == y[..n],
            "restored log differs from the log at byte {pos}+"
        );
        pos += n as u64;
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    got
}

#[test]
fn a_log_that_grows_while_it_is_read_is_saved_as_read_and_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    fs::create_dir_all(&src).unwrap();
    let log = src.join("big.log");
    let initial_blocks = 96 * 16u64;
    {
        let mut f = fs::File::create(&log).unwrap();
        for k in 0..initial_blocks {
            f.write_all(&log_block(k)).unwrap();
        }
    }
    write(&src.join("quiet.txt"), b"this one does not change");
    ok(&src, &["init"]);

    // Append to the log, a block at a time, for as long as the snapshot runs.
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut k = initial_blocks;
            // Slow enough that the snapshot ends first, fast enough that every read of the
            // log sees it grow; bounded, so a slow snapshot cannot fill the disk.
            while !stop.load(Ordering::Relaxed) && k < 16 * 512 {
                f.write_all(&log_block(k)).unwrap();
                k += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            k
        })
    };
    let started = std::time::Instant::now();
    let o = pluto(&src, &["snapshot", "--json"]);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let appended = appender.join().unwrap() - initial_blocks;
    assert!(appended > 0, "the log grew during the snapshot");
    let code = o.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "saved, whole or partial: {code:?}\n{}",
        stderr(&o)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let changed = doc["stats"]["changed_during_read"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if code == Some(3) {
        assert_eq!(doc["partial"], true);
        assert_eq!(changed.len(), 1, "only the log changed: {changed:?}");
        assert!(changed[0].as_str().unwrap().ends_with("big.log"));
        assert!(
            stderr(&o).contains("big.log") && stderr(&o).contains("changed while it was read"),
            "the warning names the file: {}",
            stderr(&o)
        );
    } else {
        assert!(changed.is_empty());
    }

    ok(&src, &["check", "--read-data"]);
    let out = tmp.path().join("out");
    ok(
        &src,
        &["checkout", "latest", "--target", out.to_str().unwrap()],
    );
    let restored = out.join("big.log");
    let len = fs::metadata(&restored).unwrap().len();
    assert!(
        len >= initial_blocks * BLOCK as u64,
        "at least what the log held when the snapshot began: {len}"
    );
    assert_is_prefix(&restored, &log);
    assert_eq!(
        fs::read(out.join("quiet.txt")).unwrap(),
        b"this one does not change"
    );
    eprintln!(
        "log: {} MiB at start, {} KiB appended during the snapshot ({took:?}), \
         {len} bytes restored, exit {code:?}",
        (initial_blocks * BLOCK as u64) >> 20,
        (appended * BLOCK as u64) >> 10
    );
}

/// A file of `len` bytes holding `pieces` (offset, bytes) and holes everywhere else.
fn sparse_file(path: &Path, len: u64, pieces: &[(u64, Vec<u8>)]) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (off, bytes) in pieces {
        f.write_all_at(bytes, *off).unwrap();
    }
}

fn blocks(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks()
}

#[test]
fn a_sparse_disk_image_is_read_without_its_holes_and_restores_identically_and_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    fs::create_dir_all(&src).unwrap();
    let len = 300 * MIB as u64;
    // Data at the start, at odd offsets, in a run longer than a chunk, and at the very end;
    // holes shorter and longer than the largest chunk between them.
    let pieces = vec![
        (0, pseudo_random(4096, 1)),
        (5 * MIB as u64 + 123, pseudo_random(70_000, 2)),
        (6 * MIB as u64, pseudo_random(1000, 3)),
        (100 * MIB as u64, pseudo_random(9 * MIB, 4)),
        (len - 10, b"the end!!!".to_vec()),
    ];
    sparse_file(&src.join("disk.img"), len, &pieces);
    // Data only at the start: the file ends in a hole.
    sparse_file(
        &src.join("tail-hole.img"),
        64 * MIB as u64,
        &[(0, pseudo_random(3000, 5))],
    );
    // All hole.
    sparse_file(&src.join("empty.img"), 50 * MIB as u64, &[]);
    if blocks(&src.join("disk.img")) * 512 >= len {
        eprintln!("this file system does not keep holes: nothing to test");
        return;
    }
    ok(&src, &["init"]);
    let o = pluto(&src, &["snapshot", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let out = tmp.path().join("out");
    ok(
        &src,
        &["checkout", "latest", "--target", out.to_str().unwrap()],
    );
    for name in ["disk.img", "tail-hole.img", "empty.img"] {
        let (a, b) = (src.join(name), out.join(name));
        assert_eq!(
            blake3::hash(&fs::read(&a).unwrap()),
            blake3::hash(&fs::read(&b).unwrap()),
            "{name} restores byte for byte"
        );
        assert_eq!(
            fs::metadata(&a).unwrap().len(),
            fs::metadata(&b).unwrap().len()
        );
        assert!(
            blocks(&b) * 512 < fs::metadata(&b).unwrap().len(),
            "{name} restores sparse"
        );
    }

    // The same bytes written densely cut into the same chunks: nothing new is stored but
    // the directory's tree.
    fs::write(
        src.join("dense.img"),
        fs::read(src.join("disk.img")).unwrap(),
    )
    .unwrap();
    let o = pluto(&src, &["snapshot", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        doc["stats"]["objects_added"].as_u64(),
        Some(1),
        "the dense copy dedups against the sparse read: only the root tree is new"
    );
    fs::remove_file(src.join("dense.img")).unwrap();
    ok(&src, &["check", "--read-data"]);
}

/// Pack files in the repository's store, with their sizes.
fn packs(repo: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(repo.join("packs")) {
        for sub in rd.flatten() {
            for f in fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                out.push((f.path(), f.metadata().unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

fn snapshot_json(src: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["snapshot", "--json"];
    a.extend_from_slice(args);
    let o = pluto(src, &a);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn after_the_largest_pack_is_lost_a_snapshot_with_force_read_stores_its_data_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    for i in 0..4u64 {
        write(
            &src.join(format!("file{i}.bin")),
            &pseudo_random(9 * MIB, 50 + i),
        );
    }
    ok(&src, &["init"]);
    let first = snapshot_json(&src, &[]);
    let repo = src.join(".pluto");
    let (largest, size) = packs(&repo).into_iter().max_by_key(|p| p.1).unwrap();
    fs::remove_file(&largest).unwrap();

    // Dedup does not trust the index entries of the lost pack: its chunks are read from
    // the files and stored again.
    let healed = snapshot_json(&src, &["--force-read"]);
    let stored = healed["stats"]["stored_added"].as_u64().unwrap();
    assert!(
        stored + 64 * 1024 >= size,
        "the lost pack's {size} bytes are stored again (stored {stored})"
    );
    let out = tmp.path().join("out");
    for (k, snap) in [&healed, &first].iter().enumerate() {
        let target = out.join(k.to_string());
        ok(
            &src,
            &[
                "checkout",
                snap["id"].as_str().unwrap(),
                "--target",
                target.to_str().unwrap(),
            ],
        );
        for i in 0..4u64 {
            assert!(
                fs::read(target.join(format!("file{i}.bin"))).unwrap()
                    == pseudo_random(9 * MIB, 50 + i),
                "file{i}.bin restores"
            );
        }
    }
    // The index still lists the lost pack until prune drops it; then all is clean.
    ok(&src, &["prune"]);
    ok(&src, &["check", "--read-data"]);
    // And a plain snapshot now dedups everything.
    let again = snapshot_json(&src, &["--force-read"]);
    assert_eq!(again["stats"]["objects_added"].as_u64(), Some(0));
}

/// Start `pluto snapshot` on `src` and stop it with `signal` once `packs` packs are
/// complete (or it ends first); its exit status and stderr.
fn interrupt_snapshot(src: &Path, packs_before: usize, signal: i32) -> (Option<i32>, String) {
    let repo = src.join(".pluto");
    let mut child = std::process::Command::new(pluto_bin())
        .current_dir(src)
        .args(["snapshot", "--json"])
        .env_remove("PLUTO_REPO")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while packs(&repo).len() < packs_before && std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: a signal to the child we started.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let o = child.wait_with_output().unwrap();
    (o.status.code(), stderr(&o))
}

/// A point at random, from the clock: 3 to 7 packs into the snapshot.
fn random_point() -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    3 + nanos % 5
}

fn big_tree(src: &Path, files: u64) -> u64 {
    for i in 0..files {
        write(
            &src.join(format!("part{i:02}.bin")),
            &pseudo_random(16 * MIB, 700 + i),
        );
    }
    files * 16 * MIB as u64
}

#[test]
fn ctrl_c_during_a_snapshot_keeps_the_packs_in_hand_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    let total = big_tree(&src, 12);
    ok(&src, &["init"]);
    let (code, err) = interrupt_snapshot(&src, random_point(), libc::SIGINT);
    let repo = src.join(".pluto");
    let left: u64 = packs(&repo).iter().map(|p| p.1).sum();
    if code == Some(0) {
        eprintln!("the snapshot ended before the signal: nothing to test");
        return;
    }
    assert_eq!(code, Some(130), "exit as Ctrl-C does: {err}");
    assert!(
        err.contains("interrupted:") && err.contains("indexed"),
        "a line says the work is kept: {err}"
    );
    assert!(fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .next()
        .is_none());
    assert!(
        fs::read_dir(repo.join("index")).unwrap().next().is_some(),
        "the packs in hand are indexed"
    );
    ok(&src, &["check"]);

    let o = pluto(&src, &["snapshot", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stored = doc["stats"]["stored_added"].as_u64().unwrap();
    eprintln!(
        "SIGINT after {} MiB of {} MiB were stored; the rerun stored {} MiB",
        left >> 20,
        total >> 20,
        stored >> 20
    );
    assert!(
        stored <= total.saturating_sub(left) + MIB as u64,
        "nothing the interrupted run stored is stored again: {stored} > {total} - {left}"
    );
    ok(&src, &["check", "--read-data"]);
}

#[test]
fn a_snapshot_killed_midway_leaves_packs_the_next_one_adopts_instead_of_storing_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    let files = 12u64;
    let total = big_tree(&src, files);
    ok(&src, &["init"]);
    let repo = src.join(".pluto");
    // SIGKILL once a few packs are complete: no index file is written for them.
    let (code, _) = interrupt_snapshot(&src, random_point(), libc::SIGKILL);
    if code == Some(0) {
        eprintln!("the snapshot ended before the signal: nothing to test");
        return;
    }
    let left = packs(&repo);
    let left_bytes: u64 = left.iter().map(|p| p.1).sum();
    assert!(
        fs::read_dir(repo.join("snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "the killed snapshot saved nothing"
    );

    let o = pluto(&src, &["snapshot", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stored = doc["stats"]["stored_added"].as_u64().unwrap();
    // What the first run left is reused: the rerun stores the rest, and at most a couple
    // of packs' worth again (the object being sealed when the kill came, the trees).
    let pack = 16 * MIB as u64;
    eprintln!(
        "killed after {} packs ({} MiB) of {} MiB; the rerun stored {} MiB",
        left.len(),
        left_bytes >> 20,
        total >> 20,
        stored >> 20
    );
    assert!(
        stored <= total.saturating_sub(left_bytes) + 2 * pack,
        "the rerun stores only what the killed run had not: {stored} > {total} - {left_bytes} + 2 packs"
    );
    if !left.is_empty() {
        assert!(
            stderr(&o).contains("were checked and reused"),
            "the rerun says it adopted the packs: {}",
            stderr(&o)
        );
    }
    ok(&src, &["check", "--read-data"]);
    let out = tmp.path().join("out");
    ok(
        &src,
        &["checkout", "latest", "--target", out.to_str().unwrap()],
    );
    for i in 0..files {
        assert!(
            fs::read(out.join(format!("part{i:02}.bin"))).unwrap()
                == pseudo_random(16 * MIB, 700 + i)
        );
    }
}
