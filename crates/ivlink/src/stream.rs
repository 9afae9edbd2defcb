//! A byte stream to one peer through a named section ([`ivlink_core::stream`]),
//! as [`std::io::Read`] and [`std::io::Write`]: blocking by spinning, then
//! sleeping on the stream's doorbell vector.
//!
//! - Writes land in the ring and become visible on [`Write::flush`], or on their
//!   own once a quarter of the ring is waiting (so a long copy streams); the peer
//!   is rung only when it asked for it.
//! - A read returns 0 (end of stream) once the peer closed and everything it sent
//!   was read; it fails with [`io::ErrorKind::ConnectionAborted`] once the peer
//!   left without closing (the transport reported `PeerLeft`, and this side marked
//!   it dead in the region).
//! - Dropping a [`Stream`] (or its [`StreamWriteHalf`]) closes it.
//!
//! Peer events are taken from the device while a stream waits, so a program that
//! needs them itself should not share the device with a blocked stream.
//!
//! A [`Stream`] is a [`DuplexPort`]: [`crate::relay`] connects it to standard
//! input and output, a pty or a program.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ivlink_core::directory::DirectoryError;
use ivlink_core::stream::{
    PeerState, Side, StreamEnd, StreamLayout, StreamLayoutError, StreamReadGrant, StreamReader,
    StreamShape, StreamWriteGrant, StreamWriter,
};
use ivlink_core::{NotifyError, PeerId, RawRegion, Vector};
use thiserror::Error;

use crate::device::{Device, Event, WaitFor};
use crate::section::OpenFailure;
use crate::wait::{SpinThenSleep, WaitError, Waitable};

use crate::relay::{DuplexPort, PortRead, PortWrite};
/// The relay, at its earlier place (it is [`crate::relay`] now).
pub use crate::relay::{RelayError, relay};

/// Why a stream could not be opened.
#[derive(Debug, Error)]
pub enum StreamError {
    /// The stream section is unusable, or this side is taken.
    #[error(transparent)]
    Layout(#[from] StreamLayoutError),
    /// The region's directory could not be opened or extended.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A section of that name holds something else.
    #[error("section '{0}' is not a stream")]
    WrongKind(String),
    /// The stream exists between other peers.
    #[error("stream '{name}' connects peers {a} and {b}, not this pair")]
    OtherPeers {
        /// Stream name.
        name: String,
        /// Its side A peer.
        a: PeerId,
        /// Its side B peer.
        b: PeerId,
    },
    /// A stream needs two different peers.
    #[error("a stream to oneself (peer {0}) is not possible")]
    ToSelf(PeerId),
    /// Another peer was still setting the stream up when the timeout passed.
    #[error("stream '{0}' was still being set up by another peer")]
    SetupTimeout(String),
}

/// How often a blocked stream looks for peer events (a dead peer is noticed
/// within this time).
const PEER_SCAN: Duration = Duration::from_millis(100);

/// How often [`Stream::wait_for_peer`] looks at the peer's state.
const ATTACH_TICK: Duration = Duration::from_millis(10);

/// What both halves share.
struct Link<'d> {
    device: &'d dyn Device,
    layout: StreamLayout,
    side: Side,
    peer: PeerId,
    vector: Vector,
    policy: SpinThenSleep,
    timeout: Option<Duration>,
    peer_left: Arc<AtomicBool>,
}

impl Link<'_> {
    fn notify(&self) -> io::Result<()> {
        match self.device.notify(self.peer, self.vector) {
            // No doorbell: the peer polls. An unknown peer has left: the stream's
            // state tells the rest.
            Ok(()) | Err(NotifyError::Unsupported | NotifyError::UnknownPeer(_)) => Ok(()),
            Err(e) => Err(io::Error::other(format!("notify peer {}: {e}", self.peer))),
        }
    }

    /// Takes pending peer events; marks the peer dead if it left.
    fn scan_peer_events(&self) -> io::Result<()> {
        if !self.device.has_doorbell() {
            return Ok(());
        }
        while let Some(event) = self
            .device
            .wait(WaitFor::PEER_EVENTS, Some(Duration::ZERO))
            .map_err(io::Error::other)?
        {
            if event == (Event::PeerLeft { peer: self.peer }) {
                self.peer_left.store(true, Ordering::Relaxed);
                self.layout
                    .mark_dead(self.device.region(), self.side.other())
                    .map_err(stream_io)?;
            }
        }
        Ok(())
    }

    /// Waits up to one scan period for `what`; `Err(TimedOut)` past the deadline.
    fn wait<W: Waitable<Error = StreamLayoutError>>(
        &self,
        what: &mut W,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        self.scan_peer_events()?;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "stream timed out"));
        }
        let slice = left.map_or(PEER_SCAN, |l| l.min(PEER_SCAN));
        self.policy
            .wait(what, self.device, self.vector, Some(slice))
            .map_err(|e| match e {
                WaitError::Protocol(e) => stream_io(e),
                WaitError::Device(e) => io::Error::other(e),
            })?;
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }
}

/// Maps a stream error to the `io::Error` a reader or writer expects.
fn stream_io(e: StreamLayoutError) -> io::Error {
    let kind = match e {
        StreamLayoutError::PeerDead => io::ErrorKind::ConnectionAborted,
        StreamLayoutError::Closed => io::ErrorKind::BrokenPipe,
        StreamLayoutError::Region(_) => io::ErrorKind::Other,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

/// A byte stream to one peer: read and write, or [`split`](Self::split) for a
/// thread each way.
pub struct Stream<'d> {
    reader: StreamReadHalf<'d>,
    writer: StreamWriteHalf<'d>,
}

impl<'d> Stream<'d> {
    /// Opens the stream `name` to `peer` through the region's directory, creating
    /// the directory and the section (with `capacity` bytes per direction and
    /// doorbell `vector`) if this is the first opener. The lower peer id is side
    /// A. Waits up to `timeout` while another peer sets things up.
    pub fn open(
        device: &'d dyn Device,
        name: &str,
        peer: PeerId,
        capacity: usize,
        vector: Vector,
        timeout: Duration,
    ) -> Result<Self, StreamError> {
        let own = device.id();
        if own == peer {
            return Err(StreamError::ToSelf(own));
        }
        let (layout, vector) = try_open(device, name, peer, capacity, vector, timeout)?;
        let side = layout.side_of(own).ok_or(StreamLayoutError::Invalid(
            "this peer is not one of the stream's",
        ))?;
        let end = StreamEnd::attach(device.region(), layout, side)?;
        let (rx, tx) = end.split();
        let link = || Link {
            device,
            layout,
            side,
            peer,
            vector,
            policy: SpinThenSleep::default(),
            timeout: None,
            peer_left: Arc::new(AtomicBool::new(false)),
        };
        let reader_link = link();
        let mut writer_link = link();
        writer_link.peer_left = reader_link.peer_left.clone();
        Ok(Stream {
            reader: StreamReadHalf {
                link: reader_link,
                rx,
            },
            writer: StreamWriteHalf {
                link: writer_link,
                tx,
            },
        })
    }

    /// Sets how long a read or write may block (`None`, the default: forever);
    /// past it they fail with [`io::ErrorKind::TimedOut`].
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.reader.link.timeout = timeout;
        self.writer.link.timeout = timeout;
    }

    /// Waits up to `timeout` until the peer has opened its end (it may have
    /// written and closed already). Fails with [`io::ErrorKind::TimedOut`] if it
    /// has not, and with the device's error if the server goes away meanwhile.
    pub fn wait_for_peer(&self, timeout: Duration) -> io::Result<()> {
        let link = &self.reader.link;
        let deadline = Instant::now() + timeout;
        loop {
            if self.reader.rx.peer_state().map_err(stream_io)? != PeerState::Never {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let connected = !link.device.knows_peers()
                    || link.device.peers().iter().any(|p| p.id == link.peer);
                let hint = if connected {
                    ""
                } else {
                    " (it is not connected)"
                };
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "peer {} did not open the stream within {timeout:?}{hint}",
                        link.peer
                    ),
                ));
            }
            // Attaching rings no doorbell: look again every tick.
            link.device
                .wait(WaitFor::NOTHING, Some(left.min(ATTACH_TICK)))
                .map_err(io::Error::other)?;
        }
    }

    /// Sets the spin-then-sleep policy of blocking calls.
    pub fn set_policy(&mut self, policy: SpinThenSleep) {
        self.reader.link.policy = policy;
        self.writer.link.policy = policy;
    }

    /// This end's side.
    pub fn side(&self) -> Side {
        self.reader.link.side
    }

    /// The peer's liveness.
    pub fn peer_state(&self) -> Result<PeerState, StreamLayoutError> {
        self.reader.rx.peer_state()
    }

    /// Publishes what was written and closes this direction: the peer reads end
    /// of stream after the data. Reading goes on.
    pub fn close(&mut self) -> io::Result<()> {
        self.writer.close()
    }

    /// Splits into a reading and a writing half (for a thread each).
    pub fn split(self) -> (StreamReadHalf<'d>, StreamWriteHalf<'d>) {
        (self.reader, self.writer)
    }
}

impl<'d> Stream<'d> {
    /// [`StreamWriteHalf::try_reserve`] on this stream's writing half.
    pub fn try_reserve(
        &mut self,
        len: usize,
    ) -> io::Result<Option<StreamWriteGrant<'_, 'd, RawRegion>>> {
        self.writer.try_reserve(len)
    }

    /// [`StreamWriteHalf::reserve`] on this stream's writing half.
    pub fn reserve(&mut self, len: usize) -> io::Result<StreamWriteGrant<'_, 'd, RawRegion>> {
        self.writer.reserve(len)
    }

    /// [`StreamReadHalf::try_peek`] on this stream's reading half.
    pub fn try_peek(&mut self) -> io::Result<Option<StreamReadGrant<'_, 'd, RawRegion>>> {
        self.reader.try_peek()
    }

    /// [`StreamReadHalf::peek`] on this stream's reading half.
    pub fn peek(&mut self) -> io::Result<Option<StreamReadGrant<'_, 'd, RawRegion>>> {
        self.reader.peek()
    }

    /// [`StreamReadHalf::release`] on this stream's reading half.
    pub fn release(&mut self) -> io::Result<()> {
        self.reader.release()
    }
}

impl Read for Stream<'_> {
    /// Publishes pending writes first, so request-and-reply never deadlocks.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.writer.tx.unpublished() > 0 {
            self.writer.flush()?;
        }
        self.reader.read(buf)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// The reading half of a [`Stream`].
pub struct StreamReadHalf<'d> {
    link: Link<'d>,
    rx: StreamReader<'d, RawRegion>,
}

impl StreamReadHalf<'_> {
    /// Sets how long one read may block (`None`: forever); past it, it fails
    /// with [`io::ErrorKind::TimedOut`].
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.link.timeout = timeout;
    }
}

impl<'d> StreamReadHalf<'d> {
    /// Lends every byte that has arrived, in place (zero-copy: read through the
    /// grant's checked accessors, then [`release`](StreamReadGrant::release) what
    /// was used and call [`release`](Self::release)); `Ok(None)` if nothing has
    /// arrived. See [`ivlink_core::ring::grant`] for why a grant is not a `&[u8]`.
    pub fn try_peek(&mut self) -> io::Result<Option<StreamReadGrant<'_, 'd, RawRegion>>> {
        self.rx.peek().map_err(stream_io)
    }

    /// Waits (within the timeout) until bytes arrive and lends them, like
    /// [`try_peek`](Self::try_peek); `Ok(None)` at the end of the stream.
    pub fn peek(&mut self) -> io::Result<Option<StreamReadGrant<'_, 'd, RawRegion>>> {
        let deadline = self.link.deadline();
        loop {
            // Looked at twice: the grant borrows the reader, which waiting needs.
            if self.rx.data_ready().map_err(stream_io)? > 0 {
                return self.rx.peek().map_err(stream_io);
            }
            if self.rx.at_eof().map_err(stream_io)? {
                return match self.rx.peer_state().map_err(stream_io)? {
                    PeerState::Dead => Err(stream_io(StreamLayoutError::PeerDead)),
                    _ => Ok(None),
                };
            }
            self.link.wait(&mut Readable(&mut self.rx), deadline)?;
        }
    }

    /// Returns the space of the bytes consumed through grants to the peer
    /// (ringing it if it waits for room). [`Read::read`] does this itself.
    pub fn release(&mut self) -> io::Result<()> {
        if self.rx.release().map_err(stream_io)? {
            self.link.notify()?;
        }
        Ok(())
    }
}

impl Read for StreamReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.link.deadline();
        loop {
            let n = self.rx.read(buf).map_err(stream_io)?;
            if n > 0 {
                if self.rx.release().map_err(stream_io)? {
                    self.link.notify()?;
                }
                return Ok(n);
            }
            if self.rx.at_eof().map_err(stream_io)? {
                return match self.rx.peer_state().map_err(stream_io)? {
                    PeerState::Dead => Err(stream_io(StreamLayoutError::PeerDead)),
                    _ => Ok(0),
                };
            }
            self.link.wait(&mut Readable(&mut self.rx), deadline)?;
        }
    }
}

/// The writing half of a [`Stream`]; dropping it closes the stream's direction.
pub struct StreamWriteHalf<'d> {
    link: Link<'d>,
    tx: StreamWriter<'d, RawRegion>,
}

impl StreamWriteHalf<'_> {
    /// See [`Stream::close`].
    pub fn close(&mut self) -> io::Result<()> {
        if self.tx.close().map_err(stream_io)? {
            self.link.notify()?;
        }
        Ok(())
    }

    /// Sets how long one write may block waiting for room (`None`: forever);
    /// past it, it fails with [`io::ErrorKind::TimedOut`], nothing written.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.link.timeout = timeout;
    }

    /// Publishes what was written, then waits up to `timeout` until the peer
    /// has read all of it: `Ok(true)` once it has, `Ok(false)` if the time
    /// passed first. Fails once the peer is dead or this direction is closed
    /// (call it before [`close`](Self::close)).
    pub fn wait_taken(&mut self, timeout: Duration) -> io::Result<bool> {
        self.flush()?;
        let deadline = Instant::now() + timeout;
        let capacity = self.link.layout.capacity();
        loop {
            // Taken counts even if the peer left since.
            if self.tx.buffer_space().map_err(stream_io)? >= capacity {
                return Ok(true);
            }
            self.broken()?;
            if self.tx.peer_state().map_err(stream_io)? == PeerState::Dead {
                return Err(stream_io(StreamLayoutError::PeerDead));
            }
            match self
                .link
                .wait(&mut Writable(&mut self.tx, capacity), Some(deadline))
            {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(false),
                other => other?,
            }
        }
    }

    /// Looks at the link without writing: fails once the peer has left or the
    /// server has gone away. For a writer idle between writes (a blocked write
    /// notices on its own).
    pub fn check(&self) -> io::Result<()> {
        self.link.scan_peer_events()?;
        self.broken()
    }

    fn broken(&self) -> io::Result<()> {
        if self.link.peer_left.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("peer {} left", self.link.peer),
            ));
        }
        Ok(())
    }
}

impl<'d> StreamWriteHalf<'d> {
    /// Lends `len` free bytes at the end of the stream, in place (zero-copy:
    /// write through the grant's checked accessors, then
    /// [`commit`](StreamWriteGrant::commit) and [`flush`](Write::flush));
    /// `Ok(None)` while fewer are free.
    pub fn try_reserve(
        &mut self,
        len: usize,
    ) -> io::Result<Option<StreamWriteGrant<'_, 'd, RawRegion>>> {
        self.broken()?;
        self.tx.reserve(len).map_err(stream_io)
    }

    /// Waits (within the timeout) until `len` bytes are free and lends them,
    /// like [`try_reserve`](Self::try_reserve). `len` must not exceed the
    /// stream's capacity.
    pub fn reserve(&mut self, len: usize) -> io::Result<StreamWriteGrant<'_, 'd, RawRegion>> {
        let deadline = self.link.deadline();
        loop {
            self.broken()?;
            // Asked twice: the grant borrows the writer, which waiting needs.
            if self.tx.reserve(len).map_err(stream_io)?.is_some() {
                return self.tx.reserve(len).map_err(stream_io)?.ok_or_else(|| {
                    io::Error::other("the stream's free space shrank without a write")
                });
            }
            self.flush()?;
            self.link.wait(&mut Writable(&mut self.tx, len), deadline)?;
        }
    }
}

impl Write for StreamWriteHalf<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.link.deadline();
        let batch = self.link.layout.capacity() / 4;
        loop {
            self.broken()?;
            let n = self.tx.write(buf).map_err(stream_io)?;
            if n > 0 {
                if self.tx.unpublished() >= batch {
                    self.flush()?;
                }
                return Ok(n);
            }
            self.flush()?;
            let needed = buf.len().min(batch);
            self.link
                .wait(&mut Writable(&mut self.tx, needed), deadline)?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.tx.publish().map_err(stream_io)? {
            self.link.notify()?;
        }
        Ok(())
    }
}

impl Drop for StreamWriteHalf<'_> {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl<'d> DuplexPort for Stream<'d> {
    type Reader = StreamReadHalf<'d>;
    type Writer = StreamWriteHalf<'d>;

    fn split(self) -> (StreamReadHalf<'d>, StreamWriteHalf<'d>) {
        Stream::split(self)
    }
}

impl PortRead for StreamReadHalf<'_> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.set_timeout(timeout);
    }
}

impl PortWrite for StreamWriteHalf<'_> {
    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.set_timeout(timeout);
    }

    fn wait_taken(&mut self, timeout: Duration) -> io::Result<bool> {
        StreamWriteHalf::wait_taken(self, timeout)
    }

    fn close(&mut self) -> io::Result<()> {
        StreamWriteHalf::close(self)
    }

    fn check(&mut self) -> io::Result<()> {
        StreamWriteHalf::check(self)
    }
}

/// Waiting for bytes (or the end) from the peer.
struct Readable<'a, 'd>(&'a mut StreamReader<'d, RawRegion>);

impl Waitable for Readable<'_, '_> {
    type Error = StreamLayoutError;

    fn ready(&mut self) -> Result<bool, StreamLayoutError> {
        Ok(self.0.data_ready()? > 0 || self.0.peer_state()?.is_gone())
    }

    fn arm(&mut self) -> Result<bool, StreamLayoutError> {
        self.0.prepare_sleep()
    }

    fn disarm(&mut self) -> Result<(), StreamLayoutError> {
        self.0.finish_sleep()
    }
}

/// Waiting for room for `.1` bytes (or a dead peer).
struct Writable<'a, 'd>(&'a mut StreamWriter<'d, RawRegion>, usize);

impl Waitable for Writable<'_, '_> {
    type Error = StreamLayoutError;

    fn ready(&mut self) -> Result<bool, StreamLayoutError> {
        Ok(self.0.buffer_space()? >= self.1 || self.0.peer_state()? == PeerState::Dead)
    }

    fn arm(&mut self) -> Result<bool, StreamLayoutError> {
        self.0.prepare_sleep(self.1)
    }

    fn disarm(&mut self) -> Result<(), StreamLayoutError> {
        self.0.finish_sleep()
    }
}

fn try_open(
    device: &dyn Device,
    name: &str,
    peer: PeerId,
    capacity: usize,
    vector: Vector,
    timeout: Duration,
) -> Result<(StreamLayout, Vector), StreamError> {
    let own = device.id();
    let shape = StreamShape {
        capacity,
        peers: [own.min(peer), own.max(peer)],
    };
    let (layout, info) = crate::section::open_or_create::<StreamLayout, StreamError>(
        device, name, &shape, vector, timeout,
    )?;
    let (a, b) = (layout.peer(Side::A), layout.peer(Side::B));
    if [a, b] != shape.peers {
        return Err(StreamError::OtherPeers {
            name: name.to_owned(),
            a,
            b,
        });
    }
    Ok((layout, info.vector))
}

impl OpenFailure<StreamLayout> for StreamError {
    fn setup_timeout(name: &str) -> Self {
        StreamError::SetupTimeout(name.to_owned())
    }

    fn wrong_kind(name: &str) -> Self {
        StreamError::WrongKind(name.to_owned())
    }
}
