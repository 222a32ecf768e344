//! Integer streams (`i64`): constant, frame-of-reference bit-packing (per-block widths, a common
//! factor, patched exceptions), delta (nesting gives delta-of-delta), run-length, dictionary,
//! raw, and split (high byte entropy-coded by zstd's Huffman stage, low bits packed).
//!
//! A *stream* is `tag:u8 body`; its value count comes from the enclosing structure. Streams nest
//! (the deltas of a delta stream, the values and lengths of a run-length stream, exception lists
//! are streams themselves); the encoder tries the candidates that fit the data and keeps the
//! smallest, the decoder refuses nesting deeper than [`MAX_DECODE_DEPTH`].

use super::bitpack::{self, BLOCK, bit_width, block_len};
use super::{
    DecodeError, Desc, Hint, Reader, Result, TAG_I64, finish_chunk, note, put_varint, put_zigzag,
    read_header, unwrap_chunk, zstd_compress_min_match, zstd_decompress,
};

/// Stream tag: every value equal; body `value:zigzag-varint`.
pub const S_CONST: u8 = 0x01;
/// Stream tag: frame of reference, see [`encode_for`].
pub const S_FOR: u8 = 0x02;
/// Stream tag: delta; body `first:zigzag-varint`, stream of the `n - 1` wrapping differences.
pub const S_DELTA: u8 = 0x03;
/// Stream tag: run-length; body `runs:varint`, stream of run values, stream of run lengths - 1.
pub const S_RLE: u8 = 0x04;
/// Stream tag: dictionary; body `k:varint`, stream of the `k` entries, stream of `n` codes.
pub const S_DICT: u8 = 0x05;
/// Stream tag: raw; body `n` little-endian `i64`.
pub const S_RAW: u8 = 0x06;
/// Stream tag: split into an entropy-coded high byte and raw low bits, see [`encode_split`].
pub const S_SPLIT: u8 = 0x07;

/// Deepest stream nesting a decoder accepts (the encoder's deepest stream is at depth 4).
pub const MAX_DECODE_DEPTH: u32 = 12;

/// Encoder nesting limits (depth 0 is a chunk's top stream).
const DELTA_MAX_DEPTH: u32 = 2;
const RLE_MAX_DEPTH: u32 = 3;
const DICT_MAX_DEPTH: u32 = 2;
const SPLIT_MAX_DEPTH: u32 = 2;
/// zstd level used for the high bytes of split streams.
const SPLIT_ZSTD_LEVEL: i32 = 1;
/// Shortest match zstd may use in the high bytes of split streams: the longest minimum it
/// allows. High bytes are a small alphabet of noise, where level 1's default (4 bytes) finds
/// many short matches that save next to nothing and cost a sequence-decoding stage; runs of
/// a held value still match. Against the default, measured on a fleet scan (one core,
/// interleaved): 914-965 -> 968-1010 M values/s, 3.6 % fewer instructions; size within
/// 0.25 % on every shared set (skab +0.25 %, nab -0.02 %, factory -0.04 %, 1 ms +0.11 %).
const SPLIT_ZSTD_MIN_MATCH: u32 = 7;
/// A split stream must be at least this much smaller (percent) than the best bit-packed
/// candidate to be chosen: it decodes at ~0.5 G values/s against 1–2 G for bit-packing, so this
/// is the knob between size and decode speed (100 disables split streams).
pub const SPLIT_MIN_GAIN_PCT: usize = 3;
const EXC_MAX_DEPTH: u32 = 4;
/// Largest dictionary the encoder builds.
const DICT_MAX: usize = 4096;

// ------------------------------------------------------------------------------------------
// public chunk API

/// Encodes `values` as one integer chunk appended to `out`.
pub fn encode_i64(values: &[i64], out: &mut Vec<u8>) {
    encode_i64_hinted(values, &mut None, out);
}

/// [`encode_i64`] for one chunk of a series: repeats `hint`'s plan where it holds (see
/// [`Hint`]), else searches and leaves the new hint in `hint`.
pub(crate) fn encode_i64_hinted(values: &[i64], hint: &mut Option<Hint>, out: &mut Vec<u8>) {
    let n = values.len();
    let mut plain = Vec::with_capacity(16 + n);
    plain.push(TAG_I64);
    put_varint(&mut plain, n as u64);
    let head = plain.len();
    if let Some(h) = hint.as_mut().filter(|h| h.left > 0) {
        h.left -= 1;
        encode_planned(values, &h.plan, 0, &mut plain);
        let at = out.len();
        finish_chunk(&plain, n, out);
        if h.accepts(out.len() - at, n) {
            return;
        }
        out.truncate(at);
        plain.truncate(head);
    }
    let plan = search(values, 0, &mut plain);
    let at = out.len();
    finish_chunk(&plain, n, out);
    *hint = Hint::new((TAG_I64, 0), plan, out.len() - at, n);
}

/// Decodes an integer chunk of `n` values into `out` (cleared first).
pub fn decode_i64(chunk: &[u8], n: usize, out: &mut Vec<i64>) -> Result<()> {
    out.clear();
    let res = unwrap_chunk(chunk, n).and_then(|plain| decode_chunk(&plain, n, out, None));
    if res.is_err() {
        out.clear();
    }
    res
}

/// Decodes an integer chunk of `n` values and appends them, as `u64` bit patterns, to `out`
/// (unchanged on error). The segment reader keeps values as bits and decodes straight into
/// its columns.
pub(crate) fn decode_i64_bits_append(chunk: &[u8], n: usize, out: &mut Vec<u64>) -> Result<()> {
    let at = out.len();
    let res = unwrap_chunk(chunk, n).and_then(|plain| {
        let mut r = Reader::new(&plain);
        if read_header(&mut r, n)? != TAG_I64 {
            return Err(DecodeError { offset: 0, what: "not an integer chunk" });
        }
        decode_bits_append(&mut r, n, 0, out, None)?;
        r.finish()
    });
    if res.is_err() {
        out.truncate(at);
    }
    res
}

pub(crate) fn decode_chunk(chunk: &[u8], n: usize, out: &mut Vec<i64>, mut desc: Desc<'_>) -> Result<()> {
    let mut r = Reader::new(chunk);
    let tag = read_header(&mut r, n)?;
    if tag != TAG_I64 {
        return Err(DecodeError { offset: 0, what: "not an integer chunk" });
    }
    note(&mut desc, "int:");
    decode_vec(&mut r, n, 0, out, desc)?;
    r.finish()
}

// ------------------------------------------------------------------------------------------
// encoder

/// Appends the smallest stream encoding of `v` that the candidates allowed at `depth` give.
pub fn encode_stream(v: &[i64], depth: u32, out: &mut Vec<u8>) {
    search(v, depth, out);
}

/// The shape of a stream encoding that a search chose: which candidate at each level of
/// nesting (the parameters inside a candidate, widths, bases, exceptions, are worked out from
/// the data each time). The next chunk of the same series usually picks the same shape, so
/// [`encode_planned`] repeats it without trying the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Const,
    Raw,
    For,
    Split,
    Delta(Box<Plan>),
    Rle(Box<Plan>, Box<Plan>),
    Dict(Box<Plan>, Box<Plan>),
}

/// [`encode_stream`], returning the plan of what it wrote.
pub(crate) fn search(v: &[i64], depth: u32, out: &mut Vec<u8>) -> Plan {
    let n = v.len();
    if n == 0 {
        out.push(S_RAW);
        return Plan::Raw;
    }
    let first = v[0];
    if v.iter().all(|&x| x == first) {
        out.push(S_CONST);
        put_zigzag(out, first);
        return Plan::Const;
    }
    let fr = frame(v);
    let mut best = Vec::new();
    encode_for_framed(v, &fr, depth, &mut best);
    let mut plan = Plan::For;
    let mut tmp = Vec::new();
    if depth < DELTA_MAX_DEPTH && n >= 3 && delta_may_pay(v) {
        let p = encode_delta(v, depth, None, &mut tmp);
        if keep_smaller(&mut best, &mut tmp) {
            plan = p;
        }
    }
    let runs = count_runs(v);
    if depth < RLE_MAX_DEPTH && runs * 3 <= n {
        let p = encode_rle(v, runs, depth, None, &mut tmp);
        if keep_smaller(&mut best, &mut tmp) {
            plan = p;
        }
    }
    if depth < DICT_MAX_DEPTH && n >= 16 {
        let p = encode_dict(v, depth, runs, best.len(), None, &mut tmp);
        if keep_smaller(&mut best, &mut tmp) {
            plan = p.expect("a dictionary stream was written");
        }
    }
    if depth < SPLIT_MAX_DEPTH && n >= 256 && best.len() * 8 > n * 3 {
        // the split stream decodes ~3x slower than bit-packing: take it only for a real gain
        let budget = best.len() * (100 - SPLIT_MIN_GAIN_PCT) / 100;
        encode_split_framed(v, &fr, depth, budget, &mut tmp);
        if tmp.len() <= budget && keep_smaller(&mut best, &mut tmp) {
            plan = Plan::Split;
        }
        tmp.clear();
    }
    if best.len() > 1 + 8 * n {
        write_raw(v, &mut best);
        plan = Plan::Raw;
    }
    out.extend_from_slice(&best);
    plan
}

/// Replaces `out` with the raw stream of `v`.
fn write_raw(v: &[i64], out: &mut Vec<u8>) {
    out.clear();
    out.push(S_RAW);
    for &x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Appends `v` encoded the way `plan` says, without trying other candidates. Where the plan
/// does not fit the data (a constant that is not, a run-length stream of too many runs, a
/// dictionary of too many values, a nesting the depth does not allow), that stream is
/// searched instead; the result is always a valid stream, and usually within a few percent of
/// the search's.
pub(crate) fn encode_planned(v: &[i64], plan: &Plan, depth: u32, out: &mut Vec<u8>) {
    let n = v.len();
    if n == 0 {
        out.push(S_RAW);
        return;
    }
    match plan {
        Plan::Const if v.iter().all(|&x| x == v[0]) => {
            out.push(S_CONST);
            put_zigzag(out, v[0]);
        }
        Plan::Raw => {
            out.push(S_RAW);
            for &x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Plan::For => encode_for(v, depth, out),
        Plan::Split if depth < SPLIT_MAX_DEPTH && n >= 256 => {
            let fr = frame(v);
            let at = out.len();
            encode_split_framed(v, &fr, depth, usize::MAX, out);
            if out.len() == at {
                encode_for_framed(v, &fr, depth, out);
            }
        }
        Plan::Delta(p) if depth < DELTA_MAX_DEPTH && n >= 3 => {
            encode_delta(v, depth, Some(p), out);
        }
        Plan::Rle(pv, pl) if depth < RLE_MAX_DEPTH => {
            let runs = count_runs(v);
            if runs * 3 <= n {
                encode_rle(v, runs, depth, Some((pv, pl)), out);
            } else {
                search(v, depth, out);
            }
        }
        Plan::Dict(pd, pc) if depth < DICT_MAX_DEPTH && n >= 16 => {
            let at = out.len();
            encode_dict(v, depth, count_runs(v), usize::MAX, Some((pd, pc)), out);
            if out.len() == at {
                search(v, depth, out);
            }
        }
        _ => {
            search(v, depth, out);
        }
    }
}

/// Whether the deltas of `v` may encode smaller than `v`: its mean step between neighbours
/// against its mean absolute deviation. White noise steps 1.41x its deviation (a delta only
/// widens it); walks and smooth signals step far below it. Skipping the delta candidate
/// skips the whole search on the deltas (with nesting, delta of delta). Measured on a mix of
/// real and synthetic columns: 0.02% fewer bytes than always trying it (the greedy choices
/// per level interact), and half the work at the second nesting level.
fn delta_may_pay(v: &[i64]) -> bool {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let deviation: f64 = v.iter().map(|&x| (x as f64 - mean).abs()).sum();
    let steps: f64 = v.iter().zip(&v[1..]).map(|(&x, &y)| (y as f64 - x as f64).abs()).sum();
    steps <= 1.2 * deviation
}

/// Keeps the smaller of the two in `best` (an empty candidate is none); true if it was `cand`.
fn keep_smaller(best: &mut Vec<u8>, cand: &mut Vec<u8>) -> bool {
    let won = !cand.is_empty() && cand.len() < best.len();
    if won {
        std::mem::swap(best, cand);
    }
    cand.clear();
    won
}

fn count_runs(v: &[i64]) -> usize {
    // a branch-free sum the compiler vectorises (a filtered `windows` iterator is not)
    1 + v.iter().zip(v.get(1..).unwrap_or(&[])).map(|(x, y)| usize::from(x != y)).sum::<usize>()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// Frame of reference, blocked:
/// `base:zigzag-varint  factor:varint(>=1)  exc:varint(<=n)  B x (w:u8(<=64) off:varint)
/// B x packed-block  (if exc > 0: positions stream, values stream)` with `B = ceil(n / 1024)`.
/// Value `i` of block `k` is `base + (off_k + packed[i]) * factor` (wrapping), except at the
/// `exc` positions (strictly ascending), which hold the values of the values stream. Each block
/// has its own width and offset, so a noisy stretch does not widen the whole chunk, and values
/// too wide for their block's width are patched exceptions.
pub fn encode_for(v: &[i64], depth: u32, out: &mut Vec<u8>) {
    let fr = frame(v);
    encode_for_framed(v, &fr, depth, out);
}

fn encode_for_framed(v: &[i64], fr: &Frame, depth: u32, out: &mut Vec<u8>) {
    let n = v.len();
    let (base, g, q) = (fr.base, fr.g, &fr.q);
    let exc_cost = bit_width(n as u64) as usize + fr.maxw as usize + 2;
    let allow_exc = depth < EXC_MAX_DEPTH;
    let mut metas: Vec<(u8, u64)> = Vec::with_capacity(n.div_ceil(BLOCK));
    let mut data: Vec<u8> = Vec::with_capacity(n * fr.maxw as usize / 8 + 16);
    // filled block by block, never zeroed: a `[0; BLOCK]` here was 8 KiB of memset per
    // candidate stream, 3.5 % of a flush's instructions
    let mut packed: Vec<u64> = Vec::with_capacity(n.min(BLOCK));
    let mut exc_pos = Vec::new();
    let mut exc_val = Vec::new();
    for (k, blk) in q.chunks(BLOCK).enumerate() {
        let m = blk.iter().copied().min().unwrap_or(0);
        let maxw = bit_width(blk.iter().fold(0, |acc, &x| acc | (x - m))) as usize;
        let w = if allow_exc { choose_block_width(blk, m, maxw, exc_cost) } else { maxw };
        packed.clear();
        if w == maxw {
            // no exceptions in this block: a plain loop the compiler vectorises
            packed.extend(blk.iter().map(|&x| x - m));
        } else {
            let limit = (1u64 << w) - 1; // w < maxw <= 64
            packed.extend(blk.iter().enumerate().map(|(i, &x)| {
                if x - m > limit {
                    let at = k * BLOCK + i;
                    exc_pos.push(at as i64);
                    exc_val.push(v[at]);
                    0
                } else {
                    x - m
                }
            }));
        }
        bitpack::pack_block(&packed, w as u32, &mut data);
        metas.push((w as u8, m));
    }
    out.push(S_FOR);
    put_zigzag(out, base);
    put_varint(out, g);
    put_varint(out, exc_pos.len() as u64);
    for &(w, m) in &metas {
        out.push(w);
        put_varint(out, m);
    }
    out.extend_from_slice(&data);
    if !exc_pos.is_empty() {
        encode_stream(&exc_pos, depth + 1, out);
        encode_stream(&exc_val, depth + 1, out);
    }
}

/// Frame of reference of a stream: see [`frame`].
struct Frame {
    base: i64,
    g: u64,
    q: Vec<u64>,
    maxw: u32,
}

/// Frame of reference of `v`: its minimum, the greatest common divisor of the offsets from it
/// (at least 1), and the offsets divided by it.
fn frame(v: &[i64]) -> Frame {
    let (base, top) = if v.is_empty() { (0, 0) } else { min_max(v) };
    let off = |x: i64| x.wrapping_sub(base) as u64;
    // gcd of a sample first, then check that it divides every offset (one multiplication each)
    let mut g = 0u64;
    for &x in v.iter().step_by((v.len() / 64).max(1)) {
        if off(x) != 0 {
            g = gcd(off(x), g);
            if g == 1 {
                break;
            }
        }
    }
    if g > 1 && !v.iter().all(|&x| Divisor::new(g).divides(off(x))) {
        g = 0;
        for &x in v {
            if off(x) != 0 {
                g = gcd(off(x), g);
                if g == 1 {
                    break;
                }
            }
        }
    }
    let g = g.max(1);
    // every offset is a multiple of `g`, so the largest quotient is the largest value's
    let (q, qmax): (Vec<u64>, u64) = if g == 1 {
        (v.iter().map(|&x| off(x)).collect(), off(top))
    } else {
        let dv = Divisor::new(g);
        (v.iter().map(|&x| dv.exact(off(x))).collect(), dv.exact(off(top)))
    };
    Frame { base, g, q, maxw: bit_width(qmax) }
}

/// Smallest and largest of `v` (`(i64::MAX, i64::MIN)` when empty), in four independent
/// lanes: one running pair would chain every comparison on the previous one.
fn min_max(v: &[i64]) -> (i64, i64) {
    let mut lo = [i64::MAX; 4];
    let mut hi = [i64::MIN; 4];
    let quads = v.chunks_exact(4);
    let rest = quads.remainder();
    for q in quads {
        for l in 0..4 {
            lo[l] = lo[l].min(q[l]);
            hi[l] = hi[l].max(q[l]);
        }
    }
    for &x in rest {
        lo[0] = lo[0].min(x);
        hi[0] = hi[0].max(x);
    }
    (lo.into_iter().min().unwrap_or(i64::MAX), hi.into_iter().max().unwrap_or(i64::MIN))
}

/// Exact division by a constant: `g = 2^s * odd`, division = shift, then multiplication by the
/// inverse of `odd` modulo 2^64 (valid when the dividend is a multiple of `g`).
struct Divisor {
    s: u32,
    inv: u64,
    lim: u64,
}

impl Divisor {
    fn new(g: u64) -> Self {
        let s = g.trailing_zeros();
        let odd = g >> s;
        let mut inv = odd; // correct to 3 bits; each Newton step doubles that
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inv)));
        }
        Divisor { s, inv, lim: u64::MAX / odd }
    }
    #[inline]
    fn divides(&self, d: u64) -> bool {
        d.trailing_zeros() >= self.s && (d >> self.s).wrapping_mul(self.inv) <= self.lim
    }
    #[inline]
    fn exact(&self, d: u64) -> u64 {
        (d >> self.s).wrapping_mul(self.inv)
    }
}

/// Split stream: `base:zigzag-varint factor:varint(>=1) k:u8(<=56) exc:varint(<=n)
/// zlen:varint zstd-frame[zlen] B x packed-block(width k) (if exc > 0: positions, values)` with
/// `B = ceil(n / 1024)`. With `r = (v - base) / factor`, the zstd frame decompresses to the `n`
/// high bytes `r >> k` (zstd's Huffman stage entropy-codes them); the blocks hold the low `k`
/// bits (layout as in FOR, one width for all blocks). Values whose high part does not fit a
/// byte are exceptions. This is the compact path for noisy signals, where plain bit-packing
/// pays the width of the range instead of the entropy.
///
/// Writes nothing when the entropy estimate says it cannot fit in `budget` bytes.
pub fn encode_split(v: &[i64], depth: u32, budget: usize, out: &mut Vec<u8>) {
    let fr = frame(v);
    encode_split_framed(v, &fr, depth, budget, out);
}

/// Writes nothing when the estimate exceeds `budget` bytes.
fn encode_split_framed(v: &[i64], fr: &Frame, depth: u32, budget: usize, out: &mut Vec<u8>) {
    let n = v.len();
    let (base, g, q) = (fr.base, fr.g, &fr.q);
    let Some((kmin, mut level, far)) = high_histogram(q, fr.maxw as usize) else { return };
    let exc_cost = bit_width(n as u64) as usize + fr.maxw as usize + 2;
    // zero-order entropy estimate of the high byte for the low widths that leave 8..4 bits of
    // high part for the 99.9% bulk
    let kmax = (kmin + 4).min(56);
    let mut est: Option<(f64, usize)> = None;
    for k in kmin..=kmax {
        // `level` holds the histogram of x >> k: its first 256 bins are the high byte's
        // symbols, the rest are exceptions; halving it gives the histogram for k + 1
        let (counts, beyond) = level.split_at(256);
        let exc = far + beyond.iter().map(|&c| c as usize).sum::<usize>();
        let m = (n - exc).max(1) as f64;
        let mut bits = 0f64;
        let mut symbols = 0usize;
        for &c in counts.iter().filter(|&&c| c > 0) {
            let c = c as f64;
            bits -= c * (c / m).log2();
            symbols += 1;
        }
        let cost = bits + (n * k + exc * exc_cost + symbols * 4 + 160) as f64;
        if est.is_none_or(|(c, _)| cost < c) {
            est = Some((cost, k));
        }
        if k < kmax {
            let half = level.len() / 2; // at least 256: k - kmin < 4
            for j in 0..half {
                level[j] = level[2 * j] + level[2 * j + 1];
            }
            level.truncate(half);
        }
    }
    let Some((est_bits, k_est)) = est else { return };
    if est_bits / 8.0 > budget as f64 {
        return;
    }
    // zstd's Huffman stage is not the ideal coder the estimate assumes, and its table costs
    // favour one bit less in the high byte: measure that neighbour too (trying k + 1 as well
    // gained under 0.07% on the shared sets for a third more zstd calls)
    let mut best: Option<(usize, usize, Vec<u8>)> = None; // (bits, k, frame)
    let mut high = Vec::with_capacity(n);
    for k in k_est.saturating_sub(1).max(kmin)..=k_est {
        high.clear();
        let mut exc = 0usize;
        for &x in q {
            let h = x >> k;
            if h < 256 {
                high.push(h as u8);
            } else {
                exc += 1;
                high.push(0);
            }
        }
        let Some(z) = zstd_compress_min_match(&high, SPLIT_ZSTD_LEVEL, SPLIT_ZSTD_MIN_MATCH) else { return };
        let bits = z.len() * 8 + n * k + exc * exc_cost;
        if best.as_ref().is_none_or(|b| bits < b.0) {
            best = Some((bits, k, z));
        }
    }
    let Some((_, k, z)) = best else { return };
    let lmask = if k == 0 { 0 } else { (1u64 << k) - 1 };
    let mut data = Vec::with_capacity(n * k / 8 + 16);
    let mut low: Vec<u64> = Vec::with_capacity(n.min(BLOCK));
    let mut exc_pos = Vec::new();
    let mut exc_val = Vec::new();
    for (b, blk) in q.chunks(BLOCK).enumerate() {
        low.clear();
        low.extend(blk.iter().enumerate().map(|(i, &x)| {
            if x >> k < 256 {
                x & lmask
            } else {
                exc_pos.push((b * BLOCK + i) as i64);
                exc_val.push(v[b * BLOCK + i]);
                0
            }
        }));
        bitpack::pack_block(&low, k as u32, &mut data);
    }
    out.push(S_SPLIT);
    put_zigzag(out, base);
    put_varint(out, g);
    out.push(k as u8);
    put_varint(out, exc_pos.len() as u64);
    put_varint(out, z.len() as u64);
    out.extend_from_slice(&z);
    out.extend_from_slice(&data);
    if !exc_pos.is_empty() {
        encode_stream(&exc_pos, depth + 1, out);
        encode_stream(&exc_val, depth + 1, out);
    }
}

/// For a split stream of the offsets `q` (widest `maxw` bits): the smallest low width `kmin`
/// worth a trial (the width covering 99.9% of the values, less 8), the histogram of
/// `x >> kmin` in 4096 bins and the count of values beyond them. `None` when 99.9% of the
/// values fit in 3 bits (bit-packing wins there).
///
/// Usually one pass: a histogram of the top 12 bits of `maxw` gives the 99.9% width and, by
/// merging bins, the histogram of `x >> kmin`. When outliers put the bulk below those 12 bits,
/// an exact width histogram and a second pass instead.
fn high_histogram(q: &[u64], maxw: usize) -> Option<(usize, Vec<u32>, usize)> {
    let n = q.len();
    let s = maxw.saturating_sub(12);
    let need = |seen: usize| seen * 1000 >= n * 999;
    // a sample mostly below 2^s: outliers far above the bulk, go to the exact passes at once
    let step = (n / 64).max(1);
    let low = q.iter().step_by(step).filter(|&&x| x >> s == 0).count();
    let outliers = s > 0 && low * 8 > n.div_ceil(step) * 7;
    // every x < 2^maxw, so x >> s < 2^(maxw - s): as many bins as that (4096 at most)
    let bins = 1usize << (maxw - s);
    let mut coarse = vec![0u32; bins];
    let mut w999 = None;
    if !outliers {
        for &x in q {
            coarse[((x >> s) as usize) & (bins - 1)] += 1;
        }
        if !need(coarse[0] as usize) || s == 0 {
            // #{x < 2^b} is the sum of the first 2^(b - s) bins
            let (mut seen, mut upto) = (0usize, 0usize);
            for b in s..=maxw {
                let end = 1usize << (b - s);
                seen += coarse[upto..end].iter().map(|&c| c as usize).sum::<usize>();
                upto = end;
                if need(seen) {
                    w999 = Some(b);
                    break;
                }
            }
        }
    }
    let w999 = match w999 {
        Some(w) => w,
        None => {
            let hist = width_hist(q, 0);
            let mut seen = 0usize;
            (0..=64).find(|&b| {
                seen += hist[b];
                need(seen)
            })?
        }
    };
    if w999 < 4 {
        return None;
    }
    let kmin = w999 - w999.min(8);
    let mut level = vec![0u32; 4096];
    let mut far = 0usize;
    if kmin >= s && !outliers {
        // every x >> kmin < 2^(maxw - kmin) <= 4096: merge the coarse bins
        for (i, &c) in coarse.iter().enumerate() {
            level[i >> (kmin - s)] += c;
        }
    } else {
        for &x in q {
            match level.get_mut((x >> kmin) as usize) {
                Some(c) => *c += 1,
                None => far += 1,
            }
        }
    }
    Some((kmin, level, far))
}

/// Histogram of the bit widths of `x - m` over `xs`. Four interleaved tables: values of one
/// stream mostly share a width, and a single table would chain every increment on the last.
#[inline]
fn width_hist(xs: &[u64], m: u64) -> [usize; 65] {
    let mut h = [[0u32; 65]; 4];
    let mut quads = xs.chunks_exact(4);
    for c in &mut quads {
        h[0][bit_width(c[0] - m) as usize] += 1;
        h[1][bit_width(c[1] - m) as usize] += 1;
        h[2][bit_width(c[2] - m) as usize] += 1;
        h[3][bit_width(c[3] - m) as usize] += 1;
    }
    for &x in quads.remainder() {
        h[0][bit_width(x - m) as usize] += 1;
    }
    let mut out = [0usize; 65];
    for (b, o) in out.iter_mut().enumerate() {
        *o = (h[0][b] + h[1][b] + h[2][b] + h[3][b]) as usize;
    }
    out
}

/// Width minimising `n * w + exceptions * exc_cost` (bits) for the block `xs` (offsets from
/// `m`, widest `maxw` bits): what [`choose_width`] gives on the block's histogram. Counts the
/// values above the top few widths with plain passes first: usually the exceptions a narrower
/// width would make already cost more than any width can save, and the search ends there.
fn choose_block_width(xs: &[u64], m: u64, maxw: usize, exc_cost: usize) -> usize {
    const PASSES: usize = 4;
    let n = xs.len();
    let mut best_w = maxw;
    let mut best_cost = n * maxw;
    for w in (maxw.saturating_sub(PASSES)..maxw).rev() {
        let above: usize = xs.iter().map(|&x| usize::from((x - m) >> w != 0)).sum();
        if above * exc_cost + 8 >= best_cost {
            // narrower widths have at least as many exceptions: none can cost less
            return best_w;
        }
        let cost = n * w + above * exc_cost + 8;
        if cost < best_cost {
            best_cost = cost;
            best_w = w;
        }
    }
    if maxw <= PASSES {
        return best_w;
    }
    choose_width(&width_hist(xs, m), n, maxw, exc_cost)
}

/// Width minimising `n * w + exceptions * exc_cost` (bits) for one block.
fn choose_width(hist: &[usize; 65], n: usize, maxw: usize, exc_cost: usize) -> usize {
    let mut best_w = maxw;
    let mut best_cost = n * maxw;
    let mut above = 0usize;
    for w in (0..maxw).rev() {
        above += hist[w + 1];
        let cost = n * w + above * exc_cost + 8;
        if cost < best_cost {
            best_cost = cost;
            best_w = w;
        }
    }
    best_w
}

/// A delta stream; its deltas searched, or encoded as `plan` says. Returns its plan.
fn encode_delta(v: &[i64], depth: u32, plan: Option<&Plan>, out: &mut Vec<u8>) -> Plan {
    let deltas: Vec<i64> = v.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    out.push(S_DELTA);
    put_zigzag(out, v[0]);
    Plan::Delta(Box::new(sub_stream(&deltas, depth + 1, plan, out)))
}

/// A stream searched (no plan) or encoded as planned; returns its plan.
pub(crate) fn sub_stream(v: &[i64], depth: u32, plan: Option<&Plan>, out: &mut Vec<u8>) -> Plan {
    match plan {
        Some(p) => {
            encode_planned(v, p, depth, out);
            p.clone()
        }
        None => search(v, depth, out),
    }
}

fn encode_rle(v: &[i64], runs: usize, depth: u32, plan: Option<(&Plan, &Plan)>, out: &mut Vec<u8>) -> Plan {
    let mut vals = Vec::with_capacity(runs);
    let mut lens = Vec::with_capacity(runs);
    let mut start = 0usize;
    for i in 1..=v.len() {
        if i == v.len() || v[i] != v[start] {
            vals.push(v[start]);
            lens.push((i - start - 1) as i64);
            start = i;
        }
    }
    out.push(S_RLE);
    put_varint(out, vals.len() as u64);
    let pv = sub_stream(&vals, depth + 1, plan.map(|p| p.0), out);
    let pl = sub_stream(&lens, depth + 1, plan.map(|p| p.1), out);
    Plan::Rle(Box::new(pv), Box::new(pl))
}

/// Writes nothing when the dictionary is not expected to beat `budget` bytes (see
/// [`dict_bound_bytes`]): building the stream encodes the codes with every candidate again.
/// Returns the stream's plan, `None` when nothing was written.
fn encode_dict(
    v: &[i64],
    depth: u32,
    runs: usize,
    budget: usize,
    plan: Option<(&Plan, &Plan)>,
    out: &mut Vec<u8>,
) -> Option<Plan> {
    // cheap test on a sample first
    let step = (v.len() / 512).max(1);
    Distinct::count(v.iter().step_by(step).copied(), 256)?;
    // worthwhile only with at most n/4 entries whose codes are narrower than the
    // frame-of-reference width: bit_width(k - 1) + 1 < bit_width(max - min)
    let (lo, hi) = v.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let range_w = bit_width(hi.wrapping_sub(lo) as u64);
    if range_w < 2 {
        return None;
    }
    let limit = DICT_MAX.min(v.len() / 4).min(1usize << (range_w - 2).min(32));
    let mut set = Distinct::count(v.iter().copied(), limit)?;
    let dict = set.sorted_codes();
    let codes: Vec<i64> = v.iter().map(|&x| set.code(x)).collect();
    if plan.is_none() && dict_bound_bytes(&codes, dict.len(), runs) >= budget {
        return None;
    }
    out.push(S_DICT);
    put_varint(out, dict.len() as u64);
    let pd = sub_stream(&dict, depth + 1, plan.map(|p| p.0), out);
    let pc = sub_stream(&codes, depth + 1, plan.map(|p| p.1), out);
    Some(Plan::Dict(Box::new(pd), Box::new(pc)))
}

/// What the codes of a dictionary stream (ranks below `k`, in `runs` runs) take at least,
/// unless a delta of them beats their zero-order entropy: the smaller of that entropy and one
/// code's width per run. A delta that would win on the codes wins on the values themselves
/// too (ranks keep the order), which the stream's other candidates already tried, so in
/// practice this is a lower bound (on the shared sets and the benchmark data it changes 0.02%
/// of the bytes).
fn dict_bound_bytes(codes: &[i64], k: usize, runs: usize) -> usize {
    let mut counts = vec![0u32; k];
    for &c in codes {
        if let Some(x) = counts.get_mut(c as usize) {
            *x += 1;
        }
    }
    let n = codes.len() as f64;
    let entropy: f64 =
        counts.iter().filter(|&&c| c > 0).map(|&c| -f64::from(c) * (f64::from(c) / n).log2()).sum();
    let per_run = (runs * bit_width(k.saturating_sub(1) as u64).max(1) as usize) as f64;
    (entropy.min(per_run) / 8.0) as usize
}

/// A small open-addressing set of the distinct values of a stream, giving up past a limit;
/// after [`Distinct::sorted_codes`] it maps each value to its rank.
struct Distinct {
    keys: Vec<i64>,
    /// 0: empty slot; else 1 + the slot's rank (once ranked) or 1.
    tags: Vec<u32>,
    mask: usize,
    len: usize,
}

impl Distinct {
    /// The distinct values of `it`, or `None` once there are more than `limit`. The table
    /// starts small and doubles while at least half full, up to the size `limit` needs:
    /// allocated and zeroed at that size up front, it was 48 KiB per dictionary candidate
    /// (1.7 % of a flush's instructions) where most streams hold a few values.
    fn count(it: impl Iterator<Item = i64>, limit: usize) -> Option<Distinct> {
        let full = (2 * limit + 2).next_power_of_two();
        let cap = full.min(64);
        let mut d = Distinct { keys: vec![0; cap], tags: vec![0; cap], mask: cap - 1, len: 0 };
        for x in it {
            if d.insert(x) {
                if d.len > limit {
                    return None;
                }
                if 2 * d.len > d.keys.len() && d.keys.len() < full {
                    d.grow();
                }
            }
        }
        Some(d)
    }

    /// Adds `x`; true when it was not there. The table is never full (at most half, or
    /// `limit` of `2 * limit + 2` slots), so the probe ends.
    #[inline]
    fn insert(&mut self, x: i64) -> bool {
        let mut i = self.slot(x);
        loop {
            if self.tags[i] == 0 {
                self.tags[i] = 1;
                self.keys[i] = x;
                self.len += 1;
                return true;
            }
            if self.keys[i] == x {
                return false;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Doubles the table, inserting the values again.
    fn grow(&mut self) {
        let cap = 2 * self.keys.len();
        let keys = std::mem::replace(&mut self.keys, vec![0; cap]);
        let tags = std::mem::replace(&mut self.tags, vec![0; cap]);
        (self.mask, self.len) = (cap - 1, 0);
        for (x, t) in keys.into_iter().zip(tags) {
            if t != 0 {
                self.insert(x);
            }
        }
    }

    #[inline]
    fn slot(&self, x: i64) -> usize {
        ((x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    /// The distinct values in ascending order; each value's slot learns its rank.
    fn sorted_codes(&mut self) -> Vec<i64> {
        let mut dict: Vec<i64> =
            (0..self.keys.len()).filter(|&i| self.tags[i] != 0).map(|i| self.keys[i]).collect();
        dict.sort_unstable();
        for (rank, &x) in dict.iter().enumerate() {
            let mut i = self.slot(x);
            while self.keys[i] != x || self.tags[i] == 0 {
                i = (i + 1) & self.mask;
            }
            self.tags[i] = rank as u32 + 1;
        }
        dict
    }

    /// The rank of `x`, which must be in the set.
    #[inline]
    fn code(&self, x: i64) -> i64 {
        let mut i = self.slot(x);
        loop {
            if self.tags[i] == 0 {
                return 0; // not reached: every value of the stream is in the set
            }
            if self.keys[i] == x {
                return self.tags[i] as i64 - 1;
            }
            i = (i + 1) & self.mask;
        }
    }
}

// ------------------------------------------------------------------------------------------
// decoder
//
// Decoders push their values, in order and in blocks of at most `BLOCK` (1,024), into a
// `Sink`; run-length and constant streams hand over whole runs instead. Layers that transform
// values (delta, dictionary, the float scales) are sinks wrapping the next sink, so a chain
// like delta + frame-of-reference decodes in one pass through one block of scratch.

/// Receives decoded values block by block, in order.
pub(crate) trait Sink {
    /// Takes the next values. The block is the sink's to change: layers transform it in
    /// place (a running sum, a dictionary lookup) and pass it on.
    fn put(&mut self, block: &mut [i64]);

    /// Takes runs: `vals[i]` repeated `lens[i] + 1` times, in order (lengths checked by the
    /// caller: none negative). A sink that maps values one by one maps each run's value once
    /// and expands after; the others expand into blocks with [`put_runs_as_blocks`].
    fn put_runs(&mut self, vals: &mut [i64], lens: &[i64]);
}

/// Expands runs into blocks of a sink.
fn put_runs_as_blocks(sink: &mut dyn Sink, vals: &[i64], lens: &[i64]) {
    let mut b = Blocks::new(sink);
    for (&v, &l) in vals.iter().zip(lens) {
        b.run(v, l as usize + 1);
    }
    b.flush();
}

/// Appends runs (`vals[i]` repeated `lens[i] + 1` times, no length negative) to `out`. A run
/// of up to 16 values is one extend of exactly 16 copies (a few vector stores, no loop) cut
/// back to its length, so short runs cost one predictable branch each; a loop per run
/// mispredicts on every run once run lengths stop repeating.
#[inline(always)]
fn expand_runs<T: Copy>(out: &mut Vec<T>, vals: &[T], lens: &[i64]) {
    const STRIDE: usize = 16;
    let total: usize = lens.iter().map(|&l| l as usize + 1).sum();
    // Exactly the room the runs need: the reader sizes a column for all of its rows, and
    // slack asked for here would reallocate (copy) the whole column at its last block.
    out.reserve(total);
    let cap = out.capacity();
    for (&v, &l) in vals.iter().zip(lens) {
        let len = l as usize + 1;
        let at = out.len();
        if len <= STRIDE && at + STRIDE <= cap {
            // The spill past the run is cut off (and overwritten by the next run).
            out.extend(std::iter::repeat_n(v, STRIDE));
            out.truncate(at + len);
        } else {
            out.extend(std::iter::repeat_n(v, len));
        }
    }
}

#[inline(always)]
fn expand_runs_u64(out: &mut Vec<u64>, vals: &[u64], lens: &[i64]) {
    expand_runs(out, vals, lens)
}

cpu_dispatch! {
/// [`expand_runs`] of bit patterns (the float scale's and the segment reader's output),
/// compiled for AVX2 where the CPU has it: four values per store instead of two.
pub(crate) fn expand_runs_bits(out: &mut Vec<u64>, vals: &[u64], lens: &[i64]) =
    expand_runs_u64, "avx2" if super::has_avx2
}

/// Appends to a vector.
pub struct VecSink<'a>(pub &'a mut Vec<i64>);

impl Sink for VecSink<'_> {
    #[inline]
    fn put(&mut self, block: &mut [i64]) {
        self.0.extend_from_slice(block);
    }
    fn put_runs(&mut self, vals: &mut [i64], lens: &[i64]) {
        expand_runs(self.0, vals, lens);
    }
}

/// Appends bit patterns to a vector (integers as the reader keeps them, and floats stored
/// as their raw bits).
struct BitsVecSink<'a>(&'a mut Vec<u64>);

impl Sink for BitsVecSink<'_> {
    #[inline]
    fn put(&mut self, block: &mut [i64]) {
        self.0.extend(block.iter().map(|&v| v as u64));
    }
    fn put_runs(&mut self, vals: &mut [i64], lens: &[i64]) {
        let bits: Vec<u64> = vals.iter().map(|&v| v as u64).collect();
        expand_runs_bits(self.0, &bits, lens);
    }
}

/// Running (wrapping) sum: turns deltas into values, in place.
struct DeltaSink<'a> {
    acc: i64,
    inner: &'a mut dyn Sink,
}

impl Sink for DeltaSink<'_> {
    fn put(&mut self, block: &mut [i64]) {
        self.acc = prefix_sum(block, self.acc);
        self.inner.put(block);
    }
    fn put_runs(&mut self, vals: &mut [i64], lens: &[i64]) {
        put_runs_as_blocks(self, vals, lens);
    }
}

/// Running sum of a running sum: turns second differences into values, in place.
struct DeltaDeltaSink<'a> {
    d: i64,
    v: i64,
    inner: &'a mut dyn Sink,
}

impl Sink for DeltaDeltaSink<'_> {
    fn put(&mut self, block: &mut [i64]) {
        let (mut d, mut v) = (self.d, self.v);
        for x in block.iter_mut() {
            d = d.wrapping_add(*x);
            v = v.wrapping_add(d);
            *x = v;
        }
        (self.d, self.v) = (d, v);
        self.inner.put(block);
    }
    fn put_runs(&mut self, vals: &mut [i64], lens: &[i64]) {
        put_runs_as_blocks(self, vals, lens);
    }
}

/// Replaces `v` by its running sum after `acc` (wrapping); returns the last sum. One chain
/// of dependent additions, a cycle per value: splitting it into independent chains, or
/// 4-lane vector sums with a carried total, measured no faster here (stores bound them).
#[inline]
fn prefix_sum(v: &mut [i64], mut acc: i64) -> i64 {
    for x in v.iter_mut() {
        acc = acc.wrapping_add(*x);
        *x = acc;
    }
    acc
}

/// Dictionary lookup of codes, in place.
struct DictSink<'a> {
    dict: &'a [i64],
    inner: &'a mut dyn Sink,
    bad: bool,
}

impl DictSink<'_> {
    fn look_up(&mut self, codes: &mut [i64]) {
        for x in codes.iter_mut() {
            *x = match self.dict.get(*x as u64 as usize) {
                Some(&v) => v,
                None => {
                    self.bad = true;
                    0
                }
            };
        }
    }
}

impl Sink for DictSink<'_> {
    fn put(&mut self, block: &mut [i64]) {
        self.look_up(block);
        self.inner.put(block);
    }
    fn put_runs(&mut self, vals: &mut [i64], lens: &[i64]) {
        self.look_up(vals);
        self.inner.put_runs(vals, lens);
    }
}

/// Buffers single values and runs into blocks for a sink.
struct Blocks<'a> {
    buf: [i64; 256],
    len: usize,
    sink: &'a mut dyn Sink,
}

impl<'a> Blocks<'a> {
    fn new(sink: &'a mut dyn Sink) -> Self {
        Blocks { buf: [0; 256], len: 0, sink }
    }
    #[inline]
    fn run(&mut self, v: i64, mut count: usize) {
        // Whole strides of 16 slots while they fit (a fixed-size fill compiles to a few vector
        // stores): a short run writes one stride, of which the next run overwrites what lies
        // past this one; only the end of the buffer is filled to the exact length.
        const STRIDE: usize = 16;
        while count > 0 {
            if self.len + STRIDE <= self.buf.len() {
                let k = count.min(STRIDE);
                self.buf[self.len..self.len + STRIDE].fill(v);
                self.len += k;
                count -= k;
            } else if self.len == self.buf.len() {
                self.flush();
            } else {
                let k = count.min(self.buf.len() - self.len);
                self.buf[self.len..self.len + k].fill(v);
                self.len += k;
                count -= k;
            }
        }
    }
    fn flush(&mut self) {
        if self.len > 0 {
            self.sink.put(&mut self.buf[..self.len]);
            self.len = 0;
        }
    }
}

/// Decodes a stream of `n` values into `out` (cleared first).
pub(crate) fn decode_vec(
    r: &mut Reader<'_>,
    n: usize,
    depth: u32,
    out: &mut Vec<i64>,
    desc: Desc<'_>,
) -> Result<()> {
    out.clear();
    decode_vec_append(r, n, depth, out, desc)
}

/// [`decode_vec_append`] into bit patterns: integers as the segment reader keeps them, and
/// floats stored as their raw bits.
pub(crate) fn decode_bits_append(
    r: &mut Reader<'_>,
    n: usize,
    depth: u32,
    out: &mut Vec<u64>,
    desc: Desc<'_>,
) -> Result<()> {
    let at = out.len();
    out.reserve(n);
    decode_stream(r, n, depth, &mut BitsVecSink(out), desc)?;
    if out.len() - at != n {
        return Err(r.err("stream produced the wrong number of values"));
    }
    Ok(())
}

/// Decodes a stream of `n` values and appends them to `out` (what it appended stays on error:
/// callers that promise an unchanged output cut it back).
pub(crate) fn decode_vec_append(
    r: &mut Reader<'_>,
    n: usize,
    depth: u32,
    out: &mut Vec<i64>,
    desc: Desc<'_>,
) -> Result<()> {
    let at = out.len();
    out.reserve(n);
    decode_stream(r, n, depth, &mut VecSink(out), desc)?;
    if out.len() - at != n {
        return Err(r.err("stream produced the wrong number of values"));
    }
    Ok(())
}

/// Decodes a stream of exactly `n` values into `sink`.
pub(crate) fn decode_stream(
    r: &mut Reader<'_>,
    n: usize,
    depth: u32,
    sink: &mut dyn Sink,
    mut desc: Desc<'_>,
) -> Result<()> {
    if depth > MAX_DECODE_DEPTH {
        return Err(r.err("integer streams nested too deeply"));
    }
    let tag_pos = r.pos;
    match r.u8()? {
        S_CONST => {
            let v = r.zigzag()?;
            note(&mut desc, "const");
            if n > 0 {
                sink.put_runs(&mut [v], &[(n - 1) as i64]);
            }
            Ok(())
        }
        S_RAW => {
            let len = n.checked_mul(8).ok_or_else(|| r.err("length overflow"))?;
            let bytes = r.bytes(len)?;
            note(&mut desc, "raw");
            let mut buf = [0i64; 64];
            for c in bytes.chunks(512) {
                let k = c.len() / 8;
                for (o, b) in buf.iter_mut().zip(c.chunks_exact(8)) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    *o = i64::from_le_bytes(a);
                }
                sink.put(&mut buf[..k]);
            }
            Ok(())
        }
        S_FOR => decode_for(r, n, depth, sink, desc),
        S_SPLIT => decode_split(r, n, depth, sink, desc),
        S_DELTA => {
            if n == 0 {
                return Err(DecodeError { offset: tag_pos, what: "delta stream with no values" });
            }
            let first = r.zigzag()?;
            note(&mut desc, "delta+");
            if n >= 2 && r.peek() == Some(S_DELTA) && depth < MAX_DECODE_DEPTH {
                // Delta of delta: both running sums in one pass (two independent addition
                // chains per value instead of a pass each); the same values, errors and
                // nesting depth as decoding the two layers one inside the other.
                r.u8()?;
                let d = r.zigzag()?;
                note(&mut desc, "delta+");
                let v = first.wrapping_add(d);
                sink.put(&mut [first, v]);
                let mut ds = DeltaDeltaSink { d, v, inner: sink };
                return decode_stream(r, n - 2, depth + 2, &mut ds, desc);
            }
            sink.put(&mut [first]);
            let mut ds = DeltaSink { acc: first, inner: sink };
            decode_stream(r, n - 1, depth + 1, &mut ds, desc)
        }
        S_RLE => {
            let runs = r.count(n, "run count exceeds n")?;
            if runs == 0 && n > 0 {
                return Err(r.err("no runs"));
            }
            if let Some(d) = desc.as_deref_mut() {
                d.push_str(&format!("rle(runs={runs})["));
            }
            let mut vals = Vec::new();
            decode_vec(r, runs, depth + 1, &mut vals, desc.as_deref_mut())?;
            note(&mut desc, "|");
            let mut lens = Vec::new();
            decode_vec(r, runs, depth + 1, &mut lens, desc.as_deref_mut())?;
            note(&mut desc, "]");
            let mut total = 0u64;
            for &l in &lens {
                total = total.saturating_add((l as u64).saturating_add(1));
                if l < 0 || total > n as u64 {
                    return Err(r.err("run lengths exceed n"));
                }
            }
            if total != n as u64 {
                return Err(r.err("run lengths do not add up to n"));
            }
            sink.put_runs(&mut vals, &lens);
            Ok(())
        }
        S_DICT => {
            let k = r.count(n, "dictionary larger than n")?;
            if k == 0 && n > 0 {
                return Err(r.err("empty dictionary"));
            }
            if let Some(d) = desc.as_deref_mut() {
                d.push_str(&format!("dict(k={k})["));
            }
            let mut dict = Vec::new();
            decode_vec(r, k, depth + 1, &mut dict, desc.as_deref_mut())?;
            note(&mut desc, "|");
            let mut ds = DictSink { dict: &dict, inner: sink, bad: false };
            decode_stream(r, n, depth + 1, &mut ds, desc.as_deref_mut())?;
            note(&mut desc, "]");
            if ds.bad {
                return Err(r.err("dictionary code out of range"));
            }
            Ok(())
        }
        _ => Err(DecodeError { offset: tag_pos, what: "unknown integer stream tag" }),
    }
}

/// Writes exception values into groups as they stream past.
struct Patcher<'a> {
    pos: &'a [i64],
    vals: &'a [i64],
    k: usize,
}

impl Patcher<'_> {
    #[inline(always)]
    fn apply(&mut self, start: usize, block: &mut [i64]) {
        let end = start + block.len();
        while let (Some(&p), Some(&v)) = (self.pos.get(self.k), self.vals.get(self.k)) {
            if p as u64 >= end as u64 {
                break;
            }
            if let Some(slot) = block.get_mut((p as usize).wrapping_sub(start)) {
                *slot = v;
            }
            self.k += 1;
        }
    }
}

fn decode_for(r: &mut Reader<'_>, n: usize, depth: u32, sink: &mut dyn Sink, desc: Desc<'_>) -> Result<()> {
    let base = r.zigzag()?;
    let g = r.varint()?;
    if g == 0 {
        return Err(r.err("zero factor"));
    }
    let exc = r.count(n, "exception count exceeds n")?;
    let nb = n.div_ceil(BLOCK);
    let mut metas: Vec<(u8, u64)> = Vec::with_capacity(nb);
    let mut total = 0usize;
    for k in 0..nb {
        let w = r.u8()?;
        if w > 64 {
            return Err(r.err("bit width > 64"));
        }
        let off = r.varint()?;
        let len = (n - k * BLOCK).min(BLOCK);
        total = total.checked_add(block_len(len, u32::from(w))).ok_or_else(|| r.err("length overflow"))?;
        metas.push((w, off));
    }
    let data = r.bytes(total)?;
    if let Some(d) = desc {
        let lo = metas.iter().map(|m| m.0).min().unwrap_or(0);
        let hi = metas.iter().map(|m| m.0).max().unwrap_or(0);
        if lo == hi {
            d.push_str(&format!("for(w={lo}"));
        } else {
            d.push_str(&format!("for(w={lo}..{hi}"));
        }
        close_desc(d, g, exc);
    }
    let (pos, vals) = if exc > 0 { read_exceptions(r, n, exc, depth)? } else { (Vec::new(), Vec::new()) };
    let mut p = Patcher { pos: &pos, vals: &vals, k: 0 };
    let mut blocks = |tmp: &mut [i64]| -> Result<()> {
        let mut at = 0usize;
        for (k, &(w, off)) in metas.iter().enumerate() {
            let len = (n - k * BLOCK).min(BLOCK);
            let bytes = block_len(len, u32::from(w));
            let src = data.get(at..at + bytes).ok_or_else(|| r.err("bit-packed data malformed"))?;
            at += bytes;
            let bb = base.wrapping_add(off.wrapping_mul(g) as i64);
            let out = &mut tmp[..len];
            let ok = if g == 1 {
                bitpack::unpack_block(src, u32::from(w), out, move |q| bb.wrapping_add(q as i64))
            } else {
                bitpack::unpack_block(src, u32::from(w), out, move |q| {
                    bb.wrapping_add(q.wrapping_mul(g) as i64)
                })
            };
            if !ok {
                return Err(r.err("bit-packed data malformed"));
            }
            if exc > 0 {
                p.apply(k * BLOCK, out);
            }
            sink.put(out);
        }
        Ok(())
    };
    // A small stream (exceptions, dictionaries, run lengths) must not pay for zeroing a whole
    // block's buffer; a large one borrows this thread's.
    if n <= SMALL { blocks(&mut [0i64; SMALL]) } else { with_scratch(|s| blocks(&mut s.1)) }
}

/// Ends the description of a frame-of-reference or split stream: its factor (when not 1),
/// the closing parenthesis and its exception count (when any).
fn close_desc(d: &mut String, g: u64, exc: usize) {
    if g != 1 {
        d.push_str(&format!(",x{g}"));
    }
    d.push(')');
    if exc > 0 {
        d.push_str(&format!("+exc({exc})"));
    }
}

/// Buffer size for streams short enough not to need a whole block's buffer.
const SMALL: usize = 64;

fn decode_split(r: &mut Reader<'_>, n: usize, depth: u32, sink: &mut dyn Sink, desc: Desc<'_>) -> Result<()> {
    let base = r.zigzag()?;
    let g = r.varint()?;
    if g == 0 {
        return Err(r.err("zero factor"));
    }
    let k = r.u8()?;
    if k > 56 {
        return Err(r.err("split low width > 56"));
    }
    let exc = r.count(n, "exception count exceeds n")?;
    let zlen = r.count(usize::MAX, "")?;
    let frame = r.bytes(zlen)?;
    let high = zstd_decompress(frame, n).map_err(|_| r.err("zstd payload of split stream invalid"))?;
    if high.len() != n {
        return Err(r.err("split stream high bytes count differs from n"));
    }
    let mut total = 0usize;
    for start in (0..n).step_by(BLOCK) {
        total += block_len((n - start).min(BLOCK), u32::from(k));
    }
    let data = r.bytes(total)?;
    if let Some(d) = desc {
        d.push_str(&format!("split(k={k}"));
        close_desc(d, g, exc);
    }
    let (pos, vals) = if exc > 0 { read_exceptions(r, n, exc, depth)? } else { (Vec::new(), Vec::new()) };
    let mut p = Patcher { pos: &pos, vals: &vals, k: 0 };
    with_scratch(|s| split_blocks(r, n, k, g, base, data, &high, &mut p, exc, sink, s))
}

/// Runs `f` with this thread's scratch blocks. They are reused across calls (zeroing 16 KiB
/// per chunk would cost as much as decoding it); a nested use would find them taken and
/// allocate, but decoders take them only after reading their nested streams, and sinks
/// decode nothing.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH.with(|c| c.take()).unwrap_or_else(|| Box::new(([0u64; BLOCK], [0i64; BLOCK])));
    let result = f(&mut scratch);
    SCRATCH.with(|c| c.set(Some(scratch)));
    result
}

/// Two blocks of scratch: the split decoder's low bits and values, the frame-of-reference
/// decoder's values.
type Scratch = ([u64; BLOCK], [i64; BLOCK]);

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
}

#[allow(clippy::too_many_arguments)]
fn split_blocks(
    r: &Reader<'_>,
    n: usize,
    k: u8,
    g: u64,
    base: i64,
    data: &[u8],
    high: &[u8],
    p: &mut Patcher<'_>,
    exc: usize,
    sink: &mut dyn Sink,
    scratch: &mut Scratch,
) -> Result<()> {
    let (low, tmp) = (&mut scratch.0, &mut scratch.1);
    let mut at = 0usize;
    for (start, hi) in (0..n).step_by(BLOCK).zip(high.chunks(BLOCK)) {
        let len = hi.len();
        let bytes = block_len(len, u32::from(k));
        let src = data.get(at..at + bytes).ok_or_else(|| r.err("bit-packed data malformed"))?;
        at += bytes;
        // No low bits (k = 0): the high byte is the whole offset.
        let low: &[u64] = if k == 0 {
            &[]
        } else if bitpack::unpack_block(src, u32::from(k), &mut low[..len], |x| x) {
            &low[..len]
        } else {
            return Err(r.err("bit-packed data malformed"));
        };
        let out = &mut tmp[..len];
        combine_split(out, hi, low, base, k, g);
        if exc > 0 {
            p.apply(start, out);
        }
        sink.put(out);
    }
    Ok(())
}

cpu_dispatch! {
/// Joins a split stream's high bytes and low bits: `out[i] = base + ((hi[i] << k) | low[i]) * g`
/// (wrapping; `low` empty when `k = 0`). Compiled for AVX2 where the CPU has it.
fn combine_split(out: &mut [i64], hi: &[u8], low: &[u64], base: i64, k: u8, g: u64) =
    combine_split_any, "avx2" if super::has_avx2
}

#[inline(always)]
fn combine_split_any(out: &mut [i64], hi: &[u8], low: &[u64], base: i64, k: u8, g: u64) {
    if low.is_empty() {
        for (o, &h) in out.iter_mut().zip(hi) {
            *o = base.wrapping_add(u64::from(h).wrapping_mul(g) as i64);
        }
        return;
    }
    let it = out.iter_mut().zip(hi).zip(low);
    if g == 1 {
        for ((o, &h), &l) in it {
            *o = base.wrapping_add(((u64::from(h) << k) | l) as i64);
        }
    } else {
        for ((o, &h), &l) in it {
            *o = base.wrapping_add(((u64::from(h) << k) | l).wrapping_mul(g) as i64);
        }
    }
}

/// Reads an exception list (`positions` and `values` streams of `exc` entries) for a chunk of
/// `n` values; positions must be strictly ascending and below `n`.
pub(crate) fn read_exceptions(
    r: &mut Reader<'_>,
    n: usize,
    exc: usize,
    depth: u32,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let mut pos = Vec::new();
    decode_vec(r, exc, depth + 1, &mut pos, None)?;
    let mut prev = -1i64;
    for &p in &pos {
        if p <= prev || p as u64 >= n as u64 {
            return Err(r.err("exception positions not ascending below n"));
        }
        prev = p;
    }
    let mut vals = Vec::new();
    decode_vec(r, exc, depth + 1, &mut vals, None)?;
    Ok((pos, vals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_values_grow_the_table_up_to_the_limit() {
        for (distinct, times) in [1usize, 31, 32, 33, 64, 65, 300, 1023, 1024, 1025, 3000]
            .into_iter()
            .flat_map(|d| [(d, 1), (d, 4)])
        {
            // each value once, or four times scattered; some negative
            let v: Vec<i64> =
                (0..distinct * times).map(|i| ((i * 7919) % distinct) as i64 * 37 - 5000).collect();
            let got = Distinct::count(v.iter().copied(), 1024);
            if distinct > 1024 {
                assert!(got.is_none(), "{distinct} values over a limit of 1024");
                continue;
            }
            let mut d = got.expect("within the limit");
            assert_eq!(d.len, distinct);
            let dict = d.sorted_codes();
            let mut want: Vec<i64> = v.clone();
            want.sort_unstable();
            want.dedup();
            assert_eq!(dict, want);
            for &x in &v {
                assert_eq!(dict[d.code(x) as usize], x);
            }
        }
    }
    use crate::codec::HINT_REUSE;

    fn rt(v: &[i64]) -> usize {
        let mut buf = Vec::new();
        encode_i64(v, &mut buf);
        let mut back = vec![7];
        decode_i64(&buf, v.len(), &mut back).unwrap();
        assert_eq!(back, v);
        buf.len()
    }

    #[test]
    fn prefix_sum_matches_one_chain() {
        for len in [0usize, 1, 2, 3, 4, 5, 63, 64, 1023, 1024] {
            let v: Vec<i64> =
                (0..len as i64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64)).collect();
            let mut got = v.clone();
            let last = prefix_sum(&mut got, 7);
            let mut acc = 7i64;
            let want: Vec<i64> = v
                .iter()
                .map(|&d| {
                    acc = acc.wrapping_add(d);
                    acc
                })
                .collect();
            assert_eq!(got, want, "len {len}");
            assert_eq!(last, acc, "len {len}");
        }
    }

    /// Chains of `k` nested delta layers over raw values decode as `k` running sums, layers
    /// paired or alone, at every length around a block, and refuse nesting past the limit
    /// or a layer with no values, the same as one layer at a time.
    #[test]
    fn nested_deltas_decode_as_running_sums() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        let max = MAX_DECODE_DEPTH as usize;
        for k in 1..=max + 2 {
            for n in (0..k + 3).chain([255, 256, 257, 1000]) {
                let firsts: Vec<i64> = (0..k)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng as i64 >> (rng % 60)
                    })
                    .collect();
                let raw: Vec<i64> = (0..n.saturating_sub(k) as i64).map(|i| (i * 37) % 11 - 5).collect();
                // where each stream's tag sits: the k delta layers, then the raw values
                let mut tags = Vec::new();
                let mut buf = Vec::new();
                for &f in &firsts {
                    tags.push(buf.len());
                    buf.push(S_DELTA);
                    crate::codec::put_zigzag(&mut buf, f);
                }
                tags.push(buf.len());
                buf.push(S_RAW);
                for v in &raw {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                let mut got = Vec::new();
                let mut desc = String::new();
                let res =
                    decode_stream(&mut Reader::new(&buf), n, 0, &mut VecSink(&mut got), Some(&mut desc));
                // Stream i sits at depth i and holds n - i values: the first one too deep, or a
                // delta layer with none, fails at its tag, exactly as one layer at a time does.
                let failure = (0..=k).find_map(|i| {
                    if i > max {
                        Some((tags[i], "integer streams nested too deeply"))
                    } else if i < k && n <= i {
                        Some((tags[i], "delta stream with no values"))
                    } else {
                        None
                    }
                });
                if let Some((offset, what)) = failure {
                    assert_eq!(res, Err(DecodeError { offset, what }), "k {k} n {n}");
                    continue;
                }
                res.unwrap();
                let mut want = raw.clone();
                for &f in firsts.iter().rev() {
                    let mut acc = f;
                    let mut layer = vec![f];
                    for d in want {
                        acc = acc.wrapping_add(d);
                        layer.push(acc);
                    }
                    want = layer;
                }
                assert_eq!(got, want, "k {k} n {n}");
                assert_eq!(desc, format!("{}raw", "delta+".repeat(k)));
            }
        }
    }

    /// Runs reach every kind of sink: expanded directly by the ones that map values one by
    /// one (after mapping each run's value once), as blocks by the running sums, and through
    /// a dictionary to whatever it feeds; a bad dictionary code still fails.
    #[test]
    fn runs_decode_through_every_sink() {
        fn raw(out: &mut Vec<u8>, v: &[i64]) {
            out.push(S_RAW);
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        fn rle(out: &mut Vec<u8>, vals: &[i64], lens: &[i64]) {
            out.push(S_RLE);
            crate::codec::put_varint(out, vals.len() as u64);
            raw(out, vals);
            raw(out, lens);
        }
        let vals: Vec<i64> = vec![3, -1, 0, 7, 2, 2, -9, 1];
        for lens in [vec![0i64; 8], vec![0, 15, 16, 17, 1, 300, 2, 31], vec![1000, 0, 0, 0, 0, 0, 0, 2000]] {
            let runs: Vec<i64> =
                vals.iter().zip(&lens).flat_map(|(&v, &l)| std::iter::repeat_n(v, l as usize + 1)).collect();
            let n = runs.len();
            let mut plain = Vec::new();
            rle(&mut plain, &vals, &lens);
            // straight into a vector, as values and as bits, after what is there
            let mut got = vec![42];
            decode_stream(&mut Reader::new(&plain), n, 0, &mut VecSink(&mut got), None).unwrap();
            assert_eq!(got[1..], runs[..]);
            let mut bits = vec![42u64];
            decode_stream(&mut Reader::new(&plain), n, 0, &mut BitsVecSink(&mut bits), None).unwrap();
            assert_eq!(bits[1..], runs.iter().map(|&v| v as u64).collect::<Vec<_>>()[..]);
            // under one and two running sums
            for depth in 1..=2usize {
                let mut buf = Vec::new();
                let firsts = [5i64, -4];
                for &f in &firsts[..depth] {
                    buf.push(S_DELTA);
                    crate::codec::put_zigzag(&mut buf, f);
                }
                let mut inner = Vec::new();
                rle(&mut inner, &vals, &lens);
                buf.extend_from_slice(&inner);
                let mut want = runs.clone();
                for &f in firsts[..depth].iter().rev() {
                    let mut acc = f;
                    want = std::iter::once(f)
                        .chain(want.iter().map(|&d| {
                            acc = acc.wrapping_add(d);
                            acc
                        }))
                        .collect();
                }
                let mut got = Vec::new();
                decode_stream(&mut Reader::new(&buf), n + depth, 0, &mut VecSink(&mut got), None).unwrap();
                assert_eq!(got, want, "depth {depth}");
            }
            // codes through a dictionary
            let dict = [100i64, -200, 300, 400, 500, 600, 700, 800];
            let codes: Vec<i64> = vals.iter().map(|&v| v.rem_euclid(8)).collect();
            let mut buf = vec![S_DICT];
            crate::codec::put_varint(&mut buf, dict.len() as u64);
            raw(&mut buf, &dict);
            rle(&mut buf, &codes, &lens);
            let mut got = Vec::new();
            decode_stream(&mut Reader::new(&buf), n, 0, &mut VecSink(&mut got), None).unwrap();
            let want: Vec<i64> = codes
                .iter()
                .zip(&lens)
                .flat_map(|(&c, &l)| std::iter::repeat_n(dict[c as usize], l as usize + 1))
                .collect();
            assert_eq!(got, want);
            let mut bad = vec![S_DICT];
            crate::codec::put_varint(&mut bad, 2);
            raw(&mut bad, &dict[..2]);
            rle(&mut bad, &codes, &lens);
            let res = decode_stream(&mut Reader::new(&bad), n, 0, &mut VecSink(&mut Vec::new()), None);
            assert!(res.is_err());
        }
    }

    #[test]
    fn exact_division() {
        for g in [1u64, 2, 3, 125, 1000, 1_000_000, 7 << 20, u64::MAX, 1 << 63] {
            let dv = Divisor::new(g);
            for k in [0u64, 1, 2, 17, 12345, u64::MAX / g].into_iter().filter(|&k| k <= u64::MAX / g) {
                let d = k.wrapping_mul(g);
                assert!(dv.divides(d), "{g} {k}");
                assert_eq!(dv.exact(d), k);
                if g > 1 && d != u64::MAX {
                    assert!(!dv.divides(d + 1), "{g} {k}");
                }
            }
        }
    }

    #[test]
    fn basics() {
        rt(&[]);
        rt(&[5]);
        rt(&[i64::MIN, i64::MAX, 0, -1, i64::MIN, i64::MAX]);
        assert!(rt(&[42; 1000]) < 8);
        let ramp: Vec<i64> = (0..4096).map(|i| i * 3 + 7).collect();
        assert!(rt(&ramp) < 16);
        let status: Vec<i64> = (0..4096).map(|i| (i / 500) % 4).collect();
        assert!(rt(&status) < 40);
        let gaps: Vec<i64> = (0..4096).map(|i| if i % 1000 == 999 { 1 << 40 } else { i % 7 }).collect();
        assert!(rt(&gaps) < 4096 * 3 / 8 + 64);
        let mult: Vec<i64> = (0..1000).map(|i| (i * 7919 % 1000) * 125).collect();
        assert!(rt(&mult) < 1000 * 10 / 8 + 16);
    }

    /// Inputs for the encoder's shortcuts: noise of several widths, sparse outliers far
    /// above the bulk, constant and near-constant blocks, extremes.
    fn shapes() -> Vec<Vec<u64>> {
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        let mut out = Vec::new();
        for n in [1usize, 3, 64, 1000, 1024, 4096] {
            for w in [0u32, 1, 3, 5, 9, 13, 20, 40, 63, 64] {
                let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
                let noise: Vec<u64> = (0..n).map(|_| next() & mask).collect();
                for every in [0usize, 2, 37, 300] {
                    for big in [20u32, 45, 64] {
                        let mut v = noise.clone();
                        if every > 0 {
                            for x in v.iter_mut().step_by(every) {
                                *x = if big == 64 {
                                    u64::MAX - (next() & 0xFF)
                                } else {
                                    next() & ((1u64 << big) - 1)
                                };
                            }
                        }
                        out.push(v);
                    }
                }
            }
            out.push(vec![0; n]);
            out.push(vec![u64::MAX; n]);
        }
        // a bulk of width wb and a share of values d bits wider: every boundary between the
        // one-pass and the exact paths
        for wb in [2u32, 6, 11, 30] {
            for d in 1..=14u32 {
                for every in [2usize, 10, 50, 500, 2000] {
                    let v: Vec<u64> = (0..4096)
                        .map(|i| {
                            let w = if i % every == 0 { wb + d } else { wb };
                            (next() & ((1u64 << w) - 1)) | (1u64 << (w - 1))
                        })
                        .collect();
                    out.push(v);
                }
            }
        }
        out
    }

    #[test]
    fn block_width_matches_the_full_histogram() {
        for blk in shapes() {
            for chunk in blk.chunks(BLOCK) {
                let m = chunk.iter().copied().min().unwrap();
                let hist = width_hist(chunk, m);
                let maxw = (0..=64).rev().find(|&b| hist[b] > 0).unwrap_or(0);
                for exc_cost in [2usize, 20, 77, 5000] {
                    assert_eq!(
                        choose_block_width(chunk, m, maxw, exc_cost),
                        choose_width(&hist, chunk.len(), maxw, exc_cost),
                        "n {} maxw {maxw} exc_cost {exc_cost}",
                        chunk.len()
                    );
                }
            }
        }
    }

    #[test]
    fn high_histogram_matches_the_exact_passes() {
        for q in shapes() {
            let n = q.len();
            let maxw = bit_width(q.iter().copied().max().unwrap_or(0)) as usize;
            // reference: exact width histogram, then a histogram of x >> kmin
            let hist = width_hist(&q, 0);
            let mut seen = 0;
            let w999 = (0..=64).find(|&b| {
                seen += hist[b];
                seen * 1000 >= n * 999
            });
            let want = w999.filter(|&w| w >= 4).map(|w| {
                let kmin = w.saturating_sub(8);
                let mut level = vec![0u32; 4096];
                let mut far = 0;
                for &x in &q {
                    match level.get_mut((x >> kmin) as usize) {
                        Some(c) => *c += 1,
                        None => far += 1,
                    }
                }
                (kmin, level, far)
            });
            assert_eq!(high_histogram(&q, maxw), want, "n {n} maxw {maxw}");
        }
    }

    #[test]
    fn delta_is_tried_on_walks_not_on_noise() {
        let mut r = 12345u64;
        let mut noise = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            (r % 1000) as i64
        };
        let white: Vec<i64> = (0..4096).map(|_| noise()).collect();
        let mut x = 0i64;
        let walk: Vec<i64> = (0..4096)
            .map(|_| {
                x += noise() - 500;
                x
            })
            .collect();
        let ramp: Vec<i64> = (0..4096).map(|i| i * 7).collect();
        assert!(!delta_may_pay(&white));
        assert!(delta_may_pay(&walk));
        assert!(delta_may_pay(&ramp));
        // a walk still encodes as a delta chain, noise as plain values
        let mut buf = Vec::new();
        encode_i64(&walk, &mut buf);
        assert!(super::super::describe(&buf).contains("delta"), "{}", super::super::describe(&buf));
        buf.clear();
        encode_i64(&white, &mut buf);
        assert!(!super::super::describe(&buf).contains("delta"), "{}", super::super::describe(&buf));
    }

    #[test]
    fn planned_streams_decode_whatever_the_plan() {
        use Plan::*;
        let b = Box::new;
        let plans = [
            Const,
            Raw,
            For,
            Split,
            Delta(b(For)),
            Delta(b(Delta(b(Split)))),
            Delta(b(Delta(b(Delta(b(For)))))),
            Rle(b(For), b(For)),
            Rle(b(Const), b(Rle(b(For), b(Const)))),
            Dict(b(For), b(Delta(b(For)))),
            Dict(b(Raw), b(Split)),
        ];
        let mut series: Vec<Vec<i64>> =
            shapes().into_iter().map(|v| v.into_iter().map(|x| x as i64).collect()).collect();
        series.push(vec![7; 3000]);
        series.push((0..3000).map(|i| i / 100).collect());
        series.push((0..3000).map(|i| [3, -9, 1 << 40][i % 3]).collect());
        for v in &series {
            for plan in &plans {
                for depth in [0, 2] {
                    let mut buf = Vec::new();
                    encode_planned(v, plan, depth, &mut buf);
                    let mut r = Reader::new(&buf);
                    let mut back = Vec::new();
                    decode_vec(&mut r, v.len(), depth, &mut back, None).unwrap();
                    assert_eq!(&back, v, "{plan:?} at depth {depth}");
                    assert!(r.finish().is_ok(), "{plan:?} left bytes");
                }
            }
        }
    }

    #[test]
    fn a_series_repeats_its_plan_and_searches_again_when_it_stops_fitting() {
        // A walk: delta wins, then the same plan serves the following chunks.
        let mut x = 0i64;
        let mut r = 1u64;
        let walk: Vec<i64> = (0..8 * 4096)
            .map(|_| {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                x += (r >> 61) as i64 - 3;
                x
            })
            .collect();
        let mut hint = None;
        let (mut planned, mut searched) = (0, 0);
        for c in walk.chunks(4096) {
            let mut buf = Vec::new();
            encode_i64_hinted(c, &mut hint, &mut buf);
            let mut alone = Vec::new();
            encode_i64(c, &mut alone);
            let h = hint.as_ref().unwrap();
            if h.left == HINT_REUSE {
                searched += 1;
                assert_eq!(buf, alone);
            } else {
                planned += 1;
                assert!(
                    buf.len() as f64 <= alone.len() as f64 * 1.03 + 16.0,
                    "{} vs {}",
                    buf.len(),
                    alone.len()
                );
            }
            let mut back = Vec::new();
            decode_i64(&buf, c.len(), &mut back).unwrap();
            assert_eq!(back, c);
        }
        assert_eq!((searched, planned), (1, 7));
        // Wide noise does not fit the walk's plan (its deltas are twice as wide as its values'
        // spread): searched again, and the search picks no delta.
        let noise: Vec<i64> = (0..4096)
            .map(|_| {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (r >> 24) as i64
            })
            .collect();
        let mut buf = Vec::new();
        encode_i64_hinted(&noise, &mut hint, &mut buf);
        let mut alone = Vec::new();
        encode_i64(&noise, &mut alone);
        assert_eq!(buf, alone);
        let h = hint.as_ref().unwrap();
        assert_eq!(h.left, HINT_REUSE);
        assert!(!matches!(h.plan, Plan::Delta(_)), "{:?}", h.plan);
        // A short searched chunk leaves no hint: the next one is searched too.
        let mut hint = None;
        encode_i64_hinted(&walk[..100], &mut hint, &mut buf);
        assert!(hint.is_none());
        buf.clear();
        encode_i64_hinted(&walk[..4096], &mut hint, &mut buf);
        let mut alone = Vec::new();
        encode_i64(&walk[..4096], &mut alone);
        assert_eq!(buf, alone);
        assert_eq!(hint.as_ref().unwrap().left, HINT_REUSE);
    }

    #[test]
    fn blocks_expand_runs_of_every_length() {
        let mut r = 0x2545_F491_4F6C_DD1Du64;
        let mut want = Vec::new();
        let mut got = Vec::new();
        let mut sink = VecSink(&mut got);
        let mut b = Blocks::new(&mut sink);
        for i in 0..3000i64 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let len = match r % 10 {
                0 => (r >> 8) as usize % 700,
                1..=3 => 16 + (r >> 8) as usize % 3,
                _ => (r >> 8) as usize % 16,
            };
            b.run(i, len);
            want.extend(std::iter::repeat_n(i, len));
        }
        b.flush();
        assert_eq!(got, want);
    }

    #[test]
    fn min_max_and_runs() {
        for q in shapes() {
            let v: Vec<i64> = q.iter().map(|&x| x as i64).collect();
            let want =
                (v.iter().copied().min().unwrap_or(i64::MAX), v.iter().copied().max().unwrap_or(i64::MIN));
            assert_eq!(min_max(&v), want);
            assert_eq!(count_runs(&v), 1 + v.windows(2).filter(|w| w[0] != w[1]).count());
        }
        assert_eq!(min_max(&[]), (i64::MAX, i64::MIN));
        assert_eq!(count_runs(&[]), 1);
        assert_eq!(count_runs(&[3, 3, 4, 3]), 3);
    }
}
