//! Boolean chunks: constant, bitmap (1 bit each, LSB first), or alternating run lengths.

use super::int::{decode_vec, encode_stream};
use super::{
    DecodeError, Desc, Reader, Result, TAG_B_BITMAP, TAG_B_CONST, TAG_B_RLE, finish_chunk, note, put_varint,
    read_header, unwrap_chunk,
};
use crate::model::Bitmap;

/// Encodes booleans as one chunk appended to `out`.
pub fn encode_bool(values: &[bool], out: &mut Vec<u8>) {
    let n = values.len();
    let mut plain = Vec::with_capacity(16 + n / 8);
    let first = values.first().copied().unwrap_or(false);
    let mut lens: Vec<i64> = Vec::new();
    let mut start = 0usize;
    for i in 1..=n {
        if i == n || values[i] != values[start] {
            lens.push((i - start - 1) as i64);
            start = i;
        }
    }
    if lens.len() <= 1 {
        plain.push(TAG_B_CONST);
        put_varint(&mut plain, n as u64);
        plain.push(u8::from(first));
    } else {
        let mut rle = vec![TAG_B_RLE];
        put_varint(&mut rle, n as u64);
        rle.push(u8::from(first));
        put_varint(&mut rle, lens.len() as u64);
        // run lengths are only worth it when runs are long; skip the work otherwise
        if lens.len() * 2 < n / 8 + 8 {
            encode_stream(&lens, 1, &mut rle);
        }
        let bitmap_len = 1 + super::varint_len(n as u64) + n.div_ceil(8);
        if lens.len() * 2 < n / 8 + 8 && rle.len() < bitmap_len {
            plain = rle;
        } else {
            plain.push(TAG_B_BITMAP);
            put_varint(&mut plain, n as u64);
            for group in values.chunks(8) {
                let mut b = 0u8;
                for (i, &v) in group.iter().enumerate() {
                    b |= u8::from(v) << i;
                }
                plain.push(b);
            }
        }
    }
    finish_chunk(&plain, n, out);
}

/// Decodes a boolean chunk of `n` values into `out` (cleared first).
pub fn decode_bool(chunk: &[u8], n: usize, out: &mut Vec<bool>) -> Result<()> {
    out.clear();
    let res = unwrap_chunk(chunk, n).and_then(|plain| decode_desc(&plain, n, out, None));
    if res.is_err() {
        out.clear();
    }
    res
}

/// Decodes a boolean chunk of `n` values into a bitmap: a validity chunk goes straight to the
/// bitmap a read keeps, without a byte per row in between.
pub(crate) fn decode_bool_bitmap(chunk: &[u8], n: usize) -> Result<Bitmap> {
    let mut out = Bitmap::new();
    unwrap_chunk(chunk, n).and_then(|plain| decode_desc(&plain, n, &mut out, None))?;
    Ok(out)
}

/// Decodes a boolean chunk of `n` values and appends them to `out` as bit patterns (0 or 1;
/// unchanged on error): the segment reader keeps values as bits, so booleans decode straight
/// into its columns.
pub(crate) fn decode_bool_bits_append(chunk: &[u8], n: usize, out: &mut Vec<u64>) -> Result<()> {
    let at = out.len();
    let res =
        unwrap_chunk(chunk, n).and_then(|plain| decode_desc(&plain, n, &mut BitsAppend { out, at }, None));
    if res.is_err() {
        out.truncate(at);
    }
    res
}

/// Booleans appended as 0 / 1 words after the first `at` of `out`.
struct BitsAppend<'a> {
    out: &'a mut Vec<u64>,
    at: usize,
}

impl BoolSink for BitsAppend<'_> {
    fn clear(&mut self) {
        self.out.truncate(self.at);
    }
    fn len(&self) -> usize {
        self.out.len() - self.at
    }
    fn fill(&mut self, v: bool, n: usize) {
        self.out.resize(self.out.len() + n, u64::from(v));
    }
    fn bits(&mut self, bits: u8, take: usize) {
        self.out.extend((0..take).map(|k| u64::from((bits >> k) & 1)));
    }
}

/// Where decoded booleans go: bytes (`Vec<bool>`) or bits ([`Bitmap`]).
pub(crate) trait BoolSink {
    fn clear(&mut self);
    fn len(&self) -> usize;
    /// Appends `n` copies of `v`.
    fn fill(&mut self, v: bool, n: usize);
    /// Appends the low `take` (at most 8) bits of `bits`, lowest first.
    fn bits(&mut self, bits: u8, take: usize);
}

impl BoolSink for Vec<bool> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn fill(&mut self, v: bool, n: usize) {
        self.resize(Vec::len(self) + n, v);
    }
    fn bits(&mut self, bits: u8, take: usize) {
        self.extend((0..take).map(|k| (bits >> k) & 1 != 0));
    }
}

impl BoolSink for Bitmap {
    fn clear(&mut self) {
        *self = Bitmap::new();
    }
    fn len(&self) -> usize {
        Bitmap::len(self)
    }
    fn fill(&mut self, v: bool, n: usize) {
        self.extend_const(n, v);
    }
    fn bits(&mut self, bits: u8, take: usize) {
        self.push_bits(bits, take);
    }
}

pub(crate) fn decode_desc(chunk: &[u8], n: usize, out: &mut impl BoolSink, mut desc: Desc<'_>) -> Result<()> {
    out.clear();
    let mut r = Reader::new(chunk);
    match read_header(&mut r, n)? {
        TAG_B_CONST => {
            let v = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(r.err("boolean byte not 0 or 1")),
            };
            note(&mut desc, "bool-const");
            out.fill(v, n);
        }
        TAG_B_BITMAP => {
            let bytes = r.bytes(n.div_ceil(8))?;
            note(&mut desc, "bitmap");
            for (i, &b) in bytes.iter().enumerate() {
                let take = (n - i * 8).min(8);
                if take < 8 && (b >> take) != 0 {
                    return Err(r.err("bitmap padding bits set"));
                }
                out.bits(b, take);
            }
        }
        TAG_B_RLE => {
            let mut v = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(r.err("boolean byte not 0 or 1")),
            };
            let runs = r.count(n, "run count exceeds n")?;
            if runs == 0 && n > 0 {
                return Err(r.err("no runs"));
            }
            if let Some(d) = desc.as_deref_mut() {
                d.push_str(&format!("bool-rle(runs={runs})+"));
            }
            let mut lens = Vec::new();
            decode_vec(&mut r, runs, 1, &mut lens, desc)?;
            for &l in &lens {
                let remaining = n - out.len();
                if l < 0 || l as u64 >= remaining as u64 {
                    return Err(r.err("run lengths exceed n"));
                }
                out.fill(v, l as usize + 1);
                v = !v;
            }
            if out.len() != n {
                return Err(r.err("run lengths do not add up to n"));
            }
        }
        _ => return Err(DecodeError { offset: 0, what: "not a boolean chunk" }),
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(v: &[bool]) -> usize {
        let mut buf = Vec::new();
        encode_bool(v, &mut buf);
        let mut back = Vec::new();
        decode_bool(&buf, v.len(), &mut back).unwrap();
        assert_eq!(back, v);
        // The bitmap decoder agrees bit for bit.
        assert_eq!(decode_bool_bitmap(&buf, v.len()).unwrap(), Bitmap::from_bools(v));
        buf.len()
    }

    #[test]
    fn shapes() {
        rt(&[]);
        rt(&[true]);
        assert!(rt(&[true; 65_536]) <= 5);
        let runs: Vec<bool> = (0..65_536).map(|i| (i / 3000) % 2 == 0).collect();
        assert!(rt(&runs) < 40);
        let noise: Vec<bool> = (0..1000u32).map(|i| i.wrapping_mul(2_654_435_761) >> 31 == 1).collect();
        assert!(rt(&noise) <= 1000 / 8 + 4);
    }
}
