//! The reference ring: a plain memcpy SPSC ring over a shared memfd, the way a
//! C program between two trusted processes would write it. Same record format
//! and cache-line placement as ivlink's ring (head and tail 128 bytes apart,
//! cached indices, records of an 8-byte length then the payload), but none of
//! ivlink's checks: no bounds-checked accessors, no index validation, no
//! poisoning, no "please notify" flags; both sides busy-poll.
//!
//! The only checks kept are the ones soundness needs (a length read from the
//! ring is clamped to the caller's buffer).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::BenchError;

/// Bytes before each ring's data area.
const HEADER: usize = 256;
const HEAD: usize = 0;
const TAIL: usize = 128;
/// Bytes before each record's payload (its length).
pub const RECORD_HEADER: usize = 8;

fn record_size(len: usize) -> u64 {
    (RECORD_HEADER + len).next_multiple_of(8) as u64
}

/// `rings` rings of `capacity` data bytes each, in one shared mapping.
#[derive(Debug)]
pub struct MemRing {
    map: MmapRaw,
    capacity: usize,
    rings: usize,
}

impl MemRing {
    /// Creates the memfd, sizes it and maps it. The fd goes to the other
    /// process.
    pub fn create(capacity: usize, rings: usize) -> Result<(MemRing, OwnedFd), BenchError> {
        let fd = rustix::fs::memfd_create("ivlink-bench-ring", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(BenchError::io("creating the ring memfd"))?;
        rustix::fs::ftruncate(&fd, Self::bytes(capacity, rings) as u64)
            .map_err(BenchError::io("sizing the ring memfd"))?;
        let ring = Self::open(&fd, capacity, rings)?;
        Ok((ring, fd))
    }

    /// Maps a memfd made by [`create`](Self::create) with the same arguments.
    pub fn open(fd: &impl AsFd, capacity: usize, rings: usize) -> Result<MemRing, BenchError> {
        if !capacity.is_power_of_two() || capacity < 64 || rings == 0 {
            return Err(BenchError::BadJob(format!(
                "memcpy ring of {capacity} bytes"
            )));
        }
        let bytes = Self::bytes(capacity, rings);
        let stat = rustix::fs::fstat(fd).map_err(BenchError::io("inspecting the ring memfd"))?;
        if (stat.st_size as u64) < bytes as u64 {
            return Err(BenchError::Peer(format!(
                "the ring memfd has {} bytes, {bytes} needed",
                stat.st_size
            )));
        }
        let map = MmapOptions::new()
            .len(bytes)
            .map_raw(&fd.as_fd())
            .map_err(|e| BenchError::Io {
                context: "mapping the ring memfd",
                error: e,
            })?;
        Ok(MemRing {
            map,
            capacity,
            rings,
        })
    }

    fn bytes(capacity: usize, rings: usize) -> usize {
        (HEADER + capacity) * rings
    }

    /// Pointers to ring `index`'s head word, tail word and data area.
    fn parts(&self, index: usize) -> (&AtomicU64, &AtomicU64, *mut u8) {
        assert!(index < self.rings, "ring {index} of {}", self.rings);
        let base = (HEADER + self.capacity) * index;
        let at = |offset: usize| {
            // SAFETY: `base + offset + 8 <= bytes`, the mapping's length, and
            // `base + offset` is a multiple of 8 (base is a multiple of 256) in a
            // page-aligned mapping, so the word is in bounds and aligned. It is
            // only ever accessed atomically (by both processes), and the mapping
            // lives as long as `self`, which the reference borrows.
            unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(base + offset).cast()) }
        };
        // SAFETY: `base + HEADER` is within the mapping (the data area follows).
        let data = unsafe { self.map.as_mut_ptr().add(base + HEADER) };
        (at(HEAD), at(TAIL), data)
    }

    /// The producer of ring `index` (one per ring, in one process).
    pub fn producer(&self, index: usize) -> MemProducer<'_> {
        let (head, tail, data) = self.parts(index);
        MemProducer {
            head_word: head,
            tail_word: tail,
            data,
            capacity: self.capacity,
            head: head.load(Ordering::Relaxed),
            tail_cache: tail.load(Ordering::Relaxed),
        }
    }

    /// The consumer of ring `index` (one per ring, in one process).
    pub fn consumer(&self, index: usize) -> MemConsumer<'_> {
        let (head, tail, data) = self.parts(index);
        MemConsumer {
            head_word: head,
            tail_word: tail,
            data,
            capacity: self.capacity,
            tail: tail.load(Ordering::Relaxed),
            head_cache: head.load(Ordering::Relaxed),
        }
    }
}

/// Sends into one ring.
#[derive(Debug)]
pub struct MemProducer<'a> {
    head_word: &'a AtomicU64,
    tail_word: &'a AtomicU64,
    data: *mut u8,
    capacity: usize,
    head: u64,
    tail_cache: u64,
}

impl MemProducer<'_> {
    /// Appends a message (visible after [`publish`](Self::publish)); `false` if
    /// the ring is full. Messages must fit the ring (the caller's job).
    #[inline]
    pub fn try_send(&mut self, message: &[u8]) -> bool {
        let needed = record_size(message.len());
        let capacity = self.capacity as u64;
        if capacity.saturating_sub(self.head.wrapping_sub(self.tail_cache)) < needed {
            self.tail_cache = self.tail_word.load(Ordering::Acquire);
            if capacity.saturating_sub(self.head.wrapping_sub(self.tail_cache)) < needed {
                return false;
            }
        }
        let mask = self.capacity - 1;
        let start = self.head as usize & mask;
        let len = message.len().min(self.capacity - RECORD_HEADER);
        let payload = (start + RECORD_HEADER) & mask;
        let first = len.min(self.capacity - payload);
        // SAFETY: `start` is a multiple of 8 below the capacity (a multiple of 8),
        // so the 8-byte length fits in the data area, aligned. `payload + first`
        // and `len - first` are at most the capacity, so both copies stay in the
        // data area; the bytes belong to the producer until published (the
        // consumer reads them only after an acquire load of the head).
        unsafe {
            self.data.add(start).cast::<u64>().write(len as u64);
            core::ptr::copy_nonoverlapping(message.as_ptr(), self.data.add(payload), first);
            core::ptr::copy_nonoverlapping(message.as_ptr().add(first), self.data, len - first);
        }
        self.head = self.head.wrapping_add(needed);
        true
    }

    /// Makes every message sent so far visible.
    #[inline]
    pub fn publish(&mut self) {
        self.head_word.store(self.head, Ordering::Release);
    }
}

/// Receives from one ring.
#[derive(Debug)]
pub struct MemConsumer<'a> {
    head_word: &'a AtomicU64,
    tail_word: &'a AtomicU64,
    data: *mut u8,
    capacity: usize,
    tail: u64,
    head_cache: u64,
}

impl MemConsumer<'_> {
    /// Copies the next message into `buf` (cut to its length) and returns the
    /// message's length, or `None` if the ring is empty.
    #[inline]
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.head_cache == self.tail {
            self.head_cache = self.head_word.load(Ordering::Acquire);
            if self.head_cache == self.tail {
                return None;
            }
        }
        let mask = self.capacity - 1;
        let start = self.tail as usize & mask;
        // SAFETY: as in `try_send`: an aligned word inside the data area, written
        // before the head that our acquire load saw.
        let len = unsafe { self.data.add(start).cast::<u64>().read() } as usize;
        let copy = len.min(buf.len()).min(self.capacity - RECORD_HEADER);
        let payload = (start + RECORD_HEADER) & mask;
        let first = copy.min(self.capacity - payload);
        // SAFETY: `copy` is at most the capacity and `buf.len()`, so both source
        // ranges stay in the data area and both destinations in `buf`.
        unsafe {
            core::ptr::copy_nonoverlapping(self.data.add(payload), buf.as_mut_ptr(), first);
            core::ptr::copy_nonoverlapping(self.data, buf.as_mut_ptr().add(first), copy - first);
        }
        self.tail = self.tail.wrapping_add(record_size(len));
        Some(len)
    }

    /// Returns the space of the messages received so far.
    #[inline]
    pub fn release(&mut self) {
        self.tail_word.store(self.tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_two_mappings_and_wrap() {
        let (a, fd) = MemRing::create(256, 2).unwrap();
        let b = MemRing::open(&fd, 256, 2).unwrap();
        let mut tx = a.producer(1);
        let mut rx = b.consumer(1);
        let mut buf = [0u8; 64];
        assert_eq!(rx.try_recv(&mut buf), None);
        for round in 0..100u8 {
            let message: Vec<u8> = (0..round % 50).map(|i| i ^ round).collect();
            assert!(tx.try_send(&message));
            tx.publish();
            assert_eq!(rx.try_recv(&mut buf), Some(message.len()));
            assert_eq!(&buf[..message.len()], &message[..]);
            rx.release();
        }
        // Ring 0 is untouched.
        assert_eq!(b.consumer(0).try_recv(&mut buf), None);
    }

    #[test]
    fn a_full_ring_refuses_until_released() {
        let (ring, _fd) = MemRing::create(64, 1).unwrap();
        let mut tx = ring.producer(0);
        let mut rx = ring.consumer(0);
        assert!(tx.try_send(&[1; 24]));
        assert!(tx.try_send(&[2; 24]));
        assert!(!tx.try_send(&[3; 24]));
        tx.publish();
        let mut buf = [0u8; 24];
        assert_eq!(rx.try_recv(&mut buf), Some(24));
        assert!(!tx.try_send(&[3; 24]), "not released yet");
        rx.release();
        assert!(tx.try_send(&[3; 24]));
    }

    #[test]
    fn a_short_buffer_gets_a_prefix_never_an_overflow() {
        let (ring, _fd) = MemRing::create(128, 1).unwrap();
        let mut tx = ring.producer(0);
        let mut rx = ring.consumer(0);
        tx.try_send(b"0123456789");
        tx.publish();
        let mut small = [0u8; 4];
        assert_eq!(rx.try_recv(&mut small), Some(10));
        assert_eq!(&small, b"0123");
    }

    #[test]
    fn refuses_a_memfd_too_small_or_a_bad_capacity() {
        let (_ring, fd) = MemRing::create(64, 1).unwrap();
        assert!(MemRing::open(&fd, 128, 1).is_err());
        assert!(MemRing::open(&fd, 48, 1).is_err());
    }
}
