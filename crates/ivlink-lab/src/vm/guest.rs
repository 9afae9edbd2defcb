//! [`Guest`]: one running QEMU guest: booting it, the console connection, bounded
//! waits, power-off and clean-up.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::console::{Console, Transcript, find_line, tail};
use super::{ERROR_LOG_LINES, GuestConfig, READY_MARKER, VmError};

/// How long QEMU may take to create the console socket.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often waits look at the QEMU process (new output wakes them at once).
const POLL: Duration = Duration::from_millis(20);

/// One running QEMU guest. See the [module docs](super).
#[derive(Debug)]
pub struct Guest {
    pub(super) config: GuestConfig,
    child: Child,
    pid: u32,
    exit: Option<ExitStatus>,
    console: Option<Console>,
    /// Everything read from the console connection(s).
    pub(super) transcript: Arc<Transcript>,
    /// Where the next search of the transcript starts.
    pub(super) cursor: usize,
    /// Numbers the markers of typed commands.
    pub(super) seq: u64,
    started: Instant,
    ready_after: Option<Duration>,
}

impl Guest {
    /// Starts QEMU for `config` and connects to its console. Checks first that the
    /// image exists and (for a doorbell guest) that the server socket exists.
    ///
    /// The command is `-accel <accel> -M q35 -m <memory_mib> -nodefaults
    /// -display none -no-reboot -device intel-iommu`, the console chardev (socket
    /// server with `logfile`) as `-serial`, `-kernel -initrd -append`, then the
    /// `ivshmem-doorbell` (or `ivshmem-plain`) device and
    /// [`extra_qemu_args`](GuestConfig::extra_qemu_args).
    pub fn boot(config: GuestConfig) -> Result<Guest, VmError> {
        config.check()?;
        let args = config.qemu_args()?;
        for stale in [&config.console_socket, &config.log_path] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(VmError::Io {
                        what: format!("guest {}: removing {}", config.name, stale.display()),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        let io_err = |what: String| move |source| VmError::Io { what, source };
        let output_path = config.qemu_output_path();
        let output = File::create(&output_path)
            .map_err(io_err(format!("creating {}", output_path.display())))?;
        let output2 = output
            .try_clone()
            .map_err(io_err("duplicating a file descriptor".to_owned()))?;
        let child = Command::new(&config.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output2)
            .spawn()
            .map_err(io_err(format!(
                "guest {}: starting {}",
                config.name,
                config.qemu.display()
            )))?;
        tracing::debug!(guest = %config.name, pid = child.id(), ?args, "QEMU started");
        let mut guest = Guest {
            pid: child.id(),
            child,
            exit: None,
            console: None,
            transcript: Arc::default(),
            cursor: 0,
            seq: 0,
            started: Instant::now(),
            ready_after: None,
            config,
        };
        guest.attach_console()?;
        Ok(guest)
    }

    /// Waits until the guest prints [`READY_MARKER`] (modules loaded, shell about
    /// to start). Records the time from boot (see [`ready_after`](Self::ready_after)).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), VmError> {
        if self.ready_after.is_some() {
            return Ok(());
        }
        // The marker normally comes over the console connection; the log also has
        // it if it was printed before the harness connected.
        let log_path = self.config.log_path.clone();
        let end = self.wait_until(
            &format!("the ready marker '{READY_MARKER}'"),
            timeout,
            |text| {
                if let Some((_, end)) = find_line(text, 0, |line| line.contains(READY_MARKER)) {
                    return Some(end);
                }
                let log = std::fs::read(&log_path).ok()?;
                find_line(&log, 0, |line| line.contains(READY_MARKER)).map(|_| text.len())
            },
        )?;
        self.ready_after = Some(self.started.elapsed());
        self.cursor = self.cursor.max(end);
        Ok(())
    }

    /// Types `poweroff -f` and waits for QEMU to exit. On timeout QEMU is killed
    /// and this is an error. Nothing to do if QEMU has exited already.
    pub fn poweroff(&mut self, timeout: Duration) -> Result<(), VmError> {
        if self.try_exit()?.is_some() {
            return Ok(());
        }
        // If typing fails, QEMU may just have exited; the wait below tells.
        let typed = self.type_text("poweroff -f\n");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                self.close_console();
                tracing::debug!(guest = %self.config.name, %status, "QEMU exited");
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                let mut what = "QEMU to exit after `poweroff -f`".to_owned();
                if let Err(e) = typed {
                    let _ = write!(what, " (typing it failed: {e})");
                }
                return Err(self.timeout_error(what, timeout));
            }
            thread::sleep(POLL);
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration the guest was booted with.
    pub fn config(&self) -> &GuestConfig {
        &self.config
    }

    /// The time from starting QEMU to the ready marker, once
    /// [`wait_ready`](Self::wait_ready) has seen it.
    pub fn ready_after(&self) -> Option<Duration> {
        self.ready_after
    }

    /// The last `lines` lines of the serial log (read afresh from the file;
    /// carriage returns and escape sequences removed).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read(&self.config.log_path).unwrap_or_default(),
            lines,
        )
    }

    /// The console's UNIX socket (one client at a time).
    pub fn console_socket(&self) -> &Path {
        &self.config.console_socket
    }

    /// The serial log.
    pub fn log_path(&self) -> &Path {
        &self.config.log_path
    }

    /// Drops the harness's console connection so a person can attach to
    /// [`console_socket`](Self::console_socket) (QEMU serves one client at a time).
    /// What the guest prints while the harness is detached goes to the log only.
    /// [`run`](Self::run), [`start`](Self::start), [`wait_for`](Self::wait_for) and
    /// [`poweroff`](Self::poweroff) reconnect by themselves (QEMU serves the new
    /// connection once the other client has gone).
    pub fn detach_console(&mut self) {
        self.close_console();
    }

    /// Connects the harness to the console socket again (waits up to 20 s for it).
    pub fn attach_console(&mut self) -> Result<(), VmError> {
        if self.console.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + CONSOLE_TIMEOUT;
        loop {
            if self.config.console_socket.exists() {
                match Console::connect(&self.config.console_socket, Arc::clone(&self.transcript)) {
                    Ok(console) => {
                        self.console = Some(console);
                        return Ok(());
                    }
                    Err(e) if Instant::now() >= deadline => {
                        return Err(VmError::Console {
                            name: self.config.name.clone(),
                            path: self.config.console_socket.clone(),
                            source: e,
                        });
                    }
                    Err(_) => {}
                }
            }
            if let Some(status) = self.try_exit()? {
                return Err(self.exited_error(status, "while connecting to the console"));
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(
                    format!(
                        "QEMU to create the console socket {}",
                        self.config.console_socket.display()
                    ),
                    CONSOLE_TIMEOUT,
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Writes `text` to the console (connecting first if detached).
    pub(super) fn type_text(&mut self, text: &str) -> Result<(), VmError> {
        if let Some(status) = self.try_exit()? {
            return Err(self.exited_error(status, "before typing into the console"));
        }
        self.attach_console()?;
        let console = self.console.as_mut().expect("attached");
        let result = console
            .stream
            .write_all(text.as_bytes())
            .and_then(|()| console.stream.flush());
        result.map_err(|source| {
            self.close_console();
            VmError::Console {
                name: self.config.name.clone(),
                path: self.config.console_socket.clone(),
                source,
            }
        })
    }

    fn close_console(&mut self) {
        if let Some(console) = self.console.take() {
            console.close();
        }
    }

    /// Polls `check` on the transcript until it gives a value, QEMU exits or the
    /// time is up.
    pub(super) fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let text = self.transcript.lock();
                if let Some(value) = check(&text) {
                    return Ok(value);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                // Wake up for new output, or to look at the process now and then.
                let _ = self.transcript.grew.wait_timeout(text, left.min(POLL));
            }
            if let Some(status) = self.try_exit()? {
                // Read what QEMU sent before it went.
                if let Some(console) = &mut self.console {
                    console.join();
                }
                if let Some(value) = check(&self.transcript.lock()) {
                    return Ok(value);
                }
                return Err(self.exited_error(status, &format!("while waiting for {what}")));
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(what.to_owned(), timeout));
            }
        }
    }

    /// QEMU's exit status, if it has exited.
    fn try_exit(&mut self) -> Result<Option<ExitStatus>, VmError> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(|source| VmError::Io {
                what: format!(
                    "guest {}: waiting for QEMU (pid {})",
                    self.config.name, self.pid
                ),
                source,
            })?;
        }
        Ok(self.exit)
    }

    /// Kills QEMU by its pid and reaps it.
    fn kill(&mut self) {
        if self.exit.is_none() {
            // Child::kill signals this child's pid (SIGKILL), never a name.
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        self.close_console();
    }

    fn timeout_error(&self, what: String, after: Duration) -> VmError {
        VmError::Timeout {
            name: self.config.name.clone(),
            what,
            after,
            log_tail: self.log_tail(ERROR_LOG_LINES),
        }
    }

    fn exited_error(&self, status: ExitStatus, context: &str) -> VmError {
        let output = std::fs::read(self.config.qemu_output_path()).unwrap_or_default();
        let qemu_output = tail(&output, ERROR_LOG_LINES);
        VmError::Exited {
            name: self.config.name.clone(),
            status: status.to_string(),
            context: context.to_owned(),
            qemu_output: if qemu_output.trim().is_empty() {
                "(nothing)".to_owned()
            } else {
                qemu_output
            },
            log_tail: self.log_tail(ERROR_LOG_LINES),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config.console_socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{INITRD_FILE, KERNEL_FILE};

    #[test]
    fn guests_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Guest>();
        assert_send::<GuestConfig>();
    }

    #[test]
    fn boot_refuses_a_missing_server_socket() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KERNEL_FILE), b"k").unwrap();
        std::fs::write(dir.path().join(INITRD_FILE), b"i").unwrap();
        let config = GuestConfig::new(
            "g",
            dir.path().join(KERNEL_FILE),
            dir.path().join(INITRD_FILE),
            dir.path().join("nosock"),
            2,
        );
        assert_eq!(config.console_socket, dir.path().join("g.console"));
        let err = Guest::boot(config).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
