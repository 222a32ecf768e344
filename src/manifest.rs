//! The manifest: the one truth of which segment files are live (FORMAT.md, "Manifest").
//!
//! It is small and rewritten whole on every change, atomically: `MANIFEST.tmp` is written and
//! synced, renamed over `MANIFEST`, and the directory is synced. On open, the manifest alone
//! decides what is live; other segment files and temporary files are removed.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::Timestamp;
use crate::tombstone::Tombstone;

/// File name of the manifest.
pub(crate) const FILE: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"GEMBAMAN";
/// Manifest format version this build writes and reads.
pub(crate) const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4;
const SEGMENT_ENTRY_LEN: usize = 9 * 8;
/// Most segments one manifest may list (a sanity bound for hostile files).
const SEGMENTS_MAX: usize = 1 << 24;

/// A live segment as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub(crate) id: u64,
    pub(crate) partition_start: Timestamp,
    pub(crate) ts_min: Timestamp,
    pub(crate) ts_max: Timestamp,
    pub(crate) min_seq: u64,
    pub(crate) max_seq: u64,
    pub(crate) applied_seq: u64,
    pub(crate) bytes: u64,
    pub(crate) points: u64,
}

/// The manifest's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Incremented on every write.
    pub(crate) generation: u64,
    /// Every log record with a sequence number up to this is in the live segments.
    pub(crate) flushed_seq: u64,
    /// The next segment id to hand out.
    pub(crate) next_segment_id: u64,
    /// The newest timestamp ever written (retention counts back from it); `i64::MIN` when none.
    pub(crate) max_ts: i64,
    pub(crate) segments: Vec<SegmentMeta>,
    /// Deletes whose log records may be gone (sequence number up to `flushed_seq`) and that
    /// may still hide values in live segments.
    pub(crate) tombstones: Vec<Tombstone>,
}

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest {
            generation: 0,
            flushed_seq: 0,
            next_segment_id: 0,
            max_ts: i64::MIN,
            segments: Vec::new(),
            tombstones: Vec::new(),
        }
    }
}

impl Manifest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 32 + self.segments.len() * SEGMENT_ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.flushed_seq.to_le_bytes());
        out.extend_from_slice(&self.next_segment_id.to_le_bytes());
        out.extend_from_slice(&self.max_ts.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for s in &self.segments {
            for v in [
                s.id,
                s.partition_start as u64,
                s.ts_min as u64,
                s.ts_max as u64,
                s.min_seq,
                s.max_seq,
                s.applied_seq,
                s.bytes,
                s.points,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.tombstones.len() as u32).to_le_bytes());
        for t in &self.tombstones {
            t.encode(&mut out);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a manifest; any damage is `Error::Corrupt` with the offset, never a panic.
    pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        let corrupt = |off: usize, what: &str| Error::corrupt(path, off as u64, what);
        if bytes.len() < HEADER_LEN + 36 + 8 {
            return Err(corrupt(0, "manifest shorter than its header"));
        }
        if &bytes[0..8] != MAGIC {
            return Err(corrupt(0, "bad manifest magic"));
        }
        let body = &bytes[..bytes.len() - 4];
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if crc32fast::hash(body) != crc {
            return Err(corrupt(bytes.len() - 4, "manifest checksum mismatch"));
        }
        if version != VERSION {
            return Err(Error::FormatVersion {
                file: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let u64_at = |off: usize| u64::from_le_bytes(body[off..off + 8].try_into().unwrap());
        let generation = u64_at(16);
        let flushed_seq = u64_at(24);
        let next_segment_id = u64_at(32);
        let max_ts = u64_at(40) as i64;
        let n = u32::from_le_bytes(body[48..52].try_into().unwrap()) as usize;
        let start = 52;
        let seg_end = start + n.min(SEGMENTS_MAX) * SEGMENT_ENTRY_LEN;
        if n > SEGMENTS_MAX || body.len() < seg_end + 4 {
            return Err(corrupt(48, "segment count disagrees with the manifest's size"));
        }
        let mut segments = Vec::with_capacity(n);
        for i in 0..n {
            let off = start + i * SEGMENT_ENTRY_LEN;
            let s = SegmentMeta {
                id: u64_at(off),
                partition_start: u64_at(off + 8) as i64,
                ts_min: u64_at(off + 16) as i64,
                ts_max: u64_at(off + 24) as i64,
                min_seq: u64_at(off + 32),
                max_seq: u64_at(off + 40),
                applied_seq: u64_at(off + 48),
                bytes: u64_at(off + 56),
                points: u64_at(off + 64),
            };
            if s.id >= next_segment_id
                || s.ts_min > s.ts_max
                || s.min_seq > s.max_seq
                || s.applied_seq < s.max_seq
                || s.max_seq > flushed_seq
            {
                return Err(corrupt(off, "impossible segment entry"));
            }
            if segments.iter().any(|p: &SegmentMeta| p.id == s.id) {
                return Err(corrupt(off, "segment listed twice"));
            }
            segments.push(s);
        }
        let nt = u32::from_le_bytes(body[seg_end..seg_end + 4].try_into().unwrap()) as usize;
        let mut pos = seg_end + 4;
        let mut tombstones = Vec::with_capacity(nt.min((body.len() - pos) / 27));
        for _ in 0..nt {
            let (t, used) = Tombstone::decode(&body[pos..]).map_err(|w| corrupt(pos, &w))?;
            if t.seq > flushed_seq {
                return Err(corrupt(pos, "tombstone newer than the flushed data"));
            }
            tombstones.push(t);
            pos += used;
        }
        if pos != body.len() {
            return Err(corrupt(pos, "unexpected bytes after the tombstones"));
        }
        Ok(Manifest { generation, flushed_seq, next_segment_id, max_ts, segments, tombstones })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TimeRange;

    fn sample() -> Manifest {
        Manifest {
            generation: 7,
            flushed_seq: 99,
            next_segment_id: 5,
            max_ts: 77,
            segments: (1..4)
                .map(|i| SegmentMeta {
                    id: i,
                    partition_start: 0,
                    ts_min: 10 * i as i64,
                    ts_max: 10 * i as i64 + 5,
                    min_seq: i,
                    max_seq: 10 + i,
                    applied_seq: 10 + i,
                    bytes: 1000,
                    points: 100,
                })
                .collect(),
            tombstones: vec![Tombstone {
                seq: 50,
                machine: "m".into(),
                fields: Some(vec!["f".into()]),
                range: TimeRange { start: 1, end: 9 },
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(Path::new("M"), &m.encode()).unwrap(), m);
        let empty = Manifest::default();
        assert_eq!(Manifest::decode(Path::new("M"), &empty.encode()).unwrap(), empty);
    }

    #[test]
    fn every_bit_flip_and_truncation_is_an_error() {
        let bytes = sample().encode();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(Path::new("M"), &b).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(Path::new("M"), &bytes[..cut]).is_err(), "cut {cut}");
        }
    }
}
