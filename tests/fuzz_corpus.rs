//! Replays the committed fuzz corpus (`fuzz/seeds/<target>/*`, minimized from the fuzzing
//! runs) through the same entry points the cargo-fuzz targets call, on stable Rust. Every
//! input must be handled without a panic; crashes the fuzzers found are kept here as named
//! regression inputs (`fuzz/seeds/<target>/crash-*`).

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    for p in &files {
        let data = std::fs::read(p).unwrap();
        f(&data);
    }
    println!("{target}: {} inputs replayed", files.len());
    files.len()
}

#[test]
fn wal_record() {
    replay("wal_record", gemba::fuzzing::wal_records);
}

#[test]
fn wal_replay() {
    replay("wal_replay", gemba::fuzzing::wal_replay);
}

#[test]
fn segment() {
    replay("segment", gemba::fuzzing::segment);
}

#[test]
fn codec_decode() {
    replay("codec_decode", gemba::fuzzing::codec);
}

#[test]
fn codec_round_trip() {
    replay("codec_round_trip", gemba::fuzzing::codec_round_trip);
}

#[test]
fn manifest() {
    replay("manifest", gemba::fuzzing::manifest);
}

#[test]
fn ops() {
    replay("ops", gemba::fuzzing::ops);
}
