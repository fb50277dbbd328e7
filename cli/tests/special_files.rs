//! The whole file system, not just files: extended attributes, FIFOs and device nodes come
//! back from a checkout and from `--tar`; sockets are counted and left out. And the ends of
//! a checkout: a closed pipe ends `pluto` quietly, `--tar` writes into a FIFO or
//! `/dev/stdout` as it is, and a symlink in a restore target is never followed.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | mode, libc::makedev(major, minor)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // the exact mode, whatever the umask
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// A tree with user xattrs (binary and empty values, on a file and a directory), a FIFO
/// and a socket; as root also /dev/null's twin (char 1:3), a block device (7:0) and a
/// trusted.* attribute. Returns false when the file system has no user xattrs.
fn special_tree(root: &Path) -> bool {
    write(&root.join("notes.txt"), b"with attributes\n");
    fs::create_dir_all(root.join("dir")).unwrap();
    if !set_xattr(&root.join("notes.txt"), "user.mime_type", b"text/plain") {
        return false;
    }
    set_xattr(&root.join("notes.txt"), "user.binary", b"\0\xff\n=");
    set_xattr(&root.join("notes.txt"), "user.empty", b"");
    set_xattr(&root.join("dir"), "user.dir", b"d");
    mknod(&root.join("pipe"), libc::S_IFIFO, 0o640, 0, 0);
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    if is_root() {
        mknod(&root.join("dir/null"), libc::S_IFCHR, 0o666, 1, 3);
        mknod(&root.join("loop"), libc::S_IFBLK, 0o660, 7, 0);
        set_xattr(&root.join("notes.txt"), "trusted.origin", b"backup-test");
    }
    for p in ["pipe", "dir/null", "loop", "notes.txt", "dir"] {
        if root.join(p).symlink_metadata().is_ok() {
            set_mtime(&root.join(p), 1_600_000_000, 5);
        }
    }
    true
}

#[test]
fn xattrs_fifos_and_devices_come_back_from_checkout_and_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    if !special_tree(&src) {
        eprintln!("skipped: no user xattrs on {}", tmp.path().display());
        return;
    }
    ok(&src, &["init"]);
    let o = pluto(&src, &["snapshot", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 socket(s) not recorded"),
        "{}",
        stderr(&o)
    );
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snap["stats"]["fifos"], 1, "{snap}");
    assert_eq!(snap["stats"]["sockets_skipped"], 1, "{snap}");
    if is_root() {
        assert_eq!(snap["stats"]["devices"], 2, "{snap}");
    }
    ok(&src, &["check", "--read-data"]);

    // ls shows the kinds as `ls -l` does, a device with its numbers.
    let ls = ok(&src, &["ls", "latest", "-r"]);
    assert!(ls.contains("prw-r----- "), "{ls}");
    assert!(!ls.contains("sock"), "{ls}");
    if is_root() {
        let null = ls.lines().find(|l| l.ends_with("dir/null")).unwrap();
        assert!(
            null.starts_with("crw-rw-rw-") && null.contains(" 1:3 "),
            "{ls}"
        );
        assert!(ls.lines().any(|l| l.starts_with("brw-rw----")), "{ls}");
    }
    let j = json(&src, &["ls", "latest", "notes.txt", "--json"]);
    assert!(
        j["entries"][0]["xattrs"]
            .as_array()
            .unwrap()
            .contains(&"user.mime_type".into()),
        "{j}"
    );

    let restored = tmp.path().join("restored");
    let out = ok(
        &src,
        &["checkout", "latest", "--target", restored.to_str().unwrap()],
    );
    let specials = if is_root() { 3 } else { 1 };
    assert!(
        out.contains(&format!("{specials} FIFOs and device nodes")),
        "{out}"
    );
    assert_same_tree(&src, &restored);
    assert!(fs::symlink_metadata(restored.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    if is_root() {
        let m = fs::symlink_metadata(restored.join("dir/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), libc::makedev(1, 3));
        assert_eq!(
            xattrs(&restored.join("notes.txt"))
                .iter()
                .find(|(k, _)| k == b"trusted.origin")
                .map(|(_, v)| v.as_slice()),
            Some(&b"backup-test"[..])
        );
    }

    // The tar archive, extracted by GNU tar with its xattr support, gives the same tree.
    let archive = tmp.path().join("all.tar");
    let o = pluto(
        &src,
        &["checkout", "latest", "--tar", archive.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l.starts_with("prw-r-----")),
        "{listing}"
    );
    let extracted = tmp.path().join("extracted");
    fs::create_dir_all(&extracted).unwrap();
    let st = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&extracted)
        .status()
        .unwrap();
    assert!(st.success(), "tar -x failed");
    assert_same_tree(&src, &extracted);
}

#[test]
fn a_device_node_that_cannot_be_made_is_named_and_the_rest_restored() {
    if !is_root() {
        eprintln!("skipped: making the device to back up needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a.txt"), b"a\n");
    mknod(&src.join("null"), libc::S_IFCHR, 0o666, 1, 3);
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    // Root without CAP_MKNOD, as in many containers: mknod of a device fails with EPERM.
    let target = tmp.path().join("r");
    let o = Command::new("setpriv")
        .args(["--bounding-set=-mknod", "--inh-caps=-mknod"])
        .arg(env!("CARGO_BIN_EXE_pluto"))
        .args(["checkout", "latest", "--target"])
        .arg(&target)
        .current_dir(&src)
        .env_remove("PLUTO_REPO")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("null: device node 1:3: only root can make device nodes"),
        "{err}"
    );
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"a\n");
    assert!(!target.join("null").exists());
}

#[test]
fn an_old_snapshot_of_an_unchanged_tree_diffs_clean_and_a_changed_xattr_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a.txt"), b"a\n");
    if !set_xattr(&src.join("a.txt"), "user.tag", b"one") {
        return;
    }
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    let d = json(&src, &["diff", "latest", "--worktree", "--json"]);
    assert_eq!(d["changes"], serde_json::json!([]), "{d}");
    set_xattr(&src.join("a.txt"), "user.tag", b"two");
    let d = json(&src, &["diff", "latest", "--worktree", "--json"]);
    assert_eq!(
        d["changes"][0]["fields"],
        serde_json::json!(["xattrs"]),
        "{d}"
    );
    // A new snapshot records the new value (the ctime changed, so the entry is re-read).
    ok(&src, &["snapshot"]);
    let r = tmp.path().join("r");
    ok(
        &src,
        &["checkout", "latest", "--target", r.to_str().unwrap()],
    );
    assert_eq!(
        xattrs(&r.join("a.txt")),
        vec![(b"user.tag".to_vec(), b"two".to_vec())]
    );
}

/// Run pluto with standard output a pipe whose reader is already gone: its first write
/// fails as `pluto … | head` does once head has read enough.
fn into_closed_pipe(cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned here; the read end is closed at once.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let mut c = pluto_cmd(cwd);
    c.args(args).stdout(Stdio::from(write));
    c.output().unwrap()
}

#[test]
fn ls_log_and_tar_into_a_closed_pipe_end_quietly_like_git() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // Far more than a pipe holds (64 KiB), so `head` leaves before pluto is done.
    for i in 0..2000 {
        write(&src.join(format!("d{}/file-{i}.txt", i % 7)), b"x\n");
    }
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    ok(&src, &["snapshot", "-m", "second"]);
    for args in [
        &["ls", "latest", "-r"][..],
        &["ls", "latest", "-r", "--json"],
        &["log"],
        &["diff", "latest", "--worktree"],
        &["checkout", "latest", "--tar", "-"],
    ] {
        let o = into_closed_pipe(&src, args);
        let err = stderr(&o);
        // Like `git log | head`: killed by SIGPIPE, not a word on stderr.
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGPIPE),
            "pluto {args:?}: {:?}: {err}",
            o.status
        );
        assert!(err.is_empty(), "pluto {args:?}: {err}");
    }
    // And through a real `head`, with the shell's view of it.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} ls latest -r --json | head -n 2; echo \"status ${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_pluto")
        ))
        .current_dir(&src)
        .env_remove("PLUTO_REPO")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.ends_with("status 141\n"), "{out}");
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn tar_into_dev_stdout_or_a_fifo_streams_and_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a.txt"), b"alpha\n");
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);

    // /dev/stdout is a symlink (to /proc/self/fd/1): written through, never replaced.
    let before = fs::read_link("/dev/stdout").unwrap();
    let o = pluto(&src, &["checkout", "latest", "--tar", "/dev/stdout"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link("/dev/stdout").unwrap(), before);
    let archive = tmp.path().join("from-stdout.tar");
    fs::write(&archive, &o.stdout).unwrap();
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "a.txt\n");

    // A FIFO: its reader gets the archive; the FIFO stays a FIFO.
    let fifo = tmp.path().join("fifo");
    mknod(&fifo, libc::S_IFIFO, 0o600, 0, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    ok(
        &src,
        &["checkout", "latest", "--tar", fifo.to_str().unwrap()],
    );
    let got = reader.join().unwrap();
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    let streamed = tmp.path().join("from-fifo.tar");
    fs::write(&streamed, &got).unwrap();
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&streamed)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "a.txt\n");

    // A character device (/dev/null): written to, not replaced (as root it could be).
    ok(&src, &["checkout", "latest", "--tar", "/dev/null"]);
    assert!(fs::symlink_metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    // A symlink to a regular file: the file gets the archive, the link stays a link.
    let real = tmp.path().join("real.tar");
    fs::write(&real, b"old").unwrap();
    let link = tmp.path().join("link.tar");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    ok(
        &src,
        &["checkout", "latest", "--tar", link.to_str().unwrap()],
    );
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let listing = Command::new("tar").arg("-tf").arg(&real).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "a.txt\n");
}

#[test]
fn a_symlink_in_the_restore_target_is_replaced_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("docs/a.txt"), b"alpha\n");
    write(&src.join("sub/b.txt"), b"beta\n");
    ok(&src, &["init"]);
    ok(&src, &["snapshot"]);
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = tmp.path().join("target");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("docs")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("sub")).unwrap();

    // One path whose parent is a planted symlink.
    let t = target.to_str().unwrap();
    ok(
        &src,
        &["checkout", "latest", "docs/a.txt", "--target", t, "--force"],
    );
    assert!(fs::symlink_metadata(target.join("docs")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("docs/a.txt")).unwrap(), b"alpha\n");
    // Everything, over a symlinked directory.
    ok(&src, &["checkout", "latest", "--target", t, "--force"]);
    assert!(fs::symlink_metadata(target.join("sub")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("sub/b.txt")).unwrap(), b"beta\n");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written through the links"
    );
}
