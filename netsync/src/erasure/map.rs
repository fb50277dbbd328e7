//! [`ShareMap`]: which shares make which pack, on which host — kept in the owner's
//! encrypted index.
//!
//! Encoding (`ShareMap::to_bytes`): `"PLSM"` | version u8 = 1 | postcard of
//!
//! ```text
//! groups: Vec<ShareGroup>                        varint count, then each group:
//!   scheme: Scheme       varint variant: 0 = Erasure { k: u8, n: u8 }, 1 = Copies(u8)
//!   packs: Vec<PackRef>  varint count, then each: id [32 bytes], len varint u64
//!   shard_size: u64      varint (0 for copies)
//!   shares: Vec<ShareRef> varint count, then each:
//!     index: u8, id [32 bytes], len varint u64, hosts: Vec<[32 bytes]> (varint count)
//! ```
//!
//! Invariants, checked on every decode and insert: an erasure group lists its n shares in
//! index order with the lengths its header implies; a copies group holds exactly one pack
//! and one "share" which is the pack itself (same name and length) with its hosts; a pack
//! appears in one group only; a host holds at most one share of a group (n distinct hosts).

use std::collections::HashMap;
use std::fmt;

use pluto_repo::pack::PackId;
use serde::{Deserialize, Serialize};

use super::scheme::Scheme;
use super::share::{
    shard_size_for, PackRef, Share, ShareId, FIXED_HEADER_LEN, MAX_PACKS_PER_GROUP, PACK_ENTRY_LEN,
};

/// First bytes of an encoded share map.
pub const MAP_MAGIC: &[u8; 4] = b"PLSM";
/// Version of the share-map encoding.
pub const MAP_VERSION: u8 = 1;

/// A host: the node's Ed25519 public key (the same 32 bytes as the wire's `NodeId`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostId(pub [u8; 32]);

impl fmt::Debug for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostId({})", &hex::encode(self.0)[..12])
    }
}

/// Why a share map (or a change to it) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("share map is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported share map version {0} (this build reads {MAP_VERSION})")]
    UnsupportedVersion(u8),
    #[error("invalid share group: {0}")]
    BadGroup(String),
    #[error("pack {0} is already in the share map")]
    DuplicatePack(PackId),
    #[error("share {0} is already in the share map")]
    DuplicateShare(ShareId),
    #[error("no share {0} in the share map")]
    UnknownShare(ShareId),
    #[error("cannot rebuild: only {have} usable pieces of the {need} needed")]
    NotRestorable { have: usize, need: usize },
    #[error("share index {index} is out of range for this group")]
    BadIndex { index: u8 },
    #[error("host {host:?} already holds share {index} of this group: the n shares go to n distinct hosts")]
    HostHoldsGroup { host: HostId, index: u8 },
}

/// One share of a group: its index, name, length and the hosts that hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRef {
    pub index: u8,
    pub id: ShareId,
    pub len: u64,
    pub hosts: Vec<HostId>,
}

/// Packs encoded together and where their shares are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareGroup {
    pub scheme: Scheme,
    /// In the order they are concatenated.
    pub packs: Vec<PackRef>,
    /// 0 for copies.
    pub shard_size: u64,
    /// Erasure: the n shares in index order. Copies: one entry, the pack itself.
    pub shares: Vec<ShareRef>,
}

/// How many pieces of a group stand, counted with a caller's idea of which hosts count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Shares (erasure) or copies (copies) on a counted host.
    pub standing: usize,
    /// Needed to restore.
    pub needed: usize,
    /// Wanted.
    pub target: usize,
    /// Erasure: indexes of shares on no counted host. Copies: empty.
    pub lost: Vec<u8>,
}

impl Health {
    /// Whether the packs can be restored.
    pub fn restorable(&self) -> bool {
        self.standing >= self.needed
    }
    /// Whether a repair is due.
    pub fn needs_repair(&self) -> bool {
        self.standing < self.target
    }
}

/// How to rebuild one lost piece of a group without its owner: fetch `sources` (each
/// share from the host given; on a bad or missing share, take the next of `spares`),
/// rebuild share `index` with [`super::Decoder::for_group`], check it is `expected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPlan {
    pub index: u8,
    pub expected: ShareId,
    pub len: u64,
    /// `k` pieces: (share index, name, host) — data shares first, then by rank.
    pub sources: Vec<(u8, ShareId, HostId)>,
    /// Further usable pieces, best first.
    pub spares: Vec<(u8, ShareId, HostId)>,
}

impl ShareGroup {
    /// Whether `host` holds any piece of this group (a new host for a repair must not).
    pub fn holds(&self, host: &HostId) -> bool {
        self.hosts().any(|h| h == host)
    }

    /// Plans the rebuild of piece `index` from the others. `rank` scores a host that may be
    /// used as a source (online, not excluded; higher is better), `None` for one that may
    /// not. For copies, one source (the pack from the best holder) is enough.
    pub fn repair_plan(
        &self,
        index: u8,
        mut rank: impl FnMut(&HostId) -> Option<f64>,
    ) -> Result<RepairPlan, MapError> {
        let target = self
            .shares
            .get(usize::from(index))
            .ok_or(MapError::BadIndex { index })?;
        let k = usize::from(self.scheme.k());
        // Best usable host per piece; for copies every holder is a candidate of piece 0.
        let mut cands: Vec<(bool, f64, u8, ShareId, HostId)> = Vec::new();
        for s in &self.shares {
            let copies = matches!(self.scheme, Scheme::Copies(_));
            if s.index == index && !copies {
                continue;
            }
            let mut best: Option<(f64, HostId)> = None;
            for h in &s.hosts {
                if let Some(r) = rank(h) {
                    if copies {
                        cands.push((false, r, s.index, s.id, *h));
                    } else if !matches!(best, Some((b, _)) if b >= r) {
                        best = Some((r, *h));
                    }
                }
            }
            if let Some((r, h)) = best {
                cands.push((s.index >= self.scheme.k(), r, s.index, s.id, h));
            }
        }
        if cands.len() < k {
            return Err(MapError::NotRestorable {
                have: cands.len(),
                need: k,
            });
        }
        cands.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal))
        });
        let mut all: Vec<(u8, ShareId, HostId)> = cands
            .into_iter()
            .map(|(_, _, i, id, h)| (i, id, h))
            .collect();
        let spares = all.split_off(k);
        Ok(RepairPlan {
            index,
            expected: target.id,
            len: target.len,
            sources: all,
            spares,
        })
    }

    /// The group made by [`super::encode`]: `shares` must be all n shares of one group, in
    /// any order. No host yet.
    pub fn from_shares(shares: &[Share]) -> Result<ShareGroup, MapError> {
        let first = shares
            .first()
            .ok_or_else(|| MapError::BadGroup("no shares".into()))?;
        let h = first.header();
        let n = usize::from(h.params.n());
        let mut refs: Vec<Option<ShareRef>> = vec![None; n];
        for s in shares {
            if !s.header().same_group(h) {
                return Err(MapError::BadGroup(format!(
                    "share {} is from another group",
                    s.id()
                )));
            }
            let slot = &mut refs[usize::from(s.index())];
            if slot.is_some() {
                return Err(MapError::BadGroup(format!(
                    "share index {} given twice",
                    s.index()
                )));
            }
            *slot = Some(ShareRef {
                index: s.index(),
                id: s.id(),
                len: s.len() as u64,
                hosts: Vec::new(),
            });
        }
        let shares = refs
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.ok_or_else(|| MapError::BadGroup(format!("share index {i} missing"))))
            .collect::<Result<Vec<_>, _>>()?;
        let g = ShareGroup {
            scheme: Scheme::Erasure(h.params),
            packs: h.packs.clone(),
            shard_size: h.shard_size,
            shares,
        };
        g.validate()?;
        Ok(g)
    }

    /// A pack kept as `copies` full copies (scheme `copies:c`). No host yet.
    pub fn copies(copies: u8, pack: PackId, len: u64) -> Result<ShareGroup, MapError> {
        let scheme = Scheme::copies(copies).map_err(|e| MapError::BadGroup(e.to_string()))?;
        let g = ShareGroup {
            scheme,
            packs: vec![PackRef { id: pack, len }],
            shard_size: 0,
            shares: vec![ShareRef {
                index: 0,
                id: ShareId(pack.0),
                len,
                hosts: Vec::new(),
            }],
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks the invariants listed in the module documentation.
    pub fn validate(&self) -> Result<(), MapError> {
        let bad = |m: String| Err(MapError::BadGroup(m));
        if self.packs.is_empty() || self.packs.len() > MAX_PACKS_PER_GROUP {
            return bad(format!("{} packs", self.packs.len()));
        }
        if self.packs.iter().any(|p| p.len == 0) {
            return bad("a pack of length 0".into());
        }
        let mut ids: Vec<PackId> = self.packs.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return bad("a pack listed twice".into());
        }
        let total = self
            .packs
            .iter()
            .try_fold(0u64, |a, p| a.checked_add(p.len));
        let Some(total) = total else {
            return bad("pack lengths overflow".into());
        };
        match self.scheme {
            Scheme::Erasure(p) => {
                if self.shard_size != shard_size_for(total, p.k()) {
                    return bad(format!(
                        "shard size {} does not match {total} bytes in {} shards",
                        self.shard_size,
                        p.k()
                    ));
                }
                if self.shares.len() != usize::from(p.n()) {
                    return bad(format!(
                        "{} shares listed for n = {}",
                        self.shares.len(),
                        p.n()
                    ));
                }
                let share_len =
                    (FIXED_HEADER_LEN + PACK_ENTRY_LEN * self.packs.len()) as u64 + self.shard_size;
                for (i, s) in self.shares.iter().enumerate() {
                    if usize::from(s.index) != i {
                        return bad(format!("share at position {i} has index {}", s.index));
                    }
                    if s.len != share_len {
                        return bad(format!(
                            "share {i} has length {}, expected {share_len}",
                            s.len
                        ));
                    }
                }
                let mut seen: Vec<HostId> = self
                    .shares
                    .iter()
                    .flat_map(|s| s.hosts.iter().copied())
                    .collect();
                seen.sort_unstable();
                if seen.windows(2).any(|w| w[0] == w[1]) {
                    return bad("a host holds two shares of one group (or one share twice)".into());
                }
            }
            Scheme::Copies(_) => {
                if self.packs.len() != 1 || self.shares.len() != 1 || self.shard_size != 0 {
                    return bad("a copies group holds exactly one pack".into());
                }
                let (p, s) = (&self.packs[0], &self.shares[0]);
                if s.index != 0 || s.id.0 != p.id.0 || s.len != p.len {
                    return bad("a copy must be the pack itself".into());
                }
                let mut hosts = s.hosts.clone();
                hosts.sort_unstable();
                if hosts.windows(2).any(|w| w[0] == w[1]) {
                    return bad("a host listed twice for one copy".into());
                }
            }
        }
        Ok(())
    }

    /// Sum of the packs' lengths.
    pub fn original_len(&self) -> u64 {
        self.packs.iter().map(|p| p.len).sum()
    }

    /// Every host holding a piece of this group.
    pub fn hosts(&self) -> impl Iterator<Item = &HostId> {
        self.shares.iter().flat_map(|s| s.hosts.iter())
    }

    /// Where pack `pack`'s bytes lie in the data shares: `(share index, offset in the
    /// share's bytes, length)` — so a single pack can be fetched with range reads from up
    /// to ⌈len / shard_size⌉ + 1 data-share hosts, without decoding, when they are online.
    pub fn pack_ranges(&self, pack: &PackId) -> Option<Vec<(u8, u64, u64)>> {
        let mut start = 0u64;
        let p = self.packs.iter().find(|p| {
            if &p.id == pack {
                return true;
            }
            start += p.len;
            false
        })?;
        if let Scheme::Copies(_) = self.scheme {
            return Some(vec![(0, 0, p.len)]);
        }
        let header_len = (FIXED_HEADER_LEN + PACK_ENTRY_LEN * self.packs.len()) as u64;
        let mut out = Vec::new();
        let (mut pos, end) = (start, start + p.len);
        while pos < end {
            let index = pos / self.shard_size;
            let off = pos % self.shard_size;
            let len = (self.shard_size - off).min(end - pos);
            out.push((index as u8, header_len + off, len));
            pos += len;
        }
        Some(out)
    }

    /// Counts standing pieces, a piece standing if one of its hosts passes `counts` (for
    /// example: not excluded, not announced gone, not absent past the grace period).
    pub fn health(&self, mut counts: impl FnMut(&HostId) -> bool) -> Health {
        match self.scheme {
            Scheme::Erasure(p) => {
                let mut lost = Vec::new();
                let mut standing = 0;
                for s in &self.shares {
                    if s.hosts.iter().any(&mut counts) {
                        standing += 1;
                    } else {
                        lost.push(s.index);
                    }
                }
                Health {
                    standing,
                    needed: usize::from(p.k()),
                    target: usize::from(p.n()),
                    lost,
                }
            }
            Scheme::Copies(c) => {
                let standing = self.shares[0].hosts.iter().filter(|h| counts(h)).count();
                Health {
                    standing,
                    needed: 1,
                    target: usize::from(c),
                    lost: Vec::new(),
                }
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Repr {
    groups: Vec<ShareGroup>,
}

/// The owner's record of its groups. Look-ups by pack and by share name are indexed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareMap {
    groups: Vec<ShareGroup>,
    by_pack: HashMap<PackId, usize>,
    by_share: HashMap<ShareId, (usize, usize)>,
}

impl ShareMap {
    pub fn new() -> Self {
        ShareMap::default()
    }

    pub fn groups(&self) -> &[ShareGroup] {
        &self.groups
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds a group after checking it and that none of its packs or shares is mapped yet.
    pub fn insert(&mut self, group: ShareGroup) -> Result<(), MapError> {
        group.validate()?;
        let gi = self.groups.len();
        for p in &group.packs {
            if self.by_pack.contains_key(&p.id) {
                return Err(MapError::DuplicatePack(p.id));
            }
        }
        for s in &group.shares {
            if self.by_share.contains_key(&s.id) {
                return Err(MapError::DuplicateShare(s.id));
            }
        }
        for p in &group.packs {
            self.by_pack.insert(p.id, gi);
        }
        for (si, s) in group.shares.iter().enumerate() {
            self.by_share.insert(s.id, (gi, si));
        }
        self.groups.push(group);
        Ok(())
    }

    /// The group holding `pack`.
    pub fn group_of(&self, pack: &PackId) -> Option<&ShareGroup> {
        self.by_pack.get(pack).map(|&g| &self.groups[g])
    }

    /// The group and the entry of share `id`.
    pub fn share(&self, id: &ShareId) -> Option<(&ShareGroup, &ShareRef)> {
        self.by_share
            .get(id)
            .map(|&(g, s)| (&self.groups[g], &self.groups[g].shares[s]))
    }

    /// Records that `host` holds share `id` (a host confirmed it stored it).
    pub fn place(&mut self, id: &ShareId, host: HostId) -> Result<(), MapError> {
        let &(g, s) = self.by_share.get(id).ok_or(MapError::UnknownShare(*id))?;
        let group = &mut self.groups[g];
        if group.shares[s].hosts.contains(&host) {
            return Ok(());
        }
        if let Some(other) = group.shares.iter().find(|r| r.hosts.contains(&host)) {
            return Err(MapError::HostHoldsGroup {
                host,
                index: other.index,
            });
        }
        group.shares[s].hosts.push(host);
        Ok(())
    }

    /// Forgets that `host` holds share `id` (lost, moved, or the host left).
    pub fn unplace(&mut self, id: &ShareId, host: &HostId) -> Result<(), MapError> {
        let &(g, s) = self.by_share.get(id).ok_or(MapError::UnknownShare(*id))?;
        self.groups[g].shares[s].hosts.retain(|h| h != host);
        Ok(())
    }

    /// Removes `host` everywhere; returns the shares it held.
    pub fn remove_host(&mut self, host: &HostId) -> Vec<ShareId> {
        let mut out = Vec::new();
        for g in &mut self.groups {
            for s in &mut g.shares {
                let before = s.hosts.len();
                s.hosts.retain(|h| h != host);
                if s.hosts.len() != before {
                    out.push(s.id);
                }
            }
        }
        out
    }

    /// Shares held by `host`, with their length (what a challenge draws from).
    pub fn shares_on(&self, host: &HostId) -> Vec<(ShareId, u64)> {
        self.groups
            .iter()
            .flat_map(|g| g.shares.iter())
            .filter(|s| s.hosts.contains(host))
            .map(|s| (s.id, s.len))
            .collect()
    }

    /// Groups that need a repair, with their health.
    pub fn needing_repair(&self, mut counts: impl FnMut(&HostId) -> bool) -> Vec<(usize, Health)> {
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| (i, g.health(&mut counts)))
            .filter(|(_, h)| h.needs_repair())
            .collect()
    }

    /// `"PLSM"` | version | postcard (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.groups.len() * 400);
        out.extend_from_slice(MAP_MAGIC);
        out.push(MAP_VERSION);
        #[derive(Serialize)]
        struct ReprRef<'a> {
            groups: &'a [ShareGroup],
        }
        let body = postcard::to_stdvec(&ReprRef {
            groups: &self.groups,
        })
        .expect("postcard to a Vec cannot fail");
        out.extend_from_slice(&body);
        out
    }

    /// Decodes and checks a share map. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<ShareMap, MapError> {
        if bytes.len() < 5 || &bytes[..4] != MAP_MAGIC {
            return Err(MapError::Corrupt("bad magic (expected \"PLSM\")".into()));
        }
        if bytes[4] != MAP_VERSION {
            return Err(MapError::UnsupportedVersion(bytes[4]));
        }
        let (repr, rest): (Repr, &[u8]) =
            postcard::take_from_bytes(&bytes[5..]).map_err(|e| MapError::Corrupt(e.to_string()))?;
        if !rest.is_empty() {
            return Err(MapError::Corrupt(format!("{} trailing bytes", rest.len())));
        }
        let mut map = ShareMap::new();
        for g in repr.groups {
            map.insert(g)?;
        }
        Ok(map)
    }
}

/// Splits packs (name and length, in order) into consecutive groups of at most
/// `target` bytes and [`MAX_PACKS_PER_GROUP`] packs; a pack of `target` bytes or more is a
/// group alone. Returns index ranges into `packs`.
pub fn plan_groups(packs: &[(PackId, u64)], target: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0usize, 0u64);
    for (i, (_, len)) in packs.iter().enumerate() {
        let full = i > start && (size + len > target || i - start >= MAX_PACKS_PER_GROUP);
        if full {
            out.push(start..i);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < packs.len() {
        out.push(start..packs.len());
    }
    out
}
