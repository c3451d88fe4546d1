//! `audit-stream bench` end to end with small numbers, so that its plumbing cannot rot:
//! its own Tansu broker, the three contenders as child processes (the quixstreams peer
//! included), the in-process runs, the latency run and both outputs. No performance
//! target is asserted here; they live in the bench alone (`--report-only`).

use std::process::Command;

fn bench(extra: &[&str]) -> (bool, String, String) {
    let tansu = std::env::var("TANSU_BIN").expect(
        "the bench smoke test needs the Tansu broker: run `eval \"$(scripts/install-tools.sh)\"`",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_audit-stream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "bench",
            "--records",
            "1500",
            "--runs",
            "1",
            "--tansu",
            &tansu,
        ])
        .args(["--inprocess-records", "300", "--latency-secs", "1"])
        .args(["--latency-warmup-secs", "1"])
        .args(["--skip-callgrind", "--report-only"])
        .args(extra)
        .output()
        .expect("audit-stream bench runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The figure in the first numeric column of the row that starts with `name`.
fn records_per_sec(markdown: &str, name: &str) -> f64 {
    let row = markdown
        .lines()
        .find(|l| l.starts_with(&format!("| {name}")))
        .unwrap_or_else(|| panic!("no row {name} in:\n{markdown}"));
    row.split('|')
        .nth(2)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("no records/s in {row:?}"))
}

#[test]
fn bench_measures_every_contender_and_prints_markdown_with_every_target() {
    let (ok, stdout, stderr) = bench(&["--markdown"]);
    assert!(ok, "bench failed:\n{stderr}");
    for name in [
        "(a) null consumer",
        "(b) audit-stream pipeline",
        "(c) quixstreams peer",
    ] {
        assert!(
            records_per_sec(&stdout, name) > 0.0,
            "{name} measured nothing:\n{stdout}"
        );
    }
    for kind in ["validation", "execution"] {
        assert!(records_per_sec(&stdout, kind) > 0.0, "{stdout}");
    }
    let latency = stdout
        .lines()
        .find(|l| l.starts_with("Latency from record timestamp"))
        .unwrap_or_else(|| panic!("no latency:\n{stdout}"));
    // Where the CPU went while the latency's records were produced: the machine, and
    // each process the bench started.
    for share in [
        "cores were",
        "the pipeline ",
        "the broker ",
        "the producing client ",
    ] {
        assert!(latency.contains(share), "no {share:?} in {latency:?}");
    }
    for target in ["| 1 ", "| 2a ", "| 2b ", "| 3a ", "| 3b ", "| 4 ", "| 5 "] {
        assert!(
            stdout.contains(target),
            "target {target} missing:\n{stdout}"
        );
    }
    // Every target is judged: met or missed, never left unmeasured.
    assert!(!stdout.contains("not measured"), "{stdout}");
}
