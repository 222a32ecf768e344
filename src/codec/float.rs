//! Float chunks (`f64`), bit-exact for every input.
//!
//! * **ALP (decimal scale)**: `v == d / 10^e` for an integer `d` ("digits"); the digits go through
//!   the integer streams. Decode divides by the exact power of ten (correctly rounded), so every
//!   value parsed from <= 15 significant digits round-trips.
//! * **binary scale**: `v == d * 2^-s` (16-bit ADC readings over a binary full scale, ...).
//! * **bits**: the IEEE bit patterns as an integer stream (constant, repeated, dictionary, raw).
//!
//! Values that the scale does not reproduce are *exceptions*, stored as (position, difference of
//! bit patterns) with the difference taken against what the digit at that position decodes to.
//! For values that went through arithmetic (`36.806999999999995` next to `36.807`) the digit is
//! the nearest decimal and the difference is a few units in the last place, so such an exception
//! costs a position and a handful of bits instead of 64; NaN payloads, -0.0 and infinities take
//! the full difference and round-trip as well.

use super::bitpack::bit_width;
use super::int::{
    Plan, Sink, decode_bits_append, decode_stream, encode_planned, encode_stream, expand_runs_bits,
    read_exceptions, search, sub_stream,
};
use super::{
    DecodeError, Desc, Hint, Reader, Result, TAG_F_ALP, TAG_F_BIN, TAG_F_BITS, finish_chunk, note,
    put_varint, read_header, unwrap_chunk, zigzag,
};

/// Exact powers of ten `10^0 ..= 10^22` (every one is exactly representable as `f64`).
pub const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];
/// Largest decimal exponent the encoder uses and a decoder accepts.
pub const MAX_E: u8 = 18;
/// Largest binary exponent the encoder uses and a decoder accepts.
pub const MAX_S: u8 = 63;
/// Digits must lie in `[-2^51, 2^51)`.
pub const DIGIT_LIMIT: i64 = 1 << 51;
const MAGIC: f64 = 6_755_399_441_055_744.0; // 2^52 + 2^51

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    Dec(u8),
    Bin(u8),
}

#[inline(always)]
fn pow2(k: i32) -> f64 {
    // exact for -1022 <= k <= 1023
    f64::from_bits(((1023 + k) as u64) << 52)
}

impl Scale {
    fn tag(self) -> u8 {
        match self {
            Scale::Dec(_) => TAG_F_ALP,
            Scale::Bin(_) => TAG_F_BIN,
        }
    }
    fn byte(self) -> u8 {
        match self {
            Scale::Dec(e) | Scale::Bin(e) => e,
        }
    }
    /// Multiplier that turns a value into (approximately) its digit.
    #[inline(always)]
    fn up(self) -> f64 {
        match self {
            Scale::Dec(e) => POW10[e as usize],
            Scale::Bin(s) => pow2(i32::from(s)),
        }
    }
    /// The decoder's formula, exactly.
    #[inline(always)]
    fn down(self, d: i64) -> f64 {
        match self {
            Scale::Dec(e) => d as f64 / POW10[e as usize],
            Scale::Bin(s) => d as f64 * pow2(-i32::from(s)),
        }
    }
}

/// Digit for `v` under `scale` if it is in range (it may still not reproduce `v` exactly).
#[inline(always)]
fn digit(v: f64, up: f64) -> Option<i64> {
    let x = v * up;
    if x.abs() < DIGIT_LIMIT as f64 {
        // adding 2^52 + 2^51 rounds to an integer (ties to even) and puts it in the low bits
        Some(((x + MAGIC).to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64))
    } else {
        None
    }
}

// ------------------------------------------------------------------------------------------
// encoder

/// Encodes floats as one chunk appended to `out`.
pub fn encode_f64(values: &[f64], out: &mut Vec<u8>) {
    encode_f64_hinted(values, &mut None, out);
}

/// [`encode_f64`] for one chunk of a series: repeats `hint`'s scale and plan where they hold
/// (see [`Hint`]), else searches and leaves the new hint in `hint`.
pub(crate) fn encode_f64_hinted(values: &[f64], hint: &mut Option<Hint>, out: &mut Vec<u8>) {
    let n = values.len();
    if n >= 64
        && let Some(h) = hint.as_mut().filter(|h| h.left > 0)
    {
        h.left -= 1;
        let mut plain = Vec::with_capacity(16 + n);
        let fits = match h.head {
            (TAG_F_BITS, _) => {
                plain.push(TAG_F_BITS);
                put_varint(&mut plain, n as u64);
                let bits: Vec<i64> = values.iter().map(|v| v.to_bits() as i64).collect();
                encode_planned(&bits, &h.plan, 0, &mut plain);
                true
            }
            (TAG_F_ALP, e) if e <= MAX_E => {
                encode_scaled(values, Scale::Dec(e), Some(&h.plan), &mut plain).1 * 4 <= n
            }
            (TAG_F_BIN, s) if s <= MAX_S => {
                encode_scaled(values, Scale::Bin(s), Some(&h.plan), &mut plain).1 * 4 <= n
            }
            _ => false,
        };
        if fits {
            let at = out.len();
            finish_chunk(&plain, n, out);
            if h.accepts(out.len() - at, n) {
                return;
            }
            out.truncate(at);
        }
    }
    let mut best: Vec<u8> = Vec::new();
    let mut best_plan = (0u8, 0u8, Plan::Raw);
    let mut tmp = Vec::new();
    let (cands, exc_share) = choose_scales(values);
    for s in cands {
        tmp.clear();
        let (plan, _) = encode_scaled(values, s, None, &mut tmp);
        if best.is_empty() || tmp.len() < best.len() {
            std::mem::swap(&mut best, &mut tmp);
            best_plan = (s.tag(), s.byte(), plan);
        }
    }
    // the bit patterns are also the fallback that keeps every chunk within `zstd_raw_bound`
    if best.is_empty() || exc_share > 0.25 || n < 64 || best.len() > 12 + 8 * n {
        tmp.clear();
        tmp.push(TAG_F_BITS);
        put_varint(&mut tmp, n as u64);
        let bits: Vec<i64> = values.iter().map(|v| v.to_bits() as i64).collect();
        let plan = search(&bits, 0, &mut tmp);
        if best.is_empty() || tmp.len() < best.len() {
            std::mem::swap(&mut best, &mut tmp);
            best_plan = (TAG_F_BITS, 0, plan);
        }
    }
    let at = out.len();
    finish_chunk(&best, n, out);
    let (tag, byte, plan) = best_plan;
    *hint = Hint::new((tag, byte), plan, out.len() - at, n);
}

/// Scales worth a full trial (by an estimate on a sample) and the share of sampled values that
/// the best of them does not reproduce.
fn choose_scales(values: &[f64]) -> (Vec<Scale>, f64) {
    let n = values.len();
    if n == 0 {
        return (vec![Scale::Dec(0)], 0.0);
    }
    let step = (n / 256).max(1);
    let sample: Vec<f64> = values.iter().step_by(step).copied().collect();
    let mut est: Vec<(u64, u32, Scale)> = Vec::new(); // (cost, fails, scale)
    for e in 0..=MAX_E {
        let (c, f) = estimate(&sample, Scale::Dec(e));
        est.push((c, f, Scale::Dec(e)));
        // Once every sampled value is exact, each further exponent multiplies the digits'
        // range by 10 (at least 3 more bits of width w): with 1 <= w < 30 that costs more
        // than 10% over this one, so none of them is a candidate below. (Only exponents so
        // large that values leave the digit range could estimate lower again, by making the
        // large values exceptions; the stream candidates handle such data at this exponent.)
        let w = c / sample.len() as u64;
        if f == 0 && (1..30).contains(&w) {
            break;
        }
    }
    // binary scale: the smallest s reproducing the most sampled values
    let ok = bin_scale_hits(&sample);
    let mut best_bin: Option<(u32, u8)> = None;
    for s in 0..=MAX_S {
        if best_bin.is_none_or(|(k, _)| ok[s as usize] > k) {
            best_bin = Some((ok[s as usize], s));
        }
    }
    if let Some((_, s)) = best_bin
        && s > 0
    {
        let (c, f) = estimate(&sample, Scale::Bin(s));
        est.push((c, f, Scale::Bin(s)));
    }
    // stable: on equal estimates the decimal scale with the smaller exponent comes first
    est.sort_by_key(|x| x.0);
    let mut cands = vec![est[0].2];
    if let Some(second) = est.get(1)
        && second.0 <= est[0].0 + est[0].0 / 10
    {
        cands.push(second.2);
    }
    (cands, f64::from(est[0].1) / sample.len() as f64)
}

/// For each binary scale `s` in `0..=MAX_S`, how many of `sample` it reproduces exactly
/// (`digit(v, 2^s)` in range and `Scale::Bin(s).down` of it bit-identical to `v`).
///
/// Worked out per value instead of tried per scale: `+0.0` is reproduced by every scale;
/// a finite nonzero `v = M * 2^E` (`M` odd) by exactly the `s` with `E + s >= 0` (so that
/// `v * 2^s` is an integer: multiplying by a power of two is exact, and a non-integer rounds
/// to a digit that cannot scale back to `v`) and `bit_width(|M|) + E + s <= 51` (the digit
/// limit); `-0.0`, infinities, NaNs and subnormals (whose `E` is below -1000) by none.
fn bin_scale_hits(sample: &[f64]) -> [u32; MAX_S as usize + 1] {
    const N: i64 = MAX_S as i64 + 1;
    let mut diff = [0i64; MAX_S as usize + 2];
    for &v in sample {
        let bits = v.to_bits();
        if bits == 0 {
            diff[0] += 1;
            diff[N as usize] -= 1;
            continue;
        }
        let exp = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1u64 << 52) - 1);
        if exp == 0x7ff || frac == 0 && exp == 0 {
            continue; // infinity, NaN, -0.0
        }
        let (mant, e0) = if exp == 0 { (frac, -1074) } else { (frac | 1 << 52, exp - 1075) };
        let tz = mant.trailing_zeros();
        let (m, e) = (mant >> tz, e0 + i64::from(tz));
        let lo = (-e).max(0);
        let hi = (51 - i64::from(bit_width(m)) - e).min(N - 1);
        if lo <= hi {
            diff[lo as usize] += 1;
            diff[hi as usize + 1] -= 1;
        }
    }
    let mut ok = [0u32; MAX_S as usize + 1];
    let mut run = 0i64;
    for (o, d) in ok.iter_mut().zip(diff) {
        run += d;
        *o = run as u32;
    }
    ok
}

/// Rough size in bits of the sample under `scale`, and the number of exceptions.
fn estimate(sample: &[f64], scale: Scale) -> (u64, u32) {
    let up = scale.up();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut exc_bits = 0u64;
    let mut fails = 0u32;
    for &v in sample {
        match digit(v, up) {
            Some(d) => {
                // the digit goes into the digits stream whether or not it is exact
                lo = lo.min(d);
                hi = hi.max(d);
                let back = scale.down(d);
                if back.to_bits() != v.to_bits() {
                    fails += 1;
                    let diff = (v.to_bits() as i64).wrapping_sub(back.to_bits() as i64);
                    exc_bits += u64::from(bit_width(zigzag(diff))) + 12;
                }
            }
            None => {
                fails += 1;
                exc_bits += 76;
            }
        }
    }
    let width = if lo <= hi { u64::from(bit_width(hi.wrapping_sub(lo) as u64)) } else { 0 };
    (width * sample.len() as u64 + exc_bits, fails)
}

/// Writes a complete ALP / binary-scale plain chunk:
/// `tag n:varint scale:u8 exc:varint digits-stream [positions-stream diffs-stream]`.
/// Returns the digits stream's plan and the number of exceptions. The digits are searched,
/// or encoded as `plan` says.
fn encode_scaled(values: &[f64], scale: Scale, plan: Option<&Plan>, out: &mut Vec<u8>) -> (Plan, usize) {
    let n = values.len();
    let up = scale.up();
    // digit used where a value has none: the first valid one, then the previous one
    let mut last = values
        .iter()
        .find_map(|&v| digit(v, up).filter(|&d| scale.down(d).to_bits() == v.to_bits()))
        .unwrap_or(0);
    let mut digits = Vec::with_capacity(n);
    let mut exc_pos = Vec::new();
    let mut exc_diff = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let d = digit(v, up).unwrap_or(last);
        let back = scale.down(d);
        if back.to_bits() != v.to_bits() {
            exc_pos.push(i as i64);
            exc_diff.push((v.to_bits() as i64).wrapping_sub(back.to_bits() as i64));
        } else {
            last = d;
        }
        digits.push(d);
    }
    out.push(scale.tag());
    put_varint(out, n as u64);
    out.push(scale.byte());
    put_varint(out, exc_pos.len() as u64);
    let plan = sub_stream(&digits, 0, plan, out);
    if !exc_pos.is_empty() {
        encode_stream(&exc_pos, 1, out);
        encode_stream(&exc_diff, 1, out);
    }
    (plan, exc_pos.len())
}

// ------------------------------------------------------------------------------------------
// decoder

/// Decodes a float chunk of `n` values into `out` (cleared first).
pub fn decode_f64(chunk: &[u8], n: usize, out: &mut Vec<f64>) -> Result<()> {
    // Decoded as bit patterns; both conversions below reuse `out`'s allocation in place.
    out.clear();
    let mut bits: Vec<u64> = std::mem::take(out).into_iter().map(f64::to_bits).collect();
    let res = decode_f64_bits_append(chunk, n, &mut bits);
    *out = bits.into_iter().map(f64::from_bits).collect();
    res
}

/// Decodes a float chunk of `n` values and appends their bit patterns to `out` (unchanged on
/// error). The segment reader keeps values as bits, so it decodes straight into its columns.
pub(crate) fn decode_f64_bits_append(chunk: &[u8], n: usize, out: &mut Vec<u64>) -> Result<()> {
    let at = out.len();
    let res = unwrap_chunk(chunk, n).and_then(|plain| decode_desc(&plain, n, out, None));
    if res.is_err() {
        out.truncate(at);
    }
    res
}

/// Decodes a plain float chunk, appending bit patterns to `out`.
pub(crate) fn decode_desc(chunk: &[u8], n: usize, out: &mut Vec<u64>, mut desc: Desc<'_>) -> Result<()> {
    let at = out.len();
    let mut r = Reader::new(chunk);
    let tag = read_header(&mut r, n)?;
    match tag {
        TAG_F_ALP | TAG_F_BIN => {
            let k = r.u8()?;
            let scale = if tag == TAG_F_ALP {
                if k > MAX_E {
                    return Err(r.err("decimal exponent > 18"));
                }
                Scale::Dec(k)
            } else {
                if k > MAX_S {
                    return Err(r.err("binary exponent > 63"));
                }
                Scale::Bin(k)
            };
            let exc = r.count(n, "exception count exceeds n")?;
            if let Some(d) = desc.as_deref_mut() {
                match scale {
                    Scale::Dec(e) => d.push_str(&format!("alp(e={e})")),
                    Scale::Bin(s) => d.push_str(&format!("bin(s={s})")),
                }
                if exc > 0 {
                    d.push_str(&format!("+exc({exc})"));
                }
                d.push('+');
            }
            out.reserve(n);
            let mut sink = ScaleSink { out, scale, bad: 0 };
            decode_stream(&mut r, n, 0, &mut sink, desc)?;
            if sink.bad != 0 {
                return Err(r.err("digit out of range"));
            }
            if out.len() - at != n {
                return Err(r.err("stream produced the wrong number of values"));
            }
            if exc > 0 {
                let (pos, diffs) = read_exceptions(&mut r, n, exc, 0)?;
                let vals = &mut out[at..];
                for (&p, &d) in pos.iter().zip(diffs.iter()) {
                    let o = &mut vals[p as usize];
                    *o = o.wrapping_add(d as u64);
                }
            }
        }
        TAG_F_BITS => {
            note(&mut desc, "bits+");
            decode_bits_append(&mut r, n, 0, out, desc)?;
        }
        _ => return Err(DecodeError { offset: 0, what: "not a float chunk" }),
    }
    r.finish()
}

/// Turns digits into floats as they stream out of the integer decoder.
struct ScaleSink<'a> {
    out: &'a mut Vec<u64>,
    scale: Scale,
    bad: u64,
}

/// Appends the bits of `digits` scaled to floats to `out`; non-zero if a digit is out of range.
fn scale_into(scale: Scale, out: &mut Vec<u64>, digits: &[i64]) -> u64 {
    match scale {
        Scale::Dec(e) => extend_div_dispatch(out, digits, POW10[e as usize]),
        Scale::Bin(s) => extend_mul_dispatch(out, digits, pow2(-i32::from(s))),
    }
}

impl Sink for ScaleSink<'_> {
    fn put(&mut self, block: &mut [i64]) {
        self.bad |= scale_into(self.scale, self.out, block);
    }
    fn put_runs(&mut self, vals: &mut [i64], lens: &[i64]) {
        // Each run's value is scaled once; the runs then expand as floats.
        let mut scaled = Vec::with_capacity(vals.len());
        self.bad |= scale_into(self.scale, &mut scaled, vals);
        expand_runs_bits(self.out, &scaled, lens);
    }
}

#[inline(always)]
fn bias_to_f64(d: i64) -> f64 {
    f64::from_bits(d.wrapping_add(MAGIC.to_bits() as i64) as u64) - MAGIC
}

/// Non-zero if `d` is outside `[-2^51, 2^51)`.
#[inline(always)]
fn out_of_range(d: i64) -> u64 {
    (d.wrapping_add(DIGIT_LIMIT) as u64) >> 52
}

/// Appends the bits of `digits[i] / p` to `out`; returns non-zero if a digit is out of range (its value is
/// then garbage and the caller reports an error). The integer to float conversion uses the
/// 2^52 + 2^51 bias trick, exact for digits in `[-2^51, 2^51)` and vectorisable with SSE2
/// (there is no packed i64 -> f64 conversion before AVX-512).
#[inline(always)]
fn extend_div(out: &mut Vec<u64>, digits: &[i64], p: f64) -> u64 {
    let mut bad = 0u64;
    out.extend(digits.iter().map(|&d| {
        bad |= out_of_range(d);
        (bias_to_f64(d) / p).to_bits()
    }));
    bad
}

/// `digits[i] / p` without a division, for CPUs with FMA: `q = a * y` with `y = RN(1/p)`,
/// the exact residual `r = a - q * p` by one fused multiply-add, and `RN(q + r * y)` by
/// another. Markstein's theorem (y within half an ulp of 1/p, q within one ulp of a/p, no
/// overflow or underflow, all true for `|a| < 2^51` and `p = 10^e`, `e <= 18`) makes that the
/// correctly rounded quotient: bit for bit what [`extend_div`] gives, on the FMA ports (two
/// per cycle) instead of the divider (one 4-lane `vdivpd` per ~5 cycles here). Without a
/// hardware FMA `mul_add` is a slow library call: use only where the CPU has FMA.
#[inline(always)]
fn extend_div_fma(out: &mut Vec<u64>, digits: &[i64], p: f64) -> u64 {
    let y = 1.0 / p;
    let mut bad = 0u64;
    out.extend(digits.iter().map(|&d| {
        bad |= out_of_range(d);
        let a = bias_to_f64(d);
        let q = a * y;
        let r = (-q).mul_add(p, a);
        r.mul_add(y, q).to_bits()
    }));
    bad
}

cpu_dispatch! {
/// [`extend_div_fma`] compiled for AVX2 and FMA where the CPU has them, else [`extend_div`]
/// (decimal decoding's cost was the division: SSE2 `divpd` ~0.73 ns/value here, AVX2
/// `vdivpd` ~0.4 ns/value).
fn extend_div_dispatch(out: &mut Vec<u64>, digits: &[i64], p: f64) -> u64 = extend_div_fma, "avx2,fma" if super::has_avx2_fma, else extend_div
}

/// Appends the bits of `digits[i] * m` (`m` a power of two: exact) to `out`; returns non-zero
/// if a digit is out of range, as [`extend_div`].
#[inline(always)]
fn extend_mul(out: &mut Vec<u64>, digits: &[i64], m: f64) -> u64 {
    let mut bad = 0u64;
    out.extend(digits.iter().map(|&d| {
        bad |= out_of_range(d);
        (bias_to_f64(d) * m).to_bits()
    }));
    bad
}

cpu_dispatch! {
/// [`extend_mul`] compiled for AVX2 where the CPU has it.
fn extend_mul_dispatch(out: &mut Vec<u64>, digits: &[i64], m: f64) -> u64 = extend_mul, "avx2" if super::has_avx2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(v: &[f64]) -> usize {
        let mut buf = Vec::new();
        encode_f64(v, &mut buf);
        let mut back = Vec::new();
        decode_f64(&buf, v.len(), &mut back).unwrap();
        assert_eq!(back.len(), v.len());
        for (a, b) in v.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        }
        buf.len()
    }

    /// Held values (a reading that changes now and then) are stored as runs, scaled or as
    /// raw bits, and decode bit for bit, after what the output already holds.
    #[test]
    fn held_values_decode_as_runs() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut decimals = Vec::new();
        let mut raw_bits = Vec::new();
        while decimals.len() < 5000 {
            let hold = 1 + (next() % 40) as usize;
            let d = ((next() % 2000) as f64 - 500.0) / 10.0;
            let b = f64::from_bits(next() >> 2);
            decimals.extend(std::iter::repeat_n(d, hold));
            raw_bits.extend(std::iter::repeat_n(b, hold));
        }
        for (v, chain) in [(&decimals, "alp(e=1)+rle"), (&raw_bits, "bits+rle")] {
            let mut buf = Vec::new();
            encode_f64(v, &mut buf);
            let desc = crate::codec::describe(&buf);
            assert!(desc.starts_with(chain), "{desc}");
            rt(v);
            let mut bits = vec![7u64];
            decode_f64_bits_append(&buf, v.len(), &mut bits).unwrap();
            assert_eq!(bits.len(), v.len() + 1);
            assert_eq!(bits[0], 7);
            assert!(bits[1..].iter().zip(v.iter()).all(|(&a, b)| a == b.to_bits()));
        }
    }

    /// The per-value count of binary scales equals trying every scale on every value.
    #[test]
    fn bin_scale_hits_match_trying_every_scale() {
        let mut vals = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            0.1,
            3.0e-320,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            (1u64 << 50) as f64,
            (1u64 << 51) as f64,
            -((1u64 << 51) as f64),
            ((1u64 << 51) - 1) as f64,
            1.0 / 1024.0 * 3.0,
            2f64.powi(-63),
            2f64.powi(-64),
            12345.0 * 2f64.powi(-40),
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            vals.push(match i % 4 {
                0 => f64::from_bits(x),
                1 => (x % 65_536) as f64 * 2f64.powi(-(((x >> 20) % 70) as i32)),
                2 => (x as i64 >> (x % 60)) as f64,
                _ => (x % 100_000) as f64 / 100.0,
            });
        }
        let got = bin_scale_hits(&vals);
        for s in 0..=MAX_S {
            let up = pow2(i32::from(s));
            let want = vals
                .iter()
                .filter(|&&v| digit(v, up).is_some_and(|d| Scale::Bin(s).down(d).to_bits() == v.to_bits()))
                .count() as u32;
            assert_eq!(got[s as usize], want, "scale {s}");
        }
    }

    #[test]
    fn magic_conversion_is_exact() {
        for d in [0i64, 1, -1, DIGIT_LIMIT - 1, -DIGIT_LIMIT, 123_456_789] {
            assert_eq!(bias_to_f64(d), d as f64);
            let mut o = Vec::new();
            extend_div_dispatch(&mut o, &[d], 100.0);
            assert_eq!(o[0], (d as f64 / 100.0).to_bits());
        }
        for d in [DIGIT_LIMIT, -DIGIT_LIMIT - 1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            let mut sink = ScaleSink { out: &mut out, scale: Scale::Dec(0), bad: 0 };
            sink.put(&mut [d]);
            assert_ne!(sink.bad, 0);
        }
    }

    /// The division-free quotient equals the division bit for bit, at every decimal scale and
    /// across the whole digit range (both signs, every magnitude, the ends of the range).
    #[test]
    fn fma_quotient_is_the_correctly_rounded_division() {
        if !crate::codec::has_avx2_fma() {
            eprintln!("NOTICE: CPU without AVX2+FMA; the division-free quotient is not used here");
            return;
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut digits = vec![0i64, 1, -1, 5, -5, DIGIT_LIMIT - 1, -DIGIT_LIMIT, 999_999_999_999_999];
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bits = 1 + (seed % 51) as u32; // magnitude up to 2^51
            let d = ((seed >> 8) & ((1u64 << bits) - 1)) as i64;
            digits.push(if seed & 1 == 0 { d } else { -d });
        }
        for e in 0..=MAX_E {
            let p = POW10[e as usize];
            let mut fast = Vec::new();
            // The CPU was checked to have AVX2 and FMA above: this is the FMA quotient.
            let bad = extend_div_dispatch(&mut fast, &digits, p);
            assert_eq!(bad, 0);
            for (&d, &f) in digits.iter().zip(&fast) {
                assert_eq!(f, (d as f64 / p).to_bits(), "{d} / 10^{e}");
            }
        }
    }

    #[test]
    fn specials_round_trip() {
        rt(&[]);
        rt(&[f64::NAN]);
        rt(&[
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN,
            f64::MAX,
            f64::EPSILON,
            f64::MIN_POSITIVE,
            5e-324,
            f64::from_bits(0x7ff8_dead_beef_0001),
            f64::from_bits(0xfff0_0000_0000_0001),
            36.806999999999995,
            23.47,
        ]);
    }

    #[test]
    fn scale_choice_counts_every_digit() {
        // 6-decimal values on a coarse grid: the binary scale s = 51 reproduces a few of them
        // and is close to the others in ULPs, but its digits are 50 bits wide
        let vals = [0.054711, 0.382638, -0.273216, 0.710565, -0.601143];
        let v: Vec<f64> = (0..1147).map(|i| vals[(i * 7 % 13) % 5]).collect();
        assert_eq!(choose_scales(&v).0[0], Scale::Dec(6));
        assert!(rt(&v) < 1147 * 3 / 8 + 40);
    }

    #[test]
    fn decimals_are_small() {
        let v: Vec<f64> = (0..4096).map(|i| ((i * 37 % 1000) as f64 + 2000.0) / 100.0).collect();
        let size = rt(&v);
        assert!(size * 8 < 4096 * 11, "{size}");
        let adc: Vec<f64> = (0..4096).map(|i| (i * 7 % 65536) as f64 * 1000.0 / 65536.0).collect();
        let size = rt(&adc);
        assert!(size * 8 < 4096 * 17, "{size}");
        let mut near: Vec<f64> = (0..4096).map(|i| ((i % 97) as f64 + 3000.0) / 1000.0).collect();
        near[5] = 36.806999999999995;
        near[900] = f64::NAN;
        rt(&near);
    }
}
