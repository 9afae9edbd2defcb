//! What a console tells about itself while it runs.

use std::fmt;

use ivlink_core::virtio::mmio::MmioDevice;
use ivlink_core::virtio::mmio::registers::MAGIC;

/// Something worth telling a person about a running console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Negotiation finished: the ports carry data.
    Up {
        /// The features both sides use.
        features: u64,
        /// Device side: what the driver set up.
        dump: Option<RegisterDump>,
    },
    /// The other side started again; bytes this side had sent were lost.
    PeerRestarted {
        /// Bytes sent and never taken.
        lost: u64,
    },
    /// Device side: the driver broke the negotiation's rules (it was asked to
    /// reset).
    DriverFailed(String),
    /// The other side broke the queues; this side starts over with it.
    PeerFault(String),
    /// Device side: a byte the driver wrote through `emerg_wr`.
    Emergency(u8),
    /// The console's size changed (columns, rows).
    Resized {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// The register block and queues as a device sees them once the driver is
/// done: what the Zephyr sample's device prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterDump {
    /// The block's address as the driver knows it.
    pub block_address: u64,
    /// `MagicValue`.
    pub magic: u32,
    /// `Version`.
    pub version: u32,
    /// `DeviceID`.
    pub device_id: u32,
    /// The queues the driver configured.
    pub queues: Vec<QueueInfo>,
}

/// One queue's addresses as the driver wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueInfo {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
    /// Entries.
    pub num: u16,
}

impl RegisterDump {
    /// Reads what `device` negotiated, its block at `block_address`.
    pub(crate) fn of(device: &MmioDevice, block_address: u64, version: u32, queues: usize) -> Self {
        RegisterDump {
            block_address,
            magic: MAGIC,
            version,
            device_id: ivlink_core::virtio::id::CONSOLE,
            queues: (0..queues)
                .filter_map(|q| device.queue(q))
                .map(|q| QueueInfo {
                    desc: q.desc,
                    avail: q.driver,
                    used: q.device,
                    num: q.num,
                })
                .collect(),
        }
    }
}

/// The Zephyr sample's lines, word for word.
impl fmt::Display for RegisterDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Dump the configuration for the virtio mmio device {:#x}",
            self.block_address
        )?;
        writeln!(
            f,
            "VIRTIO_MMIO Device Base address: {:#x}",
            self.block_address
        )?;
        writeln!(f, "VIRTIO_MMIO_MAGIC_VALUE: {:#x}", self.magic)?;
        writeln!(f, "VIRTIO_MMIO_VERSION: {:#x}", self.version)?;
        writeln!(f, "VIRTIO_MMIO_DEVICE_ID: {:#x}", self.device_id)?;
        for q in &self.queues {
            writeln!(f, "Dump of incoming Vring information from other side:")?;
            writeln!(f, "vring descriptor: {:#x}:", q.desc)?;
            writeln!(f, "vring avail: {:#x}:", q.avail)?;
            writeln!(f, "vring used: {:#x}:", q.used)?;
            writeln!(f, "vring entries: {}:", q.num)?;
        }
        write!(f, "Config Status DRIVER_OK")
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Up {
                dump: Some(dump), ..
            } => write!(f, "{dump}"),
            Notice::Up { features, .. } => {
                write!(f, "console up (features {features:#x})")
            }
            Notice::PeerRestarted { lost: 0 } => {
                f.write_str("the other side restarted; nothing was lost")
            }
            Notice::PeerRestarted { lost } => write!(
                f,
                "the other side restarted; {lost} byte(s) sent before were never taken"
            ),
            Notice::DriverFailed(why) => write!(f, "the driver was asked to reset: {why}"),
            Notice::PeerFault(why) => write!(f, "starting over: {why}"),
            Notice::Emergency(byte) => write!(f, "emergency write: {:?}", char::from(*byte)),
            Notice::Resized { cols, rows } => write!(f, "console resized to {cols}x{rows}"),
        }
    }
}
