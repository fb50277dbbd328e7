//! Writes one pack to a temp file while hashing it, so closing it costs no second read.

use super::{encode_entries, PackEntry, PackId, PACK_MAGIC};
use crate::crypto::{object_aad, random_bytes, ObjType, ObjectId, SubKey, SALT_LEN};
use crate::error::{IoContext, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct PackWriter {
    file: BufWriter<File>,
    tmp_path: PathBuf,
    hasher: blake3::Hasher,
    key: SubKey,
    entries: Vec<PackEntry>,
    len: u64,
    scratch: Vec<u8>,
    /// Removes the temp file if the pack is dropped unfinished (an error mid-way, e.g. a
    /// full disk): a failed snapshot must not leave the disk full of half-written packs.
    cleanup: TmpGuard,
}

struct TmpGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A pack that is complete on disk (fsynced) under a temp name, ready to be renamed.
pub struct FinishedPack {
    pub id: PackId,
    pub tmp_path: PathBuf,
    pub entries: Vec<PackEntry>,
    pub size: u64,
}

impl PackWriter {
    pub fn create(tmp_dir: &Path, data_key: &[u8; 32]) -> Result<Self> {
        let tmp_path = tmp_dir.join(format!("pack-{}.tmp", crate::fsutil::random_suffix()));
        let f = File::create(&tmp_path).at(&tmp_path)?;
        let mut salt = [0u8; SALT_LEN];
        random_bytes(&mut salt);
        let mut w = PackWriter {
            file: BufWriter::with_capacity(1 << 20, f),
            cleanup: TmpGuard {
                path: tmp_path.clone(),
                armed: true,
            },
            tmp_path,
            hasher: blake3::Hasher::new(),
            key: SubKey::derive(data_key, &salt),
            entries: Vec::new(),
            len: 0,
            scratch: Vec::new(),
        };
        w.write(PACK_MAGIC)?;
        w.write(&salt)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).at(&self.tmp_path)?;
        crate::fsutil::crash_point();
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seal `stored` (already compressed if `flags` says so) and append it.
    pub fn add(
        &mut self,
        ty: ObjType,
        flags: u8,
        id: ObjectId,
        stored: &[u8],
        plain_len: u32,
    ) -> Result<PackEntry> {
        let mut sealed = std::mem::take(&mut self.scratch);
        sealed.clear();
        self.key
            .seal_into(&object_aad(ty, flags, &id), stored, &mut sealed);
        let entry = PackEntry {
            ty,
            flags,
            id,
            offset: self.len as u32,
            stored_len: sealed.len() as u32,
            plain_len,
        };
        self.write(&sealed)?;
        self.scratch = sealed;
        self.entries.push(entry);
        Ok(entry)
    }

    /// Write the header, fsync, and hand back the finished pack.
    pub fn finish(mut self) -> Result<FinishedPack> {
        let mut header = Vec::new();
        self.key
            .seal_into(PACK_MAGIC, &encode_entries(&self.entries), &mut header);
        self.write(&header)?;
        self.write(&(header.len() as u32).to_le_bytes())?;
        let file = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .at(&self.tmp_path)?;
        file.sync_all().at(&self.tmp_path)?;
        crate::fsutil::crash_point();
        self.cleanup.armed = false;
        Ok(FinishedPack {
            id: PackId(*self.hasher.finalize().as_bytes()),
            tmp_path: self.tmp_path,
            entries: self.entries,
            size: self.len,
        })
    }

    /// Drop an unfinished pack's temp file.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp_path);
    }
}

#[cfg(test)]
mod cleanup_tests {
    use super::*;

    #[test]
    fn a_pack_dropped_unfinished_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path(), &[3; 32]).unwrap();
        w.add(ObjType::Chunk, 0, ObjectId([1; 32]), b"data", 4)
            .unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let w = PackWriter::create(dir.path(), &[3; 32]).unwrap();
        let f = w.finish().unwrap();
        assert!(
            f.tmp_path.exists(),
            "a finished pack's temp file is kept for the rename"
        );
    }
}
