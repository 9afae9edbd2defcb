//! `ivlink console bench --quick --json` end to end: the console, the UNIX
//! socket and the pty are each measured between two processes and reported
//! with positive figures, ratios and targets. No timing thresholds: the
//! figures depend on the machine and its load.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const IVLINK: &str = env!("CARGO_BIN_EXE_ivlink");

/// Runs `ivlink` with `args`, killing it (by pid) if it takes longer than `limit`.
fn run(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(IVLINK)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivlink");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "ivlink {args:?} still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn positive(value: &Value, what: &str) -> f64 {
    let x = value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!(x > 0.0 && x.is_finite(), "{what} = {x}");
    x
}

#[test]
fn quick_json_reports_the_console_and_both_baselines() {
    let output = run(
        &["console", "bench", "--quick", "--json", "--bytes", "4M"],
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ivlink console bench failed:\n{stderr}"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object:\n{stdout}"
    );
    let report: Value = serde_json::from_str(&stdout).expect("valid JSON");

    assert_eq!(report["settings"]["bytes"], 4 << 20);
    assert_eq!(report["settings"]["round_trips"], 1000);
    let results = report["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["mechanism"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["console", "unix", "pty"]);
    for r in results {
        let name = r["mechanism"].as_str().unwrap();
        assert_eq!(r["bytes"], 4 << 20, "{name}");
        positive(
            &r["to_device_bytes_per_second"],
            &format!("{name} to device"),
        );
        positive(
            &r["to_driver_bytes_per_second"],
            &format!("{name} to driver"),
        );
        let rtt = &r["round_trip_ns"];
        assert_eq!(rtt["samples"], 1000, "{name}");
        let p50 = positive(&rtt["p50"], &format!("{name} median"));
        let p99 = positive(&rtt["p99"], &format!("{name} p99"));
        assert!(p50 <= p99, "{name}: median {p50} above p99 {p99}");
    }

    let ratios = report["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 6, "{ratios:?}");
    for ratio in ratios {
        positive(&ratio["value"], ratio["name"].as_str().unwrap());
    }
    let targets = report["targets"].as_array().expect("targets");
    let keys: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["console-bulk", "console-bulk-vs-unix", "console-keystroke"]
    );
    for t in targets {
        assert!(t["met"].is_boolean(), "{t}");
        positive(&t["measured"], t["name"].as_str().unwrap());
    }
}

#[test]
fn a_bad_console_shape_is_one_clear_error() {
    let output = run(
        &["console", "bench", "--quick", "--buffer-size", "100"],
        Duration::from_secs(30),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("buffer size"), "{stderr}");
    assert!(output.stdout.is_empty());
}
