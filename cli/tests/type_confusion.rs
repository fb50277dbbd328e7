//! A file whose bytes equal the encoding of a tree (the empty directory's, say) and that
//! tree are two different objects, whatever order they are stored in: every snapshot that
//! holds them passes `check --read-data` and checks out byte for byte. Before objects were
//! keyed by type and id, the second one stored was deduplicated against the first and the
//! snapshot could not be restored (borg's CVE-2023-36811 is the same class).

mod common;
use common::*;
use std::fs;
use std::path::Path;

/// Encodings of the empty tree for every tree layout version pluto has written.
const EMPTY_TREES: [&[u8]; 2] = [&[1, 0], &[2, 0]];

fn files_like_empty_trees(root: &Path) {
    for (i, bytes) in EMPTY_TREES.iter().enumerate() {
        write(&root.join(format!("looks-like-a-tree-{i}")), bytes);
    }
}

fn restores_every_snapshot(src: &Path, work: &Path, expected: &[&Path]) {
    ok(src, &["check", "--read-data"]);
    let log = json(src, &["log", "--json"]);
    let ids: Vec<String> = log["snapshots"]
        .as_array()
        .or_else(|| log.as_array())
        .expect("log --json lists snapshots")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), expected.len());
    // log lists newest first; `expected` is oldest first.
    for (id, want) in ids.iter().rev().zip(expected) {
        let out = work.join(format!("out-{id}"));
        ok(src, &["checkout", id, "--target", out.to_str().unwrap()]);
        assert_same_tree(want, &out);
    }
}

#[test]
fn a_file_equal_to_an_empty_tree_next_to_an_empty_directory_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    files_like_empty_trees(&src);
    fs::create_dir_all(src.join("empty")).unwrap();
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    let copy = tmp.path().join("expected");
    copy_tree(&src, &copy);
    restores_every_snapshot(&src, tmp.path(), &[&copy]);
}

#[test]
fn an_empty_directory_added_after_a_file_equal_to_its_tree_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    files_like_empty_trees(&src);
    write(&src.join("sub/x.txt"), b"x");
    ok(&src, &["init"]);
    ok(&src, &["snapshot", "-m", "files only"]);
    let first = tmp.path().join("first");
    copy_tree(&src, &first);

    fs::create_dir_all(src.join("sub/empty")).unwrap();
    ok(&src, &["snapshot", "-m", "and an empty directory"]);
    let second = tmp.path().join("second");
    copy_tree(&src, &second);
    restores_every_snapshot(&src, tmp.path(), &[&first, &second]);
}

#[test]
fn a_file_equal_to_an_empty_tree_added_after_the_empty_directory_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    fs::create_dir_all(src.join("empty")).unwrap();
    write(&src.join("x.txt"), b"x");
    ok(&src, &["init"]);
    ok(&src, &["snapshot", "-m", "empty directory"]);
    let first = tmp.path().join("first");
    copy_tree(&src, &first);

    files_like_empty_trees(&src.join("later"));
    ok(&src, &["snapshot", "-m", "and files equal to its tree"]);
    let second = tmp.path().join("second");
    copy_tree(&src, &second);
    // A third snapshot still holding the empty directory reads its tree by type.
    fs::create_dir_all(src.join("another-empty")).unwrap();
    ok(&src, &["snapshot", "-m", "another empty directory"]);
    let third = tmp.path().join("third");
    copy_tree(&src, &third);
    restores_every_snapshot(&src, tmp.path(), &[&first, &second, &third]);
}
