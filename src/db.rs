//! `Db`: open → recover → write / read / flush / close.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use crate::segment::{self, Segment};
use crate::wal::RecoveryReport;
use crate::wal::format::{self, KIND_BATCH, RECORD_LEN_MAX};
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
}

/// The live set of data sources. Replaced (never mutated) when it changes, so a query holding
/// one keeps every memtable and mapped segment in it alive until it is done.
#[derive(Default)]
pub(crate) struct Version {
    /// Takes writes.
    pub(crate) active: Arc<Memtable>,
    /// Frozen, waiting to be flushed; oldest first.
    pub(crate) frozen: Vec<Arc<Memtable>>,
    /// Live segments, sorted by (partition, max_seq): within a partition, later wins.
    pub(crate) segments: Vec<Arc<Segment>>,
}

impl Version {
    pub(crate) fn memtable_bytes(&self) -> usize {
        self.active.bytes() + self.frozen.iter().map(|m| m.bytes()).sum::<usize>()
    }
}

fn sort_segments(segs: &mut [Arc<Segment>]) {
    segs.sort_by_key(|s| (s.index.partition_start, s.index.max_seq, s.id));
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
    wal: WalWriter,
    /// Catalog snapshots are cheap to share with queries: replaced on change.
    catalog: RwLock<Arc<Catalog>>,
    version: Mutex<Arc<Version>>,
    /// The durable manifest; changed only by the background thread.
    manifest: Mutex<Manifest>,
    next_segment_id: AtomicU64,
    /// Sequence number of the next batch to enter the memtable; batches enter in order, and a
    /// writer holds this lock while it inserts (so a freeze never splits a batch).
    ticket: Mutex<u64>,
    ticket_cv: Condvar,
    /// Every batch up to this sequence number is in the memtable.
    visible_seq: AtomicU64,
    recovery: RecoveryReport,
    shutdown: AtomicBool,
    bg: Mutex<BgState>,
    /// Wakes the flush thread (new frozen memtable, shutdown).
    bg_work: Condvar,
    /// Wakes writers in backpressure and `flush()` callers (a flush finished or failed).
    bg_done: Condvar,
    /// Set when a failure leaves durable state unknown (e.g. the manifest's directory sync).
    poisoned: Mutex<Option<String>>,
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
        f.debug_struct("Db")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Passes a sequence number's turn on when dropped, even on an early return or a panic.
struct TicketGuard<'a> {
    inner: &'a Inner,
    seq: u64,
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        let mut t = self.inner.ticket.lock();
        if *t == self.seq {
            *t += 1;
            self.inner.ticket_cv.notify_all();
        }
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
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Db> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = opts.fs.clone();
        if opts.create_if_missing {
            fs.create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
        } else if fs.list(&dir).is_err() {
            return Err(Error::invalid(format!(
                "database directory {} does not exist",
                dir.display()
            )));
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { dir: dir.clone() }
            } else {
                Error::io("lock", &lock_path, e)
            }
        })?;

        let Loaded {
            manifest,
            segments,
            mut catalog,
        } = load(fs.as_ref(), &dir)?;
        let memtable = Memtable::new();
        let (files, recovery, log_seq) = reader::recover(
            fs.as_ref(),
            &dir,
            manifest.flushed_seq,
            opts.skip_corrupt_wal_records,
            |path, offset, rec| {
                if rec.kind != KIND_BATCH {
                    return Err(reader::bad_body(
                        path,
                        offset,
                        format!("unknown record kind {}", rec.kind),
                    ));
                }
                let batch = format::decode_batch(rec.body)
                    .map_err(|w| reader::bad_body(path, offset, w))?;
                let map = catalog
                    .register(&batch)
                    .map_err(|e| reader::bad_body(path, offset, e.to_string()))?;
                memtable.insert(&map, &batch, rec.seq);
                Ok(())
            },
        )?;
        let last_seq = log_seq.max(manifest.flushed_seq);
        let wal = WalWriter::open(fs.clone(), &dir, opts.wal_file_bytes_max, files, last_seq)?;
        wal.remove_flushed(manifest.flushed_seq)?;
        let version = Version {
            active: Arc::new(memtable),
            frozen: Vec::new(),
            segments,
        };
        let inner = Arc::new(Inner {
            dir,
            fs,
            wal,
            catalog: RwLock::new(Arc::new(catalog)),
            version: Mutex::new(Arc::new(version)),
            next_segment_id: AtomicU64::new(manifest.next_segment_id.max(1)),
            manifest: Mutex::new(manifest),
            ticket: Mutex::new(last_seq + 1),
            ticket_cv: Condvar::new(),
            visible_seq: AtomicU64::new(last_seq),
            recovery,
            shutdown: AtomicBool::new(false),
            bg: Mutex::new(BgState::default()),
            bg_work: Condvar::new(),
            bg_done: Condvar::new(),
            poisoned: Mutex::new(None),
            _lock: lock,
            opts,
        });
        let db = Db {
            inner,
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        let inner = db.inner.clone();
        db.spawn("gemba-flush", move || inner.flush_loop())?;
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
        let map = {
            let cat = inner.catalog.read().clone();
            match cat.check(batch)? {
                Some(map) => map,
                None => {
                    // Copy-on-write: queries holding the old catalog keep it.
                    let mut w = inner.catalog.write();
                    Arc::make_mut(&mut *w).register(batch)?
                }
            }
        };
        inner.backpressure()?;
        let mut body = Vec::with_capacity(len);
        format::encode_batch(batch, &mut body);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body);

        let seq = inner.wal.append(&body, &crc)?;
        let guard = TicketGuard { inner, seq };
        let durable = matches!(inner.opts.sync, SyncPolicy::Always);
        let result = inner.wal.wait(seq, durable);
        // Enter the memtable in sequence order, whether or not this batch made it; hold the
        // ticket while inserting so a freeze never splits a batch.
        let mut t = inner.ticket.lock();
        while *t != seq {
            inner.ticket_cv.wait(&mut t);
        }
        if result.is_ok() {
            let active = inner.version.lock().active.clone();
            active.insert(&map, batch, seq);
            inner.visible_seq.store(seq, Ordering::Release);
            if active.bytes() >= inner.freeze_bytes() {
                inner.freeze_locked();
                inner.wal.request_rotate();
            }
        }
        *t += 1;
        inner.ticket_cv.notify_all();
        drop(t);
        drop(guard);
        result
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
        self.inner.wait_flushed(target)
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
        self.inner.wal.sync()
    }

    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        self.inner.check_open()?;
        let version = self.inner.version.lock().clone();
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        let catalog = self.inner.catalog.read().clone();
        Ok(Snapshot {
            version,
            seq,
            catalog,
        })
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
        DbStats {
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
        let bytes = fs
            .read(&mpath)
            .map_err(|e| Error::io("read manifest", &mpath, e))?;
        Manifest::decode(&mpath, &bytes)?
    } else {
        Manifest::default()
    };
    let mut segments = Vec::with_capacity(manifest.segments.len());
    for meta in &manifest.segments {
        let path = dir.join(segment::file_name(meta.id));
        if !names.iter().any(|n| *n == segment::file_name(meta.id)) {
            return Err(Error::corrupt(
                &mpath,
                0,
                format!("live segment {} is missing", path.display()),
            ));
        }
        let seg = Segment::open(fs, &path, meta.id)?;
        if seg.index.partition_start != meta.partition_start || seg.index.max_seq != meta.max_seq {
            return Err(Error::corrupt(
                &path,
                0,
                "segment disagrees with the manifest",
            ));
        }
        segments.push(Arc::new(seg));
    }
    sort_segments(&mut segments);
    // Leftovers of interrupted work: temporary files and segments no manifest lists.
    let live: HashSet<u64> = manifest.segments.iter().map(|s| s.id).collect();
    let mut removed = false;
    for n in &names {
        let stale =
            n.ends_with(".tmp") || segment::parse_name(n).is_some_and(|id| !live.contains(&id));
        if stale {
            let p = dir.join(n);
            fs.remove(&p)
                .map_err(|e| Error::io("remove leftover", &p, e))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    let mut catalog = Catalog::default();
    for seg in &segments {
        for m in &seg.index.machines {
            let mi = catalog.intern_machine(&m.name);
            for (f, ty) in &m.fields {
                catalog.intern_field(mi, f, *ty).map_err(|e| {
                    Error::corrupt(
                        &seg.path,
                        0,
                        format!("segment disagrees with the catalog: {e}"),
                    )
                })?;
            }
        }
    }
    Ok(Loaded {
        manifest,
        segments,
        catalog,
    })
}

impl Inner {
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
                return Err(Error::io(
                    "flush",
                    self.dir.clone(),
                    std::io::Error::new(*kind, msg.clone()),
                ));
            }
            self.bg_done.wait_for(&mut bg, Duration::from_millis(100));
        }
    }

    /// Freezes the active memtable if it holds anything. Returns the sequence number that
    /// must be flushed for everything written so far to be in segments.
    fn freeze(&self) -> Result<u64> {
        {
            let _t = self.ticket.lock();
            self.freeze_locked();
        }
        self.wal.rotate()?;
        let v = self.version.lock().clone();
        let frozen_max = v.frozen.iter().map(|m| m.max_seq()).max().unwrap_or(0);
        Ok(frozen_max.max(self.manifest.lock().flushed_seq))
    }

    /// Freezes the active memtable; the caller holds the ticket lock (no insert in progress).
    fn freeze_locked(&self) {
        let mut v = self.version.lock();
        if v.active.is_empty() {
            return;
        }
        let mut frozen = v.frozen.clone();
        frozen.push(v.active.clone());
        *v = Arc::new(Version {
            active: Arc::new(Memtable::new()),
            frozen,
            segments: v.segments.clone(),
        });
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
            if bg.errors != errors_before
                && let Some((kind, msg)) = &bg.error
            {
                return Err(Error::io(
                    "flush",
                    self.dir.clone(),
                    std::io::Error::new(*kind, msg.clone()),
                ));
            }
            self.bg_done.wait_for(&mut bg, Duration::from_millis(100));
        }
    }

    fn flush_loop(&self) {
        loop {
            let next = {
                let mut bg = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    let v = self.version.lock().clone();
                    if let Some(m) = v.frozen.first() {
                        break m.clone();
                    }
                    self.bg_work.wait(&mut bg);
                }
            };
            let result = self.flush_memtable(&next);
            let mut bg = self.bg.lock();
            match result {
                Ok(()) => bg.error = None,
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
            if bg.error.is_some() {
                // Retry after a pause (e.g. until disk space returns), unless shutting down.
                if self.shutdown.load(Ordering::SeqCst) || self.poisoned.lock().is_some() {
                    return;
                }
                self.bg_work.wait_for(&mut bg, Duration::from_millis(200));
            }
        }
    }

    /// Writes a frozen memtable as segment files (one per partition), publishes them in the
    /// manifest, swaps them in for the memtable and removes the log files they cover.
    fn flush_memtable(&self, mt: &Arc<Memtable>) -> Result<()> {
        let catalog = self.catalog.read().clone();
        let width = self.opts.partition_width;
        // Partition start → machines' rows in it.
        let mut parts: BTreeMap<i64, Vec<segment::writer::MachineData>> = BTreeMap::new();
        let mut machines = mt.machines();
        machines.sort_by(|&a, &b| {
            catalog
                .entry(a)
                .name
                .as_bytes()
                .cmp(catalog.entry(b).name.as_bytes())
        });
        for m in machines {
            let e = catalog.entry(m);
            let idx: Vec<u32> = (0..e.fields.len() as u32).collect();
            let schema: Vec<(Arc<str>, FieldType)> =
                e.fields.iter().map(|f| (f.name.clone(), f.ty)).collect();
            let rows = mt.read(m, TimeRange::ALL, u64::MAX, &idx);
            let mut start = 0;
            while start < rows.len() {
                let p = partition_of(rows.ts[start], width);
                let end_ts = p.saturating_add(width);
                let end = start + rows.ts[start..].partition_point(|&t| t < end_ts);
                let slice = crate::rows::slice(&rows, start, end);
                let md = segment::writer::MachineData::new(e.name.clone(), &schema, slice);
                if !md.fields.is_empty() {
                    parts.entry(p).or_default().push(md);
                }
                start = end;
            }
        }
        let min_seq = mt.min_seq();
        let max_seq = mt.max_seq();
        let mut new_segments = Vec::new();
        let mut metas = Vec::new();
        let result = (|| -> Result<()> {
            for (p, machines) in &parts {
                let id = self.next_segment_id.fetch_add(1, Ordering::SeqCst);
                let (bytes, summary) = segment::writer::encode_segment(
                    *p,
                    width,
                    min_seq,
                    max_seq,
                    machines,
                    self.opts.block_rows,
                );
                let path = self.dir.join(segment::file_name(id));
                self.write_file(&path, &bytes)?;
                new_segments.push(Arc::new(Segment::open(self.fs.as_ref(), &path, id)?));
                metas.push(SegmentMeta {
                    id,
                    partition_start: *p,
                    ts_min: summary.ts_min,
                    ts_max: summary.ts_max,
                    min_seq,
                    max_seq,
                    bytes: bytes.len() as u64,
                    points: summary.points,
                });
            }
            Ok(())
        })();
        if let Err(e) = result {
            for s in &new_segments {
                let _ = self.fs.remove(&s.path);
            }
            return Err(e);
        }
        if !new_segments.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        // Publish: the manifest first, then the in-memory version, then drop the log files.
        let mut m = self.manifest.lock();
        let mut next = m.clone();
        next.generation += 1;
        next.flushed_seq = next.flushed_seq.max(max_seq);
        next.next_segment_id = self.next_segment_id.load(Ordering::SeqCst);
        next.segments.extend(metas);
        self.publish_manifest(&next)?;
        *m = next;
        {
            let mut v = self.version.lock();
            let frozen: Vec<Arc<Memtable>> = v
                .frozen
                .iter()
                .filter(|f| !Arc::ptr_eq(f, mt))
                .cloned()
                .collect();
            let mut segments = v.segments.clone();
            segments.extend(new_segments);
            sort_segments(&mut segments);
            *v = Arc::new(Version {
                active: v.active.clone(),
                frozen,
                segments,
            });
        }
        let flushed = m.flushed_seq;
        drop(m);
        self.wal.remove_flushed(flushed)?;
        Ok(())
    }

    /// Writes a new file durably under its final name: `name.tmp`, sync, rename. The caller
    /// syncs the directory.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = crate::io::tmp_path(path);
        let result = (|| {
            let mut f = self
                .fs
                .create(&tmp)
                .map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(bytes)
                .map_err(|e| Error::io("write", &tmp, e))?;
            f.sync_data().map_err(|e| Error::io("sync", &tmp, e))?;
            drop(f);
            self.fs
                .rename(&tmp, path)
                .map_err(|e| Error::io("rename", &tmp, e))
        })();
        if result.is_err() {
            let _ = self.fs.remove(&tmp);
        }
        result
    }

    /// Replaces the manifest atomically. A failure before the rename leaves the old one in
    /// place (an error to retry); a failure after it leaves the durable state unknown, which
    /// poisons the database.
    fn publish_manifest(&self, m: &Manifest) -> Result<()> {
        let path = self.dir.join(manifest::FILE);
        let tmp = crate::io::tmp_path(&path);
        let pre = (|| {
            let mut f = self
                .fs
                .create(&tmp)
                .map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(&m.encode())
                .map_err(|e| Error::io("write", &tmp, e))?;
            f.sync_data().map_err(|e| Error::io("sync", &tmp, e))
        })();
        if let Err(e) = pre {
            let _ = self.fs.remove(&tmp);
            return Err(e);
        }
        let post = self
            .fs
            .rename(&tmp, &path)
            .map_err(|e| Error::io("rename", &tmp, e))
            .and_then(|()| {
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(|e| Error::io("sync directory", &self.dir, e))
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

/// The start of the partition holding `ts`: `floor(ts / width) * width`, saturating at the
/// ends of the `i64` range.
pub(crate) fn partition_of(ts: i64, width: i64) -> i64 {
    let p = ts.div_euclid(width) as i128 * width as i128;
    p.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}
