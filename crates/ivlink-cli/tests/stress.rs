//! `ivlink stress` end to end: peer processes flood each other through a channel;
//! the totals must show nothing lost, corrupted or reordered, also when one peer
//! is killed in the middle.

use std::process::{Command, Stdio};

const IVLINK: &str = env!("CARGO_BIN_EXE_ivlink");

fn stress(args: &[&str]) -> (bool, serde_json::Value, String) {
    let output = Command::new(IVLINK)
        .arg("stress")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run ivlink stress");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let json_start = text
        .find("{\n")
        .unwrap_or_else(|| panic!("no JSON in:\n{text}"));
    let totals: serde_json::Value =
        serde_json::from_str(&text[json_start..]).expect("valid JSON totals");
    (output.status.success(), totals, text)
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
    assert!(totals["latency"]["samples"].as_u64().unwrap() > 0);
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
    assert!(text.contains("killed peer process 2 (SIGKILL)"), "{text}");
    assert_eq!(totals["gone"].as_array().unwrap().len(), 1, "{text}");
    for field in ["lost", "corrupted", "reordered", "failed_peers"] {
        assert_eq!(totals[field], 0, "{field} in {text}");
    }
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
}
