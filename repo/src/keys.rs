//! Keys: 32 bytes of entropy, shown as 24 BIP39 words, from which every key is derived.
//!
//! For each purpose a ChaCha20 stream is seeded with
//! `blake3::derive_key("pluto v1 <purpose>", entropy)` and the key is its first 32 bytes.
//! The same words give the same keys and the same node identity on any machine.

use crate::error::{Error, IoContext, Result};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::path::Path;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub const ENTROPY_LEN: usize = 32;

pub const PURPOSE_DATA: &str = "data key";
pub const PURPOSE_ID: &str = "id key";
pub const PURPOSE_NODE: &str = "node identity";
pub const PURPOSE_HOST: &str = "host obfuscation";

/// The one secret: everything else is derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Entropy([u8; ENTROPY_LEN]);

impl Entropy {
    pub fn generate() -> Self {
        let mut e = [0u8; ENTROPY_LEN];
        rand_core::OsRng.fill_bytes(&mut e);
        Entropy(e)
    }

    pub fn from_bytes(bytes: [u8; ENTROPY_LEN]) -> Self {
        Entropy(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; ENTROPY_LEN] {
        &self.0
    }

    /// Parse 24 standard English BIP39 words (case and extra whitespace ignored).
    pub fn from_words(words: &str) -> Result<Self> {
        let normalized = Zeroizing::new(
            words
                .split_whitespace()
                .map(|w| w.to_lowercase())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let count = normalized.split(' ').filter(|w| !w.is_empty()).count();
        if count != 24 {
            return Err(Error::BadWords(format!("expected 24 words, got {count}")));
        }
        let lang = bip39::Language::English;
        // Every unknown word at once, by its place (1-based, as the words are shown) and
        // with the nearest real words, so one look at the written copy fixes them all.
        let unknown: Vec<String> = normalized
            .split(' ')
            .enumerate()
            .filter(|(_, w)| lang.find_word(w).is_none())
            .map(|(i, w)| {
                format!(
                    "word {} {w:?} is not a recovery word (nearest: {})",
                    i + 1,
                    nearest_words(w).join(", ")
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(Error::BadWords(unknown.join("; ")));
        }
        let m = bip39::Mnemonic::parse_in_normalized(lang, &normalized).map_err(|e| {
            Error::BadWords(match e {
                bip39::Error::InvalidChecksum => {
                    "the words are all real recovery words but do not \
                    fit together (their checksum fails): one is wrong, or two are in the wrong \
                    order; compare them one by one, in order, with your written copy"
                        .to_string()
                }
                e => e.to_string(),
            })
        })?;
        let (bytes, len) = m.to_entropy_array();
        let mut out = [0u8; ENTROPY_LEN];
        out.copy_from_slice(&bytes[..len.min(ENTROPY_LEN)]);
        Ok(Entropy(out))
    }

    /// The 24 recovery words.
    pub fn words(&self) -> Zeroizing<String> {
        let m = bip39::Mnemonic::from_entropy_in(bip39::Language::English, &self.0)
            .expect("32 bytes is a valid BIP39 entropy length");
        Zeroizing::new(m.to_string())
    }

    /// The ChaCha20 stream for one purpose.
    fn stream(&self, purpose: &str) -> ChaCha20Rng {
        let seed = blake3::derive_key(&format!("pluto v1 {purpose}"), &self.0);
        ChaCha20Rng::from_seed(seed)
    }

    fn key32(&self, purpose: &str) -> [u8; 32] {
        let mut k = [0u8; 32];
        self.stream(purpose).fill_bytes(&mut k);
        k
    }

    pub fn derive(&self) -> Keys {
        Keys {
            data: Zeroizing::new(self.key32(PURPOSE_DATA)),
            id: Zeroizing::new(self.key32(PURPOSE_ID)),
            node: SigningKey::from_bytes(&Zeroizing::new(self.key32(PURPOSE_NODE))),
            host: Zeroizing::new(self.key32(PURPOSE_HOST)),
        }
    }
}

/// All keys of one repository/node. Zeroized on drop.
pub struct Keys {
    /// AES-256-GCM master key; per-pack and per-file subkeys are derived from it.
    pub data: Zeroizing<[u8; 32]>,
    /// BLAKE3 key for object ids, so ids do not reveal content.
    pub id: Zeroizing<[u8; 32]>,
    /// The node's Ed25519 identity (its public key is the node id).
    pub node: SigningKey,
    /// Key a host uses to obfuscate other people's packs on its disk.
    pub host: Zeroizing<[u8; 32]>,
}

impl Keys {
    pub fn node_id_hex(&self) -> String {
        hex::encode(self.node.verifying_key().as_bytes())
    }
}

const SECRET_HEADER: &str = "pluto secret v1";

/// Write the secret file, readable only by the user.
pub fn write_secret(tmp_dir: &Path, path: &Path, entropy: &Entropy) -> Result<()> {
    let text = Zeroizing::new(format!(
        "{SECRET_HEADER}\nentropy {}\n",
        hex::encode(entropy.as_bytes())
    ));
    crate::fsutil::write_atomic(tmp_dir, path, text.as_bytes(), 0o600)
}

pub fn read_secret(path: &Path) -> Result<Entropy> {
    let text = Zeroizing::new(std::fs::read_to_string(path).at(path)?);
    let bad = |reason: &str| Error::BadSecret {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(SECRET_HEADER) {
        return Err(bad("first line is not 'pluto secret v1'"));
    }
    let hexpart = lines
        .next()
        .and_then(|l| l.strip_prefix("entropy "))
        .ok_or_else(|| bad("no 'entropy' line"))?;
    let mut out = [0u8; ENTROPY_LEN];
    hex::decode_to_slice(hexpart.trim(), &mut out)
        .map_err(|_| bad("entropy is not 64 hex digits"))?;
    Ok(Entropy(out))
}

/// The BIP39 words closest to `w` by edit distance (at most 3 of them, nearest first).
pub fn nearest_words(w: &str) -> Vec<&'static str> {
    let mut scored: Vec<(usize, &'static str)> = bip39::Language::English
        .word_list()
        .iter()
        .map(|c| (edit_distance(w, c), *c))
        .collect();
    scored.sort();
    let best = scored.first().map_or(0, |s| s.0);
    scored
        .into_iter()
        .take_while(|(d, _)| *d <= best + 1)
        .take(3)
        .map(|(_, c)| c)
        .collect()
}

/// Levenshtein distance (insertions, deletions, substitutions), with a swap of two
/// neighbouring letters counting as one edit too (a common typo).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_to_the_same_entropy() {
        let e = Entropy::generate();
        let w = e.words();
        assert_eq!(w.split(' ').count(), 24);
        let back = Entropy::from_words(&w.to_uppercase()).unwrap();
        assert_eq!(back.as_bytes(), e.as_bytes());
    }

    #[test]
    fn wrong_word_count_and_bad_checksum_are_refused() {
        assert!(matches!(
            Entropy::from_words("abandon abandon"),
            Err(Error::BadWords(_))
        ));
        let words = ["abandon"; 24].join(" ");
        assert!(matches!(
            Entropy::from_words(&words),
            Err(Error::BadWords(_))
        ));
    }

    #[test]
    fn purposes_give_independent_keys() {
        let k = Entropy::from_bytes([7; 32]).derive();
        assert_ne!(*k.data, *k.id);
        assert_ne!(*k.data, *k.host);
    }
}
