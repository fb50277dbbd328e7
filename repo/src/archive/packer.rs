//! Turns objects into packs from many threads at once: each worker takes an open pack
//! from a small pool, seals its object into it and gives it back. A full pack is closed
//! (header, fsync, rename into the store) on a thread of its own, so the workers keep
//! chunking and compressing while the disk syncs; `flush` waits for every close.

use crate::crypto::{ObjType, ObjectId};
use crate::error::{Error, Result};
use crate::index::IndexedPack;
use crate::pack::store::LocalPackStore;
use crate::pack::writer::PackWriter;
use crate::repository::Repository;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Packs being closed at once; beyond this the worker that filled a pack waits.
const MAX_CLOSING: usize = 2;

pub struct Packer<'r> {
    repo: &'r Repository,
    ty: ObjType,
    pool: Mutex<Vec<PackWriter>>,
    closing: Mutex<Vec<JoinHandle<Result<IndexedPack>>>>,
    finished: Mutex<Vec<IndexedPack>>,
    /// The first error of a closing thread, reported by `flush`.
    failed: Mutex<Option<Error>>,
    pub stored_bytes: AtomicU64,
}

fn close(w: PackWriter, store: LocalPackStore) -> Result<IndexedPack> {
    let f = w.finish()?;
    store.put_file(&f.id, &f.tmp_path)?;
    Ok(IndexedPack {
        id: f.id,
        size: f.size,
        entries: f.entries,
    })
}

impl<'r> Packer<'r> {
    pub fn new(repo: &'r Repository, ty: ObjType) -> Self {
        Packer {
            repo,
            ty,
            pool: Mutex::new(Vec::new()),
            closing: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            stored_bytes: AtomicU64::new(0),
        }
    }

    pub fn add(&self, id: ObjectId, flags: u8, stored: &[u8], plain_len: u32) -> Result<()> {
        if let Some(e) = self.failed.lock().unwrap().take() {
            return Err(e);
        }
        let taken = self.pool.lock().unwrap().pop();
        let mut w = match taken {
            Some(w) => w,
            None => PackWriter::create(&self.repo.tmp_dir(), &self.repo.keys().data)?,
        };
        let entry = w.add(self.ty, flags, id, stored, plain_len)?;
        self.stored_bytes
            .fetch_add(entry.stored_len as u64, Ordering::Relaxed);
        if w.len() >= self.repo.config().pack_target_size {
            self.close(w)?;
        } else {
            self.pool.lock().unwrap().push(w);
        }
        Ok(())
    }

    fn close(&self, w: PackWriter) -> Result<()> {
        let store = LocalPackStore::new(self.repo.root().join("packs"), self.repo.tmp_dir());
        let h = std::thread::Builder::new()
            .name("pack-close".into())
            .spawn(move || close(w, store))
            .map_err(|e| Error::Invalid(format!("cannot start a thread: {e}")))?;
        let wait: Vec<_> = {
            let mut c = self.closing.lock().unwrap();
            c.push(h);
            let over = c.len().saturating_sub(MAX_CLOSING);
            c.drain(..over).collect()
        };
        for h in wait {
            self.collect(h)?;
        }
        self.reap(false)
    }

    fn collect(&self, h: JoinHandle<Result<IndexedPack>>) -> Result<()> {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("a pack-closing thread panicked".into())));
        match r {
            Ok(p) => {
                self.finished.lock().unwrap().push(p);
                Ok(())
            }
            Err(e) => {
                // Kept for the next `add` or `flush` to return, with its own kind and path.
                self.failed.lock().unwrap().get_or_insert(e);
                Ok(())
            }
        }
    }

    /// Move closed packs to `finished`; with `all`, wait for those still closing.
    fn reap(&self, all: bool) -> Result<()> {
        let done: Vec<_> = {
            let mut c = self.closing.lock().unwrap();
            let (done, busy): (Vec<_>, Vec<_>) = c.drain(..).partition(|h| all || h.is_finished());
            *c = busy;
            done
        };
        for h in done {
            self.collect(h)?;
        }
        Ok(())
    }

    /// Close every open pack and wait until all are in the store.
    pub fn flush(&self) -> Result<()> {
        let open: Vec<PackWriter> = std::mem::take(&mut *self.pool.lock().unwrap());
        for w in open {
            if w.is_empty() {
                w.abandon();
            } else {
                self.close(w)?;
            }
        }
        let r = self.reap(true);
        match self.failed.lock().unwrap().take() {
            Some(e) => Err(e),
            None => r,
        }
    }

    /// Packs closed since the last call.
    pub fn take_finished(&self) -> Vec<IndexedPack> {
        let _ = self.reap(false);
        std::mem::take(&mut *self.finished.lock().unwrap())
    }

    pub fn finished_count(&self) -> usize {
        let _ = self.reap(false);
        self.finished.lock().unwrap().len()
    }
}

impl Drop for Packer<'_> {
    fn drop(&mut self) {
        for h in std::mem::take(&mut *self.closing.lock().unwrap()) {
            let _ = h.join();
        }
        for w in std::mem::take(&mut *self.pool.lock().unwrap()) {
            w.abandon();
        }
    }
}
