//! Where packs live. One small trait, two real homes: a local directory (here) and a
//! peer (in pluto-netsync). Both pass the same conformance suite (`conformance`).

use super::PackId;
use crate::error::{Error, IoContext, Result};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Open pack files kept for reuse: a restore reads thousands of objects from a few packs,
/// and an `open` per object cost more than the read.
const OPEN_FILES: usize = 64;

pub trait PackStore: Send + Sync {
    /// Store a whole pack; the name must be the BLAKE3 hash of the bytes.
    fn put(&self, id: &PackId, bytes: &[u8]) -> Result<()>;
    /// Read `len` bytes at `offset`.
    fn get_range(&self, id: &PackId, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Read a whole pack.
    fn get(&self, id: &PackId) -> Result<Vec<u8>>;
    /// Every pack held, with its size.
    fn list(&self) -> Result<Vec<(PackId, u64)>>;
    fn remove(&self, id: &PackId) -> Result<()>;
}

/// Packs as files `packs/<first two hex digits>/<64 hex digits>`.
pub struct LocalPackStore {
    root: PathBuf,
    tmp: PathBuf,
    open_files: Mutex<HashMap<PackId, Arc<fs::File>>>,
}

impl LocalPackStore {
    pub fn new(root: impl Into<PathBuf>, tmp: impl Into<PathBuf>) -> Self {
        LocalPackStore {
            root: root.into(),
            tmp: tmp.into(),
            open_files: Mutex::new(HashMap::new()),
        }
    }

    pub fn path_of(&self, id: &PackId) -> PathBuf {
        let h = id.hex();
        self.root.join(&h[..2]).join(h)
    }

    /// Move a finished temp file into place (same filesystem: an atomic rename).
    pub fn put_file(&self, id: &PackId, tmp_path: &Path) -> Result<()> {
        let dest = self.path_of(id);
        let dir = dest.parent().unwrap();
        fs::create_dir_all(dir).at(dir)?;
        fs::rename(tmp_path, &dest).at(&dest)?;
        crate::fsutil::sync_dir(dir)
    }

    /// Ask the kernel to start reading a whole pack (a restore is about to read most of it).
    pub fn prefetch(&self, id: &PackId) {
        use std::os::unix::io::AsRawFd;
        if let Ok(f) = self.open(id) {
            // SAFETY: advice on a descriptor we own; no memory is involved.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
            }
        }
    }

    pub fn size_of(&self, id: &PackId) -> Result<u64> {
        let p = self.path_of(id);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::PackMissing { pack: id.hex() })
            }
            Err(e) => Err(e).at(p),
        }
    }

    fn open(&self, id: &PackId) -> Result<Arc<fs::File>> {
        if let Some(f) = self.open_files.lock().unwrap().get(id) {
            return Ok(f.clone());
        }
        let p = self.path_of(id);
        match fs::File::open(&p) {
            Ok(f) => {
                let f = Arc::new(f);
                let mut open = self.open_files.lock().unwrap();
                if open.len() >= OPEN_FILES {
                    open.clear();
                }
                open.insert(*id, f.clone());
                Ok(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::PackMissing { pack: id.hex() })
            }
            Err(e) => Err(e).at(p),
        }
    }
}

impl PackStore for LocalPackStore {
    fn put(&self, id: &PackId, bytes: &[u8]) -> Result<()> {
        if PackId::of_bytes(bytes) != *id {
            return Err(Error::corrupt(
                "pack",
                id.hex(),
                "bytes do not hash to the pack's name",
            ));
        }
        let dest = self.path_of(id);
        crate::fsutil::write_atomic(&self.tmp, &dest, bytes, 0o644)
    }

    fn get_range(&self, id: &PackId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = self.open(id)?;
        let mut buf = vec![0u8; len as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let n = f
                .read_at(&mut buf[done..], offset + done as u64)
                .at(self.path_of(id))?;
            if n == 0 {
                return Err(Error::corrupt(
                    "pack",
                    id.hex(),
                    format!("truncated: wanted bytes {offset}..{} ", offset + len),
                ));
            }
            done += n;
        }
        Ok(buf)
    }

    fn get(&self, id: &PackId) -> Result<Vec<u8>> {
        let p = self.path_of(id);
        match fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::PackMissing { pack: id.hex() })
            }
            Err(e) => Err(e).at(p),
        }
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).at(&self.root),
        };
        for sub in rd {
            let sub = sub.at(&self.root)?;
            if !sub.file_type().at(sub.path())?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path()).at(sub.path())? {
                let f = f.at(sub.path())?;
                if let Some(id) = f.file_name().to_str().and_then(PackId::from_hex) {
                    out.push((id, f.metadata().at(f.path())?.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, id: &PackId) -> Result<()> {
        self.open_files.lock().unwrap().remove(id);
        let p = self.path_of(id);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(p),
        }
    }
}

/// The conformance suite every `PackStore` must pass.
pub mod conformance {
    use super::*;

    pub fn run(store: &dyn PackStore) {
        let a = b"pack a bytes".repeat(100);
        let b = b"another pack".to_vec();
        let ida = PackId::of_bytes(&a);
        let idb = PackId::of_bytes(&b);
        store.put(&ida, &a).expect("put a");
        store.put(&idb, &b).expect("put b");
        assert!(
            store.put(&ida, &b).is_err(),
            "a pack whose name lies is refused"
        );
        assert_eq!(store.get(&ida).unwrap(), a);
        assert_eq!(store.get_range(&ida, 5, 10).unwrap(), &a[5..15]);
        assert!(
            store.get_range(&idb, 5, 100).is_err(),
            "reading past the end is an error"
        );
        let listed = store.list().unwrap();
        assert!(listed.contains(&(ida, a.len() as u64)));
        assert!(listed.contains(&(idb, b.len() as u64)));
        store.remove(&idb).unwrap();
        assert!(matches!(store.get(&idb), Err(Error::PackMissing { .. })));
        assert!(!store.list().unwrap().iter().any(|(id, _)| *id == idb));
        store
            .put(&ida, &a)
            .expect("putting the same pack twice is fine");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_store_passes_conformance() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        let s = super::LocalPackStore::new(d.path().join("packs"), d.path().join("tmp"));
        super::conformance::run(&s);
    }
}
