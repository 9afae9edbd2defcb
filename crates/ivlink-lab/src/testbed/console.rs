//! The test bed's console demo: the seed's virtio-mmio serial port between two
//! peers, checked end to end. A device process prints the driver's setup (the
//! register dump) and then what the driver writes; a driver process writes the
//! sample's "Hello World" lines and ends.
//!
//! Decisions:
//! - The device's standard output is the evidence: it must hold exactly the
//!   driver's demo lines, in order, and nothing else. The driver's lines carry a
//!   time stamp, so they are checked by shape: the sample's text, the driver's
//!   host name, as many as were asked for, time stamps never going back.
//! - The register dump goes to the device's standard error; only its last line,
//!   `Config Status DRIVER_OK`, is required (the rest is the console's own
//!   business and tested there).
//! - The device starts first (the seed's order), though the native profile
//!   takes either.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Children, TestbedError};

/// The line the device prints once the driver has set the console up.
pub const DRIVER_OK_LINE: &str = "Config Status DRIVER_OK";

/// The console demo's settings.
#[derive(Debug, Clone)]
pub struct ConsoleTestbedConfig {
    /// Shared memory size.
    pub size: u64,
    /// Vectors per peer.
    pub vectors: u16,
    /// Demo lines the driver writes.
    pub lines: u32,
    /// Pause between two demo lines.
    pub interval: Duration,
    /// Longest wait for the whole demo.
    pub timeout: Duration,
}

/// What the console demo did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSummary {
    /// Demo lines the device printed, each checked.
    pub lines: usize,
    /// Bytes of shared memory the server made (the size asked for, rounded up
    /// to a power of two).
    pub size: u64,
}

/// Which of the two console processes printed a line, and on which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    DeviceOut,
    DeviceErr,
    Driver,
}

/// Starts a server on a private socket, the device process made by
/// `device_command(socket)` and the driver process made by
/// `driver_command(socket)`, relays their lines to `out`, and succeeds only if
/// both exit 0, the device printed [`DRIVER_OK_LINE`] and exactly the driver's
/// `config.lines` demo lines from `host`.
pub fn run_console(
    config: &ConsoleTestbedConfig,
    device_command: &dyn Fn(&Path) -> Command,
    driver_command: &dyn Fn(&Path) -> Command,
    host: &str,
    out: &mut dyn Write,
) -> Result<ConsoleSummary, TestbedError> {
    if config.vectors == 0 {
        return Err(TestbedError::Setup(
            "the console needs at least 1 vector".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("ivlink-testbed.")
        .tempdir()?;
    let socket = dir.path().join("ivshmem.sock");
    let server = super::start_server(&socket, config.size, config.vectors)?;
    let _ = writeln!(
        out,
        "testbed: server on {}, {} bytes of shared memory, {} vector(s) per peer; starting a console device and driver",
        socket.display(),
        server.shm_size(),
        config.vectors
    );
    let (lines_tx, lines_rx) = mpsc::channel();
    let mut children = Children(Vec::new());
    spawn(
        device_command(&socket),
        [Source::DeviceOut, Source::DeviceErr],
        &lines_tx,
        &mut children,
    )?;
    spawn(
        driver_command(&socket),
        [Source::Driver, Source::Driver],
        &lines_tx,
        &mut children,
    )?;
    drop(lines_tx);

    let mut printed = Vec::new();
    let mut driver_ok = false;
    let mut statuses = [None, None];
    let deadline = Instant::now() + config.timeout;
    let mut record = |(source, line): (Source, String), out: &mut dyn Write| {
        let label = match source {
            Source::DeviceOut => "console device, stdout",
            Source::DeviceErr => "console device",
            Source::Driver => "console driver",
        };
        let _ = writeln!(out, "[{label}] {line}");
        match source {
            Source::DeviceOut => printed.push(line),
            Source::DeviceErr => driver_ok |= line.trim_end() == DRIVER_OK_LINE,
            Source::Driver => {}
        }
    };
    while statuses.iter().any(Option::is_none) {
        while let Ok(line) = lines_rx.try_recv() {
            record(line, out);
        }
        for (child, status) in children.0.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait()?;
            }
        }
        if Instant::now() > deadline {
            let _ = writeln!(
                out,
                "testbed: the console did not finish in {:?}; stopping it",
                config.timeout
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(children);
    for line in lines_rx.iter() {
        record(line, out);
    }
    let size = server.shm_size();
    server.stop()?;
    for (name, status) in ["device", "driver"].iter().zip(statuses) {
        match status {
            Some(s) if s.success() => {}
            Some(s) => {
                return Err(TestbedError::Setup(format!(
                    "the console {name} process failed ({s})"
                )));
            }
            None => {
                return Err(TestbedError::Timeout(
                    config.timeout,
                    format!("the console {name} process to finish"),
                ));
            }
        }
    }
    check_device_output(driver_ok, &printed, config.lines, host)?;
    Ok(ConsoleSummary {
        lines: printed.len(),
        size,
    })
}

/// Starts `command` with its two output streams sent, line by line, as `sources`.
fn spawn(
    mut command: Command,
    sources: [Source; 2],
    lines: &mpsc::Sender<(Source, String)>,
    children: &mut Children,
) -> Result<(), std::io::Error> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for (stream, source) in streams.into_iter().zip(sources) {
        let Some(stream) = stream else { continue };
        let tx = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send((source, line));
            }
        });
    }
    children.0.push(child);
    Ok(())
}

/// Checks what the device printed: the setup finished (`driver_ok`), then
/// exactly `lines` demo lines from `host`, in order.
pub fn check_device_output(
    driver_ok: bool,
    printed: &[String],
    lines: u32,
    host: &str,
) -> Result<(), TestbedError> {
    if !driver_ok {
        return Err(TestbedError::Setup(format!(
            "the console device never printed '{DRIVER_OK_LINE}'"
        )));
    }
    if printed.len() != lines as usize {
        return Err(TestbedError::Setup(format!(
            "the console device printed {} line(s), expected the driver's {lines}",
            printed.len()
        )));
    }
    let mut last = 0;
    for (number, line) in printed.iter().enumerate() {
        let ms = demo_time(line, host).ok_or_else(|| {
            TestbedError::Setup(format!(
                "the console device's line {} is not the driver's demo line from {host}: '{line}'",
                number + 1
            ))
        })?;
        if ms < last {
            return Err(TestbedError::Setup(format!(
                "the console device's line {} is out of order: '{line}'",
                number + 1
            )));
        }
        last = ms;
    }
    Ok(())
}

/// The time stamp of a demo line (`[<ms>]: Hello World I'm <host> sending data
/// over Virtio-MMIO Serial Port`) from `host`, or `None` for any other line.
pub fn demo_time(line: &str, host: &str) -> Option<u64> {
    let rest = line.strip_prefix('[')?;
    let (ms, text) = rest.split_once(']')?;
    let expected = format!(": Hello World I'm {host} sending data over Virtio-MMIO Serial Port");
    if text != expected || ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ms: u64, host: &str) -> String {
        format!("[{ms}]: Hello World I'm {host} sending data over Virtio-MMIO Serial Port")
    }

    #[test]
    fn demo_lines_are_recognised_with_their_time() {
        assert_eq!(demo_time(&line(8010, "qemu"), "qemu"), Some(8010));
        assert_eq!(demo_time(&line(0, "a-b"), "a-b"), Some(0));
        assert_eq!(demo_time(&line(1, "qemu"), "other"), None);
        assert_eq!(
            demo_time(
                "[]: Hello World I'm q sending data over Virtio-MMIO Serial Port",
                "q"
            ),
            None
        );
        assert_eq!(
            demo_time(
                "[-1]: Hello World I'm q sending data over Virtio-MMIO Serial Port",
                "q"
            ),
            None
        );
        assert_eq!(demo_time(&format!("{} extra", line(1, "q")), "q"), None);
        assert_eq!(demo_time("hello", "q"), None);
    }

    #[test]
    fn the_device_output_must_be_exactly_the_demo_in_order() {
        let good = vec![line(0, "h"), line(10, "h"), line(10, "h")];
        assert!(check_device_output(true, &good, 3, "h").is_ok());
        assert!(check_device_output(false, &good, 3, "h").is_err());
        assert!(check_device_output(true, &good, 2, "h").is_err());
        assert!(check_device_output(true, &good[..2], 3, "h").is_err());
        let reordered = vec![line(10, "h"), line(0, "h")];
        assert!(check_device_output(true, &reordered, 2, "h").is_err());
        let stray = vec![line(0, "h"), "noise".to_owned()];
        assert!(check_device_output(true, &stray, 2, "h").is_err());
    }
}
