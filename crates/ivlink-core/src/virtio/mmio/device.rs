//! The device side: publishes the register block, answers the driver's requests and
//! reports what the driver did.

use core::sync::atomic::Ordering;

use super::registers::*;
use super::{Handshake, MAX_QUEUES, MmioBlock, MmioError, QueueConfig, valid_queue_size};
use crate::region::{Le32, Region};

mod requests;
use crate::virtio::features::{VERSION_1, bit};
use crate::virtio::status::NEEDS_RESET;

/// A shared memory region the device describes in `SHMBase`/`SHMLen` (`SHMSel` 0).
/// OpenAMP's hypervisor-less driver takes non-zero values as "no hypervisor here".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shm {
    /// `SHMBase`.
    pub base: u64,
    /// `SHMLen`.
    pub len: u64,
}

/// What a device is: its identity, what it offers and its queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig<'a> {
    /// `DeviceID` (`virtio::id`).
    pub device_id: u32,
    /// `VendorID`.
    pub vendor_id: u32,
    /// `Version`: 1 (legacy) or 2 (modern).
    pub version: u32,
    /// Feature bits offered. Modern devices must offer `VIRTIO_F_VERSION_1`; legacy
    /// ones have 32 feature bits.
    pub features: u64,
    /// `QueueNumMax` of each queue, by index (0: the queue does not exist).
    pub queue_num_max: &'a [u16],
    /// Shared memory region 0, if any.
    pub shm: Option<Shm>,
    /// Bytes of configuration space (at most 256).
    pub config_size: usize,
}

/// What the driver did, as the device saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The driver reset the device: forget every queue.
    Reset,
    /// The driver wrote a new status (the value, without the device's `NEEDS_RESET`).
    Status(u8),
    /// The driver's features are accepted: the negotiated set.
    FeaturesAccepted(u64),
    /// The driver asked for features the device does not offer; `FEATURES_OK` was
    /// cleared in its answer.
    FeaturesRefused {
        /// What the driver asked for.
        requested: u64,
    },
    /// The driver configured a queue.
    QueueReady(QueueConfig),
    /// The driver is ready: the queues may carry data.
    DriverOk,
    /// The driver broke the protocol; the device set `NEEDS_RESET` and ignores it
    /// until it resets.
    Failed(MmioError),
}

/// What one [`MmioDevice::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct DevicePoll {
    /// What happened, if anything (one event per poll: poll again while `Some`).
    pub event: Option<DeviceEvent>,
    /// Ring the driver now: it waits for an answer.
    pub ring: bool,
}

/// Events one request can produce (a reset, a status, features, a queue, `DRIVER_OK`
/// and a failure), with room to spare.
const EVENT_SLOTS: usize = 8;

/// A virtio-mmio device over a register block in the region.
#[derive(Debug, Clone)]
pub struct MmioDevice {
    block: MmioBlock,
    handshake: Handshake,
    device_id: u32,
    vendor_id: u32,
    version: u32,
    offered: u64,
    num_max: [u16; MAX_QUEUES],
    shm: Option<Shm>,
    config_size: usize,
    /// The last request acknowledged (sequenced handshake).
    acked: u32,
    /// The driver's status bits as last processed.
    driver_status: u8,
    needs_reset: bool,
    driver_features: [u32; 2],
    features_ok: bool,
    driver_ok: bool,
    queues: [Option<QueueConfig>; MAX_QUEUES],
    /// Selections whose answers are in the block.
    queue_sel: u32,
    features_sel: u32,
    shm_sel: u32,
    /// The `QueuePFN` last acknowledged with `0xAABBAABB` (hypervisor-less).
    hvl_acked_pfn: Option<u32>,
    published: bool,
    events: [Option<DeviceEvent>; EVENT_SLOTS],
    event_head: usize,
    event_len: usize,
    ring: bool,
}

impl MmioDevice {
    /// A device with `config` over `block`, acknowledging requests by `handshake`.
    /// Nothing is written until [`publish`](Self::publish).
    pub fn new(
        block: MmioBlock,
        handshake: Handshake,
        config: &DeviceConfig<'_>,
    ) -> Result<Self, MmioError> {
        handshake.check(block)?;
        match config.version {
            VERSION_LEGACY => {
                if config.features >> 32 != 0 {
                    return Err(MmioError::Config("a legacy device has 32 feature bits"));
                }
            }
            VERSION_MODERN => {
                if config.features & bit(VERSION_1) == 0 {
                    return Err(MmioError::Config(
                        "a modern device must offer VIRTIO_F_VERSION_1",
                    ));
                }
                if handshake == Handshake::OpenampHvl {
                    return Err(MmioError::Config(
                        "the hypervisor-less handshake is legacy (version 1) only",
                    ));
                }
            }
            _ => return Err(MmioError::Config("version must be 1 or 2")),
        }
        if handshake == Handshake::OpenampHvl
            && config.shm.is_none_or(|s| s.base == 0 || s.len == 0)
        {
            return Err(MmioError::Config(
                "a hypervisor-less device must publish a non-zero SHMBase and SHMLen",
            ));
        }
        if config.queue_num_max.len() > MAX_QUEUES {
            return Err(MmioError::Config("too many queues"));
        }
        let mut num_max = [0u16; MAX_QUEUES];
        for (slot, &max) in num_max.iter_mut().zip(config.queue_num_max) {
            if max != 0 && !valid_queue_size(max.into()) {
                return Err(MmioError::Config(
                    "QueueNumMax must be 0 or a power of two up to 1024",
                ));
            }
            *slot = max;
        }
        if config.config_size > CONFIG_SPACE_MAX {
            return Err(MmioError::Config(
                "configuration space is at most 256 bytes",
            ));
        }
        Ok(MmioDevice {
            block,
            handshake,
            device_id: config.device_id,
            vendor_id: config.vendor_id,
            version: config.version,
            offered: config.features,
            num_max,
            shm: config.shm,
            config_size: config.config_size,
            acked: 0,
            driver_status: 0,
            needs_reset: false,
            driver_features: [0; 2],
            features_ok: false,
            driver_ok: false,
            queues: [None; MAX_QUEUES],
            queue_sel: 0,
            features_sel: 0,
            shm_sel: 0,
            hvl_acked_pfn: None,
            published: false,
            events: [None; EVENT_SLOTS],
            event_head: 0,
            event_len: 0,
            ring: false,
        })
    }

    /// The register block.
    pub fn block(&self) -> MmioBlock {
        self.block
    }

    /// The handshake style.
    pub fn handshake(&self) -> Handshake {
        self.handshake
    }

    /// The negotiated features, once accepted.
    pub fn features(&self) -> Option<u64> {
        self.features_ok.then(|| self.requested_features())
    }

    /// Queue `index` as the driver configured it.
    pub fn queue(&self, index: usize) -> Option<QueueConfig> {
        self.queues.get(index).copied().flatten()
    }

    /// Whether the driver set `DRIVER_OK` (and has not reset since).
    pub fn is_driver_ok(&self) -> bool {
        self.driver_ok && !self.needs_reset
    }

    /// Whether the device waits for the driver to reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset
    }

    /// Fills the block so that a driver can start: identity, features, queue sizes,
    /// shared memory, the configuration space (`config`, zero-padded) and finally the
    /// magic value. Returns whether to ring the driver.
    ///
    /// Sequenced: the driver's registers are left alone; if a driver was already
    /// there (non-zero `Status`), it is told to reset (`NEEDS_RESET` and a
    /// configuration-change interrupt) and an outstanding request is acknowledged.
    /// Hypervisor-less: the whole block is zeroed first, as the seed's device does
    /// (its drivers need the device to start first).
    pub fn publish<R: Region + ?Sized>(
        &mut self,
        region: &R,
        config: &[u8],
    ) -> Result<bool, MmioError> {
        self.block.check(region.len())?;
        if config.len() > self.config_size {
            return Err(MmioError::ConfigRange {
                offset: 0,
                len: config.len(),
            });
        }
        let b = self.block;
        b.store(region, MAGIC_VALUE, 0)?;
        self.clear_state();
        self.event_len = 0;
        self.ring = false;
        let mut ring = false;
        match self.handshake {
            Handshake::OpenampHvl => region.fill(b.base(), CONFIG_OFFSET, 0)?,
            Handshake::Sequenced { request, ack } => {
                let req = Le32::at(request).load(region, Ordering::Acquire)?;
                if Le32::at(ack).load(region, Ordering::Acquire)? != req {
                    ring = true;
                }
                self.acked = req;
                if b.status(region)? & !u32::from(NEEDS_RESET) != 0 {
                    self.set_needs_reset(region)?;
                    ring = true;
                } else {
                    b.store(region, STATUS, 0)?;
                }
                let modern = self.version == VERSION_MODERN;
                b.store(region, if modern { QUEUE_READY } else { QUEUE_PFN }, 0)?;
                Le32::at(ack).store(region, req, Ordering::Release)?;
            }
        }
        b.store(region, VERSION, self.version)?;
        b.store(region, DEVICE_ID, self.device_id)?;
        b.store(region, VENDOR_ID, self.vendor_id)?;
        self.features_sel = b.load(region, DEVICE_FEATURES_SEL)?;
        self.answer_features(region)?;
        self.shm_sel = b.load(region, SHM_SEL)?;
        self.answer_shm(region)?;
        self.queue_sel = self.selected_queue(region)?;
        self.answer_queue_num_max(region)?;
        // A driver still running from before may be reading the configuration
        // (sequenced); the seed's block has generation 0 (hypervisor-less, zeroed).
        let generation = b.config_generation(region)?;
        let sequenced = !self.hvl();
        if sequenced {
            b.store(region, CONFIG_GENERATION, generation | 1)?;
            region.fence(Ordering::Release);
        }
        region.fill(b.config(0), CONFIG_SPACE_MAX, 0)?;
        region.write(b.config(0), config)?;
        if sequenced {
            b.store(region, CONFIG_GENERATION, (generation | 1).wrapping_add(1))?;
        }
        b.store(region, MAGIC_VALUE, MAGIC)?;
        self.published = true;
        Ok(ring)
    }

    /// Processes what the driver did since the last poll: one pending request
    /// (sequenced) or the block's changes (hypervisor-less), and `InterruptACK`.
    ///
    /// A driver that breaks the protocol is reported as [`DeviceEvent::Failed`]; an
    /// `Err` is a region access that failed (the block does not fit the region) or
    /// a poll before [`publish`](Self::publish).
    pub fn poll<R: Region + ?Sized>(&mut self, region: &R) -> Result<DevicePoll, MmioError> {
        if !self.published {
            return Err(MmioError::Config("poll before publish"));
        }
        if self.event_len == 0 {
            self.take_interrupt_ack(region)?;
            match self.handshake {
                Handshake::Sequenced { request, ack } => {
                    let req = Le32::at(request).load(region, Ordering::Acquire)?;
                    if req != self.acked {
                        self.process(region)?;
                        self.acked = req;
                        Le32::at(ack).store(region, req, Ordering::Release)?;
                        self.ring = true;
                    }
                }
                Handshake::OpenampHvl => self.process(region)?,
            }
        }
        let event = self.pop_event();
        Ok(DevicePoll {
            event,
            ring: core::mem::take(&mut self.ring),
        })
    }

    /// ORs `bits` (`INTERRUPT_*`) into `InterruptStatus`; returns whether to ring the
    /// driver.
    ///
    /// Sequenced: only if a bit was not already set (the driver clears the bits
    /// before it looks at the queues, so a set bit means it has yet to look).
    /// Hypervisor-less: always (OpenAMP's driver acknowledges after it looked).
    pub fn raise_interrupt<R: Region + ?Sized>(
        &self,
        region: &R,
        bits: u32,
    ) -> Result<bool, MmioError> {
        let previous = self
            .block
            .reg(INTERRUPT_STATUS)
            .fetch_or(region, bits, Ordering::AcqRel)?;
        Ok(self.handshake == Handshake::OpenampHvl || previous & bits != bits)
    }

    /// Sets `DEVICE_NEEDS_RESET` and raises a configuration-change interrupt: the
    /// device hit an error it cannot recover from without the driver resetting it.
    /// Returns whether to ring the driver.
    pub fn set_needs_reset<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, MmioError> {
        self.needs_reset = true;
        self.block
            .reg(STATUS)
            .fetch_or(region, NEEDS_RESET.into(), Ordering::AcqRel)?;
        self.raise_interrupt(region, INTERRUPT_CONFIG_CHANGE)?;
        Ok(true)
    }

    /// Writes `data` at `offset` of the configuration space under a new
    /// `ConfigGeneration` (odd while writing) and, once the driver is ready, raises a
    /// configuration-change interrupt. Returns whether to ring the driver.
    pub fn write_config<R: Region + ?Sized>(
        &self,
        region: &R,
        offset: usize,
        data: &[u8],
    ) -> Result<bool, MmioError> {
        self.check_config_range(offset, data.len())?;
        let b = self.block;
        let generation = b.config_generation(region)?;
        b.store(region, CONFIG_GENERATION, generation | 1)?;
        region.fence(Ordering::Release);
        region.write(b.config(offset), data)?;
        b.store(region, CONFIG_GENERATION, (generation | 1).wrapping_add(1))?;
        if self.is_driver_ok() {
            self.raise_interrupt(region, INTERRUPT_CONFIG_CHANGE)
        } else {
            Ok(false)
        }
    }

    /// Reads `buf.len()` bytes at `offset` of the configuration space (fields the
    /// driver writes, such as the console's `emerg_wr`).
    pub fn read_config<R: Region + ?Sized>(
        &self,
        region: &R,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), MmioError> {
        self.check_config_range(offset, buf.len())?;
        region.read(self.block.config(offset), buf)?;
        Ok(())
    }

    fn check_config_range(&self, offset: usize, len: usize) -> Result<(), MmioError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.config_size => Ok(()),
            _ => Err(MmioError::ConfigRange { offset, len }),
        }
    }

    fn clear_state(&mut self) {
        self.driver_status = 0;
        self.needs_reset = false;
        self.driver_features = [0; 2];
        self.features_ok = false;
        self.driver_ok = false;
        self.queues = [None; MAX_QUEUES];
        self.hvl_acked_pfn = None;
    }

    fn push_event(&mut self, event: DeviceEvent) {
        // One request produces at most six events and the queue is drained before
        // the next is processed, so it never overflows; if it did, dropping the
        // newest is still no panic.
        if self.event_len < EVENT_SLOTS {
            self.events[(self.event_head + self.event_len) % EVENT_SLOTS] = Some(event);
            self.event_len += 1;
        }
    }

    fn pop_event(&mut self) -> Option<DeviceEvent> {
        if self.event_len == 0 {
            return None;
        }
        let event = self.events[self.event_head].take();
        self.event_head = (self.event_head + 1) % EVENT_SLOTS;
        self.event_len -= 1;
        event
    }
}
