//! Concurrent writers share log writes and syncs (group commit), and every acknowledged batch
//! of every thread is there afterwards, in every sync policy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::dump;
use gemba::io::{FileSystem, SimFs};
use gemba::{Db, Options, SyncPolicy, Value, WriteBatch};

fn batch(t: usize, k: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..4 {
        b.row(&format!("m{t}"), (k * 4 + j) as i64, [("v", (k * 10 + j) as f64)]).unwrap();
    }
    b
}

fn run(db: &Arc<Db>, threads: usize, per_thread: usize) {
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for k in 0..per_thread {
                    db.write(&batch(t, k)).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

fn check(db: &Db, threads: usize, per_thread: usize) {
    let got = dump(db);
    assert_eq!(got.len(), threads * per_thread * 4);
    for t in 0..threads {
        for k in 0..per_thread {
            for j in 0..4 {
                let row = &got[&(format!("m{t}"), (k * 4 + j) as i64)];
                assert_eq!(row["v"], Value::F64((k * 10 + j) as f64));
            }
        }
    }
}

#[test]
fn concurrent_durable_writers_share_syncs() {
    let fs = SimFs::new(7);
    // A slow disk: while one round writes, the other threads queue up behind it.
    fs.set_write_delay(Duration::from_millis(2));
    let opts = Options { fs: Arc::new(fs.clone()), ..Options::default() };
    let db = Arc::new(Db::open("/db", opts.clone()).unwrap());
    let before = fs.ops();
    let (threads, per_thread) = (8, 40);
    run(&db, threads, per_thread);
    let ops = fs.ops() - before;
    let writes = (threads * per_thread) as u64;
    // Without group commit every batch costs a write and a sync: 2 operations.
    println!("{writes} durable batches took {ops} file operations");
    assert!(ops < writes, "no group commit: {ops} operations for {writes} batches");
    check(&db, threads, per_thread);
    Arc::into_inner(db).unwrap().close().unwrap();
    // Everything acknowledged was synced: a power loss right now loses nothing.
    let after = fs.crash(gemba::io::CrashMode::DropUnsynced);
    let db = Db::open("/db", Options { fs: Arc::new(after), ..Options::default() }).unwrap();
    check(&db, threads, per_thread);
}

#[test]
fn every_policy_keeps_every_acknowledged_write_across_reopen() {
    for policy in [SyncPolicy::Always, SyncPolicy::Periodic(Duration::from_millis(5)), SyncPolicy::Os] {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { sync: policy, ..Options::default() };
        let db = Arc::new(Db::open(dir.path(), opts.clone()).unwrap());
        run(&db, 4, 50);
        check(&db, 4, 50);
        Arc::into_inner(db).unwrap().close().unwrap();
        let db = Db::open(dir.path(), opts).unwrap();
        check(&db, 4, 50);
    }
}

#[test]
fn periodic_policy_syncs_in_the_background() {
    let fs = SimFs::new(3);
    let opts = Options {
        fs: Arc::new(fs.clone()),
        sync: SyncPolicy::Periodic(Duration::from_millis(10)),
        ..Options::default()
    };
    let db = Db::open("/db", opts).unwrap();
    db.write(&batch(0, 0)).unwrap();
    // Within a few intervals the background thread has synced the write.
    std::thread::sleep(Duration::from_millis(200));
    let after = fs.crash(gemba::io::CrashMode::DropUnsynced);
    drop(db);
    let db = Db::open("/db", Options { fs: Arc::new(after), ..Options::default() }).unwrap();
    assert_eq!(dump(&db).len(), 4);
}

/// Writers racing on the same keys: records are applied in log order whichever thread applies
/// them, so the values a live database shows are those its log replays to after a reopen
/// (a record applied out of order would make the live winner of a key differ from the
/// replayed one). Deletes are mixed in.
#[test]
fn concurrent_writes_of_the_same_keys_apply_in_log_order() {
    for policy in [SyncPolicy::Always, SyncPolicy::Os] {
        let fs = SimFs::new(17);
        let opts = Options { sync: policy, fs: Arc::new(fs.clone()), ..Options::default() };
        let db = Arc::new(Db::open("/db", opts.clone()).unwrap());
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for k in 0..200i64 {
                        let mut b = WriteBatch::new();
                        for j in 0..3 {
                            let ts = (k * 7 + j * 3 + t) % 16;
                            b.row("press", ts, [("v", (t * 100_000 + k * 10 + j) as f64)]).unwrap();
                        }
                        db.write(&b).unwrap();
                        if k % 50 == 49 {
                            db.delete_range("press", (k % 16)..(k % 16 + 2)).unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let live = dump(&db);
        assert!(!live.is_empty());
        drop(db);
        let db = Db::open("/db", opts).unwrap();
        assert_eq!(db.recovery_report().records_replayed, 8 * 200 + 8 * 4, "{policy:?}");
        assert_eq!(dump(&db), live, "{policy:?}: the live values differ from the log's");
    }
}

/// A file system whose log writes fail now and then with a full disk (each failure rolled
/// back by the log, which goes on).
#[derive(Clone)]
struct FlakyLog {
    sim: SimFs,
    writes: Arc<std::sync::atomic::AtomicU64>,
}

struct FlakyFile {
    fs: FlakyLog,
    log: bool,
    len: u64,
    inner: Box<dyn gemba::io::WriteFile>,
}

impl gemba::io::WriteFile for FlakyFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // A log file's header (its first write) goes through: only record writes fail.
        if self.log
            && self.len > 0
            && self.fs.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 == 2
        {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "injected: disk full"));
        }
        self.inner.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)?;
        self.len = len;
        Ok(())
    }
}

impl FlakyLog {
    fn wrap(
        &self,
        path: &std::path::Path,
        inner: Box<dyn gemba::io::WriteFile>,
    ) -> Box<dyn gemba::io::WriteFile> {
        let log = path.file_name().unwrap().to_string_lossy().starts_with("wal-");
        Box::new(FlakyFile { fs: self.clone(), log, len: 0, inner })
    }
}

impl FileSystem for FlakyLog {
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.sim.create_dir_all(dir)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        self.sim.list(dir)
    }
    fn create(&self, path: &std::path::Path) -> std::io::Result<Box<dyn gemba::io::WriteFile>> {
        let f = self.sim.create(path)?;
        Ok(self.wrap(path, f))
    }
    fn reopen(&self, path: &std::path::Path) -> std::io::Result<Box<dyn gemba::io::WriteFile>> {
        let f = self.sim.reopen(path)?;
        Ok(self.wrap(path, f))
    }
    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        self.sim.read(path)
    }
    fn map(&self, path: &std::path::Path) -> std::io::Result<gemba::io::Bytes> {
        self.sim.map(path)
    }
    fn file_len(&self, path: &std::path::Path) -> std::io::Result<u64> {
        self.sim.file_len(path)
    }
    fn truncate(&self, path: &std::path::Path, len: u64) -> std::io::Result<()> {
        self.sim.truncate(path, len)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        self.sim.rename(from, to)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.sim.remove(path)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.sim.sync_dir(dir)
    }
    fn lock(&self, path: &std::path::Path) -> std::io::Result<gemba::io::LockGuard> {
        self.sim.lock(path)
    }
}

/// Concurrent durable writers while every third log write fails (a disk filling and being
/// freed): each writer is told the truth about its own batch, however the rounds fall and
/// however late it wakes. A batch acknowledged is there, with its value, before and after a
/// reopen; a batch refused left no trace.
#[test]
fn writers_of_failed_rounds_are_told_and_others_are_not_lost() {
    let fs = FlakyLog { sim: SimFs::new(11), writes: Arc::new(std::sync::atomic::AtomicU64::new(0)) };
    let opts = Options { fs: Arc::new(fs.clone()), ..Options::default() };
    let db = Arc::new(Db::open("/db", opts.clone()).unwrap());
    let (threads, per_thread) = (8usize, 150usize);
    let outcomes: Vec<Vec<bool>> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|k| {
                        let mut b = WriteBatch::new();
                        b.row(&format!("m{t}"), k as i64, [("v", (t * 1000 + k) as f64)]).unwrap();
                        match db.write(&b) {
                            Ok(()) => true,
                            Err(e) if e.is_disk_full() => false,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    })
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let refused = outcomes.iter().flatten().filter(|ok| !**ok).count();
    println!("{refused} of {} batches refused", threads * per_thread);
    assert!(refused > 0 && refused < threads * per_thread);
    let expect = |db: &Db| {
        let got = dump(db);
        for (t, ks) in outcomes.iter().enumerate() {
            for (k, ok) in ks.iter().enumerate() {
                let row = got.get(&(format!("m{t}"), k as i64));
                if *ok {
                    let row = row.unwrap_or_else(|| panic!("acknowledged batch m{t}/{k} lost"));
                    assert_eq!(row["v"], Value::F64((t * 1000 + k) as f64));
                } else {
                    assert!(row.is_none(), "refused batch m{t}/{k} applied");
                }
            }
        }
    };
    expect(&db);
    Arc::into_inner(db).unwrap().close().unwrap();
    let db = Db::open("/db", opts).unwrap();
    expect(&db);
}
