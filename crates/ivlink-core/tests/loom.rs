//! Model checks of the ring and the mailbox under every interleaving (and the weak
//! memory outcomes) loom explores, through the one seam they share: a [`Region`]
//! whose atomics and fences are loom's.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p ivlink-core --test loom --release`
#![cfg(loom)]

use core::sync::atomic::Ordering;

use ivlink_core::mailbox::{MailboxLayout, MailboxShape};
use ivlink_core::region::check_bounds;
use ivlink_core::ring::{self, Consumer, Producer, RingLayout};
use ivlink_core::virtio::virtq::{DeviceQueue, DriverQueue, Vring, VringLayout};
use ivlink_core::{Region, RegionError};
use loom::sync::atomic::AtomicU64;
use loom::sync::{Arc, Notify};
use loom::thread;

/// A region made of loom atomics, one per aligned 8 bytes.
///
/// loom models whole atomic objects, not bytes, so narrower accesses work on the
/// containing word: loads extract their bytes, stores and compare-and-exchanges
/// merge them in with a compare-and-exchange loop (a read-modify-write, so a
/// narrow store is at least as ordered as the real one: this model can miss a bug
/// that needs a plain store's weaker ordering, never report a false one).
/// Byte copies are relaxed word accesses, so a payload read that is not ordered
/// after its write by the protocol shows up as stale or torn data.
struct LoomRegion {
    words: Vec<AtomicU64>,
    len: usize,
}

impl LoomRegion {
    fn new(len: usize) -> Self {
        LoomRegion {
            words: (0..len.div_ceil(8)).map(|_| AtomicU64::new(0)).collect(),
            len,
        }
    }

    /// The word holding an aligned access of `width` bytes at `offset`, the shift
    /// of its lowest byte and the mask of its bytes.
    fn place(&self, offset: usize, width: usize) -> Result<(&AtomicU64, u32, u64), RegionError> {
        check_bounds(offset, width, self.len)?;
        if offset % width != 0 {
            return Err(RegionError::Misaligned {
                offset,
                align: width,
            });
        }
        let mask = if width == 8 {
            u64::MAX
        } else {
            (1 << (8 * width)) - 1
        };
        let shift = 8 * (offset % 8) as u32;
        Ok((&self.words[offset / 8], shift, mask << shift))
    }

    fn load(&self, offset: usize, width: usize, order: Ordering) -> Result<u64, RegionError> {
        let (word, shift, mask) = self.place(offset, width)?;
        Ok((word.load(order) & mask) >> shift)
    }

    fn merge(word: &AtomicU64, mask: u64, bits: u64, order: Ordering) {
        if mask == u64::MAX {
            word.store(bits, order);
            return;
        }
        let mut current = word.load(Ordering::Relaxed);
        while let Err(now) =
            word.compare_exchange(current, (current & !mask) | bits, order, Ordering::Relaxed)
        {
            current = now;
        }
    }

    fn store(
        &self,
        offset: usize,
        width: usize,
        value: u64,
        order: Ordering,
    ) -> Result<(), RegionError> {
        let (word, shift, mask) = self.place(offset, width)?;
        Self::merge(word, mask, value << shift, order);
        Ok(())
    }

    fn cas(
        &self,
        offset: usize,
        width: usize,
        expected: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, RegionError> {
        let (word, shift, mask) = self.place(offset, width)?;
        let mut current = word.load(Ordering::Acquire);
        loop {
            let seen = (current & mask) >> shift;
            if seen != expected {
                return Ok(Err(seen));
            }
            let next = (current & !mask) | (new << shift);
            match word.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Ok(seen)),
                Err(now) => current = now,
            }
        }
    }

    /// Calls `each` with every word `offset..offset + len` touches: its index, the
    /// first byte of the access in it, and the range of its bytes the access covers.
    fn spans(&self, offset: usize, len: usize, mut each: impl FnMut(usize, usize, usize, usize)) {
        let mut at = offset;
        while at < offset + len {
            let end = (at / 8 * 8 + 8).min(offset + len);
            each(at / 8, at - offset, at % 8, end - at);
            at = end;
        }
    }
}

fn bytes_mask(first: usize, count: usize) -> u64 {
    if count == 8 {
        u64::MAX
    } else {
        ((1u64 << (8 * count)) - 1) << (8 * first)
    }
}

impl Region for LoomRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RegionError> {
        check_bounds(offset, buf.len(), self.len)?;
        self.spans(offset, buf.len(), |index, from, first, count| {
            let bytes = self.words[index].load(Ordering::Relaxed).to_le_bytes();
            buf[from..from + count].copy_from_slice(&bytes[first..first + count]);
        });
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        check_bounds(offset, data.len(), self.len)?;
        self.spans(offset, data.len(), |index, from, first, count| {
            let mut bytes = [0u8; 8];
            bytes[first..first + count].copy_from_slice(&data[from..from + count]);
            let mask = bytes_mask(first, count);
            Self::merge(
                &self.words[index],
                mask,
                u64::from_le_bytes(bytes),
                Ordering::Relaxed,
            );
        });
        Ok(())
    }

    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), RegionError> {
        check_bounds(offset, len, self.len)?;
        self.spans(offset, len, |index, _, first, count| {
            let mask = bytes_mask(first, count);
            let bits = u64::from_le_bytes([byte; 8]) & mask;
            Self::merge(&self.words[index], mask, bits, Ordering::Relaxed);
        });
        Ok(())
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, RegionError> {
        Ok(self.load(offset, 1, order)? as u8)
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), RegionError> {
        self.store(offset, 1, value.into(), order)
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, RegionError> {
        Ok(self.load(offset, 2, order)? as u16)
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), RegionError> {
        self.store(offset, 2, value.into(), order)
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, RegionError> {
        Ok(self.load(offset, 4, order)? as u32)
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), RegionError> {
        self.store(offset, 4, value.into(), order)
    }

    fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, RegionError> {
        self.load(offset, 8, order)
    }

    fn store_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<(), RegionError> {
        self.store(offset, 8, value, order)
    }

    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, RegionError> {
        let result = self.cas(offset, 4, current.into(), new.into())?;
        Ok(result.map(|v| v as u32).map_err(|v| v as u32))
    }

    fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, RegionError> {
        self.cas(offset, 8, current, new)
    }

    fn compare_exchange_u8(
        &self,
        offset: usize,
        current: u8,
        new: u8,
    ) -> Result<Result<u8, u8>, RegionError> {
        let result = self.cas(offset, 1, current.into(), new.into())?;
        Ok(result.map(|v| v as u8).map_err(|v| v as u8))
    }

    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
    ) -> Result<Result<u16, u16>, RegionError> {
        let result = self.cas(offset, 2, current.into(), new.into())?;
        Ok(result.map(|v| v as u16).map_err(|v| v as u16))
    }

    fn fetch_or_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<u32, RegionError> {
        let (word, shift, mask) = self.place(offset, 4)?;
        Ok(((word.fetch_or(u64::from(value) << shift, order) & mask) >> shift) as u32)
    }

    fn fetch_and_u32(
        &self,
        offset: usize,
        value: u32,
        order: Ordering,
    ) -> Result<u32, RegionError> {
        let (word, shift, mask) = self.place(offset, 4)?;
        let keep = (u64::from(value) << shift) | !mask;
        Ok(((word.fetch_and(keep, order) & mask) >> shift) as u32)
    }

    fn fetch_or_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<u64, RegionError> {
        let (word, _, _) = self.place(offset, 8)?;
        Ok(word.fetch_or(value, order))
    }

    fn fetch_and_u64(
        &self,
        offset: usize,
        value: u64,
        order: Ordering,
    ) -> Result<u64, RegionError> {
        let (word, _, _) = self.place(offset, 8)?;
        Ok(word.fetch_and(value, order))
    }

    fn fence(&self, order: Ordering) {
        loom::sync::atomic::fence(order);
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    // Creating a section is a few hundred atomic steps before the threads start.
    builder.max_branches = 50_000;
    builder.check(f);
}

const MESSAGES: [&[u8]; 2] = [b"first", b"second!!"];

/// The producer sends [`MESSAGES`] while the consumer drains them; with `sleep`,
/// the consumer sleeps on the doorbell (a loom `Notify`, like an eventfd: a wake
/// that comes first is kept, and it may wake spuriously) whenever the ring looks
/// empty, and the producer rings it when `publish` says the consumer asked.
fn ring_model(sleep: bool) {
    let region = Arc::new(LoomRegion::new(ring::HEADER + ring::MIN_CAPACITY));
    let layout = RingLayout::new(region.len(), 0, region.len()).unwrap();
    layout.init(&*region).unwrap();
    let doorbell = Arc::new(Notify::new());
    let producer = {
        let (region, doorbell) = (region.clone(), doorbell.clone());
        thread::spawn(move || {
            let mut producer = Producer::attach(&*region, layout).unwrap();
            for message in MESSAGES {
                assert!(producer.try_send(message).unwrap());
                if producer.publish().unwrap() {
                    doorbell.notify();
                }
            }
        })
    };
    let mut consumer = Consumer::attach(&*region, layout).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while got.len() < MESSAGES.len() {
        if let Some(len) = consumer.try_recv(&mut buf).unwrap() {
            got.push(buf[..len].to_vec());
            consumer.release().unwrap();
        } else if !sleep {
            thread::yield_now();
        } else if consumer.prepare_sleep().unwrap() {
            doorbell.wait();
            consumer.finish_sleep().unwrap();
        }
    }
    assert_eq!(got, MESSAGES);
    producer.join().unwrap();
}

/// Every message arrives intact and in order, whatever the interleaving and
/// whichever stale values the weak memory model lets a load return.
#[test]
fn ring_messages_arrive_intact_and_in_order() {
    model(|| ring_model(false));
}

/// The fences of the sleep handshake, which go through the region, never let the
/// producer skip a ring the consumer waits for.
#[test]
fn ring_sleep_handshake_loses_no_wakeup() {
    model(|| ring_model(true));
}

/// A sender sends two messages through one box, each after the previous one was
/// taken; with `sleep`, it asks for a completion and sleeps on the completion
/// doorbell, which the receiver rings when the message it took asks for it.
fn mailbox_model(sleep: bool) {
    let shape = MailboxShape {
        max_members: 2,
        max_data: 8,
        id_count: 4,
        vector: 0,
        completion_vector: 1,
    };
    let size = shape.section_size().unwrap();
    let region = Arc::new(LoomRegion::new(size));
    let layout = MailboxLayout::create(&*region, 0, size, shape).unwrap();
    let completion = Arc::new(Notify::new());
    let sent: [(u32, &[u8]); 2] = [(1, b"ping"), (2, b"pong!")];
    let sender = {
        let (region, completion) = (region.clone(), completion.clone());
        thread::spawn(move || {
            for (id, data) in sent {
                layout.send(&*region, 0, 1, id, data, false).unwrap();
                while !layout.poll_complete(&*region, 0, 1).unwrap() {
                    // Re-armed after a spurious wake, as after a timed wait.
                    if !sleep {
                        thread::yield_now();
                    } else if layout.arm_completion(&*region, 0, 1).unwrap() {
                        completion.wait();
                    }
                }
            }
        })
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 8];
    while got.len() < sent.len() {
        match layout.take(&*region, 1, 0, &mut buf).unwrap() {
            Some(taken) => {
                got.push((taken.id, buf[..taken.len].to_vec()));
                if taken.wants_completion {
                    completion.notify();
                }
            }
            None => thread::yield_now(),
        }
    }
    assert_eq!(got, sent.map(|(id, data)| (id, data.to_vec())));
    sender.join().unwrap();
}

/// The receiver takes both messages intact, with their ids.
#[test]
fn mailbox_messages_arrive_intact_and_complete() {
    model(|| mailbox_model(false));
}

/// The receiver that takes a message always sees its sender's completion request,
/// so no completion is lost.
#[test]
fn mailbox_completion_handshake_loses_no_completion() {
    model(|| mailbox_model(true));
}

/// A driver posts one buffer on each of two vrings, exposes both, and decides
/// about both doorbells after one fence (as an RPMsg link does before its next
/// send, poll or sleep); the device takes from both, and when it finds nothing it
/// asks for notifications on both and sleeps on the one doorbell. The shared
/// fence must order both index stores against both looks at the flags (without
/// it, loom finds the device asleep with both buffers posted).
fn virtq_model() {
    let layout = VringLayout::new(2, 8).unwrap();
    let size = layout.size().next_multiple_of(8);
    let region = Arc::new(LoomRegion::new(2 * size));
    let rings = [0, size].map(|base| Vring::new(base, layout, region.len()).unwrap());
    let mut drivers = rings.map(|ring| DriverQueue::new(ring, false));
    let mut devices = rings.map(|ring| DeviceQueue::new(ring, false));
    for (driver, device) in drivers.iter_mut().zip(&mut devices) {
        driver.reset(&*region).unwrap();
        // Busy at first, as a device is between messages.
        device.set_notifications(&*region, false).unwrap();
    }
    let doorbell = Arc::new(Notify::new());
    let driver = {
        let (region, doorbell) = (region.clone(), doorbell.clone());
        thread::spawn(move || {
            for driver in &mut drivers {
                driver.post(&*region, 0, 0, 16, false).unwrap();
                assert!(driver.expose(&*region).unwrap());
            }
            region.fence(Ordering::SeqCst);
            let mut due = false;
            for driver in &mut drivers {
                due |= driver.notify_due_fenced(&*region).unwrap();
            }
            if due {
                doorbell.notify();
            }
        })
    };
    let mut got = [false; 2];
    while got != [true; 2] {
        for (device, got) in devices.iter_mut().zip(&mut got) {
            *got |= device.take_avail(&*region).unwrap().is_some();
        }
        if got == [true; 2] {
            break;
        }
        let mut arrived = false;
        for device in &mut devices {
            arrived |= device.set_notifications(&*region, true).unwrap();
        }
        if !arrived {
            doorbell.wait();
        }
        for device in &mut devices {
            device.set_notifications(&*region, false).unwrap();
        }
    }
    driver.join().unwrap();
}

/// One fence for two vrings' doorbell decisions loses no wakeup.
#[test]
fn virtq_one_fence_for_two_vrings_loses_no_wakeup() {
    model(virtq_model);
}
