//! Concurrent writers share log writes and syncs (group commit), and every acknowledged batch
//! of every thread is there afterwards, in every sync policy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::dump;
use gemba::io::SimFs;
use gemba::{Db, Options, SyncPolicy, Value, WriteBatch};

fn batch(t: usize, k: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..4 {
        b.row(&format!("m{t}"), (k * 4 + j) as i64, [("v", (k * 10 + j) as f64)]).unwrap();
    }
    b
}

fn run(db: &Arc<Db>, threads: usize, per_thread: usize) {
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for k in 0..per_thread {
                    db.write(&batch(t, k)).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

fn check(db: &Db, threads: usize, per_thread: usize) {
    let got = dump(db);
    assert_eq!(got.len(), threads * per_thread * 4);
    for t in 0..threads {
        for k in 0..per_thread {
            for j in 0..4 {
                let row = &got[&(format!("m{t}"), (k * 4 + j) as i64)];
                assert_eq!(row["v"], Value::F64((k * 10 + j) as f64));
            }
        }
    }
}

#[test]
fn concurrent_durable_writers_share_syncs() {
    let fs = SimFs::new(7);
    // A slow disk: while one round writes, the other threads queue up behind it.
    fs.set_write_delay(Duration::from_millis(2));
    let opts = Options { fs: Arc::new(fs.clone()), ..Options::default() };
    let db = Arc::new(Db::open("/db", opts.clone()).unwrap());
    let before = fs.ops();
    let (threads, per_thread) = (8, 40);
    run(&db, threads, per_thread);
    let ops = fs.ops() - before;
    let writes = (threads * per_thread) as u64;
    // Without group commit every batch costs a write and a sync: 2 operations.
    println!("{writes} durable batches took {ops} file operations");
    assert!(ops < writes, "no group commit: {ops} operations for {writes} batches");
    check(&db, threads, per_thread);
    Arc::into_inner(db).unwrap().close().unwrap();
    // Everything acknowledged was synced: a power loss right now loses nothing.
    let after = fs.crash(gemba::io::CrashMode::DropUnsynced);
    let db = Db::open("/db", Options { fs: Arc::new(after), ..Options::default() }).unwrap();
    check(&db, threads, per_thread);
}

#[test]
fn every_policy_keeps_every_acknowledged_write_across_reopen() {
    for policy in [SyncPolicy::Always, SyncPolicy::Periodic(Duration::from_millis(5)), SyncPolicy::Os] {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { sync: policy, ..Options::default() };
        let db = Arc::new(Db::open(dir.path(), opts.clone()).unwrap());
        run(&db, 4, 50);
        check(&db, 4, 50);
        Arc::into_inner(db).unwrap().close().unwrap();
        let db = Db::open(dir.path(), opts).unwrap();
        check(&db, 4, 50);
    }
}

#[test]
fn periodic_policy_syncs_in_the_background() {
    let fs = SimFs::new(3);
    let opts = Options {
        fs: Arc::new(fs.clone()),
        sync: SyncPolicy::Periodic(Duration::from_millis(10)),
        ..Options::default()
    };
    let db = Db::open("/db", opts).unwrap();
    db.write(&batch(0, 0)).unwrap();
    // Within a few intervals the background thread has synced the write.
    std::thread::sleep(Duration::from_millis(200));
    let after = fs.crash(gemba::io::CrashMode::DropUnsynced);
    drop(db);
    let db = Db::open("/db", Options { fs: Arc::new(after), ..Options::default() }).unwrap();
    assert_eq!(dump(&db).len(), 4);
}

/// Writers racing on the same keys: records are applied in log order whichever thread applies
/// them, so the values a live database shows are those its log replays to after a reopen
/// (a record applied out of order would make the live winner of a key differ from the
/// replayed one). Deletes are mixed in.
#[test]
fn concurrent_writes_of_the_same_keys_apply_in_log_order() {
    for policy in [SyncPolicy::Always, SyncPolicy::Os] {
        let fs = SimFs::new(17);
        let opts = Options { sync: policy, fs: Arc::new(fs.clone()), ..Options::default() };
        let db = Arc::new(Db::open("/db", opts.clone()).unwrap());
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for k in 0..200i64 {
                        let mut b = WriteBatch::new();
                        for j in 0..3 {
                            let ts = (k * 7 + j * 3 + t) % 16;
                            b.row("press", ts, [("v", (t * 100_000 + k * 10 + j) as f64)]).unwrap();
                        }
                        db.write(&b).unwrap();
                        if k % 50 == 49 {
                            db.delete_range("press", (k % 16)..(k % 16 + 2)).unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let live = dump(&db);
        assert!(!live.is_empty());
        drop(db);
        let db = Db::open("/db", opts).unwrap();
        assert_eq!(db.recovery_report().records_replayed, 8 * 200 + 8 * 4, "{policy:?}");
        assert_eq!(dump(&db), live, "{policy:?}: the live values differ from the log's");
    }
}
