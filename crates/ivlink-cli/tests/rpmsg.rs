//! `ivlink rpmsg` end to end over a real server: the seed's echo output, the
//! timeout message and exit code, either start order, a remote killed and
//! restarted under a running sender, and the benchmark's JSON.

mod common;

use std::time::Duration;

use common::{Running, run, text};
use rustix::process::Signal;

fn server(socket: &std::path::Path) -> Running {
    common::server(socket, &["--memfd"])
}

#[test]
fn send_prints_each_echo_like_the_sample_in_either_start_order() {
    for echo_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock");
        let sock = socket.to_str().unwrap();
        let _server = server(&socket);
        let start_echo = || Running::start(&["rpmsg", "echo", "-S", sock]);
        let echo = if echo_first { Some(start_echo()) } else { None };
        let sender = Running::start(&["rpmsg", "send", "-S", sock, "RPMsg over IVSHMEM", "3"]);
        let echo = echo.unwrap_or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            start_echo()
        });
        for n in 1..=3 {
            sender.expect_line("Remote side echoed the string back:");
            sender.expect_line("[ RPMsg over IVSHMEM ]");
            sender.expect_line(&format!("at message number {n}"));
            echo.expect_line("Host side sent a string:");
            echo.expect_line("[ RPMsg over IVSHMEM ]");
            echo.expect_line("Now echoing it back!");
        }
        let mut sender = sender;
        assert!(sender.wait_exit().success());
    }
}

#[test]
fn a_silent_remote_times_out_with_the_samples_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let _echo = Running::start(&["rpmsg", "echo", "-S", sock, "--count", "2", "-q"]);
    let out = run(&["rpmsg", "send", "-S", sock, "hi", "3", "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("at message number 2"), "{}", text(&out));
    assert!(
        text(&out).contains("Remote side response timed out!"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_remote_killed_mid_run_and_restarted_loses_at_most_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let echo = Running::start(&["rpmsg", "echo", "-S", sock, "-q"]);
    let mut sender = Running::start(&["rpmsg", "send", "-S", sock, "x", "100000000", "-q"]);
    sender.expect_line("the communication over RPMsg is ready to use!");
    std::thread::sleep(Duration::from_millis(300));
    echo.signal(Signal::KILL);
    drop(echo);
    std::thread::sleep(Duration::from_millis(100));
    let mut echo = Running::start(&["rpmsg", "echo", "-S", sock, "-q"]);
    sender.expect_line("link reset");
    sender.expect_line("connected to remote endpoint");
    std::thread::sleep(Duration::from_millis(300));
    sender.signal(Signal::INT);
    let summary = sender.expect_line("sent ");
    assert!(sender.wait_exit().success());
    echo.signal(Signal::INT);
    let echoed_after = echo.expect_line("echoed ");
    assert!(echo.wait_exit().success());
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    let [sent, echoed, lost] = numbers[..] else {
        panic!("bad summary {summary:?}")
    };
    assert_eq!(sent, echoed + lost, "{summary}");
    assert!(lost <= 1, "{summary}");
    let after: u64 = echoed_after
        .split(|c: char| !c.is_ascii_digit())
        .find_map(|s| s.parse().ok())
        .unwrap();
    assert!(after > 0 && after < echoed, "{echoed_after} / {summary}");
}

#[test]
fn bench_reports_round_trips_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let _echo = Running::start(&["rpmsg", "echo", "-S", sock, "-q"]);
    let out = run(&[
        "rpmsg", "bench", "-S", sock, "--count", "500", "--warmup", "50", "--rounds", "3", "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // Standard output is the one object (link events go to standard error).
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["profile"], "native");
    assert_eq!(json["round_trips"], 500);
    assert_eq!(json["rounds"], 3);
    assert!(json["round_trips_per_second"].as_f64().unwrap() > 0.0);
    assert!(json["latency_ns"]["p50"].as_f64().unwrap() > 0.0);
    // The reference line: a plain ring ping-pong in the same run.
    let reference = &json["reference"];
    assert_eq!(reference["mechanism"], "memcpy-ring");
    assert_eq!(reference["round_trips"], 500);
    assert!(reference["round_trips_per_second"].as_f64().unwrap() > 0.0);
    let ring_p50 = reference["latency_ns"]["p50"].as_f64().unwrap();
    assert!(ring_p50 > 0.0);
    let ratios = json["ratios"].as_array().unwrap();
    let p50 = ratios
        .iter()
        .find(|r| r["metric"] == "round-trip latency p50")
        .unwrap();
    assert_eq!(p50["name"], "rpmsg/ring");
    let expected = json["latency_ns"]["p50"].as_f64().unwrap() / ring_p50;
    assert!((p50["value"].as_f64().unwrap() - expected).abs() < 1e-9 * expected);
    assert!(
        ratios
            .iter()
            .any(|r| r["metric"] == "round-trip latency p99")
    );
    let target = &json["targets"][0];
    assert_eq!(target["name"], "rpmsg-vs-ring");
    assert_eq!(target["measured"], p50["value"]);
    assert!(target["met"].is_boolean());
}

#[test]
fn bench_prints_the_reference_ring_and_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let _echo = Running::start(&["rpmsg", "echo", "-S", sock, "-q"]);
    let out = run(&[
        "rpmsg", "bench", "-S", sock, "--count", "300", "--warmup", "30", "--size", "100",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("300 round trips of 100 bytes in "),
        "{stdout}"
    );
    let reference = lines
        .iter()
        .find(|l| l.starts_with("reference (plain memcpy ring ping-pong"))
        .unwrap_or_else(|| panic!("no reference line: {stdout}"));
    assert!(reference.contains(" round trips/s, p50 "), "{reference}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rpmsg/ring: ") && l.contains("x p50")),
        "{stdout}"
    );
    let targets = lines
        .iter()
        .position(|l| *l == "Targets (reported, not asserted)")
        .unwrap_or_else(|| panic!("no targets: {stdout}"));
    let target = lines[targets + 1];
    assert!(
        target.contains("RPMsg round trip within 1.5x of a plain ring ping-pong")
            && (target.ends_with(" met") || target.ends_with(" NOT met")),
        "{target}"
    );
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let out = run(&[
        "rpmsg",
        "send",
        "-S",
        "/nonexistent/sock",
        "x",
        "1",
        "--profile",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("invalid value 'nope'"),
        "{}",
        text(&out)
    );
    let out = run(&["rpmsg", "echo", "--address-base", "zz"]);
    assert!(text(&out).contains("not an address"), "{}", text(&out));
    let out = run(&["rpmsg", "bench", "-S", "/nonexistent/sock", "--rounds", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--rounds must be at least 1"),
        "{}",
        text(&out)
    );
}

/// OpenAMP's event socket and shared file, private to the test.
fn openamp_paths(dir: &tempfile::TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        dir.path().join("openamp.event.0"),
        dir.path().join("openamp.shm"),
    )
}

/// The flags that put `rpmsg` on the openamp-linux profile over those paths.
fn openamp_flags<'a>(socket: &'a std::path::Path, shm: &'a std::path::Path) -> [&'a str; 6] {
    [
        "--profile",
        "openamp-linux",
        "--openamp-socket",
        socket.to_str().unwrap(),
        "--openamp-file",
        shm.to_str().unwrap(),
    ]
}

#[test]
fn openamp_linux_profile_runs_over_its_socket_and_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, shm) = openamp_paths(&dir);
    let openamp = openamp_flags(&socket, &shm);
    let mut echo = Running::start(&[&["rpmsg", "echo", "-q"][..], &openamp].concat());
    let started = echo.expect_line("echoing on endpoint 'rpmsg-openamp-demo-channel'");
    assert!(started.contains("profile openamp-linux"), "{started}");
    let sent = run(&[&["rpmsg", "send", "RPMsg over OpenAMP", "5"][..], &openamp].concat());
    assert!(sent.status.success(), "{}", text(&sent));
    assert!(
        text(&sent).contains("at message number 5"),
        "{}",
        text(&sent)
    );
    // Like OpenAMP's rpmsg-echo, the remote serves one host and then exits.
    echo.expect_line("the host side left");
    assert!(echo.wait_exit().success());
    assert_eq!(std::fs::metadata(&shm).unwrap().len(), 0x80000);
}

#[test]
fn an_openamp_remote_on_a_leftover_shm_file_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, shm) = openamp_paths(&dir);
    let openamp = openamp_flags(&socket, &shm);
    let run_once = |round: u32| {
        let mut echo = Running::start(&[&["rpmsg", "echo", "-q"][..], &openamp].concat());
        echo.expect_line("echoing on endpoint");
        let sent = run(&[
            &["rpmsg", "send", "again", "3", "--wait", "10"][..],
            &openamp,
        ]
        .concat());
        assert!(sent.status.success(), "round {round}: {}", text(&sent));
        assert!(
            text(&sent).contains("at message number 3"),
            "{}",
            text(&sent)
        );
        echo.expect_line("the host side left");
        assert!(echo.wait_exit().success(), "round {round}");
    };
    run_once(1);
    // The earlier run's host left its DRIVER_OK in the status byte of the table.
    let status = std::fs::read(&shm).unwrap()[0x2C];
    assert_ne!(status & 4, 0, "status byte {status:#x}");
    run_once(2);
}

/// Runs `args` to its end (at most [`common::WAIT`]): exit status and all lines.
fn run_bounded(args: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let mut running = Running::start(args);
    let status = running.wait_exit();
    (status, running.remaining_lines())
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn send_without_a_remote_gives_up_after_a_default_wait_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let _server = server(&socket);
    let (status, lines) = run_bounded(&["rpmsg", "send", "-S", socket.to_str().unwrap(), "hi"]);
    let all = lines.join("\n");
    assert!(!status.success(), "{all}");
    assert_eq!(count(&lines, "waiting for the remote side"), 1, "{all}");
    assert!(all.contains("5.0 s left"), "{all}");
    assert!(all.contains("did not come up within 5.0 s"), "{all}");
    assert_eq!(count(&lines, "ready to use"), 0, "{all}");
}

#[test]
fn an_openamp_host_waits_as_told_for_openamps_socket_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("openamp.event.0");
    let shm = dir.path().join("openamp.shm");
    let (status, lines) = run_bounded(&[
        "rpmsg",
        "send",
        "hi",
        "--wait",
        "0.5",
        "--profile",
        "openamp-linux",
        "--openamp-socket",
        socket.to_str().unwrap(),
        "--openamp-file",
        shm.to_str().unwrap(),
    ]);
    let all = lines.join("\n");
    assert!(!status.success(), "{all}");
    assert_eq!(count(&lines, "waiting for the remote side"), 1, "{all}");
    assert!(all.contains("0.5 s left"), "{all}");
    assert!(
        all.contains(&format!(
            "OpenAMP's notification socket {}",
            socket.display()
        )),
        "{all}"
    );
    assert!(all.contains("within 0.5 s"), "{all}");
    assert!(!all.contains("ivshmem server"), "{all}");
}

#[test]
fn ready_to_use_is_said_only_once_the_remote_endpoint_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket);
    let mut sender = Running::start(&["rpmsg", "send", "-S", sock, "hi", "--wait", "15"]);
    sender.expect_line("waiting for the remote side");
    let _echo = Running::start(&["rpmsg", "echo", "-S", sock, "-q"]);
    assert!(sender.wait_exit().success());
    let lines = sender.remaining_lines();
    let all = lines.join("\n");
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let bound = at("connected to remote endpoint").expect(&all);
    let ready = at("the communication over RPMsg is ready to use!").expect(&all);
    assert!(bound < ready, "{all}");
    assert_eq!(count(&lines, "ready to use"), 1, "{all}");
}

#[test]
fn a_zephyr_remote_that_never_binds_points_at_the_address_base() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let _server = server(&socket);
    let (status, lines) = run_bounded(&[
        "rpmsg",
        "send",
        "-S",
        socket.to_str().unwrap(),
        "hi",
        "--profile",
        "zephyr-ivshmem",
        "--wait",
        "0.5",
    ]);
    let all = lines.join("\n");
    assert!(!status.success(), "{all}");
    assert!(all.contains("did not announce endpoint 'k'"), "{all}");
    assert!(all.contains("--address-base"), "{all}");
    assert!(all.contains("shmem mapped at 0x"), "{all}");
    assert_eq!(count(&lines, "ready to use"), 0, "{all}");
}
