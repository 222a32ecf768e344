//! `verify_dir` reports every damaged byte range with its file and offset and changes nothing;
//! `Db::inspect` tells how each field is stored.

use std::path::Path;

use gemba::io::StdFs;
use gemba::{Col, Db, Options, SyncPolicy, WriteBatch, verify_dir};

fn make(dir: &Path) {
    let db = Db::open(dir, Options { sync: SyncPolicy::Os, block_rows: 500, ..Options::default() }).unwrap();
    for m in 0..3 {
        let ts: Vec<i64> = (0..5000).map(|i| i * 1000).collect();
        let v: Vec<f64> = (0..5000).map(|i| ((i * 7 + m) % 100) as f64 / 10.0).collect();
        let s: Vec<i64> = (0..5000).map(|i| (i / 700) % 3).collect();
        let mut b = WriteBatch::new();
        b.columns(&format!("press-{m}"), &ts, [("temp", Col::f64(&v)), ("state", Col::i64(&s))]).unwrap();
        db.write(&b).unwrap();
    }
    db.flush().unwrap();
    // Something left in the log too.
    let mut b = WriteBatch::new();
    b.row("press-0", 9_000_000, [("temp", 1.5)]).unwrap();
    db.write(&b).unwrap();
    db.close().unwrap();
}

fn files(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn a_healthy_database_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path());
    let r = verify_dir(&StdFs, dir.path()).unwrap();
    assert!(r.is_healthy(), "{r:?}");
    assert_eq!(r.points_checked, 30_000);
    assert!(r.log_records >= 1);
    // Verification refuses to run beside an open database.
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(verify_dir(&StdFs, dir.path()), Err(gemba::Error::Locked { .. })));
    let ins = db.inspect().unwrap();
    assert_eq!(ins.fields.len(), 6);
    for f in &ins.fields {
        assert_eq!(f.points, 5000);
        assert!(f.bits_per_value() > 0.0 && f.bits_per_value() < 200.0, "{f:?}");
        assert!(!f.codecs.is_empty() && !f.codecs.iter().any(|(c, _)| c.contains("invalid")), "{f:?}");
    }
    assert_eq!(ins.segments.iter().map(|s| s.points).sum::<u64>(), 30_000);
}

#[test]
fn damage_is_reported_with_file_and_offset_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path());
    let seg = files(dir.path(), "seg-").pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Two separate chunks: the first timestamps of the first machine, and one a third in.
    let third = bytes.len() / 3;
    bytes[20] ^= 0x10;
    bytes[third] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let log = files(dir.path(), "wal-").pop().unwrap();
    let before_log = std::fs::read(&log).unwrap();
    let r = verify_dir(&StdFs, dir.path()).unwrap();
    assert!(!r.is_healthy());
    let on_seg: Vec<_> = r.problems.iter().filter(|p| p.file == seg).collect();
    assert_eq!(on_seg.len(), 2, "{r:?}");
    assert!(on_seg.iter().all(|p| p.what.contains("checksum")), "{on_seg:?}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "verify changes nothing");
    assert_eq!(std::fs::read(&log).unwrap(), before_log);

    // A damaged manifest is reported too, and the segments are still checked.
    let m = dir.path().join("MANIFEST");
    let mut mb = std::fs::read(&m).unwrap();
    mb[20] ^= 0xff;
    std::fs::write(&m, &mb).unwrap();
    let r = verify_dir(&StdFs, dir.path()).unwrap();
    assert!(r.problems.iter().any(|p| p.file == m), "{r:?}");
    assert!(r.problems.iter().any(|p| p.file == seg), "{r:?}");
}
