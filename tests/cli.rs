//! The `gemba` command-line tool: import → verify → export round-trips the values; verify of a
//! damaged copy exits 1 naming the file; errors are one line with a non-zero exit.
#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn gemba(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gemba")).args(args).output().unwrap()
}

/// machine → ts → field → value text, from a dataset directory.
fn read_dataset(dir: &Path) -> BTreeMap<String, BTreeMap<i64, BTreeMap<String, f64>>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let m: &mut BTreeMap<i64, BTreeMap<String, f64>> =
            out.entry(p.file_stem().unwrap().to_string_lossy().into_owned()).or_default();
        for l in lines {
            let cells: Vec<&str> = l.split(',').collect();
            let row = m.entry(cells[0].parse().unwrap()).or_default();
            for (i, c) in cells.iter().enumerate().skip(1) {
                if !c.is_empty() {
                    row.insert(header[i].to_string(), c.parse().unwrap());
                }
            }
        }
        m.retain(|_, r| !r.is_empty());
    }
    out
}

#[test]
fn import_verify_export_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // Awkward values: many digits, tiny and huge magnitudes, negatives, integers, gaps.
    let values = ["0.1", "-2.5e-7", "123456789.125", "36.806999999999995", "1e300", "-0", "42", ""];
    for m in ["press-01", "pump_2.b"] {
        let mut s = String::from("ts,speed,temp\n");
        for i in 0..2000i64 {
            let a = values[(i % 8) as usize];
            let b = values[((i / 3) % 8) as usize];
            s.push_str(&format!("{},{a},{b}\n", 1_700_000_000_000_000 + i * 1000));
        }
        std::fs::write(data.join(format!("{m}.csv")), s).unwrap();
    }
    let db = tmp.path().join("db");
    let db_s = db.to_str().unwrap();
    let out = gemba(&["import", db_s, "--csv", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gemba(&["verify", db_s]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let exported = tmp.path().join("out");
    let out = gemba(&["export", db_s, "--csv", exported.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (read_dataset(&data), read_dataset(&exported));
    assert_eq!(a.len(), b.len());
    for (m, rows) in &a {
        let got = &b[m];
        assert_eq!(rows.len(), got.len(), "{m}");
        for (ts, r) in rows {
            for (f, v) in r {
                assert_eq!(v.to_bits(), got[ts][f].to_bits(), "{m} {ts} {f}");
            }
        }
    }
    // Queries print results.
    let out = gemba(&["query", db_s, "latest", "--machine", "press-01"]);
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() == 3, "{out:?}");
    let out = gemba(&["inspect", db_s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("bits/value"));

    // A damaged copy: verify exits 1 and names the file.
    let seg = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "gseg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[200] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    let out = gemba(&["verify", db_s]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(seg.file_name().unwrap().to_str().unwrap()), "{text}");
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    for args in [
        &["inspect", "/nonexistent/gemba-db"][..],
        &["verify", "/nonexistent/gemba-db"],
        &["query", "/nonexistent/gemba-db", "latest"],
        &["import", "/tmp/whatever-db", "--csv", "/nonexistent/data"],
    ] {
        let out = gemba(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("gemba: "), "{err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"));
    }
}
