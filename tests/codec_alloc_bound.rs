//! Decoders allocate O(n): whatever the bytes, the peak of live heap memory during a decode stays
//! under `ALLOC_PER_VALUE * n + ALLOC_FIXED` (the zstd stage included).

mod codec_common;

use codec_common::*;
use gemba::codec::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const ALLOC_PER_VALUE: usize = 64;
const ALLOC_FIXED: usize = 4 << 20; // zstd decompression context

fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

/// One test function only: the counters are process-wide.
#[test]
fn decoders_allocate_o_n() {
    let mut r = Rng::new(3);
    let mut chunks: Vec<(u8, Vec<u8>, usize)> = Vec::new();
    for &n in &[1usize, 64, 1000, 4096] {
        for kind in 0..F64_KINDS {
            let mut b = Vec::new();
            encode_f64(&floats(kind, n, &mut r), &mut b);
            chunks.push((2, b, n));
        }
        for kind in 0..I64_KINDS {
            let mut b = Vec::new();
            encode_i64(&ints(kind, n, &mut r), &mut b);
            chunks.push((0, b, n));
        }
    }
    let mut worst = 0f64;
    for (kind, chunk, n) in &chunks {
        let mut c = chunk.clone();
        for i in 0..(c.len() * 8).min(4000) {
            c[i / 8] ^= 1 << (i % 8);
            // also lie about n: small n, big declared sizes inside
            for &m in &[*n, 1usize, 100] {
                let peak = peak_of(|| {
                    if *kind == 0 {
                        let mut o = Vec::new();
                        let _ = decode_i64(&c, m, &mut o);
                    } else {
                        let mut o = Vec::new();
                        let _ = decode_f64(&c, m, &mut o);
                    }
                });
                assert!(peak <= ALLOC_PER_VALUE * m + ALLOC_FIXED, "peak {peak} for n = {m}");
                worst = worst.max((peak as f64) / (m as f64 + 1.0));
            }
            c[i / 8] ^= 1 << (i % 8);
        }
    }
    println!("worst peak: {worst:.0} bytes per value (+ fixed)");
}
