//! Helpers the CLI integration tests share: the `ivlink` binary as a child process
//! killed (by pid) when a test ends early, one-shot runs, a private server, and
//! unique POSIX shared memory names.
#![allow(dead_code)] // each test binary uses a different subset

pub mod json;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const IVLINK: &str = env!("CARGO_BIN_EXE_ivlink");
pub const WAIT: Duration = Duration::from_secs(20);

/// A child process killed (by pid) if the test ends early.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        Self::spawn(args, Stdio::null())
    }

    /// Like [`start`](Self::start), with standard input from a pipe the caller
    /// writes to (and drops to close).
    pub fn start_with_stdin(args: &[&str]) -> (Running, ChildStdin) {
        let mut running = Self::spawn(args, Stdio::piped());
        let stdin = running.child.stdin.take().unwrap();
        (running, stdin)
    }

    /// Like [`start`](Self::start) for any program, with `env` added to its
    /// environment.
    pub fn start_program(program: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(program);
        command.args(args).envs(env.iter().copied());
        Self::spawn_command(command, Stdio::null())
    }

    fn spawn(args: &[&str], stdin: Stdio) -> Running {
        let mut command = Command::new(IVLINK);
        command.args(args);
        Self::spawn_command(command, stdin)
    }

    fn spawn_command(mut command: Command, stdin: Stdio) -> Running {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the program");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Running { child, lines }
    }

    /// Waits for a line containing `needle`; panics with everything seen otherwise.
    pub fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line containing {needle:?}; saw:\n{}", seen.join("\n"));
    }

    /// Every line not taken yet, until the process has closed its output (or
    /// [`WAIT`] passed).
    pub fn remaining_lines(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub fn run(args: &[&str]) -> Output {
    Command::new(IVLINK)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ivlink")
}

/// Runs `program` to its end, killing it (by pid) after [`WAIT`]: for commands
/// that should fail at once but would run on if they wrongly succeeded (a server).
pub fn run_bounded(program: &str, args: &[&str]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect output")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn server(socket: &Path, extra: &[&str]) -> Running {
    let mut args = vec!["server", "-F", "-S", socket.to_str().unwrap(), "-n", "2"];
    args.extend_from_slice(extra);
    let server = Running::start(&args);
    server.expect_line("listening on");
    server
}

/// A unique POSIX shared memory name, removed from /dev/shm when dropped.
pub struct ShmName(pub String);

impl ShmName {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        ShmName(format!("ivlink-test-{tag}-{}-{nanos}", std::process::id()))
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/dev/shm").join(&self.0)
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// Opens the pty at `path` twice, in turn: each time a line written to the
/// terminal must reach the other side (`expect_from_other`) and a line written
/// to the other side (`to_other`) must come back through the terminal.
pub fn pty_opened_twice(
    path: &str,
    to_other: &mut impl std::io::Write,
    expect_from_other: impl Fn(&str),
) {
    use std::io::{Read, Write};
    for round in 0..2 {
        let mut terminal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the pty");
        writeln!(terminal, "ping {round}").unwrap();
        expect_from_other(&format!("ping {round}"));
        writeln!(to_other, "pong {round}").unwrap();
        let (got_tx, got) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 7];
            let _ = got_tx.send(terminal.read_exact(&mut buf).map(|()| buf));
            // The terminal closes here, at the end of the round.
        });
        let reply = got.recv_timeout(WAIT).expect("a reply through the pty");
        assert_eq!(&reply.unwrap(), format!("pong {round}\n").as_bytes());
    }
}
