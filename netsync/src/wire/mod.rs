//! Signed wire messages between nodes and the coordinator (spec: `book/src/wire-coordinator.md`).
//!
//! Every MQTT payload is one *frame*:
//!
//! ```text
//! offset 0   4 bytes   magic "plw1"
//! offset 4  64 bytes   Ed25519 signature over SIGNING_CONTEXT || payload
//! offset 68  ...       payload = postcard(Envelope<Body>)
//! ```
//!
//! The envelope carries the protocol version, the sender's public key, the MQTT topic it
//! was published on (so a message cannot be redirected), a request id and a timestamp (so
//! it cannot be replayed), and the body. Frames are at most [`MAX_FRAME_BYTES`].

mod messages;
mod replay;
mod ticket;
mod token;

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use messages::*;
pub use replay::ReplayGuard;
pub use ticket::{
    issue as issue_repair_ticket, verify as verify_repair_ticket, RepairTicket, TicketError,
};
pub use token::{
    broker_password, connect_token, connect_token_for, node_of_client_id, verify_connect_token,
    ConnectToken, CONNECT_CONTEXT,
};

/// Version of the envelope and message set defined here.
pub const WIRE_VERSION: u16 = 1;
/// Largest frame anyone accepts (MQTT payload).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest opaque challenge payload relayed by the coordinator.
pub const MAX_CHALLENGE_PAYLOAD: usize = 32 * 1024;
/// Largest relayed challenge answer: a proof of one 1 KiB range is up to two 16 KiB chunk
/// groups plus their hashes (< 34 KiB), so answers get more room than questions while the
/// whole frame stays under [`MAX_FRAME_BYTES`].
pub const MAX_CHALLENGE_ANSWER: usize = 48 * 1024;
/// Allowed difference between a message's timestamp and the receiver's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 120_000;
/// Magic prefix of every frame.
pub const FRAME_MAGIC: &[u8; 4] = b"plw1";
/// Domain separation for envelope signatures.
pub const SIGNING_CONTEXT: &[u8] = b"pluto v1 wire envelope\0";
const HEADER: usize = 4 + 64;

/// Errors from building or opening frames.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("frame is {0} bytes, more than the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    UnsupportedVersion(u16),
    #[error("signature does not verify for sender {0}")]
    BadSignature(NodeId),
    #[error("sender {0} is not a valid Ed25519 public key")]
    BadSenderKey(NodeId),
    #[error("message was signed for topic {signed:?} but arrived on {actual:?}")]
    WrongTopic { signed: String, actual: String },
    #[error(
        "message timestamp {timestamp_ms} ms is outside the allowed clock skew (now {now_ms} ms)"
    )]
    Stale { timestamp_ms: u64, now_ms: u64 },
    #[error("message {request_id} from {sender} was already received (replay)")]
    Replayed { sender: NodeId, request_id: u64 },
    #[error("{sender} sent {limit} messages within the freshness window; wait until some age out")]
    ReplayWindowFull { sender: NodeId, limit: usize },
    #[error("bad connect token: {0}")]
    BadToken(String),
}

/// A node (or coordinator) identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    pub fn from_key(key: &VerifyingKey) -> Self {
        NodeId(key.to_bytes())
    }
    pub fn of(key: &SigningKey) -> Self {
        NodeId(key.verifying_key().to_bytes())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn verifying_key(&self) -> Result<VerifyingKey, WireError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| WireError::BadSenderKey(*self))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &self.to_hex()[..12])
    }
}

impl FromStr for NodeId {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(WireError::Malformed(format!(
                "node id must be 64 lowercase hex digits, got {:?}",
                truncate(s)
            )));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok(NodeId(out))
    }
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// MQTT topics. A node may read only `pluto/v1/node/<id>/#` and write only `pluto/v1/coord/<id>/#`.
pub mod topics {
    use super::NodeId;

    pub const PREFIX: &str = "pluto/v1/";
    /// Topic on which nodes enroll with an external broker (write-only for the enroll user).
    pub const ENROLL: &str = "pluto/v1/enroll";
    /// Filter the coordinator subscribes to for node requests and wills.
    pub const ALL_COORD: &str = "pluto/v1/coord/+/#";

    /// Node → coordinator requests.
    pub fn request(node: &NodeId) -> String {
        format!("pluto/v1/coord/{node}/req")
    }
    /// Node's last will (published by the broker when the node vanishes).
    pub fn will(node: &NodeId) -> String {
        format!("pluto/v1/coord/{node}/will")
    }
    /// Coordinator → node messages (replies and events).
    pub fn node(node: &NodeId) -> String {
        format!("pluto/v1/node/{node}/msg")
    }
    /// What a node may subscribe to.
    pub fn node_filter(node: &NodeId) -> String {
        format!("pluto/v1/node/{node}/#")
    }
    /// What a node may publish to.
    pub fn coord_filter(node: &NodeId) -> String {
        format!("pluto/v1/coord/{node}/#")
    }

    /// Kind of node → coordinator topic.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CoordTopic {
        Request,
        Will,
    }

    /// Split `pluto/v1/coord/<id>/<kind>`; `None` for anything else.
    pub fn parse_coord(topic: &str) -> Option<(NodeId, CoordTopic)> {
        let rest = topic.strip_prefix("pluto/v1/coord/")?;
        let (id, kind) = rest.split_once('/')?;
        let id: NodeId = id.parse().ok()?;
        let kind = match kind {
            "req" => CoordTopic::Request,
            "will" => CoordTopic::Will,
            _ => return None,
        };
        Some((id, kind))
    }

    /// True if `filter` (an MQTT subscription filter) only matches topics under `allowed_prefix`
    /// (which ends with `/`). Wildcards are allowed only after the prefix.
    pub fn filter_within(filter: &str, allowed_prefix: &str) -> bool {
        match filter.strip_prefix(allowed_prefix) {
            Some(rest) => !rest.is_empty() && valid_rest(rest),
            None => false,
        }
    }

    fn valid_rest(rest: &str) -> bool {
        // '#' only as the last level, '+' only as a whole level.
        let levels: Vec<&str> = rest.split('/').collect();
        levels.iter().enumerate().all(|(i, l)| {
            (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
                && (!l.contains('+') || *l == "+")
        })
    }
}

/// The signed part of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<B> {
    pub version: u16,
    pub sender: NodeId,
    pub topic: String,
    pub request_id: u64,
    pub timestamp_ms: u64,
    pub body: B,
}

/// Current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sign `body` as `key` for `topic` and encode it as a frame.
pub fn seal<B: Serialize>(
    key: &SigningKey,
    topic: &str,
    request_id: u64,
    timestamp_ms: u64,
    body: &B,
) -> Result<Vec<u8>, WireError> {
    let env = Envelope {
        version: WIRE_VERSION,
        sender: NodeId::of(key),
        topic: topic.to_string(),
        request_id,
        timestamp_ms,
        body,
    };
    let payload = postcard::to_stdvec(&env).map_err(|e| WireError::Malformed(e.to_string()))?;
    let mut signed = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    signed.extend_from_slice(SIGNING_CONTEXT);
    signed.extend_from_slice(&payload);
    let sig = key.sign(&signed);
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(FRAME_MAGIC);
    frame.extend_from_slice(&sig.to_bytes());
    frame.extend_from_slice(&payload);
    if frame.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(frame.len()));
    }
    Ok(frame)
}

/// Decode a frame without checking anything but its shape (used to learn who claims to have sent it).
pub fn peek<B: DeserializeOwned>(frame: &[u8]) -> Result<Envelope<B>, WireError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(frame.len()));
    }
    if frame.len() < HEADER || &frame[..4] != FRAME_MAGIC {
        return Err(WireError::Malformed(
            "missing frame header (magic \"plw1\" + signature)".into(),
        ));
    }
    let (env, rest): (Envelope<B>, &[u8]) = postcard::take_from_bytes(&frame[HEADER..])
        .map_err(|e| WireError::Malformed(format!("envelope does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes after the envelope",
            rest.len()
        )));
    }
    if env.version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(env.version));
    }
    Ok(env)
}

/// Decode a frame, verify the sender's signature and that it was signed for `topic`.
/// Freshness and replay are the caller's business ([`ReplayGuard`]).
pub fn open<B: DeserializeOwned>(frame: &[u8], topic: &str) -> Result<Envelope<B>, WireError> {
    let env: Envelope<B> = peek(frame)?;
    let key = env.sender.verifying_key()?;
    verify_raw(&key, frame).map_err(|_| WireError::BadSignature(env.sender))?;
    if env.topic != topic {
        return Err(WireError::WrongTopic {
            signed: truncate(&env.topic),
            actual: truncate(topic),
        });
    }
    Ok(env)
}

/// Like [`open`] but also requires the sender to be `expected` (e.g. the pinned coordinator key).
pub fn open_from<B: DeserializeOwned>(
    frame: &[u8],
    topic: &str,
    expected: &NodeId,
) -> Result<Envelope<B>, WireError> {
    let env: Envelope<B> = open(frame, topic)?;
    if &env.sender != expected {
        return Err(WireError::BadSignature(env.sender));
    }
    Ok(env)
}

fn verify_raw(key: &VerifyingKey, frame: &[u8]) -> Result<(), ed25519_dalek::SignatureError> {
    let sig = Signature::from_slice(&frame[4..HEADER])?;
    let mut signed = Vec::with_capacity(SIGNING_CONTEXT.len() + frame.len() - HEADER);
    signed.extend_from_slice(SIGNING_CONTEXT);
    signed.extend_from_slice(&frame[HEADER..]);
    key.verify_strict(&signed, &sig)
}

#[cfg(test)]
mod tests;
