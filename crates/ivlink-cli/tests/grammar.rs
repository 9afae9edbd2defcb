//! One grammar for option values in every command: durations with units (a bare
//! number is seconds), sizes with K/M/G/T, the peer's own id as `--self-id`, and
//! refusals that say in one line what is wrong. Servers are private (a memfd and
//! a socket in a temporary directory).

mod common;

use std::time::{Duration, Instant};

use common::{Running, run, text};

fn server(socket: &std::path::Path) -> Running {
    common::server(socket, &["--memfd", "-l", "16M"])
}

#[test]
fn notify_runs_for_a_duration_with_a_unit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let listener = Running::start(&["listen", "-S", sock, "--timeout", "20s"]);
    listener.expect_line("Listening as peer 0");
    let started = Instant::now();
    let sent = run(&[
        "notify",
        "-S",
        sock,
        "0",
        "0",
        "tick",
        "--continuous",
        "--duration",
        "2s",
        "--interval",
        "500ms",
        "--setup-timeout",
        "5s",
    ]);
    let took = started.elapsed();
    assert!(sent.status.success(), "{}", text(&sent));
    assert!(text(&sent).contains("Stopped after"), "{}", text(&sent));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(15),
        "took {took:?}"
    );
    listener.expect_line("received IRQ and full message: tick");
}

#[test]
fn listen_gives_up_after_a_timeout_in_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let started = Instant::now();
    let listened = run(&["listen", "-S", sock, "--timeout", "500ms"]);
    assert!(!listened.status.success(), "{}", text(&listened));
    assert!(
        text(&listened).contains("no notification within 500ms"),
        "{}",
        text(&listened)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A bare number is still seconds.
    let listened = run(&["listen", "-S", sock, "--timeout", "0.2"]);
    assert!(
        text(&listened).contains("no notification within 200ms"),
        "{}",
        text(&listened)
    );
}

#[test]
fn a_channel_takes_its_ring_capacity_with_a_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let shape = ["--ring-capacity", "1M", "--members", "2", "--spin", "10us"];
    let mut recv = vec!["channel", "recv", "big", "-S", sock, "--count", "1"];
    recv.extend_from_slice(&["--timeout", "20s"]);
    recv.extend_from_slice(&shape);
    let receiver = Running::start(&recv);
    receiver.expect_line("peer 0 receiving on channel 'big'");
    let mut send = vec!["channel", "send", "big", "-S", sock, "--to", "0"];
    send.extend_from_slice(&["--timeout", "10s", "hello"]);
    send.extend_from_slice(&shape);
    let sent = run(&send);
    assert!(sent.status.success(), "{}", text(&sent));
    receiver.expect_line("from peer 1: hello");
    let inspected = run(&["inspect", "-S", sock, "--json"]);
    let json = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        json.contains("\"capacity\": 1048576"),
        "the channel's rings are not 1M:\n{json}"
    );
}

#[test]
fn the_own_id_is_self_id_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("region");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let path = file.to_str().unwrap();
    for flag in ["--self-id", "--id"] {
        let dump = run(&["dump", "--file", path, flag, "3"]);
        assert!(
            text(&dump).contains("Peer id: 3"),
            "{flag}: {}",
            text(&dump)
        );
    }
    // In `mailbox send`, --id is the message id and the own id only --self-id.
    let help = text(&run(&["ipm", "send", "--help"]));
    assert!(help.contains("--self-id <ID>"), "{help}");
    assert!(help.contains("--id <N>"), "{help}");
    let listener = Running::start(&[
        "mailbox",
        "listen",
        "--file",
        path,
        "--self-id",
        "2",
        "--count",
        "1",
        "--timeout",
        "20s",
    ]);
    listener.expect_line("peer 2 listening on mailbox 'ipm'");
    let sent = run(&[
        "mailbox",
        "send",
        "--file",
        path,
        "--self-id",
        "1",
        "--id",
        "5",
        "2",
        "hello",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    let line = listener.expect_line("Received IPM notification");
    assert!(line.contains("from peer 1, id 5, 5 bytes: hello"), "{line}");
}

#[test]
fn mailbox_help_says_what_info_shows() {
    let help = text(&run(&["ipm", "--help"]));
    let info = help
        .lines()
        .find(|l| l.trim_start().starts_with("info"))
        .unwrap_or_else(|| panic!("no info line:\n{help}"));
    assert!(
        info.contains("limits") && info.contains("members"),
        "{info}"
    );
}

#[test]
fn bad_values_are_refused_in_one_line_that_says_why() {
    for (args, why) in [
        (
            &["notify", "--duration", "2x", "0", "0"][..],
            "unknown unit 'x'",
        ),
        (
            &["notify", "--continuous", "--interval", "100", "0", "0"],
            "give a unit, e.g. 100ms",
        ),
        (&["notify", "70000", "0"], "too large (at most 65535)"),
        (&["notify", "x", "0"], "not a number"),
        (
            &[
                "channel",
                "send",
                "c",
                "--to",
                "0",
                "x",
                "--ring-capacity",
                "1Q",
            ],
            "unknown suffix 'Q'",
        ),
        (&["listen", "--timeout", "-1"], "negative"),
        (&["listen", "--setup-timeout", "soon"], "not a number"),
        (
            &["mailbox", "send", "0", "--max-data", "5G"],
            "too large (at most 4294967295)",
        ),
        (
            &["stream", "s", "--peer", "1", "--spin", "50"],
            "give a unit, e.g. 50us",
        ),
        (&["stress", "--ring-capacity", "1M"], "unexpected argument"),
        (
            &["stress-peer", "--ring-capacity", "99999999999999999999"],
            "too large",
        ),
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains(why), "{args:?}: {stderr}");
        for jargon in ["float literal", "invalid digit", "target type"] {
            assert!(!stderr.contains(jargon), "{args:?}: {stderr}");
        }
    }
}
