//! Log framing and recovery: torn tails at every offset, corruption in the middle, impossible
//! lengths, empty and header-only files, future versions, skipping corrupt records.

mod common;

use std::path::Path;

use common::{dump, record_offsets, wal_files};
use gemba::{Db, Error, Options, SyncPolicy, WriteBatch};

fn opts() -> Options {
    Options { sync: SyncPolicy::Os, ..Options::default() }
}

fn batch(n: i64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..3 {
        b.row("m", n * 10 + j, [("v", (n * 100 + j) as f64)]).unwrap();
    }
    b
}

/// A database with `n` batches of 3 rows in one log file; returns that file's bytes.
fn make_log(dir: &Path, n: i64) -> Vec<u8> {
    let db = Db::open(dir, opts()).unwrap();
    for i in 0..n {
        db.write(&batch(i)).unwrap();
    }
    db.close().unwrap();
    let files = wal_files(dir);
    assert_eq!(files.len(), 1);
    std::fs::read(&files[0]).unwrap()
}

fn fresh_with_log(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal-0000000000000001.log");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn rows(db: &Db) -> Vec<i64> {
    dump(db).keys().map(|(_, t)| *t).collect()
}

fn rows_of_batches(n: i64) -> Vec<i64> {
    (0..n).flat_map(|i| (0..3).map(move |j| i * 10 + j)).collect()
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record_is_cut_and_reported() {
    let src = tempfile::tempdir().unwrap();
    let bytes = make_log(src.path(), 3);
    let offs = record_offsets(&bytes);
    assert_eq!(offs.len(), 4, "three records and the end");
    let (last, end) = (offs[2], offs[3]);
    assert_eq!(end, bytes.len());
    for cut in last..end {
        let (dir, path) = fresh_with_log(&bytes[..cut]);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(rows(&db), rows_of_batches(2), "cut at {cut}");
        let rep = db.recovery_report();
        if cut == last {
            assert!(rep.torn_tails.is_empty(), "a clean end is no torn tail");
        } else {
            assert_eq!(rep.torn_tails.len(), 1, "cut at {cut}");
            assert_eq!(rep.torn_tails[0].offset, last as u64);
            assert_eq!(rep.torn_tails[0].bytes, (cut - last) as u64);
            assert_eq!(rep.torn_tails[0].file, path);
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64, "file cut back");
        db.close().unwrap();
        // A second open finds nothing more to repair.
        let db = Db::open(dir.path(), opts()).unwrap();
        assert!(db.recovery_report().torn_tails.is_empty());
        assert_eq!(rows(&db), rows_of_batches(2));
    }
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let src = tempfile::tempdir().unwrap();
    let mut bytes = make_log(src.path(), 2);
    let end = bytes.len();
    bytes.extend_from_slice(&[0u8; 4096]);
    let (dir, _) = fresh_with_log(&bytes);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(rows(&db), rows_of_batches(2));
    assert_eq!(db.recovery_report().torn_tails[0].offset, end as u64);
    drop(db);

    let mut bytes = bytes[..end].to_vec();
    bytes.extend((0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let (dir, _) = fresh_with_log(&bytes);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(rows(&db), rows_of_batches(2));
    assert_eq!(db.recovery_report().torn_tails.len(), 1);
}

#[test]
fn a_bad_checksum_in_the_middle_is_corruption_with_file_and_offset() {
    let src = tempfile::tempdir().unwrap();
    let bytes = make_log(src.path(), 3);
    let offs = record_offsets(&bytes);
    let mut bad = bytes.clone();
    bad[offs[1] + 20] ^= 0x40; // inside the second record's body
    let (dir, path) = fresh_with_log(&bad);
    match Db::open(dir.path(), opts()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, path);
            assert_eq!(offset, offs[1] as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The file was not modified by the failed open.
    assert_eq!(std::fs::read(&path).unwrap(), bad);

    // Asked to, recovery skips the bad record and reports it.
    let db = Db::open(dir.path(), Options { skip_corrupt_wal_records: true, ..opts() }).unwrap();
    assert_eq!(rows(&db), vec![0, 1, 2, 20, 21, 22]);
    let rep = db.recovery_report();
    assert_eq!(rep.skipped.len(), 1);
    assert_eq!(rep.skipped[0].offset, offs[1] as u64);
    assert_eq!(rep.skipped[0].bytes, (offs[2] - offs[1]) as u64);
}

#[test]
fn a_length_of_u32_max_is_corruption_in_the_middle_and_a_torn_tail_at_the_end() {
    let src = tempfile::tempdir().unwrap();
    let bytes = make_log(src.path(), 3);
    let offs = record_offsets(&bytes);
    let mut mid = bytes.clone();
    mid[offs[1]..offs[1] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (dir, _) = fresh_with_log(&mid);
    assert!(
        matches!(Db::open(dir.path(), opts()), Err(Error::Corrupt { offset, .. }) if offset == offs[1] as u64)
    );

    let mut last = bytes.clone();
    last[offs[2]..offs[2] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (dir, _) = fresh_with_log(&last);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(rows(&db), rows_of_batches(2));
    assert_eq!(db.recovery_report().torn_tails.len(), 1);
}

#[test]
fn empty_and_header_only_log_files() {
    // An empty file: a log file whose creation was torn. Removed and reported.
    let (dir, path) = fresh_with_log(&[]);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert!(rows(&db).is_empty());
    assert!(db.recovery_report().torn_tails[0].removed);
    // The torn file is gone; a fresh log file (header only) may take its name.
    assert!(!path.exists() || std::fs::metadata(&path).unwrap().len() == 32);
    drop(db);

    // A half-written header likewise.
    let src = tempfile::tempdir().unwrap();
    let bytes = make_log(src.path(), 1);
    let (dir, _) = fresh_with_log(&bytes[..17]);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert!(rows(&db).is_empty());
    assert_eq!(db.recovery_report().torn_tails.len(), 1);
    drop(db);

    // A header alone: a valid, empty log (removed as holding nothing to replay).
    let (dir, _) = fresh_with_log(&bytes[..32]);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert!(rows(&db).is_empty());
    assert!(db.recovery_report().torn_tails.is_empty());
    assert!(db.recovery_report().skipped.is_empty());
}

#[test]
fn a_future_format_version_is_refused() {
    let src = tempfile::tempdir().unwrap();
    let mut bytes = make_log(src.path(), 1);
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    let (dir, path) = fresh_with_log(&bytes);
    match Db::open(dir.path(), opts()) {
        Err(Error::FormatVersion { file, found, supported }) => {
            assert_eq!((file, found, supported), (path, 3, 2));
        }
        other => panic!("expected FormatVersion, got {other:?}"),
    }
}

#[test]
fn a_bad_record_followed_by_a_later_log_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    // Two sessions: each open starts a new log file.
    for n in 0..2 {
        let db = Db::open(dir.path(), opts()).unwrap();
        db.write(&batch(n)).unwrap();
        db.close().unwrap();
    }
    let files = wal_files(dir.path());
    assert!(files.len() >= 2);
    let first = std::fs::read(&files[0]).unwrap();
    let offs = record_offsets(&first);
    let mut bad = first.clone();
    let last_byte = offs[1] - 1;
    bad[last_byte] ^= 1;
    std::fs::write(&files[0], &bad).unwrap();
    assert!(
        matches!(Db::open(dir.path(), opts()), Err(Error::Corrupt { offset, .. }) if offset == offs[0] as u64)
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    assert!(matches!(Db::open(dir.path(), opts()), Err(Error::Locked { .. })));
    drop(db);
    Db::open(dir.path(), opts()).unwrap().close().unwrap();
}

#[test]
fn recovery_never_panics_on_random_damage() {
    let src = tempfile::tempdir().unwrap();
    let bytes = make_log(src.path(), 4);
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        b.truncate(cut.max(b.len() / 2));
        let (dir, _) = fresh_with_log(&b);
        for skip in [false, true] {
            match Db::open(dir.path(), Options { skip_corrupt_wal_records: skip, ..opts() }) {
                Ok(db) => {
                    // Whatever survived is whole batches of the original data.
                    for (_, t) in dump(&db).keys() {
                        assert!(rows_of_batches(4).contains(t));
                    }
                }
                Err(Error::Corrupt { .. }) | Err(Error::FormatVersion { .. }) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
}
