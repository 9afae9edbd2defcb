//! The virtio console (virtio 1.2, 5.3) on virtqueues in the region: the
//! **device** side ([`ConsoleDevice`], which prints what the driver writes) and
//! the **driver** side ([`ConsoleDriver`], which owns every buffer).
//!
//! This layer starts where transport negotiation ends: it is given the
//! negotiated feature bits, the config space as read, the queues (vrings already
//! placed in the region), the [`AddressMap`] between descriptor addresses and
//! region offsets and, for the driver, its buffer pool. It knows nothing of
//! registers, sections or doorbells; `flush` says when to ring.
//!
//! # Queues and ports
//!
//! Port 0 uses receiveq 0 and transmitq 1. With [`F_MULTIPORT`] the control
//! receiveq is 2 and the control transmitq 3, and port `p > 0` uses queues
//! `2 + 2p` and `3 + 2p` ([`receiveq`], [`transmitq`]). At most [`MAX_PORTS`]
//! ports are served: a device refuses a config with more, a driver given such
//! a config serves the first [`MAX_PORTS`] and skips control messages for the
//! others. "Receive" and "transmit" are the driver's view throughout.
//!
//! # Byte streams
//!
//! Each port is a byte stream each way. Buffers are full size: the driver
//! coalesces writes into its transmit buffers until a buffer is full or
//! `flush` is called, and the device fills each receive buffer as far as it
//! can before returning it. Reads may be partial; a buffer stays held until it
//! is drained and only then goes back (a drained receive buffer is posted
//! again, a drained transmit buffer is returned used). Nothing a side does is
//! visible to the other side before its `flush`, which publishes the data
//! queues first and the control queues last, so a control message that ends a
//! stream never overtakes its data.
//!
//! # Half-close
//!
//! With [`F_MULTIPORT`], `close_output(port)` sends `PORT_OPEN` with value 0:
//! the other side reads end of stream once it has drained what came before.
//! The device announces its side open (`PORT_OPEN 1`) when the driver reports
//! the port ready; the driver announces its side open right after `PORT_READY`.
//! Without [`F_MULTIPORT`] virtio has no way to say it: the caller signals end
//! of stream through its own state (the native section), and nothing here
//! exposes it.
//!
//! # Decisions
//!
//! - `RESIZE` carries `{le16 cols; le16 rows}` in that order, as the
//!   specification's `struct virtio_console_resize` says. Linux's driver reads
//!   rows first (a discrepancy raised on the virtio list); an ivlink driver and
//!   device agree with each other and with the specification.
//! - Port names are at most [`MAX_PORT_NAME`] bytes of UTF-8, so a control buffer
//!   is [`CONTROL_BUFFER_SIZE`] bytes. The driver posts every receive buffer of
//!   every port up front (the specification lets a driver fill receive queues
//!   at any time); in multiport mode a port carries data only between
//!   `DEVICE_ADD` and `DEVICE_REMOVE`.
//! - Unknown control events are skipped (later virtio versions may add some); a
//!   message for a port that does not exist is [`ConsoleError::UnknownPort`].
//! - Used lengths on transmitqs are ignored (legacy drivers do too); the device
//!   returns drained transmit buffers with length 0 and never completes a
//!   receive buffer with length 0.
//!
//! # Hostile peers
//!
//! Every descriptor, index and length comes through [`crate::virtio::virtq`]'s
//! checks; every address through the [`AddressMap`]'s window. A transmit buffer
//! the device may write, a receive buffer it may not, a buffer outside the
//! window or longer than the agreed maximum, a used length past the buffer, a
//! malformed control message: each is a [`ConsoleError`], never a panic or an
//! access outside the region. Every call does bounded work (at most one pass
//! over each ring it touches).
//!
//! [`AddressMap`]: crate::virtio::AddressMap

mod config;
mod control;
mod device;
mod driver;
mod ids;
mod layout;
mod session;

#[cfg(test)]
mod tests;

use core::fmt;

pub use config::{CONFIG_SIZE, ConsoleConfig, EMERG_WR_OFFSET, emergency_byte};
pub use control::{
    CONTROL_BUFFER_SIZE, CONTROL_HEADER_SIZE, ControlMessage, MAX_PORT_NAME, PortName, event,
};
pub use device::{ConsoleDevice, DeviceEvent, DevicePortState};
pub use driver::{CONTROL_BUFFERS, ConsoleDriver, DriverEvent, DriverPool, DriverPortState};
pub use ids::MAX_BUFFERS;
pub use layout::{
    ConsoleLayout, MAX_QUEUES, NATIVE_HEADER, NATIVE_SETUP, NativeHeader, NativeShape, Profile,
    Side, SideKind, SideSnapshot, hvl,
};
pub use session::{DeviceSession, DriverSession, SessionEvent, SessionPoll, VENDOR_ID};

use crate::region::RegionError;
use crate::virtio::AddressError;
use crate::virtio::virtq::VirtqError;

/// Feature bit: the config space's `cols` and `rows` are valid.
pub const F_SIZE: u32 = 0;
/// Feature bit: several ports and the control queues.
pub const F_MULTIPORT: u32 = 1;
/// Feature bit: the driver may write single bytes through `emerg_wr`.
pub const F_EMERG_WRITE: u32 = 2;

/// Most ports a console serves (queues `0..2 + 2 * MAX_PORTS`).
pub const MAX_PORTS: usize = 8;

/// The control receiveq (device to driver), with [`F_MULTIPORT`].
pub const CONTROL_RECEIVEQ: usize = 2;
/// The control transmitq (driver to device), with [`F_MULTIPORT`].
pub const CONTROL_TRANSMITQ: usize = 3;

/// The receiveq (device to driver) of `port`.
pub const fn receiveq(port: u32) -> usize {
    if port == 0 { 0 } else { 2 + 2 * port as usize }
}

/// The transmitq (driver to device) of `port`.
pub const fn transmitq(port: u32) -> usize {
    receiveq(port) + 1
}

/// Queues a console with `ports` ports uses (2 without [`F_MULTIPORT`]).
pub const fn queue_count(multiport: bool, ports: u32) -> usize {
    if multiport { 2 + 2 * ports as usize } else { 2 }
}

/// Whether feature bit `bit` is set in `features`.
pub(crate) const fn has(features: u64, bit: u32) -> bool {
    features & (1 << bit) != 0
}

/// One port's byte accounting. Per side:
///
/// - driver: `written == buffered + in_flight + acknowledged` (bytes taken by
///   `write`; waiting in a transmit buffer not posted yet; posted and not
///   returned; returned used by the device), `received` bytes handed out by
///   `read`. After a crash of the device, `in_flight` bytes are the ones that may
///   or may not have been delivered.
/// - device: `written == buffered + acknowledged` (bytes taken by `write`; in a
///   receive buffer not completed yet; in receive buffers completed), `received`
///   bytes handed out by `read` (their buffers are returned used once drained);
///   `in_flight` stays 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Bytes this side's `write` took.
    pub written: u64,
    /// Bytes in a buffer this side has not handed over yet.
    pub buffered: u64,
    /// Bytes handed over and not returned (driver only).
    pub in_flight: u64,
    /// Bytes handed over for good.
    pub acknowledged: u64,
    /// Bytes this side's `read` handed out.
    pub received: u64,
}

/// What went wrong on a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleError {
    /// The queues, pool or config given cannot make a console.
    Layout(&'static str),
    /// The other side wrote something no correct peer writes.
    Corrupt(&'static str),
    /// A control message names a port that does not exist.
    UnknownPort(u32),
    /// This side asked for a port that does not exist.
    NoSuchPort(u32),
    /// The port is not set up yet (multiport: before `DEVICE_ADD` on the driver,
    /// before `PORT_READY` on the device).
    PortNotReady(u32),
    /// This side closed the port's output.
    OutputClosed(u32),
    /// The operation needs a feature that was not negotiated.
    NotNegotiated(&'static str),
    /// A descriptor's buffer lies outside the shared buffers.
    Address(AddressError),
    /// A virtqueue check failed.
    Virtq(VirtqError),
    /// The region refused an access.
    Region(RegionError),
    /// Another peer is still setting the console's section up (or gave up on it).
    Initializing,
    /// The virtio-mmio negotiation failed.
    Mmio(crate::virtio::mmio::MmioError),
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleError::Layout(what) => write!(f, "invalid console layout: {what}"),
            ConsoleError::Corrupt(what) => write!(f, "console corrupted by the peer: {what}"),
            ConsoleError::UnknownPort(id) => {
                write!(
                    f,
                    "console corrupted by the peer: a control message names unknown port {id}"
                )
            }
            ConsoleError::NoSuchPort(id) => write!(f, "console port {id} does not exist"),
            ConsoleError::PortNotReady(id) => write!(f, "console port {id} is not ready yet"),
            ConsoleError::OutputClosed(id) => {
                write!(f, "console port {id}: output already closed")
            }
            ConsoleError::NotNegotiated(what) => {
                write!(f, "console feature not negotiated: {what}")
            }
            ConsoleError::Address(e) => write!(f, "console corrupted by the peer: {e}"),
            ConsoleError::Virtq(e) => write!(f, "{e}"),
            ConsoleError::Region(e) => write!(f, "{e}"),
            ConsoleError::Initializing => f.write_str("the console is still being set up"),
            ConsoleError::Mmio(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ConsoleError {}

impl ConsoleError {
    /// Whether the other side caused it (what it wrote into the region), rather
    /// than this side's own use or layout.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            ConsoleError::Corrupt(_)
                | ConsoleError::UnknownPort(_)
                | ConsoleError::Address(_)
                | ConsoleError::Virtq(VirtqError::Corrupt(_))
        )
    }
}

impl From<VirtqError> for ConsoleError {
    fn from(e: VirtqError) -> Self {
        ConsoleError::Virtq(e)
    }
}

impl From<RegionError> for ConsoleError {
    fn from(e: RegionError) -> Self {
        ConsoleError::Region(e)
    }
}

impl From<crate::setup::SetupError> for ConsoleError {
    fn from(e: crate::setup::SetupError) -> Self {
        match e {
            // Another peer replaced the section: opening again finds the new one.
            crate::setup::SetupError::Abandoned => ConsoleError::Initializing,
            crate::setup::SetupError::Region(e) => ConsoleError::Region(e),
        }
    }
}

impl From<AddressError> for ConsoleError {
    fn from(e: AddressError) -> Self {
        ConsoleError::Address(e)
    }
}

/// Ports a console with these features and config serves, and whether the
/// queues given cover them.
pub(crate) fn port_count(
    features: u64,
    config: &ConsoleConfig,
    queues: usize,
) -> Result<u32, ConsoleError> {
    let ports = if has(features, F_MULTIPORT) {
        if config.max_nr_ports == 0 {
            return Err(ConsoleError::Layout(
                "multiport console with max_nr_ports 0",
            ));
        }
        config.max_nr_ports.min(MAX_PORTS as u32)
    } else {
        1
    };
    if queues < queue_count(has(features, F_MULTIPORT), ports) {
        return Err(ConsoleError::Layout("fewer queues than the ports need"));
    }
    Ok(ports)
}
