//! `scan`: the rows of one, several or all machines over a time range, as columnar batches.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::catalog::{FieldIdx, MachineIdx};
use crate::db::{Db, Snapshot};
use crate::error::Result;
use crate::model::{FieldType, TimeRange};
use crate::rows::RowSet;

use super::{Batch, Column, Machines};

/// Default most rows per returned batch.
pub const SCAN_BATCH_ROWS: usize = 65_536;

/// A scan being set up; see [`Db::scan`]. Run it with [`Scan::run`] (streaming) or
/// [`Scan::collect`].
#[must_use = "a scan does nothing until run"]
pub struct Scan<'a> {
    db: &'a Db,
    machines: Machines,
    range: TimeRange,
    fields: Option<Vec<String>>,
    batch_rows: usize,
}

impl Db {
    /// Scans machines over a time range (half-open, `start..end`), returning their rows sorted
    /// by time in columnar batches. Each machine's rows come in one or more batches before the
    /// next machine's; machines come in byte-wise order of their ids.
    ///
    /// Machines that do not exist, and fields a machine does not have, contribute nothing.
    /// A range with `start > end` is [`crate::Error::InvalidArgument`]; an empty range gives
    /// no batches.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = gemba::Db::open(dir.path(), gemba::Options::default())?;
    /// let mut batch = gemba::WriteBatch::new();
    /// batch.row("press-07", 20, [("speed", 2.0)])?.row("press-07", 10, [("speed", 1.0)])?;
    /// db.write(&batch)?;
    /// let batches = db.scan("press-07", 0..100).fields(["speed"]).collect()?;
    /// assert_eq!(batches[0].ts, vec![10, 20]);
    /// assert_eq!(batches[0].columns[0].values, gemba::Values::F64(vec![1.0, 2.0]));
    /// # Ok::<(), gemba::Error>(())
    /// ```
    pub fn scan(&self, machines: impl Into<Machines>, range: impl Into<TimeRange>) -> Scan<'_> {
        Scan {
            db: self,
            machines: machines.into(),
            range: range.into(),
            fields: None,
            batch_rows: SCAN_BATCH_ROWS,
        }
    }
}

impl<'a> Scan<'a> {
    /// Only these fields, in this order (default: every field of each machine).
    pub fn fields<S: AsRef<str>>(mut self, fields: impl IntoIterator<Item = S>) -> Scan<'a> {
        self.fields = Some(fields.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// At most this many rows per batch (default 65,536; at least 1).
    pub fn batch_rows(mut self, rows: usize) -> Scan<'a> {
        self.batch_rows = rows.max(1);
        self
    }

    /// Starts the scan on a snapshot of the database and returns its batches as an iterator.
    pub fn run(self) -> Result<ScanIter> {
        self.range.validate()?;
        let snap = self.db.snapshot()?;
        let machines = resolve_machines(&snap, &self.machines);
        Ok(ScanIter {
            snap,
            range: self.range,
            fields: self.fields,
            batch_rows: self.batch_rows,
            machines: machines.into(),
            current: None,
        })
    }

    /// Runs the scan and collects every batch.
    pub fn collect(self) -> Result<Vec<Batch>> {
        self.run()?.collect()
    }
}

/// The machines of a selection that exist, in byte-wise order of their ids.
pub(crate) fn resolve_machines(snap: &Snapshot, machines: &Machines) -> Vec<MachineIdx> {
    let cat = &snap.catalog;
    let mut v: Vec<MachineIdx> = match machines {
        Machines::All => (0..cat.machines.len() as MachineIdx).collect(),
        Machines::List(names) => names.iter().filter_map(|n| cat.machine(n)).collect(),
    };
    v.sort_by(|&a, &b| {
        cat.entry(a)
            .name
            .as_bytes()
            .cmp(cat.entry(b).name.as_bytes())
    });
    v.dedup();
    v
}

/// The fields of machine `m` selected by `fields` (all when `None`), in order.
pub(crate) fn resolve_fields(
    snap: &Snapshot,
    m: MachineIdx,
    fields: Option<&[String]>,
) -> Vec<(FieldIdx, Arc<str>, FieldType)> {
    let e = snap.catalog.entry(m);
    match fields {
        None => e
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (i as FieldIdx, f.name.clone(), f.ty))
            .collect(),
        Some(names) => {
            let mut out: Vec<(FieldIdx, Arc<str>, FieldType)> = Vec::new();
            for n in names {
                if let Some(i) = e.field(n)
                    && !out.iter().any(|(j, _, _)| *j == i)
                {
                    let f = &e.fields[i as usize];
                    out.push((i, f.name.clone(), f.ty));
                }
            }
            out
        }
    }
}

/// A machine's rows in `range` from every source of the snapshot, merged: newer sources win.
pub(crate) fn read_machine(
    snap: &Snapshot,
    m: MachineIdx,
    range: TimeRange,
    fields: &[FieldIdx],
) -> Result<RowSet> {
    let v = &snap.version;
    let mut out = RowSet::empty(fields.len());
    for mt in v.frozen.iter().chain(std::iter::once(&v.active)) {
        let rows = mt.read(m, range, snap.seq, fields);
        out = out.merge_newer(rows);
    }
    Ok(out)
}

struct Current {
    machine: Arc<str>,
    schema: Vec<(Arc<str>, FieldType)>,
    rows: RowSet,
    at: usize,
}

/// The batches of a running scan. See [`Db::scan`].
pub struct ScanIter {
    snap: Snapshot,
    range: TimeRange,
    fields: Option<Vec<String>>,
    batch_rows: usize,
    machines: VecDeque<MachineIdx>,
    current: Option<Current>,
}

impl ScanIter {
    fn load_next_machine(&mut self) -> Result<bool> {
        while let Some(m) = self.machines.pop_front() {
            let sel = resolve_fields(&self.snap, m, self.fields.as_deref());
            if sel.is_empty() || self.range.is_empty() {
                continue;
            }
            let idx: Vec<FieldIdx> = sel.iter().map(|s| s.0).collect();
            let rows = read_machine(&self.snap, m, self.range, &idx)?;
            if rows.is_empty() {
                continue;
            }
            self.current = Some(Current {
                machine: self.snap.catalog.entry(m).name.clone(),
                schema: sel.into_iter().map(|(_, n, t)| (n, t)).collect(),
                rows,
                at: 0,
            });
            return Ok(true);
        }
        Ok(false)
    }
}

impl Iterator for ScanIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        loop {
            if let Some(cur) = &mut self.current {
                if cur.at < cur.rows.len() {
                    let lo = cur.at;
                    let hi = (lo + self.batch_rows).min(cur.rows.len());
                    cur.at = hi;
                    let whole = lo == 0 && hi == cur.rows.len();
                    let rows = if whole {
                        std::mem::take(&mut cur.rows)
                    } else {
                        slice_rows(&cur.rows, lo, hi)
                    };
                    let n = rows.len();
                    let columns = cur
                        .schema
                        .iter()
                        .zip(rows.cols)
                        .map(|((name, ty), col)| Column::from_col(name.clone(), *ty, col, n))
                        .collect();
                    return Some(Ok(Batch {
                        machine: cur.machine.clone(),
                        ts: rows.ts,
                        columns,
                    }));
                }
                self.current = None;
            }
            match self.load_next_machine() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => {
                    self.machines.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Rows `lo..hi` of a row set.
fn slice_rows(r: &RowSet, lo: usize, hi: usize) -> RowSet {
    RowSet {
        ts: r.ts[lo..hi].to_vec(),
        cols: r
            .cols
            .iter()
            .map(|c| {
                c.as_ref().map(|c| crate::rows::ColData {
                    vals: c.vals[lo..hi].to_vec(),
                    valid: c.valid.slice(lo, hi),
                })
            })
            .collect(),
    }
}
