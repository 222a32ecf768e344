//! Flush: turning a memtable of 100 machines × 8 channels into compressed segment files
//! (encode, write, fsync, publish), a sparse history spread over some sixty weekly partitions
//! (one file each), and compaction of several flushed segments into one.

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemba::{Col, Db, Options, SyncPolicy, WriteBatch};

fn write_round(db: &Db, machines: usize, rows: usize, t0: i64) -> u64 {
    write_spread(db, machines, rows, t0, 10_000, 0)
}

/// Writes `machines` machines of `rows` rows every `interval` µs, machine `m` starting at
/// `t0 + m * stagger`.
fn write_spread(db: &Db, machines: usize, rows: usize, t0: i64, interval: i64, stagger: i64) -> u64 {
    let mut points = 0;
    for m in 0..machines {
        let d = common::machine(m as u64 + 1, rows, t0 + m as i64 * stagger, interval);
        let mut b = WriteBatch::new();
        let mut cols: Vec<(&str, Col)> = (0..6).map(|f| (common::FIELDS[f], Col::f64(&d.f64s[f]))).collect();
        cols.push((common::FIELDS[6], Col::i64(&d.status)));
        cols.push((common::FIELDS[7], Col::bool(&d.alarm)));
        b.columns(&common::machine_name(m), &d.ts, cols).unwrap();
        points += b.points() as u64;
        db.write(&b).unwrap();
    }
    points
}

fn flush(c: &mut Criterion) {
    let (machines, rows) = (100, 2_000);
    let mut g = c.benchmark_group("flush");
    g.sample_size(10).measurement_time(Duration::from_secs(6)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements((machines * rows * 8) as u64));
    let dir = tempfile::tempdir().unwrap();
    // A budget large enough that nothing flushes before the timed call, and no automatic
    // compaction: every round lands in the same partition, and a compaction of the growing
    // partition running in the background would be timed with the next flush.
    let opts = Options {
        sync: SyncPolicy::Os,
        memtable_bytes_max: 1 << 30,
        compaction_trigger: usize::MAX,
        ..Options::default()
    };
    let db = Db::open(dir.path(), opts).unwrap();
    let mut t0 = 1_704_067_200_000_000i64;
    g.bench_function("memtable_to_segments/1.6M_points", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                write_round(&db, machines, rows, t0);
                t0 += rows as i64 * 10_000;
                let start = Instant::now();
                db.flush().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    // 32 machines sampled every 5 minutes for a week each, each starting three weeks after
    // the previous: some sixty partitions of a few thousand points, a file each.
    let (sparse_machines, sparse_rows) = (32, 2_000);
    g.throughput(Throughput::Elements((sparse_machines * sparse_rows * 8) as u64));
    g.bench_function("sparse_history/64_partitions", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let opts =
                    Options { sync: SyncPolicy::Os, memtable_bytes_max: 1 << 30, ..Options::default() };
                let db = Db::open(dir.path(), opts).unwrap();
                let week = 7 * 86_400_000_000i64;
                write_spread(&db, sparse_machines, sparse_rows, 1_704_067_200_000_000, 300_000_000, 3 * week);
                let start = Instant::now();
                db.flush().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.throughput(Throughput::Elements((4 * machines * rows / 4 * 8) as u64));
    g.bench_function("compact_4_segments/1.6M_points", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let opts = Options { sync: SyncPolicy::Os, compaction_trigger: 64, ..Options::default() };
                let db = Db::open(dir.path(), opts).unwrap();
                for k in 0..4 {
                    write_round(
                        &db,
                        machines,
                        rows / 4,
                        1_704_067_200_000_000 + k * (rows as i64 / 4) * 10_000,
                    );
                    db.flush().unwrap();
                }
                let start = Instant::now();
                db.compact().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, flush);
criterion_main!(benches);
