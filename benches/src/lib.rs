//! Benchmarks: criterion micro-benchmarks in `benches/benches`, the side-by-side comparison
//! with restic in `compare.sh` (see the book's performance page). This library holds the
//! deterministic test data both use.

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn random_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic text-like data: Zipf-distributed pseudo-words with separators, about as
/// compressible as source code or logs (zstd -3 ≈ 3×), like the corpus's text files.
pub fn text_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let letters = b"etaoinshrdlcumwfgypbvkjxqz";
    let words: Vec<Vec<u8>> = (0..4000)
        .map(|_| {
            let n = 1 + (next() % 5 + next() % 5) as usize;
            (0..n)
                .map(|_| letters[((next() % 26) * (next() % 26) / 26) as usize])
                .collect()
        })
        .collect();
    let seps: [&[u8]; 8] = [b" ", b" ", b" ", b" ", b"\n", b", ", b". ", b"\n    "];
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let r = next();
        // Zipf-like: small indices far more often.
        let u = (r >> 11) as f64 / (1u64 << 53) as f64;
        let i = ((4000f64).powf(u) as usize).saturating_sub(1).min(3999);
        out.extend_from_slice(&words[i]);
        out.extend_from_slice(seps[(r & 7) as usize]);
    }
    out.truncate(len);
    out
}

/// A benchmark setting from the environment, or its default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of repetitions (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
