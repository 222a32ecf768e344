//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gemba::{Batch, Db, Value};

/// The log files of a database directory, sorted.
pub fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("wal-") && n.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

/// Offsets of the records in a log file (after its 32-byte header), and the end of the last.
pub fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 32;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > bytes.len() {
            break;
        }
        out.push(pos);
        pos += 8 + len;
    }
    out.push(pos);
    out
}

/// Everything in the database as (machine, ts) → field → value bits (F64 as bits, I64 as u64,
/// Bool as 0/1), read through a full scan.
pub type Model = BTreeMap<(String, i64), BTreeMap<String, Value>>;

pub fn dump(db: &Db) -> Model {
    let mut out = Model::new();
    for b in db.scan(gemba::Machines::All, ..).collect().unwrap() {
        add_batch(&mut out, &b);
    }
    out
}

pub fn add_batch(out: &mut Model, b: &Batch) {
    for (i, &t) in b.ts.iter().enumerate() {
        let mut row = BTreeMap::new();
        for c in &b.columns {
            if let Some(v) = c.value(i) {
                row.insert(c.name.to_string(), v);
            }
        }
        assert!(!row.is_empty(), "scan returned an empty row at {t}");
        let prev = out.insert((b.machine.to_string(), t), row);
        assert!(prev.is_none(), "row {}@{t} returned twice", b.machine);
    }
}

/// Values compared bit for bit (NaN payloads, -0.0).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

pub fn assert_same(got: &Model, want: &Model) {
    let gk: Vec<_> = got.keys().collect();
    let wk: Vec<_> = want.keys().collect();
    assert_eq!(gk, wk, "rows differ");
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.len(), w.len(), "fields differ at {k:?}: got {g:?} want {w:?}");
        for (f, v) in w {
            assert!(
                g.get(f).is_some_and(|x| same_value(x, v)),
                "value differs at {k:?}/{f}: got {:?} want {v:?}",
                g.get(f)
            );
        }
    }
}

/// Where the shared real datasets live, or `None` (with a printed notice) when absent.
pub fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.is_dir() {
        Some(p)
    } else {
        println!("notice: {} not found; skipping the real-dataset checks", p.display());
        None
    }
}

/// One machine of a dataset in the workload layout: strictly ascending timestamps (repeated
/// timestamps resolved, the later row winning field by field) and per field `None` = missing.
pub struct CsvMachine {
    pub id: String,
    pub fields: Vec<String>,
    pub ts: Vec<i64>,
    pub values: Vec<Vec<Option<f64>>>,
}

/// Loads every `<machine>.csv` of a dataset directory, machines in byte-wise id order.
pub fn load_dataset(dir: &Path) -> Vec<CsvMachine> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    files.iter().map(|p| load_csv(p)).collect()
}

pub fn load_csv(path: &Path) -> CsvMachine {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(|s| s.trim().to_string()).collect();
    assert_eq!(header[0], "ts");
    let fields = header[1..].to_vec();
    let mut rows: BTreeMap<i64, Vec<Option<f64>>> = BTreeMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let mut cells = line.split(',');
        let ts: i64 = cells.next().unwrap().trim().parse().unwrap();
        let row = rows.entry(ts).or_insert_with(|| vec![None; fields.len()]);
        for (i, c) in cells.enumerate() {
            let c = c.trim();
            if !c.is_empty() {
                row[i] = Some(c.parse().unwrap());
            }
        }
    }
    let ts: Vec<i64> = rows.keys().copied().collect();
    let values = (0..fields.len()).map(|f| rows.values().map(|r| r[f]).collect()).collect();
    let id = path.file_stem().unwrap().to_string_lossy().into_owned();
    CsvMachine { id, fields, ts, values }
}
