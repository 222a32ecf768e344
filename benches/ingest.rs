//! Ingest throughput: batches of 1,000 rows × 8 fields through the row API and the columnar
//! bulk path, under each sync policy, from 1, 4 and 8 writer threads. Throughput is points/s.
//! Also: late writes, a fleet of new machines coming online (machines/s), and group commit of
//! small durable batches.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemba::{Col, Db, Options, SyncPolicy, WriteBatch};

const ROWS: usize = 1_000;
const FIELDS: [&str; 8] = ["speed", "torque", "current", "temp", "vibration", "pressure", "status", "alarm"];
const POINTS: u64 = (ROWS * FIELDS.len()) as u64;

/// A sensor-like value for field `f` at row `i`.
fn value(f: usize, i: i64) -> f64 {
    ((i * 37 + f as i64 * 11) % 1000) as f64 / 10.0
}

fn row_batch(machine: &str, t0: i64, rows: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    for i in 0..rows as i64 {
        b.row(machine, t0 + i * 1000, FIELDS.iter().enumerate().map(|(f, n)| (*n, value(f, i)))).unwrap();
    }
    b
}

fn columnar_batch(machine: &str, t0: i64, cols: &mut [Vec<f64>], ts: &mut Vec<i64>) -> WriteBatch {
    ts.clear();
    ts.extend((0..ROWS as i64).map(|i| t0 + i * 1000));
    for (f, c) in cols.iter_mut().enumerate() {
        c.clear();
        c.extend((0..ROWS as i64).map(|i| value(f, i)));
    }
    let mut b = WriteBatch::new();
    b.columns(machine, ts, FIELDS.iter().zip(cols.iter()).map(|(n, c)| (*n, Col::f64(c)))).unwrap();
    b
}

/// Runs `threads` writers, each writing `batches` batches of `rows` rows (the columnar path
/// always writes `ROWS`); returns the elapsed time.
fn drive(
    db: &Arc<Db>,
    clock: &Arc<AtomicI64>,
    threads: usize,
    batches: u64,
    rows: usize,
    columnar: bool,
) -> Duration {
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            let clock = clock.clone();
            std::thread::spawn(move || {
                let mut cols = vec![Vec::with_capacity(ROWS); FIELDS.len()];
                let mut ts = Vec::with_capacity(ROWS);
                for k in 0..batches {
                    let machine = format!("m{t}-{}", k % 16);
                    let t0 = clock.fetch_add(rows as i64 * 1000, Ordering::Relaxed);
                    let b = if columnar {
                        columnar_batch(&machine, t0, &mut cols, &mut ts)
                    } else {
                        row_batch(&machine, t0, rows)
                    };
                    db.write(black_box(&b)).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed()
}

fn ingest(c: &mut Criterion) {
    let policies = [
        ("always", SyncPolicy::Always),
        ("periodic", SyncPolicy::Periodic(Duration::from_millis(100))),
        ("os", SyncPolicy::Os),
    ];
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for (pname, policy) in policies {
        for threads in [1usize, 4, 8] {
            for columnar in [false, true] {
                let api = if columnar { "columnar" } else { "rows" };
                let dir = tempfile::tempdir().unwrap();
                let opts = Options { sync: policy, ..Options::default() };
                let db = Arc::new(Db::open(dir.path(), opts).unwrap());
                let clock = Arc::new(AtomicI64::new(0));
                g.throughput(Throughput::Elements(POINTS * threads as u64));
                g.bench_function(format!("{pname}/{api}/{threads}t"), |b| {
                    b.iter_custom(|iters| drive(&db, &clock, threads, iters, ROWS, columnar))
                });
                drop(db);
            }
        }
    }
    g.finish();
}

/// In-order ingest against ingest where 10% of the rows arrive late, into partitions that were
/// already flushed (a gateway's backlog). Each measurement includes the flush, so the cost of
/// the extra segments in old partitions is counted.
fn late(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest_late");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(POINTS));
    for late_every in [0u64, 10] {
        let name = if late_every == 0 { "in_order" } else { "10%_late" };
        let dir = tempfile::tempdir().unwrap();
        // Hour-long partitions; late batches go two days back.
        let opts = Options { sync: SyncPolicy::Os, partition_width: 3_600_000_000, ..Options::default() };
        let db = Db::open(dir.path(), opts).unwrap();
        let clock = AtomicI64::new(3 * 86_400_000_000);
        let mut k = 0u64;
        let mut cols = vec![Vec::with_capacity(ROWS); FIELDS.len()];
        let mut ts = Vec::with_capacity(ROWS);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    k += 1;
                    let now = clock.fetch_add(ROWS as i64 * 1000, Ordering::Relaxed);
                    let t0 = if late_every > 0 && k.is_multiple_of(late_every) {
                        now - 2 * 86_400_000_000
                    } else {
                        now
                    };
                    let b = columnar_batch(&format!("m{}", k % 16), t0, &mut cols, &mut ts);
                    db.write(&b).unwrap();
                }
                db.flush().unwrap();
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// A fleet coming online: the first write of each of N machines, one batch per machine (a
/// gateway per machine). Each new machine copies the catalog (copy-on-write); the time per
/// machine must stay flat as N grows, not grow with it.
fn new_machines(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest_new_machines");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    for n in [1_000usize, 16_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_machines"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let db =
                        Db::open(dir.path(), Options { sync: SyncPolicy::Os, ..Options::default() }).unwrap();
                    let start = Instant::now();
                    for m in 0..n {
                        let mut b = WriteBatch::new();
                        b.row(&format!("machine-{m:06}"), 1, FIELDS.iter().map(|f| (*f, 1.0))).unwrap();
                        db.write(&b).unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// Group commit where the log's sync is the cost: durable writes of small batches (10 rows x 8
/// fields, a gateway forwarding a few samples at a time) from 1 and 8 threads, on a log in its
/// steady state. One thread pays a sync per batch; eight share each sync (with 1,000-row
/// batches the same two cores are busy encoding instead, see `ingest/always`).
///
/// Steady state: before measuring, eight threads write this workload until three flushes have
/// finished, so the log file being written reuses a flushed file of the workload's own size.
/// (A new database's first log files grow by appending, and an append's sync also commits the
/// file's new blocks: about twice as long on this machine's ext4.)
fn group_commit(c: &mut Criterion) {
    const SMALL: usize = 10;
    let mut g = c.benchmark_group("ingest_group_commit");
    g.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for threads in [1usize, 8] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), Options::default()).unwrap());
        let clock = Arc::new(AtomicI64::new(0));
        let mut flushes = 0;
        let mut flushed = db.stats().flushed_seq;
        while flushes < 3 {
            drive(&db, &clock, 8, 500, SMALL, false);
            let now = db.stats().flushed_seq;
            if now != flushed {
                flushes += 1;
                flushed = now;
            }
        }
        g.throughput(Throughput::Elements((SMALL * FIELDS.len() * threads) as u64));
        g.bench_function(format!("always/10_rows/{threads}t"), |b| {
            b.iter_custom(|iters| drive(&db, &clock, threads, iters, SMALL, false))
        });
    }
    g.finish();
}

criterion_group!(benches, ingest, late, new_machines, group_commit);
criterion_main!(benches);
