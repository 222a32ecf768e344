//! `downsample` and `aggregate`: per-bucket count/sum/min/max/avg/first/last of fields, for
//! one machine, a set, or the fleet, answering whole blocks from their stored statistics when
//! that gives the same answer.
//!
//! Per machine, time is cut into windows (one per partition that has segments; memtable rows
//! elsewhere are windows of their own). Per field in a window, the sources holding the field
//! (segment blocks and memtable rows) are sorted by time and split into clusters that overlap
//! in time. A cluster of one block that lies inside the range and inside one bucket is
//! answered from the block's statistics (**pushdown**); a cluster of one source is decoded and
//! aggregated as is; a cluster of several overlapping sources is decoded and merged newest-wins
//! first, a slice of time of about [`MERGE_SLICE_ROWS`] rows at a time. Clusters are disjoint in
//! time and handled in time order, so buckets come out in
//! order without any per-bucket map.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::catalog::{FieldIdx, MachineIdx};
use crate::db::{Db, Snapshot};
use crate::error::{Error, Result};
use crate::model::{Bitmap, FieldType, TimeRange, Timestamp};
use crate::rows::{ColData, RowSet};
use crate::segment::{MachineIndex, Segment};
use crate::stats::{Stats, less, merge_after, summarize, summarize_masked};
use crate::tombstone::{any_overlap, mask, ranges_for};

use super::scan::{
    machine_segments, prepare_fleet, read_memtables, resolve_fields, resolve_machines, values_at_least,
};
use super::{Machines, Values};

/// Most buckets one downsample query may return (over all its series). Asking for more is
/// [`Error::InvalidArgument`]: use a wider bucket or a shorter range.
pub const DOWNSAMPLE_BUCKETS_MAX: usize = 16 << 20;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agg {
    /// Number of values.
    Count,
    /// Sum of the values, as `f64` (integers and booleans converted; NaN propagates).
    Sum,
    /// Smallest value, of the field's type (floats: NaN ignored unless every value is NaN).
    Min,
    /// Largest value, of the field's type (floats: NaN ignored unless every value is NaN).
    Max,
    /// `Sum / Count`, as `f64`.
    Avg,
    /// The value at the smallest timestamp.
    First,
    /// The value at the largest timestamp.
    Last,
}

/// One aggregate's results, one entry per bucket.
#[derive(Debug, Clone, PartialEq)]
pub enum AggColumn {
    /// Values per bucket (never 0: empty buckets are not returned).
    Count(Vec<u64>),
    /// Sums.
    Sum(Vec<f64>),
    /// Minima, of the field's type.
    Min(Values),
    /// Maxima, of the field's type.
    Max(Values),
    /// Averages.
    Avg(Vec<f64>),
    /// First values, of the field's type.
    First(Values),
    /// Last values, of the field's type.
    Last(Values),
}

/// The buckets of one field of one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSeries {
    /// The machine.
    pub machine: Arc<str>,
    /// The field.
    pub field: Arc<str>,
    /// The field's type.
    pub field_type: FieldType,
    /// Start of each bucket holding at least one value, ascending. For
    /// [`Db::aggregate`] there is one bucket, starting at the range's start.
    pub buckets: Vec<Timestamp>,
    /// One column per requested aggregate, in the order asked.
    pub aggs: Vec<AggColumn>,
}

impl BucketSeries {
    /// The column of an aggregate, if it was asked for.
    pub fn agg(&self, agg: Agg) -> Option<&AggColumn> {
        self.aggs.iter().find(|c| c.agg() == agg)
    }
}

impl AggColumn {
    /// Which aggregate this column holds.
    pub fn agg(&self) -> Agg {
        match self {
            AggColumn::Count(_) => Agg::Count,
            AggColumn::Sum(_) => Agg::Sum,
            AggColumn::Min(_) => Agg::Min,
            AggColumn::Max(_) => Agg::Max,
            AggColumn::Avg(_) => Agg::Avg,
            AggColumn::First(_) => Agg::First,
            AggColumn::Last(_) => Agg::Last,
        }
    }

    /// Entry `i` as an `f64` (counts converted; integers converted; booleans as 0 or 1).
    pub fn f64(&self, i: usize) -> f64 {
        match self {
            AggColumn::Count(v) => v[i] as f64,
            AggColumn::Sum(v) | AggColumn::Avg(v) => v[i],
            AggColumn::Min(v) | AggColumn::Max(v) | AggColumn::First(v) | AggColumn::Last(v) => {
                v.get(i).map(|x| x.as_f64()).unwrap_or(f64::NAN)
            }
        }
    }
}

/// What a query did, for callers and tests to see pushdown happen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryCounters {
    /// Blocks answered from their statistics without decoding.
    pub blocks_from_stats: u64,
    /// Blocks decoded.
    pub blocks_decoded: u64,
    /// Values decoded from blocks.
    pub points_decoded: u64,
    /// Memtable values aggregated.
    pub memtable_points: u64,
}

impl QueryCounters {
    fn add(&mut self, o: &QueryCounters) {
        self.blocks_from_stats += o.blocks_from_stats;
        self.blocks_decoded += o.blocks_decoded;
        self.points_decoded += o.points_decoded;
        self.memtable_points += o.memtable_points;
    }
}

/// A downsample result: the series in machine order, then field order, and the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Downsampled {
    /// One series per machine and field that has values in the range.
    pub series: Vec<BucketSeries>,
    /// What the query did.
    pub counters: QueryCounters,
}

/// How timestamps map to buckets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bucketing {
    /// `floor((ts - offset) / width) * width + offset`.
    Width { width: i64, offset: i64 },
    /// One bucket for the whole range, keyed by the range's start.
    Whole(Timestamp),
}

impl Bucketing {
    /// The key (start) of the bucket holding `ts`.
    #[inline]
    fn of(&self, ts: Timestamp) -> Timestamp {
        self.span(ts).0
    }

    /// The bucket holding `ts`: its key (start, clamped to the `i64` range) and the first
    /// timestamp after it (saturating).
    #[inline]
    fn span(&self, ts: Timestamp) -> (Timestamp, Timestamp) {
        match *self {
            Bucketing::Width { width, offset } => {
                // The common case in plain i64 arithmetic (i128 division is far slower).
                let fast = ts
                    .checked_sub(offset)
                    .and_then(|d| d.div_euclid(width).checked_mul(width)?.checked_add(offset));
                if let Some(b) = fast {
                    return (b, b.saturating_add(width));
                }
                let k = (ts as i128 - offset as i128).div_euclid(width as i128);
                let clamp = |x: i128| x.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
                (clamp(k * width as i128 + offset as i128), clamp((k + 1) * width as i128 + offset as i128))
            }
            Bucketing::Whole(start) => (start, i64::MAX),
        }
    }

    /// At most how many buckets `n` values at timestamps from `lo` to `hi` fill.
    fn most(&self, lo: Timestamp, hi: Timestamp, n: u64) -> u64 {
        match *self {
            Bucketing::Width { width, .. } => {
                let spanned = (hi as i128 - lo as i128) / width as i128 + 2;
                n.min(spanned.clamp(0, u64::MAX as i128) as u64)
            }
            Bucketing::Whole(_) => n.min(1),
        }
    }
}

/// A downsample being set up; see [`Db::downsample`] and [`Db::aggregate`].
#[must_use = "a downsample does nothing until run"]
pub struct Downsample<'a> {
    db: &'a Db,
    machines: Machines,
    range: TimeRange,
    bucketing: Option<(i64, i64)>,
    fields: Option<Vec<String>>,
    aggs: Vec<Agg>,
    max_buckets: usize,
    slice_rows: usize,
}

impl Db {
    /// Downsamples machines' fields over a time range into buckets of `width` (aligned to the
    /// epoch: a value at `ts` falls in the bucket starting at `floor(ts / width) * width`).
    /// Only values with `range.start <= ts < range.end` count; buckets without values are
    /// not returned. Default aggregates: count, min, max, avg.
    ///
    /// Errors: `width <= 0` or `start > end` are [`Error::InvalidArgument`], and so is a
    /// query that would return more than [`DOWNSAMPLE_BUCKETS_MAX`] buckets (or the limit set
    /// with [`Downsample::max_buckets`]). An empty range returns no series. Machines and
    /// fields that do not exist contribute no series.
    ///
    /// ```
    /// use gemba::{Agg, Col, Db, Options, WriteBatch};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = Db::open(dir.path(), Options::default())?;
    /// let ts: Vec<i64> = (0..100).collect();
    /// let temp: Vec<f64> = (0..100).map(|i| i as f64).collect();
    /// let mut b = WriteBatch::new();
    /// b.columns("press-07", &ts, [("temp_c", Col::f64(&temp))])?;
    /// db.write(&b)?;
    /// let out = db.downsample("press-07", 0..100, 50).aggs([Agg::Min, Agg::Max, Agg::Avg]).run()?;
    /// let s = &out.series[0];
    /// assert_eq!(s.buckets, vec![0, 50]);
    /// assert_eq!(s.agg(Agg::Avg).unwrap().f64(1), 74.5);
    /// # Ok::<(), gemba::Error>(())
    /// ```
    pub fn downsample(
        &self,
        machines: impl Into<Machines>,
        range: impl Into<TimeRange>,
        width: i64,
    ) -> Downsample<'_> {
        Downsample {
            db: self,
            machines: machines.into(),
            range: range.into(),
            bucketing: Some((width, 0)),
            fields: None,
            aggs: vec![Agg::Count, Agg::Min, Agg::Max, Agg::Avg],
            max_buckets: DOWNSAMPLE_BUCKETS_MAX,
            slice_rows: MERGE_SLICE_ROWS,
        }
    }

    /// Aggregates machines' fields over a whole time range: one bucket per series, starting at
    /// the range's start. Default aggregates: count and sum.
    pub fn aggregate(&self, machines: impl Into<Machines>, range: impl Into<TimeRange>) -> Downsample<'_> {
        Downsample {
            db: self,
            machines: machines.into(),
            range: range.into(),
            bucketing: None,
            fields: None,
            aggs: vec![Agg::Count, Agg::Sum],
            max_buckets: DOWNSAMPLE_BUCKETS_MAX,
            slice_rows: MERGE_SLICE_ROWS,
        }
    }
}

impl<'a> Downsample<'a> {
    /// Only these fields, in this order (default: every field of each machine).
    pub fn fields<S: AsRef<str>>(mut self, fields: impl IntoIterator<Item = S>) -> Downsample<'a> {
        self.fields = Some(fields.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// The aggregates to compute, in the order their columns should come.
    pub fn aggs(mut self, aggs: impl IntoIterator<Item = Agg>) -> Downsample<'a> {
        self.aggs = aggs.into_iter().collect();
        self
    }

    /// Shifts bucket boundaries: buckets start at `offset + k * width`.
    pub fn offset(mut self, offset: i64) -> Downsample<'a> {
        if let Some((w, _)) = self.bucketing {
            self.bucketing = Some((w, offset));
        }
        self
    }

    /// Fails the query with [`Error::InvalidArgument`] when it would return more than this
    /// many buckets in all (default and upper limit: [`DOWNSAMPLE_BUCKETS_MAX`]).
    pub fn max_buckets(mut self, n: usize) -> Downsample<'a> {
        self.max_buckets = n.min(DOWNSAMPLE_BUCKETS_MAX);
        self
    }

    /// About how many rows of overlapping sources are merged at once (default 2^20; at least
    /// 1). For tests and fuzzing, to cut small data into many slices.
    #[doc(hidden)]
    pub fn slice_rows(mut self, n: usize) -> Downsample<'a> {
        self.slice_rows = n.max(1);
        self
    }

    /// Runs the query on a snapshot of the database.
    pub fn run(self) -> Result<Downsampled> {
        self.range.validate()?;
        let bucketing = match self.bucketing {
            Some((width, _)) if width <= 0 => {
                return Err(Error::invalid(format!("bucket width must be positive, got {width}")));
            }
            Some((width, offset)) => Bucketing::Width { width, offset },
            None => Bucketing::Whole(self.range.start),
        };
        if self.aggs.is_empty() {
            return Err(Error::invalid("no aggregate requested"));
        }
        let snap = self.db.snapshot()?;
        let machines = resolve_machines(&snap, &self.machines);
        let fields = self.fields.as_deref();
        let range = snap.clamp(self.range);
        let aggs = &self.aggs;
        let slice_rows = self.slice_rows;
        let run_one = |m: MachineIdx, budget: &AtomicUsize| -> Result<(Vec<BucketSeries>, QueryCounters)> {
            let sel = resolve_fields(&snap, m, fields);
            let mut counters = QueryCounters::default();
            if sel.is_empty() || range.is_empty() {
                return Ok((Vec::new(), counters));
            }
            let builders =
                downsample_machine(&snap, m, range, bucketing, &sel, slice_rows, &mut counters, budget)?;
            let name = snap.catalog.entry(m).name.clone();
            let series = sel
                .iter()
                .zip(builders)
                .filter(|(_, b)| !b.buckets.is_empty())
                .map(|((_, f, ty), b)| b.finish(name.clone(), f.clone(), *ty, aggs))
                .collect();
            Ok((series, counters))
        };
        prepare_fleet(&snap, machines.len());
        let big = machines.len() >= PARALLEL_QUERY_MIN_MACHINES
            || values_at_least(&snap, &machines, range, PARALLEL_QUERY_MIN_VALUES);
        let threads = if big { crate::cores() } else { 1 };
        let per_machine = run_parallel(&machines, threads, self.max_buckets, run_one)?;
        let mut out = Downsampled { series: Vec::new(), counters: QueryCounters::default() };
        for (series, c) in per_machine {
            out.series.extend(series);
            out.counters.add(&c);
        }
        Ok(out)
    }
}

/// A fleet query runs on several threads only when the machines' segments hold at least this
/// many values in the range (statistics may answer most of them, but the blocks still have to
/// be visited), or when it covers [`PARALLEL_QUERY_MIN_MACHINES`] machines (their data may all
/// be in memtables): below both, starting threads costs more than it saves.
pub(crate) const PARALLEL_QUERY_MIN_VALUES: u64 = 1 << 18;

/// See [`PARALLEL_QUERY_MIN_VALUES`].
pub(crate) const PARALLEL_QUERY_MIN_MACHINES: usize = 64;

/// Runs `f` for every machine, on up to `threads` threads (the calling one included);
/// results come back in machine order. The threads share one bucket budget.
pub(crate) fn run_parallel<T: Send>(
    machines: &[MachineIdx],
    threads: usize,
    buckets_max: usize,
    f: impl Fn(MachineIdx, &AtomicUsize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let budget = AtomicUsize::new(buckets_max);
    crate::try_map_interleaved(machines, threads, |&m| f(m, &budget))
}

/// The running aggregate of one bucket.
#[derive(Debug, Clone, Copy)]
struct Acc {
    count: u64,
    sum: f64,
    min: u64,
    max: u64,
    first: u64,
    first_ts: Timestamp,
    last: u64,
    last_ts: Timestamp,
}

/// Buckets of one series, built in time order.
#[derive(Debug, Default)]
pub(crate) struct SeriesBuilder {
    buckets: Vec<Timestamp>,
    accs: Vec<Acc>,
}

impl SeriesBuilder {
    /// Makes room for `n` more buckets (at most a few thousand: an estimate only saves
    /// regrowing, which is also where two query threads met in the allocator's lock).
    fn reserve(&mut self, n: u64) {
        let n = n.min(1 << 12) as usize;
        self.buckets.reserve(n);
        self.accs.reserve(n);
    }

    /// The accumulator of `bucket`, which is at or after the last one.
    #[inline]
    fn acc(&mut self, bucket: Timestamp, budget: &AtomicUsize) -> Result<&mut Acc> {
        if self.buckets.last() != Some(&bucket) {
            debug_assert!(self.buckets.last().is_none_or(|&b| b < bucket), "buckets out of order");
            if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
                return Err(Error::invalid(
                    "the query would return more buckets than its limit; use a wider bucket or a shorter range",
                ));
            }
            self.buckets.push(bucket);
            self.accs.push(Acc {
                count: 0,
                sum: 0.0,
                min: 0,
                max: 0,
                first: 0,
                first_ts: i64::MAX,
                last: 0,
                last_ts: i64::MIN,
            });
        }
        Ok(self.accs.last_mut().unwrap())
    }

    fn add_stats(&mut self, ty: FieldType, bucket: Timestamp, s: &Stats, budget: &AtomicUsize) -> Result<()> {
        if s.count == 0 {
            return Ok(());
        }
        let a = self.acc(bucket, budget)?;
        if a.count == 0 {
            (a.min, a.max) = (s.min, s.max);
        } else {
            if less(ty, s.min, a.min) {
                a.min = s.min;
            }
            if less(ty, a.max, s.max) {
                a.max = s.max;
            }
        }
        a.count += s.count as u64;
        a.sum += s.sum;
        if s.first_ts < a.first_ts {
            (a.first, a.first_ts) = (s.first, s.first_ts);
        }
        if s.last_ts > a.last_ts {
            (a.last, a.last_ts) = (s.last, s.last_ts);
        }
        Ok(())
    }

    /// Adds values at sorted timestamps (with optional validity), keeping those in `range`.
    fn add_rows(
        &mut self,
        ty: FieldType,
        bucketing: &Bucketing,
        range: TimeRange,
        ts: &[Timestamp],
        col: &ColData,
        budget: &AtomicUsize,
    ) -> Result<u64> {
        let lo = ts.partition_point(|&t| t < range.start);
        let hi = ts.partition_point(|&t| t < range.end);
        let all_valid = col.valid.all();
        let mut added = 0;
        let mut i = lo;
        while i < hi {
            let (bucket, next) = bucketing.span(ts[i]);
            let j = gallop(ts, i, hi, next);
            let s = if all_valid {
                summarize(ty, &col.vals[i..j], &ts[i..j])
            } else {
                summarize_masked(ty, &col.vals, ts, &col.valid, i, j)
            };
            if s.count > 0 {
                self.add_stats(ty, bucket, &s, budget)?;
                added += s.count as u64;
            }
            i = j;
        }
        Ok(added)
    }

    /// Like [`SeriesBuilder::add_rows`] for a block decoded compactly: `vals` holds the
    /// present values in row order and `valid` (when some rows lack a value) says which rows.
    #[allow(clippy::too_many_arguments)]
    fn add_rows_compact(
        &mut self,
        ty: FieldType,
        bucketing: &Bucketing,
        range: TimeRange,
        ts: &[Timestamp],
        vals: &[u64],
        valid: Option<&Bitmap>,
        budget: &AtomicUsize,
    ) -> Result<u64> {
        let lo = ts.partition_point(|&t| t < range.start);
        let hi = ts.partition_point(|&t| t < range.end);
        let mut added = 0;
        // Index into `vals` of the first present row at or after `i`.
        let mut k = match valid {
            None => lo,
            Some(v) => v.slice(0, lo).count_ones(),
        };
        let mut i = lo;
        while i < hi {
            let (bucket, next) = bucketing.span(ts[i]);
            let j = gallop(ts, i, hi, next);
            let s = match valid {
                None => summarize(ty, &vals[i..j], &ts[i..j]),
                Some(v) => {
                    let mut acc = Stats::EMPTY;
                    let mut a = v.next(true, i, j);
                    while a < j {
                        let b = v.next(false, a, j);
                        merge_after(ty, &mut acc, &summarize(ty, &vals[k..k + (b - a)], &ts[a..b]));
                        k += b - a;
                        a = v.next(true, b, j);
                    }
                    acc
                }
            };
            if valid.is_none() {
                k = j;
            }
            if s.count > 0 {
                self.add_stats(ty, bucket, &s, budget)?;
                added += s.count as u64;
            }
            i = j;
        }
        Ok(added)
    }

    fn finish(self, machine: Arc<str>, field: Arc<str>, ty: FieldType, aggs: &[Agg]) -> BucketSeries {
        let typed = |f: &dyn Fn(&Acc) -> u64| Values::from_bits(ty, self.accs.iter().map(f).collect());
        let cols = aggs
            .iter()
            .map(|a| match a {
                Agg::Count => AggColumn::Count(self.accs.iter().map(|a| a.count).collect()),
                Agg::Sum => AggColumn::Sum(self.accs.iter().map(|a| a.sum).collect()),
                Agg::Avg => AggColumn::Avg(self.accs.iter().map(|a| a.sum / a.count as f64).collect()),
                Agg::Min => AggColumn::Min(typed(&|a| a.min)),
                Agg::Max => AggColumn::Max(typed(&|a| a.max)),
                Agg::First => AggColumn::First(typed(&|a| a.first)),
                Agg::Last => AggColumn::Last(typed(&|a| a.last)),
            })
            .collect();
        BucketSeries { machine, field, field_type: ty, buckets: self.buckets, aggs: cols }
    }
}

/// The first index in `i..hi` whose timestamp is at least `next` (`ts` ascending; `ts[i] <
/// next`): galloping from `i`, so a short run costs a few comparisons.
#[inline]
fn gallop(ts: &[Timestamp], i: usize, hi: usize, next: Timestamp) -> usize {
    let mut step = 1;
    let mut lo = i + 1;
    loop {
        let probe = i + step;
        if probe >= hi || ts[probe] >= next {
            let end = probe.min(hi);
            return lo + ts[lo..end].partition_point(|&t| t < next);
        }
        lo = probe + 1;
        step *= 2;
    }
}

/// A source of one field in a window.
#[derive(Clone, Copy)]
struct Item {
    ts_min: Timestamp,
    ts_max: Timestamp,
    /// Precedence: higher wins at equal timestamps.
    rank: usize,
    src: Src,
}

#[derive(Clone, Copy)]
enum Src {
    /// Segment (index into the window's list), group, block, position of the field in it.
    Block { seg: usize, group: usize, block: usize, pos: usize },
    /// The memtable rows of the window.
    Mem,
}

/// Downsamples one machine: a builder per selected field.
#[allow(clippy::too_many_arguments)]
fn downsample_machine(
    snap: &Snapshot,
    m: MachineIdx,
    range: TimeRange,
    bucketing: Bucketing,
    sel: &[(FieldIdx, Arc<str>, FieldType)],
    slice_rows: usize,
    counters: &mut QueryCounters,
    budget: &AtomicUsize,
) -> Result<Vec<SeriesBuilder>> {
    let name = snap.catalog.entry(m).name.clone();
    let idx: Vec<FieldIdx> = sel.iter().map(|s| s.0).collect();
    let mem = read_memtables(snap, m, range, &idx);
    let segs: Vec<(&Segment, &MachineIndex)> = machine_segments(snap, &name, range).collect();
    let mut builders: Vec<SeriesBuilder> = sel.iter().map(|_| SeriesBuilder::default()).collect();
    let mut mem_at = 0;
    // One partition's segments at a time.
    for window in segs.chunk_by(|a, b| a.0.index.partition_start == b.0.index.partition_start) {
        let p = window[0].0.index.partition_start;
        let lo = p.max(range.start);
        let hi = p.saturating_add(window[0].0.index.partition_width).min(range.end);
        // Memtable rows before the window overlap no segment: aggregate them as they are.
        let before = mem_at + mem.ts[mem_at..].partition_point(|&t| t < lo);
        add_mem_rows(&mem, mem_at, before, sel, &bucketing, range, &mut builders, counters, budget)?;
        let mem_end = before + mem.ts[before..].partition_point(|&t| t < hi);
        let mem_w = crate::rows::slice(&mem, before, mem_end);
        mem_at = mem_end;
        let win_range = TimeRange { start: lo, end: hi };
        let mut ts_cache = TsCache::default();
        for (k, (_, fname, ty)) in sel.iter().enumerate() {
            let mut items = Vec::new();
            let mut buckets = 0u64;
            // Per segment of the window: the deletes that hide values of this field in it.
            let mut dels: Vec<Vec<TimeRange>> = vec![Vec::new(); window.len()];
            for (si, (seg, mi)) in window.iter().enumerate() {
                let Some((g, pos)) = mi.locate(fname) else {
                    continue;
                };
                dels[si] = ranges_for(&snap.version.tombstones, &name, fname, seg.index.applied_seq);
                let found = mi.groups[g].block_range(win_range);
                for (bi, b) in
                    mi.groups[g].blocks[found.clone()].iter().enumerate().map(|(i, b)| (found.start + i, b))
                {
                    if b.fields[pos].stats.count > 0 {
                        buckets += bucketing.most(b.ts_min, b.ts_max, b.fields[pos].stats.count as u64);
                        items.push(Item {
                            ts_min: b.ts_min,
                            ts_max: b.ts_max,
                            rank: si,
                            src: Src::Block { seg: si, group: g, block: bi, pos },
                        });
                    }
                }
            }
            if let Some(c) = &mem_w.cols[k] {
                let mut valid_ts = c.valid.ones().map(|i| mem_w.ts[i]);
                if let Some(first) = valid_ts.next() {
                    let last = valid_ts.last().unwrap_or(first);
                    buckets += bucketing.most(first, last, c.valid.count_ones() as u64);
                    items.push(Item { ts_min: first, ts_max: last, rank: usize::MAX, src: Src::Mem });
                }
            }
            builders[k].reserve(buckets);
            items.sort_by_key(|it| (it.ts_min, it.rank));
            let mut a = 0;
            while a < items.len() {
                let mut cluster_max = items[a].ts_max;
                let mut b = a + 1;
                while b < items.len() && items[b].ts_min <= cluster_max {
                    cluster_max = cluster_max.max(items[b].ts_max);
                    b += 1;
                }
                let cluster = &items[a..b];
                a = b;
                let builder = &mut builders[k];
                if let [one] = cluster {
                    match one.src {
                        Src::Block { seg, group, block, pos } => {
                            let bi = &window[seg].1.groups[group].blocks[block];
                            let inside = bi.ts_min >= lo && bi.ts_max < hi;
                            let deleted = any_overlap(&dels[seg], bi.ts_min, bi.ts_max);
                            if inside && !deleted && bucketing.of(bi.ts_min) == bucketing.of(bi.ts_max) {
                                builder.add_stats(
                                    *ty,
                                    bucketing.of(bi.ts_min),
                                    &bi.fields[pos].stats,
                                    budget,
                                )?;
                                counters.blocks_from_stats += 1;
                                continue;
                            }
                            if dels[seg].is_empty() {
                                let (ts, vals, valid) =
                                    decode_compact(window, &mut ts_cache, one.src, *ty, counters)?;
                                builder.add_rows_compact(
                                    *ty,
                                    &bucketing,
                                    win_range,
                                    &ts,
                                    &vals,
                                    valid.as_ref(),
                                    budget,
                                )?;
                            } else {
                                let (ts, col) = decode(window, &mut ts_cache, one.src, *ty, &dels, counters)?;
                                builder.add_rows(*ty, &bucketing, win_range, &ts, &col, budget)?;
                            }
                        }
                        Src::Mem => {
                            let col = mem_w.cols[k].as_ref().expect("memtable column");
                            counters.memtable_points +=
                                builder.add_rows(*ty, &bucketing, win_range, &mem_w.ts, col, budget)?;
                        }
                    }
                    continue;
                }
                // Overlapping sources: decoded, merged newest-wins and aggregated a slice of
                // time at a time (`merge_slices`).
                let rows_of = |it: &Item| match it.src {
                    Src::Block { seg, group, block, .. } => {
                        window[seg].1.groups[group].blocks[block].rows as usize
                    }
                    Src::Mem => mem_w.len(),
                };
                // (precedence, rows, last timestamp) of the sources decoded and not used up
                let mut open: Vec<(usize, RowSet, Timestamp)> = Vec::new();
                let mut next = 0;
                for (s_lo, s_hi) in merge_slices(cluster, rows_of, slice_rows) {
                    // Sources starting in this slice are decoded; they stay until the slice
                    // they end in.
                    while next < cluster.len() && cluster[next].ts_min < s_hi {
                        let it = &cluster[next];
                        let rows = match it.src {
                            Src::Block { .. } => {
                                let (ts, col) = decode(window, &mut ts_cache, it.src, *ty, &dels, counters)?;
                                RowSet { ts: ts.to_vec(), cols: vec![Some(col)] }
                            }
                            Src::Mem => RowSet { ts: mem_w.ts.clone(), cols: vec![mem_w.cols[k].clone()] },
                        };
                        open.push((it.rank, rows, it.ts_max));
                        next += 1;
                    }
                    open.sort_by_key(|o| o.0);
                    let mut merged = RowSet::empty(1);
                    for (_, rows, _) in &open {
                        let a = rows.ts.partition_point(|&t| t < s_lo);
                        let b = rows.ts.partition_point(|&t| t < s_hi);
                        merged = merged.merge_newer(crate::rows::slice(rows, a, b));
                    }
                    if let Some(col) = &merged.cols[0] {
                        builder.add_rows(*ty, &bucketing, win_range, &merged.ts, col, budget)?;
                    }
                    open.retain(|o| o.2 >= s_hi);
                }
            }
        }
    }
    add_mem_rows(&mem, mem_at, mem.len(), sel, &bucketing, range, &mut builders, counters, budget)?;
    Ok(builders)
}

/// About how many rows of overlapping sources a downsample decodes and merges at once (see
/// [`merge_slices`]).
pub(crate) const MERGE_SLICE_ROWS: usize = 1 << 20;

/// Slices of time over which a cluster of overlapping sources (`items`, sorted by start) is
/// merged: consecutive, covering the cluster, each of about `target` rows of the sources
/// starting in it (at least one source), cut where a source starts. Merging a slice at a
/// time bounds memory (a segment rewriting a whole partition, a re-sent backlog, overlaps
/// all of it until compaction merges them): a slice holds its own sources' rows and, of each
/// source reaching into it from before, the rest of one block.
fn merge_slices(
    items: &[Item],
    rows_of: impl Fn(&Item) -> usize,
    target: usize,
) -> Vec<(Timestamp, Timestamp)> {
    let end = items.iter().map(|it| it.ts_max).max().unwrap_or(i64::MIN).saturating_add(1);
    let mut out = Vec::new();
    let (mut start, mut rows) = (items.first().map_or(end, |it| it.ts_min), 0usize);
    for it in items {
        let n = rows_of(it);
        if rows > 0 && rows + n > target && it.ts_min > start {
            out.push((start, it.ts_min));
            (start, rows) = (it.ts_min, 0);
        }
        rows += n;
    }
    out.push((start, end));
    out
}

/// A block decoded compactly: its timestamps, the present values in row order, the validity.
type CompactBlock = (Arc<Vec<Timestamp>>, Vec<u64>, Option<Bitmap>);

/// Decodes one field of one block compactly (present values and validity), its timestamps
/// cached per window.
fn decode_compact(
    window: &[(&Segment, &MachineIndex)],
    cache: &mut TsCache,
    src: Src,
    ty: FieldType,
    counters: &mut QueryCounters,
) -> Result<CompactBlock> {
    let Src::Block { seg, group, block, pos } = src else { unreachable!("decode of a memtable item") };
    let (s, mi) = window[seg];
    let b = &mi.groups[group].blocks[block];
    let ts = block_ts_cached(s, b, cache, (seg, group, block))?;
    let (vals, valid) = s.block_field_compact(ty, b.rows as usize, &b.fields[pos])?;
    counters.blocks_decoded += 1;
    counters.points_decoded += b.fields[pos].stats.count as u64;
    Ok((ts, vals, valid))
}

/// Most timestamps a window's cache holds (8 MiB): fields are aggregated one after the
/// other, each needing its blocks' timestamps, which the cache decodes once per window; but a
/// window is a whole partition, which can hold a week of a 1 kHz machine (600 M timestamps).
/// Past the limit, blocks' timestamps are decoded for each field that needs them. (Small in
/// unit tests, so that they go past it.)
const TS_CACHE_MAX: usize = if cfg!(test) { 64 } else { 1 << 20 };

/// Decoded timestamps of a window's blocks, by (segment, group, block), up to
/// [`TS_CACHE_MAX`] of them.
#[derive(Default)]
struct TsCache {
    blocks: HashMap<(usize, usize, usize), Arc<Vec<Timestamp>>>,
    held: usize,
}

fn block_ts_cached(
    s: &Segment,
    b: &crate::segment::BlockIndex,
    cache: &mut TsCache,
    key: (usize, usize, usize),
) -> Result<Arc<Vec<Timestamp>>> {
    if let Some(ts) = cache.blocks.get(&key) {
        return Ok(ts.clone());
    }
    let mut ts = Vec::new();
    s.block_ts(b, &mut ts)?;
    let ts = Arc::new(ts);
    if cache.held + ts.len() <= TS_CACHE_MAX {
        cache.held += ts.len();
        cache.blocks.insert(key, ts.clone());
    }
    Ok(ts)
}

/// Decodes one field of one block (its timestamps cached per window), hiding deleted values.
fn decode(
    window: &[(&Segment, &MachineIndex)],
    cache: &mut TsCache,
    src: Src,
    ty: FieldType,
    dels: &[Vec<TimeRange>],
    counters: &mut QueryCounters,
) -> Result<(Arc<Vec<Timestamp>>, ColData)> {
    let Src::Block { seg, group, block, pos } = src else { unreachable!("decode of a memtable item") };
    let (s, mi) = window[seg];
    let b = &mi.groups[group].blocks[block];
    let ts = block_ts_cached(s, b, cache, (seg, group, block))?;
    let mut col = s.block_field(ty, b.rows as usize, &b.fields[pos])?;
    mask(&ts, &mut col.valid, &dels[seg]);
    counters.blocks_decoded += 1;
    counters.points_decoded += b.fields[pos].stats.count as u64;
    Ok((ts, col))
}

/// Aggregates memtable rows `lo..hi` (which overlap no segment) into the builders.
#[allow(clippy::too_many_arguments)]
fn add_mem_rows(
    mem: &RowSet,
    lo: usize,
    hi: usize,
    sel: &[(FieldIdx, Arc<str>, FieldType)],
    bucketing: &Bucketing,
    range: TimeRange,
    builders: &mut [SeriesBuilder],
    counters: &mut QueryCounters,
    budget: &AtomicUsize,
) -> Result<()> {
    if lo >= hi {
        return Ok(());
    }
    let part = crate::rows::slice(mem, lo, hi);
    for (k, (_, _, ty)) in sel.iter().enumerate() {
        if let Some(col) = &part.cols[k] {
            counters.memtable_points += builders[k].add_rows(*ty, bucketing, range, &part.ts, col, budget)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::{Agg, AggColumn, Col, Db, Options, SyncPolicy, Value, WriteBatch};

    /// Buckets of one field computed from a scan: start -> (count, sum, min, max, first, last).
    type Naive = BTreeMap<i64, (u64, f64, f64, f64, f64, f64)>;

    fn naive(db: &Db, field: &str, lo: i64, hi: i64, width: i64) -> Naive {
        let mut out = Naive::new();
        for b in db.scan("m", lo..hi).fields([field]).collect().unwrap() {
            for (i, &t) in b.ts.iter().enumerate() {
                let Some(Value::F64(v)) = b.columns[0].value(i) else { continue };
                let e = out.entry(t.div_euclid(width) * width).or_insert((0, 0.0, v, v, v, v));
                *e = (e.0 + 1, e.1 + v, e.2.min(v), e.3.max(v), e.4, v);
            }
        }
        out
    }

    fn column(s: &crate::BucketSeries, a: Agg) -> Vec<f64> {
        match s.agg(a).unwrap() {
            AggColumn::Count(c) => c.iter().map(|&n| n as f64).collect(),
            AggColumn::Sum(v) | AggColumn::Avg(v) => v.clone(),
            AggColumn::Min(v) | AggColumn::Max(v) | AggColumn::First(v) | AggColumn::Last(v) => match v {
                crate::Values::F64(v) => v.clone(),
                other => panic!("unexpected {other:?}"),
            },
        }
    }

    const AGGS: [Agg; 6] = [Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::First, Agg::Last];

    /// Every series of `out` (a downsample of `lo..hi` by `width` with [`AGGS`]) equals
    /// aggregating a scan of its field.
    fn assert_matches_scan(db: &Db, out: &crate::Downsampled, lo: i64, hi: i64, width: i64) {
        for s in &out.series {
            let want = naive(db, &s.field, lo, hi, width);
            let ctx = format!("{} {lo}..{hi} by {width}", s.field);
            assert_eq!(s.buckets, want.keys().copied().collect::<Vec<_>>(), "{ctx}");
            let cols: Vec<Vec<f64>> = AGGS.iter().map(|&a| column(s, a)).collect();
            for (i, w) in want.values().enumerate() {
                let got = (cols[0][i] as u64, cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i]);
                assert_eq!(got, *w, "{ctx} bucket {}", s.buckets[i]);
            }
        }
    }

    /// Windows whose blocks hold more timestamps than the cache keeps: the same answers as
    /// aggregating a scan, for two fields sampled every row (one group: the second finds the
    /// first blocks' timestamps cached, decodes the others again) and one every third row (a
    /// group of its own), over flushed segments and one rewriting a part of them.
    #[test]
    fn timestamps_past_the_cache_limit_are_decoded_again() {
        let dir = tempfile::tempdir().unwrap();
        let opts =
            Options { sync: SyncPolicy::Os, block_rows: 10, compaction_trigger: 1_000, ..Options::default() };
        let db = Db::open(dir.path(), opts).unwrap();
        for r in 0..5i64 {
            let ts: Vec<i64> = (r * 200..(r + 1) * 200).collect();
            let a: Vec<f64> = ts.iter().map(|&t| (t % 97) as f64).collect();
            let bt: Vec<i64> = ts.iter().copied().filter(|t| t % 3 == 0).collect();
            let bv: Vec<f64> = bt.iter().map(|&t| -((t % 13) as f64)).collect();
            let c: Vec<f64> = ts.iter().map(|&t| (t % 89) as f64).collect();
            let mut w = WriteBatch::new();
            w.columns("m", &ts, [("a", Col::f64(&a)), ("c", Col::f64(&c))]).unwrap();
            w.columns("m", &bt, [("b", Col::f64(&bv))]).unwrap();
            db.write(&w).unwrap();
            db.flush().unwrap();
        }
        let ts: Vec<i64> = (150..450).step_by(2).collect();
        let a: Vec<f64> = ts.iter().map(|&t| (t % 31) as f64 + 100.0).collect();
        let mut w = WriteBatch::new();
        w.columns("m", &ts, [("a", Col::f64(&a))]).unwrap();
        db.write(&w).unwrap();
        db.flush().unwrap();

        for (lo, hi) in [(0, 1_000), (33, 777)] {
            for width in [7, 50, 1_000] {
                let out = db.downsample("m", lo..hi, width).aggs(AGGS).run().unwrap();
                assert_eq!(out.series.len(), 3);
                assert_matches_scan(&db, &out, lo, hi, width);
            }
        }
    }

    /// A rewrite of a whole partition (a re-sent backlog, every other row), a delete between
    /// the original and the rewrite, and memtable rows over both: every source overlaps the
    /// others, so the partition is one cluster, merged in slices of about 256 rows here;
    /// the rewrite's blocks (two of the original's long) and the memtable rows reach across
    /// cuts. The same answers as aggregating a scan, and each block decoded once, as many
    /// decodes as merging the cluster whole.
    #[test]
    fn overlapping_sources_are_merged_slice_by_slice() {
        let dir = tempfile::tempdir().unwrap();
        // The delete makes the partition due for a rewrite; a budget of 8 KiB keeps the
        // compaction from running (a machine's rows would need more than 4 x 8 KiB), so the
        // queries below meet the overlapping segments.
        let opts = Options {
            sync: SyncPolicy::Os,
            block_rows: 16,
            compaction_trigger: 1_000,
            memtable_bytes_max: 8 << 10,
            ..Options::default()
        };
        let db = Db::open(dir.path(), opts).unwrap();
        let ts: Vec<i64> = (0..2_000).collect();
        let a: Vec<f64> = ts.iter().map(|&t| (t % 97) as f64).collect();
        let bt: Vec<i64> = ts.iter().copied().filter(|t| t % 3 == 0).collect();
        let bv: Vec<f64> = bt.iter().map(|&t| -((t % 13) as f64)).collect();
        let mut w = WriteBatch::new();
        w.columns("m", &ts, [("a", Col::f64(&a))]).unwrap();
        w.columns("m", &bt, [("b", Col::f64(&bv))]).unwrap();
        db.write(&w).unwrap();
        db.flush().unwrap();
        db.delete_fields("m", ["a"], 500..700).unwrap();
        let ts: Vec<i64> = (0..2_000).step_by(2).collect();
        let a: Vec<f64> = ts.iter().map(|&t| (t % 31) as f64 + 100.0).collect();
        let mut w = WriteBatch::new();
        w.columns("m", &ts, [("a", Col::f64(&a))]).unwrap();
        db.write(&w).unwrap();
        db.flush().unwrap();
        // A block ending exactly where others start (96 and 112 begin blocks of the first
        // segment): a source must stay open into the slice its last row falls in.
        let mut w = WriteBatch::new();
        w.columns("m", &[80, 96, 112], [("a", Col::f64(&[-1.0, -2.0, -3.0]))]).unwrap();
        db.write(&w).unwrap();
        db.flush().unwrap();
        let ts: Vec<i64> = (1_000..1_100).collect();
        let a: Vec<f64> = ts.iter().map(|&t| (t % 7) as f64 - 50.0).collect();
        let mut w = WriteBatch::new();
        w.columns("m", &ts, [("a", Col::f64(&a)), ("b", Col::f64(&a))]).unwrap();
        db.write(&w).unwrap();
        assert_eq!(db.stats().segments, 3);

        for (lo, hi) in [(0, 2_000), (90, 1_877), (990, 1_010)] {
            for width in [7, 50, 1_000, 5_000] {
                let whole = db.downsample("m", lo..hi, width).aggs(AGGS).run().unwrap();
                // slices of one source (every start a cut) and of about 256 rows
                let sliced = [1, 256]
                    .map(|n| db.downsample("m", lo..hi, width).aggs(AGGS).slice_rows(n).run().unwrap());
                for s in &sliced {
                    assert_eq!(*s, whole, "{lo}..{hi} by {width}");
                }
                assert_eq!(whole.series.len(), 2);
                assert_matches_scan(&db, &whole, lo, hi, width);
            }
        }
        // the segments still overlap: nothing merged them meanwhile
        assert_eq!(db.stats().segments, 3);
    }
}
