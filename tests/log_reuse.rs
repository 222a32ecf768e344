//! Reused log files: a flushed log file becomes the spare (`wal.spare`), the next log file is
//! the spare renamed and overwritten from its start, and recovery never takes its old records
//! for data or for corruption.

use std::path::Path;
use std::sync::Arc;

use gemba::io::{CrashMode, FileSystem, SimFs};
use gemba::{Db, Options, SyncPolicy, WriteBatch};

const DIR: &str = "/db";

fn opts(fs: &SimFs) -> Options {
    Options { sync: SyncPolicy::Always, fs: Arc::new(fs.clone()), ..Options::default() }
}

fn batch(n: i64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..20 {
        b.row("press-1", n * 100 + j, [("force", (n * 1000 + j) as f64), ("temp", n as f64)]).unwrap();
    }
    b
}

/// Timestamps of every row of `press-1`, sorted.
fn rows(db: &Db) -> Vec<i64> {
    db.scan("press-1", ..).collect().unwrap().iter().flat_map(|b| b.ts.clone()).collect()
}

fn expected(batches: std::ops::Range<i64>) -> Vec<i64> {
    batches.flat_map(|n| (0..20).map(move |j| n * 100 + j)).collect()
}

fn names(fs: &SimFs) -> Vec<String> {
    let mut v = fs.list(Path::new(DIR)).unwrap();
    v.sort();
    v
}

fn logs(fs: &SimFs) -> Vec<String> {
    names(fs).into_iter().filter(|n| n.starts_with("wal-")).collect()
}

fn len(fs: &SimFs, name: &str) -> u64 {
    fs.file_len(&Path::new(DIR).join(name)).unwrap()
}

/// The files after writing batches 0..20, flushing and crashing (a crash keeps the spare; a
/// clean close removes it).
fn spare_after_a_crash(seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    let db = Db::open(DIR, opts(&fs)).unwrap();
    for n in 0..20 {
        db.write(&batch(n)).unwrap();
    }
    db.flush().unwrap();
    let after = fs.crash(CrashMode::KeepAll);
    drop(db);
    after
}

/// Writes batches 0..40 with two flushes between, so that the log file now in use is the
/// first one reused (holding old records past its header), and returns the spare's old length.
fn reuse_once(db: &Db, fs: &SimFs) -> u64 {
    for n in 0..20 {
        db.write(&batch(n)).unwrap();
    }
    let first = logs(fs);
    assert_eq!(first.len(), 1);
    let first_len = len(fs, &first[0]);
    db.flush().unwrap();
    // The flushed file is kept as the spare, not removed.
    assert!(names(fs).contains(&"wal.spare".to_string()), "{:?}", names(fs));
    assert_eq!(len(fs, "wal.spare"), first_len);
    assert_eq!(logs(fs).len(), 1);
    for n in 20..40 {
        db.write(&batch(n)).unwrap();
    }
    db.flush().unwrap();
    // The new log file is the old spare: as long as it, its old bytes still there.
    let now = logs(fs);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], first[0]);
    assert_eq!(len(fs, &now[0]), first_len, "the new log file is not the reused spare");
    first_len
}

#[test]
fn a_flushed_log_file_is_reused_and_cut_at_a_clean_close() {
    let fs = SimFs::new(11);
    let db = Db::open(DIR, opts(&fs)).unwrap();
    let old_len = reuse_once(&db, &fs);
    for n in 40..43 {
        db.write(&batch(n)).unwrap();
    }
    let active = logs(&fs).pop().unwrap();
    assert_eq!(len(&fs, &active), old_len, "three small records overwrite the start only");
    db.close().unwrap();
    let cut = len(&fs, &active);
    assert!(cut < old_len, "close leaves the old bytes: {cut} of {old_len}");
    assert!(!names(&fs).contains(&"wal.spare".to_string()), "close leaves the spare: {:?}", names(&fs));

    let db = Db::open(DIR, opts(&fs)).unwrap();
    let r = db.recovery_report();
    assert!(r.torn_tails.is_empty(), "a clean close left a tail: {:?}", r.torn_tails);
    assert_eq!(r.records_replayed, 3);
    assert_eq!(rows(&db), expected(0..43));
    drop(db);
}

/// After a crash the reused file ends in old records (valid checksums, sequence numbers below
/// the new ones and at or below the flushed one): recovery cuts them as a torn tail and
/// replays exactly the new records.
#[test]
fn old_records_of_a_reused_file_are_a_torn_tail_after_a_crash() {
    for mode in [CrashMode::KeepAll, CrashMode::DropUnsynced, CrashMode::KeepPrefix, CrashMode::Garbage] {
        let fs = SimFs::new(5);
        let db = Db::open(DIR, opts(&fs)).unwrap();
        let old_len = reuse_once(&db, &fs);
        for n in 40..43 {
            db.write(&batch(n)).unwrap();
        }
        let after = fs.crash(mode);
        drop(db);
        let db = Db::open(DIR, opts(&after)).unwrap();
        let r = db.recovery_report().clone();
        assert_eq!(r.records_replayed, 3, "{mode:?}: {r:?}");
        assert_eq!(r.torn_tails.len(), 1, "{mode:?}: {r:?}");
        let t = &r.torn_tails[0];
        assert_eq!(t.offset + t.bytes, old_len, "{mode:?}: {t:?}");
        assert_eq!(rows(&db), expected(0..43), "{mode:?}");
        drop(db);
    }
}

/// The first record written into a reused file is torn: behind it lie only old records, which
/// are all flushed, so this is a torn tail, not corruption (with no earlier log file left, a
/// reader that only compared sequence numbers with the previous record would accept the old
/// records as "valid data after a bad record" and refuse to open).
#[test]
fn a_torn_first_record_of_a_reused_file_is_a_torn_tail() {
    let fs = SimFs::new(3);
    let db = Db::open(DIR, opts(&fs)).unwrap();
    reuse_once(&db, &fs);
    let active = logs(&fs).pop().unwrap();
    let after = fs.crash(CrashMode::KeepAll);
    drop(db);
    // A record header that claims more bytes than were written, then garbage.
    let mut torn = 500u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xA5; 20]);
    after.corrupt(&Path::new(DIR).join(&active), 32, &torn).unwrap();
    let db = Db::open(DIR, opts(&after)).unwrap();
    let r = db.recovery_report().clone();
    assert_eq!(r.torn_tails.len(), 1, "{r:?}");
    assert_eq!(r.torn_tails[0].offset, 32);
    assert_eq!(r.records_replayed, 0);
    assert_eq!(rows(&db), expected(0..40));
    drop(db);
}

/// A crash between renaming the spare to the new log file and syncing its new header leaves a
/// log file whose header names the old number: a torn creation, removed on open.
#[test]
fn a_reused_file_with_its_old_header_is_a_torn_creation() {
    let after = spare_after_a_crash(9);
    let spare =
        after.read(&Path::new(DIR).join("wal.spare")).unwrap_or_else(|e| panic!("{e}: {:?}", names(&after)));
    // As if the rename to the next number had happened and nothing after it.
    let next = logs(&after).pop().unwrap().replace("0002.log", "0003.log");
    let dir = Path::new(DIR);
    after.rename(&dir.join("wal.spare"), &dir.join(&next)).unwrap();
    assert_eq!(after.read(&dir.join(&next)).unwrap(), spare);
    let db = Db::open(DIR, opts(&after)).unwrap();
    let r = db.recovery_report().clone();
    assert_eq!(r.torn_tails.len(), 1, "{r:?}");
    assert!(r.torn_tails[0].removed);
    assert_eq!(r.records_replayed, 0);
    assert_eq!(rows(&db), expected(0..20));
    for n in 20..25 {
        db.write(&batch(n)).unwrap();
    }
    db.close().unwrap();
    let db = Db::open(DIR, opts(&after)).unwrap();
    assert_eq!(rows(&db), expected(0..25));
    drop(db);
}

/// Garbage in the spare is harmless: it is overwritten from the start, and what is left of it
/// after a crash is cut as a torn tail.
#[test]
fn a_spare_full_of_garbage_is_harmless() {
    let fs = spare_after_a_crash(21);
    let dir = Path::new(DIR);
    let n = len(&fs, "wal.spare") as usize;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs.corrupt(&dir.join("wal.spare"), 0, &garbage).unwrap();
    // The open reuses the spare for its new log file.
    let db = Db::open(DIR, opts(&fs)).unwrap();
    assert_eq!(len(&fs, &logs(&fs).pop().unwrap()), n as u64, "{:?}", names(&fs));
    for n in 20..23 {
        db.write(&batch(n)).unwrap();
    }
    let after = fs.crash(CrashMode::KeepAll);
    drop(db);
    let db = Db::open(DIR, opts(&after)).unwrap();
    assert_eq!(db.recovery_report().records_replayed, 3);
    assert_eq!(rows(&db), expected(0..23));
    drop(db);
}
