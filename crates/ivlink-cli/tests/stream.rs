//! `ivlink stream` end to end: two processes on a private server pipe their
//! standard input to each other, like two `nc`s.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const IVLINK: &str = env!("CARGO_BIN_EXE_ivlink");
const WAIT: Duration = Duration::from_secs(30);

/// A child killed (by its pid) if the test ends early.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Lines of `streams`, delivered as they come.
fn lines<S: Read + Send + 'static>(streams: impl IntoIterator<Item = S>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    rx
}

fn expect_line(lines: &mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line containing {needle:?}; saw:\n{}", seen.join("\n"));
}

/// Starts `ivlink stream` with `input` on its standard input; returns the child,
/// its standard output as it will be collected, and its standard error lines.
fn stream(
    sock: &str,
    peer: &str,
    input: Vec<u8>,
) -> (Killed, mpsc::Receiver<Vec<u8>>, mpsc::Receiver<String>) {
    let mut child = Command::new(IVLINK)
        .args(["stream", "pipe", "--peer", peer, "-S", sock, "-v"])
        .args(["--capacity", "1024"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivlink stream");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        // Uneven pieces with pauses, as a person or a pipeline would write.
        for piece in input.chunks(777) {
            if stdin.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let (tx, output) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    let errors = lines([child.stderr.take().unwrap()]);
    (Killed(child), output, errors)
}

fn wait_success(child: &mut Killed) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "ivlink stream exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "ivlink stream did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_stream_processes_pipe_their_input_to_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let server = Command::new(IVLINK)
        .args(["server", "-F", "-S", sock, "--memfd", "-n", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivlink server");
    let mut server = Killed(server);
    let server_lines = lines([
        Box::new(server.0.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(server.0.stderr.take().unwrap()),
    ]);
    expect_line(&server_lines, "listening on");

    let to_b: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
    let to_a: Vec<u8> = (0..4500u32).map(|i| (i * 13 % 256) as u8).collect();
    // The server hands out ids in order: A is peer 0 once it says so, B is 1.
    let (mut a, out_a, errors_a) = stream(sock, "1", to_b.clone());
    expect_line(&errors_a, "peer 0 on stream 'pipe' to peer 1");
    let (mut b, out_b, errors_b) = stream(sock, "0", to_a.clone());
    expect_line(&errors_b, "peer 1 on stream 'pipe' to peer 0");

    wait_success(&mut a);
    wait_success(&mut b);
    assert_eq!(
        out_a.recv_timeout(WAIT).unwrap(),
        to_a,
        "A printed what B read"
    );
    assert_eq!(
        out_b.recv_timeout(WAIT).unwrap(),
        to_b,
        "B printed what A read"
    );
}

#[test]
fn a_stream_to_a_peer_that_never_comes_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let mut server = Killed(
        Command::new(IVLINK)
            .args(["server", "-F", "-S", sock, "--memfd", "-n", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ivlink server"),
    );
    let server_lines = lines([
        Box::new(server.0.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(server.0.stderr.take().unwrap()),
    ]);
    expect_line(&server_lines, "listening on");
    // Standard input stays open, as at a terminal: only the timeout can end it.
    let mut child = Killed(
        Command::new(IVLINK)
            .args([
                "stream",
                "chat",
                "--peer",
                "99",
                "--timeout",
                "1",
                "-S",
                sock,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ivlink stream"),
    );
    let errors = lines([child.0.stderr.take().unwrap()]);
    expect_line(
        &errors,
        "peer 99 did not open the stream within 1s (it is not connected)",
    );
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ivlink stream did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success(), "{status}");
}

/// A private server; kept running while the returned value lives.
fn private_server(sock: &str) -> Killed {
    let mut server = Killed(
        Command::new(IVLINK)
            .args(["server", "-F", "-S", sock, "--memfd", "-n", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ivlink server"),
    );
    let server_lines = lines([
        Box::new(server.0.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(server.0.stderr.take().unwrap()),
    ]);
    expect_line(&server_lines, "listening on");
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || while server_lines.recv().is_ok() {});
    server
}

/// Starts `ivlink stream pipe --peer PEER` with `extra` options and `stdin`;
/// returns it with its standard output and standard error as lines.
fn stream_process(
    sock: &str,
    peer: &str,
    extra: &[&str],
    stdin: Stdio,
) -> (Killed, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(IVLINK)
        .args(["stream", "pipe", "--peer", peer, "-S", sock, "-v"])
        .args(extra)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivlink stream");
    let out = lines([child.stdout.take().unwrap()]);
    let errors = lines([child.stderr.take().unwrap()]);
    (Killed(child), out, errors)
}

fn wait_status(child: &mut Killed) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "ivlink stream did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exec_cat_on_one_side_echoes_what_the_other_side_sends() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = private_server(sock);
    let (mut echo, _, echo_errors) = stream_process(sock, "1", &["--exec", "cat"], Stdio::null());
    expect_line(&echo_errors, "peer 0 on stream 'pipe' to peer 1");
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i * 11 % 256) as u8).collect();
    let (mut sender, echoed, _) = stream(sock, "0", sent.clone());
    wait_success(&mut sender);
    assert_eq!(echoed.recv_timeout(WAIT).unwrap(), sent, "cat sent it back");
    wait_success(&mut echo);
}

#[test]
fn exec_sh_runs_a_command_sent_from_the_other_side_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = private_server(sock);
    let (mut shell, _, shell_errors) =
        stream_process(sock, "1", &["--exec", "/bin/sh"], Stdio::null());
    expect_line(&shell_errors, "peer 0 on stream 'pipe' to peer 1");
    let command = b"echo hello from $0; echo to stderr >&2; exit 7\n".to_vec();
    let (mut user, output, _) = stream(sock, "0", command);
    wait_success(&mut user);
    assert_eq!(
        String::from_utf8(output.recv_timeout(WAIT).unwrap()).unwrap(),
        "hello from /bin/sh\nto stderr\n"
    );
    let status = wait_status(&mut shell);
    assert_eq!(status.code(), Some(7), "the command's exit code");
    expect_line(&shell_errors, "'/bin/sh' ended with exit code 7");
}

#[test]
fn a_pty_is_opened_and_closed_twice_by_another_program() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = private_server(sock);
    let (mut pty_side, _, pty_errors) = stream_process(sock, "1", &["--pty"], Stdio::null());
    let line = {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = pty_errors
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the pty's path");
            if line.starts_with("stream: pty ") {
                break line;
            }
        }
    };
    let path = line.trim_start_matches("stream: pty ").to_owned();
    assert!(path.starts_with("/dev/pts/"), "{line}");
    // The pty is shown before the server is reached: the other side may only
    // start once the pty side holds id 0, or it could take that id itself.
    expect_line(&pty_errors, "peer 0 on stream 'pipe' to peer 1");
    let mut other = Command::new(IVLINK)
        .args(["stream", "pipe", "--peer", "0", "-S", sock])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivlink stream");
    let mut to_pty = other.stdin.take().unwrap();
    let from_pty = lines([other.stdout.take().unwrap()]);
    let mut other = Killed(other);
    common::pty_opened_twice(&path, &mut to_pty, |line| {
        expect_line(&from_pty, line);
    });
    // The other side's end ends the pty side, and both exit 0.
    drop(to_pty);
    wait_success(&mut other);
    wait_success(&mut pty_side);
}

#[test]
fn keep_open_stays_up_after_standard_input_ends_until_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = private_server(sock);
    let (mut kept, kept_out, kept_errors) =
        stream_process(sock, "1", &["--keep-open"], Stdio::null());
    expect_line(&kept_errors, "peer 0 on stream 'pipe' to peer 1");
    let (mut other, other_out, _) = stream_process(sock, "0", &[], Stdio::piped());
    let mut to_kept = other.0.stdin.take().unwrap();
    writeln!(to_kept, "after the end of its input").unwrap();
    expect_line(&kept_out, "after the end of its input");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        kept.0.try_wait().unwrap().is_none(),
        "--keep-open exited after its input ended"
    );
    assert!(
        other_out.try_recv().is_err(),
        "the other side saw no end of file"
    );
    let pid = rustix::process::Pid::from_child(&kept.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert_eq!(
        wait_status(&mut kept).code(),
        Some(143),
        "SIGTERM's exit code"
    );
    // The stopped side closed its output: the other side ends cleanly.
    drop(to_kept);
    wait_success(&mut other);
}

/// How a session at a terminal ends.
enum Ending {
    EscapeKey,
    Sigterm,
    PeerKilled,
}

/// Runs `ivlink stream` with a pty's slave (in cooked mode) as standard input,
/// checks that it is raw while the relay runs and that typed bytes pass, ends it
/// as `ending` says; returns the exit status and whether the modes came back.
fn terminal_session(ending: Ending) -> (std::process::ExitStatus, bool) {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = private_server(sock);
    let pty = ivlink::relay::Pty::open().unwrap();
    let mut cooked = tcgetattr(pty.slave()).unwrap();
    cooked.local_modes |= LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG;
    tcsetattr(pty.slave(), OptionalActions::Now, &cooked).unwrap();
    let terminal = pty.slave().try_clone_to_owned().unwrap();
    let (mut at_terminal, _, errors) = stream_process(sock, "1", &[], Stdio::from(terminal));
    expect_line(&errors, "peer 0 on stream 'pipe' to peer 1");
    let (mut other, other_out, _) = stream_process(sock, "0", &[], Stdio::piped());
    let _other_input = other.0.stdin.take().unwrap();
    expect_line(&errors, "stream: terminal in raw mode; Ctrl-] quits");
    // The hint comes just before raw mode.
    let deadline = Instant::now() + WAIT;
    loop {
        let modes = tcgetattr(pty.slave()).unwrap().local_modes;
        if !modes.intersects(LocalModes::ICANON | LocalModes::ECHO) {
            break;
        }
        assert!(Instant::now() < deadline, "never raw: {modes:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Typed keys go through as they are, Ctrl-C as a byte.
    let master = pty.master();
    rustix::io::write(master, b"typed\x03\n").unwrap();
    expect_line(&other_out, "typed\u{3}");
    match ending {
        Ending::EscapeKey => {
            rustix::io::write(master, b"\x1d").unwrap();
        }
        Ending::Sigterm => {
            let pid = rustix::process::Pid::from_child(&at_terminal.0);
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        }
        Ending::PeerKilled => other.0.kill().unwrap(),
    }
    let status = wait_status(&mut at_terminal);
    let restored = tcgetattr(pty.slave()).unwrap().local_modes == cooked.local_modes;
    (status, restored)
}

#[test]
fn a_terminal_on_standard_input_is_raw_until_ctrl_close_bracket_then_restored() {
    let (status, restored) = terminal_session(Ending::EscapeKey);
    assert!(status.success(), "Ctrl-] exits 0: {status}");
    assert!(restored, "the terminal's modes came back");
}

#[test]
fn a_terminal_is_restored_after_sigterm() {
    let (status, restored) = terminal_session(Ending::Sigterm);
    assert_eq!(status.code(), Some(143), "{status}");
    assert!(restored, "the terminal's modes came back");
}

#[test]
fn a_terminal_is_restored_when_the_peer_dies() {
    let (status, restored) = terminal_session(Ending::PeerKilled);
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(restored, "the terminal's modes came back");
}

#[test]
fn no_raw_leaves_a_terminal_in_its_own_mode() {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = private_server(sock);
    let pty = ivlink::relay::Pty::open().unwrap();
    let mut cooked = tcgetattr(pty.slave()).unwrap();
    cooked.local_modes |= LocalModes::ICANON | LocalModes::ISIG;
    tcsetattr(pty.slave(), OptionalActions::Now, &cooked).unwrap();
    let terminal = pty.slave().try_clone_to_owned().unwrap();
    let (mut at_terminal, _, errors) =
        stream_process(sock, "1", &["--no-raw"], Stdio::from(terminal));
    expect_line(&errors, "peer 0 on stream 'pipe' to peer 1");
    let (mut other, other_out, _) = stream_process(sock, "0", &[], Stdio::piped());
    let _other_input = other.0.stdin.take().unwrap();
    // A line is sent once complete (canonical mode), and the escape byte is data.
    rustix::io::write(pty.master(), b"a line\x1d\n").unwrap();
    expect_line(&other_out, "a line\u{1d}");
    let modes = tcgetattr(pty.slave()).unwrap().local_modes;
    assert_eq!(modes, cooked.local_modes, "the terminal kept its mode");
    assert!(at_terminal.0.try_wait().unwrap().is_none());
    let pid = rustix::process::Pid::from_child(&at_terminal.0);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert_eq!(wait_status(&mut at_terminal).code(), Some(130));
    assert!(
        errors.try_iter().all(|line| !line.contains("raw mode")),
        "no raw-mode hint"
    );
}

#[test]
fn conflicting_relay_options_are_refused_in_one_line() {
    for (args, message) in [
        (
            &["--pty", "--exec", "cat"][..],
            "'--pty' cannot be used with '--exec <CMD>'",
        ),
        (
            &["--keep-open", "--exec", "cat"][..],
            "'--keep-open' cannot be used with '--exec <CMD>'",
        ),
    ] {
        let output = Command::new(IVLINK)
            .args(["stream", "pipe", "--peer", "1", "-S", "/nonexistent"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let errors = String::from_utf8_lossy(&output.stderr);
        let first = errors.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(message),
            "{errors}"
        );
    }
}
