//! `ivlink console` end to end: a device and a driver process on a private
//! server, in either start order, with bulk data, a killed driver, a shell,
//! a pty, and bad input.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{IVLINK, WAIT, server};

/// A console process killed (by its pid) if the test ends early, with its
/// standard output collected as bytes and its standard error as lines.
struct Side {
    child: Child,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<String>,
    so_far: std::sync::Arc<std::sync::Mutex<usize>>,
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn console(role: &str, sock: &str, extra: &[&str], input: Option<Vec<u8>>) -> Side {
    let mut child = Command::new(IVLINK)
        .args(["console", role, "-S", sock, "--timeout", "20"])
        .args(extra)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivlink console");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut out = child.stdout.take().unwrap();
    let so_far = std::sync::Arc::new(std::sync::Mutex::new(0));
    let (tx, stdout) = mpsc::channel();
    let counter = so_far.clone();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            *counter.lock().unwrap() = all.len();
        }
        let _ = tx.send(all);
    });
    let mut err = child.stderr.take().unwrap();
    let (tx, stderr) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        for line in text.lines() {
            let _ = tx.send(line.to_owned());
        }
    });
    Side {
        child,
        stdout,
        stderr,
        so_far,
    }
}

impl Side {
    /// Waits for the exit; its status, standard output and standard error.
    fn finish(mut self) -> (ExitStatus, Vec<u8>, String) {
        let deadline = Instant::now() + WAIT * 3;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the console process did not end");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = self.stdout.recv_timeout(WAIT).unwrap_or_default();
        let err: Vec<String> = self.stderr.try_iter().collect();
        // Standard error is sent once the pipe closes: wait for it a little.
        let err = if err.is_empty() {
            self.stderr
                .recv_timeout(Duration::from_secs(2))
                .map(|first| {
                    std::iter::once(first)
                        .chain(self.stderr.try_iter())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        } else {
            err.join("\n")
        };
        (status, out, err)
    }

    fn bytes_out(&self) -> usize {
        *self.so_far.lock().unwrap()
    }
}

/// Starts both sides, `device_first` or the driver first, and waits until both
/// exit 0; the device's standard output and standard error.
fn both_succeed(
    device_first: bool,
    start_device: impl Fn() -> Side,
    start_driver: impl Fn() -> Side,
) -> (Vec<u8>, String) {
    let (device, driver) = if device_first {
        let device = start_device();
        std::thread::sleep(Duration::from_millis(200));
        (device, start_driver())
    } else {
        let driver = start_driver();
        std::thread::sleep(Duration::from_millis(200));
        (start_device(), driver)
    };
    let (driver_status, _, driver_err) = driver.finish();
    let (device_status, out, device_err) = device.finish();
    assert!(driver_status.success(), "driver: {driver_err}");
    assert!(device_status.success(), "device: {device_err}");
    (out, device_err)
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect()
}

fn private_server() -> (tempfile::TempDir, common::Running, String) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let running = server(&sock, &["--memfd", "-l", "4M"]);
    (dir, running, sock.to_str().unwrap().to_owned())
}

#[test]
fn lines_from_the_driver_reach_the_device_in_either_start_order() {
    for device_first in [true, false] {
        let (_dir, _server, sock) = private_server();
        // Whichever side comes first creates the section: both give its shape.
        let start_device = || console("device", &sock, &[], None);
        let start_driver = || console("driver", &sock, &[], Some(b"a\nb\n".to_vec()));
        let (out, err) = both_succeed(device_first, start_device, start_driver);
        assert_eq!(out, b"a\nb\n", "device printed: {err}");
        assert!(err.contains("VIRTIO_MMIO_DEVICE_ID: 0x3"), "{err}");
        assert!(err.contains("Config Status DRIVER_OK"), "{err}");
    }
}

#[test]
fn ten_megabytes_each_way_arrive_intact() {
    let (_dir, _server, sock) = private_server();
    let (to_device, to_driver) = (pattern(10 << 20, 3), pattern(10 << 20, 4));
    let device = console("device", &sock, &[], Some(to_driver.clone()));
    let driver = console("driver", &sock, &[], Some(to_device.clone()));
    let (driver_status, driver_got, driver_err) = driver.finish();
    let (device_status, device_got, device_err) = device.finish();
    assert!(driver_status.success(), "driver: {driver_err}");
    assert!(device_status.success(), "device: {device_err}");
    assert!(
        driver_got == to_driver,
        "driver got {} bytes",
        driver_got.len()
    );
    assert!(
        device_got == to_device,
        "device got {} bytes",
        device_got.len()
    );
}

/// Sends 8 MiB from the `survivor` side to a `victim` side that is killed
/// (SIGKILL) after 1 MiB and replaced: the survivor reports what was lost, and
/// nothing is lost unreported or delivered twice.
fn kill_and_replace(survivor: &str, victim: &str) {
    let (_dir, _server, sock) = private_server();
    let data = pattern(8 << 20, 5);
    let sender = console(survivor, &sock, &[], Some(data.clone()));
    let first = console(victim, &sock, &["--keep-open"], None);
    let deadline = Instant::now() + WAIT;
    while first.bytes_out() < 1 << 20 {
        assert!(
            Instant::now() < deadline,
            "the first {victim} got too little"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = rustix::process::Pid::from_raw(first.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let (_, got_first, _) = first.finish();
    let second = console(victim, &sock, &[], None);
    let (second_status, got_second, second_err) = second.finish();
    let (sender_status, _, sender_err) = sender.finish();
    assert!(second_status.success(), "second {victim}: {second_err}");
    assert!(sender_status.success(), "{survivor}: {sender_err}");
    let lost: usize = sender_err
        .lines()
        .find_map(|l| {
            l.strip_prefix("the other side restarted; ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no report of lost bytes: {sender_err}"));
    let total = data.len();
    eprintln!(
        "{victim}: first got {}, {lost} lost, second got {}, of {total}",
        got_first.len(),
        got_second.len()
    );
    assert!(
        got_first == data[..got_first.len()],
        "the first {victim}'s bytes are the start"
    );
    assert!(
        got_second == data[total - got_second.len()..],
        "the second {victim}'s bytes are the end"
    );
    // Nothing twice, and every byte either delivered or reported.
    assert!(got_first.len() + got_second.len() <= total);
    assert!(
        got_first.len() + lost + got_second.len() >= total,
        "{} + {lost} + {} < {total}",
        got_first.len(),
        got_second.len()
    );
}

#[test]
fn a_killed_driver_is_replaced_and_nothing_is_lost_unreported_or_duplicated() {
    kill_and_replace("device", "driver");
}

#[test]
fn a_killed_device_is_replaced_and_nothing_is_lost_unreported_or_duplicated() {
    kill_and_replace("driver", "device");
}

#[test]
fn a_shell_on_the_device_runs_what_the_driver_types() {
    let (_dir, _server, sock) = private_server();
    let device = console("device", &sock, &["--exec", "/bin/sh"], None);
    let driver = console(
        "driver",
        &sock,
        &[],
        Some(b"echo hello-from-$((6*7))\nexit 3\n".to_vec()),
    );
    let (driver_status, out, driver_err) = driver.finish();
    let (device_status, _, device_err) = device.finish();
    assert!(driver_status.success(), "driver: {driver_err}");
    assert_eq!(String::from_utf8_lossy(&out), "hello-from-42\n");
    assert_eq!(device_status.code(), Some(3), "device: {device_err}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let (_dir, _server, sock) = private_server();
    // Both sides stay up with nothing to say: a second driver is refused.
    let device = console("device", &sock, &["--keep-open"], None);
    let driver = console("driver", &sock, &["--keep-open"], None);
    std::thread::sleep(Duration::from_millis(500));
    let second = console("driver", &sock, &[], None);
    let (status, _, err) = second.finish();
    assert!(!status.success());
    assert!(
        err.contains("already has a driver") && err.lines().count() == 1,
        "{err}"
    );
    let bad = console("driver", &sock, &["--profile", "virtio"], None);
    let (status, _, err) = bad.finish();
    assert!(!status.success());
    assert!(err.contains("invalid value 'virtio'"), "{err}");
    drop((device, driver));
}

#[test]
fn the_samples_layout_is_refused_on_a_region_too_small() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let _server = server(&sock, &["--memfd", "-l", "1M"]);
    let device = console(
        "device",
        sock.to_str().unwrap(),
        &["--profile", "hvl-zephyr"],
        None,
    );
    let (status, _, err) = device.finish();
    assert!(!status.success());
    assert!(
        err.contains("smaller than the sample's 0x180800 bytes"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_pty_on_the_device_is_opened_twice_by_another_program() {
    let (_dir, _server, sock) = private_server();
    let mut device = common::Running::start(&["console", "device", "-S", &sock, "--pty"]);
    let line = device.expect_line("console: pty ");
    let path = line.trim_start_matches("console: pty ").to_owned();
    assert!(path.starts_with("/dev/pts/"), "{line}");
    let (mut driver, mut to_driver) =
        common::Running::start_with_stdin(&["console", "driver", "-S", &sock]);
    common::pty_opened_twice(&path, &mut to_driver, |line| {
        driver.expect_line(line);
    });
    // The driver's end of input ends the pty side too, and both exit 0.
    drop(to_driver);
    assert!(driver.wait_exit().success(), "driver");
    assert!(device.wait_exit().success(), "device");
}

#[test]
fn a_port_chosen_by_name_carries_the_lines_and_an_unknown_name_gets_one_line() {
    let named = ["--ports", "2", "--port-names", "console,log"];
    let with = |extra: &[&'static str]| [&named[..], extra].concat();
    for device_first in [true, false] {
        let (_dir, _server, sock) = private_server();
        // Whichever side comes first creates the section: both give its shape.
        let start_device = || console("device", &sock, &with(&["--port", "log"]), None);
        let start_driver = || {
            let lines = Some(b"one\ntwo\n".to_vec());
            console("driver", &sock, &["--ports", "2", "--port", "log"], lines)
        };
        let (out, device_err) = both_succeed(device_first, start_device, start_driver);
        assert_eq!(out, b"one\ntwo\n", "device printed: {device_err}");
    }

    let (_dir, _server, sock) = private_server();
    let device = console("device", &sock, &with(&["--keep-open"]), None);
    let unknown = console("driver", &sock, &["--ports", "2", "--port", "data"], None);
    let (status, _, err) = unknown.finish();
    assert!(!status.success());
    assert!(
        err.contains("no port named 'data' (ports: console, log)") && err.lines().count() == 1,
        "{err}"
    );
    drop(device);
    let own = console("device", &sock, &with(&["--port", "data"]), None);
    let (status, _, err) = own.finish();
    assert!(!status.success());
    assert!(
        err.contains("no port named 'data' (ports: console, log)") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn emergency_text_from_the_driver_is_printed_by_the_device() {
    let (_dir, _server, sock) = private_server();
    let device = console("device", &sock, &[], None);
    let driver = console(
        "driver",
        &sock,
        &["--emergency", "oops: early panic"],
        Some(b"after\n".to_vec()),
    );
    let (driver_status, _, driver_err) = driver.finish();
    let (device_status, out, err) = device.finish();
    assert!(driver_status.success(), "driver: {driver_err}");
    assert!(device_status.success(), "device: {err}");
    assert!(err.contains("oops: early panic"), "{err}");
    assert_eq!(out, b"after\n");
}
