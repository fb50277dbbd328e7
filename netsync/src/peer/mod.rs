//! Peers: the node-to-node protocol (spec: `book/src/wire-peer.md`).
//!
//! - [`noise`]: WebSocket transport, end-to-end encrypted and authenticated with Noise XX;
//!   each side signs its Noise static key with its Ed25519 node identity.
//! - [`proto`]: the versioned request/response messages and their limits.
//! - [`obfuscate`]: the host's seekable ChaCha20 obfuscation of what it stores.
//! - [`hosted`]: a host's store of other nodes' files (`.pluto/hosted/<owner>/…`, local),
//!   with the allow-list of matched owners and their quotas.
//! - [`challenge`]: storage challenges (keyed BLAKE3 of ranges; bao-tree range proofs).
//! - [`server`]: accepts peer connections and serves the hosted store.
//! - [`client`]: one authenticated connection to a host, resumable put/get.
//! - [`store`]: [`store::PeerPackStore`], a `PackStore` backed by a host.
//! - [`shares`]: erasure-coded push and pull (k-of-n shares on distinct hosts).
//! - [`sync`]: push, pull, challenge rounds and repair over a set of hosts.
//! - [`state`]: the owner's local record of its hosts and placements
//!   (`.pluto/peers/state.json`, `shares.json`) and [`state::PeerStore`], its one writer.

pub mod challenge;
pub mod client;
pub mod hosted;
pub mod noise;
pub mod obfuscate;
pub mod proto;
pub mod punch;
pub mod route;
pub mod server;
pub mod shares;
pub mod state;
pub mod store;
pub mod sync;

use crate::wire::NodeId;

/// Everything that can go wrong talking to a peer or hosting for one.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach peer at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("handshake with {addr} failed: {reason}")]
    Handshake { addr: String, reason: String },
    #[error("peer at {addr} is node {actual}, not the expected {expected}")]
    WrongPeer {
        addr: String,
        expected: NodeId,
        actual: NodeId,
    },
    #[error("peer protocol error: {0}")]
    Protocol(String),
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("peer did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("connection closed by the peer")]
    Closed,
    #[error("the peer refused: {0}")]
    Refused(proto::Refusal),
    #[error("{what} {name} from the peer does not hash to its name")]
    BadData { what: &'static str, name: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] pluto_repo::Error),
}

impl PeerError {
    pub(crate) fn io(
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PeerError {
        let path = path.into();
        move |source| PeerError::Io { path, source }
    }
}

pub type Result<T, E = PeerError> = std::result::Result<T, E>;
