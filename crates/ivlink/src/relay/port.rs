//! What a relay needs from a duplex byte port: a reading half and a writing half,
//! each blocking for a bounded time, a half-close, and a way to tell that every
//! byte written was taken.
//!
//! Conventions every implementation follows (the relay relies on them):
//! - A read returns `Ok(0)` once the peer closed its output and every byte it
//!   sent has been read (end of file).
//! - The peer gone without closing is an error of kind
//!   [`io::ErrorKind::ConnectionAborted`] (reading) or
//!   [`io::ErrorKind::BrokenPipe`] (writing) ([`is_peer_gone`]).
//! - A read or write that waited its whole timeout fails with
//!   [`io::ErrorKind::TimedOut`] (or `WouldBlock`) having consumed nothing
//!   ([`is_timeout`]); it may be retried.

use std::io::{self, Read, Write};
use std::time::Duration;

/// A duplex byte port (a stream to a peer, a console port), split into a
/// half per direction so that each direction can block on a thread of its own.
pub trait DuplexPort {
    /// The receiving half.
    type Reader: PortRead;
    /// The sending half.
    type Writer: PortWrite;

    /// Splits the port into its two halves.
    fn split(self) -> (Self::Reader, Self::Writer);
}

/// The receiving half of a [`DuplexPort`].
pub trait PortRead: Read + Send {
    /// Bounds how long one read may block (`None`: until data, the end or an
    /// error); past it the read fails with [`io::ErrorKind::TimedOut`].
    fn set_read_timeout(&mut self, timeout: Option<Duration>);
}

/// The sending half of a [`DuplexPort`]. [`Write::flush`] makes written bytes
/// visible to the peer.
pub trait PortWrite: Write + Send {
    /// Bounds how long one write may block waiting for room (`None`: forever);
    /// past it the write fails with [`io::ErrorKind::TimedOut`], nothing written.
    fn set_write_timeout(&mut self, timeout: Option<Duration>);

    /// Flushes, then waits up to `timeout` until the peer has taken every byte
    /// written so far: `Ok(true)` once it has, `Ok(false)` if the time passed
    /// first. Called before [`close`](Self::close).
    fn wait_taken(&mut self, timeout: Duration) -> io::Result<bool>;

    /// Flushes and closes this side's output (a half-close): the peer reads end
    /// of file after the data. Reading goes on. Closing twice is harmless.
    fn close(&mut self) -> io::Result<()>;

    /// Fails if the peer (or the transport under the port) is gone, without
    /// writing: for a writer idle between writes.
    fn check(&mut self) -> io::Result<()>;
}

/// Whether `error` is a bounded wait that ran out (retry it).
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Whether `error` says the peer left without closing.
pub fn is_peer_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
    )
}
