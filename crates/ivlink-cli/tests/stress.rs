//! `ivlink stress` end to end: peer processes flood each other through a channel;
//! the totals must show nothing lost, corrupted or reordered, also when one peer
//! is killed in the middle.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const IVLINK: &str = env!("CARGO_BIN_EXE_ivlink");

/// Runs `ivlink stress ARGS --json`: whether it succeeded, its standard output
/// (which must be pure JSON) and standard error (the progress lines).
fn stress(args: &[&str]) -> (bool, serde_json::Value, String) {
    let output = Command::new(IVLINK)
        .arg("stress")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run ivlink stress");
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    let totals: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "standard output is not pure JSON ({e}):\n{}\nstandard error:\n{errors}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.success(), totals, errors)
}

#[test]
fn three_peers_flooding_lose_corrupt_and_reorder_nothing() {
    let (ok, totals, text) = stress(&["--peers", "3", "--duration", "1s"]);
    assert!(ok, "{text}");
    for field in ["lost", "corrupted", "reordered", "failed_peers"] {
        assert_eq!(totals[field], 0, "{field} in {text}");
    }
    assert!(totals["received"].as_u64().unwrap() > 1000, "{text}");
    assert_eq!(
        totals["sent"], totals["received"],
        "every message sent arrived: {text}"
    );
    assert!(totals["latency_ns"]["samples"].as_u64().unwrap() > 0);
}

#[test]
fn the_others_carry_on_when_a_peer_is_killed() {
    let (ok, totals, text) = stress(&[
        "--peers",
        "3",
        "--duration",
        "2s",
        "--kill-one-after",
        "500ms",
    ]);
    assert!(ok, "{text}");
    // One numbering: the peer killed is the peer reported gone.
    let killed = text
        .lines()
        .find_map(|l| l.strip_prefix("stress: killed peer "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no kill line in {text}"));
    assert!(text.contains(" (SIGKILL) after 500ms"), "{text}");
    assert_eq!(totals["gone"].to_string(), format!("[{killed}]"), "{text}");
    for field in ["lost", "corrupted", "reordered", "failed_peers"] {
        assert_eq!(totals[field], 0, "{field} in {text}");
    }
    // Traffic with the killed peer is counted apart, so the totals balance.
    assert_eq!(totals["sent"], totals["received"], "{totals}");
    assert!(
        totals["in_flight_to_gone"].as_u64().unwrap() > 0,
        "{totals}"
    );
    assert!(
        totals["received_from_gone"].as_u64().unwrap() > 0,
        "{totals}"
    );
}

#[test]
fn ctrl_c_reports_the_totals_so_far() {
    let mut child = Command::new(IVLINK)
        .args(["stress", "--peers", "2", "--duration", "10m", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ivlink stress");
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    // The first progress line: messages are going through.
    let first = progress
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("] sent "));
    assert!(first.is_some(), "no progress line");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let rest: Vec<String> = progress.map_while(Result::ok).collect();
    let output = child.wait_with_output().unwrap();
    let totals: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(output.status.code(), Some(130), "{rest:?}");
    assert_eq!(totals["interrupted"], true, "{totals}");
    assert!(totals["sent"].as_u64().unwrap() > 0, "{totals}");
    assert_eq!(totals["sent"], totals["received"], "{totals}");
    for field in ["lost", "corrupted", "reordered", "failed_peers"] {
        assert_eq!(totals[field], 0, "{field} in {totals}");
    }
    assert!(
        rest.iter().any(|l| l.contains("interrupted after")),
        "{rest:?}"
    );
}

#[test]
fn the_text_summary_shows_latencies_in_readable_units() {
    let output = Command::new(IVLINK)
        .args(["stress", "--peers", "2", "--duration", "300ms"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let latency = text
        .lines()
        .find(|l| l.trim_start().starts_with("latency"))
        .unwrap_or_else(|| panic!("no latency line in {text}"));
    assert!(
        latency.contains(" µs") || latency.contains(" ms"),
        "{latency}"
    );
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let output = Command::new(IVLINK)
        .args([
            "stress",
            "--peers",
            "8",
            "--size",
            "64K",
            "--message-size",
            "32..4096",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("raise --size"));
    let output = Command::new(IVLINK)
        .args(["stress", "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(IVLINK)
        .args(["stress", "--duration", "0s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a run of no time is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("more than zero"));
}
