//! The relay's threads: upstream (local source → port), downstream (port →
//! local sink), and watchers for a stop descriptor and a child, all scoped, all
//! ended through one [`Wake`].
//!
//! The port's halves block in slices of [`TICK`] and look at the wake state in
//! between; the local ends block in poll(2) with the wake pipe. So every thread
//! ends soon after the wake is raised, and the scope always closes.

use std::io;
use std::os::fd::BorrowedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::Duration;

use rustix::event::PollFlags;

use super::exec;
use super::local::{Got, Sink, Source, Wake, WakeState, wait_fd};
use super::port::{DuplexPort, PortRead, PortWrite, is_timeout};
use super::{Outcome, RelayError};

/// How long one blocking call on the port lasts before the wake state is looked at.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Bytes moved at a time each way.
const CHUNK: usize = 64 * 1024;

/// How a relay ends, per direction.
pub(crate) struct Plan<'o> {
    pub(crate) source: Source,
    pub(crate) sink: Sink<'o>,
    /// The source's end closes the port's output; otherwise it waits for the
    /// port's end (or a stop) first (`--keep-open`).
    pub(crate) close_at_source_end: bool,
    /// The port's end ends the relay (`--keep-open`, a pty).
    pub(crate) end_at_port_end: bool,
    /// A byte in the source that ends the relay (a terminal's escape key).
    pub(crate) escape: Option<u8>,
    /// A child whose exit ends the relay once its output was sent.
    pub(crate) child: Option<Child>,
}

/// How the upstream direction ended.
enum Upstream {
    /// The port's output was closed after every byte was taken (or on a stop).
    Closed,
    /// The escape byte came: the output was closed at once.
    Escaped,
}

enum Event {
    Up(Result<Upstream, RelayError>),
    Down(Result<(), RelayError>),
    Child(io::Result<ExitStatus>),
    Stop,
}

/// Runs `plan` over `port` until both directions have ended (see the module
/// docs of [`super`] for when that is).
pub(crate) fn run<P: DuplexPort>(
    port: P,
    plan: Plan<'_>,
    stop: Option<BorrowedFd<'_>>,
) -> Result<Outcome, RelayError> {
    let Plan {
        mut source,
        mut sink,
        close_at_source_end,
        end_at_port_end,
        escape,
        child,
    } = plan;
    let wake = match Wake::new() {
        Ok(wake) => wake,
        Err(e) => {
            if let Some(mut child) = child {
                // Nobody would wait for it otherwise.
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(RelayError::Setup(e));
        }
    };
    let (mut rx, mut tx) = port.split();
    let wake = &wake;
    let has_child = child.is_some();
    let (events, inbox) = mpsc::channel();
    std::thread::scope(|scope| {
        let sender = events.clone();
        scope.spawn(move || {
            let up = catch_unwind(AssertUnwindSafe(|| {
                upstream(&mut source, &mut tx, wake, close_at_source_end, escape)
            }));
            let _ = sender.send(Event::Up(up.unwrap_or(Err(RelayError::SenderPanicked))));
        });
        let sender = events.clone();
        let sink = &mut sink;
        scope.spawn(move || {
            let down = catch_unwind(AssertUnwindSafe(|| downstream(&mut rx, sink, wake)));
            let _ = sender.send(Event::Down(
                down.unwrap_or(Err(RelayError::ReceiverPanicked)),
            ));
        });
        if let Some(stop) = stop {
            let sender = events.clone();
            scope.spawn(move || {
                if let Ok(true) = wait_fd(stop, PollFlags::IN | PollFlags::HUP, wake) {
                    let _ = sender.send(Event::Stop);
                }
            });
        }
        if let Some(child) = child {
            let sender = events.clone();
            scope.spawn(move || {
                let _ = sender.send(Event::Child(exec::watch(child, wake)));
            });
        }
        drop(events);
        let outcome = supervise(&inbox, wake, end_at_port_end, has_child);
        // Ends the watchers (and anything still blocked) in every case.
        wake.raise(WakeState::Stop);
        outcome
    })
}

/// Takes the threads' reports until the relay is over.
fn supervise(
    inbox: &mpsc::Receiver<Event>,
    wake: &Wake,
    end_at_port_end: bool,
    has_child: bool,
) -> Result<Outcome, RelayError> {
    let mut up_done = false;
    let mut down_done = false;
    let mut exited = None;
    let mut escaped = false;
    let mut stopped = false;
    let mut failure = None;
    while let Ok(event) = inbox.recv() {
        match event {
            Event::Up(Ok(end)) => {
                up_done = true;
                if matches!(end, Upstream::Escaped) {
                    escaped = true;
                    wake.raise(WakeState::Stop);
                }
            }
            Event::Down(Ok(())) => {
                down_done = true;
                if end_at_port_end {
                    wake.raise(WakeState::Finish);
                }
            }
            Event::Up(Err(e)) | Event::Down(Err(e)) => {
                failure.get_or_insert(e);
                wake.raise(WakeState::Stop);
            }
            Event::Child(Ok(status)) => exited = Some(status),
            Event::Child(Err(e)) => {
                failure.get_or_insert(RelayError::Wait(e));
                wake.raise(WakeState::Stop);
            }
            Event::Stop => {
                stopped = true;
                wake.raise(WakeState::Stop);
            }
        }
        if has_child && up_done && exited.is_some() {
            // The child is gone and all it wrote was sent: nobody takes more input.
            wake.raise(WakeState::Finish);
        }
        if up_done && down_done {
            // Both directions are over: ends the watchers.
            wake.raise(WakeState::Stop);
        }
    }
    // Every sender has reported (the channel closed): the threads are done.
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(if stopped {
        Outcome::Stopped
    } else if escaped {
        Outcome::Escaped
    } else if let Some(status) = exited {
        Outcome::Exited(status)
    } else {
        Outcome::Ended
    })
}

/// Local source → port, then the half-close.
fn upstream<W: PortWrite>(
    source: &mut Source,
    tx: &mut W,
    wake: &Wake,
    close_at_source_end: bool,
    escape: Option<u8>,
) -> Result<Upstream, RelayError> {
    tx.set_write_timeout(Some(TICK));
    let mut buf = vec![0u8; CHUNK];
    let mut escaped = false;
    loop {
        match source.read(&mut buf, wake).map_err(RelayError::ReadInput)? {
            Got::Data(n) => {
                let mut data = &buf[..n];
                if let Some(at) = escape.and_then(|e| data.iter().position(|&b| b == e)) {
                    data = &data[..at];
                    escaped = true;
                }
                if !send(tx, data, wake)? || escaped {
                    break;
                }
            }
            Got::Eof if close_at_source_end => break,
            Got::Eof => {
                // Keep the output open until the port's end or a stop.
                let idle = wait_fd(wake.fd(), PollFlags::IN, wake);
                idle.map_err(RelayError::ReadInput)?;
                break;
            }
            Got::Woken => break,
            Got::Idle => tx.check().map_err(RelayError::WriteStream)?,
        }
    }
    if !escaped && wake.state() != WakeState::Stop {
        wait_taken(tx, wake)?;
    }
    tx.close().map_err(RelayError::CloseStream)?;
    Ok(if escaped {
        Upstream::Escaped
    } else {
        Upstream::Closed
    })
}

/// Writes all of `data` into the port and flushes; `Ok(false)` on a stop.
fn send<W: PortWrite>(tx: &mut W, mut data: &[u8], wake: &Wake) -> Result<bool, RelayError> {
    while !data.is_empty() {
        match tx.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) => {
                if wake.state() == WakeState::Stop {
                    return Ok(false);
                }
                tx.check().map_err(RelayError::WriteStream)?;
            }
            Err(e) => return Err(RelayError::WriteStream(e)),
        }
    }
    tx.flush().map_err(RelayError::WriteStream)?;
    Ok(true)
}

/// Waits until the peer took every byte sent, or a stop.
fn wait_taken<W: PortWrite>(tx: &mut W, wake: &Wake) -> Result<(), RelayError> {
    while wake.state() != WakeState::Stop {
        if tx.wait_taken(TICK).map_err(RelayError::WriteStream)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Port → local sink until the port's end (then the sink's end) or a wake.
fn downstream<R: PortRead>(rx: &mut R, sink: &mut Sink<'_>, wake: &Wake) -> Result<(), RelayError> {
    rx.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; CHUNK];
    while !wake.raised() {
        match rx.read(&mut buf) {
            Ok(0) => return sink.end().map_err(RelayError::WriteOutput),
            Ok(n) => {
                if !sink
                    .write_all(&buf[..n], wake)
                    .map_err(RelayError::WriteOutput)?
                {
                    return Ok(());
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(RelayError::ReadStream(e)),
        }
    }
    Ok(())
}
