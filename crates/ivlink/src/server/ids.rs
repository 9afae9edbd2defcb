//! Peer id allocation.

use ivlink_core::PeerId;

/// How the server picks a new peer's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdPolicy {
    /// QEMU's rotating cursor: the first peer gets 0, ids rise, and a freed id is
    /// reused only after the cursor wraps past 65535. Deployments rely on it (a
    /// restarted peer gets a new, higher id).
    #[default]
    Rotating,
    /// The lowest id not in use (as Siemens' ivshmem2-server does).
    LowestFree,
}

/// Hands out peer ids and remembers which are in use (a 65536-bit map).
#[derive(Debug, Clone)]
pub struct IdAllocator {
    policy: IdPolicy,
    cursor: PeerId,
    in_use: Box<[u64; 1024]>,
}

impl IdAllocator {
    /// An allocator whose rotating cursor starts at `first`.
    pub fn new(policy: IdPolicy, first: PeerId) -> Self {
        IdAllocator {
            policy,
            cursor: first,
            in_use: Box::new([0; 1024]),
        }
    }

    /// Takes an id, or `None` if all 65536 are in use.
    pub fn allocate(&mut self) -> Option<PeerId> {
        let id = match self.policy {
            IdPolicy::Rotating => {
                let id = self.first_free_from(self.cursor)?;
                self.cursor = id.wrapping_add(1);
                id
            }
            IdPolicy::LowestFree => self.first_free_from(0)?,
        };
        self.in_use[usize::from(id) / 64] |= 1 << (id % 64);
        Some(id)
    }

    /// Returns an id to the pool.
    pub fn release(&mut self, id: PeerId) {
        self.in_use[usize::from(id) / 64] &= !(1 << (id % 64));
    }

    /// Whether `id` is taken.
    pub fn is_used(&self, id: PeerId) -> bool {
        self.in_use[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    /// The first free id at or after `start`, wrapping past 65535 to 0.
    fn first_free_from(&self, start: PeerId) -> Option<PeerId> {
        let start = usize::from(start);
        // Word by word, starting with the bits at and above `start` in its word and
        // ending with the bits below it, after wrapping around.
        for step in 0..=1024 {
            let word_index = (start / 64 + step) % 1024;
            let mut free = !self.in_use[word_index];
            if step == 0 {
                free &= u64::MAX << (start % 64);
            } else if step == 1024 {
                free &= !(u64::MAX << (start % 64));
            }
            if free != 0 {
                return Some((word_index * 64 + free.trailing_zeros() as usize) as PeerId);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotating_cursor_reuses_ids_only_after_wrapping() {
        let mut ids = IdAllocator::new(IdPolicy::Rotating, 0);
        assert_eq!(ids.allocate(), Some(0));
        assert_eq!(ids.allocate(), Some(1));
        ids.release(0);
        assert_eq!(ids.allocate(), Some(2));
    }

    #[test]
    fn rotating_cursor_wraps_and_skips_ids_in_use() {
        let mut ids = IdAllocator::new(IdPolicy::Rotating, 0);
        assert_eq!(ids.allocate(), Some(0));
        let mut ids2 = IdAllocator::new(IdPolicy::Rotating, 65534);
        ids2.in_use[0] |= 1;
        assert_eq!(ids2.allocate(), Some(65534));
        assert_eq!(ids2.allocate(), Some(65535));
        assert_eq!(ids2.allocate(), Some(1));
    }

    #[test]
    fn every_id_in_use_means_none() {
        let mut ids = IdAllocator::new(IdPolicy::Rotating, 7);
        for _ in 0..65536 {
            assert!(ids.allocate().is_some());
        }
        assert_eq!(ids.allocate(), None);
        ids.release(40000);
        assert_eq!(ids.allocate(), Some(40000));
        let mut lowest = IdAllocator::new(IdPolicy::LowestFree, 0);
        for expected in 0..65536u32 {
            assert_eq!(lowest.allocate().map(u32::from), Some(expected));
        }
        assert_eq!(lowest.allocate(), None);
    }

    #[test]
    fn lowest_free_fills_holes() {
        let mut ids = IdAllocator::new(IdPolicy::LowestFree, 0);
        assert_eq!(ids.allocate(), Some(0));
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), Some(2));
        ids.release(1);
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), Some(3));
    }
}
