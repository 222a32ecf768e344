//! `scan`: the rows of one, several or all machines over a time range, as columnar batches.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::catalog::{FieldIdx, MachineEntry, MachineIdx};
use crate::db::{Db, Snapshot};
use crate::error::Result;
use crate::model::{FieldType, TimeRange};
use crate::rows::RowSet;
use crate::segment::{MachineIndex, Segment};

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
            range: snap.clamp(self.range),
            snap,
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
    // Machines registered by a write still in flight do not exist yet.
    match machines {
        Machines::All => cat.sorted().iter().copied().filter(|&m| !cat.entry(m).provisional).collect(),
        Machines::List(names) => {
            let mut v: Vec<MachineIdx> =
                names.iter().filter_map(|n| cat.machine(n)).filter(|&m| !cat.entry(m).provisional).collect();
            v.sort_by(|&a, &b| cat.entry(a).name.as_bytes().cmp(cat.entry(b).name.as_bytes()));
            v.dedup();
            v
        }
    }
}

/// The fields of machine `m` selected by `fields` (all when `None`), in order.
pub(crate) fn resolve_fields(
    snap: &Snapshot,
    m: MachineIdx,
    fields: Option<&[String]>,
) -> Vec<(FieldIdx, Arc<str>, FieldType)> {
    let e = snap.catalog.entry(m);
    let mut idx = Vec::new();
    select_fields(e, fields, &mut idx);
    idx.into_iter()
        .map(|i| {
            let f = &e.fields[i as usize];
            (i, f.name.clone(), f.ty)
        })
        .collect()
}

/// Fills `out` with the indices of the machine's fields selected by `fields` (every visible
/// field when `None`; unknown and repeated names are skipped), in order.
pub(crate) fn select_fields(e: &MachineEntry, fields: Option<&[String]>, out: &mut Vec<FieldIdx>) {
    out.clear();
    match fields {
        None => out.extend((0..e.fields.len() as FieldIdx).filter(|&f| !e.fields[f as usize].provisional)),
        Some(names) => {
            for n in names {
                if let Some(f) = e.field(n)
                    && !e.fields[f as usize].provisional
                    && !out.contains(&f)
                {
                    out.push(f);
                }
            }
        }
    }
}

/// Segments of the snapshot whose partition overlaps `range`, with the machine's entry, in
/// precedence order (by partition, then oldest to newest).
pub(crate) fn machine_segments<'s>(
    snap: &'s Snapshot,
    name: &str,
    range: TimeRange,
) -> impl Iterator<Item = (&'s Segment, &'s MachineIndex)> + 's {
    let name = name.to_string();
    snap.version.segments.iter().filter_map(move |seg| {
        let p = seg.index.partition_start;
        let end = p.saturating_add(seg.index.partition_width);
        if p >= range.end || end <= range.start {
            return None;
        }
        let mi = seg.machine(&name)?;
        range.overlaps(mi.ts_min, mi.ts_max).then_some((&**seg, mi))
    })
}

/// A machine's rows in `range` from the memtables of the snapshot, merged (newer wins).
pub(crate) fn read_memtables(
    snap: &Snapshot,
    m: MachineIdx,
    range: TimeRange,
    fields: &[FieldIdx],
) -> RowSet {
    let v = &snap.version;
    let e = snap.catalog.entry(m);
    let names: Vec<&str> = fields.iter().map(|&f| &*e.fields[f as usize].name).collect();
    let dels = crate::memtable::dels_for(&v.tombstones, &e.name, &names);
    let mut out = RowSet::empty(fields.len());
    for mt in v.frozen.iter().chain(std::iter::once(&v.active)) {
        out = out.merge_newer(mt.read(m, range, snap.seq, fields, &dels));
    }
    out
}

/// One machine's scan, produced one time window at a time so memory stays bounded: each
/// partition that has segments is one window; memtable rows outside those windows come as
/// windows of their own.
struct MachineScan {
    machine: Arc<str>,
    schema: Vec<(Arc<str>, FieldType)>,
    fields: Vec<FieldIdx>,
    /// Memtable rows over the whole range (bounded by the memtable budget).
    mem: RowSet,
    mem_at: usize,
    /// Partition starts with segments for this machine, ascending.
    windows: VecDeque<(i64, i64)>,
    /// The window being returned and how far.
    current: RowSet,
    at: usize,
}

impl MachineScan {
    /// The next window of rows, or `None` when the machine is done.
    fn next_window(&mut self, snap: &Snapshot, range: TimeRange) -> Result<Option<RowSet>> {
        let mem_left = self.mem_at < self.mem.len();
        match self.windows.front().copied() {
            Some((w_start, w_end)) => {
                let lo = w_start.max(range.start);
                let hi = w_end.min(range.end);
                // Memtable rows before this window come first, on their own.
                let before = self.mem_at + self.mem.ts[self.mem_at..].partition_point(|&t| t < lo);
                if before > self.mem_at {
                    let r = crate::rows::slice(&self.mem, self.mem_at, before);
                    self.mem_at = before;
                    return Ok(Some(r));
                }
                self.windows.pop_front();
                let names: Vec<&str> = self.schema.iter().map(|(n, _)| &**n).collect();
                let win = TimeRange { start: lo, end: hi };
                let mut rows = RowSet::empty(self.fields.len());
                for (seg, mi) in machine_segments(snap, &self.machine, win) {
                    rows = rows.merge_newer(seg.read(mi, win, &names, &snap.version.tombstones)?);
                }
                let end = self.mem_at + self.mem.ts[self.mem_at..].partition_point(|&t| t < hi);
                if end > self.mem_at {
                    rows = rows.merge_newer(crate::rows::slice(&self.mem, self.mem_at, end));
                    self.mem_at = end;
                }
                Ok(Some(rows))
            }
            None if mem_left => {
                let r = crate::rows::slice(&self.mem, self.mem_at, self.mem.len());
                self.mem_at = self.mem.len();
                Ok(Some(r))
            }
            None => Ok(None),
        }
    }
}

/// The batches of a running scan. See [`Db::scan`].
pub struct ScanIter {
    snap: Snapshot,
    range: TimeRange,
    fields: Option<Vec<String>>,
    batch_rows: usize,
    machines: VecDeque<MachineIdx>,
    current: Option<MachineScan>,
}

impl ScanIter {
    fn start_machine(&self, m: MachineIdx) -> Option<MachineScan> {
        let sel = resolve_fields(&self.snap, m, self.fields.as_deref());
        if sel.is_empty() || self.range.is_empty() {
            return None;
        }
        let fields: Vec<FieldIdx> = sel.iter().map(|s| s.0).collect();
        let name = self.snap.catalog.entry(m).name.clone();
        let mut windows: Vec<(i64, i64)> = machine_segments(&self.snap, &name, self.range)
            .map(|(seg, _)| {
                let p = seg.index.partition_start;
                (p, p.saturating_add(seg.index.partition_width))
            })
            .collect();
        windows.dedup();
        let mem = read_memtables(&self.snap, m, self.range, &fields);
        Some(MachineScan {
            machine: name,
            schema: sel.into_iter().map(|(_, n, t)| (n, t)).collect(),
            fields,
            mem,
            mem_at: 0,
            windows: windows.into(),
            current: RowSet::default(),
            at: 0,
        })
    }

    fn next_batch(&mut self) -> Result<Option<Batch>> {
        loop {
            if self.current.is_none() {
                let Some(m) = self.machines.pop_front() else {
                    return Ok(None);
                };
                self.current = self.start_machine(m);
                continue;
            }
            let cur = self.current.as_mut().unwrap();
            if cur.at < cur.current.len() {
                let (lo, hi) = (cur.at, (cur.at + self.batch_rows).min(cur.current.len()));
                cur.at = hi;
                let rows = if lo == 0 && hi == cur.current.len() {
                    std::mem::take(&mut cur.current)
                } else {
                    crate::rows::slice(&cur.current, lo, hi)
                };
                let n = rows.len();
                let columns = cur
                    .schema
                    .iter()
                    .zip(rows.cols)
                    .map(|((name, ty), col)| Column::from_col(name.clone(), *ty, col, n))
                    .collect();
                return Ok(Some(Batch { machine: cur.machine.clone(), ts: rows.ts, columns }));
            }
            match cur.next_window(&self.snap, self.range)? {
                Some(mut rows) => {
                    rows.drop_empty_rows();
                    cur.current = rows;
                    cur.at = 0;
                }
                None => self.current = None,
            }
        }
    }
}

impl Iterator for ScanIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        match self.next_batch() {
            Ok(b) => b.map(Ok),
            Err(e) => {
                // A failed scan ends after reporting its error.
                self.machines.clear();
                self.current = None;
                Some(Err(e))
            }
        }
    }
}
