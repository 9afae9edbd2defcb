//! The peer API every transport provides.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use ivlink_core::{Notify, PeerId, RawRegion, Vector};
use thiserror::Error;

use crate::mapping::MapError;

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
///
/// What every transport shares is spelled out here; what only one transport can
/// say (the server turned us away, the guest has no IOMMU) travels as a
/// [`DeviceError::Transport`], whose source the transport's own error type can be
/// taken back out of ([`TransportError::downcast_ref`]).
#[derive(Debug, Error)]
pub enum DeviceError {
    /// The transport could not reach the region or its peers, for a reason of its
    /// own (its message says which, and how to fix it).
    #[error(transparent)]
    Transport(#[from] TransportError),
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

    /// What kind of trouble it is, whichever transport it came from.
    pub fn kind(&self) -> TransportErrorKind {
        match self {
            DeviceError::Transport(error) => error.kind(),
            DeviceError::Open { error, .. } | DeviceError::Io { error, .. } => {
                TransportErrorKind::from_io(error.kind())
            }
            DeviceError::Map(MapError::Stat(error) | MapError::Mmap(error)) => {
                TransportErrorKind::from_io(error.kind())
            }
            DeviceError::Map(_) => TransportErrorKind::Invalid,
            DeviceError::ServerGone => TransportErrorKind::Gone,
            DeviceError::NoDoorbell => TransportErrorKind::Unsupported,
        }
    }

    /// The transport's own error inside, if this is a [`DeviceError::Transport`]
    /// holding an `E`.
    pub fn transport_error<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            DeviceError::Transport(error) => error.downcast_ref(),
            _ => None,
        }
    }
}

/// What kind of trouble a [`TransportError`] is, for callers that act on it
/// without knowing the transport (retry, report, give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Nothing is there: no server socket, no PCI device, no such file.
    NotFound,
    /// The system does not allow it.
    PermissionDenied,
    /// The other end turned us away (a server full of peers).
    Refused,
    /// Someone else holds what we need.
    Busy,
    /// The other end did not finish setting up in time.
    TimedOut,
    /// The other end went away before setup was done.
    Gone,
    /// This system lacks what the transport needs (a driver, an IOMMU, a device
    /// model with interrupts).
    Unsupported,
    /// The other end or the device broke the protocol, or an address is malformed.
    Invalid,
    /// Any other failure of the system.
    Io,
}

impl TransportErrorKind {
    /// The kind an [`io::Error`] of kind `kind` is.
    pub fn from_io(kind: io::ErrorKind) -> TransportErrorKind {
        match kind {
            io::ErrorKind::NotFound => TransportErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => TransportErrorKind::PermissionDenied,
            io::ErrorKind::ConnectionRefused => TransportErrorKind::Refused,
            io::ErrorKind::ResourceBusy => TransportErrorKind::Busy,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportErrorKind::TimedOut,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof => TransportErrorKind::Gone,
            io::ErrorKind::Unsupported => TransportErrorKind::Unsupported,
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => TransportErrorKind::Invalid,
            _ => TransportErrorKind::Io,
        }
    }
}

/// A transport's own error, carried through the [`Device`] seam without the seam
/// knowing the transport: a [`TransportErrorKind`] plus the transport's error as
/// the source. It reads exactly as that error does.
#[derive(Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    error: Box<dyn StdError + Send + Sync + 'static>,
}

impl TransportError {
    /// Wraps `error` as a transport error of `kind`.
    pub fn new(
        kind: TransportErrorKind,
        error: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        TransportError {
            kind,
            error: error.into(),
        }
    }

    /// What kind of trouble it is.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The transport's error.
    pub fn get_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.error
    }

    /// The transport's error, if it is an `E` (each transport's `<Kind>Error`,
    /// e.g. the guest's, whose messages carry its setup hints).
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref()
    }

    /// The transport's error, owned.
    pub fn into_inner(self) -> Box<dyn StdError + Send + Sync + 'static> {
        self.error
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl StdError for TransportError {
    /// The transport error's own source: this type only adds a kind, so an error
    /// chain shows the transport's message once, not twice.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
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

    /// Whether `peer` is among the peers this device has heard of, looking for
    /// news only when it is not: for hot paths, where [`Device::peers`] would
    /// ask the server's socket (a system call) and build a list every time. A
    /// departure not yet read is taken in by the next look at the socket (any
    /// wait for peer events, or [`Device::peers`]).
    fn knows_peer(&self, peer: PeerId) -> bool {
        self.peers().iter().any(|p| p.id == peer)
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

    #[derive(Debug, Error)]
    #[error("the far side said no")]
    struct FarSide {
        #[source]
        why: io::Error,
    }

    #[test]
    fn a_transport_error_reads_as_its_source_and_gives_it_back() {
        let error: DeviceError = TransportError::new(
            TransportErrorKind::Refused,
            FarSide {
                why: io::Error::other("full"),
            },
        )
        .into();
        assert_eq!(error.to_string(), "the far side said no");
        // The chain names the transport's message once, then its cause.
        let mut chain = Vec::new();
        let mut next: Option<&dyn StdError> = Some(&error);
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        assert_eq!(chain, ["the far side said no", "full"]);
        let DeviceError::Transport(transport) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(transport.kind(), TransportErrorKind::Refused);
        assert_eq!(error.kind(), TransportErrorKind::Refused);
        assert_eq!(DeviceError::ServerGone.kind(), TransportErrorKind::Gone);
        assert!(error.transport_error::<FarSide>().is_some());
        assert!(error.transport_error::<io::Error>().is_none());
        assert!(
            DeviceError::NoDoorbell
                .transport_error::<FarSide>()
                .is_none()
        );
    }

    #[test]
    fn io_kinds_map_to_transport_kinds() {
        use io::ErrorKind as K;
        assert_eq!(
            TransportErrorKind::from_io(K::NotFound),
            TransportErrorKind::NotFound
        );
        assert_eq!(
            TransportErrorKind::from_io(K::ConnectionRefused),
            TransportErrorKind::Refused
        );
        assert_eq!(
            TransportErrorKind::from_io(K::BrokenPipe),
            TransportErrorKind::Gone
        );
        assert_eq!(
            TransportErrorKind::from_io(K::Other),
            TransportErrorKind::Io
        );
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
