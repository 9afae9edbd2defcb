//! RPMsg over a shared region, compatible with OpenAMP, Linux and RPMsg-Lite at the
//! message level, and with two OpenAMP sample layouts byte for byte.
//!
//! A [`Link`] is one side of a virtio rpmsg device without a hypervisor: the
//! **host** is the virtio driver (it owns every buffer and posts them), the
//! **remote** is the virtio device. Vring 0 carries messages from the remote to the
//! host, vring 1 from the host to the remote. Where the status, the vrings and the
//! buffers live is a [`LinkLayout`], one per [`Profile`].
//!
//! # Handshake and recovery (native profile)
//!
//! The native header keeps the virtio status together with a 24-bit generation in
//! one word, so a remote never mistakes a host in the middle of a restart for a
//! ready one:
//!
//! - **Host start**: writes `(generation + 1, 0)`, zeroes both vrings and the pool,
//!   posts every RX buffer, writes `(generation + 1, DRIVER_OK)` and rings the
//!   remote. It is *up* once the remote writes that generation into `attached`.
//! - **Remote start**: waits for `DRIVER_OK`, starts its ring positions at zero,
//!   writes `attached`, rings the host. If `attached` already names the current
//!   generation, an earlier remote served it and the positions are lost: the
//!   remote sets `NEEDS_RESET` and waits for the next generation.
//! - **Host restart**: the remote sees the word change, reports
//!   [`LinkEvent::Reset`], and attaches to the new generation.
//! - **Remote restart** (or a corrupted ring on either side): the host sees
//!   `NEEDS_RESET` and starts a new generation; messages it had posted and the
//!   remote never returned are reported as `lost` in [`LinkEvent::Reset`]. Nothing
//!   is sent twice, so nothing arrives twice.
//!
//! After every reset, named endpoints are announced again and forget their
//! bindings, so both sides re-bind through the name service.

mod endpoints;
mod layout;
mod link;
pub mod wire;

#[cfg(test)]
mod tests;

use core::fmt;

pub use endpoints::{DYNAMIC_ADDRS, Endpoint, EndpointError, Endpoints, MAX_ENDPOINTS};
pub use layout::{
    Control, ControlWord, LinkLayout, NATIVE_SETUP, NativeHeader, NativeShape, Profile, Role,
    ZEPHYR_POOL, native_header_words, resource_table,
};
pub use link::{Link, LinkConfig, LinkStats};
pub use wire::{ADDR_ANY, Name};

use crate::region::RegionError;
use crate::virtio::virtq::VirtqError;

/// What happened on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// The other side is there (host: the remote attached; remote: the host is
    /// ready). Named endpoints are being announced.
    Up,
    /// The link started over.
    Reset {
        /// Messages this side had sent that the other side never took: lost.
        lost: u32,
        /// Why.
        cause: ResetCause,
    },
    /// An announcement that matched no local endpoint (OpenAMP's `ns_bind_cb`):
    /// create an endpoint bound to `addr` to talk to it.
    Announced {
        /// The remote endpoint's name.
        name: Name,
        /// Its address.
        addr: u32,
    },
    /// A local endpoint learned its remote address from an announcement.
    Bound {
        /// The local endpoint.
        local: u32,
        /// The address it now sends to.
        remote: u32,
    },
    /// A remote endpoint went away.
    Unbound {
        /// Its name.
        name: Name,
        /// Its address.
        addr: u32,
        /// The local endpoint that was bound to it, if any.
        local: Option<u32>,
    },
    /// A message for `local`; its payload is in the buffer given to `poll`.
    Message {
        /// The endpoint it is for.
        local: u32,
        /// The sender's address.
        src: u32,
        /// Payload bytes.
        len: usize,
    },
}

/// Why a link was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// The other side started again.
    PeerRestarted,
    /// The rings held something no correct peer writes.
    Corrupt(&'static str),
}

/// Why an RPMsg operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpmsgError {
    /// The layout cannot be used.
    Layout(&'static str),
    /// Another peer is still writing the native header.
    Initializing,
    /// The shared memory holds something no correct peer writes.
    Corrupt(&'static str),
    /// A virtqueue failed.
    Virtq(VirtqError),
    /// No buffer is free until the other side returns one.
    NoBuffer,
    /// The payload does not fit in one buffer.
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// Bytes a buffer carries.
        max: usize,
    },
    /// The receive buffer is smaller than the largest payload.
    BufferTooSmall {
        /// Bytes it must hold.
        needed: usize,
    },
    /// The endpoint has no remote address yet and none was given.
    NotBound(u32),
    /// No local endpoint has that address.
    NoSuchEndpoint(u32),
    /// The address is taken.
    AddressInUse(u32),
    /// The endpoint table is full.
    TooManyEndpoints,
    /// Endpoint names are 1 to 31 bytes without NUL.
    BadName,
    /// The link is not set up yet.
    LinkDown,
    /// Another host took the link over.
    Displaced,
    /// The region refused an access.
    Region(RegionError),
}

impl fmt::Display for RpmsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpmsgError::Layout(what) => write!(f, "unusable RPMsg layout: {what}"),
            RpmsgError::Initializing => {
                f.write_str("the RPMsg link is being set up by its other side")
            }
            RpmsgError::Corrupt(what) => write!(f, "RPMsg link corrupted by the peer: {what}"),
            RpmsgError::Virtq(e) => write!(f, "{e}"),
            RpmsgError::NoBuffer => f.write_str("no free buffer until the other side returns one"),
            RpmsgError::TooLarge { len, max } => {
                write!(
                    f,
                    "{len} bytes exceed the {max}-byte payload of one RPMsg buffer"
                )
            }
            RpmsgError::BufferTooSmall { needed } => {
                write!(f, "the receive buffer must hold {needed} bytes")
            }
            RpmsgError::NotBound(a) => write!(f, "endpoint {a:#x} has no remote address yet"),
            RpmsgError::NoSuchEndpoint(a) => write!(f, "no local endpoint at address {a:#x}"),
            RpmsgError::AddressInUse(a) => write!(f, "address {a:#x} is already in use"),
            RpmsgError::TooManyEndpoints => f.write_str("no free endpoint slot or address"),
            RpmsgError::BadName => f.write_str("endpoint names are 1 to 31 bytes without NUL"),
            RpmsgError::LinkDown => f.write_str("the RPMsg link is not up"),
            RpmsgError::Displaced => f.write_str("another host took this RPMsg link over"),
            RpmsgError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for RpmsgError {}

impl From<RegionError> for RpmsgError {
    fn from(e: RegionError) -> Self {
        RpmsgError::Region(e)
    }
}

impl From<crate::setup::SetupError> for RpmsgError {
    fn from(e: crate::setup::SetupError) -> Self {
        match e {
            // Given up on by another peer: its replacement is being set up.
            crate::setup::SetupError::Abandoned => RpmsgError::Initializing,
            crate::setup::SetupError::Region(e) => RpmsgError::Region(e),
        }
    }
}

impl From<VirtqError> for RpmsgError {
    fn from(e: VirtqError) -> Self {
        RpmsgError::Virtq(e)
    }
}
