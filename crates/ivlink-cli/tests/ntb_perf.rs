//! `ivlink ntb perf` between host processes on a private server: the window
//! handshake, the statistics as ntb_perf prints them, JSON, and a clear
//! failure when no peer is there.

mod common;

use std::time::{Duration, Instant};

use common::{IVLINK, Running, run_bounded, server};
use rustix::process::Signal;

/// `copied B bytes in U usecs, M MBytes/s` as `(B, U, M)`.
fn copied(text: &str) -> (u64, u64, u64) {
    let parse = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("{text:?}"));
    let rest = text.strip_prefix("copied ").expect(text);
    let (bytes, rest) = rest.split_once(" bytes in ").expect(text);
    let (usecs, rest) = rest.split_once(" usecs, ").expect(text);
    let mbps = rest.strip_suffix(" MBytes/s").expect(text);
    (parse(bytes), parse(usecs), parse(mbps))
}

/// A server and a serving `ntb perf`; runs `ntb perf --run` with `extra` and
/// returns its standard output; stops the serving one with SIGTERM.
fn measure(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let _server = server(&socket, &["--memfd"]);
    let socket = socket.to_str().unwrap();
    let mut serving = Running::start(&["ntb", "perf", "-S", socket]);
    serving.expect_line("perf: serving on port");
    let mut args = vec!["ntb", "perf", "-S", socket, "--run", "--total-order", "24"];
    args.extend_from_slice(extra);
    let output = run_bounded(IVLINK, &args);
    assert!(output.status.success(), "{}", common::text(&output));
    serving.expect_line("perf: inbound window 0 for port");
    serving.signal(Signal::TERM);
    assert!(serving.wait_exit().success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn measures_like_ntb_perf_with_memcpy_as_the_ceiling() {
    let stdout = measure(&["--chunk-order", "16", "--latency", "20"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "    Peer 0 test statistics:", "{stdout}");
    let (bytes, usecs, mbps) = copied(lines[1].strip_prefix("0: ").expect(&stdout));
    assert_eq!(bytes, 1 << 24);
    assert_eq!(mbps, bytes / usecs.max(1));
    let (bytes, _, _) = copied(lines[2].strip_prefix("memcpy: ").expect(&stdout));
    assert_eq!(bytes, 1 << 24);
    assert!(lines[3].starts_with("ratio: "), "{stdout}");
    assert!(lines[5].starts_with("doorbell: one-way p50 "), "{stdout}");
    assert!(lines[6].starts_with("eventfd: one-way p50 "), "{stdout}");
}

#[test]
fn json_has_every_thread_and_the_ceiling() {
    let stdout = measure(&["--threads", "2", "--json"]);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect(&stdout);
    let threads = json["threads"].as_array().expect(&stdout);
    assert_eq!(threads.len(), 2);
    for (tidx, thread) in threads.iter().enumerate() {
        assert_eq!(thread["thread"], tidx);
        assert_eq!(thread["bytes"], 1 << 24);
    }
    assert_eq!(json["bytes"], 2 << 24);
    assert_eq!(json["memcpy"]["bytes"], 2 << 24);
    assert!(json["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(json["verified"], true);
}

#[test]
fn a_run_without_a_peer_fails_in_time_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let _server = server(&socket, &["--memfd"]);
    let began = Instant::now();
    let output = run_bounded(
        IVLINK,
        &[
            "ntb",
            "perf",
            "-S",
            socket.to_str().unwrap(),
            "--run",
            "--timeout",
            "1s",
        ],
    );
    assert!(began.elapsed() < Duration::from_secs(8));
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no peer's link came up within 1.0s"),
        "{stderr}"
    );
}
