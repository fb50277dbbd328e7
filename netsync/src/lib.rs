//! Peer protocol, push/pull, hosting and the coordinator client (see the peer issue).

pub mod coord_client;
pub mod erasure;
pub mod nat;
pub mod node;
pub mod peer;
pub mod verdict;
pub mod wire;
