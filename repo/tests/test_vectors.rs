//! The book's test vectors (`book/src/test-vectors.md`) recomputed from the library.
//!
//! The book is read at test time: every `name = value` line of its ```` ```vectors ````
//! blocks is either an input (read here) or an output (recomputed here and compared), and a
//! name the test does not know fails it, so the book and the code cannot drift apart.
//! Run with `PLUTO_PRINT_VECTORS=1` to print the computed blocks (to refresh the book after
//! a deliberate format change — which needs a new format version).

use pluto_repo::crypto::{object_aad, open_file, seal_file, ObjType, ObjectId, SubKey};
use pluto_repo::index::{decode_index_file, encode_index_file, IndexedPack, INDEX_MAGIC};
use pluto_repo::keys::Entropy;
use pluto_repo::pack::writer::PackWriter;
use pluto_repo::pack::{read_header, PackId, PACK_MAGIC};
use pluto_repo::repository::{Config, CONFIG_MAGIC};
use pluto_repo::snapshot::{Snapshot, SnapshotStats, SNAPSHOT_MAGIC};
use pluto_repo::tree::{Kind, Node, Tree};
use pluto_repo::vectors::{
    build_pack, format_value, parse_book, seal_file_with, subkey_bytes, VectorObject,
};
use std::collections::BTreeMap;

const BOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../book/src/test-vectors.md");

struct Book {
    values: BTreeMap<String, String>,
    order: Vec<String>,
}

impl Book {
    fn load() -> Book {
        let text = std::fs::read_to_string(BOOK).unwrap_or_else(|e| panic!("{BOOK}: {e}"));
        let pairs = parse_book(&text).unwrap_or_else(|e| panic!("{BOOK}: {e}"));
        assert!(!pairs.is_empty(), "no ```vectors blocks in {BOOK}");
        Book {
            order: pairs.iter().map(|(n, _)| n.clone()).collect(),
            values: pairs.into_iter().collect(),
        }
    }
    fn text(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("the book has no vector named {name}"))
    }
    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(self.text(name)).unwrap_or_else(|e| panic!("{name}: not hex: {e}"))
    }
    fn arr<const N: usize>(&self, name: &str) -> [u8; N] {
        self.bytes(name)
            .try_into()
            .unwrap_or_else(|v: Vec<u8>| panic!("{name}: {} bytes, expected {N}", v.len()))
    }
}

/// ChaCha20 keystream block 0 (key = seed, 64-bit counter 0, 64-bit nonce 0), written out
/// from RFC 8439 here so the spec's "first 32 bytes of the ChaCha20 stream" is checked
/// independently of rand_chacha.
fn chacha20_first_32(key: &[u8; 32]) -> [u8; 32] {
    fn qr(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        s[a] = s[a].wrapping_add(s[b]);
        s[d] = (s[d] ^ s[a]).rotate_left(16);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_left(12);
        s[a] = s[a].wrapping_add(s[b]);
        s[d] = (s[d] ^ s[a]).rotate_left(8);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_left(7);
    }
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    for i in 0..8 {
        init[4 + i] = u32::from_le_bytes(key[4 * i..4 * i + 4].try_into().unwrap());
    }
    let mut s = init;
    for _ in 0..10 {
        qr(&mut s, 0, 4, 8, 12);
        qr(&mut s, 1, 5, 9, 13);
        qr(&mut s, 2, 6, 10, 14);
        qr(&mut s, 3, 7, 11, 15);
        qr(&mut s, 0, 5, 10, 15);
        qr(&mut s, 1, 6, 11, 12);
        qr(&mut s, 2, 7, 8, 13);
        qr(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 32];
    for i in 0..8 {
        out[4 * i..4 * i + 4].copy_from_slice(&s[i].wrapping_add(init[i]).to_le_bytes());
    }
    out
}

fn file_node(object_id: ObjectId, size: u64) -> Node {
    Node {
        name: b"hello.txt".to_vec(),
        kind: Kind::File,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1_700_000_000_123_456_789,
        ctime_ns: 1_700_000_000_987_654_321,
        dev: 2049,
        inode: 131_073,
        nlink: 1,
        size,
        chunks: vec![object_id],
        subtree: None,
        target: None,
        rdev: 0,
        xattrs: vec![],
    }
}

/// The tree of the book's example: a file, a symlink and an empty directory.
fn example_tree(object_id: ObjectId, size: u64, empty_tree: ObjectId) -> Tree {
    let dir = Node {
        name: b"sub".to_vec(),
        kind: Kind::Dir,
        mode: 0o755,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_000,
        dev: 2049,
        inode: 131_074,
        nlink: 2,
        size: 0,
        chunks: vec![],
        subtree: Some(empty_tree),
        target: None,
        rdev: 0,
        xattrs: vec![],
    };
    let link = Node {
        name: b"link".to_vec(),
        kind: Kind::Symlink,
        mode: 0o777,
        uid: 0,
        gid: 0,
        mtime_ns: -1_500_000_000,
        ctime_ns: 0,
        dev: 2049,
        inode: 131_075,
        nlink: 1,
        size: 0,
        chunks: vec![],
        subtree: None,
        target: Some(b"hello.txt".to_vec()),
        rdev: 0,
        xattrs: vec![],
    };
    // Given out of order on purpose: Tree::new sorts by name.
    Tree::new(vec![dir, file_node(object_id, size), link])
}

/// The version 2 additions: a FIFO, a character device (1:3, like /dev/null) and a file
/// with extended attributes (given out of order: the tree holds them sorted by name).
fn special_tree(object_id: ObjectId, size: u64) -> Tree {
    let base = |name: &[u8], kind: Kind, inode: u64| Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_000,
        dev: 2049,
        inode,
        nlink: 1,
        size: 0,
        chunks: vec![],
        subtree: None,
        target: None,
        rdev: 0,
        xattrs: vec![],
    };
    let fifo = base(b"fifo", Kind::Fifo, 131_076);
    let mut null = base(b"null", Kind::CharDevice, 131_077);
    null.mode = 0o666;
    null.rdev = 0x103; // makedev(1, 3) on Linux
    let mut file = file_node(object_id, size);
    file.xattrs = vec![
        (
            b"user.xdg.origin.url".to_vec(),
            b"https://example.org/".to_vec(),
        ),
        (b"trusted.md5".to_vec(), vec![0x00, 0xff]),
    ];
    Tree::new(vec![null, file, fifo])
}

/// Every output vector, computed from the inputs in the book.
fn compute(book: &Book) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut put = |name: &'static str, v: String| out.push((name, v));

    // Keys.
    let entropy = Entropy::from_bytes(book.arr("entropy"));
    let keys = entropy.derive();
    let words = entropy.words().to_string();
    assert_eq!(
        Entropy::from_words(&words).unwrap().as_bytes(),
        entropy.as_bytes()
    );
    for (purpose, key) in [
        ("data key", *keys.data),
        ("id key", *keys.id),
        ("node identity", keys.node.to_bytes()),
        ("host obfuscation", *keys.host),
    ] {
        let seed = blake3::derive_key(&format!("pluto v1 {purpose}"), entropy.as_bytes());
        assert_eq!(chacha20_first_32(&seed), key, "{purpose}");
    }
    put("entropy_words", words);
    put("data_key", hex::encode(*keys.data));
    put("id_key", hex::encode(*keys.id));
    put("node_secret_key", hex::encode(keys.node.to_bytes()));
    put("node_id", keys.node_id_hex());
    put("host_key", hex::encode(*keys.host));

    // An object id.
    let plain = book.bytes("object_plaintext");
    let object_id = ObjectId::compute(&keys.id, &plain);
    assert_eq!(
        object_id.0,
        *blake3::keyed_hash(&keys.id, &plain).as_bytes()
    );
    put("object_id", object_id.hex());

    // One sealed object body, checked against a second AES-GCM implementation.
    let seal_key: [u8; 32] = book.arr("seal_key");
    let seal_nonce: [u8; 12] = book.arr("seal_nonce");
    let aad = object_aad(ObjType::Chunk, 0, &object_id);
    let mut sealed = Vec::new();
    SubKey::from_raw(&seal_key).seal_with_nonce(seal_nonce, &aad, &plain, &mut sealed);
    {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let c = aes_gcm::Aes256Gcm::new_from_slice(&seal_key).unwrap();
        let theirs = c
            .encrypt(
                aes_gcm::Nonce::from_slice(&seal_nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(&sealed[12..], &theirs[..]);
        assert_eq!(&sealed[..12], &seal_nonce);
    }
    assert_eq!(
        SubKey::from_raw(&seal_key).open(&aad, &sealed).unwrap(),
        plain
    );
    put("seal_aad", hex::encode(aad));
    put("sealed_object", hex::encode(&sealed));

    // The pack subkey, and a pack holding that one object.
    let pack_salt: [u8; 32] = book.arr("pack_salt");
    let subkey = subkey_bytes(&keys.data, &pack_salt);
    {
        // The library's own derivation gives the same key (it does not expose the bytes).
        let (mut a, mut b) = (Vec::new(), Vec::new());
        SubKey::derive(&keys.data, &pack_salt).seal_with_nonce([3; 12], b"x", b"y", &mut a);
        SubKey::from_raw(&subkey).seal_with_nonce([3; 12], b"x", b"y", &mut b);
        assert_eq!(a, b);
    }
    put("pack_subkey", hex::encode(subkey));
    let (pack_name, pack, entries) = build_pack(
        &keys.data,
        &pack_salt,
        &[VectorObject {
            ty: ObjType::Chunk,
            flags: 0,
            id: object_id,
            stored: &plain,
            plain_len: plain.len() as u32,
            nonce: book.arr("pack_object_nonce"),
        }],
        book.arr("pack_header_nonce"),
    );
    assert_eq!(read_header(&keys.data, "vector", &pack).unwrap(), entries);
    put(
        "pack_header_plain",
        hex::encode(pluto_repo::pack::encode_entries(&entries)),
    );
    put("pack", hex::encode(&pack));
    put("pack_name", pack_name.hex());
    assert_eq!(pack_name.0, *blake3::hash(&pack).as_bytes());

    // The index file plaintext listing that pack (before zstd and sealing).
    let indexed = IndexedPack {
        id: pack_name,
        size: pack.len() as u64,
        entries: entries.clone(),
    };
    let index_plain = encode_index_file(std::slice::from_ref(&indexed));
    let back = decode_index_file(&index_plain, "vector").unwrap();
    assert_eq!(back[0].entries, entries);
    put("index_plain", hex::encode(&index_plain));

    // Trees.
    let empty = Tree::new(vec![]).encode();
    let empty_id = ObjectId::compute(&keys.id, &empty);
    put("empty_tree_postcard", hex::encode(&empty));
    put("empty_tree_id", empty_id.hex());
    let tree = example_tree(object_id, plain.len() as u64, empty_id);
    let tree_bytes = tree.encode();
    let tree_id = ObjectId::compute(&keys.id, &tree_bytes);
    assert_eq!(Tree::decode(&tree_bytes, &tree_id).unwrap(), tree);
    put("tree_postcard", hex::encode(&tree_bytes));
    put("tree_id", tree_id.hex());
    // Version 1 trees (pluto 0.1) still decode, into the same nodes with no rdev or xattrs.
    // Its `sub` points at the version 1 empty tree, `01 00`.
    let v1_empty = ObjectId::compute(&keys.id, &[1, 0]);
    put("empty_tree_v1_id", v1_empty.hex());
    let v1 = book.bytes("tree_v1_postcard");
    let old = Tree::decode(&v1, &tree_id).unwrap();
    assert_eq!(old.version, 1);
    let same = example_tree(object_id, plain.len() as u64, v1_empty);
    assert_eq!(old.nodes, same.nodes);
    // Same entries, version 2 layout: the version byte differs and each node ends in
    // rdev 0 and no xattrs (two zero bytes), so the directory is stored again once.
    let again = Tree::new(old.nodes).encode();
    assert_eq!(again, same.encode());
    assert_eq!(again[0], 2);
    assert_eq!(again.len(), v1.len() + 2 * same.nodes.len());
    let special = special_tree(object_id, plain.len() as u64);
    let special_bytes = special.encode();
    assert_eq!(Tree::decode(&special_bytes, &tree_id).unwrap(), special);
    assert_eq!(special.nodes[1].xattrs[0].0, b"trusted.md5");
    put("special_tree_postcard", hex::encode(&special_bytes));
    put(
        "special_tree_id",
        ObjectId::compute(&keys.id, &special_bytes).hex(),
    );

    // The config file.
    let file_salt: [u8; 32] = book.arr("file_salt");
    let file_nonce: [u8; 12] = book.arr("file_nonce");
    let config = Config {
        version: 1,
        repo_id: "000102030405060708090a0b0c0d0e0f".into(),
        chunker: pluto_repo::chunker::ChunkerParams {
            min: 524_288,
            avg: 1_048_576,
            max: 8_388_608,
        },
        compression_level: 3,
        pack_target_size: 16_777_216,
    };
    let config_json = serde_json::to_string(&config).unwrap();
    let config_file = seal_file_with(
        &keys.data,
        CONFIG_MAGIC,
        &file_salt,
        file_nonce,
        config_json.as_bytes(),
    );
    assert_eq!(
        open_file(&keys.data, CONFIG_MAGIC, "config", "v", &config_file).unwrap(),
        config_json.as_bytes()
    );
    put("config_json", config_json);
    put("config_file", hex::encode(&config_file));

    // A snapshot file.
    let snapshot = Snapshot {
        version: 1,
        time_ns: 1_700_000_100_000_000_000,
        parent: Some(hex::encode([0x11u8; 32])),
        tree: tree_id,
        hostname: "laptop".into(),
        username: "alice".into(),
        paths: vec!["/home/alice/Documents".into()],
        tags: vec!["nightly".into()],
        message: "first".into(),
        stats: SnapshotStats {
            files: 1,
            dirs: 2,
            symlinks: 1,
            fifos: 0,
            devices: 0,
            sockets_skipped: 0,
            bytes: plain.len() as u64,
            files_read: 1,
            bytes_read: plain.len() as u64,
            objects_added: 3,
            bytes_added: (plain.len() + empty.len() + tree_bytes.len()) as u64,
            stored_added: 200,
            unreadable: vec![],
            changed_during_read: vec![],
        },
    };
    let snapshot_json = String::from_utf8(snapshot.encode()).unwrap();
    assert_eq!(
        Snapshot::decode(snapshot_json.as_bytes(), "v").unwrap(),
        snapshot
    );
    let snapshot_file = seal_file_with(
        &keys.data,
        SNAPSHOT_MAGIC,
        &file_salt,
        file_nonce,
        snapshot_json.as_bytes(),
    );
    assert_eq!(
        open_file(&keys.data, SNAPSHOT_MAGIC, "snapshot", "v", &snapshot_file).unwrap(),
        snapshot_json.as_bytes()
    );
    put("snapshot_json", snapshot_json);
    put("snapshot_file", hex::encode(&snapshot_file));
    put("snapshot_name", PackId::of_bytes(&snapshot_file).hex());
    out
}

const INPUTS: &[&str] = &[
    "entropy",
    "object_plaintext",
    "seal_key",
    "seal_nonce",
    "pack_salt",
    "pack_object_nonce",
    "pack_header_nonce",
    "file_salt",
    "file_nonce",
    "tree_v1_postcard",
];

#[test]
fn book_test_vectors_match_the_library() {
    let book = Book::load();
    let computed = compute(&book);
    if std::env::var_os("PLUTO_PRINT_VECTORS").is_some() {
        for (n, v) in &computed {
            println!("{n} = {}", format_value(n, v));
        }
    }
    let mut problems = Vec::new();
    for name in &book.order {
        if !INPUTS.contains(&name.as_str()) && !computed.iter().any(|(n, _)| n == name) {
            problems.push(format!(
                "{name}: the book has it, the test does not check it"
            ));
        }
    }
    for (name, want) in &computed {
        match book.values.get(*name) {
            None => problems.push(format!("{name}: missing from the book")),
            Some(have) if have != want => problems.push(format!(
                "{name}: the book says\n    {have}\nthe library computes\n    {want}"
            )),
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{BOOK} and the library disagree:\n{}\n(run with PLUTO_PRINT_VECTORS=1 --nocapture to print the computed values)",
        problems.join("\n")
    );
}

/// The vector constructors build exactly what the real writers build: take a pack and a
/// sealed file made with random salts and nonces, read those back out, and rebuild.
#[test]
fn vector_constructors_match_the_real_writers() {
    let keys = Entropy::from_bytes([7; 32]).derive();
    let dir = tempfile::tempdir().unwrap();
    let objs: Vec<(ObjType, u8, Vec<u8>)> = vec![
        (ObjType::Chunk, 0, b"first object".to_vec()),
        (ObjType::Tree, 1, vec![0x55; 300]),
        (ObjType::Chunk, 0, Vec::new()),
    ];
    let mut w = PackWriter::create(dir.path(), &keys.data).unwrap();
    for (ty, flags, stored) in &objs {
        let id = ObjectId::compute(&keys.id, stored);
        w.add(*ty, *flags, id, stored, stored.len() as u32 + 7)
            .unwrap();
    }
    let f = w.finish().unwrap();
    let real = std::fs::read(&f.tmp_path).unwrap();
    assert_eq!(&real[..8], PACK_MAGIC);
    let salt: [u8; 32] = real[8..40].try_into().unwrap();
    let nonce_at = |o: usize| -> [u8; 12] { real[o..o + 12].try_into().unwrap() };
    let header_len = u32::from_le_bytes(real[real.len() - 4..].try_into().unwrap()) as usize;
    let header_start = real.len() - 4 - header_len;
    let vobjs: Vec<VectorObject> = objs
        .iter()
        .zip(&f.entries)
        .map(|((ty, flags, stored), e)| VectorObject {
            ty: *ty,
            flags: *flags,
            id: e.id,
            stored,
            plain_len: e.plain_len,
            nonce: nonce_at(e.offset as usize),
        })
        .collect();
    let (id, rebuilt, entries) = build_pack(&keys.data, &salt, &vobjs, nonce_at(header_start));
    assert_eq!(rebuilt, real);
    assert_eq!(id, f.id);
    assert_eq!(entries, f.entries);

    for magic in [CONFIG_MAGIC, INDEX_MAGIC, SNAPSHOT_MAGIC] {
        let real = seal_file(&keys.data, magic, b"{\"some\":\"json\"}");
        let salt: [u8; 32] = real[8..40].try_into().unwrap();
        let nonce: [u8; 12] = real[40..52].try_into().unwrap();
        assert_eq!(
            seal_file_with(&keys.data, magic, &salt, nonce, b"{\"some\":\"json\"}"),
            real
        );
    }
}

#[test]
fn the_book_parser_reads_continuations_and_refuses_junk() {
    let text =
        "x\n```vectors\n# c\na = 00ff\n    11\nb_words = one\n  two\n```\n```text\nc = 1\n```\n";
    let p = parse_book(text).unwrap();
    assert_eq!(
        p,
        vec![
            ("a".to_string(), "00ff11".to_string()),
            ("b_words".to_string(), "one two".to_string())
        ]
    );
    assert!(parse_book("```vectors\nnonsense\n```\n").is_err());
    assert!(parse_book("```vectors\na = 00\na = 11\n```\n").is_err());
    assert!(parse_book("```vectors\na = 00\n").is_err());
}
