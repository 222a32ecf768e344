//! Chunk codecs for gemba: timestamps (`i64`), floats (`f64`), integers (`i64`) and booleans.
//!
//! Pure computation, no I/O. Every chunk is self-describing:
//!
//! ```text
//! chunk := tag:u8  n:varint  body          (plain chunk; tag in 0x10..=0x4F)
//!        | 0x7F  raw_len:varint  zstd-frame   (zstd stage around one plain chunk)
//! ```
//!
//! `n` repeats the value count the caller knows from the file index (a mismatch is an error).
//! Bodies contain *integer streams* (`int::encode_stream`), which are themselves tagged
//! (`0x01..=0x07`) and nest (delta of delta, RLE values, dictionary codes, exception lists).
//! The full byte layout is in `RESULTS.md` (to become FORMAT.md).
//!
//! Encoders choose per chunk: they try the candidates that fit the data (frame of reference,
//! delta, run-length, dictionary, split; decimal or binary scale for floats) and keep the
//! smallest, then try zstd on the result.
//!
//! All decoders are total: any input bytes give either `Ok` with exactly `n` values or a
//! [`DecodeError`]; they never panic and allocate `O(n)` memory at most (bounded nesting depth,
//! every count checked against `n` before it is used, bounded zstd output).

#![deny(missing_docs)]

pub mod bitpack;
pub mod boolean;
pub mod float;
pub mod int;
pub mod ts;

pub use boolean::{decode_bool, encode_bool};
pub(crate) use boolean::{decode_bool_bitmap, decode_bool_bits_append};
pub use float::{decode_f64, encode_f64};
pub use int::{decode_i64, encode_i64};
pub use ts::{decode_timestamps, encode_timestamps};

pub(crate) use float::{decode_f64_bits_append, encode_f64_hinted};
pub(crate) use int::{decode_i64_bits_append, encode_i64_hinted};

/// True when the CPU has AVX2 (std detects it once and caches the answer). The hot decode
/// loops have a copy compiled for AVX2, chosen at run time, so a crate built for the
/// x86-64 baseline still decodes with 256-bit vectors where the CPU allows.
#[inline(always)]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when the CPU has AVX2 and FMA (decimal scaling's division-free quotient).
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2() && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The largest number of rows of a block (and so the largest `n` of a chunk).
pub const BLOCK_ROWS_MAX: usize = 65_536;

/// Where and why a chunk failed to decode. `offset` is the byte offset inside the chunk
/// (inside the decompressed chunk for a chunk that went through the zstd stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset at which the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt chunk at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for DecodeError {}

/// Result type of the decoders.
pub type Result<T> = std::result::Result<T, DecodeError>;

// ---- chunk tags (first byte of a chunk) ----
/// Integer chunk: `n`, one integer stream.
pub const TAG_I64: u8 = 0x10;
/// Float chunk, decimal ALP: `n`, `e:u8`, exceptions count, digits stream, exceptions.
pub const TAG_F_ALP: u8 = 0x20;
/// Float chunk, binary scale: `n`, `s:u8`, exceptions count, digits stream, exceptions.
pub const TAG_F_BIN: u8 = 0x21;
/// Float chunk, the IEEE bit patterns as an integer stream.
pub const TAG_F_BITS: u8 = 0x23;
/// Timestamp chunk with a constant step: `n`, start, step.
pub const TAG_TS_CONST: u8 = 0x30;
/// Timestamp chunk: `n`, one integer stream.
pub const TAG_TS_INT: u8 = 0x31;
/// Boolean chunk, all values equal: `n`, value byte.
pub const TAG_B_CONST: u8 = 0x40;
/// Boolean chunk, bitmap: `n`, `ceil(n/8)` bytes.
pub const TAG_B_BITMAP: u8 = 0x41;
/// Boolean chunk, run lengths: `n`, first value, run count, stream of run lengths - 1.
pub const TAG_B_RLE: u8 = 0x42;
/// zstd stage around a plain chunk: `raw_len`, zstd frame.
pub const TAG_ZSTD: u8 = 0x7F;

/// The zstd stage is tried on plain chunks of at least this many bytes.
pub const ZSTD_MIN_INPUT: usize = 64;
/// zstd compression level of the final stage.
pub const ZSTD_LEVEL: i32 = 3;

/// What the last full search chose for a series of chunks (one field of one machine, block
/// after block), so that the next chunks repeat it instead of trying every candidate again.
/// A planned chunk is kept when it is at most 3% larger per value than the searched one was;
/// otherwise, and every [`HINT_REUSE`] + 1 chunks anyway, the chunk is searched and the hint
/// renewed. Hints change how much work the encoder does, never what a decoder reads.
#[derive(Debug, Clone)]
pub(crate) struct Hint {
    /// The searched chunk's tag and parameter byte (a float chunk's scale).
    pub(crate) head: (u8, u8),
    /// The shape of its top stream.
    pub(crate) plan: int::Plan,
    /// Its bytes per value.
    rate: f64,
    /// Planned chunks left before the next search.
    pub(crate) left: u32,
}

/// Chunks encoded from one hint before the next search.
pub(crate) const HINT_REUSE: u32 = 8;

/// Fewest values of a searched chunk that leaves a hint: a short chunk's bytes per value are
/// mostly its headers, a baseline loose enough to let poor plans through.
pub(crate) const HINT_MIN_VALUES: usize = 256;

impl Hint {
    /// The hint of a searched chunk of `len` bytes (as written) and `n` values; `None` for a
    /// chunk under [`HINT_MIN_VALUES`] values.
    pub(crate) fn new(head: (u8, u8), plan: int::Plan, len: usize, n: usize) -> Option<Hint> {
        (n >= HINT_MIN_VALUES).then(|| Hint { head, plan, rate: len as f64 / n as f64, left: HINT_REUSE })
    }

    /// Whether a planned chunk of `len` bytes for `n` values is close enough to the search.
    pub(crate) fn accepts(&self, len: usize, n: usize) -> bool {
        len as f64 <= self.rate * n as f64 * 1.03 + 16.0
    }
}

/// Upper bound of the decompressed size of a zstd-staged chunk of `n` values: `64 + 9 n` bytes.
/// The encoder always keeps a candidate no larger than the raw one (`<= 2 + 10 + 8 n` bytes), so
/// every chunk it writes fits; a decoder rejects a larger declared size before allocating.
pub fn zstd_raw_bound(n: usize) -> usize {
    n.saturating_mul(9).saturating_add(64)
}

// ---- byte reader with checked access ----

/// A cursor over chunk bytes; every read is checked and reports the offset on failure.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn err(&self, what: &'static str) -> DecodeError {
        DecodeError { offset: self.pos, what }
    }

    /// The next byte, not consumed.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.err("truncated chunk")),
        }
    }

    /// LEB128 unsigned varint, at most 10 bytes, no overflow.
    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// A varint that must be `<= max`, as a `usize`.
    pub(crate) fn count(&mut self, max: usize, what: &'static str) -> Result<usize> {
        let start = self.pos;
        let v = self.varint()?;
        if v > max as u64 {
            return Err(DecodeError { offset: start, what });
        }
        Ok(v as usize)
    }

    /// Zig-zag varint (signed).
    pub(crate) fn zigzag(&mut self) -> Result<i64> {
        Ok(unzigzag(self.varint()?))
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(len).ok_or_else(|| self.err("length overflow"))?;
        match self.buf.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err("truncated chunk")),
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos == self.buf.len() { Ok(()) } else { Err(self.err("trailing bytes after chunk")) }
    }
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// Size in bytes of the varint encoding of `v`.
pub(crate) fn varint_len(v: u64) -> usize {
    (bitpack::bit_width(v).max(1) as usize).div_ceil(7)
}

/// Description sink used by [`describe`]: decoders append the names of the codecs they meet.
pub(crate) type Desc<'a> = Option<&'a mut String>;

pub(crate) fn note(desc: &mut Desc<'_>, s: &str) {
    if let Some(d) = desc.as_deref_mut() {
        d.push_str(s);
    }
}

// ---- zstd, with reusable contexts ----
//
// A zstd context costs a few hundred KiB of tables to create and initialise, more than
// compressing a small chunk. Each thread keeps one compression and one decompression context;
// when a thread ends (flush and compaction run their encoders on short-lived scoped threads)
// its contexts go to a small process-wide pool, where the next new thread finds them.

/// Most idle contexts of each kind the pool keeps.
const ZSTD_POOL_MAX: usize = 8;

static ZSTD_C_POOL: parking_lot::Mutex<Vec<zstd::bulk::Compressor<'static>>> =
    parking_lot::Mutex::new(Vec::new());
static ZSTD_D_POOL: parking_lot::Mutex<Vec<zstd::bulk::Decompressor<'static>>> =
    parking_lot::Mutex::new(Vec::new());

/// A thread's context; handed to the pool when the thread ends.
struct Pooled<T: 'static> {
    ctx: Option<T>,
    pool: &'static parking_lot::Mutex<Vec<T>>,
}

impl<T: 'static> Pooled<T> {
    /// This thread's context: its own, one from the pool, or a new one from `make`.
    fn get(&mut self, make: impl FnOnce() -> Option<T>) -> Option<&mut T> {
        if self.ctx.is_none() {
            // a new context is built outside the pool's lock
            let pooled = self.pool.lock().pop();
            self.ctx = pooled.or_else(make);
        }
        self.ctx.as_mut()
    }
}

impl<T: 'static> Drop for Pooled<T> {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            let mut pool = self.pool.lock();
            if pool.len() < ZSTD_POOL_MAX {
                pool.push(ctx);
            }
        }
    }
}

thread_local! {
    static ZSTD_C: std::cell::RefCell<Pooled<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(Pooled { ctx: None, pool: &ZSTD_C_POOL }) };
    static ZSTD_D: std::cell::RefCell<Pooled<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(Pooled { ctx: None, pool: &ZSTD_D_POOL }) };
}

/// zstd-compresses `data` at `level` (reusing this thread's context).
pub(crate) fn zstd_compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    zstd_compress_min_match(data, level, 0)
}

/// zstd-compresses `data` at `level` with matches no shorter than `min_match` bytes (3..=7;
/// 0 for the level's default), reusing this thread's context, whose default is restored
/// afterwards.
pub(crate) fn zstd_compress_min_match(data: &[u8], level: i32, min_match: u32) -> Option<Vec<u8>> {
    use zstd::zstd_safe::CParameter::MinMatch;
    let reused = ZSTD_C
        .try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            let comp = c.get(|| zstd::bulk::Compressor::new(level).ok())?;
            comp.set_compression_level(level).ok()?;
            if min_match == 0 {
                return comp.compress(data).ok();
            }
            comp.set_parameter(MinMatch(min_match)).ok()?;
            let z = comp.compress(data).ok();
            // 0 is "the level's default": the next user of this context gets a plain level;
            // a context that cannot be reset is dropped rather than handed on
            if comp.set_parameter(MinMatch(0)).is_err() {
                c.ctx = None;
            }
            z
        })
        .ok()
        .flatten();
    reused.or_else(|| {
        let mut comp = zstd::bulk::Compressor::new(level).ok()?;
        comp.set_parameter(MinMatch(min_match)).ok()?;
        comp.compress(data).ok()
    })
}

/// Decompresses one zstd payload that must decompress to at most `capacity` bytes (never
/// allocating more than that for the output).
pub(crate) fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_D
        .try_with(|d| {
            let mut d = d.try_borrow_mut().ok()?;
            Some(d.get(|| zstd::bulk::Decompressor::new().ok())?.decompress(data, capacity))
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| zstd::bulk::decompress(data, capacity))
}

// ---- the final zstd stage ----

/// Appends `plain` (a complete plain chunk of `n` values) to `out`, through zstd when that
/// saves >= 10% (and the plain size is within the bound a decoder accepts).
pub(crate) fn finish_chunk(plain: &[u8], n: usize, out: &mut Vec<u8>) {
    if plain.len() >= ZSTD_MIN_INPUT
        && plain.len() <= zstd_raw_bound(n)
        && let Some(z) = zstd_compress(plain, ZSTD_LEVEL)
    {
        let total = 1 + varint_len(plain.len() as u64) + z.len();
        if total * 10 <= plain.len() * 9 {
            out.push(TAG_ZSTD);
            put_varint(out, plain.len() as u64);
            out.extend_from_slice(&z);
            return;
        }
    }
    out.extend_from_slice(plain);
}

/// The plain chunk inside `chunk`: `chunk` itself, or its zstd payload decompressed (bounded by
/// [`zstd_raw_bound`]`(n)`).
pub(crate) fn unwrap_chunk(chunk: &[u8], n: usize) -> Result<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    let mut r = Reader::new(chunk);
    if r.u8()? != TAG_ZSTD {
        return Ok(Cow::Borrowed(chunk));
    }
    let raw_len = r.count(zstd_raw_bound(n), "zstd raw size exceeds the bound for n")?;
    let payload = r.rest();
    let raw = zstd_decompress(payload, raw_len)
        .map_err(|_| DecodeError { offset: 1 + varint_len(raw_len as u64), what: "zstd payload invalid" })?;
    if raw.len() != raw_len {
        return Err(DecodeError { offset: 1, what: "zstd raw size mismatch" });
    }
    if raw.first() == Some(&TAG_ZSTD) {
        return Err(DecodeError { offset: 0, what: "nested zstd stage" });
    }
    Ok(Cow::Owned(raw))
}

/// Reads the header of a plain chunk: its tag and `n` (which must equal `n`).
pub(crate) fn read_header(r: &mut Reader<'_>, n: usize) -> Result<u8> {
    let tag = r.u8()?;
    let start = r.pos;
    let m = r.varint()?;
    if m != n as u64 {
        return Err(DecodeError { offset: start, what: "value count differs from the index" });
    }
    Ok(tag)
}

/// Human-readable name of the codec chain used by a chunk, e.g.
/// `"alp(e=2)+delta+for(w=7)+exc(3)"`, `"ts-const"`, `"zstd(812>390)+bits+raw"`.
/// Used by `gemba inspect`. Never panics; returns `"invalid"` on garbage.
pub fn describe(chunk: &[u8]) -> String {
    describe_inner(chunk).unwrap_or_else(|| "invalid".to_string())
}

fn describe_inner(chunk: &[u8]) -> Option<String> {
    let mut prefix = String::new();
    // Find n from the (possibly compressed) header.
    let mut r = Reader::new(chunk);
    let first = r.u8().ok()?;
    let plain: Vec<u8> = if first == TAG_ZSTD {
        let raw_len = r.count(zstd_raw_bound(BLOCK_ROWS_MAX), "").ok()?;
        let raw = zstd_decompress(r.rest(), raw_len).ok()?;
        if raw.len() != raw_len {
            return None;
        }
        prefix = format!("zstd({}>{})+", raw_len, chunk.len());
        raw
    } else {
        chunk.to_vec()
    };
    let mut r = Reader::new(&plain);
    let tag = r.u8().ok()?;
    let n = r.count(BLOCK_ROWS_MAX, "").ok()?;
    let mut s = prefix;
    let ok = match tag {
        TAG_I64 => {
            let mut v = Vec::new();
            decode_i64_desc(&plain, n, &mut v, Some(&mut s)).is_ok()
        }
        TAG_TS_CONST | TAG_TS_INT => {
            let mut v = Vec::new();
            ts::decode_desc(&plain, n, &mut v, Some(&mut s)).is_ok()
        }
        TAG_F_ALP | TAG_F_BIN | TAG_F_BITS => {
            let mut v = Vec::new();
            float::decode_desc(&plain, n, &mut v, Some(&mut s)).is_ok()
        }
        TAG_B_CONST | TAG_B_BITMAP | TAG_B_RLE => {
            let mut v = Vec::new();
            boolean::decode_desc(&plain, n, &mut v, Some(&mut s)).is_ok()
        }
        _ => false,
    };
    ok.then_some(s)
}

fn decode_i64_desc(chunk: &[u8], n: usize, out: &mut Vec<i64>, desc: Desc<'_>) -> Result<()> {
    int::decode_chunk(chunk, n, out, desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut r = Reader::new(&b);
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        // 11-byte varint and overflow in the 10th byte are errors
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        let mut b = vec![0xff; 9];
        b.push(0x02);
        assert!(Reader::new(&b).varint().is_err());
    }

    #[test]
    fn describe_garbage() {
        assert_eq!(describe(&[]), "invalid");
        assert_eq!(describe(&[0xEE, 1, 2]), "invalid");
        assert_eq!(describe(&[TAG_ZSTD, 5, 1, 2, 3]), "invalid");
    }

    #[test]
    fn min_match_applies_to_one_call_only() {
        // 4-byte patterns that recur with other bytes between: matches level 1 takes by
        // default and a 7-byte minimum refuses
        let mut data = Vec::new();
        let mut x = 12345u32;
        for _ in 0..4096 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let k = (x >> 16) as u8 % 8;
            data.extend_from_slice(&[k, 1, 2, 3]);
        }
        let plain = zstd_compress(&data, 1).unwrap();
        let long = zstd_compress_min_match(&data, 1, 7).unwrap();
        assert_ne!(plain, long, "the minimum changed nothing");
        assert_eq!(zstd_decompress(&long, data.len()).unwrap(), data);
        // the thread's context is back at the level's defaults
        assert_eq!(zstd_compress(&data, 1).unwrap(), plain);
    }
}
