//! Scans: a window of one machine, one machine whole, and a full scan of the fleet (decoding
//! alone, and with a sum over every value), as flushed and after compaction.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemba::{Machines, Values};

fn scan(c: &mut Criterion) {
    let (machines, rows, interval) = (100, 6_000, 10_000);
    let (_dir, db, points) = common::filled_db(machines, rows, interval);
    let t0 = 1_704_067_200_000_000i64;
    let span = rows as i64 * interval;
    let mut g = c.benchmark_group("scan");
    g.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let m = common::machine_name(7);
    g.throughput(Throughput::Elements(rows as u64 / 10 * 8));
    g.bench_function("one_machine/10%_window", |b| {
        b.iter(|| db.scan(m.as_str(), t0 + span * 45 / 100..t0 + span * 55 / 100).collect().unwrap())
    });
    g.throughput(Throughput::Elements(rows as u64 * 8));
    g.bench_function("one_machine/all", |b| b.iter(|| db.scan(m.as_str(), ..).collect().unwrap()));
    g.throughput(Throughput::Elements(points));
    g.bench_function("fleet/decode", |b| b.iter(|| decode(&db)));
    g.bench_function("fleet/decode_and_sum", |b| b.iter(|| decode_and_sum(&db)));
    // The same data as a long-running database holds its history: compacted (blocks of up
    // to `compaction_block_rows`, here one per machine and group) instead of as flushed.
    let (_dir2, compacted, points2) = common::filled_db(machines, rows, interval);
    compacted.compact().unwrap();
    g.throughput(Throughput::Elements(points2));
    g.bench_function("fleet_compacted/decode_and_sum", |b| b.iter(|| decode_and_sum(&compacted)));
    g.finish();
}

/// A full scan of every machine, counting the values it returns (the decoding alone).
fn decode(db: &gemba::Db) -> u64 {
    full_scan(db, false).1
}

/// A full scan of every machine, summing every float value.
fn decode_and_sum(db: &gemba::Db) -> (f64, u64) {
    full_scan(db, true)
}

/// Scans every machine; counts the values and, with `sum`, adds up every float.
fn full_scan(db: &gemba::Db, sum: bool) -> (f64, u64) {
    let (mut total, mut n) = (0.0, 0u64);
    for batch in db.scan(Machines::All, ..).run().unwrap() {
        for c in black_box(batch.unwrap()).columns {
            if sum && let Values::F64(v) = &c.values {
                total += common::sum_lanes(v);
            }
            n += c.values.len() as u64;
        }
    }
    (total, n)
}

criterion_group!(benches, scan);
criterion_main!(benches);
