//! Encoding a segment file.

use std::sync::Arc;

use super::*;
use crate::codec;
use crate::model::{Bitmap, FieldType};
use crate::rows::{ColData, RowSet};

/// One machine's rows for a segment: its fields (only those with values) and the rows, whose
/// columns line up with `fields` and are all `Some`.
pub(crate) struct MachineData {
    pub(crate) name: Arc<str>,
    pub(crate) fields: Vec<(Arc<str>, FieldType)>,
    pub(crate) rows: RowSet,
}

impl MachineData {
    /// Builds from a row set whose columns line up with `schema`, dropping empty columns.
    pub(crate) fn new(name: Arc<str>, schema: &[(Arc<str>, FieldType)], rows: RowSet) -> MachineData {
        let mut fields = Vec::new();
        let mut cols = Vec::new();
        for (f, c) in schema.iter().zip(rows.cols) {
            if let Some(c) = c
                && c.valid.count_ones() > 0
            {
                fields.push(f.clone());
                cols.push(Some(c));
            }
        }
        MachineData { name, fields, rows: RowSet { ts: rows.ts, cols } }
    }
}

/// Encoder hints ([`codec::Hint`]) kept from one flush to the next, per machine and field.
/// Streaming ingest flushes each field of a machine as a block or two per flush; without the
/// hint of the previous flush every such block would be searched in full (about 1.5x the
/// encoding work of a planned one). Hints change how much work the encoder does, never what
/// a decoder reads. At most [`HintCache::MAX_ENTRIES`] are kept (then it starts over).
#[derive(Default)]
pub(crate) struct HintCache {
    map: parking_lot::Mutex<std::collections::HashMap<HintKey, codec::Hint>>,
}

/// Machine, field, type.
type HintKey = (Arc<str>, Arc<str>, FieldType);

impl HintCache {
    /// Entries kept at most (some 100 bytes each).
    pub(crate) const MAX_ENTRIES: usize = 1 << 20;

    fn get(&self, machine: &Arc<str>, field: &Arc<str>, ty: FieldType) -> Option<codec::Hint> {
        self.map.lock().get(&(machine.clone(), field.clone(), ty)).cloned()
    }

    fn put(&self, machine: &Arc<str>, field: &Arc<str>, ty: FieldType, hint: codec::Hint) {
        let key = (machine.clone(), field.clone(), ty);
        let mut map = self.map.lock();
        if map.len() >= Self::MAX_ENTRIES && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, hint);
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// What the writer produced, for the manifest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSummary {
    pub(crate) ts_min: Timestamp,
    pub(crate) ts_max: Timestamp,
    pub(crate) points: u64,
}

/// Builds a segment file machine by machine, so a caller can stream the bytes to a file
/// (`take_bytes`) while only the index stays in memory.
pub(crate) struct SegmentBuilder {
    out: Vec<u8>,
    /// Bytes already taken by the caller (the offset of `out[0]` in the file).
    taken: u64,
    index: Vec<u8>,
    machines: u32,
    last: Option<Arc<str>>,
    summary: SegmentSummary,
    head: [u8; 40],
}

impl SegmentBuilder {
    pub(crate) fn new(
        partition_start: Timestamp,
        partition_width: i64,
        min_seq: u64,
        max_seq: u64,
        applied_seq: u64,
    ) -> SegmentBuilder {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0u8; 6]);
        debug_assert_eq!(out.len(), HEADER_LEN);
        let mut head = [0u8; 40];
        head[0..8].copy_from_slice(&partition_start.to_le_bytes());
        head[8..16].copy_from_slice(&partition_width.to_le_bytes());
        head[16..24].copy_from_slice(&min_seq.to_le_bytes());
        head[24..32].copy_from_slice(&max_seq.to_le_bytes());
        head[32..40].copy_from_slice(&applied_seq.max(max_seq).to_le_bytes());
        SegmentBuilder {
            out,
            taken: 0,
            index: Vec::new(),
            machines: 0,
            last: None,
            summary: SegmentSummary { ts_min: i64::MAX, ts_max: i64::MIN, points: 0 },
            head,
        }
    }

    /// Adds a machine encoded by [`encode_machine`]; machines must come in byte-wise order of
    /// their ids.
    pub(crate) fn add_encoded(&mut self, e: EncodedMachine) {
        debug_assert!(self.last.as_ref().is_none_or(|l| l.as_bytes() < e.name.as_bytes()));
        self.summary.ts_min = self.summary.ts_min.min(e.ts_min);
        self.summary.ts_max = self.summary.ts_max.max(e.ts_max);
        self.summary.points += e.points;
        let base = self.taken + self.out.len() as u64;
        let mut index = e.index;
        for &at in &e.relocs {
            let rel = u64::from_le_bytes(index[at..at + 8].try_into().expect("8 bytes"));
            index[at..at + 8].copy_from_slice(&(base + rel).to_le_bytes());
        }
        self.out.extend_from_slice(&e.data);
        self.index.extend_from_slice(&index);
        self.machines += 1;
        self.last = Some(e.name);
    }

    /// Machines added so far.
    pub(crate) fn machines(&self) -> u32 {
        self.machines
    }

    /// Bytes encoded but not yet taken.
    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    /// Takes the bytes encoded so far (to write them to the file).
    pub(crate) fn take_bytes(&mut self) -> Vec<u8> {
        self.taken += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// Appends the index (compressed when that pays) and the trailer; returns the last bytes
    /// to write and the summary. The file's total size is the bytes taken plus these.
    pub(crate) fn finish(mut self) -> (Vec<u8>, SegmentSummary) {
        let mut index = Vec::with_capacity(44 + self.index.len());
        index.extend_from_slice(&self.head);
        index.extend_from_slice(&self.machines.to_le_bytes());
        index.extend_from_slice(&self.index);
        let footer_offset = self.taken + self.out.len() as u64;
        let compressed = crate::codec::zstd_compress(&index, 3).filter(|c| c.len() < index.len());
        let (codec_id, stored): (u8, &[u8]) = match &compressed {
            Some(c) => (FOOTER_ZSTD, c),
            None => (FOOTER_RAW, &index),
        };
        let out = &mut self.out;
        out.extend_from_slice(stored);
        out.extend_from_slice(&footer_offset.to_le_bytes());
        out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        out.extend_from_slice(&(index.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(stored).to_le_bytes());
        out.push(codec_id);
        out.push(0);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(END_MAGIC);
        (self.out, self.summary)
    }
}

/// Encodes a whole segment of one partition in memory. `machines` must be sorted by name,
/// unique, and each must have rows (all inside the partition).
#[cfg(test)]
pub(crate) fn encode_segment(
    partition_start: Timestamp,
    partition_width: i64,
    min_seq: u64,
    max_seq: u64,
    applied_seq: u64,
    machines: &[MachineData],
    block_rows: usize,
) -> (Vec<u8>, SegmentSummary) {
    let mut b = SegmentBuilder::new(partition_start, partition_width, min_seq, max_seq, applied_seq);
    for m in machines {
        b.add_encoded(encode_machine(m, block_rows, None));
    }
    let mut bytes = b.take_bytes();
    let (rest, summary) = b.finish();
    bytes.extend_from_slice(&rest);
    (bytes, summary)
}

fn put_name(index: &mut Vec<u8>, name: &str) {
    index.push(name.len() as u8);
    index.extend_from_slice(name.as_bytes());
}

/// Encodes one machine's chunks into `out` and its index entry into `index`; returns the
/// number of values written.
/// One machine encoded on its own: its chunks (offsets relative to `data`), its index entry,
/// and where in the entry the chunk offsets are (to relocate them when appended to a file).
pub(crate) struct EncodedMachine {
    data: Vec<u8>,
    index: Vec<u8>,
    relocs: Vec<usize>,
    points: u64,
    ts_min: Timestamp,
    ts_max: Timestamp,
    name: Arc<str>,
}

/// Encodes one machine (CPU work only; machines can be encoded on several threads).
/// Encodes one machine; `hints`, when given, start each field from the plan its previous
/// flush ended with, and keep the plan this one ends with.
pub(crate) fn encode_machine(
    m: &MachineData,
    block_rows: usize,
    hints: Option<&HintCache>,
) -> EncodedMachine {
    let mut e = EncodedMachine {
        data: Vec::new(),
        index: Vec::new(),
        relocs: Vec::new(),
        points: 0,
        ts_min: m.rows.ts[0],
        ts_max: *m.rows.ts.last().expect("machines have rows"),
        name: m.name.clone(),
    };
    e.points = encode_machine_into(m, block_rows, hints, &mut e.data, &mut e.index, &mut e.relocs);
    e
}

fn encode_machine_into(
    m: &MachineData,
    block_rows: usize,
    cache: Option<&HintCache>,
    out: &mut Vec<u8>,
    index: &mut Vec<u8>,
    relocs: &mut Vec<usize>,
) -> u64 {
    put_name(index, &m.name);
    index.extend_from_slice(&(m.fields.len() as u16).to_le_bytes());
    for (name, ty) in &m.fields {
        put_name(index, name);
        index.push(ty.code());
    }
    let cols: Vec<&ColData> = m.rows.cols.iter().map(|c| c.as_ref().expect("columns are present")).collect();
    let groups = group_fields(&cols);
    index.extend_from_slice(&(groups.len() as u16).to_le_bytes());
    let mut points = 0;
    for (members, union) in groups {
        index.extend_from_slice(&(members.len() as u16).to_le_bytes());
        for &f in &members {
            index.extend_from_slice(&(f as u16).to_le_bytes());
        }
        // The group's rows: those where any member has a value.
        let rows: Vec<usize> = if union.all() { (0..m.rows.len()).collect() } else { union.ones().collect() };
        let n_blocks = rows.len().div_ceil(block_rows);
        index.extend_from_slice(&(n_blocks as u32).to_le_bytes());
        let mut ts = Vec::with_capacity(block_rows);
        let mut valid = Vec::with_capacity(block_rows);
        // Each field's blocks are one series: the encoder repeats its last plan (see
        // `codec::Hint`).
        let mut hints: Vec<Option<codec::Hint>> = members
            .iter()
            .map(|&f| cache.and_then(|c| c.get(&m.name, &m.fields[f].0, m.fields[f].1)))
            .collect();
        for block in rows.chunks(block_rows) {
            ts.clear();
            ts.extend(block.iter().map(|&r| m.rows.ts[r]));
            index.extend_from_slice(&(block.len() as u32).to_le_bytes());
            index.extend_from_slice(&ts[0].to_le_bytes());
            index.extend_from_slice(&ts[ts.len() - 1].to_le_bytes());
            let at = out.len();
            codec::encode_timestamps(&ts, out);
            put_chunk(index, out, relocs, at);
            for (&f, hint) in members.iter().zip(hints.iter_mut()) {
                let (ty, col) = (m.fields[f].1, cols[f]);
                valid.clear();
                valid.extend(block.iter().map(|&r| col.valid.get(r)));
                let present: Vec<u64> =
                    block.iter().filter(|&&r| col.valid.get(r)).map(|&r| col.vals[r]).collect();
                let present_ts: Vec<Timestamp> =
                    block.iter().filter(|&&r| col.valid.get(r)).map(|&r| m.rows.ts[r]).collect();
                let at = out.len();
                if present.len() == block.len() {
                    out.push(CHUNK_ALL_VALID);
                } else {
                    out.push(CHUNK_WITH_VALIDITY);
                    let len_at = out.len();
                    out.extend_from_slice(&[0u8; 4]);
                    codec::encode_bool(&valid, out);
                    let vlen = (out.len() - len_at - 4) as u32;
                    out[len_at..len_at + 4].copy_from_slice(&vlen.to_le_bytes());
                }
                encode_values(ty, &present, hint, out);
                put_chunk(index, out, relocs, at);
                let s = crate::stats::summarize(ty, &present, &present_ts);
                put_stats(index, &s);
                points += present.len() as u64;
            }
        }
        // A field's last block may leave no hint (a short one is no baseline): the previous
        // hint then stays.
        if let Some(c) = cache {
            for (&f, hint) in members.iter().zip(hints) {
                if let Some(h) = hint {
                    c.put(&m.name, &m.fields[f].0, m.fields[f].1, h);
                }
            }
        }
    }
    points
}

/// Records the chunk `out[at..]` in the index: offset, length, crc.
fn put_chunk(index: &mut Vec<u8>, out: &[u8], relocs: &mut Vec<usize>, at: usize) {
    relocs.push(index.len());
    index.extend_from_slice(&(at as u64).to_le_bytes());
    index.extend_from_slice(&((out.len() - at) as u32).to_le_bytes());
    index.extend_from_slice(&crc32fast::hash(&out[at..]).to_le_bytes());
}

fn put_stats(index: &mut Vec<u8>, s: &Stats) {
    index.extend_from_slice(&s.count.to_le_bytes());
    for v in [s.min, s.max, s.sum.to_bits(), s.first, s.last, s.first_ts as u64, s.last_ts as u64] {
        index.extend_from_slice(&v.to_le_bytes());
    }
}

/// Encodes one chunk of a field's values (given as bits); `hint` carries the encoder's plan
/// from the field's previous chunk to this one.
pub(crate) fn encode_values(ty: FieldType, bits: &[u64], hint: &mut Option<codec::Hint>, out: &mut Vec<u8>) {
    match ty {
        FieldType::F64 => {
            let v: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
            codec::encode_f64_hinted(&v, hint, out);
        }
        FieldType::I64 => {
            let v: Vec<i64> = bits.iter().map(|&b| b as i64).collect();
            codec::encode_i64_hinted(&v, hint, out);
        }
        FieldType::Bool => {
            let v: Vec<bool> = bits.iter().map(|&b| b != 0).collect();
            codec::encode_bool(&v, out);
        }
    }
}

/// Groups fields sampled together: a field joins a group when it adds at most 10% rows to the
/// group's row set and has a value in at least half of the resulting rows; otherwise it starts
/// its own group (with its own timestamp column). Returns each group's members (sorted) and the
/// union of their validity.
fn group_fields(cols: &[&ColData]) -> Vec<(Vec<usize>, Bitmap)> {
    let mut order: Vec<(usize, usize)> =
        cols.iter().enumerate().map(|(i, c)| (i, c.valid.count_ones())).collect();
    order.sort_by_key(|&(i, n)| (std::cmp::Reverse(n), i));
    let mut groups: Vec<(Vec<usize>, Bitmap, usize)> = Vec::new();
    for (f, count) in order {
        let v = &cols[f].valid;
        let mut placed = false;
        for g in groups.iter_mut() {
            let mut union = g.1.clone();
            union.or_assign(v);
            let uc = union.count_ones();
            if uc * 10 <= g.2 * 11 && count * 2 >= uc {
                g.0.push(f);
                g.1 = union;
                g.2 = uc;
                placed = true;
                break;
            }
        }
        if !placed {
            groups.push((vec![f], v.clone(), count));
        }
    }
    groups
        .into_iter()
        .map(|(mut members, union, _)| {
            members.sort_unstable();
            (members, union)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine with a temperature-like float field and a status-like integer field.
    fn machine(rows: usize, t0: i64) -> MachineData {
        let ts: Vec<Timestamp> = (0..rows as i64).map(|i| t0 + i * 1000).collect();
        let temp: Vec<u64> = (0..rows)
            .map(|i| {
                ((200.0 + ((t0 as f64 / 1000.0 + i as f64) * 0.01).sin() * 50.0).round() / 10.0).to_bits()
            })
            .collect();
        let status: Vec<u64> = (0..rows).map(|i| ((i / 300) % 3) as u64).collect();
        let col = |vals: Vec<u64>| Some(ColData { vals, valid: Bitmap::with_len(rows, true) });
        let schema: Vec<(Arc<str>, FieldType)> =
            vec![("temp".into(), FieldType::F64), ("status".into(), FieldType::I64)];
        MachineData::new("press-1".into(), &schema, RowSet { ts, cols: vec![col(temp), col(status)] })
    }

    #[test]
    fn hints_carry_from_one_flush_to_the_next() {
        let cache = HintCache::default();
        let (name, temp): (Arc<str>, Arc<str>) = ("press-1".into(), "temp".into());
        let first = machine(2_000, 0);
        // The first flush searches, exactly as without the cache, and leaves a hint per field.
        let searched = encode_machine(&first, 4096, Some(&cache));
        assert_eq!(searched.data, encode_machine(&first, 4096, None).data);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&name, &temp, FieldType::F64).map(|h| h.left), Some(codec::HINT_REUSE));
        // The next flush of the same machine starts from them: planned, not searched.
        let second = machine(2_000, 2_000_000);
        let planned = encode_machine(&second, 4096, Some(&cache));
        assert_eq!(cache.get(&name, &temp, FieldType::F64).map(|h| h.left), Some(codec::HINT_REUSE - 1));
        assert_eq!(
            cache.get(&name, &"status".into(), FieldType::I64).map(|h| h.left),
            Some(codec::HINT_REUSE - 1)
        );
        // within the hint's acceptance of the searched size (3% per value, 16 bytes per chunk)
        let fresh = encode_machine(&second, 4096, None);
        assert!(planned.data.len() as f64 <= fresh.data.len() as f64 * 1.03 + 48.0);
        // A hint is kept per type too: a field of another type does not take it.
        assert!(cache.get(&name, &temp, FieldType::I64).is_none());
    }

    #[test]
    fn the_hint_cache_is_bounded() {
        let cache = HintCache::default();
        let m = machine(1_000, 0);
        let hint = {
            let mut h = None;
            codec::encode_f64_hinted(&[1.5; 512], &mut h, &mut Vec::new());
            h.expect("512 values leave a hint")
        };
        for i in 0..HintCache::MAX_ENTRIES {
            cache.put(&m.name, &format!("f{i}").into(), FieldType::F64, hint.clone());
        }
        assert_eq!(cache.len(), HintCache::MAX_ENTRIES);
        cache.put(&m.name, &"one more".into(), FieldType::F64, hint);
        assert_eq!(cache.len(), 1);
    }
}
