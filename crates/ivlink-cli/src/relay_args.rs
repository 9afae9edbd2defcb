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

/// Ready to relay: the pty opened (and shown).
pub struct Prepared {
    label: String,
    endpoint: Endpoint,
    keep_open: bool,
    no_raw: bool,
    exec: Option<String>,
    /// What the local end is called when reading it and writing it fails.
    local: (&'static str, &'static str),
}

impl RelayArgs {
    /// Opens the pty (printing `LABEL: pty /dev/pts/N`, so a program may attach
    /// while the peer is awaited).
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
        Ok(Prepared {
            label: label.to_owned(),
            endpoint,
            keep_open: self.keep_open,
            no_raw: self.no_raw,
            exec: self.exec.clone(),
            local: match (&self.exec, self.pty) {
                (Some(_), _) => ("the command's output", "the command's input"),
                (None, true) => ("the pty", "the pty"),
                (None, false) => ("standard input", "standard output"),
            },
        })
    }
}

/// SIGINT, SIGTERM and SIGHUP caught for the time of a relay: each makes `stop`
/// readable and leaves its number in `caught`. Until then (opening the port,
/// waiting for the peer) they act as usual.
struct CaughtSignals {
    stop: UnixStream,
    caught: Arc<AtomicUsize>,
    handlers: Vec<SigId>,
}

impl CaughtSignals {
    fn catch() -> io::Result<CaughtSignals> {
        let (stop, wake) = UnixStream::pair()?;
        let mut signals = CaughtSignals {
            stop,
            caught: Arc::new(AtomicUsize::new(0)),
            handlers: Vec::new(),
        };
        for number in [SIGINT, SIGTERM, SIGHUP] {
            let flag = signals.caught.clone();
            let handler = signal_hook::flag::register_usize(number, flag, number as usize)?;
            signals.handlers.push(handler);
            let handler = signal_hook::low_level::pipe::register(number, wake.try_clone()?)?;
            signals.handlers.push(handler);
        }
        Ok(signals)
    }

    /// The exit code for the signal that came: 128 + its number.
    fn exit_code(&self) -> u8 {
        let number = self.caught.load(Ordering::SeqCst);
        u8::try_from(128 + number).unwrap_or(1)
    }
}

impl Drop for CaughtSignals {
    fn drop(&mut self) {
        for handler in self.handlers.drain(..) {
            signal_hook::low_level::unregister(handler);
        }
    }
}

impl Prepared {
    /// Relays `port` until it is over; `Err(ExitWith)` carries a signal's or the
    /// command's exit code.
    pub fn run(self, port: impl DuplexPort) -> anyhow::Result<()> {
        let signals = CaughtSignals::catch().context("catching signals")?;
        let options = RelayOptions {
            keep_open: self.keep_open,
            stop: Some(signals.stop.as_fd()),
            cooked: self.no_raw,
        };
        let stdio = matches!(self.endpoint, Endpoint::Stdio);
        if stdio && relay::stdio_is_raw(&options) {
            eprintln!("{}: terminal in raw mode; Ctrl-] quits", self.label);
        }
        let (reading, writing) = self.local;
        let outcome = relay::run(port, self.endpoint, &options).map_err(|e| match e {
            RelayError::ReadInput(e) => anyhow::Error::new(e).context(format!("reading {reading}")),
            RelayError::WriteOutput(e) => {
                anyhow::Error::new(e).context(format!("writing {writing}"))
            }
            other => other.into(),
        })?;
        match outcome {
            Outcome::Ended | Outcome::Escaped => Ok(()),
            Outcome::Stopped => Err(ExitWith {
                code: signals.exit_code(),
                message: None,
            }
            .into()),
            Outcome::Exited(status) => exit_status(&self.label, self.exec.as_deref(), status),
        }
    }
}

/// `Ok` for a command that exited 0, else its code (128 + a signal's number).
fn exit_status(label: &str, command: Option<&str>, status: ExitStatus) -> anyhow::Result<()> {
    let command = command.unwrap_or_default();
    let (code, how) = match (status.code(), status.signal()) {
        (Some(0), _) => return Ok(()),
        (Some(code), _) => (code, format!("exit code {code}")),
        (None, Some(signal)) => (128 + signal, format!("signal {signal}")),
        (None, None) => (1, status.to_string()),
    };
    Err(ExitWith {
        code: u8::try_from(code).unwrap_or(1),
        message: Some(format!("{label}: '{command}' ended with {how}")),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        relay: RelayArgs,
    }

    #[test]
    fn the_options_flatten_and_refuse_conflicts() {
        let parsed = Command::try_parse_from(["x", "--exec", "cat"]).unwrap();
        assert_eq!(parsed.relay.exec.as_deref(), Some("cat"));
        let parsed = Command::try_parse_from(["x", "--pty", "--keep-open"]).unwrap();
        assert!(parsed.relay.pty && parsed.relay.keep_open);
        for refused in [
            &["x", "--pty", "--exec", "cat"][..],
            &["x", "--keep-open", "--exec", "cat"],
            &["x", "--no-raw", "--pty"],
        ] {
            let error = Command::try_parse_from(refused).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        }
    }

    #[test]
    fn a_commands_status_becomes_the_exit_code() {
        assert!(exit_status("s", Some("true"), ExitStatus::from_raw(0)).is_ok());
        let failed = exit_status("s", Some("false"), ExitStatus::from_raw(3 << 8)).unwrap_err();
        let failed = failed.downcast_ref::<ExitWith>().unwrap();
        assert_eq!(failed.code, 3);
        assert_eq!(failed.to_string(), "s: 'false' ended with exit code 3");
        let killed = exit_status("s", Some("sleep"), ExitStatus::from_raw(9)).unwrap_err();
        assert_eq!(killed.downcast_ref::<ExitWith>().unwrap().code, 128 + 9);
    }
}
