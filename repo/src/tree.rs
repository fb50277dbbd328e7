//! Tree objects: one directory, its entries sorted by name, encoded with postcard.
//! Names and link targets are raw bytes: any Unix name survives (spaces, newlines,
//! invalid UTF-8).
//!
//! Version 2 added FIFOs and device nodes (`Kind::Fifo`, `CharDevice`, `BlockDevice`),
//! `rdev` and extended attributes. Version 1 trees, written before, still decode: into the
//! same [`Tree`], with `rdev` 0 and no xattrs.

use crate::crypto::ObjectId;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const TREE_VERSION: u8 = 2;

/// An entry's type. New variants go at the end: the index is the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A named pipe (version 2).
    Fifo,
    /// A character device node; `rdev` says which (version 2).
    CharDevice,
    /// A block device node; `rdev` says which (version 2).
    BlockDevice,
}

impl Kind {
    pub fn is_device(self) -> bool {
        matches!(self, Kind::CharDevice | Kind::BlockDevice)
    }
}

/// One extended attribute: (name with its namespace, e.g. `user.mime_type`; value).
pub type Xattr = (Vec<u8>, Vec<u8>);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (the low 12 bits of st_mode).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    /// Change time, device and inode: only for change detection, never restored.
    pub ctime_ns: i64,
    pub dev: u64,
    pub inode: u64,
    /// Link count; files with more than one are restored as hard links of each other.
    pub nlink: u64,
    pub size: u64,
    /// File content, in order.
    pub chunks: Vec<ObjectId>,
    /// Directory content.
    pub subtree: Option<ObjectId>,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// Device number (st_rdev) of a `CharDevice` or `BlockDevice`; 0 for every other kind.
    pub rdev: u64,
    /// Extended attributes, sorted by name, names unique.
    pub xattrs: Vec<Xattr>,
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Same file as before, by the metadata a change would disturb.
    pub fn unchanged_since(&self, old: &Node) -> bool {
        self.kind == old.kind
            && self.size == old.size
            && self.mtime_ns == old.mtime_ns
            && self.ctime_ns == old.ctime_ns
            && self.inode == old.inode
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub version: u8,
    pub nodes: Vec<Node>,
}

/// The version 1 layout, decoded only to read trees written before version 2.
mod v1 {
    use super::ObjectId;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub enum Kind {
        File,
        Dir,
        Symlink,
    }

    #[derive(Deserialize)]
    pub struct Node {
        pub name: Vec<u8>,
        pub kind: Kind,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub mtime_ns: i64,
        pub ctime_ns: i64,
        pub dev: u64,
        pub inode: u64,
        pub nlink: u64,
        pub size: u64,
        pub chunks: Vec<ObjectId>,
        pub subtree: Option<ObjectId>,
        pub target: Option<Vec<u8>>,
    }

    #[derive(Deserialize)]
    pub struct Tree {
        pub version: u8,
        pub nodes: Vec<Node>,
    }

    impl From<Node> for super::Node {
        fn from(n: Node) -> super::Node {
            super::Node {
                name: n.name,
                kind: match n.kind {
                    Kind::File => super::Kind::File,
                    Kind::Dir => super::Kind::Dir,
                    Kind::Symlink => super::Kind::Symlink,
                },
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                mtime_ns: n.mtime_ns,
                ctime_ns: n.ctime_ns,
                dev: n.dev,
                inode: n.inode,
                nlink: n.nlink,
                size: n.size,
                chunks: n.chunks,
                subtree: n.subtree,
                target: n.target,
                rdev: 0,
                xattrs: Vec::new(),
            }
        }
    }
}

/// Decode all of `bytes` as one `T`: trailing bytes would make two encodings of one tree.
fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8], id: &ObjectId) -> Result<T> {
    let (t, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| Error::corrupt("tree", id.hex(), format!("does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(
            "tree",
            id.hex(),
            format!("{} bytes after the end of the tree", rest.len()),
        ));
    }
    Ok(t)
}

impl Tree {
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        // Canonical: the same attributes in any order give the same bytes.
        for n in &mut nodes {
            n.xattrs.sort();
        }
        Tree {
            version: TREE_VERSION,
            nodes,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("trees always serialize")
    }

    pub fn decode(bytes: &[u8], id: &ObjectId) -> Result<Tree> {
        // The version byte comes first and says how to read the rest.
        let t = match bytes.first() {
            Some(1) => {
                let old: v1::Tree = decode_exact(bytes, id)?;
                Tree {
                    version: old.version,
                    nodes: old.nodes.into_iter().map(Node::from).collect(),
                }
            }
            Some(&TREE_VERSION) => decode_exact::<Tree>(bytes, id)?,
            Some(v) => {
                return Err(Error::corrupt(
                    "tree",
                    id.hex(),
                    format!("unknown tree version {v} (this pluto reads versions 1 and 2: a newer pluto wrote it?)"),
                ))
            }
            None => return Err(Error::corrupt("tree", id.hex(), "empty")),
        };
        // Lookups binary-search by name: an unsorted or duplicated name would hide entries.
        if t.nodes.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(Error::corrupt(
                "tree",
                id.hex(),
                "entries are not sorted by name, or a name repeats",
            ));
        }
        for n in &t.nodes {
            if n.name.is_empty()
                || n.name == b"."
                || n.name == b".."
                || n.name.contains(&b'/')
                || n.name.contains(&0)
            {
                return Err(Error::corrupt(
                    "tree",
                    id.hex(),
                    format!("unsafe entry name {:?}", n.name_lossy()),
                ));
            }
            // setxattr takes C strings, and a repeated name would be restored ambiguously.
            if n.xattrs.iter().any(|(k, _)| k.is_empty() || k.contains(&0))
                || n.xattrs.windows(2).any(|w| w[0].0 >= w[1].0)
            {
                return Err(Error::corrupt(
                    "tree",
                    id.hex(),
                    format!(
                        "entry {:?}: extended attribute names empty, unsorted or repeated",
                        n.name_lossy()
                    ),
                ));
            }
        }
        Ok(t)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 1,
            gid: 1,
            mtime_ns: 5,
            ctime_ns: 6,
            dev: 1,
            inode: 2,
            nlink: 1,
            size: 0,
            chunks: vec![],
            subtree: None,
            target: None,
            rdev: 0,
            xattrs: vec![],
        }
    }

    #[test]
    fn trees_round_trip_and_are_sorted() {
        let t = Tree::new(vec![node(b"b\nc"), node(b"a b"), node("ü".as_bytes())]);
        let back = Tree::decode(&t.encode(), &ObjectId([0; 32])).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.nodes[0].name, b"a b");
        assert!(back.find(b"b\nc").is_some());
    }

    #[test]
    fn unsorted_or_duplicate_entries_are_refused() {
        let mut t = Tree::new(vec![node(b"a"), node(b"b")]);
        t.nodes.swap(0, 1);
        assert!(Tree::decode(&t.encode(), &ObjectId([0; 32])).is_err());
        let t = Tree::new(vec![node(b"a"), node(b"a")]);
        assert!(Tree::decode(&t.encode(), &ObjectId([0; 32])).is_err());
    }

    #[test]
    fn path_traversal_names_are_refused() {
        for bad in [&b".."[..], b"a/b", b""] {
            let t = Tree::new(vec![node(bad)]);
            assert!(Tree::decode(&t.encode(), &ObjectId([0; 32])).is_err());
        }
    }

    /// A version 1 tree, as pluto 0.1 wrote it: its exact bytes.
    fn v1_bytes() -> Vec<u8> {
        // version 1, one node: name "a", File, mode 0o644, uid 1, gid 1, mtime 5 and
        // ctime 6 (zigzag), dev 1, inode 2, nlink 1, size 0, no chunks, subtree, target
        vec![
            1, 1, 1, b'a', 0, 0xa4, 0x03, 1, 1, 10, 12, 1, 2, 1, 0, 0, 0, 0,
        ]
    }

    #[test]
    fn version_1_trees_decode_with_empty_new_fields() {
        let t = Tree::decode(&v1_bytes(), &ObjectId([0; 32])).unwrap();
        assert_eq!(t.version, 1);
        assert_eq!(t.nodes, vec![node(b"a")]);
        // Re-encoded, the same directory is a version 2 tree.
        let again = Tree::new(t.nodes).encode();
        assert_eq!(again[0], 2);
        assert_eq!(&again[1..], &[&v1_bytes()[1..], &[0, 0][..]].concat()[..]);
    }

    #[test]
    fn other_versions_and_trailing_bytes_are_refused() {
        let mut b = Tree::new(vec![node(b"a")]).encode();
        b.push(0);
        let e = Tree::decode(&b, &ObjectId([0; 32])).unwrap_err();
        assert!(e.to_string().contains("after the end"), "{e}");
        let mut b = Tree::new(vec![]).encode();
        b[0] = 3;
        let e = Tree::decode(&b, &ObjectId([0; 32])).unwrap_err();
        assert!(e.to_string().contains("unknown tree version 3"), "{e}");
        // A version 1 tree cannot hold the new kinds.
        let mut b = v1_bytes();
        b[4] = 3;
        assert!(Tree::decode(&b, &ObjectId([0; 32])).is_err());
    }

    #[test]
    fn special_files_and_xattrs_round_trip_sorted() {
        let mut fifo = node(b"p");
        fifo.kind = Kind::Fifo;
        let mut dev = node(b"null");
        dev.kind = Kind::CharDevice;
        dev.rdev = libc::makedev(1, 3);
        dev.xattrs = vec![
            (b"user.z".to_vec(), vec![]),
            (b"trusted.a".to_vec(), b"\0x".to_vec()),
        ];
        let t = Tree::new(vec![fifo, dev]);
        assert_eq!(t.nodes[0].xattrs[0].0, b"trusted.a");
        let back = Tree::decode(&t.encode(), &ObjectId([0; 32])).unwrap();
        assert_eq!(back, t);
        let mut bad = t.clone();
        bad.nodes[0].xattrs.swap(0, 1);
        assert!(Tree::decode(&bad.encode(), &ObjectId([0; 32])).is_err());
        bad.nodes[0].xattrs = vec![(b"a\0b".to_vec(), vec![])];
        assert!(Tree::decode(&bad.encode(), &ObjectId([0; 32])).is_err());
    }
}
