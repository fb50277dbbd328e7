//! zstd where it pays: a sample is tried first, so incompressible data costs almost nothing.

use crate::crypto::FLAG_ZSTD;

/// zstd level used for chunks; chosen by measurement (see the book's performance page).
pub const DEFAULT_LEVEL: i32 = 3;
const SAMPLE: usize = 16 * 1024;

/// Returns (flags, bytes to seal). Compresses only when the result is at least 3 % smaller.
pub fn maybe_compress(plain: &[u8], level: i32) -> (u8, std::borrow::Cow<'_, [u8]>) {
    if level == 0 || plain.len() < 64 {
        return (0, plain.into());
    }
    if plain.len() > 2 * SAMPLE {
        // Probe a slice from the middle: random/compressed data shows itself quickly.
        let mid = plain.len() / 2 - SAMPLE / 2;
        let sample = &plain[mid..mid + SAMPLE];
        match zstd::bulk::compress(sample, 1) {
            Ok(c) if c.len() < sample.len() * 97 / 100 => {}
            _ => return (0, plain.into()),
        }
    }
    match zstd::bulk::compress(plain, level) {
        Ok(c) if c.len() < plain.len() - plain.len() / 32 => (FLAG_ZSTD, c.into()),
        _ => (0, plain.into()),
    }
}

/// Undo `maybe_compress`; `plain_len` is the recorded length (bounds the allocation).
pub fn decompress(flags: u8, bytes: Vec<u8>, plain_len: usize) -> Option<Vec<u8>> {
    if flags & FLAG_ZSTD == 0 {
        return Some(bytes);
    }
    let out = zstd::bulk::decompress(&bytes, plain_len).ok()?;
    (out.len() == plain_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_random_is_not() {
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(2000);
        let (f, c) = maybe_compress(&text, DEFAULT_LEVEL);
        assert_eq!(f, FLAG_ZSTD);
        assert!(c.len() < text.len() / 10);
        assert_eq!(decompress(f, c.into_owned(), text.len()).unwrap(), text);

        let mut random = vec![0u8; 100_000];
        crate::crypto::random_bytes(&mut random);
        let (f, c) = maybe_compress(&random, DEFAULT_LEVEL);
        assert_eq!(f, 0);
        assert_eq!(c.len(), random.len());
    }
}
