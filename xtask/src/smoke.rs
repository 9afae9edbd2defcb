//! `cargo xtask vm-smoke`: one guest on an `ivlink server`, a few commands, a report.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ivlink_lab::vm::{Guest, GuestConfig, VmError, find_qemu};

use crate::harness::{GuestArgs, ServerProcess, build_host_ivlink, prepare_image};

/// Options of `cargo xtask vm-smoke`.
#[derive(Debug, Args)]
pub struct SmokeArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// More kernel command line for the guest (e.g. `loglevel=7` to see the boot)
    #[arg(long, value_name = "ARGS", default_value = "")]
    append: String,
}

/// Whether a command's output and status are right.
type Verdict<'a> = dyn Fn(&str, i32) -> bool + 'a;

/// The vectors the server and the guest's device get.
const VECTORS: u16 = 2;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the smoke check.
pub fn run(root: &Path, args: &SmokeArgs) -> Result<()> {
    let started = Instant::now();
    let qemu = find_qemu()
        .context("qemu-system-x86_64 is not on PATH (apt-get install qemu-system-x86)")?;
    let image_dir = prepare_image(root, args.guest.image.as_deref())?;
    let ivlink = build_host_ivlink(root)?;

    let run_dir = tempfile::Builder::new()
        .prefix("ivlink-vm-smoke.")
        .tempdir()
        .context("creating a run directory")?;
    let result = check(&qemu, &image_dir, &ivlink, run_dir.path(), args);
    let kept = result.is_err() || args.guest.keep;
    let dir = if kept {
        let path = run_dir.keep();
        println!("run directory kept: {}", path.display());
        path
    } else {
        run_dir.path().to_path_buf()
    };
    match result {
        Ok(report) => {
            println!("{report}");
            println!(
                "vm-smoke: PASSED in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            println!("vm-smoke: FAILED (logs in {})", dir.display());
            Err(e)
        }
    }
}

fn check(
    qemu: &Path,
    image_dir: &Path,
    ivlink: &Path,
    dir: &Path,
    args: &SmokeArgs,
) -> Result<String> {
    let mut server = ServerProcess::start(ivlink, dir, VECTORS)?;
    let socket = server.socket().to_path_buf();

    let early = early_exit_check(qemu, image_dir, dir)?;

    let (mut guest, ready) = boot_guest(qemu, image_dir, dir, &socket, args)?;
    let mut report = vec![
        format!(
            "boot-to-ready: {:.2} s (kernel {})",
            ready.as_secs_f64(),
            guest.config().kernel.display()
        ),
        early,
    ];
    let mut failures = Vec::new();
    shell_checks(&mut guest, &mut report, &mut failures);
    if failures.is_empty() {
        match console_checks(&mut guest) {
            Ok(lines) => report.extend(lines),
            Err(e) => failures.push(format!("console checks: {e:#}")),
        }
    }
    let poweroff = Instant::now();
    match guest.poweroff(Duration::from_secs(30)) {
        Ok(()) => report.push(format!(
            "ok     poweroff -f ({:.2} s)",
            poweroff.elapsed().as_secs_f64()
        )),
        Err(e) => failures.push(format!("poweroff: {e}")),
    }
    if let Err(e) = server.ensure_running() {
        failures.push(format!("{e:#}"));
    }
    drop(server);
    let report = report.join("\n");
    if failures.is_empty() {
        Ok(report)
    } else {
        println!("{report}");
        bail!(
            "{} check(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        )
    }
}

/// Boots the smoke guest on `socket`; returns it and how long it took to be ready.
fn boot_guest(
    qemu: &Path,
    image_dir: &Path,
    dir: &Path,
    socket: &Path,
    args: &SmokeArgs,
) -> Result<(Guest, Duration)> {
    let mut config = GuestConfig::from_image("smoke", image_dir, socket, dir);
    config.vectors = VECTORS;
    config.accel = args.guest.accel.clone();
    config.extra_append = args.append.clone();
    config.qemu = qemu.to_path_buf();
    let mut guest = Guest::boot(config)?;
    println!(
        "guest: QEMU pid {}, console {}, log {}",
        guest.pid(),
        guest.console_socket().display(),
        guest.log_path().display()
    );
    guest.wait_ready(Duration::from_secs(args.guest.ready_timeout))?;
    let ready = guest.ready_after().unwrap_or_default();
    println!(
        "guest: ready {:.2} s after starting QEMU",
        ready.as_secs_f64()
    );

    Ok((guest, ready))
}

/// Runs the shell commands of the check, each with its verdict, until one fails
/// to run at all.
fn shell_checks(guest: &mut Guest, report: &mut Vec<String>, failures: &mut Vec<String>) {
    let version = env!("CARGO_PKG_VERSION");
    let checks: &[(&str, &Verdict)] = &[
        ("ivlink --version", &|out, st| {
            st == 0 && out.contains(&format!("ivlink {version}"))
        }),
        ("ls /dev/vfio", &|out, st| {
            st == 0 && out.split_whitespace().any(|w| w == "vfio")
        }),
        ("cat /proc/cmdline", &|out, st| {
            st == 0 && out.contains("intel_iommu=on") && out.contains("ivlink.name=smoke")
        }),
        // The ivshmem device (1af4:1110) is on the bus and in an IOMMU group.
        (
            "for d in /sys/bus/pci/devices/*; do if [ \"$(cat $d/vendor):$(cat $d/device)\" = 0x1af4:0x1110 ]; then echo ivshmem ${d##*/} group $(basename $(readlink $d/iommu_group)); fi; done",
            &|out, st| st == 0 && out.contains("ivshmem ") && out.contains(" group "),
        ),
        (
            "cat /etc/ivlink/modules | tr '\\n' ' '; echo; lsmod | wc -l",
            &|_, st| st == 0,
        ),
        ("false", &|out, st| st == 1 && out.is_empty()),
    ];
    for (command, ok) in checks {
        let started = Instant::now();
        let result = guest.run(command, COMMAND_TIMEOUT);
        let elapsed = started.elapsed().as_secs_f64();
        match result {
            Ok(out) => {
                let pass = ok(&out.output, out.status);
                let verdict = if pass { "ok" } else { "FAILED" };
                println!(
                    "$ {command}\n{}\n[status {}, {elapsed:.2} s] {verdict}",
                    out.output, out.status
                );
                report.push(format!("{verdict:6} {command}"));
                if !pass {
                    failures.push(format!(
                        "`{command}` gave status {}: {}",
                        out.status, out.output
                    ));
                }
            }
            Err(e) => {
                report.push(format!("FAILED {command}"));
                failures.push(format!("`{command}`: {e}"));
                break;
            }
        }
    }
}

/// Checks the launcher's other paths: a wait that times out, a started command,
/// a person's client on the console after `detach_console`.
fn console_checks(guest: &mut Guest) -> Result<Vec<String>> {
    let mut report = Vec::new();
    // A timeout is an error that quotes the serial log.
    let started = Instant::now();
    match guest.wait_for("never-printed-needle", Duration::from_secs(1)) {
        Err(e @ VmError::Timeout { .. }) => {
            let text = e.to_string();
            ensure!(
                text.contains("serial log") && text.contains("__IVLINK_E"),
                "the timeout error does not quote the log: {text}"
            );
        }
        other => bail!("wait_for an absent line gave {other:?}"),
    }
    report.push(format!(
        "ok     wait_for timeout error quotes the log ({:.2} s)",
        started.elapsed().as_secs_f64()
    ));

    // start + wait_for: the typed line (which holds the needle) is not matched.
    guest.start("(sleep 1; echo delayed-hello) &")?;
    let line = guest.wait_for("delayed-hello", Duration::from_secs(20))?;
    ensure!(line.ends_with("delayed-hello"), "wait_for gave '{line}'");
    report.push("ok     start + wait_for".to_owned());

    // Someone else on the console while the harness is detached.
    guest.detach_console();
    {
        let mut person = UnixStream::connect(guest.console_socket())
            .context("connecting to the detached console")?;
        person.set_read_timeout(Some(Duration::from_secs(20)))?;
        person.write_all(b"echo typed-by-a-per\"\"son\n")?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("typed-by-a-person\r\n") {
            let n = person
                .read(&mut buf)
                .context("reading the console as another client")?;
            ensure!(n > 0, "the console closed on another client");
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let out = guest.run("echo back-again", COMMAND_TIMEOUT)?;
    ensure!(
        out.output == "back-again" && out.status == 0,
        "after reattaching: {out:?}"
    );
    report.push("ok     detach_console, another client, reattach".to_owned());
    Ok(report)
}

/// QEMU exits at once when the server socket exists but nobody listens: boot or
/// the first wait must say so, with QEMU's message.
fn early_exit_check(qemu: &Path, image_dir: &Path, dir: &Path) -> Result<String> {
    let dead = dir.join("dead.sock");
    drop(UnixListener::bind(&dead)?);
    let mut config = GuestConfig::from_image("dead", image_dir, &dead, dir);
    config.qemu = qemu.to_path_buf();
    let started = Instant::now();
    let error = match Guest::boot(config) {
        Err(e) => e,
        Ok(mut guest) => match guest.wait_ready(Duration::from_secs(30)) {
            Err(e) => e,
            Ok(()) => bail!("a guest booted on a socket nobody listens on"),
        },
    };
    ensure!(
        matches!(error, VmError::Exited { .. }) && error.to_string().contains("dead.sock"),
        "expected an early exit naming the socket, got: {error}"
    );
    let first = error.to_string();
    let qemu_said = first
        .lines()
        .skip_while(|l| !l.contains("QEMU output"))
        .nth(1)
        .unwrap_or("")
        .to_owned();
    Ok(format!(
        "ok     QEMU exits early without a listening server ({:.2} s): {qemu_said}",
        started.elapsed().as_secs_f64()
    ))
}
