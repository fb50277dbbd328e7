//! Tree objects: one directory, its entries sorted by name, encoded with postcard.
//! Names and link targets are raw bytes: any Unix name survives (spaces, newlines,
//! invalid UTF-8).

use crate::crypto::ObjectId;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const TREE_VERSION: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

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

impl Tree {
    pub fn new(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Tree {
            version: TREE_VERSION,
            nodes,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("trees always serialize")
    }

    pub fn decode(bytes: &[u8], id: &ObjectId) -> Result<Tree> {
        let t: Tree = postcard::from_bytes(bytes)
            .map_err(|e| Error::corrupt("tree", id.hex(), format!("does not decode: {e}")))?;
        if t.version != TREE_VERSION {
            return Err(Error::corrupt(
                "tree",
                id.hex(),
                format!("unknown tree version {}", t.version),
            ));
        }
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
}
