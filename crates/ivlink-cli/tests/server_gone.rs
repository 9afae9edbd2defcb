//! Every long-running peer command notices a server killed under it (its socket
//! reaches end of file) and exits non-zero saying so, instead of waiting forever.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::ChildStdin;

use common::{Running, server};
use rustix::process::Signal;

/// Starts a server, then `peers` (each `(arguments, line it prints once running)`,
/// empty if it only speaks once a later one runs) on it, in order; SIGKILLs the server and expects every peer to exit non-zero with "the
/// server went away".
fn kill_the_server_under(peers: &[(&[&str], &str)]) {
    kill_the_server_once(peers, |_| {});
}

/// Like [`kill_the_server_under`], running `settle` on the peers' standard inputs
/// and outputs before the kill.
fn kill_the_server_once(
    peers: &[(&[&str], &str)],
    settle: impl FnOnce(&mut [(Running, ChildStdin)]),
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let mut server = server(&socket, &["--memfd"]);
    // Standard input stays open (a stream would otherwise end by itself).
    let mut running: Vec<(Running, ChildStdin)> = peers
        .iter()
        .map(|(args, ready)| {
            let (peer, input) = Running::start_with_stdin(&with_socket(args, &socket));
            if !ready.is_empty() {
                peer.expect_line(ready);
            }
            (peer, input)
        })
        .collect();
    settle(&mut running);
    server.signal(Signal::KILL);
    server.wait_exit();
    for ((peer, _), (args, _)) in running.iter_mut().zip(peers) {
        peer.expect_line("the server went away");
        let status = peer.wait_exit();
        assert!(!status.success(), "{args:?} exited with {status}");
    }
}

fn with_socket<'a>(args: &[&'a str], socket: &'a Path) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["-S", socket.to_str().unwrap()]);
    all
}

#[test]
fn recv_exits_when_the_server_is_killed() {
    kill_the_server_under(&[(&["channel", "recv", "demo"], "receiving on channel 'demo'")]);
}

#[test]
fn rpmsg_echo_exits_when_the_server_is_killed() {
    kill_the_server_under(&[(&["rpmsg", "echo"], "echoing on endpoint")]);
}

#[test]
fn ipm_listen_exits_when_the_server_is_killed() {
    kill_the_server_under(&[(&["mailbox", "listen"], "listening on mailbox 'ipm'")]);
}

#[test]
fn listen_exits_when_the_server_is_killed() {
    kill_the_server_under(&[(&["listen"], "Listening as peer")]);
}

#[test]
fn both_ends_of_a_stream_exit_when_the_server_is_killed() {
    // The server numbers peers in order: the first is 0, the second 1.
    kill_the_server_once(
        &[
            (
                &["stream", "chat", "--peer", "1", "-v"],
                "peer 0 on stream 'chat' to peer 1",
            ),
            (
                &["stream", "chat", "--peer", "0", "-v"],
                "peer 1 on stream 'chat' to peer 0",
            ),
        ],
        |ends| {
            // A line each way: both ends are past opening, waiting for bytes.
            for (from, to) in [(0, 1), (1, 0)] {
                writeln!(ends[from].1, "hello from {from}").unwrap();
                ends[to].0.expect_line(&format!("hello from {from}"));
            }
        },
    );
}

#[test]
fn stress_peers_exit_when_the_server_is_killed() {
    let peer: &[&str] = &["stress-peer", "--peers", "2", "--duration", "10m"];
    // Each speaks once both have joined.
    kill_the_server_under(&[(peer, ""), (peer, "progress ")]);
}

#[test]
fn a_stream_end_with_idle_input_exits_when_the_server_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let mut server = server(&socket, &["--memfd"]);
    // A has nothing to send and closes its direction at once; B's input stays
    // open and idle, so B only reads A's end of stream, then waits on its input.
    let a = Running::start(&with_socket(
        &["stream", "chat", "--peer", "1", "-v"],
        &socket,
    ));
    a.expect_line("peer 0 on stream 'chat' to peer 1");
    let (mut b, _input) = Running::start_with_stdin(&with_socket(
        &["stream", "chat", "--peer", "0", "-v"],
        &socket,
    ));
    b.expect_line("peer 1 on stream 'chat' to peer 0");
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.signal(Signal::KILL);
    server.wait_exit();
    b.expect_line("the server went away");
    assert!(!b.wait_exit().success());
}

#[test]
fn both_sides_of_a_console_exit_when_the_server_is_killed() {
    kill_the_server_under(&[
        (&["console", "device"], ""),
        (&["console", "driver"], "console up"),
    ]);
}

#[test]
fn a_console_side_with_idle_input_exits_when_the_server_is_killed() {
    // The device ends its output at once; the driver then only waits on its input.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let mut server = server(&socket, &["--memfd"]);
    let _device = Running::start(&with_socket(&["console", "device"], &socket));
    let (mut driver, _input) =
        Running::start_with_stdin(&with_socket(&["console", "driver"], &socket));
    driver.expect_line("console up");
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.signal(Signal::KILL);
    server.wait_exit();
    driver.expect_line("the server went away");
    assert!(!driver.wait_exit().success());
}
