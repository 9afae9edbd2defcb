//! `ivlink mailbox` (alias `ivlink ipm`) end to end over a real server: messages with data, a send that
//! waits for completion, a bare doorbell (Zephyr's notify-only IPM) delivered as an
//! empty notification, limits shown and enforced.

mod common;

use std::time::{Duration, Instant};

use common::{Running, run, text};

const RECEIVED: &str = "Received IPM notification over IVSHMEM";

fn server(socket: &std::path::Path) -> Running {
    common::server(socket, &["--memfd"])
}

#[test]
fn ipm_messages_completions_and_bare_doorbells_reach_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let mut listener = Running::start(&["mailbox", "listen", "-S", sock, "--count", "4"]);
    listener.expect_line("peer 0 listening on mailbox 'ipm' (vector 0");

    let info = run(&["mailbox", "info", "-S", sock]);
    let info_text = text(&info);
    assert!(info.status.success(), "{info_text}");
    assert!(
        info_text.contains("max data size: 1024 bytes"),
        "{info_text}"
    );
    assert!(info_text.contains("ids: 256 (max id 255)"), "{info_text}");
    assert!(
        info_text.contains("members: 1 of 8: 0 (slot 0)"),
        "{info_text}"
    );

    let sent = run(&["mailbox", "send", "-S", sock, "0", "hello", "--id", "3"]);
    assert!(sent.status.success(), "{}", text(&sent));
    assert!(
        text(&sent).contains("IPM notification sent to peer 0 (id 3, 5 bytes)"),
        "{}",
        text(&sent)
    );
    let line = listener.expect_line(RECEIVED);
    assert!(line.contains("id 3, 5 bytes: hello"), "{line}");
    assert!(line.contains("from peer"), "{line}");

    let waited = run(&[
        "mailbox", "send", "-S", sock, "0", "done?", "--id", "7", "--wait",
    ]);
    assert!(waited.status.success(), "{}", text(&waited));
    assert!(
        text(&waited).contains("peer 0 took the message"),
        "{}",
        text(&waited)
    );
    assert!(
        listener
            .expect_line(RECEIVED)
            .contains("id 7, 5 bytes: done?")
    );

    // Zephyr's IPM only rings vector 0: a bare doorbell is an empty notification.
    let rung = run(&["notify", "-S", sock, "0", "0"]);
    assert!(rung.status.success(), "{}", text(&rung));
    assert_eq!(listener.expect_line(RECEIVED), RECEIVED);

    // Data over the limit is refused before anything is sent.
    let big = "x".repeat(1025);
    let refused = run(&["mailbox", "send", "-S", sock, "0", &big, "--timeout", "2"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused)
            .contains("data of 1025 bytes is larger than mailbox 'ipm' allows (1024 bytes max)"),
        "{}",
        text(&refused)
    );
    let bad_id = run(&[
        "ipm",
        "send",
        "-S",
        sock,
        "0",
        "--id",
        "256",
        "--timeout",
        "2",
    ]);
    assert!(!bad_id.status.success());
    assert!(
        text(&bad_id).contains("id 256 is out of range"),
        "{}",
        text(&bad_id)
    );

    // An empty message with an id, no data.
    let empty = run(&["mailbox", "send", "-S", sock, "0", "--id", "1"]);
    assert!(empty.status.success(), "{}", text(&empty));
    assert!(listener.expect_line(RECEIVED).contains("id 1, 0 bytes: "));
    assert!(listener.wait_exit().success());
}

#[test]
fn ipm_send_to_an_absent_peer_says_not_connected_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let started = Instant::now();
    // The default timeout (10 s) is what it used to wait for the peer to join.
    let absent = run(&["ipm", "send", "-S", sock, "5", "x"]);
    assert!(!absent.status.success());
    assert!(
        text(&absent).contains("cannot send the IPM message to peer 5: peer 5 is not connected"),
        "{}",
        text(&absent)
    );
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
}

#[test]
fn a_connected_peer_outside_the_mailbox_gets_zephyrs_bare_doorbell_and_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    // A plain listener stands for a Zephyr IPM guest: a peer that never joins.
    let listener = Running::start(&["listen", "-S", sock, "--no-message"]);
    listener.expect_line("Listening as peer 0");

    let rung = run(&["ipm", "send", "-S", sock, "0", "--id", "9"]);
    assert!(rung.status.success(), "{}", text(&rung));
    assert!(
        text(&rung).contains("IPM doorbell rung on peer 0 (vector 0"),
        "{}",
        text(&rung)
    );
    listener.expect_line("vector 0: received IRQ");

    let started = Instant::now();
    let refused = run(&["ipm", "send", "-S", sock, "0", "hello"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused)
            .contains("peer 0 is a notify-only IPM peer (no member of ivlink mailbox 'ipm')"),
        "{}",
        text(&refused)
    );
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
}

#[test]
fn mailbox_and_its_ipm_alias_reach_the_same_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let listener = Running::start(&["mailbox", "listen", "-S", sock, "--count", "2"]);
    listener.expect_line("peer 0 listening on mailbox 'ipm'");
    for (verb, data) in [("ipm", "by alias"), ("mailbox", "by name")] {
        let sent = run(&[verb, "send", "-S", sock, "0", data, "--id", "1"]);
        assert!(sent.status.success(), "{verb}: {}", text(&sent));
        let line = listener.expect_line(RECEIVED);
        assert!(line.ends_with(data), "{verb}: {line}");
    }
    let info = run(&["ipm", "info", "-S", sock]);
    assert!(text(&info).contains("mailbox 'ipm'"), "{}", text(&info));
}
