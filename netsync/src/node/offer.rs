//! The disk a node offers others: checked against the disk before the node starts.

use std::path::Path;

use super::{NodeError, Result};

/// The offer when none is given.
pub const DEFAULT_OFFER: u64 = 10 << 30;

/// Less than this is no offer at all (a typo for a size, most likely: `--offer 100`).
pub const MIN_OFFER: u64 = 8 << 20;

/// Bytes in binary units, as people read them: `512 B`, `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Refuse an offer this node cannot keep: below [`MIN_OFFER`], or more than the disk under
/// the repository has free (plus what it already hosts, which counts against the offer).
/// The default offer is not refused for want of disk (that would stop a node the user never
/// asked to offer anything in particular): a warning is handed back instead.
pub fn check_offer(root: &Path, offer: u64, explicit: bool) -> Result<Option<String>> {
    let bytes = human_bytes;
    if offer < MIN_OFFER {
        return Err(NodeError::Invalid(format!(
            "--offer {}: too little to host anything (at least {}; sizes take units, e.g. 500M, 1.5G, 100G)",
            bytes(offer),
            bytes(MIN_OFFER)
        )));
    }
    let hosted = dir_bytes(&root.join("hosted"));
    if let Some(free) = free_bytes(root) {
        if offer > free.saturating_add(hosted) && !explicit {
            return Ok(Some(format!(
                "warning: offering {} (the default) but the disk under {} has only {} free: pass --offer SIZE",
                bytes(offer),
                root.display(),
                bytes(free)
            )));
        } else if offer > free.saturating_add(hosted) {
            return Err(NodeError::Invalid(format!(
                "--offer {}: the disk under {} has only {} free{}; offer at most that",
                bytes(offer),
                root.display(),
                bytes(free),
                if hosted > 0 {
                    format!(" (besides the {} already hosted)", bytes(hosted))
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(None)
}

/// Bytes free to an unprivileged user on the file system holding `path` (statvfs).
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
