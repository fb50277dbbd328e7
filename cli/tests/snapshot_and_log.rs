//! `snapshot` leaves out what the user asked it to, tags what it records, and `log` finds
//! snapshots by tag, host and path. Bad input gets a clear error and exit code 1.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;

fn paths_in(src: &Path, snap: &str) -> BTreeSet<String> {
    let v = json(src, &["ls", snap, "--recursive", "--json"]);
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ignore_files_excludes_and_cache_directories_are_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("home");
    write(&src.join(".plutoignore"), b"*.log\n!keep.log\n");
    write(&src.join("app.log"), b"noise");
    write(&src.join("keep.log"), b"wanted");
    write(&src.join("notes.txt"), b"notes");
    write(&src.join("project/.plutoignore"), b"/target/\n");
    write(&src.join("project/target/debug.bin"), b"build output");
    write(
        &src.join("project/src/target/real.rs"),
        b"not the build dir",
    );
    write(
        &src.join("project/sub.log"),
        b"nested log, root rule applies",
    );
    write(&src.join("scratch.tmp"), b"temporary");
    write(
        &src.join(".cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache",
    );
    write(&src.join(".cache/blob"), b"cached");
    // A tag without the exact signature marks nothing.
    write(&src.join("fake-cache/CACHEDIR.TAG"), b"Signature: nope");
    write(&src.join("fake-cache/data"), b"kept");

    ok(&src, &["init"]);
    ok(&src, &["snapshot", "--exclude", "*.tmp"]);
    let got = paths_in(&src, "latest");
    let want: BTreeSet<String> = [
        ".plutoignore",
        "keep.log",
        "notes.txt",
        "project",
        "project/.plutoignore",
        "project/src",
        "project/src/target",
        "project/src/target/real.rs",
        ".cache",
        "fake-cache",
        "fake-cache/CACHEDIR.TAG",
        "fake-cache/data",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);

    // --include-caches takes the cache too.
    ok(&src, &["snapshot", "--include-caches"]);
    assert!(paths_in(&src, "latest").contains(".cache/blob"));
}

#[test]
fn a_malformed_exclude_pattern_is_named_and_nothing_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.txt"), b"a");
    ok(&src, &["init"]);
    let err = fails(&src, &["snapshot", "--exclude", "**/{a"], 1);
    assert!(err.contains("bad exclude pattern \"**/{a\""), "{err}");
    assert!(stderr(&pluto(&src, &["log"])).is_empty());
    assert_eq!(ok(&src, &["log", "--oneline"]), "");
}

#[test]
fn tags_hosts_and_paths_select_snapshots_in_log() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    let other = tmp.path().join("other");
    write(&src.join("a.txt"), b"a");
    write(&other.join("b.txt"), b"b");
    ok(&src, &["init"]);
    let snap = |args: &[&str]| -> String {
        let mut a = vec!["snapshot", "--json"];
        a.extend_from_slice(args);
        json(&src, &a)["id"].as_str().unwrap().to_string()
    };
    let nightly = snap(&["--tag", "nightly", "--host", "laptop", "-m", "n1"]);
    let both = snap(&["--tag", "nightly", "--tag", "release", "--host", "server"]);
    let other_dir = snap(&["--host", "laptop", other.to_str().unwrap()]);

    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["log", "--json"];
        a.extend_from_slice(args);
        json(&src, &a)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&[]),
        [other_dir.clone(), both.clone(), nightly.clone()],
        "newest first"
    );
    assert_eq!(ids(&["--tag", "nightly"]), [both.clone(), nightly.clone()]);
    assert_eq!(ids(&["--tag", "release"]), std::slice::from_ref(&both));
    assert_eq!(
        ids(&["--host", "laptop"]),
        [other_dir.clone(), nightly.clone()]
    );
    let other_canon = std::fs::canonicalize(&other).unwrap();
    assert_eq!(
        ids(&["--path", other_canon.to_str().unwrap()]),
        std::slice::from_ref(&other_dir)
    );
    assert_eq!(
        ids(&["--path", "../other"]),
        std::slice::from_ref(&other_dir)
    );
    assert_eq!(ids(&["--tag", "nope"]), Vec::<String>::new());

    let oneline = ok(&src, &["log", "--oneline", "--tag", "release"]);
    assert_eq!(oneline.lines().count(), 1);
    assert!(oneline.starts_with(&both[..8]), "{oneline}");
    let long = ok(&src, &["log"]);
    assert!(long.contains("Tags:    nightly, release"), "{long}");
}

#[test]
fn snapshot_json_describes_what_was_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.bin"), &pseudo_random(200_000, 7));
    write(&src.join("b.txt"), b"hello");
    ok(&src, &["init"]);
    let v = json(
        &src,
        &[
            "snapshot",
            "--json",
            "-m",
            "first",
            "--time",
            "2024-01-31 18:00:00",
        ],
    );
    assert_eq!(v["stats"]["files"], 2);
    assert_eq!(v["stats"]["bytes"], 200_005);
    assert_eq!(v["partial"], false);
    assert_eq!(v["message"], "first");
    assert_eq!(
        v["time_ns"], 1_706_724_000_000_000_000i64,
        "--time is local (TZ=UTC here)"
    );
    assert_eq!(
        &v["id"].as_str().unwrap()[..8],
        v["short_id"].as_str().unwrap()
    );
    // Nothing changed: the next snapshot reads no file and stores nothing new.
    let again = json(&src, &["snapshot", "--json"]);
    assert_eq!(again["stats"]["files_read"], 0);
    assert_eq!(again["stats"]["bytes_added"], 0);
    assert_eq!(again["parent"], v["id"]);
    let err = fails(&src, &["snapshot", "--time", "yesterday"], 1);
    assert!(err.contains("--time \"yesterday\""), "{err}");
    let err = fails(&src, &["snapshot", "--time", "9999-01-01 00:00:00"], 1);
    assert!(err.contains("outside the years"), "{err}");
}

#[test]
fn an_unknown_or_ambiguous_snapshot_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("a.txt"), b"a");
    ok(&src, &["init"]);
    let err = fails(&src, &["ls", "latest"], 1);
    assert!(err.contains("no snapshots yet"), "{err}");
    ok(&src, &["snapshot"]);
    for args in [
        &["ls", "deadbeef"][..],
        &["checkout", "deadbeef", "--target", "/nonexistent/x"],
        &["diff", "latest", "deadbeef"],
        &["stats", "deadbeef"],
        &["forget", "deadbeef"],
        &["checkout", "deadbeef", "--tar", "-"],
    ] {
        let err = fails(&src, args, 1);
        assert!(
            err.contains("no snapshot matches \"deadbeef\""),
            "{args:?}: {err}"
        );
    }
    let err = fails(&src, &["ls", "latest", "no/such/path"], 1);
    assert!(err.contains("\"no/such/path\" is not in snapshot"), "{err}");
}

#[test]
fn no_progress_bar_or_chatter_when_output_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t");
    write(&src.join("big.bin"), &pseudo_random(20_000_000, 3));
    ok(&src, &["init"]);
    let out = tmp.path().join("out");
    for args in [
        &["snapshot"][..],
        &["check", "--read-data"],
        &["checkout", "latest", "--target", out.to_str().unwrap()],
        &["prune"],
    ] {
        let o = pluto(&src, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "",
            "{args:?} wrote to stderr without a terminal"
        );
    }
    // --quiet: results only (none for a snapshot that succeeded).
    let o = pluto(&src, &["snapshot", "--quiet"]);
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("", ""));
}

#[test]
fn completions_and_help_with_examples_for_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(tmp.path(), &["completions", shell]);
        for cmd in ["snapshot", "forget", "prune", "stats", "diff", "ls"] {
            assert!(out.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    for cmd in [
        "init",
        "snapshot",
        "log",
        "ls",
        "diff",
        "checkout",
        "forget",
        "prune",
        "check",
        "stats",
        "completions",
    ] {
        let out = ok(tmp.path(), &[cmd, "--help"]);
        assert!(
            out.contains("Example"),
            "`pluto {cmd} --help` has no examples:\n{out}"
        );
    }
    let top = ok(tmp.path(), &["--help"]);
    assert!(top.contains("Exit codes"), "{top}");
}
