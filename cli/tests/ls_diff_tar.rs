//! `ls` lists a snapshot like `ls -l`, `diff` says what changed and by how many bytes, and
//! `checkout --tar` writes an archive that `tar -x` turns into the very tree a checkout gives.

mod common;
use common::*;
use std::fs;
use std::process::Command;

#[test]
fn ls_lists_entries_like_ls_l_and_recursively() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    tricky_tree(&src);
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);

    let top = ok(&src, &["ls", "latest"]);
    let line = |name: &str| {
        top.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{top}"))
            .to_string()
    };
    assert!(line("big.bin").starts_with("-rw-r--r--"), "{top}");
    assert!(line("big.bin").contains("2.9 MiB"), "{top}");
    assert!(line("docs/").starts_with("drwx"), "{top}");
    assert!(line("link -> docs/a.txt").starts_with("lrwx"), "{top}");
    assert!(line("empty.txt").starts_with("-r--r--r--"), "{top}");
    assert!(!top.contains("b.txt"), "not recursive by default");

    let deep = ok(&src, &["ls", "latest", "docs", "-r"]);
    assert!(deep.contains("docs/deep/er/b.txt"), "{deep}");
    assert!(deep
        .lines()
        .any(|l| l.starts_with("-rw-------") && l.ends_with("docs/a.txt")));

    let one = json(&src, &["ls", "latest", "docs/a.txt", "--json"]);
    let e = &one["entries"][0];
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    assert_eq!(e["kind"], "file");
    assert_eq!(e["mode"], 0o600);
    assert_eq!(e["size"], 6);
    assert_eq!(e["mode_string"], "-rw-------");
}

#[test]
fn diff_names_every_change_and_sums_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("same.txt"), b"unchanged");
    write(&src.join("grows.txt"), b"12345");
    write(&src.join("gone/old.bin"), &pseudo_random(1000, 1));
    write(&src.join("chmod.sh"), b"#!/bin/sh\n");
    ok(&src, &["init"]);
    let a = json(&src, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();

    write(&src.join("grows.txt"), b"1234567890");
    fs::remove_dir_all(src.join("gone")).unwrap();
    write(&src.join("new/fresh.bin"), &pseudo_random(2000, 2));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(src.join("chmod.sh"), fs::Permissions::from_mode(0o755)).unwrap();

    // Before the second snapshot, the worktree diff already sees it all.
    let live = json(&src, &["diff", "latest", "--worktree", "--json"]);
    let b = json(&src, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = json(&src, &["diff", &a, &b, "--json"]);
    for doc in [&live, &d] {
        let changes: Vec<(String, String)> = doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["change"].as_str().unwrap().to_string(),
                    c["path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("metadata", "chmod.sh"),
            ("removed", "gone"),
            ("removed", "gone/old.bin"),
            ("modified", "grows.txt"),
            ("added", "new"),
            ("added", "new/fresh.bin"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(changes, want);
        let t = &doc["totals"];
        assert_eq!(
            (t["added"].as_u64(), t["bytes_added"].as_u64()),
            (Some(2), Some(2000))
        );
        assert_eq!(
            (t["removed"].as_u64(), t["bytes_removed"].as_u64()),
            (Some(2), Some(1000))
        );
        assert_eq!(
            (
                t["bytes_modified_old"].as_u64(),
                t["bytes_modified_new"].as_u64()
            ),
            (Some(5), Some(10))
        );
        assert_eq!(t["metadata"], 1);
    }
    assert_eq!(live["new"], "worktree");

    let text = ok(&src, &["diff", &a, &b]);
    assert!(text.contains("U chmod.sh  (mode)"), "{text}");
    assert!(text.contains("- gone/\n"), "{text}");
    assert!(text.contains("M grows.txt  (5 B -> 10 B)"), "{text}");
    assert!(text.contains("+ new/fresh.bin"), "{text}");
    assert!(
        text.contains(
            "2 added (2.0 KiB), 2 removed (1000 B), 1 modified (5 B -> 10 B), 1 metadata only"
        ),
        "{text}"
    );
    // The same snapshot twice, and the tree right after a snapshot: no changes.
    assert_eq!(
        json(&src, &["diff", &b, &b, "--json"])["changes"],
        serde_json::json!([])
    );
    assert_eq!(
        json(&src, &["diff", "latest", "--worktree", "--json"])["changes"],
        serde_json::json!([])
    );
}

#[test]
fn worktree_diff_reads_a_file_whose_metadata_changed_and_finds_it_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("big.bin"), &pseudo_random(5_000_000, 3));
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    // Rewrite the same bytes: new mtime and ctime, same content.
    let bytes = fs::read(src.join("big.bin")).unwrap();
    fs::write(src.join("big.bin"), &bytes).unwrap();
    set_mtime(&src.join("big.bin"), 1_500_000_000, 0);
    let d = json(&src, &["diff", "latest", "--worktree", "--json"]);
    assert_eq!(d["changes"][0]["change"], "metadata", "{d}");
    assert_eq!(d["changes"][0]["fields"], serde_json::json!(["mtime"]));
    // One byte changed in the middle: modified.
    let mut changed = bytes.clone();
    changed[2_500_000] ^= 1;
    fs::write(src.join("big.bin"), &changed).unwrap();
    let d = json(&src, &["diff", "latest", "--worktree", "--json"]);
    assert_eq!(d["changes"][0]["change"], "modified", "{d}");
}

fn untar(archive: &std::path::Path, into: &std::path::Path) {
    fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .arg("-xpf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar -x failed");
}

#[test]
fn tar_extracted_equals_a_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    tricky_tree(&src);
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);

    let restored = tmp.path().join("restored");
    ok(
        &src,
        &["checkout", "latest", "--target", restored.to_str().unwrap()],
    );
    let archive = tmp.path().join("snap.tar");
    let o = pluto(
        &src,
        &["checkout", "latest", "--tar", archive.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 hard links"), "{}", stderr(&o));
    let extracted = tmp.path().join("extracted");
    untar(&archive, &extracted);
    assert_same_tree(&restored, &extracted);
    assert_same_tree(&src, &extracted);

    // To stdout, and one directory out of the snapshot.
    let o = pluto(&src, &["checkout", "latest", "--tar", "-", "docs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let part_tar = tmp.path().join("part.tar");
    fs::write(&part_tar, &o.stdout).unwrap();
    let part = tmp.path().join("part");
    untar(&part_tar, &part);
    let part_restored = tmp.path().join("part-restored");
    ok(
        &src,
        &[
            "checkout",
            "latest",
            "docs",
            "--target",
            part_restored.to_str().unwrap(),
        ],
    );
    assert_same_tree(&part_restored, &part);
    assert!(part.join("docs/deep/er/b.txt").is_file());
    assert!(!part.join("big.bin").exists());
}

#[test]
fn a_tar_of_damaged_data_keeps_the_rest_and_names_the_damaged_file_with_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("big.bin"), &pseudo_random(2_000_000, 9));
    write(&src.join("small.txt"), b"intact");
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    // Flip a byte inside the largest pack (the big file's data).
    let mut packs: Vec<_> = walkdir(&src.join(".pluto/packs"));
    packs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    let mut b = fs::read(&packs[0]).unwrap();
    b[100_000] ^= 0x01;
    fs::write(&packs[0], &b).unwrap();
    let archive = tmp.path().join("out.tar");
    let err = fails(
        &src,
        &["checkout", "latest", "--tar", archive.to_str().unwrap()],
        3,
    );
    assert!(
        err.contains("not restored: big.bin") && err.contains("fails authentication"),
        "{err}"
    );
    // The archive is complete and well-formed; the damaged file holds zeros from the
    // damaged chunk on, and everything else is intact.
    let out = tmp.path().join("x");
    fs::create_dir_all(&out).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::read(out.join("small.txt")).unwrap(), b"intact");
    assert_eq!(fs::metadata(out.join("big.bin")).unwrap().len(), 2_000_000);
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        3,
        "no temp file left"
    );
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn diff_shows_a_kind_change_as_removed_then_added_and_a_new_link_target_as_modified() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("thing"), b"a file first");
    std::os::unix::fs::symlink("one", src.join("link")).unwrap();
    ok(&src, &["init"]);
    let a = json(&src, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(src.join("thing")).unwrap();
    write(&src.join("thing/inside.txt"), b"now a directory");
    fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("two", src.join("link")).unwrap();
    let b = json(&src, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = json(&src, &["diff", &a, &b, "--json"]);
    let got: Vec<(String, String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().into(),
                c["kind"].as_str().unwrap().into(),
                c["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("modified", "symlink", "link"),
        ("removed", "file", "thing"),
        ("added", "dir", "thing"),
        ("added", "file", "thing/inside.txt"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(d["totals"]["bytes_removed"], 12);
    assert_eq!(d["totals"]["bytes_added"], 15);
}
