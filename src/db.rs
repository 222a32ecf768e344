//! `Db`: open → recover → write / read / flush / close.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::io::{FileSystem, LockGuard};
use crate::memtable::Memtable;
use crate::model::WriteBatch;
use crate::options::{Options, SyncPolicy};
use crate::wal::RecoveryReport;
use crate::wal::format::{self, KIND_BATCH, RECORD_LEN_MAX};
use crate::wal::reader;
use crate::wal::writer::WalWriter;

/// Name of the lock file in the database directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// What a query sees: one consistent set of memtables, fixed at a sequence number.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) version: Arc<Version>,
    pub(crate) seq: u64,
    pub(crate) catalog: Arc<Catalog>,
}

/// The live set of data sources. Replaced (never mutated) when it changes.
#[derive(Default)]
pub(crate) struct Version {
    /// Takes writes.
    pub(crate) active: Arc<Memtable>,
    /// Frozen, waiting to be flushed; oldest first.
    pub(crate) frozen: Vec<Arc<Memtable>>,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    #[allow(dead_code)] // used by flush, next
    pub(crate) fs: Arc<dyn FileSystem>,
    wal: WalWriter,
    /// Catalog snapshots are cheap to share with queries: replaced on change.
    catalog: RwLock<Arc<Catalog>>,
    version: Mutex<Arc<Version>>,
    /// Sequence number of the next batch to enter the memtable; batches enter in order.
    ticket: Mutex<u64>,
    ticket_cv: Condvar,
    /// Every batch up to this sequence number is in the memtable.
    visible_seq: AtomicU64,
    recovery: RecoveryReport,
    shutdown: AtomicBool,
    shutdown_mu: Mutex<()>,
    shutdown_cv: Condvar,
    _lock: LockGuard,
}

/// An open database. See the crate documentation for an overview.
///
/// `Db` is `Send + Sync`: share it between threads with `Arc<Db>`; all methods take `&self`.
/// Dropping it closes it (see [`Db::close`] to see errors).
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

/// Runs `f` when dropped unless disarmed; makes sure a sequence number's turn is always passed.
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

impl Db {
    /// Opens the database in `dir`, creating it when it does not exist (unless
    /// `create_if_missing` is off), and recovers what the log holds.
    ///
    /// Fails with [`Error::Locked`] when another `Db`, in this or another process, has it open;
    /// with [`Error::Corrupt`] when the log is damaged before its end (see
    /// [`Options::skip_corrupt_wal_records`]). A torn last record, left by a crash during a
    /// write, is cut off and reported in [`Db::recovery_report`].
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

        let mut catalog = Catalog::default();
        let memtable = Memtable::new();
        let (files, recovery, last_seq) = reader::recover(
            fs.as_ref(),
            &dir,
            0,
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
        let wal = WalWriter::open(fs.clone(), &dir, opts.wal_file_bytes_max, files, last_seq)?;
        let version = Version {
            active: Arc::new(memtable),
            frozen: Vec::new(),
        };
        let inner = Arc::new(Inner {
            dir,
            fs,
            wal,
            catalog: RwLock::new(Arc::new(catalog)),
            version: Mutex::new(Arc::new(version)),
            ticket: Mutex::new(last_seq + 1),
            ticket_cv: Condvar::new(),
            visible_seq: AtomicU64::new(last_seq),
            recovery,
            shutdown: AtomicBool::new(false),
            shutdown_mu: Mutex::new(()),
            shutdown_cv: Condvar::new(),
            _lock: lock,
            opts,
        });
        let db = Db {
            inner,
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        if let SyncPolicy::Periodic(interval) = db.inner.opts.sync {
            let inner = db.inner.clone();
            let h = std::thread::Builder::new()
                .name("gemba-sync".into())
                .spawn(move || inner.sync_loop(interval))
                .map_err(|e| Error::io("spawn sync thread", &db.inner.dir, e))?;
            db.threads.lock().push(h);
        }
        Ok(db)
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
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = gemba::Db::open(dir.path(), gemba::Options::default())?;
    /// let mut batch = gemba::WriteBatch::new();
    /// batch.row("press-07", 1_000, [("speed_rpm", 1480.5)])?;
    /// db.write(&batch)?;
    /// # Ok::<(), gemba::Error>(())
    /// ```
    pub fn write(&self, batch: &WriteBatch) -> Result<()> {
        self.inner.check_open()?;
        if batch.is_empty() {
            return Ok(());
        }
        let len = format::encoded_batch_len(batch);
        if len + 8 > RECORD_LEN_MAX as usize {
            return Err(Error::invalid(format!(
                "batch encodes to {len} bytes; split it into batches under {} bytes",
                RECORD_LEN_MAX
            )));
        }
        let map = {
            let cat = self.inner.catalog.read().clone();
            match cat.check(batch)? {
                Some(map) => map,
                None => {
                    // Copy-on-write: queries holding the old catalog keep it.
                    let mut w = self.inner.catalog.write();
                    Arc::make_mut(&mut *w).register(batch)?
                }
            }
        };
        let mut body = Vec::with_capacity(len);
        format::encode_batch(batch, &mut body);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body);

        let inner = &self.inner;
        let seq = inner.wal.append(&body, &crc)?;
        let guard = TicketGuard { inner, seq };
        let durable = matches!(inner.opts.sync, SyncPolicy::Always);
        let result = inner.wal.wait(seq, durable);
        // Enter the memtable in sequence order, whether or not this batch made it.
        {
            let mut t = inner.ticket.lock();
            while *t != seq {
                inner.ticket_cv.wait(&mut t);
            }
        }
        if result.is_ok() {
            let version = inner.version.lock().clone();
            version.active.insert(&map, batch, seq);
            inner.visible_seq.store(seq, Ordering::Release);
        }
        drop(guard);
        result
    }

    /// Makes every write acknowledged so far durable on stable storage (useful with the
    /// `Periodic` and `Os` sync policies).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.wal.sync()
    }

    /// Closes the database: stops background work, makes every acknowledged write durable and
    /// releases the directory lock. Dropping the `Db` does the same, ignoring errors.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        {
            let _g = self.inner.shutdown_mu.lock();
            self.inner.shutdown.store(true, Ordering::SeqCst);
            self.inner.shutdown_cv.notify_all();
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
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.shutdown.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if let Some(cause) = self.wal.poisoned() {
            return Err(Error::Poisoned { cause });
        }
        Ok(())
    }

    fn sync_loop(&self, interval: Duration) {
        loop {
            {
                let mut g = self.shutdown_mu.lock();
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                self.shutdown_cv.wait_for(&mut g, interval);
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
