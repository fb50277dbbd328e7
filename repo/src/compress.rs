//! zstd where it pays: a few samples are tried first, so incompressible data costs almost
//! nothing, and each thread keeps its zstd contexts (creating one per chunk cost 5 % of a
//! first snapshot's CPU time).

use crate::crypto::FLAG_ZSTD;
use std::cell::RefCell;

/// zstd level used for chunks; chosen by measurement (see the book's performance page).
pub const DEFAULT_LEVEL: i32 = 3;
/// Size of one probe sample.
const SAMPLE: usize = 8 * 1024;
/// Probe samples taken from a large chunk.
const SAMPLES: usize = 4;

thread_local! {
    static CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static PROBE: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd-compress `data` at `level` with this thread's context.
pub fn zstd_compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        c.as_mut()?.1.compress(data).ok()
    })
}

/// Does a sample shrink by at least 3 % at zstd's fastest positive level?
fn sample_shrinks(sample: &[u8]) -> bool {
    PROBE.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            *p = zstd::bulk::Compressor::new(1).ok();
        }
        match p.as_mut().map(|c| c.compress(sample)) {
            Some(Ok(c)) => c.len() < sample.len() * 97 / 100,
            _ => false,
        }
    })
}

/// Would compressing `plain` pay? Samples spread over the chunk are probed, so a chunk that
/// mixes random data with text or zeros (disk images, databases) is still compressed.
pub fn worth_compressing(plain: &[u8]) -> bool {
    if plain.len() <= 2 * SAMPLE * SAMPLES {
        return true;
    }
    let stride = plain.len() / SAMPLES;
    (0..SAMPLES).any(|i| {
        let at = i * stride + stride / 2 - SAMPLE / 2;
        sample_shrinks(&plain[at..at + SAMPLE])
    })
}

/// Returns (flags, bytes to seal). Compresses only when the result is at least 3 % smaller.
pub fn maybe_compress(plain: &[u8], level: i32) -> (u8, std::borrow::Cow<'_, [u8]>) {
    if level == 0 || plain.len() < 64 || !worth_compressing(plain) {
        return (0, plain.into());
    }
    match zstd_compress(plain, level) {
        Some(c) if c.len() < plain.len() - plain.len() / 32 => (FLAG_ZSTD, c.into()),
        _ => (0, plain.into()),
    }
}

/// Largest output buffer allocated from a recorded length alone (chunks are at most 16 MiB).
const PREALLOC_LIMIT: usize = 64 << 20;

/// Undo `maybe_compress`; `plain_len` is the recorded length (bounds the allocation).
pub fn decompress(flags: u8, bytes: Vec<u8>, plain_len: usize) -> Option<Vec<u8>> {
    if flags & FLAG_ZSTD == 0 {
        return Some(bytes);
    }
    // The recorded length sizes the output buffer up front: beyond any real chunk size,
    // decode into a buffer that grows with the output instead, so a lying length cannot
    // allocate gigabytes by itself (found by fuzzing: book/src/fuzzing.md).
    if plain_len > PREALLOC_LIMIT {
        use std::io::Read;
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&bytes[..])
            .ok()?
            .take(plain_len as u64 + 1)
            .read_to_end(&mut out)
            .ok()?;
        return (out.len() == plain_len).then_some(out);
    }
    let out = DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = zstd::bulk::Decompressor::new().ok();
        }
        d.as_mut()?.decompress(&bytes, plain_len).ok()
    })?;
    (out.len() == plain_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lying_recorded_length_is_refused_without_allocating_it() {
        let text = b"abc".repeat(100);
        let (f, c) = maybe_compress(&text, DEFAULT_LEVEL);
        assert_eq!(f, FLAG_ZSTD);
        assert!(decompress(f, c.to_vec(), 4_143_972_652).is_none());
        assert!(decompress(f, c.to_vec(), PREALLOC_LIMIT + 1).is_none());
        assert_eq!(decompress(f, c.into_owned(), text.len()).unwrap(), text);
    }

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

    #[test]
    fn mixed_chunks_are_compressed_when_part_of_them_shrinks() {
        // Random in the middle, zeros at one end: a single middle probe would miss it.
        let mut data = vec![0u8; 1 << 20];
        crate::crypto::random_bytes(&mut data[200_000..]);
        let (f, c) = maybe_compress(&data, DEFAULT_LEVEL);
        assert_eq!(f, FLAG_ZSTD);
        assert!(c.len() < data.len() * 85 / 100);
        assert_eq!(decompress(f, c.into_owned(), data.len()).unwrap(), data);
        // Other levels on the same thread use a fresh context of that level.
        let (f1, c1) = maybe_compress(&data, 1);
        assert_eq!(f1, FLAG_ZSTD);
        assert_eq!(decompress(f1, c1.into_owned(), data.len()).unwrap(), data);
    }
}
