//! Shared by the benchmarks: a synthetic plant written into a fresh database.
#![allow(dead_code)]

use gemba::{Col, Db, Options, SyncPolicy, WriteBatch};

pub const FIELDS: [&str; 8] =
    ["speed_rpm", "torque_nm", "current_a", "temp_c", "vibration_mm_s", "pressure_bar", "status", "alarm"];

/// A small deterministic random generator (xorshift64*).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One machine's channels: `rows` samples every `interval_us`, sensor-like values quantized
/// to their resolution (0.1 rpm, 0.01 A, 0.1 °C, ...), a status code and an alarm flag.
pub struct MachineData {
    pub ts: Vec<i64>,
    pub f64s: Vec<Vec<f64>>,
    pub status: Vec<i64>,
    pub alarm: Vec<bool>,
}

pub fn machine(seed: u64, rows: usize, t0: i64, interval_us: i64) -> MachineData {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ts: Vec<i64> = (0..rows as i64).map(|i| t0 + i * interval_us).collect();
    let mut speed = 1500.0;
    let mut temp = 40.0 + r.unit() * 20.0;
    let mut state = 1i64;
    let mut f64s: Vec<Vec<f64>> = (0..6).map(|_| Vec::with_capacity(rows)).collect();
    let mut status = Vec::with_capacity(rows);
    let mut alarm = Vec::with_capacity(rows);
    for i in 0..rows {
        if r.unit() < 0.001 {
            state = (r.next() % 4) as i64;
        }
        let target = if state == 1 { 1500.0 } else { 0.0 };
        speed += (target - speed) * 0.01 + (r.unit() - 0.5) * 0.6;
        temp += (if state == 1 { 70.0 } else { 25.0 } - temp) * 0.0005 + (r.unit() - 0.5) * 0.04;
        let stroke = ((i as f64) * 0.05).sin().max(0.0).powi(4);
        let q = |x: f64, d: f64| (x * d).round() / d;
        f64s[0].push(q(speed.max(0.0), 10.0));
        f64s[1].push(
            (((80.0 + 300.0 * stroke + (r.unit() - 0.5) * 6.0) / 1000.0 * 65536.0)
                .round()
                .clamp(0.0, 65535.0))
                * 1000.0
                / 65536.0,
        );
        f64s[2].push(q(3.2 + speed / 400.0 + (r.unit() - 0.5) * 0.1, 100.0));
        f64s[3].push(q(temp, 10.0));
        f64s[4].push(q(0.8 + 0.6 * stroke + r.unit() * 0.1, 100.0));
        f64s[5].push(q(160.0 + 40.0 * stroke + (r.unit() - 0.5), 10.0));
        status.push(state);
        alarm.push(temp > 69.0);
    }
    MachineData { ts, f64s, status, alarm }
}

pub fn machine_name(i: usize) -> String {
    format!("press-{i:04}")
}

/// Writes `machines` machines of `rows` rows each and flushes; returns the points written.
pub fn fill(db: &Db, machines: usize, rows: usize, interval_us: i64) -> u64 {
    let mut points = 0;
    for m in 0..machines {
        let d = machine(m as u64 + 1, rows, 1_704_067_200_000_000, interval_us);
        let mut b = WriteBatch::new();
        let mut cols: Vec<(&str, Col)> = (0..6).map(|f| (FIELDS[f], Col::f64(&d.f64s[f]))).collect();
        cols.push((FIELDS[6], Col::i64(&d.status)));
        cols.push((FIELDS[7], Col::bool(&d.alarm)));
        b.columns(&machine_name(m), &d.ts, cols).unwrap();
        points += b.points() as u64;
        db.write(&b).unwrap();
    }
    db.flush().unwrap();
    points
}

/// A database in a fresh temporary directory, filled and flushed.
pub fn filled_db(machines: usize, rows: usize, interval_us: i64) -> (tempfile::TempDir, Db, u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options { sync: SyncPolicy::Os, ..Options::default() }).unwrap();
    let points = fill(&db, machines, rows, interval_us);
    (dir, db, points)
}

/// Sums in eight independent lanes: a plain `iter().sum()` is one chain of dependent
/// additions (about 1 ns per value), which would time the consumer rather than the scan.
pub fn sum_lanes(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + tail
}
