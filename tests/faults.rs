//! Injected I/O errors, full disks and rejected batches.
//!
//! - **Error sweep**: for every operation k of a workload (writes, automatic and explicit
//!   flushes, a delete, a compaction, log rotation and removal), operation k fails with `EIO`,
//!   `ENOSPC` or a short write, once or from then on (sticky). The workload goes on after
//!   errors, as a service would. A tracing file system names operation k, so the expectations
//!   are exact: a failed log `fdatasync`, a failed roll-back or a failed manifest publication
//!   poisons the database, and from then on every call returns `Error::Poisoned`; any other
//!   single failure does not, and every later call succeeds. No call may hang. Afterwards the
//!   file system loses everything unsynced (and, separately, keeps everything, as when the
//!   process merely reopens), and the reopened database must hold every acknowledged batch,
//!   none of the batches whose write failed with an error other than `Poisoned`, the deleted
//!   machine only if its delete was not acknowledged, and accept writes again.
//! - **Disk full**: `SimFs::set_capacity` fills the disk at many levels; writes fail with an
//!   error for which `is_disk_full()` holds, what was acknowledged stays readable, and once
//!   space returns the same `Db` writes and flushes again.
//! - **Regressions** found by the sweep: reopening after a failed manifest directory sync, and
//!   types fixed by a write that failed.
//! - **Real file system**: a rejected batch (type mismatch) changes nothing and later writes
//!   work.
//!
//! To rerun the sweep at one operation: `GEMBA_FAULT_AT=k`; to print the operations of the
//! fault-free run: `GEMBA_FAULT_TRACE=1` (with `--nocapture`).

mod common;

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{IdleEnd, IdleWait, Model, Spec, check_present, count_panics, leftovers, panics, try_dump};
use gemba::io::{Bytes, CrashMode, Fault, FaultKind, FileSystem, LockGuard, SimFs, WriteFile};
use gemba::{Db, Error, Options, SyncPolicy, Value, WriteBatch};

const DIR: &str = "/db";

// ---------------------------------------------------------------------------------------------
// A file system that records every mutating operation with the number `SimFs` gave it.

#[derive(Debug, Clone)]
struct OpRec {
    n: u64,
    kind: &'static str,
    path: String,
    len: usize,
}

#[derive(Clone)]
struct Traced {
    sim: SimFs,
    log: Arc<Mutex<Vec<OpRec>>>,
    /// When set, the next directory sync right after a rename of `MANIFEST.tmp` fails (once).
    fail_manifest_dir_sync: Arc<std::sync::atomic::AtomicBool>,
    /// Segment files created so far; creating the `panic_at_segment`-th (counting from 1)
    /// panics, as a bug in background work would.
    segments_created: Arc<AtomicU64>,
    panic_at_segment: Arc<AtomicU64>,
    /// Syncs of segment files so far; the `fail_segment_sync`-th (counting from 1) fails
    /// with `EIO`.
    segment_syncs: Arc<AtomicU64>,
    fail_segment_sync: Arc<AtomicU64>,
}

impl Traced {
    fn new(sim: SimFs) -> Traced {
        Traced {
            sim,
            log: Arc::new(Mutex::new(Vec::new())),
            fail_manifest_dir_sync: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            segments_created: Arc::new(AtomicU64::new(0)),
            panic_at_segment: Arc::new(AtomicU64::new(0)),
            segment_syncs: Arc::new(AtomicU64::new(0)),
            fail_segment_sync: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Runs a counted operation and records it (serialised, so numbers match `SimFs`'s).
    fn op<R>(&self, kind: &'static str, path: &Path, len: usize, f: impl FnOnce() -> R) -> R {
        let mut log = self.log.lock().unwrap();
        let r = f();
        log.push(OpRec {
            n: self.sim.ops(),
            kind,
            path: path.file_name().unwrap().to_string_lossy().into_owned(),
            len,
        });
        r
    }

    fn trace(&self) -> Vec<OpRec> {
        self.log.lock().unwrap().clone()
    }
}

struct TracedFile {
    fs: Traced,
    path: std::path::PathBuf,
    inner: Box<dyn WriteFile>,
}

impl WriteFile for TracedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (fs, path, inner) = (&self.fs, &self.path, &mut self.inner);
        fs.op("write", path, buf.len(), || inner.write_all(buf))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let (fs, path, inner) = (&self.fs, &self.path, &mut self.inner);
        if path.to_string_lossy().ends_with(".gseg.tmp")
            && fs.segment_syncs.fetch_add(1, Ordering::SeqCst) + 1
                == fs.fail_segment_sync.load(Ordering::SeqCst)
        {
            return Err(io::Error::other("injected: segment sync fails"));
        }
        fs.op("sync", path, 0, || inner.sync_data())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let (fs, path, inner) = (&self.fs, &self.path, &mut self.inner);
        fs.op("set_len", path, len as usize, || inner.set_len(len))
    }
}

impl FileSystem for Traced {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.sim.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.sim.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        if path.to_string_lossy().ends_with(".gseg.tmp")
            && self.segments_created.fetch_add(1, Ordering::SeqCst) + 1
                == self.panic_at_segment.load(Ordering::SeqCst)
        {
            panic!("injected: a bug while creating {}", path.display());
        }
        let inner = self.op("create", path, 0, || self.sim.create(path))?;
        Ok(Box::new(TracedFile { fs: self.clone(), path: path.to_path_buf(), inner }))
    }
    fn reopen(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let inner = self.op("reopen", path, 0, || self.sim.reopen(path))?;
        Ok(Box::new(TracedFile { fs: self.clone(), path: path.to_path_buf(), inner }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.sim.read(path)
    }
    fn map(&self, path: &Path) -> io::Result<Bytes> {
        self.sim.map(path)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.sim.file_len(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.op("truncate", path, len as usize, || self.sim.truncate(path, len))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op("rename", from, 0, || self.sim.rename(from, to))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.op("remove", path, 0, || self.sim.remove(path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let after_manifest_rename =
            self.log.lock().unwrap().last().is_some_and(|o| o.kind == "rename" && o.path == "MANIFEST.tmp");
        if after_manifest_rename && self.fail_manifest_dir_sync.swap(false, Ordering::SeqCst) {
            return self.op("sync_dir", dir, 0, || Err(io::Error::other("injected: directory sync failed")));
        }
        self.op("sync_dir", dir, 0, || self.sim.sync_dir(dir))
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        self.sim.lock(path)
    }
}

/// Whether a failure of operation `i` of `trace` must poison the database: a log sync after
/// records were written (not the header sync of a new log file), the roll-back of a failed
/// log write, or the publication of a manifest (its rename, and the directory sync after it).
fn must_poison(trace: &[OpRec], i: usize) -> bool {
    let op = &trace[i];
    let is_log = op.path.starts_with("wal-");
    match op.kind {
        "sync" if is_log => {
            // A new log file's header: create (or reopen of the renamed spare), write(32),
            // sync of the same file. Only that file's own operations count: the flush
            // thread's segment writes may come in between.
            let mine: Vec<&OpRec> = trace[..i].iter().filter(|o| o.path == op.path).collect();
            let header = match mine[..] {
                [.., opened, write] => {
                    matches!(opened.kind, "create" | "reopen") && write.kind == "write" && write.len == 32
                }
                _ => false,
            };
            !header
        }
        "set_len" => true,
        "rename" => op.path == "MANIFEST.tmp",
        "sync_dir" => i >= 1 && trace[i - 1].kind == "rename" && trace[i - 1].path == "MANIFEST.tmp",
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The error sweep.

const SPEC: Spec = Spec::new(4, 4, 4);

fn sweep_opts(fs: &Traced) -> Options {
    Options {
        sync: SyncPolicy::Always,
        memtable_bytes_max: 12 * 1024,
        wal_file_bytes_max: 4096,
        partition_width: 8 * common::STRIDE,
        block_rows: 8,
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Write(u64),
    /// Writes the victim batch: rows on machine `victim` only.
    WriteVictim,
    /// `delete_machine("victim")`.
    DeleteVictim,
    Flush,
    Compact,
    Sync,
}

const VICTIM: &str = "victim";

fn victim_batch() -> WriteBatch {
    let mut b = WriteBatch::new();
    for ts in 1..=4 {
        b.row(VICTIM, ts, [("f", Value::F64(ts as f64 * 0.5))]).unwrap();
    }
    b
}

#[derive(Debug, Clone)]
enum Res {
    Ok,
    Poisoned,
    Io { disk_full: bool, msg: String },
    Other(String),
}

fn classify(r: gemba::Result<()>) -> Res {
    match r {
        Ok(()) => Res::Ok,
        Err(e @ Error::Poisoned { .. }) => {
            let _ = e;
            Res::Poisoned
        }
        Err(e @ Error::Io { .. }) => Res::Io { disk_full: e.is_disk_full(), msg: e.to_string() },
        Err(e) => Res::Other(e.to_string()),
    }
}

/// The workload: writes with automatic flushes, a batch of its own machine (the victim), an
/// explicit flush, a delete of the victim machine, more writes, a compaction (which applies the
/// delete), a flush with nothing new, more writes, a sync. It goes on after errors.
fn script() -> Vec<Call> {
    let mut v: Vec<Call> = (0..16).map(Call::Write).collect();
    v.push(Call::WriteVictim);
    v.push(Call::Flush);
    v.push(Call::DeleteVictim);
    v.extend((16..26).map(Call::Write));
    v.push(Call::Compact);
    v.push(Call::Flush);
    v.extend((26..29).map(Call::Write));
    v.push(Call::Sync);
    v
}

struct SweepRun {
    /// Each call, the operation count when it started, and its result.
    results: Vec<(Call, u64, Res)>,
    open: Result<(), String>,
}

fn run_sweep_workload(fs: &Traced, fault: Option<Fault>) -> SweepRun {
    fs.sim.set_fault(fault);
    let db = match Db::open(DIR, sweep_opts(fs)) {
        Ok(db) => db,
        Err(e) => {
            return SweepRun { results: Vec::new(), open: Err(e.to_string()) };
        }
    };
    let fired = {
        let sim = fs.sim.clone();
        move || fault.is_some_and(|f| f.sticky && sim.ops() >= f.at)
    };
    let mut waiter = IdleWait::new(&sweep_opts(fs), Duration::from_secs(5), Duration::from_millis(25));
    let mut idle = |db: &Db| {
        let r = waiter.wait(db, &fs.sim, Path::new(DIR), &fired);
        assert_ne!(r, IdleEnd::Timeout, "{fault:?}: the background thread never went idle");
    };
    idle(&db);
    let mut results = Vec::new();
    for call in script() {
        let at = fs.sim.ops();
        let r = match call {
            Call::Write(n) => db.write(&SPEC.batch(n)),
            Call::WriteVictim => db.write(&victim_batch()),
            Call::DeleteVictim => db.delete_machine(VICTIM),
            Call::Flush => db.flush(),
            Call::Compact => db.compact(),
            Call::Sync => db.sync(),
        };
        results.push((call, at, classify(r)));
        idle(&db);
    }
    drop(db);
    SweepRun { results, open: Ok(()) }
}

/// Opens what survives a crash of `fs` and checks it; then writes and flushes once more.
fn check_after(
    fs: &SimFs,
    mode: CrashMode,
    acked: &BTreeSet<u64>,
    maybe: &BTreeSet<u64>,
    victim: Option<bool>,
) -> Result<(), String> {
    let after = fs.crash(mode);
    let opts = Options { fs: Arc::new(after.clone()), ..sweep_opts(&Traced::new(after.clone())) };
    let db = Db::open(DIR, opts.clone()).map_err(|e| format!("reopen: {e}"))?;
    let mut got = try_dump(&db)?;
    db.verify().map_err(|e| format!("verify: {e}"))?;
    let victim_rows: Vec<_> = got.keys().filter(|(m, _)| m == VICTIM).cloned().collect();
    let mut victim_got = Model::new();
    for k in victim_rows {
        let v = got.remove(&k).unwrap();
        victim_got.insert(k, v);
    }
    let mut victim_want = Model::new();
    for ts in 1..=4 {
        victim_want.insert((VICTIM.to_string(), ts), [("f".to_string(), Value::F64(ts as f64 * 0.5))].into());
    }
    let victim_ok = match victim {
        Some(true) => common::diff_models(&victim_got, &victim_want).is_ok(),
        Some(false) => victim_got.is_empty(),
        None => victim_got.is_empty() || common::diff_models(&victim_got, &victim_want).is_ok(),
    };
    if !victim_ok {
        return Err(format!("victim machine: expected {victim:?} (present?), found {victim_got:?}"));
    }
    let present = SPEC.present(&got, 100)?;
    check_present(&present, acked, maybe)?;
    // The reopened database works: a new batch, a flush, a clean close.
    db.write(&SPEC.batch(100)).map_err(|e| format!("write after reopen: {e}"))?;
    db.flush().map_err(|e| format!("flush after reopen: {e}"))?;
    db.close().map_err(|e| format!("close after reopen: {e}"))?;
    let db = Db::open(DIR, opts).map_err(|e| format!("second reopen: {e}"))?;
    let mut got2 = try_dump(&db)?;
    got2.retain(|(m, _), _| m != VICTIM);
    let mut want = got.clone();
    SPEC.expected(100, &mut want);
    common::diff_models(&got2, &want)?;
    db.close().map_err(|e| format!("close: {e}"))?;
    let left = leftovers(&after, Path::new(DIR))?;
    if !left.is_empty() {
        return Err(format!("leftover files after reopen and close: {left:?}"));
    }
    Ok(())
}

/// Checks one faulted run against the rules; returns a description of each violation.
fn judge(fault: Fault, trace: &[OpRec], run: &SweepRun, fs: &SimFs, open_ops: u64) -> Vec<String> {
    let mut bad = Vec::new();
    let ctx = |what: String| {
        let op = trace
            .iter()
            .position(|o| o.n == fault.at)
            .map(|i| format!("{} {}", trace[i].kind, trace[i].path))
            .unwrap_or_else(|| "-".into());
        format!(
            "fault {:?}{} at op {} ({op}): {what}",
            fault.kind,
            if fault.sticky { " sticky" } else { "" },
            fault.at
        )
    };
    let idx = trace.iter().position(|o| o.n == fault.at);
    let poison_expected = idx.is_some_and(|i| must_poison(trace, i));
    let first_poison = run.results.iter().position(|(_, _, r)| matches!(r, Res::Poisoned));
    if let Err(e) = &run.open {
        // Only the open's own operations can make it fail.
        if fault.at > open_ops {
            bad.push(ctx(format!("open failed after its operations: {e}")));
        }
    }
    let later_call = run.results.iter().any(|(_, at, _)| *at >= fault.at);
    if poison_expected && run.open.is_ok() && later_call && first_poison.is_none() {
        bad.push(ctx("a failed sync did not poison the database".into()));
    }
    if let Some(p) = first_poison {
        if !fault.sticky && !poison_expected {
            bad.push(ctx(format!(
                "poisoned by a failure that leaves nothing unknown ({:?})",
                run.results[p].0
            )));
        }
        for (call, _, r) in &run.results[p..] {
            if !matches!(r, Res::Poisoned) {
                bad.push(ctx(format!("{call:?} returned {r:?} after the database was poisoned")));
            }
        }
    }
    for (call, _, r) in &run.results {
        if let Res::Other(m) = r {
            bad.push(ctx(format!("{call:?}: unexpected error kind: {m}")));
        }
        if let Res::Io { disk_full, msg } = r
            && *disk_full != (fault.kind == FaultKind::NoSpace)
        {
            bad.push(ctx(format!("{call:?}: is_disk_full() is {disk_full} for {msg}")));
        }
    }
    if !fault.sticky && first_poison.is_none() && run.open.is_ok() {
        // A single failure that poisons nothing: the database works afterwards (the flush
        // thread retried; the workload waited for it): every later call succeeds.
        for (call, at, r) in &run.results {
            if *at >= fault.at && !matches!(r, Res::Ok) {
                bad.push(ctx(format!("{call:?} failed after a one-off fault: {r:?}")));
            }
        }
    }
    let acked: BTreeSet<u64> = run
        .results
        .iter()
        .filter_map(|(c, _, r)| match (c, r) {
            (Call::Write(n), Res::Ok) => Some(*n),
            _ => None,
        })
        .collect();
    // A write that failed with anything but `Poisoned` had no effect.
    let maybe: BTreeSet<u64> = run
        .results
        .iter()
        .filter_map(|(c, _, r)| match (c, r) {
            (Call::Write(n), Res::Poisoned) => Some(*n),
            _ => None,
        })
        .collect();
    // The victim: present when written and not deleted; a call that failed with anything but
    // `Poisoned` had no effect; after `Poisoned` either is possible.
    let res_of =
        |c: fn(&Call) -> bool| run.results.iter().find(|(call, _, _)| c(call)).map(|(_, _, r)| r.clone());
    let written = res_of(|c| matches!(c, Call::WriteVictim));
    let deleted = res_of(|c| matches!(c, Call::DeleteVictim));
    let victim = match (written, deleted) {
        (None | Some(Res::Io { .. } | Res::Other(_)), _) => Some(false),
        (Some(Res::Poisoned), _) => None,
        (Some(Res::Ok), Some(Res::Ok)) => Some(false),
        (Some(Res::Ok), Some(Res::Poisoned)) => None,
        (Some(Res::Ok), _) => Some(true),
    };
    for mode in [CrashMode::DropUnsynced, CrashMode::KeepAll] {
        if let Err(e) = check_after(fs, mode, &acked, &maybe, victim) {
            bad.push(ctx(format!("after a crash ({mode:?}): {e}")));
        }
    }
    bad
}

/// Aborts the process when nothing progresses for 60 s (a hang in a faulted call).
fn watchdog(progress: Arc<AtomicU64>, what: &'static str) {
    std::thread::spawn(move || {
        let mut last = (progress.load(Ordering::SeqCst), Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let p = progress.load(Ordering::SeqCst);
            if p == u64::MAX {
                return;
            }
            if p != last.0 {
                last = (p, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(60) {
                eprintln!("{what}: no progress for 60 s at step {p}: a call hangs");
                std::process::abort();
            }
        }
    });
}

#[test]
fn error_sweep_every_operation_fails() {
    count_panics();
    let started = Instant::now();
    let full_fs = Traced::new(SimFs::new(9));
    let full = run_sweep_workload(&full_fs, None);
    full.open.as_ref().unwrap();
    assert!(
        full.results.iter().all(|(_, _, r)| matches!(r, Res::Ok)),
        "errors without faults: {:?}",
        full.results
    );
    let trace = full_fs.trace();
    if std::env::var("GEMBA_FAULT_TRACE").is_ok() {
        for o in &trace {
            println!("{:4} {:8} {:28} {}", o.n, o.kind, o.path, o.len);
        }
    }
    let n = full_fs.sim.ops();
    let open_ops = full.results[0].1;
    let progress = Arc::new(AtomicU64::new(0));
    watchdog(progress.clone(), "error sweep");
    let mut failures = Vec::new();
    let mut runs = 0;
    let mut poisoned_runs = 0;
    let only: Option<u64> = std::env::var("GEMBA_FAULT_AT").ok().map(|v| v.parse().unwrap());
    for k in 1..=n {
        if only.is_some_and(|o| o != k) {
            continue;
        }
        let kind_at = trace.iter().find(|o| o.n == k).map_or("?", |o| o.kind);
        let mut faults = vec![(FaultKind::Io, false), (FaultKind::Io, true), (FaultKind::NoSpace, false)];
        if kind_at == "write" {
            faults.push((FaultKind::ShortWrite, false));
            faults.push((FaultKind::NoSpace, true));
        }
        for (kind, sticky) in faults {
            let fault = Fault { at: k, kind, sticky };
            let fs = Traced::new(SimFs::new(9));
            let before = panics();
            let run = run_sweep_workload(&fs, Some(fault));
            fs.sim.set_fault(None);
            let t = fs.trace();
            if run.results.iter().any(|(_, _, r)| matches!(r, Res::Poisoned)) {
                poisoned_runs += 1;
            }
            failures.extend(judge(fault, &t, &run, &fs.sim, open_ops));
            if panics() != before {
                failures.push(format!("{fault:?}: a gemba background thread panicked"));
            }
            runs += 1;
            progress.fetch_add(1, Ordering::SeqCst);
        }
    }
    progress.store(u64::MAX, Ordering::SeqCst);
    println!(
        "error sweep: N = {n} operations, {runs} faulted runs ({poisoned_runs} poisoned), {} failures, {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    let mut kinds: Vec<&str> = trace.iter().map(|o| o.kind).collect();
    kinds.sort();
    kinds.dedup();
    println!("operation kinds covered: {kinds:?}");
    for f in failures.iter().take(40) {
        println!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{} failures; first: {}", failures.len(), failures[0]);
}

// ---------------------------------------------------------------------------------------------
// Disk full.

fn full_opts(fs: &SimFs) -> Options {
    Options {
        sync: SyncPolicy::Always,
        memtable_bytes_max: 16 * 1024,
        wal_file_bytes_max: 8192,
        partition_width: 4 * common::STRIDE,
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

/// Fills the disk at `capacity` bytes; returns a description of each violation.
fn disk_full_case(capacity: u64) -> Result<String, String> {
    let fs = SimFs::new(5);
    fs.set_capacity(Some(capacity));
    let db = match Db::open(DIR, full_opts(&fs)) {
        Ok(db) => db,
        Err(e) if e.is_disk_full() => return Ok("open: disk full".into()),
        Err(e) => return Err(format!("open failed with {e}, not a disk-full error")),
    };
    let mut acked = BTreeSet::new();
    let mut want = Model::new();
    let mut n = 0;
    let mut full_errors = 0;
    let mut before_full = 0;
    // Write until the disk is full (and a little beyond: several rejected writes).
    while full_errors < 3 {
        if n > 2000 {
            return Err("the disk never filled up".into());
        }
        match db.write(&SPEC.batch(n)) {
            Ok(()) => {
                acked.insert(n);
                SPEC.expected(n, &mut want);
                before_full += 1;
            }
            Err(e) if e.is_disk_full() => full_errors += 1,
            Err(e) => return Err(format!("write {n}: {e} is not a disk-full error")),
        }
        n += 1;
    }
    if fs.used_bytes() > capacity {
        return Err(format!("{} bytes used beyond the capacity", fs.used_bytes()));
    }
    // While full: everything acknowledged reads back.
    let got = try_dump(&db)?;
    common::diff_models(&got, &want).map_err(|e| format!("while full: {e}"))?;
    // An explicit flush fails (or succeeds) without hanging and without poisoning.
    let flush_while_full = db.flush();
    if let Err(e) = &flush_while_full
        && !e.is_disk_full()
    {
        return Err(format!("flush while full: {e}"));
    }
    // Space returns: the same Db writes again. The flush thread retries every 200 ms, and
    // until it has caught up a write that must wait for it (backpressure) is refused with the
    // flush's last error (disk full): retry such writes for up to a second each.
    fs.set_capacity(None);
    let mut refused_after = 0;
    for m in n..n + 20 {
        let t = Instant::now();
        loop {
            match db.write(&SPEC.batch(m)) {
                Ok(()) => break,
                Err(e) if e.is_disk_full() && t.elapsed() < Duration::from_secs(1) => {
                    refused_after += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("write {m} after space returned: {e}")),
            }
        }
        acked.insert(m);
        SPEC.expected(m, &mut want);
    }
    n += 20;
    db.flush().map_err(|e| format!("flush after space returned: {e}"))?;
    // Once a flush has succeeded, writes are never refused.
    for m in n..n + 10 {
        db.write(&SPEC.batch(m)).map_err(|e| format!("write {m} after the flush: {e}"))?;
        acked.insert(m);
        SPEC.expected(m, &mut want);
    }
    let got = try_dump(&db)?;
    common::diff_models(&got, &want).map_err(|e| format!("after space returned: {e}"))?;
    db.close().map_err(|e| format!("close: {e}"))?;
    // Everything acknowledged is durable.
    let after = fs.crash(CrashMode::DropUnsynced);
    let db = Db::open(DIR, full_opts(&after)).map_err(|e| format!("reopen: {e}"))?;
    let got = try_dump(&db)?;
    common::diff_models(&got, &want).map_err(|e| format!("after reopen: {e}"))?;
    db.verify().map_err(|e| format!("verify: {e}"))?;
    Ok(format!(
        "{before_full} batches acknowledged before the disk was full, {} in all, flush while full: {}, writes refused after space returned: {refused_after}",
        acked.len(),
        if flush_while_full.is_ok() { "ok" } else { "disk full" }
    ))
}

#[test]
fn disk_full_rejects_writes_keeps_data_and_recovers() {
    count_panics();
    let started = Instant::now();
    let before = panics();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut refused_total = 0;
    // From "not even the first log file fits" to "several flushes fit".
    let caps: Vec<u64> =
        (0..20u64).map(|i| 16 + i * i * 131).chain((0..16).map(|i| 12_000 + i * 5_273)).collect();
    for cap in caps {
        cases += 1;
        match disk_full_case(cap) {
            Ok(s) => {
                if s.contains("refused after space returned: ") && !s.ends_with(": 0") {
                    refused_total += 1;
                }
                if cap % 7 == 0 {
                    println!("capacity {cap}: {s}");
                }
            }
            Err(e) => failures.push(format!("capacity {cap}: {e}")),
        }
    }
    println!(
        "disk full: {cases} capacities, {refused_total} with writes refused briefly after space returned, {} failures, {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert_eq!(panics(), before, "a gemba background thread panicked");
    assert!(failures.is_empty(), "{}", failures[0]);
}

/// Several writers fill the disk together (with flushes, log rotation and compaction in the
/// background): each writer is told the truth about each of its own batches. Returns a
/// description of the case or of the first violation.
fn concurrent_disk_full_case(capacity: u64, writers: u64) -> Result<String, String> {
    let fs = SimFs::new(capacity);
    fs.set_capacity(Some(capacity));
    let db = match Db::open(DIR, full_opts(&fs)) {
        Ok(db) => Arc::new(db),
        Err(e) if e.is_disk_full() => return Ok("open: disk full".into()),
        Err(e) => return Err(format!("open failed with {e}, not a disk-full error")),
    };
    // Writer t writes batches t, t + writers, t + 2 * writers, ... until the disk has refused
    // three of them; batches of different writers share machines.
    let outcomes: Vec<Result<(Vec<u64>, u64), String>> = (0..writers)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let (mut acked, mut refused) = (Vec::new(), 0);
                for k in 0..1000 {
                    let n = k * writers + t;
                    match db.write(&SPEC.batch(n)) {
                        Ok(()) => acked.push(n),
                        Err(e) if e.is_disk_full() => refused += 1,
                        Err(e) => return Err(format!("write {n}: {e} is not a disk-full error")),
                    }
                    if refused == 3 {
                        return Ok((acked, k + 1));
                    }
                }
                Err("the disk never filled up".to_string())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into())))
        .collect();
    let mut acked = BTreeSet::new();
    let mut next = 0;
    for o in outcomes {
        let (a, issued) = o?;
        acked.extend(a);
        next = next.max(issued * writers);
    }
    let none = BTreeSet::new();
    let check = |db: &Db, acked: &BTreeSet<u64>, issued: u64, when: &str| -> Result<(), String> {
        let got = try_dump(db).map_err(|e| format!("{when}: {e}"))?;
        let present = SPEC.present(&got, issued).map_err(|e| format!("{when}: {e}"))?;
        // A refused batch left no trace: present is exactly what was acknowledged.
        check_present(&present, acked, &none).map_err(|e| format!("{when}: {e}"))
    };
    check(&db, &acked, next, "while full")?;
    let before_full = acked.len();
    // Space returns: every writer goes on (a write that must wait for the flush thread's
    // retry is refused with its last error for a moment: retried for up to a second).
    fs.set_capacity(None);
    let outcomes: Vec<Result<Vec<u64>, String>> = (0..writers)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for k in 0..10 {
                    let n = next + k * writers + t;
                    let start = Instant::now();
                    loop {
                        match db.write(&SPEC.batch(n)) {
                            Ok(()) => break,
                            Err(e) if e.is_disk_full() && start.elapsed() < Duration::from_secs(1) => {
                                std::thread::sleep(Duration::from_millis(5))
                            }
                            Err(e) => return Err(format!("write {n} after space returned: {e}")),
                        }
                    }
                    acked.push(n);
                }
                Ok(acked)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into())))
        .collect();
    for o in outcomes {
        acked.extend(o?);
    }
    next += 10 * writers;
    db.flush().map_err(|e| format!("flush after space returned: {e}"))?;
    check(&db, &acked, next, "after space returned")?;
    Arc::into_inner(db).expect("writers are done").close().map_err(|e| format!("close: {e}"))?;
    // Everything acknowledged is durable, nothing refused came back.
    let after = fs.crash(CrashMode::DropUnsynced);
    let db = Db::open(DIR, full_opts(&after)).map_err(|e| format!("reopen: {e}"))?;
    check(&db, &acked, next, "after reopen")?;
    db.verify().map_err(|e| format!("verify: {e}"))?;
    Ok(format!("{before_full} batches acknowledged before the disk was full, {} in all", acked.len()))
}

#[test]
fn concurrent_writers_fill_the_disk_and_each_is_told_the_truth() {
    count_panics();
    let before = panics();
    let mut failures = Vec::new();
    for (i, cap) in (0..12u64).map(|i| 9_000 + i * 6_131).enumerate() {
        match concurrent_disk_full_case(cap, 4) {
            Ok(s) if i % 4 == 0 => println!("capacity {cap}: {s}"),
            Ok(_) => {}
            Err(e) => failures.push(format!("capacity {cap}: {e}")),
        }
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    assert_eq!(panics(), before, "a gemba background thread panicked");
    assert!(failures.is_empty(), "{}", failures[0]);
}

/// [`sweep_opts`] with partitions `partition_width` wide and no flush or compaction unless
/// asked for (a memtable budget the tests never fill, no compaction trigger).
fn quiet_opts(fs: &Traced, partition_width: i64) -> Options {
    Options {
        memtable_bytes_max: 64 << 20,
        compaction_trigger: usize::MAX,
        partition_width,
        ..sweep_opts(fs)
    }
}

/// A failed directory sync after the manifest's rename poisons the database, and reopening is
/// the documented way out: the reopened database must hold everything acknowledged, whether
/// the new manifest survived (no crash: the process just reopens) or not (power loss).
#[test]
fn reopen_after_a_failed_manifest_sync_recovers() {
    for compact in [false, true] {
        let fs = Traced::new(SimFs::new(4));
        // No background flush or compaction (one partition, so none is ever "cold"): the
        // explicit call below must be the one that publishes a manifest and meets the fault.
        let quiet = |fs: &Traced| quiet_opts(fs, 1 << 40);
        let db = Db::open(DIR, quiet(&fs)).unwrap();
        let mut want = Model::new();
        for n in 0..12 {
            db.write(&SPEC.batch(n)).unwrap();
            SPEC.expected(n, &mut want);
        }
        if compact {
            db.flush().unwrap();
            for n in 12..20 {
                db.write(&SPEC.batch(n)).unwrap();
                SPEC.expected(n, &mut want);
            }
            db.flush().unwrap();
        }
        fs.fail_manifest_dir_sync.store(true, Ordering::SeqCst);
        let e = match if compact { db.compact() } else { db.flush() } {
            Err(e) => e,
            Ok(()) => panic!(
                "compact={compact}: no error; fault pending: {}",
                fs.fail_manifest_dir_sync.load(Ordering::SeqCst)
            ),
        };
        assert!(!fs.fail_manifest_dir_sync.load(Ordering::SeqCst), "the fault did not fire");
        assert!(matches!(db.write(&SPEC.batch(99)), Err(Error::Poisoned { .. })), "not poisoned after {e}");
        drop(db);
        for mode in [None, Some(CrashMode::DropUnsynced), Some(CrashMode::KeepPrefix)] {
            let sim = match mode {
                None => fs.sim.clone(),
                Some(m) => fs.sim.crash(m),
            };
            let what = format!(
                "{} failed ({e}); reopened after {mode:?}",
                if compact { "compact" } else { "flush" }
            );
            let db = Db::open(DIR, Options { fs: Arc::new(sim.crash(CrashMode::KeepAll)), ..quiet(&fs) })
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            let got = try_dump(&db).unwrap();
            common::diff_models(&got, &want).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

/// A flush of many partitions syncs each file as soon as it is built, on syncing threads,
/// while the later partitions encode. One of those syncs failing fails the flush (without
/// poisoning: nothing acknowledged depended on it) and leaves no segment file behind;
/// everything acknowledged stays readable, the next flush writes it, and a reopen after a
/// power loss finds it all.
#[test]
fn a_failed_segment_sync_in_a_many_partition_flush_loses_nothing() {
    for nth in [1u64, 5, 11] {
        let fs = Traced::new(SimFs::new(20 + nth));
        // Twelve partitions of two batches each, nothing flushed or compacted until asked.
        let opts = |fs: &Traced| quiet_opts(fs, 2 * common::STRIDE);
        let db = Db::open(DIR, opts(&fs)).unwrap();
        let mut want = Model::new();
        for n in 0..24 {
            db.write(&SPEC.batch(n)).unwrap();
            SPEC.expected(n, &mut want);
        }
        fs.fail_segment_sync.store(nth, Ordering::SeqCst);
        let e = db.flush().expect_err("the flush met a failed segment sync");
        assert!(fs.segment_syncs.load(Ordering::SeqCst) >= nth, "sync {nth}: the fault did not fire");
        assert!(e.to_string().contains("injected"), "sync {nth}: unexpected error {e}");
        let left = leftovers(&fs.sim, Path::new(DIR)).unwrap();
        assert!(left.is_empty(), "sync {nth}: files left behind: {left:?}");
        common::diff_models(&try_dump(&db).unwrap(), &want).unwrap_or_else(|e| panic!("sync {nth}: {e}"));
        db.flush().unwrap_or_else(|e| panic!("sync {nth}: the next flush: {e}"));
        assert!(leftovers(&fs.sim, Path::new(DIR)).unwrap().is_empty());
        common::diff_models(&try_dump(&db).unwrap(), &want).unwrap_or_else(|e| panic!("sync {nth}: {e}"));
        drop(db);
        let sim = fs.sim.crash(CrashMode::DropUnsynced);
        let db = Db::open(DIR, Options { fs: Arc::new(sim), ..opts(&fs) }).unwrap();
        common::diff_models(&try_dump(&db).unwrap(), &want)
            .unwrap_or_else(|e| panic!("sync {nth}, reopened after a power loss: {e}"));
    }
}

/// A batch whose log write failed was never written: it must not fix the type of a field.
#[test]
fn a_failed_write_fixes_no_types() {
    let fs = SimFs::new(3);
    let db = Db::open(DIR, full_opts(&fs)).unwrap();
    db.write(&SPEC.batch(0)).unwrap();
    // The next operation (the log write of the next batch) fails with a full disk.
    fs.set_fault(Some(Fault { at: fs.ops() + 1, kind: FaultKind::NoSpace, sticky: false }));
    let mut b = WriteBatch::new();
    b.row("new-machine", 5, [("x", Value::F64(1.5))]).unwrap();
    let e = db.write(&b).unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    // Nothing of it exists ...
    assert!(try_dump(&db).unwrap().keys().all(|(m, _)| m != "new-machine"));
    // ... so `x` may be written as an integer, as it may after a reopen.
    let mut b = WriteBatch::new();
    b.row("new-machine", 6, [("x", Value::I64(2))]).unwrap();
    let same_db = db.write(&b).map_err(|e| e.to_string());
    db.close().unwrap();
    let db = Db::open(DIR, full_opts(&fs)).unwrap();
    let mut b = WriteBatch::new();
    b.row("new-machine", 7, [("x", Value::I64(3))]).unwrap();
    let reopened = db.write(&b).map_err(|e| e.to_string());
    assert_eq!(same_db, reopened, "the same write is refused before a reopen and accepted after it");
}

// ---------------------------------------------------------------------------------------------
// Real file system.

#[test]
fn rejected_batches_change_nothing_on_a_real_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default();
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let mut want = Model::new();
    for n in 0..5 {
        db.write(&SPEC.batch(n)).unwrap();
        SPEC.expected(n, &mut want);
    }
    // A batch with a valid group, a new machine, and a field of the wrong type (`f` holds
    // floats): rejected as a whole.
    let mut bad = WriteBatch::new();
    bad.row("m2", 999_000, [("f", Value::F64(1.0))]).unwrap();
    bad.row("fresh", 1, [("y", Value::Bool(true))]).unwrap();
    bad.row("m1", 999_001, [("f", Value::I64(7))]).unwrap();
    let e = db.write(&bad).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    // An empty machine id never makes it into a batch; a too-large batch is refused whole.
    assert!(WriteBatch::new().row("", 1, [("v", 1.0)]).is_err());
    for n in 6..12 {
        db.write(&SPEC.batch(n)).unwrap();
        SPEC.expected(n, &mut want);
    }
    common::diff_models(&try_dump(&db).unwrap(), &want).unwrap();
    db.flush().unwrap();
    for n in 12..15 {
        db.write(&SPEC.batch(n)).unwrap();
        SPEC.expected(n, &mut want);
    }
    assert!(db.machine("fresh").unwrap().is_none(), "a rejected batch registered a machine");
    db.close().unwrap();
    let db = Db::open(dir.path(), opts).unwrap();
    common::diff_models(&try_dump(&db).unwrap(), &want).unwrap();
    assert!(db.verify().unwrap() > 0);
    // The mismatching write is still refused after the reopen (types come from the data).
    let mut b = WriteBatch::new();
    b.row("m1", 999_001, [("f", Value::I64(7))]).unwrap();
    assert!(matches!(db.write(&b), Err(Error::TypeMismatch { .. })));
    db.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// A panic in background work (a bug) poisons the database instead of leaving callers waiting.

/// The flush thread panics during a flush: `flush()` and later writes fail with `Poisoned`
/// (before, `flush()` waited forever), and a reopen finds every acknowledged write.
#[test]
fn a_panicking_flush_poisons_the_database() {
    let sim = SimFs::new(21);
    let fs = Traced::new(sim.clone());
    let opts = Options { fs: Arc::new(fs.clone()), ..Options::default() };
    let db = Db::open(DIR, opts).unwrap();
    db.write(&SPEC.batch(0)).unwrap();
    db.flush().unwrap();
    db.write(&SPEC.batch(1)).unwrap();
    fs.panic_at_segment.store(fs.segments_created.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    match db.flush() {
        Err(Error::Poisoned { cause }) => assert!(cause.contains("flush thread panicked"), "{cause}"),
        other => panic!("flush after a panic in the flush thread: {other:?}"),
    }
    assert!(matches!(db.write(&SPEC.batch(2)), Err(Error::Poisoned { .. })));
    drop(db);
    let db = Db::open(DIR, Options { fs: Arc::new(sim), ..Options::default() }).unwrap();
    let mut want = Model::new();
    SPEC.expected(0, &mut want);
    SPEC.expected(1, &mut want);
    common::diff_models(&try_dump(&db).unwrap(), &want).unwrap();
}

/// A background compaction panics: the database is poisoned (writes fail with `Poisoned`
/// within the backpressure wait at most) and a reopen finds everything in the inputs.
#[test]
fn a_panicking_compaction_poisons_the_database() {
    let sim = SimFs::new(22);
    let fs = Traced::new(sim.clone());
    // The third flush's segment makes a run of three: the compaction of the partition
    // creates the fourth segment file, and panics.
    fs.panic_at_segment.store(4, Ordering::SeqCst);
    let opts = Options { fs: Arc::new(fs.clone()), compaction_trigger: 3, ..Options::default() };
    let db = Db::open(DIR, opts).unwrap();
    for n in 0..3 {
        db.write(&SPEC.batch(n)).unwrap();
        db.flush().unwrap();
        // one segment per flush (else the count above would not be the compaction's file);
        // after the third, the compaction may have created its file already
        if n < 2 {
            assert_eq!(fs.segments_created.load(Ordering::SeqCst), n + 1);
        }
    }
    let start = Instant::now();
    let poisoned = loop {
        match db.write(&WriteBatch::new()) {
            Err(Error::Poisoned { cause }) => break cause,
            r => assert!(r.is_ok(), "{r:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the compaction's panic did not poison the database"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(poisoned.contains("compaction thread panicked"), "{poisoned}");
    drop(db);
    let db = Db::open(DIR, Options { fs: Arc::new(sim), ..Options::default() }).unwrap();
    let mut want = Model::new();
    for n in 0..3 {
        SPEC.expected(n, &mut want);
    }
    common::diff_models(&try_dump(&db).unwrap(), &want).unwrap();
}
