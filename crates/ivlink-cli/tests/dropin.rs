//! The drop-in `ivshmem-server` and `ivshmem-client` binaries, run for real.
//!
//! Every server uses a private socket in a temporary directory and either `-m`
//! (an unlinked file there) or a unique `-M` name that is removed afterwards.
//! Every process started is killed by its pid if a test fails, and every wait
//! is bounded.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use common::ShmName;

const SERVER: &str = env!("CARGO_BIN_EXE_ivshmem-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_ivshmem-client");

/// How long anything may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Output of a stream, gathered by a reader thread.
struct Stream {
    chunks: Receiver<Vec<u8>>,
    text: String,
    /// Where the next [`Stream::expect`] starts looking.
    cursor: usize,
    closed: bool,
}

impl Stream {
    fn new(mut reader: impl Read + Send + 'static) -> Self {
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Stream {
            chunks,
            text: String::new(),
            cursor: 0,
            closed: false,
        }
    }

    /// Takes in what has arrived, waiting at most `wait` for something.
    fn pump(&mut self, wait: Duration) {
        if self.closed {
            std::thread::sleep(wait.min(Duration::from_millis(10)));
            return;
        }
        match self.chunks.recv_timeout(wait) {
            Ok(chunk) => {
                self.text.push_str(&String::from_utf8_lossy(&chunk));
                while let Ok(chunk) = self.chunks.try_recv() {
                    self.text.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
        }
    }

    /// Waits for `needle` after the cursor and moves the cursor past it; gives the
    /// text from the old cursor to the end of the needle.
    fn find(&mut self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(at) = self.text[self.cursor..].find(needle) {
                let end = self.cursor + at + needle.len();
                let found = self.text[self.cursor..end].to_owned();
                self.cursor = end;
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || (self.closed && self.chunks.try_recv().is_err()) {
                return None;
            }
            self.pump(left.min(Duration::from_millis(100)));
        }
    }

    /// Waits (bounded) for the writer to close the stream.
    fn drain(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.closed && Instant::now() < deadline {
            self.pump(Duration::from_millis(100));
        }
    }

    /// Everything received so far (for failure messages).
    fn all(&mut self) -> &str {
        self.pump(Duration::ZERO);
        &self.text
    }
}

/// A process started by a test, killed by pid when dropped if still running.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Stream,
    stderr: Stream,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(name: &'static str, program: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdin = child.stdin.take();
        let stdout = Stream::new(child.stdout.take().expect("piped stdout"));
        let stderr = Stream::new(child.stderr.take().expect("piped stderr"));
        Proc {
            name,
            child,
            stdin,
            stdout,
            stderr,
            status: None,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_child(&self.child)
    }

    /// Sends `text` to its stdin.
    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes its stdin (end of input).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for `needle` on stdout.
    fn expect(&mut self, needle: &str) -> String {
        match self.stdout.find(needle) {
            Some(text) => text,
            None => {
                let report = self.report();
                panic!("{} never printed {needle:?}\n{report}", self.name)
            }
        }
    }

    /// Waits for `needle` on stderr.
    fn expect_err(&mut self, needle: &str) -> String {
        match self.stderr.find(needle) {
            Some(text) => text,
            None => {
                let report = self.report();
                panic!("{} never printed {needle:?} on stderr\n{report}", self.name)
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal).expect("signal a child");
    }

    /// Waits (bounded) for it to exit.
    fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return status;
            }
            if Instant::now() >= deadline {
                let report = self.report();
                panic!("{} did not exit in time\n{report}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for it to exit and gives its whole output.
    fn finish(mut self) -> (ExitStatus, String, String) {
        self.close_stdin();
        let status = self.wait();
        self.stdout.drain();
        self.stderr.drain();
        (
            status,
            self.stdout.all().to_owned(),
            self.stderr.all().to_owned(),
        )
    }

    fn report(&mut self) -> String {
        let name = self.name;
        let out = self.stdout.all().to_owned();
        let err = self.stderr.all().to_owned();
        format!("--- {name} stdout:\n{out}\n--- {name} stderr:\n{err}")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill_process(self.pid(), Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs a command that should end by itself; gives its status and output.
fn run(program: &str, args: &[&str]) -> (ExitStatus, String, String) {
    Proc::spawn("command", program, args).finish()
}

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Private paths for a server that must not start: nothing global is touched
/// even if it did.
struct Scratch {
    dir: tempfile::TempDir,
    shm: ShmName,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
            shm: ShmName::new(tag),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("UTF-8 path")
            .to_owned()
    }

    /// `args` plus private `-S`, `-p` and `-M` (before them, so they apply).
    fn server_args<'a>(&'a self, socket: &'a str, pid: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-S", socket, "-p", pid, "-M", &self.shm.0];
        all.extend_from_slice(args);
        all
    }
}

#[test]
fn server_help_prints_usage_and_exits_0() {
    let (status, out, err) = run(SERVER, &["-h"]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.starts_with("Usage: "), "{out}");
    for needle in [
        "-F",
        "-p <pid-file>",
        "-S <unix-socket-path>",
        "-M <shm-name>",
        "-m <dir-name>",
    ] {
        assert!(out.contains(needle), "usage lacks {needle}: {out}");
    }
    for default in [
        "/var/run/ivshmem-server.pid",
        "/tmp/ivshmem_socket",
        "default 4194304",
        "default 1",
    ] {
        assert!(out.contains(default), "usage lacks {default}: {out}");
    }
    assert!(!out.contains("Example code"), "{out}");
}

#[test]
fn server_refuses_bad_vector_counts() {
    let scratch = Scratch::new("n");
    let (socket, pid) = (scratch.path("sock"), scratch.path("pid"));
    for (n, message) in [
        ("abc", "cannot parse n_vectors"),
        ("65", "too many requested vectors (max is 64)"),
    ] {
        let (status, _, err) = run(
            SERVER,
            &scratch.server_args(&socket, &pid, &["-F", "-n", n]),
        );
        assert_eq!(status.code(), Some(1), "-n {n}: {err}");
        assert!(err.contains(message), "-n {n}: {err}");
        assert!(err.contains("-h' for more information."), "-n {n}: {err}");
    }
    assert!(!Path::new(&socket).exists());
}

#[test]
fn server_refuses_unknown_options_with_usage() {
    let scratch = Scratch::new("x");
    let (socket, pid) = (scratch.path("sock"), scratch.path("pid"));
    let (status, _, err) = run(SERVER, &scratch.server_args(&socket, &pid, &["-F", "-x"]));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("invalid option -- 'x'"), "{err}");
    assert!(err.contains("Usage: "), "{err}");
    let (status, _, err) = run(SERVER, &scratch.server_args(&socket, &pid, &["-F", "-n"]));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("option requires an argument -- 'n'"), "{err}");
    assert!(!Path::new(&socket).exists());
}

#[test]
fn server_refuses_verbose_in_daemon_mode() {
    let scratch = Scratch::new("v");
    let (socket, pid) = (scratch.path("sock"), scratch.path("pid"));
    let (status, _, err) = run(SERVER, &scratch.server_args(&socket, &pid, &["-v"]));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot use verbose in daemon mode"), "{err}");
    assert!(!Path::new(&socket).exists() && !Path::new(&pid).exists());
}

#[test]
fn server_startup_failures_print_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("missing").join("sock");
    let socket_arg = socket.to_str().expect("UTF-8 path");
    let dir_arg = dir.path().to_str().expect("UTF-8 path");
    let (status, out, err) = run(SERVER, &["-F", "-S", socket_arg, "-m", dir_arg]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot bind") && err.contains(socket_arg),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "each cause once: {err}");
}

#[test]
fn client_refuses_socket_paths_too_long_to_connect() {
    let long = format!("/tmp/{}", "x".repeat(200));
    let (status, _, err) = run(CLIENT, &["-S", &long]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("too long"), "{err}");
}

#[test]
fn client_help_goes_to_stderr() {
    let (status, out, err) = run(CLIENT, &["-h"]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("-S <unix_sock_path>") && err.contains("default=/tmp/ivshmem_socket"),
        "{err}"
    );
    let (status, _, err) = run(CLIENT, &["-q"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("invalid option -- 'q'"), "{err}");
}

/// Starts a client on `socket` and waits until it is connected.
fn connected_client(name: &'static str, socket: &str) -> Proc {
    let mut client = Proc::spawn(name, CLIENT, &["-S", socket]);
    client.expect("cmd> ");
    client.expect("listen on server socket ");
    client
}

#[test]
fn foreground_server_serves_two_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sock");
    let socket_arg = socket.to_str().expect("UTF-8 path");
    let dir_arg = dir.path().to_str().expect("UTF-8 path");
    let mut server = Proc::spawn(
        "server",
        SERVER,
        &["-F", "-S", socket_arg, "-m", dir_arg, "-n", "2"],
    );
    wait_until("the server socket", || socket.exists());

    let mut a = connected_client("client A", socket_arg);
    // A is told about B before B types anything.
    let mut b = connected_client("client B", socket_arg);

    b.send("dump\n");
    b.expect("our_id = 1\n");
    let dump = b.expect("cmd> ");
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines.len(), 6, "{dump}");
    assert!(lines[0].starts_with("  vector 0 is enabled (fd="), "{dump}");
    assert!(lines[1].starts_with("  vector 1 is enabled (fd="), "{dump}");
    assert_eq!(lines[2], "peer_id = 0", "{dump}");
    assert!(lines[3].starts_with("  vector 0 is enabled (fd="), "{dump}");
    assert!(lines[4].starts_with("  vector 1 is enabled (fd="), "{dump}");
    assert_eq!(lines[5], "cmd> ", "{dump}");

    b.send("int 0 1\n");
    a.expect("receive notification from peer_id=0 vector=1\n");

    b.send("int 9 0\n");
    b.expect("cannot find peer_id = 9\n");
    b.send("this is not a command\n");
    b.expect("invalid command, type help\n");
    // Several commands in one line, and A sees B in its own dump.
    b.send("help;int all\r\n");
    b.expect("int all: notify all vectors of all peers (excepting us)\n");
    a.expect("receive notification from peer_id=0 vector=0\n");
    a.send("dump\n");
    a.expect("our_id = 0\n");
    a.expect("peer_id = 1\n");

    server.signal(Signal::TERM);
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{}", server.report());
    assert!(!socket.exists(), "the socket file is left behind");
    server.expect("server disconnected\n");
    a.expect("disconnected from server\n");
    b.expect("disconnected from server\n");
    b.expect_err("cannot connect to server, retry in 1 second\n");

    // End of input ends a client, connected or not.
    for client in [a, b] {
        let name = client.name;
        let (status, out, err) = client.finish();
        assert_eq!(status.code(), Some(0), "{name}: {out}\n{err}");
    }
}

#[test]
fn client_says_when_a_peer_has_no_such_vector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sock");
    let socket_arg = socket.to_str().expect("UTF-8 path");
    let dir_arg = dir.path().to_str().expect("UTF-8 path");
    let mut server = Proc::spawn(
        "server",
        SERVER,
        &["-F", "-S", socket_arg, "-m", dir_arg, "-n", "2"],
    );
    wait_until("the server socket", || socket.exists());
    let mut a = connected_client("client A", socket_arg);
    let mut b = connected_client("client B", socket_arg);
    // B (peer 1) is known to A once A lists it.
    a.send("dump\n");
    a.expect("peer_id = 1\n");
    a.expect("cmd> ");

    a.send("int 1 7\n");
    let said = a.expect("cmd> ");
    assert_eq!(
        said,
        "invalid vector 7 on peer 1 (its vectors are 0 to 1)\ncmd> ",
        "{}",
        a.report()
    );
    a.send("int 5 7\n");
    a.expect("cannot find peer_id = 5\ncmd> ");
    // A good vector still rings.
    a.send("int 1 1\n");
    b.expect("receive notification from peer_id=1 vector=1\n");

    server.signal(Signal::TERM);
    assert_eq!(server.wait().code(), Some(0), "{}", server.report());
    for client in [a, b] {
        let name = client.name;
        let (status, out, err) = client.finish();
        assert_eq!(status.code(), Some(0), "{name}: {out}\n{err}");
    }
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// A daemon the test did not spawn directly: killed by its pid if still running.
struct Daemon(Option<Pid>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && !exited(pid)
        {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

#[test]
fn daemon_writes_its_pid_and_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = ShmName::new("daemon");
    let socket = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let socket_arg = socket.to_str().expect("UTF-8 path");
    let pid_arg = pidfile.to_str().expect("UTF-8 path");
    let log = std::fs::File::create(dir.path().join("log")).expect("log file");
    let mut daemon = Daemon(None);

    // The daemon keeps the standard streams: give it none the test waits on.
    let mut launcher = Command::new(SERVER)
        .args(["-S", socket_arg, "-p", pid_arg, "-M", &shm.0, "-l", "64K"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the server");
    let launcher_pid = Pid::from_child(&launcher);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = launcher.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = kill_process(launcher_pid, Signal::KILL);
            let _ = launcher.wait();
            panic!("the launching process did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));

    let log_text = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    wait_until("the pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid in the pid file");
    let pid = Pid::from_raw(pid).expect("a positive pid");
    daemon.0 = Some(pid);
    assert_ne!(pid, launcher_pid, "the daemon is a new process");
    assert!(!exited(pid), "the daemon is running; log:\n{}", log_text());
    assert!(socket.exists());
    assert!(shm.path().exists());

    let mut client = connected_client("client", socket_arg);
    client.send("dump\n");
    client.expect("our_id = 0\n  vector 0 is enabled (fd=");
    client.expect("cmd> ");

    kill_process(pid, Signal::TERM).expect("signal the daemon");
    wait_until("the socket to be removed", || !socket.exists());
    wait_until("the pid file to be removed", || !pidfile.exists());
    wait_until("the daemon to exit", || exited(pid));
    daemon.0 = None;
    client.expect("disconnected from server\n");
    let (status, out, err) = client.finish();
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(!log_text().contains("ERROR"), "{}", log_text());
}
