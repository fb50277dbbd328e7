//! Peer messages. Each application message is `version: u16 LE` ‖ `postcard(body)`, where
//! body is a [`Request`] (owner → host) or a [`Response`] (host → owner); every request gets
//! exactly one response, in order. Limits are checked on decode ([`Request::validate`]).

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::noise::{MAX_MESSAGE, PEER_PROTOCOL_VERSION};
use super::{PeerError, Result};

/// Largest data chunk in one `PutData` / `Data`.
pub const MAX_CHUNK: usize = 1024 * 1024;
/// Largest file a host accepts.
pub const MAX_FILE_SIZE: u64 = 1 << 30;
/// Challenge limits: ranges per challenge, bytes per range, bytes in all.
pub const MAX_RANGES: usize = 64;
pub const MAX_RANGE_LEN: u32 = 64 * 1024;
pub const MAX_RANGES_TOTAL: u64 = 1024 * 1024;
/// Entries per `Listing` page.
pub const MAX_LIST_PAGE: usize = 20_000;

/// What kind of file: each lives in its own namespace on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Pack,
    Index,
    Snapshot,
    Config,
    /// A Reed–Solomon share of a pack (erasure-coded placement), named by its BLAKE3 hash.
    Share,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Pack,
        Kind::Index,
        Kind::Snapshot,
        Kind::Config,
        Kind::Share,
    ];
    pub fn byte(self) -> u8 {
        self as u8
    }
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Pack => "packs",
            Kind::Index => "index",
            Kind::Snapshot => "snapshots",
            Kind::Config => "config",
            Kind::Share => "shares",
        }
    }
}

/// A byte range of a file: offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub offset: u64,
    pub len: u32,
}

/// Owner → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Quota and use of the asking owner.
    Status,
    /// Start (or resume) storing a file of `size` bytes named by its BLAKE3 hash.
    PutBegin {
        kind: Kind,
        name: [u8; 32],
        size: u64,
    },
    /// Bytes at `offset` (must equal what the host already has of the file).
    PutData {
        kind: Kind,
        name: [u8; 32],
        offset: u64,
        data: Vec<u8>,
    },
    /// All bytes sent: check the name, keep the file.
    PutEnd {
        kind: Kind,
        name: [u8; 32],
    },
    /// `len` (≤ [`MAX_CHUNK`]) bytes of a stored file at `offset`.
    Get {
        kind: Kind,
        name: [u8; 32],
        offset: u64,
        len: u32,
    },
    /// Stored files of one kind, names greater than `after`, in name order.
    List {
        kind: Kind,
        after: Option<[u8; 32]>,
    },
    /// Size of a stored file.
    Stat {
        kind: Kind,
        name: [u8; 32],
    },
    Remove {
        kind: Kind,
        name: [u8; 32],
    },
    /// Keyed BLAKE3 challenge over ranges of a pack ([`super::challenge`]).
    Challenge {
        pack: [u8; 32],
        nonce: [u8; 32],
        ranges: Vec<Range>,
    },
    /// bao-tree proof of ranges of a pack, verifiable with its name and size.
    Prove {
        pack: [u8; 32],
        ranges: Vec<Range>,
    },
    /// A repairer reads share `name` of `owner` with the coordinator's repair ticket
    /// ([`crate::wire::RepairTicket`]): `len` (≤ [`MAX_CHUNK`]) bytes at `offset`.
    GetShareFor {
        owner: [u8; 32],
        name: [u8; 32],
        offset: u64,
        len: u32,
        ticket: Vec<u8>,
    },
}

/// Largest repair ticket a host reads.
pub const MAX_TICKET: usize = 16 * 1024;

/// Why a host refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    NotMatched,
    OverQuota,
    NotFound,
    BadName,
    BadRequest,
    Busy,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Host → owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Status {
        quota: u64,
        used: u64,
    },
    /// The host holds `have` bytes of the file; `complete` when it is already stored whole.
    PutReady {
        have: u64,
        complete: bool,
    },
    PutAck {
        have: u64,
    },
    Stored,
    Data(Vec<u8>),
    Listing {
        entries: Vec<([u8; 32], u64)>,
        more: bool,
    },
    Removed,
    Size {
        size: u64,
    },
    ChallengeAnswer {
        hash: [u8; 32],
    },
    Proof {
        encoded: Vec<u8>,
    },
    Refused(Refusal),
}

pub fn refusal(code: RefusalCode, message: impl Into<String>) -> Response {
    Response::Refused(Refusal {
        code,
        message: message.into(),
    })
}

/// Encode a body as a message.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>> {
    let mut out = PEER_PROTOCOL_VERSION.to_le_bytes().to_vec();
    let bytes =
        postcard::to_stdvec(body).map_err(|e| PeerError::Protocol(format!("encode: {e}")))?;
    out.extend_from_slice(&bytes);
    if out.len() > MAX_MESSAGE {
        return Err(PeerError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Decode a message: version, size, the whole body and nothing after it.
pub fn decode<T: DeserializeOwned>(msg: &[u8]) -> Result<T> {
    if msg.len() > MAX_MESSAGE {
        return Err(PeerError::TooLarge(msg.len()));
    }
    if msg.len() < 2 {
        return Err(PeerError::Protocol(
            "message shorter than its version".into(),
        ));
    }
    let v = u16::from_le_bytes([msg[0], msg[1]]);
    if v != PEER_PROTOCOL_VERSION {
        return Err(PeerError::Protocol(format!(
            "message version {v}, this node speaks {PEER_PROTOCOL_VERSION}"
        )));
    }
    let (body, rest) = postcard::take_from_bytes(&msg[2..])
        .map_err(|e| PeerError::Protocol(format!("malformed message: {e}")))?;
    if !rest.is_empty() {
        return Err(PeerError::Protocol(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(body)
}

/// Check challenge ranges: count, lengths, total, all non-empty.
pub fn validate_ranges(ranges: &[Range]) -> std::result::Result<(), String> {
    if ranges.is_empty() || ranges.len() > MAX_RANGES {
        return Err(format!(
            "a challenge has 1..={MAX_RANGES} ranges, not {}",
            ranges.len()
        ));
    }
    let mut total = 0u64;
    for r in ranges {
        if r.len == 0 || r.len > MAX_RANGE_LEN {
            return Err(format!("range length {} not in 1..={MAX_RANGE_LEN}", r.len));
        }
        total += r.len as u64;
    }
    if total > MAX_RANGES_TOTAL {
        return Err(format!(
            "ranges total {total} bytes, more than {MAX_RANGES_TOTAL}"
        ));
    }
    Ok(())
}

impl Request {
    /// Limits every request must respect before a host acts on it.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Request::PutBegin { size, .. } if *size > MAX_FILE_SIZE => Err(format!(
                "file of {size} bytes is larger than the {MAX_FILE_SIZE}-byte limit"
            )),
            Request::PutData { data, .. } if data.len() > MAX_CHUNK => Err(format!(
                "data chunk of {} bytes is larger than {MAX_CHUNK}",
                data.len()
            )),
            Request::Get { len, .. } | Request::GetShareFor { len, .. }
                if *len as usize > MAX_CHUNK =>
            {
                Err(format!("read of {len} bytes is larger than {MAX_CHUNK}"))
            }
            Request::GetShareFor { ticket, .. } if ticket.len() > MAX_TICKET => Err(format!(
                "repair ticket of {} bytes is larger than {MAX_TICKET}",
                ticket.len()
            )),
            Request::Challenge { ranges, .. } | Request::Prove { ranges, .. } => {
                validate_ranges(ranges)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let r = Request::PutData {
            kind: Kind::Pack,
            name: [7; 32],
            offset: 9,
            data: vec![1, 2, 3],
        };
        let m = encode(&r).unwrap();
        assert_eq!(decode::<Request>(&m).unwrap(), r);
        // wrong version
        let mut bad = m.clone();
        bad[0] = 9;
        assert!(decode::<Request>(&bad).is_err());
        // trailing bytes
        let mut bad = m.clone();
        bad.push(0);
        assert!(decode::<Request>(&bad).is_err());
        // truncated
        assert!(decode::<Request>(&m[..m.len() - 1]).is_err());
        assert!(decode::<Request>(&[1]).is_err());
        // garbage never panics
        for i in 0..2000u32 {
            let g: Vec<u8> = (0..(i % 97)).map(|j| (j * 31 + i) as u8).collect();
            let mut msg = vec![1, 0];
            msg.extend_from_slice(&g);
            let _ = decode::<Request>(&msg);
            let _ = decode::<Response>(&msg);
        }
    }

    #[test]
    fn limits() {
        let big = Request::PutData {
            kind: Kind::Pack,
            name: [0; 32],
            offset: 0,
            data: vec![0; MAX_CHUNK + 1],
        };
        assert!(big.validate().is_err());
        assert!(Request::PutBegin {
            kind: Kind::Pack,
            name: [0; 32],
            size: MAX_FILE_SIZE + 1
        }
        .validate()
        .is_err());
        assert!(Request::Get {
            kind: Kind::Pack,
            name: [0; 32],
            offset: 0,
            len: MAX_CHUNK as u32 + 1
        }
        .validate()
        .is_err());
        assert!(validate_ranges(&[]).is_err());
        assert!(validate_ranges(&[Range { offset: 0, len: 0 }]).is_err());
        assert!(validate_ranges(&vec![Range { offset: 0, len: 1 }; MAX_RANGES + 1]).is_err());
        assert!(validate_ranges(&[Range {
            offset: 0,
            len: 1024
        }])
        .is_ok());
    }

    /// Test vector (also in book/src/wire-peer.md).
    #[test]
    fn vector() {
        let m = encode(&Request::Get {
            kind: Kind::Index,
            name: [0xab; 32],
            offset: 300,
            len: 1024,
        })
        .unwrap();
        println!("get vector: {}", hex::encode(&m));
        assert_eq!(hex::encode(&m), GET_VECTOR);
    }
    const GET_VECTOR: &str =
        "01000401ababababababababababababababababababababababababababababababababac028008";
}
