//! Redundancy schemes: `k/n` erasure coding or `copies:c` full copies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest number of full copies a repository may ask for.
pub const MAX_COPIES: u8 = 16;

/// Why a scheme string or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("bad redundancy scheme {0:?}: expected K/N such as 4/8 (any K of N shares restore), or copies:C such as copies:2")]
    Syntax(String),
    #[error("bad redundancy scheme {0:?}: K must be at least 1")]
    KZero(String),
    #[error("bad redundancy scheme {input:?}: N ({n}) must be larger than K ({k}), otherwise no share may be lost")]
    NoRedundancy { input: String, k: u32, n: u32 },
    #[error("bad redundancy scheme {input:?}: N ({n}) must be at most 255 shares")]
    TooManyShares { input: String, n: u32 },
    #[error(
        "bad redundancy scheme {input:?}: copies must be between 1 and {MAX_COPIES}, got {copies}"
    )]
    Copies { input: String, copies: u32 },
}

/// Erasure-code parameters: `n` shares, any `k` of which restore the data.
///
/// Invariant: `1 <= k < n <= 255`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Params {
    k: u8,
    n: u8,
}

impl Params {
    /// `k` of `n`; refuses `k = 0` and `n <= k`.
    pub fn new(k: u8, n: u8) -> Result<Self, SchemeError> {
        check_erasure(&format!("{k}/{n}"), u32::from(k), u32::from(n))
    }
    /// Shares needed to restore.
    pub fn k(&self) -> u8 {
        self.k
    }
    /// Shares written.
    pub fn n(&self) -> u8 {
        self.n
    }
    /// Shares that may be lost with the data still restorable.
    pub fn parity(&self) -> u8 {
        self.n - self.k
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            k: u8,
            n: u8,
        }
        let r = Raw::deserialize(d)?;
        Params::new(r.k, r.n).map_err(serde::de::Error::custom)
    }
}

/// How a repository's packs are kept on other nodes.
///
/// Parsed from `"4/8"` (erasure coding, any 4 of 8 shares restore) or `"copies:2"` (two
/// full copies of every pack on two hosts). The default is 4/8: the same 2× storage as two
/// copies with far better durability (see `book/src/durability.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheme {
    /// Reed–Solomon shares, one per host.
    Erasure(Params),
    /// The pack itself, as is, on this many hosts (1..=[`MAX_COPIES`]).
    Copies(#[serde(deserialize_with = "de_copies")] u8),
}

fn de_copies<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let c = u8::deserialize(d)?;
    Scheme::copies(c)
        .map(|_| c)
        .map_err(serde::de::Error::custom)
}

impl Default for Scheme {
    fn default() -> Self {
        Scheme::Erasure(Params { k: 4, n: 8 })
    }
}

fn check_erasure(input: &str, k: u32, n: u32) -> Result<Params, SchemeError> {
    if k == 0 {
        return Err(SchemeError::KZero(input.to_string()));
    }
    if n <= k {
        return Err(SchemeError::NoRedundancy {
            input: input.to_string(),
            k,
            n,
        });
    }
    if n > 255 {
        return Err(SchemeError::TooManyShares {
            input: input.to_string(),
            n,
        });
    }
    Ok(Params {
        k: k as u8,
        n: n as u8,
    })
}

fn check_copies(input: &str, c: u32) -> Result<u8, SchemeError> {
    if c == 0 || c > u32::from(MAX_COPIES) {
        return Err(SchemeError::Copies {
            input: input.to_string(),
            copies: c,
        });
    }
    Ok(c as u8)
}

impl Scheme {
    /// `k/n` erasure coding.
    pub fn erasure(k: u8, n: u8) -> Result<Self, SchemeError> {
        Params::new(k, n).map(Scheme::Erasure)
    }
    /// `c` full copies.
    pub fn copies(c: u8) -> Result<Self, SchemeError> {
        check_copies(&format!("copies:{c}"), u32::from(c)).map(Scheme::Copies)
    }
    /// Pieces needed to restore (1 for copies).
    pub fn k(&self) -> u8 {
        match self {
            Scheme::Erasure(p) => p.k,
            Scheme::Copies(_) => 1,
        }
    }
    /// Pieces stored, each on its own host (the number of copies for copies).
    pub fn n(&self) -> u8 {
        match self {
            Scheme::Erasure(p) => p.n,
            Scheme::Copies(c) => *c,
        }
    }
    /// Hosts that may be lost with the data still restorable.
    pub fn tolerated_losses(&self) -> u8 {
        self.n() - self.k()
    }
    /// Bytes stored on hosts per byte of packs (n/k; the small share headers aside).
    pub fn storage_factor(&self) -> f64 {
        f64::from(self.n()) / f64::from(self.k())
    }
    /// The erasure parameters, if this is an erasure scheme.
    pub fn params(&self) -> Option<Params> {
        match self {
            Scheme::Erasure(p) => Some(*p),
            Scheme::Copies(_) => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Erasure(p) => write!(f, "{}/{}", p.k, p.n),
            Scheme::Copies(c) => write!(f, "copies:{c}"),
        }
    }
}

fn number(input: &str, s: &str) -> Result<u32, SchemeError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SchemeError::Syntax(input.to_string()));
    }
    s.parse()
        .map_err(|_| SchemeError::Syntax(input.to_string()))
}

impl FromStr for Scheme {
    type Err = SchemeError;
    fn from_str(input: &str) -> Result<Self, SchemeError> {
        let s = input.trim();
        if let Some(c) = s.strip_prefix("copies:") {
            return check_copies(input, number(input, c)?).map(Scheme::Copies);
        }
        match s.split_once('/') {
            Some((k, n)) => {
                check_erasure(input, number(input, k)?, number(input, n)?).map(Scheme::Erasure)
            }
            None => Err(SchemeError::Syntax(input.to_string())),
        }
    }
}
