//! `ivlink inspect` on a live region (private server, `--memfd`) decodes a
//! mailbox (header, members, boxes with busy bit and completion), a stream
//! (header, liveness of each end, both byte rings) and a native RPMsg link
//! (generation, status, attachment, vrings), a native console (both sides'
//! header lines, the virtio-mmio register block, the queues) and an NTB switch
//! (ports, owners, links, registers, windows) in text and in JSON.

mod common;

use std::io::Write;
use std::process::ChildStdin;
use std::time::Instant;

use common::{Running, WAIT, run, text};
use rustix::process::Signal;
use serde_json::Value;

/// `ivlink inspect --json`, parsed; it must succeed (nothing inconsistent).
fn inspect_json(sock: &str) -> Value {
    let output = run(&["inspect", "-S", sock, "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The section named `name` of a JSON report.
fn section<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no section {name:?} in {report:#}"))
}

/// Runs `inspect --json` until `ready` holds for the report; returns it.
fn inspect_until(sock: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let report = inspect_json(sock);
        if ready(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "never {what}: {report:#}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The line of `report` that contains every one of `needles`.
fn line_with<'a>(report: &'a str, needles: &[&str]) -> &'a str {
    report
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{report}"))
}

/// The mailbox's non-free slots as (slot, state, peer).
fn slots(report: &Value) -> Vec<(u64, String, u64)> {
    section(report, "ipm")["mailbox"]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["slot"].as_u64().unwrap(),
                s["state"].as_str().unwrap().to_owned(),
                s["peer"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The mailbox's used boxes.
fn boxes(report: &Value) -> Vec<Value> {
    section(report, "ipm")["mailbox"]["boxes"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn inspect_decodes_a_live_mailbox_with_a_busy_box_and_a_waiting_sender() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = common::server(&socket, &["--memfd"]);
    let mut listener = Running::start(&["mailbox", "listen", "-S", sock, "--count", "2"]);
    listener.expect_line("peer 0 listening on mailbox 'ipm'");
    let sent = run(&["mailbox", "send", "-S", sock, "0", "hello", "--id", "3"]);
    assert!(sent.status.success(), "{}", text(&sent));
    listener.expect_line("id 3, 5 bytes: hello");

    // The sender has left; the listener frees its slot (it checks while idle).
    // Its box stays as it was: taken, with the last id and length.
    let report = inspect_until(sock, "the departed sender evicted", |r| slots(r).len() == 1);
    assert_eq!(slots(&report), [(0, "member".to_owned(), 0)]);
    let ipm = section(&report, "ipm");
    assert_eq!(ipm["kind"], "mailbox");
    assert_eq!(ipm["members"], serde_json::json!([[0, 0]]));
    assert_eq!(ipm["problems"].as_array().unwrap().len(), 0);
    let mailbox = &ipm["mailbox"];
    assert_eq!(mailbox["magic"], "MBX1");
    assert_eq!(
        (mailbox["state"].as_u64(), mailbox["state_name"].as_str()),
        (Some(2), Some("ready"))
    );
    assert_eq!(mailbox["max_members"], 8);
    assert_eq!(mailbox["max_data"], 1024);
    assert_eq!(mailbox["id_count"], 256);
    assert_eq!(mailbox["vector"], 0);
    assert_eq!(mailbox["completion_vector"], 1);
    let taken = boxes(&report);
    assert_eq!(taken.len(), 1, "{taken:#?}");
    assert_eq!(
        (taken[0]["from"].as_str(), taken[0]["to"].as_str()),
        (Some("slot 1"), Some("peer 0"))
    );
    assert_eq!(taken[0]["busy"], false);
    assert_eq!(taken[0]["completion"], "complete");
    assert_eq!(
        (taken[0]["id"].as_u64(), taken[0]["len"].as_u64()),
        (Some(3), Some(5))
    );
    let output = run(&["inspect", "-S", sock]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    line_with(
        &report,
        &[
            "slot 1 -> peer 0",
            "empty id 3",
            "len 5",
            "completion complete",
            "state 0x0",
        ],
    );

    // The listener is stopped: the next message stays in its box, and its
    // sender sleeps until it is taken.
    listener.signal(Signal::STOP);
    let mut waiter = Running::start(&[
        "mailbox",
        "send",
        "-S",
        sock,
        "0",
        "waiting",
        "--id",
        "7",
        "--wait",
        "--timeout",
        "20",
    ]);
    let report = inspect_until(sock, "a box awaiting completion", |r| {
        boxes(r).iter().any(|b| b["wants_completion"] == true)
    });
    // The waiter took the free slot 1 (emptying its boxes); its peer id depends
    // on how many inspections ran before.
    let members = slots(&report);
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!((members[1].0, members[1].1.as_str()), (1, "member"));
    let waiter_id = members[1].2;
    let busy = boxes(&report);
    assert_eq!(busy.len(), 1, "{busy:#?}");
    assert_eq!(busy[0]["from"], format!("peer {waiter_id}"));
    assert_eq!(busy[0]["to"], "peer 0");
    assert_eq!(
        (busy[0]["from_slot"].as_u64(), busy[0]["to_slot"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(busy[0]["busy"], true);
    assert_eq!(busy[0]["wants_completion"], true);
    assert_eq!(busy[0]["rung"], true);
    assert_eq!(busy[0]["completion"], "awaited");
    assert_eq!(busy[0]["state"], 7);
    assert_eq!(
        (busy[0]["id"].as_u64(), busy[0]["len"].as_u64()),
        (Some(7), Some(7))
    );

    let output = run(&["inspect", "-S", sock]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    line_with(
        &report,
        &[
            "mailbox: magic MBX1, state ready (2), 8 member slots, max data 1024 B, 256 ids",
            "vector 0, completion vector 1",
        ],
    );
    line_with(
        &report,
        &[&format!("members (slot:peer): 0:0 1:{waiter_id}")],
    );
    line_with(
        &report,
        &[
            &format!("peer {waiter_id} -> peer 0"),
            "busy  id 7",
            "len 7",
            "completion awaited",
            "rung true",
            "state 0x7",
        ],
    );
    assert!(report.contains("inconsistencies: none"), "{report}");

    // Woken, the listener takes the message; the waiting sender completes and
    // frees its slot.
    listener.signal(Signal::CONT);
    waiter.expect_line("peer 0 took the message");
    assert!(waiter.wait_exit().success());
    listener.expect_line("id 7, 7 bytes: waiting");
    assert!(listener.wait_exit().success());
    let report = inspect_json(sock);
    let done = boxes(&report);
    assert_eq!(done[0]["from"], "slot 1", "{done:#?}");
    assert_eq!(done[0]["busy"], false);
    assert_eq!(done[0]["completion"], "complete");
    assert_eq!(
        (done[0]["id"].as_u64(), done[0]["len"].as_u64()),
        (Some(7), Some(7))
    );
}

/// `ivlink stream pipe` to `peer`, with standard input from a pipe the test
/// writes to and drops to end it.
fn stream(sock: &str, peer: &str) -> (Running, ChildStdin) {
    Running::start_with_stdin(&[
        "stream",
        "pipe",
        "--peer",
        peer,
        "-S",
        sock,
        "-v",
        "--capacity",
        "1024",
    ])
}

fn send(stdin: &mut ChildStdin, line: &str) {
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

#[test]
fn inspect_decodes_a_live_stream_half_closed_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = common::server(&socket, &["--memfd"]);
    let (mut a, mut a_in) = stream(sock, "1");
    a.expect_line("peer 0 on stream 'pipe' to peer 1");
    let (mut b, mut b_in) = stream(sock, "0");
    b.expect_line("peer 1 on stream 'pipe' to peer 0");
    send(&mut a_in, "hello from A\n");
    b.expect_line("hello from A");
    drop(a_in); // A has nothing more to say: it closes its direction
    send(&mut b_in, "hi\n");
    a.expect_line("hi");

    let report = inspect_until(sock, "side A closed", |r| {
        section(r, "pipe")["stream"]["sides"][0]["state"] == "closed"
    });
    let pipe = section(&report, "pipe");
    assert_eq!(pipe["kind"], "stream");
    assert_eq!(pipe["problems"].as_array().unwrap().len(), 0);
    let stream = &pipe["stream"];
    assert_eq!(stream["magic"], "STM1");
    assert_eq!(stream["state_name"], "ready");
    assert_eq!(stream["capacity"], 1024);
    let sides: Vec<(&str, u64, u64, &str)> = stream["sides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["side"].as_str().unwrap(),
                s["peer"].as_u64().unwrap(),
                s["liveness"].as_u64().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(sides, [("A", 0, 2, "closed"), ("B", 1, 1, "connected")]);
    let rings: Vec<(&str, u64, u64, u64, u64)> = stream["rings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["from"].as_str().unwrap(),
                r["head"].as_u64().unwrap(),
                r["tail"].as_u64().unwrap(),
                r["fill"].as_u64().unwrap(),
                r["capacity"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rings,
        [
            ("A (peer 0)", 13, 13, 0, 1024),
            ("B (peer 1)", 3, 3, 0, 1024)
        ]
    );

    let output = run(&["inspect", "-S", sock]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    line_with(&report, &["pipe", "stream", "owner 0"]);
    line_with(
        &report,
        &["stream: magic STM1, state ready (2), capacity 1024 B per direction"],
    );
    line_with(&report, &["side A: peer 0", "closed (2)"]);
    line_with(&report, &["side B: peer 1", "connected (1)"]);
    line_with(
        &report,
        &[
            "A (peer 0) -> B (peer 1)",
            "head 13",
            "tail 13",
            "fill 0 B (0%)",
        ],
    );
    line_with(
        &report,
        &[
            "B (peer 1) -> A (peer 0)",
            "head 3",
            "tail 3",
            "want space false",
        ],
    );
    assert!(report.contains("inconsistencies: none"), "{report}");

    // B ends too: both processes exit, both sides read closed.
    drop(b_in);
    assert!(a.wait_exit().success());
    assert!(b.wait_exit().success());
    let report = inspect_json(sock);
    let states: Vec<&Value> = section(&report, "pipe")["stream"]["sides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["state"])
        .collect();
    assert_eq!(states, ["closed", "closed"]);
}

/// A 1 MiB region file holding channel "chan" with one message sent, over the
/// file transport (no server).
fn region_with_a_channel(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let file = dir.path().join("region");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let path = file.to_str().unwrap();
    let receiver = Running::start(&[
        "channel",
        "recv",
        "--file",
        path,
        "--id",
        "0",
        "chan",
        "--timeout",
        "5",
        "--count",
        "1",
    ]);
    receiver.expect_line("receiving on channel 'chan'");
    let sent = run(&[
        "channel", "send", "--file", path, "--id", "1", "chan", "--to", "0", "x",
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    receiver.expect_line("from peer 1: x");
    file
}

#[test]
fn a_scribbled_section_is_counted_once_and_the_verdict_matches_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = region_with_a_channel(&dir);
    let path = file.to_str().unwrap();
    let before: Value =
        serde_json::from_slice(&run(&["inspect", "--file", path, "--json"]).stdout).unwrap();
    let offset = before["sections"][0]["offset"].as_u64().unwrap() as usize;
    // Scribble over the first two ring headers' head indices.
    let mut bytes = std::fs::read(&file).unwrap();
    for ring in 0..2 {
        let at = offset + 128 + ring * (256 + 16384);
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    std::fs::write(&file, &bytes).unwrap();

    let output = run(&["inspect", "--file", path]);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let problems = report.lines().filter(|l| l.contains("PROBLEM:")).count();
    assert!(problems > 0, "{report}");
    let count = format!("{problems} inconsistenc");
    assert!(
        report.contains(&format!("inconsistencies: {problems}\n")),
        "{report}"
    );
    assert!(!report.contains("inconsistencies: none"), "{report}");
    assert!(report.contains(&format!("verdict: {count}")), "{report}");
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&count),
        "{}",
        text(&output)
    );

    let json = run(&["inspect", "--file", path, "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["problem_count"], problems, "{json:#}");
    assert_eq!(json["ok"], false);
    assert!(
        json["verdict"].as_str().unwrap().starts_with(&count),
        "{json:#}"
    );
}

#[test]
fn random_bytes_are_reported_as_unrecognised_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("region");
    // Deterministic noise (xorshift), starting as a string would never start.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes: Vec<u8> = (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    bytes[..4].copy_from_slice(&[0x8f, 0x01, 0xfe, 0x07]);
    std::fs::write(&file, &bytes).unwrap();
    let path = file.to_str().unwrap();

    let output = run(&["inspect", "--file", path]);
    let report = std::str::from_utf8(&output.stdout).expect("text, not binary noise");
    assert!(
        report.chars().all(|c| c == '\n' || !c.is_control()),
        "{report:?}"
    );
    assert!(!report.contains("raw message"), "{report}");
    assert!(!report.contains("inconsistencies: none"), "{report}");
    assert!(report.contains("layout unrecognised"), "{report}");
    assert!(
        report.contains(r#"first bytes: "\x8f\x01\xfe\x07"#),
        "{report}"
    );
    assert!(report.contains("verdict: unrecognised"), "{report}");
    assert_eq!(output.status.code(), Some(1), "{report}");

    let json = run(&["inspect", "--file", path, "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["layout"], "unrecognised", "{json:#}");
    assert_eq!(json["ok"], false);
    assert!(json["raw_message"].is_null(), "{json:#}");
}

#[test]
fn zephyrs_doorbell_text_is_a_known_foreign_layout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("region");
    let mut bytes = vec![0u8; 1 << 16];
    bytes[..12].copy_from_slice(b"hello world\0");
    std::fs::write(&file, &bytes).unwrap();
    let output = run(&["inspect", "--file", file.to_str().unwrap()]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains(r#"raw message at offset 0: "hello world""#),
        "{report}"
    );
    assert!(
        report.contains("verdict: a foreign layout: Zephyr's"),
        "{report}"
    );
}

/// The native RPMsg link of `report` (section "rpmsg").
fn rpmsg(report: &Value) -> &Value {
    &section(report, "rpmsg")["rpmsg"]
}

#[test]
fn inspect_decodes_a_live_native_rpmsg_link_and_a_host_restart_the_remote_missed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = common::server(&socket, &["--memfd"]);
    let mut echo = Running::start(&["rpmsg", "echo", "-S", sock, "-q"]);
    let sent = run(&["rpmsg", "send", "-S", sock, "hi", "3"]);
    assert!(sent.status.success(), "{}", text(&sent));

    // The remote returned every message: nothing is in flight to it.
    let report = inspect_until(sock, "vring 1 drained", |r| {
        rpmsg(r)["vrings"][1]["in_flight"] == 0
    });
    assert_eq!(section(&report, "rpmsg")["kind"], "rpmsg");
    let link = rpmsg(&report);
    assert_eq!(
        (
            link["magic"].as_str(),
            link["state_name"].as_str(),
            link["link"].as_str()
        ),
        (Some("RPM1"), Some("ready"), Some("up")),
        "{report:#}"
    );
    let generation = link["generation"].as_u64().unwrap();
    assert!(generation >= 1);
    assert_eq!(link["attached"].as_u64(), Some(generation));
    assert_eq!(
        (link["driver_ok"].as_bool(), link["needs_reset"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (link["num"].as_u64(), link["buf_size"].as_u64()),
        (Some(64), Some(512))
    );
    assert!(
        link["host_peer"].is_u64() && link["remote_peer"].is_u64(),
        "{link:#}"
    );
    assert_ne!(link["host_peer"], link["remote_peer"]);
    // Three messages and the host's announcement went to the remote.
    assert!(
        link["vrings"][1]["avail_idx"].as_u64().unwrap() >= 4,
        "{link:#}"
    );
    assert_eq!(link["vrings"][0]["direction"], "remote -> host");
    assert_eq!(link["in_flight"], serde_json::json!([]));
    let output = run(&["inspect", "-S", sock]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    line_with(
        &shown,
        &[
            "rpmsg: magic RPM1, state ready",
            &format!("generation {generation}"),
            "link up",
        ],
    );
    line_with(&shown, &["64 buffers of 512 B each way"]);
    line_with(&shown, &["host -> remote: avail idx", "in flight 0"]);

    // The remote dies; a new host starts the next generation, which nobody
    // attaches to.
    echo.signal(Signal::KILL);
    let _ = echo.wait_exit();
    let lone = run(&["rpmsg", "send", "-S", sock, "hi", "1", "--wait", "0.5"]);
    assert!(!lone.status.success(), "{}", text(&lone));
    let report = inspect_json(sock);
    let link = rpmsg(&report);
    assert_eq!(
        link["generation"].as_u64(),
        Some(generation + 1),
        "{link:#}"
    );
    assert_eq!(link["attached"].as_u64(), Some(generation));
    assert_eq!(link["link"], "waiting for the remote");
    assert_eq!(section(&report, "rpmsg")["problems"], serde_json::json!([]));
}

/// The console of `report` (section "console").
fn console(report: &Value) -> &Value {
    &section(report, "console")["console"]
}

#[test]
fn inspect_decodes_a_live_console_between_a_device_and_a_driver_process() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = common::server(&socket, &["--memfd", "-l", "4M"]);
    let device = Running::start(&["console", "device", "-S", sock, "--keep-open"]);
    let (mut driver_process, mut input) =
        Running::start_with_stdin(&["console", "driver", "-S", sock, "--keep-open"]);
    input.write_all(b"hello console\n").unwrap();
    input.flush().unwrap();
    device.expect_line("hello console");

    // The device counts the 14 bytes as taken once it comes back for more.
    let report = inspect_until(sock, "the driver's bytes taken", |r| {
        console(r)["header"]["sides"][1]["taken"] == 14
    });
    assert_eq!(section(&report, "console")["kind"], "console");
    assert_eq!(
        section(&report, "console")["problems"],
        serde_json::json!([])
    );
    let c = console(&report);
    assert_eq!(c["profile"], "native");
    let header = &c["header"];
    assert_eq!(
        (header["magic"].as_str(), header["state_name"].as_str()),
        (Some("VCN1"), Some("ready")),
        "{c:#}"
    );
    assert_eq!(
        (header["ports"].as_u64(), header["entries"].as_u64()),
        (Some(1), Some(32))
    );
    let (driver, device_line) = (&header["sides"][0], &header["sides"][1]);
    assert_eq!(
        (driver["side"].as_str(), device_line["side"].as_str()),
        (Some("driver"), Some("device"))
    );
    assert_eq!(driver["generation"], 1);
    assert_eq!(device_line["generation"], 1);
    assert!(
        driver["peer"].is_u64() && device_line["peer"].is_u64(),
        "{c:#}"
    );
    assert_ne!(driver["peer"], device_line["peer"]);
    assert_eq!(driver["ended_ports"], serde_json::json!([]));
    let registers = &c["registers"];
    assert_eq!(registers["magic"], 0x7472_6976);
    assert_eq!(
        (
            registers["version"].as_u64(),
            registers["device_id"].as_u64()
        ),
        (Some(2), Some(3))
    );
    assert!(
        registers["status_bits"]
            .as_array()
            .unwrap()
            .contains(&Value::from("DRIVER_OK")),
        "{registers:#}"
    );
    let queues = c["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[1]["name"], "port 0 transmitq");
    assert!(queues[1]["avail_idx"].as_u64().unwrap() >= 1, "{c:#}");

    let output = run(&["inspect", "-S", sock]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    line_with(
        &shown,
        &["console: setup VCN1 (ready)", "32 entries per queue"],
    );
    line_with(&shown, &["device: generation 1", "taken 14 B"]);
    line_with(
        &shown,
        &[
            "virtio-mmio block at",
            "MagicValue 0x74726976",
            "DeviceID 3",
        ],
    );
    line_with(&shown, &["Status 0x0f", "DRIVER_OK"]);
    line_with(&shown, &["config: cols", "max_nr_ports 1"]);
    line_with(
        &shown,
        &["port 0 receiveq", "(device -> driver)", "outstanding"],
    );

    // The driver is killed and another takes its place: the driver's line
    // counts a second start and the device serves it.
    driver_process.signal(Signal::KILL);
    let _ = driver_process.wait_exit();
    drop(input);
    let _again = Running::start(&["console", "driver", "-S", sock, "--keep-open"]);
    let report = inspect_until(sock, "the second driver up", |r| {
        let c = console(r);
        c["header"]["sides"][0]["generation"] == 2
            && c["registers"]["status_bits"]
                .as_array()
                .is_some_and(|b| b.contains(&Value::from("DRIVER_OK")))
    });
    let sides = &console(&report)["header"]["sides"];
    assert_eq!(sides[1]["generation"], 1, "the device did not restart");
    assert_eq!(sides[0]["sequence"], sides[1]["sequence"], "{sides:#}");
    assert_eq!(
        section(&report, "console")["problems"],
        serde_json::json!([])
    );
}

#[test]
fn inspect_names_and_decodes_the_zephyr_samples_console_layout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = common::server(&socket, &["--memfd", "-l", "4M"]);
    let profile = ["--profile", "hvl-zephyr", "--keep-open"];
    let device = Running::start(&[&["console", "device", "-S", sock][..], &profile].concat());
    let (_driver, mut input) =
        Running::start_with_stdin(&[&["console", "driver", "-S", sock][..], &profile].concat());
    input.write_all(b"hello zephyr\n").unwrap();
    input.flush().unwrap();
    device.expect_line("hello zephyr");

    let report = inspect_json(sock);
    assert_eq!(report["layout"], "hvl-zephyr", "{report:#}");
    assert_eq!(report["ok"], true);
    let c = &report["console"];
    assert_eq!(c["profile"], "hvl-zephyr");
    let registers = &c["registers"];
    assert_eq!(
        (
            registers["version"].as_u64(),
            registers["device_id"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert!(registers["queue_pfn"].is_u64(), "{registers:#}");
    let queues = c["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[0]["offset"], 0x101000);
    assert_eq!(queues[1]["num"], 4);
    let output = run(&["inspect", "-S", sock]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    line_with(&shown, &["layout hvl-zephyr"]);
    line_with(&shown, &["MagicValue 0x74726976, Version 1, DeviceID 3"]);
    line_with(&shown, &["GuestPageSize 4096", "QueuePFN"]);
    line_with(
        &shown,
        &[
            "verdict: a foreign layout: virtio-mmio console (the Zephyr hypervisor-less sample's layout)",
        ],
    );
}

/// A 1 MiB region file holding NTB switch "ntb" of 3 ports: peer 3 owns port 0
/// and peer 5 port 1, both with their link enabled; port 1 rang port 0's
/// doorbell bit 1, wrote a message and a scratchpad of port 0, and reaches port
/// 0's window 0, which port 0 granted it. Returns the file and port 1's block.
fn region_with_a_switch(dir: &tempfile::TempDir) -> (std::path::PathBuf, usize) {
    use ivlink_core::directory::{Directory, SectionKind, SectionSpec};
    use ivlink_core::ntb::{Claim, MW_ALIGN, NtbLayout, NtbShape};
    use ivlink_core::{HeapRegion, Region};

    let region = HeapRegion::new(1 << 20);
    let r = &*region;
    let shape = NtbShape {
        mw_size: MW_ALIGN,
        ..NtbShape::new(3)
    };
    let size = shape.section_size().unwrap();
    let spec = SectionSpec::new("ntb", SectionKind::Ntb, size).with_align(4096);
    let info = Directory::open_or_create(r, 8).unwrap().add(&spec).unwrap();
    let layout = NtbLayout::create(r, info.offset, size, shape).unwrap();
    for (peer, port) in [(3, 0), (5, 1)] {
        let claim = Claim {
            peer,
            session: 1,
            port: Some(port),
        };
        layout.claim(r, claim, |_| false).unwrap();
        let _ = layout.set_link(r, port, true).unwrap();
    }
    let _ = layout.db_set(r, 0, 0b10).unwrap();
    let _ = layout.peer_msg_write(r, 1, 0, 2, 0xcafe).unwrap();
    layout.spad_write(r, 0, 5, 0xabcd).unwrap();
    let window = layout.mw_buffer(0, 0).unwrap().offset as u64;
    layout.mw_set_trans(r, 0, 1, 0, window, MW_ALIGN).unwrap();
    layout
        .peer_mw_set_trans(r, 1, 0, 0, window, MW_ALIGN)
        .unwrap();

    let mut bytes = vec![0u8; region.len()];
    region.read(0, &mut bytes).unwrap();
    let file = dir.path().join("region");
    std::fs::write(&file, &bytes).unwrap();
    (file, layout.port_block(1).unwrap())
}

#[test]
fn inspect_decodes_an_ntb_switch_and_reports_a_damaged_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (file, port1) = region_with_a_switch(&dir);
    let path = file.to_str().unwrap();
    let output = run(&["inspect", "--file", path]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    line_with(&shown, &["ntb: magic NTB1, state ready (2), 3 ports"]);
    line_with(&shown, &["port 0: peer 3", "link enabled, up with port 1"]);
    line_with(&shown, &["doorbell 0x0000000000000002"]);
    line_with(&shown, &["messages:", "2: 0x0000cafe from port 1 (full)"]);
    line_with(&shown, &["scratchpads: 5: 0x0000abcd"]);
    line_with(&shown, &["outbound window 0: port 0 at"]);
    line_with(&shown, &["port 2: free, link disabled, no link up"]);

    let json = run(&["inspect", "--file", path, "--json"]);
    assert!(json.status.success(), "{}", text(&json));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    let ntb = &section(&report, "ntb")["ntb"];
    assert_eq!(ntb["port_count"], 3, "{ntb:#}");
    let ports = ntb["ports"].as_array().unwrap();
    assert_eq!(ports[0]["owner"]["peer"], 3);
    assert_eq!(ports[0]["link_up"], serde_json::json!([1]));
    assert_eq!(ports[0]["messages"][2]["data"], 0xcafe);
    assert_eq!(ports[0]["spads"][5], 0xabcd);
    assert_eq!(ports[1]["outbound"][0]["reaches"]["port"], 0);
    assert!(ports[2]["owner"].is_null());

    // A hostile write over port 1's owner word: a problem, and the exit code.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[port1..port1 + 4].copy_from_slice(&0x7000_0000u32.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    let output = run(&["inspect", "--file", path]);
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{shown}");
    line_with(
        &shown,
        &["PROBLEM: port 1 owner: damaged NTB register: port owner"],
    );
    line_with(&shown, &["port 1: free"]);
    line_with(&shown, &["verdict: 1 inconsistency found"]);
}
