//! The driver's buffers: which region bytes back each descriptor of a queue, and
//! which of them are free, in private memory.

/// Most buffers the driver gives one queue (descriptors `0..MAX_BUFFERS`; a
/// longer ring leaves the rest unused). With full-size buffers 64 in flight per
/// direction keep a console busy; the bound keeps the driver's state small.
pub const MAX_BUFFERS: usize = 64;

/// A set of descriptor ids below [`MAX_BUFFERS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IdSet(u64);

impl IdSet {
    /// Ids `0..count`.
    pub(crate) fn first(count: u16) -> Self {
        match count {
            0 => IdSet(0),
            64.. => IdSet(u64::MAX),
            n => IdSet((1u64 << n) - 1),
        }
    }

    pub(crate) fn insert(&mut self, id: u16) {
        if usize::from(id) < MAX_BUFFERS {
            self.0 |= 1 << id;
        }
    }

    /// Takes the lowest id out of the set.
    pub(crate) fn pop(&mut self) -> Option<u16> {
        if self.0 == 0 {
            return None;
        }
        let id = self.0.trailing_zeros() as u16;
        self.0 &= !(1 << id);
        Some(id)
    }

    pub(crate) fn len(&self) -> u32 {
        self.0.count_ones()
    }
}

/// `count` buffers of `size` bytes each, back to back from region offset `start`:
/// descriptor `id` of a queue always uses buffer `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buffers {
    pub(crate) start: usize,
    pub(crate) size: u32,
    pub(crate) count: u16,
}

impl Buffers {
    pub(crate) fn offset(&self, id: u16) -> usize {
        self.start + usize::from(id) * self.size as usize
    }

    pub(crate) fn span(&self) -> usize {
        usize::from(self.count) * self.size as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hand_out_each_id_once() {
        let mut set = IdSet::first(3);
        assert_eq!(set.len(), 3);
        assert_eq!(
            (set.pop(), set.pop(), set.pop(), set.pop()),
            (Some(0), Some(1), Some(2), None)
        );
        set.insert(63);
        set.insert(64);
        assert_eq!(set.pop(), Some(63));
        assert_eq!(IdSet::first(64).len(), 64);
        assert_eq!(IdSet::first(200).len(), 64);
        let b = Buffers {
            start: 0x800,
            size: 256,
            count: 4,
        };
        assert_eq!((b.offset(2), b.span()), (0xa00, 1024));
    }
}
