//! Model test: random batches (duplicates, out-of-order rows, missing values, type errors) and
//! reopens, checked against a `BTreeMap` after every step.

mod common;

use common::{Model, assert_same, dump};
use gemba::{Db, Error, Options, SyncPolicy, Value, WriteBatch};
use proptest::prelude::*;

const MACHINES: [&str; 3] = ["press-01", "pump/7", "robot-ü"];
const FIELDS: [&str; 3] = ["speed", "status", "alarm"];

fn value_for(field: usize, x: i64) -> Value {
    match field {
        0 => Value::F64(match x % 7 {
            0 => f64::NAN,
            1 => -0.0,
            2 => f64::INFINITY,
            _ => x as f64 / 10.0,
        }),
        1 => Value::I64(x.wrapping_mul(0x9E37_79B9)),
        _ => Value::Bool(x % 2 == 0),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Rows: (machine, ts, per field an optional value seed).
    Write(Vec<(usize, i64, [Option<i64>; 3])>),
    /// A row whose field has the wrong type.
    WrongType(usize, i64),
    Reopen,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let row = (
        0..3usize,
        -20i64..20,
        [
            proptest::option::of(0i64..1000),
            proptest::option::of(0i64..1000),
            proptest::option::of(0i64..1000),
        ],
    );
    prop_oneof![
        6 => proptest::collection::vec(row, 1..12).prop_map(Op::Write),
        1 => (0..3usize, -20i64..20).prop_map(|(m, t)| Op::WrongType(m, t)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
    ]
}

fn apply(model: &mut Model, rows: &[(usize, i64, [Option<i64>; 3])]) {
    for &(m, t, vals) in rows {
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let row = model.entry((MACHINES[m].to_string(), t)).or_default();
        for (f, v) in vals.iter().enumerate() {
            if let Some(x) = v {
                row.insert(FIELDS[f].to_string(), value_for(f, *x));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn matches_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        // Small memtables and partitions: automatic flushes and many segments happen too.
        let open = || {
            let opts = Options { sync: SyncPolicy::Os, memtable_bytes_max: 8192, partition_width: 16, block_rows: 3, ..Options::default() };
            Db::open(dir.path(), opts).unwrap()
        };
        let mut db = open();
        let mut model = Model::new();
        for op in &ops {
            match op {
                Op::Write(rows) => {
                    let mut b = WriteBatch::new();
                    for &(m, t, vals) in rows {
                        let fields: Vec<(&str, Value)> = vals
                            .iter()
                            .enumerate()
                            .filter_map(|(f, v)| v.map(|x| (FIELDS[f], value_for(f, x))))
                            .collect();
                        b.row(MACHINES[m], t, fields).unwrap();
                    }
                    db.write(&b).unwrap();
                    apply(&mut model, rows);
                }
                Op::WrongType(m, t) => {
                    // Only meaningful once the field's type is fixed as F64 on this machine.
                    let speed_exists = model.iter().any(|((mm, _), r)| mm == MACHINES[*m] && r.contains_key("speed"));
                    if !speed_exists {
                        continue;
                    }
                    let mut b = WriteBatch::new();
                    b.row(MACHINES[*m], *t, [("speed", Value::I64(1))]).unwrap();
                    // A good row in the same batch must not land either.
                    b.row(MACHINES[(*m + 1) % 3], *t, [("status", Value::I64(1))]).unwrap();
                    let r = db.write(&b);
                    prop_assert!(matches!(r, Err(Error::TypeMismatch { .. })), "{r:?}");
                }
                Op::Reopen => {
                    db.close().unwrap();
                    db = open();
                }
                Op::Flush => db.flush().unwrap(),
            }
            assert_same(&dump(&db), &model);
        }
        db.close().unwrap();
        let db = open();
        assert_same(&dump(&db), &model);
    }
}

#[test]
fn types_are_fixed_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let mut b = WriteBatch::new();
    b.row("m", 1, [("speed", 1.0)]).unwrap();
    db.write(&b).unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let mut b = WriteBatch::new();
    b.row("m", 2, [("speed", 1i64)]).unwrap();
    match db.write(&b) {
        Err(Error::TypeMismatch { machine, field, expected, found }) => {
            assert_eq!((machine.as_str(), field.as_str()), ("m", "speed"));
            assert_eq!((expected, found), (gemba::FieldType::F64, gemba::FieldType::I64));
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
    // Another machine may use the name with another type.
    let mut b = WriteBatch::new();
    b.row("n", 2, [("speed", 1i64)]).unwrap();
    db.write(&b).unwrap();
}
