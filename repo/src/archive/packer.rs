//! Turns objects into packs from many threads at once: each worker takes an open pack
//! from a small pool, seals its object into it and gives it back; full packs are closed,
//! moved into the store and remembered for the index.

use crate::crypto::{ObjType, ObjectId};
use crate::error::Result;
use crate::index::IndexedPack;
use crate::pack::writer::PackWriter;
use crate::repository::Repository;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct Packer<'r> {
    repo: &'r Repository,
    ty: ObjType,
    pool: Mutex<Vec<PackWriter>>,
    finished: Mutex<Vec<IndexedPack>>,
    pub stored_bytes: AtomicU64,
}

impl<'r> Packer<'r> {
    pub fn new(repo: &'r Repository, ty: ObjType) -> Self {
        Packer {
            repo,
            ty,
            pool: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
            stored_bytes: AtomicU64::new(0),
        }
    }

    pub fn add(&self, id: ObjectId, flags: u8, stored: &[u8], plain_len: u32) -> Result<()> {
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
        let f = w.finish()?;
        self.repo.store().put_file(&f.id, &f.tmp_path)?;
        self.finished.lock().unwrap().push(IndexedPack {
            id: f.id,
            size: f.size,
            entries: f.entries,
        });
        Ok(())
    }

    /// Close every open pack.
    pub fn flush(&self) -> Result<()> {
        let open: Vec<PackWriter> = std::mem::take(&mut *self.pool.lock().unwrap());
        for w in open {
            if w.is_empty() {
                w.abandon();
            } else {
                self.close(w)?;
            }
        }
        Ok(())
    }

    /// Packs closed since the last call.
    pub fn take_finished(&self) -> Vec<IndexedPack> {
        std::mem::take(&mut *self.finished.lock().unwrap())
    }

    pub fn finished_count(&self) -> usize {
        self.finished.lock().unwrap().len()
    }
}

impl Drop for Packer<'_> {
    fn drop(&mut self) {
        for w in std::mem::take(&mut *self.pool.lock().unwrap()) {
            w.abandon();
        }
    }
}
