//! The `ivlink` binary end to end: test bed, server lifecycle, peer commands over a
//! real server and over a plain file, and clear errors for bad input.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{IVLINK, Running, WAIT, run, server, text};

#[test]
fn testbed_exchanges_messages_both_ways_and_exits_zero() {
    let output = run(&["testbed"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("testbed: OK: 2 peers exchanged 4 messages on 2 vector(s)"),
        "{all}"
    );
    assert!(
        all.contains("received IRQ and full message: message from peer 0 to peer 1 on vector 1"),
        "{all}"
    );
    assert!(
        all.contains("received IRQ and full message: message from peer 1 to peer 0 on vector 1"),
        "{all}"
    );
}

#[test]
fn testbed_with_three_peers_and_rounds() {
    let output = run(&["testbed", "--peers", "3", "--rounds", "2", "-n", "1"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("3 peers exchanged 6 messages"), "{all}");
}

#[test]
fn testbed_console_shows_the_register_dump_and_the_demo_lines_in_order() {
    let output = run(&["testbed", "--console", "--rounds", "3", "--interval", "5ms"]);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("[console device] VIRTIO_MMIO_MAGIC_VALUE: 0x74726976"),
        "{all}"
    );
    assert!(
        all.contains("[console device] Config Status DRIVER_OK"),
        "{all}"
    );
    let demo: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("[console device, stdout] "))
        .collect();
    assert_eq!(demo.len(), 3, "{all}");
    for line in &demo {
        assert!(
            line.ends_with("sending data over Virtio-MMIO Serial Port"),
            "{all}"
        );
    }
    assert!(
        all.contains("testbed: OK: the console device printed the register dump up to DRIVER_OK and the driver's 3 demo lines, in order"),
        "{all}"
    );
}

#[test]
fn testbed_console_fails_in_one_line_when_a_side_fails() {
    // A region too small for the console's directory: both sides refuse it.
    let output = run(&["testbed", "--console", "-l", "16", "--timeout", "5"]);
    assert!(!output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the console device process failed"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("testbed: OK"),
        "{}",
        text(&output)
    );
}

#[test]
fn testbed_console_needs_a_demo_line() {
    let output = run(&["testbed", "--console", "--rounds", "0"]);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert_eq!(all.lines().count(), 1, "{all}");
    assert!(
        all.contains("--console needs --rounds of 1 or more"),
        "{all}"
    );
}

#[test]
fn testbed_console_with_guests_wants_exactly_two() {
    // Refused before any guest boots, so stand-in image files do.
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = (dir.path().join("kernel"), dir.path().join("initrd"));
    std::fs::write(&kernel, b"").unwrap();
    std::fs::write(&initrd, b"").unwrap();
    let output = run(&[
        "testbed",
        "--guests",
        "3",
        "--console",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--work-dir",
        dir.path().join("work").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", text(&output));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the console demo runs between exactly 2 guests"),
        "{stderr}"
    );
}

#[test]
fn notify_reaches_listen_with_the_message_and_dump_shows_peers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let shm = dir.path().join("shm");
    let _server = server(&socket, &["--shm-file", shm.to_str().unwrap()]);
    let listener = Running::start(&["listen", "-S", sock, "--count", "2"]);
    listener.expect_line("Listening as peer 0 (2 vector(s), 4194304 bytes)");

    let dump = run(&["dump", "-S", sock]);
    let dump_text = text(&dump);
    assert!(dump.status.success(), "{dump_text}");
    assert!(
        dump_text.contains("IVshmem up and running: \n"),
        "{dump_text}"
    );
    assert!(dump_text.contains("\tShared memory: 0x"), "{dump_text}");
    assert!(dump_text.contains("of size 4194304 bytes"), "{dump_text}");
    assert!(dump_text.contains("\tPeer id: 1\n"), "{dump_text}");
    assert!(
        dump_text.contains("\tNotification vectors: 2\n"),
        "{dump_text}"
    );
    assert!(dump_text.contains("\tPeers: 0 (2 vectors)"), "{dump_text}");

    let sent = run(&[
        "notify",
        "-S",
        sock,
        "0",
        "1",
        "message from peer 2 to peer 0",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    assert!(
        text(&sent).contains("Message message from peer 2 to peer 0 sent to peer 0 on vector 1")
    );
    listener.expect_line("vector 1: received IRQ and full message: message from peer 2 to peer 0");

    let sent = run(&[
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
    ]);
    assert!(
        text(&sent).contains("Stopped after 3 message(s)"),
        "{}",
        text(&sent)
    );
    listener.expect_line("received IRQ and full message: again");
}

#[test]
fn notify_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let absent = run(&["notify", "-S", sock, "0", "0", "x"]);
    assert!(!absent.status.success());
    assert!(
        text(&absent).contains("cannot connect to the ivshmem server at"),
        "{}",
        text(&absent)
    );

    let _server = server(&socket, &["--memfd"]);
    let unknown = run(&["notify", "-S", sock, "9", "0", "x"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("peer 9 is not connected"),
        "{}",
        text(&unknown)
    );
    let wide = run(&["notify", "-S", sock, "0", "300"]);
    assert!(text(&wide).contains("above 255"), "{}", text(&wide));
    let bad = run(&["notify", "-S", sock, "zero", "0"]);
    assert_eq!(bad.status.code(), Some(2), "clap usage error");
    assert!(
        text(&bad).contains("invalid value 'zero'"),
        "{}",
        text(&bad)
    );
}

#[test]
fn server_refuses_a_live_socket_replaces_a_stale_one_and_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let shm = dir.path().join("shm");
    let shm_arg = shm.to_str().unwrap();
    // A stale socket file from a crashed server.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut first = server(&socket, &["--shm-file", shm_arg, "--mode", "0660"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
    assert_eq!(
        std::fs::metadata(&shm).unwrap().permissions().mode() & 0o777,
        0o660
    );

    let second = run(&["server", "-F", "-S", socket.to_str().unwrap(), "--memfd"]);
    assert!(!second.status.success());
    assert!(
        text(&second).contains("a server is already listening on"),
        "{}",
        text(&second)
    );

    let listener = Running::start(&["listen", "-S", socket.to_str().unwrap()]);
    listener.expect_line("Listening as peer");
    first.signal(rustix::process::Signal::TERM);
    assert!(first.wait_exit().success());
    listener.expect_line("the server went away");
    assert!(!socket.exists(), "socket removed");
    assert!(shm.exists(), "shared memory kept, as QEMU's server does");
}

#[test]
fn server_unlinks_its_shared_memory_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let shm = dir.path().join("shm");
    let mut server = server(
        &socket,
        &[
            "--shm-file",
            shm.to_str().unwrap(),
            "--unlink-shm",
            "-l",
            "3M",
        ],
    );
    assert_eq!(
        std::fs::metadata(&shm).unwrap().len(),
        4 << 20,
        "rounded up to a power of two"
    );
    server.signal(rustix::process::Signal::INT);
    assert!(server.wait_exit().success());
    assert!(!shm.exists());
}

#[test]
fn server_logs_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let server = server(&socket, &["--memfd", "--log-format", "json"]);
    let dump = run(&["dump", "-S", socket.to_str().unwrap()]);
    assert!(dump.status.success());
    let line = server.expect_line("new peer id = 0");
    assert!(
        line.starts_with('{') && line.contains("\"level\":\"INFO\""),
        "{line}"
    );
    assert!(line.contains("uid"), "credentials logged: {line}");
}

#[test]
fn bad_server_arguments_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let sock = sock.to_str().unwrap();
    let vectors = run(&["server", "-F", "-S", sock, "--memfd", "-n", "65"]);
    assert!(
        text(&vectors).contains("too many vectors: at most 64 per peer"),
        "{}",
        text(&vectors)
    );
    let size = run(&["server", "-F", "-S", sock, "--memfd", "-l", "4Q"]);
    assert!(text(&size).contains("invalid size '4Q'"), "{}", text(&size));
    let mode = run(&["server", "-F", "-S", sock, "--memfd", "--mode", "999"]);
    assert!(text(&mode).contains("invalid mode"), "{}", text(&mode));
    let group = run(&[
        "server",
        "-F",
        "-S",
        sock,
        "--memfd",
        "--group",
        "no-such-group-ivlink",
    ]);
    assert!(text(&group).contains("unknown group"), "{}", text(&group));
    let both = run(&["server", "-F", "-S", sock, "--memfd", "-m", "/tmp"]);
    assert!(!both.status.success());
    assert!(!Path::new(sock).exists());
}

#[test]
fn file_transport_writes_and_polls_without_a_doorbell() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("region");
    std::fs::write(&file, vec![0u8; 65536]).unwrap();
    let path = file.to_str().unwrap();
    let listener = Running::start(&["listen", "--file", path, "--id", "1", "--count", "1"]);
    listener.expect_line("Listening as peer 1 (0 vector(s), 65536 bytes)");
    let sent = run(&["notify", "--file", path, "1", "0", "polled hello"]);
    assert!(sent.status.success(), "{}", text(&sent));
    assert!(text(&sent).contains("has no doorbell"), "{}", text(&sent));
    listener.expect_line("region changed: received IRQ and full message: polled hello");
    let dump = run(&["dump", "--file", path]);
    assert!(
        text(&dump).contains("of size 65536 bytes"),
        "{}",
        text(&dump)
    );
    let missing = run(&["dump", "--file", dir.path().join("nope").to_str().unwrap()]);
    assert!(text(&missing).contains("cannot open"), "{}", text(&missing));
}

/// Clock ticks of CPU time a process has used (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_server_out_of_file_descriptors_refuses_connections_without_spinning() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let child = Command::new("prlimit")
        .args([
            "--nofile=24",
            "--",
            IVLINK,
            "server",
            "-F",
            "-S",
            sock,
            "--memfd",
            "-n",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed by pid however the test ends.
    let child = Guarded(child);
    let deadline = Instant::now() + WAIT;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Without vectors each peer costs the server one fd, so `accept` itself is
    // what runs out.
    let peers: Vec<_> = (0..30)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(child.0.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(child.0.id()) - before;
    assert!(
        spent < 50,
        "the server spun at the fd limit ({spent} ticks in 1 s)"
    );
    drop(peers);
    // Once fds are free again, peers are served.
    let deadline = Instant::now() + WAIT;
    loop {
        let dump = run(&["dump", "-S", sock]);
        if dump.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server never recovered: {}",
            text(&dump)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (by pid) and reaped when dropped.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn send_recv_and_inspect_over_a_named_channel() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket, &["--memfd"]);
    let receiver = Running::start(&[
        "channel",
        "recv",
        "-S",
        sock,
        "demo",
        "--count",
        "3",
        "--timeout",
        "20",
    ]);
    receiver.expect_line("peer 0 receiving on channel 'demo'");
    let first = run(&[
        "channel", "send", "-S", sock, "demo", "--to", "0", "hello", "from one",
    ]);
    assert!(first.status.success(), "{}", text(&first));
    let second = run(&[
        "channel", "send", "-S", sock, "demo", "--to", "0", "from two",
    ]);
    assert!(second.status.success(), "{}", text(&second));
    // Senders are served in turn, so only each sender's own order is fixed.
    let lines: Vec<String> = (0..3).map(|_| receiver.expect_line("from peer ")).collect();
    let from_one: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("from peer 1: "))
        .collect();
    assert_eq!(from_one.len(), 2, "{lines:?}");
    assert!(
        from_one[0].ends_with("hello") && from_one[1].ends_with("from one"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("from peer 2: from two")),
        "{lines:?}"
    );

    let inspect = run(&["inspect", "-S", sock]);
    let report = text(&inspect);
    assert!(inspect.status.success(), "{report}");
    assert!(report.contains("layout ivlink"), "{report}");
    assert!(report.contains("demo"), "{report}");
    assert!(
        report.contains("members (slot:peer): 0:0 1:1 2:2"),
        "{report}"
    );
    assert!(report.contains("inconsistencies: none"), "{report}");
    let json = run(&["inspect", "-S", sock, "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["sections"][0]["name"], "demo");
}

#[test]
fn channel_send_and_recv_answer_to_the_old_top_level_spelling_too() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket, &["--memfd"]);
    let old = Running::start(&[
        "recv",
        "-S",
        sock,
        "demo",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    old.expect_line("peer 0 receiving on channel 'demo'");
    let new = Running::start(&[
        "channel",
        "recv",
        "-S",
        sock,
        "demo",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    new.expect_line("peer 1 receiving on channel 'demo'");
    for (to, receiver) in [("0", &old), ("1", &new)] {
        let by_old = run(&["send", "-S", sock, "demo", "--to", to, "old spelling"]);
        assert!(by_old.status.success(), "{}", text(&by_old));
        receiver.expect_line("old spelling");
        let by_new = run(&["channel", "send", "-S", sock, "demo", "--to", to, "new one"]);
        assert!(by_new.status.success(), "{}", text(&by_new));
        receiver.expect_line("new one");
    }
}

#[test]
fn help_groups_the_verbs_per_protocol_and_hides_the_old_spelling() {
    let help = text(&run(&["--help"]));
    for verb in ["channel", "mailbox", "stream", "rpmsg"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(verb)),
            "{verb} missing: {help}"
        );
    }
    assert!(help.contains("[alias: ipm]"), "{help}");
    for hidden in ["send", "recv"] {
        assert!(
            !help.lines().any(|l| l.trim_start().starts_with(hidden)),
            "{hidden} shown: {help}"
        );
    }
    let channel = text(&run(&["channel", "--help"]));
    assert!(
        channel.contains("send") && channel.contains("recv"),
        "{channel}"
    );
}

#[test]
fn inspect_reports_a_raw_region_and_a_damaged_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("region");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..12].copy_from_slice(b"hello world\0");
    std::fs::write(&file, &bytes).unwrap();
    let path = file.to_str().unwrap();
    let raw = run(&["inspect", "--file", path]);
    assert!(raw.status.success(), "{}", text(&raw));
    assert!(text(&raw).contains("layout raw"), "{}", text(&raw));
    assert!(text(&raw).contains("\"hello world\""), "{}", text(&raw));

    // A channel made over the file, then a hostile write into a ring's head.
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let receiver = Running::start(&[
        "channel",
        "recv",
        "--file",
        path,
        "--id",
        "0",
        "chan",
        "--timeout",
        "1",
        "--count",
        "1",
    ]);
    receiver.expect_line("receiving on channel 'chan'");
    let sent = run(&[
        "channel", "send", "--file", path, "--id", "1", "chan", "--to", "0", "x",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    let clean = run(&["inspect", "--file", path]);
    assert!(clean.status.success(), "{}", text(&clean));
    let report: serde_json::Value =
        serde_json::from_slice(&run(&["inspect", "--file", path, "--json"]).stdout).unwrap();
    let offset = report["sections"][0]["offset"].as_u64().unwrap() as usize;
    let mut bytes = std::fs::read(&file).unwrap();
    // Every ring header starts with its head index; damage them all.
    let section = &mut bytes[offset..];
    for ring in 0..4 {
        let at = 128 + ring * (256 + 16384);
        section[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    std::fs::write(&file, &bytes).unwrap();
    let damaged = run(&["inspect", "--file", path]);
    assert!(!damaged.status.success(), "{}", text(&damaged));
    assert!(
        text(&damaged).contains("are inconsistent"),
        "{}",
        text(&damaged)
    );
}

// A start that fails must change nothing: the live server's region, its peers, its
// log, and no shared memory left behind.

const DROPIN_SERVER: &str = env!("CARGO_BIN_EXE_ivshmem-server");

/// Runs a server start that should fail (bounded, in case it does not).
fn run_server(args: &[&str]) -> std::process::Output {
    let mut all = vec!["server", "-F"];
    all.extend_from_slice(args);
    common::run_bounded(IVLINK, &all)
}

/// Runs the drop-in server in the foreground with `args`, bounded likewise.
fn run_dropin(args: &[&str]) -> std::process::Output {
    let mut all = vec!["-F"];
    all.extend_from_slice(args);
    common::run_bounded(DROPIN_SERVER, &all)
}

/// Asserts a failed start: non-zero, one line on stderr holding `needle`.
fn assert_refused(output: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", text(output));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

#[test]
fn a_second_server_leaves_the_live_region_and_its_peers_alone() {
    // Spelled as before `ivlink channel`: the top-level `send` and `recv` stay.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let other_socket = dir.path().join("other-sock");
    let other = other_socket.to_str().unwrap();
    let shm = common::ShmName::new("second-server");
    let _server = server(&socket, &["-M", &shm.0, "-l", "4M"]);
    let receiver = Running::start(&["recv", "-S", sock, "demo"]);
    receiver.expect_line("peer 0 receiving on channel 'demo'");

    // Same socket: refused before the shared memory is opened.
    assert_refused(
        &run_server(&["-S", sock, "-M", &shm.0, "-l", "2M"]),
        "a server is already listening on",
    );
    assert_refused(
        &run_dropin(&["-S", sock, "-M", &shm.0, "-l", "2M"]),
        "a server is already listening on",
    );
    // Another socket, same shared memory: in use, so never resized.
    for args in [vec![], vec!["--resize-shm"]] {
        let mut all = vec!["-S", other, "-M", &shm.0, "-l", "2M"];
        all.extend(args);
        assert_refused(&run_server(&all), "is in use");
    }
    assert_refused(
        &run_dropin(&["-S", other, "-M", &shm.0, "-l", "2M"]),
        "is in use",
    );
    assert!(!other_socket.exists(), "a failed start leaves no socket");
    assert_eq!(std::fs::metadata(shm.path()).unwrap().len(), 4 << 20);

    // No phantom peer: the next one gets id 1, and the live peer still receives.
    let dump = run(&["dump", "-S", sock]);
    assert!(text(&dump).contains("\tPeer id: 1\n"), "{}", text(&dump));
    let sent = run(&["send", "-S", sock, "--to", "0", "demo", "still here"]);
    assert!(sent.status.success(), "{}", text(&sent));
    receiver.expect_line("still here");
}

#[test]
fn a_socket_in_a_missing_directory_fails_before_any_shared_memory_exists() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing").join("sock");
    let sock = socket.to_str().unwrap();
    let shm = common::ShmName::new("missing-dir");
    assert_refused(&run_server(&["-S", sock, "-M", &shm.0]), "cannot bind");
    assert!(!shm.path().exists(), "ivlink server created {}", shm.0);
    assert_refused(&run_dropin(&["-S", sock, "-M", &shm.0]), "cannot bind");
    assert!(!shm.path().exists(), "ivshmem-server created {}", shm.0);

    // A daemon's pid file in a missing directory: refused just as early.
    let good_socket = dir.path().join("sock");
    let pidfile = dir.path().join("missing").join("pid");
    let daemon = common::run_bounded(
        DROPIN_SERVER,
        &[
            "-S",
            good_socket.to_str().unwrap(),
            "-p",
            pidfile.to_str().unwrap(),
            "-M",
            &shm.0,
        ],
    );
    assert_refused(&daemon, "cannot write pid file");
    assert!(!shm.path().exists(), "the daemon created {}", shm.0);
    assert!(!good_socket.exists(), "the daemon left its socket");
}

#[test]
fn existing_shared_memory_of_another_size_is_resized_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let file = dir.path().join("shm");
    let shm_file = file.to_str().unwrap();
    std::fs::write(&file, vec![7u8; 4 << 20]).unwrap();
    let refused = run_server(&["-S", sock, "--shm-file", shm_file, "-l", "2M"]);
    assert_refused(&refused, "already has 4194304 bytes, not 2097152");
    assert!(
        text(&refused).contains("--resize-shm"),
        "{}",
        text(&refused)
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 4 << 20);
    assert!(!socket.exists());
    let _resized = server(
        &socket,
        &["--shm-file", shm_file, "-l", "2M", "--resize-shm"],
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 << 20);
}

#[test]
fn a_full_server_refuses_with_a_clear_line_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let server = server(&socket, &["--memfd", "--max-peers", "1"]);
    let listener = Running::start(&["listen", "-S", sock]);
    listener.expect_line("Listening as peer 0");
    let refused = run(&["dump", "-S", sock]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("the server refused the connection (it may be full: see its log)"),
        "{}",
        text(&refused)
    );
    let line = server.expect_line("refusing a connection");
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn testbed_refuses_a_region_too_small_up_front() {
    let output = run(&["testbed", "-l", "16"]);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert_eq!(all.lines().count(), 1, "{all}");
    let needed = ivlink_lab::testbed::min_region_size(2);
    assert!(
        all.contains(&format!("16-byte region is too small for the test bed with 2 peers: it needs at least {needed} bytes")),
        "{all}"
    );
}

#[test]
fn testbed_says_a_bad_vector_count_once() {
    let output = run(&["testbed", "-n", "65"]);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert_eq!(
        all.matches("too many requested vectors").count(),
        1,
        "{all}"
    );
}

/// A reader that went away before the command wrote (`ivlink dump | head -0`)
/// ends it quietly with SIGPIPE's status, whether it writes with `writeln!`
/// (dump) or `println!` (inspect).
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket, &["--memfd"]);
    for args in [
        &["dump", "-S", sock][..],
        &["inspect", "-S", sock, "--json"],
    ] {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let output = Command::new(IVLINK)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(141),
            "{args:?}: {}",
            text(&output)
        );
        assert!(output.stderr.is_empty(), "{args:?}: {}", text(&output));
    }
}
