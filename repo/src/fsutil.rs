//! Atomic file writes: temp file in the same filesystem, fsync, rename, fsync the directory.

use crate::error::{IoContext, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `dest` so that a crash leaves either the old file or the whole new one.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tmp_dir.join(format!(
        "{}.{}.tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        random_suffix()
    ));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        crash_point();
        f.sync_all().at(&tmp)?;
    }
    crash_point();
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    fs::rename(&tmp, dest).at(dest)?;
    crash_point();
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Test hook for the crash-point harness (`tests/tests/crash_points.rs`): with
/// `PLUTO_CRASH_AFTER_WRITES=N` in the environment the process SIGKILLs itself at the Nth
/// call, i.e. after the Nth write step (atomic-file write, fsync, rename; each pack write).
/// Without the variable this is one relaxed atomic load.
pub fn crash_point() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::OnceLock;
    static LIMIT: OnceLock<Option<i64>> = OnceLock::new();
    static COUNT: AtomicI64 = AtomicI64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var("PLUTO_CRASH_AFTER_WRITES")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(n) = *limit {
        if COUNT.fetch_add(1, Ordering::Relaxed) + 1 >= n {
            // SAFETY: signalling our own process; nothing returns.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

pub fn random_suffix() -> String {
    let mut b = [0u8; 8];
    crate::crypto::random_bytes(&mut b);
    hex::encode(b)
}
