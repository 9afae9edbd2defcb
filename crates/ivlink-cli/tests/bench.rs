//! `ivlink bench --quick --json` end to end: every mechanism is measured in two
//! processes and reported with positive figures, ratios and targets. No timing
//! thresholds: the figures depend on the machine and its load.

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
fn quick_json_reports_every_mechanism_with_ratios_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("latency.svg");
    let output = run(
        &["bench", "--quick", "--json", "--svg", svg.to_str().unwrap()],
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ivlink bench failed:\n{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object:\n{stdout}"
    );
    let report: Value = serde_json::from_str(&stdout).expect("valid JSON");

    let settings = &report["settings"];
    for key in ["ring_bytes", "batch", "payload_bytes", "region_bytes"] {
        positive(&settings[key], key);
    }
    assert_eq!(settings["quick"], Value::Bool(true));
    assert!(settings["placement"]["description"].is_string());

    let latency = report["latency"].as_array().expect("latency array");
    for mechanism in [
        "ivlink-busy",
        "memcpy-ring-busy",
        "ivlink-sleep",
        "ntb-busy",
        "ntb-sleep",
        "eventfd",
        "unix",
        "pipe",
    ] {
        let entry = latency
            .iter()
            .find(|e| e["mechanism"] == mechanism)
            .unwrap_or_else(|| panic!("no latency for {mechanism}"));
        positive(&entry["samples"], "samples");
        let one_way = &entry["one_way_ns"];
        let p50 = positive(&one_way["p50"], "p50");
        for key in ["p90", "p99", "p999", "max"] {
            assert!(
                positive(&one_way[key], key) >= p50,
                "{mechanism} {key} below p50"
            );
        }
        assert!(entry["strategy"].is_string());
    }
    for mechanism in ["ivlink-sleep", "ntb-busy", "ntb-sleep"] {
        let entry = latency
            .iter()
            .find(|e| e["mechanism"] == mechanism)
            .unwrap();
        positive(&entry["doorbells"], "doorbells rung");
    }

    let throughput = report["throughput"].as_array().expect("throughput array");
    let sizes = [64, 256, 1024, 4096, 16384, 65536];
    for mechanism in ["ivlink", "ivlink-grant", "memcpy-ring", "unix", "pipe"] {
        for size in sizes {
            let entry = throughput
                .iter()
                .find(|e| e["mechanism"] == mechanism && e["size_bytes"] == size)
                .unwrap_or_else(|| panic!("no throughput for {mechanism} at {size} B"));
            positive(&entry["gb_per_s"], "gb_per_s");
            positive(&entry["messages_per_s"], "messages_per_s");
            positive(&entry["rounds"], "rounds");
        }
    }
    assert!(
        throughput
            .iter()
            .any(|e| e["mechanism"] == "ivlink-batch1" && e["size_bytes"] == 64)
    );
    assert!(
        throughput
            .iter()
            .any(|e| e["mechanism"] == "ivlink-eager" && e["size_bytes"] == 64)
    );
    for size in [4 << 10, 64 << 10] {
        let entry = throughput
            .iter()
            .find(|e| e["mechanism"] == "ivlink-grant" && e["size_bytes"] == size)
            .unwrap_or_else(|| panic!("no zero-copy stream of {size} B"));
        positive(&entry["gb_per_s"], "gb_per_s");
    }
    for size in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10] {
        let entry = throughput
            .iter()
            .find(|e| e["mechanism"] == "ntb-window" && e["size_bytes"] == size)
            .unwrap_or_else(|| panic!("no NTB window stream of {size} B chunks"));
        positive(&entry["gb_per_s"], "gb_per_s");
        positive(&entry["doorbells"], "doorbells");
    }

    let ratios = report["ratios"].as_array().expect("ratios array");
    let ratio = |name: &str, size: Option<u64>| {
        let entry = ratios
            .iter()
            .find(|r| {
                r["name"] == name
                    && match size {
                        Some(s) => r["size_bytes"] == s,
                        None => r["size_bytes"].is_null(),
                    }
            })
            .unwrap_or_else(|| panic!("no ratio {name} {size:?}"));
        positive(&entry["value"], name)
    };
    ratio("ivlink-busy/memcpy-ring-busy", None);
    ratio("ivlink-sleep/eventfd", None);
    ratio("ntb-sleep/eventfd", None);
    ratio("ntb-window/memcpy-ring", Some(4096));
    ratio("ivlink-grant/ivlink", Some(4096));
    ratio("ivlink-grant/ivlink", Some(65536));
    for baseline in ["memcpy-ring", "unix", "pipe"] {
        let name = format!("ivlink/{baseline}");
        ratio(&name, None);
        for size in sizes {
            ratio(&name, Some(size));
        }
    }

    let targets = report["targets"].as_array().expect("targets array");
    assert_eq!(targets.len(), 8);
    for name in [
        "ntb-doorbell-vs-eventfd",
        "64-byte-rate-vs-memcpy-ring",
        "stream-every-size-vs-memcpy-ring",
    ] {
        assert!(
            targets.iter().any(|t| t["name"] == name),
            "no target {name}"
        );
    }
    for target in targets {
        positive(&target["measured"], "target measurement");
        assert!(target["met"].is_boolean(), "{target}");
        assert!(target["goal"].is_string());
    }

    let plot = std::fs::read_to_string(&svg).expect("the SVG plot was written");
    assert!(plot.starts_with("<svg"));
    assert_eq!(plot.matches("<polyline").count(), 8);
}

#[test]
fn bad_settings_fail_before_measuring() {
    let output = run(&["bench", "--ring-size", "1000"], Duration::from_secs(20));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("power of two"), "{stderr}");

    let output = run(&["bench-peer", "--", "nonsense"], Duration::from_secs(20));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad bench-peer arguments"), "{stderr}");
}
