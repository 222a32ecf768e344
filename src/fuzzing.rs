//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test
//! (`tests/fuzz_corpus.rs`). Not part of the supported API: names and signatures change freely.
//! Every function must return normally for any input; a panic is a bug.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::{Bytes, CrashMode, FileSystem, SimFs};
use crate::model::{TimeRange, Value};
use crate::segment::Segment;
use crate::wal::format;
use crate::{Agg, Db, Machines, Options, SyncPolicy, WriteBatch};

/// Parses `data` as a log file (header, then records) and decodes every record body that
/// passes its checksum.
pub fn wal_records(data: &[u8]) {
    let _ = format::check_header(data, 1);
    let mut pos = format::HEADER_LEN.min(data.len());
    let mut prev = 0;
    while pos < data.len() {
        match format::read_record(data, pos, prev) {
            Ok(r) => {
                if r.kind == format::KIND_BATCH {
                    let _ = format::decode_batch(r.body);
                } else {
                    let _ = crate::tombstone::Tombstone::decode(r.body);
                }
                prev = r.seq;
                pos += r.framed_len;
            }
            Err(_) => match format::find_valid_record(data, pos + 1, prev) {
                Some(next) => pos = next,
                None => break,
            },
        }
    }
    // Record bodies are also decoded directly, as if their checksum had passed.
    let _ = format::decode_batch(data);
    let _ = crate::tombstone::Tombstone::decode(data);
}

/// Recovers a database whose log is `data` (split in two files at a position given by the
/// first byte), with and without skipping corrupt records; when the open succeeds, reads
/// everything back and writes once more.
pub fn wal_replay(data: &[u8]) {
    let (cut, rest) = match data.split_first() {
        Some((&c, rest)) => ((c as usize * rest.len()) / 255, rest),
        None => (0, data),
    };
    for skip in [false, true] {
        let fs = SimFs::new(1);
        let dir = Path::new("/db");
        let _ = fs.create_dir_all(dir);
        let _ = fs.put(&dir.join("wal-0000000000000001.log"), &rest[..cut]);
        if cut < rest.len() {
            let _ = fs.put(&dir.join("wal-0000000000000002.log"), &rest[cut..]);
        }
        let opts = Options { fs: Arc::new(fs), skip_corrupt_wal_records: skip, ..Options::default() };
        if let Ok(db) = Db::open(dir, opts) {
            read_everything(&db);
            let mut b = WriteBatch::new();
            if b.row("fuzz", 1, [("v", 1.0)]).is_ok() {
                let _ = db.write(&b);
            }
            let _ = db.flush();
        }
    }
}

/// Opens `data` as a segment file and reads every machine, field and block.
pub fn segment(data: &[u8]) {
    let Ok(seg) = Segment::from_bytes(PathBuf::from("fuzz.gseg"), 1, Bytes::copy_from_slice(data)) else {
        return;
    };
    for m in &seg.index.machines {
        let names: Vec<&str> = m.fields.iter().map(|(n, _)| &**n).collect();
        let _ = seg.read(m, TimeRange::ALL, &names, &[]);
        let mid = m.ts_min / 2 + m.ts_max / 2;
        let _ = seg.read(m, TimeRange { start: mid, end: m.ts_max }, &names[..names.len().min(1)], &[]);
    }
    let _ = seg.verify_all();
}

/// Decodes `data[3..]` with the codec chosen by `data[0]`, for a count from `data[1..3]`.
pub fn codec(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let n = u16::from_le_bytes([data[1], data[2]]) as usize;
    let chunk = &data[3..];
    match data[0] % 4 {
        0 => {
            let mut out = Vec::new();
            if let Ok(known_ascending) = crate::codec::ts::decode_timestamps_append(chunk, n, &mut out) {
                assert_eq!(out.len(), n);
                // The reader skips its check on this claim: it must never be wrong.
                assert!(!known_ascending || out.windows(2).all(|w| w[0] < w[1]), "claimed ascending");
            }
        }
        1 => {
            let mut out = Vec::new();
            if crate::codec::decode_f64(chunk, n, &mut out).is_ok() {
                assert_eq!(out.len(), n);
            }
        }
        2 => {
            let mut out = Vec::new();
            let values = crate::codec::decode_i64(chunk, n, &mut out);
            if values.is_ok() {
                assert_eq!(out.len(), n);
            }
            // The reader's path (bit patterns appended after what a column holds, runs
            // expanded by other code) must agree with the plain one.
            let mut bits = vec![7u64];
            match crate::codec::decode_i64_bits_append(chunk, n, &mut bits) {
                Ok(()) => {
                    assert!(values.is_ok(), "the bits decoder accepted a chunk the plain one refused");
                    assert_eq!(bits[0], 7);
                    assert!(bits[1..].iter().map(|&b| b as i64).eq(out.iter().copied()));
                }
                Err(_) => {
                    assert!(values.is_err(), "the bits decoder refused a chunk the plain one accepted");
                    assert_eq!(bits, [7], "a failed append must leave the output as it was");
                }
            }
        }
        _ => {
            let mut out = Vec::new();
            let bytes = crate::codec::decode_bool(chunk, n, &mut out);
            if bytes.is_ok() {
                assert_eq!(out.len(), n);
            }
            // Validity decodes straight to a bitmap: it must accept and reject exactly the
            // same chunks, with the same bits.
            match crate::codec::decode_bool_bitmap(chunk, n) {
                Ok(bits) => {
                    assert!(bytes.is_ok(), "the bitmap decoder accepted a chunk the byte decoder refused");
                    assert_eq!(bits, crate::model::Bitmap::from_bools(&out));
                }
                Err(_) => {
                    assert!(bytes.is_err(), "the bitmap decoder refused a chunk the byte decoder accepted")
                }
            }
            // And the reader's path, as 0 / 1 words after what a column holds.
            let mut words = vec![7u64];
            match crate::codec::decode_bool_bits_append(chunk, n, &mut words) {
                Ok(()) => {
                    assert!(bytes.is_ok(), "the bits decoder accepted a chunk the byte decoder refused");
                    assert_eq!(words[0], 7);
                    assert!(words[1..].iter().map(|&w| w == 1).eq(out.iter().copied()));
                    assert!(words[1..].iter().all(|&w| w <= 1));
                }
                Err(_) => {
                    assert!(bytes.is_err(), "the bits decoder refused a chunk the byte decoder accepted");
                    assert_eq!(words, [7], "a failed append must leave the output as it was");
                }
            }
        }
    }
    let _ = crate::codec::describe(chunk);
}

/// Encodes values derived from `data` with every codec and checks they decode bit for bit.
pub fn codec_round_trip(data: &[u8]) {
    let words: Vec<u64> = data
        .chunks(8)
        .map(|c| c.iter().enumerate().fold(0u64, |w, (i, &b)| w | (b as u64) << (8 * i)))
        .collect();
    let f: Vec<f64> = words.iter().map(|&w| f64::from_bits(w)).collect();
    let mut buf = Vec::new();
    crate::codec::encode_f64(&f, &mut buf);
    let mut back_f = Vec::new();
    crate::codec::decode_f64(&buf, f.len(), &mut back_f).expect("own float chunk decodes");
    assert!(f.iter().zip(&back_f).all(|(a, b)| a.to_bits() == b.to_bits()), "floats round trip");
    let i: Vec<i64> = words.iter().map(|&w| w as i64).collect();
    buf.clear();
    crate::codec::encode_i64(&i, &mut buf);
    let mut back = Vec::new();
    crate::codec::decode_i64(&buf, i.len(), &mut back).expect("own integer chunk decodes");
    assert_eq!(i, back);
    buf.clear();
    crate::codec::encode_timestamps(&i, &mut buf);
    crate::codec::decode_timestamps(&buf, i.len(), &mut back).expect("own timestamp chunk decodes");
    assert_eq!(i, back);
    // The same values as a series of chunks, each encoded from the plan of the last search.
    let size = 16 + usize::from(data.first().copied().unwrap_or(0)) * 4;
    for (chunk, buf) in f.chunks(size).zip(encode_f64_series(f.chunks(size))) {
        crate::codec::decode_f64(&buf, chunk.len(), &mut back_f).expect("own float chunk decodes");
        assert!(
            chunk.iter().zip(&back_f).all(|(a, b)| a.to_bits() == b.to_bits()),
            "float series round trip"
        );
    }
    for (chunk, buf) in i.chunks(size).zip(encode_i64_series(i.chunks(size))) {
        crate::codec::decode_i64(&buf, chunk.len(), &mut back).expect("own integer chunk decodes");
        assert_eq!(chunk, &back[..], "integer series round trip");
    }
    let bools: Vec<bool> = data.iter().map(|&b| b & 1 == 1).collect();
    buf.clear();
    crate::codec::encode_bool(&bools, &mut buf);
    let mut back = Vec::new();
    crate::codec::decode_bool(&buf, bools.len(), &mut back).expect("own boolean chunk decodes");
    assert_eq!(bools, back);
}

/// Encodes consecutive chunks of one float series the way the segment writer does: each
/// chunk from the plan of the last searched one where that plan holds.
pub fn encode_f64_series<'a>(chunks: impl IntoIterator<Item = &'a [f64]>) -> Vec<Vec<u8>> {
    encode_series(chunks, crate::codec::encode_f64_hinted)
}

/// [`encode_f64_series`] for integers.
pub fn encode_i64_series<'a>(chunks: impl IntoIterator<Item = &'a [i64]>) -> Vec<Vec<u8>> {
    encode_series(chunks, crate::codec::encode_i64_hinted)
}

fn encode_series<'a, T: 'a>(
    chunks: impl IntoIterator<Item = &'a [T]>,
    encode: fn(&[T], &mut Option<crate::codec::Hint>, &mut Vec<u8>),
) -> Vec<Vec<u8>> {
    let mut hint = None;
    chunks
        .into_iter()
        .map(|c| {
            let mut buf = Vec::new();
            encode(c, &mut hint, &mut buf);
            buf
        })
        .collect()
}

/// Decodes `data` as a manifest.
pub fn manifest(data: &[u8]) {
    let _ = crate::manifest::Manifest::decode(Path::new("MANIFEST"), data);
}

fn read_everything(db: &Db) {
    if let Ok(it) = db.scan(Machines::All, ..).run() {
        for b in it {
            if b.is_err() {
                break;
            }
        }
    }
    let _ = db.latest(Machines::All).run();
    let _ = db.aggregate(Machines::All, ..).run();
    let _ = db.downsample(Machines::All, ..0, 1 << 40).run();
    let _ = db.verify();
}

type Model = BTreeMap<(u8, i64), BTreeMap<u8, Value>>;

/// Interprets `data` as operations (writes, deletes, flushes, compactions, crashes with every
/// crash mode, reopens) on a simulated file system with small memtables and partitions, and
/// checks the database against a model after each reopen and at the end: every acknowledged
/// write present with its value, nothing else.
pub fn ops(data: &[u8]) {
    let mut fs = SimFs::new(data.len() as u64 + 1);
    let dir = Path::new("/db");
    let opts = |fs: &SimFs| Options {
        fs: Arc::new(fs.clone()),
        sync: SyncPolicy::Always,
        memtable_bytes_max: 4096,
        partition_width: 64,
        block_rows: 3,
        compaction_block_rows: 5,
        compaction_trigger: 2,
        ..Options::default()
    };
    let mut db = Db::open(dir, opts(&fs)).expect("a fresh database opens");
    let mut model = Model::new();
    let mut i = 0;
    let next = |i: &mut usize| {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    while i < data.len() {
        match next(&mut i) % 8 {
            0..=2 => {
                let rows = 1 + next(&mut i) % 4;
                let mut b = WriteBatch::new();
                let mut staged = Vec::new();
                for _ in 0..rows {
                    let m = next(&mut i) % 3;
                    let ts = (next(&mut i) as i64) - 64;
                    let f = next(&mut i) % 2;
                    let v = next(&mut i) as f64 / 4.0;
                    b.row(&format!("m{m}"), ts, [(if f == 0 { "a" } else { "b" }, v)]).expect("valid row");
                    staged.push((m, ts, f, v));
                }
                db.write(&b).expect("a write on a healthy simulated disk succeeds");
                for (m, ts, f, v) in staged {
                    model.entry((m, ts)).or_default().insert(f, Value::F64(v));
                }
            }
            3 => {
                let m = next(&mut i) % 3;
                let start = (next(&mut i) as i64) - 64;
                let len = (next(&mut i) % 64) as i64;
                db.delete_range(&format!("m{m}"), start..start + len).expect("delete succeeds");
                model.retain(|&(mm, ts), _| !(mm == m && ts >= start && ts < start + len));
            }
            4 => db.flush().expect("flush succeeds"),
            5 => db.compact().expect("compaction succeeds"),
            6 => {
                let mode = match next(&mut i) % 4 {
                    0 => CrashMode::DropUnsynced,
                    1 => CrashMode::KeepPrefix,
                    2 => CrashMode::Garbage,
                    _ => CrashMode::KeepAll,
                };
                let crashed = fs.crash(mode);
                drop(db);
                fs = crashed;
                db = Db::open(dir, opts(&fs)).expect("recovery after a crash succeeds");
                check(&db, &model);
            }
            _ => {
                db.close().expect("close succeeds");
                db = Db::open(dir, opts(&fs)).expect("reopen succeeds");
                check(&db, &model);
            }
        }
    }
    check(&db, &model);
}

fn check(db: &Db, model: &Model) {
    // whole partitions at once, and windows of a block or two (blocks hold 3 to 5 rows)
    for batch_rows in [crate::SCAN_BATCH_ROWS, 4] {
        check_scan(db, model, batch_rows);
    }
    // overlapping sources merged whole, and in slices of about a block; over everything,
    // and over a range whose ends fall inside partitions (64 wide)
    for slice_rows in [1 << 20, 4] {
        for (lo, hi) in [(i64::MIN, i64::MAX), (-37, 151)] {
            check_downsample(db, model, slice_rows, lo, hi);
        }
    }
    check_latest(db, model);
}

/// Downsampling `lo..hi` into buckets of 16 (count, sum, min, max, first, last per machine
/// and field) agrees with the model: values are multiples of 1/4 below 64, so every sum is
/// exact.
fn check_downsample(db: &Db, model: &Model, slice_rows: usize, lo: i64, hi: i64) {
    type Bucket = (u64, f64, f64, f64, f64, f64);
    let mut want: BTreeMap<(u8, u8, i64), Bucket> = BTreeMap::new();
    for (&(m, ts), row) in model.iter().filter(|((_, ts), _)| (lo..hi).contains(ts)) {
        for (&f, v) in row {
            let Value::F64(v) = *v else { panic!("the model holds floats") };
            let e = want.entry((m, f, ts.div_euclid(16) * 16)).or_insert((0, 0.0, v, v, v, v));
            *e = (e.0 + 1, e.1 + v, e.2.min(v), e.3.max(v), e.4, v);
        }
    }
    let aggs = [Agg::Count, Agg::Sum, Agg::Min, Agg::Max, Agg::First, Agg::Last];
    let out = db
        .downsample(Machines::All, lo..hi, 16)
        .aggs(aggs)
        .slice_rows(slice_rows)
        .run()
        .expect("downsample succeeds");
    let mut got: BTreeMap<(u8, u8, i64), Bucket> = BTreeMap::new();
    for s in &out.series {
        let m: u8 = s.machine[1..].parse().expect("machine name");
        let f = if &*s.field == "a" { 0 } else { 1 };
        let col = |a: Agg, i: usize| s.agg(a).expect("requested aggregate").f64(i);
        for (i, &b) in s.buckets.iter().enumerate() {
            let bucket = (
                col(Agg::Count, i) as u64,
                col(Agg::Sum, i),
                col(Agg::Min, i),
                col(Agg::Max, i),
                col(Agg::First, i),
                col(Agg::Last, i),
            );
            got.insert((m, f, b), bucket);
        }
    }
    assert_eq!(got, want, "downsample of {lo}..{hi} differs from the model (slices of {slice_rows} rows)");
}

fn check_scan(db: &Db, model: &Model, batch_rows: usize) {
    let mut got = Model::new();
    let mut last: Option<(u8, i64)> = None;
    for b in db.scan(Machines::All, ..).batch_rows(batch_rows).collect().expect("scan succeeds") {
        assert!(b.rows() <= batch_rows, "a batch of {} rows, asked at most {batch_rows}", b.rows());
        assert!(b.rows() > 0, "an empty batch");
        let m: u8 = b.machine[1..].parse().expect("machine name");
        for &ts in &b.ts {
            // machines in order, each one's rows strictly ascending: no row twice
            assert!(last.is_none_or(|l| l < (m, ts)), "row {ts} of m{m} after {last:?}");
            last = Some((m, ts));
        }
        for (r, &ts) in b.ts.iter().enumerate() {
            for c in &b.columns {
                if let Some(v) = c.value(r) {
                    let f = if &*c.name == "a" { 0 } else { 1 };
                    got.entry((m, ts)).or_default().insert(f, v);
                }
            }
        }
    }
    assert_eq!(&got, model, "database differs from the model (batches of {batch_rows} rows)");
}

/// Latest values (the tail cache, memtables, deletes) agree with the model too.
fn check_latest(db: &Db, model: &Model) {
    let mut want: BTreeMap<(u8, u8), (i64, Value)> = BTreeMap::new();
    for (&(m, ts), row) in model {
        for (&f, &v) in row {
            want.insert((m, f), (ts, v));
        }
    }
    let got: BTreeMap<(u8, u8), (i64, Value)> = db
        .latest(Machines::All)
        .run()
        .expect("latest succeeds")
        .into_iter()
        .map(|l| {
            let m: u8 = l.machine[1..].parse().expect("machine name");
            ((m, if &*l.field == "a" { 0 } else { 1 }), (l.ts, l.value))
        })
        .collect();
    assert_eq!(got, want, "latest differs from the model");
}
