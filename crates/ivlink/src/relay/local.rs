//! The local end of a relay: where bytes for the port come from ([`Source`]) and
//! where the port's bytes go ([`Sink`]), each interruptible by a [`Wake`].
//!
//! File descriptors are waited on with poll(2) together with the wake pipe, so a
//! blocked read of a terminal or a write to a stalled pipe still ends when the
//! relay stops. Writes to a descriptor go in pieces of at most `PIPE_BUF` after
//! poll said it is writable, so they never block past a stop.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, pipe_with};

/// How long a source fed by a channel waits before looking at the wake state.
const CHANNEL_TICK: Duration = Duration::from_millis(100);
/// The largest write a pipe takes at once when poll said it is writable.
const PIPE_BUF: usize = 4096;

/// What the relay's threads are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum WakeState {
    /// Carry on.
    Running = 0,
    /// End cleanly: send what is pending, wait until it was taken, close.
    Finish = 1,
    /// End now: close without waiting.
    Stop = 2,
}

/// A state the relay's threads look at, and a pipe that becomes readable (and
/// stays so) once it left [`WakeState::Running`], for threads blocked in poll.
pub(crate) struct Wake {
    state: AtomicU8,
    read: OwnedFd,
    write: OwnedFd,
}

impl Wake {
    pub(crate) fn new() -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Wake {
            state: AtomicU8::new(WakeState::Running as u8),
            read,
            write,
        })
    }

    /// Moves to `to` unless already further (Stop wins over Finish).
    pub(crate) fn raise(&self, to: WakeState) {
        let before = self.state.fetch_max(to as u8, Ordering::SeqCst);
        if before == WakeState::Running as u8 {
            // Never read: the pipe stays readable. Full cannot happen (one byte).
            let _ = rustix::io::write(&self.write, &[1]);
        }
    }

    pub(crate) fn state(&self) -> WakeState {
        match self.state.load(Ordering::SeqCst) {
            0 => WakeState::Running,
            1 => WakeState::Finish,
            _ => WakeState::Stop,
        }
    }

    pub(crate) fn raised(&self) -> bool {
        self.state() != WakeState::Running
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// Waits until `fd` has one of `events`, or the wake was raised (`Ok(false)`).
pub(crate) fn wait_fd(fd: BorrowedFd<'_>, events: PollFlags, wake: &Wake) -> io::Result<bool> {
    loop {
        if let Some(ready) = wait_fd_for(fd, events, wake, Duration::from_secs(3600))? {
            return Ok(ready);
        }
    }
}

/// [`wait_fd`] for at most `timeout`: `None` if neither became ready.
fn wait_fd_for(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    wake: &Wake,
    timeout: Duration,
) -> io::Result<Option<bool>> {
    let timeout = rustix::event::Timespec::try_from(timeout)
        .map_err(|_| io::Error::other("timeout too long"))?;
    loop {
        let mut fds = [
            PollFd::from_borrowed_fd(wake.fd(), PollFlags::IN),
            PollFd::from_borrowed_fd(fd, events),
        ];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if !fds[0].revents().is_empty() {
            return Ok(Some(false));
        }
        if !fds[1].revents().is_empty() {
            return Ok(Some(true));
        }
    }
}

/// How long a source may stay quiet before the relay looks at the port (an idle
/// input must not hide a vanished peer or server).
const IDLE_AFTER: Duration = Duration::from_millis(100);

/// What a [`Source`] read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Got {
    /// This many bytes (more than 0).
    Data(usize),
    /// The source ended.
    Eof,
    /// The wake was raised first.
    Woken,
    /// Nothing came for a while: time to see whether the port is still there.
    Idle,
}

/// Where the bytes for the port come from.
pub(crate) enum Source {
    /// A descriptor (standard input, a pty's master, a child's output).
    Fd(OwnedFd),
    /// A pty's master; `slave` is the descriptor held so that the master does
    /// not read EIO when programs close the slave. After a hangup (EIO anyway)
    /// the slave is opened again, once per hangup: EIO twice with no byte in
    /// between fails.
    Pty {
        master: OwnedFd,
        slave: OwnedFd,
        path: PathBuf,
        reopened: bool,
    },
    /// Chunks read by a thread of their own from any `Read`; the channel's end
    /// is the input's end.
    Chunks {
        chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
        pending: Vec<u8>,
        at: usize,
    },
}

impl Source {
    pub(crate) fn chunks(chunks: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Source::Chunks {
            chunks,
            pending: Vec::new(),
            at: 0,
        }
    }

    /// Reads what is there into `buf`, waiting until something is, the source
    /// ends or `wake` is raised.
    pub(crate) fn read(&mut self, buf: &mut [u8], wake: &Wake) -> io::Result<Got> {
        match self {
            Source::Fd(fd) => loop {
                match read_fd(fd.as_fd(), buf, wake)? {
                    Err(Errno::INTR | Errno::AGAIN) => {}
                    Err(e) => return Err(e.into()),
                    Ok(got) => return Ok(got),
                }
            },
            Source::Pty {
                master,
                slave,
                path,
                reopened,
            } => loop {
                match read_fd(master.as_fd(), buf, wake)? {
                    Err(Errno::INTR | Errno::AGAIN) => {}
                    Err(Errno::IO) if !*reopened => {
                        *slave = super::pty::reopen_slave(path)?;
                        *reopened = true;
                    }
                    Err(e) => return Err(e.into()),
                    Ok(got) => {
                        *reopened = false;
                        return Ok(got);
                    }
                }
            },
            Source::Chunks {
                chunks,
                pending,
                at,
            } => loop {
                if *at < pending.len() {
                    let n = (pending.len() - *at).min(buf.len());
                    buf[..n].copy_from_slice(&pending[*at..*at + n]);
                    *at += n;
                    return Ok(Got::Data(n));
                }
                if wake.raised() {
                    return Ok(Got::Woken);
                }
                match chunks.recv_timeout(CHANNEL_TICK) {
                    Ok(chunk) => {
                        *pending = chunk?;
                        *at = 0;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Got::Idle),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Got::Eof),
                }
            },
        }
    }
}

/// One poll-then-read of `fd`: the outer error is poll's, the inner the read's.
fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8], wake: &Wake) -> io::Result<Result<Got, Errno>> {
    let ready = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
    match wait_fd_for(fd, ready, wake, IDLE_AFTER)? {
        Some(true) => {}
        Some(false) => return Ok(Ok(Got::Woken)),
        None => return Ok(Ok(Got::Idle)),
    }
    Ok(match rustix::io::read(fd, buf) {
        Ok(0) => Ok(Got::Eof),
        Ok(n) => Ok(Got::Data(n)),
        Err(e) => Err(e),
    })
}

/// Where the port's bytes go.
pub(crate) enum Sink<'o> {
    /// A descriptor. `None` once ended. With `discard_when_gone`, a reader that
    /// went away (EPIPE: a child that exited or closed its input) makes the rest
    /// be dropped instead of failing.
    Fd {
        fd: Option<OwnedFd>,
        discard_when_gone: bool,
        close_at_end: bool,
    },
    /// Any writer, flushed after each piece (cannot be interrupted).
    Writer(&'o mut (dyn Write + Send)),
}

impl Sink<'_> {
    /// Writes all of `data`; `Ok(false)` if the wake was raised first.
    pub(crate) fn write_all(&mut self, data: &[u8], wake: &Wake) -> io::Result<bool> {
        match self {
            Sink::Fd {
                fd,
                discard_when_gone,
                ..
            } => {
                let mut rest = data;
                while !rest.is_empty() {
                    let Some(out) = fd.as_ref() else {
                        return Ok(true);
                    };
                    let ready = PollFlags::OUT | PollFlags::HUP | PollFlags::ERR;
                    if !wait_fd(out.as_fd(), ready, wake)? {
                        return Ok(false);
                    }
                    let piece = &rest[..rest.len().min(PIPE_BUF)];
                    match rustix::io::write(out, piece) {
                        Ok(n) => rest = &rest[n..],
                        Err(Errno::INTR | Errno::AGAIN) => {}
                        Err(Errno::PIPE) if *discard_when_gone => *fd = None,
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(true)
            }
            Sink::Writer(w) => {
                w.write_all(data)?;
                w.flush()?;
                Ok(true)
            }
        }
    }

    /// The port's input ended: a child's input is closed (it reads end of file);
    /// a terminal or standard output stays.
    pub(crate) fn end(&mut self) -> io::Result<()> {
        match self {
            Sink::Fd {
                fd, close_at_end, ..
            } => {
                if *close_at_end {
                    *fd = None;
                }
                Ok(())
            }
            Sink::Writer(w) => w.flush(),
        }
    }
}
