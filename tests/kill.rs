//! A real process is SIGKILLed while it writes with the default (durable) sync policy; after
//! every kill, each batch it acknowledged must be there with its values, batches are all or
//! nothing, and nothing it did not write appears.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::dump;
use gemba::{Db, Options, Value, WriteBatch};

const DIR_ENV: &str = "GEMBA_KILL_CHILD_DIR";
const START_ENV: &str = "GEMBA_KILL_CHILD_START";
const THREADS: u64 = 3;
const ROWS: i64 = 5;

/// Batch `n`: `ROWS` rows of machine `m{n % 4}` at `n * 100 + j`.
fn batch(n: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    let m = format!("m{}", n % 4);
    for j in 0..ROWS {
        let ts = n as i64 * 100 + j;
        let mut fields =
            vec![("v", Value::F64(n as f64 * 1.5 + j as f64)), ("c", Value::I64(n as i64 * 7 + j))];
        if j % 2 == 0 {
            fields.push(("b", Value::Bool(n.is_multiple_of(3))));
        }
        b.row(&m, ts, fields).unwrap();
    }
    b
}

/// The child: writes batches from several threads and prints `ack N` after each `Ok`.
#[test]
#[ignore = "child process of acknowledged_writes_survive_sigkill"]
fn kill_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let db = std::sync::Arc::new(Db::open(&dir, Options::default()).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || -> () {
                let mut n = start + t;
                loop {
                    db.write(&batch(n)).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {n}").unwrap();
                    out.flush().unwrap();
                    n += THREADS;
                }
            })
        })
        .collect();
    // The writers loop until the process is killed.
    for h in handles {
        let _ = h.join();
    }
    unreachable!("writers never stop");
}

/// Checks every present batch is whole and right; returns the batch numbers present.
fn present_batches(db: &Db) -> BTreeSet<u64> {
    let model = dump(db);
    let mut per_batch: BTreeMap<u64, usize> = BTreeMap::new();
    for ((m, ts), row) in &model {
        assert!(*ts >= 0);
        let n = (*ts / 100) as u64;
        let j = ts % 100;
        assert!(j < ROWS, "row {m}@{ts} was never written");
        assert_eq!(*m, format!("m{}", n % 4), "row {m}@{ts} on the wrong machine");
        assert_eq!(row.get("v"), Some(&Value::F64(n as f64 * 1.5 + j as f64)), "{m}@{ts}");
        assert_eq!(row.get("c"), Some(&Value::I64(n as i64 * 7 + j)), "{m}@{ts}");
        let b = if j % 2 == 0 { Some(&Value::Bool(n.is_multiple_of(3))) } else { None };
        assert_eq!(row.get("b"), b, "{m}@{ts}");
        *per_batch.entry(n).or_default() += 1;
    }
    for (n, rows) in &per_batch {
        assert_eq!(*rows, ROWS as usize, "batch {n} only partly present");
    }
    per_batch.into_keys().collect()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut start = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut kills, mut in_flight_found) = (0, 0);
    for round in 0..24 {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_child_writer", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .env(START_ENV, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                // The test harness may print "test kill_child_writer ... " before the first ack.
                .filter_map(|l| l.find("ack ").map(|i| l[i + 4..].trim().parse::<u64>().unwrap()))
                .collect::<Vec<u64>>()
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kill at a random moment: early rounds also hit startup and recovery.
        let delay = if round < 4 { rng % 40 } else { 30 + rng % 250 };
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let acks = reader.join().unwrap();
        acked.extend(acks.iter().copied());

        let db = Db::open(dir.path(), Options::default()).unwrap();
        let present = present_batches(&db);
        for n in &acked {
            assert!(present.contains(n), "round {round}: acknowledged batch {n} lost");
        }
        // Present but not acknowledged: only a batch a thread had in flight.
        for n in present.difference(&acked) {
            assert!(*n >= start, "round {round}: batch {n} from an earlier round appeared late");
            let t = (n - start) % THREADS;
            let last_acked = acks.iter().filter(|&&a| (a - start) % THREADS == t).max();
            let expected = last_acked.map_or(start + t, |a| a + THREADS);
            assert_eq!(*n, expected, "round {round}: batch {n} was never issued");
            in_flight_found += 1;
        }
        // Unacknowledged batches that made it count as written from now on.
        acked.extend(present.iter().copied());
        start = present.iter().chain(acked.iter()).max().map_or(0, |m| m + 1);
        db.close().unwrap();
    }
    println!(
        "kill test: {kills} kills, {} batches acknowledged or recovered, {in_flight_found} in-flight batches recovered",
        acked.len()
    );
    assert!(kills >= 20);
    assert!(acked.len() > 50, "the child barely wrote: {}", acked.len());
}
