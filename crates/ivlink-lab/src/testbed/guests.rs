//! The test bed with real QEMU guests as peers: a server, N Linux guests on the
//! `ivshmem-doorbell` device started in the right order, their consoles on UNIX
//! sockets and log files, and the same token ring run inside the guests; or,
//! with a [`ConsoleDemo`], the seed's virtio console: the device side in the
//! first guest, the driver side in the second, through the real device.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ivlink_core::PeerId;

use super::{PeerResult, PeerResults, Summary, TestbedError};
use crate::progress::Progress;
use crate::vm::{Guest, GuestConfig, VmError};

/// The guest test bed's settings.
#[derive(Debug, Clone)]
pub struct GuestTestbedConfig {
    /// Guests to boot.
    pub guests: usize,
    /// Vectors per peer.
    pub vectors: u16,
    /// Shared memory size.
    pub size: u64,
    /// Laps of the token per vector.
    pub rounds: u32,
    /// Longest wait for one step of the exchange.
    pub timeout: Duration,
    /// Longest wait for a guest to boot to its shell.
    pub boot_timeout: Duration,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initramfs (with a static `ivlink` and the VFIO modules).
    pub initrd: PathBuf,
    /// QEMU accelerator (`tcg`; KVM guests hang on some hosts).
    pub accel: String,
    /// Where the server socket, consoles and logs go.
    pub work_dir: PathBuf,
    /// After the exchange, keep everything running until `stop` is set.
    pub keep_running: bool,
    /// Run the console demo between the first two guests instead of the token ring.
    pub console: Option<ConsoleDemo>,
}

/// The console demo between two guests: the driver's demo lines, how many and
/// how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleDemo {
    /// Demo lines the driver writes.
    pub lines: u32,
    /// Pause between two lines.
    pub interval: Duration,
}

/// Where the device side's output goes inside its guest (a tmpfs).
const CONSOLE_OUT: &str = "/tmp/ivlink-console.out";
/// Where the device side's notices (the register dump) go inside its guest.
const CONSOLE_ERR: &str = "/tmp/ivlink-console.err";

impl From<VmError> for TestbedError {
    fn from(e: VmError) -> Self {
        TestbedError::Setup(e.to_string())
    }
}

/// Boots the guests (a line each on `progress` while they do), runs the exchange
/// among them, reports, and (with `keep_running`) leaves them up for the user
/// until `stop` is set. Every guest is powered off, or killed, before this
/// returns.
pub fn run_guests(
    config: &GuestTestbedConfig,
    out: &mut dyn Write,
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<Summary, TestbedError> {
    if config.guests < 2 {
        return Err(TestbedError::Setup(
            "the guest test bed needs at least 2 guests".into(),
        ));
    }
    if config.console.is_some() && config.guests != 2 {
        return Err(TestbedError::Setup(format!(
            "the console demo runs between exactly 2 guests (a device and a driver), not {}",
            config.guests
        )));
    }
    super::check_region_size(super::server_size(config.size)?, config.guests)?;
    std::fs::create_dir_all(&config.work_dir)?;
    let socket = config.work_dir.join("ivshmem.sock");
    let server = super::start_server(&socket, config.size, config.vectors)?;
    let _ = writeln!(
        out,
        "testbed: server on {}, {} bytes, {} vector(s); booting {} guests ({})",
        socket.display(),
        server.shm_size(),
        config.vectors,
        config.guests,
        config.accel
    );

    // The server listens before any QEMU starts; guests then boot in parallel.
    let mut guests = boot_guests(config, &socket, &mut progress.lines(out), progress)?;
    let ids = peer_ids(&mut guests, out)?;
    if stop.load(Ordering::Relaxed) {
        return Err(TestbedError::Setup("interrupted".into()));
    }
    let (failed, messages, results) = match config.console {
        Some(demo) => {
            let (device, driver) = guests.split_at_mut(1);
            let lines = console_demo(&mut device[0], &mut driver[0], &demo, config.timeout, out)?;
            (0, lines.len() as u64, Vec::new())
        }
        None => {
            let (failed, results) = run_exchange(config, &mut guests, &ids, out)?;
            let messages =
                config.guests as u64 * u64::from(config.rounds) * u64::from(config.vectors);
            (failed, messages, results)
        }
    };
    if config.keep_running && failed == 0 {
        keep_running(&mut guests, out, stop);
    }
    let _ = writeln!(out, "testbed: powering off the guests");
    for guest in &mut guests {
        let _ = guest.poweroff(Duration::from_secs(10));
    }
    drop(guests);
    let size = server.shm_size();
    server.stop()?;
    if failed > 0 {
        return Err(TestbedError::PeersFailed {
            failed,
            total: config.guests,
        });
    }
    Ok(Summary {
        peers: config.guests,
        messages,
        size,
        results,
    })
}

/// Starts every guest, then waits for all to reach their shells, each with a
/// line on `progress` until it is up.
fn boot_guests(
    config: &GuestTestbedConfig,
    socket: &Path,
    out: &mut dyn Write,
    progress: &Progress,
) -> Result<Vec<Guest>, TestbedError> {
    let mut guests = Vec::with_capacity(config.guests);
    for number in 0..config.guests {
        let name = format!("guest{number}");
        let guest = Guest::boot(GuestConfig {
            console_socket: config.work_dir.join(format!("{name}.console")),
            log_path: config.work_dir.join(format!("{name}.log")),
            accel: config.accel.clone(),
            ..GuestConfig::new(
                &name,
                &config.kernel,
                &config.initrd,
                socket,
                config.vectors,
            )
        })?;
        guests.push(guest);
    }
    let started = Instant::now();
    // In parallel, so that each line says when its own guest came up.
    let waited: Vec<Result<(), VmError>> = std::thread::scope(|scope| {
        let waits: Vec<_> = guests
            .iter_mut()
            .map(|guest| {
                let line = progress.spinner(format!("{}: booting", guest.name()));
                scope.spawn(move || {
                    let ready = guest.wait_ready(config.boot_timeout);
                    if ready.is_ok() {
                        let took = guest.ready_after().unwrap_or_else(|| line.elapsed());
                        line.finish(format!(
                            "{}: up in {:.1} s",
                            guest.name(),
                            took.as_secs_f64()
                        ));
                    }
                    ready
                })
            })
            .collect();
        waits
            .into_iter()
            .map(|wait| {
                wait.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    waited.into_iter().collect::<Result<(), _>>()?;
    let _ = writeln!(
        out,
        "testbed: {} guests up in {:.1?}",
        guests.len(),
        started.elapsed()
    );
    Ok(guests)
}

/// Every guest's peer id, each shown with where its console and log are.
fn peer_ids(guests: &mut [Guest], out: &mut dyn Write) -> Result<Vec<PeerId>, TestbedError> {
    let mut ids = Vec::with_capacity(guests.len());
    for (number, guest) in guests.iter_mut().enumerate() {
        let id = guest_peer_id(guest)?;
        let _ = writeln!(
            out,
            "guest{number}: peer id {id}; console {} (attach: socat -,rawer UNIX-CONNECT:{}), log {}",
            guest.console_socket().display(),
            guest.console_socket().display(),
            guest.log_path().display()
        );
        ids.push(id);
    }
    Ok(ids)
}

/// Runs the token ring in every guest and waits for each to finish; returns how
/// many failed, and what each reported.
fn run_exchange(
    config: &GuestTestbedConfig,
    guests: &mut [Guest],
    ids: &[PeerId],
    out: &mut dyn Write,
) -> Result<(usize, Vec<PeerResult>), TestbedError> {
    let ring: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let nonce = super::run_nonce();
    let command = format!(
        "ivlink testbed-peer --device --ring {} --rounds {} --timeout {} --nonce {nonce}; echo testbed-peer-exit=$?",
        ring.join(","),
        config.rounds,
        config.timeout.as_secs_f64()
    );
    let mut positions = Vec::with_capacity(guests.len());
    for guest in guests.iter_mut() {
        positions.push(guest.position());
        guest.start(&command)?;
    }
    let mut failed = 0;
    let mut results = PeerResults::default();
    for (number, guest) in guests.iter_mut().enumerate() {
        let wait =
            config.timeout * (2 + config.guests as u32 * config.rounds * u32::from(config.vectors));
        let line = guest.wait_for("testbed-peer-exit=", wait)?;
        let transcript = guest.output_since(positions[number]);
        results.set_id(number, ids[number]);
        for line in transcript.lines() {
            results.see(number, line);
        }
        show_transcript(number, &transcript, out);
        if !line.trim_end().ends_with("testbed-peer-exit=0") {
            failed += 1;
            let _ = writeln!(
                out,
                "testbed: guest{number} failed:\n{}",
                guest.log_tail(20)
            );
        }
    }
    Ok((failed, results.results()))
}

/// The lines of a guest's run worth showing: messages, IRQs, results, errors.
fn show_transcript(number: usize, transcript: &str, out: &mut dyn Write) {
    for shown in transcript
        .lines()
        .filter(|l| {
            [
                "Message ",
                "received IRQ",
                "done:",
                "all ",
                "Error",
                "ivlink:",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .filter(|l| !l.contains("testbed-peer --device"))
    {
        let _ = writeln!(out, "[guest{number}] {}", shown.trim_end());
    }
}

/// Runs the seed's console demo: `ivlink console device` in `device` (its
/// output kept in a file there), `ivlink console driver --demo` in `driver`,
/// both on `--device=auto`; succeeds with the device's lines once both sides
/// exited 0 and the device printed the register dump's `DRIVER_OK` and exactly
/// the driver's demo lines (its host name is the guest's name).
pub fn console_demo(
    device: &mut Guest,
    driver: &mut Guest,
    demo: &ConsoleDemo,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<Vec<String>, TestbedError> {
    let seconds = timeout.as_secs_f64();
    device.start(&format!(
        "ivlink console device --device=auto --timeout {seconds} </dev/null >{CONSOLE_OUT} 2>{CONSOLE_ERR}; echo console-device-exit=$?"
    ))?;
    let _ = writeln!(out, "[{}] console device started", device.name());
    let driven = driver.run(
        &format!(
            "ivlink console driver --device=auto --demo --count {} --interval {}ms --timeout {seconds} </dev/null",
            demo.lines,
            demo.interval.as_millis()
        ),
        timeout + demo.interval * demo.lines,
    )?;
    for line in driven.output.lines() {
        let _ = writeln!(out, "[{}] {line}", driver.name());
    }
    if !driven.success() {
        return Err(TestbedError::Setup(format!(
            "`ivlink console driver --demo` in {} exited {}",
            driver.name(),
            driven.status
        )));
    }
    let exit = device.wait_for("console-device-exit=", timeout)?;
    let notices = device.run(&format!("cat {CONSOLE_ERR}"), timeout)?;
    let printed = device.run(&format!("cat {CONSOLE_OUT}"), timeout)?;
    for line in notices.output.lines() {
        let _ = writeln!(out, "[{}] {line}", device.name());
    }
    for line in printed.output.lines() {
        let _ = writeln!(out, "[{}, stdout] {line}", device.name());
    }
    if !exit.trim_end().ends_with("console-device-exit=0") {
        return Err(TestbedError::Setup(format!(
            "`ivlink console device` in {} failed: {}",
            device.name(),
            exit.trim()
        )));
    }
    let lines: Vec<String> = printed.output.lines().map(str::to_owned).collect();
    let driver_ok = notices
        .output
        .lines()
        .any(|l| l.trim_end() == super::console::DRIVER_OK_LINE);
    super::console::check_device_output(driver_ok, &lines, demo.lines, driver.name())?;
    Ok(lines)
}

/// Leaves the guests up, their consoles free for the user, until `stop` is set.
fn keep_running(guests: &mut [Guest], out: &mut dyn Write, stop: &AtomicBool) {
    for guest in guests.iter_mut() {
        guest.detach_console();
    }
    let _ = writeln!(
        out,
        "testbed: guests keep running; attach to a console above; Ctrl-C stops everything"
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks a guest for its peer id (`ivlink dump --device`).
pub fn guest_peer_id(guest: &mut Guest) -> Result<PeerId, TestbedError> {
    let dump = guest.run("ivlink dump --device", Duration::from_secs(60))?;
    if dump.status != 0 {
        return Err(TestbedError::Setup(format!(
            "`ivlink dump --device` failed in the guest:\n{}",
            dump.output
        )));
    }
    dump.output
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Peer id: ")
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| {
            TestbedError::Setup(format!("no peer id in the guest's dump:\n{}", dump.output))
        })
}
