//! A region wrapper that catches the driver reading an answer register while its
//! request is outstanding.

use core::cell::Cell;
use core::sync::atomic::Ordering;

use super::{ACK, REQUEST};
use crate::region::{Le32, RawRegion, Region, RegionError};
use crate::virtio::mmio::registers::{
    DEVICE_FEATURES, QUEUE_NUM_MAX, QUEUE_PFN, QUEUE_READY, STATUS,
};

/// The region as the driver sees it: counts every read of a register that holds
/// the device's answer made while a request is outstanding.
pub(super) struct Watched<'a> {
    inner: &'a RawRegion,
    pub(super) early_reads: Cell<u32>,
}

impl<'a> Watched<'a> {
    pub(super) fn new(inner: &'a RawRegion) -> Self {
        Watched {
            inner,
            early_reads: Cell::new(0),
        }
    }
}

const ANSWERS: [Le32; 5] = [
    DEVICE_FEATURES,
    QUEUE_NUM_MAX,
    QUEUE_PFN,
    QUEUE_READY,
    STATUS,
];

impl Region for Watched<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RegionError> {
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        self.inner.write(offset, data)
    }
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), RegionError> {
        self.inner.fill(offset, len, byte)
    }
    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, RegionError> {
        self.inner.load_u8(offset, order)
    }
    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), RegionError> {
        self.inner.store_u8(offset, value, order)
    }
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, RegionError> {
        self.inner.load_u16(offset, order)
    }
    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), RegionError> {
        self.inner.store_u16(offset, value, order)
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, RegionError> {
        if ANSWERS.iter().any(|r| r.offset() == offset) {
            let request = self.inner.load_u32(REQUEST, Ordering::Relaxed)?;
            let ack = self.inner.load_u32(ACK, Ordering::Relaxed)?;
            if request != ack {
                self.early_reads.set(self.early_reads.get() + 1);
            }
        }
        self.inner.load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), RegionError> {
        self.inner.store_u32(offset, value, order)
    }
    fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, RegionError> {
        self.inner.load_u64(offset, order)
    }
    fn store_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<(), RegionError> {
        self.inner.store_u64(offset, value, order)
    }
    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, RegionError> {
        self.inner.compare_exchange_u32(offset, current, new)
    }
    fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, RegionError> {
        self.inner.compare_exchange_u64(offset, current, new)
    }
    fn compare_exchange_u8(
        &self,
        offset: usize,
        current: u8,
        new: u8,
    ) -> Result<Result<u8, u8>, RegionError> {
        self.inner.compare_exchange_u8(offset, current, new)
    }
    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
    ) -> Result<Result<u16, u16>, RegionError> {
        self.inner.compare_exchange_u16(offset, current, new)
    }
    fn fetch_or_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<u32, RegionError> {
        self.inner.fetch_or_u32(offset, value, order)
    }
    fn fetch_and_u32(
        &self,
        offset: usize,
        value: u32,
        order: Ordering,
    ) -> Result<u32, RegionError> {
        self.inner.fetch_and_u32(offset, value, order)
    }
    fn fetch_or_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<u64, RegionError> {
        self.inner.fetch_or_u64(offset, value, order)
    }
    fn fetch_and_u64(
        &self,
        offset: usize,
        value: u64,
        order: Ordering,
    ) -> Result<u64, RegionError> {
        self.inner.fetch_and_u64(offset, value, order)
    }
}
