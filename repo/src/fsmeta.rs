//! Metadata beyond `stat`: extended attributes, and making FIFOs and device nodes.
//!
//! Every call works on the link itself (`l*xattr`, `mknod`), never on what a symlink
//! points to. Only the `user.` namespace is recorded by a non-root user: the others are
//! either invisible (`trusted.`) or cannot be set back without privileges.

use crate::tree::{Kind, Xattr};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Is this process root (and so may read every xattr namespace, make devices, chown)?
pub fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions.
    *ROOT.get_or_init(|| unsafe { libc::geteuid() } == 0)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// The file system does not do xattrs at all: nothing to record, nothing lost.
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTSUP)
}

/// Call `f(buf, len)` (a l{list,get}xattr) growing the buffer until the answer fits (the
/// attribute may grow between the size query and the read).
fn sized(mut f: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        let got = f(buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

/// The extended attributes of `path` itself (not following a symlink), sorted by name:
/// all of them as root, those in the `user.` namespace otherwise.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let p = cpath(path)?;
    // SAFETY: p is NUL-terminated; the buffer pointer and length come from `sized`.
    let list = match sized(|b, l| unsafe { libc::llistxattr(p.as_ptr(), b as *mut _, l) }) {
        Ok(l) => l,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let root = is_root();
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !root && !name.starts_with(b"user.") {
            continue;
        }
        let cname = CString::new(name).expect("split at NUL");
        // SAFETY: as above, both strings NUL-terminated.
        let value = sized(|b, l| unsafe { libc::lgetxattr(p.as_ptr(), cname.as_ptr(), b, l) });
        match value {
            Ok(v) => out.push((name.to_vec(), v)),
            // Removed since the list was read: it is not there to record.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("extended attribute {}: {e}", String::from_utf8_lossy(name)),
                ))
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Set each attribute on `path` itself (not following a symlink). Returns one message per
/// attribute that could not be set (e.g. `trusted.` ones without root, or a target file
/// system without xattrs), so the caller can report them and go on.
pub fn write_xattrs(path: &Path, xattrs: &[Xattr]) -> Vec<String> {
    let mut failed = Vec::new();
    if xattrs.is_empty() {
        return failed;
    }
    let p = match cpath(path) {
        Ok(p) => p,
        Err(e) => return vec![e.to_string()],
    };
    for (name, value) in xattrs {
        let Ok(cname) = CString::new(name.clone()) else {
            failed.push(format!(
                "extended attribute {:?}: name holds a NUL byte",
                String::from_utf8_lossy(name)
            ));
            continue;
        };
        // SAFETY: NUL-terminated strings; value pointer and length describe one slice.
        let r = unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                value.as_ptr() as *const libc::c_void,
                value.len(),
                0,
            )
        };
        if r != 0 {
            failed.push(format!(
                "extended attribute {}: {}",
                String::from_utf8_lossy(name),
                io::Error::last_os_error()
            ));
        }
    }
    failed
}

/// Make a FIFO or device node at `path` (which must not exist) with permission bits
/// `mode` (before the umask; the caller sets the exact mode afterwards).
pub fn make_special(path: &Path, kind: Kind, mode: u32, rdev: u64) -> io::Result<()> {
    let ty = match kind {
        Kind::Fifo => libc::S_IFIFO,
        Kind::CharDevice => libc::S_IFCHR,
        Kind::BlockDevice => libc::S_IFBLK,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a FIFO or device",
            ))
        }
    };
    let p = cpath(path)?;
    let rdev = if kind.is_device() { rdev } else { 0 };
    // SAFETY: p is NUL-terminated; mknod does not keep the pointer.
    let r = unsafe {
        libc::mknod(
            p.as_ptr(),
            ty | (mode & 0o7777) as libc::mode_t,
            rdev as libc::dev_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// "1:3" for a device number, as `ls -l` shows it.
pub fn rdev_string(rdev: u64) -> String {
    let d = rdev as libc::dev_t;
    format!("{}:{}", libc::major(d), libc::minor(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_xattrs_read_back_sorted_and_a_fifo_is_made() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let attrs = vec![
            (b"user.b".to_vec(), b"\0bin\xff".to_vec()),
            (b"user.a".to_vec(), vec![]),
        ];
        let failed = write_xattrs(&f, &attrs);
        if failed.iter().any(|m| m.contains("not supported")) {
            eprintln!("skipped: {} has no user xattrs", d.path().display());
            return;
        }
        assert!(failed.is_empty(), "{failed:?}");
        let mut want = attrs.clone();
        want.sort();
        assert_eq!(read_xattrs(&f).unwrap(), want);

        let p = d.path().join("p");
        make_special(&p, Kind::Fifo, 0o640, 0).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_fifo());
        assert!(
            make_special(&p, Kind::Fifo, 0o640, 0).is_err(),
            "never over an entry"
        );
        assert_eq!(rdev_string(libc::makedev(1, 3)), "1:3");
    }
}
