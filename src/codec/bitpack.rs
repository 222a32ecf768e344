//! Bit-packing of `w`-bit unsigned integers (`0 <= w <= 64`).
//!
//! Values are packed in *blocks* of up to [`BLOCK`] = 1024 values.
//!
//! * A full block (1024 values) uses the **interleaved layout**: 16 lanes, lane `l` (0..16)
//!   holding the 64 values `v[row * 16 + l]` (row 0..64) packed into `w` words as one group of 64
//!   (see below); word `j` of lane `l` is stored as little-endian `u64` number `j * 16 + l` of the
//!   block, so a block takes exactly `128 * w` bytes. All lanes shift by the same amounts, so
//!   unpacking is a loop over 16 independent lanes that the compiler vectorises (SSE2 and up).
//! * A partial block (the last block of a stream, `r < 1024` values) uses the **group layout**:
//!   groups of 64 values, each group of `w`-bit values in `w` little-endian `u64` words; value `i`
//!   of a group starts at bit `i * w` of the group's bit string (bit `b` of the string is bit
//!   `b % 64` of word `b / 64`; a value crossing a word boundary continues in the low bits of the
//!   next word). The last group, holding `r % 64` values, is stored truncated to
//!   `ceil((r % 64) * w / 8)` bytes (as if zero-padded, then cut after its last used byte).
//!
//! Unpacking is generic over `const W: usize` (one routine per width, dispatched by `match`).

/// Number of bytes that `n` packed `w`-bit values occupy.
#[inline]
pub fn packed_len(n: usize, w: u32) -> usize {
    let w = w as usize;
    (n / 64) * w * 8 + ((n % 64) * w).div_ceil(8)
}

/// Number of significant bits of `v` (0 for 0).
#[inline]
pub fn bit_width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

#[inline(always)]
fn mask(w: u32) -> u64 {
    if w >= 64 { u64::MAX } else { (1u64 << w) - 1 }
}

/// Appends `values` packed with width `w` to `out`. Bits of a value above `w` are ignored.
pub fn pack(values: &[u64], w: u32, out: &mut Vec<u8>) {
    debug_assert!(w <= 64);
    if w == 0 || values.is_empty() {
        return;
    }
    let m = mask(w);
    let wu = w as usize;
    let mut words = [0u64; 64];
    for group in values.chunks(64) {
        words[..wu].fill(0);
        let mut bit = 0usize;
        for &v in group {
            let v = v & m;
            let wi = bit / 64;
            let sh = bit % 64;
            words[wi] |= v << sh;
            if sh + wu > 64 {
                words[wi + 1] |= v >> (64 - sh);
            }
            bit += wu;
        }
        let nbytes = if group.len() == 64 { wu * 8 } else { (group.len() * wu).div_ceil(8) };
        let start = out.len();
        for word in &words[..wu] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.truncate(start + nbytes);
    }
}

#[inline(always)]
fn le_word(src: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&src[i * 8..i * 8 + 8]);
    u64::from_le_bytes(a)
}

macro_rules! seq64 {
    ($m:ident) => {
        $m!(0);
        $m!(1);
        $m!(2);
        $m!(3);
        $m!(4);
        $m!(5);
        $m!(6);
        $m!(7);
        $m!(8);
        $m!(9);
        $m!(10);
        $m!(11);
        $m!(12);
        $m!(13);
        $m!(14);
        $m!(15);
        $m!(16);
        $m!(17);
        $m!(18);
        $m!(19);
        $m!(20);
        $m!(21);
        $m!(22);
        $m!(23);
        $m!(24);
        $m!(25);
        $m!(26);
        $m!(27);
        $m!(28);
        $m!(29);
        $m!(30);
        $m!(31);
        $m!(32);
        $m!(33);
        $m!(34);
        $m!(35);
        $m!(36);
        $m!(37);
        $m!(38);
        $m!(39);
        $m!(40);
        $m!(41);
        $m!(42);
        $m!(43);
        $m!(44);
        $m!(45);
        $m!(46);
        $m!(47);
        $m!(48);
        $m!(49);
        $m!(50);
        $m!(51);
        $m!(52);
        $m!(53);
        $m!(54);
        $m!(55);
        $m!(56);
        $m!(57);
        $m!(58);
        $m!(59);
        $m!(60);
        $m!(61);
        $m!(62);
        $m!(63);
    };
}

/// Unpacks one full group of 64 values of width `W` from `src` (at least `8 * W` bytes) into
/// `out`, mapping each value through `f`. Completely unrolled: every word index and shift is a
/// compile-time constant.
#[inline(always)]
fn unpack_group<const W: usize, T: Copy>(src: &[u8], out: &mut [T; 64], f: &impl Fn(u64) -> T) {
    if W == 0 {
        let z = f(0);
        for o in out.iter_mut() {
            *o = z;
        }
        return;
    }
    let src = &src[..W * 8];
    let m = mask(W as u32);
    let mut words = [0u64; W];
    for (i, w) in words.iter_mut().enumerate() {
        *w = le_word(src, i);
    }
    macro_rules! one {
        ($i:expr) => {{
            let bit = $i * W;
            let wi = bit / 64;
            let sh = bit % 64;
            let mut v = words[wi] >> sh;
            if sh + W > 64 {
                v |= words[wi + 1] << ((64 - sh) & 63);
            }
            out[$i] = f(v & m);
        }};
    }
    seq64!(one);
}

/// Unpacks `n` values of width `W` group by group: each group of 64 values (the last one may be
/// shorter) is mapped through `f` into a stack buffer and handed to `each(start, values)`.
#[inline(always)]
fn groups_w<const W: usize, T: Copy>(
    src: &[u8],
    n: usize,
    f: &impl Fn(u64) -> T,
    each: &mut impl FnMut(usize, &mut [T]),
) {
    let full = n / 64;
    let mut tmp = [f(0); 64];
    for g in 0..full {
        unpack_group::<W, T>(&src[g * W * 8..(g + 1) * W * 8], &mut tmp, f);
        each(g * 64, &mut tmp);
    }
    let rem = n % 64;
    if rem != 0 {
        let mut buf = [0u8; 64 * 8];
        let rest = &src[full * W * 8..];
        let take = rest.len().min(W * 8);
        buf[..take].copy_from_slice(&rest[..take]);
        unpack_group::<W, T>(&buf, &mut tmp, f);
        each(full * 64, &mut tmp[..rem]);
    }
}

/// Values per bit-packing block.
pub const BLOCK: usize = 1024;

/// Bytes taken by one block of `len <= BLOCK` values of width `w`.
#[inline]
pub fn block_len(len: usize, w: u32) -> usize {
    if len == BLOCK { 128 * w as usize } else { packed_len(len, w) }
}

/// Appends one block (`values.len() <= BLOCK`) packed with width `w` to `out`.
pub fn pack_block(values: &[u64], w: u32, out: &mut Vec<u8>) {
    debug_assert!(values.len() <= BLOCK && w <= 64);
    if values.len() < BLOCK {
        pack(values, w, out);
        return;
    }
    let wu = w as usize;
    if wu == 0 {
        return;
    }
    let m = mask(w);
    let mut words = vec![0u64; 16 * wu];
    for row in 0..64 {
        let bit = row * wu;
        let (wi, sh) = (bit / 64, bit % 64);
        for l in 0..16 {
            let v = values[row * 16 + l] & m;
            words[wi * 16 + l] |= v << sh;
            if sh + wu > 64 {
                words[(wi + 1) * 16 + l] |= v >> (64 - sh);
            }
        }
    }
    for word in words {
        out.extend_from_slice(&word.to_le_bytes());
    }
}

/// Unpacks a full interleaved block of width `W` (`src` holds `128 * W` bytes).
#[inline(always)]
fn unpack_interleaved<const W: usize, T: Copy>(src: &[u8], out: &mut [T; BLOCK], f: &impl Fn(u64) -> T) {
    if W == 0 {
        let z = f(0);
        for o in out.iter_mut() {
            *o = z;
        }
        return;
    }
    let src = &src[..W * 128];
    let m = mask(W as u32);
    for row in 0..64 {
        let bit = row * W;
        let (wi, sh) = (bit / 64, (bit % 64) as u32);
        let o = &mut out[row * 16..row * 16 + 16];
        let a = &src[wi * 128..wi * 128 + 128];
        if sh as usize + W > 64 {
            let b = &src[(wi + 1) * 128..(wi + 1) * 128 + 128];
            for (l, o) in o.iter_mut().enumerate() {
                let lo = le_word(a, l) >> sh;
                let hi = le_word(b, l) << ((64 - sh) & 63);
                *o = f((lo | hi) & m);
            }
        } else {
            for (l, o) in o.iter_mut().enumerate() {
                *o = f((le_word(a, l) >> sh) & m);
            }
        }
    }
}

#[inline(always)]
fn unpack_block_w<const W: usize, T: Copy>(src: &[u8], out: &mut [T], f: &impl Fn(u64) -> T) {
    if let Ok(full) = <&mut [T; BLOCK]>::try_from(&mut *out) {
        unpack_interleaved::<W, T>(src, full, f);
    } else {
        groups_w::<W, T>(src, out.len(), f, &mut |start, vals: &mut [T]| {
            out[start..start + vals.len()].copy_from_slice(vals);
        });
    }
}

macro_rules! dispatch_block {
    ($w:expr, $src:expr, $out:expr, $f:expr; $($k:literal)*) => {
        match $w {
            $($k => unpack_block_w::<$k, T>($src, $out, $f),)*
            _ => unreachable!("bit width checked by the caller"),
        }
    };
}

/// Unpacks one block of `out.len() <= BLOCK` values of width `w`, mapping each through `f`.
/// Returns false, touching nothing, unless `w <= 64` and `src` holds exactly
/// `block_len(out.len(), w)` bytes.
///
/// On x86-64 CPUs with AVX2 the block is unpacked by a copy of the same code compiled for
/// AVX2 (four 64-bit lanes instead of SSE2's two).
#[inline]
#[must_use]
pub fn unpack_block<T: Copy, F: Fn(u64) -> T + Copy>(src: &[u8], w: u32, out: &mut [T], f: F) -> bool {
    if w > 64 || out.len() > BLOCK || src.len() != block_len(out.len(), w) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: `unpack_block_avx2` needs only AVX2, which the CPU was just checked to have;
        // its body is safe code.
        unsafe { unpack_block_avx2(src, w, out, f) };
        return true;
    }
    unpack_block_any(src, w, out, &f);
    true
}

/// The unpacking of [`unpack_block`], arguments checked.
#[inline(always)]
fn unpack_block_any<T: Copy>(src: &[u8], w: u32, out: &mut [T], f: &impl Fn(u64) -> T) {
    dispatch_block!(w, src, out, f;
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
        33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62
        63 64);
}

/// [`unpack_block_any`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn unpack_block_avx2<T: Copy, F: Fn(u64) -> T + Copy>(src: &[u8], w: u32, out: &mut [T], f: F) {
    // `f` by value: a closure's captures must be locals here, not loads through a pointer
    // in every iteration (which keeps the loop from vectorising).
    unpack_block_any(src, w, out, &f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn round_trip_every_width_and_length() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        for w in 0..=64u32 {
            for n in [0usize, 1, 2, 7, 63, 64, 65, 127, 128, 129, 1000] {
                let vals: Vec<u64> = (0..n).map(|_| rng(&mut seed) & mask(w)).collect();
                let mut buf = Vec::new();
                pack(&vals, w, &mut buf);
                assert_eq!(buf.len(), packed_len(n, w), "w={w} n={n}");
                let mut back = vec![0u64; n];
                assert!(unpack_block(&buf, w, &mut back, |v| v));
                assert_eq!(vals, back, "w={w} n={n}");
            }
        }
    }

    #[test]
    fn blocks_round_trip() {
        let mut seed = 0x5555_1234_9876_0001u64;
        for w in 0..=64u32 {
            for n in [1024usize, 1000, 64, 1] {
                let vals: Vec<u64> = (0..n).map(|_| rng(&mut seed) & mask(w)).collect();
                let mut buf = Vec::new();
                pack_block(&vals, w, &mut buf);
                assert_eq!(buf.len(), block_len(n, w));
                let mut back = vec![0u64; n];
                assert!(unpack_block(&buf, w, &mut back, |v| v));
                assert_eq!(vals, back, "w={w} n={n}");
            }
        }
    }

    #[test]
    fn widths() {
        assert_eq!(bit_width(0), 0);
        assert_eq!(bit_width(1), 1);
        assert_eq!(bit_width(255), 8);
        assert_eq!(bit_width(u64::MAX), 64);
        assert_eq!(packed_len(64, 3), 24);
        assert_eq!(packed_len(65, 3), 25);
        assert_eq!(packed_len(3, 3), 2);
    }
}
