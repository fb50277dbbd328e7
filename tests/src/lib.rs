//! Helpers for pluto's end-to-end tests: run the real `pluto` binary on real trees and
//! compare trees by every byte and every attribute pluto promises to keep.

pub mod daemon;
pub mod soak;
pub use daemon::*;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `pluto` binary under test: $PLUTO_BIN (set by scripts/test), else the newest of
/// target/{release,debug}/pluto.
pub fn pluto_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PLUTO_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let mut cands: Vec<PathBuf> = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("pluto"))
        .filter(|p| p.exists())
        .collect();
    cands.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).and_then(|m| m.modified()).ok()));
    cands
        .into_iter()
        .next()
        .expect("no pluto binary: run `cargo build --release -p pluto` (or scripts/test) first")
}

pub fn pluto(cwd: &Path, args: &[&str]) -> Output {
    pluto_env(cwd, args, &[], None)
}

/// Run pluto with extra environment and optional stdin.
pub fn pluto_env(cwd: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut c = Command::new(pluto_bin());
    c.current_dir(cwd).args(args).env_remove("PLUTO_REPO");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn pluto");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().expect("wait for pluto")
}

/// Run and insist on success; returns stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = pluto(cwd, args);
    assert!(
        o.status.success(),
        "pluto {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The 24 words printed by `pluto init`.
/// A new machine at `dir` that has only the recovery words: `pluto init --recover` into
/// `dir/.pluto`; returns that repository's path.
pub fn recover_on_new_machine(dir: &Path, words: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let repo = dir.join(".pluto");
    let rec = pluto_env(
        dir,
        &["init", "--recover", "--repo", repo.to_str().unwrap()],
        &[],
        Some(words),
    );
    assert!(rec.status.success(), "{}", stderr(&rec));
    repo
}

/// `pluto --repo REPO checkout SNAPSHOT --target TARGET`, run in `cwd`; its output.
pub fn checkout_into(cwd: &Path, repo: &Path, snapshot: &str, target: &Path) -> String {
    ok(
        cwd,
        &[
            "--repo",
            repo.to_str().unwrap(),
            "checkout",
            snapshot,
            "--target",
            target.to_str().unwrap(),
        ],
    )
}

pub fn words_from_init(out: &str) -> String {
    let mut words = Vec::new();
    for line in out.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks
            .first()
            .is_some_and(|t| t.ends_with('.') && t[..t.len() - 1].parse::<u32>().is_ok())
        {
            for pair in toks.chunks(2) {
                if pair.len() == 2 {
                    words.push(pair[1].to_string());
                }
            }
        }
    }
    assert_eq!(words.len(), 24, "init did not print 24 words:\n{out}");
    words.join(" ")
}

/// Deterministic, fast, incompressible-looking bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    out
}

pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Total bytes of the files under `dir` (0 when there is no such directory).
pub fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub content: Option<String>,
    pub link: Option<PathBuf>,
    /// For hard-linked files: the first path (in sorted order) of the same inode.
    pub same_as: Option<PathBuf>,
}

/// Every path under `root` (except `.pluto`) with what pluto must restore.
pub fn manifest(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut paths = Vec::new();
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap().flatten() {
            if rel.as_os_str().is_empty() && e.file_name() == ".pluto" {
                continue;
            }
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(r.clone());
            }
            paths.push(r);
        }
    }
    paths.sort();
    for r in paths {
        let p = root.join(&r);
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "file"
        };
        let same_as = if ft.is_file() && m.nlink() > 1 {
            let first = inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| r.clone())
                .clone();
            (first != r).then_some(first)
        } else {
            None
        };
        out.insert(
            r,
            Entry {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                size: if ft.is_file() { m.len() } else { 0 },
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                content: ft
                    .is_file()
                    .then(|| blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string()),
                link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                same_as,
            },
        );
    }
    out
}

/// Assert two trees are identical, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let ma = manifest(a);
    let mb = manifest(b);
    for (p, ea) in &ma {
        match mb.get(p) {
            None => panic!("{} is missing from {}", p.display(), b.display()),
            Some(eb) => assert_eq!(ea, eb, "{} differs", p.display()),
        }
    }
    for p in mb.keys() {
        assert!(
            ma.contains_key(p),
            "{} is extra in {}",
            p.display(),
            b.display()
        );
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
// The default chunker's bounds (repo/src/chunker.rs).
const CHUNK_MIN: usize = 256 * KIB;
const CHUNK_MAX: usize = 4 * MIB;

/// A tree with every kind of thing a backup must keep, and one large file of `big_mib` MiB.
pub fn tricky_tree(root: &Path, big_mib: usize) {
    write(&root.join("empty"), b"");
    write(&root.join("one-byte"), b"x");
    for (name, len) in [
        ("min-1", CHUNK_MIN - 1),
        ("min", CHUNK_MIN),
        ("min+1", CHUNK_MIN + 1),
        ("max-1", CHUNK_MAX - 1),
        ("max", CHUNK_MAX),
        ("max+1", CHUNK_MAX + 1),
    ] {
        write(
            &root.join("sizes").join(name),
            &pseudo_random(len, len as u64),
        );
    }
    write(
        &root.join("big/large.bin"),
        &pseudo_random(big_mib * MIB, 100),
    );
    write(&root.join("text/notes.txt"), &b"hello pluto\n".repeat(1000));
    write(&root.join("a/b/c/d/deep.txt"), b"deep");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("a/empty-inner")).unwrap();
    std::os::unix::fs::symlink("text/notes.txt", root.join("link-to-notes")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("absolute-link")).unwrap();
    fs::hard_link(root.join("text/notes.txt"), root.join("a/hard-notes")).unwrap();
    fs::hard_link(root.join("text/notes.txt"), root.join("hard-notes-2")).unwrap();
    write(&root.join("names/with space.txt"), b"space");
    write(&root.join("names/ünïcödé — 日本.txt"), b"unicode");
    write(&root.join("names/new\nline"), b"newline");
    write(&root.join("modes/private"), b"0600");
    chmod(&root.join("modes/private"), 0o600);
    write(&root.join("modes/script"), b"#!/bin/sh\n");
    chmod(&root.join("modes/script"), 0o755);
    write(&root.join("modes/readonly"), b"0444");
    chmod(&root.join("modes/readonly"), 0o444);
    write(
        &root.join("sparse"),
        &[vec![0u8; 3 * MIB], b"tail".to_vec()].concat(),
    );
    let mut t = 1_600_000_000;
    for p in [
        "empty",
        "one-byte",
        "modes/private",
        "names/new\nline",
        "link-to-notes",
        "a/b/c/d",
        "empty-dir",
    ] {
        set_mtime(&root.join(p), t, 123_456_789);
        t += 1000;
    }
}
