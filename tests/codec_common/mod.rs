//! Input generators shared by the test binaries (deterministic from a seed).
#![allow(dead_code)]

/// Lengths every codec is tested at.
pub const LENS: &[usize] = &[0, 1, 2, 63, 64, 65, 1000, 4096, 65_536];

pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn coin(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

pub const I64_KINDS: u32 = 12;

/// Integer vectors of many shapes.
pub fn ints(kind: u32, n: usize, r: &mut Rng) -> Vec<i64> {
    let edge = [i64::MIN, i64::MAX, 0, -1, 1, i64::MIN + 1, i64::MAX - 1];
    let base = r.next() as i64;
    match kind % I64_KINDS {
        0 => (0..n).map(|_| r.next() as i64).collect(),
        1 => (0..n).map(|_| edge[r.below(edge.len() as u64) as usize]).collect(),
        2 => (0..n).map(|i| if i % 2 == 0 { i64::MIN } else { i64::MAX }).collect(),
        3 => vec![base; n],
        4 => (0..n).map(|_| base.wrapping_add(r.below(128) as i64)).collect(),
        5 => {
            // small values with huge outliers
            (0..n).map(|_| if r.coin(5) { r.next() as i64 } else { r.below(16) as i64 - 8 }).collect()
        }
        6 => {
            let mut v: Vec<i64> = (0..n).map(|_| r.next() as i64).collect();
            v.sort_unstable();
            v
        }
        7 => {
            // runs (status codes)
            let mut v = Vec::with_capacity(n);
            let mut cur = r.below(4) as i64;
            for _ in 0..n {
                if r.coin(3) {
                    cur = r.below(4) as i64;
                }
                v.push(cur);
            }
            v
        }
        8 => (0..n).map(|i| base.wrapping_add((i as i64).wrapping_mul(1000))).collect(),
        9 => {
            // decreasing with wrap-around
            let mut x = base;
            (0..n)
                .map(|_| {
                    x = x.wrapping_sub(r.next() as i64 >> 3);
                    x
                })
                .collect()
        }
        10 => (0..n).map(|_| (r.below(7) as i64) * 125 + 3).collect(),
        _ => (0..n).map(|_| [0, 17, 1 << 40, -5][r.below(4) as usize]).collect(),
    }
}

pub const TS_KINDS: u32 = 8;

/// Timestamp vectors (mostly increasing, but also anything).
pub fn timestamps(kind: u32, n: usize, r: &mut Rng) -> Vec<i64> {
    let t0 = 1_704_067_200_000_000i64 + r.below(1_000_000) as i64;
    match kind % TS_KINDS {
        0 => (0..n as i64).map(|i| t0 + i * 10_000).collect(),
        1 => (0..n as i64).map(|i| t0 + i * 1_000_000 + r.below(40_001) as i64 - 20_000).collect(),
        2 => {
            let mut t = t0;
            (0..n)
                .map(|_| {
                    t += if r.coin(2) { 3_600_000_000 } else { 1000 };
                    t
                })
                .collect()
        }
        3 => {
            let mut t = t0;
            (0..n)
                .map(|_| {
                    t += [1_000_000, 2_000_000][r.coin(50) as usize];
                    t
                })
                .collect()
        }
        4 => (0..n).map(|i| if i % 2 == 0 { i64::MIN } else { i64::MAX }).collect(),
        5 => (0..n as i64).map(|i| i64::MAX - n as i64 + i).collect(),
        6 => (0..n).map(|_| r.next() as i64).collect(),
        _ => {
            // repeated timestamps and a step back
            let mut t = t0;
            (0..n)
                .map(|_| {
                    if r.coin(20) {
                        t -= 5_000;
                    } else if !r.coin(10) {
                        t += 5_000;
                    }
                    t
                })
                .collect()
        }
    }
}

pub const F64_KINDS: u32 = 12;

/// Float vectors of many shapes, including every special value.
pub fn floats(kind: u32, n: usize, r: &mut Rng) -> Vec<f64> {
    let specials = [
        f64::NAN,
        -f64::NAN,
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN,
        f64::MAX,
        f64::EPSILON,
        f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        f64::from_bits(0x000F_FFFF_FFFF_FFFF), // largest subnormal
        36.806999999999995,
        0.1 + 0.2,
    ];
    match kind % F64_KINDS {
        0 => (0..n).map(|_| f64::from_bits(r.next())).collect(),
        1 => (0..n).map(|_| specials[r.below(specials.len() as u64) as usize]).collect(),
        2 => (0..n)
            .map(|_| f64::from_bits(0x7ff0_0000_0000_0001 | r.next() | (r.next() & (1 << 63))))
            .collect(),
        k @ 3..=5 => {
            // decimals with 1..=6 places, slowly varying
            let places = [1, 2, 3, 4, 5, 6][(r.below(6) + k as u64) as usize % 6];
            let p = 10f64.powi(places);
            let mut x = r.below(100_000) as i64;
            (0..n)
                .map(|_| {
                    x += r.below(41) as i64 - 20;
                    x as f64 / p
                })
                .collect()
        }
        6 => (0..n).map(|_| r.below(65_536) as f64 * 1000.0 / 65_536.0).collect(),
        7 => (0..n).map(|_| (r.below(20_000) as i64 - 10_000) as f64).collect(),
        8 => {
            // decimals with occasional specials and arithmetic noise
            (0..n)
                .map(|_| {
                    if r.coin(20) {
                        specials[r.below(specials.len() as u64) as usize]
                    } else {
                        let d = (r.below(100_000) as f64) / 100.0;
                        if r.coin(50) { d * 1.1 } else { d }
                    }
                })
                .collect()
        }
        9 => vec![f64::from_bits(r.next()); n],
        10 => (0..n).map(|_| [-0.0, 0.0][r.coin(500) as usize]).collect(),
        _ => (0..n).map(|_| (r.below(1 << 20) as f64) * 2f64.powi(-(r.below(60) as i32))).collect(),
    }
}

pub const BOOL_KINDS: u32 = 5;

pub fn bools(kind: u32, n: usize, r: &mut Rng) -> Vec<bool> {
    match kind % BOOL_KINDS {
        0 => (0..n).map(|_| r.coin(500)).collect(),
        1 => vec![r.coin(500); n],
        2 => {
            let mut v = r.coin(500);
            (0..n)
                .map(|_| {
                    if r.coin(2) {
                        v = !v;
                    }
                    v
                })
                .collect()
        }
        3 => (0..n).map(|_| r.coin(1)).collect(),
        _ => (0..n).map(|i| i % 2 == 0).collect(),
    }
}
