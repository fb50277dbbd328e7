//! A disk or a copy went bad: each kind of damage costs only what it touches, `check` names
//! it and the repair to run, and after the repair `check` is clean (issues 12 and 18).
//! Every test runs the real binary on real files.

mod common;
use common::*;
use pluto_repo::crypto::ObjType;
use pluto_repo::repository::{LockMode, Repository};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

fn out(o: &Output) -> String {
    stdout(o)
}

/// Run, insist on exit `code`, never a panic; returns (stdout, stderr).
fn expect(cwd: &Path, args: &[&str], code: i32) -> (String, String) {
    let o = pluto(cwd, args);
    let (so, se) = (out(&o), stderr(&o));
    assert_eq!(
        o.status.code(),
        Some(code),
        "pluto {args:?}:\nstdout: {so}\nstderr: {se}"
    );
    assert!(!se.contains("panicked"), "{se}");
    (so, se)
}

/// A tracked directory with three snapshots: what the tree looked like at each, by id.
struct History {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    repo: PathBuf,
    /// Oldest first: (snapshot id, the tree as it was).
    snaps: Vec<(String, BTreeMap<String, Entry>)>,
    /// Packs added by each snapshot.
    packs_of: Vec<BTreeSet<PathBuf>>,
}

fn pack_files(repo: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in fs::read_dir(repo.join("packs")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            out.insert(f.path());
        }
    }
    out
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

impl History {
    fn snapshot(&mut self) {
        let before = pack_files(&self.repo);
        let o = ok(&self.src, &["snapshot", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        self.snaps.push((id, manifest(&self.src)));
        self.packs_of.push(
            pack_files(&self.repo)
                .difference(&before)
                .cloned()
                .collect(),
        );
    }

    /// Packs (of those added by snapshot `i`) holding objects of type `ty`.
    fn packs_with(&self, i: usize, ty: ObjType) -> Vec<PathBuf> {
        let repo = Repository::open(&self.repo, LockMode::Shared).unwrap();
        let packs: BTreeSet<String> = repo
            .index()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.ty == ty)
            .map(|(_, l)| l.pack.hex())
            .collect();
        self.packs_of[i]
            .iter()
            .filter(|p| packs.contains(p.file_name().unwrap().to_str().unwrap()))
            .cloned()
            .collect()
    }

    fn id(&self, i: usize) -> &str {
        &self.snaps[i].0
    }

    /// Check out snapshot `spec` into a fresh directory; returns it and the exit code.
    fn checkout(&self, spec: &str, name: &str) -> (PathBuf, i32, String) {
        let target = self.src.parent().unwrap().join(name);
        let o = pluto(
            &self.src,
            &["checkout", spec, "--target", target.to_str().unwrap()],
        );
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        (target, o.status.code().unwrap_or(-1), stderr(&o))
    }

    /// Snapshot `i` checks out exactly as the tree was.
    fn restores_exactly(&self, i: usize, name: &str) {
        let (t, code, err) = self.checkout(self.id(i), name);
        assert_eq!(code, 0, "checkout of snapshot {i}: {err}");
        assert_eq!(manifest(&t), self.snaps[i].1, "snapshot {i}");
    }
}

/// Three snapshots of a small tree: `docs/` (unchanged after the first), `photo.bin`
/// (added by the second), `notes.txt` (edited by the third).
fn history() -> History {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("home");
    write(&src.join("docs/a.txt"), b"alpha\n");
    write(&src.join("docs/deep/b.bin"), &pseudo_random(300_000, 1));
    write(&src.join("notes.txt"), b"first notes\n");
    write(&src.join("big.bin"), &pseudo_random(1_500_000, 2));
    ok(&src, &["init"]);
    let repo = src.join(".pluto");
    let mut h = History {
        _tmp: tmp,
        src,
        repo,
        snaps: Vec::new(),
        packs_of: Vec::new(),
    };
    h.snapshot();
    write(&h.src.join("photo.bin"), &pseudo_random(700_000, 3));
    h.snapshot();
    write(&h.src.join("notes.txt"), b"second notes, longer\n");
    h.snapshot();
    h
}

#[test]
fn a_truncated_newest_snapshot_file_leaves_the_older_ones_usable() {
    let h = history();
    let newest = h.repo.join("snapshots").join(h.id(2));
    let bytes = fs::read(&newest).unwrap();
    fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let short = &h.id(2)[..8];

    // log lists the others and names the damaged file.
    let (log, warn) = expect(&h.src, &["log", "--oneline"], 0);
    assert!(
        log.contains(&h.id(0)[..8]) && log.contains(&h.id(1)[..8]),
        "{log}"
    );
    assert!(!log.contains(short), "{log}");
    assert!(
        warn.contains(h.id(2)) && warn.contains("cannot be read"),
        "{warn}"
    );

    // The older snapshots restore, by id and as `latest`, exactly.
    h.restores_exactly(0, "r0");
    h.restores_exactly(1, "r1");
    let (t, code, _) = h.checkout("latest", "rlatest");
    assert_eq!(code, 0);
    assert_eq!(
        manifest(&t),
        h.snaps[1].1,
        "latest is the newest readable one"
    );
    // Asking for the damaged one by id names the damage.
    let (_, _, err) = h.checkout(short, "rbad");
    assert!(err.contains("snapshot") && err.contains(h.id(2)), "{err}");

    // check names it and says what to run; prune refuses and says the same.
    let (c, _) = expect(&h.src, &["check"], 4);
    assert!(c.contains(&format!("pluto forget {}", h.id(2))), "{c}");
    let (_, p) = expect(&h.src, &["prune"], 4);
    assert!(p.contains("pluto forget") && p.contains(short), "{p}");

    // A new snapshot works (its parent is the newest readable one) and restores.
    write(&h.src.join("after.txt"), b"after the damage\n");
    ok(&h.src, &["snapshot"]);
    let (t, code, err) = h.checkout("latest", "rnew");
    assert_eq!(code, 0, "{err}");
    assert_eq!(manifest(&t), manifest(&h.src));

    // Forgetting the damaged one by its id works; then prune and check are clean.
    let (f, _) = expect(&h.src, &["forget", short], 0);
    assert!(f.contains("damaged snapshot file"), "{f}");
    ok(&h.src, &["prune"]);
    let (c, _) = expect(&h.src, &["check", "--read-data"], 0);
    assert!(c.contains("no errors"), "{c}");
    h.restores_exactly(0, "r0b");
    h.restores_exactly(1, "r1b");
}

#[test]
fn forget_by_id_works_while_another_snapshot_file_is_damaged() {
    let h = history();
    let newest = h.repo.join("snapshots").join(h.id(2));
    fs::write(&newest, b"garbage").unwrap();
    expect(&h.src, &["forget", &h.id(0)[..8]], 0);
    let (log, _) = expect(&h.src, &["log", "--oneline"], 0);
    assert!(
        !log.contains(&h.id(0)[..8]) && log.contains(&h.id(1)[..8]),
        "{log}"
    );
    // A policy keeps the file it cannot read (it may be the newest): nothing is lost by it.
    expect(&h.src, &["forget", "--keep-last", "1"], 0);
    assert!(newest.exists());
}

#[test]
fn a_deleted_index_file_is_rebuilt_from_the_packs_and_every_snapshot_restores() {
    let h = history();
    let index_files = files_in(&h.repo.join("index"));
    assert!(index_files.len() >= 2);
    fs::remove_file(&index_files[0]).unwrap();

    let (c, _) = expect(&h.src, &["check"], 4);
    assert!(c.contains("pluto repair index"), "{c}");
    // Prune refuses to decide what is unused from a partial view.
    expect(&h.src, &["prune"], 4);

    let (r, _) = expect(&h.src, &["repair", "index"], 0);
    assert!(r.contains("index rebuilt"), "{r}");
    let (c, e) = expect(&h.src, &["check", "--read-data"], 0);
    assert!(c.contains("no errors") && !e.contains("warning"), "{c}{e}");
    for i in 0..3 {
        h.restores_exactly(i, &format!("r{i}"));
    }
    // Nothing was lost: prune has nothing to remove.
    let p = ok(&h.src, &["prune", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&p).unwrap();
    assert_eq!(v["packs_deleted"], 0, "{v}");
    assert_eq!(v["packs_unindexed"], 0, "{v}");
}

#[test]
fn a_deleted_pack_costs_only_the_files_in_it_and_repair_snapshots_drops_them() {
    let h = history();
    // The second snapshot's data packs hold only photo.bin.
    let lost = h.packs_with(1, ObjType::Chunk);
    assert!(!lost.is_empty());
    for p in &lost {
        fs::remove_file(p).unwrap();
    }

    // Checkout restores everything else, names the lost path, and says "partial".
    let (t, code, err) = h.checkout("latest", "r-partial");
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("not restored") && err.contains("photo.bin"),
        "{err}"
    );
    let mut want = h.snaps[2].1.clone();
    want.remove("photo.bin");
    let got = manifest(&t);
    let got_files: BTreeSet<&String> = got.keys().collect();
    let want_files: BTreeSet<&String> = want.keys().collect();
    assert_eq!(got_files, want_files, "{err}");
    for (p, e) in &want {
        if e.kind == "file" {
            assert_eq!(got[p].content, e.content, "{p}");
        }
    }
    // The same as a tar archive.
    let tar = h.src.parent().unwrap().join("partial.tar");
    let (_, terr) = expect(
        &h.src,
        &["checkout", "latest", "--tar", tar.to_str().unwrap()],
        3,
    );
    assert!(terr.contains("photo.bin"), "{terr}");
    // The first snapshot never had it: intact.
    h.restores_exactly(0, "r0");

    let (c, _) = expect(&h.src, &["check"], 4);
    assert!(
        c.contains("pluto repair index") && c.contains("pluto repair snapshots"),
        "{c}"
    );
    expect(&h.src, &["repair", "index"], 0);
    let (dry, _) = expect(&h.src, &["repair", "snapshots", "--dry-run"], 0);
    assert!(
        dry.contains("photo.bin") && dry.contains("would be repaired"),
        "{dry}"
    );
    let (r, _) = expect(&h.src, &["repair", "snapshots", "--forget"], 0);
    assert!(r.contains("dropped photo.bin"), "{r}");
    assert!(
        r.contains(&h.id(1)[..8]) && r.contains(&h.id(2)[..8]),
        "{r}"
    );
    let (c, _) = expect(&h.src, &["check", "--read-data"], 0);
    assert!(c.contains("no errors"), "{c}");

    // The repaired snapshots are tagged, say what they replace, and restore whole.
    let log = ok(&h.src, &["log", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&log).unwrap();
    let repaired: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "repaired")
        })
        .collect();
    assert_eq!(repaired.len(), 2, "{v}");
    assert!(
        repaired[0]["message"].as_str().unwrap().contains(h.id(2)),
        "{v}"
    );
    let (t, code, err) = h.checkout("latest", "r-repaired");
    assert_eq!(code, 0, "{err}");
    let got = manifest(&t);
    assert_eq!(got.keys().collect::<BTreeSet<_>>(), want_files);
    h.restores_exactly(0, "r0b");
}

#[test]
fn a_deleted_tree_pack_costs_only_the_directories_it_held() {
    let h = history();
    // The first snapshot's trees: its root, and docs/ which every later snapshot reuses.
    let lost = h.packs_with(0, ObjType::Tree);
    assert!(!lost.is_empty());
    for p in &lost {
        fs::remove_file(p).unwrap();
    }
    // The newest snapshot's root is elsewhere: all but docs/ is restored.
    let (t, code, err) = h.checkout("latest", "r-partial");
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("not restored") && err.contains("docs"),
        "{err}"
    );
    assert_eq!(
        fs::read(t.join("notes.txt")).unwrap(),
        b"second notes, longer\n"
    );
    assert_eq!(
        fs::read(t.join("big.bin")).unwrap(),
        pseudo_random(1_500_000, 2)
    );
    assert!(t.join("docs").is_dir() && !t.join("docs/a.txt").exists());
    // The first snapshot's root itself is gone: nothing of it can be restored.
    let (_, code, err) = h.checkout(h.id(0), "r0");
    assert_eq!(code, 4, "{err}");

    let (c, _) = expect(&h.src, &["check"], 4);
    assert!(c.contains("pluto repair snapshots"), "{c}");
    expect(&h.src, &["repair", "index"], 0);
    let (r, _) = expect(&h.src, &["repair", "snapshots", "--forget"], 0);
    assert!(r.contains("dropped docs/"), "{r}");
    let (c, _) = expect(&h.src, &["check", "--read-data"], 0);
    assert!(c.contains("no errors"), "{c}");
    let (t, code, err) = h.checkout("latest", "r-repaired");
    assert_eq!(code, 0, "{err}");
    assert!(t.join("docs").is_dir() && t.join("notes.txt").is_file());
    // A new snapshot of the tree, still on disk, brings docs/ back.
    ok(&h.src, &["snapshot"]);
    let (t, code, err) = h.checkout("latest", "r-new");
    assert_eq!(code, 0, "{err}");
    assert_eq!(manifest(&t), manifest(&h.src));
}

#[test]
fn a_corrupted_config_is_named_as_damaged_not_as_wrong_words() {
    let h = history();
    let config = h.repo.join("config");
    let good = fs::read(&config).unwrap();

    // One flipped bit: the tag fails, but the key opens the other files.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 20] ^= 1;
    fs::write(&config, &bad).unwrap();
    let (_, e) = expect(&h.src, &["log"], 4);
    assert!(e.contains("config") && e.contains("is damaged"), "{e}");
    assert!(!e.contains("recovery words do not open"), "{e}");
    assert!(e.contains("copy `config` back"), "{e}");

    // Cut short, or garbage: damaged too.
    fs::write(&config, &good[..10]).unwrap();
    let (_, e) = expect(&h.src, &["log"], 4);
    assert!(e.contains("is damaged"), "{e}");
    fs::write(&config, [b'x'; 100]).unwrap();
    let (_, e) = expect(&h.src, &["log"], 4);
    assert!(e.contains("is damaged") && e.contains("magic"), "{e}");

    // A damaged secret file names itself and the way out.
    fs::write(&config, &good).unwrap();
    let secret = h.repo.join("secret");
    let s = fs::read_to_string(&secret).unwrap();
    fs::write(&secret, &s[..s.len() / 2]).unwrap();
    let (_, e) = expect(&h.src, &["log"], 1);
    assert!(
        e.contains("secret file") && e.contains("init --recover"),
        "{e}"
    );
    // A secret of another repository: the key opens nothing here.
    let other = tempfile::tempdir().unwrap();
    ok(other.path(), &["init"]);
    fs::copy(other.path().join(".pluto/secret"), &secret).unwrap();
    let (_, e) = expect(&h.src, &["log"], 1);
    assert!(
        e.contains("secret file") && e.contains("does not open"),
        "{e}"
    );
}

/// Deterministic pseudo-random numbers for the damage model.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else if e.file_name() != "lock" {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// The restore guarantee, by random damage: after deleting, truncating or flipping bytes of
/// packs (data and tree), index files and snapshot files, either `check --read-data` reports
/// a problem, or every snapshot still checks out byte for byte. Never a panic, and a
/// checkout of a damaged repository ends 0, 3 (partial) or 4 (damaged).
/// PLUTO_DAMAGE_CASES (default 24) and PLUTO_DAMAGE_SEED set the run.
#[test]
fn random_damage_is_found_by_check_or_does_not_hurt_any_restore() {
    let cases: usize = std::env::var("PLUTO_DAMAGE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let seed: u64 = std::env::var("PLUTO_DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    let h = history();
    let mut rng = Rng(seed | 1);
    let (mut found, mut harmless) = (0, 0);
    for case in 0..cases {
        let work = h.src.parent().unwrap().join(format!("case{case}"));
        let repo = work.join("repo");
        copy_dir(&h.repo, &repo);
        let repo_s = repo.to_str().unwrap().to_string();
        let mut files: Vec<PathBuf> = pack_files(&repo).into_iter().collect();
        files.extend(files_in(&repo.join("index")));
        files.extend(files_in(&repo.join("snapshots")));
        let victim = files[rng.below(files.len())].clone();
        let bytes = fs::read(&victim).unwrap();
        let what = match rng.below(3) {
            0 => {
                fs::remove_file(&victim).unwrap();
                "deleted".to_string()
            }
            1 => {
                let cut = rng.below(bytes.len());
                fs::write(&victim, &bytes[..cut]).unwrap();
                format!("truncated to {cut}")
            }
            _ => {
                let mut b = bytes.clone();
                let flips = 1 + rng.below(3);
                for _ in 0..flips {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                fs::write(&victim, &b).unwrap();
                format!("{flips} bit(s) flipped")
            }
        };
        let story = format!("case {case} (seed {seed}): {} {what}", victim.display());
        let o = pluto(&work, &["--repo", &repo_s, "check", "--read-data"]);
        assert!(!stderr(&o).contains("panicked"), "{story}: {}", stderr(&o));
        let check_code = o.status.code();
        assert!(
            matches!(check_code, Some(0) | Some(4)),
            "{story}: check exit {check_code:?}"
        );
        for (i, (id, tree)) in h.snaps.iter().enumerate() {
            // A deleted snapshot file is a forgotten snapshot, not damage.
            if what == "deleted" && victim.ends_with(id) {
                continue;
            }
            let target = work.join(format!("r{i}"));
            let o = pluto(
                &work,
                &[
                    "--repo",
                    &repo_s,
                    "checkout",
                    id,
                    "--target",
                    target.to_str().unwrap(),
                ],
            );
            let code = o.status.code();
            assert!(!stderr(&o).contains("panicked"), "{story}: {}", stderr(&o));
            assert!(
                matches!(code, Some(0) | Some(3) | Some(4)),
                "{story}: checkout exit {code:?}: {}",
                stderr(&o)
            );
            if check_code == Some(0) {
                assert_eq!(
                    code,
                    Some(0),
                    "{story}: check passed but checkout of snapshot {i} failed: {}",
                    stderr(&o)
                );
                assert_eq!(&manifest(&target), tree, "{story}: snapshot {i}");
            }
        }
        if check_code == Some(0) {
            harmless += 1;
        } else {
            found += 1;
        }
        fs::remove_dir_all(&work).unwrap();
    }
    eprintln!("{cases} cases: {found} found by check, {harmless} harmless (all snapshots restored exactly)");
    assert!(found > 0, "the damage model never damaged anything");
}

#[test]
fn repair_index_killed_at_any_step_leaves_a_repository_that_checks_clean_after_a_rerun() {
    let h = history();
    for (i, step) in ["index-written:1", "index-deleted:1", "index-deleted:2"]
        .iter()
        .enumerate()
    {
        let copy = h.src.parent().unwrap().join(format!("copy{i}"));
        copy_dir(&h.repo, &copy);
        let repo = copy.to_str().unwrap();
        fs::remove_file(&files_in(&copy.join("index"))[0]).unwrap();
        let o = pluto_cmd(&h.src)
            .args(["--repo", repo, "repair", "index"])
            .env("PLUTO_TEST_KILL_AFTER", step)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), None, "killed at {step}: {}", stderr(&o));
        // Killed after its new index file is in place: every snapshot restores already.
        let (c, _) = expect(&h.src, &["--repo", repo, "check", "--read-data"], 0);
        assert!(c.contains("no errors"), "killed at {step}: {c}");
        expect(&h.src, &["--repo", repo, "repair", "index"], 0);
        let (c, e) = expect(&h.src, &["--repo", repo, "check", "--read-data"], 0);
        assert!(c.contains("no errors") && !e.contains("warning"), "{c}{e}");
    }
}
