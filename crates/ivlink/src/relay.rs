//! Relaying a duplex byte port (a [`Stream`](crate::stream::Stream), a console
//! port) to the outside world, like `nc` or `socat`: standard input and output
//! (raw when a terminal), a pseudo-terminal, or a program.
//!
//! # Ends
//! - [`Endpoint::Stdio`]: standard input into the port, the port to standard
//!   output. When standard input is a terminal it is put in raw mode for the
//!   relay ([`RawMode`], restored on every way out) and [`ESCAPE`] (Ctrl-]) ends
//!   the relay; from a pipe every byte passes, the escape byte included.
//!   [`RelayOptions::cooked`] leaves a terminal alone (for a peer that does not
//!   echo, such as a shell over pipes).
//! - [`Endpoint::Pty`]: a pseudo-terminal pair ([`Pty`]); programs open and close
//!   its path as they like. Its input never ends, so the relay lasts until the
//!   port's end or a stop (as with `keep_open`).
//! - [`Endpoint::Exec`]: a program ([`shell`] makes `/bin/sh -c CMD`): the port's
//!   input is its standard input, its standard output and error go to the port.
//!   The port's end closes its input; its exit, once its output is drained and
//!   taken, closes the port's output and ends the relay (bytes still arriving
//!   have nobody to read them). The outcome carries its exit status.
//!
//! # Half-close
//! The end of the local input flushes, waits until the peer took every byte
//! sent, then closes this side's output: the peer reads end of file, like a TCP
//! half-close. The relay ends once both directions have (the port's end too),
//! so it succeeds only when everything sent was taken. With
//! [`RelayOptions::keep_open`] the end of the local input changes nothing: the
//! relay goes on until the port's end (then closes its own output the same way)
//! or a stop.
//!
//! # Stopping
//! [`RelayOptions::stop`] is a descriptor that becomes readable when the relay
//! must stop (the CLI registers SIGINT and SIGTERM to write to it): this side's
//! output is closed without waiting, a child is killed, and [`run`] returns
//! [`Outcome::Stopped`] — an ordinary return, so the terminal is restored.
//!
//! # Waiting
//! Nothing spins: the port's halves block in slices of 100 ms (looking whether to
//! stop in between), local descriptors are waited on with poll(2) beside an
//! internal wake pipe, a child's exit through its pidfd. The port's halves move
//! on a thread each, so a full port never stalls the other direction. The cost
//! is a poll(2) beside each read of the local input (up to 64 KiB) and each
//! write of up to 4 KiB to the local output; descriptor ends allocate nothing
//! per chunk (a plain `Read` input, read on its own thread, does).

mod engine;
mod exec;
mod local;
mod port;
mod pty;
mod terminal;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Command, ExitStatus};
use std::sync::mpsc;

use thiserror::Error;

pub use exec::shell;
pub use port::{DuplexPort, PortRead, PortWrite, is_peer_gone, is_timeout};
pub use pty::Pty;
pub use terminal::{ESCAPE, RawMode, is_terminal};

use engine::Plan;
use local::{Sink, Source};

/// Bytes read from a plain [`Read`] input at a time.
const INPUT_CHUNK: usize = 64 * 1024;

/// Where a relay failed.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Reading the input.
    #[error("reading the input")]
    ReadInput(#[source] io::Error),
    /// Writing into the port (or the port went away while the input was idle).
    #[error("writing to the port")]
    WriteStream(#[source] io::Error),
    /// Closing this side of the port.
    #[error("closing the port")]
    CloseStream(#[source] io::Error),
    /// Reading from the port.
    #[error("reading from the port")]
    ReadStream(#[source] io::Error),
    /// Writing the output.
    #[error("writing the output")]
    WriteOutput(#[source] io::Error),
    /// The sending thread panicked.
    #[error("the sending thread panicked")]
    SenderPanicked,
    /// The receiving thread panicked.
    #[error("the receiving thread panicked")]
    ReceiverPanicked,
    /// Setting up: the wake pipe, the terminal, duplicating descriptors.
    #[error("setting up the relay")]
    Setup(#[source] io::Error),
    /// Starting the program of [`Endpoint::Exec`].
    #[error("starting the command")]
    Spawn(#[source] io::Error),
    /// Waiting for the program of [`Endpoint::Exec`].
    #[error("waiting for the command")]
    Wait(#[source] io::Error),
}

/// The outside end of a relay.
#[derive(Debug)]
pub enum Endpoint {
    /// Standard input and output (raw mode and the escape key at a terminal).
    Stdio,
    /// A pseudo-terminal pair, opened (and its path shown) by the caller.
    Pty(Pty),
    /// A program to spawn; its standard input, output and error are set here.
    Exec(Command),
}

/// How a relay behaves.
#[derive(Debug, Default)]
pub struct RelayOptions<'f> {
    /// Stay up after the local input's end, until the port's end or a stop.
    pub keep_open: bool,
    /// Readable once the relay must stop (e.g. a pipe a signal handler writes to).
    pub stop: Option<BorrowedFd<'f>>,
    /// With [`Endpoint::Stdio`] at a terminal: leave it in its own mode (no raw
    /// mode, no escape key).
    pub cooked: bool,
}

/// How a relay ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions ended and everything sent was taken.
    Ended,
    /// The escape key was typed at the terminal.
    Escaped,
    /// The stop descriptor became readable.
    Stopped,
    /// The program of [`Endpoint::Exec`] exited, with this status, its output
    /// sent and taken.
    Exited(ExitStatus),
}

/// Whether [`run`] with [`Endpoint::Stdio`] and `options` puts standard input in
/// raw mode (so the caller can say so, and how to quit, first).
pub fn stdio_is_raw(options: &RelayOptions<'_>) -> bool {
    !options.cooked && is_terminal(io::stdin())
}

/// Relays `port` to `end` until both directions have ended, a stop or the escape
/// key (see the module docs).
pub fn run<P: DuplexPort>(
    port: P,
    end: Endpoint,
    options: &RelayOptions<'_>,
) -> Result<Outcome, RelayError> {
    let own = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().map_err(RelayError::Setup);
    match end {
        Endpoint::Stdio => {
            let raw = stdio_is_raw(options);
            let plan = Plan {
                source: Source::Fd(own(io::stdin().as_fd())?),
                sink: Sink::Fd {
                    fd: Some(own(io::stdout().as_fd())?),
                    discard_when_gone: false,
                    close_at_end: false,
                },
                close_at_source_end: !options.keep_open,
                end_at_port_end: options.keep_open,
                escape: raw.then_some(ESCAPE),
                child: None,
            };
            // Restored when this returns, however it returns.
            let _raw = match raw {
                true => Some(RawMode::enter(io::stdin()).map_err(RelayError::Setup)?),
                false => None,
            };
            engine::run(port, plan, options.stop)
        }
        Endpoint::Pty(pty) => {
            let (master, slave, path) = pty.into_parts();
            let plan = Plan {
                sink: Sink::Fd {
                    fd: Some(own(master.as_fd())?),
                    discard_when_gone: false,
                    close_at_end: false,
                },
                close_at_source_end: false,
                end_at_port_end: true,
                escape: None,
                child: None,
                source: Source::Pty {
                    master,
                    slave,
                    path,
                    reopened: false,
                },
            };
            engine::run(port, plan, options.stop)
        }
        Endpoint::Exec(command) => {
            let spawned = exec::spawn(command).map_err(RelayError::Spawn)?;
            let plan = Plan {
                source: Source::Fd(spawned.output),
                sink: Sink::Fd {
                    fd: Some(spawned.input),
                    discard_when_gone: true,
                    close_at_end: true,
                },
                close_at_source_end: true,
                end_at_port_end: false,
                escape: None,
                child: Some(spawned.child),
            };
            engine::run(port, plan, options.stop)
        }
    }
}

/// Copies `input` into `port` (closing its output at the input's end, once the
/// peer took everything) and the port into `output` (flushed after each read),
/// until both have ended.
///
/// `input` is read on a thread of its own that is left behind if the port
/// fails, since a read from any [`Read`] cannot be interrupted.
pub fn relay<P, I, O>(port: P, input: I, output: &mut O) -> Result<(), RelayError>
where
    P: DuplexPort,
    I: Read + Send + 'static,
    O: Write + Send,
{
    let (chunks, from_input) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || read_input(input, chunks));
    let plan = Plan {
        source: Source::chunks(from_input),
        sink: Sink::Writer(output),
        close_at_source_end: true,
        end_at_port_end: false,
        escape: None,
        child: None,
    };
    engine::run(port, plan, None).map(|_| ())
}

fn read_input(mut input: impl Read, chunks: mpsc::SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; INPUT_CHUNK];
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if chunks.send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = chunks.send(Err(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
