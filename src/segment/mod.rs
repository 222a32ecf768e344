//! Segment files: immutable, compressed, columnar files holding one time partition of many
//! machines, with an index at the end (FORMAT.md, "Segment files").
//!
//! - [`writer`]: groups each machine's fields by how they were sampled, cuts blocks, encodes
//!   chunks with [`crate::codec`], computes block statistics, writes the index;
//! - [`reader`]: maps a file, validates its trailer and index against the file before using any
//!   of it, and decodes blocks after checking their checksums.

pub(crate) mod reader;
pub(crate) mod writer;

use crate::model::Timestamp;

pub(crate) use reader::Segment;

/// First bytes of a segment file.
pub(crate) const MAGIC: &[u8; 8] = b"GEMBASEG";
/// Last bytes of a segment file.
pub(crate) const END_MAGIC: &[u8; 8] = b"GEMBAEND";
/// The segment format version this build writes and reads.
pub(crate) const VERSION: u16 = 1;
/// Bytes of the header.
pub(crate) const HEADER_LEN: usize = 16;
/// Bytes of the trailer.
pub(crate) const TRAILER_LEN: usize = 32;

/// Footer codecs.
pub(crate) const FOOTER_RAW: u8 = 0;
pub(crate) const FOOTER_ZSTD: u8 = 1;
/// Largest decompressed index accepted (a sanity bound against hostile files).
pub(crate) const INDEX_BYTES_MAX: usize = 1 << 30;

/// Field chunk modes.
pub(crate) const CHUNK_ALL_VALID: u8 = 0;
pub(crate) const CHUNK_WITH_VALIDITY: u8 = 1;

/// File name of segment `id`.
pub(crate) fn file_name(id: u64) -> String {
    format!("seg-{id:016}.gseg")
}

/// The id in a segment file's name, or `None` for other files.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".gseg")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where a chunk lies in the file and its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

pub(crate) use crate::stats::Stats;

/// A field's chunk in one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FieldChunk {
    pub(crate) chunk: ChunkRef,
    pub(crate) stats: Stats,
}

/// One block of a group: a row range with one timestamp chunk and one chunk per group field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BlockIndex {
    pub(crate) rows: u32,
    pub(crate) ts_min: Timestamp,
    pub(crate) ts_max: Timestamp,
    pub(crate) ts_chunk: ChunkRef,
    pub(crate) fields: Vec<FieldChunk>,
}

/// Fields of a machine that share one timestamp column (sampled together).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupIndex {
    /// Indices into the machine's field list.
    pub(crate) fields: Vec<u16>,
    pub(crate) blocks: Vec<BlockIndex>,
}

impl GroupIndex {
    /// The blocks holding timestamps in `range`: a binary search, since a group's blocks are
    /// disjoint and ascending (checked when the index is read).
    pub(crate) fn blocks_in(&self, range: crate::model::TimeRange) -> &[BlockIndex] {
        &self.blocks[self.block_range(range)]
    }

    /// The positions of [`GroupIndex::blocks_in`]'s blocks in `blocks`.
    pub(crate) fn block_range(&self, range: crate::model::TimeRange) -> std::ops::Range<usize> {
        let lo = self.blocks.partition_point(|b| b.ts_max < range.start);
        lo..lo + self.blocks[lo..].partition_point(|b| b.ts_min < range.end)
    }
}

/// One machine's part of a segment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MachineIndex {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) fields: Vec<(std::sync::Arc<str>, crate::model::FieldType)>,
    pub(crate) groups: Vec<GroupIndex>,
    /// Per field (same order as `fields`): its group and position in the group.
    pub(crate) loc: Vec<(u32, u32)>,
    pub(crate) ts_min: Timestamp,
    pub(crate) ts_max: Timestamp,
}

impl MachineIndex {
    /// The field's group and position in it.
    pub(crate) fn locate(&self, field: &str) -> Option<(usize, usize)> {
        let fi = self.fields.iter().position(|(n, _)| n.len() == field.len() && &**n == field)?;
        let (g, p) = self.loc[fi];
        Some((g as usize, p as usize))
    }
}

/// The index of a segment file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SegmentIndex {
    pub(crate) partition_start: Timestamp,
    pub(crate) partition_width: i64,
    pub(crate) min_seq: u64,
    pub(crate) max_seq: u64,
    /// Every delete with a sequence number up to this was applied when the file was written
    /// (at least `max_seq`): only later deletes can hide its values.
    pub(crate) applied_seq: u64,
    /// Sorted by name, byte-wise.
    pub(crate) machines: Vec<MachineIndex>,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::writer::{MachineData, encode_segment};
    use super::*;
    use crate::io::Bytes;
    use crate::model::{Bitmap, FieldType, TimeRange};
    use crate::rows::{ColData, RowSet};

    fn col(vals: Vec<u64>, valid: impl Fn(usize) -> bool) -> Option<ColData> {
        let mut bm = Bitmap::new();
        let vals =
            vals.into_iter().enumerate().map(|(i, v)| if valid(i) { v } else { 0 }).collect::<Vec<_>>();
        for i in 0..vals.len() {
            bm.push(valid(i));
        }
        Some(ColData { vals, valid: bm })
    }

    /// Two machines; fields of every type, special floats, a sparse field in its own group.
    pub(crate) fn sample() -> Vec<MachineData> {
        let n = 23usize;
        let ts: Vec<i64> = (0..n as i64).map(|i| 1000 + i * 10 + (i % 3)).collect();
        let specials = [f64::NAN, -0.0, f64::INFINITY, f64::MIN_POSITIVE / 3.0, 1.5];
        let f: Vec<u64> =
            (0..n).map(|i| if i < 5 { specials[i].to_bits() } else { (i as f64 * 0.1).to_bits() }).collect();
        let g: Vec<u64> = (0..n).map(|i| (i as i64 * -7_000_000_000) as u64).collect();
        let b: Vec<u64> = (0..n).map(|i| (i % 4 == 0) as u64).collect();
        let s: Vec<u64> = (0..n).map(|i| (i as f64).to_bits()).collect();
        let schema: Vec<(Arc<str>, FieldType)> = vec![
            ("speed".into(), FieldType::F64),
            ("count".into(), FieldType::I64),
            ("alarm".into(), FieldType::Bool),
            ("rare".into(), FieldType::F64),
        ];
        let rows = RowSet {
            ts: ts.clone(),
            cols: vec![col(f, |i| i != 7), col(g, |_| true), col(b, |i| i % 5 != 1), col(s, |i| i % 6 == 0)],
        };
        let m1 = MachineData::new("press-01".into(), &schema, rows);
        let rows2 =
            RowSet { ts: ts[..3].to_vec(), cols: vec![col(vec![1, 2, 3], |_| true), None, None, None] };
        let m2 = MachineData::new("pump/ü".into(), &schema, rows2);
        vec![m1, m2]
    }

    fn read_all(seg: &Segment) -> crate::Result<Vec<RowSet>> {
        let mut out = Vec::new();
        for m in &seg.index.machines {
            let names: Vec<&str> = m.fields.iter().map(|(n, _)| &**n).collect();
            out.push(seg.read(m, TimeRange::ALL, &names, &[])?);
        }
        Ok(out)
    }

    fn encode(block_rows: usize) -> Vec<u8> {
        encode_segment(0, 1 << 20, 1, 9, 9, &sample(), block_rows).0
    }

    #[test]
    fn round_trip_with_blocks_and_groups() {
        for block_rows in [1, 4, 1000] {
            let bytes = encode(block_rows);
            let seg = Segment::from_bytes(PathBuf::from("s"), 1, Bytes::from(bytes)).unwrap();
            let m = &seg.index.machines[0];
            assert_eq!(m.groups.len(), 2, "the sparse field has its own timestamps");
            let got = read_all(&seg).unwrap();
            for (g, want) in got.iter().zip(sample()) {
                assert_eq!(g, &want.rows);
            }
            assert_eq!(
                seg.verify().unwrap(),
                sample()
                    .iter()
                    .map(|m| m.rows.cols.iter().flatten().map(|c| c.valid.count_ones() as u64).sum::<u64>())
                    .sum::<u64>()
            );
            // A range read returns exactly the rows inside.
            let names = ["speed", "count"];
            let r = seg.read(m, TimeRange::from(1050..1101), &names, &[]).unwrap();
            assert!(r.ts.iter().all(|&t| (1050..1101).contains(&t)));
            assert_eq!(r.ts.len(), 5);
        }
    }

    #[test]
    fn every_bit_flip_and_truncation_is_an_error_or_the_right_data() {
        let bytes = encode(4);
        let want = read_all(&Segment::from_bytes(PathBuf::from("s"), 1, Bytes::from(bytes.clone())).unwrap())
            .unwrap();
        let check = |b: Vec<u8>, what: &str| match Segment::from_bytes(PathBuf::from("s"), 1, Bytes::from(b))
        {
            Err(crate::Error::Corrupt { .. }) | Err(crate::Error::FormatVersion { .. }) => {}
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(seg) => match read_all(&seg) {
                Err(crate::Error::Corrupt { .. }) => {}
                Err(e) => panic!("{what}: unexpected error {e}"),
                Ok(got) => assert_eq!(got, want, "{what}: wrong data without an error"),
            },
        };
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            check(b, &format!("flip of bit {bit}"));
        }
        for cut in 0..bytes.len() {
            check(bytes[..cut].to_vec(), &format!("cut at {cut}"));
        }
    }
}
