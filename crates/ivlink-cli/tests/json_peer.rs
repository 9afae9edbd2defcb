//! `--json` of the peer commands over a real server: `dump`, `notify`, `format`,
//! `channel send`, `mailbox send` and `mailbox info` print one object; `listen`,
//! `channel recv` and `mailbox listen` print JSON lines, each with an `"event"`.
//! Standard output carries JSON only; the text reports stay as they were.

mod common;

use common::json::{JsonLines, object};
use common::{run, text};
use serde_json::Value;

fn server(socket: &std::path::Path) -> common::Running {
    common::server(socket, &["--memfd"])
}

#[test]
fn dump_notify_and_listen_report_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let mut listener = JsonLines::start(&[
        "listen",
        "-S",
        sock,
        "--json",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    let listening = listener.expect("listening");
    assert_eq!(listening["id"], 0);
    assert_eq!(listening["vectors"], 2);
    assert_eq!(listening["size"], 4194304);
    let quiet = JsonLines::start(&[
        "listen",
        "-S",
        sock,
        "--json",
        "--no-message",
        "--count",
        "1",
        "--timeout",
        "20",
    ]);
    let quiet_id = quiet.expect("listening")["id"].as_u64().unwrap();
    let joined = listener.expect("peer_joined");
    assert_eq!(joined["id"], quiet_id);
    assert_eq!(joined["vectors"], 2);

    let dump = object(&["dump", "-S", sock, "--json"]);
    let dump_id = dump["id"].as_u64().unwrap();
    assert_eq!(dump["vectors"], 2);
    assert_eq!(dump["region"]["size"], 4194304);
    assert!(dump["region"]["base_address"].as_u64().unwrap() > 0);
    let peers = dump["peers"].as_array().unwrap();
    assert!(
        peers.contains(&serde_json::json!({"id": 0, "vectors": 2})),
        "{dump}"
    );
    assert!(
        peers.contains(&serde_json::json!({"id": quiet_id, "vectors": 2})),
        "{dump}"
    );
    let transport = dump["transport"].as_str().unwrap();
    assert!(transport.contains(sock), "{dump}");
    assert_eq!(listener.expect("peer_joined")["id"], dump_id);
    assert_eq!(
        listener.expect("peer_left"),
        serde_json::json!({"event": "peer_left", "id": dump_id})
    );

    // The text report is as it was, line for line.
    let dump_text = run(&["dump", "-S", sock]);
    let dump_text = String::from_utf8(dump_text.stdout).unwrap();
    let lines: Vec<&str> = dump_text.lines().collect();
    assert_eq!(lines.len(), 6, "{dump_text}");
    assert_eq!(lines[0], "IVshmem up and running: ");
    assert!(
        lines[1].starts_with("\tShared memory: 0x") && lines[1].ends_with(" of size 4194304 bytes"),
        "{dump_text}"
    );
    assert!(lines[2].starts_with("\tPeer id: "), "{dump_text}");
    assert_eq!(lines[3], "\tNotification vectors: 2");
    assert_eq!(
        lines[4],
        format!("\tPeers: 0 (2 vectors), {quiet_id} (2 vectors)")
    );
    assert_eq!(lines[5], format!("\tTransport: {transport}"));

    let sent = object(&["notify", "-S", sock, "0", "1", "tab\there", "--json"]);
    assert_eq!(sent["peer"], 0);
    assert_eq!(sent["vector"], 1);
    assert_eq!(sent["message"], "tab\there");
    assert_eq!(sent["message_len"], 8);
    assert_eq!(sent["offset"], 0);
    assert_eq!(sent["notified"], true);
    assert_eq!(sent["sent"], 1);
    assert_eq!(sent["continuous"], false);
    let heard = listener.expect("notification");
    assert_eq!(heard["vector"], 1);
    assert_eq!(heard["count"], 1);
    // Escaped as the text report shows it: the region is hostile input.
    assert_eq!(heard["message"], "tab\\there");

    let rung = object(&["notify", "-S", sock, &quiet_id.to_string(), "0", "--json"]);
    assert_eq!(rung["message"], Value::Null);
    assert_eq!(rung["message_len"], 0);
    let heard = quiet.expect("notification");
    assert_eq!(heard["vector"], 0);
    assert_eq!(heard["message"], Value::Null);

    let repeated = object(&[
        "notify",
        "-S",
        sock,
        "0",
        "0",
        "again",
        "--continuous",
        "--count",
        "3",
        "--interval",
        "1ms",
        "--json",
    ]);
    assert_eq!(repeated["sent"], 3);
    assert_eq!(repeated["continuous"], true);
    let heard = listener.expect("notification");
    assert_eq!(heard["vector"], 0);
    assert_eq!(heard["message"], "again");
    listener.finish();
}

#[test]
fn listen_without_a_doorbell_reports_region_changes_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("region");
    std::fs::write(&file, vec![0u8; 65536]).unwrap();
    let path = file.to_str().unwrap();
    let mut listener = JsonLines::start(&[
        "listen", "--file", path, "--id", "1", "--count", "1", "--json",
    ]);
    assert_eq!(listener.expect("listening")["size"], 65536);
    let sent = object(&["notify", "--file", path, "1", "0", "polled", "--json"]);
    assert_eq!(sent["notified"], false);
    assert_eq!(
        listener.expect("region_changed"),
        serde_json::json!({"event": "region_changed", "message": "polled"})
    );
    assert!(listener.finish().is_empty());
}

#[test]
fn format_reports_in_json_and_asks_on_standard_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let formatted = object(&[
        "format",
        "-S",
        sock,
        "--yes",
        "--json",
        "--max-sections",
        "8",
    ]);
    assert_eq!(formatted["size"], 4194304);
    assert_eq!(formatted["directory_offset"], 4096);
    assert_eq!(formatted["max_sections"], 8);
    assert_eq!(formatted["message_area_len"], 4096);
    assert!(formatted["transport"].as_str().unwrap().contains(sock));

    // Unconfirmed: an error on standard error, nothing on standard output.
    let refused = run(&["format", "-S", sock, "--json"]);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "{}", text(&refused));
    assert!(
        text(&refused).contains("not formatting without confirmation"),
        "{}",
        text(&refused)
    );

    let formatted = run(&["format", "-S", sock, "--yes"]);
    assert_eq!(
        String::from_utf8(formatted.stdout).unwrap(),
        "formatted the 4194304-byte region: an empty directory at offset 4096 (64 entries); \
         the first 4096 bytes are the message area\n"
    );
}

#[test]
fn channel_send_and_recv_report_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let mut receiver = JsonLines::start(&[
        "channel",
        "recv",
        "-S",
        sock,
        "demo",
        "--json",
        "--count",
        "3",
        "--timeout",
        "20",
    ]);
    assert_eq!(
        receiver.expect("receiving"),
        serde_json::json!({"event": "receiving", "id": 0, "channel": "demo", "slot": 0})
    );
    let sent = object(&[
        "channel",
        "send",
        "-S",
        sock,
        "demo",
        "--to",
        "0",
        "hello",
        "wide\u{1b}",
        "--json",
    ]);
    assert_eq!(sent["channel"], "demo");
    assert_eq!(sent["to"], 0);
    assert_eq!(sent["messages"], 2);
    assert_eq!(sent["bytes"], 10);
    let sender = sent["from"].clone();
    assert!(sender.is_u64(), "{sent}");
    // The old top-level spelling shares the options.
    let by_old = object(&["send", "-S", sock, "demo", "--to", "0", "old", "--json"]);
    assert_eq!(by_old["messages"], 1);

    // Senders are served in turn, so only each sender's own order is fixed.
    let received: Vec<Value> = (0..3).map(|_| receiver.expect("message")).collect();
    let from_sender: Vec<&Value> = received.iter().filter(|m| m["from"] == sender).collect();
    assert_eq!(
        from_sender,
        [
            &serde_json::json!({"event": "message", "from": sender, "len": 5, "text": "hello"}),
            // Escaped as the text report shows it.
            &serde_json::json!({"event": "message", "from": sender, "len": 5, "text": "wide\\u{1b}"}),
        ],
        "{received:?}"
    );
    assert!(received.iter().any(|m| m["text"] == "old"), "{received:?}");
    assert!(receiver.finish().is_empty());
}

#[test]
fn mailbox_send_listen_and_info_report_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let mut listener = JsonLines::start(&[
        "mailbox",
        "listen",
        "-S",
        sock,
        "--json",
        "--max-data",
        "512",
        "--ids",
        "16",
        "--count",
        "3",
        "--timeout",
        "20",
    ]);
    assert_eq!(
        listener.expect("listening"),
        serde_json::json!({"event": "listening", "id": 0, "mailbox": "ipm", "vector": 0, "slot": 0})
    );
    // A plain listener stands for a Zephyr IPM guest: connected, no member.
    let guest = JsonLines::start(&["listen", "-S", sock, "--json", "--timeout", "20"]);
    let guest_id = guest.expect("listening")["id"].to_string();

    let info = object(&["ipm", "info", "-S", sock, "--json"]);
    assert_eq!(info["mailbox"], "ipm");
    assert_eq!(
        info["limits"],
        serde_json::json!({
            "max_data": 512, "ids": 16, "max_id": 15,
            "vector": 0, "completion_vector": 1, "members": 8,
        })
    );
    assert_eq!(info["members"], serde_json::json!([{"id": 0, "slot": 0}]));

    let sent = object(&[
        "mailbox", "send", "-S", sock, "0", "hi\n", "--id", "3", "--json",
    ]);
    assert_eq!(
        sent,
        serde_json::json!({
            "peer": 0, "mailbox": "ipm", "delivery": "message",
            "id": 3, "data_len": 3, "taken": false,
        })
    );
    let message = listener.expect("message");
    assert_eq!(message["id"], 3);
    assert_eq!(message["data"], "hi\\n");
    assert_eq!(message["data_len"], 3);
    assert!(message["from"].is_u64(), "{message}");

    let waited = object(&[
        "mailbox", "send", "-S", sock, "0", "done?", "--id", "7", "--wait", "--json",
    ]);
    assert_eq!(waited["taken"], true);
    let message = listener.expect("message");
    assert_eq!(message["id"], 7);
    assert_eq!(message["data"], "done?");

    let bare = object(&[
        "mailbox", "send", "-S", sock, &guest_id, "--id", "9", "--json",
    ]);
    assert_eq!(bare["delivery"], "bare_doorbell");
    assert_eq!(bare["id"], Value::Null);
    assert_eq!(bare["data_len"], 0);
    assert_eq!(guest.expect("notification")["vector"], 0);

    // Zephyr's IPM only rings vector 0: a bare doorbell to the member.
    let rung = run(&["notify", "-S", sock, "0", "0"]);
    assert!(rung.status.success(), "{}", text(&rung));
    assert_eq!(
        listener.expect("doorbell"),
        serde_json::json!({"event": "doorbell"})
    );
    assert!(listener.finish().is_empty());
}
