//! Member slots: how peers join a shared section (a channel, a mailbox) by slot.
//!
//! A section that several peers use keeps an array of `count` 32-bit words, one per
//! slot. A slot word holds `peer id + 1`, or 0 when the slot is free:
//!
//! | value | meaning |
//! |---|---|
//! | 0 | free |
//! | `peer + 1` (1..=65536) | taken by `peer` |
//! | `(peer + 1) \| JOINING` | being set up by `peer` (counts as free to others) |
//! | anything else | damaged: reported, never trusted |
//!
//! A peer claims a free slot by compare-and-swap, marked as joining, resets the
//! per-slot state of the section (rings, mailboxes) and only then publishes itself,
//! so other members never attach to state being reset. The words are the only
//! thing this module touches; what a slot owns is the section's business.

use core::sync::atomic::Ordering;

use crate::notify::PeerId;
use crate::region::{Le32, Region, RegionError};

/// Marks a slot whose new member is still resetting its state.
const JOINING: u32 = 1 << 31;

/// Why a slot operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// The slot number is not below the slot count.
    NoSuchSlot,
    /// The slot word holds no peer id (a damaged or hostile value).
    NotAPeer,
    /// The region refused an access.
    Region(RegionError),
}

impl SlotError {
    /// A short description, for the protocols' `Invalid(&'static str)` errors.
    pub fn describe(&self) -> &'static str {
        match self {
            SlotError::NoSuchSlot => "no such slot",
            SlotError::NotAPeer => "member slot holds no peer id",
            SlotError::Region(_) => "member slot outside the region",
        }
    }
}

impl From<RegionError> for SlotError {
    fn from(e: RegionError) -> Self {
        SlotError::Region(e)
    }
}

/// What a slot word says, decoded without trusting it (for inspection; the
/// protocols themselves go through [`MemberSlots::member`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// 0: free.
    Free,
    /// `(peer + 1) | JOINING`: `peer` is resetting the slot's state (counts as
    /// free to others).
    Joining(PeerId),
    /// `peer + 1`: taken by `peer`.
    Member(PeerId),
    /// Anything else: a damaged or hostile word, as read.
    Damaged(u32),
}

impl SlotState {
    /// Decodes a slot word as read from the region.
    pub const fn decode(word: u32) -> Self {
        const fn peer(id_plus_one: u32) -> Option<PeerId> {
            match id_plus_one {
                1..=65536 => Some((id_plus_one - 1) as PeerId),
                _ => None,
            }
        }
        if word == 0 {
            return SlotState::Free;
        }
        match (word & JOINING != 0, peer(word & !JOINING)) {
            (false, Some(p)) => SlotState::Member(p),
            (true, Some(p)) => SlotState::Joining(p),
            (_, None) => SlotState::Damaged(word),
        }
    }
}

/// An array of member slots at a fixed, checked place in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSlots {
    at: usize,
    count: u32,
}

impl MemberSlots {
    /// The `count` slots whose words start at absolute offset `at` (4-byte aligned;
    /// every access is still bounds-checked by the region).
    pub const fn new(at: usize, count: u32) -> Self {
        MemberSlots { at, count }
    }

    /// Bytes `count` slots take.
    pub const fn size(count: u32) -> usize {
        4 * count as usize
    }

    /// Number of slots.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Marks every slot free. Only for a section no one uses yet.
    pub fn clear<R: Region + ?Sized>(&self, region: &R) -> Result<(), RegionError> {
        region.fill(self.at, Self::size(self.count), 0)
    }

    fn word_at(&self, slot: u32) -> Le32 {
        Le32::at(self.at).index(slot as usize, 4)
    }

    fn word<R: Region + ?Sized>(&self, region: &R, slot: u32) -> Result<u32, SlotError> {
        if slot >= self.count {
            return Err(SlotError::NoSuchSlot);
        }
        Ok(self.word_at(slot).load(region, Ordering::Acquire)?)
    }

    /// The word of `slot` as read, not validated (for inspection: decode it with
    /// [`SlotState::decode`]).
    pub fn raw<R: Region + ?Sized>(&self, region: &R, slot: u32) -> Result<u32, SlotError> {
        self.word(region, slot)
    }

    /// The peer in `slot`, if it is taken (a slot still being set up by a joining
    /// peer counts as free). A hostile value is reported as is: callers only use it
    /// to address doorbells, which the transport validates.
    pub fn member<R: Region + ?Sized>(
        &self,
        region: &R,
        slot: u32,
    ) -> Result<Option<PeerId>, SlotError> {
        match self.word(region, slot)? {
            0 => Ok(None),
            raw if raw & JOINING != 0 => Ok(None),
            raw @ 1..=65536 => Ok(Some((raw - 1) as PeerId)),
            _ => Err(SlotError::NotAPeer),
        }
    }

    /// The slot of `peer`, if it is a member (damaged slots are skipped).
    pub fn slot_of<R: Region + ?Sized>(&self, region: &R, peer: PeerId) -> Option<u32> {
        (0..self.count).find(|&slot| self.member(region, slot) == Ok(Some(peer)))
    }

    /// Takes a slot for `peer` (or finds the one it already holds, after a
    /// restart). A free slot is first marked as joining, `reset(slot)` clears what
    /// the slot owns (a departed member's leftovers), and only then is the peer
    /// published. `Ok(None)`: every slot is taken. If `reset` fails the slot is
    /// freed again.
    pub fn join<R: Region + ?Sized, E: From<RegionError>>(
        &self,
        region: &R,
        peer: PeerId,
        mut reset: impl FnMut(u32) -> Result<(), E>,
    ) -> Result<Option<u32>, E> {
        if let Some(slot) = self.slot_of(region, peer) {
            return Ok(Some(slot));
        }
        let word = u32::from(peer) + 1;
        for slot in 0..self.count {
            if self
                .word_at(slot)
                .compare_exchange(region, 0, word | JOINING)?
                .is_ok()
            {
                if let Err(e) = reset(slot) {
                    self.word_at(slot).store(region, 0, Ordering::Release)?;
                    return Err(e);
                }
                self.word_at(slot).store(region, word, Ordering::Release)?;
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// Frees the slot of a peer that is gone. Returns whether it held one.
    pub fn evict<R: Region + ?Sized>(&self, region: &R, peer: PeerId) -> Result<bool, SlotError> {
        let Some(slot) = self.slot_of(region, peer) else {
            return Ok(false);
        };
        Ok(self
            .word_at(slot)
            .compare_exchange(region, u32::from(peer) + 1, 0)?
            .is_ok())
    }

    /// The members and their slots (damaged slots are skipped).
    pub fn members<'a, R: Region + ?Sized>(
        &'a self,
        region: &'a R,
    ) -> impl Iterator<Item = (u32, PeerId)> + 'a {
        (0..self.count)
            .filter_map(move |slot| self.member(region, slot).ok().flatten().map(|p| (slot, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapRegion;

    #[test]
    fn peers_join_once_leave_and_damaged_words_are_reported() {
        let region = HeapRegion::new(64);
        let slots = MemberSlots::new(16, 3);
        let mut resets = alloc::vec::Vec::new();
        let mut join = |peer| {
            slots.join(&*region, peer, |slot| {
                resets.push(slot);
                Ok::<(), RegionError>(())
            })
        };
        assert_eq!(join(7).unwrap(), Some(0));
        assert_eq!(join(8).unwrap(), Some(1));
        assert_eq!(join(7).unwrap(), Some(0), "a restarted peer keeps its slot");
        assert_eq!(join(9).unwrap(), Some(2));
        assert_eq!(join(10).unwrap(), None);
        assert_eq!(resets, [0, 1, 2]);
        assert!(slots.evict(&*region, 8).unwrap());
        assert!(!slots.evict(&*region, 8).unwrap());
        assert_eq!(slots.member(&*region, 1), Ok(None));
        region
            .store_u32(16 + 4, 0x7000_0000, Ordering::Relaxed)
            .unwrap();
        assert_eq!(slots.member(&*region, 1), Err(SlotError::NotAPeer));
        assert_eq!(slots.member(&*region, 3), Err(SlotError::NoSuchSlot));
        assert_eq!(
            slots.members(&*region).collect::<alloc::vec::Vec<_>>(),
            [(0, 7), (2, 9)]
        );
    }

    #[test]
    fn slot_words_decode_for_inspection() {
        assert_eq!(SlotState::decode(0), SlotState::Free);
        assert_eq!(SlotState::decode(1), SlotState::Member(0));
        assert_eq!(SlotState::decode(65536), SlotState::Member(65535));
        assert_eq!(SlotState::decode(8 | JOINING), SlotState::Joining(7));
        for damaged in [65537, JOINING, JOINING | 65537, u32::MAX, 0x7000_0000] {
            assert_eq!(SlotState::decode(damaged), SlotState::Damaged(damaged));
        }
        let region = HeapRegion::new(16);
        let slots = MemberSlots::new(0, 2);
        slots
            .join(&*region, 4, |_| Ok::<(), RegionError>(()))
            .unwrap();
        assert_eq!(slots.raw(&*region, 0), Ok(5));
        assert_eq!(slots.raw(&*region, 1), Ok(0));
        assert_eq!(slots.raw(&*region, 2), Err(SlotError::NoSuchSlot));
    }

    #[test]
    fn a_failed_reset_frees_the_slot_again() {
        let region = HeapRegion::new(64);
        let slots = MemberSlots::new(0, 2);
        let failed = slots.join(&*region, 3, |_| {
            Err(RegionError::OutOfBounds {
                offset: 0,
                len: 1,
                region_len: 0,
            })
        });
        assert!(failed.is_err());
        assert_eq!(region.load_u32(0, Ordering::Relaxed).unwrap(), 0);
    }
}
