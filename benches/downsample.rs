//! Downsampling: one machine with narrow buckets (decoding), the fleet with the workload's
//! q3 buckets, whole-range aggregates answered from block statistics, and the same fleet query
//! with the data still in the memtable.

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemba::{Agg, Machines};

fn downsample(c: &mut Criterion) {
    let (machines, rows, interval) = (100, 6_000, 10_000);
    let (_dir, db, points) = common::filled_db(machines, rows, interval);
    let t0 = 1_704_067_200_000_000i64;
    let span = rows as i64 * interval;
    let mut g = c.benchmark_group("downsample");
    g.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));

    g.throughput(Throughput::Elements(rows as u64 * 8));
    g.bench_function("one_machine/1000_buckets", |b| {
        b.iter(|| {
            db.downsample(common::machine_name(7).as_str(), t0..t0 + span, span / 1000)
                .aggs([Agg::Count, Agg::Min, Agg::Max, Agg::Avg])
                .run()
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(points));
    g.bench_function("fleet/100_buckets_avg_max", |b| {
        b.iter(|| {
            db.downsample(Machines::All, t0..t0 + span, span / 100).aggs([Agg::Avg, Agg::Max]).run().unwrap()
        })
    });
    g.bench_function("fleet/whole_range_count_sum", |b| {
        b.iter(|| {
            let out = db.aggregate(Machines::All, ..).run().unwrap();
            assert_eq!(out.counters.blocks_decoded, 0);
            out
        })
    });
    g.finish();
}

criterion_group!(benches, downsample);
criterion_main!(benches);
