//! Fleet scans large enough to decode every other machine on a helper thread: the batches
//! must be exactly those of one-machine-at-a-time scans, in machine order; dropping a scan
//! stops its helper; a damaged block in either thread's machines ends the scan with
//! `Error::Corrupt` after correct batches.

use std::collections::BTreeMap;
use std::path::Path;

use gemba::{Batch, Col, Db, Error, Machines, Options, SyncPolicy, Value, WriteBatch};

const MACHINES: usize = 12;
const ROWS: i64 = 6_000;
const FIELDS: [&str; 4] = ["speed", "count", "on", "temp"];

type Model = BTreeMap<(String, i64), [Option<Value>; 4]>;

fn name(m: usize) -> String {
    format!("m-{m:02}")
}

fn open(dir: &Path) -> Db {
    Db::open(dir, Options { sync: SyncPolicy::Os, ..Options::default() }).unwrap()
}

/// Rows `lo..hi` of every machine, `gen` telling the values apart between writes.
fn write(db: &Db, model: &mut Model, lo: i64, hi: i64, step: i64, generation: i64) {
    for m in 0..MACHINES {
        let ts: Vec<i64> = (lo..hi).step_by(step as usize).map(|i| 1_000_000 + i * 1_000).collect();
        let idx: Vec<i64> = (lo..hi).step_by(step as usize).collect();
        let speed: Vec<f64> =
            idx.iter().map(|&i| (i % 1000) as f64 / 8.0 + m as f64 + generation as f64).collect();
        let count: Vec<i64> = idx.iter().map(|&i| i * 3 - m as i64 + generation).collect();
        let on: Vec<bool> = idx.iter().map(|&i| (i + generation) % 7 == 0).collect();
        let temp: Vec<f64> = idx.iter().map(|&i| 20.0 + (i % 300) as f64 / 10.0).collect();
        let temp_valid: Vec<bool> = idx.iter().map(|&i| i % 5 != 0).collect();
        let mut b = WriteBatch::new();
        b.columns(
            &name(m),
            &ts,
            [
                (FIELDS[0], Col::f64(&speed)),
                (FIELDS[1], Col::i64(&count)),
                (FIELDS[2], Col::bool(&on)),
                (FIELDS[3], Col::f64(&temp).with_validity(&temp_valid)),
            ],
        )
        .unwrap();
        db.write(&b).unwrap();
        for (k, &t) in ts.iter().enumerate() {
            let row = model.entry((name(m), t)).or_insert([None, None, None, None]);
            row[0] = Some(Value::F64(speed[k]));
            row[1] = Some(Value::I64(count[k]));
            row[2] = Some(Value::Bool(on[k]));
            if temp_valid[k] {
                row[3] = Some(Value::F64(temp[k]));
            }
        }
    }
}

/// Two flushed halves (two segments per machine's partition) and a memtable overwriting
/// every 13th row and adding rows past the end.
fn build(dir: &Path) -> (Db, Model) {
    let db = open(dir);
    let mut model = Model::new();
    write(&db, &mut model, 0, ROWS / 2, 1, 0);
    db.flush().unwrap();
    write(&db, &mut model, ROWS / 2, ROWS, 1, 0);
    db.flush().unwrap();
    write(&db, &mut model, 0, ROWS + 500, 13, 1);
    (db, model)
}

fn to_model(batches: &[Batch]) -> Model {
    let mut out = Model::new();
    for b in batches {
        for (r, &t) in b.ts.iter().enumerate() {
            let mut row = [None, None, None, None];
            for c in &b.columns {
                let f = FIELDS.iter().position(|f| *f == &*c.name).expect("known field");
                row[f] = c.value(r);
            }
            assert!(out.insert((b.machine.to_string(), t), row).is_none(), "row twice");
        }
    }
    out
}

/// Names of this process's threads (Linux), `None` where that cannot be read.
fn thread_names() -> Option<Vec<String>> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|s| s.trim().to_string())
            .collect(),
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn a_fleet_scan_on_two_threads_returns_what_one_machine_at_a_time_does() {
    let dir = tempfile::tempdir().unwrap();
    let (db, model) = build(dir.path());

    let mut it = db.scan(Machines::All, ..).batch_rows(700).run().unwrap();
    let first = it.next().unwrap().unwrap();
    match thread_names() {
        Some(_) if cores() > 1 => {
            // A thread names itself once it runs: give it a moment (it then waits on the
            // channel, alive, until the scan goes on).
            let mut names = Vec::new();
            for _ in 0..500 {
                names = thread_names().unwrap();
                if names.iter().any(|n| n == "gemba-scan") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(names.iter().any(|n| n == "gemba-scan"), "no helper thread: {names:?}")
        }
        _ => println!("notice: one core or no /proc; the helper thread is not checked"),
    }
    let mut fleet = vec![first];
    fleet.extend(it.map(Result::unwrap));

    // Machines in byte order, each machine's rows ascending across its batches.
    let order: Vec<String> = fleet.iter().map(|b| b.machine.to_string()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    for w in fleet.windows(2) {
        if w[0].machine == w[1].machine {
            assert!(w[0].ts.last() < w[1].ts.first());
        }
    }
    assert!(fleet.iter().all(|b| b.rows() <= 700));
    assert_eq!(to_model(&fleet), model);

    // Exactly the batches one machine at a time gives (a single machine is never split).
    let mut one_by_one = Vec::new();
    for m in 0..MACHINES {
        one_by_one.extend(db.scan(name(m).as_str(), ..).batch_rows(700).collect().unwrap());
    }
    assert_eq!(fleet, one_by_one);

    // Default batches: each machine's rows are one batch, which (with a helper, on more
    // than one core) the helper's machines hand over as they are instead of as copies;
    // the same batches again.
    let whole = db.scan(Machines::All, ..).collect().unwrap();
    assert!(
        whole.iter().all(|b| b.rows() > 4_096),
        "{:?}",
        whole.iter().map(Batch::rows).collect::<Vec<_>>()
    );
    let mut want = Vec::new();
    for m in 0..MACHINES {
        want.extend(db.scan(name(m).as_str(), ..).collect().unwrap());
    }
    assert_eq!(whole, want);
    assert_eq!(to_model(&whole), model);

    // A field subset and a time window go through the same split.
    let (lo, hi) = (1_000_000 + 1_234 * 1_000, 1_000_000 + 4_321 * 1_000);
    let part = db.scan(Machines::All, lo..hi).fields(["temp", "speed"]).collect().unwrap();
    let mut want = Vec::new();
    for m in 0..MACHINES {
        want.extend(db.scan(name(m).as_str(), lo..hi).fields(["temp", "speed"]).collect().unwrap());
    }
    assert_eq!(part, want);
    assert_eq!(part.iter().map(Batch::rows).sum::<usize>(), MACHINES * (4_321 - 1_234));
    db.close().unwrap();
}

#[test]
fn dropping_a_scan_stops_its_helper() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = build(dir.path());
    for taken in [0, 1, 5] {
        let mut it = db.scan(Machines::All, ..).batch_rows(100).run().unwrap();
        for _ in 0..taken {
            it.next().unwrap().unwrap();
        }
        drop(it);
        // Dropping joins the helper; the kernel may list an exited thread a moment longer.
        let alive = || thread_names().is_some_and(|names| names.iter().any(|n| n == "gemba-scan"));
        let mut waited = 0;
        while alive() && waited < 100 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 1;
        }
        assert!(!alive(), "helper outlived its scan");
    }
    db.close().unwrap();
}

#[test]
fn a_damaged_block_ends_the_scan_with_corrupt_after_correct_batches() {
    let clean_dir = tempfile::tempdir().unwrap();
    let (db, _) = build(clean_dir.path());
    let clean = db.scan(Machines::All, ..).batch_rows(1_000).collect().unwrap();
    db.close().unwrap();
    let segments: Vec<_> = std::fs::read_dir(clean_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gseg"))
        .collect();
    assert_eq!(segments.len(), 2);

    let mut errors = 0;
    for seg in &segments {
        let len = std::fs::metadata(seg).unwrap().len() as usize;
        // Offsets in the blocks (the index sits at the end of the file).
        for k in 1..=8 {
            let at = len * k / 16;
            let dir = tempfile::tempdir().unwrap();
            for e in std::fs::read_dir(clean_dir.path()).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() && p.file_name().unwrap() != "LOCK" {
                    std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
                }
            }
            let target = dir.path().join(seg.file_name().unwrap());
            let mut bytes = std::fs::read(&target).unwrap();
            bytes[at] ^= 0x5A;
            std::fs::write(&target, &bytes).unwrap();
            let db = match Db::open(dir.path(), Options { sync: SyncPolicy::Os, ..Options::default() }) {
                Ok(db) => db,
                Err(Error::Corrupt { .. }) => continue,
                Err(e) => panic!("open at {at}: {e}"),
            };
            let got: Vec<_> = db.scan(Machines::All, ..).batch_rows(1_000).run().unwrap().collect();
            let ok = got.iter().take_while(|r| r.is_ok()).count();
            assert_eq!(got.len(), ok + 1, "flip at {at} of {}: not exactly one final error", seg.display());
            match got.last().unwrap() {
                Err(Error::Corrupt { file, .. }) => assert_eq!(file.file_name(), target.file_name()),
                other => panic!("flip at {at}: {other:?}"),
            }
            for (i, r) in got[..ok].iter().enumerate() {
                assert_eq!(r.as_ref().unwrap(), &clean[i], "batch {i} before the error differs");
            }
            errors += 1;
            db.close().unwrap();
        }
    }
    assert!(errors >= 8, "only {errors} damaged scans ran");
}
