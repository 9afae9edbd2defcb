//! The doorbell as protocols see it.

use core::fmt;

/// A peer's id as the ivshmem server assigns it (16 bits on the doorbell register).
pub type PeerId = u16;

/// An interrupt vector index on a peer.
pub type Vector = u16;

/// Why a doorbell could not be rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyError {
    /// The peer is not known to this transport (never joined, or already left).
    UnknownPeer(PeerId),
    /// The peer is known but has no such vector.
    NoSuchVector {
        /// The peer that was addressed.
        peer: PeerId,
        /// The vector that does not exist.
        vector: Vector,
        /// How many vectors the peer has.
        available: usize,
    },
    /// This transport has no doorbell (e.g. a plain shared file): poll instead.
    Unsupported,
    /// The operating system refused the doorbell write (errno).
    Os(i32),
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NotifyError::UnknownPeer(peer) => write!(f, "peer {peer} is not connected"),
            NotifyError::NoSuchVector {
                peer,
                vector,
                available,
            } => write!(
                f,
                "peer {peer} has no vector {vector} (it has {available} vector{})",
                if available == 1 { "" } else { "s" }
            ),
            NotifyError::Unsupported => {
                f.write_str("this transport has no doorbell; peers must poll the region")
            }
            NotifyError::Os(errno) => write!(f, "doorbell write failed (errno {errno})"),
        }
    }
}

impl core::error::Error for NotifyError {}

/// Rings a peer's doorbell.
///
/// Implementations must be cheap to call and must not block; whether a notification
/// is needed at all is the protocol's decision (it notifies only when asked).
pub trait Notify {
    /// Interrupts `peer` on `vector`. Several notifications may coalesce into one.
    fn notify(&self, peer: PeerId, vector: Vector) -> Result<(), NotifyError>;
}

impl<T: Notify + ?Sized> Notify for &T {
    fn notify(&self, peer: PeerId, vector: Vector) -> Result<(), NotifyError> {
        (**self).notify(peer, vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn errors_read_as_sentences() {
        let err = NotifyError::NoSuchVector {
            peer: 3,
            vector: 4,
            available: 1,
        };
        assert_eq!(err.to_string(), "peer 3 has no vector 4 (it has 1 vector)");
        assert_eq!(
            NotifyError::UnknownPeer(7).to_string(),
            "peer 7 is not connected"
        );
    }
}
