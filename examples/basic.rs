//! The smallest complete use of gemba: open, write rows and columns, scan, close.
//!
//! `cargo run --example basic [DIR]` (default: a temporary directory).

use gemba::{Col, Db, Machines, Options, Value, WriteBatch};

fn main() -> gemba::Result<()> {
    let tmp = std::env::temp_dir().join(format!("gemba-basic-{}", std::process::id()));
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or(tmp);
    let db = Db::open(&dir, Options::default())?;

    let t0 = 1_700_000_000_000_000i64;
    let mut batch = WriteBatch::new();
    for (i, m) in ["press-01", "press-02"].iter().enumerate() {
        let ts: Vec<i64> = (0..5).map(|k| t0 + k * 1_000_000).collect();
        let speed: Vec<f64> = (0..5).map(|k| 1480.0 + (k + i as i64) as f64 * 0.5).collect();
        let status: Vec<i64> = vec![1; 5];
        batch.columns(m, &ts, [("speed_rpm", Col::f64(&speed)), ("status", Col::i64(&status))])?;
    }
    batch.row("press-01", t0 + 5_000_000, [("speed_rpm", Value::F64(0.0)), ("alarm", Value::Bool(true))])?;
    db.write(&batch)?;

    for b in db.scan(Machines::All, t0..t0 + 60_000_000).run()? {
        let b = b?;
        println!("{}: {} rows", b.machine, b.rows());
        for c in &b.columns {
            let shown: Vec<String> =
                (0..b.rows()).map(|i| c.value(i).map_or("-".into(), |v| format!("{v:?}"))).collect();
            println!("  {:<10} {}", c.name, shown.join(" "));
        }
    }
    db.close()?;
    println!("database in {}", dir.display());
    Ok(())
}
