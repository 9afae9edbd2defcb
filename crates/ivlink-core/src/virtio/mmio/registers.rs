//! The virtio-mmio register map (virtio 1.2, 4.2.2 and 4.2.4; Linux
//! `uapi/linux/virtio_mmio.h`) and [`MmioBlock`], a register block placed at a region
//! offset.
//!
//! Every register is a 32-bit little-endian word at a 4-byte aligned offset from the
//! start of the block; the fields below are relative to it and placed with
//! [`MmioBlock::reg`].

use core::sync::atomic::Ordering;

use super::MmioError;
use crate::region::{Le32, Region, RegionError};

/// `"virt"` in little-endian: the first word of every register block.
pub const MAGIC: u32 = 0x7472_6976;
/// `Version` of the legacy interface.
pub const VERSION_LEGACY: u32 = 1;
/// `Version` of the modern interface (virtio 1.0 and later).
pub const VERSION_MODERN: u32 = 2;
/// Offset of the device-specific configuration space from the block's start.
pub const CONFIG_OFFSET: usize = 0x100;
/// Largest configuration space a block holds (it ends the default block).
pub const CONFIG_SPACE_MAX: usize = 0x100;
/// Size of a register block with its configuration space (the seed's layout).
pub const BLOCK_SIZE: usize = CONFIG_OFFSET + CONFIG_SPACE_MAX;
/// `InterruptStatus` bit: the device used a buffer.
pub const INTERRUPT_USED_BUFFER: u32 = 1;
/// `InterruptStatus` bit: the configuration changed (or the device needs a reset).
pub const INTERRUPT_CONFIG_CHANGE: u32 = 2;
/// What an OpenAMP hypervisor-less device writes into `QueuePFN` to acknowledge it.
pub const HVL_PFN_ACK: u32 = 0xAABB_AABB;
/// Guest page size of every legacy driver ivlink knows (OpenAMP, Linux on 4 KiB
/// pages): `QueuePFN` counts pages of this size.
pub const LEGACY_PAGE_SIZE: u32 = 4096;
/// `SHMLen` of a shared memory region that does not exist (virtio 1.2, 4.2.2).
pub const SHM_ABSENT: u64 = u64::MAX;

/// `MagicValue` (R).
pub const MAGIC_VALUE: Le32 = Le32::at(0x000);
/// `Version` (R): [`VERSION_LEGACY`] or [`VERSION_MODERN`].
pub const VERSION: Le32 = Le32::at(0x004);
/// `DeviceID` (R): 0 is a placeholder, 3 a console.
pub const DEVICE_ID: Le32 = Le32::at(0x008);
/// `VendorID` (R).
pub const VENDOR_ID: Le32 = Le32::at(0x00c);
/// `DeviceFeatures` (R): the 32-bit word of feature bits chosen by
/// [`DEVICE_FEATURES_SEL`].
pub const DEVICE_FEATURES: Le32 = Le32::at(0x010);
/// `DeviceFeaturesSel` (W).
pub const DEVICE_FEATURES_SEL: Le32 = Le32::at(0x014);
/// `DriverFeatures` (W): the word chosen by [`DRIVER_FEATURES_SEL`].
pub const DRIVER_FEATURES: Le32 = Le32::at(0x020);
/// `DriverFeaturesSel` (W). The 2022 OpenAMP hypervisor-less driver wrote the queue
/// index here instead of into [`QUEUE_SEL`].
pub const DRIVER_FEATURES_SEL: Le32 = Le32::at(0x024);
/// Legacy name of [`DEVICE_FEATURES`].
pub const HOST_FEATURES: Le32 = DEVICE_FEATURES;
/// Legacy name of [`DEVICE_FEATURES_SEL`].
pub const HOST_FEATURES_SEL: Le32 = DEVICE_FEATURES_SEL;
/// Legacy name of [`DRIVER_FEATURES`].
pub const GUEST_FEATURES: Le32 = DRIVER_FEATURES;
/// Legacy name of [`DRIVER_FEATURES_SEL`].
pub const GUEST_FEATURES_SEL: Le32 = DRIVER_FEATURES_SEL;
/// `GuestPageSize` (W, legacy only): the unit of [`QUEUE_PFN`].
pub const GUEST_PAGE_SIZE: Le32 = Le32::at(0x028);
/// `QueueSel` (W): the queue the `Queue*` registers refer to.
pub const QUEUE_SEL: Le32 = Le32::at(0x030);
/// `QueueNumMax` (R): largest size of the selected queue, 0 if it does not exist.
pub const QUEUE_NUM_MAX: Le32 = Le32::at(0x034);
/// `QueueNum` (W): size of the selected queue.
pub const QUEUE_NUM: Le32 = Le32::at(0x038);
/// `QueueAlign` (W, legacy only): alignment of the used ring.
pub const QUEUE_ALIGN: Le32 = Le32::at(0x03c);
/// `QueuePFN` (RW, legacy only): descriptor table address / `GuestPageSize`; 0 means
/// the queue is not in use.
pub const QUEUE_PFN: Le32 = Le32::at(0x040);
/// `QueueReady` (RW, modern only).
pub const QUEUE_READY: Le32 = Le32::at(0x044);
/// `QueueNotify` (W): index of a queue with new buffers.
pub const QUEUE_NOTIFY: Le32 = Le32::at(0x050);
/// `InterruptStatus` (R): `INTERRUPT_*` bits.
pub const INTERRUPT_STATUS: Le32 = Le32::at(0x060);
/// `InterruptACK` (W): bits of [`INTERRUPT_STATUS`] the driver handled.
pub const INTERRUPT_ACK: Le32 = Le32::at(0x064);
/// `Status` (RW): the device status bits (`virtio::status`); writing 0 resets.
pub const STATUS: Le32 = Le32::at(0x070);
/// `QueueDescLow` (W, modern only).
pub const QUEUE_DESC_LOW: Le32 = Le32::at(0x080);
/// `QueueDescHigh` (W, modern only).
pub const QUEUE_DESC_HIGH: Le32 = Le32::at(0x084);
/// `QueueDriverLow` (W, modern only): the available ring.
pub const QUEUE_DRIVER_LOW: Le32 = Le32::at(0x090);
/// `QueueDriverHigh` (W, modern only).
pub const QUEUE_DRIVER_HIGH: Le32 = Le32::at(0x094);
/// `QueueDeviceLow` (W, modern only): the used ring.
pub const QUEUE_DEVICE_LOW: Le32 = Le32::at(0x0a0);
/// `QueueDeviceHigh` (W, modern only).
pub const QUEUE_DEVICE_HIGH: Le32 = Le32::at(0x0a4);
/// `SHMSel` (W): the shared memory region `SHMLen`/`SHMBase` describe.
pub const SHM_SEL: Le32 = Le32::at(0x0ac);
/// `SHMLenLow` (R); all ones with [`SHM_LEN_HIGH`] if the region does not exist.
pub const SHM_LEN_LOW: Le32 = Le32::at(0x0b0);
/// `SHMLenHigh` (R).
pub const SHM_LEN_HIGH: Le32 = Le32::at(0x0b4);
/// `SHMBaseLow` (R).
pub const SHM_BASE_LOW: Le32 = Le32::at(0x0b8);
/// `SHMBaseHigh` (R).
pub const SHM_BASE_HIGH: Le32 = Le32::at(0x0bc);
/// `QueueReset` (RW, modern, only with `VIRTIO_F_RING_RESET`, which ivlink does not
/// offer: it stays 0).
pub const QUEUE_RESET: Le32 = Le32::at(0x0c0);
/// `ConfigGeneration` (R): changes whenever the configuration space changes.
pub const CONFIG_GENERATION: Le32 = Le32::at(0x0fc);

/// A virtio-mmio register block at a region offset.
///
/// A plain handle (like a [`Le32`]): it holds the block's base, and every access goes
/// through the [`Region`], bounds- and alignment-checked there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioBlock {
    base: usize,
}

impl MmioBlock {
    /// The block at region offset `base` (4-byte aligned).
    pub const fn new(base: usize) -> Result<Self, MmioError> {
        if base % 4 != 0 {
            return Err(MmioError::Config("register block is not 4-byte aligned"));
        }
        Ok(MmioBlock { base })
    }

    /// Region offset of the block.
    pub const fn base(self) -> usize {
        self.base
    }

    /// Region offset of the byte just past the block (with a full configuration
    /// space).
    pub const fn end(self) -> usize {
        self.base.saturating_add(BLOCK_SIZE)
    }

    /// Whether the block lies inside a region of `region_len` bytes.
    pub fn check(self, region_len: usize) -> Result<(), MmioError> {
        crate::region::check_bounds(self.base, BLOCK_SIZE, region_len)?;
        Ok(())
    }

    /// Whether region offset `offset..offset + len` overlaps the block.
    pub const fn overlaps(self, offset: usize, len: usize) -> bool {
        offset < self.end() && self.base < offset.saturating_add(len)
    }

    /// Register `reg` (one of this module's constants) of this block.
    pub const fn reg(self, reg: Le32) -> Le32 {
        reg.of(self.base)
    }

    /// Region offset of byte `offset` of the configuration space.
    pub const fn config(self, offset: usize) -> usize {
        self.base
            .saturating_add(CONFIG_OFFSET)
            .saturating_add(offset)
    }

    /// Loads register `reg` (acquire: what the writer stored before it is visible).
    pub fn load<R: Region + ?Sized>(self, region: &R, reg: Le32) -> Result<u32, RegionError> {
        self.reg(reg).load(region, Ordering::Acquire)
    }

    /// Stores register `reg` (release: what this side stored before is visible to a
    /// reader that sees the value).
    pub fn store<R: Region + ?Sized>(
        self,
        region: &R,
        reg: Le32,
        value: u32,
    ) -> Result<(), RegionError> {
        self.reg(reg).store(region, value, Ordering::Release)
    }

    /// Loads a 64-bit value kept as a `Low`/`High` register pair.
    pub fn load_pair<R: Region + ?Sized>(
        self,
        region: &R,
        low: Le32,
        high: Le32,
    ) -> Result<u64, RegionError> {
        let lo = self.load(region, low)?;
        let hi = self.load(region, high)?;
        Ok(u64::from(hi) << 32 | u64::from(lo))
    }

    /// Stores a 64-bit value as a `Low`/`High` register pair.
    pub fn store_pair<R: Region + ?Sized>(
        self,
        region: &R,
        low: Le32,
        high: Le32,
        value: u64,
    ) -> Result<(), RegionError> {
        self.store(region, low, value as u32)?;
        self.store(region, high, (value >> 32) as u32)
    }

    /// `MagicValue`.
    pub fn magic<R: Region + ?Sized>(self, region: &R) -> Result<u32, RegionError> {
        self.load(region, MAGIC_VALUE)
    }

    /// `Version`.
    pub fn version<R: Region + ?Sized>(self, region: &R) -> Result<u32, RegionError> {
        self.load(region, VERSION)
    }

    /// `DeviceID`.
    pub fn device_id<R: Region + ?Sized>(self, region: &R) -> Result<u32, RegionError> {
        self.load(region, DEVICE_ID)
    }

    /// `VendorID`.
    pub fn vendor_id<R: Region + ?Sized>(self, region: &R) -> Result<u32, RegionError> {
        self.load(region, VENDOR_ID)
    }

    /// `Status` as stored (the driver's bits and the device's `NEEDS_RESET`).
    pub fn status<R: Region + ?Sized>(self, region: &R) -> Result<u32, RegionError> {
        self.load(region, STATUS)
    }

    /// `InterruptStatus`.
    pub fn interrupt_status<R: Region + ?Sized>(self, region: &R) -> Result<u32, RegionError> {
        self.load(region, INTERRUPT_STATUS)
    }

    /// `ConfigGeneration`.
    pub fn config_generation<R: Region + ?Sized>(self, region: &R) -> Result<u32, RegionError> {
        self.load(region, CONFIG_GENERATION)
    }
}
