//! The share format: a fixed little-endian header, then the shard bytes.
//!
//! ```text
//! offset      size  field
//! 0           4     magic "PLSH"
//! 4           1     version = 1
//! 5           1     k             1 <= k < n
//! 6           1     n             n <= 255
//! 7           1     index         0 <= index < n; 0..k are data shards, k..n parity shards
//! 8           8     original_len  u64 LE = sum of the pack lengths, 1 ..= MAX_GROUP_BYTES
//! 16          8     shard_size    u64 LE = ceil(original_len / k) rounded up to even
//! 24          2     pack_count    u16 LE, 1 ..= MAX_PACKS_PER_GROUP
//! 26          40×p  packs         pack name [32] (BLAKE3 of the pack) + pack length u64 LE,
//!                                 in the order the packs are concatenated; names distinct,
//!                                 lengths >= 1
//! 26 + 40p    shard_size        shard bytes
//! ```
//!
//! The group's data is the packs concatenated, zero-padded to `k × shard_size`; data shard
//! `i < k` is bytes `[i × shard_size, (i+1) × shard_size)` of it (so its padding must be
//! zero), parity shard `k + j` is recovery shard `j` of reed-solomon-simd 3.x
//! (Leopard-RS, GF(2^16)) for `k` original and `n − k` recovery shards of `shard_size`
//! bytes. A share's name is the BLAKE3 hash of all its bytes, header included.

use std::fmt;

use pluto_repo::pack::PackId;
use serde::{Deserialize, Serialize};

use super::scheme::Params;

/// First bytes of every share.
pub const SHARE_MAGIC: &[u8; 4] = b"PLSH";
/// Version of the share format defined here.
pub const SHARE_VERSION: u8 = 1;
/// Bytes before the pack list.
pub const FIXED_HEADER_LEN: usize = 26;
/// Bytes per pack in the pack list.
pub const PACK_ENTRY_LEN: usize = 40;
/// Most packs one group may hold.
pub const MAX_PACKS_PER_GROUP: usize = 1024;
/// Largest group (sum of its packs) that is encoded in one piece.
pub const MAX_GROUP_BYTES: u64 = 1 << 30;

/// A share's name: BLAKE3 of its bytes (like a pack's name).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShareId(pub [u8; 32]);

impl ShareId {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ShareId(*blake3::hash(bytes).as_bytes())
    }
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(ShareId(b))
    }
}

impl fmt::Debug for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.hex()[..16])
    }
}
impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// One pack of a group: its name and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackRef {
    pub id: PackId,
    pub len: u64,
}

/// What is wrong with one share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("share is {len} bytes, shorter than the {FIXED_HEADER_LEN}-byte share header")]
    TooShort { len: usize },
    #[error("not a share: bad magic {0:02x?} (expected \"PLSH\")")]
    BadMagic([u8; 4]),
    #[error("unsupported share format version {0} (this build reads {SHARE_VERSION})")]
    UnsupportedVersion(u8),
    #[error("share header has k = {k}, n = {n}: need 1 <= k < n <= 255")]
    BadParams { k: u8, n: u8 },
    #[error("share index {index} is not below n = {n}")]
    BadIndex { index: u8, n: u8 },
    #[error("share header lists {0} packs: need 1..={MAX_PACKS_PER_GROUP}")]
    BadPackCount(usize),
    #[error("share header's pack {pack} has length 0")]
    EmptyPack { pack: PackId },
    #[error("share header lists pack {pack} twice")]
    DuplicatePack { pack: PackId },
    #[error("share header's original length {header} is not the sum of its pack lengths ({sum})")]
    LengthSum { header: u64, sum: u64 },
    #[error("share header's original length {0} is outside 1..={MAX_GROUP_BYTES}")]
    BadOriginalLen(u64),
    #[error("share header's shard size {got} is wrong for {original_len} bytes in {k} shards (expected {expected})")]
    BadShardSize {
        got: u64,
        expected: u64,
        original_len: u64,
        k: u8,
    },
    #[error("share is {got} bytes, its header says {expected} (truncated or extended)")]
    WrongLength { got: usize, expected: u64 },
    #[error("data share {index} has non-zero padding")]
    NonZeroPadding { index: u8 },
    #[error("share is corrupt: expected name {expected}, its bytes hash to {actual}")]
    NameMismatch { expected: ShareId, actual: ShareId },
}

/// The parsed header of a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareHeader {
    pub params: Params,
    pub index: u8,
    pub original_len: u64,
    pub shard_size: u64,
    pub packs: Vec<PackRef>,
}

/// `ceil(original_len / k)` rounded up to an even number (reed-solomon-simd works on 16-bit
/// symbols).
pub fn shard_size_for(original_len: u64, k: u8) -> u64 {
    let s = original_len.div_ceil(u64::from(k)).max(1);
    s + (s & 1)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

impl ShareHeader {
    /// Encoded header length.
    pub fn len(&self) -> usize {
        FIXED_HEADER_LEN + PACK_ENTRY_LEN * self.packs.len()
    }
    /// Whether the header lists no pack (never true for a parsed header).
    pub fn is_empty(&self) -> bool {
        self.packs.is_empty()
    }
    /// Length of the whole share.
    pub fn share_len(&self) -> u64 {
        self.len() as u64 + self.shard_size
    }
    /// Whether this is a data shard (its bytes are the packs' bytes).
    pub fn is_data(&self) -> bool {
        self.index < self.params.k()
    }
    /// Same group (everything but the index equal).
    pub fn same_group(&self, other: &ShareHeader) -> bool {
        self.params == other.params
            && self.original_len == other.original_len
            && self.shard_size == other.shard_size
            && self.packs == other.packs
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(SHARE_MAGIC);
        out.push(SHARE_VERSION);
        out.push(self.params.k());
        out.push(self.params.n());
        out.push(self.index);
        out.extend_from_slice(&self.original_len.to_le_bytes());
        out.extend_from_slice(&self.shard_size.to_le_bytes());
        out.extend_from_slice(&(self.packs.len() as u16).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.len.to_le_bytes());
        }
    }

    /// Parses and checks the header at the start of `bytes`, and that `bytes` is exactly
    /// one share long. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<ShareHeader, ShareError> {
        let header = Self::parse_prefix(bytes)?;
        if bytes.len() as u64 != header.share_len() {
            return Err(ShareError::WrongLength {
                got: bytes.len(),
                expected: header.share_len(),
            });
        }
        if header.is_data() {
            // Bytes of this data shard beyond the end of the group must be zero.
            let header_len = FIXED_HEADER_LEN + PACK_ENTRY_LEN * header.packs.len();
            let start = u64::from(header.index) * header.shard_size;
            let used = header
                .original_len
                .saturating_sub(start)
                .min(header.shard_size) as usize;
            if bytes[header_len + used..].iter().any(|&b| b != 0) {
                return Err(ShareError::NonZeroPadding {
                    index: header.index,
                });
            }
        }
        Ok(header)
    }

    /// The header alone, from the first bytes of a share (at least the header's length):
    /// what a host's listing needs to group shares by pack before fetching them whole.
    /// [`ShareHeader::parse`] on the whole share checks the rest.
    pub fn parse_prefix(bytes: &[u8]) -> Result<ShareHeader, ShareError> {
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(ShareError::TooShort { len: bytes.len() });
        }
        let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
        if &magic != SHARE_MAGIC {
            return Err(ShareError::BadMagic(magic));
        }
        if bytes[4] != SHARE_VERSION {
            return Err(ShareError::UnsupportedVersion(bytes[4]));
        }
        let (k, n, index) = (bytes[5], bytes[6], bytes[7]);
        let params = Params::new(k, n).map_err(|_| ShareError::BadParams { k, n })?;
        if index >= n {
            return Err(ShareError::BadIndex { index, n });
        }
        let original_len = u64_at(bytes, 8);
        let shard_size = u64_at(bytes, 16);
        let count = usize::from(u16::from_le_bytes([bytes[24], bytes[25]]));
        if count == 0 || count > MAX_PACKS_PER_GROUP {
            return Err(ShareError::BadPackCount(count));
        }
        let header_len = FIXED_HEADER_LEN + PACK_ENTRY_LEN * count;
        if bytes.len() < header_len {
            return Err(ShareError::WrongLength {
                got: bytes.len(),
                expected: header_len as u64,
            });
        }
        if original_len == 0 || original_len > MAX_GROUP_BYTES {
            return Err(ShareError::BadOriginalLen(original_len));
        }
        let mut packs = Vec::with_capacity(count);
        let mut sum: u64 = 0;
        for i in 0..count {
            let off = FIXED_HEADER_LEN + PACK_ENTRY_LEN * i;
            let id = PackId(bytes[off..off + 32].try_into().expect("32 bytes"));
            let len = u64_at(bytes, off + 32);
            if len == 0 {
                return Err(ShareError::EmptyPack { pack: id });
            }
            sum = sum.saturating_add(len);
            packs.push(PackRef { id, len });
        }
        if sum != original_len {
            return Err(ShareError::LengthSum {
                header: original_len,
                sum,
            });
        }
        let mut ids: Vec<PackId> = packs.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ShareError::DuplicatePack { pack: w[0] });
        }
        let expected = shard_size_for(original_len, k);
        if shard_size != expected {
            return Err(ShareError::BadShardSize {
                got: shard_size,
                expected,
                original_len,
                k,
            });
        }
        Ok(ShareHeader {
            params,
            index,
            original_len,
            shard_size,
            packs,
        })
    }
}

/// One share: its bytes (header + shard), parsed header and name.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    bytes: Vec<u8>,
    header: ShareHeader,
    id: ShareId,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Share({} {}/{} #{} {} bytes)",
            self.id,
            self.header.params.k(),
            self.header.params.n(),
            self.header.index,
            self.bytes.len()
        )
    }
}

impl Share {
    /// Parses `bytes` as a share and names it by its hash.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Share, ShareError> {
        let id = ShareId::of_bytes(&bytes);
        let header = ShareHeader::parse(&bytes)?;
        Ok(Share { bytes, header, id })
    }

    /// Like [`Share::from_bytes`], and checks the bytes hash to `expected` — the name under
    /// which the share was stored or fetched.
    pub fn verified(expected: ShareId, bytes: Vec<u8>) -> Result<Share, ShareError> {
        let actual = ShareId::of_bytes(&bytes);
        if actual != expected {
            return Err(ShareError::NameMismatch { expected, actual });
        }
        let header = ShareHeader::parse(&bytes)?;
        Ok(Share {
            bytes,
            header,
            id: actual,
        })
    }

    /// Built by the encoder: the header is known good.
    pub(crate) fn assemble(bytes: Vec<u8>, header: ShareHeader) -> Share {
        debug_assert_eq!(ShareHeader::parse(&bytes).as_ref(), Ok(&header));
        let id = ShareId::of_bytes(&bytes);
        Share { bytes, header, id }
    }

    pub fn id(&self) -> ShareId {
        self.id
    }
    pub fn index(&self) -> u8 {
        self.header.index
    }
    pub fn header(&self) -> &ShareHeader {
        &self.header
    }
    pub fn params(&self) -> Params {
        self.header.params
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The shard bytes after the header.
    pub fn shard(&self) -> &[u8] {
        &self.bytes[self.header.len()..]
    }
}
