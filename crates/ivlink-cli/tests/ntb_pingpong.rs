//! `ivlink ntb pingpong` between host processes on a private server: the count
//! goes round every port, and a port killed and taken again picks it up.

mod common;

use std::path::Path;

use common::{Running, server};
use rustix::process::Signal;

/// `pong from port P: count N (...)` as `(P, N)`.
fn pong(line: &str) -> Option<(u32, u64)> {
    let rest = line.strip_prefix("pong from port ")?;
    let (from, rest) = rest.split_once(": count ")?;
    let (count, _) = rest.split_once(' ')?;
    Some((from.parse().ok()?, count.parse().ok()?))
}

fn pingpong<'a>(socket: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "ntb",
        "pingpong",
        "-S",
        socket.to_str().unwrap(),
        "--delay",
        "50ms",
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs one pingpong per port for two seconds; each port's pongs, in order.
fn pongs_of_every_port(ports: u32) -> Vec<Vec<(u32, u64)>> {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let _server = server(&socket, &["--memfd"]);
    let ports_arg = ports.to_string();
    let port_args: Vec<String> = (0..ports).map(|p| p.to_string()).collect();
    let mut running: Vec<Running> = port_args
        .iter()
        .map(|port| {
            Running::start(&pingpong(
                &socket,
                &[
                    "--ports",
                    &ports_arg,
                    "--mw-size",
                    "65536",
                    "--port",
                    port,
                    "--duration",
                    "2s",
                ],
            ))
        })
        .collect();
    running
        .iter_mut()
        .map(|port| {
            let lines = port.remaining_lines();
            assert!(port.wait_exit().success(), "{lines:?}");
            lines.iter().filter_map(|l| pong(l)).collect()
        })
        .collect()
}

/// Every port counted several pongs, one up each time, all from `from(port)`.
fn assert_rising(pongs: &[Vec<(u32, u64)>], from: impl Fn(u32) -> u32) {
    for (port, pongs) in pongs.iter().enumerate() {
        let port = port as u32;
        assert!(pongs.len() >= 5, "port {port}: only {pongs:?}");
        for (at, &(sender, count)) in pongs.iter().enumerate() {
            assert_eq!(count, at as u64 + 1, "port {port}: {pongs:?}");
            assert_eq!(sender, from(port), "port {port}: {pongs:?}");
        }
    }
}

#[test]
fn two_ports_count_up_together() {
    let pongs = pongs_of_every_port(2);
    assert_rising(&pongs, |port| 1 - port);
}

#[test]
fn three_ports_pass_the_count_round() {
    // Each port pings the next higher port, the last one the lowest: every
    // port hears from the one below it.
    let pongs = pongs_of_every_port(3);
    assert_rising(&pongs, |port| (port + 2) % 3);
}

#[test]
fn json_lines_and_a_count_to_stop_at() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let _server = server(&socket, &["--memfd"]);
    // The other port keeps playing after this one has stopped.
    let _other = Running::start(&pingpong(&socket, &["--port", "1", "--duration", "20s"]));
    let mut counting = Running::start(&pingpong(
        &socket,
        &["--json", "--count", "3", "--port", "0"],
    ));
    let lines = counting.remaining_lines();
    assert!(counting.wait_exit().success(), "{lines:?}");
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(events[0]["event"], "start", "{lines:?}");
    let counts: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "pong")
        .map(|e| e["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3], "{lines:?}");
}

#[test]
fn a_killed_port_is_seen_down_and_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let _server = server(&socket, &["--memfd"]);
    let survivor = Running::start(&pingpong(&socket, &["--port", "0"]));
    let mut victim = Running::start(&pingpong(&socket, &["--port", "1"]));
    survivor.expect_line("pong from port 1: count 2");
    victim.signal(Signal::KILL);
    victim.wait_exit();
    survivor.expect_line("link down: port 1");
    survivor.expect_line("no peer to ping");
    let heir = Running::start(&pingpong(&socket, &["--port", "1"]));
    heir.expect_line("pingpong on port 1 of 2");
    heir.expect_line("pong from port 0: count 2");
    survivor.expect_line("link up: port 1");
    survivor.expect_line("pong from port 1");
}
