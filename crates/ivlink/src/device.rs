//! The peer API every transport provides.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use ivlink_core::{Notify, PeerId, RawRegion, Vector};
use thiserror::Error;

use crate::mapping::MapError;
use crate::wire::ProtocolError;

/// Something that happened to this peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Our doorbell rang on `vector`, `count` times since we last looked (rings
    /// coalesce; the sender is not known).
    Notified {
        /// The vector that rang.
        vector: Vector,
        /// How many rings were coalesced into this event (at least 1).
        count: u64,
    },
    /// A peer joined; announced once it has as many vectors as this peer.
    PeerJoined {
        /// The peer.
        peer: PeerId,
        /// How many vectors it has now.
        vectors: usize,
    },
    /// A peer left.
    PeerLeft {
        /// The peer.
        peer: PeerId,
    },
    /// The server closed our connection. Known peers can still be notified, but no
    /// more join or leave events will come. Delivered once, to a wait for peer
    /// events; every later wait fails with [`DeviceError::ServerGone`].
    ServerGone,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Notified { vector, count } => {
                write!(f, "notification on vector {vector}")?;
                if *count > 1 {
                    write!(f, " ({count} coalesced)")?;
                }
                Ok(())
            }
            Event::PeerJoined { peer, vectors } => {
                write!(f, "peer {peer} joined with {vectors} vector(s)")
            }
            Event::PeerLeft { peer } => write!(f, "peer {peer} left"),
            Event::ServerGone => f.write_str("the server went away"),
        }
    }
}

/// What a [`Device::wait`] call is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitFor {
    /// Notifications on these vectors.
    pub vectors: VectorSet,
    /// Peer joins and leaves, and the server going away.
    pub peer_events: bool,
}

impl WaitFor {
    /// Any notification and any peer event.
    pub const ANYTHING: WaitFor = WaitFor {
        vectors: VectorSet::ALL,
        peer_events: true,
    };

    /// Only notifications on `vector`; other events stay pending for later calls.
    pub fn vector(vector: Vector) -> WaitFor {
        WaitFor {
            vectors: VectorSet::one(vector),
            peer_events: false,
        }
    }

    /// No event: sleeps for the timeout, yet still fails once the server is gone
    /// (what a peer without a doorbell waits on between looks at the region).
    pub const NOTHING: WaitFor = WaitFor {
        vectors: VectorSet::NONE,
        peer_events: false,
    };

    /// Only peer events; notifications stay pending for later calls.
    pub const PEER_EVENTS: WaitFor = WaitFor {
        vectors: VectorSet::NONE,
        peer_events: true,
    };

    /// Whether `event` is one of those waited for.
    pub fn matches(&self, event: &Event) -> bool {
        match event {
            Event::Notified { vector, .. } => self.vectors.contains(*vector),
            _ => self.peer_events,
        }
    }
}

/// A set of vectors to wait on (ivshmem allows at most 64 per peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorSet(u64);

impl VectorSet {
    /// Every vector.
    pub const ALL: VectorSet = VectorSet(u64::MAX);
    /// No vector.
    pub const NONE: VectorSet = VectorSet(0);

    /// Just `vector`.
    pub fn one(vector: Vector) -> VectorSet {
        VectorSet(1u64.checked_shl(vector.into()).unwrap_or(0))
    }

    /// Whether `vector` is in the set.
    pub fn contains(self, vector: Vector) -> bool {
        self.0 & VectorSet::one(vector).0 != 0
    }
}

/// A peer this device can notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// How many vectors it has.
    pub vectors: usize,
}

/// Why a device operation failed.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// The server socket could not be reached.
    #[error("cannot connect to the ivshmem server at {path}: {error}")]
    Connect {
        /// Socket path.
        path: String,
        /// The system's reason.
        error: io::Error,
    },
    /// The server closed the connection before sending anything, as a server
    /// does when it refuses a peer (e.g. it has `--max-peers` peers already).
    #[error("the server refused the connection (it may be full: see its log)")]
    RefusedByServer,
    /// The server closed the connection during setup.
    #[error("the server closed the connection during setup")]
    ClosedDuringSetup,
    /// The server did not finish the handshake in time.
    #[error("the server did not send {0} within the setup timeout")]
    SetupTimeout(&'static str),
    /// The server broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The shared memory could not be mapped.
    #[error(transparent)]
    Map(#[from] MapError),
    /// Opening a file or device failed.
    #[error("cannot open {path}: {error}")]
    Open {
        /// What was opened.
        path: String,
        /// The system's reason.
        error: io::Error,
    },
    /// The guest transport could not reach the PCI device.
    #[error(transparent)]
    Guest(#[from] crate::transport::guest::GuestError),
    /// The server closed our connection: no peer can join or leave any more, so a
    /// waiting endpoint gives up rather than wait for what cannot come.
    #[error("the server went away")]
    ServerGone,
    /// Waiting needs a doorbell this transport does not have.
    #[error("this transport has no doorbell: poll the region instead of waiting for notifications")]
    NoDoorbell,
    /// A system call failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The system's reason.
        error: io::Error,
    },
}

impl DeviceError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> DeviceError {
        move |error| DeviceError::Io { context, error }
    }
}

/// A peer of a shared region: the mapped memory, this peer's id and vectors, the
/// doorbell to the other peers, and a way to wait for ours.
///
/// Every transport (a host process on a server, a guest on the PCI device, a plain
/// file) implements it, so every tool and protocol runs unchanged on each.
pub trait Device: Notify + Send + Sync {
    /// The shared memory.
    fn region(&self) -> &RawRegion;

    /// This peer's id (on transports without a server, the id it was given).
    fn id(&self) -> PeerId;

    /// How many vectors this peer can be notified on (0 without a doorbell).
    fn vectors(&self) -> usize;

    /// The other peers currently known, lowest id first.
    fn peers(&self) -> Vec<PeerInfo>;

    /// Whether notifications work on this transport (otherwise peers poll).
    fn has_doorbell(&self) -> bool {
        self.vectors() > 0
    }

    /// Whether [`Device::peers`] is the whole truth, so that a peer it does not
    /// list is not connected. False where the transport cannot see other peers (a
    /// guest, a plain file): an empty list then says nothing.
    fn knows_peers(&self) -> bool {
        false
    }

    /// Waits for the next event that `what` asks for; other events stay pending for
    /// later calls. `None` waits forever; returns `Ok(None)` on timeout. Once the
    /// server is gone, events already pending are still returned, then
    /// [`Event::ServerGone`] once to a wait for peer events, then every wait fails
    /// with [`DeviceError::ServerGone`].
    fn wait(&self, what: WaitFor, timeout: Option<Duration>) -> Result<Option<Event>, DeviceError>;

    /// An fd that becomes readable when [`Device::wait`] has something to return,
    /// for poll, epoll or an async reactor. `None` if this transport cannot wake.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// A short description of the transport ("host peer on /tmp/ivshmem_socket").
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_sets_hold_the_vectors_named() {
        assert!(VectorSet::one(3).contains(3));
        assert!(!VectorSet::one(3).contains(2));
        assert!(VectorSet::ALL.contains(63));
        assert!(!VectorSet::one(64).contains(64));
    }

    #[test]
    fn events_read_as_sentences() {
        let e = Event::Notified {
            vector: 1,
            count: 3,
        };
        assert_eq!(e.to_string(), "notification on vector 1 (3 coalesced)");
        assert_eq!(Event::PeerLeft { peer: 4 }.to_string(), "peer 4 left");
    }
}
