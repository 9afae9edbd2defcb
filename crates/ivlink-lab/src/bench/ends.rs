//! The baseline ends: the memcpy ring's sender and receiver (busy-polling),
//! a bare eventfd each way, and the write and read ends of sockets and pipes.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::BenchError;
use super::drive::{Duplex, Link, Sink, Source};
use super::ivlink::cadence;
use super::job::Job;
use super::memring::{MemConsumer, MemProducer, MemRing};
use super::spin::Spinner;

pub(super) fn mem_tx<'a>(ring: &'a MemRing, index: usize, job: &Job) -> MemTx<'a> {
    MemTx {
        tx: ring.producer(index),
        spinner: Spinner::new(job.yield_spin, job.timeout),
    }
}

pub(super) fn mem_rx<'a>(ring: &'a MemRing, index: usize, job: &Job, capacity: usize) -> MemRx<'a> {
    MemRx {
        rx: ring.consumer(index),
        spinner: Spinner::new(job.yield_spin, job.timeout),
        release_every: cadence(capacity, job.size, job.batch),
        unreleased: 0,
    }
}

/// Sending into the memcpy ring; spins while full.
pub(super) struct MemTx<'a> {
    tx: MemProducer<'a>,
    spinner: Spinner,
}

impl Sink for MemTx<'_> {
    #[inline]
    fn push(&mut self, message: &[u8]) -> Result<(), BenchError> {
        while !self.tx.try_send(message) {
            self.tx.publish();
            self.spinner.pause("space in the ring")?;
        }
        self.spinner.progress();
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> Result<(), BenchError> {
        self.tx.publish();
        Ok(())
    }

    fn close(&mut self) -> Result<(), BenchError> {
        self.push(&[])?;
        self.flush()
    }
}

/// Receiving from the memcpy ring; spins while empty, releases per batch.
pub(super) struct MemRx<'a> {
    rx: MemConsumer<'a>,
    spinner: Spinner,
    release_every: usize,
    unreleased: usize,
}

impl Source for MemRx<'_> {
    #[inline]
    fn pull(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        loop {
            if let Some(len) = self.rx.try_recv(buf) {
                self.spinner.progress();
                self.unreleased += 1;
                if len == 0 || self.unreleased >= self.release_every {
                    self.rx.release();
                    self.unreleased = 0;
                }
                return Ok((len > 0).then_some(len));
            }
            self.spinner.pause("a message")?;
        }
    }
}

/// Values on the eventfds: a message, the end of the run, and the watchdog's.
const MESSAGE: u64 = 1;
const END: u64 = 2;
pub(super) const DEAD: u64 = 1 << 40;

/// A bare eventfd each way; carries no payload.
pub(super) struct EventfdLink {
    pub(super) tx: OwnedFd,
    pub(super) rx: OwnedFd,
}

impl Link for EventfdLink {
    fn send(&mut self, _payload: &[u8]) -> Result<(), BenchError> {
        write_value(self.tx.as_fd(), MESSAGE)
    }

    fn recv(&mut self, _buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        let mut bytes = [0u8; 8];
        loop {
            match rustix::io::read(&self.rx, &mut bytes) {
                Ok(8) => break,
                Ok(_) => return Err(BenchError::Peer("short eventfd read".into())),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(BenchError::io("reading an eventfd")(e)),
            }
        }
        match u64::from_ne_bytes(bytes) {
            MESSAGE => Ok(Some(0)),
            END => Ok(None),
            _ => Err(BenchError::Peer("the peer process went away".into())),
        }
    }

    fn finish(&mut self) -> Result<(), BenchError> {
        write_value(self.tx.as_fd(), END)
    }
}

pub(super) fn write_value(fd: BorrowedFd<'_>, value: u64) -> Result<(), BenchError> {
    loop {
        match rustix::io::write(fd, &value.to_ne_bytes()) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(BenchError::io("writing an eventfd")(e)),
        }
    }
}

/// Writing to a socket or pipe: one `write` per message.
pub(super) struct WriteEnd {
    file: Option<File>,
    shutdown: bool,
}

impl WriteEnd {
    /// `shutdown`: end a socket with `shutdown(SHUT_WR)` (its other half may
    /// still be open in this process), not just by closing.
    pub(super) fn new(fd: OwnedFd, shutdown: bool) -> WriteEnd {
        WriteEnd {
            file: Some(File::from(fd)),
            shutdown,
        }
    }
}

impl Sink for WriteEnd {
    fn push(&mut self, message: &[u8]) -> Result<(), BenchError> {
        let file = self
            .file
            .as_mut()
            .ok_or(BenchError::Peer("write after close".into()))?;
        file.write_all(message).map_err(|e| BenchError::Io {
            context: "writing to the peer",
            error: e,
        })
    }

    fn flush(&mut self) -> Result<(), BenchError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), BenchError> {
        if let Some(file) = self.file.take()
            && self.shutdown
        {
            rustix::net::shutdown(&file, rustix::net::Shutdown::Write)
                .map_err(BenchError::io("shutting down the socket"))?;
        }
        Ok(())
    }
}

/// Reading from a socket or pipe: whole messages (ping-pong) or whatever one
/// `read` of a message-sized buffer returns (streams).
pub(super) struct ReadEnd {
    file: File,
    exact: bool,
}

impl ReadEnd {
    pub(super) fn new(fd: OwnedFd, exact: bool) -> ReadEnd {
        ReadEnd {
            file: File::from(fd),
            exact,
        }
    }
}

impl Source for ReadEnd {
    fn pull(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        let mut filled = 0;
        loop {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(BenchError::Peer("the peer cut a message short".into())),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(BenchError::Io {
                        context: "reading from the peer",
                        error: e,
                    });
                }
            }
            if !self.exact || filled == buf.len() {
                return Ok(Some(filled));
            }
        }
    }
}

pub(super) fn socket_link(
    fd: OwnedFd,
    exact: bool,
) -> Result<Duplex<WriteEnd, ReadEnd>, BenchError> {
    let write = fd.try_clone().map_err(|e| BenchError::Io {
        context: "duplicating the socket",
        error: e,
    })?;
    Ok(Duplex(WriteEnd::new(write, true), ReadEnd::new(fd, exact)))
}

pub(super) fn eventfd() -> Result<OwnedFd, BenchError> {
    rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
        .map_err(BenchError::io("creating an eventfd"))
}

pub(super) fn socketpair() -> Result<(OwnedFd, OwnedFd), BenchError> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(BenchError::io("creating a socketpair"))
}

/// `(read end, write end)`.
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), BenchError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(BenchError::io("creating a pipe"))
}
