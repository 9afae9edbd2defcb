//! Progress drawing on standard error: shown when it is a terminal (a real
//! pseudo-terminal here), never in a pipe, never with `--json`.

use std::fs::File;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

const IVLINK: &str = env!("CARGO_BIN_EXE_ivlink");
/// Longest any run here may take.
const LIMIT: Duration = Duration::from_secs(60);

/// A short stress run: two peers for a second.
const STRESS: &[&str] = &["stress", "--peers", "2", "--duration", "1s"];
/// The benchmark's smoke run (about two seconds).
const BENCH: &[&str] = &["bench", "--quick"];
/// The console benchmark's smoke run, smaller still (about a second).
const CONSOLE_BENCH: &[&str] = &["console", "bench", "--quick", "--bytes", "4M"];

/// `ivlink ARGS`, standard output a pipe, with `TERM` set as at a terminal.
fn ivlink(args: &[&str]) -> Command {
    let mut command = Command::new(IVLINK);
    command
        .args(args)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
}

/// Waits for `child`, killing it after [`LIMIT`].
fn finish(mut child: std::process::Child, args: &[&str]) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("wait for ivlink").is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("ivlink {args:?} still running after {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect ivlink's output")
}

/// Runs `ivlink ARGS` with standard error a pipe.
fn with_stderr_piped(args: &[&str]) -> Output {
    let child = ivlink(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ivlink");
    finish(child, args)
}

/// Runs `ivlink ARGS` with standard error the slave side of a new
/// pseudo-terminal; returns its output and everything the master side read.
fn with_stderr_at_a_terminal(args: &[&str]) -> (Output, String) {
    with_stderr_at(args, "xterm")
}

/// [`with_stderr_at_a_terminal`] of the kind `TERM` names.
fn with_stderr_at(args: &[&str], term: &str) -> (Output, String) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .expect("open a pseudo-terminal");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open the pseudo-terminal's slave side");
    let reader = thread::spawn(move || {
        let mut master = File::from(master);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Ends with EIO once every process holding the slave side is gone.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let child = ivlink(args)
        .env("TERM", term)
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("start ivlink");
    // The child holds the only copy of the slave side now.
    let output = finish(child, args);
    let terminal = reader.join().expect("the reader thread");
    (output, terminal)
}

/// Whether `text` holds anything a progress bar draws with: carriage returns or
/// escape sequences.
fn has_drawing(text: &str) -> bool {
    text.contains('\r') || text.contains('\x1b')
}

/// Runs `ivlink ARGS --json` with standard error at a terminal: standard output
/// is one JSON object and the terminal sees no drawing.
fn json_draws_nothing(args: &[&str]) {
    let args = [args, &["--json"]].concat();
    let (output, terminal) = with_stderr_at_a_terminal(&args);
    assert!(output.status.success(), "{args:?} failed:\n{terminal}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&stdout);
    assert!(parsed.is_ok(), "not pure JSON: {stdout}");
    assert!(
        !terminal.contains('\x1b'),
        "drawn with --json: {terminal:?}"
    );
}

#[test]
fn stress_draws_nothing_into_a_pipe() {
    let output = with_stderr_piped(STRESS);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!has_drawing(&stderr), "drawn into a pipe: {stderr:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("stress: 2 peers"), "{stdout}");
}

#[test]
fn stress_draws_its_bar_at_a_terminal() {
    let (output, terminal) = with_stderr_at_a_terminal(STRESS);
    assert!(output.status.success(), "{terminal}");
    assert!(terminal.contains("/1.0 s "), "no run clock: {terminal:?}");
    assert!(terminal.contains("received "), "no totals: {terminal:?}");
    assert!(terminal.contains('\x1b'), "not drawn: {terminal:?}");
    // Each frame clears the one before: none is left on the screen above.
    for frames in terminal.split("\r\x1b[2K") {
        assert!(
            frames.matches("/1.0 s ").count() <= 1,
            "a frame drawn over none cleared: {frames:?}"
        );
    }
    // The report itself still goes to standard output, whole.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("stress: 2 peers"), "{stdout}");
    assert!(!has_drawing(&stdout), "{stdout:?}");
}

#[test]
fn stress_with_json_draws_nothing_at_a_terminal() {
    json_draws_nothing(STRESS);
}

#[test]
fn stress_draws_nothing_at_a_dumb_terminal() {
    let (output, terminal) = with_stderr_at(STRESS, "dumb");
    assert!(output.status.success(), "{terminal}");
    assert!(
        !has_drawing(&terminal),
        "drawn with TERM=dumb: {terminal:?}"
    );
}

#[test]
fn bench_draws_nothing_into_a_pipe() {
    let output = with_stderr_piped(BENCH);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!has_drawing(&stderr), "drawn into a pipe: {stderr:?}");
}

#[test]
fn bench_draws_its_bar_at_a_terminal() {
    let (output, terminal) = with_stderr_at_a_terminal(BENCH);
    assert!(output.status.success(), "{terminal}");
    assert!(
        terminal.contains("latency: ivlink-busy"),
        "no measurement named: {terminal:?}"
    );
    assert!(terminal.contains("throughput: "), "{terminal:?}");
    assert!(terminal.contains('\x1b'), "not drawn: {terminal:?}");
}

#[test]
fn bench_with_json_draws_nothing_at_a_terminal() {
    json_draws_nothing(BENCH);
}

#[test]
fn console_bench_draws_its_bar_at_a_terminal_but_not_with_json() {
    let (output, terminal) = with_stderr_at_a_terminal(CONSOLE_BENCH);
    assert!(output.status.success(), "{terminal}");
    assert!(terminal.contains("/3 ("), "no count of 3: {terminal:?}");
    assert!(terminal.contains("pty"), "{terminal:?}");
    json_draws_nothing(CONSOLE_BENCH);
}
