//! Latest values: every field of 1,000 machines (from block statistics), and of one machine,
//! with data in segments and with some still in the memtable.

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemba::{Col, Machines, WriteBatch};

fn latest(c: &mut Criterion) {
    let (_dir, db, _) = common::filled_db(1_000, 600, 100_000);
    let mut g = c.benchmark_group("latest");
    g.sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(8_000));
    g.bench_function("1000_machines/all_fields/segments", |b| {
        b.iter(|| {
            let v = db.latest(Machines::All).run().unwrap();
            assert_eq!(v.len(), 8_000);
            v
        })
    });
    // A few fresh rows per machine in the memtable on top.
    for m in 0..1_000 {
        let mut b = WriteBatch::new();
        let ts = [1_704_067_200_000_000i64 + 600 * 100_000];
        b.columns(&common::machine_name(m), &ts, [("temp_c", Col::f64(&[50.0]))]).unwrap();
        db.write(&b).unwrap();
    }
    g.bench_function("1000_machines/all_fields/segments+memtable", |b| {
        b.iter(|| db.latest(Machines::All).run().unwrap())
    });
    g.throughput(Throughput::Elements(8));
    let one = common::machine_name(500);
    g.bench_function("one_machine", |b| b.iter(|| db.latest(one.as_str()).run().unwrap()));
    g.finish();
}

criterion_group!(benches, latest);
criterion_main!(benches);
