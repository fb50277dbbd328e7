//! The local repository's user stories (issue: init, snapshot, log, checkout, recover).

use pluto_e2e::*;
use std::fs;
use std::process::Command;

const MIB: usize = 1024 * 1024;

#[test]
fn tricky_tree_snapshot_then_checkout_on_new_machine_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("Documents");
    fs::create_dir_all(&src).unwrap();
    tricky_tree(&src, 100);
    let init = ok(&src, &["init"]);
    let words = words_from_init(&init);
    assert!(src.join(".pluto/secret").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(src.join(".pluto/secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let out = ok(&src, &["snapshot", "-m", "first"]);
    assert!(out.contains("saved"), "{out}");
    let restored = tmp.path().join("restored");
    ok(
        &src,
        &["checkout", "latest", "--target", restored.to_str().unwrap()],
    );
    assert_same_tree(&src, &restored);
    // The sparse file's zeros came back as a hole.
    use std::os::unix::fs::MetadataExt;
    assert!(fs::metadata(restored.join("sparse")).unwrap().blocks() * 512 < 2 * MIB as u64);

    // Another machine: a copy of the repository without its secret, and the words.
    let copy = tmp.path().join("copy-of-the-.pluto");
    let status = Command::new("cp")
        .arg("-a")
        .arg(src.join(".pluto"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_file(copy.join("secret")).unwrap();
    fs::remove_file(copy.join("worktree")).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let copy_s = copy.to_str().unwrap();

    let no_secret = pluto(&elsewhere, &["--repo", copy_s, "log"]);
    assert_eq!(no_secret.status.code(), Some(1));
    assert!(
        stderr(&no_secret).contains("no secret file"),
        "{}",
        stderr(&no_secret)
    );

    // Valid BIP39 words of another identity are refused, by name.
    let other = tempfile::tempdir().unwrap();
    let other_words = words_from_init(&ok(other.path(), &["init"]));
    let wrong = pluto_env(
        &elsewhere,
        &["init", "--recover", "--repo", copy_s],
        &[],
        Some(&other_words),
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("do not open"), "{}", stderr(&wrong));
    // Garbage words are refused too.
    let garbage = pluto_env(
        &elsewhere,
        &["init", "--recover", "--repo", copy_s],
        &[],
        Some("not my words at all"),
    );
    assert_eq!(garbage.status.code(), Some(1));
    assert!(
        stderr(&garbage).contains("invalid recovery words"),
        "{}",
        stderr(&garbage)
    );

    let rec = pluto_env(
        &elsewhere,
        &["init", "--recover", "--repo", copy_s],
        &[],
        Some(&words),
    );
    assert!(rec.status.success(), "{}", stderr(&rec));
    let log = ok(&elsewhere, &["--repo", copy_s, "log"]);
    assert!(log.contains("first"), "{log}");
    let restored2 = tmp.path().join("restored2");
    ok(
        &elsewhere,
        &[
            "--repo",
            copy_s,
            "checkout",
            "latest",
            "--target",
            restored2.to_str().unwrap(),
        ],
    );
    assert_same_tree(&src, &restored2);
    let check = ok(&elsewhere, &["--repo", copy_s, "check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
}

#[test]
fn an_edit_to_a_large_tree_adds_little_to_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    write(&src.join("big.bin"), &pseudo_random(100 * MIB, 7));
    for i in 0..50 {
        write(
            &src.join(format!("small/{i}.txt")),
            format!("small file {i}\n").repeat(50).as_bytes(),
        );
    }
    ok(&src, &["init"]);
    ok(&src, &["snapshot", "-m", "before"]);
    let before = du(&src.join(".pluto"));

    let mut big = fs::read(src.join("big.bin")).unwrap();
    big.splice(50 * MIB..50 * MIB, *b"TEN BYTES!");
    fs::write(src.join("big.bin"), &big).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(src.join("small/3.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"appended\n").unwrap();
    fs::remove_file(src.join("small/4.txt")).unwrap();
    write(&src.join("small/new.txt"), b"a new file\n");

    let out = ok(&src, &["snapshot", "-m", "after"]);
    let added = du(&src.join(".pluto")) - before;
    assert!(
        added < 5 * MIB as u64,
        "second snapshot added {added} bytes: {out}"
    );

    let log = ok(&src, &["log"]);
    let after_pos = log.find("after").unwrap();
    let before_pos = log.find("before").unwrap();
    assert!(after_pos < before_pos, "log is newest first:\n{log}");
    assert!(
        log.contains("Parent:"),
        "the second snapshot names its parent:\n{log}"
    );

    let restored = tmp.path().join("r");
    ok(
        &src,
        &["checkout", "latest", "--target", restored.to_str().unwrap()],
    );
    assert_same_tree(&src, &restored);
    // The first snapshot is still intact too.
    let first = tmp.path().join("first");
    let ids = ok(&src, &["log", "--oneline"]);
    let first_id = ids
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ok(
        &src,
        &[
            "checkout",
            &first_id,
            "--target",
            first.to_str().unwrap(),
            "small/4.txt",
        ],
    );
    assert!(first.join("small/4.txt").exists());
}

#[test]
fn snapshot_killed_at_any_moment_leaves_a_repository_that_checks_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    for i in 0..24 {
        write(
            &src.join(format!("f{i:02}.bin")),
            &pseudo_random(6 * MIB, i),
        );
    }
    for i in 0..300 {
        write(
            &src.join(format!("many/{i}.txt")),
            format!("{i}\n").repeat(100).as_bytes(),
        );
    }
    ok(&src, &["init"]);
    let bin = pluto_bin();
    let mut interrupted = 0;
    for (round, delay_ms) in [5u64, 40, 120, 250, 500, 900].into_iter().enumerate() {
        // Change something so each round has new data to write.
        write(
            &src.join(format!("round{round}.bin")),
            &pseudo_random(4 * MIB, 1000 + round as u64),
        );
        let mut child = Command::new(&bin)
            .current_dir(&src)
            .args(["snapshot", "-q", "-m", "killed"])
            .env_remove("PLUTO_REPO")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(libc::SIGKILL) {
            interrupted += 1;
        }
        let check = pluto(&src, &["check"]);
        assert!(
            check.status.success(),
            "round {round} (kill after {delay_ms} ms): check failed\n{}\n{}",
            String::from_utf8_lossy(&check.stdout),
            stderr(&check)
        );
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} snapshots were killed mid-way"
    );
    ok(&src, &["snapshot", "-m", "after the kills"]);
    let check = ok(&src, &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
    let restored = tmp.path().join("r");
    ok(
        &src,
        &["checkout", "latest", "--target", restored.to_str().unwrap()],
    );
    assert_same_tree(&src, &restored);
}
