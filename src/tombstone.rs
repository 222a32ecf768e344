//! Tombstones: deletes of a machine's fields over a time range.
//!
//! A delete is a log record with a sequence number `seq`. It hides every value written before
//! it (sequence number below `seq`) that it covers, and nothing written after it. Sources know
//! which of their values are older: a segment's values are all at most its `max_seq`; memtable
//! rows carry the sequence number of their batch. So a tombstone applies to a segment when
//! `tombstone.seq > segment.max_seq`, and to the memtable rows appended before it.
//!
//! Queries mask covered values right after decoding them; statistics of a block that a
//! tombstone touches are never used. Flush leaves deleted memtable rows out; compaction
//! rewrites segments without the deleted values, after which the tombstone is dropped from the
//! manifest once no older data could still be under it.

use std::sync::Arc;

use crate::model::{Bitmap, TimeRange, Timestamp};

/// One delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub(crate) seq: u64,
    pub(crate) machine: Arc<str>,
    /// `None`: every field.
    pub(crate) fields: Option<Vec<Arc<str>>>,
    pub(crate) range: TimeRange,
}

impl Tombstone {
    pub(crate) fn covers_field(&self, field: &str) -> bool {
        self.fields.as_ref().is_none_or(|fs| fs.iter().any(|f| &**f == field))
    }

    /// Whether it hides values of a source whose values are all at most `max_seq`.
    pub(crate) fn applies_to(&self, max_seq: u64) -> bool {
        self.seq > max_seq
    }

    /// Encodes for the log and the manifest:
    /// `seq u64 | machine_len u8 | machine | start i64 | end i64 | n_fields u16 (0: all) | (len u8, name)*`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(self.machine.len() as u8);
        out.extend_from_slice(self.machine.as_bytes());
        out.extend_from_slice(&self.range.start.to_le_bytes());
        out.extend_from_slice(&self.range.end.to_le_bytes());
        let fields = self.fields.as_deref().unwrap_or(&[]);
        out.extend_from_slice(&(fields.len() as u16).to_le_bytes());
        for f in fields {
            out.push(f.len() as u8);
            out.extend_from_slice(f.as_bytes());
        }
    }

    /// Decodes one tombstone from the front of `bytes`; returns it and the bytes used.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Tombstone, usize), String> {
        let mut pos = 0;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let s = bytes.get(pos..pos + n).ok_or("tombstone ends early")?;
            pos += n;
            Ok(s)
        };
        let seq = u64::from_le_bytes(take(8)?.try_into().unwrap());
        let mlen = take(1)?[0] as usize;
        let machine = std::str::from_utf8(take(mlen)?).map_err(|_| "machine id is not UTF-8")?;
        crate::model::validate_machine_id(machine).map_err(|e| e.to_string())?;
        let start = i64::from_le_bytes(take(8)?.try_into().unwrap());
        let end = i64::from_le_bytes(take(8)?.try_into().unwrap());
        if start > end {
            return Err("tombstone range is reversed".into());
        }
        let n = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
        let mut fields = Vec::new();
        for _ in 0..n {
            let flen = take(1)?[0] as usize;
            let f = std::str::from_utf8(take(flen)?).map_err(|_| "field name is not UTF-8")?;
            crate::model::validate_field_name(f).map_err(|e| e.to_string())?;
            fields.push(Arc::from(f));
        }
        let t = Tombstone {
            seq,
            machine: Arc::from(machine),
            fields: (n > 0).then_some(fields),
            range: TimeRange { start, end },
        };
        Ok((t, pos))
    }
}

/// The tombstones that hide values of `field` of `machine` in a source whose values are at
/// most `max_seq`: their ranges.
pub(crate) fn ranges_for(
    tombs: &[Arc<Tombstone>],
    machine: &str,
    field: &str,
    max_seq: u64,
) -> Vec<TimeRange> {
    tombs
        .iter()
        .filter(|t| t.applies_to(max_seq) && &*t.machine == machine && t.covers_field(field))
        .map(|t| t.range)
        .collect()
}

/// Clears the validity of rows whose timestamp (ascending `ts`) lies in any of `ranges`.
/// Returns how many values were hidden.
pub(crate) fn mask(ts: &[Timestamp], valid: &mut Bitmap, ranges: &[TimeRange]) -> usize {
    let mut hidden = 0;
    for r in ranges {
        let lo = ts.partition_point(|&t| t < r.start);
        let hi = ts.partition_point(|&t| t < r.end);
        for i in lo..hi {
            if valid.get(i) {
                valid.set(i, false);
                hidden += 1;
            }
        }
    }
    hidden
}

/// True when any range overlaps `[min, max]`.
pub(crate) fn any_overlap(ranges: &[TimeRange], min: Timestamp, max: Timestamp) -> bool {
    ranges.iter().any(|r| r.overlaps(min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let t = Tombstone {
            seq: 42,
            machine: "press-07".into(),
            fields: Some(vec!["a".into(), "temp_c".into()]),
            range: TimeRange { start: -5, end: 99 },
        };
        let mut b = Vec::new();
        t.encode(&mut b);
        let (d, n) = Tombstone::decode(&b).unwrap();
        assert_eq!((d, n), (t.clone(), b.len()));
        for cut in 0..b.len() {
            assert!(Tombstone::decode(&b[..cut]).is_err());
        }
        let all = Tombstone { fields: None, ..t };
        let mut b = Vec::new();
        all.encode(&mut b);
        assert_eq!(Tombstone::decode(&b).unwrap().0, all);
    }

    #[test]
    fn masking() {
        let ts = [1, 3, 5, 7, 9];
        let mut v = Bitmap::with_len(5, true);
        v.set(2, false);
        let n = mask(&ts, &mut v, &[TimeRange { start: 3, end: 8 }]);
        assert_eq!(n, 2);
        assert_eq!((0..5).map(|i| v.get(i)).collect::<Vec<_>>(), vec![true, false, false, false, true]);
    }
}
