//! What every virtio transport over the region shares: split virtqueues, the
//! device status bits, feature bits and device ids (virtio 1.2, sections 2.1,
//! 2.2, 2.7 and 5). RPMsg and the virtio console build on it.

pub mod address;
pub mod mmio;
pub mod virtq;

pub use address::{AddressError, AddressMap};

/// Device status bits (virtio 1.2, 2.1): the driver sets them in order, the
/// device sets [`NEEDS_RESET`](status::NEEDS_RESET).
pub mod status {
    /// The guest has noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive the device.
    pub const DRIVER: u8 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u8 = 4;
    /// The driver has acknowledged the features it understands.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error from which it cannot recover without a reset.
    pub const NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// Feature bit numbers that are not specific to one device type (virtio 1.2, 6).
pub mod features {
    /// Descriptors may point at a table of descriptors.
    pub const RING_F_INDIRECT_DESC: u32 = 28;
    /// `used_event`/`avail_event` replace the ring flags.
    pub const RING_F_EVENT_IDX: u32 = 29;
    /// The device follows virtio 1.0 or later (the modern interface).
    pub const VERSION_1: u32 = 32;

    /// The feature word with bit `feature` set.
    pub const fn bit(feature: u32) -> u64 {
        1 << feature
    }
}

/// Device type ids (virtio 1.2, 5).
pub mod id {
    /// A console (virtio-console).
    pub const CONSOLE: u32 = 3;
    /// An RPMsg bus.
    pub const RPMSG: u32 = 7;
}
