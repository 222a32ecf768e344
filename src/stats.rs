//! Summaries of values (count, min, max, sum, first, last): kept per block in segment files
//! and computed by queries over decoded rows, with the same code so both agree.

use crate::model::{Bitmap, FieldType, Timestamp};

/// Statistics of values (raw 64-bit values of a field's type) over some rows.
///
/// `min`/`max` are of the field's type; for floats they ignore NaN (they are NaN only when
/// every value is). `sum` is the `f64` sum (NaN propagates; integers and booleans converted).
/// `first`/`last` are the values at the smallest/largest timestamp (`first_ts`/`last_ts`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub(crate) count: u32,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) sum: f64,
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) first_ts: Timestamp,
    pub(crate) last_ts: Timestamp,
}

impl Stats {
    pub(crate) const EMPTY: Stats =
        Stats { count: 0, min: 0, max: 0, sum: 0.0, first: 0, last: 0, first_ts: 0, last_ts: 0 };
}

/// True when `a < b` in the field's order (floats: NaN is never less, and anything is less
/// than NaN, so NaN loses every min/max comparison).
#[inline]
pub(crate) fn less(ty: FieldType, a: u64, b: u64) -> bool {
    match ty {
        FieldType::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            x < y || (y.is_nan() && !x.is_nan())
        }
        FieldType::I64 | FieldType::Bool => (a as i64) < (b as i64),
    }
}

/// Statistics of `vals` (every one present) at timestamps `ts` (same length, ascending).
pub(crate) fn summarize(ty: FieldType, vals: &[u64], ts: &[Timestamp]) -> Stats {
    debug_assert_eq!(vals.len(), ts.len());
    let n = vals.len();
    if n == 0 {
        return Stats::EMPTY;
    }
    let (min, max, sum) = match ty {
        FieldType::F64 => f64_min_max_sum(vals),
        FieldType::I64 | FieldType::Bool => i64_min_max_sum(vals),
    };
    Stats {
        count: n as u32,
        min,
        max,
        sum,
        first: vals[0],
        last: vals[n - 1],
        first_ts: ts[0],
        last_ts: ts[n - 1],
    }
}

/// Statistics of the present values among rows `lo..hi` (validity `valid`), summarizing each
/// run of present values at full speed.
pub(crate) fn summarize_masked(
    ty: FieldType,
    vals: &[u64],
    ts: &[Timestamp],
    valid: &Bitmap,
    lo: usize,
    hi: usize,
) -> Stats {
    let mut acc = Stats::EMPTY;
    let mut a = valid.next(true, lo, hi);
    while a < hi {
        let b = valid.next(false, a, hi);
        merge_after(ty, &mut acc, &summarize(ty, &vals[a..b], &ts[a..b]));
        a = valid.next(true, b, hi);
    }
    acc
}

/// Adds `b` to `a`, where `b`'s rows come after `a`'s in time.
pub(crate) fn merge_after(ty: FieldType, a: &mut Stats, b: &Stats) {
    if b.count == 0 {
        return;
    }
    if a.count == 0 {
        *a = *b;
        return;
    }
    if less(ty, b.min, a.min) {
        a.min = b.min;
    }
    if less(ty, a.max, b.max) {
        a.max = b.max;
    }
    a.count += b.count;
    a.sum += b.sum;
    (a.last, a.last_ts) = (b.last, b.last_ts);
}

cpu_dispatch! {
/// Min, max (NaN ignored unless all are NaN) and sum of floats, in eight independent lanes so
/// the compiler vectorises the loop and it is not bound by the latency of one running sum.
/// Compiled for AVX2 where the CPU has it (a downsample into short buckets spends a fifth of
/// its instructions here).
fn f64_min_max_sum(vals: &[u64]) -> (u64, u64, f64) = f64_min_max_sum_any, "avx2" if crate::codec::has_avx2
}

#[inline(always)]
fn f64_min_max_sum_any(vals: &[u64]) -> (u64, u64, f64) {
    const L: usize = 8;
    let mut s = [0.0f64; L];
    let mut lo = [f64::INFINITY; L];
    let mut hi = [f64::NEG_INFINITY; L];
    let chunks = vals.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        let v: [f64; L] = std::array::from_fn(|l| f64::from_bits(c[l]));
        for l in 0..L {
            s[l] += v[l];
        }
        for l in 0..L {
            lo[l] = if v[l] < lo[l] { v[l] } else { lo[l] };
        }
        for l in 0..L {
            hi[l] = if v[l] > hi[l] { v[l] } else { hi[l] };
        }
    }
    for (l, &b) in rest.iter().enumerate() {
        let v = f64::from_bits(b);
        s[l] += v;
        lo[l] = if v < lo[l] { v } else { lo[l] };
        hi[l] = if v > hi[l] { v } else { hi[l] };
    }
    let sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    // The lanes hold no NaN (a comparison with NaN is false, so NaN never replaces a lane):
    // plain comparisons reduce them.
    let mut min = lo.iter().copied().fold(f64::INFINITY, |m, x| if x < m { x } else { m });
    let mut max = hi.iter().copied().fold(f64::NEG_INFINITY, |m, x| if x > m { x } else { m });
    // An infinity left from the start means no value beat it: either the values hold that
    // infinity, or every value is NaN.
    if min == f64::INFINITY && !vals.iter().any(|&b| f64::from_bits(b) == f64::INFINITY) {
        min = f64::NAN;
    }
    if max == f64::NEG_INFINITY && !vals.iter().any(|&b| f64::from_bits(b) == f64::NEG_INFINITY) {
        max = f64::NAN;
    }
    (min.to_bits(), max.to_bits(), sum)
}

cpu_dispatch! {
/// Min, max and sum of integers; compiled for AVX2 where the CPU has it.
fn i64_min_max_sum(vals: &[u64]) -> (u64, u64, f64) = i64_min_max_sum_any, "avx2" if crate::codec::has_avx2
}

#[inline(always)]
fn i64_min_max_sum_any(vals: &[u64]) -> (u64, u64, f64) {
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    let mut s = [0.0f64; 4];
    let chunks = vals.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..4 {
            let v = c[l] as i64;
            lo = lo.min(v);
            hi = hi.max(v);
            s[l] += v as f64;
        }
    }
    for (l, &b) in rest.iter().enumerate() {
        let v = b as i64;
        lo = lo.min(v);
        hi = hi.max(v);
        s[l] += v as f64;
    }
    (lo as u64, hi as u64, (s[0] + s[1]) + (s[2] + s[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &[f64]) -> Stats {
        let bits: Vec<u64> = v.iter().map(|x| x.to_bits()).collect();
        let ts: Vec<i64> = (0..v.len() as i64).collect();
        summarize(FieldType::F64, &bits, &ts)
    }

    #[test]
    fn float_min_max_ignore_nan() {
        let s = f(&[3.0, f64::NAN, -1.0, 7.5, 2.0]);
        assert_eq!((f64::from_bits(s.min), f64::from_bits(s.max)), (-1.0, 7.5));
        assert!(s.sum.is_nan());
        let s = f(&[f64::NAN, f64::NAN]);
        assert!(f64::from_bits(s.min).is_nan() && f64::from_bits(s.max).is_nan());
        let s = f(&[f64::INFINITY, 1.0, f64::NEG_INFINITY]);
        assert_eq!((f64::from_bits(s.min), f64::from_bits(s.max)), (f64::NEG_INFINITY, f64::INFINITY));
        let s = f(&[f64::INFINITY]);
        assert_eq!(f64::from_bits(s.min), f64::INFINITY);
        assert_eq!((s.first, s.last, s.count), (f64::INFINITY.to_bits(), f64::INFINITY.to_bits(), 1));
    }

    #[test]
    fn integers() {
        let vals: Vec<u64> = [5i64, -3, 9, i64::MIN, 0].iter().map(|&v| v as u64).collect();
        let s = summarize(FieldType::I64, &vals, &[1, 2, 3, 4, 5]);
        assert_eq!((s.min as i64, s.max as i64, s.first as i64, s.last as i64), (i64::MIN, 9, 5, 0));
        assert!(less(FieldType::I64, (-1i64) as u64, 0));
        assert!(less(FieldType::F64, 1.0f64.to_bits(), f64::NAN.to_bits()));
        assert!(!less(FieldType::F64, f64::NAN.to_bits(), 1.0f64.to_bits()));
    }
}
