//! Timestamp chunks. A constant step is stored as `(start, step)`; anything else goes through
//! the integer streams (where delta, delta-of-delta and frame-of-reference with gaps as patched
//! exceptions are the usual winners). Any `i64` sequence round-trips (wrapping arithmetic).

use super::int::{decode_vec_append, encode_stream};
use super::{
    DecodeError, Desc, Reader, Result, TAG_TS_CONST, TAG_TS_INT, finish_chunk, note, put_varint, put_zigzag,
    read_header, unwrap_chunk,
};

/// Encodes timestamps as one chunk appended to `out`.
pub fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) {
    let mut plain = Vec::with_capacity(16 + ts.len());
    let step = if ts.len() >= 2 { ts[1].wrapping_sub(ts[0]) } else { 0 };
    let constant = ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step);
    if constant {
        plain.push(TAG_TS_CONST);
        put_varint(&mut plain, ts.len() as u64);
        put_zigzag(&mut plain, ts.first().copied().unwrap_or(0));
        put_zigzag(&mut plain, step);
    } else {
        plain.push(TAG_TS_INT);
        put_varint(&mut plain, ts.len() as u64);
        encode_stream(ts, 0, &mut plain);
    }
    finish_chunk(&plain, ts.len(), out);
}

/// Decodes a timestamp chunk of `n` values into `out` (cleared first).
pub fn decode_timestamps(chunk: &[u8], n: usize, out: &mut Vec<i64>) -> Result<()> {
    out.clear();
    decode_timestamps_append(chunk, n, out).map(|_| ())
}

/// Decodes a timestamp chunk of `n` values and appends them to `out` (unchanged on error):
/// the segment reader decodes a block's timestamps straight into the result it builds.
/// Returns true when the encoding itself proves them strictly ascending (a positive constant
/// step that does not wrap), which spares the reader its check.
pub(crate) fn decode_timestamps_append(chunk: &[u8], n: usize, out: &mut Vec<i64>) -> Result<bool> {
    let at = out.len();
    let res = unwrap_chunk(chunk, n).and_then(|plain| decode_append(&plain, n, out, None));
    if res.is_err() {
        out.truncate(at);
    }
    res
}

/// Decodes a plain timestamp chunk into `out` (cleared first), naming its codecs in `desc`.
pub(crate) fn decode_desc(chunk: &[u8], n: usize, out: &mut Vec<i64>, desc: Desc<'_>) -> Result<()> {
    out.clear();
    decode_append(chunk, n, out, desc).map(|_| ())
}

fn decode_append(chunk: &[u8], n: usize, out: &mut Vec<i64>, mut desc: Desc<'_>) -> Result<bool> {
    let mut r = Reader::new(chunk);
    let ascending = match read_header(&mut r, n)? {
        TAG_TS_CONST => {
            let start = r.zigzag()?;
            let step = r.zigzag()?;
            note(&mut desc, "ts-const");
            extend_steps(out, start, step, n);
            let last = i128::from(start) + i128::from(step) * n.saturating_sub(1) as i128;
            step > 0 && last <= i128::from(i64::MAX)
        }
        TAG_TS_INT => {
            note(&mut desc, "ts:");
            decode_vec_append(&mut r, n, 0, out, desc)?;
            false
        }
        _ => return Err(DecodeError { offset: 0, what: "not a timestamp chunk" }),
    };
    r.finish()?;
    Ok(ascending)
}

/// Appends `start + i * step` for `i` in `0..n` (wrapping). Written as a running sum the
/// compiler turns into vector additions (~0.1 ns/value here): a 64-bit multiply per value
/// has no AVX2 instruction (~0.32 ns/value emulated), and a lane array appended from the
/// stack stalls on store forwarding.
fn extend_steps(out: &mut Vec<i64>, start: i64, step: i64, n: usize) {
    let mut v = start;
    out.extend((0..n).map(|_| {
        let t = v;
        v = v.wrapping_add(step);
        t
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(v: &[i64]) -> usize {
        let mut buf = Vec::new();
        encode_timestamps(v, &mut buf);
        let mut back = Vec::new();
        decode_timestamps(&buf, v.len(), &mut back).unwrap();
        assert_eq!(back, v);
        buf.len()
    }

    #[test]
    fn constant_step_is_tiny() {
        let ts: Vec<i64> = (0..65_536).map(|i| 1_704_067_200_000_000 + i * 10_000).collect();
        assert!(rt(&ts) <= 16);
        assert_eq!(
            crate::codec::describe(&{
                let mut b = Vec::new();
                encode_timestamps(&ts, &mut b);
                b
            }),
            "ts-const"
        );
        rt(&[]);
        rt(&[i64::MAX]);
        rt(&[i64::MAX, i64::MIN, i64::MAX]);
    }

    #[test]
    fn appending_keeps_what_is_there_and_nothing_on_error() {
        let shapes: Vec<Vec<i64>> = (0..10)
            .flat_map(|n| {
                [
                    (0..n).map(|i| 1_000 + i * 7).collect::<Vec<i64>>(),
                    (0..n).map(|i| (i64::MAX - 3).wrapping_add(i.wrapping_mul(1 << 62))).collect(), // wraps
                    (0..n).map(|i| -i * i).collect(), // no constant step
                ]
            })
            .collect();
        for ts in &shapes {
            let mut buf = Vec::new();
            encode_timestamps(ts, &mut buf);
            let mut out = vec![-5, -6];
            let known_ascending = decode_timestamps_append(&buf, ts.len(), &mut out).unwrap();
            // claimed only when true, and for every positive step that does not wrap
            let strictly_ascending = ts.windows(2).all(|w| w[0] < w[1]);
            assert!(!known_ascending || strictly_ascending, "{ts:?}");
            assert_eq!(known_ascending, ts.len() >= 2 && ts[1].wrapping_sub(ts[0]) == 7, "{ts:?}");
            assert_eq!(out[..2], [-5, -6]);
            assert_eq!(&out[2..], &ts[..], "{ts:?}");
            // a wrong count fails and leaves `out` as it was
            assert!(decode_timestamps_append(&buf, ts.len() + 1, &mut out).is_err());
            assert_eq!(out.len(), 2 + ts.len());
        }
    }

    /// The ascending claim at its edge: a step ending exactly at `i64::MAX` is claimed, one
    /// step further wraps and is not.
    #[test]
    fn ascending_is_claimed_up_to_the_last_timestamp() {
        for (ts, claimed) in [
            (vec![i64::MAX - 14, i64::MAX - 7, i64::MAX], true),
            (vec![i64::MAX - 7, i64::MAX, i64::MIN + 6], false),
            (vec![-3_000_000, -1_000_000, 1_000_000], true),
            (vec![5, 5, 5], false),
            (vec![9, 2, -5], false),
        ] {
            let mut buf = Vec::new();
            encode_timestamps(&ts, &mut buf);
            assert_eq!(crate::codec::describe(&buf), "ts-const", "{ts:?}");
            let mut out = Vec::new();
            assert_eq!(decode_timestamps_append(&buf, ts.len(), &mut out), Ok(claimed), "{ts:?}");
            assert_eq!(out, ts);
        }
    }

    #[test]
    fn gaps_are_exceptions() {
        let mut ts: Vec<i64> = (0..4096).map(|i| 1_704_067_200_000_000 + i * 10_000).collect();
        for t in ts.iter_mut().skip(2000) {
            *t += 5_000_000;
        }
        assert!(rt(&ts) < 40, "{}", rt(&ts));
    }
}
