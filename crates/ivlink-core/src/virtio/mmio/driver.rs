//! The driver side: the virtio init sequence as a resumable state machine, then
//! configuration reads, interrupts and notifications.

use core::sync::atomic::Ordering;

use super::registers::*;
use super::{
    CONFIG_READ_RETRIES, Handshake, MAX_QUEUES, MmioBlock, MmioError, QueueConfig, valid_queue_size,
};
use crate::region::{Le32, Region};
use crate::virtio::features::{VERSION_1, bit};
use crate::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET};
use crate::virtio::virtq::VringLayout;

/// One queue the driver sets up: its size and where its parts are, as addresses
/// the device is given (translation from region offsets is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSetup {
    /// Entries (a power of two up to 1024).
    pub num: u16,
    /// Address of the descriptor table.
    pub desc: u64,
    /// Address of the available ring.
    pub driver: u64,
    /// Address of the used ring.
    pub device: u64,
}

impl QueueSetup {
    /// A contiguous (legacy-layout) vring of `layout` at address `desc`.
    pub const fn contiguous(desc: u64, layout: VringLayout) -> Self {
        QueueSetup {
            num: layout.num(),
            desc,
            driver: desc.saturating_add(layout.avail_offset() as u64),
            device: desc.saturating_add(layout.used_offset() as u64),
        }
    }
}

/// What the driver drives and wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig<'a> {
    /// The `DeviceID` expected (`virtio::id`).
    pub device_id: u32,
    /// The `Version` expected, or `None` for either.
    pub version: Option<u32>,
    /// Features wanted; the driver accepts those the device also offers (and
    /// `VIRTIO_F_VERSION_1` from a modern device).
    pub features: u64,
    /// Queues 0, 1, ... to set up.
    pub queues: &'a [QueueSetup],
    /// `QueueAlign` of legacy queues (OpenAMP: 4096); legacy queues must be laid out
    /// contiguously with it, starting on a 4 KiB page.
    pub legacy_align: u32,
}

/// What the caller does after [`MmioDriver::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Ring the device now, then call `step` again (when it rings back, or after
    /// a short wait).
    Ring,
    /// Waiting for the device (its answer, or its block): call `step` again when it
    /// rings or after a short wait, up to the caller's bound.
    Wait,
    /// The device is live: the queues may carry data.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Reset,
    Acknowledge,
    Driver,
    ReadFeatures(u32),
    WriteFeatures(u32),
    FeaturesOk,
    SelectQueue(usize),
    ConfigureQueue(usize),
    DriverOk,
    Done,
    Failed(MmioError),
}

/// A virtio-mmio driver over a register block in the region.
#[derive(Debug, Clone)]
pub struct MmioDriver {
    block: MmioBlock,
    handshake: Handshake,
    device_id: u32,
    version_wanted: Option<u32>,
    wanted: u64,
    setups: [QueueSetup; MAX_QUEUES],
    queue_count: usize,
    legacy_align: u32,
    state: State,
    /// The request a step is waiting on the answer to.
    pending: Option<State>,
    version: u32,
    offered: u64,
    negotiated: u64,
    status: u8,
    /// Sequenced: the latest request, and the oldest the ack word may still name.
    request: u32,
    ack_floor: u32,
}

const NO_QUEUE: QueueSetup = QueueSetup {
    num: 0,
    desc: 0,
    driver: 0,
    device: 0,
};

impl MmioDriver {
    /// A driver for `config` over `block`, acknowledged by `handshake`. Nothing is
    /// read or written until the first [`step`](Self::step).
    pub fn new(
        block: MmioBlock,
        handshake: Handshake,
        config: &DriverConfig<'_>,
    ) -> Result<Self, MmioError> {
        handshake.check(block)?;
        if config.queues.len() > MAX_QUEUES {
            return Err(MmioError::Config("too many queues"));
        }
        if handshake == Handshake::OpenampHvl && config.version == Some(VERSION_MODERN) {
            return Err(MmioError::Config(
                "the hypervisor-less handshake is legacy (version 1) only",
            ));
        }
        let mut setups = [NO_QUEUE; MAX_QUEUES];
        for (slot, setup) in setups.iter_mut().zip(config.queues) {
            if !valid_queue_size(setup.num.into()) {
                return Err(MmioError::Config(
                    "queue size must be a power of two up to 1024",
                ));
            }
            if setup.desc % 16 != 0 || setup.driver % 2 != 0 || setup.device % 4 != 0 {
                return Err(MmioError::Config("queue parts are misaligned"));
            }
            *slot = *setup;
        }
        Ok(MmioDriver {
            block,
            handshake,
            device_id: config.device_id,
            version_wanted: config.version,
            wanted: config.features,
            setups,
            queue_count: config.queues.len(),
            legacy_align: config.legacy_align,
            state: State::Start,
            pending: None,
            version: 0,
            offered: 0,
            negotiated: 0,
            status: 0,
            request: 0,
            ack_floor: 0,
        })
    }

    /// The register block.
    pub fn block(&self) -> MmioBlock {
        self.block
    }

    /// Whether the init sequence finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The device's `Version`, once read.
    pub fn version(&self) -> Option<u32> {
        (self.version != 0).then_some(self.version)
    }

    /// The negotiated features, once the device took them.
    pub fn features(&self) -> Option<u64> {
        matches!(
            self.state,
            State::SelectQueue(_) | State::ConfigureQueue(_) | State::DriverOk | State::Done
        )
        .then_some(self.negotiated)
    }

    /// Queue `index` as configured, once the init sequence finished.
    pub fn queue(&self, index: usize) -> Option<QueueConfig> {
        if !self.is_done() || index >= self.queue_count {
            return None;
        }
        let s = self.setups[index];
        Some(QueueConfig {
            index: index as u16,
            num: s.num,
            desc: s.desc,
            driver: s.driver,
            device: s.device,
            align: (self.version == VERSION_LEGACY).then_some(self.legacy_align),
        })
    }

    /// Starts the init sequence over (after an error or the device's
    /// `NEEDS_RESET`): the next [`step`](Self::step) resets the device.
    pub fn reset(&mut self) {
        self.state = State::Start;
        self.pending = None;
    }

    /// Runs the init sequence as far as it can without waiting for the device.
    ///
    /// Every value read is checked; an error stops the sequence (each later `step`
    /// returns it again) until [`reset`](Self::reset).
    pub fn step<R: Region + ?Sized>(&mut self, region: &R) -> Result<Step, MmioError> {
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        let result = self.run(region);
        if let Err(e) = result {
            self.state = State::Failed(e);
            self.pending = None;
        }
        result
    }

    fn run<R: Region + ?Sized>(&mut self, region: &R) -> Result<Step, MmioError> {
        // Each pass finishes a step or issues one; there are at most a few per queue.
        loop {
            if let Some(op) = self.pending {
                if !self.answered(region)? {
                    return Ok(Step::Wait);
                }
                self.pending = None;
                self.state = self.finish(region, op)?;
                continue;
            }
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Failed(e) => return Err(e),
                State::Start => match self.start(region)? {
                    Some(next) => self.state = next,
                    None => return Ok(Step::Wait),
                },
                op => {
                    let rings = self.issue(region, op)?;
                    match self.handshake {
                        Handshake::Sequenced { request, .. } => {
                            self.request = self.request.wrapping_add(1);
                            Le32::at(request).store(region, self.request, Ordering::Release)?;
                            self.pending = Some(op);
                            return Ok(Step::Ring);
                        }
                        Handshake::OpenampHvl => {
                            if matches!(op, State::ConfigureQueue(_)) {
                                self.pending = Some(op);
                            } else {
                                self.state = self.finish(region, op)?;
                            }
                            if rings {
                                return Ok(Step::Ring);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads the block's identity; `None` while the device has not published it.
    fn start<R: Region + ?Sized>(&mut self, region: &R) -> Result<Option<State>, MmioError> {
        let b = self.block;
        b.check(region.len())?;
        match b.magic(region)? {
            0 => return Ok(None),
            MAGIC => {}
            other => return Err(MmioError::BadMagic(other)),
        }
        let version = b.version(region)?;
        let speaks = match self.handshake {
            Handshake::OpenampHvl => version == VERSION_LEGACY,
            Handshake::Sequenced { .. } => version == VERSION_LEGACY || version == VERSION_MODERN,
        };
        if !speaks || self.version_wanted.is_some_and(|v| v != version) {
            return Err(MmioError::BadVersion(version));
        }
        let found = b.device_id(region)?;
        if found != self.device_id {
            return Err(MmioError::WrongDevice {
                expected: self.device_id,
                found,
            });
        }
        if version == VERSION_LEGACY {
            self.check_legacy_layout()?;
        }
        match self.handshake {
            Handshake::OpenampHvl => {
                let len = b.load_pair(region, SHM_LEN_LOW, SHM_LEN_HIGH)?;
                let base = b.load_pair(region, SHM_BASE_LOW, SHM_BASE_HIGH)?;
                if len == 0 || base == 0 || len == SHM_ABSENT {
                    return Err(MmioError::NoSharedMemory);
                }
            }
            Handshake::Sequenced { request, ack } => {
                let request = Le32::at(request).load(region, Ordering::Acquire)?;
                let acked = Le32::at(ack).load(region, Ordering::Acquire)?;
                // Acknowledged, or one request of an earlier driver still outstanding.
                if request.wrapping_sub(acked) > 1 {
                    return Err(MmioError::BadAck {
                        request,
                        ack: acked,
                    });
                }
                self.request = request;
                self.ack_floor = acked;
            }
        }
        self.version = version;
        Ok(Some(State::Reset))
    }

    fn check_legacy_layout(&self) -> Result<(), MmioError> {
        let layout_error = MmioError::Config(
            "a legacy queue must be one contiguous vring starting on a 4 KiB page",
        );
        for s in &self.setups[..self.queue_count] {
            let layout = VringLayout::new(s.num, self.legacy_align as usize)
                .map_err(|_| MmioError::Config("invalid legacy QueueAlign"))?;
            let pfn = s.desc / u64::from(LEGACY_PAGE_SIZE);
            if s.desc % u64::from(LEGACY_PAGE_SIZE) != 0
                || pfn == 0
                || u32::try_from(pfn).is_err()
                || QueueSetup::contiguous(s.desc, layout) != *s
            {
                return Err(layout_error);
            }
        }
        Ok(())
    }

    fn modern(&self) -> bool {
        self.version == VERSION_MODERN
    }

    fn pfn(&self, index: usize) -> u32 {
        (self.setups[index].desc / u64::from(LEGACY_PAGE_SIZE)) as u32
    }

    fn set_status<R: Region + ?Sized>(&mut self, region: &R, status: u8) -> Result<(), MmioError> {
        self.status = status;
        self.block.store(region, STATUS, status.into())?;
        Ok(())
    }

    /// Writes the registers of step `op`; returns whether OpenAMP's driver rings
    /// after them.
    fn issue<R: Region + ?Sized>(&mut self, region: &R, op: State) -> Result<bool, MmioError> {
        let b = self.block;
        let hvl = self.handshake == Handshake::OpenampHvl;
        match op {
            State::Reset => self.set_status(region, 0)?,
            State::Acknowledge => self.set_status(region, ACKNOWLEDGE)?,
            State::Driver => self.set_status(region, self.status | DRIVER)?,
            State::FeaturesOk => self.set_status(region, self.status | FEATURES_OK)?,
            State::DriverOk => self.set_status(region, self.status | DRIVER_OK)?,
            State::ReadFeatures(word) => {
                b.store(region, DEVICE_FEATURES_SEL, word)?;
                // Hypervisor-less devices publish word 0 before anything else.
                if hvl {
                    return Ok(false);
                }
            }
            State::WriteFeatures(word) => {
                b.store(region, DRIVER_FEATURES_SEL, word)?;
                let value = (self.negotiated >> (32 * word)) as u32;
                b.store(region, DRIVER_FEATURES, value)?;
            }
            State::SelectQueue(index) => {
                if !self.modern() {
                    b.store(region, GUEST_PAGE_SIZE, LEGACY_PAGE_SIZE)?;
                }
                b.store(region, QUEUE_SEL, index as u32)?;
                if hvl {
                    // Devices of the 2022 OpenAMP era read the queue index here.
                    b.store(region, DRIVER_FEATURES_SEL, index as u32)?;
                    return Ok(false);
                }
            }
            State::ConfigureQueue(index) => {
                let s = self.setups[index];
                b.store(region, QUEUE_NUM, s.num.into())?;
                if self.modern() {
                    b.store_pair(region, QUEUE_DESC_LOW, QUEUE_DESC_HIGH, s.desc)?;
                    b.store_pair(region, QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, s.driver)?;
                    b.store_pair(region, QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, s.device)?;
                    b.store(region, QUEUE_READY, 1)?;
                } else {
                    b.store(region, QUEUE_ALIGN, self.legacy_align)?;
                    b.store(region, QUEUE_PFN, self.pfn(index))?;
                }
            }
            State::Start | State::Done | State::Failed(_) => return Ok(false),
        }
        Ok(true)
    }

    /// Whether the device answered request `op`.
    fn answered<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, MmioError> {
        match self.handshake {
            Handshake::Sequenced { ack, .. } => {
                let acked = Le32::at(ack).load(region, Ordering::Acquire)?;
                let behind = self.request.wrapping_sub(acked);
                if behind == 0 {
                    self.ack_floor = self.request;
                    return Ok(true);
                }
                if behind > self.request.wrapping_sub(self.ack_floor) {
                    return Err(MmioError::BadAck {
                        request: self.request,
                        ack: acked,
                    });
                }
                Ok(false)
            }
            Handshake::OpenampHvl => {
                // The only request it waits on: the `QueuePFN` ack.
                if self.block.load(region, QUEUE_PFN)? == HVL_PFN_ACK {
                    return Ok(true);
                }
                if self.block.status(region)? & u32::from(NEEDS_RESET) != 0 {
                    return Err(MmioError::NeedsReset);
                }
                Ok(false)
            }
        }
    }

    /// Checks the device's answer to `op` and picks the next step.
    fn finish<R: Region + ?Sized>(&mut self, region: &R, op: State) -> Result<State, MmioError> {
        let b = self.block;
        let sequenced = self.handshake != Handshake::OpenampHvl;
        if sequenced {
            self.check_status(region, op)?;
        }
        let first_queue = if self.queue_count == 0 {
            State::DriverOk
        } else {
            State::SelectQueue(0)
        };
        let next = match op {
            State::Reset => State::Acknowledge,
            State::Acknowledge => State::Driver,
            State::Driver => State::ReadFeatures(0),
            State::ReadFeatures(word) => {
                let value = b.load(region, DEVICE_FEATURES)?;
                self.offered = match word {
                    0 => u64::from(value),
                    _ => self.offered | u64::from(value) << 32,
                };
                if self.modern() && word == 0 {
                    State::ReadFeatures(1)
                } else {
                    if self.modern() && self.offered & bit(VERSION_1) == 0 {
                        return Err(MmioError::MissingVersion1);
                    }
                    self.negotiated = if self.modern() {
                        self.wanted & self.offered | bit(VERSION_1)
                    } else {
                        self.wanted & self.offered & u64::from(u32::MAX)
                    };
                    State::WriteFeatures(0)
                }
            }
            State::WriteFeatures(0) if self.modern() => State::WriteFeatures(1),
            State::WriteFeatures(_) if self.modern() => State::FeaturesOk,
            State::WriteFeatures(_) | State::FeaturesOk => first_queue,
            State::SelectQueue(index) => {
                self.check_selected(region, index)?;
                State::ConfigureQueue(index)
            }
            State::ConfigureQueue(index) => {
                if sequenced {
                    let live = if self.modern() {
                        b.load(region, QUEUE_READY)? == 1
                    } else {
                        b.load(region, QUEUE_PFN)? == self.pfn(index)
                    };
                    if !live {
                        return Err(MmioError::QueueRefused(index as u16));
                    }
                } else {
                    // OpenAMP rewrites the PFN over the ack, without a doorbell.
                    b.store(region, QUEUE_PFN, self.pfn(index))?;
                }
                if index + 1 < self.queue_count {
                    State::SelectQueue(index + 1)
                } else {
                    State::DriverOk
                }
            }
            State::DriverOk => State::Done,
            State::Start | State::Done | State::Failed(_) => op,
        };
        Ok(next)
    }

    /// `Status` after an acknowledged request: what the driver wrote, unless the
    /// device needs a reset or refused `FEATURES_OK`.
    fn check_status<R: Region + ?Sized>(&self, region: &R, op: State) -> Result<(), MmioError> {
        let raw = self.block.status(region)?;
        if raw & u32::from(NEEDS_RESET) != 0 {
            return Err(MmioError::NeedsReset);
        }
        if raw == u32::from(self.status) {
            return Ok(());
        }
        if op == State::FeaturesOk && raw == u32::from(self.status & !FEATURES_OK) {
            return Err(MmioError::FeaturesRefused {
                requested: self.negotiated,
                offered: self.offered,
            });
        }
        Err(MmioError::BadStatus(raw))
    }

    fn check_selected<R: Region + ?Sized>(
        &self,
        region: &R,
        index: usize,
    ) -> Result<(), MmioError> {
        let b = self.block;
        let queue = index as u16;
        let max = b.load(region, QUEUE_NUM_MAX)?;
        if max == 0 {
            return Err(MmioError::QueueAbsent(queue));
        }
        if !valid_queue_size(max) {
            return Err(MmioError::BadQueueNumMax { queue, value: max });
        }
        let wanted = self.setups[index].num;
        if max < u32::from(wanted) {
            return Err(MmioError::QueueTooSmall { queue, max, wanted });
        }
        if self.handshake != Handshake::OpenampHvl {
            let in_use = if self.modern() {
                QUEUE_READY
            } else {
                QUEUE_PFN
            };
            if b.load(region, in_use)? != 0 {
                return Err(MmioError::QueueRefused(queue));
            }
        }
        Ok(())
    }

    /// Whether the device set `DEVICE_NEEDS_RESET` (check on a configuration-change
    /// interrupt; then [`reset`](Self::reset)).
    pub fn device_needs_reset<R: Region + ?Sized>(&self, region: &R) -> Result<bool, MmioError> {
        Ok(self.block.status(region)? & u32::from(NEEDS_RESET) != 0)
    }

    /// Reads `buf.len()` bytes at `offset` of the configuration space, retrying
    /// while the device rewrites it (bounded by [`CONFIG_READ_RETRIES`]).
    pub fn read_config<R: Region + ?Sized>(
        &self,
        region: &R,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), MmioError> {
        check_config_range(offset, buf.len())?;
        let b = self.block;
        for _ in 0..CONFIG_READ_RETRIES {
            let before = b.config_generation(region)?;
            if before % 2 == 1 {
                continue;
            }
            region.read(b.config(offset), buf)?;
            region.fence(Ordering::Acquire);
            if b.config_generation(region)? == before {
                return Ok(());
            }
        }
        Err(MmioError::ConfigUnstable)
    }

    /// Writes `data` at `offset` of the configuration space (fields the driver
    /// writes, such as the console's `emerg_wr`); ring the device after it.
    pub fn write_config<R: Region + ?Sized>(
        &self,
        region: &R,
        offset: usize,
        data: &[u8],
    ) -> Result<(), MmioError> {
        check_config_range(offset, data.len())?;
        region.write(self.block.config(offset), data)?;
        region.fence(Ordering::Release);
        Ok(())
    }

    /// `InterruptStatus`: the `INTERRUPT_*` bits the device raised.
    pub fn interrupt_status<R: Region + ?Sized>(&self, region: &R) -> Result<u32, MmioError> {
        Ok(self.block.interrupt_status(region)?)
    }

    /// Clears `bits` of `InterruptStatus`; call it before looking at the queues.
    /// Returns whether to ring the device: the hypervisor-less handshake also
    /// writes `InterruptACK`, which OpenAMP's devices wait for.
    pub fn ack_interrupt<R: Region + ?Sized>(
        &self,
        region: &R,
        bits: u32,
    ) -> Result<bool, MmioError> {
        let b = self.block;
        b.reg(INTERRUPT_STATUS)
            .fetch_and(region, !bits, Ordering::AcqRel)?;
        if self.handshake == Handshake::OpenampHvl && bits != 0 {
            b.store(region, INTERRUPT_ACK, bits)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes `QueueNotify` for `queue`; ring the device after it (when the queue
    /// says the device wants to be notified).
    pub fn notify<R: Region + ?Sized>(&self, region: &R, queue: u16) -> Result<(), MmioError> {
        if usize::from(queue) >= self.queue_count {
            return Err(MmioError::BadQueueIndex(queue.into()));
        }
        self.block.store(region, QUEUE_NOTIFY, queue.into())?;
        Ok(())
    }
}

fn check_config_range(offset: usize, len: usize) -> Result<(), MmioError> {
    match offset.checked_add(len) {
        Some(end) if end <= CONFIG_SPACE_MAX => Ok(()),
        _ => Err(MmioError::ConfigRange { offset, len }),
    }
}
