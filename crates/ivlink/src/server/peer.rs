//! One connected peer as the server sees it, with its own output queue so that a
//! slow peer never blocks the server or the others.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use ivlink_core::PeerId;
use rustix::io::Errno;

use super::SentCounters;
use crate::wire::{self, Sent};

/// A message waiting to be sent: its bytes, how many already went out, and the fd
/// it carries (kept open until sent, even if its owner has left).
#[derive(Debug)]
struct Outgoing {
    bytes: [u8; wire::MESSAGE_LEN],
    sent: usize,
    fd: Option<Arc<OwnedFd>>,
}

/// Outcome of trying to empty a peer's queue.
#[derive(Debug)]
pub enum Flush {
    /// Everything was sent.
    Done,
    /// The socket is full; wait for it to become writable.
    Blocked,
    /// The kernel refuses more fds in flight for now (ETOOMANYREFS); retry soon.
    Retry,
    /// The connection is broken.
    Failed(io::Error),
}

/// A connected peer.
#[derive(Debug)]
pub struct Peer {
    /// Its id.
    pub id: PeerId,
    /// Its connection.
    pub socket: OwnedFd,
    /// Its vectors: the eventfds other peers ring to interrupt it.
    pub vectors: Vec<Arc<OwnedFd>>,
    /// Whether the socket is registered for writability.
    pub watching_writable: bool,
    /// Whether a flush is waiting for the in-flight fd limit to ease.
    pub retry: bool,
    /// Messages of its own connect sequence, tolerated on top of the backlog limit.
    pub setup_len: usize,
    queue: VecDeque<Outgoing>,
}

impl Peer {
    /// A peer with an empty queue.
    pub fn new(id: PeerId, socket: OwnedFd, vectors: Vec<Arc<OwnedFd>>) -> Self {
        Peer {
            id,
            socket,
            vectors,
            watching_writable: false,
            retry: false,
            setup_len: 0,
            queue: VecDeque::new(),
        }
    }

    /// Queues one message.
    pub fn push(&mut self, value: i64, fd: Option<Arc<OwnedFd>>) {
        self.queue.push_back(Outgoing {
            bytes: wire::encode(value),
            sent: 0,
            fd,
        });
    }

    /// Messages not yet fully sent.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// Sends as much of the queue as the socket takes, one message per `sendmsg`.
    pub fn flush(&mut self, sent: &SentCounters) -> Flush {
        while let Some(front) = self.queue.front_mut() {
            let fd = front.fd.as_deref().map(AsFd::as_fd);
            match wire::send_part(self.socket.as_fd(), &front.bytes, front.sent, fd) {
                Ok(Sent::Bytes(n)) => {
                    front.sent += n;
                    if front.sent == wire::MESSAGE_LEN {
                        sent.count(front.fd.is_some());
                        self.queue.pop_front();
                    }
                }
                Ok(Sent::WouldBlock) => return Flush::Blocked,
                Err(e) if e.raw_os_error() == Some(Errno::TOOMANYREFS.raw_os_error()) => {
                    return Flush::Retry;
                }
                Err(e) => return Flush::Failed(e),
            }
        }
        Flush::Done
    }
}
