//! How a command that carries a byte port (`ivlink stream`, the console) meets
//! the outside world: standard input and output (raw at a terminal), `--pty` or
//! `--exec CMD`, and `--keep-open`. Flatten [`RelayArgs`] into the command's
//! options, [`prepare`](RelayArgs::prepare) before opening the port (so a pty's
//! path shows while the peer is awaited), then [`Prepared::run`].

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use clap::Args;
use ivlink::relay::{self, DuplexPort, Endpoint, Outcome, Pty, RelayError, RelayOptions};
use signal_hook::SigId;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The help text's paragraph on ends, half-close and the escape key.
pub const RELAY_HELP: &str = "\
Standard input goes to the peer and what the peer sends to standard output; at the end \
of standard input this side's output is closed (the peer reads end of file) once the peer \
took every byte, and the command exits 0 once both directions have ended. --keep-open \
leaves this side open after the end of standard input, until the peer's end or a signal.

At a terminal, standard input is put in raw mode (keys go to the peer as typed, Ctrl-C \
included) and restored on exit; Ctrl-] (0x1d) quits, as in telnet and virsh console \
(--no-raw keeps the terminal's own mode). \
SIGINT and SIGTERM close this side and exit 130 and 143.

--pty prints the pseudo-terminal's path on standard error (screen, picocom or agetty may \
open and close it any number of times) and runs until the peer's end. --exec runs the \
command with /bin/sh -c: the peer's bytes are its standard input, its standard output and \
error go to the peer; the exit code is the command's.";

/// Where the port goes: options shared by every command that relays one.
#[derive(Debug, Clone, Default, Args)]
pub struct RelayArgs {
    /// Expose the port as a pseudo-terminal (its path printed on standard error)
    /// instead of standard input and output
    #[arg(long, conflicts_with = "exec")]
    pub pty: bool,

    /// Attach a command (run by /bin/sh -c) to the port: the peer's bytes are its
    /// input, its output and errors go to the peer
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,

    /// Stay up after standard input ends, until the peer's end or a signal
    #[arg(long, conflicts_with = "exec")]
    pub keep_open: bool,

    /// At a terminal, leave it in its own mode (local line editing and echo, no
    /// escape key): for a peer that does not echo, such as --exec /bin/sh
    #[arg(long, conflicts_with_all = ["exec", "pty"])]
    pub no_raw: bool,
}

/// A command's exit code other than 0 or 1, with what to say first (if anything).
#[derive(Debug)]
pub struct ExitWith {
    /// The process's exit code.
    pub code: u8,
    /// A line for standard error, if the code needs one.
    pub message: Option<String>,
}

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(f, "exit code {}", self.code),
        }
    }
}

impl std::error::Error for ExitWith {}

/// Ready to relay: the pty opened, the signals caught.
pub struct Prepared {
    label: String,
    endpoint: Option<Endpoint>,
    keep_open: bool,
    no_raw: bool,
    exec: Option<String>,
    /// What the local end is called when reading it and writing it fails.
    local: (&'static str, &'static str),
    stop: UnixStream,
    signal: Arc<AtomicUsize>,
    handlers: Vec<SigId>,
}

impl RelayArgs {
    /// Opens the pty (printing `LABEL: pty /dev/pts/N`) and catches SIGINT,
    /// SIGTERM and SIGHUP, which from now on stop the relay cleanly.
    pub fn prepare(&self, label: &str) -> anyhow::Result<Prepared> {
        let endpoint = if let Some(command) = &self.exec {
            Endpoint::Exec(relay::shell(command))
        } else if self.pty {
            let pty = Pty::open().context("opening a pseudo-terminal")?;
            eprintln!("{label}: pty {}", pty.path().display());
            Endpoint::Pty(pty)
        } else {
            Endpoint::Stdio
        };
        let (stop, wake) = UnixStream::pair().context("creating the stop socket")?;
        let signal = Arc::new(AtomicUsize::new(0));
        let mut handlers = Vec::new();
        for number in [SIGINT, SIGTERM, SIGHUP] {
            let caught = (|| -> io::Result<()> {
                handlers.push(signal_hook::flag::register_usize(
                    number,
                    signal.clone(),
                    number as usize,
                )?);
                handlers.push(signal_hook::low_level::pipe::register(
                    number,
                    wake.try_clone()?,
                )?);
                Ok(())
            })();
            caught.context("catching signals")?;
        }
        Ok(Prepared {
            label: label.to_owned(),
            endpoint: Some(endpoint),
            keep_open: self.keep_open,
            no_raw: self.no_raw,
            exec: self.exec.clone(),
            local: match (&self.exec, self.pty) {
                (Some(_), _) => ("the command's output", "the command's input"),
                (None, true) => ("the pty", "the pty"),
                (None, false) => ("standard input", "standard output"),
            },
            stop,
            signal,
            handlers,
        })
    }
}

impl Prepared {
    /// Relays `port` until it is over; `Err(ExitWith)` carries a signal's or the
    /// command's exit code.
    pub fn run(mut self, port: impl DuplexPort) -> anyhow::Result<()> {
        let options = RelayOptions {
            keep_open: self.keep_open,
            stop: Some(self.stop.as_fd()),
            cooked: self.no_raw,
        };
        let endpoint = self.endpoint.take().unwrap_or(Endpoint::Stdio);
        let stdio = matches!(endpoint, Endpoint::Stdio);
        if stdio && relay::stdio_is_raw(&options) {
            eprintln!("{}: terminal in raw mode; Ctrl-] quits", self.label);
        }
        let outcome = relay::run(port, endpoint, &options).map_err(|e| self.explain(e))?;
        match outcome {
            Outcome::Ended | Outcome::Escaped => Ok(()),
            Outcome::Stopped => {
                let number = self.signal.load(Ordering::SeqCst);
                let code = if number == 0 { 130 } else { 128 + number };
                Err(ExitWith {
                    code: u8::try_from(code).unwrap_or(1),
                    message: None,
                }
                .into())
            }
            Outcome::Exited(status) => self.exit_status(status),
        }
    }

    fn exit_status(&self, status: ExitStatus) -> anyhow::Result<()> {
        let command = self.exec.as_deref().unwrap_or_default();
        let (code, how) = match (status.code(), status.signal()) {
            (Some(0), _) => return Ok(()),
            (Some(code), _) => (code, format!("exit code {code}")),
            (None, Some(signal)) => (128 + signal, format!("signal {signal}")),
            (None, None) => (1, status.to_string()),
        };
        Err(ExitWith {
            code: u8::try_from(code).unwrap_or(1),
            message: Some(format!("{}: '{command}' ended with {how}", self.label)),
        }
        .into())
    }

    /// Names the local end in an error.
    fn explain(&self, error: RelayError) -> anyhow::Error {
        let (reading, writing) = self.local;
        match error {
            RelayError::ReadInput(e) => anyhow::Error::new(e).context(format!("reading {reading}")),
            RelayError::WriteOutput(e) => {
                anyhow::Error::new(e).context(format!("writing {writing}"))
            }
            other => other.into(),
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for handler in self.handlers.drain(..) {
            signal_hook::low_level::unregister(handler);
        }
    }
}
