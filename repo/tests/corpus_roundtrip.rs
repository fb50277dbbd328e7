//! The benchmark corpus, scaled down, through snapshot → edit → snapshot → checkout of
//! both snapshots, compared byte for byte (content, kind, mode, mtime, link targets),
//! then `check --read-data`. Needs python3 (the corpus generator); skips without it.

use pluto_repo::archive::{create_snapshot, SnapshotOptions};
use pluto_repo::check::{check, CheckOptions};
use pluto_repo::keys::Entropy;
use pluto_repo::repository::LockMode;
use pluto_repo::restore::{restore, RestoreOptions};
use pluto_repo::Repository;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn generator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/compare/make-corpus.py")
}

fn python_ok() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run_generator(args: &[&str]) {
    let out = Command::new("python3")
        .arg(generator())
        .args(args)
        .output()
        .expect("run make-corpus.py");
    assert!(
        out.status.success(),
        "make-corpus.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every entry under `dir`, by relative path, sorted.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(dir.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let m = fs::symlink_metadata(dir.join(&r)).unwrap();
        out.push(r.clone());
        if m.is_dir() {
            walk(dir, &r, out);
        }
    }
}

fn assert_same_tree(want: &Path, got: &Path) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    walk(want, Path::new(""), &mut a);
    walk(got, Path::new(""), &mut b);
    assert_eq!(a, b, "restored tree lists different paths");
    for rel in &a {
        let (pa, pb) = (want.join(rel), got.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{rel:?}: kind");
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
            continue;
        }
        assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{rel:?}: mode");
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "{rel:?}: mtime"
        );
        if ma.is_file() {
            assert_eq!(ma.len(), mb.len(), "{rel:?}: size");
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{rel:?}: content differs"
            );
        }
    }
}

#[test]
fn scaled_corpus_snapshot_edit_snapshot_checkout() {
    if !python_ok() {
        eprintln!("skipped: python3 is not available to generate the corpus");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let before = t.path().join("before");
    let root = t.path().join("repo");
    run_generator(&["mixed", src.to_str().unwrap(), "--scale", "0.02"]);
    let cp = Command::new("cp")
        .args(["-a", src.to_str().unwrap(), before.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());

    let entropy = Entropy::generate();
    let repo = Repository::init(&root, &entropy, None).unwrap();
    let first = create_snapshot(&repo, &src, &SnapshotOptions::default()).unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    drop(repo);

    run_generator(&["edit", src.to_str().unwrap()]);

    let mut repo = Repository::open(&root, LockMode::Exclusive).unwrap();
    let second = create_snapshot(&repo, &src, &SnapshotOptions::default()).unwrap();
    let st = &second.snapshot.stats;
    assert_eq!(second.snapshot.parent.as_deref(), Some(first.id.as_str()));
    // The edit step adds 200 files whatever the scale, and touches 1 % of the others.
    assert!(
        st.files_read < 230 && st.files_read * 2 < st.files,
        "change detection: {} of {} files read",
        st.files_read,
        st.files
    );
    assert!(
        st.stored_added < first.snapshot.stats.stored_added / 2,
        "the edit stored {} bytes",
        st.stored_added
    );

    // The index loaded before the snapshot does not know what it added.
    repo.reload_index().unwrap();
    let out1 = t.path().join("out1");
    let out2 = t.path().join("out2");
    restore(
        &repo,
        &first.snapshot,
        &first.id,
        &out1,
        &RestoreOptions::default(),
    )
    .unwrap();
    restore(
        &repo,
        &second.snapshot,
        &second.id,
        &out2,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_same_tree(&before, &out1);
    assert_same_tree(&src, &out2);

    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    assert!(report.objects_read > 0);
}
