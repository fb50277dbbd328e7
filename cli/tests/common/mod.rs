//! Helpers for the CLI's tests: run the real `pluto` binary on real trees, and describe a
//! tree by every byte and attribute pluto promises to keep.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn pluto_cmd(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pluto"));
    c.current_dir(cwd)
        .env_remove("PLUTO_REPO")
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

pub fn pluto(cwd: &Path, args: &[&str]) -> Output {
    pluto_cmd(cwd).args(args).output().expect("run pluto")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run and insist on exit 0; returns stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = pluto(cwd, args);
    assert!(
        o.status.success(),
        "pluto {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    stdout(&o)
}

/// Run, insist on `code`, and return stderr (where errors are named).
pub fn fails(cwd: &Path, args: &[&str], code: i32) -> String {
    let o = pluto(cwd, args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "pluto {args:?}:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    stderr(&o)
}

pub fn json(cwd: &Path, args: &[&str]) -> serde_json::Value {
    let out = ok(cwd, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pluto {args:?}: not JSON ({e}):\n{out}"))
}

pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    let times = [t, t];
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", path.display());
}

/// What pluto keeps of one entry: kind, mode, mtime (ns), content or link target (a
/// device's numbers), the group of paths it shares an inode with, and its `user.` and
/// `trusted.` extended attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime_ns: i64,
    pub content: Vec<u8>,
    pub links: Vec<String>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn cpath(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

/// Set an extended attribute on `path` itself (straight libc, not pluto's code); false
/// when the file system does not do `user.` attributes.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings; value pointer and length from one slice.
    let r = unsafe {
        libc::lsetxattr(
            cpath(path).as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTSUP) {
        return false;
    }
    assert_eq!(r, 0, "setxattr {name} on {}", path.display());
    true
}

/// The `user.` and `trusted.` attributes of `path` itself, sorted (straight libc).
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let p = cpath(path);
    let mut list = vec![0u8; 65536];
    // SAFETY: buffer pointer and length describe `list`.
    let n = unsafe { libc::llistxattr(p.as_ptr(), list.as_mut_ptr() as *mut _, list.len()) };
    if n < 0 {
        return Vec::new();
    }
    list.truncate(n as usize);
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !(name.starts_with(b"user.") || name.starts_with(b"trusted.")) {
            continue;
        }
        let cn = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let len =
            unsafe { libc::lgetxattr(p.as_ptr(), cn.as_ptr(), v.as_mut_ptr() as *mut _, v.len()) };
        assert!(len >= 0, "getxattr on {}", path.display());
        v.truncate(len as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

/// Every entry under `root` (not `root` itself, not `.pluto`), keyed by relative path.
pub fn manifest(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    for paths in inodes.values() {
        if paths.len() > 1 {
            for p in paths {
                out.get_mut(p).unwrap().links = paths.clone();
            }
        }
    }
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Entry>,
    inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
) {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".pluto" {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let (kind, content) = if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes()
                    .to_vec(),
            )
        } else if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                "chardev"
            } else {
                "blockdev"
            };
            (kind, m.rdev().to_le_bytes().to_vec())
        } else if ft.is_socket() {
            // pluto leaves sockets out
            continue;
        } else {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
            ("file", fs::read(&p).unwrap())
        };
        out.insert(
            rel,
            Entry {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.permissions().mode() & 0o7777
                },
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                content,
                links: Vec::new(),
                xattrs: xattrs(&p),
            },
        );
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// Assert two trees are the same, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (ma, mb) = (manifest(a), manifest(b));
    let ka: Vec<&String> = ma.keys().collect();
    let kb: Vec<&String> = mb.keys().collect();
    assert_eq!(
        ka,
        kb,
        "paths differ between {} and {}",
        a.display(),
        b.display()
    );
    for (k, ea) in &ma {
        let eb = &mb[k];
        assert_eq!(ea.kind, eb.kind, "{k}: kind");
        assert_eq!(ea.mode, eb.mode, "{k}: mode");
        assert_eq!(ea.mtime_ns, eb.mtime_ns, "{k}: mtime");
        assert!(ea.content == eb.content, "{k}: content differs");
        assert_eq!(ea.links, eb.links, "{k}: hard links");
        assert_eq!(ea.xattrs, eb.xattrs, "{k}: extended attributes");
    }
}

/// Total bytes of the files under `dir`.
pub fn du(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    n
}

/// Copy a directory tree (files, dirs, symlinks), for snapshots of a tree's past states.
pub fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A tree with everything pluto must keep: nested and empty directories, a symlink (and a
/// dangling one), hard links, odd names, modes 0600/0755/0444, nanosecond mtimes.
pub fn tricky_tree(root: &Path) {
    write(&root.join("empty.txt"), b"");
    write(&root.join("docs/a.txt"), b"alpha\n");
    write(&root.join("docs/deep/er/b.txt"), &pseudo_random(300_000, 1));
    write(&root.join("name with spaces ü\nnewline"), b"odd name\n");
    write(&root.join("big.bin"), &pseudo_random(3_000_000, 2));
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("docs/a.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    fs::hard_link(root.join("big.bin"), root.join("docs/big-again.bin")).unwrap();
    for (p, mode) in [
        ("docs/a.txt", 0o600),
        ("empty.txt", 0o444),
        ("docs/deep", 0o755),
    ] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    let mut paths: Vec<String> = manifest(root).into_keys().collect();
    // Deepest first, so setting a child's time does not disturb its directory's.
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for (i, p) in paths.iter().enumerate() {
        set_mtime(
            &root.join(p),
            1_600_000_000 + i as i64 * 3600,
            123_456_789 + i as u32,
        );
    }
}
