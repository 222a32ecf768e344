//! gemba on a simulated plant: the README's first command.
//!
//! ```sh
//! cargo run --release --example factory                      # 200 machines × 8 channels, 1 kHz, 10 s
//! cargo run --release --example factory -- --machines 50 --seconds 30 --dir /tmp/plant --keep
//! ```
//!
//! Simulates presses (speed, torque, current, temperature, vibration, pressure, a status code
//! and an alarm flag, sampled every millisecond), writes them through gemba with a progress
//! bar, then runs what a dashboard runs — a raw window, per-second downsampling of one
//! machine, a fleet downsample, latest values — and prints ingest rate, bytes per point, each
//! query's latency and a terminal chart of one downsampled channel with its min/max envelope.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gemba::{Agg, AggColumn, Col, Db, Machines, Options, SyncPolicy, Values, WriteBatch};

struct Args {
    machines: usize,
    seconds: u64,
    interval_us: i64,
    dir: Option<PathBuf>,
    keep: bool,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { machines: 200, seconds: 10, interval_us: 1000, dir: None, keep: false, quiet: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--machines" => {
                a.machines = value("--machines")?.parse().map_err(|e| format!("--machines: {e}"))?
            }
            "--seconds" => a.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--interval-us" => {
                a.interval_us = value("--interval-us")?.parse().map_err(|e| format!("--interval-us: {e}"))?
            }
            "--dir" => a.dir = Some(PathBuf::from(value("--dir")?)),
            "--keep" => a.keep = true,
            "--quiet" => a.quiet = true,
            "-h" | "--help" => {
                println!(
                    "usage: factory [--machines N] [--seconds S] [--interval-us US] [--dir DIR] [--keep] [--quiet]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if a.machines == 0 || a.seconds == 0 || a.interval_us <= 0 {
        return Err("machines, seconds and interval must be positive".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("factory: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("factory: {e}");
        std::process::exit(1);
    }
}

/// A small deterministic random generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// One press: a state machine (idle, running, setup, fault) drives the speed; the other
/// channels follow from speed, press strokes and a slow thermal model. Values are quantized to
/// sensor resolution (0.1 rpm, 0.01 A, 0.1 °C, 16-bit ADC steps, ...).
struct Press {
    rng: Rng,
    state: i64,
    state_left: f64,
    speed: f64,
    setpoint: f64,
    temp: f64,
    crank: f64,
}

const CHANNELS: [&str; 8] =
    ["speed_rpm", "torque_nm", "current_a", "temp_c", "vibration_mm_s", "pressure_bar", "status", "alarm"];

struct Chunk {
    ts: Vec<i64>,
    f: [Vec<f64>; 6],
    status: Vec<i64>,
    alarm: Vec<bool>,
}

impl Press {
    fn new(i: usize) -> Press {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1) | 1);
        let temp = 35.0 + rng.unit() * 20.0;
        Press { rng, state: 1, state_left: 5.0, speed: 0.0, setpoint: 1500.0, temp, crank: 0.0 }
    }

    fn sample(&mut self, n: usize, t0: i64, interval_us: i64) -> Chunk {
        let dt = interval_us as f64 / 1e6;
        let q = |x: f64, d: f64| (x * d).round() / d;
        let adc = |x: f64, full: f64| (x / full * 65536.0).round().clamp(0.0, 65535.0) * full / 65536.0;
        let mut c = Chunk {
            ts: Vec::with_capacity(n),
            f: Default::default(),
            status: Vec::with_capacity(n),
            alarm: Vec::with_capacity(n),
        };
        for i in 0..n {
            self.state_left -= dt;
            if self.state_left <= 0.0 {
                let r = self.rng.unit();
                self.state = match self.state {
                    1 if r < 0.15 => 3,
                    1 if r < 0.4 => 2,
                    1 => 0,
                    3 => 0,
                    _ => 1,
                };
                self.state_left = 2.0 + self.rng.unit() * 20.0;
                self.setpoint = [900.0, 1200.0, 1500.0, 1800.0][(self.rng.next() % 4) as usize];
            }
            let target = match self.state {
                1 => self.setpoint,
                2 => 60.0,
                _ => 0.0,
            };
            self.speed += (target - self.speed) * (dt / 0.6).min(1.0);
            self.crank += self.speed / 60.0 * dt / 40.0 * std::f64::consts::TAU;
            let stroke = self.crank.sin().max(0.0).powi(6);
            let heat = if self.state == 1 { 70.0 } else { 30.0 };
            self.temp += (heat - self.temp) * dt / 900.0;
            let moving = self.speed > 0.5;
            let torque = if moving {
                80.0 + 0.05 * self.speed + 350.0 * stroke + self.rng.normal() * 3.0
            } else {
                0.0
            };
            c.ts.push(t0 + i as i64 * interval_us);
            c.f[0].push(q((self.speed + self.rng.normal() * 0.3).max(0.0), 10.0));
            c.f[1].push(adc(torque.max(0.0), 1000.0));
            c.f[2].push(
                q(0.35 + 1.9 * torque * self.speed / 9550.0 + self.rng.normal() * 0.05, 100.0).max(0.0),
            );
            c.f[3].push(q(self.temp + self.rng.normal() * 0.04, 10.0));
            c.f[4].push(q(if moving { 0.8 + 0.6 * stroke + self.rng.unit() * 0.2 } else { 0.05 }, 100.0));
            c.f[5].push(adc(
                if moving { 160.0 + 40.0 * stroke } else { 22.0 } + self.rng.normal() * 0.5,
                400.0,
            ));
            c.status.push(self.state);
            c.alarm.push(self.state == 3 || self.temp > 68.0);
        }
        c
    }
}

fn run(a: &Args) -> gemba::Result<()> {
    let tmp = std::env::temp_dir().join(format!("gemba-factory-{}", std::process::id()));
    let dir = a.dir.clone().unwrap_or(tmp);
    let db = Db::open(
        &dir,
        Options { sync: SyncPolicy::Periodic(Duration::from_millis(100)), ..Options::default() },
    )?;
    let t0 = 1_704_067_200_000_000i64; // 2024-01-01T00:00:00Z
    let rows_total = (a.seconds as i64 * 1_000_000 / a.interval_us) as usize;
    let mut presses: Vec<Press> = (0..a.machines).map(Press::new).collect();
    let names: Vec<String> = (0..a.machines).map(|i| format!("press-{i:03}")).collect();
    println!(
        "gemba factory demo: {} machines × {} channels, every {} µs for {} s -> {} points into {}",
        a.machines,
        CHANNELS.len(),
        a.interval_us,
        a.seconds,
        rows_total * a.machines * CHANNELS.len(),
        dir.display()
    );

    // Ingest: the plant's gateways deliver one second of every machine at a time.
    let step = (1_000_000 / a.interval_us).max(1) as usize;
    let mut points = 0u64;
    let mut write_time = Duration::ZERO;
    let mut at = 0;
    while at < rows_total {
        let n = step.min(rows_total - at);
        let chunks: Vec<Chunk> =
            presses.iter_mut().map(|p| p.sample(n, t0 + at as i64 * a.interval_us, a.interval_us)).collect();
        let start = Instant::now();
        let mut batch = WriteBatch::new();
        for (name, c) in names.iter().zip(&chunks) {
            let mut cols: Vec<(&str, Col)> = (0..6).map(|k| (CHANNELS[k], Col::f64(&c.f[k]))).collect();
            cols.push((CHANNELS[6], Col::i64(&c.status)));
            cols.push((CHANNELS[7], Col::bool(&c.alarm)));
            batch.columns(name, &c.ts, cols)?;
        }
        points += batch.points() as u64;
        db.write(&batch)?;
        write_time += start.elapsed();
        at += n;
        if !a.quiet {
            progress(at, rows_total);
        }
    }
    let start = Instant::now();
    db.flush()?;
    let flush_time = start.elapsed();
    if !a.quiet {
        println!();
    }
    let ingest = write_time + flush_time;
    let stats = db.stats();
    println!(
        "\ningest: {points} points in {:.2} s = {:.1} M points/s (writes {:.2} s, final flush {:.2} s)",
        ingest.as_secs_f64(),
        points as f64 / ingest.as_secs_f64() / 1e6,
        write_time.as_secs_f64(),
        flush_time.as_secs_f64()
    );
    let disk = dir_bytes(&dir);
    println!(
        "storage: {} segment files, {:.1} MB on disk = {:.3} bytes per point ({:.1}× smaller than 16-byte (ts, value) pairs)",
        stats.segments,
        disk as f64 / 1e6,
        disk as f64 / points as f64,
        16.0 * points as f64 / disk as f64
    );

    // The dashboard's queries.
    let span = rows_total as i64 * a.interval_us;
    let m = names[names.len() / 2].as_str();
    println!("\nqueries (median of 5):");
    let (rows, dt) = timed(|| {
        db.scan(m, t0 + span / 2..t0 + span / 2 + 1_000_000)
            .collect()
            .map(|b| b.iter().map(|b| b.rows()).sum::<usize>())
    })?;
    println!("  raw window       {m}, 1 s, all channels: {rows} rows          {:>8.3} ms", ms(dt));
    let (temp, dt) = timed(|| {
        db.downsample(m, t0..t0 + span, 1_000_000)
            .fields(["temp_c"])
            .aggs([Agg::Min, Agg::Max, Agg::Avg])
            .run()
    })?;
    println!("  downsample       {m}, temp_c per second (min/max/avg)    {:>8.3} ms", ms(dt));
    let (fleet, dt) = timed(|| {
        db.downsample(Machines::All, t0..t0 + span, 1_000_000)
            .fields(["speed_rpm"])
            .aggs([Agg::Avg, Agg::Max])
            .run()
    })?;
    println!(
        "  fleet downsample all machines, speed per second: {} series {:>8.3} ms ({} blocks from statistics, {} decoded)",
        fleet.series.len(),
        ms(dt),
        fleet.counters.blocks_from_stats,
        fleet.counters.blocks_decoded
    );
    let (now, dt) = timed(|| db.latest(Machines::All).run())?;
    println!("  latest values    every channel of every machine: {} values {:>8.3} ms", now.len(), ms(dt));
    let (agg, dt) = timed(|| db.aggregate(Machines::All, ..).aggs([Agg::Count, Agg::Sum]).run())?;
    println!(
        "  whole-range sums every channel of every machine: {} series {:>8.3} ms ({} blocks decoded)",
        agg.series.len(),
        ms(dt),
        agg.counters.blocks_decoded
    );

    if let Some(s) = temp.series.first() {
        let get = |agg: Agg| match s.agg(agg) {
            Some(AggColumn::Min(Values::F64(v)) | AggColumn::Max(Values::F64(v))) => v.clone(),
            Some(AggColumn::Avg(v)) => v.clone(),
            _ => Vec::new(),
        };
        let (lo, hi, avg) = (get(Agg::Min), get(Agg::Max), get(Agg::Avg));
        println!("\n{m} temp_c per second ({} buckets), envelope and average:", s.buckets.len());
        chart(&lo, &hi, &avg);
    }
    db.close()?;
    if a.dir.is_none() && !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("\ndatabase kept in {}", dir.display());
    }
    Ok(())
}

fn timed<T>(mut f: impl FnMut() -> gemba::Result<T>) -> gemba::Result<(T, Duration)> {
    f()?;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let s = Instant::now();
        last = Some(f()?);
        times.push(s.elapsed());
    }
    times.sort();
    Ok((last.unwrap(), times[2]))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn progress(done: usize, total: usize) {
    let width = 40;
    let filled = done * width / total.max(1);
    print!(
        "\r  writing [{}{}] {:>3}%",
        "#".repeat(filled),
        " ".repeat(width - filled),
        done * 100 / total.max(1)
    );
    let _ = std::io::stdout().flush();
}

/// Three sparklines on one scale: the max, the average and the min of each bucket.
fn chart(lo: &[f64], hi: &[f64], avg: &[f64]) {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let width = 72;
    let n = avg.len();
    if n == 0 {
        return;
    }
    // Shrink to the terminal width, keeping the envelope's extremes.
    let cols = n.min(width);
    let pick = |v: &[f64], c: usize, f: fn(f64, f64) -> f64| {
        let (a, b) = (c * n / cols, ((c + 1) * n / cols).max(c * n / cols + 1));
        v[a..b].iter().copied().reduce(f).unwrap_or(f64::NAN)
    };
    let top: Vec<f64> = (0..cols).map(|c| pick(hi, c, f64::max)).collect();
    let bottom: Vec<f64> = (0..cols).map(|c| pick(lo, c, f64::min)).collect();
    let mid: Vec<f64> = (0..cols).map(|c| pick(avg, c, |a, b| (a + b) / 2.0)).collect();
    let (min, max) = (
        bottom.iter().copied().fold(f64::INFINITY, f64::min),
        top.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let line = |v: &[f64]| -> String {
        v.iter()
            .map(|&x| {
                let k = if max > min { ((x - min) / (max - min) * 7.0).round() as usize } else { 3 };
                BARS[k.min(7)]
            })
            .collect()
    };
    println!("  max {:>7.1} {}", max, line(&top));
    println!("  avg         {}", line(&mid));
    println!("  min {:>7.1} {}", min, line(&bottom));
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
