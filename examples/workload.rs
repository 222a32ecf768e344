//! The comparison workload of `../shared/bench/WORKLOAD.md`, run on gemba.
//!
//! ```sh
//! cargo run --release --example workload -- DATASET_DIR DB_DIR
//! ```
//!
//! Loads the dataset's CSV files (not timed; a repeated timestamp within a file is resolved
//! field by field, the later non-missing value winning), ingests every machine through the
//! public columnar write API until the data is durable (`flush`, then `close`), reopens the
//! database, runs the five queries (one warm-up, then five timed runs each) and prints the JSON
//! report on stdout. Between the flush and the close it runs `compact()`, timed apart and
//! reported as `detail.optimize_s` (the maintenance gemba would otherwise do in the background
//! while the queries run, as `OPTIMIZE TABLE FINAL` is for ClickHouse in the peer harness). `compare.py --ours target/release/examples/workload` sets it beside the
//! peers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gemba::{Agg, AggColumn, Col, Db, Machines, Options, SyncPolicy, Value, WriteBatch};

/// One machine of the dataset, repeated timestamps resolved.
struct Machine {
    id: String,
    fields: Vec<String>,
    ts: Vec<i64>,
    /// Per field: values (0.0 where missing) and validity.
    values: Vec<Vec<f64>>,
    valid: Vec<Vec<bool>>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: workload DATASET_DIR DB_DIR");
        std::process::exit(2);
    }
    if let Err(e) = run(Path::new(&args[1]), Path::new(&args[2])) {
        eprintln!("workload: {e}");
        std::process::exit(1);
    }
}

fn run(dataset: &Path, db_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let machines = load(dataset)?;
    let rows: usize = machines.iter().map(|m| m.ts.len()).sum();
    let points: usize = machines.iter().map(|m| m.valid.iter().flatten().filter(|&&v| v).count()).sum();
    let p = Params::new(&machines).ok_or("the dataset has no rows")?;

    // Ingest: every row through the write API until durable.
    let start = Instant::now();
    let opts = Options { sync: SyncPolicy::Os, ..Options::default() };
    let db = Db::open(db_dir, opts)?;
    const CHUNK: usize = 65_536;
    for m in &machines {
        let mut at = 0;
        while at < m.ts.len() {
            let end = (at + CHUNK).min(m.ts.len());
            let mut b = WriteBatch::new();
            let cols = m.fields.iter().enumerate().map(|(i, f)| {
                (f.as_str(), Col::f64(&m.values[i][at..end]).with_validity(&m.valid[i][at..end]))
            });
            b.columns(&m.id, &m.ts[at..end], cols)?;
            db.write(&b)?;
            at = end;
        }
    }
    let written_s = start.elapsed().as_secs_f64();
    db.flush()?;
    let durable_s = start.elapsed().as_secs_f64();
    // Compaction would run in the background (and during the queries); run it now, timed apart.
    let optimize = Instant::now();
    db.compact()?;
    let optimize_s = optimize.elapsed().as_secs_f64();
    let st = db.stats();
    let closing = Instant::now();
    db.close()?;
    let ingest_s = durable_s + closing.elapsed().as_secs_f64();
    // Where ingest time went, on stderr (the report on stdout stays pure JSON).
    eprintln!(
        "ingest: writes {written_s:.3} s, flush + close {:.3} s (compaction after it: {optimize_s:.3} s); \
         segment bytes flushed {}, compacted {} in {} compactions (write amplification {:.2})",
        ingest_s - written_s,
        st.bytes_flushed,
        st.bytes_compacted,
        st.compactions,
        (st.bytes_flushed + st.bytes_compacted) as f64 / st.bytes_flushed.max(1) as f64
    );
    let bytes_on_disk = dir_bytes(db_dir)?;

    let db = Db::open(db_dir, Options::default())?;
    let queries = [
        ("q1_range", timed(|| q1(&db, &p))?),
        ("q2_downsample", timed(|| q2(&db, &p))?),
        ("q3_fleet", timed(|| q3(&db, &p))?),
        ("q4_last", timed(|| q4(&db))?),
        ("q5_scan", timed(|| q5(&db, &p))?),
    ];
    db.close()?;

    let name = dataset.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = format!(
        "{{\"engine\": \"gemba\", \"dataset\": {}, \"rows\": {rows}, \"points\": {points}, \"ingest_s\": {ingest_s}, \"bytes_on_disk\": {bytes_on_disk}, \"queries\": {{",
        json_str(&name)
    );
    for (i, (q, (median, digest))) in queries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!("{}: {{\"median_s\": {median}, \"digest\": {digest}}}", json_str(q)));
    }
    out.push_str(&format!("}}, \"detail\": {{\"optimize_s\": {optimize_s}}}}}"));
    println!("{out}");
    Ok(())
}

/// Runs a query once to warm up, then five times; the median time and the last digest.
fn timed(mut q: impl FnMut() -> gemba::Result<Digest>) -> gemba::Result<(f64, String)> {
    q()?; // warm-up
    let mut times = Vec::new();
    let mut digest = None;
    for _ in 0..5 {
        let t = Instant::now();
        let d = q()?;
        times.push(t.elapsed().as_secs_f64());
        digest = Some(d);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[2], digest.unwrap().json()))
}

/// The workload's constants (WORKLOAD.md, "Queries").
struct Params {
    t0: i64,
    t1: i64,
    big: String,
    big_fields: Vec<String>,
    b0: i64,
    b1: i64,
    q1_lo: i64,
    q1_hi: i64,
    w2: i64,
    w3: i64,
}

impl Params {
    fn new(machines: &[Machine]) -> Option<Params> {
        let nonempty: Vec<&Machine> = machines.iter().filter(|m| !m.ts.is_empty()).collect();
        let t0 = nonempty.iter().map(|m| m.ts[0]).min()?;
        let t1 = nonempty.iter().map(|m| *m.ts.last().unwrap()).max()? + 1;
        let mut big = nonempty[0];
        for m in &nonempty {
            if m.ts.len() > big.ts.len() {
                big = m;
            }
        }
        let b0 = big.ts[0];
        let b1 = *big.ts.last().unwrap() + 1;
        let bspan = b1 - b0;
        Some(Params {
            t0,
            t1,
            big: big.id.clone(),
            big_fields: big.fields.clone(),
            b0,
            b1,
            q1_lo: b0 + bspan * 45 / 100,
            q1_hi: b0 + bspan * 55 / 100,
            w2: (bspan + 999) / 1000,
            w3: (t1 - t0 + 99) / 100,
        })
    }
}

enum Digest {
    Q1 { rows: u64, fields: BTreeMap<String, (u64, f64)> },
    Q2(BTreeMap<String, [f64; 5]>),
    Flat(Vec<(&'static str, f64, bool)>),
}

impl Digest {
    fn json(&self) -> String {
        match self {
            Digest::Q1 { rows, fields } => {
                let f: Vec<String> = fields
                    .iter()
                    .map(|(n, (c, s))| format!("{}: {{\"count\": {c}, \"sum\": {}}}", json_str(n), num(*s)))
                    .collect();
                format!("{{\"rows\": {rows}, \"fields\": {{{}}}}}", f.join(", "))
            }
            Digest::Q2(fields) => {
                let f: Vec<String> = fields
                    .iter()
                    .map(|(n, d)| {
                        format!(
                            "{}: {{\"buckets\": {}, \"sum_avg\": {}, \"sum_min\": {}, \"sum_max\": {}, \"sum_count\": {}}}",
                            json_str(n),
                            d[0] as u64,
                            num(d[1]),
                            num(d[2]),
                            num(d[3]),
                            d[4] as u64
                        )
                    })
                    .collect();
                format!("{{\"fields\": {{{}}}}}", f.join(", "))
            }
            Digest::Flat(items) => {
                let f: Vec<String> = items
                    .iter()
                    .map(|(k, v, int)| {
                        if *int { format!("\"{k}\": {}", *v as u64) } else { format!("\"{k}\": {}", num(*v)) }
                    })
                    .collect();
                format!("{{{}}}", f.join(", "))
            }
        }
    }
}

fn q1(db: &Db, p: &Params) -> gemba::Result<Digest> {
    let batches = db.scan(p.big.as_str(), p.q1_lo..p.q1_hi).collect()?;
    let mut rows = 0;
    let mut sums: BTreeMap<String, (u64, Vec<f64>)> = BTreeMap::new();
    for f in &p.big_fields {
        sums.insert(f.clone(), (0, Vec::new()));
    }
    for b in &batches {
        rows += b.rows() as u64;
        for c in &b.columns {
            let e = sums.entry(c.name.to_string()).or_default();
            for i in 0..b.rows() {
                if let Some(v) = c.value(i) {
                    e.0 += 1;
                    e.1.push(v.as_f64());
                }
            }
        }
    }
    let fields = sums.into_iter().map(|(f, (c, v))| (f, (c, fsum(&v)))).collect();
    Ok(Digest::Q1 { rows, fields })
}

fn q2(db: &Db, p: &Params) -> gemba::Result<Digest> {
    let out = db
        .downsample(p.big.as_str(), p.b0..p.b1, p.w2)
        .fields(&p.big_fields)
        .aggs([Agg::Count, Agg::Min, Agg::Max, Agg::Avg])
        .run()?;
    let mut fields = BTreeMap::new();
    for s in &out.series {
        let n = s.buckets.len();
        let col = |a: Agg| -> Vec<f64> { (0..n).map(|i| s.agg(a).unwrap().f64(i)).collect() };
        let counts = match s.agg(Agg::Count) {
            Some(AggColumn::Count(c)) => c.iter().sum::<u64>(),
            _ => 0,
        };
        fields.insert(
            s.field.to_string(),
            [n as f64, fsum(&col(Agg::Avg)), fsum(&col(Agg::Min)), fsum(&col(Agg::Max)), counts as f64],
        );
    }
    Ok(Digest::Q2(fields))
}

fn q3(db: &Db, p: &Params) -> gemba::Result<Digest> {
    let out = db.downsample(Machines::All, p.t0..p.t1, p.w3).aggs([Agg::Avg, Agg::Max]).run()?;
    let (mut avg, mut max, mut groups) = (Vec::new(), Vec::new(), 0u64);
    for s in &out.series {
        for i in 0..s.buckets.len() {
            avg.push(s.agg(Agg::Avg).unwrap().f64(i));
            max.push(s.agg(Agg::Max).unwrap().f64(i));
        }
        groups += s.buckets.len() as u64;
    }
    Ok(Digest::Flat(vec![
        ("groups", groups as f64, true),
        ("sum_avg", fsum(&avg), false),
        ("sum_max", fsum(&max), false),
    ]))
}

fn q4(db: &Db) -> gemba::Result<Digest> {
    let out = db.latest(Machines::All).run()?;
    let v: Vec<f64> = out
        .iter()
        .map(|l| match l.value {
            Value::F64(x) => x,
            other => other.as_f64(),
        })
        .collect();
    Ok(Digest::Flat(vec![("count", v.len() as f64, true), ("sum", fsum(&v), false)]))
}

fn q5(db: &Db, p: &Params) -> gemba::Result<Digest> {
    let out = db.aggregate(Machines::All, p.t0..p.t1).aggs([Agg::Count, Agg::Sum]).run()?;
    let mut count = 0u64;
    let mut sums = Vec::new();
    for s in &out.series {
        if let Some(AggColumn::Count(c)) = s.agg(Agg::Count) {
            count += c.iter().sum::<u64>();
        }
        sums.push(s.agg(Agg::Sum).unwrap().f64(0));
    }
    Ok(Digest::Flat(vec![("count", count as f64, true), ("sum", fsum(&sums), false)]))
}

/// Correctly rounded sum (Shewchuk's algorithm, as Python's `math.fsum`).
fn fsum(values: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &x in values {
        let mut x = x;
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        partials.push(x);
    }
    // Sum the partials from the top, rounding once (half-even correction as in CPython).
    let mut n = partials.len();
    if n == 0 {
        return 0.0;
    }
    n -= 1;
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        let yr = x - hi;
        if y == yr {
            hi = x;
        }
    }
    hi
}

fn num(x: f64) -> String {
    if x.is_finite() { format!("{x:?}") } else { "null".to_string() }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        if md.is_dir() {
            total += dir_bytes(&e.path())?;
        } else if md.is_file() {
            total += md.len();
        }
    }
    Ok(total)
}

/// Loads every `<machine>.csv`, machines in byte-wise id order.
fn load(dir: &Path) -> Result<Vec<Machine>, Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort_by(|a, b| {
        a.file_stem().unwrap().as_encoded_bytes().cmp(b.file_stem().unwrap().as_encoded_bytes())
    });
    files.iter().map(|p| load_csv(p)).collect()
}

fn load_csv(path: &Path) -> Result<Machine, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<String> =
        lines.next().ok_or("empty file")?.split(',').map(|s| s.trim().to_string()).collect();
    if header.first().map(String::as_str) != Some("ts") {
        return Err(format!("{}: the header must start with ts", path.display()).into());
    }
    let fields = header[1..].to_vec();
    let nf = fields.len();
    let mut ts: Vec<i64> = Vec::new();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); nf];
    let mut valid: Vec<Vec<bool>> = vec![Vec::new(); nf];
    let mut sorted = true;
    for (ln, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut cells = line.split(',');
        let t: i64 = cells
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .map_err(|e| format!("{}:{}: ts: {e}", path.display(), ln + 2))?;
        if ts.last().is_some_and(|&p| t < p) {
            sorted = false;
        }
        ts.push(t);
        for f in 0..nf {
            let c = cells.next().unwrap_or("").trim();
            if c.is_empty() {
                values[f].push(0.0);
                valid[f].push(false);
            } else {
                values[f].push(c.parse().map_err(|e| format!("{}:{}: {c:?}: {e}", path.display(), ln + 2))?);
                valid[f].push(true);
            }
        }
    }
    // Resolve repeated timestamps: per field, the later non-missing value wins.
    let mut order: Vec<usize> = (0..ts.len()).collect();
    if !sorted {
        order.sort_by_key(|&i| ts[i]); // stable: file order within a timestamp
    }
    let mut out_ts = Vec::with_capacity(ts.len());
    let mut out_v: Vec<Vec<f64>> = vec![Vec::with_capacity(ts.len()); nf];
    let mut out_ok: Vec<Vec<bool>> = vec![Vec::with_capacity(ts.len()); nf];
    let mut a = 0;
    while a < order.len() {
        let t = ts[order[a]];
        let mut b = a + 1;
        while b < order.len() && ts[order[b]] == t {
            b += 1;
        }
        out_ts.push(t);
        for f in 0..nf {
            match order[a..b].iter().rev().find(|&&r| valid[f][r]) {
                Some(&r) => {
                    out_v[f].push(values[f][r]);
                    out_ok[f].push(true);
                }
                None => {
                    out_v[f].push(0.0);
                    out_ok[f].push(false);
                }
            }
        }
        a = b;
    }
    let id = path.file_stem().ok_or("no file name")?.to_string_lossy().into_owned();
    Ok(Machine { id, fields, ts: out_ts, values: out_v, valid: out_ok })
}
