//! A channel: one section holding a ring for every ordered pair of its members,
//! so any number of peers can send to each other without ever sharing bytes
//! (the seeds' third-instance corruption cannot happen).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `magic` = `b"CHN1"` |
//! | 4 | 4 | `max_members`: M, 2..=[`MAX_MEMBERS`] |
//! | 8 | 8 | `ring_size`: bytes per ring (ring header + data, a multiple of 128) |
//! | 16 | 2 | `vector`: the doorbell vector members ring for this channel |
//! | 18 | 2 | reserved |
//! | 20 | 4 | `state`: 1 initializing, 2 ready, 3 abandoned, else not claimed ([`SETUP`], see [`crate::setup`]) |
//! | 64 | 4·M | member slots: peer id + 1, 0 = free (claimed by compare-and-swap, see [`crate::members`]) |
//! | rings | M·(M-1)·ring_size | ring `from → to` at index `from·(M-1) + (to < from ? to : to-1)`, where `from`, `to` are slot numbers |
//!
//! The rings start at the first 128-byte boundary after the slots. Everything is
//! re-validated against the section on open: a hostile peer can rewrite the
//! header, but it cannot make a member read or write outside the section.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::members::{MemberSlots, SlotError};
use crate::notify::{PeerId, Vector};
use crate::region::{Le16, Le32, Le64, Region, RegionError};
use crate::ring::{self, RingError, RingLayout};
use crate::setup::{SetupError, SetupState, SetupWord};

/// Most members a channel can have.
pub const MAX_MEMBERS: u32 = 64;
const MAGIC: u32 = u32::from_le_bytes(*b"CHN1");
const MAGIC_AT: Le32 = Le32::at(0);
const MAX_MEMBERS_AT: Le32 = Le32::at(4);
const RING_SIZE_AT: Le64 = Le64::at(8);
const VECTOR_AT: Le16 = Le16::at(16);
const STATE_AT: usize = 20;
const SLOTS_AT: usize = 64;
const EMPTY: u32 = 0;
const INITIALIZING: u32 = SETUP.initializing;

/// A channel's setup word (see [`crate::setup`]).
pub const SETUP: SetupWord = SetupWord::numbered(STATE_AT);

/// Why a channel operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelLayoutError {
    /// The section does not hold a channel (or holds a damaged one).
    Invalid(&'static str),
    /// Another peer is still setting the channel up; try again shortly.
    Initializing,
    /// Every member slot is taken.
    Full {
        /// Slots the channel has.
        max_members: u32,
    },
    /// The peer is not a member of the channel.
    NotMember(PeerId),
    /// A ring failed.
    Ring(RingError),
    /// The region refused an access.
    Region(RegionError),
}

impl fmt::Display for ChannelLayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelLayoutError::Invalid(what) => write!(f, "not a valid channel: {what}"),
            ChannelLayoutError::Initializing => {
                f.write_str("the channel is being set up by another peer")
            }
            ChannelLayoutError::Full { max_members } => {
                write!(f, "the channel is full ({max_members} members)")
            }
            ChannelLayoutError::NotMember(peer) => {
                write!(f, "peer {peer} is not a member of the channel")
            }
            ChannelLayoutError::Ring(e) => write!(f, "{e}"),
            ChannelLayoutError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ChannelLayoutError {}

impl From<RingError> for ChannelLayoutError {
    fn from(e: RingError) -> Self {
        ChannelLayoutError::Ring(e)
    }
}

impl From<RegionError> for ChannelLayoutError {
    fn from(e: RegionError) -> Self {
        ChannelLayoutError::Region(e)
    }
}

impl From<SetupError> for ChannelLayoutError {
    fn from(e: SetupError) -> Self {
        match e {
            // Given up on by another peer: its replacement is being set up.
            SetupError::Abandoned => ChannelLayoutError::Initializing,
            SetupError::Region(e) => ChannelLayoutError::Region(e),
        }
    }
}

impl From<SlotError> for ChannelLayoutError {
    fn from(e: SlotError) -> Self {
        match e {
            SlotError::Region(e) => ChannelLayoutError::Region(e),
            other => ChannelLayoutError::Invalid(other.describe()),
        }
    }
}

/// How a new channel is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelShape {
    /// Member slots.
    pub max_members: u32,
    /// Data bytes per ring (a power of two, at least 64).
    pub ring_capacity: usize,
    /// The doorbell vector of the channel.
    pub vector: Vector,
}

impl ChannelShape {
    /// Checks the shape: 2 to [`MAX_MEMBERS`] members, a ring capacity that is a
    /// power of two of at least [`ring::MIN_CAPACITY`], a size that fits. Done
    /// before anything is created, so that a bad shape leaves nothing behind.
    pub fn check(&self) -> Result<usize, ChannelLayoutError> {
        if !(2..=MAX_MEMBERS).contains(&self.max_members) {
            return Err(ChannelLayoutError::Invalid("members must be 2 to 64"));
        }
        if !self.ring_capacity.is_power_of_two() || self.ring_capacity < ring::MIN_CAPACITY {
            return Err(ChannelLayoutError::Invalid(
                "ring capacity must be a power of two of at least 64",
            ));
        }
        self.section_size()
            .ok_or(ChannelLayoutError::Invalid("shape too large"))
    }

    /// Bytes of section this shape needs.
    pub fn section_size(&self) -> Option<usize> {
        let m = self.max_members as usize;
        let rings = m.checked_mul(m.checked_sub(1)?)?;
        rings_offset(self.max_members)?
            .checked_add(rings.checked_mul(RingLayout::section_size(self.ring_capacity))?)
    }
}

fn rings_offset(max_members: u32) -> Option<usize> {
    (SLOTS_AT + 4 * max_members as usize).checked_next_multiple_of(128)
}

/// A channel's geometry, read from its header and checked against its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLayout {
    base: usize,
    max_members: u32,
    ring_size: usize,
    vector: Vector,
    region_len: usize,
}

impl ChannelLayout {
    /// Writes a new, empty channel into the section at `offset` of `size` bytes.
    /// Only one peer may do this, right after allocating the section.
    pub fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: ChannelShape,
    ) -> Result<Self, ChannelLayoutError> {
        let needed = shape.check()?;
        if needed > size {
            return Err(ChannelLayoutError::Invalid(
                "section too small for the shape",
            ));
        }
        crate::region::check_bounds(offset, size, region.len())?;
        SETUP.claim(region, offset)?;
        // The section is new and ours alone (the directory handed it to us), but
        // its bytes may be left over from an earlier use of the region. The setup
        // word is ours to move by compare-and-exchange only.
        region.fill(offset, STATE_AT, 0)?;
        let after_state = STATE_AT + 4;
        region.fill(
            offset + after_state,
            SLOTS_AT + 4 * shape.max_members as usize - after_state,
            0,
        )?;
        MAX_MEMBERS_AT
            .of(offset)
            .store(region, shape.max_members, Ordering::Relaxed)?;
        RING_SIZE_AT.of(offset).store(
            region,
            RingLayout::section_size(shape.ring_capacity) as u64,
            Ordering::Relaxed,
        )?;
        VECTOR_AT
            .of(offset)
            .store(region, shape.vector, Ordering::Relaxed)?;
        let layout = ChannelLayout {
            base: offset,
            max_members: shape.max_members,
            ring_size: RingLayout::section_size(shape.ring_capacity),
            vector: shape.vector,
            region_len: region.len(),
        };
        for index in 0..layout.ring_count() {
            layout.ring_at(index)?.init(region)?;
        }
        MAGIC_AT
            .of(offset)
            .store(region, MAGIC, Ordering::Relaxed)?;
        SETUP.publish(region, offset)?;
        Ok(layout)
    }

    /// Opens the channel in the section at `offset` of `size` bytes, validating
    /// every header field against the section.
    pub fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, ChannelLayoutError> {
        crate::region::check_bounds(offset, size, region.len())?;
        match SETUP.state(region, offset)? {
            SetupState::Ready => {}
            SetupState::Pending(EMPTY | INITIALIZING) | SetupState::Abandoned => {
                return Err(ChannelLayoutError::Initializing);
            }
            SetupState::Pending(_) => return Err(ChannelLayoutError::Invalid("unknown state")),
        }
        if MAGIC_AT.of(offset).load(region, Ordering::Relaxed)? != MAGIC {
            return Err(ChannelLayoutError::Invalid("bad magic"));
        }
        let max_members = MAX_MEMBERS_AT.of(offset).load(region, Ordering::Relaxed)?;
        if !(2..=MAX_MEMBERS).contains(&max_members) {
            return Err(ChannelLayoutError::Invalid("member count out of range"));
        }
        let ring_size = usize::try_from(RING_SIZE_AT.of(offset).load(region, Ordering::Relaxed)?)
            .map_err(|_| ChannelLayoutError::Invalid("ring size out of range"))?;
        let capacity = ring_size
            .checked_sub(ring::HEADER)
            .filter(|c| c.is_power_of_two() && *c >= ring::MIN_CAPACITY)
            .ok_or(ChannelLayoutError::Invalid("ring size out of range"))?;
        let shape = ChannelShape {
            max_members,
            ring_capacity: capacity,
            vector: 0,
        };
        if shape.section_size().is_none_or(|needed| needed > size) {
            return Err(ChannelLayoutError::Invalid("rings do not fit the section"));
        }
        let vector = VECTOR_AT.of(offset).load(region, Ordering::Relaxed)?;
        Ok(ChannelLayout {
            base: offset,
            max_members,
            ring_size,
            vector,
            region_len: region.len(),
        })
    }

    /// Member slots.
    pub fn max_members(&self) -> u32 {
        self.max_members
    }

    /// The doorbell vector members ring for this channel.
    pub fn vector(&self) -> Vector {
        self.vector
    }

    /// Number of rings (one per ordered pair of slots).
    pub fn ring_count(&self) -> usize {
        let m = self.max_members as usize;
        m * (m - 1)
    }

    /// The ring from slot `from` to slot `to`.
    pub fn ring(&self, from: u32, to: u32) -> Result<RingLayout, ChannelLayoutError> {
        if from >= self.max_members || to >= self.max_members || from == to {
            return Err(ChannelLayoutError::Invalid("no such ring"));
        }
        let column = if to < from { to } else { to - 1 };
        self.ring_at((from * (self.max_members - 1) + column) as usize)
    }

    fn ring_at(&self, index: usize) -> Result<RingLayout, ChannelLayoutError> {
        let start =
            rings_offset(self.max_members).ok_or(ChannelLayoutError::Invalid("too large"))?;
        let offset = index
            .checked_mul(self.ring_size)
            .and_then(|o| o.checked_add(start))
            .and_then(|o| o.checked_add(self.base))
            .ok_or(ChannelLayoutError::Invalid("ring offset overflows"))?;
        Ok(RingLayout::new(self.region_len, offset, self.ring_size)?)
    }

    fn slots(&self) -> MemberSlots {
        MemberSlots::new(self.base + SLOTS_AT, self.max_members)
    }

    /// The peer in slot `slot`, if it is taken (a slot still being set up by a
    /// joining peer counts as free). A hostile value is reported as is: callers
    /// only use it to address doorbells, which the transport validates.
    pub fn member<R: Region + ?Sized>(
        &self,
        region: &R,
        slot: u32,
    ) -> Result<Option<PeerId>, ChannelLayoutError> {
        Ok(self.slots().member(region, slot)?)
    }

    /// The slot of `peer`, if it is a member.
    pub fn slot_of<R: Region + ?Sized>(
        &self,
        region: &R,
        peer: PeerId,
    ) -> Result<Option<u32>, ChannelLayoutError> {
        Ok(self.slots().slot_of(region, peer))
    }

    /// Takes a slot for `peer` (or finds the one it already holds, after a
    /// restart). A free slot is first marked as joining, its rings are reset (they
    /// may hold a departed member's leftovers), and only then is the peer
    /// published, so the others never attach to a ring being reset.
    pub fn join<R: Region + ?Sized>(
        &self,
        region: &R,
        peer: PeerId,
    ) -> Result<u32, ChannelLayoutError> {
        let joined = self.slots().join(region, peer, |slot| {
            for other in (0..self.max_members).filter(|&o| o != slot) {
                self.ring(slot, other)?.init(region)?;
                self.ring(other, slot)?.init(region)?;
            }
            Ok::<(), ChannelLayoutError>(())
        })?;
        joined.ok_or(ChannelLayoutError::Full {
            max_members: self.max_members,
        })
    }

    /// Frees the slot of a peer that is gone (the server said so). Its rings are
    /// left alone until a new member takes the slot, so members still draining
    /// them are not disturbed.
    pub fn evict<R: Region + ?Sized>(
        &self,
        region: &R,
        peer: PeerId,
    ) -> Result<bool, ChannelLayoutError> {
        Ok(self.slots().evict(region, peer)?)
    }

    /// The members and their slots.
    pub fn members<'a, R: Region + ?Sized>(
        &'a self,
        region: &'a R,
    ) -> impl Iterator<Item = (u32, PeerId)> + 'a {
        (0..self.max_members)
            .filter_map(move |slot| self.member(region, slot).ok().flatten().map(|p| (slot, p)))
    }
}

/// A channel header as read, nothing validated: what [`ChannelLayout::open`]
/// checks, for showing to people. Values may be hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelHeader {
    /// The magic bytes (`CHN1` in a channel).
    pub magic: [u8; 4],
    /// The setup word ([`SETUP`]).
    pub state: u32,
    /// Member slots.
    pub max_members: u32,
    /// Bytes per ring, ring header included.
    pub ring_size: u64,
    /// The doorbell vector.
    pub vector: Vector,
}

impl crate::section::SectionProtocol for ChannelLayout {
    const KIND: crate::directory::SectionKind = crate::directory::SectionKind::Channel;
    const SETUP: SetupWord = SETUP;
    type Shape = ChannelShape;
    type Snapshot = ChannelHeader;
    type Error = ChannelLayoutError;

    fn section_size(shape: &ChannelShape) -> Result<usize, ChannelLayoutError> {
        shape.check()
    }

    fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: &ChannelShape,
    ) -> Result<Self, ChannelLayoutError> {
        ChannelLayout::create(region, offset, size, *shape)
    }

    fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, ChannelLayoutError> {
        ChannelLayout::open(region, offset, size)
    }

    fn is_initializing(error: &ChannelLayoutError) -> bool {
        matches!(error, ChannelLayoutError::Initializing)
    }

    fn wrong_kind() -> ChannelLayoutError {
        ChannelLayoutError::Invalid("the section has another kind")
    }

    fn snapshot<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<ChannelHeader, ChannelLayoutError> {
        crate::region::check_bounds(offset, size, region.len())?;
        if size < SLOTS_AT {
            return Err(ChannelLayoutError::Invalid("section too small"));
        }
        let mut magic = [0u8; 4];
        region.read(offset, &mut magic)?;
        Ok(ChannelHeader {
            magic,
            state: Le32::at(offset + STATE_AT).load(region, Ordering::Acquire)?,
            max_members: MAX_MEMBERS_AT.of(offset).load(region, Ordering::Relaxed)?,
            ring_size: RING_SIZE_AT.of(offset).load(region, Ordering::Relaxed)?,
            vector: VECTOR_AT.of(offset).load(region, Ordering::Relaxed)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapRegion;
    use crate::ring::{Consumer, Producer};
    use proptest::prelude::*;

    const SHAPE: ChannelShape = ChannelShape {
        max_members: 4,
        ring_capacity: 256,
        vector: 1,
    };

    fn channel() -> (HeapRegion, ChannelLayout) {
        let size = SHAPE.section_size().unwrap();
        let region = HeapRegion::new(4096 + size);
        let layout = ChannelLayout::create(&*region, 4096, size, SHAPE).unwrap();
        (region, layout)
    }

    #[test]
    fn created_channels_open_with_the_same_geometry() {
        let (region, layout) = channel();
        let size = SHAPE.section_size().unwrap();
        assert_eq!(ChannelLayout::open(&*region, 4096, size).unwrap(), layout);
        assert_eq!(layout.vector(), 1);
        assert_eq!(layout.ring_count(), 12);
        assert_eq!(
            ChannelLayout::open(&*region, 4096, size - 1),
            Err(ChannelLayoutError::Invalid("rings do not fit the section"))
        );
    }

    #[test]
    fn every_ordered_pair_has_its_own_ring() {
        let (region, layout) = channel();
        let mut offsets = alloc::vec::Vec::new();
        for from in 0..4 {
            for to in 0..4 {
                if from != to {
                    let ring = layout.ring(from, to).unwrap();
                    offsets.push(ring.snapshot(&*region).unwrap().capacity);
                }
            }
        }
        assert_eq!(offsets.len(), 12);
        assert!(layout.ring(1, 1).is_err());
        assert!(layout.ring(4, 0).is_err());
        // Writing every ring never touches another: send one message on each.
        for from in 0..4 {
            for to in (0..4).filter(|&t| t != from) {
                let mut tx = Producer::attach(&*region, layout.ring(from, to).unwrap()).unwrap();
                tx.try_send(&[from as u8, to as u8]).unwrap();
                tx.publish().unwrap();
            }
        }
        for from in 0..4 {
            for to in (0..4).filter(|&t| t != from) {
                let mut rx = Consumer::attach(&*region, layout.ring(from, to).unwrap()).unwrap();
                let mut buf = [0u8; 8];
                assert_eq!(rx.try_recv(&mut buf).unwrap(), Some(2));
                assert_eq!(&buf[..2], &[from as u8, to as u8]);
                assert_eq!(rx.try_recv(&mut buf).unwrap(), None);
            }
        }
    }

    #[test]
    fn peers_join_once_and_are_evicted_with_clean_rings() {
        let (region, layout) = channel();
        assert_eq!(layout.join(&*region, 10).unwrap(), 0);
        assert_eq!(layout.join(&*region, 11).unwrap(), 1);
        assert_eq!(
            layout.join(&*region, 10).unwrap(),
            0,
            "a restarted peer keeps its slot"
        );
        assert_eq!(layout.join(&*region, 12).unwrap(), 2);
        assert_eq!(layout.join(&*region, 13).unwrap(), 3);
        assert_eq!(
            layout.join(&*region, 14),
            Err(ChannelLayoutError::Full { max_members: 4 })
        );
        let mut tx = Producer::attach(&*region, layout.ring(1, 0).unwrap()).unwrap();
        tx.try_send(b"stale").unwrap();
        tx.publish().unwrap();
        assert!(layout.evict(&*region, 11).unwrap());
        assert_eq!(layout.member(&*region, 1).unwrap(), None);
        assert_eq!(layout.join(&*region, 14).unwrap(), 1);
        let mut rx = Consumer::attach(&*region, layout.ring(1, 0).unwrap()).unwrap();
        assert_eq!(
            rx.try_recv(&mut [0u8; 8]).unwrap(),
            None,
            "evicted rings are empty"
        );
        assert_eq!(
            layout.members(&*region).collect::<alloc::vec::Vec<_>>(),
            alloc::vec![(0, 10), (1, 14), (2, 12), (3, 13)]
        );
    }

    proptest! {
        // Under Miri: few cases, and no failure files (Miri isolates the file system).
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

        /// A hostile header never makes open hand out a ring outside the section.
        #[test]
        fn hostile_headers_never_escape_the_section(
            writes in proptest::collection::vec((0usize..128, any::<u64>()), 1..12),
        ) {
            let (region, _) = channel();
            let size = SHAPE.section_size().unwrap();
            for (at, value) in writes {
                let _ = region.write(4096 + at, &value.to_le_bytes());
            }
            if let Ok(layout) = ChannelLayout::open(&*region, 4096, size) {
                for from in 0..layout.max_members() {
                    for to in (0..layout.max_members()).filter(|&t| t != from) {
                        if let Ok(ring) = layout.ring(from, to) {
                            let snapshot = ring.snapshot(&*region).unwrap();
                            prop_assert!(snapshot.capacity + ring::HEADER <= size);
                        }
                    }
                }
                for slot in 0..layout.max_members() {
                    let _ = layout.member(&*region, slot);
                }
            }
        }
    }
}
