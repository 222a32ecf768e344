//! The memtable: recent writes of every machine in columnar buffers.
//!
//! Per machine there is one timestamp buffer and one column per field (raw 64-bit values plus a
//! validity bitmap), appended in write order. A column may be shorter than the timestamps: rows
//! past its end have no value for that field, so fields sampled at other rates cost nothing
//! until they are written. Rows may arrive in any time order and twice for the same timestamp;
//! reads sort and resolve duplicates (the later write wins, field by field).
//!
//! Each append records the sequence number of its batch (`marks`), so a reader with a snapshot
//! sequence number sees exactly the batches up to it: rows are appended in sequence order, so
//! a snapshot's rows are a prefix.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::catalog::{BatchMap, FieldIdx, MachineIdx};
use crate::model::{Bitmap, TimeRange, Timestamp, WriteBatch};
use crate::rows::{ColData, RowSet};

/// The deletes that cover one field of one machine: (range, the delete's sequence number).
pub(crate) type Dels = Vec<(TimeRange, u64)>;

/// For each field, the deletes of `tombs` that cover it on machine `machine`.
pub(crate) fn dels_for(
    tombs: &[std::sync::Arc<crate::tombstone::Tombstone>],
    machine: &str,
    fields: &[&str],
) -> Vec<Dels> {
    if tombs.is_empty() {
        return vec![Vec::new(); fields.len()];
    }
    fields
        .iter()
        .map(|f| {
            tombs
                .iter()
                .filter(|t| &*t.machine == machine && t.covers_field(f))
                .map(|t| (t.range, t.seq))
                .collect()
        })
        .collect()
}

#[derive(Debug, Default)]
struct ColBuf {
    vals: Vec<u64>,
    valid: Bitmap,
}

impl ColBuf {
    fn len(&self) -> usize {
        self.vals.len()
    }
}

#[derive(Debug, Default)]
pub(crate) struct MachineBuf {
    ts: Vec<Timestamp>,
    cols: Vec<ColBuf>,
    /// `(rows after the append, seq)` per append, in sequence order.
    marks: Vec<(usize, u64)>,
    /// True while every timestamp is larger than the one before (no sort needed).
    ordered: bool,
    ts_min: Timestamp,
    ts_max: Timestamp,
    /// Row order sorted by (ts, arrival) for the first `.0` rows, when `ordered` is false.
    sorted: Option<(usize, Arc<Vec<u32>>)>,
}

impl MachineBuf {
    fn new() -> MachineBuf {
        MachineBuf { ordered: true, ts_min: i64::MAX, ts_max: i64::MIN, ..MachineBuf::default() }
    }

    /// Rows visible to a snapshot at `seq`.
    fn visible_rows(&self, seq: u64) -> usize {
        let k = self.marks.partition_point(|&(_, s)| s <= seq);
        if k == 0 { 0 } else { self.marks[k - 1].0 }
    }

    /// Field `f`'s value at the largest timestamp among the first `n` rows, skipping deleted
    /// rows; the later row wins at equal timestamps.
    fn latest(&self, f: FieldIdx, n: usize, dels: &[(TimeRange, u64)]) -> Option<(Timestamp, u64)> {
        let c = self.cols.get(f as usize)?;
        let len = c.len().min(n);
        let live = |r: usize| c.valid.get(r) && !self.deleted(r, self.ts[r], dels);
        if self.ordered {
            // Timestamps ascend: the last row with a value is the latest.
            (0..len).rev().find(|&r| live(r)).map(|r| (self.ts[r], c.vals[r]))
        } else {
            let mut best: Option<(Timestamp, u64)> = None;
            for r in 0..len {
                if live(r) && best.is_none_or(|(t, _)| self.ts[r] >= t) {
                    best = Some((self.ts[r], c.vals[r]));
                }
            }
            best
        }
    }

    fn sorted_order(&mut self, n: usize) -> Arc<Vec<u32>> {
        if let Some((m, order)) = &self.sorted
            && *m == n
        {
            return order.clone();
        }
        let mut order: Vec<u32> = (0..n as u32).collect();
        let ts = &self.ts;
        order.sort_by_key(|&i| ts[i as usize]); // stable: arrival order within a timestamp
        let order = Arc::new(order);
        self.sorted = Some((n, order.clone()));
        order
    }

    fn value(&self, f: FieldIdx, row: usize) -> Option<u64> {
        let c = self.cols.get(f as usize)?;
        (row < c.len() && c.valid.get(row)).then(|| c.vals[row])
    }

    /// The rows of `range` visible at `seq`, sorted and resolved, with the requested fields.
    /// Whether row `r` (at `ts`) is hidden by one of `dels` (range, delete seq): the delete
    /// came after the row's batch.
    fn deleted(&self, r: usize, ts: Timestamp, dels: &[(TimeRange, u64)]) -> bool {
        dels.iter().any(|&(range, dseq)| range.contains(ts) && r < self.visible_rows(dseq - 1))
    }

    fn read(&mut self, range: TimeRange, seq: u64, fields: &[FieldIdx], dels: &[Dels]) -> RowSet {
        let n = self.visible_rows(seq);
        let mut out = if self.ordered {
            let ts = &self.ts[..n];
            let lo = ts.partition_point(|&t| t < range.start);
            let hi = ts.partition_point(|&t| t < range.end);
            let cols = fields
                .iter()
                .map(|&f| {
                    let c = self.cols.get(f as usize)?;
                    let end = c.len().min(hi);
                    if end <= lo {
                        return None;
                    }
                    let mut vals = c.vals[lo..end].to_vec();
                    vals.resize(hi - lo, 0);
                    let mut valid = c.valid.slice(lo, end);
                    valid.extend_const(hi - end, false);
                    Some(ColData { vals, valid })
                })
                .collect();
            let mut out = RowSet { ts: ts[lo..hi].to_vec(), cols };
            for (c, d) in out.cols.iter_mut().zip(dels) {
                let Some(c) = c else { continue };
                for &(r, dseq) in d {
                    // Rows before the delete are a prefix; of those, the ones in its range.
                    let p = self.visible_rows(dseq - 1).clamp(lo, hi);
                    let a = lo + self.ts[lo..p].partition_point(|&t| t < r.start);
                    let b = lo + self.ts[lo..p].partition_point(|&t| t < r.end);
                    for i in a..b {
                        c.valid.set(i - lo, false);
                    }
                }
            }
            out
        } else {
            let order = self.sorted_order(n);
            let mut ts_out = Vec::new();
            let mut cols: Vec<ColData> = fields.iter().map(|_| ColData::missing(0)).collect();
            let start = order.partition_point(|&i| self.ts[i as usize] < range.start);
            let mut a = start;
            while a < order.len() {
                let t = self.ts[order[a] as usize];
                if t >= range.end {
                    break;
                }
                let mut b = a + 1;
                while b < order.len() && self.ts[order[b] as usize] == t {
                    b += 1;
                }
                ts_out.push(t);
                for ((c, &f), d) in cols.iter_mut().zip(fields).zip(dels) {
                    // The last write in arrival order with a value wins (if a delete hides it,
                    // it hides every earlier write at this timestamp too).
                    let v = order[a..b]
                        .iter()
                        .rev()
                        .find_map(|&r| self.value(f, r as usize).map(|v| (r as usize, v)))
                        .filter(|&(r, _)| !self.deleted(r, t, d))
                        .map(|(_, v)| v);
                    c.vals.push(v.unwrap_or(0));
                    c.valid.push(v.is_some());
                }
                a = b;
            }
            RowSet { ts: ts_out, cols: cols.into_iter().map(Some).collect() }
        };
        out.drop_empty_rows();
        out
    }

    fn append(&mut self, group: &crate::model::BatchGroup, fields: &[FieldIdx], seq: u64) -> usize {
        let start = self.ts.len();
        let rows = group.ts.len();
        if self.ordered {
            let mut prev = self.ts.last().copied();
            for &t in &group.ts {
                if prev.is_some_and(|p| t <= p) {
                    self.ordered = false;
                    break;
                }
                prev = Some(t);
            }
        }
        for &t in &group.ts {
            self.ts_min = self.ts_min.min(t);
            self.ts_max = self.ts_max.max(t);
        }
        self.ts.extend_from_slice(&group.ts);
        let mut bytes = rows * 8;
        for (f, &idx) in group.fields.iter().zip(fields) {
            let idx = idx as usize;
            if self.cols.len() <= idx {
                self.cols.resize_with(idx + 1, ColBuf::default);
            }
            let c = &mut self.cols[idx];
            if c.len() < start {
                let pad = start - c.len();
                c.vals.resize(start, 0);
                c.valid.extend_const(pad, false);
                bytes += pad * 8;
            }
            c.vals.extend_from_slice(&f.values);
            c.valid.extend_from(&f.valid);
            bytes += rows * 8 + rows.div_ceil(8);
        }
        self.marks.push((self.ts.len(), seq));
        self.sorted = None;
        bytes + 16
    }
}

/// One memtable: the active one takes writes; frozen ones wait to be flushed.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    machines: RwLock<HashMap<MachineIdx, Arc<Mutex<MachineBuf>>>>,
    bytes: AtomicUsize,
    min_seq: AtomicU64,
    max_seq: AtomicU64,
}

impl Memtable {
    pub(crate) fn new() -> Memtable {
        Memtable::default()
    }

    /// Appends a batch whose fields `map` resolved, under sequence number `seq`. Batches must
    /// be inserted in sequence order.
    pub(crate) fn insert(&self, map: &BatchMap, batch: &WriteBatch, seq: u64) {
        let mut bytes = 0;
        for (g, (m, fields)) in batch.groups.iter().zip(&map.groups) {
            if g.ts.is_empty() {
                continue;
            }
            let buf = self.machines.read().get(m).cloned();
            let buf = match buf {
                Some(b) => b,
                None => self
                    .machines
                    .write()
                    .entry(*m)
                    .or_insert_with(|| Arc::new(Mutex::new(MachineBuf::new())))
                    .clone(),
            };
            bytes += buf.lock().append(g, fields, seq);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let _ = self.min_seq.compare_exchange(0, seq, Ordering::Relaxed, Ordering::Relaxed);
        self.max_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Approximate heap bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Smallest sequence number inserted (0: none).
    pub(crate) fn min_seq(&self) -> u64 {
        self.min_seq.load(Ordering::Relaxed)
    }

    /// Largest sequence number inserted (0: none).
    pub(crate) fn max_seq(&self) -> u64 {
        self.max_seq.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.machines.read().is_empty()
    }

    /// Machines with rows here.
    pub(crate) fn machines(&self) -> Vec<MachineIdx> {
        self.machines.read().keys().copied().collect()
    }

    /// Smallest and largest timestamp of a machine's rows (all of them, any snapshot).
    pub(crate) fn bounds(&self, m: MachineIdx) -> Option<(Timestamp, Timestamp)> {
        let buf = self.machines.read().get(&m).cloned()?;
        let b = buf.lock();
        (!b.ts.is_empty()).then_some((b.ts_min, b.ts_max))
    }

    /// Per requested field, the value at the largest timestamp where it has one (visible at
    /// `seq`), with that timestamp; the later write wins at equal timestamps.
    pub(crate) fn latest(
        &self,
        m: MachineIdx,
        seq: u64,
        fields: &[FieldIdx],
        dels: &[Dels],
    ) -> Vec<Option<(Timestamp, u64)>> {
        let Some(buf) = self.machines.read().get(&m).cloned() else {
            return vec![None; fields.len()];
        };
        let b = buf.lock();
        let n = b.visible_rows(seq);
        fields.iter().zip(dels).map(|(&f, d)| b.latest(f, n, d)).collect()
    }

    /// Like [`Memtable::latest`] for a machine without deletes, folding into `best`: a value
    /// here replaces `best[k]` unless that one is at a larger timestamp (this memtable is
    /// newer than every source folded before it).
    pub(crate) fn latest_into(
        &self,
        m: MachineIdx,
        seq: u64,
        fields: &[FieldIdx],
        best: &mut [Option<(Timestamp, u64)>],
    ) {
        let Some(buf) = self.machines.read().get(&m).cloned() else {
            return;
        };
        let b = buf.lock();
        let n = b.visible_rows(seq);
        for (&f, slot) in fields.iter().zip(best) {
            if let Some((ts, bits)) = b.latest(f, n, &[])
                && slot.is_none_or(|(t, _)| ts >= t)
            {
                *slot = Some((ts, bits));
            }
        }
    }

    /// A machine's rows in `range` visible at snapshot `seq`, with the requested fields.
    /// `dels[i]` lists the deletes (range, sequence number) covering field `fields[i]`.
    pub(crate) fn read(
        &self,
        m: MachineIdx,
        range: TimeRange,
        seq: u64,
        fields: &[FieldIdx],
        dels: &[Dels],
    ) -> RowSet {
        let Some(buf) = self.machines.read().get(&m).cloned() else {
            return RowSet::empty(fields.len());
        };
        let mut b = buf.lock();
        if b.ts.is_empty() || !range.overlaps(b.ts_min, b.ts_max) {
            return RowSet::empty(fields.len());
        }
        b.read(range, seq, fields, dels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::model::Value;

    fn write(mt: &Memtable, cat: &mut Catalog, seq: u64, rows: &[(i64, Option<f64>, Option<i64>)]) {
        let mut b = WriteBatch::new();
        for &(ts, a, c) in rows {
            let mut fields: Vec<(&str, Value)> = Vec::new();
            if let Some(a) = a {
                fields.push(("a", a.into()));
            }
            if let Some(c) = c {
                fields.push(("c", c.into()));
            }
            b.row("m", ts, fields).unwrap();
        }
        let map = cat.register(&b).unwrap();
        mt.insert(&map, &b, seq);
    }

    fn dump(r: &RowSet) -> Vec<(i64, Option<u64>, Option<u64>)> {
        let get = |c: &Option<ColData>, i: usize| c.as_ref().and_then(|c| c.valid.get(i).then(|| c.vals[i]));
        (0..r.len()).map(|i| (r.ts[i], get(&r.cols[0], i), get(&r.cols[1], i))).collect()
    }

    #[test]
    fn out_of_order_and_duplicates_resolve_to_the_later_write() {
        let mt = Memtable::new();
        let mut cat = Catalog::default();
        write(&mt, &mut cat, 1, &[(5, Some(5.0), None), (1, Some(1.0), Some(10))]);
        write(&mt, &mut cat, 2, &[(5, None, Some(50)), (1, Some(1.5), None), (3, Some(3.0), None)]);
        let r = mt.read(0, TimeRange::ALL, 2, &[0, 1], &[vec![], vec![]]);
        assert_eq!(
            dump(&r),
            vec![
                (1, Some(1.5f64.to_bits()), Some(10)),
                (3, Some(3.0f64.to_bits()), None),
                (5, Some(5.0f64.to_bits()), Some(50)),
            ]
        );
        // A snapshot taken before the second batch sees only the first.
        let r = mt.read(0, TimeRange::ALL, 1, &[0, 1], &[vec![], vec![]]);
        assert_eq!(dump(&r), vec![(1, Some(1.0f64.to_bits()), Some(10)), (5, Some(5.0f64.to_bits()), None)]);
        let r = mt.read(0, TimeRange::from(2..5), 2, &[0, 1], &[vec![], vec![]]);
        assert_eq!(dump(&r), vec![(3, Some(3.0f64.to_bits()), None)]);
    }

    #[test]
    fn ordered_reads_slice_and_pad_short_columns() {
        let mt = Memtable::new();
        let mut cat = Catalog::default();
        write(&mt, &mut cat, 1, &[(1, Some(1.0), None), (2, Some(2.0), None)]);
        write(&mt, &mut cat, 2, &[(3, None, Some(30)), (4, Some(4.0), None)]);
        let r = mt.read(0, TimeRange::from(2..4), 2, &[0, 1], &[vec![], vec![]]);
        assert_eq!(dump(&r), vec![(2, Some(2.0f64.to_bits()), None), (3, None, Some(30))]);
        // Only field c: rows without c disappear.
        let r = mt.read(0, TimeRange::ALL, 2, &[1, 1], &[vec![], vec![]]);
        assert_eq!(r.ts, vec![3]);
    }
}
