//! Timestamp chunks. A constant step is stored as `(start, step)`; anything else goes through
//! the integer streams (where delta, delta-of-delta and frame-of-reference with gaps as patched
//! exceptions are the usual winners). Any `i64` sequence round-trips (wrapping arithmetic).

use super::int::{decode_vec, encode_stream};
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
    let res = unwrap_chunk(chunk, n).and_then(|plain| decode_desc(&plain, n, out, None));
    if res.is_err() {
        out.clear();
    }
    res
}

pub(crate) fn decode_desc(chunk: &[u8], n: usize, out: &mut Vec<i64>, mut desc: Desc<'_>) -> Result<()> {
    let mut r = Reader::new(chunk);
    match read_header(&mut r, n)? {
        TAG_TS_CONST => {
            let start = r.zigzag()?;
            let step = r.zigzag()?;
            note(&mut desc, "ts-const");
            out.clear();
            out.extend((0..n as u64).map(|i| start.wrapping_add(step.wrapping_mul(i as i64))));
        }
        TAG_TS_INT => {
            note(&mut desc, "ts:");
            decode_vec(&mut r, n, 0, out, desc)?;
        }
        _ => return Err(DecodeError { offset: 0, what: "not a timestamp chunk" }),
    }
    r.finish()
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
    fn gaps_are_exceptions() {
        let mut ts: Vec<i64> = (0..4096).map(|i| 1_704_067_200_000_000 + i * 10_000).collect();
        for t in ts.iter_mut().skip(2000) {
            *t += 5_000_000;
        }
        assert!(rt(&ts) < 40, "{}", rt(&ts));
    }
}
