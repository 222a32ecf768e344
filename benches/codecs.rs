//! Encode / decode throughput per codec (criterion, `Throughput::Elements`).
//!
//! Inputs: real columns (skab, nab, factory) when the data folders exist, synthetic stand-ins
//! otherwise; regular and jittered timestamps; a status-code column; booleans; a FOR bit-pack
//! column. Chunks of 65,536 values (one block). Runs are short: 1 s warm-up, 2 s measurement.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gemba::codec::*;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const N: usize = 65_536;

/// Up to `N` non-missing values of `field`, concatenated over the machines of `dir`.
/// A column of a dataset: `shared/NAME` is `../shared/data/NAME`; `factory/NAME` is a
/// directory named in `GEMBA_FACTORY_DATA` (generated with `gen_factory.py`), if set.
fn column(dir: &str, field: &str) -> Option<Vec<f64>> {
    let dir = match dir.split_once('/') {
        Some(("shared", name)) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(name),
        Some(("factory", _)) => std::path::PathBuf::from(std::env::var("GEMBA_FACTORY_DATA").ok()?),
        _ => return None,
    };
    let dir = dir.as_path();
    let mut files: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "csv"));
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).ok()?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split(',').collect();
        let Some(idx) = header.iter().position(|h| *h == field) else { continue };
        for line in lines {
            if let Some(c) = line.split(',').nth(idx)
                && let Ok(v) = c.parse::<f64>()
            {
                out.push(v);
                if out.len() == N {
                    return Some(out);
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A 2-decimal random walk with steps in [-8, 8): delta + bit-packing (w = 4) wins.
fn synthetic_walk(rng: &mut Rng) -> Vec<f64> {
    let mut x = 2000i64;
    (0..N)
        .map(|_| {
            x += (rng.next() % 16) as i64 - 8;
            x as f64 / 100.0
        })
        .collect()
}

/// 2-decimal values spread uniformly over 10.24 units: ALP + FOR bit-packing (w = 10).
fn synthetic_uniform(rng: &mut Rng) -> Vec<f64> {
    (0..N).map(|_| (20_000 + (rng.next() % 1024) as i64) as f64 / 100.0).collect()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
}

fn floats(c: &mut Criterion) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut cols: Vec<(String, Vec<f64>)> = Vec::new();
    for (ds, f) in [
        ("factory/1ms", "current_a"),
        ("factory/1ms", "temp_c"),
        ("factory/1ms", "torque_nm"),
        ("factory/1ms", "speed_rpm"),
        ("shared/skab", "Temperature"),
        ("shared/skab", "Voltage"),
        ("shared/nab", "value"),
    ] {
        match column(ds, f) {
            Some(v) => cols.push((format!("{}/{f}", ds.rsplit('/').next().unwrap_or(ds)), v)),
            None => eprintln!("NOTICE: {ds} {f} missing; skipped"),
        }
    }
    cols.push(("synthetic/alp-for-w10".into(), synthetic_uniform(&mut rng)));
    cols.push(("synthetic/alp-delta-for-w4".into(), synthetic_walk(&mut rng)));
    let mut g = c.benchmark_group("f64");
    for (name, v) in &cols {
        let mut buf = Vec::new();
        encode_f64(v, &mut buf);
        eprintln!(
            "{name}: {} values, {:.2} bits/value, {}",
            v.len(),
            buf.len() as f64 * 8.0 / v.len() as f64,
            describe(&buf)
        );
        g.throughput(Throughput::Elements(v.len() as u64));
        g.bench_with_input(BenchmarkId::new("decode", name), &buf, |b, buf| {
            let mut out = Vec::with_capacity(v.len());
            b.iter(|| decode_f64(black_box(buf), v.len(), &mut out).unwrap());
        });
        g.bench_with_input(BenchmarkId::new("encode", name), v, |b, v| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                encode_f64(black_box(v), &mut out)
            });
        });
    }
    g.finish();
}

fn ints(c: &mut Criterion) {
    let mut rng = Rng(42);
    let for7: Vec<i64> = (0..N).map(|_| 1_000_000 + (rng.next() % 128) as i64).collect();
    let status: Vec<i64> = match column("factory/1ms", "status") {
        Some(v) => v.iter().map(|&x| x as i64).collect(),
        None => (0..N).map(|i| ((i / 5000) % 4) as i64).collect(),
    };
    let mut g = c.benchmark_group("i64");
    for (name, v) in [("for-bitpack-w7", &for7), ("status", &status)] {
        let mut buf = Vec::new();
        encode_i64(v, &mut buf);
        eprintln!("{name}: {:.3} bits/value, {}", buf.len() as f64 * 8.0 / v.len() as f64, describe(&buf));
        g.throughput(Throughput::Elements(v.len() as u64));
        g.bench_with_input(BenchmarkId::new("decode", name), &buf, |b, buf| {
            let mut out = Vec::with_capacity(v.len());
            b.iter(|| decode_i64(black_box(buf), v.len(), &mut out).unwrap());
        });
        g.bench_with_input(BenchmarkId::new("encode", name), v, |b, v| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                encode_i64(black_box(v), &mut out)
            });
        });
    }
    g.finish();
}

fn timestamps(c: &mut Criterion) {
    let mut rng = Rng(7);
    let regular: Vec<i64> = (0..N as i64).map(|i| 1_704_067_200_000_000 + i * 1000).collect();
    let jitter: Vec<i64> = (0..N as i64)
        .map(|i| 1_704_067_200_000_000 + i * 1_000_000 + (rng.next() % 40_001) as i64 - 20_000)
        .collect();
    let mut gaps = regular.clone();
    for (i, t) in gaps.iter_mut().enumerate() {
        *t += (i as i64 / 5000) * 3_000_000;
    }
    let mut g = c.benchmark_group("ts");
    for (name, v) in [("regular", &regular), ("regular-with-gaps", &gaps), ("jitter-20ms", &jitter)] {
        let mut buf = Vec::new();
        encode_timestamps(v, &mut buf);
        eprintln!("{name}: {:.3} bits/value, {}", buf.len() as f64 * 8.0 / v.len() as f64, describe(&buf));
        g.throughput(Throughput::Elements(v.len() as u64));
        g.bench_with_input(BenchmarkId::new("decode", name), &buf, |b, buf| {
            let mut out = Vec::with_capacity(v.len());
            b.iter(|| decode_timestamps(black_box(buf), v.len(), &mut out).unwrap());
        });
        g.bench_with_input(BenchmarkId::new("encode", name), v, |b, v| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                encode_timestamps(black_box(v), &mut out)
            });
        });
    }
    g.finish();
}

fn bools(c: &mut Criterion) {
    let mut rng = Rng(99);
    let runs: Vec<bool> = (0..N).map(|i| (i / 3000) % 2 == 0).collect();
    let noise: Vec<bool> = (0..N).map(|_| rng.next() & 1 == 1).collect();
    let mut g = c.benchmark_group("bool");
    for (name, v) in [("runs", &runs), ("noise", &noise)] {
        let mut buf = Vec::new();
        encode_bool(v, &mut buf);
        eprintln!("{name}: {:.3} bits/value, {}", buf.len() as f64 * 8.0 / v.len() as f64, describe(&buf));
        g.throughput(Throughput::Elements(v.len() as u64));
        g.bench_with_input(BenchmarkId::new("decode", name), &buf, |b, buf| {
            let mut out = Vec::with_capacity(v.len());
            b.iter(|| decode_bool(black_box(buf), v.len(), &mut out).unwrap());
        });
        g.bench_with_input(BenchmarkId::new("encode", name), v, |b, v| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                encode_bool(black_box(v), &mut out)
            });
        });
    }
    g.finish();
}

/// The fast paths on 4,096-value chunks, whose output (32 KiB) stays in the core's caches; at
/// 65,536 values the 512 KiB output alone makes decoding bound by memory writes here.
fn fast_paths_4k(c: &mut Criterion) {
    const M: usize = 4096;
    let mut rng = Rng(1234);
    let alp_for: Vec<f64> = synthetic_uniform(&mut rng)[..M].to_vec();
    let alp_delta: Vec<f64> = synthetic_walk(&mut rng)[..M].to_vec();
    let for7: Vec<i64> = (0..M).map(|_| 1_000_000 + (rng.next() % 128) as i64).collect();
    let ts: Vec<i64> = (0..M as i64).map(|i| 1_704_067_200_000_000 + i * 1000).collect();
    let mut g = c.benchmark_group("fast-4k");
    g.throughput(Throughput::Elements(M as u64));
    for (name, v) in [("alp-for", &alp_for), ("alp-delta-for", &alp_delta)] {
        let mut buf = Vec::new();
        encode_f64(v, &mut buf);
        eprintln!("4k {name}: {}", describe(&buf));
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            let mut out = Vec::with_capacity(M);
            b.iter(|| decode_f64(black_box(&buf), M, &mut out).unwrap());
        });
    }
    let mut buf = Vec::new();
    encode_i64(&for7, &mut buf);
    eprintln!("4k for-bitpack-w7: {}", describe(&buf));
    g.bench_function(BenchmarkId::new("decode", "for-bitpack-w7"), |b| {
        let mut out = Vec::with_capacity(M);
        b.iter(|| decode_i64(black_box(&buf), M, &mut out).unwrap());
    });
    let mut buf = Vec::new();
    encode_timestamps(&ts, &mut buf);
    g.bench_function(BenchmarkId::new("decode", "ts-const"), |b| {
        let mut out = Vec::with_capacity(M);
        b.iter(|| decode_timestamps(black_box(&buf), M, &mut out).unwrap());
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = fast_paths_4k, floats, ints, timestamps, bools
}
criterion_main!(benches);
