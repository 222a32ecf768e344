//! Damaged files on a real file system: every single-bit flip of the manifest and of each
//! segment file's header, index and trailer, random flips in the data blocks, and truncations
//! of every file (every length near both ends, a step in between).
//!
//! For each case the database is opened, fully scanned, queried (latest, aggregate,
//! downsample) and verified. Every answer must be either an error whose message names the
//! damaged file, or exactly the right data: never a panic, never silently wrong data; and
//! `verify_dir` must report a problem in the damaged file whenever the database did. A
//! counting allocator also checks that no case makes gemba allocate more than the damaged
//! bytes could justify (the segment reader promises this).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{Model, Spec, count_panics, panics, try_dump};
use gemba::{Agg, AggColumn, Db, Options, Value};

/// Records the largest single allocation.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Any single allocation above this in a case is reported (the whole database is ~20 KB).
const ALLOC_LIMIT: usize = 64 << 20;

const SPEC: Spec = Spec::new(3, 4, 3);

fn opts() -> Options {
    Options { partition_width: 4 * common::STRIDE, block_rows: 8, ..Options::default() }
}

/// A scratch directory, on tmpfs when there is one (thousands of opens, each syncing).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new().prefix("gemba-corrupt").tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// What a database with four segments (three from one flush, one from another), a manifest
/// and a log holds, and its files.
fn build(dir: &Path) -> (Vec<(String, Vec<u8>)>, Model) {
    let db = Db::open(dir, opts()).unwrap();
    let mut want = Model::new();
    let write = |a: u64, b: u64, want: &mut Model| {
        for n in a..b {
            db.write(&SPEC.batch(n)).unwrap();
            SPEC.expected(n, want);
        }
    };
    write(0, 12, &mut want);
    db.flush().unwrap();
    write(12, 16, &mut want);
    db.flush().unwrap();
    write(16, 19, &mut want);
    db.close().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    (files, want)
}

/// Answers of the other queries, computed from the model.
struct Expect {
    model: Model,
    latest: BTreeMap<(String, String), (i64, Value)>,
    counts: BTreeMap<(String, String), u64>,
    buckets: BTreeMap<(String, String, i64), u64>,
}

const BUCKET: i64 = 1500;

fn expect(model: Model) -> Expect {
    let mut latest = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut buckets = BTreeMap::new();
    for ((m, ts), row) in &model {
        for (f, v) in row {
            latest.insert((m.clone(), f.clone()), (*ts, *v)); // rows ascend in ts per machine
            *counts.entry((m.clone(), f.clone())).or_default() += 1;
            *buckets.entry((m.clone(), f.clone(), ts.div_euclid(BUCKET) * BUCKET)).or_default() += 1;
        }
    }
    Expect { model, latest, counts, buckets }
}

fn same(a: &Value, b: &Value) -> bool {
    common::same_value(a, b)
}

/// Runs every query; `Ok(())` when each answer is right, `Err((is_error, message))` with
/// `is_error` when gemba reported an error (to be checked for the file name) and not when it
/// answered wrongly.
fn queries(db: &Db, e: &Expect) -> Result<(), (bool, String)> {
    let got = try_dump(db).map_err(|m| (m.starts_with("scan: "), m))?;
    common::diff_models(&got, &e.model).map_err(|m| (false, format!("scan: {m}")))?;
    let latest = db.latest(gemba::Machines::All).run().map_err(|x| (true, format!("latest: {x}")))?;
    let mut got_latest = BTreeMap::new();
    for l in latest {
        got_latest.insert((l.machine.to_string(), l.field.to_string()), (l.ts, l.value));
    }
    let latest_ok = got_latest.len() == e.latest.len()
        && e.latest
            .iter()
            .all(|(k, (t, v))| got_latest.get(k).is_some_and(|(gt, gv)| gt == t && same(gv, v)));
    if !latest_ok {
        return Err((false, format!("latest: got {got_latest:?}")));
    }
    let agg = db
        .aggregate(gemba::Machines::All, ..)
        .aggs([Agg::Count])
        .run()
        .map_err(|x| (true, format!("aggregate: {x}")))?;
    let mut got_counts = BTreeMap::new();
    for s in &agg.series {
        if let Some(AggColumn::Count(c)) = s.agg(Agg::Count) {
            got_counts.insert((s.machine.to_string(), s.field.to_string()), c.iter().sum::<u64>());
        }
    }
    if got_counts != e.counts {
        return Err((false, format!("aggregate counts: got {got_counts:?}")));
    }
    let ds = db
        .downsample(gemba::Machines::All, .., BUCKET)
        .aggs([Agg::Count])
        .run()
        .map_err(|x| (true, format!("downsample: {x}")))?;
    let mut got_b = BTreeMap::new();
    for s in &ds.series {
        if let Some(AggColumn::Count(c)) = s.agg(Agg::Count) {
            for (b, n) in s.buckets.iter().zip(c) {
                got_b.insert((s.machine.to_string(), s.field.to_string(), *b), *n);
            }
        }
    }
    if got_b != e.buckets {
        return Err((false, "downsample counts differ".into()));
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    /// Largest single allocation seen in any case.
    largest: usize,
    cases: u64,
    detected: u64,
    harmless: u64,
    failures: Vec<String>,
}

/// Writes the files (with `damaged` in place of `target`, or without it for `None`), opens,
/// queries, verifies.
fn case(
    work: &Path,
    files: &[(String, Vec<u8>)],
    target: &str,
    damaged: &[u8],
    e: &Expect,
    what: &str,
    t: &mut Tally,
) {
    for entry in std::fs::read_dir(work).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (name, bytes) in files {
        let b: &[u8] = if name == target { damaged } else { bytes };
        std::fs::write(work.join(name), b).unwrap();
    }
    t.cases += 1;
    LARGEST.store(0, Ordering::Relaxed);
    let before = panics();
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<bool, String> {
        let named = |m: String| -> Result<bool, String> {
            if m.contains(target) { Ok(true) } else { Err(format!("error does not name {target}: {m}")) }
        };
        let db = match Db::open(work, opts()) {
            Ok(db) => db,
            Err(x) => return named(format!("open: {x}")),
        };
        match queries(&db, e) {
            Ok(()) => {}
            Err((true, m)) => return named(m),
            Err((false, m)) => return Err(format!("silently wrong data: {m}")),
        }
        if let Err(x) = db.verify() {
            return named(format!("verify (after right answers): {x}"));
        }
        db.close().map_err(|x| format!("close: {x}"))?;
        Ok(false)
    }));
    // `verify_dir` (read-only, reports every problem) must see what the database saw.
    let vd = catch_unwind(AssertUnwindSafe(|| gemba::verify_dir(&gemba::io::StdFs, work)));
    let vd_names = match &vd {
        Ok(Ok(rep)) => rep.problems.iter().any(|p| p.file.ends_with(target)),
        Ok(Err(e)) => e.to_string().contains(target),
        Err(_) => {
            t.failures.push(format!("{target} {what}: verify_dir panicked"));
            false
        }
    };
    if matches!(r, Ok(Ok(true))) && !vd_names && vd.is_ok() {
        t.failures.push(format!("{target} {what}: verify_dir reports no problem in {target}: {vd:?}"));
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    t.largest = t.largest.max(largest);
    match r {
        Ok(Ok(true)) => t.detected += 1,
        Ok(Ok(false)) => t.harmless += 1,
        Ok(Err(m)) => t.failures.push(format!("{target} {what}: {m}")),
        Err(_) => t.failures.push(format!("{target} {what}: panic")),
    }
    if panics() != before {
        t.failures.push(format!("{target} {what}: a gemba background thread panicked"));
    }
    if largest > ALLOC_LIMIT {
        t.failures.push(format!("{target} {what}: allocated {} MiB at once", largest >> 20));
    }
}

fn flips(bytes: &[u8], bits: impl Iterator<Item = usize>, mut f: impl FnMut(Vec<u8>, String)) {
    for bit in bits {
        let mut b = bytes.to_vec();
        b[bit / 8] ^= 1 << (bit % 8);
        f(b, format!("bit {bit} (byte {}) flipped", bit / 8));
    }
}

/// Truncation lengths: every length within 64 bytes of either end, a step in between.
fn cuts(len: usize) -> Vec<usize> {
    let step = (len / 150).max(1);
    let mut v: Vec<usize> = (0..len.min(64)).collect();
    v.extend((64..len.saturating_sub(64)).step_by(step));
    v.extend(len.saturating_sub(64).max(64)..len);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn damaged_files_give_an_error_naming_them_or_the_right_data() {
    count_panics();
    let started = Instant::now();
    let src = scratch();
    let (files, model) = build(src.path());
    let e = expect(model);
    let segs: Vec<&(String, Vec<u8>)> = files.iter().filter(|(n, _)| n.starts_with("seg-")).collect();
    assert_eq!(segs.len(), 4, "files: {:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(files.iter().any(|(n, _)| n == "MANIFEST"));
    assert!(files.iter().any(|(n, _)| n.starts_with("wal-")));
    let work = scratch();
    // The undamaged database reads right.
    let mut t = Tally::default();
    case(work.path(), &files, "-", &[], &e, "undamaged", &mut t);
    assert!(t.failures.is_empty() && t.harmless == 1, "{:?}", t.failures);

    let mut per_file = Vec::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for (name, bytes) in &files {
        if name.starts_with("wal") {
            continue; // the log's (and its spare's) damage is tested by tests/recovery.rs
        }
        let before = t.cases;
        let len = bytes.len();
        let run = |b: Vec<u8>, what: String, t: &mut Tally| case(work.path(), &files, name, &b, &e, &what, t);
        if name == "MANIFEST" {
            flips(bytes, 0..len * 8, |b, w| run(b, w, &mut t));
        } else {
            let footer = u64::from_le_bytes(bytes[len - 32..len - 24].try_into().unwrap()) as usize;
            assert!(footer > 16 && footer < len - 32, "{name}: footer at {footer}");
            // Header, index and trailer: every bit.
            flips(bytes, 0..16 * 8, |b, w| run(b, format!("header {w}"), &mut t));
            flips(bytes, footer * 8..len * 8, |b, w| run(b, format!("index/trailer {w}"), &mut t));
            // Data blocks: random bits.
            let data_bits = (footer - 16) * 8;
            let picks: Vec<usize> = (0..300)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    16 * 8 + (rng as usize % data_bits)
                })
                .collect();
            flips(bytes, picks.into_iter(), |b, w| run(b, format!("data {w}"), &mut t));
        }
        for cut in cuts(len) {
            run(bytes[..cut].to_vec(), format!("truncated to {cut} of {len} bytes"), &mut t);
        }
        per_file.push(format!("{name} ({len} B): {} cases", t.cases - before));
    }
    println!("{}", per_file.join("\n"));
    println!(
        "corruption: {} cases, {} detected (error naming the file), {} harmless (right data), {} failures, largest allocation {} KiB, {:.1} s",
        t.cases,
        t.detected,
        t.harmless,
        t.failures.len(),
        t.largest >> 10,
        started.elapsed().as_secs_f64()
    );
    for f in t.failures.iter().take(40) {
        println!("FAIL {f}");
    }
    assert!(t.failures.is_empty(), "{} failures; first: {}", t.failures.len(), t.failures[0]);
}
