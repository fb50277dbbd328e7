//! The restore guarantee, tested against a model: random trees, random edits between
//! snapshots, and random mutations of files *while* `pluto snapshot` reads them (append,
//! truncate, rewrite in place, atomic replace, delete, file ↔ directory, create), made by
//! another thread that keeps the history of every state it gave each path.
//!
//! The invariant, for every snapshot that saves: `check --read-data` passes, and `checkout`
//! gives every untouched path exactly as it was, and every mutated path in a state it
//! really had during the snapshot — or the path is named as changed while read (or
//! unreadable, e.g. it vanished between the walk and the read).
//!
//! A seeded generator (no extra dependencies): `PLUTO_MODEL_ITERS` iterations (10 by
//! default, a few seconds), starting at `PLUTO_MODEL_SEED` (a failing seed is printed).

use pluto_e2e::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// xorshift64*: enough randomness for a test, the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max as u64 + 1) as usize;
        // Half compressible text, half noise: both kinds of chunk.
        if self.chance(50) {
            pseudo_random(len, self.next())
        } else {
            let word = format!("line {} of some log text\n", self.below(1000));
            word.as_bytes().iter().copied().cycle().take(len).collect()
        }
    }
}

/// A state a mutated path really had. A file being written passes through every prefix of
/// its new content from `floor` bytes up (appends and writes after a truncation are not
/// atomic for a reader), so those prefixes are states it had too.
#[derive(Clone, Debug)]
enum State {
    Absent,
    File {
        content: Arc<Vec<u8>>,
        floor: usize,
    },
    /// A directory holding at most the file `inner` (written after the directory was made).
    Dir {
        inner: Option<Arc<Vec<u8>>>,
    },
}

const HOT: usize = 6;

struct Mutator {
    root: PathBuf,
    staging: PathBuf,
    history: Vec<Vec<State>>,
    mutations: u64,
}

impl Mutator {
    fn path(&self, i: usize) -> PathBuf {
        self.root.join("hot").join(format!("h{i}"))
    }
    fn now(&self, i: usize) -> State {
        self.history[i].last().unwrap().clone()
    }
    fn push(&mut self, i: usize, s: State) {
        self.history[i].push(s);
    }

    /// One random mutation of one hot path.
    fn step(&mut self, rng: &mut Rng) {
        let i = rng.below(HOT as u64) as usize;
        let p = self.path(i);
        self.mutations += 1;
        match self.now(i) {
            State::File { content, .. } => match rng.below(6) {
                0 | 1 => {
                    let extra = rng.bytes(512 * 1024);
                    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
                    let mut c = (*content).clone();
                    c.extend_from_slice(&extra);
                    // Recorded first: the reader may see the new bytes before write returns.
                    self.push(
                        i,
                        State::File {
                            content: Arc::new(c),
                            floor: content.len(),
                        },
                    );
                    f.write_all(&extra).unwrap();
                }
                2 => {
                    let k = rng.below(content.len() as u64 + 1) as usize;
                    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
                    f.set_len(k as u64).unwrap();
                    self.push(
                        i,
                        State::File {
                            content: Arc::new(content[..k].to_vec()),
                            floor: k,
                        },
                    );
                }
                3 => {
                    // Rewrite in place: truncated to nothing, then written again.
                    let new = rng.bytes(2 * 1024 * 1024);
                    let mut f = fs::File::create(&p).unwrap();
                    self.push(
                        i,
                        State::File {
                            content: Arc::new(new.clone()),
                            floor: 0,
                        },
                    );
                    f.write_all(&new).unwrap();
                }
                4 => {
                    // Atomic replace, as editors and databases do.
                    let new = rng.bytes(2 * 1024 * 1024);
                    let tmp = self.staging.join(format!("s{i}"));
                    fs::write(&tmp, &new).unwrap();
                    self.push(
                        i,
                        State::File {
                            floor: new.len(),
                            content: Arc::new(new),
                        },
                    );
                    fs::rename(&tmp, &p).unwrap();
                }
                _ => {
                    fs::remove_file(&p).unwrap();
                    self.push(i, State::Absent);
                    if rng.chance(50) {
                        self.make_dir(i, rng);
                    }
                }
            },
            State::Dir { .. } => {
                fs::remove_dir_all(&p).unwrap();
                self.push(i, State::Dir { inner: None });
                self.push(i, State::Absent);
                if rng.chance(60) {
                    self.make_file(i, rng);
                }
            }
            State::Absent => {
                if rng.chance(70) {
                    self.make_file(i, rng);
                } else {
                    self.make_dir(i, rng);
                }
            }
        }
    }

    fn make_file(&mut self, i: usize, rng: &mut Rng) {
        let new = rng.bytes(2 * 1024 * 1024);
        let mut f = fs::File::create(self.path(i)).unwrap();
        self.push(
            i,
            State::File {
                content: Arc::new(new.clone()),
                floor: 0,
            },
        );
        f.write_all(&new).unwrap();
    }

    fn make_dir(&mut self, i: usize, rng: &mut Rng) {
        let p = self.path(i);
        fs::create_dir(&p).unwrap();
        self.push(i, State::Dir { inner: None });
        let inner = rng.bytes(64 * 1024);
        self.push(
            i,
            State::Dir {
                inner: Some(Arc::new(inner.clone())),
            },
        );
        fs::write(p.join("inner"), &inner).unwrap();
    }
}

/// `r` is a state of a file in `states`: some content's prefix no shorter than its floor.
fn file_state_matches(states: &[State], r: &[u8]) -> bool {
    states.iter().any(|s| match s {
        State::File { content, floor } => {
            (*floor..=content.len()).contains(&r.len()) && content[..r.len()] == *r
        }
        _ => false,
    })
}

/// The untouched part of the tree: random files, directories and symlinks.
fn random_tree(root: &Path, rng: &mut Rng, depth: u32) {
    fs::create_dir_all(root).unwrap();
    for i in 0..rng.below(6) + 1 {
        let name = format!("f{i}-{}", rng.below(1000));
        let p = root.join(&name);
        match rng.below(10) {
            0 if depth < 3 => random_tree(&p, rng, depth + 1),
            1 => std::os::unix::fs::symlink(format!("target-{}", rng.below(50)), &p).unwrap(),
            _ => {
                let big = rng.chance(10);
                fs::write(&p, rng.bytes(if big { 3_000_000 } else { 40_000 })).unwrap();
                if rng.chance(20) {
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
                }
            }
        }
    }
}

/// Random edits of the untouched part between snapshots.
fn edit_tree(root: &Path, rng: &mut Rng) {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                dirs.push(e.path());
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    dirs.sort();
    for _ in 0..rng.below(6) + 1 {
        match rng.below(6) {
            0 if !files.is_empty() => {
                let f = &files[rng.below(files.len() as u64) as usize];
                if f.exists() {
                    // Same size, new bytes: only the change time tells.
                    let len = fs::metadata(f).unwrap().len() as usize;
                    fs::write(f, pseudo_random(len, rng.next())).unwrap();
                }
            }
            1 if !files.is_empty() => {
                let f = &files[rng.below(files.len() as u64) as usize];
                if f.exists() {
                    let mut h = fs::OpenOptions::new().append(true).open(f).unwrap();
                    h.write_all(&rng.bytes(100_000)).unwrap();
                }
            }
            2 if !files.is_empty() => {
                let f = &files[rng.below(files.len() as u64) as usize];
                let _ = fs::remove_file(f);
            }
            3 => {
                let d = &dirs[rng.below(dirs.len() as u64) as usize];
                if d.exists() {
                    random_tree(&d.join(format!("new-{}", rng.next() % 10_000)), rng, 2);
                }
            }
            4 if dirs.len() > 1 => {
                let d = &dirs[1 + rng.below(dirs.len() as u64 - 1) as usize];
                let _ = fs::remove_dir_all(d);
            }
            _ if !files.is_empty() => {
                let f = &files[rng.below(files.len() as u64) as usize];
                if f.exists() {
                    let to = f.with_file_name(format!("moved-{}", rng.next() % 10_000));
                    fs::rename(f, to).unwrap();
                }
            }
            _ => {}
        }
    }
}

/// What one saved snapshot must restore.
struct Expected {
    id: String,
    cold: BTreeMap<PathBuf, Entry>,
    hot: Vec<Vec<State>>,
    /// Paths named as changed while read or unreadable.
    named: Vec<String>,
}

#[derive(Default, Debug)]
struct Counts {
    iterations: u64,
    snapshots: u64,
    partial: u64,
    mutations: u64,
    changed_during_read: u64,
    unreadable: u64,
    hot_verified: u64,
    hot_intermediate: u64,
    cold_verified: u64,
}

fn run_iteration(seed: u64, counts: &mut Counts) {
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let staging = tmp.path().join("staging");
    fs::create_dir_all(src.join("hot")).unwrap();
    fs::create_dir_all(&staging).unwrap();
    random_tree(&src.join("cold"), &mut rng, 0);
    let mut m = Mutator {
        root: src.clone(),
        staging,
        history: vec![vec![State::Absent]; HOT],
        mutations: 0,
    };
    for i in 0..HOT {
        if rng.chance(80) {
            m.make_file(i, &mut rng);
        }
    }
    ok(&src, &["init"]);
    let mut expected = Vec::new();
    let snapshots = 2 + rng.below(2);
    for _ in 0..snapshots {
        if !expected.is_empty() {
            edit_tree(&src.join("cold"), &mut rng);
            for _ in 0..rng.below(4) {
                m.step(&mut rng);
            }
        }
        let cold = manifest(&src.join("cold"));
        for h in m.history.iter_mut() {
            let now = h.pop().unwrap();
            h.clear();
            h.push(now);
        }
        // Mutate the hot files for as long as the snapshot runs.
        let done = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new((m, Rng::new(rng.next()))));
        let mutator = {
            let (done, shared) = (done.clone(), shared.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    {
                        let mut g = shared.lock().unwrap();
                        let (m, r) = &mut *g;
                        m.step(r);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            })
        };
        let o = pluto(&src, &["snapshot", "--json"]);
        done.store(true, Ordering::Relaxed);
        mutator.join().unwrap();
        m = match Arc::try_unwrap(shared) {
            Ok(mx) => mx.into_inner().unwrap().0,
            Err(_) => unreachable!("the mutator thread has ended"),
        };
        let code = o.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "seed {seed}: the snapshot saves: {code:?}\n{}",
            stderr(&o)
        );
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let list = |k: &str| -> Vec<String> {
            doc["stats"][k]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let (changed, unreadable) = (list("changed_during_read"), list("unreadable"));
        assert_eq!(
            code == Some(3),
            !(changed.is_empty() && unreadable.is_empty()),
            "seed {seed}: exit 3 exactly when something is named"
        );
        counts.snapshots += 1;
        counts.partial += (code == Some(3)) as u64;
        counts.changed_during_read += changed.len() as u64;
        counts.unreadable += unreadable.len() as u64;
        let mut named = changed;
        named.extend(unreadable);
        expected.push(Expected {
            id: doc["id"].as_str().unwrap().to_string(),
            cold,
            hot: m.history.clone(),
            named,
        });
    }
    counts.mutations += m.mutations;

    let check = pluto(&src, &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "seed {seed}: check --read-data passes: {}",
        stderr(&check)
    );
    for (k, e) in expected.iter().enumerate() {
        let out = tmp.path().join(format!("out{k}"));
        let o = pluto(
            &src,
            &["checkout", &e.id, "--target", out.to_str().unwrap()],
        );
        assert!(
            o.status.success(),
            "seed {seed}: checkout of snapshot {k} succeeds: {}",
            stderr(&o)
        );
        let restored = manifest(&out.join("cold"));
        assert_eq!(
            restored, e.cold,
            "seed {seed}: snapshot {k}: untouched paths restore exactly"
        );
        counts.cold_verified += restored.len() as u64;
        for (i, states) in e.hot.iter().enumerate() {
            let rel = format!("hot/h{i}");
            let live = src.join(&rel).to_string_lossy().into_owned();
            if e.named.iter().any(|n| n.starts_with(&live)) {
                continue;
            }
            let p = out.join(&rel);
            let what = match fs::symlink_metadata(&p) {
                Err(_) => states.iter().any(|s| matches!(s, State::Absent)),
                Ok(md) if md.is_file() => {
                    let r = fs::read(&p).unwrap();
                    let exact = states
                        .iter()
                        .any(|s| matches!(s, State::File { content, .. } if **content == r));
                    counts.hot_intermediate += (!exact) as u64;
                    file_state_matches(states, &r)
                }
                Ok(md) if md.is_dir() => {
                    let names: Vec<_> = fs::read_dir(&p)
                        .unwrap()
                        .map(|e| e.unwrap().file_name())
                        .collect();
                    let inner_ok = match fs::read(p.join("inner")) {
                        Ok(r) => states.iter().any(|s| match s {
                            State::Dir { inner: Some(c) } => c.starts_with(&r),
                            _ => false,
                        }),
                        Err(_) => states.iter().any(|s| matches!(s, State::Dir { .. })),
                    };
                    inner_ok && names.iter().all(|n| n == "inner")
                }
                Ok(_) => false,
            };
            assert!(
                what,
                "seed {seed}: snapshot {k}: {rel} restores a state it really had during the snapshot (history: {:?})",
                states
                    .iter()
                    .map(|s| match s {
                        State::Absent => "absent".to_string(),
                        State::File { content, floor } => format!("file {}..={}", floor, content.len()),
                        State::Dir { inner } => format!("dir {:?}", inner.as_ref().map(|c| c.len())),
                    })
                    .collect::<Vec<_>>()
            );
            counts.hot_verified += 1;
        }
    }
    counts.iterations += 1;
}

#[test]
fn snapshots_taken_while_files_change_always_restore_states_the_files_really_had() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let iters = env("PLUTO_MODEL_ITERS", 10);
    let seed0 = env("PLUTO_MODEL_SEED", 1);
    let mut counts = Counts::default();
    let started = std::time::Instant::now();
    for i in 0..iters {
        run_iteration(seed0 + i, &mut counts);
    }
    eprintln!(
        "model: {counts:?} in {:.1}s (PLUTO_MODEL_ITERS={iters} PLUTO_MODEL_SEED={seed0})",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(counts.iterations, iters);
}
