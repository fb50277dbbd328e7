//! Crash-point testing: `pluto snapshot` (and `pluto prune`, when the binary has it) is
//! killed with SIGKILL at many points, and after every kill
//!
//! - `pluto check --read-data` passes,
//! - snapshots taken before still check out identical to what they recorded,
//! - the next run of the same command succeeds.
//!
//! Kill points alternate between a deterministic one — `PLUTO_CRASH_AFTER_WRITES=N`, which
//! makes pluto SIGKILL itself after its Nth write step (see `repo/src/fsutil.rs`) — and a
//! SIGKILL from outside after a random delay.
//!
//! The normal test run does a fast subset; by hand, for many runs:
//!
//! ```text
//! PLUTO_CRASH_RUNS=200 cargo test -p pluto-e2e --test crash_points -- --ignored --nocapture
//! ```
//!
//! `full_disk_during_snapshot` mounts a 20 MiB tmpfs for the repository (needs root; it is
//! skipped with a message otherwise).

use pluto_e2e::*;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KIB: usize = 1024;

/// Small deterministic generator (xorshift), seeded per test so failures replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("PLUTO_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c4a5)
}

fn runs(default: usize) -> usize {
    std::env::var("PLUTO_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How one crashed run ended.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    killed_by_hook: usize,
    killed_from_outside: usize,
    completed: usize,
    failed: usize,
}

struct World {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    scratch: PathBuf,
    /// Every snapshot known to be complete, with the tree it recorded.
    snaps: Vec<(String, BTreeMap<PathBuf, Entry>)>,
    rng: Rng,
    /// Kill points are drawn from 1..=max_writes write steps and 0..max_delay_ms.
    max_writes: u64,
    max_delay_ms: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for i in 0..40 {
            write(
                &src.join(format!("docs/{}/{i}.txt", i % 4)),
                format!("document {i}\n").repeat(50 + i).as_bytes(),
            );
        }
        for slot in 0..4 {
            write(
                &src.join(format!("slot{slot}.bin")),
                &pseudo_random(700 * KIB, slot),
            );
        }
        ok(&src, &["init"]);
        let mut w = World {
            scratch: tmp.path().join("scratch"),
            src,
            _tmp: tmp,
            snaps: Vec::new(),
            rng: Rng(seed | 1),
            max_writes: 14,
            max_delay_ms: 90,
        };
        w.snapshot_ok("first");
        w
    }

    /// Change the tree a little: a new slot file, an edit, sometimes a removal.
    fn mutate(&mut self, round: usize) {
        let r = self.rng.next();
        let slot = r % 6;
        let size = 300 * KIB + (r >> 8) as usize % (900 * KIB);
        write(
            &self.src.join(format!("slot{slot}.bin")),
            &pseudo_random(size, r),
        );
        write(
            &self
                .src
                .join(format!("docs/{}/{}.txt", round % 4, round % 40)),
            format!("edited in round {round}\n")
                .repeat(1 + round % 30)
                .as_bytes(),
        );
        if round % 7 == 3 {
            let _ = std::fs::remove_dir_all(self.src.join(format!("docs/{}", r % 4)));
        }
    }

    fn snapshot_ok(&mut self, msg: &str) -> String {
        let before = manifest(&self.src);
        let out = ok(&self.src, &["snapshot", "--json", "-m", msg]);
        let id = snapshot_id(&out);
        self.snaps.push((id.clone(), before));
        id
    }

    /// Check out `id` and compare with what it recorded.
    fn verify(&self, i: usize) {
        let (id, want) = &self.snaps[i];
        let _ = std::fs::remove_dir_all(&self.scratch);
        ok(
            &self.src,
            &["checkout", id, "--target", self.scratch.to_str().unwrap()],
        );
        let got = manifest(&self.scratch);
        if &got != want {
            for (p, e) in want {
                assert_eq!(
                    got.get(p),
                    Some(e),
                    "snapshot {id}: {} differs after a crash",
                    p.display()
                );
            }
            panic!("snapshot {id}: extra paths after a crash");
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }

    /// Every earlier snapshot when there are few, else the first, the last two and one at
    /// random (all of them are checked at the end of each test).
    fn verify_sample(&mut self) {
        let n = self.snaps.len();
        if n <= 4 {
            (0..n).for_each(|i| self.verify(i));
        } else {
            let r = self.rng.below(n as u64) as usize;
            for i in [0, r, n - 2, n - 1] {
                self.verify(i);
            }
        }
    }

    fn check_read_data(&self, context: &str) {
        let o = pluto(&self.src, &["check", "--read-data"]);
        assert!(
            o.status.success(),
            "{context}: check --read-data failed ({:?})\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }

    /// Run `args` and kill it: at write step `n` (hook) or after `delay` (from outside).
    /// Returns the run's stdout when it completed anyway.
    fn crash_once(&mut self, args: &[&str], round: usize, t: &mut Tally) -> Option<String> {
        let by_hook = round.is_multiple_of(2);
        let mut c = Command::new(pluto_bin());
        c.current_dir(&self.src)
            .args(args)
            .env_remove("PLUTO_REPO")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let n = 1 + self.rng.below(self.max_writes);
        let delay = Duration::from_millis(self.rng.below(self.max_delay_ms));
        if by_hook {
            c.env("PLUTO_CRASH_AFTER_WRITES", n.to_string());
        }
        let child = c.spawn().unwrap();
        if !by_hook {
            std::thread::sleep(delay);
            // SAFETY: signalling our own child, which has not been waited for yet.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
        }
        let out = child.wait_with_output().unwrap();
        t.runs += 1;
        if out.status.signal() == Some(libc::SIGKILL) {
            if by_hook {
                t.killed_by_hook += 1;
            } else {
                t.killed_from_outside += 1;
            }
            None
        } else if out.status.success() {
            t.completed += 1;
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            t.failed += 1;
            panic!(
                "round {round}: {args:?} failed by itself ({:?}): {}",
                out.status,
                stderr(&out)
            );
        }
    }
}

fn snapshot_id(json_out: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json_out.trim())
        .unwrap_or_else(|e| panic!("snapshot --json printed no JSON ({e}): {json_out}"));
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {json_out}"))
        .to_string()
}

fn snapshot_crash_rounds(n: usize) -> Tally {
    let started = Instant::now();
    let mut w = World::new(seed());
    let mut t = Tally::default();
    for round in 0..n {
        w.mutate(round);
        let before = manifest(&w.src);
        if let Some(out) = w.crash_once(&["snapshot", "--json", "-m", "crash"], round, &mut t) {
            // Finished before the kill point: it is a real snapshot like any other.
            w.snaps.push((snapshot_id(&out), before));
        }
        let ctx = format!("snapshot round {round}");
        w.check_read_data(&ctx);
        w.verify_sample();
        w.snapshot_ok(&format!("after round {round}"));
    }
    w.check_read_data("snapshot: end");
    for i in 0..w.snaps.len() {
        w.verify(i);
    }
    eprintln!(
        "snapshot crash points: {t:?}, {} snapshots verified, {:.1} s",
        w.snaps.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        t.killed_by_hook + t.killed_from_outside >= n / 2,
        "too few runs were killed mid-way: {t:?}"
    );
    t
}

fn has_command(name: &str) -> bool {
    Command::new(pluto_bin())
        .args([name, "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Forget the oldest snapshot (keeping at least two), then prune with a crash.
fn prune_crash_rounds(n: usize) -> Option<Tally> {
    if !has_command("prune") || !has_command("forget") {
        eprintln!("SKIPPED: this pluto has no `prune`/`forget` command yet");
        return None;
    }
    let started = Instant::now();
    let mut w = World::new(seed() ^ 0x9e37);
    // prune of this small repository takes tens of milliseconds.
    w.max_delay_ms = 30;
    let mut t = Tally::default();
    for round in 0..n {
        w.mutate(round);
        w.snapshot_ok(&format!("round {round}"));
        if w.snaps.len() > 2 {
            let (old, _) = w.snaps.remove(0);
            ok(&w.src, &["forget", &old]);
        }
        let _ = w.crash_once(&["prune", "--max-unused", "0"], round, &mut t);
        let ctx = format!("prune round {round}");
        w.check_read_data(&ctx);
        for i in 0..w.snaps.len() {
            w.verify(i);
        }
        ok(&w.src, &["prune", "--max-unused", "0"]);
        w.check_read_data(&format!("{ctx}, after the next prune"));
    }
    eprintln!(
        "prune crash points: {t:?}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Some(t)
}

#[test]
fn snapshot_killed_at_many_points_fast_subset() {
    snapshot_crash_rounds(runs(20).min(20));
}

#[test]
#[ignore = "long: run by hand with PLUTO_CRASH_RUNS=200 (see the file's header)"]
fn snapshot_killed_at_many_points() {
    snapshot_crash_rounds(runs(200));
}

#[test]
fn prune_killed_at_many_points_fast_subset() {
    prune_crash_rounds(runs(10).min(10));
}

#[test]
#[ignore = "long: run by hand with PLUTO_CRASH_RUNS=200 (see the file's header)"]
fn prune_killed_at_many_points() {
    prune_crash_rounds(runs(200));
}

/// A tmpfs mounted for the test's lifetime.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
    std::fs::create_dir_all(at).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "mount -t tmpfs refused: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(Mount(at.to_path_buf()))
}

#[test]
fn full_disk_during_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    let _mount = match mount_tmpfs(&small, "20m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED full_disk_during_snapshot: {why}");
            return;
        }
    };
    let src = tmp.path().join("src");
    for i in 0..3 {
        write(
            &src.join(format!("photo{i}.jpg")),
            &pseudo_random(1500 * KIB, 70 + i),
        );
    }
    write(&src.join("notes.txt"), b"before the disk filled up\n");
    let repo = small.join("repo");
    let repo_s = repo.to_str().unwrap();
    ok(&src, &["init", "--repo", repo_s]);
    let first_tree = manifest(&src);
    let first = snapshot_id(&ok(&src, &["snapshot", "--repo", repo_s, "--json"]));

    // 24 MiB of incompressible data cannot fit in what is left of 20 MiB.
    for i in 0..6 {
        write(
            &src.join(format!("big/video{i}.mp4")),
            &pseudo_random(4 * 1024 * KIB, 900 + i),
        );
    }
    let o = pluto(&src, &["snapshot", "--repo", repo_s]);
    let err = stderr(&o);
    assert!(!o.status.success(), "snapshot on a full disk succeeded");
    assert!(
        err.contains("No space left"),
        "the error does not say the disk is full: {err}"
    );
    assert!(
        err.contains(repo_s),
        "the error does not name the path on the full disk: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "pluto panicked on a full disk: {err}"
    );

    let check = ok(&src, &["check", "--read-data", "--repo", repo_s]);
    assert!(check.contains("no errors"), "{check}");
    let restored = tmp.path().join("restored");
    ok(
        &src,
        &[
            "checkout",
            &first,
            "--repo",
            repo_s,
            "--target",
            restored.to_str().unwrap(),
        ],
    );
    assert_eq!(manifest(&restored), first_tree);

    // Once there is room again, the next snapshot succeeds: nothing the failed one left
    // behind keeps the disk full.
    std::fs::remove_dir_all(src.join("big")).unwrap();
    write(&src.join("notes.txt"), b"after the disk filled up\n");
    let second_tree = manifest(&src);
    let second = snapshot_id(&ok(&src, &["snapshot", "--repo", repo_s, "--json"]));
    ok(&src, &["check", "--read-data", "--repo", repo_s]);
    let restored2 = tmp.path().join("restored2");
    ok(
        &src,
        &[
            "checkout",
            &second,
            "--repo",
            repo_s,
            "--target",
            restored2.to_str().unwrap(),
        ],
    );
    assert_eq!(manifest(&restored2), second_tree);
}

/// A host whose disk fills up while an owner pushes: the push fails with a message that
/// says so, the host keeps serving, and what it held before is intact — a new machine
/// pulls the earlier snapshot back byte-identical.
#[test]
fn full_disk_during_hosting() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    let _mount = match mount_tmpfs(&small, "12m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED full_disk_during_hosting: {why}");
            return;
        }
    };
    let src = tmp.path().join("src");
    write(&src.join("photo.jpg"), &pseudo_random(3 * 1024 * KIB, 5));
    write(&src.join("notes.txt"), b"fits on the host\n");
    let words = words_from_init(&ok(&src, &["init"]));
    let first_tree = manifest(&src);
    ok(&src, &["snapshot", "-q"]);
    let owner = node_id(&src);
    // The host's whole repository (and what it hosts) lives on the small disk.
    let host_dir = small.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    ok(&host_dir, &["init"]);
    let (_host, addr) = start_serve(
        "host",
        &host_dir,
        &[
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "0",
            "--allow",
            &format!("{owner}=1G"),
        ],
    );
    let out = ok(&src, &["push", "-k", "1", "--host", &addr]);
    assert!(out.contains("to 1 host(s)"), "{out}");

    // 16 MiB more cannot fit in what is left of 12 MiB.
    for i in 0..4 {
        write(
            &src.join(format!("big/video{i}.mp4")),
            &pseudo_random(4 * 1024 * KIB, 40 + i),
        );
    }
    ok(&src, &["snapshot", "-q"]);
    let o = pluto(&src, &["push", "-k", "1", "--host", &addr]);
    let err = stderr(&o);
    assert!(!o.status.success(), "a push onto a full host succeeded");
    assert!(
        err.contains("space"),
        "the error does not say the host's disk is full: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("push onto a full host: {}", err.trim());
    // The host still answers, and a new machine gets the first snapshot back from it.
    let fresh = tmp.path().join("new-machine");
    let repo = recover_on_new_machine(&fresh, &words);
    let r = repo.to_str().unwrap();
    let o = pluto(&fresh, &["--repo", r, "pull", "--host", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = ok(&fresh, &["--repo", r, "log", "--oneline"]);
    let first = log
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let restored = tmp.path().join("restored");
    checkout_into(&fresh, &repo, &first, &restored);
    assert_eq!(
        manifest(&restored),
        first_tree,
        "the earlier snapshot came back changed"
    );
}
