//! Property tests: every codec round-trips exactly (bit for bit for floats) on vectors of the
//! lengths 0, 1, 2, 63, 64, 65, 1000, 4096, 65536 and many shapes of values.

mod codec_common;

use codec_common::Rng;
use codec_common::*;
use gemba::codec::*;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 96, ..ProptestConfig::default() }
}

fn check_i64(v: &[i64]) {
    let mut buf = vec![0xAA]; // encoders append, never clear
    encode_i64(v, &mut buf);
    assert!(buf.len() - 1 <= zstd_raw_bound(v.len()));
    let mut out = vec![1, 2, 3];
    decode_i64(&buf[1..], v.len(), &mut out).unwrap();
    assert_eq!(out, v);
    assert_ne!(describe(&buf[1..]), "invalid");
    // the chunk records its count
    if decode_i64(&buf[1..], v.len() + 1, &mut out).is_ok() {
        panic!("count mismatch accepted");
    }
}

fn check_ts(v: &[i64]) {
    let mut buf = Vec::new();
    encode_timestamps(v, &mut buf);
    assert!(buf.len() <= zstd_raw_bound(v.len()));
    let mut out = vec![9];
    decode_timestamps(&buf, v.len(), &mut out).unwrap();
    assert_eq!(out, v);
    assert_ne!(describe(&buf), "invalid");
}

fn check_f64(v: &[f64]) {
    let mut buf = Vec::new();
    encode_f64(v, &mut buf);
    assert!(buf.len() <= zstd_raw_bound(v.len()), "{} bytes for {} values", buf.len(), v.len());
    let mut out = vec![1.5];
    decode_f64(&buf, v.len(), &mut out).unwrap();
    assert_eq!(out.len(), v.len());
    for (i, (a, b)) in v.iter().zip(&out).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "value {i}: {a:?} decoded as {b:?} ({})", describe(&buf));
    }
    assert_ne!(describe(&buf), "invalid");
}

fn check_bool(v: &[bool]) {
    let mut buf = Vec::new();
    encode_bool(v, &mut buf);
    assert!(buf.len() <= zstd_raw_bound(v.len()));
    let mut out = vec![true];
    decode_bool(&buf, v.len(), &mut out).unwrap();
    assert_eq!(out, v);
    assert_ne!(describe(&buf), "invalid");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn i64_round_trip(len in prop::sample::select(LENS), kind in 0..I64_KINDS, seed in any::<u64>()) {
        check_i64(&ints(kind, len, &mut Rng::new(seed)));
    }

    #[test]
    fn i64_arbitrary(v in prop::collection::vec(any::<i64>(), 0..300)) {
        check_i64(&v);
    }

    #[test]
    fn ts_round_trip(len in prop::sample::select(LENS), kind in 0..TS_KINDS, seed in any::<u64>()) {
        check_ts(&timestamps(kind, len, &mut Rng::new(seed)));
    }

    #[test]
    fn ts_arbitrary(v in prop::collection::vec(any::<i64>(), 0..300)) {
        check_ts(&v);
    }

    #[test]
    fn f64_round_trip(len in prop::sample::select(LENS), kind in 0..F64_KINDS, seed in any::<u64>()) {
        check_f64(&floats(kind, len, &mut Rng::new(seed)));
    }

    #[test]
    fn f64_arbitrary_bits(v in prop::collection::vec(any::<u64>(), 0..300)) {
        check_f64(&v.iter().map(|&b| f64::from_bits(b)).collect::<Vec<_>>());
    }

    #[test]
    fn f64_decimal_text(v in prop::collection::vec((-99_999_999i64..99_999_999, 0u32..7), 1..300)) {
        // values as parsed from short decimal text
        let vals: Vec<f64> = v
            .iter()
            .map(|&(m, p)| format!("{}e-{}", m, p).parse::<f64>().unwrap())
            .collect();
        check_f64(&vals);
    }

    /// Chunks of one series encoded as the segment writer does, each from the plan of the last
    /// searched chunk: runs of one shape (where plans are repeated) and changes of shape (where
    /// they no longer fit) must all round-trip.
    #[test]
    fn series_round_trip(
        chunks in prop::collection::vec((0u32..12, prop::sample::select(&LENS[..8]), 1usize..6), 1..6),
        seed in any::<u64>(),
    ) {
        let mut r = Rng::new(seed);
        let mut fs: Vec<Vec<f64>> = Vec::new();
        let mut is: Vec<Vec<i64>> = Vec::new();
        for &(kind, len, repeat) in &chunks {
            for _ in 0..repeat {
                fs.push(floats(kind % F64_KINDS, len, &mut r));
                is.push(ints(kind % I64_KINDS, len, &mut r));
            }
        }
        let fbufs = gemba::fuzzing::encode_f64_series(fs.iter().map(|v| &v[..]));
        let ibufs = gemba::fuzzing::encode_i64_series(is.iter().map(|v| &v[..]));
        let (mut fo, mut io) = (Vec::new(), Vec::new());
        for ((v, fb), (w, ib)) in fs.iter().zip(&fbufs).zip(is.iter().zip(&ibufs)) {
            prop_assert!(fb.len() <= zstd_raw_bound(v.len()) && ib.len() <= zstd_raw_bound(w.len()));
            decode_f64(fb, v.len(), &mut fo).unwrap();
            prop_assert!(v.iter().zip(&fo).all(|(a, b)| a.to_bits() == b.to_bits()) && fo.len() == v.len());
            decode_i64(ib, w.len(), &mut io).unwrap();
            prop_assert_eq!(&io, w);
        }
    }

    #[test]
    fn bool_round_trip(len in prop::sample::select(LENS), kind in 0..BOOL_KINDS, seed in any::<u64>()) {
        check_bool(&bools(kind, len, &mut Rng::new(seed)));
    }

    #[test]
    fn bool_arbitrary(v in prop::collection::vec(any::<bool>(), 0..1000)) {
        check_bool(&v);
    }
}

/// Every shape at every length, deterministically (not left to chance).
#[test]
fn all_shapes_all_lengths() {
    for &n in LENS {
        for kind in 0..I64_KINDS {
            check_i64(&ints(kind, n, &mut Rng::new(u64::from(kind) * 31 + n as u64)));
        }
        for kind in 0..TS_KINDS {
            check_ts(&timestamps(kind, n, &mut Rng::new(u64::from(kind) * 37 + n as u64)));
        }
        for kind in 0..F64_KINDS {
            check_f64(&floats(kind, n, &mut Rng::new(u64::from(kind) * 41 + n as u64)));
        }
        for kind in 0..BOOL_KINDS {
            check_bool(&bools(kind, n, &mut Rng::new(u64::from(kind) * 43 + n as u64)));
        }
    }
}

/// A quarter of the values not decimal, the rest decimal but spread over 50 bits: the decimal
/// candidate is larger than the raw bit patterns, and the chunk must still fit the bound.
#[test]
fn worst_case_floats_stay_within_the_bound() {
    let mut r = Rng::new(11);
    for n in [64usize, 1000, 4096, 65_536] {
        let v: Vec<f64> = (0..n)
            .map(|i| if i % 4 == 0 { f64::from_bits(r.next()) } else { (r.below(1 << 50) as f64) / 100.0 })
            .collect();
        check_f64(&v);
    }
}

#[test]
fn decimals_parsed_from_15_digits_round_trip() {
    let mut r = Rng::new(5);
    for places in 1..=6 {
        let vals: Vec<f64> = (0..4096)
            .map(|_| {
                let m = r.below(10u64.pow(9)) as i64 - 500_000_000;
                format!("{m}e-{places}").parse::<f64>().unwrap()
            })
            .collect();
        check_f64(&vals);
        let mut buf = Vec::new();
        encode_f64(&vals, &mut buf);
        assert!(describe(&buf).contains(&format!("alp(e={places})")), "{}", describe(&buf));
    }
}
