//! The everyday command line of a restic or git user (issue 20), each as a user meets it,
//! with the real binary on real folders.

mod common;
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn snap_ids(dir: &Path) -> Vec<String> {
    json(dir, &["log", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn restoring_a_path_in_place_works_like_git_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    write(&a.join("notes.txt"), b"first notes\n");
    write(&a.join("docs/a.txt"), b"doc a, first\n");
    write(&a.join("other.txt"), b"other\n");
    ok(&a, &["init"]);
    ok(&a, &["snapshot", "-m", "one"]);
    let first = snap_ids(&a)[0].clone();
    write(&a.join("notes.txt"), b"second notes, longer\n");
    write(&a.join("docs/a.txt"), b"doc a, second\n");
    ok(&a, &["snapshot", "-m", "two"]);

    // Unsnapshotted work elsewhere in the folder is none of a partial restore's business.
    write(&a.join("other.txt"), b"other, edited and not snapshotted\n");
    // notes.txt is as the latest snapshot has it: restoring the first version is safe.
    let out = ok(&a, &["checkout", &first[..8], "notes.txt"]);
    assert!(out.contains("restored snapshot"), "{out}");
    assert_eq!(read(&a.join("notes.txt")), "first notes\n");
    assert_eq!(read(&a.join("docs/a.txt")), "doc a, second\n");
    assert_eq!(
        read(&a.join("other.txt")),
        "other, edited and not snapshotted\n"
    );

    // A second partial restore into the same folder, by a path relative to where we stand.
    ok(&a.join("docs"), &["checkout", &first[..8], "a.txt"]);
    assert_eq!(read(&a.join("docs/a.txt")), "doc a, first\n");

    // Changes no snapshot holds are refused, by name, unless --force.
    write(&a.join("notes.txt"), b"precious unsaved edit\n");
    let abs = a.join("notes.txt");
    let err = fails(&a, &["checkout", "latest", abs.to_str().unwrap()], 1);
    assert!(
        err.contains("notes.txt") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(read(&a.join("notes.txt")), "precious unsaved edit\n");
    // ... and an absolute path is taken as the same path inside the snapshot.
    ok(
        &a,
        &["checkout", "latest", abs.to_str().unwrap(), "--force"],
    );
    assert_eq!(read(&a.join("notes.txt")), "second notes, longer\n");
    assert_eq!(
        read(&a.join("other.txt")),
        "other, edited and not snapshotted\n"
    );
}

#[test]
fn an_interrupted_restore_resumes_leaving_complete_files_as_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..6 {
        write(
            &src.join(format!("f{i}.bin")),
            &pseudo_random(100_000 + i, i as u64),
        );
    }
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    let r = tmp.path().join("r");
    ok(
        &src,
        &["checkout", "latest", "--target", r.to_str().unwrap()],
    );
    // As a kill would leave it: one file cut short (and without its final mtime), one not
    // written at all.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(r.join("f2.bin"))
        .unwrap();
    f.set_len(5000).unwrap();
    drop(f);
    fs::remove_file(r.join("f4.bin")).unwrap();
    let err = fails(
        &src,
        &["checkout", "latest", "--target", r.to_str().unwrap()],
        1,
    );
    assert!(err.contains("resumes with --force"), "{err}");
    let out = ok(
        &src,
        &[
            "checkout",
            "latest",
            "--target",
            r.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(
        out.contains(": 2 files") && out.contains("4 files already in place"),
        "{out}"
    );
    fs::remove_dir_all(src.join(".pluto")).unwrap();
    assert_same_tree(&src, &r);
}

#[test]
fn latest_is_the_latest_snapshot_of_the_tracked_folder_not_of_another_path() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write(&a.join("a-file.txt"), b"in a\n");
    write(&b.join("b-file.txt"), b"in b\n");
    ok(&a, &["init"]);
    ok(&a, &["snapshot"]);
    ok(&a, &["snapshot", "../b"]);
    fs::remove_file(a.join("a-file.txt")).unwrap();
    ok(&a, &["checkout", "latest", "--force"]);
    assert!(a.join("a-file.txt").is_file());
    assert!(
        !a.join("b-file.txt").exists(),
        "b's files were written into a"
    );
    // b's snapshots are there for the asking: by --path, or by id.
    let rb = tmp.path().join("rb");
    ok(
        &a,
        &[
            "checkout",
            "latest",
            "--path",
            "../b",
            "--target",
            rb.to_str().unwrap(),
        ],
    );
    assert!(rb.join("b-file.txt").is_file() && !rb.join("a-file.txt").exists());
    let ls = json(&a, &["ls", "latest", "--json"]);
    assert_eq!(ls["entries"][0]["path"], "a-file.txt");
}

#[test]
fn a_moved_or_copied_folder_is_detected_and_retrack_fixes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    write(&a.join("x.txt"), b"x\n");
    ok(&a, &["init"]);
    ok(&a, &["snapshot"]);

    // Copied: the copy must not quietly back up the original.
    let copy = tmp.path().join("copy");
    copy_tree(&a, &copy);
    let err = fails(&copy, &["snapshot"], 1);
    assert!(
        err.contains("is a copy") && err.contains("pluto retrack"),
        "{err}"
    );
    ok(&copy, &["retrack"]);
    let v = json(&copy, &["snapshot", "--json"]);
    assert_eq!(
        v["paths"][0].as_str().unwrap(),
        fs::canonicalize(&copy).unwrap().to_str().unwrap()
    );

    // Renamed: said what to do, once, without a doubled I/O error.
    let moved = tmp.path().join("moved");
    fs::rename(&a, &moved).unwrap();
    let err = fails(&moved, &["snapshot"], 1);
    assert!(
        err.contains("no longer exists") && err.contains("pluto retrack"),
        "{err}"
    );
    let out = ok(&moved, &["retrack"]);
    assert!(out.contains("now tracking"), "{out}");
    ok(&moved, &["snapshot"]);

    // No error is printed twice: an I/O error wrapped with its path shows its cause once.
    let err = fails(&moved, &["snapshot", "does-not-exist"], 1);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn find_dump_and_tag_work_across_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    write(&a.join("notes.txt"), b"v1\n");
    write(&a.join("docs/notes.txt"), b"deep\n");
    write(&a.join("docs/report.pdf"), b"%PDF");
    ok(&a, &["init"]);
    ok(&a, &["snapshot", "--tag", "nightly"]);
    write(&a.join("notes.txt"), b"v2\n");
    ok(&a, &["snapshot"]);
    let ids = snap_ids(&a);

    let out = ok(&a, &["find", "notes.txt"]);
    assert_eq!(out.matches("snapshot ").count(), 2, "{out}");
    assert!(out.contains("docs/notes.txt"), "{out}");
    let v = json(&a, &["find", "*.pdf", "--json"]);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["path"], "docs/report.pdf");
    let v = json(&a, &["find", "docs/*.txt", "--json"]);
    assert_eq!(v.as_array().unwrap().len(), 2);

    assert_eq!(ok(&a, &["dump", "latest", "notes.txt"]), "v2\n");
    assert_eq!(ok(&a, &["dump", &ids[1][..8], "notes.txt"]), "v1\n");
    assert_eq!(
        ok(&a.join("docs"), &["dump", "latest", "notes.txt"]),
        "deep\n"
    );
    let err = fails(&a, &["dump", "latest", "docs"], 1);
    assert!(err.contains("is a directory"), "{err}");

    let out = ok(
        &a,
        &["tag", &ids[1][..8], "--add", "keep", "--remove", "nightly"],
    );
    assert!(out.contains("is now"), "{out}");
    let log = json(&a, &["log", "--json"]);
    assert_eq!(log.as_array().unwrap().len(), 2);
    assert_eq!(log[1]["tags"], serde_json::json!(["keep"]));
    assert!(
        !snap_ids(&a).contains(&ids[1]),
        "the old snapshot file was not removed"
    );
    let one = ok(&a, &["log", "--oneline"]);
    let canon = fs::canonicalize(&a).unwrap();
    assert!(
        one.contains(canon.to_str().unwrap()) && one.contains("[keep]"),
        "{one}"
    );
    ok(&a, &["check", "--read-data"]);
}

#[test]
fn snapshot_excludes_from_files_by_size_by_absolute_path_and_warns_when_one_matches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    write(&a.join("small.txt"), b"small");
    write(&a.join("big.iso"), &vec![7u8; 300_000]);
    write(&a.join("build/out.o"), b"obj");
    write(&a.join("keep/me.txt"), b"me");
    write(&a.join("scratch.tmp"), b"tmp");
    let exf = tmp.path().join("excludes");
    fs::write(&exf, "# build products\n*.tmp\n\n").unwrap();
    ok(&a, &["init"]);
    let build = a.join("build");
    let o = pluto(
        &a,
        &[
            "snapshot",
            "--exclude-file",
            exf.to_str().unwrap(),
            "--exclude-larger-than",
            "100K",
            "--exclude",
            build.to_str().unwrap(),
            "--exclude",
            "*.nothing-here",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("\"*.nothing-here\" matched nothing"), "{err}");
    assert!(!err.contains("*.tmp\" matched nothing"), "{err}");
    let v = json(&a, &["ls", "latest", "-r", "--json"]);
    let mut paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["keep", "keep/me.txt", "small.txt"]);

    // -v: what changed since the parent
    write(&a.join("new.txt"), b"new");
    let out = ok(&a, &["snapshot", "-v"]);
    assert!(out.contains("+ new.txt"), "{out}");
}

#[test]
fn nested_repositories_are_left_out_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let outer = tmp.path().join("outer");
    write(&outer.join("top.txt"), b"top");
    write(&outer.join("inner/file.txt"), b"inner file");
    ok(&outer.join("inner"), &["init"]);
    ok(&outer, &["init"]);
    let o = pluto(&outer, &["snapshot"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("note: left out") && err.contains("inner/.pluto"),
        "{err}"
    );
    let v = json(&outer, &["ls", "latest", "-r", "--json"]);
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"inner/file.txt"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains(".pluto")), "{paths:?}");
    ok(&outer, &["snapshot", "--include-repositories"]);
    assert!(ok(&outer, &["ls", "latest", "inner"]).contains(".pluto"));
}

fn words_of(init_out: &str) -> Vec<String> {
    init_out
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .flat_map(|l| {
            l.split_whitespace()
                .filter(|w| !w.ends_with('.'))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn recover(cwd: &Path, repo: &Path, words: &str) -> std::process::Output {
    let mut c = pluto_cmd(cwd)
        .args(["init", "--recover", "--repo", repo.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(words.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn recovery_words_name_the_wrong_word_and_a_new_folder_is_told_to_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    fs::create_dir_all(&a).unwrap();
    let words = words_of(&ok(&a, &["init"]));
    assert_eq!(words.len(), 24);

    let mut typo = words.clone();
    typo[2] = format!("{}x", typo[2]);
    let o = recover(tmp.path(), &tmp.path().join("r1"), &typo.join(" "));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("word 3 \"{}\"", typo[2])) && err.contains(&words[2]),
        "{err}"
    );

    let mut swapped = words.clone();
    let j = (1..24).find(|&j| swapped[j] != swapped[0]).unwrap();
    swapped.swap(0, j);
    let o = recover(tmp.path(), &tmp.path().join("r2"), &swapped.join(" "));
    let err = stderr(&o);
    assert!(err.contains("wrong order"), "{err}");

    let o = recover(tmp.path(), &tmp.path().join("r3"), &words.join(" "));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(" pull "), "{}", stdout(&o));
}

#[test]
fn serve_offers_are_read_in_human_units_and_refused_when_they_cannot_be_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    fs::create_dir_all(&a).unwrap();
    ok(&a, &["init"]);
    for (offer, want) in [
        ("100", "too little"),
        ("0", "too little"),
        ("1000P", "free"),
        ("1.5Q", "unknown unit"),
    ] {
        let o = pluto(&a, &["serve", "--offer", offer, "--listen", "127.0.0.1:0"]);
        assert_ne!(o.status.code(), Some(0));
        assert!(stderr(&o).contains(want), "--offer {offer}: {}", stderr(&o));
    }
    // 1.5G is read as 1.5 GiB, and said so.
    let mut c = pluto_cmd(&a)
        .args([
            "serve",
            "--offer",
            "1.5G",
            "--listen",
            "127.0.0.1:0",
            "--push-every",
            "0",
            "--challenge-every",
            "0",
        ])
        .spawn()
        .unwrap();
    let mut out = c.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains('\n') && Instant::now() < deadline {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = c.kill();
    let _ = c.wait();
    let line = String::from_utf8_lossy(&got);
    assert!(line.contains("offering 1.5 GiB"), "{line}");
}

/// Runs pluto under a pseudo-terminal (util-linux `script`), as a user at a terminal does.
#[test]
fn the_snapshot_bar_counts_against_the_real_total_and_ctrl_c_says_where_it_stopped() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("this test needs util-linux's `script` (apt-get install bsdutils)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    for i in 0..40 {
        write(
            &a.join(format!("small/{i}.txt")),
            format!("file {i}").as_bytes(),
        );
    }
    // A big file that takes a while to read and hash (one random MiB over and over: it
    // dedups to little in the repository, but every byte is read and chunked).
    let block = pseudo_random(1 << 20, 9);
    let mut f = fs::File::create(a.join("big.img")).unwrap();
    for _ in 0..768 {
        f.write_all(&block).unwrap();
    }
    drop(f);
    ok(&a, &["init"]);
    let cmd = format!("exec {} snapshot", env!("CARGO_BIN_EXE_pluto"));
    let mut c = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .current_dir(&a)
        .env_remove("PLUTO_REPO")
        .env("COLUMNS", "120")
        .env("LINES", "30")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // The bar shows the final count (41 files) while the big file is still being read.
    let shown = |s: &[u8]| {
        let s = String::from_utf8_lossy(s);
        s.contains("/41 files  ") && s.contains("big.img")
    };
    while !shown(&seen) && Instant::now() < deadline {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.extend(b);
        }
    }
    let bar = String::from_utf8_lossy(&seen).into_owned();
    assert!(bar.contains("/41 files  "), "no bar with the total: {bar}");
    assert!(
        bar.contains("big.img"),
        "the current file is not shown: {bar}"
    );
    // Ctrl-C, typed at the terminal.
    c.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    c.stdin.as_mut().unwrap().flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(b) => seen.extend(b),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
    }
    let status = c.wait().unwrap();
    let all = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        all.contains("snapshot interrupted at") && all.contains("/41 files, "),
        "{all}"
    );
    assert!(all.contains("of 768.0 MiB"), "{all}");
    assert!(!status.success());
    assert!(snap_ids(&a).is_empty(), "an interrupted snapshot was saved");
}

/// A tmpfs mounted inside the tree for the test's lifetime (needs root, as CI runs).
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_leaves_out_what_is_mounted_inside_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    write(&a.join("here.txt"), b"on the root's file system");
    let mnt = a.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED one_file_system_leaves_out_what_is_mounted_inside_the_tree: not root");
        return;
    }
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!(
            "SKIPPED one_file_system_leaves_out_what_is_mounted_inside_the_tree: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    let _m = Mount(mnt.clone());
    write(&mnt.join("elsewhere.txt"), b"on another file system");
    ok(&a, &["init"]);
    ok(&a, &["snapshot"]);
    assert!(ok(&a, &["ls", "latest", "-r"]).contains("mnt/elsewhere.txt"));
    ok(&a, &["snapshot", "--one-file-system"]);
    let out = ok(&a, &["ls", "latest", "-r"]);
    assert!(
        out.contains("here.txt") && !out.contains("elsewhere.txt"),
        "{out}"
    );
}
