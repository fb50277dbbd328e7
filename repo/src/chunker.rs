//! Content-defined chunking (FastCDC v2020): boundaries follow the content, so an insert
//! in the middle of a file changes only the chunks around it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    /// Chosen by measurement (see the book's performance page): on the mixed corpus's edit
    /// step 256 KiB / 512 KiB / 4 MiB stores 9.2 MB where restic's 512 KiB / 1 MiB / 8 MiB
    /// stores 10.0 MB, and 1 MiB / 2 MiB / 8 MiB 11.6 MB; the first snapshot is the same size
    /// within 0.2 %.
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 512 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(format!("chunker sizes out of range: {self:?}"))
        }
    }

    /// Cut points of an in-memory buffer, as (offset, length).
    pub fn cut(&self, data: &[u8]) -> Vec<(usize, usize)> {
        if data.is_empty() {
            return Vec::new();
        }
        fastcdc::v2020::FastCDC::new(data, self.min, self.avg, self.max)
            .map(|c| (c.offset, c.length))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_input_and_respect_the_bounds() {
        let p = ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let mut data = vec![0u8; 1_000_000];
        crate::crypto::random_bytes(&mut data);
        let cuts = p.cut(&data);
        let mut pos = 0;
        for (i, (off, len)) in cuts.iter().enumerate() {
            assert_eq!(*off, pos);
            assert!(*len <= 65536);
            if i + 1 < cuts.len() {
                assert!(*len >= 4096);
            }
            pos += len;
        }
        assert_eq!(pos, data.len());
    }

    #[test]
    fn an_insert_changes_only_nearby_chunks() {
        let p = ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let mut data = vec![0u8; 2_000_000];
        crate::crypto::random_bytes(&mut data);
        let before: std::collections::HashSet<&[u8]> = p
            .cut(&data)
            .into_iter()
            .map(|(o, l)| &data[o..o + l])
            .collect();
        let mut edited = data.clone();
        edited.splice(1_000_000..1_000_000, [1u8; 10]);
        let after = p.cut(&edited);
        let new = after
            .iter()
            .filter(|(o, l)| !before.contains(&edited[*o..*o + *l]))
            .count();
        assert!(new <= 2, "{new} chunks changed");
    }
}
