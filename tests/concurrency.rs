//! Writers, readers and flushes together, for a few seconds.
//!
//! Several threads write durable batches (each its own series of batch numbers), readers run
//! full scans, downsamples and `latest` queries, and a thread flushes every few milliseconds
//! and compacts every fifth time (a tiny memtable makes the background flush and compaction
//! run as well). Every scan must be sorted by time
//! without duplicates, hold only whole batches with their exact values, and hold every batch
//! acknowledged before the scan began; downsample counts and latest values must agree with
//! what was acknowledged before and issued after. The test thread is a watchdog: no progress
//! for 20 s is reported as a deadlock.
//!
//! A second test races deletes (ranges and fields) against writes, flushes and compactions:
//! what a delete hid before a scan began never reads back, not after a reopen either.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Model, STRIDE, Spec, count_panics, panics, try_dump};
use gemba::{Agg, AggColumn, Db, Machines, Options, SyncPolicy};

const WRITERS: u64 = 4;
const READERS: usize = 3;
const RUN: Duration = Duration::from_secs(4);
const SPEC: Spec = Spec::new(5, 3, 4);

struct Shared {
    db: Db,
    /// Per writer: how many of its batches were acknowledged (batch `k * WRITERS + t` for
    /// `k` below the count).
    acked: Vec<AtomicU64>,
    progress: AtomicU64,
    stop: AtomicBool,
    scans: AtomicU64,
    downsamples: AtomicU64,
    latests: AtomicU64,
    flushes: AtomicU64,
}

impl Shared {
    fn acked_now(&self) -> Vec<u64> {
        self.acked.iter().map(|a| a.load(Ordering::SeqCst)).collect()
    }
}

fn acked_batches(counts: &[u64]) -> impl Iterator<Item = u64> + '_ {
    counts.iter().enumerate().flat_map(|(t, &c)| (0..c).map(move |k| k * WRITERS + t as u64))
}

/// Highest batch number that may exist when the counts are `after` (one in flight per writer).
fn issued_bound(after: &[u64]) -> u64 {
    after.iter().enumerate().map(|(t, &c)| c * WRITERS + t as u64 + 1).max().unwrap()
}

fn writer(s: &Shared, t: u64) {
    let mut k = 0;
    while !s.stop.load(Ordering::SeqCst) {
        let n = k * WRITERS + t;
        if let Err(e) = s.db.write(&SPEC.batch(n)) {
            panic!("writer {t}: batch {n}: {e}");
        }
        k += 1;
        s.acked[t as usize].store(k, Ordering::SeqCst);
        s.progress.fetch_add(1, Ordering::SeqCst);
    }
}

fn check_scan(s: &Shared) -> Result<(), String> {
    let before = s.acked_now();
    let got = try_dump(&s.db)?; // sorted, no duplicates, no empty rows
    let after = s.acked_now();
    let present = SPEC.present(&got, issued_bound(&after))?;
    for n in acked_batches(&before) {
        if !present.contains(&n) {
            return Err(format!(
                "batch {n} acknowledged before the scan began is missing ({} present)",
                present.len()
            ));
        }
    }
    Ok(())
}

const BUCKET: i64 = 64 * STRIDE;

fn check_downsample(s: &Shared) -> Result<(), String> {
    let before = s.acked_now();
    let ds =
        s.db.downsample(Machines::All, .., BUCKET)
            .fields(["i"])
            .aggs([Agg::Count, Agg::Min, Agg::Max])
            .run()
            .map_err(|e| format!("downsample: {e}"))?;
    let after = s.acked_now();
    // Per bucket: values of acknowledged batches ≤ count ≤ values of batches issued by then.
    let mut low: BTreeMap<i64, u64> = BTreeMap::new();
    for n in acked_batches(&before) {
        for j in 0..SPEC.rows(n) {
            *low.entry(SPEC.ts(n, j).div_euclid(BUCKET) * BUCKET).or_default() += 1;
        }
    }
    let bound = issued_bound(&after);
    let mut got: BTreeMap<i64, u64> = BTreeMap::new();
    for series in &ds.series {
        let Some(AggColumn::Count(c)) = series.agg(Agg::Count) else {
            return Err("no count column".into());
        };
        if series.buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("buckets of {} not ascending", series.machine));
        }
        for (b, n) in series.buckets.iter().zip(c) {
            *got.entry(*b).or_default() += n;
        }
    }
    for (b, &lo) in &low {
        let g = got.get(b).copied().unwrap_or(0);
        if g < lo {
            return Err(format!("bucket {b}: {g} values, {lo} acknowledged before"));
        }
    }
    for (b, &g) in &got {
        // Batches whose rows fall in bucket b: n in [b/STRIDE, (b+BUCKET)/STRIDE).
        let hi: u64 = ((b / STRIDE) as u64..((b + BUCKET) / STRIDE) as u64)
            .filter(|&n| n < bound)
            .map(|n| SPEC.rows(n))
            .sum();
        if g > hi {
            return Err(format!("bucket {b}: {g} values, at most {hi} written"));
        }
    }
    Ok(())
}

fn check_latest(s: &Shared) -> Result<(), String> {
    let before = s.acked_now();
    let latest = s.db.latest(Machines::All).fields(["i"]).run().map_err(|e| format!("latest: {e}"))?;
    let after = s.acked_now();
    let bound = issued_bound(&after);
    let mut floor: BTreeMap<String, i64> = BTreeMap::new();
    for n in acked_batches(&before) {
        for j in 0..SPEC.rows(n) {
            let e = floor.entry(SPEC.machine(n, j)).or_insert(i64::MIN);
            *e = (*e).max(SPEC.ts(n, j));
        }
    }
    for l in &latest {
        let (n, j) = ((l.ts / STRIDE) as u64, (l.ts % STRIDE) as u64);
        if n >= bound || j >= SPEC.rows(n) || SPEC.machine(n, j) != *l.machine {
            return Err(format!("latest {}@{} was never written", l.machine, l.ts));
        }
        if SPEC.values(n, j).get("i") != Some(&l.value) {
            return Err(format!("latest {}@{}: wrong value {:?}", l.machine, l.ts, l.value));
        }
        if let Some(&f) = floor.get(&*l.machine)
            && l.ts < f
        {
            return Err(format!(
                "latest {} is at {} but {f} was acknowledged before the query",
                l.machine, l.ts
            ));
        }
    }
    for m in floor.keys() {
        if !latest.iter().any(|l| &*l.machine == m) {
            return Err(format!("latest misses machine {m}"));
        }
    }
    Ok(())
}

fn reader(s: &Shared, r: usize) {
    let mut i = 0u64;
    while !s.stop.load(Ordering::SeqCst) {
        let result = match (i + r as u64) % 3 {
            0 => check_scan(s).map(|()| s.scans.fetch_add(1, Ordering::SeqCst)),
            1 => check_downsample(s).map(|()| s.downsamples.fetch_add(1, Ordering::SeqCst)),
            _ => check_latest(s).map(|()| s.latests.fetch_add(1, Ordering::SeqCst)),
        };
        if let Err(e) = result {
            s.stop.store(true, Ordering::SeqCst);
            panic!("reader {r}: {e}");
        }
        s.progress.fetch_add(1, Ordering::SeqCst);
        i += 1;
    }
}

fn flusher(s: &Shared) {
    let mut i = 0u64;
    while !s.stop.load(Ordering::SeqCst) {
        // Mostly flushes; every fifth call a full compaction (flush + merge every partition).
        let (what, r) = if i % 5 == 4 { ("compact", s.db.compact()) } else { ("flush", s.db.flush()) };
        if let Err(e) = r {
            panic!("{what}: {e}");
        }
        i += 1;
        s.flushes.fetch_add(1, Ordering::SeqCst);
        s.progress.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn writers_readers_and_flushes_together() {
    count_panics();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncPolicy::Always,
        memtable_bytes_max: 96 * 1024,
        wal_file_bytes_max: 64 * 1024,
        partition_width: 16 * STRIDE * WRITERS as i64,
        block_rows: 64,
        ..Options::default()
    };
    let s = Arc::new(Shared {
        db: Db::open(dir.path(), opts.clone()).unwrap(),
        acked: (0..WRITERS).map(|_| AtomicU64::new(0)).collect(),
        progress: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        scans: AtomicU64::new(0),
        downsamples: AtomicU64::new(0),
        latests: AtomicU64::new(0),
        flushes: AtomicU64::new(0),
    });
    let mut handles = Vec::new();
    for t in 0..WRITERS {
        let s = s.clone();
        handles.push(std::thread::spawn(move || writer(&s, t)));
    }
    for r in 0..READERS {
        let s = s.clone();
        handles.push(std::thread::spawn(move || reader(&s, r)));
    }
    {
        let s = s.clone();
        handles.push(std::thread::spawn(move || flusher(&s)));
    }
    // The watchdog.
    let mut last = (s.progress.load(Ordering::SeqCst), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > RUN {
            s.stop.store(true, Ordering::SeqCst);
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        let p = s.progress.load(Ordering::SeqCst);
        if p != last.0 {
            last = (p, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            s.stop.store(true, Ordering::SeqCst);
            panic!(
                "deadlock: no write, query or flush finished for 20 s (stats {:?}; acked {:?})",
                s.db.stats(),
                s.acked_now()
            );
        }
    }
    let mut failed = Vec::new();
    for h in handles {
        if let Err(e) = h.join() {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(msg);
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let acked = s.acked_now();
    println!(
        "concurrency: {:.1} s, {} batches acknowledged by {WRITERS} writers, {} scans, {} downsamples, {} latest, {} flushes/compactions, {} segments, {} compactions",
        started.elapsed().as_secs_f64(),
        acked.iter().sum::<u64>(),
        s.scans.load(Ordering::SeqCst),
        s.downsamples.load(Ordering::SeqCst),
        s.latests.load(Ordering::SeqCst),
        s.flushes.load(Ordering::SeqCst),
        s.db.stats().segments,
        s.db.stats().compactions,
    );
    assert!(s.scans.load(Ordering::SeqCst) > 0 && s.flushes.load(Ordering::SeqCst) > 0);
    assert!(acked.iter().all(|&c| c > 10), "a writer barely wrote: {acked:?}");
    // Everything acknowledged is there after a reopen.
    let s = Arc::into_inner(s).unwrap();
    s.db.close().unwrap();
    let db = Db::open(dir.path(), opts).unwrap();
    let got = try_dump(&db).unwrap();
    let present = SPEC.present(&got, issued_bound(&acked)).unwrap();
    for n in acked_batches(&acked) {
        assert!(present.contains(&n), "batch {n} lost across the reopen");
    }
    db.verify().unwrap();
    assert_eq!(panics(), 0, "a gemba background thread panicked");
}

/// Deletes racing with writes, flushes and compactions: a writer appends rows to machine `d`
/// at ascending timestamps; a deleter repeatedly deletes a range of rows already acknowledged
/// (deletes and field deletes alternate); a flusher flushes and compacts. A scan started after
/// a delete was acknowledged must show none of the values it deleted (nothing rewrites them),
/// and every acknowledged row that no delete issued by the scan's end covers; so must the
/// database after a reopen.
#[test]
fn deletes_stay_deleted_under_flushes_and_compactions() {
    use std::sync::Mutex;
    count_panics();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncPolicy::Always,
        memtable_bytes_max: 16 * 1024,
        partition_width: 200,
        block_rows: 16,
        compaction_trigger: 3,
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir.path(), opts.clone()).unwrap());
    let acked = Arc::new(AtomicU64::new(0)); // rows 0..acked were acknowledged (ts = row)
    // Deletes issued: (start, end, whole rows or only field `v`, acknowledged).
    type Del = (i64, i64, bool, bool);
    let deletes: Arc<Mutex<Vec<Del>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    {
        let (db, acked, stop, progress) = (db.clone(), acked.clone(), stop.clone(), progress.clone());
        hs.push(std::thread::spawn(move || -> Result<(), String> {
            let mut n = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let mut b = gemba::WriteBatch::new();
                for ts in n..n + 4 {
                    b.row("d", ts, [("v", gemba::Value::F64(ts as f64)), ("w", gemba::Value::I64(ts))])
                        .unwrap();
                }
                db.write(&b).map_err(|e| format!("write: {e}"))?;
                n += 4;
                acked.store(n as u64, Ordering::SeqCst);
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }));
    }
    {
        let (db, acked, deletes, stop, progress) =
            (db.clone(), acked.clone(), deletes.clone(), stop.clone(), progress.clone());
        hs.push(std::thread::spawn(move || -> Result<(), String> {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64;
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let c = acked.load(Ordering::SeqCst) as i64;
                if c > 10 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let a = (rng % c as u64) as i64;
                    let b = (a + 1 + (rng >> 32) as i64 % 25).min(c);
                    let whole = i.is_multiple_of(2);
                    let k = {
                        let mut d = deletes.lock().unwrap();
                        d.push((a, b, whole, false));
                        d.len() - 1
                    };
                    let r =
                        if whole { db.delete_range("d", a..b) } else { db.delete_fields("d", ["v"], a..b) };
                    r.map_err(|e| format!("delete: {e}"))?;
                    deletes.lock().unwrap()[k].3 = true;
                    i += 1;
                }
                progress.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(3));
            }
            Ok(())
        }));
    }
    {
        let (db, stop, progress) = (db.clone(), stop.clone(), progress.clone());
        hs.push(std::thread::spawn(move || -> Result<(), String> {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let r = if i % 3 == 2 { db.compact() } else { db.flush() };
                r.map_err(|e| format!("flush/compact: {e}"))?;
                i += 1;
                progress.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }));
    }
    // A scan's result against the deletes acknowledged before it began (`must`: their values
    // are gone), the deletes issued by its end (`may`: their rows may be gone), and the rows
    // acknowledged before it began (`before`) and issued by its end (`after`).
    let check = |got: &Model, must: &[Del], may: &[Del], before: i64, after: i64| -> Result<usize, String> {
        let covered = |ts: i64, whole: bool| {
            must.iter().any(|&(a, b, w, acked)| acked && a <= ts && ts < b && (w || !whole))
        };
        let maybe_covered = |ts: i64| may.iter().any(|&(a, b, w, _)| w && a <= ts && ts < b);
        for ((m, ts), row) in got {
            if m != "d" || *ts >= after + 4 {
                return Err(format!("row {m}@{ts} was never written"));
            }
            if covered(*ts, true) {
                return Err(format!("row d@{ts} was deleted whole but reads back: {row:?}"));
            }
            if row.contains_key("v") && covered(*ts, false) {
                return Err(format!("field v of d@{ts} was deleted but reads back: {row:?}"));
            }
            if row.get("w") != Some(&gemba::Value::I64(*ts)) {
                return Err(format!("row d@{ts} has wrong values {row:?}"));
            }
        }
        for ts in 0..before {
            if !maybe_covered(ts) && !got.contains_key(&("d".to_string(), ts)) {
                return Err(format!("acknowledged row d@{ts} missing (no delete covers it)"));
            }
        }
        Ok(got.len())
    };
    let mut scans = 0;
    let mut last = (progress.load(Ordering::SeqCst), Instant::now());
    let mut failure = None;
    while started.elapsed() < Duration::from_secs(3) && failure.is_none() {
        let must = deletes.lock().unwrap().clone();
        let before = acked.load(Ordering::SeqCst) as i64;
        let r = try_dump(&db).and_then(|got| {
            let may = deletes.lock().unwrap().clone();
            let after = acked.load(Ordering::SeqCst) as i64;
            check(&got, &must, &may, before, after)
        });
        if let Err(e) = r {
            failure = Some(format!("scan {scans}: {e}"));
        }
        scans += 1;
        let p = progress.load(Ordering::SeqCst);
        if p != last.0 {
            last = (p, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            failure =
                Some(format!("deadlock: no write, delete or flush finished for 20 s ({:?})", db.stats()));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for h in hs {
        h.join().unwrap().unwrap();
    }
    if let Some(f) = failure {
        panic!("{f}");
    }
    let dels = deletes.lock().unwrap().clone();
    let n = acked.load(Ordering::SeqCst) as i64;
    let rows = check(&try_dump(&db).unwrap(), &dels, &dels, n, n).unwrap();
    let stats = db.stats();
    Arc::into_inner(db).unwrap().close().unwrap();
    let db = Db::open(dir.path(), opts).unwrap();
    check(&try_dump(&db).unwrap(), &dels, &dels, n, n).map_err(|e| format!("after reopen: {e}")).unwrap();
    db.verify().unwrap();
    println!(
        "deletes: {:.1} s, {n} rows written, {} deletes, {scans} scans, {rows} rows left, {} compactions, {} tombstones",
        started.elapsed().as_secs_f64(),
        dels.len(),
        stats.compactions,
        stats.tombstones
    );
    assert!(dels.len() > 20 && stats.compactions > 0, "too little happened");
    assert_eq!(panics(), 0, "a gemba background thread panicked");
}
