//! `Db`: open → recover → write / read / flush / close.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::io::{FileSystem, LockGuard};
use crate::manifest::{self, Manifest, SegmentMeta};
use crate::memtable::Memtable;
use crate::model::{FieldType, TimeRange, WriteBatch};
use crate::options::{Options, SyncPolicy};
use crate::query::tails::TailCache;
use crate::segment::writer::SegmentSummary;
use crate::segment::{self, Segment};
use crate::tombstone::Tombstone;
use crate::wal::RecoveryReport;
use crate::wal::format::{self, KIND_BATCH, KIND_DELETE, RECORD_LEN_MAX};
use crate::wal::reader;
use crate::wal::writer::WalWriter;

/// Name of the lock file in the database directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// What a query sees: one consistent set of memtables and segments, fixed at a sequence number.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) version: Arc<Version>,
    pub(crate) seq: u64,
    pub(crate) catalog: Arc<Catalog>,
    /// Retention: nothing older than this is visible.
    pub(crate) ts_floor: i64,
}

impl Snapshot {
    /// `range` without the part retention has removed.
    pub(crate) fn clamp(&self, range: TimeRange) -> TimeRange {
        TimeRange { start: range.start.max(self.ts_floor), end: range.end }
    }
}

/// The live set of data sources. Replaced (never mutated) when it changes, so a query holding
/// one keeps every memtable and mapped segment in it alive until it is done.
#[derive(Default, Clone)]
pub(crate) struct Version {
    /// Takes writes.
    pub(crate) active: Arc<Memtable>,
    /// Frozen, waiting to be flushed; oldest first.
    pub(crate) frozen: Vec<Arc<Memtable>>,
    /// Live segments, sorted by (partition, max_seq): within a partition, later wins.
    pub(crate) segments: Vec<Arc<Segment>>,
    /// Live deletes, in sequence order.
    pub(crate) tombstones: Arc<Vec<Arc<Tombstone>>>,
    /// The last value of every (machine, field) in `segments`, built on first use.
    pub(crate) tails: Arc<TailCache>,
    /// Where each machine is in `segments`, built on first use; shared by versions with the
    /// same segments.
    pub(crate) by_machine: Arc<OnceLock<MachineSegments>>,
}

/// Per machine id, its entries in a version's segments: (position in `segments`, position in
/// that segment's machine index), in `segments` order. A fleet query builds it (see
/// `query::scan::prepare_fleet`) and then finds each machine's segments with one hash lookup
/// instead of a binary search by name in every segment's index (which, with many
/// partitions, was most of a statistics-only fleet query).
pub(crate) type MachineSegments = HashMap<Arc<str>, Vec<(u32, u32)>>;

impl Version {
    /// See [`Version::by_machine`].
    pub(crate) fn machine_segments(&self) -> &MachineSegments {
        self.by_machine.get_or_init(|| {
            let mut map: MachineSegments = HashMap::new();
            for (s, seg) in self.segments.iter().enumerate() {
                for (i, mi) in seg.index.machines.iter().enumerate() {
                    map.entry(mi.name.clone()).or_default().push((s as u32, i as u32));
                }
            }
            map
        })
    }

    pub(crate) fn memtable_bytes(&self) -> usize {
        self.active.bytes() + self.frozen.iter().map(|m| m.bytes()).sum::<usize>()
    }
}

pub(crate) fn sort_segments(segs: &mut [Arc<Segment>]) {
    segs.sort_by_key(|s| (s.index.partition_start, s.index.max_seq, s.id));
}

/// Segments whose sizes are within this factor of each other form one tier.
const TIER_SIZE_RATIO: u64 = 2;

/// The run of `trigger` consecutive segments (of one partition, in version order, given by
/// their sizes in bytes) to merge next: the smallest run whose sizes lie within
/// [`TIER_SIZE_RATIO`] of each other; failing that, once the partition holds four times
/// `trigger` segments, the smallest run of all (so the count stays bounded whatever the sizes).
/// Merging consecutive segments keeps the newest-wins order: their sequence ranges are
/// disjoint and the merged file takes their place.
fn tier_run(sizes: &[u64], trigger: usize) -> Option<std::ops::Range<usize>> {
    if trigger == 0 || sizes.len() < trigger {
        return None;
    }
    let mut best: Option<(bool, u64, usize)> = None; // (similar, total bytes, start)
    for (i, run) in sizes.windows(trigger).enumerate() {
        let lo = run.iter().map(|&b| b.max(1)).min().unwrap_or(1);
        let hi = run.iter().copied().max().unwrap_or(0);
        let similar = hi <= lo.saturating_mul(TIER_SIZE_RATIO);
        let total = run.iter().fold(0u64, |t, &b| t.saturating_add(b));
        // similar runs first, then the smallest
        if best.is_none_or(|(bs, bt, _)| (similar, std::cmp::Reverse(total)) > (bs, std::cmp::Reverse(bt))) {
            best = Some((similar, total, i));
        }
    }
    let (similar, _, i) = best?;
    (similar || sizes.len() >= 4 * trigger).then_some(i..i + trigger)
}

/// Most segment files synced at once: concurrent syncs let the file system commit several
/// files together; past a handful they queue behind each other.
const SYNC_THREADS: usize = 8;

/// A segment file written under its temporary name, not yet synced.
struct Unsynced {
    file: Box<dyn crate::io::WriteFile>,
    tmp: PathBuf,
    path: PathBuf,
    meta: SegmentMeta,
}

impl Unsynced {
    fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io("sync", &self.tmp, e))
    }
}

/// Per machine, the bytes its rows in `segs` take decoded: a timestamp and, per field, a value
/// and a validity bit per row.
fn machine_row_bytes<'a>(segs: impl Iterator<Item = &'a Segment>) -> BTreeMap<&'a str, u64> {
    let mut need: BTreeMap<&str, u64> = BTreeMap::new();
    for s in segs {
        for mi in &s.index.machines {
            let rows: u64 = mi.groups.iter().flat_map(|g| &g.blocks).map(|b| u64::from(b.rows)).sum();
            let bytes = rows.saturating_mul(8 + 9 * mi.fields.len() as u64);
            let e = need.entry(&mi.name).or_default();
            *e = e.saturating_add(bytes);
        }
    }
    need
}

/// A compaction to run: merge a partition's segments, or drop it (past retention).
#[derive(Debug, Clone)]
struct CompactionJob {
    partition: i64,
    drop_only: bool,
    /// Merge only these segments (a run of consecutive ones, oldest first); `None`: all of the
    /// partition's.
    only: Option<Vec<u64>>,
    /// Chosen by the background policy (gives way to `Db::compact`), not forced.
    background: bool,
}

/// Background state shared by writers, `flush()` callers and the flush thread.
#[derive(Default)]
struct BgState {
    /// The last background failure (kind, message) and a counter to tell new ones apart.
    error: Option<(std::io::ErrorKind, String)>,
    errors: u64,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) fs: Arc<dyn FileSystem>,
    wal: Arc<WalWriter>,
    /// The thread removing flushed log files, if one was started (see [`Inner::remove_logs`]).
    log_removal: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
    /// Catalog snapshots are cheap to share with queries: replaced on change.
    catalog: RwLock<Arc<Catalog>>,
    version: Mutex<Arc<Version>>,
    /// The durable manifest; changed only by the background thread.
    manifest: Mutex<Manifest>,
    next_segment_id: AtomicU64,
    /// The next record to apply and the registered jobs ([`Ticket`]); records are applied
    /// under this lock, in order (so a freeze, which takes it, never splits one).
    ticket: Mutex<Ticket>,
    /// Writers waiting for their record to be applied: the writer of `seq` waits on
    /// `ticket_cvs[seq % TICKET_STRIPES]` (all with the `ticket` mutex).
    ticket_cvs: [Condvar; TICKET_STRIPES],
    /// Every batch up to this sequence number is in the memtable.
    visible_seq: AtomicU64,
    recovery: RecoveryReport,
    shutdown: AtomicBool,
    /// `Db::compact` calls waiting or running: background compaction gives way to them
    /// (it would merge what the forced compaction is about to merge again).
    compact_calls: AtomicUsize,
    bg: Mutex<BgState>,
    /// Wakes the flush thread (new frozen memtable, shutdown).
    bg_work: Condvar,
    /// Wakes writers in backpressure and `flush()` callers (a flush finished or failed).
    bg_done: Condvar,
    /// Set when a failure leaves durable state unknown (e.g. the manifest's directory sync).
    poisoned: Mutex<Option<String>>,
    /// Held by a write that registers new machines or fields, from registration to its log
    /// write's outcome.
    registering: Mutex<()>,
    /// Held while a memtable is flushed (by the flush thread) or the flushed sequence number is
    /// raised without one (`wait_flushed`).
    flushing: Mutex<()>,
    /// Held while compacting (the compaction thread, `Db::compact`): one compaction at a time.
    /// A flush may run beside it: it only adds segments newer than every compaction input, and
    /// `publish` applies changes of the live segments one at a time (under the manifest lock).
    compacting: Mutex<()>,
    /// Background compactions that failed (each is retried after a pause).
    stats_compaction_errors: AtomicU64,
    /// Encoder hints carried from one flush to the next.
    hints: segment::writer::HintCache,
    /// The newest timestamp written (for retention); `i64::MIN` when empty.
    max_ts: AtomicI64,
    stats_bytes_flushed: AtomicU64,
    stats_bytes_compacted: AtomicU64,
    stats_compactions: AtomicU64,
    _lock: LockGuard,
}

/// An open database. See the crate documentation for an overview.
///
/// `Db` is `Send + Sync`: share it between threads with `Arc<Db>`; all methods take `&self`.
/// Dropping it closes it (use [`Db::close`] to see errors).
pub struct Db {
    pub(crate) inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

/// Stripes of the condition variables writers wait on for their record to be applied.
const TICKET_STRIPES: usize = 64;

/// A logged record's effect on memory (a batch into the memtable, a delete into the
/// version), run once its record is written (durable under `SyncPolicy::Always`).
type ApplyJob<'a> = Box<dyn FnOnce(&Inner, u64) + Send + 'a>;

/// Records are applied in sequence order, by whichever writer holds this and finds the next
/// record's job registered and its record settled: usually the round's leader applies the
/// whole round while the other writers of the round are still waking up (see
/// [`Inner::commit`]).
struct Ticket {
    /// Sequence number of the next record to apply (or pass over: failed, abandoned).
    next: u64,
    /// Jobs of logged records not applied yet.
    jobs: HashMap<u64, ApplyJob<'static>>,
    /// Records whose writer gave up before registering or running its job (a panic): they
    /// are passed over.
    abandoned: Vec<u64>,
}

/// Guards a registered job's borrow: dropped before `commit` returns (also when unwinding).
/// Nothing to do once the job is known to have run (`applied`). Otherwise (the record
/// failed, or the writer is unwinding) it takes the ticket lock (under which jobs run, so the
/// job is then either finished or not started), drops the job if it has not run and has its
/// turn passed over (`abandoned`) if it has not come; only then does it tell the log that
/// this writer is done with the record ([`crate::wal::writer::WalWriter::release`]), so that the
/// record is known as failed, or as abandoned, to whoever applies records in order.
struct TicketGuard<'a> {
    inner: &'a Inner,
    seq: u64,
    applied: bool,
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if self.applied {
            return;
        }
        let mut t = self.inner.ticket.lock();
        if t.jobs.remove(&self.seq).is_some() && t.next <= self.seq {
            t.abandoned.push(self.seq);
        }
        drop(t);
        self.inner.wal.release(self.seq);
    }
}

/// What `Db::open` found on disk before replaying the log.
struct Loaded {
    manifest: Manifest,
    segments: Vec<Arc<Segment>>,
    catalog: Catalog,
}

impl Db {
    /// Opens the database in `dir`, creating it when it does not exist (unless
    /// `create_if_missing` is off), and recovers what the log holds.
    ///
    /// Fails with [`Error::Locked`] when another `Db`, in this or another process, has it open;
    /// with [`Error::Corrupt`] when the manifest or a live segment is damaged, or the log is
    /// damaged before its end (see [`Options::skip_corrupt_wal_records`]). A torn last record,
    /// left by a crash during a write, is cut off and reported in [`Db::recovery_report`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = gemba::Db::open(dir.path(), gemba::Options::default())?;
    /// db.close()?;
    /// # Ok::<(), gemba::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, mut opts: Options) -> Result<Db> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = opts.fs.clone();
        if opts.create_if_missing {
            fs.create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        } else if fs.list(&dir).is_err() {
            return Err(Error::invalid(format!("database directory {} does not exist", dir.display())));
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { dir: dir.clone() }
            } else {
                Error::io("lock", &lock_path, e)
            }
        })?;

        let Loaded { manifest, segments, mut catalog } = load(fs.as_ref(), &dir)?;
        // The partition width belongs to the database: its segments fix it. Cutting new data
        // with another width would make partitions overlap, and within the time span of one
        // partition the precedence rule ("later `max_seq` wins") must see every segment.
        if let Some(s) = segments.first() {
            opts.partition_width = s.index.partition_width;
        }
        let memtable = Memtable::new();
        let mut tombstones: Vec<Arc<Tombstone>> = manifest.tombstones.iter().cloned().map(Arc::new).collect();
        let (files, recovery, log_seq) = reader::recover(
            fs.as_ref(),
            &dir,
            manifest.flushed_seq,
            opts.skip_corrupt_wal_records,
            |path, offset, rec| {
                let bad = |w: String| reader::bad_body(path, offset, w);
                match rec.kind {
                    KIND_BATCH => {
                        let batch = format::decode_batch(rec.body).map_err(bad)?;
                        let map = catalog.register(&batch).map_err(|e| bad(e.to_string()))?;
                        memtable.insert(&map, &batch, rec.seq);
                    }
                    KIND_DELETE => {
                        let (t, used) = Tombstone::decode(rec.body).map_err(bad)?;
                        if used != rec.body.len() {
                            return Err(bad("bytes after the delete".into()));
                        }
                        tombstones.push(Arc::new(Tombstone { seq: rec.seq, ..t }));
                    }
                    k => return Err(bad(format!("unknown record kind {k}"))),
                }
                Ok(())
            },
        )?;
        let last_seq = log_seq.max(manifest.flushed_seq);
        let wal = WalWriter::open(fs.clone(), &dir, opts.wal_file_bytes_max, files, last_seq)?;
        wal.remove_flushed(manifest.flushed_seq)?;
        let max_ts = std::iter::once(manifest.max_ts)
            .chain(manifest.segments.iter().map(|s| s.ts_max))
            .chain(memtable.machines().into_iter().filter_map(|m| memtable.bounds(m).map(|b| b.1)))
            .max()
            .unwrap_or(i64::MIN);
        let version = Version {
            active: Arc::new(memtable),
            frozen: Vec::new(),
            segments,
            tombstones: Arc::new(tombstones),
            tails: Arc::default(),
            by_machine: Arc::default(),
        };
        let inner = Arc::new(Inner {
            dir,
            fs,
            wal: Arc::new(wal),
            log_removal: Mutex::new(None),
            catalog: RwLock::new(Arc::new(catalog)),
            version: Mutex::new(Arc::new(version)),
            next_segment_id: AtomicU64::new(manifest.next_segment_id.max(1)),
            manifest: Mutex::new(manifest),
            ticket: Mutex::new(Ticket { next: last_seq + 1, jobs: HashMap::new(), abandoned: Vec::new() }),
            ticket_cvs: std::array::from_fn(|_| Condvar::new()),
            visible_seq: AtomicU64::new(last_seq),
            recovery,
            shutdown: AtomicBool::new(false),
            compact_calls: AtomicUsize::new(0),
            bg: Mutex::new(BgState::default()),
            bg_work: Condvar::new(),
            bg_done: Condvar::new(),
            poisoned: Mutex::new(None),
            registering: Mutex::new(()),
            flushing: Mutex::new(()),
            compacting: Mutex::new(()),
            stats_compaction_errors: AtomicU64::new(0),
            hints: segment::writer::HintCache::default(),
            max_ts: AtomicI64::new(max_ts),
            stats_bytes_flushed: AtomicU64::new(0),
            stats_bytes_compacted: AtomicU64::new(0),
            stats_compactions: AtomicU64::new(0),
            _lock: lock,
            opts,
        });
        let db = Db { inner, threads: Mutex::new(Vec::new()), closed: AtomicBool::new(false) };
        let inner = db.inner.clone();
        db.spawn("gemba-flush", move || inner.flush_loop())?;
        let inner = db.inner.clone();
        db.spawn("gemba-compact", move || inner.compaction_loop())?;
        if let SyncPolicy::Periodic(interval) = db.inner.opts.sync {
            let inner = db.inner.clone();
            db.spawn("gemba-sync", move || inner.sync_loop(interval))?;
        }
        // A log replay larger than the budget is flushed right away.
        if db.inner.version.lock().active.bytes() >= db.inner.freeze_bytes() {
            db.inner.freeze()?;
        }
        Ok(db)
    }

    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| Error::io("spawn thread", &self.inner.dir, e))?;
        self.threads.lock().push(h);
        Ok(())
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// What recovery found when this `Db` was opened: torn tails cut off, corrupt records
    /// skipped, records replayed.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Writes a batch. `Ok` means the batch is durable as the sync policy promises (by default:
    /// on stable storage) and visible to every query that starts afterwards.
    ///
    /// Errors: [`Error::TypeMismatch`] when a field was first written with another type;
    /// [`Error::InvalidArgument`] when the batch is too large for one log record (split it);
    /// [`Error::Io`] when the log write failed (the batch had no effect; e.g. a full disk);
    /// [`Error::Poisoned`] after a failed sync. On any error the batch is not applied, except
    /// `Poisoned`, after which the batch may or may not be found when the database is reopened.
    ///
    /// When flushing falls behind (the memtables reach [`Options::memtable_bytes_max`]),
    /// `write` waits for the flush instead of letting memory grow.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = gemba::Db::open(dir.path(), gemba::Options::default())?;
    /// let mut batch = gemba::WriteBatch::new();
    /// batch.row("press-07", 1_000, [("speed_rpm", 1480.5)])?;
    /// db.write(&batch)?;
    /// # Ok::<(), gemba::Error>(())
    /// ```
    pub fn write(&self, batch: &WriteBatch) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        if batch.is_empty() {
            return Ok(());
        }
        let len = format::encoded_batch_len(batch);
        if len + 8 > RECORD_LEN_MAX as usize {
            return Err(Error::invalid(format!(
                "batch encodes to {len} bytes; split it into batches under {RECORD_LEN_MAX} bytes"
            )));
        }
        // A batch with new machines or fields registers them provisionally, one such batch at
        // a time (`registering`), and confirms them only once its record is written: a write
        // that fails leaves no trace, not even a field's type.
        let cat = inner.catalog.read().clone();
        let (map, registering) = match cat.check(batch)? {
            Some(map) => (map, None),
            None => {
                let turn = inner.registering.lock();
                // Copy-on-write: queries holding the old catalog keep it.
                let mut w = inner.catalog.write();
                let (map, added) = Arc::make_mut(&mut *w).register_provisional(batch)?;
                (map, Some((turn, added)))
            }
        };
        drop(cat);
        let result = self.write_logged(batch, len, &map, registering.as_ref().map(|(_, a)| a));
        if let Some((_turn, added)) = registering
            && let Err(e) = &result
            && !matches!(e, Error::Poisoned { .. })
        {
            Arc::make_mut(&mut *inner.catalog.write()).undo(&added);
        }
        result
    }

    fn write_logged(
        &self,
        batch: &WriteBatch,
        len: usize,
        map: &crate::catalog::BatchMap,
        added: Option<&crate::catalog::Added>,
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.backpressure()?;
        let mut body = Vec::with_capacity(len);
        format::encode_batch(batch, &mut body);
        let batch_max_ts = batch.groups.iter().flat_map(|g| g.ts.iter().copied()).max().unwrap_or(i64::MIN);
        inner.commit(&body, |inner, seq| {
            if let Some(added) = added {
                Arc::make_mut(&mut *inner.catalog.write()).confirm(added);
            }
            let active = inner.version.lock().active.clone();
            active.insert(map, batch, seq);
            inner.max_ts.fetch_max(batch_max_ts, Ordering::AcqRel);
            if active.bytes() >= inner.freeze_bytes() {
                inner.freeze_locked();
                inner.wal.request_rotate();
            }
        })
    }

    /// Deletes every value of `machine` in `range`, in all its fields. Durable as a write is
    /// (it goes through the log) and visible at once to every query started afterwards;
    /// values written later are not affected. The space is reclaimed by compaction. A machine
    /// that does not exist is not an error (there is nothing to delete).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = gemba::Db::open(dir.path(), gemba::Options::default())?;
    /// let mut b = gemba::WriteBatch::new();
    /// b.row("press-07", 10, [("speed", 1.0)])?.row("press-07", 20, [("speed", 2.0)])?;
    /// db.write(&b)?;
    /// db.delete_range("press-07", 0..15)?;
    /// assert_eq!(db.scan("press-07", ..).collect()?[0].ts, vec![20]);
    /// # Ok::<(), gemba::Error>(())
    /// ```
    pub fn delete_range(&self, machine: &str, range: impl Into<TimeRange>) -> Result<()> {
        self.delete(machine, None, range.into())
    }

    /// Deletes the values of some fields of `machine` in `range`; see [`Db::delete_range`].
    pub fn delete_fields<S: AsRef<str>>(
        &self,
        machine: &str,
        fields: impl IntoIterator<Item = S>,
        range: impl Into<TimeRange>,
    ) -> Result<()> {
        let fields: Vec<Arc<str>> = fields.into_iter().map(|f| Arc::from(f.as_ref())).collect();
        for f in &fields {
            crate::model::validate_field_name(f)?;
        }
        if fields.is_empty() {
            return Ok(());
        }
        self.delete(machine, Some(fields), range.into())
    }

    /// Deletes every value of a machine. Its fields keep their types.
    pub fn delete_machine(&self, machine: &str) -> Result<()> {
        self.delete(machine, None, TimeRange::ALL)
    }

    fn delete(&self, machine: &str, fields: Option<Vec<Arc<str>>>, range: TimeRange) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        crate::model::validate_machine_id(machine)?;
        range.validate()?;
        if range.is_empty() || inner.catalog.read().machine(machine).is_none() {
            return Ok(());
        }
        let tomb = Tombstone { seq: 0, machine: Arc::from(machine), fields, range };
        let mut body = vec![KIND_DELETE];
        tomb.encode(&mut body);
        inner.commit(&body, |inner, seq| inner.add_tombstone(Tombstone { seq, ..tomb.clone() }))
    }

    /// Makes every write acknowledged so far durable on stable storage (useful with the
    /// `Periodic` and `Os` sync policies).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.wal.sync()
    }

    /// Writes everything in memory to segment files and waits until they are durable and the
    /// log files they cover are gone. Writes may continue meanwhile (they go to a new memtable).
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        let target = self.inner.freeze()?;
        self.inner.wait_flushed(target)?;
        // Log files closed with nothing unflushed in them (e.g. by a flush with nothing new).
        let flushed = self.inner.manifest.lock().flushed_seq;
        self.inner.join_log_removal()?;
        self.inner.wal.remove_flushed(flushed)
    }

    /// Merges the segments of every partition that has more than one, and rewrites those whose
    /// data deletes have hidden, after flushing the memtables; partitions past retention are
    /// dropped. Background compaction does the same by its policy
    /// ([`Options::compaction_trigger`]); this forces it now and waits.
    pub fn compact(&self) -> Result<()> {
        let inner = &*self.inner;
        // Background compaction gives way from now on (see `compaction_candidate`).
        inner.compact_calls.fetch_add(1, Ordering::SeqCst);
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _done = Done(&inner.compact_calls);
        self.flush()?;
        loop {
            inner.check_open()?;
            let _compacting = inner.compacting.lock();
            let v = inner.version.lock().clone();
            match inner.compaction_candidate(&v, true) {
                Some(job) => inner.run_compaction(job)?,
                None => return Ok(()),
            }
        }
    }

    /// Closes the database: stops background work, makes every acknowledged write durable and
    /// releases the directory lock. Data still in memory stays in the log and is replayed on
    /// the next open (call [`Db::flush`] first to write it to segments). Dropping the `Db` does
    /// the same, ignoring errors.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        {
            let _g = self.inner.bg.lock();
            self.inner.shutdown.store(true, Ordering::SeqCst);
            self.inner.bg_work.notify_all();
            self.inner.bg_done.notify_all();
        }
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
        // A failed removal leaves flushed log files, which the next open removes.
        let _ = self.inner.join_log_removal();
        self.inner.wal.sync()?;
        self.inner.wal.close();
        Ok(())
    }

    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        self.inner.check_open()?;
        let version = self.inner.version.lock().clone();
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        let catalog = self.inner.catalog.read().clone();
        let ts_floor = self.inner.ts_floor();
        Ok(Snapshot { version, seq, catalog, ts_floor })
    }

    /// Reads every live segment file whole, checking every checksum and decoding every block.
    /// Returns the number of values checked, or the first problem found
    /// ([`Error::Corrupt`] with the file and offset).
    pub fn verify(&self) -> Result<u64> {
        let snap = self.snapshot()?;
        let mut points = 0;
        for seg in &snap.version.segments {
            points += seg.verify()?;
        }
        Ok(points)
    }

    /// Live segment files and memtable sizes, for tests and tools.
    pub fn stats(&self) -> DbStats {
        let v = self.inner.version.lock().clone();
        let m = self.inner.manifest.lock();
        let i = &self.inner;
        DbStats {
            bytes_flushed: i.stats_bytes_flushed.load(Ordering::Relaxed),
            bytes_compacted: i.stats_bytes_compacted.load(Ordering::Relaxed),
            compactions: i.stats_compactions.load(Ordering::Relaxed),
            compaction_errors: i.stats_compaction_errors.load(Ordering::Relaxed),
            tombstones: v.tombstones.len(),
            segments: v.segments.len(),
            segment_bytes: v.segments.iter().map(|s| s.file_len()).sum(),
            memtable_bytes: v.memtable_bytes(),
            frozen_memtables: v.frozen.len(),
            flushed_seq: m.flushed_seq,
        }
    }
}

/// A few numbers about a database's state (see [`Db::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbStats {
    /// Live segment files.
    pub segments: usize,
    /// Their total size in bytes.
    pub segment_bytes: u64,
    /// Bytes held by memtables (active and frozen).
    pub memtable_bytes: usize,
    /// Frozen memtables waiting to be flushed.
    pub frozen_memtables: usize,
    /// Every write up to this sequence number is in segment files.
    pub flushed_seq: u64,
    /// Bytes of segment files written by flushes since open.
    pub bytes_flushed: u64,
    /// Bytes of segment files written by compactions since open (write amplification is
    /// `(bytes_flushed + bytes_compacted) / bytes_flushed`).
    pub bytes_compacted: u64,
    /// Compactions run since open.
    pub compactions: u64,
    /// Background compactions that failed since open (each one's inputs stay live, and it is
    /// retried after a pause).
    pub compaction_errors: u64,
    /// Live deletes (tombstones) still kept.
    pub tombstones: usize,
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Reads the manifest, opens the live segments, removes leftovers, and builds the catalog.
fn load(fs: &dyn FileSystem, dir: &Path) -> Result<Loaded> {
    let mpath = dir.join(manifest::FILE);
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let manifest = if names.iter().any(|n| n == manifest::FILE) {
        let bytes = fs.read(&mpath).map_err(|e| Error::io("read manifest", &mpath, e))?;
        Manifest::decode(&mpath, &bytes)?
    } else {
        Manifest::default()
    };
    let mut segments = Vec::with_capacity(manifest.segments.len());
    for meta in &manifest.segments {
        let path = dir.join(segment::file_name(meta.id));
        if !names.iter().any(|n| *n == segment::file_name(meta.id)) {
            return Err(Error::corrupt(&mpath, 0, format!("live segment {} is missing", path.display())));
        }
        let seg = Segment::open(fs, &path, meta.id)?;
        if seg.index.partition_start != meta.partition_start || seg.index.max_seq != meta.max_seq {
            return Err(Error::corrupt(&path, 0, "segment disagrees with the manifest"));
        }
        if let Some(first) = segments.first().map(|s: &Arc<Segment>| s.index.partition_width)
            && seg.index.partition_width != first
        {
            return Err(Error::corrupt(
                &path,
                0,
                format!("partition width {} differs from the database's {first}", seg.index.partition_width),
            ));
        }
        segments.push(Arc::new(seg));
    }
    sort_segments(&mut segments);
    // Leftovers of interrupted work: temporary files and segments no manifest lists.
    let live: HashSet<u64> = manifest.segments.iter().map(|s| s.id).collect();
    let mut removed = false;
    for n in &names {
        let stale = n.ends_with(".tmp") || segment::parse_name(n).is_some_and(|id| !live.contains(&id));
        if stale {
            let p = dir.join(n);
            fs.remove(&p).map_err(|e| Error::io("remove leftover", &p, e))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir).map_err(|e| Error::io("sync directory", dir, e))?;
    }
    let mut catalog = Catalog::default();
    for seg in &segments {
        for m in &seg.index.machines {
            let mi = catalog.intern_machine(&m.name);
            for (f, ty) in &m.fields {
                catalog.intern_field(mi, f, *ty).map_err(|e| {
                    Error::corrupt(&seg.path, 0, format!("segment disagrees with the catalog: {e}"))
                })?;
            }
        }
    }
    Ok(Loaded { manifest, segments, catalog })
}

impl Inner {
    /// Logs a record and, once it is written (durable under `SyncPolicy::Always`), applies it
    /// in sequence order, so records take effect in log order and a freeze (which holds the
    /// ticket) never splits one.
    ///
    /// Writers do not each wait for their turn: `apply` is registered as the record's job, and
    /// whoever holds the ticket with its own record settled runs every job it can in order
    /// ([`Inner::apply_ready`]). The leader of a log round comes back first (it does not
    /// sleep), so it usually applies the whole round, and the round's other writers find
    /// their records applied when they wake; a chain of turns passed from thread to thread,
    /// each a wake-up, would cost more than the log's sync on two cores.
    fn commit(&self, body: &[u8], apply: impl FnOnce(&Inner, u64) + Send) -> Result<()> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(body);
        let seq = self.wal.append(body, &crc)?;
        let mut guard = TicketGuard { inner: self, seq, applied: false };
        let job: ApplyJob<'_> = Box::new(apply);
        // SAFETY: only the lifetime changes. The job borrows this caller's data (the batch),
        // which lives until this function returns; `guard`, dropped before that (also on
        // unwinding), takes the ticket lock, under which every job runs from start to end,
        // and drops the job if it is still registered. So no job runs, or is dropped, after
        // the borrow ends.
        let job: ApplyJob<'static> = unsafe { std::mem::transmute::<ApplyJob<'_>, ApplyJob<'static>>(job) };
        self.ticket.lock().jobs.insert(seq, job);
        let durable = matches!(self.opts.sync, SyncPolicy::Always);
        let result = self.wal.wait(seq, durable);
        // On failure (a failed round, a poisoned log) the job never runs: the guard drops it
        // and has its turn passed over.
        if result.is_ok() {
            // Usually the round's leader has applied this record by the time its other
            // writers wake: they see it here without queueing for the ticket lock. A job
            // stores its seq here only after running, and records run in order.
            if self.visible_seq.load(Ordering::Acquire) < seq {
                let mut t = self.ticket.lock();
                self.apply_ready(&mut t, durable);
                while t.next <= seq {
                    self.ticket_cvs[(seq % TICKET_STRIPES as u64) as usize].wait(&mut t);
                }
            }
            guard.applied = true;
        }
        drop(guard);
        result
    }

    /// Runs, in sequence order, the jobs of every record that is settled (written, or synced
    /// under `durable`), passing over failed and abandoned records; stops at a record whose
    /// writer has not registered its job yet (that writer runs this when it gets here).
    /// Wakes the writers whose records it applied.
    fn apply_ready(&self, t: &mut Ticket, durable: bool) {
        let (mark, failed) = self.wal.settled(durable);
        while t.next <= mark {
            let n = t.next;
            let job = if let Some(i) = t.abandoned.iter().position(|&a| a == n) {
                t.abandoned.swap_remove(i);
                None
            } else if failed.iter().any(|&(a, b)| a <= n && n <= b) {
                t.jobs.remove(&n);
                None
            } else {
                match t.jobs.remove(&n) {
                    Some(job) => Some(job),
                    None => break,
                }
            };
            // Passed before the job runs: should it panic, the records after it still go on.
            t.next += 1;
            if let Some(job) = job {
                job(self, n);
                self.visible_seq.store(n, Ordering::Release);
            }
            self.ticket_cvs[(n % TICKET_STRIPES as u64) as usize].notify_all();
        }
    }

    fn add_tombstone(&self, t: Tombstone) {
        let mut v = self.version.lock();
        let mut tombs = (*v.tombstones).clone();
        tombs.push(Arc::new(t));
        *v = Arc::new(Version { tombstones: Arc::new(tombs), ..Version::clone(&v) });
    }

    fn check_open(&self) -> Result<()> {
        if self.shutdown.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if let Some(cause) = self.wal.poisoned() {
            return Err(Error::Poisoned { cause });
        }
        if let Some(cause) = self.poisoned.lock().clone() {
            return Err(Error::Poisoned { cause });
        }
        Ok(())
    }

    /// The active memtable is frozen once it holds this many bytes: half the budget, so a
    /// frozen one being flushed and the active one fit in it together.
    fn freeze_bytes(&self) -> usize {
        self.opts.memtable_bytes_max / 2
    }

    /// Waits while the memtables hold the whole budget (flushing fell behind).
    fn backpressure(&self) -> Result<()> {
        let mut bg = self.bg.lock();
        loop {
            let v = self.version.lock().clone();
            if v.frozen.is_empty() || v.memtable_bytes() < self.opts.memtable_bytes_max {
                return Ok(());
            }
            self.check_open()?;
            if let Some((kind, msg)) = &bg.error {
                // The flush is failing (e.g. a full disk): report rather than wait forever.
                return Err(Error::io("flush", self.dir.clone(), std::io::Error::new(*kind, msg.clone())));
            }
            self.bg_done.wait_for(&mut bg, Duration::from_millis(100));
        }
    }

    /// Freezes the active memtable if it holds anything. Returns the sequence number that
    /// must be flushed for everything written so far to be in segments.
    fn freeze(&self) -> Result<u64> {
        let (target, flushed_before) = {
            let _t = self.ticket.lock();
            // Read before the freeze: the flush thread may have flushed what it freezes by the
            // time this function looks again, and the log must still rotate then.
            let flushed_before = self.manifest.lock().flushed_seq;
            self.freeze_locked();
            // Every record applied so far is now in a frozen memtable, a segment, or (deletes)
            // the version's tombstones; later records have larger sequence numbers.
            (self.visible_seq.load(Ordering::Acquire), flushed_before)
        };
        // A new log file only when there is something to flush: its records then go with it.
        if target > flushed_before {
            self.wal.rotate()?;
        }
        Ok(target)
    }

    /// Freezes the active memtable; the caller holds the ticket lock (no insert in progress).
    fn freeze_locked(&self) {
        let mut v = self.version.lock();
        if v.active.is_empty() {
            return;
        }
        let mut frozen = v.frozen.clone();
        frozen.push(v.active.clone());
        *v = Arc::new(Version { active: Arc::new(Memtable::new()), frozen, ..Version::clone(&v) });
        drop(v);
        let _g = self.bg.lock();
        self.bg_work.notify_all();
    }

    /// Waits until everything up to `seq` is in segment files.
    fn wait_flushed(&self, seq: u64) -> Result<()> {
        let mut bg = self.bg.lock();
        let errors_before = bg.errors;
        loop {
            if self.manifest.lock().flushed_seq >= seq {
                return Ok(());
            }
            self.check_open()?;
            // No memtable holds anything up to `seq` any more: what is left are deletes (and
            // failed writes). Recording them in the manifest lets their log files go.
            let pending = self.version.lock().frozen.iter().any(|m| m.min_seq() <= seq);
            if !pending {
                drop(bg);
                {
                    let _flushing = self.flushing.lock();
                    if self.manifest.lock().flushed_seq < seq {
                        self.publish(Vec::new(), &[], None, seq)?;
                    }
                }
                bg = self.bg.lock();
                continue;
            }
            if bg.errors != errors_before
                && let Some((kind, msg)) = &bg.error
            {
                return Err(Error::io("flush", self.dir.clone(), std::io::Error::new(*kind, msg.clone())));
            }
            self.bg_done.wait_for(&mut bg, Duration::from_millis(100));
        }
    }

    /// The flush thread: flushes frozen memtables, oldest first. It never waits for a
    /// compaction (those run on their own thread), so writers meet backpressure only when
    /// flushing itself falls behind.
    fn flush_loop(&self) {
        loop {
            let mt = {
                let mut bg = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(m) = self.version.lock().frozen.first().cloned() {
                        break m;
                    }
                    self.bg_work.wait(&mut bg);
                }
            };
            let result = {
                let _flushing = self.flushing.lock();
                self.unless_panic("flush", || self.flush_memtable(&mt))
            };
            drop(mt);
            let mut bg = self.bg.lock();
            match result {
                Ok(()) => bg.error = None,
                Err(Error::Closed) if self.shutdown.load(Ordering::SeqCst) => bg.error = None,
                Err(e) => {
                    let kind = match &e {
                        Error::Io { source, .. } => source.kind(),
                        _ => std::io::ErrorKind::Other,
                    };
                    bg.error = Some((kind, e.to_string()));
                    bg.errors += 1;
                }
            }
            self.bg_done.notify_all();
            // New segments may make a compaction due.
            self.bg_work.notify_all();
            if bg.error.is_some() {
                // Retry after a pause (e.g. until disk space returns), unless shutting down.
                if self.shutdown.load(Ordering::SeqCst) || self.poisoned.lock().is_some() {
                    return;
                }
                self.bg_work.wait_for(&mut bg, Duration::from_millis(200));
                bg.error = None;
            }
        }
    }

    /// Runs background work `f`; should it panic (a bug), the database is poisoned instead:
    /// the thread stays alive to end its loop, and writers, `flush` and `compact` callers
    /// get [`Error::Poisoned`] rather than waiting forever for work that will not happen.
    fn unless_panic(&self, what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let cause = format!("the {what} thread panicked: {msg}");
                self.poisoned.lock().get_or_insert_with(|| cause.clone());
                Err(Error::Poisoned { cause })
            }
        }
    }

    /// The compaction thread: runs the compactions the policy asks for, one at a time, while
    /// flushes succeed. A failed compaction leaves its inputs live and is retried after a
    /// pause; it is counted in [`DbStats::compaction_errors`], and flush callers and writers
    /// never see it (their data is safe in the inputs).
    fn compaction_loop(&self) {
        loop {
            {
                let mut bg = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    let v = self.version.lock().clone();
                    if bg.error.is_none() && self.compaction_candidate(&v, false).is_some() {
                        break;
                    }
                    self.bg_work.wait(&mut bg);
                }
            }
            let result = {
                let _compacting = self.compacting.lock();
                let v = self.version.lock().clone();
                match self.compaction_candidate(&v, false) {
                    Some(job) => self.unless_panic("compaction", || self.run_compaction(job)),
                    None => Ok(()),
                }
            };
            match result {
                Ok(()) => {}
                // gave way to `close` (the loop ends at its top)
                Err(Error::Closed) if self.shutdown.load(Ordering::SeqCst) => {}
                Err(_) => {
                    self.stats_compaction_errors.fetch_add(1, Ordering::Relaxed);
                    let mut bg = self.bg.lock();
                    if self.shutdown.load(Ordering::SeqCst) || self.poisoned.lock().is_some() {
                        return;
                    }
                    self.bg_work.wait_for(&mut bg, Duration::from_millis(200));
                }
            }
        }
    }

    /// The oldest timestamp queries still see: the newest timestamp written minus the
    /// retention, or `i64::MIN` without retention.
    pub(crate) fn ts_floor(&self) -> i64 {
        match self.opts.retention {
            Some(r) => {
                let newest = self.max_ts.load(Ordering::Acquire);
                if newest == i64::MIN { i64::MIN } else { newest.saturating_sub(r) }
            }
            None => i64::MIN,
        }
    }

    /// Writes a frozen memtable as segment files (one per partition), publishes them in the
    /// manifest, swaps them in for the memtable and removes the log files they cover.
    fn flush_memtable(&self, mt: &Arc<Memtable>) -> Result<()> {
        let catalog = self.catalog.read().clone();
        let tombs = self.version.lock().tombstones.clone();
        let width = self.opts.partition_width;
        let floor = self.ts_floor();
        let mut machines = mt.machines();
        machines.sort_by(|&a, &b| catalog.entry(a).name.as_bytes().cmp(catalog.entry(b).name.as_bytes()));
        // Deleted rows and rows past retention are left out.
        let range = TimeRange { start: floor, end: i64::MAX };
        // A machine's rows, cut by partition.
        let read = |m: crate::catalog::MachineIdx| -> Vec<(i64, segment::writer::MachineData)> {
            let e = catalog.entry(m);
            let idx: Vec<u32> = (0..e.fields.len() as u32).collect();
            let schema: Vec<(Arc<str>, FieldType)> =
                e.fields.iter().map(|f| (f.name.clone(), f.ty)).collect();
            let names: Vec<&str> = e.fields.iter().map(|f| &*f.name).collect();
            let dels = crate::memtable::dels_for(&tombs, &e.name, &names);
            let mut rows = mt.read(m, range, u64::MAX, &idx, &dels);
            let (n, mut start) = (rows.len(), 0);
            let mut pieces = Vec::new();
            while start < n {
                let p = partition_of(rows.ts[start], width);
                let end_ts = p.saturating_add(width);
                let end = start + rows.ts[start..].partition_point(|&t| t < end_ts);
                let piece = if start == 0 && end == n {
                    std::mem::replace(&mut rows, crate::rows::RowSet::empty(0))
                } else {
                    crate::rows::slice(&rows, start, end)
                };
                let md = segment::writer::MachineData::new(e.name.clone(), &schema, piece);
                if !md.fields.is_empty() {
                    pieces.push((p, md));
                }
                start = end;
            }
            pieces
        };
        // Reading costs a few nanoseconds per point (a tenth of encoding): a large memtable
        // is read by one thread per core, machines interleaved, this thread taking a share.
        const PARALLEL_READ_BYTES: usize = 4 << 20;
        let threads = if mt.bytes() < PARALLEL_READ_BYTES { 1 } else { crate::cores() };
        let Ok(pieces) =
            crate::try_map_interleaved(&machines, threads, |&m| Ok::<_, std::convert::Infallible>(read(m)));
        // Partition start → machines' rows in it, in machine order.
        let mut parts: BTreeMap<i64, Vec<segment::writer::MachineData>> = BTreeMap::new();
        for (p, md) in pieces.into_iter().flatten() {
            parts.entry(p).or_default().push(md);
        }
        let (min_seq, max_seq) = (mt.min_seq(), mt.max_seq());
        // Every delete known now was applied to the rows read above.
        let applied_seq = tombs.iter().map(|t| t.seq).max().unwrap_or(0).max(max_seq);
        // Encoding is the expensive part of a flush: spread it over the cores. The workers
        // take (partition, machine) jobs in order, so the cores stay busy however the rows
        // fall into partitions (a lone dense one or a few of very different sizes); whoever
        // encodes a partition's last machine writes its file. With several partitions each
        // finished file goes straight to a syncing thread: the disk writes and commits one
        // partition's file while the cores encode the next (a sparse history of a hundred
        // weekly partitions spent as long syncing as encoding, one after the other).
        let rows: usize = parts.values().flatten().map(|m| m.rows.ts.len()).sum();
        struct Part {
            start: i64,
            raw: Vec<Mutex<Option<segment::writer::MachineData>>>,
            encoded: Mutex<Vec<Option<segment::writer::EncodedMachine>>>,
            left: AtomicUsize,
        }
        let parts: Vec<Part> = parts
            .into_iter()
            .map(|(start, machines)| Part {
                start,
                encoded: Mutex::new((0..machines.len()).map(|_| None).collect()),
                left: AtomicUsize::new(machines.len()),
                raw: machines.into_iter().map(|m| Mutex::new(Some(m))).collect(),
            })
            .collect();
        let jobs: Vec<(usize, usize)> =
            parts.iter().enumerate().flat_map(|(pi, p)| (0..p.raw.len()).map(move |mi| (pi, mi))).collect();
        // Below this many rows a flush encodes in well under a millisecond, less than starting
        // threads costs.
        const PARALLEL_ROWS_MIN: usize = 16_384;
        let workers = if rows < PARALLEL_ROWS_MIN { 1 } else { crate::cores().min(jobs.len()).max(1) };
        let seqs = (min_seq, max_seq, applied_seq);
        let next_job = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let syncers = if parts.len() > 1 { parts.len().min(SYNC_THREADS) } else { 0 };
        let (tx, rx) = std::sync::mpsc::channel::<Unsynced>();
        let rx = Mutex::new(rx);
        let synced: Mutex<Vec<(Unsynced, Result<()>)>> = Mutex::new(Vec::new());
        let sync_worker = || {
            loop {
                let next = rx.lock().recv();
                let Ok(mut u) = next else { break };
                let r = u.sync();
                if r.is_err() {
                    // the flush fails: stop encoding the partitions left
                    failed.store(true, Ordering::Relaxed);
                }
                synced.lock().push((u, r));
            }
        };
        let worker = |tx: std::sync::mpsc::Sender<Unsynced>| {
            let mut mine = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let Some(&(pi, mi)) = jobs.get(next_job.fetch_add(1, Ordering::Relaxed)) else { break };
                let part = &parts[pi];
                let Some(m) = part.raw[mi].lock().take() else { continue };
                let e = segment::writer::encode_machine(&m, self.opts.block_rows, Some(&self.hints));
                drop(m);
                part.encoded.lock()[mi] = Some(e);
                if part.left.fetch_sub(1, Ordering::AcqRel) != 1 {
                    continue;
                }
                // this partition's last machine: write its file
                let encoded = std::mem::take(&mut *part.encoded.lock());
                match self.build_segment(part.start, seqs, encoded.into_iter().flatten().map(Ok)) {
                    Ok(Some(u)) if syncers > 0 => {
                        // the receivers live until the scope below ends
                        if let Err(back) = tx.send(u) {
                            mine.push(Ok(Some(back.0)));
                        }
                    }
                    r => {
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        mine.push(r);
                    }
                }
            }
            mine
        };
        let results = std::thread::scope(|s| {
            let sync_handles: Vec<_> = (0..syncers).map(|_| s.spawn(sync_worker)).collect();
            let results: Vec<Result<Option<Unsynced>>> = if workers == 1 {
                worker(tx)
            } else {
                let worker = &worker;
                let hs: Vec<_> = (0..workers)
                    .map(|_| {
                        let tx = tx.clone();
                        s.spawn(move || worker(tx))
                    })
                    .collect();
                drop(tx);
                hs.into_iter().flat_map(|h| h.join().expect("flush worker panicked")).collect()
            };
            // every sender is gone: the syncing threads finish the queue and stop
            for h in sync_handles {
                h.join().expect("sync thread panicked");
            }
            results
        });
        let synced = synced.into_inner();
        // Files built but not synced yet (no syncing threads, or one partition), files
        // synced, and the first error of either.
        let mut built = Vec::new();
        let mut done = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(Some(u)) => built.push(u),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for (u, r) in synced {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
            done.push(u);
        }
        if first_err.is_none()
            && let Err(e) = self.sync_segments(&mut built)
        {
            first_err = Some(e);
        }
        built.extend(done);
        if let Some(e) = first_err {
            for u in &built {
                let _ = self.fs.remove(&u.tmp);
            }
            return Err(e);
        }
        built.sort_by_key(|u| u.meta.id);
        let added = self.open_segments(built)?;
        self.stats_bytes_flushed.fetch_add(added.iter().map(|(_, m)| m.bytes).sum(), Ordering::Relaxed);
        self.publish(added, &[], Some(mt), max_seq)
    }

    /// Writes one segment file of partition `p` as `seg-N.gseg.tmp` from machines produced one
    /// at a time (sorted by id), streaming its bytes; not yet synced (see [`Inner::finish_segments`]).
    /// Returns `None` when no machine had data.
    fn build_segment(
        &self,
        p: i64,
        (min_seq, max_seq, applied_seq): (u64, u64, u64),
        machines: impl Iterator<Item = Result<segment::writer::EncodedMachine>>,
    ) -> Result<Option<Unsynced>> {
        const CHUNK_BYTES: usize = 4 << 20;
        let id = self.next_segment_id.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(segment::file_name(id));
        let tmp = crate::io::tmp_path(&path);
        let mut builder =
            segment::writer::SegmentBuilder::new(p, self.opts.partition_width, min_seq, max_seq, applied_seq);
        let mut file: Option<Box<dyn crate::io::WriteFile>> = None;
        let mut written = 0u64;
        let result = (|| -> Result<Option<SegmentSummary>> {
            for e in machines {
                builder.add_encoded(e?);
                if builder.pending() >= CHUNK_BYTES {
                    let f = match &mut file {
                        Some(f) => f,
                        None => file.insert(self.fs.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?),
                    };
                    let bytes = builder.take_bytes();
                    f.write_all(&bytes).map_err(|e| Error::io("write", &tmp, e))?;
                    written += bytes.len() as u64;
                }
            }
            if builder.machines() == 0 {
                return Ok(None);
            }
            let f = match &mut file {
                Some(f) => f,
                None => file.insert(self.fs.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?),
            };
            let head = builder.take_bytes();
            let b = std::mem::replace(&mut builder, segment::writer::SegmentBuilder::new(0, 1, 0, 0, 0));
            let (tail, summary) = b.finish();
            for bytes in [head, tail] {
                f.write_all(&bytes).map_err(|e| Error::io("write", &tmp, e))?;
                written += bytes.len() as u64;
            }
            Ok(Some(summary))
        })();
        match result {
            Ok(Some(summary)) => {
                let meta = SegmentMeta {
                    id,
                    partition_start: p,
                    ts_min: summary.ts_min,
                    ts_max: summary.ts_max,
                    min_seq,
                    max_seq,
                    applied_seq: applied_seq.max(max_seq),
                    bytes: written,
                    points: summary.points,
                };
                Ok(Some(Unsynced { file: file.expect("file created"), tmp, path, meta }))
            }
            Ok(None) => {
                drop(file);
                let _ = self.fs.remove(&tmp);
                Ok(None)
            }
            Err(e) => {
                drop(file);
                let _ = self.fs.remove(&tmp);
                Err(e)
            }
        }
    }

    /// Syncs freshly written segment files (several at once, so the file system can batch the
    /// commits), renames them to their final names and opens them. On failure every one of
    /// them is removed. The caller publishes them (which syncs the directory first).
    fn finish_segments(&self, mut files: Vec<Unsynced>) -> Result<Vec<(Arc<Segment>, SegmentMeta)>> {
        if let Err(e) = self.sync_segments(&mut files) {
            for u in &files {
                let _ = self.fs.remove(&u.tmp);
            }
            return Err(e);
        }
        files.sort_by_key(|u| u.meta.id);
        self.open_segments(files)
    }

    /// Syncs segment files, up to [`SYNC_THREADS`] at once; the first error, once all have
    /// been tried.
    fn sync_segments(&self, files: &mut [Unsynced]) -> Result<()> {
        let sync = |files: &mut [Unsynced]| -> Result<()> {
            let mut first = Ok(());
            for u in files {
                let r = u.sync();
                if first.is_ok() {
                    first = r;
                }
            }
            first
        };
        let threads = files.len().clamp(1, SYNC_THREADS);
        if threads == 1 {
            return sync(files);
        }
        let per = files.len().div_ceil(threads);
        std::thread::scope(|s| {
            let hs: Vec<_> = files.chunks_mut(per).map(|c| s.spawn(move || sync(c))).collect();
            let results: Vec<Result<()>> =
                hs.into_iter().map(|h| h.join().expect("sync thread panicked")).collect();
            results.into_iter().collect::<Result<()>>()
        })
    }

    /// Renames synced segment files (sorted by id) to their final names and opens them. On
    /// failure every one of them is removed.
    fn open_segments(&self, files: Vec<Unsynced>) -> Result<Vec<(Arc<Segment>, SegmentMeta)>> {
        let cleanup = |all: &[Unsynced]| {
            for u in all {
                let _ = self.fs.remove(&u.tmp);
                let _ = self.fs.remove(&u.path);
            }
        };
        let mut out = Vec::with_capacity(files.len());
        for u in &files {
            let opened = self
                .fs
                .rename(&u.tmp, &u.path)
                .map_err(|e| Error::io("rename", &u.tmp, e))
                .and_then(|()| Segment::open(self.fs.as_ref(), &u.path, u.meta.id));
            match opened {
                Ok(seg) => out.push((Arc::new(seg), u.meta)),
                Err(e) => {
                    cleanup(&files);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Makes a change of the live segments durable and visible: syncs the directory (new
    /// files' names), writes the manifest (dropping tombstones nothing older can be under any
    /// more), swaps the version, then removes replaced segment files and, for a flush, the log
    /// files it covered.
    fn publish(
        &self,
        added: Vec<(Arc<Segment>, SegmentMeta)>,
        removed: &[u64],
        flushed_mt: Option<&Arc<Memtable>>,
        flushed_to: u64,
    ) -> Result<()> {
        if !added.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        let mut m = self.manifest.lock();
        let m_before = m.flushed_seq;
        let cur = self.version.lock().clone();
        let flushed_seq = m.flushed_seq.max(flushed_to);
        let mut segments: Vec<Arc<Segment>> =
            cur.segments.iter().filter(|s| !removed.contains(&s.id)).cloned().collect();
        segments.extend(added.iter().map(|(s, _)| s.clone()));
        sort_segments(&mut segments);
        let tombs: Vec<Arc<Tombstone>> = cur
            .tombstones
            .iter()
            .filter(|t| {
                t.seq > flushed_seq
                    || segments.iter().any(|s| {
                        t.applies_to(s.index.applied_seq)
                            && s.machine(&t.machine).is_some_and(|mi| t.range.overlaps(mi.ts_min, mi.ts_max))
                    })
            })
            .cloned()
            .collect();
        let mut next = m.clone();
        next.generation += 1;
        next.flushed_seq = flushed_seq;
        next.next_segment_id = self.next_segment_id.load(Ordering::SeqCst);
        next.max_ts = next.max_ts.max(self.max_ts.load(Ordering::Acquire));
        next.segments.retain(|s| !removed.contains(&s.id));
        next.segments.extend(added.iter().map(|(_, meta)| *meta));
        next.tombstones = tombs.iter().filter(|t| t.seq <= flushed_seq).map(|t| (**t).clone()).collect();
        if let Err(e) = self.publish_manifest(&next) {
            // After a failure past the rename (the database is then poisoned) the new manifest
            // may be the one in place: its segments must stay (the next open removes them if
            // the old manifest won).
            if self.poisoned.lock().is_none() {
                for (s, _) in &added {
                    let _ = self.fs.remove(&s.path);
                }
            }
            return Err(e);
        }
        *m = next;
        {
            let mut v = self.version.lock();
            let frozen: Vec<Arc<Memtable>> = match flushed_mt {
                Some(mt) => v.frozen.iter().filter(|f| !Arc::ptr_eq(f, mt)).cloned().collect(),
                None => v.frozen.clone(),
            };
            // Tombstones added since `cur` was taken stay.
            let mut all = tombs;
            all.extend(
                v.tombstones.iter().filter(|t| !cur.tombstones.iter().any(|c| Arc::ptr_eq(c, t))).cloned(),
            );
            let added: Vec<Arc<Segment>> = added.iter().map(|(s, _)| s.clone()).collect();
            let tails = TailCache::after(&v.tails, !removed.is_empty(), &added);
            *v = Arc::new(Version {
                frozen,
                segments,
                tombstones: Arc::new(all),
                tails,
                by_machine: Arc::default(),
                ..Version::clone(&v)
            });
        }
        // Log files are handed over before the manifest lock is released, so that `Db::flush`,
        // once it sees `flushed_seq`, finds their removal started.
        let logs = if flushed_seq > m_before { self.remove_logs(flushed_seq) } else { Ok(()) };
        drop(m);
        // Replaced files go once the manifest no longer names them. Queries still holding them
        // keep their mappings; a file left behind by a failure here is removed at next open.
        for id in removed {
            let _ = self.fs.remove(&self.dir.join(segment::file_name(*id)));
        }
        logs?;
        Ok(())
    }

    /// The partition to compact next, per the policy (see [`Options::compaction_trigger`]);
    /// with `force`, any partition with two or more segments or with deletes to apply.
    /// Partitions entirely past retention come first: they are simply dropped.
    fn compaction_candidate(&self, v: &Version, force: bool) -> Option<CompactionJob> {
        if !force && self.compact_calls.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let floor = self.ts_floor();
        let width = self.opts.partition_width;
        let flushed_seq = self.manifest.lock().flushed_seq;
        let mut parts: BTreeMap<i64, Vec<&Arc<Segment>>> = BTreeMap::new();
        for s in &v.segments {
            parts.entry(s.index.partition_start).or_default().push(s);
        }
        let newest = parts.keys().next_back().copied();
        for (&p, segs) in &parts {
            if p.saturating_add(width) <= floor {
                return Some(CompactionJob { partition: p, drop_only: true, only: None, background: !force });
            }
            let deletes = v.tombstones.iter().any(|t| {
                t.seq <= flushed_seq
                    && segs.iter().any(|s| {
                        t.applies_to(s.index.applied_seq)
                            && s.machine(&t.machine).is_some_and(|mi| t.range.overlaps(mi.ts_min, mi.ts_max))
                    })
            });
            let cold = segs.len() >= 2 && Some(p) != newest;
            if (deletes || cold || (force && segs.len() >= 2)) && self.compaction_fits(segs) {
                return Some(CompactionJob {
                    partition: p,
                    drop_only: false,
                    only: None,
                    background: !force,
                });
            }
            // The newest partition takes the stream of flushes: merging all of it every
            // `compaction_trigger` flushes would rewrite it over and over (quadratic write
            // amplification); runs of segments of similar size are merged instead (tiers).
            if Some(p) == newest
                && let Some(run) = tier_run(
                    &segs.iter().map(|s| s.file_len()).collect::<Vec<_>>(),
                    self.opts.compaction_trigger,
                )
                && self.compaction_fits(&segs[run.clone()])
            {
                let only = Some(segs[run].iter().map(|s| s.id).collect());
                return Some(CompactionJob { partition: p, drop_only: false, only, background: !force });
            }
        }
        None
    }

    /// Whether compacting these segments stays within its memory bound: compaction holds the
    /// rows of the partition (decoded, from every input) of one machine per core at a time,
    /// never more than [`COMPACTION_MEMORY_FACTOR`] × `memtable_bytes_max` together
    /// ([`Inner::compaction_groups`]), so no single machine may need more than that.
    /// Partitions past the bound keep their segments (queries merge them; deletes stay hidden
    /// by their tombstones) until retention drops them.
    fn compaction_fits(&self, segs: &[&Arc<Segment>]) -> bool {
        let limit = self.compaction_memory();
        machine_row_bytes(segs.iter().map(|s| &***s)).values().all(|&b| b <= limit)
    }

    fn compaction_memory(&self) -> u64 {
        (self.opts.memtable_bytes_max as u64).saturating_mul(COMPACTION_MEMORY_FACTOR)
    }

    /// The machines of a compaction (sorted) in groups merged and encoded side by side: at
    /// most one per core, and together within the memory bound (a machine alone may use all
    /// of it).
    fn compaction_groups(&self, inputs: &[Arc<Segment>]) -> Vec<Vec<Arc<str>>> {
        let need = machine_row_bytes(inputs.iter().map(|s| &**s));
        let (limit, k) = (self.compaction_memory(), crate::cores());
        let mut names: Vec<Arc<str>> =
            inputs.iter().flat_map(|s| s.index.machines.iter().map(|m| m.name.clone())).collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.dedup();
        let mut groups: Vec<Vec<Arc<str>>> = Vec::new();
        let mut used = 0u64;
        for n in names {
            let b = need.get(&*n).copied().unwrap_or(0);
            match groups.last_mut() {
                Some(g) if g.len() < k && used.saturating_add(b) <= limit => {
                    used = used.saturating_add(b);
                    g.push(n);
                }
                _ => {
                    used = b;
                    groups.push(vec![n]);
                }
            }
        }
        groups
    }

    /// Merges every segment of a partition into one (newest value wins, deletes applied,
    /// re-encoded with the compaction block size), or drops the partition when retention has
    /// passed it.
    fn run_compaction(&self, job: CompactionJob) -> Result<()> {
        let v = self.version.lock().clone();
        let inputs: Vec<Arc<Segment>> = v
            .segments
            .iter()
            .filter(|s| s.index.partition_start == job.partition)
            .filter(|s| job.only.as_ref().is_none_or(|ids| ids.contains(&s.id)))
            .cloned()
            .collect();
        if inputs.is_empty() {
            return Ok(());
        }
        let removed: Vec<u64> = inputs.iter().map(|s| s.id).collect();
        if job.drop_only {
            return self.publish(Vec::new(), &removed, None, 0);
        }
        let groups = self.compaction_groups(&inputs);
        let floor = self.ts_floor();
        let tombs = v.tombstones.clone();
        let range = TimeRange { start: floor, end: i64::MAX };
        let read = |name: Arc<str>| -> Result<segment::writer::MachineData> {
            // Compaction is optional work: a closing database does not wait for the rest of
            // it (the partial file is removed; the inputs stay live).
            if self.shutdown.load(Ordering::SeqCst)
                || (job.background && self.compact_calls.load(Ordering::SeqCst) > 0)
            {
                return Err(Error::Closed);
            }
            let mut schema: Vec<(Arc<str>, FieldType)> = Vec::new();
            for s in &inputs {
                if let Some(mi) = s.machine(&name) {
                    for f in &mi.fields {
                        match schema.iter().find(|g| g.0 == f.0) {
                            Some(g) if g.1 != f.1 => {
                                return Err(Error::corrupt(
                                    &s.path,
                                    0,
                                    format!("field {}/{} changes type", name, f.0),
                                ));
                            }
                            Some(_) => {}
                            None => schema.push(f.clone()),
                        }
                    }
                }
            }
            let fields: Vec<&str> = schema.iter().map(|f| &*f.0).collect();
            let mut rows = crate::rows::RowSet::empty(fields.len());
            for s in &inputs {
                if let Some(mi) = s.machine(&name) {
                    rows = rows.merge_newer(s.read(mi, range, &fields, &tombs)?);
                }
            }
            rows.drop_empty_rows();
            Ok(segment::writer::MachineData::new(name.clone(), &schema, rows))
        };
        let block_rows = self.opts.compaction_block_rows;
        let work = |name: Arc<str>| match read(name) {
            Ok(m) if m.fields.is_empty() => None,
            Ok(m) => Some(Ok(segment::writer::encode_machine(&m, block_rows, None))),
            Err(e) => Some(Err(e)),
        };
        // Machines are read, merged and encoded a group at a time (side by side within it),
        // in order; the builder streams each group into the file as it is done.
        let machines = groups
            .iter()
            .flat_map(|group| -> Vec<Option<Result<segment::writer::EncodedMachine>>> {
                // A background merge gives the cores to a running flush first (writers may be
                // waiting for it), then goes on with its next group: it never holds a flush
                // back, and under sustained ingest it still advances a group per flush.
                if job.background {
                    drop(self.flushing.lock());
                }
                if group.len() == 1 {
                    return vec![work(group[0].clone())];
                }
                std::thread::scope(|s| {
                    let hs: Vec<_> = group.iter().map(|n| s.spawn(|| work(n.clone()))).collect();
                    hs.into_iter().map(|h| h.join().expect("compaction worker panicked")).collect()
                })
            })
            .flatten();
        let min_seq = inputs.iter().map(|s| s.index.min_seq).min().unwrap_or(0);
        let max_seq = inputs.iter().map(|s| s.index.max_seq).max().unwrap_or(0);
        // Every delete known now is applied by the reads above.
        let applied_seq = tombs.iter().map(|t| t.seq).max().unwrap_or(0).max(max_seq);
        let built = match self.build_segment(job.partition, (min_seq, max_seq, applied_seq), machines) {
            // Gave way to `Db::compact` (the partial file is gone, the inputs stay live).
            Err(Error::Closed) if job.background && !self.shutdown.load(Ordering::SeqCst) => return Ok(()),
            other => other?,
        };
        let made = self.finish_segments(built.into_iter().collect())?;
        let written: u64 = made.iter().map(|(_, m)| m.bytes).sum();
        self.stats_bytes_compacted.fetch_add(written, Ordering::Relaxed);
        self.stats_compactions.fetch_add(1, Ordering::Relaxed);
        self.publish(made.into_iter().collect(), &removed, None, 0)
    }

    /// Removes the log files whose records are all flushed up to `flushed_seq`. Unlinking a
    /// large file takes tens of milliseconds (the kernel drops its cached pages and frees its
    /// extents), time in which the flush thread would hold the next flush back; files of at
    /// least [`BACKGROUND_REMOVAL_BYTES`] together are removed on a thread of their own. Waits
    /// for the previous such thread first and returns its error, if it had one (the files it
    /// could not remove are retried by the next call).
    fn remove_logs(&self, flushed_seq: u64) -> Result<()> {
        let previous = self.join_log_removal();
        let victims = self.wal.take_flushed(flushed_seq);
        if victims.iter().map(|f| f.bytes).sum::<u64>() < BACKGROUND_REMOVAL_BYTES {
            return previous.and(self.wal.remove_files(victims));
        }
        let (wal, files) = (self.wal.clone(), victims.clone());
        match std::thread::Builder::new().name("gemba-unlink".into()).spawn(move || wal.remove_files(files)) {
            Ok(h) => *self.log_removal.lock() = Some(h),
            Err(_) => return previous.and(self.wal.remove_files(victims)),
        }
        previous
    }

    /// Waits for the log removal thread, if one is running, and returns its result.
    fn join_log_removal(&self) -> Result<()> {
        let Some(h) = self.log_removal.lock().take() else { return Ok(()) };
        h.join().unwrap_or_else(|_| {
            Err(Error::io("remove log", &self.dir, std::io::Error::other("log removal thread panicked")))
        })
    }

    /// Replaces the manifest atomically. A failure before the rename leaves the old one in
    /// place (an error to retry); a failure after it leaves the durable state unknown, which
    /// poisons the database.
    fn publish_manifest(&self, m: &Manifest) -> Result<()> {
        let path = self.dir.join(manifest::FILE);
        let tmp = crate::io::tmp_path(&path);
        let pre = (|| {
            let mut f = self.fs.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(&m.encode()).map_err(|e| Error::io("write", &tmp, e))?;
            f.sync_data().map_err(|e| Error::io("sync", &tmp, e))
        })();
        if let Err(e) = pre {
            let _ = self.fs.remove(&tmp);
            return Err(e);
        }
        let post = self.fs.rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e)).and_then(|()| {
            self.fs.sync_dir(&self.dir).map_err(|e| Error::io("sync directory", &self.dir, e))
        });
        if let Err(e) = post {
            *self.poisoned.lock() = Some(format!("manifest publication failed: {e}"));
            return Err(e);
        }
        Ok(())
    }

    fn sync_loop(&self, interval: Duration) {
        loop {
            {
                let mut g = self.bg.lock();
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                self.bg_done.wait_for(&mut g, interval);
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
            }
            if self.wal.sync().is_err() {
                // The log is poisoned; every call reports it from now on.
                return;
            }
        }
    }
}

/// Flushed log files of at least this many bytes together are removed on a thread of their
/// own (see [`Inner::remove_logs`]); smaller ones right away.
const BACKGROUND_REMOVAL_BYTES: u64 = 4 << 20;

/// A compaction may hold this many times `Options::memtable_bytes_max` of one machine's
/// decoded rows (see `Inner::compaction_fits`).
pub(crate) const COMPACTION_MEMORY_FACTOR: u64 = 4;

/// The start of the partition holding `ts`: `floor(ts / width) * width`, saturating at the
/// ends of the `i64` range.
pub(crate) fn partition_of(ts: i64, width: i64) -> i64 {
    let p = ts.div_euclid(width) as i128 * width as i128;
    p.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::tier_run;

    #[test]
    fn tiers_merge_runs_of_similar_size() {
        // Too few segments: nothing.
        assert_eq!(tier_run(&[10, 10, 10], 4), None);
        // Four flushes of about the same size.
        assert_eq!(tier_run(&[10, 12, 9, 11], 4), Some(0..4));
        // An older, larger tier is left alone; the four newest flushes merge.
        assert_eq!(tier_run(&[400, 10, 12, 9, 11], 4), Some(1..5));
        // A larger tier does not take in a run of smaller ones.
        assert_eq!(tier_run(&[400, 100, 100, 100], 4), None);
        // Two candidate runs of similar sizes: the smaller one.
        assert_eq!(tier_run(&[40, 41, 39, 40, 10, 10, 10, 10], 4), Some(4..8));
        // Sizes too far apart: wait, until twice the trigger, then the smallest run anyway.
        assert_eq!(tier_run(&[1000, 100, 10, 1], 4), None);
        let spread = [10_000, 1000, 100, 10, 1, 2000, 300, 5, 70_000, 3, 900, 40, 8000, 60, 2, 500];
        assert_eq!(tier_run(&spread[..15], 4), None);
        assert_eq!(tier_run(&spread, 4), Some(1..5));
        // Empty files count as one byte; no division by zero, no overflow.
        assert_eq!(tier_run(&[0, 0, 0, 0], 4), Some(0..4));
        assert_eq!(tier_run(&[u64::MAX, u64::MAX / 2 + 1, u64::MAX, u64::MAX], 4), Some(0..4));
    }

    #[test]
    fn tiering_keeps_write_amplification_logarithmic() {
        // Simulate a stream of equal flushes into one partition, merging whenever a run is
        // chosen (sizes add up): every byte is rewritten about log_4(flushes) times.
        let (mut segs, mut written, trigger) = (Vec::<u64>::new(), 0u64, 4);
        for _ in 0..256 {
            segs.push(100);
            while let Some(r) = tier_run(&segs, trigger) {
                let merged: u64 = segs[r.clone()].iter().sum();
                written += merged;
                segs.splice(r, [merged]);
            }
            assert!(segs.len() < 4 * trigger, "{segs:?}");
        }
        let flushed = 256 * 100;
        // log_4(256) = 4 levels of merging.
        assert_eq!(written, 4 * flushed, "{segs:?}");
    }
}
