//! Every bad input gets a clear error and a non-zero exit, never a panic, and loses nothing.

use pluto_e2e::*;
use std::fs;
use std::path::{Path, PathBuf};

fn no_panic(o: &std::process::Output) {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "pluto panicked:\n{e}");
}

/// A repository with two snapshots of a small tree.
fn repo_with_snapshots() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    write(&src.join("a.bin"), &pseudo_random(3 * 1024 * 1024, 1));
    write(&src.join("docs/b.txt"), b"hello\n");
    ok(&src, &["init"]);
    ok(&src, &["snapshot", "-m", "one"]);
    write(&src.join("docs/c.txt"), b"more\n");
    ok(&src, &["snapshot", "-m", "two"]);
    (tmp, src)
}

fn packs(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(src.join(".pluto/packs")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    out
}

#[test]
fn a_directory_that_is_not_a_repository_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let o = pluto(tmp.path(), &["--repo", tmp.path().to_str().unwrap(), "log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not a pluto repository"),
        "{}",
        stderr(&o)
    );
    let o = pluto(tmp.path(), &["log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no pluto repository found"),
        "{}",
        stderr(&o)
    );
    no_panic(&o);
}

#[test]
fn init_twice_is_refused_and_keeps_the_first_repository() {
    let (_tmp, src) = repo_with_snapshots();
    let o = pluto(&src, &["init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already holds"), "{}", stderr(&o));
    assert!(ok(&src, &["log"]).contains("two"));
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_and_named_with_the_snapshots_it_affects() {
    let (_tmp, src) = repo_with_snapshots();
    let pack = packs(&src).remove(0);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[1000] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    let o = pluto(&src, &["check", "--read-data"]);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(4), "damage has its own exit code");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&name), "the pack is named:\n{out}");
    assert!(
        out.contains("affects snapshots"),
        "the snapshots are named:\n{out}"
    );

    let target = src.parent().unwrap().join("restore");
    let o = pluto(
        &src,
        &["checkout", "latest", "--target", target.to_str().unwrap()],
    );
    no_panic(&o);
    // Everything else is restored; the files in the damaged pack are named (exit 3, partial).
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(&name) && stderr(&o).contains("authentication"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_truncated_pack_fails_check() {
    let (_tmp, src) = repo_with_snapshots();
    let pack = packs(&src).remove(0);
    let bytes = fs::read(&pack).unwrap();
    fs::write(&pack, &bytes[..bytes.len() / 2]).unwrap();
    let o = pluto(&src, &["check"]);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("bytes but the index says"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_missing_pack_or_index_fails_check_by_name() {
    let (_tmp, src) = repo_with_snapshots();
    let pack = packs(&src).remove(0);
    fs::remove_file(&pack).unwrap();
    let o = pluto(&src, &["check"]);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("missing"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    let (_tmp2, src2) = repo_with_snapshots();
    for f in fs::read_dir(src2.join(".pluto/index")).unwrap().flatten() {
        fs::remove_file(f.path()).unwrap();
    }
    let o = pluto(&src2, &["check"]);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(4));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("not in the index"), "{out}");
    assert!(stderr(&o).contains("is in no index"), "{}", stderr(&o));
}

#[test]
fn a_tampered_snapshot_file_is_named() {
    let (_tmp, src) = repo_with_snapshots();
    let snap = fs::read_dir(src.join(".pluto/snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 5] ^= 1;
    fs::write(&snap, &b).unwrap();
    let name = snap.file_name().unwrap().to_str().unwrap().to_string();
    // `log` lists the snapshots it can read and names the damaged one in a warning…
    let o = pluto(&src, &["log"]);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains(&name), "{}", stderr(&o));
    // …and `check` calls it damage.
    let o = pluto(&src, &["check"]);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(4));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(all.contains(&name[..8]), "{all}");
}

#[test]
fn unknown_and_ambiguous_snapshot_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    write(&src.join("f"), b"0");
    ok(&src, &["init"]);
    // 17 snapshots: two must share their first hex digit.
    for i in 0..17 {
        write(&src.join("f"), format!("{i}").as_bytes());
        ok(&src, &["snapshot", "-q", "-m", &format!("s{i}")]);
    }
    let ids: Vec<String> = ok(&src, &["log", "--oneline"])
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let first_chars: Vec<char> = ids.iter().map(|i| i.chars().next().unwrap()).collect();
    let shared = first_chars
        .iter()
        .find(|c| first_chars.iter().filter(|d| d == c).count() > 1)
        .unwrap()
        .to_string();
    let target = tmp.path().join("t");
    let o = pluto(
        &src,
        &["checkout", &shared, "--target", target.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ambiguous"), "{}", stderr(&o));

    let o = pluto(
        &src,
        &[
            "checkout",
            "deadbeefdeadbeef",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no snapshot matches"), "{}", stderr(&o));
    let o = pluto(
        &src,
        &[
            "checkout",
            "not-an-id",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));

    // Any unique prefix works.
    ok(
        &src,
        &["checkout", &ids[0], "--target", target.to_str().unwrap()],
    );
    assert_eq!(fs::read(target.join("f")).unwrap(), b"16");
}

#[test]
fn checkout_onto_files_is_refused_without_force() {
    let (tmp, src) = repo_with_snapshots();
    let target = tmp.path().join("busy");
    write(&target.join("precious.txt"), b"mine");
    let o = pluto(
        &src,
        &["checkout", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(fs::read(target.join("precious.txt")).unwrap(), b"mine");
    ok(
        &src,
        &[
            "checkout",
            "latest",
            "--force",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read(target.join("docs/b.txt")).unwrap(), b"hello\n");
    assert_eq!(fs::read(target.join("precious.txt")).unwrap(), b"mine");

    let o = pluto(
        &src,
        &[
            "checkout",
            "latest",
            "--target",
            tmp.path().join("x").to_str().unwrap(),
            "no/such/path",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not in snapshot"), "{}", stderr(&o));
}

#[test]
fn a_malformed_secret_file_is_named() {
    let (_tmp, src) = repo_with_snapshots();
    fs::write(src.join(".pluto/secret"), "garbage").unwrap();
    let o = pluto(&src, &["log"]);
    no_panic(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("secret file"), "{}", stderr(&o));
}

#[test]
fn an_unreadable_file_makes_a_partial_snapshot_with_its_own_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    write(&src.join("fine.txt"), b"fine");
    write(&src.join("secret.txt"), b"nobody may read this");
    ok(&src, &["init"]);
    chmod(&src.join("secret.txt"), 0o000);
    // root reads everything: drop to an unprivileged user for this run.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut c = std::process::Command::new(pluto_bin());
    c.current_dir(&src)
        .args(["snapshot", "--json"])
        .env_remove("PLUTO_REPO");
    if is_root {
        let status = std::process::Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(status.success());
        chmod(&src.join("secret.txt"), 0o000);
        chmod(&src.join(".pluto/secret"), 0o644);
        use std::os::unix::process::CommandExt;
        unsafe {
            c.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let o = c.output().unwrap();
    no_panic(&o);
    assert_eq!(o.status.code(), Some(3), "partial: {}", stderr(&o));
    assert!(
        stderr(&o).contains("secret.txt"),
        "the file is named: {}",
        stderr(&o)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["partial"], true);
    assert_eq!(doc["stats"]["unreadable"].as_array().unwrap().len(), 1);
}
