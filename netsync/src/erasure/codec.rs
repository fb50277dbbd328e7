//! Encoding packs into shares, decoding them back, and rebuilding a lost share.
//!
//! Reed–Solomon runs over stripes of [`STRIPE`] bytes of every shard at a time (the
//! output is byte-for-byte the same as coding whole shards, since reed-solomon-simd
//! codes each 64-byte block on its own; the stripes keep the working set in cache, ~2–3×
//! faster on 16 MiB shards).

use std::borrow::Cow;
use std::collections::BTreeMap;

use pluto_repo::pack::PackId;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use super::map::ShareGroup;
use super::scheme::Params;
use super::share::{
    shard_size_for, PackRef, Share, ShareError, ShareHeader, ShareId, FIXED_HEADER_LEN,
    MAX_GROUP_BYTES, MAX_PACKS_PER_GROUP, PACK_ENTRY_LEN,
};

/// The k data shards of a group: borrowed from the shares in, or restored.
type DataShards<'a> = Vec<Cow<'a, [u8]>>;

/// Bytes of each shard coded at once (a multiple of 64).
pub const STRIPE: usize = 64 * 1024;

/// Errors of encoding, decoding and rebuilding a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    #[error("nothing to encode: no packs given")]
    NoPacks,
    #[error("cannot encode {0} packs in one group (at most {MAX_PACKS_PER_GROUP})")]
    TooManyPacks(usize),
    #[error("cannot encode an empty pack")]
    EmptyPack,
    #[error("pack {0} is given twice")]
    DuplicatePack(PackId),
    #[error("group of {0} bytes is larger than the {MAX_GROUP_BYTES}-byte limit")]
    GroupTooLarge(u64),
    #[error("share {id} rejected: {error}")]
    Rejected { id: ShareId, error: ShareError },
    #[error("share {id} belongs to another group than the shares before it (or than the share map says)")]
    WrongGroup { id: ShareId },
    #[error("share index {index} is {id}, but the share map names {expected} for it")]
    UnexpectedShare {
        index: u8,
        id: ShareId,
        expected: ShareId,
    },
    #[error("not enough good shares: have {have} of the {need} needed{}", rejected_list(.rejected))]
    NotEnoughShares {
        have: usize,
        need: usize,
        rejected: Vec<(ShareId, String)>,
    },
    #[error("share index {index} is out of range for n = {n}")]
    BadIndex { index: u8, n: u8 },
    #[error("rebuilt pack {pack} is corrupt: its bytes hash to {actual}")]
    PackMismatch { pack: PackId, actual: PackId },
    #[error("rebuilt share {index} hashes to {actual}, expected {expected}")]
    RebuiltMismatch {
        index: u8,
        expected: ShareId,
        actual: ShareId,
    },
    #[error("Reed–Solomon codec: {0}")]
    Codec(String),
}

fn rejected_list(r: &[(ShareId, String)]) -> String {
    if r.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = r.iter().map(|(id, e)| format!("{id:?}: {e}")).collect();
    format!(" (rejected: {})", parts.join("; "))
}

fn codec(e: reed_solomon_simd::Error) -> ErasureError {
    ErasureError::Codec(e.to_string())
}

/// Calls `f` on each piece of the logical byte range `[start, start + len)` of the
/// concatenation of `parts`.
fn for_each_piece<'a, F: FnMut(&'a [u8])>(
    parts: &[&'a [u8]],
    mut start: u64,
    mut len: u64,
    mut f: F,
) {
    for p in parts {
        if len == 0 {
            return;
        }
        let plen = p.len() as u64;
        if start >= plen {
            start -= plen;
            continue;
        }
        let take = (plen - start).min(len);
        f(&p[start as usize..(start + take) as usize]);
        len -= take;
        start = 0;
    }
}

/// Reed–Solomon parity for `originals` (k equal-length shards), appended to `outs`
/// (n − k buffers).
fn encode_parity(
    k: usize,
    m: usize,
    originals: &[&[u8]],
    outs: &mut [Vec<u8>],
) -> Result<(), ErasureError> {
    let size = originals[0].len();
    let mut enc: Option<ReedSolomonEncoder> = None;
    let mut off = 0;
    while off < size {
        let len = STRIPE.min(size - off);
        let e = match enc.as_mut() {
            Some(e) => {
                e.reset(k, m, len).map_err(codec)?;
                e
            }
            None => enc.insert(ReedSolomonEncoder::new(k, m, len).map_err(codec)?),
        };
        for o in originals {
            e.add_original_shard(&o[off..off + len]).map_err(codec)?;
        }
        let r = e.encode().map_err(codec)?;
        for (out, rec) in outs.iter_mut().zip(r.recovery_iter()) {
            out.extend_from_slice(rec);
        }
        off += len;
    }
    Ok(())
}

/// Encodes `packs` (each named by its BLAKE3 hash, concatenated in the order given) into
/// `params.n()` shares, any `params.k()` of which restore them. Deterministic: the same
/// packs and parameters always give the same shares.
pub fn encode(params: Params, packs: &[&[u8]]) -> Result<Vec<Share>, ErasureError> {
    if packs.is_empty() {
        return Err(ErasureError::NoPacks);
    }
    if packs.len() > MAX_PACKS_PER_GROUP {
        return Err(ErasureError::TooManyPacks(packs.len()));
    }
    if packs.iter().any(|p| p.is_empty()) {
        return Err(ErasureError::EmptyPack);
    }
    let original_len: u64 = packs.iter().map(|p| p.len() as u64).sum();
    if original_len > MAX_GROUP_BYTES {
        return Err(ErasureError::GroupTooLarge(original_len));
    }
    let refs: Vec<PackRef> = packs
        .iter()
        .map(|p| PackRef {
            id: PackId::of_bytes(p),
            len: p.len() as u64,
        })
        .collect();
    let mut ids: Vec<PackId> = refs.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(ErasureError::DuplicatePack(w[0]));
    }
    let (k, n) = (usize::from(params.k()), usize::from(params.n()));
    let shard_size = shard_size_for(original_len, params.k());
    let header_of = |index: usize| ShareHeader {
        params,
        index: index as u8,
        original_len,
        shard_size,
        packs: refs.clone(),
    };
    let header_len = FIXED_HEADER_LEN + PACK_ENTRY_LEN * refs.len();
    let cap = header_len + shard_size as usize;
    let mut headers = Vec::with_capacity(n);
    let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(n);
    for i in 0..n {
        let h = header_of(i);
        let mut b = Vec::with_capacity(cap);
        h.write(&mut b);
        if i < k {
            for_each_piece(packs, i as u64 * shard_size, shard_size, |s| {
                b.extend_from_slice(s)
            });
            b.resize(cap, 0);
        }
        headers.push(h);
        bufs.push(b);
    }
    let (data, parity) = bufs.split_at_mut(k);
    let originals: Vec<&[u8]> = data.iter().map(|b| &b[header_len..]).collect();
    encode_parity(k, n - k, &originals, parity)?;
    Ok(bufs
        .into_iter()
        .zip(headers)
        .map(|(b, h)| Share::assemble(b, h))
        .collect())
}

/// A pack restored from shares, checked against its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
}

/// Collects shares of one group, one at a time, until `k` good ones can restore the packs
/// or rebuild any share. Bad shares are refused one by one without spoiling the rest, so
/// a caller fetching from several hosts can simply try the next.
#[derive(Debug, Default)]
pub struct Decoder {
    /// From the owner's share map: the name of every share of the group.
    expected: Option<Vec<ShareId>>,
    shares: BTreeMap<u8, Share>,
}

impl Decoder {
    /// A decoder that learns the group from the first good share.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// A decoder that accepts only the shares `group` names (from the owner's share map).
    pub fn for_group(group: &ShareGroup) -> Self {
        Decoder {
            expected: Some(group.shares.iter().map(|s| s.id).collect()),
            shares: BTreeMap::new(),
        }
    }

    /// Shares still needed before [`Decoder::finish`] or [`Decoder::rebuild`] can work
    /// (`None` until a first share told the group's `k`).
    pub fn needed(&self) -> Option<usize> {
        let k = usize::from(self.shares.values().next()?.params().k());
        Some(k.saturating_sub(self.shares.len()))
    }

    /// Whether `k` good shares are in.
    pub fn is_ready(&self) -> bool {
        self.needed() == Some(0)
    }

    /// Indexes of the shares accepted so far.
    pub fn indexes(&self) -> Vec<u8> {
        self.shares.keys().copied().collect()
    }

    /// Adds the bytes fetched under the name `id`: checks the name against the bytes, the
    /// header, and that the share belongs with those before it. A share already present
    /// (same index) is accepted again as a no-op.
    pub fn add(&mut self, id: ShareId, bytes: Vec<u8>) -> Result<(), ErasureError> {
        let share =
            Share::verified(id, bytes).map_err(|error| ErasureError::Rejected { id, error })?;
        self.add_share(share)
    }

    /// Adds an already parsed share (its name is the hash of its bytes).
    pub fn add_share(&mut self, share: Share) -> Result<(), ErasureError> {
        let index = share.index();
        if let Some(expected) = &self.expected {
            let want = expected.get(usize::from(index)).copied();
            if want != Some(share.id()) {
                return match want {
                    Some(expected) => Err(ErasureError::UnexpectedShare {
                        index,
                        id: share.id(),
                        expected,
                    }),
                    None => Err(ErasureError::WrongGroup { id: share.id() }),
                };
            }
            if expected.len() != usize::from(share.params().n()) {
                return Err(ErasureError::WrongGroup { id: share.id() });
            }
        }
        if let Some(first) = self.shares.values().next() {
            if !first.header().same_group(share.header()) {
                return Err(ErasureError::WrongGroup { id: share.id() });
            }
        }
        self.shares.entry(index).or_insert(share);
        Ok(())
    }

    fn not_enough(&self) -> ErasureError {
        let need = self
            .shares
            .values()
            .next()
            .map_or(1, |s| usize::from(s.params().k()));
        ErasureError::NotEnoughShares {
            have: self.shares.len(),
            need,
            rejected: Vec::new(),
        }
    }

    /// The group's `k` data shards, reconstructed where missing.
    fn data_shards(&self) -> Result<(ShareHeader, DataShards<'_>), ErasureError> {
        if !self.is_ready() {
            return Err(self.not_enough());
        }
        let first = self.shares.values().next().expect("ready means some share");
        let header = first.header().clone();
        let k = usize::from(header.params.k());
        let m = usize::from(header.params.parity());
        let size = header.shard_size as usize;
        let missing: Vec<usize> = (0..k)
            .filter(|i| !self.shares.contains_key(&(*i as u8)))
            .collect();
        let mut out: Vec<Cow<'_, [u8]>> = (0..k)
            .map(|i| match self.shares.get(&(i as u8)) {
                Some(s) => Cow::Borrowed(s.shard()),
                None => Cow::Owned(Vec::with_capacity(size)),
            })
            .collect();
        if missing.is_empty() {
            return Ok((header, out));
        }
        // Exactly k shares: every data shard present, then parity shards to fill up.
        let data: Vec<(usize, &[u8])> = self
            .shares
            .values()
            .filter(|s| s.header().is_data())
            .map(|s| (usize::from(s.index()), s.shard()))
            .collect();
        let parity: Vec<(usize, &[u8])> = self
            .shares
            .values()
            .filter(|s| !s.header().is_data())
            .take(missing.len())
            .map(|s| (usize::from(s.index()) - k, s.shard()))
            .collect();
        let mut dec: Option<ReedSolomonDecoder> = None;
        let mut off = 0;
        while off < size {
            let len = STRIPE.min(size - off);
            let d = match dec.as_mut() {
                Some(d) => {
                    d.reset(k, m, len).map_err(codec)?;
                    d
                }
                None => dec.insert(ReedSolomonDecoder::new(k, m, len).map_err(codec)?),
            };
            for (i, s) in &data {
                d.add_original_shard(*i, &s[off..off + len])
                    .map_err(codec)?;
            }
            for (i, s) in &parity {
                d.add_recovery_shard(*i, &s[off..off + len])
                    .map_err(codec)?;
            }
            let r = d.decode().map_err(codec)?;
            for &i in &missing {
                let restored = r
                    .restored_original(i)
                    .ok_or_else(|| ErasureError::Codec(format!("shard {i} not restored")))?;
                out[i].to_mut().extend_from_slice(restored);
            }
            off += len;
        }
        Ok((header, out))
    }

    /// Checks every pack's name against the data shards.
    fn verify_packs(header: &ShareHeader, data: &[Cow<'_, [u8]>]) -> Result<(), ErasureError> {
        let parts: Vec<&[u8]> = data.iter().map(|d| d.as_ref()).collect();
        let mut start = 0u64;
        for p in &header.packs {
            let mut h = blake3::Hasher::new();
            for_each_piece(&parts, start, p.len, |s| {
                h.update(s);
            });
            let actual = PackId(*h.finalize().as_bytes());
            if actual != p.id {
                return Err(ErasureError::PackMismatch { pack: p.id, actual });
            }
            start += p.len;
        }
        Ok(())
    }

    /// Restores the group's packs, each checked against its name.
    pub fn finish(&self) -> Result<Vec<RestoredPack>, ErasureError> {
        let (header, data) = self.data_shards()?;
        let parts: Vec<&[u8]> = data.iter().map(|d| d.as_ref()).collect();
        let mut start = 0u64;
        let mut packs = Vec::with_capacity(header.packs.len());
        for p in &header.packs {
            let mut bytes = Vec::with_capacity(p.len as usize);
            for_each_piece(&parts, start, p.len, |s| bytes.extend_from_slice(s));
            let actual = PackId::of_bytes(&bytes);
            if actual != p.id {
                return Err(ErasureError::PackMismatch { pack: p.id, actual });
            }
            packs.push(RestoredPack { id: p.id, bytes });
            start += p.len;
        }
        Ok(packs)
    }

    /// Rebuilds share `index` (byte for byte the share the owner made) from the `k` shares
    /// in, without any key: checks the packs' names on the way, and the rebuilt share's
    /// name against the share map when the decoder was made with [`Decoder::for_group`].
    pub fn rebuild(&self, index: u8) -> Result<Share, ErasureError> {
        let first = self
            .shares
            .values()
            .next()
            .ok_or_else(|| self.not_enough())?;
        let n = first.params().n();
        if index >= n {
            return Err(ErasureError::BadIndex { index, n });
        }
        let (mut header, mut data) = self.data_shards()?;
        Self::verify_packs(&header, &data)?;
        let k = usize::from(header.params.k());
        header.index = index;
        let mut bytes = Vec::with_capacity(header.share_len() as usize);
        header.write(&mut bytes);
        if usize::from(index) < k {
            bytes.extend_from_slice(&data[usize::from(index)]);
        } else {
            let m = usize::from(header.params.parity());
            let mut outs = vec![Vec::new(); m];
            outs[usize::from(index) - k] = std::mem::take(&mut bytes);
            let originals: Vec<&[u8]> = data.iter().map(|d| d.as_ref()).collect();
            encode_parity(k, m, &originals, &mut outs)?;
            bytes = std::mem::take(&mut outs[usize::from(index) - k]);
            data.clear();
        }
        let share = Share::assemble(bytes, header);
        if let Some(expected) = self
            .expected
            .as_ref()
            .and_then(|e| e.get(usize::from(index)))
        {
            if *expected != share.id() {
                return Err(ErasureError::RebuiltMismatch {
                    index,
                    expected: *expected,
                    actual: share.id(),
                });
            }
        }
        Ok(share)
    }
}

fn collect(shares: Vec<(ShareId, Vec<u8>)>) -> Result<Decoder, ErasureError> {
    let mut d = Decoder::new();
    let mut rejected = Vec::new();
    for (id, bytes) in shares {
        if d.is_ready() {
            break;
        }
        if let Err(e) = d.add(id, bytes) {
            rejected.push((id, e.to_string()));
        }
    }
    if !d.is_ready() {
        let need = d
            .shares
            .values()
            .next()
            .map_or(1, |s| usize::from(s.params().k()));
        return Err(ErasureError::NotEnoughShares {
            have: d.shares.len(),
            need,
            rejected,
        });
    }
    Ok(d)
}

/// Restores the packs of a group from shares fetched under the given names; bad shares
/// are skipped (and listed in the error if too few good ones remain).
pub fn decode(shares: Vec<(ShareId, Vec<u8>)>) -> Result<Vec<RestoredPack>, ErasureError> {
    collect(shares)?.finish()
}

/// Rebuilds share `index` of a group from any `k` of its other shares, fetched under the
/// given names — repair without the owner: shares are ciphertext, no key is needed.
pub fn rebuild_share(shares: Vec<(ShareId, Vec<u8>)>, index: u8) -> Result<Share, ErasureError> {
    collect(shares)?.rebuild(index)
}
