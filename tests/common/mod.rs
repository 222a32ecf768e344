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

// ---------------------------------------------------------------------------------------------
// Helpers of the crash, fault, corruption and concurrency tests (crash_sweep.rs, faults.rs,
// corruption.rs, concurrency.rs).

use std::collections::BTreeSet;

use gemba::WriteBatch;

/// A deterministic family of batches. Batch `n` holds `rows(n)` rows, row `j` on machine
/// `m{(n + j) % machines}` at timestamp `base + n * STRIDE + j`, so every row decodes back to
/// its batch and row; the rows are added in reverse order of `j` (the memtable must sort), and
/// the values cover every type, `-0.0`, NaN payloads, missing values and a sparse field.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub machines: u64,
    pub rows_min: u64,
    pub rows_spread: u64,
    pub base: i64,
}

/// Timestamps between the starts of two consecutive batches.
pub const STRIDE: i64 = 1000;

impl Spec {
    pub const fn new(machines: u64, rows_min: u64, rows_spread: u64) -> Spec {
        Spec { machines, rows_min, rows_spread, base: 0 }
    }

    pub fn rows(&self, n: u64) -> u64 {
        self.rows_min + n % self.rows_spread.max(1)
    }

    pub fn machine(&self, n: u64, j: u64) -> String {
        format!("m{}", (n + j) % self.machines)
    }

    pub fn ts(&self, n: u64, j: u64) -> i64 {
        self.base + n as i64 * STRIDE + j as i64
    }

    /// The fields of row `j` of batch `n`.
    pub fn values(&self, n: u64, j: u64) -> BTreeMap<String, Value> {
        let mut row = BTreeMap::new();
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ j.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let f = match (n + j) % 7 {
            0 => f64::from_bits(0x7FF0_0000_0000_0001 | (h & 0x000F_FFFF_FFFF_FFFE)), // NaN payload
            1 => -0.0,
            2 => f64::from_bits(h >> 2), // anything finite-ish, subnormals included
            _ => n as f64 * 0.25 + j as f64,
        };
        row.insert("f".to_string(), Value::F64(f));
        let i = if n.is_multiple_of(2) { (n as i64) * 1_000_003 + j as i64 } else { h as i64 };
        row.insert("i".to_string(), Value::I64(i));
        if j.is_multiple_of(2) {
            row.insert("b".to_string(), Value::Bool((n + j).is_multiple_of(3)));
        }
        if (n + j).is_multiple_of(5) {
            row.insert("g".to_string(), Value::F64(-(n as f64) - j as f64 / 8.0));
        }
        row
    }

    pub fn batch(&self, n: u64) -> WriteBatch {
        let mut b = WriteBatch::new();
        for j in (0..self.rows(n)).rev() {
            let vals = self.values(n, j);
            b.row(&self.machine(n, j), self.ts(n, j), vals).unwrap();
        }
        b
    }

    /// Every row of batch `n` as it should read back.
    pub fn expected(&self, n: u64, out: &mut Model) {
        for j in 0..self.rows(n) {
            out.insert((self.machine(n, j), self.ts(n, j)), self.values(n, j));
        }
    }

    /// Checks that every row of `got` belongs to a batch below `issued` with exactly its
    /// values, and that each batch present is present whole. Returns the batches present.
    pub fn present(&self, got: &Model, issued: u64) -> Result<BTreeSet<u64>, String> {
        let mut rows_of: BTreeMap<u64, u64> = BTreeMap::new();
        for ((m, ts), row) in got {
            let rel = ts - self.base;
            if rel < 0 {
                return Err(format!("row {m}@{ts} was never written"));
            }
            let (n, j) = ((rel / STRIDE) as u64, (rel % STRIDE) as u64);
            if n >= issued || j >= self.rows(n) || *m != self.machine(n, j) {
                return Err(format!("row {m}@{ts} was never written"));
            }
            let want = self.values(n, j);
            let same = row.len() == want.len()
                && want.iter().all(|(f, v)| row.get(f).is_some_and(|g| same_value(g, v)));
            if !same {
                return Err(format!("row {m}@{ts} (batch {n} row {j}) has {row:?}, want {want:?}"));
            }
            *rows_of.entry(n).or_default() += 1;
        }
        for (&n, &c) in &rows_of {
            if c != self.rows(n) {
                return Err(format!("batch {n} only partly present: {c} of {} rows", self.rows(n)));
            }
        }
        Ok(rows_of.into_keys().collect())
    }
}

/// Checks `acked ⊆ present ⊆ acked ∪ maybe`.
pub fn check_present(
    present: &BTreeSet<u64>,
    acked: &BTreeSet<u64>,
    maybe: &BTreeSet<u64>,
) -> Result<(), String> {
    if let Some(n) = acked.difference(present).next() {
        return Err(format!(
            "acknowledged batch {n} lost ({} of {} acknowledged batches missing)",
            acked.difference(present).count(),
            acked.len()
        ));
    }
    if let Some(n) = present.iter().find(|n| !acked.contains(n) && !maybe.contains(n)) {
        return Err(format!("batch {n} is present but was never acknowledged nor in flight"));
    }
    Ok(())
}

/// A full scan as a model, with errors instead of panics.
pub fn try_dump(db: &Db) -> Result<Model, String> {
    let mut out = Model::new();
    let it = db.scan(gemba::Machines::All, ..).run().map_err(|e| format!("scan: {e}"))?;
    for b in it {
        let b = b.map_err(|e| format!("scan: {e}"))?;
        for w in b.ts.windows(2) {
            if w[0] >= w[1] {
                return Err(format!("scan of {} not strictly sorted: {w:?}", b.machine));
            }
        }
        for (i, &t) in b.ts.iter().enumerate() {
            let mut row = BTreeMap::new();
            for c in &b.columns {
                if let Some(v) = c.value(i) {
                    row.insert(c.name.to_string(), v);
                }
            }
            if row.is_empty() {
                return Err(format!("scan returned an empty row {}@{t}", b.machine));
            }
            if out.insert((b.machine.to_string(), t), row).is_some() {
                return Err(format!("row {}@{t} returned twice", b.machine));
            }
        }
    }
    Ok(out)
}

/// Model equality with values compared bit for bit, as an error message.
pub fn diff_models(got: &Model, want: &Model) -> Result<(), String> {
    for (k, w) in want {
        match got.get(k) {
            None => return Err(format!("row {k:?} missing")),
            Some(g) => {
                let same =
                    g.len() == w.len() && w.iter().all(|(f, v)| g.get(f).is_some_and(|x| same_value(x, v)));
                if !same {
                    return Err(format!("row {k:?}: got {g:?}, want {w:?}"));
                }
            }
        }
    }
    if let Some(k) = got.keys().find(|k| !want.contains_key(*k)) {
        return Err(format!("row {k:?} should not exist"));
    }
    Ok(())
}

/// The segment ids a MANIFEST lists (`None` when it is not a well-formed manifest). Layout
/// (FORMAT.md, "Manifest"): magic, version, reserved, generation, flushed_seq, next_segment_id,
/// max_ts (52 bytes with the count), then 72-byte entries beginning with the id.
pub fn manifest_segment_ids(bytes: &[u8]) -> Option<Vec<u64>> {
    if bytes.len() < 56 || &bytes[0..8] != b"GEMBAMAN" {
        return None;
    }
    let n = u32::from_le_bytes(bytes[48..52].try_into().unwrap()) as usize;
    let end = 52usize.checked_add(n.checked_mul(72)?)?;
    if end > bytes.len() {
        return None;
    }
    Some((0..n).map(|i| u64::from_le_bytes(bytes[52 + i * 72..60 + i * 72].try_into().unwrap())).collect())
}

/// Leftovers in a database directory after a clean close: temporary files, and segment files
/// the manifest does not list. Empty when the directory is clean.
pub fn leftovers(fs: &dyn gemba::io::FileSystem, dir: &Path) -> Result<Vec<String>, String> {
    let names = fs.list(dir).map_err(|e| format!("list {}: {e}", dir.display()))?;
    let live: Vec<u64> = if names.iter().any(|n| n == "MANIFEST") {
        let b = fs.read(&dir.join("MANIFEST")).map_err(|e| format!("read manifest: {e}"))?;
        manifest_segment_ids(&b).ok_or("unreadable manifest")?
    } else {
        Vec::new()
    };
    Ok(names
        .into_iter()
        .filter(|n| {
            n.ends_with(".tmp")
                || n.strip_prefix("seg-")
                    .and_then(|s| s.strip_suffix(".gseg"))
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|id| !live.contains(&id))
        })
        .collect())
}

/// Counts the panics of gemba's own threads (named `gemba-*`: the flush and sync threads),
/// which `Db` would otherwise swallow when it joins them. Install once per test binary; the
/// count is per process, so tests running in parallel see each other's engine panics (a
/// failure either way).
pub fn count_panics() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("gemba-")) {
                PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            prev(info);
        }));
    });
}

/// Panics of gemba's threads seen since `count_panics` was installed.
pub fn panics() -> usize {
    PANICS.load(std::sync::atomic::Ordering::SeqCst)
}

static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How [`IdleWait::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEnd {
    /// No frozen memtable, no compaction due, no fully flushed log file waiting for removal.
    Idle,
    /// A fully flushed log file stayed, but no file operation happened for `quiet` (it is
    /// remembered and not waited for again).
    Quiet,
    /// `give_up` said so, or the database is poisoned (its flush thread stops) or closed.
    GaveUp,
    /// Still busy at the deadline.
    Timeout,
}

/// Waits until the background thread has nothing left to do, so that what a single-threaded
/// workload does next happens at a fixed point of the operation sequence: no frozen memtable,
/// no compaction due, and no closed log file whose records are all flushed (which it is about
/// to remove). Compactions for deletes and retention are not visible from outside: with
/// tombstones or a retention, after the background thread did anything, nothing must happen
/// for `quiet` as well.
pub struct IdleWait {
    pub timeout: std::time::Duration,
    pub quiet: std::time::Duration,
    compaction_trigger: usize,
    retention: bool,
    /// What the background thread had done when last seen idle: (flushed_seq, segments,
    /// compactions, bytes flushed). It only wakes up for a flush (and when the Db opens), so
    /// invisible compactions (deletes, retention) can only follow a change of these.
    seen: Option<(u64, usize, u64, u64)>,
    /// Fully flushed log files the engine leaves behind (not waited for again).
    stale: BTreeSet<String>,
}

impl IdleWait {
    pub fn new(opts: &gemba::Options, timeout: std::time::Duration, quiet: std::time::Duration) -> IdleWait {
        IdleWait {
            timeout,
            quiet,
            compaction_trigger: opts.compaction_trigger,
            retention: opts.retention.is_some(),
            seen: None,
            stale: BTreeSet::new(),
        }
    }

    pub fn wait(
        &mut self,
        db: &Db,
        fs: &gemba::io::SimFs,
        dir: &Path,
        give_up: &dyn Fn() -> bool,
    ) -> IdleEnd {
        use std::time::Instant;
        let start = Instant::now();
        let mut last = (fs.ops(), Instant::now());
        loop {
            // An empty write does no I/O; it fails only when the database is poisoned or closed.
            if give_up() || db.write(&WriteBatch::new()).is_err() {
                return IdleEnd::GaveUp;
            }
            let ops = fs.ops();
            if ops != last.0 {
                last = (ops, Instant::now());
            }
            let st = db.stats();
            if st.frozen_memtables == 0 && !self.compaction_due(db) {
                let waiting: Vec<String> = removable_logs(fs, dir, st.flushed_seq)
                    .into_iter()
                    .filter(|n| !self.stale.contains(n))
                    .collect();
                let now = (st.flushed_seq, st.segments, st.compactions, st.bytes_flushed);
                let opaque = (st.tombstones > 0 || self.retention) && self.seen != Some(now);
                let quiet = last.1.elapsed() > self.quiet;
                if waiting.is_empty() && (!opaque || quiet) {
                    self.seen = Some(now);
                    return IdleEnd::Idle;
                }
                // A fully flushed log file can stay until the next flush (one rotated after
                // the flush that covered it removed the others): stop waiting once quiet.
                if !waiting.is_empty() && quiet {
                    self.stale.extend(waiting);
                    return IdleEnd::Quiet;
                }
            }
            if start.elapsed() > self.timeout {
                return IdleEnd::Timeout;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }

    /// A partition other than the newest with two or more segments (compacted at once), or
    /// one with at least the trigger count.
    fn compaction_due(&self, db: &Db) -> bool {
        let Ok(ins) = db.inspect() else { return false };
        let mut per: BTreeMap<i64, usize> = BTreeMap::new();
        for s in &ins.segments {
            *per.entry(s.partition_start).or_default() += 1;
        }
        let newest = per.keys().next_back().copied();
        per.iter().any(|(&p, &n)| (n >= 2 && Some(p) != newest) || n >= self.compaction_trigger)
    }
}

/// The log files other than the newest that hold only records up to `flushed_seq`.
pub fn removable_logs(fs: &dyn gemba::io::FileSystem, dir: &Path, flushed_seq: u64) -> Vec<String> {
    let mut logs: Vec<String> = fs
        .list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("wal-") && n.ends_with(".log"))
        .collect();
    logs.sort();
    logs.pop();
    logs.retain(|n| {
        let bytes = fs.read(&dir.join(n)).unwrap_or_default();
        let offs = record_offsets(&bytes);
        let max_seq = offs[..offs.len() - 1]
            .last()
            .and_then(|&o| bytes.get(o + 8..o + 16))
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
        max_seq <= flushed_seq
    });
    logs
}
