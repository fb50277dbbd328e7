//! pluto's local repository: keys, chunking, encryption, packs, index, trees,
//! snapshots, restore and check. No networking and no printing: callers (the CLI,
//! the peer code) decide what to show.

pub mod archive;
pub mod check;
pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod diff;
pub mod error;
pub mod forget;
pub mod fsmeta;
pub mod fsutil;
pub mod index;
pub mod keys;
pub mod ls;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod snapshot;
pub mod stats;
pub mod tar;
pub mod tree;
pub mod vectors;

pub use error::{Error, Result};
pub use repository::Repository;
