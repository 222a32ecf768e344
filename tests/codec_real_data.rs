//! Real-data round trips and the bits-per-value table.
//!
//! Reads every CSV of the datasets below (skipped with a notice when a folder is missing), cuts
//! each column into chunks of 4,096 and of 65,536 rows, round-trips every chunk bit for bit and
//! prints, per dataset and field, the bits per value and the codecs that won. Timestamps: bits
//! per row per machine. Totals: bytes per point including timestamps and presence bitmaps (one
//! boolean chunk per field and block that has missing cells).
//!
//! `cargo test --profile ci --test codec_real_data -- --nocapture` prints the table; it is also written
//! to `target/real_data.md`.

use gemba::codec::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The shared datasets (`../shared/data/*`), plus any directories listed in the environment
/// variable `GEMBA_EXTRA_DATASETS` (separated by `:`), e.g. generated factory data.
fn datasets() -> Vec<String> {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");
    let mut v = vec![format!("{shared}/skab"), format!("{shared}/nab")];
    if let Ok(extra) = std::env::var("GEMBA_EXTRA_DATASETS") {
        v.extend(extra.split(':').filter(|s| !s.is_empty()).map(String::from));
    }
    v
}
const CHUNKS: [usize; 2] = [4096, 65_536];

struct Machine {
    name: String,
    fields: Vec<String>,
    ts: Vec<i64>,
    cols: Vec<Vec<Option<f64>>>,
}

fn load(dir: &Path) -> Vec<Machine> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let mut lines = text.lines();
            let header: Vec<String> = lines.next().unwrap().split(',').map(str::to_string).collect();
            let fields = header[1..].to_vec();
            let mut ts = Vec::new();
            let mut cols = vec![Vec::new(); fields.len()];
            for line in lines {
                if line.is_empty() {
                    continue;
                }
                let mut cells = line.split(',');
                ts.push(cells.next().unwrap().parse::<i64>().unwrap());
                for col in cols.iter_mut() {
                    let c = cells.next().unwrap_or("");
                    col.push(if c.is_empty() { None } else { Some(c.parse::<f64>().unwrap()) });
                }
            }
            Machine { name: p.file_stem().unwrap().to_string_lossy().into_owned(), fields, ts, cols }
        })
        .collect()
}

/// The codec chain without parameters, for the "which codec won" column.
fn family(desc: &str) -> String {
    let mut s = String::new();
    let mut depth = 0;
    let mut in_paren = false;
    for c in desc.chars() {
        match c {
            '(' => in_paren = true,
            ')' => in_paren = false,
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if in_paren || depth > 0 => {}
            _ => s.push(c),
        }
    }
    s.replace("+exc", "").trim_end_matches('+').to_string()
}

#[derive(Default)]
struct Acc {
    bytes: usize,
    values: usize,
    wins: BTreeMap<String, usize>,
}

impl Acc {
    fn bpv(&self) -> f64 {
        if self.values == 0 { 0.0 } else { self.bytes as f64 * 8.0 / self.values as f64 }
    }
    fn top(&self) -> String {
        let mut w: Vec<_> = self.wins.iter().collect();
        w.sort_by(|a, b| b.1.cmp(a.1));
        w.iter().take(3).map(|(k, v)| format!("{k}×{v}")).collect::<Vec<_>>().join(", ")
    }
}

fn check_f64(vals: &[f64], acc: &mut Acc) {
    let mut buf = Vec::new();
    encode_f64(vals, &mut buf);
    let mut back = Vec::new();
    decode_f64(&buf, vals.len(), &mut back).expect("decode");
    assert_eq!(back.len(), vals.len());
    for (a, b) in vals.iter().zip(&back) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
    acc.bytes += buf.len();
    acc.values += vals.len();
    *acc.wins.entry(family(&describe(&buf))).or_default() += 1;
}

fn check_ts(ts: &[i64], acc: &mut Acc) {
    let mut buf = Vec::new();
    encode_timestamps(ts, &mut buf);
    let mut back = Vec::new();
    decode_timestamps(&buf, ts.len(), &mut back).expect("decode ts");
    assert_eq!(back, ts);
    acc.bytes += buf.len();
    acc.values += ts.len();
    *acc.wins.entry(family(&describe(&buf))).or_default() += 1;
}

fn check_bool(v: &[bool]) -> usize {
    let mut buf = Vec::new();
    encode_bool(v, &mut buf);
    let mut back = Vec::new();
    decode_bool(&buf, v.len(), &mut back).expect("decode bool");
    assert_eq!(back, v);
    buf.len()
}

#[test]
fn real_data_round_trip_and_table() {
    let mut report = String::new();
    for ds in &datasets() {
        let dir = Path::new(ds);
        if !dir.is_dir() {
            println!("NOTICE: {ds} missing, skipped");
            continue;
        }
        let machines = load(dir);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let points: usize =
            machines.iter().map(|m| m.cols.iter().flatten().filter(|c| c.is_some()).count()).sum();
        let rows: usize = machines.iter().map(|m| m.ts.len()).sum();
        // field -> per chunk size accumulators
        let mut fields: BTreeMap<String, [Acc; 2]> = BTreeMap::new();
        let mut ts_acc: [Acc; 2] = Default::default();
        let mut ts_machine: Vec<(String, [f64; 2])> = Vec::new();
        let mut presence = [0usize; 2];
        for m in &machines {
            let mut per = [0.0; 2];
            for (k, &chunk) in CHUNKS.iter().enumerate() {
                let before = (ts_acc[k].bytes, ts_acc[k].values);
                for start in (0..m.ts.len()).step_by(chunk) {
                    let end = (start + chunk).min(m.ts.len());
                    check_ts(&m.ts[start..end], &mut ts_acc[k]);
                    for (f, col) in m.fields.iter().zip(&m.cols) {
                        let part = &col[start..end];
                        let vals: Vec<f64> = part.iter().flatten().copied().collect();
                        if vals.len() != part.len() {
                            let present: Vec<bool> = part.iter().map(Option::is_some).collect();
                            presence[k] += check_bool(&present);
                        }
                        if vals.is_empty() {
                            continue;
                        }
                        check_f64(&vals, &mut fields.entry(f.clone()).or_default()[k]);
                    }
                }
                let b = ts_acc[k].bytes - before.0;
                let v = ts_acc[k].values - before.1;
                per[k] = b as f64 * 8.0 / v.max(1) as f64;
            }
            ts_machine.push((m.name.clone(), per));
        }
        let _ = writeln!(report, "\n### {name}: {} machines, {rows} rows, {points} points\n", machines.len());
        let _ =
            writeln!(report, "| field | values | bits/value 4k | bits/value 64k | codecs 4k | codecs 64k |");
        let _ = writeln!(report, "|---|---:|---:|---:|---|---|");
        let mut val_bytes = [0usize; 2];
        for (f, a) in &fields {
            let _ = writeln!(
                report,
                "| {f} | {} | {:.2} | {:.2} | {} | {} |",
                a[0].values,
                a[0].bpv(),
                a[1].bpv(),
                a[0].top(),
                a[1].top()
            );
            val_bytes[0] += a[0].bytes;
            val_bytes[1] += a[1].bytes;
        }
        let _ = writeln!(
            report,
            "| **timestamps** (per row) | {} | {:.3} | {:.3} | {} | {} |",
            ts_acc[0].values,
            ts_acc[0].bpv(),
            ts_acc[1].bpv(),
            ts_acc[0].top(),
            ts_acc[1].top()
        );
        for k in 0..2 {
            let total = val_bytes[k] + ts_acc[k].bytes + presence[k];
            let _ = writeln!(
                report,
                "\n{}-row chunks: values {:.3} bits/point, timestamps {} B, presence bitmaps {} B, total {} B = **{:.3} B/point** ({:.2} bits/point)",
                CHUNKS[k],
                val_bytes[k] as f64 * 8.0 / points as f64,
                ts_acc[k].bytes,
                presence[k],
                total,
                total as f64 / points as f64,
                total as f64 * 8.0 / points as f64
            );
        }
        // timestamps per machine: summarise the spread, list the worst few
        ts_machine.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]));
        let _ = write!(report, "\nTimestamp bits/row per machine (4k / 64k chunks), highest first: ");
        let list: Vec<String> =
            ts_machine.iter().take(8).map(|(m, b)| format!("{m} {:.3}/{:.3}", b[0], b[1])).collect();
        let _ = writeln!(report, "{}{}", list.join("; "), if ts_machine.len() > 8 { "; ..." } else { "" });
        if let Some((m, b)) = ts_machine.last() {
            let _ = writeln!(report, "lowest: {m} {:.3}/{:.3}", b[0], b[1]);
        }
    }
    println!("{report}");
    let _ = std::fs::create_dir_all("target");
    let _ = std::fs::write("target/real_data.md", &report);
}
