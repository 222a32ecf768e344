//! `latest` (the current value of every field) and the catalog (machines, fields, bounds).
//!
//! `latest` decodes nothing that the index already knows. The segments' part comes from the
//! version's tail cache (`tails.rs`): one flat table, keyed by catalog indices, of the last
//! value of every (machine, field) in the segments, built on first use and extended by each
//! flush. The memtables are then folded on top (newer sources win a tie on the timestamp).
//!
//! Machines with live deletes take the exact path: every block's statistics keep the last
//! value and its timestamp, so per segment it looks at the last block holding the field, and
//! decodes only a block a delete touches. Partitions are disjoint in time, so segments are
//! visited newest partition first and a field is settled by the first partition that has it.
//! Within a partition the newer segment wins a tie on the timestamp.

use std::collections::HashSet;
use std::sync::Arc;

use crate::catalog::{FieldIdx, MachineIdx};
use crate::db::{Db, Snapshot};
use crate::error::Result;
use crate::model::{FieldType, Timestamp, Value};

use super::Machines;
use super::scan::{resolve_fields, resolve_machines, select_fields};
use super::tails::Tails;
use crate::tombstone::{any_overlap, mask, ranges_for};

/// The latest value of one field of one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestValue {
    /// The machine.
    pub machine: Arc<str>,
    /// The field.
    pub field: Arc<str>,
    /// The timestamp of the value: the largest at which the field has one.
    pub ts: Timestamp,
    /// The value.
    pub value: Value,
}

/// A `latest` query being set up; see [`Db::latest`].
#[must_use = "a latest query does nothing until run"]
pub struct Latest<'a> {
    db: &'a Db,
    machines: Machines,
    fields: Option<Vec<String>>,
}

/// A field of a machine in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field name.
    pub name: Arc<str>,
    /// Its type, fixed at its first write.
    pub field_type: FieldType,
}

/// A machine in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// The machine id.
    pub name: Arc<str>,
    /// Its fields, in the order they were first written.
    pub fields: Vec<FieldInfo>,
    /// Smallest and largest timestamp stored for it (`None` when it holds no data).
    pub time_bounds: Option<(Timestamp, Timestamp)>,
}

impl Db {
    /// The latest value of each field of the machines: per machine and field, the value at the
    /// largest timestamp where the field has one. Fields without any value are left out.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = gemba::Db::open(dir.path(), gemba::Options::default())?;
    /// let mut b = gemba::WriteBatch::new();
    /// b.row("press-07", 10, [("speed", 1.0)])?.row("press-07", 20, [("speed", 2.0)])?;
    /// db.write(&b)?;
    /// let now = db.latest(["press-07"]).run()?;
    /// assert_eq!((now[0].ts, now[0].value), (20, gemba::Value::F64(2.0)));
    /// # Ok::<(), gemba::Error>(())
    /// ```
    pub fn latest(&self, machines: impl Into<Machines>) -> Latest<'_> {
        Latest { db: self, machines: machines.into(), fields: None }
    }

    /// Every machine with its fields, their types and its time bounds, in byte-wise id order.
    pub fn machines(&self) -> Result<Vec<MachineInfo>> {
        let snap = self.snapshot()?;
        let ms = resolve_machines(&snap, &Machines::All);
        Ok(ms.into_iter().map(|m| machine_info(&snap, m)).collect())
    }

    /// One machine's catalog entry, or `None` when it does not exist.
    pub fn machine(&self, name: &str) -> Result<Option<MachineInfo>> {
        let snap = self.snapshot()?;
        Ok(snap
            .catalog
            .machine(name)
            .filter(|&m| !snap.catalog.entry(m).provisional)
            .map(|m| machine_info(&snap, m)))
    }
}

fn machine_info(snap: &Snapshot, m: MachineIdx) -> MachineInfo {
    let e = snap.catalog.entry(m);
    let mut bounds: Option<(Timestamp, Timestamp)> = None;
    let mut widen = |lo: Timestamp, hi: Timestamp| {
        bounds = Some(bounds.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    };
    for seg in &snap.version.segments {
        if let Some(mi) = seg.machine(&e.name) {
            widen(mi.ts_min, mi.ts_max);
        }
    }
    let v = &snap.version;
    for mt in v.frozen.iter().chain(std::iter::once(&v.active)) {
        if let Some((lo, hi)) = mt.bounds(m) {
            widen(lo, hi);
        }
    }
    MachineInfo {
        name: e.name.clone(),
        fields: e
            .fields
            .iter()
            .filter(|f| !f.provisional)
            .map(|f| FieldInfo { name: f.name.clone(), field_type: f.ty })
            .collect(),
        time_bounds: bounds,
    }
}

impl<'a> Latest<'a> {
    /// Only these fields (default: every field of each machine).
    pub fn fields<S: AsRef<str>>(mut self, fields: impl IntoIterator<Item = S>) -> Latest<'a> {
        self.fields = Some(fields.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// Runs the query on a snapshot: values in machine order, then field order.
    pub fn run(self) -> Result<Vec<LatestValue>> {
        let snap = self.db.snapshot()?;
        let machines = resolve_machines(&snap, &self.machines);
        let fields = self.fields.as_deref();
        let v = &snap.version;
        // The segments' part comes from the version's tail cache, except for machines with
        // deletes (the cache ignores them): those take the exact path through the index.
        let tails = v.tails.get(&v.segments, &snap.catalog);
        let deleted: HashSet<&str> = v.tombstones.iter().map(|t| &*t.machine).collect();
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        for &m in &machines {
            match tails {
                Some(t) if deleted.is_empty() || !deleted.contains(&*snap.catalog.entry(m).name) => {
                    latest_cached(&snap, m, fields, t, &mut scratch, &mut out)
                }
                _ => out.extend(latest_machine(&snap, m, fields)?),
            }
        }
        Ok(out)
    }
}

/// Buffers reused from machine to machine.
#[derive(Default)]
struct Scratch {
    idx: Vec<FieldIdx>,
    best: Vec<Option<(Timestamp, u64)>>,
}

/// `latest` of one machine without deletes: the tail cache for the segments, then the
/// memtables (newer sources win a tie).
fn latest_cached(
    snap: &Snapshot,
    m: MachineIdx,
    fields: Option<&[String]>,
    tails: &Tails,
    scratch: &mut Scratch,
    out: &mut Vec<LatestValue>,
) {
    let e = snap.catalog.entry(m);
    let Scratch { idx, best } = scratch;
    select_fields(e, fields, idx);
    best.clear();
    best.extend(idx.iter().map(|&f| tails.get(m, f)));
    let v = &snap.version;
    for mt in v.frozen.iter().chain(std::iter::once(&v.active)) {
        mt.latest_into(m, snap.seq, idx, best);
    }
    for (&f, b) in idx.iter().zip(best.iter()) {
        if let Some((ts, bits)) = *b
            && ts >= snap.ts_floor
        {
            let fe = &e.fields[f as usize];
            out.push(LatestValue {
                machine: e.name.clone(),
                field: fe.name.clone(),
                ts,
                value: Value::from_bits(fe.ty, bits),
            });
        }
    }
}

fn latest_machine(snap: &Snapshot, m: MachineIdx, fields: Option<&[String]>) -> Result<Vec<LatestValue>> {
    let sel = resolve_fields(snap, m, fields);
    let e = snap.catalog.entry(m);
    let idx: Vec<FieldIdx> = sel.iter().map(|s| s.0).collect();
    // Per field: (ts, rank, bits); a larger ts wins, then a higher rank (newer source).
    let mut best: Vec<Option<(Timestamp, usize, u64)>> = vec![None; sel.len()];
    let v = &snap.version;
    let names: Vec<&str> = sel.iter().map(|(_, n, _)| &**n).collect();
    let dels = crate::memtable::dels_for(&v.tombstones, &e.name, &names);
    for (r, mt) in v.frozen.iter().chain(std::iter::once(&v.active)).enumerate() {
        for (k, l) in mt.latest(m, snap.seq, &idx, &dels).into_iter().enumerate() {
            if let Some((ts, bits)) = l {
                let cand = (ts, usize::MAX - 1000 + r, bits);
                if best[k].is_none_or(|b| (cand.0, cand.1) > (b.0, b.1)) {
                    best[k] = Some(cand);
                }
            }
        }
    }
    // Segments, newest partition first; within a partition, newest segment first.
    let segs = &v.segments;
    let mut settled = vec![false; sel.len()];
    let mut i = segs.len();
    while i > 0 && settled.iter().any(|s| !s) {
        let p = segs[i - 1].index.partition_start;
        let start = segs[..i].iter().rposition(|s| s.index.partition_start != p).map_or(0, |k| k + 1);
        for (rank, seg) in segs[start..i].iter().enumerate() {
            let Some(mi) = seg.machine(&e.name) else {
                continue;
            };
            for (k, (_, name, _)) in sel.iter().enumerate() {
                if settled[k] {
                    continue;
                }
                let Some((g, pos)) = mi.locate(name) else {
                    continue;
                };
                let ranges = ranges_for(&v.tombstones, &e.name, name, seg.index.applied_seq);
                let mut last = None;
                for b in mi.groups[g].blocks.iter().rev() {
                    let s = b.fields[pos].stats;
                    if s.count == 0 {
                        continue;
                    }
                    if !any_overlap(&ranges, b.ts_min, b.ts_max) {
                        last = Some((s.last_ts, s.last));
                        break;
                    }
                    // A delete touches this block: decode it and skip the hidden values.
                    let mut ts = Vec::new();
                    seg.block_ts(b, &mut ts)?;
                    let mut col = seg.block_field(sel[k].2, b.rows as usize, &b.fields[pos])?;
                    mask(&ts, &mut col.valid, &ranges);
                    if let Some(i) = (0..ts.len()).rev().find(|&i| col.valid.get(i)) {
                        last = Some((ts[i], col.vals[i]));
                        break;
                    }
                }
                if let Some((last_ts, last)) = last {
                    let cand = (last_ts, rank, last);
                    if best[k].is_none_or(|b| (cand.0, cand.1) > (b.0, b.1)) {
                        best[k] = Some(cand);
                    }
                }
            }
        }
        // A value found in this partition beats every older partition.
        for (k, b) in best.iter().enumerate() {
            if b.is_some_and(|(ts, _, _)| ts >= p) {
                settled[k] = true;
            }
        }
        i = start;
    }
    // Retention: a latest value older than the cut-off means none is left.
    let best = best.into_iter().map(|b| b.filter(|(ts, _, _)| *ts >= snap.ts_floor));
    Ok(sel
        .iter()
        .zip(best)
        .filter_map(|((_, name, ty), b)| {
            b.map(|(ts, _, bits)| LatestValue {
                machine: e.name.clone(),
                field: name.clone(),
                ts,
                value: Value::from_bits(*ty, bits),
            })
        })
        .collect())
}
