//! `ivlink stream` end to end: two processes on a private server pipe their
//! standard input to each other, like two `nc`s.

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
