//! Data lifecycle: late and duplicate writes, deletes (ranges, fields, machines), flushes,
//! compactions, retention and reopens, against a `BTreeMap` model; space reclaimed by
//! compaction after deletes; disk use bounded under retention; memory bounded by the budget
//! when the disk is slow.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Model, assert_same, dump};
use gemba::io::SimFs;
use gemba::{Agg, Db, Machines, Options, SyncPolicy, Value, Values, WriteBatch};
use proptest::prelude::*;

const MACHINES: [&str; 3] = ["m0", "m1", "m2"];
const FIELDS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(usize, i64, [Option<i64>; 2])>),
    Delete { m: usize, field: Option<usize>, start: i64, len: i64 },
    DeleteMachine(usize),
    Flush,
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let cell = || proptest::option::weighted(0.8, 0i64..1000);
    // Mostly recent times, some late ones far back.
    let ts = prop_oneof![4 => 200i64..400, 1 => 0i64..400];
    let row = (0..3usize, ts, [cell(), cell()]);
    prop_oneof![
        6 => proptest::collection::vec(row, 1..25).prop_map(Op::Write),
        2 => (0..3usize, proptest::option::of(0..2usize), 0i64..400, 1i64..150)
            .prop_map(|(m, field, start, len)| Op::Delete { m, field, start, len }),
        1 => (0..3usize).prop_map(Op::DeleteMachine),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn value(f: usize, x: i64) -> Value {
    if f == 0 { Value::F64(x as f64 / 8.0) } else { Value::I64(x - 500) }
}

struct Harness {
    dir: tempfile::TempDir,
    retention: Option<i64>,
    db: Option<Db>,
    /// Everything written and not deleted, before retention.
    model: Model,
    max_ts: i64,
}

impl Harness {
    fn open(&mut self) {
        let opts = Options {
            sync: SyncPolicy::Os,
            memtable_bytes_max: 8192,
            partition_width: 64,
            block_rows: 4,
            compaction_block_rows: 9,
            compaction_trigger: 3,
            retention: self.retention,
            ..Options::default()
        };
        self.db = Some(Db::open(self.dir.path(), opts).unwrap());
    }

    fn db(&self) -> &Db {
        self.db.as_ref().unwrap()
    }

    /// The model as queries must see it: retention applied.
    fn visible(&self) -> Model {
        let floor = match self.retention {
            Some(r) if self.max_ts != i64::MIN => self.max_ts - r,
            _ => i64::MIN,
        };
        self.model.iter().filter(|((_, t), _)| *t >= floor).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(rows) => {
                let mut b = WriteBatch::new();
                for &(m, t, vals) in rows {
                    let fields: Vec<(&str, Value)> = vals
                        .iter()
                        .enumerate()
                        .filter_map(|(f, v)| v.map(|x| (FIELDS[f], value(f, x))))
                        .collect();
                    b.row(MACHINES[m], t, fields).unwrap();
                    self.max_ts = self.max_ts.max(t);
                    if vals.iter().any(Option::is_some) {
                        let row = self.model.entry((MACHINES[m].to_string(), t)).or_default();
                        for (f, v) in vals.iter().enumerate() {
                            if let Some(x) = v {
                                row.insert(FIELDS[f].to_string(), value(f, *x));
                            }
                        }
                    }
                }
                self.db().write(&b).unwrap();
            }
            Op::Delete { m, field, start, len } => {
                let (m, range) = (MACHINES[*m], *start..start + len);
                match field {
                    Some(f) => self.db().delete_fields(m, [FIELDS[*f]], range.clone()).unwrap(),
                    None => self.db().delete_range(m, range.clone()).unwrap(),
                }
                for ((mm, t), row) in self.model.iter_mut() {
                    if mm == m && range.contains(t) {
                        match field {
                            Some(f) => {
                                row.remove(FIELDS[*f]);
                            }
                            None => row.clear(),
                        }
                    }
                }
                self.model.retain(|_, row| !row.is_empty());
            }
            Op::DeleteMachine(m) => {
                self.db().delete_machine(MACHINES[*m]).unwrap();
                self.model.retain(|(mm, _), _| mm != MACHINES[*m]);
            }
            Op::Flush => self.db().flush().unwrap(),
            Op::Compact => self.db().compact().unwrap(),
            Op::Reopen => {
                self.db.take().unwrap().close().unwrap();
                self.open();
            }
        }
    }

    fn check(&self, ctx: &str) {
        let want = self.visible();
        let got = dump(self.db());
        if got != want {
            eprintln!("after {ctx}");
        }
        assert_same(&got, &want);
        // Latest values and whole-range counts agree with the model too.
        let mut latest: BTreeMap<(String, String), (i64, Value)> = BTreeMap::new();
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for ((m, t), row) in &want {
            for (f, v) in row {
                latest.insert((m.clone(), f.clone()), (*t, *v));
                *counts.entry((m.clone(), f.clone())).or_default() += 1;
            }
        }
        let got: BTreeMap<(String, String), (i64, Value)> = self
            .db()
            .latest(Machines::All)
            .run()
            .unwrap()
            .into_iter()
            .map(|l| ((l.machine.to_string(), l.field.to_string()), (l.ts, l.value)))
            .collect();
        assert_eq!(got, latest, "latest after {ctx}");
        let out = self.db().aggregate(Machines::All, ..).aggs([Agg::Count]).run().unwrap();
        let got: BTreeMap<(String, String), u64> = out
            .series
            .iter()
            .map(|s| ((s.machine.to_string(), s.field.to_string()), s.agg(Agg::Count).unwrap().f64(0) as u64))
            .collect();
        assert_eq!(got, counts, "counts after {ctx}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn lifecycle_matches_the_model(ops in proptest::collection::vec(op(), 1..30), retention in proptest::option::of(60i64..300)) {
        let mut h = Harness { dir: tempfile::tempdir().unwrap(), retention, db: None, model: Model::new(), max_ts: i64::MIN };
        h.open();
        for (i, op) in ops.iter().enumerate() {
            h.apply(op);
            h.check(&format!("op {i}: {op:?}"));
        }
        h.apply(&Op::Compact);
        h.check("final compaction");
        h.apply(&Op::Reopen);
        h.check("final reopen");
    }
}

fn fill(db: &Db, machines: usize, rows: i64, t0: i64) {
    for m in 0..machines {
        let ts: Vec<i64> = (0..rows).map(|i| t0 + i).collect();
        let v: Vec<f64> = (0..rows).map(|i| ((i * 37 + m as i64) % 1000) as f64 / 10.0).collect();
        let mut b = WriteBatch::new();
        b.columns(&format!("m{m}"), &ts, [("v", gemba::Col::f64(&v))]).unwrap();
        db.write(&b).unwrap();
    }
}

#[test]
fn deletes_free_space_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { sync: SyncPolicy::Os, partition_width: 10_000, ..Options::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    fill(&db, 4, 40_000, 0);
    db.compact().unwrap();
    let before = db.stats();
    // Delete half of every machine's data and one machine entirely.
    for m in 0..3 {
        db.delete_range(&format!("m{m}"), 0..20_000).unwrap();
    }
    db.delete_machine("m3").unwrap();
    assert!(db.stats().tombstones > 0);
    db.compact().unwrap();
    let after = db.stats();
    println!(
        "deletes: {} -> {} segment bytes ({:.0}% reclaimed), {} -> {} segments",
        before.segment_bytes,
        after.segment_bytes,
        100.0 * (1.0 - after.segment_bytes as f64 / before.segment_bytes as f64),
        before.segments,
        after.segments
    );
    assert!(after.segment_bytes * 2 < before.segment_bytes, "{before:?} -> {after:?}");
    assert_eq!(after.tombstones, 0, "applied deletes are dropped");
    let out = db.aggregate(Machines::All, ..).run().unwrap();
    assert_eq!(out.series.len(), 3);
    for s in &out.series {
        assert_eq!(s.agg(Agg::Count).unwrap().f64(0), 20_000.0);
    }
    drop(db);
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.aggregate(Machines::All, ..).run().unwrap().series.len(), 3);
}

/// Compaction holds one machine's decoded rows of a partition at a time and refuses
/// partitions where that would exceed four memory budgets: their segments stay (and answer
/// queries), while partitions within the bound are compacted as usual.
#[test]
fn compaction_stays_within_its_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB budget: a compaction may hold 256 KiB of one machine, about 15,000 rows of one
    // field (a timestamp, a value and a validity bit each).
    let opts = Options {
        sync: SyncPolicy::Os,
        memtable_bytes_max: 64 << 10,
        partition_width: 1_000_000,
        compaction_trigger: usize::MAX,
        ..Options::default()
    };
    let db = Db::open(dir.path(), opts).unwrap();
    // partition 0: one machine with 40,000 rows, written in 4 flushes
    for k in 0..4 {
        fill(&db, 1, 10_000, k * 10_000);
        db.flush().unwrap();
    }
    // partition 1: 4 small flushes of 1,000 rows
    for k in 0..4 {
        fill(&db, 1, 1_000, 1_000_000 + k * 1_000);
        db.flush().unwrap();
    }
    let before = db.stats();
    db.compact().unwrap();
    let after = db.stats();
    println!("memory bound: {} -> {} segments", before.segments, after.segments);
    assert!(before.segments >= 8, "{before:?}");
    // the small partition became one segment; the big one kept its segments
    assert_eq!(after.segments, before.segments - 3, "{before:?} -> {after:?}");
    let out = db.aggregate("m0", ..).run().unwrap();
    assert_eq!(out.series[0].agg(Agg::Count).unwrap().f64(0), 44_000.0);
}

/// The partition width is the database's: reopening with another one keeps the stored width,
/// so partitions never overlap and the newest write still wins.
#[test]
fn reopening_with_another_partition_width_keeps_the_stored_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |w: i64| Options { sync: SyncPolicy::Os, partition_width: w, ..Options::default() };
    let db = Db::open(dir.path(), opts(1_000)).unwrap();
    fill(&db, 2, 5_000, 0);
    db.flush().unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), opts(7_777)).unwrap();
    // overwrite the middle with other values, flush, and read everything back
    let ts: Vec<i64> = (2_000..3_000).collect();
    let v = vec![-1.0; ts.len()];
    let mut b = WriteBatch::new();
    b.columns("m0", &ts, [("v", gemba::Col::f64(&v))]).unwrap();
    db.write(&b).unwrap();
    db.flush().unwrap();
    let rows: Vec<gemba::Batch> = db.scan("m0", ..).collect().unwrap();
    let ts: Vec<i64> = rows.iter().flat_map(|b| b.ts.iter().copied()).collect();
    let want: Vec<i64> = (0..5_000).collect();
    let first_bad = ts.iter().zip(&want).position(|(a, b)| a != b);
    assert!(ts == want, "every row once, in order: {} rows, first wrong at {first_bad:?}", ts.len());
    let newer = |b: &gemba::Batch| {
        (0..b.ts.len()).filter(|&i| b.columns[0].value(i) == Some(Value::F64(-1.0))).count()
    };
    assert_eq!(rows.iter().map(newer).sum::<usize>(), 1_000, "the newer values win");
    db.close().unwrap();
    let db = Db::open(dir.path(), opts(3)).unwrap();
    let s = db.stats();
    assert!(s.segments >= 2, "{s:?}");
    let d = db.aggregate("m0", ..).run().unwrap();
    assert_eq!(d.series[0].agg(Agg::Count).unwrap().f64(0), 5_000.0);
}

/// `close` does not wait for the rest of a running compaction: whether the compaction
/// finished or gave way, the reopened database holds every row once and no partial file.
#[test]
fn close_during_compaction_keeps_everything() {
    let mut gave_way = 0;
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            sync: SyncPolicy::Os,
            memtable_bytes_max: 256 << 10,
            partition_width: 1 << 40,
            ..Options::default()
        };
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        for k in 0..8 {
            fill(&db, 8, 2_000, k * 2_000);
            db.flush().unwrap();
        }
        // with four or more segments a compaction starts in the background right away
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let before = db.stats().segments;
        db.close().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        let db = Db::open(dir.path(), Options { compaction_trigger: usize::MAX, ..opts }).unwrap();
        if db.stats().segments > 1 && before > 1 {
            gave_way += 1;
        }
        let out = db.aggregate(Machines::All, ..).run().unwrap();
        assert_eq!(out.series.len(), 8);
        for s in &out.series {
            assert_eq!(s.agg(Agg::Count).unwrap().f64(0), 16_000.0);
        }
    }
    println!("close during compaction: {gave_way} of 6 closes left the compaction undone");
}

#[test]
fn retention_keeps_disk_use_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let width = 10_000;
    let opts = Options {
        sync: SyncPolicy::Os,
        partition_width: width,
        retention: Some(3 * width),
        memtable_bytes_max: 1 << 20,
        ..Options::default()
    };
    let db = Db::open(dir.path(), opts).unwrap();
    let mut peak = 0;
    for day in 0..40 {
        fill(&db, 3, width, day * width);
        db.flush().unwrap();
        db.compact().unwrap();
        let s = db.stats();
        peak = peak.max(s.segment_bytes);
        assert!(s.segments <= 5, "day {day}: {s:?}");
    }
    let total_written = db.stats().bytes_flushed;
    println!("retention: peak {peak} segment bytes while {total_written} bytes were flushed");
    assert!(peak * 5 < total_written);
    // Only the last three partitions' worth of data is visible, the last at most partly.
    let out = db.aggregate(Machines::All, ..).run().unwrap();
    for s in &out.series {
        let n = s.agg(Agg::Count).unwrap().f64(0);
        assert!(n <= 3.0 * width as f64 + 1.0, "{n}");
    }
    let first = db.scan("m0", ..).collect().unwrap()[0].ts[0];
    assert!(first >= 37 * width - 1, "{first}");
}

#[test]
fn memory_stays_within_the_budget_when_the_disk_is_slow() {
    let fs = SimFs::new(5);
    fs.set_write_delay(Duration::from_millis(3));
    let budget = 256 << 10;
    let opts = Options {
        fs: Arc::new(fs.clone()),
        sync: SyncPolicy::Os,
        memtable_bytes_max: budget,
        ..Options::default()
    };
    let db = Arc::new(Db::open("/db", opts).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(db.stats().memtable_bytes);
                std::thread::sleep(Duration::from_micros(200));
            }
            peak
        })
    };
    // Each batch is ~1,000 rows × 2 fields: about 24 KB in the memtable.
    let mut batch_bytes = 0;
    for k in 0..120i64 {
        let ts: Vec<i64> = (0..1000).map(|i| k * 1000 + i).collect();
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let mut b = WriteBatch::new();
        b.columns("m", &ts, [("a", gemba::Col::f64(&v)), ("b", gemba::Col::f64(&v))]).unwrap();
        batch_bytes = batch_bytes.max(b.rows() * 8 * 3 + 64);
        db.write(&b).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = monitor.join().unwrap();
    println!("memory budget {budget} B: peak memtable {peak} B over 120 batches of ~{batch_bytes} B");
    assert!(peak <= budget + batch_bytes, "peak {peak} over budget {budget}");
    db.flush().unwrap();
    assert_eq!(db.aggregate("m", ..).run().unwrap().series[0].agg(Agg::Count).unwrap().f64(0), 120_000.0);
}

/// The newest partition is compacted in tiers (runs of consecutive segments of similar size),
/// not whole: overlapping rewrites spread over many flushes must still read newest-first,
/// while merges of part of the partition run in the background, and after a reopen.
#[test]
fn tiered_compaction_of_the_newest_partition_keeps_the_newest_write() {
    let dir = tempfile::tempdir().unwrap();
    let opts =
        || Options { sync: SyncPolicy::Os, compaction_trigger: 2, block_rows: 16, ..Options::default() };
    let db = Db::open(dir.path(), opts()).unwrap();
    let mut model: BTreeMap<i64, f64> = BTreeMap::new();
    let rounds = 24i64;
    for round in 0..rounds {
        // Each round rewrites the last 30 timestamps of the one before and adds 10 new ones.
        let mut b = WriteBatch::new();
        for t in round * 10..round * 10 + 40 {
            let v = (round * 1000 + t) as f64;
            b.row("m", t, [("x", v)]).unwrap();
            model.insert(t, v);
        }
        db.write(&b).unwrap();
        db.flush().unwrap();
    }
    let check = |db: &Db, ctx: &str| {
        let got: BTreeMap<i64, f64> = db
            .scan("m", ..)
            .collect()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let Some(gemba::Values::F64(v)) = b.column("x").map(|c| c.values.clone()) else {
                    panic!("x is a float column")
                };
                b.ts.iter().copied().zip(v).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(got, model, "{ctx}");
        let l = db.latest("m").run().unwrap();
        assert_eq!(
            (l[0].ts, l[0].value),
            (rounds * 10 + 29, Value::F64(model[&(rounds * 10 + 29)])),
            "{ctx}"
        );
    };
    check(&db, "after the flushes");
    // Background merges settle: far fewer segments than flushes, none of them a full rewrite
    // of the partition each time.
    let mut waited = 0;
    while db.stats().segments > 4 && waited < 200 {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    let st = db.stats();
    assert!(st.compactions > 0 && st.segments <= 4, "{st:?}");
    check(&db, "after background compaction");
    db.close().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    check(&db, "after a reopen");
}

/// Compactions run on their own thread: a flush (and so a writer waiting for memtable space)
/// never waits behind a running one. A forced compaction of a large partition runs on one
/// thread while another writes a batch and flushes it; the flush returns, with the batch in a
/// segment, before the compaction does.
#[test]
fn a_flush_does_not_wait_for_a_running_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncPolicy::Os,
        partition_width: 1 << 40,
        compaction_trigger: usize::MAX,
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir.path(), opts).unwrap());
    for k in 0..4 {
        fill(&db, 40, 25_000, k * 25_000);
        db.flush().unwrap();
    }
    assert_eq!(db.stats().segments, 4);
    let compaction = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.compact().unwrap();
            std::time::Instant::now()
        })
    };
    // Let the compaction start (it flushes first, then merges 4 M points for a good while).
    std::thread::sleep(Duration::from_millis(50));
    let mut b = WriteBatch::new();
    b.row("late", 1, [("v", Value::F64(1.5))]).unwrap();
    db.write(&b).unwrap();
    db.flush().unwrap();
    let flushed = std::time::Instant::now();
    assert_eq!(db.stats().frozen_memtables, 0);
    let compacted = compaction.join().unwrap();
    assert!(flushed < compacted, "the flush returned {:?} after the compaction", flushed - compacted);
    // `compact` merged the 4 segments, and then the flushed one with the result (it goes on
    // until nothing is left to merge).
    let st = db.stats();
    assert_eq!((st.segments, st.compaction_errors), (1, 0));
    let out = db.aggregate(Machines::All, ..).run().unwrap();
    assert_eq!(out.series.len(), 41);
    let late = out.series.iter().find(|s| &*s.machine == "late").unwrap();
    assert_eq!(late.agg(Agg::Count).unwrap().f64(0), 1.0);
}

/// A large memtable (past the 4 MiB above which a flush reads its machines on several
/// threads) spanning several partitions, with deletes: after the flush every machine reads
/// back exactly what was written and not deleted, from segments in machine order.
#[test]
fn a_large_flush_read_on_several_threads_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncPolicy::Os,
        partition_width: 7_000,
        memtable_bytes_max: 1 << 30,
        compaction_trigger: usize::MAX,
        ..Options::default()
    };
    let db = Db::open(dir.path(), opts).unwrap();
    let (machines, rows) = (48usize, 20_000i64);
    fill(&db, machines, rows, 0);
    for m in (0..machines).step_by(5) {
        db.delete_range(&format!("m{m}"), 3_000 + m as i64..9_000).unwrap();
    }
    assert!(db.stats().memtable_bytes > 4 << 20, "{:?}", db.stats());
    db.flush().unwrap();
    let st = db.stats();
    assert_eq!((st.memtable_bytes, st.segments), (0, 3), "{st:?}");
    for m in 0..machines {
        let deleted = if m % 5 == 0 { 3_000 + m as i64..9_000 } else { 0..0 };
        let want: Vec<(i64, f64)> = (0..rows)
            .filter(|t| !deleted.contains(t))
            .map(|i| (i, ((i * 37 + m as i64) % 1000) as f64 / 10.0))
            .collect();
        let mut got = Vec::new();
        for b in db.scan(format!("m{m}").as_str(), ..).collect().unwrap() {
            let Values::F64(v) = &b.columns[0].values else { panic!("m{m}: not f64") };
            got.extend(b.ts.iter().copied().zip(v.iter().copied()));
        }
        assert_eq!(got, want, "m{m}");
    }
}
