//! The scaling figures end to end, small cases run for real: `bench --pairs`,
//! `bench --server-peers` and `stress --peers` with a list. Checks the JSON's
//! shape, that figures are positive and that counts are exact (the server's fd
//! messages equal the protocol's formula). No timing thresholds.

mod common;

use common::json::one_object;
use common::{run, text};
use serde_json::Value;

fn positive(value: &Value, what: &str) -> f64 {
    let x = value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn pairs_report_every_mechanism_size_and_count_against_the_single_pair() {
    let output = run(&[
        "bench", "--quick", "--pairs", "2", "--sizes", "64,4K", "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let report = one_object(&output);
    assert_eq!(report["tool"], "ivlink bench --pairs");
    let cpus = report["cpus"].as_u64().unwrap();
    let rows = report["rows"].as_array().unwrap();
    // The single pair is always measured: it is the efficiency's reference.
    assert_eq!(rows.len(), 2 * 2 * 2, "{report:#}");
    let mut seen = Vec::new();
    for row in rows {
        let mechanism = row["mechanism"].as_str().unwrap();
        let (size, pairs) = (
            row["size_bytes"].as_u64().unwrap(),
            row["pairs"].as_u64().unwrap(),
        );
        seen.push((mechanism.to_owned(), size, pairs));
        assert_eq!(row["threads"], 2 * pairs);
        assert_eq!(row["oversubscribed"], 2 * pairs > cpus);
        let per_pair = row["per_pair"].as_array().unwrap();
        assert_eq!(per_pair.len() as u64, pairs);
        for pair in per_pair {
            positive(&pair["messages_per_s"], "per-pair msg/s");
            positive(&pair["gb_per_s"], "per-pair GB/s");
        }
        let rate = positive(&row["messages_per_s"], "msg/s");
        let gb = positive(&row["gb_per_s"], "GB/s");
        assert_eq!(
            row["bytes"].as_u64().unwrap(),
            row["messages"].as_u64().unwrap() * size
        );
        assert!((gb * 1e9 / rate - size as f64).abs() < 1e-6 * size as f64);
        let efficiency = positive(&row["efficiency"], "efficiency");
        if pairs == 1 {
            assert_eq!(efficiency, 1.0);
        }
    }
    seen.sort();
    let mut expected = Vec::new();
    for mechanism in ["ivlink", "memcpy-ring"] {
        for size in [64, 4096] {
            for pairs in [1, 2] {
                expected.push((mechanism.to_owned(), size, pairs));
            }
        }
    }
    assert_eq!(seen, expected);
}

#[test]
fn pairs_say_when_oversubscribed() {
    let output = run(&["bench", "--quick", "--pairs", "3", "--sizes", "64"]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 6 {
        assert!(
            stdout.contains(&format!("oversubscribed: 6 threads on {cpus} cores")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("efficiency"), "{stdout}");
}

/// `N·(1 + V) + V·N·(N − 1)`.
fn formula(n: u64, v: u64) -> u64 {
    n * (1 + v) + v * n * (n - 1)
}

#[test]
fn server_peers_count_exactly_the_fd_messages_the_protocol_needs() {
    for vectors in [1u64, 3] {
        let output = run(&[
            "bench",
            "--server-peers",
            "4,8",
            "--vectors",
            &vectors.to_string(),
            "--json",
        ]);
        assert!(output.status.success(), "{}", text(&output));
        let report = one_object(&output);
        assert_eq!(report["tool"], "ivlink bench --server-peers");
        assert_eq!(report["vectors"], vectors);
        assert!(report["curve"].as_str().unwrap().contains("quadratic"));
        let rows = report["rows"].as_array().unwrap();
        let peers: Vec<u64> = rows.iter().map(|r| r["peers"].as_u64().unwrap()).collect();
        assert_eq!(peers, [4, 8]);
        for row in rows {
            let n = row["peers"].as_u64().unwrap();
            assert_eq!(row["fd_messages"], formula(n, vectors), "{row}");
            assert_eq!(row["expected_fd_messages"], formula(n, vectors));
            // Version and id, without an fd, per peer.
            assert_eq!(row["messages"], formula(n, vectors) + 2 * n);
            positive(&row["seconds"], "seconds");
            positive(&row["per_peer_us"], "µs per peer");
            positive(&row["last_peer_us"], "last peer µs");
        }
    }
}

#[test]
fn a_stress_series_has_one_clean_row_per_peer_count() {
    let output = run(&["stress", "--peers", "2,3", "--duration", "300ms", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report = one_object(&output);
    assert_eq!(report["tool"], "ivlink stress --peers");
    assert_eq!(report["interrupted"], false);
    let rows = report["rows"].as_array().unwrap();
    let peers: Vec<u64> = rows.iter().map(|r| r["peers"].as_u64().unwrap()).collect();
    assert_eq!(peers, [2, 3]);
    for row in rows {
        assert_eq!(row["clean"], true, "{row}");
        for key in ["lost", "corrupted", "reordered", "failed_peers"] {
            assert_eq!(row[key], 0, "{key}: {row}");
        }
        assert_eq!(row["sent"], row["received"]);
        let total = positive(&row["messages_per_second"], "msg/s");
        let per_peer = positive(&row["per_peer_messages_per_second"], "per-peer msg/s");
        let n = row["peers"].as_f64().unwrap();
        assert!((total / n - per_peer).abs() <= 1e-9 * total);
        positive(&row["bytes_per_second"], "bytes/s");
    }
}

#[test]
fn bad_counts_are_refused_in_one_line_with_usage_status() {
    for (args, why) in [
        (&["bench", "--pairs", "0"][..], "zero: give 1 or more"),
        (&["bench", "--pairs", "1,x"][..], "not a number"),
        (&["bench", "--pairs", "999"][..], "too large (at most 256)"),
        (
            &["bench", "--server-peers", "0"][..],
            "zero: give 1 or more",
        ),
        (
            &["bench", "--server-peers", "4", "--vectors", "0"][..],
            "--vectors",
        ),
        (
            &["bench", "--vectors", "2"][..],
            "required arguments were not provided",
        ),
        (
            &["bench", "--pairs", "2", "--server-peers", "4"][..],
            "cannot be used with",
        ),
        (&["stress", "--peers", "2,1"][..], "at least 2 peers"),
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains(why), "{args:?}: {stderr}");
    }
}
