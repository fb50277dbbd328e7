//! `ls`: the entries of a directory in a snapshot, or of the whole tree.

use crate::crypto::ObjectId;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::tree::{Kind, Node};

/// One entry and its path inside the snapshot ("docs/a.txt").
#[derive(Clone, Debug)]
pub struct Listed {
    pub path: String,
    pub node: Node,
}

fn join(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir.is_empty() {
        name.into_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// List `path` (a directory: its entries; a file or link: itself; empty: the root) in the
/// tree `root`, descending into subdirectories when `recursive`. Entries come depth first,
/// sorted by name, as `ls -R` would show them.
pub fn list(
    repo: &Repository,
    root: &ObjectId,
    snapshot: &str,
    path: &str,
    recursive: bool,
) -> Result<Vec<Listed>> {
    let comps = components(path);
    let mut out = Vec::new();
    if comps.is_empty() {
        walk(repo, Some(*root), "", recursive, &mut out)?;
        return Ok(out);
    }
    let not_found = || Error::PathNotInSnapshot {
        path: path.to_string(),
        snapshot: snapshot[..8.min(snapshot.len())].to_string(),
    };
    let node = crate::restore::lookup(repo, root, path)?.ok_or_else(not_found)?;
    let at = comps.join("/");
    if node.kind == Kind::Dir {
        walk(repo, node.subtree, &at, recursive, &mut out)?;
    } else {
        out.push(Listed { path: at, node });
    }
    Ok(out)
}

fn walk(
    repo: &Repository,
    tree: Option<ObjectId>,
    at: &str,
    recursive: bool,
    out: &mut Vec<Listed>,
) -> Result<()> {
    let Some(t) = tree else { return Ok(()) };
    for n in repo.read_tree(&t)?.nodes {
        let path = join(at, &n.name);
        let sub = (n.kind == Kind::Dir).then_some(n.subtree).flatten();
        out.push(Listed {
            path: path.clone(),
            node: n,
        });
        if recursive {
            walk(repo, sub, &path, recursive, out)?;
        }
    }
    Ok(())
}

/// `ls -l` style permission string: "drwxr-xr-x", "lrwxrwxrwx", "-rw-r--r--".
pub fn mode_string(kind: Kind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::File => '-',
        Kind::Fifo => 'p',
        Kind::CharDevice => 'c',
        Kind::BlockDevice => 'b',
    });
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        let set = mode & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::CharDevice => "chardev",
        Kind::BlockDevice => "blockdev",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_read_like_ls() {
        assert_eq!(mode_string(Kind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(Kind::File, 0o640), "-rw-r-----");
        assert_eq!(mode_string(Kind::Symlink, 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string(Kind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(Kind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(Kind::File, 0o2640), "-rw-r-S---");
        assert_eq!(mode_string(Kind::Fifo, 0o644), "prw-r--r--");
        assert_eq!(mode_string(Kind::CharDevice, 0o666), "crw-rw-rw-");
        assert_eq!(mode_string(Kind::BlockDevice, 0o660), "brw-rw----");
    }
}
