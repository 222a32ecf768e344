//! Every query against a naive model: random data with out-of-order writes, duplicates,
//! missing values, late data into flushed partitions, several segments and a live memtable.
//! Values are small binary fractions so sums are exact in any order, and the statistics path
//! (pushdown) and the decoding path must agree with the model exactly.

mod common;

use std::collections::BTreeMap;

use common::{Model, assert_same, dump};
use gemba::{Agg, AggColumn, Db, Error, Machines, Options, SyncPolicy, TimeRange, Value, Values, WriteBatch};
use proptest::prelude::*;

const MACHINES: [&str; 3] = ["m-a", "m-b", "m-c"];
const FIELDS: [&str; 3] = ["x", "n", "on"];

fn value(field: usize, seed: i64) -> Value {
    match field {
        0 => Value::F64((seed % 97 - 48) as f64 / 4.0),
        1 => Value::I64(seed % 1000 - 500),
        _ => Value::Bool(seed % 3 == 0),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(usize, i64, [Option<i64>; 3])>),
    Flush,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let cell = || proptest::option::weighted(0.8, 0i64..10_000);
    let row = (0..3usize, 0i64..600, [cell(), cell(), cell()]);
    let op = prop_oneof![
        5 => proptest::collection::vec(row, 1..40).prop_map(Op::Write),
        1 => Just(Op::Flush),
    ];
    proptest::collection::vec(op, 1..14)
}

fn open(dir: &std::path::Path) -> Db {
    let opts = Options {
        sync: SyncPolicy::Os,
        partition_width: 128,
        block_rows: 5,
        memtable_bytes_max: 1 << 20,
        ..Options::default()
    };
    Db::open(dir, opts).unwrap()
}

fn build(ops: &[Op], dir: &std::path::Path) -> (Db, Model) {
    let db = open(dir);
    let mut model = Model::new();
    for op in ops {
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
                    if vals.iter().any(Option::is_some) {
                        let row = model.entry((MACHINES[m].to_string(), t)).or_default();
                        for (f, v) in vals.iter().enumerate() {
                            if let Some(x) = v {
                                row.insert(FIELDS[f].to_string(), value(f, *x));
                            }
                        }
                    }
                }
                db.write(&b).unwrap();
            }
            Op::Flush => db.flush().unwrap(),
        }
        // After every step: `latest` keeps a cache of the segments' last values that each
        // flush extends; it must agree with the model throughout.
        check_latest(&db, &model);
    }
    (db, model)
}

/// The model's values of one machine's field in `[lo, hi)`, in time order.
fn series(model: &Model, m: &str, f: &str, lo: i64, hi: i64) -> Vec<(i64, Value)> {
    model
        .range((m.to_string(), lo)..(m.to_string(), hi))
        .filter_map(|((_, t), row)| row.get(f).map(|v| (*t, *v)))
        .collect()
}

fn as_f64(v: &Value) -> f64 {
    v.as_f64()
}

fn cmp_key(v: &Value) -> f64 {
    as_f64(v)
}

/// Naive downsampling: bucket start → (count, sum, min, max, first, last).
fn naive_buckets(
    vals: &[(i64, Value)],
    width: i64,
    offset: i64,
) -> BTreeMap<i64, (u64, f64, Value, Value, Value, Value)> {
    let mut out: BTreeMap<i64, (u64, f64, Value, Value, Value, Value)> = BTreeMap::new();
    for (t, v) in vals {
        let b = (t - offset).div_euclid(width) * width + offset;
        let e = out.entry(b).or_insert((0, 0.0, *v, *v, *v, *v));
        e.0 += 1;
        e.1 += as_f64(v);
        if cmp_key(v) < cmp_key(&e.2) {
            e.2 = *v;
        }
        if cmp_key(v) > cmp_key(&e.3) {
            e.3 = *v;
        }
        e.5 = *v;
    }
    out
}

fn col_value(c: &Values, i: usize) -> Value {
    c.get(i).unwrap()
}

fn check_downsample(
    db: &Db,
    model: &Model,
    machines: &[&str],
    lo: i64,
    hi: i64,
    width: i64,
    offset: i64,
) -> gemba::QueryCounters {
    let aggs = [Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::Avg, Agg::First, Agg::Last];
    let list: Vec<String> = machines.iter().map(|s| s.to_string()).collect();
    let out = db
        .downsample(Machines::List(list), lo..hi, width)
        .offset(offset)
        .fields(FIELDS)
        .aggs(aggs)
        .run()
        .unwrap();
    let mut expected = Vec::new();
    let mut sorted = machines.to_vec();
    sorted.sort();
    sorted.dedup();
    for m in sorted {
        for f in FIELDS {
            let vals = series(model, m, f, lo, hi);
            if !vals.is_empty() {
                expected.push((m, f, naive_buckets(&vals, width, offset)));
            }
        }
    }
    // Fields a machine never had do not appear; fields it has but without values here neither.
    assert_eq!(
        out.series.len(),
        expected.len(),
        "series count; got {:?}",
        out.series.iter().map(|s| (&s.machine, &s.field)).collect::<Vec<_>>()
    );
    for (s, (m, f, want)) in out.series.iter().zip(&expected) {
        assert_eq!((&*s.machine, &*s.field), (*m, *f));
        let buckets: Vec<i64> = want.keys().copied().collect();
        assert_eq!(s.buckets, buckets, "{m}/{f} buckets");
        for (i, (_, w)) in want.iter().enumerate() {
            let ctx = format!("{m}/{f} bucket {}", s.buckets[i]);
            match s.agg(Agg::Count).unwrap() {
                AggColumn::Count(c) => assert_eq!(c[i], w.0, "{ctx} count"),
                _ => unreachable!(),
            }
            assert_eq!(s.agg(Agg::Sum).unwrap().f64(i), w.1, "{ctx} sum");
            assert_eq!(s.agg(Agg::Avg).unwrap().f64(i), w.1 / w.0 as f64, "{ctx} avg");
            let typed = |a: Agg| match s.agg(a).unwrap() {
                AggColumn::Min(v) | AggColumn::Max(v) | AggColumn::First(v) | AggColumn::Last(v) => {
                    col_value(v, i)
                }
                _ => unreachable!(),
            };
            assert_eq!(typed(Agg::Min), w.2, "{ctx} min");
            assert_eq!(typed(Agg::Max), w.3, "{ctx} max");
            assert_eq!(typed(Agg::First), w.4, "{ctx} first");
            assert_eq!(typed(Agg::Last), w.5, "{ctx} last");
        }
    }
    out.counters
}

fn check_scan(db: &Db, model: &Model, m: &str, lo: i64, hi: i64, fields: &[&str]) {
    let got: Vec<(i64, BTreeMap<String, Value>)> = db
        .scan(m, lo..hi)
        .fields(fields.iter().copied())
        .batch_rows(7)
        .collect()
        .unwrap()
        .iter()
        .flat_map(|b| {
            (0..b.rows()).map(move |i| {
                let row =
                    b.columns.iter().filter_map(|c| c.value(i).map(|v| (c.name.to_string(), v))).collect();
                (b.ts[i], row)
            })
        })
        .collect();
    let want: Vec<(i64, BTreeMap<String, Value>)> = model
        .range((m.to_string(), lo)..(m.to_string(), hi))
        .filter_map(|((_, t), row)| {
            let r: BTreeMap<String, Value> = row
                .iter()
                .filter(|(f, _)| fields.contains(&f.as_str()))
                .map(|(f, v)| (f.clone(), *v))
                .collect();
            (!r.is_empty()).then_some((*t, r))
        })
        .collect();
    assert_eq!(got, want, "scan {m} {lo}..{hi} {fields:?}");
}

fn check_latest(db: &Db, model: &Model) {
    let got = db.latest(Machines::All).run().unwrap();
    let mut want = Vec::new();
    for m in MACHINES {
        for f in FIELDS {
            if let Some((t, v)) = series(model, m, f, i64::MIN, i64::MAX).last() {
                want.push((m.to_string(), f.to_string(), *t, *v));
            }
        }
    }
    let got: Vec<_> =
        got.into_iter().map(|l| (l.machine.to_string(), l.field.to_string(), l.ts, l.value)).collect();
    // The machine's own field order can differ from FIELDS: compare as sets.
    let (mut g, mut w) = (got, want);
    g.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    w.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(g, w, "latest");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    #[test]
    fn queries_match_the_model(ops in ops(), seed in 0u64..1_000_000) {
        let dir = tempfile::tempdir().unwrap();
        let (db, model) = build(&ops, dir.path());
        assert_same(&dump(&db), &model);
        let mut r = seed;
        let mut next = |n: i64| { r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((r >> 33) as i64).rem_euclid(n) };
        for _ in 0..6 {
            let lo = next(700) - 50;
            let hi = lo + next(700);
            let m = MACHINES[next(3) as usize];
            let nf = 1 + next(3) as usize;
            check_scan(&db, &model, m, lo, hi, &FIELDS[..nf]);
            let width = 1 + next(300);
            let offset = next(width) - width / 2;
            check_downsample(&db, &model, &[m], lo, hi, width, offset);
            check_downsample(&db, &model, &MACHINES, lo, hi, width, 0);
        }
        check_downsample(&db, &model, &MACHINES, i64::MIN, i64::MAX, 1 << 40, 0);
        check_latest(&db, &model);
        // The same after a reopen (everything from segments and the replayed log).
        db.close().unwrap();
        let db = open(dir.path());
        check_latest(&db, &model);
        check_downsample(&db, &model, &MACHINES, 0, 600, 64, 0);
    }
}

fn regular_db(dir: &std::path::Path, rows: i64) -> (Db, Model) {
    let db = open(dir);
    let mut model = Model::new();
    let mut b = WriteBatch::new();
    for t in 0..rows {
        b.row("m-a", t, [("x", value(0, t * 7))]).unwrap();
        model.entry(("m-a".to_string(), t)).or_default().insert("x".into(), value(0, t * 7));
    }
    db.write(&b).unwrap();
    db.flush().unwrap();
    (db, model)
}

#[test]
fn wide_buckets_are_answered_from_block_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let (db, model) = regular_db(dir.path(), 1000);
    // Blocks of 5 rows (cut at partitions of 128); buckets of 50 rows: only blocks that
    // straddle a bucket boundary are decoded.
    let c = check_downsample(&db, &model, &["m-a"], 0, 1000, 50, 0);
    assert!(c.blocks_from_stats >= 180, "{c:?}");
    assert!(c.blocks_decoded <= 20, "{c:?}");
    // Narrow buckets must decode; the answers still match the model.
    let c = check_downsample(&db, &model, &["m-a"], 0, 1000, 3, 0);
    assert!(c.blocks_from_stats <= 5, "{c:?}");
    assert!(c.blocks_decoded >= 190, "{c:?}");
    // A range edge inside a block decodes that block only.
    let c = check_downsample(&db, &model, &["m-a"], 2, 998, 1000, 0);
    assert!(c.blocks_decoded == 2 && c.blocks_from_stats >= 190, "{c:?}");
    // Whole-range aggregates come from statistics alone.
    let out = db.aggregate("m-a", ..).run().unwrap();
    assert_eq!(out.counters.blocks_decoded, 0);
    assert_eq!(out.series[0].agg(Agg::Count).unwrap().f64(0), 1000.0);
}

#[test]
fn newer_data_overlapping_a_block_disables_its_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut model) = regular_db(dir.path(), 1000);
    // Late rewrite of a few rows, first in the memtable, then as a second segment.
    let mut b = WriteBatch::new();
    for t in [12i64, 13, 503] {
        b.row("m-a", t, [("x", Value::F64(1000.0))]).unwrap();
        model.get_mut(&("m-a".to_string(), t)).unwrap().insert("x".into(), Value::F64(1000.0));
    }
    db.write(&b).unwrap();
    let c = check_downsample(&db, &model, &["m-a"], 0, 1000, 50, 0);
    assert!(c.blocks_decoded >= 2, "overlapped blocks must be decoded: {c:?}");
    db.flush().unwrap();
    let c = check_downsample(&db, &model, &["m-a"], 0, 1000, 50, 0);
    assert!(c.blocks_decoded >= 2, "overlapped blocks must be decoded: {c:?}");
    check_latest(&db, &model);
}

#[test]
fn bad_arguments_give_clear_errors_or_empty_results() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = regular_db(dir.path(), 100);
    assert!(matches!(
        db.downsample("m-a", TimeRange { start: 10, end: 5 }, 10).run(),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(db.downsample("m-a", 0..10, 0).run(), Err(Error::InvalidArgument(_))));
    assert!(matches!(db.downsample("m-a", 0..10, -5).run(), Err(Error::InvalidArgument(_))));
    assert!(matches!(db.downsample("m-a", 0..10, 5).aggs([]).run(), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        db.scan("m-a", TimeRange { start: 10, end: 5 }).collect(),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.aggregate("m-a", TimeRange { start: 10, end: 5 }).run(),
        Err(Error::InvalidArgument(_))
    ));
    match db.downsample("m-a", 0..100, 1).max_buckets(10).run() {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("buckets"), "{m}"),
        other => panic!("expected the bucket limit, got {other:?}"),
    }
    assert_eq!(db.downsample("m-a", 0..100, 10).max_buckets(10).run().unwrap().series[0].buckets.len(), 10);
    // Empty ranges, unknown machines and fields: empty results.
    assert!(db.downsample("m-a", 5..5, 10).run().unwrap().series.is_empty());
    assert!(db.scan("m-a", 5..5).collect().unwrap().is_empty());
    assert!(db.downsample("nope", 0..100, 10).run().unwrap().series.is_empty());
    assert!(db.downsample("m-a", 0..100, 10).fields(["nope"]).run().unwrap().series.is_empty());
    assert!(db.scan("nope", ..).collect().unwrap().is_empty());
    assert!(db.latest("nope").run().unwrap().is_empty());
    assert!(db.machine("nope").unwrap().is_none());
}

#[test]
fn the_catalog_lists_machines_fields_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut b = WriteBatch::new();
    b.row("pump", 50, [("on", true)]).unwrap();
    b.row("press", 10, [("x", Value::F64(1.0)), ("n", Value::I64(2))]).unwrap();
    db.write(&b).unwrap();
    db.flush().unwrap();
    let mut b = WriteBatch::new();
    b.row("press", 900, [("x", 3.0)]).unwrap();
    db.write(&b).unwrap();
    let ms = db.machines().unwrap();
    assert_eq!(ms.iter().map(|m| &*m.name).collect::<Vec<_>>(), vec!["press", "pump"]);
    assert_eq!(ms[0].time_bounds, Some((10, 900)));
    assert_eq!(
        ms[0].fields.iter().map(|f| (&*f.name, f.field_type)).collect::<Vec<_>>(),
        vec![("x", gemba::FieldType::F64), ("n", gemba::FieldType::I64)]
    );
    assert_eq!(ms[1].time_bounds, Some((50, 50)));
    db.close().unwrap();
    let db = open(dir.path());
    assert_eq!(db.machine("press").unwrap().unwrap().time_bounds, Some((10, 900)));
}
