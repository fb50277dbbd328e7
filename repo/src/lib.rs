//! pluto's local repository: keys, chunking, encryption, packs, index, trees,
//! snapshots, restore and check. No networking and no printing: callers (the CLI,
//! the peer code) decide what to show.

pub mod archive;
pub mod check;
pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod fsutil;
pub mod index;
pub mod keys;
pub mod pack;
pub mod progress;
pub mod repository;
pub mod restore;
pub mod snapshot;
pub mod tree;
pub mod vectors;

pub use error::{Error, Result};
pub use repository::Repository;
