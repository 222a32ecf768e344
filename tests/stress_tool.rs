//! Drives `examples/stress.rs`: runs it on one directory several times with new epochs,
//! SIGKILLs it at random moments, collects the batches it acknowledged, and has
//! `stress verify` check that every one survived, whole and right, and nothing else appeared.
//!
//! The example binary is built by `cargo test` (without `--test` filters, examples are built
//! too) next to the test binaries; when it is missing this test prints a notice and passes.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stress_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("../examples/stress");
    p.is_file().then_some(p)
}

#[test]
fn stress_tool_survives_sigkill() {
    let Some(bin) = stress_binary() else {
        println!(
            "notice: examples/stress not built (run `cargo test --profile ci` without --test, or `cargo build --profile ci --example stress`); skipping"
        );
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let acks_path = dir.path().join("acks");
    let mut acks = String::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut total = 0;
    let rounds = 5;
    for round in 0..=rounds {
        let last = round == rounds;
        let mut cmd = Command::new(&bin);
        cmd.args(["run", "--dir"]).arg(&db).args(["--epoch", &(round + 1).to_string(), "--threads", "3"]);
        if last {
            // The last run ends by itself and closes the database cleanly.
            cmd.args(["--seconds", "1"]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("ack "))
                .collect::<Vec<String>>()
        });
        let mut stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = if last {
            child.wait().unwrap()
        } else {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Early rounds also kill during open and recovery.
            let ms = if round == 0 { 40 } else { 300 + rng % 900 };
            std::thread::sleep(Duration::from_millis(ms));
            if let Some(st) = child.try_wait().unwrap() {
                panic!("round {round}: stress exited by itself ({st}): {}", err_reader.join().unwrap());
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap()
        };
        let lines = reader.join().unwrap();
        let err = err_reader.join().unwrap();
        if last {
            assert!(status.success(), "the last run failed ({status}): {err}");
        }
        total += lines.len();
        for l in &lines {
            acks.push_str(l);
            acks.push('\n');
        }
        std::fs::write(&acks_path, &acks).unwrap();
        let out = Command::new(&bin)
            .args(["verify", "--dir"])
            .arg(&db)
            .arg("--acks")
            .arg(&acks_path)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        println!(
            "round {round}: {} acks ({}), {}",
            lines.len(),
            if last { "clean exit" } else { "SIGKILL" },
            report.trim()
        );
        assert!(
            out.status.success(),
            "round {round}: verify failed ({}):\n{report}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check can fail: an acknowledgement of a batch that was never written is reported.
    acks.push_str("ack 4242 1 7\n");
    std::fs::write(&acks_path, &acks).unwrap();
    let out =
        Command::new(&bin).args(["verify", "--dir"]).arg(&db).arg("--acks").arg(&acks_path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify accepted a lost batch: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "stress tool: {rounds} kills and a clean run, {total} acknowledged batches verified, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(total > 100, "the stress tool barely wrote: {total} batches");
}
