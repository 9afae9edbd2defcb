//! How the device works out what a request asked for and answers it: reset, the
//! driver's feature words, the selection registers, queue configuration and the
//! status bits, in that order (see the module docs of `virtio::mmio`).

use core::sync::atomic::Ordering;

use super::{DeviceEvent, MmioDevice};
use crate::region::Region;
use crate::virtio::features::{VERSION_1, bit};
use crate::virtio::mmio::registers::*;
use crate::virtio::mmio::{Handshake, MAX_QUEUES, MmioError, QueueConfig, valid_queue_size};
use crate::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET};

impl MmioDevice {
    pub(super) fn hvl(&self) -> bool {
        self.handshake == Handshake::OpenampHvl
    }

    fn feature_words(&self) -> usize {
        if self.version == VERSION_LEGACY { 1 } else { 2 }
    }

    pub(super) fn requested_features(&self) -> u64 {
        u64::from(self.driver_features[1]) << 32 | u64::from(self.driver_features[0])
    }

    /// The queue the `Queue*` registers refer to. Hypervisor-less: `QueueSel`, or
    /// `DriverFeaturesSel` when `QueueSel` is 0 (where the 2022 OpenAMP code put it).
    pub(super) fn selected_queue<R: Region + ?Sized>(&self, region: &R) -> Result<u32, MmioError> {
        let sel = self.block.load(region, QUEUE_SEL)?;
        if sel == 0 && self.hvl() {
            return Ok(self.block.load(region, DRIVER_FEATURES_SEL)?);
        }
        Ok(sel)
    }

    fn queue_index(&self, sel: u32) -> Option<usize> {
        usize::try_from(sel)
            .ok()
            .filter(|&i| i < MAX_QUEUES && self.num_max[i] != 0)
    }

    pub(super) fn answer_features<R: Region + ?Sized>(&self, region: &R) -> Result<(), MmioError> {
        let word = match self.features_sel {
            0 => self.offered as u32,
            1 if self.version == VERSION_MODERN => (self.offered >> 32) as u32,
            _ => 0,
        };
        self.block.store(region, DEVICE_FEATURES, word)?;
        Ok(())
    }

    pub(super) fn answer_shm<R: Region + ?Sized>(&self, region: &R) -> Result<(), MmioError> {
        let (base, len) = match self.shm {
            Some(shm) if self.shm_sel == 0 => (shm.base, shm.len),
            _ => (0, SHM_ABSENT),
        };
        let b = self.block;
        b.store_pair(region, SHM_LEN_LOW, SHM_LEN_HIGH, len)?;
        b.store_pair(region, SHM_BASE_LOW, SHM_BASE_HIGH, base)?;
        Ok(())
    }

    pub(super) fn answer_queue_num_max<R: Region + ?Sized>(
        &self,
        region: &R,
    ) -> Result<(), MmioError> {
        let max = self
            .queue_index(self.queue_sel)
            .map_or(0, |i| self.num_max[i]);
        self.block.store(region, QUEUE_NUM_MAX, max.into())?;
        Ok(())
    }

    pub(super) fn take_interrupt_ack<R: Region + ?Sized>(
        &self,
        region: &R,
    ) -> Result<(), MmioError> {
        let b = self.block;
        let acked = b
            .reg(INTERRUPT_ACK)
            .fetch_and(region, 0, Ordering::AcqRel)?;
        if acked != 0 {
            b.reg(INTERRUPT_STATUS)
                .fetch_and(region, !acked, Ordering::AcqRel)?;
        }
        Ok(())
    }

    pub(super) fn process<R: Region + ?Sized>(&mut self, region: &R) -> Result<(), MmioError> {
        let raw = self.block.status(region)?;
        let status = (raw as u8) & !NEEDS_RESET;
        // OpenAMP's driver may start over without writing 0: a driver that was
        // ready and no longer is, or that writes ACKNOWLEDGE alone again, restarted.
        let restarted = self.hvl()
            && ((self.driver_ok && status & DRIVER_OK == 0)
                || (status == ACKNOWLEDGE && self.driver_status & !ACKNOWLEDGE != 0));
        let reset = (status == 0 && (self.driver_status != 0 || self.needs_reset)) || restarted;
        if reset {
            self.reset(region)?;
        }
        if self.needs_reset {
            return Ok(());
        }
        let result = if raw > 0xff {
            Err(MmioError::BadStatus(raw))
        } else {
            self.process_driver(region, status)
        };
        match result {
            Err(MmioError::Region(e)) => Err(MmioError::Region(e)),
            Err(fault) => {
                self.set_needs_reset(region)?;
                self.ring = true;
                self.push_event(DeviceEvent::Failed(fault));
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn reset<R: Region + ?Sized>(&mut self, region: &R) -> Result<(), MmioError> {
        let b = self.block;
        let acked_pfn = self.hvl_acked_pfn;
        self.clear_state();
        b.reg(STATUS)
            .fetch_and(region, !u32::from(NEEDS_RESET), Ordering::AcqRel)?;
        b.store(region, INTERRUPT_STATUS, 0)?;
        match self.handshake {
            Handshake::Sequenced { .. } => {
                let modern = self.version == VERSION_MODERN;
                b.store(region, if modern { QUEUE_READY } else { QUEUE_PFN }, 0)?;
            }
            Handshake::OpenampHvl => {
                // Only values the device itself left there: a fresh PFN the driver
                // has already written stays.
                // (Whether each exchange happened does not matter.)
                let pfn = b.reg(QUEUE_PFN);
                let _ = pfn.compare_exchange(region, HVL_PFN_ACK, 0)?;
                if let Some(acked) = acked_pfn {
                    let _ = pfn.compare_exchange(region, acked, 0)?;
                }
            }
        }
        self.push_event(DeviceEvent::Reset);
        Ok(())
    }

    fn process_driver<R: Region + ?Sized>(
        &mut self,
        region: &R,
        status: u8,
    ) -> Result<(), MmioError> {
        let b = self.block;
        if !self.features_ok && !self.driver_ok {
            let sel = b.load(region, DRIVER_FEATURES_SEL)?;
            if let Some(word) = usize::try_from(sel)
                .ok()
                .filter(|&w| w < self.feature_words())
            {
                self.driver_features[word] = b.load(region, DRIVER_FEATURES)?;
            }
        }
        let features_sel = b.load(region, DEVICE_FEATURES_SEL)?;
        if features_sel != self.features_sel {
            self.features_sel = features_sel;
            self.answer_features(region)?;
        }
        let shm_sel = b.load(region, SHM_SEL)?;
        if shm_sel != self.shm_sel {
            self.shm_sel = shm_sel;
            self.answer_shm(region)?;
        }
        let queue_sel = self.selected_queue(region)?;
        let selected = queue_sel != self.queue_sel;
        if selected {
            self.queue_sel = queue_sel;
            self.answer_queue_num_max(region)?;
        }
        match self.handshake {
            Handshake::OpenampHvl => self.hvl_queue(region, status)?,
            Handshake::Sequenced { .. } if selected => self.answer_queue_state(region)?,
            Handshake::Sequenced { .. } => self.sequenced_queue(region, status)?,
        }
        if status != self.driver_status {
            self.status_change(region, status)?;
        }
        Ok(())
    }

    /// Answers a `QueueSel` request: whether the newly selected queue is live.
    fn answer_queue_state<R: Region + ?Sized>(&self, region: &R) -> Result<(), MmioError> {
        let queue = self
            .queue_index(self.queue_sel)
            .and_then(|i| self.queues[i]);
        if self.version == VERSION_MODERN {
            self.block
                .store(region, QUEUE_READY, u32::from(queue.is_some()))?;
        } else {
            let pfn = match queue {
                Some(q) => self.legacy_pfn(region, q)?,
                None => 0,
            };
            self.block.store(region, QUEUE_PFN, pfn)?;
        }
        Ok(())
    }

    fn legacy_pfn<R: Region + ?Sized>(&self, region: &R, q: QueueConfig) -> Result<u32, MmioError> {
        let page = self.block.load(region, GUEST_PAGE_SIZE)?.max(1);
        Ok(u32::try_from(q.desc / u64::from(page)).unwrap_or(0))
    }

    fn sequenced_queue<R: Region + ?Sized>(
        &mut self,
        region: &R,
        status: u8,
    ) -> Result<(), MmioError> {
        let b = self.block;
        let sel = self.queue_sel;
        let configured = self.queue_index(sel).and_then(|i| self.queues[i]);
        if self.version == VERSION_MODERN {
            match b.load(region, QUEUE_READY)? {
                0 => Ok(()),
                1 if configured.is_some() => Ok(()),
                1 => self.configure_modern(region, sel),
                _ => Err(MmioError::OutOfOrder("QueueReady must be 0 or 1")),
            }
        } else {
            let pfn = b.load(region, QUEUE_PFN)?;
            match configured {
                _ if pfn == 0 => Ok(()),
                Some(q) if self.legacy_pfn(region, q)? == pfn => Ok(()),
                Some(_) => Err(MmioError::QueueReconfigured(sel as u16)),
                None => self.configure_legacy(region, status, sel, pfn),
            }
        }
    }

    fn hvl_queue<R: Region + ?Sized>(&mut self, region: &R, status: u8) -> Result<(), MmioError> {
        let pfn_reg = self.block.reg(QUEUE_PFN);
        let pfn = pfn_reg.load(region, Ordering::Acquire)?;
        if pfn == 0 || pfn == HVL_PFN_ACK || status & DRIVER == 0 {
            return Ok(());
        }
        if Some(pfn) == self.hvl_acked_pfn {
            // The driver's rewrite after the ack: no answer, and clear it so that a
            // later driver's first write of the same PFN is seen as new.
            // If the driver already wrote the next queue's PFN, that one stays.
            let _ = pfn_reg.compare_exchange(region, pfn, 0)?;
            return Ok(());
        }
        if self.driver_ok {
            return Err(MmioError::OutOfOrder("queue configured after DRIVER_OK"));
        }
        self.hvl_acked_pfn = Some(pfn);
        self.configure_legacy(region, status, self.queue_sel, pfn)?;
        pfn_reg.store(region, HVL_PFN_ACK, Ordering::Release)?;
        self.ring = true;
        Ok(())
    }

    fn checked_queue(&self, sel: u32) -> Result<usize, MmioError> {
        let index = self.queue_index(sel).ok_or(MmioError::BadQueueIndex(sel))?;
        if self.queues[index].is_some() {
            return Err(MmioError::QueueReconfigured(index as u16));
        }
        Ok(index)
    }

    fn checked_num<R: Region + ?Sized>(&self, region: &R, index: usize) -> Result<u16, MmioError> {
        let num = self.block.load(region, QUEUE_NUM)?;
        if !valid_queue_size(num) || num > u32::from(self.num_max[index]) {
            return Err(MmioError::BadQueueNum {
                queue: index as u16,
                num,
            });
        }
        Ok(num as u16)
    }

    fn configure_legacy<R: Region + ?Sized>(
        &mut self,
        region: &R,
        status: u8,
        sel: u32,
        pfn: u32,
    ) -> Result<(), MmioError> {
        if status & DRIVER == 0 {
            return Err(MmioError::OutOfOrder("queue configured before DRIVER"));
        }
        let index = self.checked_queue(sel)?;
        let num = self.checked_num(region, index)?;
        let b = self.block;
        let page = b.load(region, GUEST_PAGE_SIZE)?;
        let align = b.load(region, QUEUE_ALIGN)?;
        let bad = MmioError::BadQueueLayout(index as u16);
        if !page.is_power_of_two() || !align.is_power_of_two() || align < 4 {
            return Err(bad);
        }
        let desc = u64::from(pfn) * u64::from(page);
        let driver = desc + 16 * u64::from(num);
        let device = (driver + 6 + 2 * u64::from(num))
            .checked_next_multiple_of(align.into())
            .ok_or(bad)?;
        self.queue_ready(QueueConfig {
            index: index as u16,
            num,
            desc,
            driver,
            device,
            align: Some(align),
        });
        Ok(())
    }

    fn configure_modern<R: Region + ?Sized>(
        &mut self,
        region: &R,
        sel: u32,
    ) -> Result<(), MmioError> {
        if !self.features_ok {
            return Err(MmioError::OutOfOrder("queue configured before FEATURES_OK"));
        }
        let index = self.checked_queue(sel)?;
        let num = self.checked_num(region, index)?;
        let b = self.block;
        let desc = b.load_pair(region, QUEUE_DESC_LOW, QUEUE_DESC_HIGH)?;
        let driver = b.load_pair(region, QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH)?;
        let device = b.load_pair(region, QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH)?;
        if desc % 16 != 0 || driver % 2 != 0 || device % 4 != 0 {
            return Err(MmioError::BadQueueLayout(index as u16));
        }
        self.queue_ready(QueueConfig {
            index: index as u16,
            num,
            desc,
            driver,
            device,
            align: None,
        });
        Ok(())
    }

    fn queue_ready(&mut self, queue: QueueConfig) {
        self.queues[usize::from(queue.index)] = Some(queue);
        self.push_event(DeviceEvent::QueueReady(queue));
    }

    fn status_change<R: Region + ?Sized>(
        &mut self,
        region: &R,
        status: u8,
    ) -> Result<(), MmioError> {
        let old = self.driver_status;
        // OpenAMP's virtio-exp writes each status bit bare; everyone else only adds.
        if !self.hvl() && status & old != old {
            return Err(MmioError::IllegalStatus {
                from: old,
                to: status,
            });
        }
        self.driver_status = status;
        self.push_event(DeviceEvent::Status(status));
        let new = status & !old;
        if new & FEATURES_OK != 0 && self.version == VERSION_MODERN && !self.features_ok {
            let requested = self.requested_features();
            if requested & !self.offered != 0 || requested & bit(VERSION_1) == 0 {
                self.block.reg(STATUS).fetch_and(
                    region,
                    !u32::from(FEATURES_OK),
                    Ordering::AcqRel,
                )?;
                self.driver_status &= !FEATURES_OK;
                self.push_event(DeviceEvent::FeaturesRefused { requested });
            } else {
                self.features_ok = true;
                self.push_event(DeviceEvent::FeaturesAccepted(requested));
            }
        }
        if new & DRIVER_OK != 0 && !self.driver_ok {
            if self.version == VERSION_LEGACY && !self.features_ok {
                let requested = self.requested_features();
                if requested & !self.offered != 0 {
                    return Err(MmioError::FeaturesRefused {
                        requested,
                        offered: self.offered,
                    });
                }
                self.features_ok = true;
                self.push_event(DeviceEvent::FeaturesAccepted(requested));
            }
            if !self.features_ok {
                return Err(MmioError::OutOfOrder("DRIVER_OK before FEATURES_OK"));
            }
            self.driver_ok = true;
            self.push_event(DeviceEvent::DriverOk);
        }
        Ok(())
    }
}
