//! Crash at every point of scripted workloads on the simulated file system.
//!
//! Each workload is first run to completion to learn how many mutating file operations it
//! does (N). Then, for every k in 1..=N, it runs again on a fresh `SimFs` that fails every
//! operation after the k-th (the process "dies" there), the `Db` is dropped, and the file
//! system is crashed under every `CrashMode` (the random ones twice). The survivor is opened
//! with a healthy file system and checked against a model:
//!
//! - the workloads are single-threaded, so what survives must be exactly the replay of a
//!   prefix of the data operations (writes and deletes) that holds every acknowledged one
//!   (under `SyncPolicy::Os` after a power loss: every one acknowledged before the last flush,
//!   sync or close) and at most the one operation whose call failed when the process died;
//!   this covers "every acknowledged batch exactly once with its values, bit for bit", "whole
//!   batches or nothing" and "nothing that was never written";
//! - open must succeed (synced bytes are never garbled, so there is no excuse for `Corrupt`),
//!   `Db::verify` must pass, `verify_dir` on the crash image must find no problem;
//! - the recovered database takes a new durable write, a second open sees the same data plus
//!   that write, and after each close the directory holds no temporary file and no segment
//!   file the manifest does not list.
//!
//! For some crash points the recovery itself is crashed at each of its operations, and the
//! result checked again (a crash during recovery).
//!
//! The background thread (flushes, compactions, log removal) makes operation order depend on
//! thread timing. The workloads wait until it is idle after each step (so automatic flushes
//! and compactions land at fixed points); an explicit `Db::flush` still races its log
//! rotation against the background flush, so N may vary by a few operations between runs: the
//! sweep covers the largest N seen and checks the invariants wherever the halt lands.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{IdleEnd, IdleWait, Model, Spec, count_panics, leftovers, panics, try_dump};
use gemba::io::{CrashMode, SimFs};
use gemba::{Db, Options, SyncPolicy, Value, WriteBatch};

const DIR: &str = "/db";
/// A batch written after recovery, to check that the recovered database takes writes.
const MARKER: &str = "zz-marker";

/// A scripted step.
#[derive(Debug, Clone, Copy)]
enum Step {
    Open,
    /// Writes batches `a..b`.
    Write(u64, u64),
    /// `delete_range(machine, start..end)`.
    DeleteRange(&'static str, i64, i64),
    /// `delete_fields(machine, fields, start..end)`.
    DeleteFields(&'static str, &'static [&'static str], i64, i64),
    DeleteMachine(&'static str),
    Flush,
    Compact,
    Sync,
    Close,
}

/// A data operation, as the model replays it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DataOp {
    Write(u64),
    DeleteRange(&'static str, i64, i64),
    DeleteFields(&'static str, &'static [&'static str], i64, i64),
    DeleteMachine(&'static str),
}

struct Workload {
    name: &'static str,
    spec: Spec,
    /// Batches also rewrite rows of earlier batches (see [`rows_of`]).
    overwrite: bool,
    opts: fn() -> Options,
    steps: &'static [Step],
    /// Crash points (every `nth`) whose recovery is crashed as well.
    recovery_crash_every: u64,
}

const S: i64 = common::STRIDE;

fn opts_a() -> Options {
    Options { sync: SyncPolicy::Always, ..Options::default() }
}

fn opts_small() -> Options {
    Options {
        sync: SyncPolicy::Always,
        memtable_bytes_max: 8192,
        wal_file_bytes_max: 4096,
        partition_width: 4 * S,
        block_rows: 4,
        compaction_block_rows: 16,
        ..Options::default()
    }
}

fn opts_os() -> Options {
    Options { sync: SyncPolicy::Os, ..opts_small() }
}

fn opts_deletes() -> Options {
    Options { compaction_trigger: 3, ..opts_small() }
}

fn opts_retention() -> Options {
    Options { retention: Some(10 * S), ..opts_small() }
}

const WORKLOADS: &[Workload] = &[
    // (a) durable writes of several batches across several machines.
    Workload {
        name: "a-durable-writes",
        spec: Spec::new(4, 3, 4),
        overwrite: false,
        opts: opts_a,
        steps: &[Step::Open, Step::Write(0, 24), Step::Sync, Step::Close],
        recovery_crash_every: 5,
    },
    // (b) a tiny memtable: automatic flushes, log rotation by size and after freezes, log
    // removal, several partitions per flush, compaction of cold partitions, explicit flushes.
    Workload {
        name: "b-flushes-rotation",
        spec: Spec::new(4, 4, 4),
        overwrite: false,
        opts: opts_small,
        steps: &[
            Step::Open,
            Step::Write(0, 18),
            Step::Flush,
            Step::Write(18, 34),
            Step::Flush,
            Step::Write(34, 44),
            Step::Close,
        ],
        recovery_crash_every: 13,
    },
    // (c) a reopen in the middle: recovery replays unflushed batches, later batches continue
    // the sequence, and flushed logs are removed after the reopen.
    Workload {
        name: "c-reopen",
        spec: Spec::new(3, 3, 3),
        overwrite: false,
        opts: opts_small,
        steps: &[
            Step::Open,
            Step::Write(0, 8),
            Step::Flush,
            Step::Write(8, 14),
            Step::Close,
            Step::Open,
            Step::Write(14, 22),
            Step::Flush,
            Step::Write(22, 26),
            Step::Close,
        ],
        recovery_crash_every: 5,
    },
    // (d) like (b) under `SyncPolicy::Os`: a process crash (KeepAll) keeps every acknowledged
    // batch; on power loss what was acknowledged before the last flush/sync/close survives and
    // what survives is a prefix of the writes.
    Workload {
        name: "d-os-policy",
        spec: Spec::new(4, 4, 4),
        overwrite: false,
        opts: opts_os,
        steps: &[
            Step::Open,
            Step::Write(0, 14),
            Step::Sync,
            Step::Write(14, 26),
            Step::Flush,
            Step::Write(26, 34),
            Step::Close,
        ],
        recovery_crash_every: 11,
    },
    // (e) batches overwrite rows of earlier batches (newest wins, field by field; a missing
    // value keeps the older one) across flushes, compactions and a reopen, and repeat a
    // timestamp within a batch.
    Workload {
        name: "e-overwrites",
        spec: Spec::new(3, 3, 3),
        overwrite: true,
        opts: opts_small,
        steps: &[
            Step::Open,
            Step::Write(0, 12),
            Step::Flush,
            Step::Write(12, 22),
            Step::Close,
            Step::Open,
            Step::Write(22, 28),
            Step::Flush,
            Step::Write(28, 30),
            Step::Close,
        ],
        recovery_crash_every: 9,
    },
    // (f) deletes (ranges, fields, a whole machine) in the log, in flushed segments and in the
    // manifest's tombstones; explicit and automatic compactions that apply them; a reopen.
    Workload {
        name: "f-deletes-compaction",
        spec: Spec::new(3, 3, 3),
        overwrite: true,
        opts: opts_deletes,
        steps: &[
            Step::Open,
            Step::Write(0, 10),
            Step::DeleteRange("m0", 2 * S, 6 * S),
            Step::Write(10, 13),
            Step::DeleteFields("m1", &["f", "g"], 0, 11 * S),
            Step::Flush,
            Step::Write(13, 18),
            Step::DeleteMachine("m2"),
            Step::Compact,
            Step::Write(18, 22),
            Step::Close,
            Step::Open,
            Step::DeleteRange("m1", 9 * S, 19 * S),
            Step::Write(22, 25),
            Step::Compact,
            Step::Close,
        ],
        recovery_crash_every: 13,
    },
    // (g) retention: queries hide what is older than the newest timestamp minus the retention
    // at once, whole partitions past it are dropped in the background; flushes and a reopen.
    Workload {
        name: "g-retention",
        spec: Spec::new(3, 3, 3),
        overwrite: false,
        opts: opts_retention,
        steps: &[
            Step::Open,
            Step::Write(0, 14),
            Step::Flush,
            Step::Write(14, 24),
            Step::Close,
            Step::Open,
            Step::Write(24, 30),
            Step::Flush,
            Step::Close,
        ],
        recovery_crash_every: 17,
    },
];

type Row = (String, i64, Vec<(String, Value)>);

/// The rows of batch `n`, in the order they are added (row `j` descending, so the memtable
/// must sort). With `overwrite`, batch `n` also gives row 0 of batch `n - 2` new `i` and `b`
/// values, and repeats its own row 1 with a new `f` (the later row wins, field by field).
fn rows_of(w: &Workload, n: u64) -> Vec<Row> {
    let sp = &w.spec;
    let mut v: Vec<Row> = (0..sp.rows(n))
        .rev()
        .map(|j| (sp.machine(n, j), sp.ts(n, j), sp.values(n, j).into_iter().collect()))
        .collect();
    if w.overwrite {
        if n >= 2 {
            let m = n - 2;
            v.push((
                sp.machine(m, 0),
                sp.ts(m, 0),
                vec![
                    ("i".into(), Value::I64(-(n as i64) - 1)),
                    ("b".into(), Value::Bool(n.is_multiple_of(2))),
                ],
            ));
        }
        v.push((sp.machine(n, 1), sp.ts(n, 1), vec![("f".into(), Value::F64(n as f64 + 0.5))]));
    }
    v
}

fn batch_of(w: &Workload, n: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (m, ts, fields) in rows_of(w, n) {
        b.row(&m, ts, fields).unwrap();
    }
    b
}

/// Replays data operations one by one into a model; `model()` applies the retention.
struct Replay<'a> {
    w: &'a Workload,
    rows: Model,
    max_ts: Option<i64>,
    retention: Option<i64>,
}

impl<'a> Replay<'a> {
    fn new(w: &'a Workload) -> Replay<'a> {
        Replay { w, rows: Model::new(), max_ts: None, retention: (w.opts)().retention }
    }

    fn apply(&mut self, op: DataOp) {
        let in_range = |ts: i64, a: i64, b: i64| a <= ts && ts < b;
        match op {
            DataOp::Write(n) => {
                for (m, ts, fields) in rows_of(self.w, n) {
                    self.max_ts = Some(self.max_ts.map_or(ts, |x| x.max(ts)));
                    let row = self.rows.entry((m, ts)).or_default();
                    for (f, v) in fields {
                        row.insert(f, v);
                    }
                }
            }
            DataOp::DeleteRange(m, a, b) => self.rows.retain(|(rm, ts), _| !(rm == m && in_range(*ts, a, b))),
            DataOp::DeleteMachine(m) => self.rows.retain(|(rm, _), _| rm != m),
            DataOp::DeleteFields(m, fs, a, b) => {
                for ((rm, ts), row) in self.rows.iter_mut() {
                    if rm == m && in_range(*ts, a, b) {
                        row.retain(|f, _| !fs.contains(&f.as_str()));
                    }
                }
                self.rows.retain(|_, row| !row.is_empty());
            }
        }
    }

    fn model(&self) -> Model {
        match (self.retention, self.max_ts) {
            (Some(r), Some(max)) => {
                let floor = max.saturating_sub(r);
                self.rows
                    .iter()
                    .filter(|((_, ts), _)| *ts >= floor)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
            _ => self.rows.clone(),
        }
    }
}

fn with_fs(opts: Options, fs: &SimFs) -> Options {
    Options { fs: Arc::new(fs.clone()), ..opts }
}

/// What a (possibly halted) run of a workload did.
#[derive(Default, Debug)]
struct Outcome {
    /// Data operations whose call returned `Ok`, in order.
    acked: Vec<DataOp>,
    /// How many of `acked` were acknowledged before the last successful flush, compaction,
    /// sync or close (durable under every policy).
    durable: usize,
    /// The first data operation whose call failed (it may or may not have reached the disk).
    failed: Option<DataOp>,
    /// Unexpected errors: an error while no operation had failed yet.
    unexpected: Vec<String>,
    /// Times the idle wait gave up waiting for a fully flushed log file's removal.
    idle_fallbacks: u64,
}

struct Ctx<'a> {
    w: &'a Workload,
    fs: SimFs,
    halt: Option<u64>,
    db: Option<Db>,
    out: Outcome,
    idle: IdleWait,
}

impl Ctx<'_> {
    fn halted(&self) -> bool {
        self.halt.is_some_and(|h| self.fs.ops() > h)
    }

    fn err(&mut self, what: String) {
        if !self.halted() {
            self.out.unexpected.push(what);
        }
    }

    fn data(&mut self, op: DataOp, r: gemba::Result<()>) {
        match r {
            Ok(()) => self.out.acked.push(op),
            Err(e) => {
                if self.out.failed.is_none() {
                    self.out.failed = Some(op);
                }
                self.err(format!("{op:?}: {e}"));
            }
        }
    }

    fn durable_point(&mut self, what: &str, r: gemba::Result<()>) {
        match r {
            Ok(()) => self.out.durable = self.out.acked.len(),
            Err(e) => self.err(format!("{what}: {e}")),
        }
    }

    /// Runs the script; stops at the first step after the "process" has died.
    fn run(&mut self) {
        for step in self.w.steps {
            if self.halted() {
                break;
            }
            if !matches!(step, Step::Open | Step::Close) && self.db.is_none() {
                break; // the open failed
            }
            match *step {
                Step::Open => match Db::open(DIR, with_fs((self.w.opts)(), &self.fs)) {
                    Ok(db) => self.db = Some(db),
                    Err(e) => {
                        self.err(format!("open: {e}"));
                        break;
                    }
                },
                Step::Write(a, b) => {
                    for n in a..b {
                        let r = self.db.as_ref().unwrap().write(&batch_of(self.w, n));
                        self.data(DataOp::Write(n), r);
                        if self.halted() {
                            break;
                        }
                        self.wait_idle();
                    }
                }
                Step::DeleteRange(m, a, b) => {
                    let r = self.db.as_ref().unwrap().delete_range(m, a..b);
                    self.data(DataOp::DeleteRange(m, a, b), r);
                }
                Step::DeleteFields(m, fs, a, b) => {
                    let r = self.db.as_ref().unwrap().delete_fields(m, fs.iter(), a..b);
                    self.data(DataOp::DeleteFields(m, fs, a, b), r);
                }
                Step::DeleteMachine(m) => {
                    let r = self.db.as_ref().unwrap().delete_machine(m);
                    self.data(DataOp::DeleteMachine(m), r);
                }
                Step::Flush => {
                    let r = self.db.as_ref().unwrap().flush();
                    self.durable_point("flush", r);
                }
                Step::Compact => {
                    let r = self.db.as_ref().unwrap().compact();
                    self.durable_point("compact", r);
                }
                Step::Sync => {
                    let r = self.db.as_ref().unwrap().sync();
                    self.durable_point("sync", r);
                }
                Step::Close => {
                    let r = self.db.take().unwrap().close();
                    self.durable_point("close", r);
                }
            }
            self.wait_idle();
        }
        // The process dies: whatever the Db does on drop fails (after the halt).
        drop(self.db.take());
    }

    fn wait_idle(&mut self) {
        let Some(db) = &self.db else { return };
        let (fs, halt) = (self.fs.clone(), self.halt);
        let give_up = move || halt.is_some_and(|h| fs.ops() > h);
        match self.idle.wait(db, &self.fs, Path::new(DIR), &give_up) {
            IdleEnd::Idle | IdleEnd::GaveUp => {}
            IdleEnd::Quiet => self.out.idle_fallbacks += 1,
            IdleEnd::Timeout => {
                panic!("{}: the background thread never went idle: {:?}", self.w.name, db.stats())
            }
        }
    }
}

fn run_workload(w: &Workload, fs: &SimFs, halt: Option<u64>) -> Outcome {
    fs.halt_after(halt);
    let idle = IdleWait::new(&(w.opts)(), Duration::from_secs(30), Duration::from_millis(20));
    let mut ctx = Ctx { w, fs: fs.clone(), halt, db: None, out: Outcome::default(), idle };
    // With deletes or retention the idle wait needs quiet after the background thread acted.
    if w.steps
        .iter()
        .any(|s| matches!(s, Step::DeleteRange(..) | Step::DeleteFields(..) | Step::DeleteMachine(..)))
        || (w.opts)().retention.is_some()
    {
        ctx.idle.quiet = Duration::from_millis(5);
    }
    ctx.run();
    ctx.out
}

/// Opens the survivor of a crash and checks it against the replay of the operations: a
/// prefix of `out.acked` (then maybe `out.failed`) at least `required` long.
fn check_survivor(w: &Workload, fs: &SimFs, out: &Outcome, required: usize) -> Result<(), String> {
    // verify_dir reads everything and changes nothing: synced bytes are never damaged.
    let report = gemba::verify_dir(fs, Path::new(DIR)).map_err(|e| format!("verify_dir: {e}"))?;
    if !report.is_healthy() {
        return Err(format!("verify_dir found problems in the crash image: {:?}", report.problems));
    }
    let mut first: Option<Model> = None;
    // The marker goes at the newest timestamp written so far (so that it moves no retention
    // cut-off), known once the survivor matched a prefix.
    let mut marker_ts = 1;
    for round in 0..2 {
        let db = Db::open(DIR, with_fs((w.opts)(), fs)).map_err(|e| format!("open #{round}: {e}"))?;
        let mut got = try_dump(&db).map_err(|e| format!("open #{round}: {e}"))?;
        db.verify().map_err(|e| format!("verify #{round}: {e}"))?;
        let markers: Vec<i64> = got.keys().filter(|(m, _)| m == MARKER).map(|(_, ts)| *ts).collect();
        got.retain(|(m, _), _| m != MARKER);
        let want_markers = if round == 1 { vec![marker_ts] } else { vec![] };
        if markers != want_markers {
            return Err(format!("open #{round}: marker rows at {markers:?}, expected {want_markers:?}"));
        }
        match &first {
            None => {
                // The survivor is the replay of a prefix of the operations.
                let ops: Vec<DataOp> = out.acked.iter().copied().chain(out.failed).collect();
                let mut replay = Replay::new(w);
                let mut matched = None;
                for p in 0..=ops.len() {
                    if p > 0 {
                        replay.apply(ops[p - 1]);
                    }
                    if p >= required && common::diff_models(&got, &replay.model()).is_ok() {
                        matched = Some(p);
                        if replay.retention.is_some() {
                            marker_ts = replay.max_ts.unwrap_or(1);
                        }
                        break;
                    }
                }
                if matched.is_none() {
                    let mut want = Replay::new(w);
                    for &op in &out.acked {
                        want.apply(op);
                    }
                    let diff = common::diff_models(&got, &want.model()).err().unwrap_or_default();
                    return Err(format!(
                        "not the replay of any allowed prefix of the operations ({} acknowledged, {required} required; against all acknowledged: {diff})",
                        out.acked.len()
                    ));
                }
                first = Some(got);
            }
            Some(f) => common::diff_models(&got, f).map_err(|e| format!("second open: {e}"))?,
        }
        if round == 0 {
            // The recovered database takes new writes, durably, after what it recovered.
            let mut b = WriteBatch::new();
            b.row(MARKER, marker_ts, [("f", 1.0)]).unwrap();
            db.write(&b).map_err(|e| format!("write after recovery: {e}"))?;
            db.sync().map_err(|e| format!("sync after recovery: {e}"))?;
        }
        db.close().map_err(|e| format!("close #{round}: {e}"))?;
        let left = leftovers(fs, Path::new(DIR))?;
        if !left.is_empty() {
            return Err(format!("after close #{round}: leftover files {left:?}"));
        }
    }
    Ok(())
}

struct Totals {
    crash_points: u64,
    checks: u64,
    recovery_crashes: u64,
    failures: Vec<String>,
}

fn check(totals: &mut Totals, ctx: &str, f: impl FnOnce() -> Result<(), String>) {
    let before = panics();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => totals.failures.push(format!("{ctx}: {e}")),
        Err(_) => totals.failures.push(format!("{ctx}: panic")),
    }
    if panics() != before {
        totals.failures.push(format!("{ctx}: a gemba background thread panicked"));
    }
}

fn sweep(w: &Workload, totals: &mut Totals) {
    let started = Instant::now();
    // Learn N; run twice to see whether it is stable.
    let mut ns = Vec::new();
    let mut full = Outcome::default();
    for _ in 0..2 {
        let fs = SimFs::new(1);
        full = run_workload(w, &fs, None);
        assert!(full.unexpected.is_empty(), "{}: errors without any fault: {:?}", w.name, full.unexpected);
        ns.push(fs.ops());
        // The full run itself ends in the right state.
        let r = check_survivor(w, &fs.crash(CrashMode::DropUnsynced), &full, full.acked.len());
        assert!(r.is_ok(), "{}: full run: {}", w.name, r.unwrap_err());
    }
    let n = *ns.iter().max().unwrap();
    let always = matches!((w.opts)().sync, SyncPolicy::Always);
    let mut fallbacks = full.idle_fallbacks;
    for k in 1..=n {
        let fs = SimFs::new(0x5eed ^ k);
        let out = run_workload(w, &fs, Some(k));
        fallbacks += out.idle_fallbacks;
        totals.crash_points += 1;
        for e in &out.unexpected {
            totals.failures.push(format!("{} k={k}: unexpected error before the halt: {e}", w.name));
        }
        let modes = [
            CrashMode::DropUnsynced,
            CrashMode::KeepAll,
            CrashMode::KeepPrefix,
            CrashMode::KeepPrefix,
            CrashMode::Garbage,
            CrashMode::Garbage,
        ];
        for (mi, &mode) in modes.iter().enumerate() {
            let after = fs.crash(mode);
            // Under `Always` every acknowledged operation is durable; otherwise a process crash
            // keeps them all and a power loss keeps those before the last flush/sync/close.
            let required = if always || mode == CrashMode::KeepAll { out.acked.len() } else { out.durable };
            let ctx = format!("{} k={k}/{n} {mode:?}#{mi}", w.name);
            let base = after.crash(CrashMode::KeepAll); // an independent copy, for later
            check(totals, &ctx, || check_survivor(w, &after, &out, required));
            totals.checks += 1;
            // A crash during recovery: halt the first open at each of its operations, crash
            // again, and check once more.
            if mode == CrashMode::Garbage && k % w.recovery_crash_every == 0 {
                let probe = base.crash(CrashMode::KeepAll);
                drop(Db::open(DIR, with_fs((w.opts)(), &probe)));
                let r_ops = probe.ops();
                for j in 1..=r_ops {
                    let second = base.crash(CrashMode::KeepAll);
                    second.halt_after(Some(j));
                    drop(Db::open(DIR, with_fs((w.opts)(), &second)));
                    for mode2 in [CrashMode::KeepPrefix, CrashMode::DropUnsynced] {
                        let third = second.crash(mode2);
                        let ctx = format!("{ctx}, recovery halted after op {j}/{r_ops}, {mode2:?}");
                        check(totals, &ctx, || check_survivor(w, &third, &out, required));
                        totals.recovery_crashes += 1;
                    }
                }
            }
        }
    }
    println!(
        "{}: N = {n} operations (full runs: {ns:?}), {} data operations, {n} crash points, {fallbacks} idle-wait fallbacks, {:.1} s",
        w.name,
        full.acked.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn crash_at_every_operation_of_scripted_workloads() {
    count_panics();
    let started = Instant::now();
    let mut totals = Totals { crash_points: 0, checks: 0, recovery_crashes: 0, failures: Vec::new() };
    let only = std::env::var("GEMBA_CRASH_WORKLOAD").ok();
    for w in WORKLOADS {
        if only.as_deref().is_some_and(|o| !w.name.starts_with(o)) {
            continue;
        }
        sweep(w, &mut totals);
    }
    println!(
        "total: {} crash points, {} crash images checked, {} crashes during recovery checked, {} failures, {:.1} s",
        totals.crash_points,
        totals.checks,
        totals.recovery_crashes,
        totals.failures.len(),
        started.elapsed().as_secs_f64()
    );
    for f in totals.failures.iter().take(40) {
        println!("FAIL {f}");
    }
    assert!(totals.failures.is_empty(), "{} failures; first: {}", totals.failures.len(), totals.failures[0]);
}

/// `Db::flush` "waits until [the segments] are durable and the log files they cover are gone".
/// A flush with nothing new in memory still rotates the log; the file it closes holds only
/// flushed records (or none) and must not be left behind: a service that flushes on a timer
/// while idle would otherwise gain a log file per call until the next real flush.
#[test]
fn flushes_leave_no_covered_log_file_behind() {
    let fs = SimFs::new(2);
    let db = Db::open(DIR, with_fs(opts_small(), &fs)).unwrap();
    let spec = Spec::new(2, 2, 1);
    db.write(&spec.batch(0)).unwrap();
    db.flush().unwrap();
    for _ in 0..10 {
        db.flush().unwrap(); // nothing new to flush
    }
    // Give the background thread time to finish whatever it still does.
    std::thread::sleep(Duration::from_millis(300));
    let logs: Vec<String> = gemba::io::FileSystem::list(&fs, Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("wal-"))
        .collect();
    assert_eq!(logs.len(), 1, "after 11 flushes of one batch, {} log files remain: {logs:?}", logs.len());
    drop(db);
}

/// Flushed log files of several megabytes are removed on a thread of their own (unlinking them
/// takes tens of milliseconds the flush thread would otherwise spend); `Db::flush` still
/// returns only once they are gone, and a reopen finds every row.
#[test]
fn large_flushed_logs_are_gone_when_flush_returns() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncPolicy::Os,
        memtable_bytes_max: 256 << 20,
        wal_file_bytes_max: 1 << 20,
        ..Options::default()
    };
    let logs = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("wal-"))
            .collect();
        v.sort();
        v
    };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let (rows, per_batch) = (600_000i64, 20_000i64);
    for round in 0..2 {
        for b in 0..rows / per_batch / 2 {
            let start = (round * rows / 2) + b * per_batch;
            let ts: Vec<i64> = (start..start + per_batch).collect();
            let v: Vec<f64> = ts.iter().map(|&t| (t as f64 * 0.37).sin()).collect();
            let mut batch = WriteBatch::new();
            batch.columns("m", &ts, [("a", gemba::Col::f64(&v)), ("b", gemba::Col::f64(&v))]).unwrap();
            db.write(&batch).unwrap();
        }
        let before = logs();
        assert!(before.len() >= 5, "{before:?}");
        db.flush().unwrap();
        let after = logs();
        assert_eq!(after.len(), 1, "round {round}: log files left after flush: {after:?}");
        assert!(!before.contains(&after[0]), "{after:?} was written before the flush");
    }
    db.close().unwrap();
    let db = Db::open(dir.path(), opts).unwrap();
    let ts: Vec<i64> = db.scan("m", ..).collect().unwrap().into_iter().flat_map(|b| b.ts).collect();
    assert_eq!(ts, (0..rows).collect::<Vec<_>>());
    db.close().unwrap();
}
