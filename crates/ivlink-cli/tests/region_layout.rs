//! Who owns which bytes of a region: raw messages in the message area at offset 0,
//! the ivlink directory after it (or at 0 in regions of the first layout), and
//! `ivlink format` to take a region over. Real servers, real peers.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Running, run, server, text};

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

/// A directory header as the first releases wrote it, at offset 0.
fn first_layout_header(region_len: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"IVLINKD\x01");
    h.extend_from_slice(&1u32.to_le_bytes()); // version
    h.extend_from_slice(&2u32.to_le_bytes()); // ready
    h.extend_from_slice(&region_len.to_le_bytes());
    h.extend_from_slice(&8u32.to_le_bytes()); // max_sections
    h.extend_from_slice(&0u32.to_le_bytes()); // section_count
    h.extend_from_slice(&4096u64.to_le_bytes()); // next_free
    h.resize(64 + 8 * 64, 0);
    h
}

/// The peer id a `recv` prints once it receives.
fn receiver_id(recv: &Running) -> String {
    let line = recv.expect_line("receiving on channel");
    line.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn notify_then_recv_in_the_readme_order_both_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let shm = dir.path().join("shm");
    let _server = server(&socket, &["--shm-file", shm.to_str().unwrap()]);
    let listener = Running::start(&["listen", "-S", sock]);
    listener.expect_line("Listening as peer 0");

    let sent = run(&["notify", "-S", sock, "0", "0", "hello zephyr"]);
    assert!(sent.status.success(), "{}", text(&sent));
    listener.expect_line("full message: hello zephyr");

    let recv = Running::start(&["channel", "recv", "demo", "-S", sock, "--count", "1"]);
    let id = receiver_id(&recv);
    let sent = run(&[
        "channel",
        "send",
        "demo",
        "-S",
        sock,
        "--to",
        &id,
        "after notify",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    recv.expect_line(": after notify");

    // And the other order: a message while the directory is in use.
    let sent = run(&["notify", "-S", sock, "0", "0", "hello again"]);
    assert!(sent.status.success(), "{}", text(&sent));
    listener.expect_line("full message: hello again");
    assert_eq!(read_at(&shm, 0, 12), b"hello again\0");
    let inspect = run(&["inspect", "-S", sock]);
    assert!(text(&inspect).contains("demo"), "{}", text(&inspect));
}

#[test]
fn notify_refuses_to_write_over_the_directory_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket, &["--memfd"]);
    let recv = Running::start(&["channel", "recv", "demo", "-S", sock, "--count", "1"]);
    recv.expect_line("peer 0 receiving on channel 'demo'");

    let cases = [
        vec!["--offset", "4096", "x"],
        vec!["--offset", "8192", "into the channel"],
    ];
    for case in &cases {
        let mut args = vec!["notify", "-S", sock, "0", "0"];
        args.extend_from_slice(case);
        let refused = run(&args);
        let all = text(&refused);
        assert!(!refused.status.success(), "{case:?}: {all}");
        assert!(all.contains("directory"), "{all}");
        assert!(all.contains("--force") && all.contains("--offset"), "{all}");
        assert_eq!(all.lines().count(), 1, "one line: {all}");
    }
    let long = "a".repeat(4096);
    let refused = run(&["notify", "-S", sock, "0", "0", &long]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("--force"), "{}", text(&refused));

    // The receiver never noticed.
    let sent = run(&[
        "channel",
        "send",
        "demo",
        "-S",
        sock,
        "--to",
        "0",
        "still fine",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    recv.expect_line(": still fine");
}

#[test]
fn notify_to_an_absent_peer_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let shm = dir.path().join("shm");
    let _server = server(&socket, &["--shm-file", shm.to_str().unwrap()]);
    let refused = run(&["notify", "-S", sock, "9", "0", "lost words"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("peer 9 is not connected"),
        "{}",
        text(&refused)
    );
    assert_eq!(read_at(&shm, 0, 16), [0u8; 16], "nothing was written");
    let _listener = Running::start(&["listen", "-S", sock]);
    _listener.expect_line("Listening as peer 1");
    let refused = run(&["notify", "-S", sock, "1", "7", "lost words"]);
    assert!(
        text(&refused).contains("has no vector 7"),
        "{}",
        text(&refused)
    );
    assert_eq!(read_at(&shm, 0, 16), [0u8; 16], "nothing was written");
}

#[test]
fn a_region_of_the_first_layout_still_works_and_format_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let len = 1u64 << 20;
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    write_at(&path, 0, &first_layout_header(len));
    let file = path.to_str().unwrap();

    let recv = Running::start(&[
        "channel", "recv", "demo", "--file", file, "--id", "1", "--count", "1",
    ]);
    recv.expect_line("peer 1 receiving on channel 'demo'");
    let sent = run(&[
        "channel", "send", "demo", "--file", file, "--id", "2", "--to", "1", "old",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    recv.expect_line("from peer 2: old");
    assert_eq!(&read_at(&path, 0, 8), b"IVLINKD\x01", "used where it is");

    let refused = run(&["notify", "--file", file, "1", "0", "hello"]);
    let all = text(&refused);
    assert!(!refused.status.success(), "{all}");
    assert!(all.contains("offset 0 (older layout)"), "{all}");
    assert!(all.contains("--force") && all.contains("--offset"), "{all}");

    let formatted = run(&["format", "--file", file, "--yes"]);
    assert!(formatted.status.success(), "{}", text(&formatted));
    assert_eq!(
        read_at(&path, 0, 64),
        [0u8; 64],
        "the old header is cleared"
    );
    assert_eq!(&read_at(&path, 4096, 8), b"IVLINKD\x01");
    let sent = run(&["notify", "--file", file, "1", "0", "hello"]);
    assert!(sent.status.success(), "{}", text(&sent));
}

/// Runs `format` until the server has noticed that `gone` peers left.
fn format_when_alone(sock: &str) -> std::process::Output {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let out = run(&["format", "-S", sock, "--yes"]);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn format_takes_over_a_foreign_region_but_not_from_under_live_peers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let shm = dir.path().join("shm");
    let _server = server(&socket, &["--shm-file", shm.to_str().unwrap()]);
    write_at(&shm, 4096, b"someone else's bytes");

    let refused = run(&["channel", "recv", "demo", "-S", sock, "--count", "1"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("`ivlink format`"),
        "{}",
        text(&refused)
    );

    let mut other = Running::start(&["listen", "-S", sock]);
    other.expect_line("Listening as peer 1");
    let refused = run(&["format", "-S", sock, "--yes"]);
    let all = text(&refused);
    assert!(!refused.status.success(), "{all}");
    assert!(
        all.contains("1 other peer(s) are connected (peer 1)") && all.contains("--force"),
        "{all}"
    );
    assert_eq!(&read_at(&shm, 4096, 7), b"someone", "untouched");

    other.signal(rustix::process::Signal::KILL);
    other.wait_exit();
    let unconfirmed = run(&["format", "-S", sock]);
    assert!(
        text(&unconfirmed).contains("--yes"),
        "{}",
        text(&unconfirmed)
    );
    let formatted = format_when_alone(sock);
    assert!(formatted.status.success(), "{}", text(&formatted));

    let recv = Running::start(&["channel", "recv", "demo", "-S", sock, "--count", "1"]);
    let id = receiver_id(&recv);
    let sent = run(&[
        "channel", "send", "demo", "-S", sock, "--to", &id, "ours now",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    recv.expect_line("ours now");
}

#[test]
fn format_with_force_goes_ahead_beside_a_connected_peer() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket, &["--memfd"]);
    let other = Running::start(&["listen", "-S", sock]);
    other.expect_line("Listening as peer 0");
    let formatted = run(&["format", "-S", sock, "--yes", "--force"]);
    assert!(formatted.status.success(), "{}", text(&formatted));
    assert!(
        text(&formatted).contains("an empty directory at offset 4096"),
        "{}",
        text(&formatted)
    );
}
