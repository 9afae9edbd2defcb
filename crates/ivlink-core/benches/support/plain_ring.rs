//! The reference the ring is measured against: a plain memcpy SPSC ring with
//! the same record format (an 8-byte length, the payload, padding to 8) and
//! cached indices, but none of the ring's checks, on private memory. Shared by
//! the criterion bench and the callgrind example.

use core::sync::atomic::{AtomicU64, Ordering};

/// One ring of `capacity` bytes (a power of two).
pub struct Plain {
    head_word: AtomicU64,
    tail_word: AtomicU64,
    data: Vec<u64>,
    capacity: usize,
}

/// The sending side.
pub struct PlainTx<'a> {
    ring: &'a Plain,
    head: u64,
    tail_cache: u64,
}

/// The receiving side.
pub struct PlainRx<'a> {
    ring: &'a Plain,
    tail: u64,
    head_cache: u64,
}

fn record_size(len: usize) -> u64 {
    (8 + len).next_multiple_of(8) as u64
}

impl Plain {
    /// An empty ring of `capacity` bytes.
    pub fn new(capacity: usize) -> Plain {
        assert!(capacity.is_power_of_two() && capacity >= 64);
        Plain {
            head_word: AtomicU64::new(0),
            tail_word: AtomicU64::new(0),
            data: vec![0; capacity / 8],
            capacity,
        }
    }

    /// Its two ends.
    pub fn ends(&self) -> (PlainTx<'_>, PlainRx<'_>) {
        let tx = PlainTx {
            ring: self,
            head: 0,
            tail_cache: 0,
        };
        let rx = PlainRx {
            ring: self,
            tail: 0,
            head_cache: 0,
        };
        (tx, rx)
    }
}

impl PlainTx<'_> {
    /// Appends a message; `false` if the ring is full.
    #[inline]
    pub fn try_send(&mut self, message: &[u8]) -> bool {
        let needed = record_size(message.len());
        let capacity = self.ring.capacity;
        if (capacity as u64).saturating_sub(self.head.wrapping_sub(self.tail_cache)) < needed {
            self.tail_cache = self.ring.tail_word.load(Ordering::Acquire);
            if (capacity as u64).saturating_sub(self.head.wrapping_sub(self.tail_cache)) < needed {
                return false;
            }
        }
        let data = self.ring.data.as_ptr() as *mut u8;
        let mask = capacity - 1;
        let start = self.head as usize & mask;
        let len = message.len().min(capacity - 8);
        let payload = (start + 8) & mask;
        let first = len.min(capacity - payload);
        // SAFETY: both copies stay inside `data` (`capacity` bytes); one thread
        // owns each end and the ends are used in turn.
        unsafe {
            data.add(start).cast::<u64>().write(len as u64);
            core::ptr::copy_nonoverlapping(message.as_ptr(), data.add(payload), first);
            core::ptr::copy_nonoverlapping(message.as_ptr().add(first), data, len - first);
        }
        self.head = self.head.wrapping_add(needed);
        true
    }

    /// Makes every message sent so far visible.
    #[inline]
    pub fn publish(&mut self) {
        self.ring.head_word.store(self.head, Ordering::Release);
    }
}

impl PlainRx<'_> {
    /// Copies the next message into `buf` (cut to its length); `None` if empty.
    #[inline]
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.head_cache == self.tail {
            self.head_cache = self.ring.head_word.load(Ordering::Acquire);
            if self.head_cache == self.tail {
                return None;
            }
        }
        let capacity = self.ring.capacity;
        let data = self.ring.data.as_ptr() as *const u8;
        let mask = capacity - 1;
        let start = self.tail as usize & mask;
        // SAFETY: an aligned word inside `data`.
        let len = unsafe { data.add(start).cast::<u64>().read() } as usize;
        let copy = len.min(buf.len()).min(capacity - 8);
        let payload = (start + 8) & mask;
        let first = copy.min(capacity - payload);
        // SAFETY: both ranges stay inside `data` and `buf`.
        unsafe {
            core::ptr::copy_nonoverlapping(data.add(payload), buf.as_mut_ptr(), first);
            core::ptr::copy_nonoverlapping(data, buf.as_mut_ptr().add(first), copy - first);
        }
        self.tail = self.tail.wrapping_add(record_size(len));
        Some(len)
    }

    /// Returns the space of every message received so far.
    #[inline]
    pub fn release(&mut self) {
        self.ring.tail_word.store(self.tail, Ordering::Release);
    }
}
