//! Corrupted chunks: every single-bit flip and every truncation of chunks from representative
//! inputs, and random garbage, must give `Err` or an `Ok` with exactly `n` values, never a panic;
//! `describe` never panics either.

mod codec_common;

use codec_common::*;
use gemba::codec::*;

#[derive(Clone, Copy)]
enum Kind {
    I64,
    Ts,
    F64,
    Bool,
}

/// Decodes `chunk` as `kind`; on `Ok` checks the count. Returns whether it was `Ok`.
fn try_decode(kind: Kind, chunk: &[u8], n: usize) -> bool {
    let ok = match kind {
        Kind::I64 => {
            let mut o = Vec::new();
            let r = decode_i64(chunk, n, &mut o);
            assert!(r.is_err() || o.len() == n);
            r.is_ok()
        }
        Kind::Ts => {
            let mut o = Vec::new();
            let r = decode_timestamps(chunk, n, &mut o);
            assert!(r.is_err() || o.len() == n);
            r.is_ok()
        }
        Kind::F64 => {
            let mut o = Vec::new();
            let r = decode_f64(chunk, n, &mut o);
            assert!(r.is_err() || o.len() == n);
            r.is_ok()
        }
        Kind::Bool => {
            let mut o = Vec::new();
            let r = decode_bool(chunk, n, &mut o);
            assert!(r.is_err() || o.len() == n);
            r.is_ok()
        }
    };
    let _ = describe(chunk);
    ok
}

/// Representative chunks: (kind, chunk, n, what).
fn samples() -> Vec<(Kind, Vec<u8>, usize, String)> {
    let mut out = Vec::new();
    let n = 1000;
    for kind in 0..I64_KINDS {
        let v = ints(kind, n, &mut Rng::new(u64::from(kind)));
        let mut b = Vec::new();
        encode_i64(&v, &mut b);
        out.push((Kind::I64, b, n, format!("i64 kind {kind}")));
    }
    for kind in 0..TS_KINDS {
        let v = timestamps(kind, n, &mut Rng::new(u64::from(kind)));
        let mut b = Vec::new();
        encode_timestamps(&v, &mut b);
        out.push((Kind::Ts, b, n, format!("ts kind {kind}")));
    }
    for kind in 0..F64_KINDS {
        let v = floats(kind, n, &mut Rng::new(u64::from(kind)));
        let mut b = Vec::new();
        encode_f64(&v, &mut b);
        out.push((Kind::F64, b, n, format!("f64 kind {kind}")));
    }
    for kind in 0..BOOL_KINDS {
        let v = bools(kind, n, &mut Rng::new(u64::from(kind)));
        let mut b = Vec::new();
        encode_bool(&v, &mut b);
        out.push((Kind::Bool, b, n, format!("bool kind {kind}")));
    }
    // full 1024-value blocks (interleaved layout), split streams, delta chains
    let m = 4096;
    for kind in [0u32, 4, 5, 9, 10] {
        let v = ints(kind, m, &mut Rng::new(100 + u64::from(kind)));
        let mut b = Vec::new();
        encode_i64(&v, &mut b);
        out.push((Kind::I64, b, m, format!("i64 4096 kind {kind}")));
    }
    for kind in [1u32, 3, 4, 5, 6, 8] {
        let v = floats(kind, m, &mut Rng::new(200 + u64::from(kind)));
        let mut b = Vec::new();
        encode_f64(&v, &mut b);
        out.push((Kind::F64, b, m, format!("f64 4096 kind {kind}")));
    }
    let noisy: Vec<f64> = {
        let mut r = Rng::new(300);
        (0..m).map(|_| (50_000 + (0..4).map(|_| r.below(200) as i64).sum::<i64>()) as f64 / 100.0).collect()
    };
    let mut b = Vec::new();
    encode_f64(&noisy, &mut b);
    out.push((Kind::F64, b, m, "f64 4096 noisy (split)".into()));
    for kind in [1u32, 2, 3] {
        let v = timestamps(kind, m, &mut Rng::new(400 + u64::from(kind)));
        let mut b = Vec::new();
        encode_timestamps(&v, &mut b);
        out.push((Kind::Ts, b, m, format!("ts 4096 kind {kind}")));
    }
    // chunks that went through the zstd stage
    let z: Vec<i64> =
        (0..n as i64).map(|i| [3, 1, 4, 1, 5, 9, 2, 6][(i * i % 8) as usize] * 1000 + (i % 3)).collect();
    let mut b = Vec::new();
    encode_i64(&z, &mut b);
    out.push((Kind::I64, b, n, "i64 zstd".into()));
    let zf: Vec<f64> = (0..n).map(|i| [20.1, 20.2, 20.3][i * i % 3] + [0.0, 0.05][i % 2]).collect();
    let mut b = Vec::new();
    encode_f64(&zf, &mut b);
    out.push((Kind::F64, b, n, "f64 mixed".into()));
    out
}

#[test]
fn samples_cover_the_codecs() {
    let names: Vec<String> = samples().iter().map(|(_, b, _, _)| describe(b)).collect();
    let all = names.join(" ");
    for needle in [
        "zstd", "alp", "bin", "bits", "for", "delta", "rle", "dict", "split", "const", "ts-const", "bitmap",
        "exc",
    ] {
        assert!(all.contains(needle), "no sample uses {needle}: {all}");
    }
}

#[test]
fn every_bit_flip() {
    for (kind, chunk, n, what) in samples() {
        assert!(try_decode(kind, &chunk, n), "{what}: clean chunk must decode");
        let mut c = chunk.clone();
        for i in 0..c.len() * 8 {
            c[i / 8] ^= 1 << (i % 8);
            try_decode(kind, &c, n);
            c[i / 8] ^= 1 << (i % 8);
        }
    }
}

#[test]
fn every_truncation_and_extension() {
    for (kind, chunk, n, what) in samples() {
        for len in 0..chunk.len() {
            assert!(
                !try_decode(kind, &chunk[..len], n) || len == chunk.len(),
                "{what}: truncated to {len} accepted"
            );
        }
        let mut c = chunk.clone();
        c.push(0);
        assert!(!try_decode(kind, &c, n), "{what}: trailing garbage accepted");
        // wrong count
        try_decode(kind, &chunk, n + 1);
        try_decode(kind, &chunk, 0);
    }
}

#[test]
fn every_byte_value_at_every_position_of_small_chunks() {
    for (kind, chunk, n, _) in samples() {
        if chunk.len() > 64 {
            continue;
        }
        let mut c = chunk.clone();
        for i in 0..c.len() {
            let orig = c[i];
            for b in 0..=255u8 {
                c[i] = b;
                try_decode(kind, &c, n);
            }
            c[i] = orig;
        }
    }
}

#[test]
fn random_garbage() {
    let mut r = Rng::new(77);
    let tags = [0x10u8, 0x20, 0x21, 0x22, 0x23, 0x30, 0x31, 0x40, 0x41, 0x42, 0x7F, 0x01, 0x02, 0xFF];
    for i in 0..20_000 {
        let len = r.below(200) as usize;
        let mut g: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        if !g.is_empty() && i % 2 == 0 {
            g[0] = tags[r.below(tags.len() as u64) as usize];
        }
        if g.len() > 1 && i % 4 == 0 {
            g[1] = r.below(130) as u8; // plausible small count
        }
        let n = [0usize, 1, 5, 64, 100, 129, 1000, 65_536][r.below(8) as usize];
        for kind in [Kind::I64, Kind::Ts, Kind::F64, Kind::Bool] {
            try_decode(kind, &g, n);
        }
    }
}

#[test]
fn deep_nesting_is_refused() {
    // TAG_I64, n = 1, then run-length streams of one run whose values stream is again a
    // run-length stream, nested far deeper than any encoder writes (a stack overflow if the
    // decoder followed it)
    let mut c = vec![0x10, 0x01];
    for _ in 0..100_000 {
        c.extend_from_slice(&[0x04, 0x01]);
    }
    c.extend_from_slice(&[0x01, 0x00]);
    for _ in 0..100_000 {
        c.extend_from_slice(&[0x01, 0x00]);
    }
    let mut o = Vec::new();
    let e = decode_i64(&c, 1, &mut o).unwrap_err();
    assert!(e.what.contains("deep"), "{e:?}");
    assert_eq!(describe(&c), "invalid");
    // the same 12 levels deep is fine
    let mut c = vec![0x10, 0x01];
    for _ in 0..12 {
        c.extend_from_slice(&[0x04, 0x01]);
    }
    c.extend_from_slice(&[0x01, 0x0E]);
    for _ in 0..12 {
        c.extend_from_slice(&[0x01, 0x00]);
    }
    decode_i64(&c, 1, &mut o).unwrap();
    assert_eq!(o, [7]);
}

#[test]
fn oversized_declarations_are_errors() {
    let mut o = Vec::new();
    // bit width 65
    assert!(decode_i64(&[0x10, 0x02, 0x02, 0x00, 0x01, 65, 0x00], 2, &mut o).is_err());
    // exception count > n
    assert!(decode_i64(&[0x10, 0x02, 0x02, 0x00, 0x01, 0, 0x03], 2, &mut o).is_err());
    // zstd raw size beyond the bound for n
    let mut c = vec![0x7F];
    let big = zstd_raw_bound(10) as u64 + 1;
    let mut v = big;
    while v >= 0x80 {
        c.push((v as u8) | 0x80);
        v >>= 7;
    }
    c.push(v as u8);
    c.extend_from_slice(&[0x28, 0xB5, 0x2F, 0xFD]);
    let e = decode_i64(&c, 10, &mut o).unwrap_err();
    assert!(e.what.contains("bound"), "{e:?}");
    // unknown tag
    assert!(decode_i64(&[0x99, 0x00], 0, &mut o).is_err());
    // a float chunk is not an integer chunk
    let mut f = Vec::new();
    encode_f64(&[1.5, 2.5], &mut f);
    assert!(decode_i64(&f, 2, &mut o).is_err());
}
