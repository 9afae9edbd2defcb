//! The virtio-mmio transport with its register block in shared memory, for virtio
//! between peers that have no hypervisor behind them (virtio 1.2, 4.2; OpenAMP's
//! hypervisor-less virtio).
//!
//! Nothing traps a write to the block, so the device learns of a driver's write only
//! when it looks, and a register the driver reads back (`DeviceFeatures` after
//! `DeviceFeaturesSel`, `QueueNumMax` after `QueueSel`, `Status` after
//! `FEATURES_OK`) holds the device's answer only once the device has written it.
//! The driver's writes that need an answer are therefore *requests* that the device
//! acknowledges before the driver reads on. [`Handshake`] names how:
//!
//! - [`Handshake::Sequenced`] (ivlink's own): two words outside the block. The driver
//!   writes its registers, stores `request + 1`, rings; the device processes the
//!   registers, writes its answers, stores `ack = request`, rings back. The driver
//!   reads no answer register before `ack` equals its request, and writes none while
//!   a request is outstanding. Every init step is one request.
//! - [`Handshake::OpenampHvl`]: what OpenAMP's `virtio-exp` driver does (legacy only).
//!   It rings after each `Status` write, the features write, the first `QueuePFN`
//!   write, `QueueNotify` and `InterruptACK`, and waits only for `QueuePFN` to read
//!   [`HVL_PFN_ACK`](registers::HVL_PFN_ACK). The device looks at the block on every
//!   poll and infers what the driver did from what changed.
//!
//! [`MmioDevice`] and [`MmioDriver`] are the two sides, both poll-driven: nothing here
//! waits, the caller waits (bounded) between calls and rings when told to.
//!
//! # Decisions
//!
//! - The device works out what a request asked for from the registers, not from an
//!   opcode, so the same code serves both handshakes. In order: a reset (`Status` 0,
//!   or in the hypervisor-less style `DRIVER_OK` going away), the driver's feature
//!   words, the selection registers (`DeviceFeaturesSel`, `SHMSel`, `QueueSel`) and
//!   their answers, a queue configured (`QueueReady` 0 → 1, or a new `QueuePFN`),
//!   then the other `Status` bits (`FEATURES_OK`, `DRIVER_OK`). A `QueueSel` change
//!   is a request of its own: in that request `QueuePFN`/`QueueReady` are answers
//!   for the newly selected queue, not configuration.
//! - `QueueNotify` is written for devices that read it, but it is not an event: the
//!   doorbell coalesces, so a device drains every queue on every wake.
//! - `InterruptStatus` is kept in the region: the device ORs bits in, and the driver
//!   clears what it handled. The [`Sequenced`](Handshake::Sequenced) driver clears the
//!   bits itself (no doorbell); the hypervisor-less driver also writes
//!   `InterruptACK` and rings, and the device clears those bits on its next poll.
//! - `ConfigGeneration` is a sequence lock: odd while the device rewrites the
//!   configuration space. The driver retries a read that saw an odd or changing
//!   generation, a bounded number of times.
//! - Legacy (Version 1) feature words are 32 bits: only word 0 exists. A legacy
//!   device checks the driver's features at `DRIVER_OK`, since there is no
//!   `FEATURES_OK`; a modern one at `FEATURES_OK` and clears it to refuse.
//! - A driver that asks for something the device cannot do gets `NEEDS_RESET` (with a
//!   configuration-change interrupt) and the device ignores it until it resets.
//! - Restarts (sequenced): a driver starts with a reset and numbers its requests on
//!   from the request word, so an earlier driver's unanswered request is harmless.
//!   A device that starts while a driver is there sets `NEEDS_RESET` and answers any
//!   outstanding request, and the driver starts over. A driver reads `MagicValue` 0
//!   as "no device yet" and waits.
//! - Restarts (hypervisor-less): OpenAMP's driver may start over without writing 0;
//!   `DRIVER_OK` going away or `ACKNOWLEDGE` written alone again also reset. The
//!   device clears `QueuePFN` when it sees the PFN rewrite (and on a reset, if it
//!   still holds the ack or the acknowledged PFN), so that the next session's first
//!   write of the same PFN is a new request.
//! - Addresses in [`QueueConfig`] are the driver's, unchecked against the region:
//!   the caller translates them (native: region offsets; the seed: the driver VM's
//!   BAR2 base plus offset) and bounds-checks the result.
//! - In the hypervisor-less style the device cannot answer `QueueSel` before the
//!   driver reads `QueueNumMax` (no doorbell in between), so every queue should
//!   have the same `QueueNumMax`; the device still updates it as soon as it sees the
//!   selection. That style is legacy only, as in OpenAMP.

mod device;
mod driver;
pub mod registers;

#[cfg(test)]
mod tests;

use core::fmt;

pub use device::{DeviceConfig, DeviceEvent, DevicePoll, MmioDevice, Shm};
pub use driver::{DriverConfig, MmioDriver, QueueSetup, Step};
pub use registers::MmioBlock;

use crate::region::RegionError;
use crate::virtio::virtq::{MAX_QUEUE_SIZE, VringLayout};

/// Most queues a device or driver here handles (a multiport console with seven
/// ports).
pub const MAX_QUEUES: usize = 32;

/// How many times [`MmioDriver::read_config`] retries a read the device changed
/// under it.
pub const CONFIG_READ_RETRIES: usize = 8;

/// How the driver's writes that need an answer are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// A request sequence word and an ack word at these region offsets (outside
    /// the register block, 4-byte aligned).
    Sequenced {
        /// Region offset of the word the driver bumps for each request.
        request: usize,
        /// Region offset of the word the device sets to the request it processed.
        ack: usize,
    },
    /// OpenAMP's hypervisor-less handshake: doorbells after the writes that need an
    /// answer, `QueuePFN` acknowledged with `0xAABBAABB`. Legacy (Version 1) only.
    OpenampHvl,
}

impl Handshake {
    /// Whether the handshake's words are aligned, distinct and outside `block`.
    pub fn check(self, block: MmioBlock) -> Result<(), MmioError> {
        if let Handshake::Sequenced { request, ack } = self {
            if request % 4 != 0 || ack % 4 != 0 {
                return Err(MmioError::Config("handshake words must be 4-byte aligned"));
            }
            if request == ack {
                return Err(MmioError::Config("request and ack must be different words"));
            }
            if block.overlaps(request, 4) || block.overlaps(ack, 4) {
                return Err(MmioError::Config(
                    "handshake words must lie outside the register block",
                ));
            }
        }
        Ok(())
    }
}

/// One queue as the driver configured it. Addresses are the driver's, as it wrote
/// them; translating them into region offsets is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue index.
    pub index: u16,
    /// Entries (a power of two, at most the device's `QueueNumMax`).
    pub num: u16,
    /// Address of the descriptor table.
    pub desc: u64,
    /// Address of the available ring.
    pub driver: u64,
    /// Address of the used ring.
    pub device: u64,
    /// `QueueAlign` of a legacy queue (the used ring's alignment); `None` for modern.
    pub align: Option<u32>,
}

impl QueueConfig {
    /// The queue as one contiguous vring: the address of its base and its layout,
    /// if its parts sit where the legacy layout puts them (always for a legacy
    /// queue; for a modern one, with the smallest alignment that fits, up to 64 KiB).
    pub fn contiguous(&self) -> Option<(u64, VringLayout)> {
        let fits = |align: usize| {
            let layout = VringLayout::new(self.num, align).ok()?;
            let driver = self.desc.checked_add(layout.avail_offset() as u64)?;
            let device = self.desc.checked_add(layout.used_offset() as u64)?;
            (driver == self.driver && device == self.device).then_some((self.desc, layout))
        };
        match self.align {
            Some(align) => fits(usize::try_from(align).ok()?),
            None => (2..=16).find_map(|shift| fits(1 << shift)),
        }
    }
}

/// Whether `value` is a queue size ivlink accepts (a power of two up to 1024).
fn valid_queue_size(value: u32) -> bool {
    value != 0 && value.is_power_of_two() && value <= u32::from(MAX_QUEUE_SIZE)
}

/// What went wrong on a virtio-mmio block: a local mistake, a region access, or a
/// peer that broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// The region refused an access (the block does not fit, or is misaligned).
    Region(RegionError),
    /// This side's own configuration cannot work.
    Config(&'static str),
    /// `MagicValue` is not `"virt"`.
    BadMagic(u32),
    /// `Version` is not one this side speaks.
    BadVersion(u32),
    /// `DeviceID` is not the expected device type.
    WrongDevice {
        /// The device type the driver drives.
        expected: u32,
        /// What the block says.
        found: u32,
    },
    /// The hypervisor-less driver needs non-zero `SHMBase`/`SHMLen`.
    NoSharedMemory,
    /// `QueueNumMax` is not 0 or a power of two up to 1024.
    BadQueueNumMax {
        /// The queue.
        queue: u16,
        /// What the block says.
        value: u32,
    },
    /// The device has no such queue (`QueueNumMax` 0).
    QueueAbsent(u16),
    /// The device's queue is smaller than the driver's.
    QueueTooSmall {
        /// The queue.
        queue: u16,
        /// The device's `QueueNumMax`.
        max: u32,
        /// The size the driver wanted.
        wanted: u16,
    },
    /// A queue was already live when selected, or the device did not take it.
    QueueRefused(u16),
    /// A modern device that does not offer `VIRTIO_F_VERSION_1`.
    MissingVersion1,
    /// The device refused the driver's features (modern: it cleared `FEATURES_OK`).
    FeaturesRefused {
        /// What the driver asked for.
        requested: u64,
        /// What the device offers.
        offered: u64,
    },
    /// The ack word names a request the driver never made.
    BadAck {
        /// The driver's latest request.
        request: u32,
        /// What the ack word says.
        ack: u32,
    },
    /// `Status` holds bits the driver did not write.
    BadStatus(u32),
    /// The device set `DEVICE_NEEDS_RESET`: reset and start again.
    NeedsReset,
    /// The configuration space kept changing under a read.
    ConfigUnstable,
    /// A configuration access outside the configuration space.
    ConfigRange {
        /// Offset in the configuration space.
        offset: usize,
        /// Length of the access.
        len: usize,
    },
    /// The driver selected a queue index that does not exist.
    BadQueueIndex(u32),
    /// The driver set a queue size that is not a power of two within `QueueNumMax`.
    BadQueueNum {
        /// The queue.
        queue: u16,
        /// The size the driver wrote.
        num: u32,
    },
    /// A legacy queue's `GuestPageSize`, `QueueAlign` or `QueuePFN` cannot describe a
    /// vring (zero, not a power of two, or an address that overflows).
    BadQueueLayout(u16),
    /// The driver configured a queue that is already configured.
    QueueReconfigured(u16),
    /// The driver changed `Status` in a way the virtio init sequence does not allow.
    IllegalStatus {
        /// The driver's status before.
        from: u8,
        /// What it wrote.
        to: u8,
    },
    /// The driver did something before the step that must come first.
    OutOfOrder(&'static str),
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MmioError::Region(e) => write!(f, "virtio-mmio block: {e}"),
            MmioError::Config(what) => write!(f, "invalid virtio-mmio configuration: {what}"),
            MmioError::BadMagic(v) => write!(
                f,
                "no virtio-mmio register block here (magic {v:#010x}, expected 0x74726976)"
            ),
            MmioError::BadVersion(v) => write!(f, "unsupported virtio-mmio version {v}"),
            MmioError::WrongDevice { expected, found } => {
                write!(f, "virtio device id {found}, expected {expected}")
            }
            MmioError::NoSharedMemory => write!(
                f,
                "the device publishes no SHMBase/SHMLen, so it is not hypervisor-less"
            ),
            MmioError::BadQueueNumMax { queue, value } => write!(
                f,
                "queue {queue}: QueueNumMax {value} is not a power of two up to 1024"
            ),
            MmioError::QueueAbsent(q) => write!(f, "the device has no queue {q}"),
            MmioError::QueueTooSmall { queue, max, wanted } => write!(
                f,
                "queue {queue}: the device takes at most {max} entries, the driver needs {wanted}"
            ),
            MmioError::QueueRefused(q) => write!(f, "queue {q}: the device did not take it"),
            MmioError::MissingVersion1 => write!(
                f,
                "a modern virtio-mmio device that does not offer VIRTIO_F_VERSION_1"
            ),
            MmioError::FeaturesRefused { requested, offered } => write!(
                f,
                "features {requested:#x} refused (the device offers {offered:#x})"
            ),
            MmioError::BadAck { request, ack } => write!(
                f,
                "the device acknowledged request {ack}, the driver's latest is {request}"
            ),
            MmioError::BadStatus(s) => {
                write!(f, "device status {s:#x} holds bits the driver did not set")
            }
            MmioError::NeedsReset => write!(f, "the virtio device needs a reset"),
            MmioError::ConfigUnstable => write!(
                f,
                "the configuration space kept changing during {CONFIG_READ_RETRIES} reads"
            ),
            MmioError::ConfigRange { offset, len } => write!(
                f,
                "configuration access of {len} bytes at {offset:#x} is outside the configuration space"
            ),
            MmioError::BadQueueIndex(q) => {
                write!(f, "the driver selected queue {q}, which does not exist")
            }
            MmioError::BadQueueNum { queue, num } => write!(
                f,
                "queue {queue}: size {num} is not a power of two within QueueNumMax"
            ),
            MmioError::BadQueueLayout(q) => write!(
                f,
                "queue {q}: page size, alignment or PFN do not describe a vring"
            ),
            MmioError::QueueReconfigured(q) => {
                write!(f, "queue {q} configured twice without a reset")
            }
            MmioError::IllegalStatus { from, to } => {
                write!(f, "illegal device status change {from:#x} -> {to:#x}")
            }
            MmioError::OutOfOrder(what) => write!(f, "virtio init out of order: {what}"),
        }
    }
}

impl core::error::Error for MmioError {}

impl From<RegionError> for MmioError {
    fn from(e: RegionError) -> Self {
        MmioError::Region(e)
    }
}
