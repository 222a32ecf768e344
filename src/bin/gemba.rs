//! `gemba`: load, inspect, check, query and export a gemba database from the command line.
//!
//! ```text
//! gemba import DB --csv DATASET_DIR
//! gemba export DB --csv OUT_DIR [--machine M]... [--from TS] [--to TS]
//! gemba inspect DB
//! gemba verify DB
//! gemba query DB scan --machine M [--from TS] [--to TS] [--fields a,b] [--format csv|table]
//! gemba query DB downsample [--machine M]... --width W [--aggs count,min,max,avg] ...
//! gemba query DB latest [--machine M]... [--fields a,b]
//! ```
//!
//! A dataset directory holds one `<machine>.csv` per machine with the header `ts,<field>,...`
//! (`ts` an integer; an empty cell is a missing value; a repeated `ts` within a file: the later
//! row wins, field by field). Machine ids with characters other than letters, digits, `.`, `_`
//! and `-` are written to file names with `%XX` escapes, which import reverses.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use gemba::{Agg, AggColumn, Col, Db, Machines, Options, SyncPolicy, TimeRange, Value, Values, WriteBatch};

#[derive(Parser)]
#[command(name = "gemba", version, about = "Load, inspect, check, query and export a gemba database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a dataset directory (one CSV per machine) into a database (created if needed).
    Import {
        /// The database directory.
        db: PathBuf,
        /// The dataset directory.
        #[arg(long)]
        csv: PathBuf,
    },
    /// Write machines' data as one CSV per machine, values printed so they parse back to the
    /// identical numbers.
    Export {
        /// The database directory.
        db: PathBuf,
        /// The output directory (created).
        #[arg(long)]
        csv: PathBuf,
        /// Only these machines (repeatable; default all).
        #[arg(long = "machine")]
        machines: Vec<String>,
        /// First timestamp included.
        #[arg(long)]
        from: Option<i64>,
        /// First timestamp excluded.
        #[arg(long)]
        to: Option<i64>,
    },
    /// Partitions, segments, machines, fields and types, time bounds, and per field the codecs
    /// and bytes per value.
    Inspect {
        /// The database directory.
        db: PathBuf,
    },
    /// Read every file and check every checksum; exit 0 when healthy, 1 with the file and
    /// offset of each problem.
    Verify {
        /// The database directory.
        db: PathBuf,
    },
    /// Run a query.
    Query {
        /// The database directory.
        db: PathBuf,
        #[command(subcommand)]
        query: Query,
    },
}

#[derive(Subcommand)]
enum Query {
    /// Raw rows of machines over a time range.
    Scan {
        #[command(flatten)]
        sel: Selection,
    },
    /// Per-bucket aggregates.
    Downsample {
        #[command(flatten)]
        sel: Selection,
        /// Bucket width in timestamp units (buckets aligned to the epoch).
        #[arg(long)]
        width: i64,
        /// Aggregates: count,sum,min,max,avg,first,last.
        #[arg(long, value_delimiter = ',', default_value = "count,min,max,avg")]
        aggs: Vec<AggArg>,
    },
    /// The latest value of each field.
    Latest {
        #[command(flatten)]
        sel: Selection,
    },
}

#[derive(clap::Args)]
struct Selection {
    /// Machines (repeatable; default all).
    #[arg(long = "machine")]
    machines: Vec<String>,
    /// Fields, comma-separated (default all).
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// First timestamp included.
    #[arg(long)]
    from: Option<i64>,
    /// First timestamp excluded.
    #[arg(long)]
    to: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Table,
}

#[derive(Clone, Copy, ValueEnum)]
enum AggArg {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
}

impl AggArg {
    fn agg(self) -> Agg {
        match self {
            AggArg::Count => Agg::Count,
            AggArg::Sum => Agg::Sum,
            AggArg::Min => Agg::Min,
            AggArg::Max => Agg::Max,
            AggArg::Avg => Agg::Avg,
            AggArg::First => Agg::First,
            AggArg::Last => Agg::Last,
        }
    }
}

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gemba: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Command) -> Res<ExitCode> {
    match cmd {
        Command::Import { db, csv } => import(&db, &csv).map(|_| ExitCode::SUCCESS),
        Command::Export { db, csv, machines, from, to } => {
            export(&db, &csv, machines, range(from, to)).map(|_| ExitCode::SUCCESS)
        }
        Command::Inspect { db } => inspect(&db).map(|_| ExitCode::SUCCESS),
        Command::Verify { db } => verify(&db),
        Command::Query { db, query: q } => run_query(&db, q).map(|_| ExitCode::SUCCESS),
    }
}

fn range(from: Option<i64>, to: Option<i64>) -> TimeRange {
    TimeRange { start: from.unwrap_or(i64::MIN), end: to.unwrap_or(i64::MAX) }
}

fn open_existing(db: &Path) -> Res<Db> {
    if !db.is_dir() {
        return Err(format!("{}: no such database directory", db.display()));
    }
    Db::open(db, Options { create_if_missing: false, ..Options::default() }).map_err(|e| e.to_string())
}

fn machines(list: Vec<String>) -> Machines {
    if list.is_empty() { Machines::All } else { Machines::List(list) }
}

// ------------------------------------------------------------------------------------------
// import / export

/// A machine id as a file stem: `%XX` for bytes outside `[A-Za-z0-9._-]`.
fn escape(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(stem: &str) -> Res<String> {
    let b = stem.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).map_err(|_| format!("bad escape in {stem:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {stem:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{stem:?} does not decode to UTF-8"))
}

fn import(db_dir: &Path, csv: &Path) -> Res<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(csv)
        .map_err(|e| format!("{}: {e}", csv.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no <machine>.csv files", csv.display()));
    }
    let db = Db::open(db_dir, Options { sync: SyncPolicy::Os, ..Options::default() })
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let (mut rows, mut points) = (0usize, 0usize);
    let progress = files.len() > 1 && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for (i, f) in files.iter().enumerate() {
        let stem = f.file_stem().and_then(|s| s.to_str()).ok_or(format!("{}: bad file name", f.display()))?;
        let machine = unescape(stem)?;
        let m = read_csv(f)?;
        const CHUNK: usize = 65_536;
        let mut at = 0;
        while at < m.ts.len() {
            let end = (at + CHUNK).min(m.ts.len());
            let mut b = WriteBatch::new();
            let cols = m.fields.iter().enumerate().map(|(k, name)| {
                (name.as_str(), Col::f64(&m.values[k][at..end]).with_validity(&m.valid[k][at..end]))
            });
            b.columns(&machine, &m.ts[at..end], cols).map_err(|e| format!("{}: {e}", f.display()))?;
            points += b.points();
            db.write(&b).map_err(|e| e.to_string())?;
            at = end;
        }
        rows += m.ts.len();
        if progress {
            eprint!("\r  imported {}/{} files, {rows} rows", i + 1, files.len());
        }
    }
    db.flush().map_err(|e| e.to_string())?;
    db.close().map_err(|e| e.to_string())?;
    if progress {
        eprintln!();
    }
    println!(
        "imported {} machines, {rows} rows, {points} values in {:.2} s",
        files.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

struct CsvData {
    fields: Vec<String>,
    ts: Vec<i64>,
    values: Vec<Vec<f64>>,
    valid: Vec<Vec<bool>>,
}

fn read_csv(path: &Path) -> Res<CsvData> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or(format!("{}: empty file", path.display()))?
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    if header.first().map(String::as_str) != Some("ts") {
        return Err(format!("{}: the header must start with ts", path.display()));
    }
    let fields = header[1..].to_vec();
    let nf = fields.len();
    // ts → per field the latest non-missing value: a repeated ts merges, the later row winning.
    let mut rows: BTreeMap<i64, Vec<Option<f64>>> = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 2);
        let mut cells = line.split(',');
        let ts: i64 = cells.next().unwrap_or("").trim().parse().map_err(|e| format!("{}: ts: {e}", at()))?;
        let row = rows.entry(ts).or_insert_with(|| vec![None; nf]);
        for (k, c) in cells.enumerate() {
            if k >= nf {
                return Err(format!("{}: more cells than header fields", at()));
            }
            let c = c.trim();
            if !c.is_empty() {
                row[k] = Some(c.parse().map_err(|e| format!("{}: {c:?}: {e}", at()))?);
            }
        }
    }
    let ts: Vec<i64> = rows.keys().copied().collect();
    let values = (0..nf).map(|k| rows.values().map(|r| r[k].unwrap_or(0.0)).collect()).collect();
    let valid = (0..nf).map(|k| rows.values().map(|r| r[k].is_some()).collect()).collect();
    Ok(CsvData { fields, ts, values, valid })
}

fn export(db_dir: &Path, out: &Path, list: Vec<String>, range: TimeRange) -> Res<()> {
    let db = open_existing(db_dir)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let infos = db.machines().map_err(|e| e.to_string())?;
    let wanted: Vec<_> =
        infos.iter().filter(|m| list.is_empty() || list.iter().any(|l| **l == *m.name)).collect();
    for l in &list {
        if !infos.iter().any(|m| *m.name == **l) {
            return Err(format!("no machine {l:?} in {}", db_dir.display()));
        }
    }
    let mut files = 0;
    for m in wanted {
        let path = out.join(format!("{}.csv", escape(&m.name)));
        let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = BufWriter::new(f);
        let names: Vec<&str> = m.fields.iter().map(|f| &*f.name).collect();
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        writeln!(w, "ts,{}", names.join(",")).map_err(io)?;
        for b in db.scan(&*m.name, range).fields(&names).run().map_err(|e| e.to_string())? {
            let b = b.map_err(|e| e.to_string())?;
            let mut line = String::new();
            for i in 0..b.rows() {
                line.clear();
                line.push_str(&b.ts[i].to_string());
                for c in &b.columns {
                    line.push(',');
                    if let Some(v) = c.value(i) {
                        line.push_str(&value_text(v));
                    }
                }
                writeln!(w, "{line}").map_err(io)?;
            }
        }
        w.flush().map_err(io)?;
        files += 1;
    }
    println!("exported {files} machines to {}", out.display());
    Ok(())
}

/// A value as text that parses back to the identical value (shortest round-trip form).
fn value_text(v: Value) -> String {
    match v {
        Value::F64(x) => format!("{x:?}"),
        Value::I64(x) => x.to_string(),
        Value::Bool(x) => (x as u8).to_string(),
    }
}

// ------------------------------------------------------------------------------------------
// inspect / verify

fn inspect(db_dir: &Path) -> Res<()> {
    let db = open_existing(db_dir)?;
    let ins = db.inspect().map_err(|e| e.to_string())?;
    let total_bytes: u64 = ins.segments.iter().map(|s| s.bytes).sum();
    let total_points: u64 = ins.segments.iter().map(|s| s.points).sum();
    println!("database {}", db_dir.display());
    let mut parts: BTreeMap<i64, Vec<&gemba::SegmentInfo>> = BTreeMap::new();
    for s in &ins.segments {
        parts.entry(s.partition_start).or_default().push(s);
    }
    println!(
        "{} partitions, {} segments, {} values in {} bytes ({:.3} bytes/value)",
        parts.len(),
        ins.segments.len(),
        total_points,
        total_bytes,
        if total_points > 0 { total_bytes as f64 / total_points as f64 } else { 0.0 }
    );
    println!("\nsegments:");
    let mut t = Table::new(&["partition", "segment", "machines", "values", "bytes", "from", "to"]);
    for (p, segs) in &parts {
        for s in segs {
            t.row(vec![
                p.to_string(),
                s.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                s.machines.to_string(),
                s.points.to_string(),
                s.bytes.to_string(),
                s.time_bounds.0.to_string(),
                s.time_bounds.1.to_string(),
            ]);
        }
    }
    t.print();
    println!("\nfields:");
    let machines = db.machines().map_err(|e| e.to_string())?;
    let mut t =
        Table::new(&["machine", "field", "type", "values", "bits/value", "from", "to", "codecs (blocks)"]);
    for f in &ins.fields {
        let bounds = machines.iter().find(|m| m.name == f.machine).and_then(|m| m.time_bounds);
        let codecs: Vec<String> = f.codecs.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
        t.row(vec![
            f.machine.to_string(),
            f.field.to_string(),
            f.field_type.to_string(),
            f.points.to_string(),
            format!("{:.2}", f.bits_per_value()),
            bounds.map_or(String::new(), |b| b.0.to_string()),
            bounds.map_or(String::new(), |b| b.1.to_string()),
            codecs.join(", "),
        ]);
    }
    t.print();
    let stats = db.stats();
    if stats.memtable_bytes > 0 {
        println!("\n(plus {} bytes of recent writes in memory, replayed from the log)", stats.memtable_bytes);
    }
    Ok(())
}

fn verify(db_dir: &Path) -> Res<ExitCode> {
    if !db_dir.is_dir() {
        return Err(format!("{}: no such database directory", db_dir.display()));
    }
    let r = gemba::verify_dir(&gemba::io::StdFs, db_dir).map_err(|e| e.to_string())?;
    for n in &r.notes {
        println!("note: {n}");
    }
    for p in &r.problems {
        println!("{}: offset {}: {}", p.file.display(), p.offset, p.what);
    }
    if r.is_healthy() {
        println!(
            "ok: {} files, {} values, {} log records checked",
            r.files_checked, r.points_checked, r.log_records
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s) in {}", r.problems.len(), db_dir.display());
        Ok(ExitCode::from(1))
    }
}

// ------------------------------------------------------------------------------------------
// query

fn run_query(db_dir: &Path, q: Query) -> Res<()> {
    let db = open_existing(db_dir)?;
    let err = |e: gemba::Error| e.to_string();
    let mut out = Output::new();
    match q {
        Query::Scan { sel } => {
            let mut s = db.scan(machines(sel.machines), range(sel.from, sel.to));
            if !sel.fields.is_empty() {
                s = s.fields(&sel.fields);
            }
            let mut header_done = false;
            let mut t = Table::new(&[]);
            for b in s.run().map_err(err)? {
                let b = b.map_err(err)?;
                let names: Vec<String> = b.columns.iter().map(|c| c.name.to_string()).collect();
                if !header_done || t.header.len() != names.len() + 2 {
                    let mut h = vec!["machine".to_string(), "ts".to_string()];
                    h.extend(names);
                    if header_done {
                        out.emit(&mut t, sel.format);
                    }
                    t = Table { header: h, rows: Vec::new() };
                    header_done = true;
                }
                for i in 0..b.rows() {
                    let mut row = vec![b.machine.to_string(), b.ts[i].to_string()];
                    row.extend(b.columns.iter().map(|c| c.value(i).map(value_text).unwrap_or_default()));
                    t.rows.push(row);
                }
            }
            out.emit(&mut t, sel.format);
        }
        Query::Downsample { sel, width, aggs } => {
            let aggs: Vec<Agg> = aggs.iter().map(|a| a.agg()).collect();
            let mut d =
                db.downsample(machines(sel.machines), range(sel.from, sel.to), width).aggs(aggs.clone());
            if !sel.fields.is_empty() {
                d = d.fields(&sel.fields);
            }
            let res = d.run().map_err(err)?;
            let mut h = vec!["machine", "field", "bucket"];
            let names: Vec<String> = aggs.iter().map(|a| format!("{a:?}").to_lowercase()).collect();
            h.extend(names.iter().map(|s| s.as_str()));
            let mut t = Table::new(&h);
            for s in &res.series {
                for i in 0..s.buckets.len() {
                    let mut row = vec![s.machine.to_string(), s.field.to_string(), s.buckets[i].to_string()];
                    row.extend(s.aggs.iter().map(|c| agg_text(c, i)));
                    t.rows.push(row);
                }
            }
            out.emit(&mut t, sel.format);
        }
        Query::Latest { sel } => {
            let mut l = db.latest(machines(sel.machines));
            if !sel.fields.is_empty() {
                l = l.fields(&sel.fields);
            }
            let mut t = Table::new(&["machine", "field", "ts", "value"]);
            for v in l.run().map_err(err)? {
                t.rows.push(vec![
                    v.machine.to_string(),
                    v.field.to_string(),
                    v.ts.to_string(),
                    value_text(v.value),
                ]);
            }
            out.emit(&mut t, sel.format);
        }
    }
    Ok(())
}

fn agg_text(c: &AggColumn, i: usize) -> String {
    match c {
        AggColumn::Count(v) => v[i].to_string(),
        AggColumn::Sum(v) | AggColumn::Avg(v) => format!("{:?}", v[i]),
        AggColumn::Min(v) | AggColumn::Max(v) | AggColumn::First(v) | AggColumn::Last(v) => match v {
            Values::F64(x) => format!("{:?}", x[i]),
            Values::I64(x) => x[i].to_string(),
            Values::Bool(x) => (x[i] as u8).to_string(),
        },
    }
}

/// Rows to print as CSV or as an aligned table.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }
    fn row(&mut self, r: Vec<String>) {
        self.rows.push(r);
    }
    fn print(&self) {
        let mut out = Output::new();
        out.table(self);
    }
}

struct Output {
    w: BufWriter<std::io::Stdout>,
}

impl Output {
    fn new() -> Output {
        Output { w: BufWriter::new(std::io::stdout()) }
    }

    fn emit(&mut self, t: &mut Table, f: Format) {
        match f {
            Format::Csv => {
                let _ = writeln!(self.w, "{}", t.header.join(","));
                for r in &t.rows {
                    let _ = writeln!(self.w, "{}", r.join(","));
                }
            }
            Format::Table => self.table(t),
        }
        let _ = self.w.flush();
        t.rows.clear();
    }

    fn table(&mut self, t: &Table) {
        let cols = t.header.len().max(t.rows.iter().map(|r| r.len()).max().unwrap_or(0));
        let mut widths = vec![0; cols];
        for r in std::iter::once(&t.header).chain(&t.rows) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| -> String {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(self.w, "{}", line(&t.header).trim_end());
        let _ = writeln!(self.w, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        for r in &t.rows {
            let _ = writeln!(self.w, "{}", line(r).trim_end());
        }
        let _ = self.w.flush();
    }
}
