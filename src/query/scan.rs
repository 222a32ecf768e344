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
        let ctx = Arc::new(ScanCtx {
            range: snap.clamp(self.range),
            snap,
            fields: self.fields,
            batch_rows: self.batch_rows,
        });
        Ok(ScanIter::new(ctx, machines))
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
/// precedence order (by partition, then oldest to newest). Through the version's machine map
/// once a fleet query has built it (see [`prepare_fleet`]); else by a search of each
/// segment's index, so that a query of a few machines never pays for mapping the whole fleet
/// after a flush.
pub(crate) fn machine_segments<'s>(
    snap: &'s Snapshot,
    name: &str,
    range: TimeRange,
) -> std::vec::IntoIter<(&'s Segment, &'s MachineIndex)> {
    let v = &*snap.version;
    let overlaps = |seg: &Segment| {
        let p = seg.index.partition_start;
        p < range.end && p.saturating_add(seg.index.partition_width) > range.start
    };
    let mut out = Vec::new();
    match v.by_machine.get() {
        Some(map) => {
            for &(s, i) in map.get(name).map_or(&[][..], |e| &e[..]) {
                let seg = &v.segments[s as usize];
                let mi = &seg.index.machines[i as usize];
                if overlaps(seg) && range.overlaps(mi.ts_min, mi.ts_max) {
                    out.push((&**seg, mi));
                }
            }
        }
        None => {
            for seg in &v.segments {
                if overlaps(seg)
                    && let Some(mi) = seg.machine(name)
                    && range.overlaps(mi.ts_min, mi.ts_max)
                {
                    out.push((&**seg, mi));
                }
            }
        }
    }
    out.into_iter()
}

/// Before a query of `selected` machines: when that is a large share of the fleet, builds
/// the version's machine map (one pass over every segment's index, shared by later queries
/// until the segments change), which turns each machine's segment search into one lookup.
pub(crate) fn prepare_fleet(snap: &Snapshot, selected: usize) {
    if selected > 1 && selected * 4 >= snap.catalog.len() {
        snap.version.machine_segments();
    }
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

/// One machine's scan, produced one time window at a time so memory stays bounded: the
/// partitions that have segments, cut into windows of about a batch; memtable rows outside
/// those windows come as windows of their own.
struct MachineScan {
    machine: Arc<str>,
    schema: Vec<(Arc<str>, FieldType)>,
    fields: Vec<FieldIdx>,
    /// Memtable rows over the whole range (bounded by the memtable budget).
    mem: RowSet,
    mem_at: usize,
    /// Time windows with segments for this machine, ascending and disjoint: each partition
    /// whole, or cut into windows of about a batch (see [`split_partition`]).
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

/// Appends the windows of one partition (`segs`: the machine's segments there) to `out`:
/// the partition whole when its blocks in `range` hold at most `batch_rows` rows (or the
/// rows of its largest block, if more), else consecutive windows of about that many rows
/// each, cut where a block starts. A scan decodes a window at a time, so this bounds its
/// memory whatever a partition holds (a week of a 1 kHz machine is 600 M rows), and with
/// windows about as large as a batch, a batch is mostly a window as decoded, not a copy of
/// a slice of one. Rows are counted per block of every group holding a selected field, by
/// the window its block starts in: overlapping segments and groups count twice (smaller
/// windows), while a block that starts before a cut brings rows into the next window
/// uncounted (larger ones, by at most a block per segment and group). Such a block is
/// decoded for each window it reaches (its rows in each); since a window holds at least
/// the largest block's rows, that repeats at most as many rows as other blocks hold.
fn split_partition(
    segs: &[(&Segment, &MachineIndex)],
    range: TimeRange,
    names: &[&str],
    batch_rows: usize,
    out: &mut Vec<(i64, i64)>,
) {
    let Some((first, _)) = segs.first() else { return };
    let p0 = first.index.partition_start;
    let p1 = p0.saturating_add(first.index.partition_width);
    // (first timestamp, rows) of the blocks the scan reads
    let mut blocks: Vec<(i64, usize)> = Vec::new();
    for (_, mi) in segs {
        let mut wanted = vec![false; mi.groups.len()];
        for name in names {
            if let Some((g, _)) = mi.locate(name) {
                wanted[g] = true;
            }
        }
        for (grp, _) in mi.groups.iter().zip(&wanted).filter(|(_, w)| **w) {
            blocks.extend(grp.blocks_in(range).iter().map(|b| (b.ts_min, b.rows as usize)));
        }
    }
    let widest = blocks.iter().map(|b| b.1).max().unwrap_or(0);
    let target = batch_rows.max(widest);
    if blocks.iter().map(|b| b.1).sum::<usize>() <= target {
        out.push((p0, p1));
        return;
    }
    blocks.sort_unstable_by_key(|b| b.0);
    // no window may end at or before the range's start (it would be empty)
    let (mut start, mut rows) = (p0.max(range.start), 0usize);
    for (t, n) in blocks {
        let t = t.max(range.start);
        if rows > 0 && rows + n > target && t > start {
            out.push((start, t));
            (start, rows) = (t, 0);
        }
        rows += n;
    }
    out.push((start, p1));
}

/// What every part of one scan shares: the snapshot and the request.
struct ScanCtx {
    snap: Snapshot,
    range: TimeRange,
    fields: Option<Vec<String>>,
    batch_rows: usize,
}

impl ScanCtx {
    fn start_machine(&self, m: MachineIdx) -> Option<MachineScan> {
        let sel = resolve_fields(&self.snap, m, self.fields.as_deref());
        if sel.is_empty() || self.range.is_empty() {
            return None;
        }
        let fields: Vec<FieldIdx> = sel.iter().map(|s| s.0).collect();
        let name = self.snap.catalog.entry(m).name.clone();
        let segs: Vec<(&Segment, &MachineIndex)> = machine_segments(&self.snap, &name, self.range).collect();
        let names: Vec<&str> = sel.iter().map(|s| &*s.1).collect();
        let mut windows = Vec::new();
        // segments come by partition: each partition's run of them is split on its own
        for part in segs.chunk_by(|a, b| a.0.index.partition_start == b.0.index.partition_start) {
            split_partition(part, self.range, &names, self.batch_rows, &mut windows);
        }
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

    /// The machine's next batch, or `None` when it has no more.
    fn next_batch(&self, cur: &mut MachineScan) -> Result<Option<Batch>> {
        loop {
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
                None => return Ok(None),
            }
        }
    }
}

/// A scan of several machines hands every other machine to a helper thread when there is
/// at least this much to decode (values in the selected machines' segments): below it, the
/// thread's start costs more than it saves.
const PARALLEL_SCAN_MIN_VALUES: u64 = 1 << 18;

/// Rows the helper thread may decode ahead of the consumer, in batches (2 to 64): bounds
/// the memory a scan holds (these, the one being built, and the originals of the batches
/// the consumer copied since the helper last freed them). Counted in rows so that small
/// batches still let the helper run ahead: two batches of 1,000 rows kept the helper
/// waiting for the consumer, and each batch cost a wake-up of the other thread.
const PREFETCH_ROWS: usize = 2 * SCAN_BATCH_ROWS;

/// What the helper thread sends: a batch (or the error that ends the scan), or the end of
/// one of its machines.
enum Msg {
    Batch(Result<Batch>),
    MachineDone,
}

/// A helper batch of at least this many rows goes to the caller as it is; a smaller one is
/// copied on the consumer's thread and the original goes back to be freed on the helper's.
/// A batch freed on the other thread costs, per column, a free into the helper's allocator
/// arena under its lock, while the helper allocates from it: against a copy of the values,
/// that pays only for batches of thousands of rows. Fleet scan on two threads, best of
/// three, copied / handed over: 1,000-row batches 1,032 / 630 M values/s, 2,048 1,074 / 947,
/// 4,096 1,167 / 1,130, 8,192 1,203 / 1,467; criterion `scan/fleet/decode_and_sum`
/// (65,536-row batches) 1.19-1.28 / 1.43-1.54 G.
const HAND_OVER_ROWS: usize = 4_096;

/// The helper thread of a parallel scan and the receiving end of its batches.
///
/// Batches of at least [`HAND_OVER_ROWS`] rows are handed over as they are; smaller ones
/// are copied, and the helper's own goes back to be freed on the thread that allocated it.
struct Helper {
    rx: Option<std::sync::mpsc::Receiver<Msg>>,
    /// Batches going back to the helper thread, to be freed there.
    back: Option<std::sync::mpsc::Sender<Batch>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    /// Starts a thread that decodes `machines`, in order, into the returned channel.
    fn spawn(ctx: Arc<ScanCtx>, machines: Vec<MachineIdx>) -> Option<Helper> {
        // (at most 64 slots: a bounded channel allocates its slots up front, and each small
        // batch costs its allocations beyond its values)
        let (tx, rx) = std::sync::mpsc::sync_channel((PREFETCH_ROWS / ctx.batch_rows).clamp(2, 64));
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
        let body = move || {
            for m in machines {
                if let Some(mut cur) = ctx.start_machine(m) {
                    loop {
                        // free the batches the consumer has copied
                        while back_rx.try_recv().is_ok() {}
                        match ctx.next_batch(&mut cur) {
                            Ok(Some(b)) => {
                                if tx.send(Msg::Batch(Ok(b))).is_err() {
                                    return; // the scan was dropped
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                let _ = tx.send(Msg::Batch(Err(e)));
                                return;
                            }
                        }
                    }
                }
                if tx.send(Msg::MachineDone).is_err() {
                    return;
                }
            }
            // The last batches are freed by the consumer (waiting for them here kept the
            // thread, and its allocator arena, busy until the scan ended: more page faults).
        };
        // Without a thread (resource limits) the scan simply stays on the calling thread.
        let handle = std::thread::Builder::new().name("gemba-scan".into()).spawn(body).ok()?;
        Some(Helper { rx: Some(rx), back: Some(back_tx), handle: Some(handle) })
    }

    /// Sends a batch the consumer has copied back to be freed on the helper's thread (here,
    /// if the helper has stopped).
    fn give_back(&self, b: Batch) {
        if let Some(back) = &self.back {
            let _ = back.send(b);
        }
    }

    /// The helper's next message; `None` if it stopped without saying so (it panicked).
    fn recv(&mut self) -> Option<Msg> {
        match self.rx.as_ref()?.recv() {
            Ok(m) => Some(m),
            Err(_) => {
                self.finish();
                None
            }
        }
    }

    /// Stops the helper (it notices at its next send) and waits for it; a panic in the helper
    /// resumes on this thread.
    fn finish(&mut self) {
        self.rx = None;
        self.back = None;
        if let Some(h) = self.handle.take()
            && let Err(panic) = h.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Which thread produces the machine being returned.
enum Current {
    /// Between machines.
    None,
    /// This thread decodes it.
    Own(Box<MachineScan>),
    /// The helper thread decodes it; its batches come through the channel.
    Helper,
}

/// The batches of a running scan. See [`Db::scan`].
///
/// A scan over several machines with enough data decodes every other machine on a helper
/// thread, a couple of batches ahead, while the consumer's thread decodes the others: the
/// batches still come in machine order, and dropping the iterator stops the helper.
pub struct ScanIter {
    ctx: Arc<ScanCtx>,
    /// Machines still to return, in order, each with whether the helper decodes it.
    machines: VecDeque<(MachineIdx, bool)>,
    current: Current,
    helper: Option<Helper>,
}

impl ScanIter {
    fn new(ctx: Arc<ScanCtx>, machines: Vec<MachineIdx>) -> ScanIter {
        prepare_fleet(&ctx.snap, machines.len());
        let cores = crate::cores();
        let parallel = cores > 1
            && machines.len() > 1
            && values_at_least(&ctx.snap, &machines, ctx.range, PARALLEL_SCAN_MIN_VALUES);
        let mut helper = None;
        if parallel {
            let theirs: Vec<MachineIdx> = machines.iter().skip(1).step_by(2).copied().collect();
            helper = Helper::spawn(ctx.clone(), theirs);
        }
        let split = helper.is_some();
        let machines = machines.into_iter().enumerate().map(|(i, m)| (m, split && i % 2 == 1)).collect();
        ScanIter { ctx, machines, current: Current::None, helper }
    }

    fn next_batch(&mut self) -> Result<Option<Batch>> {
        loop {
            match &mut self.current {
                Current::None => {
                    let Some((m, remote)) = self.machines.pop_front() else {
                        return Ok(None);
                    };
                    self.current = if remote {
                        Current::Helper
                    } else {
                        self.ctx.start_machine(m).map_or(Current::None, |s| Current::Own(Box::new(s)))
                    };
                }
                Current::Own(cur) => match self.ctx.next_batch(cur)? {
                    Some(b) => return Ok(Some(b)),
                    None => self.current = Current::None,
                },
                Current::Helper => {
                    let msg = self.helper.as_mut().and_then(Helper::recv);
                    match msg {
                        Some(Msg::Batch(Ok(b))) if b.rows() >= HAND_OVER_ROWS => return Ok(Some(b)),
                        Some(Msg::Batch(Ok(b))) => {
                            let copy = b.clone();
                            if let Some(h) = &self.helper {
                                h.give_back(b);
                            }
                            return Ok(Some(copy));
                        }
                        Some(Msg::Batch(Err(e))) => return Err(e),
                        Some(Msg::MachineDone) => self.current = Current::None,
                        // Unreachable unless the helper panicked (resumed by `recv`).
                        None => return Ok(None),
                    }
                }
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
                self.current = Current::None;
                self.helper = None;
                Some(Err(e))
            }
        }
    }
}

/// True when the selected machines' segments hold at least `limit` values in blocks
/// overlapping `range` (stops counting there).
pub(crate) fn values_at_least(
    snap: &Snapshot,
    machines: &[MachineIdx],
    range: TimeRange,
    limit: u64,
) -> bool {
    let mut total = 0u64;
    for &m in machines {
        let name = &snap.catalog.entry(m).name;
        for (_, mi) in machine_segments(snap, name, range) {
            for g in &mi.groups {
                let rows: u64 = g.blocks.iter().map(|b| u64::from(b.rows)).sum();
                total += rows * g.fields.len() as u64;
            }
            if total >= limit {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Col, Options, SyncPolicy, Value, WriteBatch};

    type Model = BTreeMap<i64, [Option<f64>; 2]>;

    /// One machine, partitions of 6,000: eight flushed rounds of 2,500 rows (field `a` every
    /// row, `b`, its own group, every tenth), one rewriting every third row of 1,000..7,000
    /// (across a partition boundary), and memtable rows over 5,000..5,200, past the flushed
    /// rows in their last partition, and in a partition with no segment. Blocks of 100 rows,
    /// flushed or compacted.
    fn fill(dir: &std::path::Path) -> (Db, Model) {
        let opts = Options {
            sync: SyncPolicy::Os,
            partition_width: 6_000,
            // older partitions are compacted as soon as they hold two segments
            block_rows: 100,
            compaction_block_rows: 100,
            compaction_trigger: 1_000,
            ..Options::default()
        };
        let db = Db::open(dir, opts).unwrap();
        let mut model = Model::new();
        let mut put = |ts: Vec<i64>, a: Vec<f64>, b: Vec<(i64, f64)>| {
            let mut w = WriteBatch::new();
            w.columns("m", &ts, [("a", Col::f64(&a))]).unwrap();
            let (bt, bv): (Vec<i64>, Vec<f64>) = b.into_iter().unzip();
            if !bt.is_empty() {
                w.columns("m", &bt, [("b", Col::f64(&bv))]).unwrap();
            }
            db.write(&w).unwrap();
            for (t, v) in ts.iter().zip(&a) {
                model.entry(*t).or_default()[0] = Some(*v);
            }
            for (t, v) in bt.iter().zip(&bv) {
                model.entry(*t).or_default()[1] = Some(*v);
            }
        };
        for r in 0..8i64 {
            let ts: Vec<i64> = (r * 2_500..(r + 1) * 2_500).collect();
            let a = ts.iter().map(|&t| (t % 97) as f64).collect();
            let b = ts.iter().filter(|&&t| t % 10 == 0).map(|&t| (t, -(t as f64))).collect();
            put(ts, a, b);
            db.flush().unwrap();
        }
        let ts: Vec<i64> = (1_000..7_000).step_by(3).collect();
        let a = ts.iter().map(|&t| t as f64 + 0.5).collect();
        put(ts, a, Vec::new());
        db.flush().unwrap();
        let ts: Vec<i64> = (5_000..5_200).chain(20_000..20_050).chain(30_000..30_040).collect();
        let a = ts.iter().map(|&t| t as f64 + 0.25).collect();
        let b = ts.iter().map(|&t| (t, 1.0)).collect();
        put(ts, a, b);
        (db, model)
    }

    fn rows_of(batches: &[Batch]) -> Vec<(i64, [Option<f64>; 2])> {
        let mut out = Vec::new();
        for b in batches {
            for i in 0..b.rows() {
                let mut row = [None, None];
                for c in &b.columns {
                    let k = if &*c.name == "a" { 0 } else { 1 };
                    row[k] = c.value(i).map(|v| match v {
                        Value::F64(x) => x,
                        other => panic!("unexpected {other:?}"),
                    });
                }
                out.push((b.ts[i], row));
            }
        }
        out
    }

    #[test]
    fn windows_cut_partitions_into_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (db, model) = fill(dir.path());
        for (lo, hi) in
            [(i64::MIN, i64::MAX), (1_234, 17_777), (5_050, 5_060), (5_999, 6_001), (19_990, 30_010)]
        {
            for fields in [&["a", "b"][..], &["b"], &["a"]] {
                let want: Vec<(i64, [Option<f64>; 2])> = model
                    .range(lo..hi)
                    .map(|(t, r)| {
                        let keep = |k: usize, f: &str| if fields.contains(&f) { r[k] } else { None };
                        (*t, [keep(0, "a"), keep(1, "b")])
                    })
                    .filter(|(_, r)| r.iter().any(Option::is_some))
                    .collect();
                for batch_rows in [1, 37, 100, 999, 5_000, 1 << 20] {
                    let got = db.scan("m", lo..hi).fields(fields.iter().copied()).batch_rows(batch_rows);
                    let got = got.collect().unwrap();
                    assert!(got.iter().all(|b| b.rows() <= batch_rows && b.rows() > 0));
                    let ctx = format!("{lo}..{hi} {fields:?} batches of {batch_rows}");
                    assert_eq!(rows_of(&got), want, "{ctx}");
                }
            }
        }
    }

    #[test]
    fn a_scan_decodes_a_window_of_about_a_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (db, model) = fill(dir.path());
        let snap = db.snapshot().unwrap();
        let m = resolve_machines(&snap, &Machines::All)[0];
        for batch_rows in [1usize, 500, 3_000] {
            let range = snap.clamp(TimeRange { start: i64::MIN, end: i64::MAX });
            let ctx = ScanCtx { snap: db.snapshot().unwrap(), range, fields: None, batch_rows };
            let mut cur = ctx.start_machine(m).unwrap();
            let (mut windows, mut rows, mut largest) = (0, 0, 0);
            while let Some(w) = cur.next_window(&ctx.snap, range).unwrap() {
                windows += usize::from(!w.is_empty());
                rows += w.len();
                largest = largest.max(w.len());
            }
            assert_eq!(rows, model.len(), "every row once");
            // a window holds about max(batch, block) rows: blocks of 100 rows, and those of
            // the rewrite and of the slow field reach into it from either side
            let target = batch_rows.max(100);
            assert!(largest <= 2 * target + 200, "batches of {batch_rows}: a window of {largest} rows");
            assert!(
                windows >= model.len() / (2 * target + 200),
                "batches of {batch_rows}: {windows} windows"
            );
        }
    }
}
