//! A kill-test tool: writes, reads and flushes until it is killed, then checks what survived.
//!
//! ```sh
//! cargo run --release --example stress -- run --dir DB --epoch 1 [--threads 4] [--seconds 30] > acks
//! # ... kill -9 it at any moment, run again with --epoch 2, 3, ... appending to acks ...
//! cargo run --release --example stress -- verify --dir DB --acks acks
//! ```
//!
//! `run` writes deterministic batches from `--threads` writer threads with durable
//! acknowledgement (the default sync policy): batch `(epoch, thread, seq)` holds `rows(seq)`
//! rows whose machine, timestamp and values all derive from `(epoch, thread, seq, row)`, and
//! timestamps are unique per row. After each acknowledged batch it prints
//! `ack EPOCH THREAD SEQ` on its own line and flushes stdout. Reader threads meanwhile scan and
//! downsample and check what they see (exit 1 on a wrong answer), and a thread flushes the
//! memtable every 200 ms. Each run continues the history of the directory with a new epoch.
//!
//! `verify` reopens the database and checks that every batch acknowledged in the acks file is
//! present with the right values, that every row present decodes to a batch whose rows are
//! all present and right, and that each writer's batches present but not acknowledged are only
//! the one it may have had in flight. Exit 0 when everything holds, 1 with a report otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::exit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gemba::{Agg, AggColumn, Db, Machines, Options, Value, WriteBatch};

const MACHINES: u64 = 8;
const THREADS_MAX: u64 = 64;
const EPOCH_MAX: u64 = 1 << 18;

fn usage() -> ! {
    eprintln!(
        "usage: stress run --dir DIR --epoch K [--threads T] [--seconds S]\n       stress verify --dir DIR --acks FILE"
    );
    exit(2)
}

struct Args {
    dir: Option<PathBuf>,
    epoch: Option<u64>,
    threads: u64,
    seconds: Option<u64>,
    acks: Option<PathBuf>,
}

fn parse(args: &[String]) -> Args {
    let mut a = Args { dir: None, epoch: None, threads: 4, seconds: None, acks: None };
    let mut i = 0;
    while i < args.len() {
        let Some(v) = args.get(i + 1) else { usage() };
        let num = || v.parse::<u64>().unwrap_or_else(|_| usage());
        match args[i].as_str() {
            "--dir" => a.dir = Some(PathBuf::from(v)),
            "--epoch" => a.epoch = Some(num()),
            "--threads" => a.threads = num(),
            "--seconds" => a.seconds = Some(num()),
            "--acks" => a.acks = Some(PathBuf::from(v)),
            _ => usage(),
        }
        i += 2;
    }
    a
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let a = parse(&args[1..]);
    let Some(dir) = a.dir.clone() else { usage() };
    match cmd.as_str() {
        "run" => {
            let Some(epoch) = a.epoch else { usage() };
            if epoch >= EPOCH_MAX || a.threads == 0 || a.threads > THREADS_MAX {
                eprintln!("stress: epoch must be below {EPOCH_MAX}, threads in 1..={THREADS_MAX}");
                exit(2);
            }
            run(dir, epoch, a.threads, a.seconds.map(Duration::from_secs))
        }
        "verify" => {
            let Some(acks) = a.acks else { usage() };
            match verify(&dir, &acks) {
                Ok(summary) => {
                    println!("verify: ok: {summary}");
                    exit(0)
                }
                Err(problems) => {
                    println!("verify: FAILED, {} problems:", problems.len());
                    for p in problems.iter().take(50) {
                        println!("  {p}");
                    }
                    exit(1)
                }
            }
        }
        _ => usage(),
    }
}

// ---------------------------------------------------------------------------------------------
// The data: everything derives from (epoch, thread, seq, row).

fn rows(seq: u64) -> u64 {
    1 + seq % 4
}

fn ts_of(epoch: u64, thread: u64, seq: u64, row: u64) -> i64 {
    ((((epoch << 6) | thread) << 32 | (seq & 0xFFFF_FFFF)) << 3 | row) as i64
}

/// (epoch, thread, seq, row) of a timestamp.
fn decode_ts(ts: i64) -> Option<(u64, u64, u64, u64)> {
    if ts < 0 {
        return None;
    }
    let t = ts as u64;
    Some((t >> 41, (t >> 35) & 63, (t >> 3) & 0xFFFF_FFFF, t & 7))
}

fn machine_of(thread: u64, seq: u64, row: u64) -> String {
    format!("press-{:02}", (thread + seq + row) % MACHINES)
}

fn mix(epoch: u64, thread: u64, seq: u64, row: u64) -> u64 {
    let mut x = epoch
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(thread.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(seq.wrapping_mul(0x94D0_49BB_1331_11EB))
        .wrapping_add(row);
    x ^= x >> 31;
    x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 32)
}

fn values(epoch: u64, thread: u64, seq: u64, row: u64) -> Vec<(&'static str, Value)> {
    let h = mix(epoch, thread, seq, row);
    let mut v = vec![("speed", Value::F64((h % 100_000) as f64 / 8.0)), ("count", Value::I64(h as i64))];
    if row.is_multiple_of(2) {
        v.push(("alarm", Value::Bool(h & 1 == 1)));
    }
    v
}

fn batch(epoch: u64, thread: u64, seq: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for row in 0..rows(seq) {
        b.row(&machine_of(thread, seq, row), ts_of(epoch, thread, seq, row), values(epoch, thread, seq, row))
            .expect("a valid row");
    }
    b
}

/// Checks every row of the database; returns the batches present (each whole and right), or
/// the problems found.
fn check_rows(db: &Db) -> Result<BTreeSet<(u64, u64, u64)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut per_batch: BTreeMap<(u64, u64, u64), u64> = BTreeMap::new();
    let it = match db.scan(Machines::All, ..).run() {
        Ok(it) => it,
        Err(e) => return Err(vec![format!("scan: {e}")]),
    };
    for b in it {
        let b = match b {
            Ok(b) => b,
            Err(e) => return Err(vec![format!("scan: {e}")]),
        };
        if b.ts.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!("scan of {} is not strictly ascending", b.machine));
        }
        for (i, &ts) in b.ts.iter().enumerate() {
            let Some((e, t, s, r)) = decode_ts(ts) else {
                problems.push(format!("row {}@{ts} was never written", b.machine));
                continue;
            };
            if r >= rows(s) || *b.machine != machine_of(t, s, r) {
                problems.push(format!("row {}@{ts} was never written", b.machine));
                continue;
            }
            let want = values(e, t, s, r);
            let mut got: Vec<(String, Value)> =
                b.columns.iter().filter_map(|c| c.value(i).map(|v| (c.name.to_string(), v))).collect();
            got.sort_by(|x, y| x.0.cmp(&y.0));
            let mut want: Vec<(String, Value)> = want.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
            want.sort_by(|x, y| x.0.cmp(&y.0));
            if got != want {
                problems.push(format!(
                    "row {}@{ts} (epoch {e} thread {t} seq {s} row {r}): {got:?}, want {want:?}",
                    b.machine
                ));
            }
            *per_batch.entry((e, t, s)).or_default() += 1;
        }
    }
    for (&(e, t, s), &n) in &per_batch {
        if n != rows(s) {
            problems.push(format!("batch epoch {e} thread {t} seq {s}: {n} of {} rows", rows(s)));
        }
    }
    if problems.is_empty() { Ok(per_batch.into_keys().collect()) } else { Err(problems) }
}

// ---------------------------------------------------------------------------------------------
// run

struct Shared {
    db: Db,
    epoch: u64,
    /// Per thread: batches acknowledged in this run (seqs 0..count).
    acked: Vec<AtomicU64>,
    stop: AtomicBool,
}

fn fail(s: &Shared, what: String) -> ! {
    s.stop.store(true, Ordering::SeqCst);
    eprintln!("stress: {what}");
    exit(1)
}

fn run(dir: PathBuf, epoch: u64, threads: u64, seconds: Option<Duration>) {
    let opts = Options {
        memtable_bytes_max: 1 << 20,
        partition_width: 1 << 35, // one partition per epoch and thread
        ..Options::default()
    };
    let db = match Db::open(&dir, opts) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("stress: open {}: {e}", dir.display());
            exit(1)
        }
    };
    let s = Arc::new(Shared {
        db,
        epoch,
        acked: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
    });
    let mut handles = Vec::new();
    for t in 0..threads {
        let s = s.clone();
        handles.push(std::thread::spawn(move || {
            let mut seq = 0u64;
            while !s.stop.load(Ordering::SeqCst) {
                if let Err(e) = s.db.write(&batch(s.epoch, t, seq)) {
                    fail(&s, format!("write epoch {} thread {t} seq {seq}: {e}", s.epoch));
                }
                s.acked[t as usize].store(seq + 1, Ordering::SeqCst);
                {
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "ack {} {t} {seq}", s.epoch).and_then(|()| out.flush()).is_err() {
                        // Nobody listens any more: stop acknowledging.
                        s.stop.store(true, Ordering::SeqCst);
                    }
                }
                seq += 1;
            }
        }));
    }
    for r in 0..2u64 {
        let s = s.clone();
        handles.push(std::thread::spawn(move || {
            let mut i = r;
            while !s.stop.load(Ordering::SeqCst) {
                if let Err(e) = reader_check(&s, i.is_multiple_of(2)) {
                    fail(&s, format!("reader {r}: {e}"));
                }
                i += 1;
            }
        }));
    }
    {
        let s = s.clone();
        handles.push(std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if let Err(e) = s.db.flush() {
                    fail(&s, format!("flush: {e}"));
                }
            }
        }));
    }
    let start = Instant::now();
    while seconds.is_none_or(|d| start.elapsed() < d) && !s.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    let total: u64 = s.acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
    let Ok(s) = Arc::try_unwrap(s) else { unreachable!("every thread was joined") };
    if let Err(e) = s.db.close() {
        eprintln!("stress: close: {e}");
        exit(1);
    }
    eprintln!("stress: epoch {epoch}: {total} batches acknowledged");
}

/// One reader round: a full scan (every row right, every batch whole, every batch this run
/// acknowledged before the scan present) or a downsample (at least the acknowledged values).
fn reader_check(s: &Shared, scan: bool) -> Result<(), String> {
    let before: Vec<u64> = s.acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    if scan {
        let present = check_rows(&s.db).map_err(|p| p.join("; "))?;
        for (t, &n) in before.iter().enumerate() {
            if let Some(seq) = (0..n).find(|&q| !present.contains(&(s.epoch, t as u64, q))) {
                return Err(format!(
                    "batch epoch {} thread {t} seq {seq} acknowledged before the scan is missing",
                    s.epoch
                ));
            }
        }
        return Ok(());
    }
    let lo = ts_of(s.epoch, 0, 0, 0);
    let hi = ts_of(s.epoch + 1, 0, 0, 0);
    let d =
        s.db.downsample(Machines::All, lo..hi, 1 << 35)
            .fields(["count"])
            .aggs([Agg::Count])
            .run()
            .map_err(|e| format!("downsample: {e}"))?;
    let mut got: BTreeMap<i64, u64> = BTreeMap::new();
    for series in &d.series {
        if let Some(AggColumn::Count(c)) = series.agg(Agg::Count) {
            for (b, n) in series.buckets.iter().zip(c) {
                *got.entry(*b).or_default() += n;
            }
        }
    }
    // Bucket of width 2^35 = one writer thread's whole epoch.
    for (t, &n) in before.iter().enumerate() {
        let want: u64 = (0..n).map(rows).sum();
        let b = ts_of(s.epoch, t as u64, 0, 0);
        let g = got.get(&b).copied().unwrap_or(0);
        if g < want {
            return Err(format!("downsample: thread {t} has {g} values, {want} acknowledged before"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// verify

fn verify(dir: &PathBuf, acks: &PathBuf) -> Result<String, Vec<String>> {
    let text = std::fs::read_to_string(acks).map_err(|e| vec![format!("read acks: {e}")])?;
    let mut acked: BTreeSet<(u64, u64, u64)> = BTreeSet::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("ack") {
            continue;
        }
        let n: Vec<u64> = w.filter_map(|x| x.parse().ok()).collect();
        if n.len() == 3 {
            acked.insert((n[0], n[1], n[2]));
        }
    }
    let opts = Options { create_if_missing: false, ..Options::default() };
    let db = Db::open(dir, opts).map_err(|e| vec![format!("open: {e}")])?;
    let present = check_rows(&db)?;
    let mut problems = Vec::new();
    for a in &acked {
        if !present.contains(a) {
            problems.push(format!("acknowledged batch epoch {} thread {} seq {} is missing", a.0, a.1, a.2));
        }
    }
    // Per writer (epoch, thread), batches were issued one after another, each after the one
    // before was acknowledged: a batch present but not acknowledged can only be the one after
    // the last acknowledged (in flight, or acknowledged just before the kill).
    let mut last: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for &(e, t, s) in &acked {
        let m = last.entry((e, t)).or_insert(s);
        *m = (*m).max(s);
    }
    let mut in_flight = 0;
    for &(e, t, s) in &present {
        if acked.contains(&(e, t, s)) {
            continue;
        }
        let expected = last.get(&(e, t)).map_or(0, |m| m + 1);
        if s == expected {
            in_flight += 1;
        } else {
            problems.push(format!(
                "batch epoch {e} thread {t} seq {s} is present but was never issued (next to issue: {expected})"
            ));
        }
    }
    if let Err(e) = db.verify() {
        problems.push(format!("verify: {e}"));
    }
    if let Err(e) = db.close() {
        problems.push(format!("close: {e}"));
    }
    if problems.is_empty() {
        Ok(format!(
            "{} acknowledged batches present, {in_flight} unacknowledged in-flight batches present, {} batches in all",
            acked.len(),
            present.len()
        ))
    } else {
        Err(problems)
    }
}
