//! `--json` reports whose standard output must be JSON only: `ivlink testbed`
//! (one object, passed or failed) and `ivlink rpmsg send` and `echo` (JSON
//! lines, each with an "event"). The running lines and the error line go to
//! standard error.

mod common;

use std::process::Output;

use common::json::{events, json_lines, one_object};
use common::{IVLINK, run, run_bounded, text};

#[test]
fn testbed_on_the_host_prints_one_object() {
    let output = run(&["testbed", "--peers", "2", "--rounds", "2", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report = one_object(&output);
    assert_eq!(report["ok"], true);
    assert_eq!(report["mode"], "host");
    assert_eq!(report["peers"], 2);
    assert_eq!(report["size"], 4 << 20);
    assert_eq!(report["messages"], 2 * 2 * 2, "{report:#}");
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{report:#}");
    for (number, result) in results.iter().enumerate() {
        assert_eq!(result["peer"], number);
        assert!(result["id"].is_u64(), "{report:#}");
        assert_eq!(result["sent"], 4);
        assert_eq!(result["received"], 4);
    }
    // The running lines and the verdict are still there, on standard error.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[peer process 0] done: sent 4"), "{stderr}");
    assert!(stderr.contains("testbed: OK"), "{stderr}");
}

#[test]
fn testbed_console_demo_prints_one_object() {
    let output = run(&["testbed", "--console", "--rounds", "3", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report = one_object(&output);
    assert_eq!(report["ok"], true);
    assert_eq!(report["mode"], "console");
    assert_eq!(report["console"], true);
    assert_eq!(report["messages"], 3);
    assert_eq!(report["interval_ms"], 20);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Config Status DRIVER_OK"), "{stderr}");
}

#[test]
fn a_failing_testbed_prints_a_failed_object_and_its_error_line() {
    // Each parses, and fails once running.
    for (args, error) in [
        (&["--peers", "1"][..], "at least 2 peers"),
        (&["-n", "0"][..], "at least 1 vector"),
        (&["--console", "--rounds", "0"][..], "--rounds of 1 or more"),
    ] {
        let output = run(&[&["testbed", "--json"][..], args].concat());
        assert!(!output.status.success(), "{args:?}: {}", text(&output));
        let report = one_object(&output);
        assert_eq!(report["ok"], false, "{args:?}");
        assert!(
            report["error"].as_str().unwrap().contains(error),
            "{args:?}: {report:#}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.lines().collect::<Vec<_>>(),
            [format!("ivlink: {}", report["error"].as_str().unwrap())],
            "{args:?}"
        );
    }
}

/// Runs `rpmsg echo ARGS` in the background (bounded by [`common::WAIT`]).
fn echo(socket: &str, args: &[&str]) -> std::thread::JoinHandle<Output> {
    let args: Vec<String> = [&["rpmsg", "echo", "-S", socket][..], args]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bounded(IVLINK, &args)
    })
}

#[test]
fn rpmsg_send_and_echo_print_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = common::server(&socket, &["--memfd"]);
    let echoing = echo(sock, &["--count", "2", "--json"]);
    let sent = run(&["rpmsg", "send", "-S", sock, "say \"hi\"", "2", "--json"]);
    assert!(sent.status.success(), "{}", text(&sent));
    let lines = json_lines(&sent);
    assert_eq!(
        events(&lines),
        ["connected", "echoed", "echoed", "done"],
        "{}",
        text(&sent)
    );
    assert_eq!(lines[0]["profile"], "native");
    assert_eq!(lines[0]["endpoint"], "rpmsg-echo");
    assert_eq!(
        (&lines[1]["number"], &lines[2]["number"]),
        (&1.into(), &2.into())
    );
    assert_eq!(lines[1]["text"], "say \"hi\"");
    assert_eq!(lines[3]["sent"], 2);
    assert_eq!(lines[3]["echoed"], 2);
    assert_eq!(lines[3]["lost"], 0);

    let echoed = echoing.join().unwrap();
    assert!(echoed.status.success(), "{}", text(&echoed));
    let lines = json_lines(&echoed);
    let names = events(&lines);
    assert_eq!(names.first(), Some(&"start"), "{}", text(&echoed));
    assert_eq!(names.last(), Some(&"done"), "{}", text(&echoed));
    assert_eq!(
        names.iter().filter(|&&e| e == "echo").count(),
        2,
        "{names:?}"
    );
    assert!(names.contains(&"bound"), "{names:?}");
    assert_eq!(lines[0]["profile"], "native");
    let echo_line = lines.iter().find(|l| l["event"] == "echo").unwrap();
    assert_eq!(echo_line["text"], "say \"hi\"");
    assert_eq!(lines.last().unwrap()["echoed"], 2);
}

#[test]
fn rpmsg_send_says_a_timeout_as_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = common::server(&socket, &["--memfd"]);
    let _echoing = echo(sock, &["--count", "1", "-q"]);
    let sent = run(&[
        "rpmsg",
        "send",
        "-S",
        sock,
        "hi",
        "2",
        "--timeout",
        "0.5",
        "--json",
    ]);
    assert_eq!(sent.status.code(), Some(1), "{}", text(&sent));
    let lines = json_lines(&sent);
    assert_eq!(events(&lines), ["connected", "echoed", "timed_out"]);
    assert_eq!(lines[2]["number"], 2);
}
