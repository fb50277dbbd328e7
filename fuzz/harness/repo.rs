//! What each fuzz target does with its input, shared by the libFuzzer targets
//! (`fuzz/fuzz_targets/*.rs`) and the plain replay test (`repo/tests/fuzz_regressions.rs`),
//! which runs every file of `fuzz/regressions/<target>/` through the same function.
//!
//! Every function must return normally on any input: errors are fine, panics, aborts and
//! unbounded allocations are findings.

#![allow(dead_code)]

use pluto_repo::crypto::{open_file, seal_file, ObjType, ObjectId, SubKey};
use pluto_repo::index::{decode_index_file, Index, INDEX_MAGIC};
use pluto_repo::keys::{Entropy, Keys};
use pluto_repo::pack::{decode_entries, parse_header, read_header, PACK_MAGIC, PACK_PREFIX_LEN};
use pluto_repo::repository::{Config, LockMode, Repository, CONFIG_MAGIC};
use pluto_repo::snapshot::{Snapshot, SNAPSHOT_MAGIC};
use pluto_repo::tree::Tree;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fuzz targets' fixed entropy. `fuzz/seed.sh` makes its repository from the same
/// words (`pluto init --recover`), so seed packs, index and snapshot files open with it.
pub const FUZZ_ENTROPY: [u8; 32] = [0x42; 32];
/// The same entropy as recovery words.
pub const FUZZ_WORDS: &str = "drastic bamboo mountain loyal category cancel animal embark \
    drastic bamboo mountain loyal category cancel animal embark \
    drastic bamboo mountain loyal category cancel animal embark";

/// Names of the targets whose inputs this module replays (directory names under
/// `fuzz/regressions/` and `fuzz/corpus/`).
/// A target's name and the function it runs on each input.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[
    ("pack_file", pack_file),
    ("pack_entries", pack_entries),
    ("pack_header_plain", pack_header_plain),
    ("index_plain", index_plain),
    ("sealed_file", sealed_file),
    ("tree", tree),
    ("snapshot", snapshot),
    ("config", config),
    ("secret", secret),
    ("bip39_words", bip39_words),
    ("repo_mutate", repo_mutate),
];

pub fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Entropy::from_bytes(FUZZ_ENTROPY).derive())
}

/// A whole pack file as found on disk (or sent by a peer): header, then every object
/// opened, decompressed and checked against its id, as `check --read-data` does.
pub fn pack_file(data: &[u8]) {
    let k = keys();
    let Ok(entries) = read_header(&k.data, "fuzz", data) else {
        return;
    };
    let Ok(key) = pluto_repo::pack::pack_key(&k.data, "fuzz", &data[..PACK_PREFIX_LEN]) else {
        return;
    };
    for e in entries {
        let Some(sealed) = data.get(e.offset as usize..e.offset as usize + e.stored_len as usize)
        else {
            continue;
        };
        open_object(&key, &e.id, e.ty, e.flags, e.plain_len, sealed);
    }
}

fn open_object(key: &SubKey, id: &ObjectId, ty: ObjType, flags: u8, plain_len: u32, sealed: &[u8]) {
    let aad = pluto_repo::crypto::object_aad(ty, flags, id);
    let Some(stored) = key.open(&aad, sealed) else {
        return;
    };
    let Some(plain) = pluto_repo::compress::decompress(flags, stored, plain_len as usize) else {
        return;
    };
    if ObjectId::compute(&keys().id, &plain) == *id && ty == ObjType::Tree {
        let _ = Tree::decode(&plain, id);
    }
}

/// The plaintext of a pack header (the object list); the first 8 bytes give the body end.
pub fn pack_entries(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let body_end = u64::from_le_bytes(data[..8].try_into().unwrap());
    let _ = decode_entries(&data[8..], body_end, "fuzz");
}

/// A header plaintext sealed with the right pack key, in front of object bodies that are
/// sealed with the right key too: past authentication, into decompress and the id check.
/// Input: [n_objects][for each: flags, ty, u16 len, bytes]… then header plaintext.
pub fn pack_header_plain(data: &[u8]) {
    let k = keys();
    let salt = [9u8; 32];
    let key = SubKey::derive(&k.data, &salt);
    let mut pack = Vec::new();
    pack.extend_from_slice(PACK_MAGIC);
    pack.extend_from_slice(&salt);
    let mut rest = data;
    let n = rest.first().copied().unwrap_or(0) % 8;
    rest = rest.get(1..).unwrap_or(&[]);
    for _ in 0..n {
        if rest.len() < 4 {
            break;
        }
        let (flags, ty) = (rest[0], rest[1]);
        let len = (u16::from_le_bytes([rest[2], rest[3]]) as usize).min(rest.len() - 4);
        let body = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let id = ObjectId::compute(&k.id, body);
        let ty = ObjType::from_u8(ty).unwrap_or(ObjType::Chunk);
        key.seal_into(
            &pluto_repo::crypto::object_aad(ty, flags, &id),
            body,
            &mut pack,
        );
    }
    let body_end = pack.len() as u64;
    let mut header = Vec::new();
    key.seal_into(PACK_MAGIC, rest, &mut header);
    let _ = parse_header(&k.data, "fuzz", &pack[..PACK_PREFIX_LEN], &header, body_end);
    pack.extend_from_slice(&header);
    pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
    pack_file(&pack);
}

/// An index file's plaintext (after opening and zstd), then into the in-memory index.
pub fn index_plain(data: &[u8]) {
    let Ok(packs) = decode_index_file(data, "fuzz") else {
        return;
    };
    let mut idx = Index::new();
    for p in &packs {
        idx.add_pack(p);
    }
    idx.finish();
    for p in &packs {
        for e in &p.entries {
            let _ = idx.get(e.ty, &e.id);
        }
    }
    let _ = idx.iter().count();
}

/// A sealed file (index, snapshot, config) with the known key, then what reading it does
/// next: zstd + index decode, snapshot decode, config decode.
pub fn sealed_file(data: &[u8]) {
    let k = keys();
    if let Ok(plain) = open_file(&k.data, INDEX_MAGIC, "index", "fuzz", data) {
        if let Ok(raw) = zstd_bounded(&plain) {
            index_plain(&raw);
        }
    }
    if let Ok(plain) = open_file(&k.data, SNAPSHOT_MAGIC, "snapshot", "fuzz", data) {
        snapshot(&plain);
    }
    if let Ok(plain) = open_file(&k.data, CONFIG_MAGIC, "config", "fuzz", data) {
        config(&plain);
    }
}

/// zstd as the repository reads index files, but stopping at 64 MiB so the fuzzer's
/// memory limit is not what ends a run (the limit itself is tested in `index_zstd_bomb`).
fn zstd_bounded(z: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(z)?
        .take(64 << 20)
        .read_to_end(&mut out)?;
    Ok(out)
}

pub fn tree(data: &[u8]) {
    if let Ok(t) = Tree::decode(data, &ObjectId([0; 32])) {
        for n in &t.nodes {
            let _ = t.find(&n.name);
            let _ = n.name_lossy();
        }
        let _ = t.encode();
    }
}

pub fn snapshot(data: &[u8]) {
    if let Ok(s) = Snapshot::decode(data, "fuzz") {
        let _ = s.encode();
    }
}

pub fn config(data: &[u8]) {
    if let Ok(c) = serde_json::from_slice::<Config>(data) {
        let _ = c.chunker.validate();
    }
}

fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The secret file: `keys::read_secret` reads a path, so the input is written to a file.
pub fn secret(data: &[u8]) {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir_in(scratch_dir()).unwrap());
    let p = dir
        .path()
        .join(format!("secret-{:?}", std::thread::current().id()));
    std::fs::write(&p, data).unwrap();
    let _ = pluto_repo::keys::read_secret(&p);
}

/// Recovery words as typed by a person.
pub fn bip39_words(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(e) = Entropy::from_words(&s) {
        let w = e.words();
        assert_eq!(Entropy::from_words(&w).unwrap().as_bytes(), e.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// repo_mutate: a real repository, changed by the input, then check --read-data and restore.

struct Pristine {
    _dir: tempfile::TempDir,
    /// The repository as `pluto snapshot` left it.
    repo: PathBuf,
    /// A scratch copy, reset before each input.
    work: PathBuf,
    restore: PathBuf,
}

fn pristine() -> &'static Pristine {
    static P: OnceLock<Pristine> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir_in(scratch_dir()).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("hello.txt"), b"hello, pluto\n").unwrap();
        std::fs::write(src.join("sub/text"), b"compressible ".repeat(3000)).unwrap();
        let noisy: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(src.join("sub/deeper/noise.bin"), noisy).unwrap();
        std::os::unix::fs::symlink("../hello.txt", src.join("sub/link")).unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        let repo = dir.path().join("repo");
        {
            let r = Repository::init(&repo, &Entropy::from_bytes(FUZZ_ENTROPY), None).unwrap();
            pluto_repo::archive::create_snapshot(
                &r,
                &src,
                &pluto_repo::archive::SnapshotOptions {
                    time_ns: Some(1_700_000_000_000_000_000),
                    hostname: Some("fuzz".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        Pristine {
            work: dir.path().join("work"),
            restore: dir.path().join("restore"),
            repo,
            _dir: dir,
        }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn put_sealed(dir: &Path, magic: &[u8; 8], plain: &[u8]) {
    let sealed = seal_file(&keys().data, magic, plain);
    let name = blake3::hash(&sealed).to_hex().to_string();
    std::fs::write(dir.join(name), sealed).unwrap();
}

/// Store one object (bytes as given, flags and length as given) in a new pack and index it.
fn store_object(
    r: &Repository,
    ty: ObjType,
    flags: u8,
    stored: &[u8],
    plain_len: u32,
    id: ObjectId,
) {
    use pluto_repo::pack::writer::PackWriter;
    let Ok(mut w) = PackWriter::create(&r.tmp_dir(), &r.keys().data) else {
        return;
    };
    if w.add(ty, flags, id, stored, plain_len).is_err() {
        return;
    }
    let Ok(f) = w.finish() else { return };
    if r.store().put_file(&f.id, &f.tmp_path).is_err() {
        return;
    }
    let _ = r.write_index_file(&[pluto_repo::index::IndexedPack {
        id: f.id,
        size: f.size,
        entries: f.entries,
    }]);
}

fn replace_root_tree(work: &Path, tree_id: ObjectId) {
    let snaps = files_in(&work.join("snapshots"));
    let r = Repository::open(work, LockMode::Exclusive).unwrap();
    let Ok(all) = r.snapshots() else { return };
    for s in all {
        let mut snap = s.snapshot.clone();
        snap.tree = tree_id;
        r.write_snapshot(&snap).unwrap();
    }
    for s in snaps {
        let _ = std::fs::remove_file(s);
    }
}

/// Input: [mode][rest]. Modes: 0 index plaintext, 1 snapshot plaintext, 2 root tree
/// plaintext, 3 byte edits to a pack (renamed to its new hash and re-indexed), 4 a chunk
/// with input-chosen flags and recorded length under a one-file root tree.
pub fn repo_mutate(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let p = pristine();
    let _ = std::fs::remove_dir_all(&p.work);
    copy_dir(&p.repo, &p.work);
    let w = &p.work;
    match mode % 5 {
        0 => {
            for f in files_in(&w.join("index")) {
                std::fs::remove_file(f).unwrap();
            }
            let z = zstd::bulk::compress(rest, 1).unwrap();
            put_sealed(&w.join("index"), INDEX_MAGIC, &z);
        }
        1 => {
            for f in files_in(&w.join("snapshots")) {
                std::fs::remove_file(f).unwrap();
            }
            put_sealed(&w.join("snapshots"), SNAPSHOT_MAGIC, rest);
        }
        2 => {
            let r = Repository::open(w, LockMode::Exclusive).unwrap();
            let id = ObjectId::compute(&keys().id, rest);
            store_object(&r, ObjType::Tree, 0, rest, rest.len() as u32, id);
            drop(r);
            replace_root_tree(w, id);
        }
        3 => {
            let packs = files_in(&w.join("packs"));
            if packs.is_empty() || rest.is_empty() {
                return;
            }
            let which = &packs[rest[0] as usize % packs.len()];
            let mut bytes = std::fs::read(which).unwrap();
            let old = blake3::hash(&bytes).to_hex().to_string();
            for e in rest[1..].chunks(3) {
                if bytes.is_empty() {
                    break;
                }
                match e {
                    [a, b, x] => {
                        let at = u16::from_le_bytes([*a, *b]) as usize;
                        if *x == 0 {
                            bytes.truncate(bytes.len().saturating_sub(at % 64 + 1));
                        } else {
                            let n = bytes.len();
                            // Half the edits land in the last 256 bytes: the header.
                            let i = if at & 1 == 1 {
                                n - 1 - (at >> 1) % n.min(256)
                            } else {
                                at % n
                            };
                            bytes[i] ^= x;
                        }
                    }
                    _ => bytes.extend_from_slice(e),
                }
            }
            let new = blake3::hash(&bytes).to_hex().to_string();
            std::fs::remove_file(which).unwrap();
            let dest = w.join("packs").join(&new[..2]).join(&new);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, &bytes).unwrap();
            // Re-point the index at the renamed pack, keeping its recorded entries.
            let r = Repository::open(w, LockMode::Exclusive).unwrap();
            let mut all = Vec::new();
            for name in r.index_files().unwrap() {
                let mut packs = r.read_index_file(&name).unwrap();
                for ip in &mut packs {
                    if ip.id.hex() == old {
                        ip.id = pluto_repo::pack::PackId::from_hex(&new).unwrap();
                        ip.size = bytes.len() as u64;
                    }
                }
                all.extend(packs);
                r.remove_index_file(&name).unwrap();
            }
            r.write_index_file(&all).unwrap();
        }
        _ => {
            if rest.len() < 5 {
                return;
            }
            let flags = rest[0];
            let plain_len = u32::from_le_bytes(rest[1..5].try_into().unwrap());
            let body = &rest[5..];
            let r = Repository::open(w, LockMode::Exclusive).unwrap();
            let chunk = ObjectId::compute(&keys().id, body);
            store_object(&r, ObjType::Chunk, flags, body, plain_len, chunk);
            let node = pluto_repo::tree::Node {
                name: b"f".to_vec(),
                kind: pluto_repo::tree::Kind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                dev: 0,
                inode: 0,
                nlink: 1,
                size: plain_len as u64,
                chunks: vec![chunk],
                subtree: None,
                target: None,
                rdev: 0,
                xattrs: vec![],
            };
            let t = Tree::new(vec![node]).encode();
            let tid = ObjectId::compute(&keys().id, &t);
            store_object(&r, ObjType::Tree, 0, &t, t.len() as u32, tid);
            drop(r);
            replace_root_tree(w, tid);
        }
    }
    read_everything(w, &p.restore);
}

/// What a user does with a repository: check --read-data, log, and check out every snapshot.
fn read_everything(repo: &Path, restore_to: &Path) {
    let Ok(r) = Repository::open(repo, LockMode::Exclusive) else {
        return;
    };
    let _ = pluto_repo::check::check(
        &r,
        &pluto_repo::check::CheckOptions {
            read_data: true,
            ..Default::default()
        },
    );
    let Ok(snaps) = r.snapshots() else { return };
    for s in snaps {
        let _ = std::fs::remove_dir_all(restore_to);
        let _ = pluto_repo::restore::restore(
            &r,
            &s.snapshot,
            &s.id,
            restore_to,
            &pluto_repo::restore::RestoreOptions::default(),
        );
    }
    let _ = std::fs::remove_dir_all(restore_to);
}

/// Seeds in plaintext for the targets that take decrypted bytes, from a real repository made
/// with the fuzz words (`fuzz/seed.sh` calls this through the replay test).
pub fn write_plain_seeds(repo: &Path, corpus: &Path) {
    let r = Repository::open(repo, LockMode::Shared).unwrap();
    let k = keys();
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = corpus.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let with_mode = |mode: u8, b: &[u8]| [&[mode][..], b].concat();
    for name in r.index_files().unwrap() {
        let bytes = std::fs::read(repo.join("index").join(&name)).unwrap();
        let z = open_file(&k.data, INDEX_MAGIC, "index", &name, &bytes).unwrap();
        let raw = zstd_bounded(&z).unwrap();
        put("index_plain", &name, &raw);
        put("repo_mutate", &format!("index-{name}"), &with_mode(0, &raw));
        for p in decode_index_file(&raw, &name).unwrap() {
            let mut h = p.size.saturating_sub(4).to_le_bytes().to_vec();
            h.extend_from_slice(&pluto_repo::pack::encode_entries(&p.entries));
            put("pack_entries", &p.id.hex(), &h);
            put(
                "pack_header_plain",
                &p.id.hex(),
                &[&[0u8][..], &h[8..]].concat(),
            );
            put(
                "repo_mutate",
                &format!("pack-{}", p.id.hex()),
                &[3, 0, 1, 0, 1, 0xff, 0x80],
            );
            for e in &p.entries {
                if e.ty == ObjType::Tree {
                    let t = r.read_object(&e.id, ObjType::Tree).unwrap();
                    put("tree", &e.id.hex(), &t);
                    put(
                        "repo_mutate",
                        &format!("tree-{}", e.id.hex()),
                        &with_mode(2, &t),
                    );
                }
            }
        }
    }
    for name in r.snapshot_names().unwrap() {
        let bytes = std::fs::read(repo.join("snapshots").join(&name)).unwrap();
        let plain = open_file(&k.data, SNAPSHOT_MAGIC, "snapshot", &name, &bytes).unwrap();
        put("snapshot", &name, &plain);
        put(
            "repo_mutate",
            &format!("snapshot-{name}"),
            &with_mode(1, &plain),
        );
    }
    let cfg = std::fs::read(repo.join("config")).unwrap();
    put(
        "config",
        "config",
        &open_file(&k.data, CONFIG_MAGIC, "config", "config", &cfg).unwrap(),
    );
    put("bip39_words", "words", FUZZ_WORDS.as_bytes());
    let mut chunk = vec![4, pluto_repo::crypto::FLAG_ZSTD];
    let z = zstd::bulk::compress(&b"abc".repeat(100), 3).unwrap();
    chunk.extend_from_slice(&300u32.to_le_bytes());
    chunk.extend_from_slice(&z);
    put("repo_mutate", "zstd-chunk", &chunk);
}
