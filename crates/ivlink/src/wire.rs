//! The ivshmem server socket protocol ("protocol version 0").
//!
//! The server sends, and peers only receive, 8-byte little-endian signed integers,
//! one per `sendmsg`, each carrying at most one file descriptor:
//!
//! | value | fd | meaning |
//! |---|---|---|
//! | `0` | none | protocol version (first message) |
//! | `id >= 0` | none | the id assigned to this peer (second message) |
//! | `-1` | shm | the shared memory |
//! | `id` | eventfd | the next vector of peer `id` (own id: a vector to wait on) |
//! | `id` | none | peer `id` left (after setup) |
//!
//! QEMU pairs each 8 bytes with the fd that arrived with them, so messages must
//! never be batched into one write.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use thiserror::Error;

use crate::PeerId;

/// The only protocol version there is.
pub const PROTOCOL_VERSION: i64 = 0;
/// The value that carries the shared-memory fd.
pub const SHM_MESSAGE: i64 = -1;
/// Highest peer id the protocol (and the 16-bit doorbell field) allows.
pub const MAX_PEER_ID: i64 = 65535;
/// Size of every message on the wire.
pub const MESSAGE_LEN: usize = 8;

/// Encodes a message value as it goes on the wire.
pub fn encode(value: i64) -> [u8; MESSAGE_LEN] {
    value.to_le_bytes()
}

/// Decodes a message value from the wire.
pub fn decode(bytes: [u8; MESSAGE_LEN]) -> i64 {
    i64::from_le_bytes(bytes)
}

/// What a message means once the connect handshake (version, id) is past.
#[derive(Debug)]
pub enum Message {
    /// The shared memory (`-1` with an fd).
    SharedMemory(OwnedFd),
    /// The next vector of `peer` (own id: a vector this peer waits on).
    PeerVector(PeerId, OwnedFd),
    /// `peer` left.
    PeerGone(PeerId),
}

/// A message that breaks the protocol.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A value outside -1..=65535.
    #[error("server sent invalid message {0}")]
    InvalidValue(i64),
    /// `-1` without the shared-memory fd.
    #[error("server sent the shared-memory message without a file descriptor")]
    ShmWithoutFd,
    /// The first message was not version 0 without an fd.
    #[error("server sent version {0}, expecting 0")]
    BadVersion(i64),
    /// A version message that carried an fd.
    #[error("server sent invalid version message (it carried a file descriptor)")]
    VersionWithFd,
    /// The id message was negative, too large or carried an fd.
    #[error("server sent invalid id message {0}")]
    BadId(i64),
    /// The control data did not fit one fd (`MSG_CTRUNC`).
    #[error("server sent more control data than one file descriptor")]
    ControlTruncated,
}

/// Classifies a post-handshake message (value and optional fd).
pub fn classify(value: i64, fd: Option<OwnedFd>) -> Result<Message, ProtocolError> {
    match (value, fd) {
        (SHM_MESSAGE, Some(fd)) => Ok(Message::SharedMemory(fd)),
        (SHM_MESSAGE, None) => Err(ProtocolError::ShmWithoutFd),
        (0..=MAX_PEER_ID, Some(fd)) => Ok(Message::PeerVector(value as PeerId, fd)),
        (0..=MAX_PEER_ID, None) => Ok(Message::PeerGone(value as PeerId)),
        _ => Err(ProtocolError::InvalidValue(value)),
    }
}

/// Result of trying to send one message on a non-blocking socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// `n` bytes went out (the fd, if any, went with the first byte).
    Bytes(usize),
    /// The socket buffer is full; nothing was sent.
    WouldBlock,
}

/// Sends the unsent tail of one message (`bytes[offset..]`) with one `sendmsg`.
///
/// The fd is attached only when `offset == 0`, i.e. to the message's first byte, as
/// the reference server does. The call never blocks and never raises SIGPIPE.
pub fn send_part(
    socket: BorrowedFd<'_>,
    bytes: &[u8; MESSAGE_LEN],
    offset: usize,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<Sent> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let (0, Some(fd)) = (offset, fd) {
        fds = [fd];
        let pushed = control.push(SendAncillaryMessage::ScmRights(&fds));
        debug_assert!(pushed, "control buffer holds one fd");
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match sendmsg(
            socket,
            &[IoSlice::new(&bytes[offset..])],
            &mut control,
            flags,
        ) {
            Ok(n) => return Ok(Sent::Bytes(n)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(Sent::WouldBlock),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends one whole message, waiting (poll) while the socket is full.
///
/// For tests and simple tools; the server uses [`send_part`] with its own queues.
pub fn send_blocking(
    socket: BorrowedFd<'_>,
    value: i64,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let bytes = encode(value);
    let mut offset = 0;
    while offset < MESSAGE_LEN {
        match send_part(socket, &bytes, offset, fd)? {
            Sent::Bytes(n) => offset += n,
            Sent::WouldBlock => {
                let mut pfd = [rustix::event::PollFd::new(
                    &socket,
                    rustix::event::PollFlags::OUT,
                )];
                rustix::event::poll(&mut pfd, None)?;
            }
        }
    }
    Ok(())
}

/// Why receiving failed.
#[derive(Debug, Error)]
pub enum RecvError {
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket failed.
    #[error("server socket: {0}")]
    Io(#[from] io::Error),
}

/// Reassembles 8-byte messages and their fds from a stream socket.
///
/// It reads only the bytes still missing from the current message, so an fd is
/// always paired with the message it arrived with.
#[derive(Debug, Default)]
pub struct Receiver {
    bytes: [u8; MESSAGE_LEN],
    filled: usize,
    fd: Option<OwnedFd>,
}

impl Receiver {
    /// A receiver at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives the next whole message: `Ok(None)` if the socket would block first.
    pub fn recv(&mut self, socket: impl AsFd) -> Result<Option<(i64, Option<OwnedFd>)>, RecvError> {
        let socket = socket.as_fd();
        while self.filled < MESSAGE_LEN {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
            let received = {
                let mut iov = [IoSliceMut::new(&mut self.bytes[self.filled..])];
                match recvmsg(socket, &mut iov, &mut control, flags) {
                    Ok(r) => r,
                    Err(Errno::INTR) => continue,
                    Err(Errno::AGAIN) => return Ok(None),
                    Err(e) => return Err(RecvError::Io(e.into())),
                }
            };
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    for fd in fds {
                        // Keep the first fd of the message; dropping closes any extra.
                        if self.fd.is_none() {
                            self.fd = Some(fd);
                        }
                    }
                }
            }
            if received.flags.contains(ReturnFlags::CTRUNC) {
                self.reset();
                return Err(ProtocolError::ControlTruncated.into());
            }
            if received.bytes == 0 {
                return Err(RecvError::Closed);
            }
            self.filled += received.bytes;
        }
        let value = decode(self.bytes);
        let fd = self.fd.take();
        self.reset();
        Ok(Some((value, fd)))
    }

    /// Waits (poll, with an optional timeout) until a whole message arrives.
    /// Returns `Ok(None)` on timeout.
    pub fn recv_timeout(
        &mut self,
        socket: impl AsFd,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<(i64, Option<OwnedFd>)>, RecvError> {
        let socket = socket.as_fd();
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if let Some(message) = self.recv(socket)? {
                return Ok(Some(message));
            }
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return Ok(None),
                },
                None => None,
            };
            crate::doorbell::poll_readable(socket, remaining)?;
        }
    }

    fn reset(&mut self) {
        self.filled = 0;
        self.fd = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn values_are_little_endian_i64() {
        assert_eq!(encode(-1), [0xff; 8]);
        assert_eq!(encode(2), [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode(encode(65535)), 65535);
    }

    #[test]
    fn classifies_every_kind_of_message() {
        let fd = || rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        assert!(matches!(
            classify(-1, Some(fd())),
            Ok(Message::SharedMemory(_))
        ));
        assert!(matches!(
            classify(3, Some(fd())),
            Ok(Message::PeerVector(3, _))
        ));
        assert!(matches!(classify(3, None), Ok(Message::PeerGone(3))));
        assert_eq!(classify(-1, None).unwrap_err(), ProtocolError::ShmWithoutFd);
        assert_eq!(
            classify(-2, None).unwrap_err(),
            ProtocolError::InvalidValue(-2)
        );
        assert_eq!(
            classify(65536, None).unwrap_err(),
            ProtocolError::InvalidValue(65536)
        );
    }

    #[test]
    fn pairs_each_fd_with_its_message_across_split_reads() {
        let (a, b) = UnixStream::pair().unwrap();
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        // A message split over two writes: the fd rides on the first part.
        let bytes = encode(7);
        assert_eq!(
            send_part(a.as_fd(), &bytes, 0, Some(efd.as_fd())).unwrap(),
            Sent::Bytes(8)
        );
        send_blocking(a.as_fd(), 9, None).unwrap();
        let mut rx = Receiver::new();
        let (v, fd) = rx.recv(&b).unwrap().unwrap();
        assert_eq!(v, 7);
        assert!(fd.is_some());
        let (v, fd) = rx.recv(&b).unwrap().unwrap();
        assert_eq!((v, fd.is_none()), (9, true));
        assert!(rx.recv(&b).unwrap().is_none());
        drop(a);
        assert!(matches!(rx.recv(&b), Err(RecvError::Closed)));
    }

    #[test]
    fn reassembles_a_message_sent_in_pieces() {
        let (a, b) = UnixStream::pair().unwrap();
        let bytes = encode(0x0102_0304);
        let mut rx = Receiver::new();
        use std::io::Write;
        (&a).write_all(&bytes[..3]).unwrap();
        assert!(rx.recv(&b).unwrap().is_none());
        (&a).write_all(&bytes[3..]).unwrap();
        assert_eq!(rx.recv(&b).unwrap().unwrap().0, 0x0102_0304);
    }
}
