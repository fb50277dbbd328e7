//! Erasure-coded placement: Reed–Solomon shares of packs, and their repair without the
//! owner (spec and figures: `book/src/durability.md`).
//!
//! A *group* (one pack, or several small packs concatenated) is encoded into `n` shares,
//! any `k` of which restore it ([`encode`], [`decode`]). Each share carries a small header
//! (see [`share`]) naming the group's packs, so any `k` shares describe themselves: a host
//! can rebuild a lost share from `k` others ([`rebuild_share`]) with no key — shares are
//! made of ciphertext. A share is named by the BLAKE3 hash of its bytes, exactly like a
//! pack, so hosting, storage challenges and bao-tree proofs treat shares as packs.
//!
//! The owner records groups, shares and hosts in a [`ShareMap`] (kept in its encrypted
//! index). [`Scheme`] is the per-repository choice: `4/8` (default) or `copies:2`.
//!
//! This module is pure: no I/O, no network.

mod codec;
mod map;
mod scheme;
pub mod share;

#[cfg(test)]
mod tests;

pub use codec::{decode, encode, rebuild_share, Decoder, ErasureError, RestoredPack, STRIPE};
pub use map::{
    plan_groups, Health, HostId, MapError, ShareGroup, ShareMap, ShareRef, MAP_MAGIC, MAP_VERSION,
};
pub use scheme::{Params, Scheme, SchemeError, MAX_COPIES};
pub use share::{
    PackRef, Share, ShareError, ShareHeader, ShareId, MAX_GROUP_BYTES, MAX_PACKS_PER_GROUP,
};

/// Default target size of a group: packs smaller than this are encoded together.
pub const GROUP_TARGET_BYTES: u64 = 64 * 1024 * 1024;
