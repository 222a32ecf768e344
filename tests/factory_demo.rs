//! The README's first command, the factory demo, runs end to end in a small configuration.

use std::path::PathBuf;
use std::process::Command;

/// The example binary built beside this test (`cargo test` builds examples).
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join(name);
    p.exists().then_some(p)
}

#[test]
fn factory_demo_runs_small() {
    let Some(bin) = example("factory") else {
        println!("notice: examples/factory was not built beside the tests; skipping");
        return;
    };
    let out = Command::new(bin).args(["--machines", "6", "--seconds", "3", "--quiet"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["ingest:", "bytes per point", "raw window", "fleet downsample", "latest values", "avg "] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // 6 machines × 8 channels × 3,000 samples.
    assert!(text.contains("144000 points in"), "{text}");
}
