//! Every real dataset in ../shared/data round-trips bit for bit through the write path, a
//! flush to segment files and a reopen. Skipped with a notice where the folder is missing.

mod common;

use common::{load_dataset, shared_data};
use gemba::{Col, Db, Machines, Options, Values, WriteBatch};

#[test]
fn shared_datasets_round_trip_through_segments() {
    let Some(root) = shared_data() else { return };
    let mut names: Vec<_> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    names.sort();
    assert!(!names.is_empty(), "no dataset in {}", root.display());
    for ds in names {
        let machines = load_dataset(&ds);
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Options::default()).unwrap();
        let mut points = 0usize;
        for m in &machines {
            let mut b = WriteBatch::new();
            let vals: Vec<Vec<f64>> =
                m.values.iter().map(|c| c.iter().map(|v| v.unwrap_or(0.0)).collect()).collect();
            let valid: Vec<Vec<bool>> =
                m.values.iter().map(|c| c.iter().map(|v| v.is_some()).collect()).collect();
            points += valid.iter().flatten().filter(|&&v| v).count();
            let cols = m
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.as_str(), Col::f64(&vals[i]).with_validity(&valid[i])));
            b.columns(&m.id, &m.ts, cols).unwrap();
            db.write(&b).unwrap();
        }
        db.flush().unwrap();
        let stats = db.stats();
        assert!(stats.segments > 0);
        assert_eq!(stats.memtable_bytes, 0);
        db.close().unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(
            !files.iter().any(|f| f.to_string_lossy().ends_with(".log")
                && std::fs::metadata(dir.path().join(f)).unwrap().len() > 32),
            "flushed data left in the log: {files:?}"
        );

        let db = Db::open(dir.path(), Options::default()).unwrap();
        assert_eq!(db.recovery_report().records_replayed, 0, "everything was flushed");
        let mut seen = 0;
        for b in db.scan(Machines::All, ..).collect().unwrap() {
            let m = machines.iter().find(|m| *m.id == *b.machine).unwrap();
            let start = m.ts.partition_point(|&t| t < b.ts[0]);
            for (i, &t) in b.ts.iter().enumerate() {
                assert_eq!(t, m.ts[start + i], "{}: timestamps differ", m.id);
            }
            for c in &b.columns {
                let f = m.fields.iter().position(|f| **f == *c.name).unwrap();
                let Values::F64(v) = &c.values else { panic!("type changed") };
                for (i, x) in v.iter().enumerate() {
                    let want = m.values[f][start + i];
                    let got = c.is_valid(i).then_some(*x);
                    assert_eq!(
                        got.map(f64::to_bits),
                        want.map(f64::to_bits),
                        "{}/{} at {}",
                        m.id,
                        c.name,
                        b.ts[i]
                    );
                    seen += got.is_some() as usize;
                }
            }
        }
        assert_eq!(seen, points);
        println!(
            "{}: {} machines, {points} points, {} segment bytes, {:.3} bytes/point",
            ds.file_name().unwrap().to_string_lossy(),
            machines.len(),
            stats.segment_bytes,
            stats.segment_bytes as f64 / points as f64
        );
    }
}
