//! A mailbox in the spirit of Zephyr's IPM (inter-processor mailbox): small
//! messages of an `id` and up to `max_data_size` bytes, one outstanding message per
//! sender and receiver, a doorbell per message and an optional completion (the
//! sender learns when the receiver has taken its message).
//!
//! One section (directory kind [`SectionKind::Mailbox`](crate::SectionKind)) holds
//! a header, the member slots ([`crate::members`]) and one box per ordered pair of
//! slots, so senders never share bytes and need no lock. All fields little-endian.
//!
//! Header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `magic` = `b"MBX1"` |
//! | 4 | 4 | `max_members`: M, 2..=[`MAX_MEMBERS`] |
//! | 8 | 4 | `max_data`: data bytes per message, 0..=[`MAX_DATA_LIMIT`] |
//! | 12 | 4 | `id_count`: ids are `0..id_count`, at least 1 |
//! | 16 | 2 | `vector`: the doorbell vector messages ring |
//! | 18 | 2 | `completion_vector`: the vector completions ring on the sender |
//! | 20 | 4 | `state`: 1 initializing, 2 ready, 3 abandoned, else not claimed ([`SETUP`], see [`crate::setup`]) |
//! | 64 | 4·M | member slots: peer id + 1, 0 = free |
//! | boxes | M·(M-1)·box_size | box `from → to` at index `from·(M-1) + (to < from ? to : to-1)` |
//!
//! The boxes start at the first 64-byte boundary after the slots; `box_size` is
//! `64 + max_data` rounded up to 64, so every box starts on its own cache line.
//!
//! Box:
//!
//! | offset | size | written by | field |
//! |---|---|---|---|
//! | 0 | 4 | both | `state`: bit 0 `FULL` (busy), bit 1 `WANT_COMPLETION`, bit 2 `RUNG` |
//! | 4 | 4 | sender | `id` |
//! | 8 | 4 | sender | `len`: bytes of data |
//! | 64 | max_data | sender | data |
//!
//! # Protocol
//!
//! **Send.** The sender refuses ([`MailboxLayoutError::Busy`]) while `FULL` is set (the
//! receiver has not taken the last message: Zephyr's `-EBUSY`). Otherwise it writes
//! `id`, `len` and the data, stores `state = FULL | RUNG?` with release, and rings
//! the receiver on `vector`. `RUNG` says that a doorbell goes with the message.
//!
//! **Take.** The receiver loads `state` with acquire; on `FULL` it reads and
//! validates `id < id_count` and `len <= max_data`, copies the data, then clears
//! `state` to 0 by compare-and-exchange: that is the completion. A message that
//! fails validation is cleared too and reported once as
//! [`MailboxLayoutError::BadMessage`]. If the cleared word had `WANT_COMPLETION`, the
//! receiver rings the sender on `completion_vector`.
//!
//! **Completion.** A sender that wants to sleep until its message is taken sets
//! `WANT_COMPLETION` by compare-and-exchange while `FULL` is still set
//! ([`MailboxLayout::arm_completion`]); if `FULL` is already clear it need not sleep.
//! Because the receiver clears with compare-and-exchange too, either it sees the
//! flag (and rings) or the sender sees the message taken: no lost wake-up.
//!
//! **Bare doorbells.** Zephyr's ivshmem IPM driver only rings vector 0 and writes
//! nothing. The std side counts doorbells against taken messages with `RUNG` and
//! delivers a ring with no message as an empty message (id 0, no data).
//!
//! Every header field is re-validated against the section on open, and every box
//! field on each take: a hostile peer can lie, but it cannot make a member panic or
//! access memory outside the section.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::members::{MemberSlots, SlotError};
use crate::notify::{PeerId, Vector};
use crate::region::{Le32, Region, RegionError};
use crate::setup::{SetupError, SetupState, SetupWord};

/// Most members a mailbox can have.
pub const MAX_MEMBERS: u32 = 64;
/// Largest `max_data` a mailbox can be created or opened with.
pub const MAX_DATA_LIMIT: u32 = 64 * 1024;
/// Bytes before a box's data.
pub const BOX_HEADER: usize = 64;

const MAGIC: u32 = u32::from_le_bytes(*b"MBX1");
const MAGIC_AT: Le32 = Le32::at(0);
const MAX_MEMBERS_AT: Le32 = Le32::at(4);
const MAX_DATA_AT: Le32 = Le32::at(8);
const ID_COUNT_AT: Le32 = Le32::at(12);
const VECTORS_AT: Le32 = Le32::at(16);
const STATE_AT: usize = 20;
const SLOTS_AT: usize = 64;
const EMPTY: u32 = 0;
const INITIALIZING: u32 = SETUP.initializing;
const READY: u32 = SETUP.ready;
const ABANDONED: u32 = SETUP.abandoned;

/// A mailbox's setup word (see [`crate::setup`]).
pub const SETUP: SetupWord = SetupWord::numbered(STATE_AT);

const BOX_STATE: Le32 = Le32::at(0);
const BOX_ID: Le32 = Le32::at(4);
const BOX_LEN: Le32 = Le32::at(8);

/// The box holds a message not yet taken.
const FULL: u32 = 1;
/// The sender sleeps until the message is taken: ring it on the completion vector.
const WANT_COMPLETION: u32 = 2;
/// The sender rings the receiver's doorbell for this message.
const RUNG: u32 = 4;
const KNOWN_BITS: u32 = FULL | WANT_COMPLETION | RUNG;
/// Compare-and-exchange retries on a box word; an honest sender changes it at
/// most once while it is full.
const CAS_ATTEMPTS: usize = 8;

/// Why a mailbox operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxLayoutError {
    /// The section does not hold a mailbox (or holds a damaged one).
    Invalid(&'static str),
    /// Another peer is still setting the mailbox up; try again shortly.
    Initializing,
    /// Every member slot is taken.
    Full {
        /// Slots the mailbox has.
        max_members: u32,
    },
    /// The receiver has not taken the previous message yet.
    Busy,
    /// The data is longer than the mailbox's `max_data_size`.
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// Largest message data.
        max: usize,
    },
    /// The id is not below the mailbox's id count.
    BadId {
        /// Id offered.
        id: u32,
        /// Ids the mailbox has.
        id_count: u32,
    },
    /// The waiting message has more data than the caller's buffer (it stays).
    BufferTooSmall {
        /// Its length.
        len: usize,
    },
    /// A sender left a message that cannot be right; it was discarded.
    BadMessage {
        /// The sender's slot.
        from_slot: u32,
        /// The state word as read.
        state: u32,
        /// The id as read.
        id: u32,
        /// The length as read.
        len: u32,
    },
    /// The region refused an access.
    Region(RegionError),
}

impl fmt::Display for MailboxLayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MailboxLayoutError::Invalid(what) => write!(f, "not a valid mailbox: {what}"),
            MailboxLayoutError::Initializing => {
                f.write_str("the mailbox is being set up by another peer")
            }
            MailboxLayoutError::Full { max_members } => {
                write!(f, "the mailbox is full ({max_members} members)")
            }
            MailboxLayoutError::Busy => {
                f.write_str("the receiver has not taken the previous message yet")
            }
            MailboxLayoutError::TooLarge { len, max } => write!(
                f,
                "{len} bytes of data exceed the mailbox's maximum of {max} bytes"
            ),
            MailboxLayoutError::BadId { id, id_count } => write!(
                f,
                "id {id} is out of range (the mailbox has ids 0..{id_count})"
            ),
            MailboxLayoutError::BufferTooSmall { len } => {
                write!(
                    f,
                    "the next message has {len} bytes, more than the buffer holds"
                )
            }
            MailboxLayoutError::BadMessage {
                from_slot,
                state,
                id,
                len,
            } => write!(
                f,
                "discarded a bad message from slot {from_slot} (state {state:#x}, id {id}, length {len})"
            ),
            MailboxLayoutError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for MailboxLayoutError {}

impl From<RegionError> for MailboxLayoutError {
    fn from(e: RegionError) -> Self {
        MailboxLayoutError::Region(e)
    }
}

impl From<SetupError> for MailboxLayoutError {
    fn from(e: SetupError) -> Self {
        match e {
            // Given up on by another peer: its replacement is being set up.
            SetupError::Abandoned => MailboxLayoutError::Initializing,
            SetupError::Region(e) => MailboxLayoutError::Region(e),
        }
    }
}

impl From<SlotError> for MailboxLayoutError {
    fn from(e: SlotError) -> Self {
        match e {
            SlotError::Region(e) => MailboxLayoutError::Region(e),
            other => MailboxLayoutError::Invalid(other.describe()),
        }
    }
}

/// How a new mailbox is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxShape {
    /// Member slots (2..=[`MAX_MEMBERS`]).
    pub max_members: u32,
    /// Data bytes per message (0..=[`MAX_DATA_LIMIT`]).
    pub max_data: u32,
    /// Ids are `0..id_count` (at least 1).
    pub id_count: u32,
    /// The doorbell vector messages ring.
    pub vector: Vector,
    /// The vector completions ring on the sender.
    pub completion_vector: Vector,
}

impl MailboxShape {
    /// Checks the shape, before anything is created.
    pub fn check(&self) -> Result<(), MailboxLayoutError> {
        if !(2..=MAX_MEMBERS).contains(&self.max_members) {
            return Err(MailboxLayoutError::Invalid("member count out of range"));
        }
        if self.max_data > MAX_DATA_LIMIT {
            return Err(MailboxLayoutError::Invalid("data size out of range"));
        }
        if self.id_count == 0 {
            return Err(MailboxLayoutError::Invalid("no ids"));
        }
        Ok(())
    }

    /// Bytes of section this shape needs (`None` if out of range).
    pub fn section_size(&self) -> Option<usize> {
        self.check().ok()?;
        let m = self.max_members as usize;
        boxes_offset(self.max_members).checked_add(m * (m - 1) * box_size(self.max_data))
    }
}

fn boxes_offset(max_members: u32) -> usize {
    (SLOTS_AT + MemberSlots::size(max_members)).next_multiple_of(64)
}

fn box_size(max_data: u32) -> usize {
    BOX_HEADER + (max_data as usize).next_multiple_of(64)
}

/// What the header's setup `state` word means: `None` for a value no peer
/// writes.
fn state_name(state: u32) -> Option<&'static str> {
    match state {
        EMPTY => Some("empty"),
        INITIALIZING => Some("initializing"),
        READY => Some("ready"),
        ABANDONED => Some("abandoned"),
        _ => None,
    }
}

/// A mailbox header as read, nothing validated: what [`MailboxLayout::open`]
/// checks, for showing to people (`ivlink inspect`). Values may be hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxHeader {
    /// The magic bytes (`MBX1` in a mailbox).
    pub magic: [u8; 4],
    /// Setup state: 0 empty, 1 initializing, 2 ready.
    pub state: u32,
    /// Member slots.
    pub max_members: u32,
    /// Data bytes per message.
    pub max_data: u32,
    /// Number of ids.
    pub id_count: u32,
    /// The doorbell vector messages ring.
    pub vector: Vector,
    /// The vector completions ring on the sender.
    pub completion_vector: Vector,
}

impl MailboxHeader {
    /// Bytes of section the header needs (the member slots start there).
    pub const SIZE: usize = SLOTS_AT;

    /// Reads the header of the section at `offset` of `size` bytes. Fails only if
    /// the section lies outside the region, is smaller than [`Self::SIZE`] or
    /// misaligned for word access.
    pub fn read<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, MailboxLayoutError> {
        crate::region::check_bounds(offset, size, region.len())?;
        if size < Self::SIZE {
            return Err(MailboxLayoutError::Invalid("section too small"));
        }
        let state = SETUP.word(offset).load(region, Ordering::Acquire)?;
        let mut magic = [0u8; 4];
        region.read(offset, &mut magic)?;
        let vectors = VECTORS_AT.of(offset).load(region, Ordering::Relaxed)?;
        Ok(MailboxHeader {
            magic,
            state,
            max_members: MAX_MEMBERS_AT.of(offset).load(region, Ordering::Relaxed)?,
            max_data: MAX_DATA_AT.of(offset).load(region, Ordering::Relaxed)?,
            id_count: ID_COUNT_AT.of(offset).load(region, Ordering::Relaxed)?,
            vector: vectors as Vector,
            completion_vector: (vectors >> 16) as Vector,
        })
    }

    /// Whether the magic is `MBX1`.
    pub fn has_magic(&self) -> bool {
        u32::from_le_bytes(self.magic) == MAGIC
    }

    /// The meaning of `state` (`"empty"`, `"initializing"`, `"ready"`), or `None`
    /// for a value no peer writes.
    pub fn state_name(&self) -> Option<&'static str> {
        state_name(self.state)
    }
}

/// A box's words as read, not validated (for inspection; [`MailboxLayout::take`]
/// validates them before use). `id` and `len` only mean something while the box
/// is full: after a take they hold the last message's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxSnapshot {
    /// The state word: bit 0 full (busy), bit 1 want completion, bit 2 rung.
    pub state: u32,
    /// The message id.
    pub id: u32,
    /// The data length.
    pub len: u32,
}

impl BoxSnapshot {
    /// The busy bit: a message waits to be taken.
    pub fn is_full(&self) -> bool {
        self.state & FULL != 0
    }

    /// The sender sleeps until the message is taken (rung on the completion
    /// vector).
    pub fn wants_completion(&self) -> bool {
        self.state & WANT_COMPLETION != 0
    }

    /// The sender rings the receiver's doorbell for this message.
    pub fn rung(&self) -> bool {
        self.state & RUNG != 0
    }

    /// State bits no peer writes (non-zero only in a damaged box).
    pub fn unknown_bits(&self) -> u32 {
        self.state & !KNOWN_BITS
    }
}

/// A message taken from a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The sender's slot (look its peer up with [`MailboxLayout::member`]).
    pub from_slot: u32,
    /// The message id (validated: below the id count).
    pub id: u32,
    /// Bytes of data copied into the caller's buffer (validated: at most
    /// `max_data_size`).
    pub len: usize,
    /// The sender waits for completion: ring it on the completion vector.
    pub wants_completion: bool,
    /// The sender rang (or will ring) this receiver's doorbell for the message.
    pub rung: bool,
}

/// A mailbox's geometry, read from its header and checked against its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLayout {
    base: usize,
    shape: MailboxShape,
}

impl MailboxLayout {
    /// Writes a new, empty mailbox into the section at `offset` of `size` bytes.
    /// Only one peer may do this, right after allocating the section.
    pub fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: MailboxShape,
    ) -> Result<Self, MailboxLayoutError> {
        shape.check()?;
        let needed = shape
            .section_size()
            .ok_or(MailboxLayoutError::Invalid("too large"))?;
        if needed > size {
            return Err(MailboxLayoutError::Invalid(
                "section too small for the shape",
            ));
        }
        crate::region::check_bounds(offset, size, region.len())?;
        if offset % 64 != 0 {
            return Err(MailboxLayoutError::Invalid("section not 64-byte aligned"));
        }
        SETUP.claim(region, offset)?;
        // The section is ours alone (the directory just handed it out), but its
        // bytes may be left over from an earlier use of the region. The setup word
        // is ours to move by compare-and-exchange only.
        region.fill(offset, STATE_AT, 0)?;
        region.fill(offset + STATE_AT + 4, needed - STATE_AT - 4, 0)?;
        MAX_MEMBERS_AT
            .of(offset)
            .store(region, shape.max_members, Ordering::Relaxed)?;
        MAX_DATA_AT
            .of(offset)
            .store(region, shape.max_data, Ordering::Relaxed)?;
        ID_COUNT_AT
            .of(offset)
            .store(region, shape.id_count, Ordering::Relaxed)?;
        let vectors = u32::from(shape.vector) | (u32::from(shape.completion_vector) << 16);
        VECTORS_AT
            .of(offset)
            .store(region, vectors, Ordering::Relaxed)?;
        MAGIC_AT
            .of(offset)
            .store(region, MAGIC, Ordering::Relaxed)?;
        SETUP.publish(region, offset)?;
        Ok(MailboxLayout {
            base: offset,
            shape,
        })
    }

    /// Opens the mailbox in the section at `offset` of `size` bytes, validating
    /// every header field against the section.
    pub fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, MailboxLayoutError> {
        crate::region::check_bounds(offset, size, region.len())?;
        if offset % 64 != 0 {
            return Err(MailboxLayoutError::Invalid("section not 64-byte aligned"));
        }
        match SETUP.state(region, offset)? {
            SetupState::Ready => {}
            SetupState::Pending(EMPTY | INITIALIZING) | SetupState::Abandoned => {
                return Err(MailboxLayoutError::Initializing);
            }
            SetupState::Pending(_) => return Err(MailboxLayoutError::Invalid("unknown state")),
        }
        if MAGIC_AT.of(offset).load(region, Ordering::Relaxed)? != MAGIC {
            return Err(MailboxLayoutError::Invalid("bad magic"));
        }
        let vectors = VECTORS_AT.of(offset).load(region, Ordering::Relaxed)?;
        let shape = MailboxShape {
            max_members: MAX_MEMBERS_AT.of(offset).load(region, Ordering::Relaxed)?,
            max_data: MAX_DATA_AT.of(offset).load(region, Ordering::Relaxed)?,
            id_count: ID_COUNT_AT.of(offset).load(region, Ordering::Relaxed)?,
            vector: vectors as Vector,
            completion_vector: (vectors >> 16) as Vector,
        };
        shape.check()?;
        if shape.section_size().is_none_or(|needed| needed > size) {
            return Err(MailboxLayoutError::Invalid("boxes do not fit the section"));
        }
        Ok(MailboxLayout {
            base: offset,
            shape,
        })
    }

    /// The shape as created.
    pub fn shape(&self) -> MailboxShape {
        self.shape
    }

    /// Member slots.
    pub fn max_members(&self) -> u32 {
        self.shape.max_members
    }

    /// Largest message data, in bytes (Zephyr's `ipm_max_data_size_get`).
    pub fn max_data_size(&self) -> usize {
        self.shape.max_data as usize
    }

    /// Number of ids (ids are `0..id_count`).
    pub fn id_count(&self) -> u32 {
        self.shape.id_count
    }

    /// Largest id (Zephyr's `ipm_max_id_val_get`).
    pub fn max_id(&self) -> u32 {
        self.shape.id_count - 1
    }

    /// The doorbell vector messages ring.
    pub fn vector(&self) -> Vector {
        self.shape.vector
    }

    /// The vector completions ring on the sender.
    pub fn completion_vector(&self) -> Vector {
        self.shape.completion_vector
    }

    fn slots(&self) -> MemberSlots {
        MemberSlots::new(self.base + SLOTS_AT, self.shape.max_members)
    }

    /// Absolute offset of the box `from → to`.
    fn box_at(&self, from: u32, to: u32) -> Result<usize, MailboxLayoutError> {
        let m = self.shape.max_members;
        if from >= m || to >= m || from == to {
            return Err(MailboxLayoutError::Invalid("no such box"));
        }
        let column = if to < from { to } else { to - 1 };
        let index = (from * (m - 1) + column) as usize;
        // Cannot overflow: open/create checked that every box fits the section.
        Ok(self.base + boxes_offset(m) + index * box_size(self.shape.max_data))
    }

    fn reset_box<R: Region + ?Sized>(
        &self,
        region: &R,
        from: u32,
        to: u32,
    ) -> Result<(), MailboxLayoutError> {
        let at = self.box_at(from, to)?;
        BOX_STATE.of(at).store(region, 0, Ordering::Release)?;
        Ok(())
    }

    /// The peer in slot `slot`, if it is taken.
    pub fn member<R: Region + ?Sized>(
        &self,
        region: &R,
        slot: u32,
    ) -> Result<Option<PeerId>, MailboxLayoutError> {
        Ok(self.slots().member(region, slot)?)
    }

    /// The slot of `peer`, if it is a member.
    pub fn slot_of<R: Region + ?Sized>(&self, region: &R, peer: PeerId) -> Option<u32> {
        self.slots().slot_of(region, peer)
    }

    /// The word of member slot `slot` as read, not validated (for inspection:
    /// decode it with [`SlotState::decode`](crate::members::SlotState::decode)).
    pub fn slot_word<R: Region + ?Sized>(
        &self,
        region: &R,
        slot: u32,
    ) -> Result<u32, MailboxLayoutError> {
        Ok(self.slots().raw(region, slot)?)
    }

    /// The words of the box `from → to` as read, for inspection (the state word
    /// with acquire, so `id` and `len` belong to the message it announces).
    pub fn box_snapshot<R: Region + ?Sized>(
        &self,
        region: &R,
        from: u32,
        to: u32,
    ) -> Result<BoxSnapshot, MailboxLayoutError> {
        let at = self.box_at(from, to)?;
        Ok(BoxSnapshot {
            state: BOX_STATE.of(at).load(region, Ordering::Acquire)?,
            id: BOX_ID.of(at).load(region, Ordering::Relaxed)?,
            len: BOX_LEN.of(at).load(region, Ordering::Relaxed)?,
        })
    }

    /// Takes a slot for `peer` (or finds the one it already holds). The boxes to
    /// and from a newly taken slot are emptied before the peer is published.
    pub fn join<R: Region + ?Sized>(
        &self,
        region: &R,
        peer: PeerId,
    ) -> Result<u32, MailboxLayoutError> {
        let m = self.shape.max_members;
        let joined = self.slots().join(region, peer, |slot| {
            for other in (0..m).filter(|&o| o != slot) {
                self.reset_box(region, slot, other)?;
                self.reset_box(region, other, slot)?;
            }
            Ok::<(), MailboxLayoutError>(())
        })?;
        joined.ok_or(MailboxLayoutError::Full { max_members: m })
    }

    /// Frees the slot of a peer that is gone. Its boxes are left alone until a new
    /// member takes the slot, so a receiver can still take what it sent.
    pub fn evict<R: Region + ?Sized>(
        &self,
        region: &R,
        peer: PeerId,
    ) -> Result<bool, MailboxLayoutError> {
        Ok(self.slots().evict(region, peer)?)
    }

    /// The members and their slots.
    pub fn members<'a, R: Region + ?Sized>(
        &'a self,
        region: &'a R,
    ) -> impl Iterator<Item = (u32, PeerId)> + 'a {
        (0..self.shape.max_members)
            .filter_map(move |slot| self.member(region, slot).ok().flatten().map(|p| (slot, p)))
    }

    /// Puts a message into the box `from → to`: `id`, then `data`, then the busy
    /// bit (release). `rung` records that the caller rings the receiver's
    /// doorbell next (it should whenever the transport has one). Refused with
    /// [`MailboxLayoutError::Busy`] while the previous message is not taken.
    pub fn send<R: Region + ?Sized>(
        &self,
        region: &R,
        from: u32,
        to: u32,
        id: u32,
        data: &[u8],
        rung: bool,
    ) -> Result<(), MailboxLayoutError> {
        let at = self.box_at(from, to)?;
        if data.len() > self.max_data_size() {
            return Err(MailboxLayoutError::TooLarge {
                len: data.len(),
                max: self.max_data_size(),
            });
        }
        if id >= self.shape.id_count {
            return Err(MailboxLayoutError::BadId {
                id,
                id_count: self.shape.id_count,
            });
        }
        if BOX_STATE.of(at).load(region, Ordering::Acquire)? & FULL != 0 {
            return Err(MailboxLayoutError::Busy);
        }
        BOX_ID.of(at).store(region, id, Ordering::Relaxed)?;
        BOX_LEN
            .of(at)
            .store(region, data.len() as u32, Ordering::Relaxed)?;
        region.write(at + BOX_HEADER, data)?;
        let state = if rung { FULL | RUNG } else { FULL };
        BOX_STATE.of(at).store(region, state, Ordering::Release)?;
        Ok(())
    }

    /// Whether the message in the box `from → to` has been taken (the busy bit is
    /// clear): the completion a waiting sender polls for.
    pub fn poll_complete<R: Region + ?Sized>(
        &self,
        region: &R,
        from: u32,
        to: u32,
    ) -> Result<bool, MailboxLayoutError> {
        let at = self.box_at(from, to)?;
        Ok(BOX_STATE.of(at).load(region, Ordering::Acquire)? & FULL == 0)
    }

    /// Asks the receiver to ring the completion vector when it takes the message
    /// in the box `from → to`. Returns `false` if it is already taken, so the
    /// caller must not sleep.
    pub fn arm_completion<R: Region + ?Sized>(
        &self,
        region: &R,
        from: u32,
        to: u32,
    ) -> Result<bool, MailboxLayoutError> {
        let at = self.box_at(from, to)?;
        let mut current = BOX_STATE.of(at).load(region, Ordering::Acquire)?;
        for _ in 0..CAS_ATTEMPTS {
            if current & FULL == 0 {
                return Ok(false);
            }
            if current & WANT_COMPLETION != 0 {
                return Ok(true);
            }
            match BOX_STATE
                .of(at)
                .compare_exchange(region, current, current | WANT_COMPLETION)?
            {
                Ok(_) => return Ok(true),
                Err(now) => current = now,
            }
        }
        // Someone keeps flipping the word: sleep, the caller's timeout bounds it.
        Ok(true)
    }

    /// Whether any box addressed to slot `to` holds a message (cheap enough to
    /// spin on; values are as read, validated by [`take`](Self::take)).
    pub fn has_message<R: Region + ?Sized>(
        &self,
        region: &R,
        to: u32,
    ) -> Result<bool, MailboxLayoutError> {
        for from in (0..self.shape.max_members).filter(|&f| f != to) {
            let at = self.box_at(from, to)?;
            if BOX_STATE.of(at).load(region, Ordering::Acquire)? & FULL != 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes the next message addressed to slot `to`, looking at senders from slot
    /// `start` on (wrapping; pass the last sender's slot + 1 to serve them in
    /// turn). The data goes into `buf`; the busy bit is cleared (completion).
    /// `Ok(None)`: no message waits.
    pub fn take<R: Region + ?Sized>(
        &self,
        region: &R,
        to: u32,
        start: u32,
        buf: &mut [u8],
    ) -> Result<Option<Taken>, MailboxLayoutError> {
        let m = self.shape.max_members;
        if to >= m {
            return Err(MailboxLayoutError::Invalid("no such slot"));
        }
        for step in 0..m {
            let from = ((start % m) + step) % m;
            if from == to {
                continue;
            }
            if let Some(taken) = self.take_from(region, from, to, buf)? {
                return Ok(Some(taken));
            }
        }
        Ok(None)
    }

    /// Takes the message in the box `from → to`, if there is one.
    pub fn take_from<R: Region + ?Sized>(
        &self,
        region: &R,
        from: u32,
        to: u32,
        buf: &mut [u8],
    ) -> Result<Option<Taken>, MailboxLayoutError> {
        let at = self.box_at(from, to)?;
        let state = BOX_STATE.of(at).load(region, Ordering::Acquire)?;
        if state & FULL == 0 {
            return Ok(None);
        }
        let id = BOX_ID.of(at).load(region, Ordering::Relaxed)?;
        let len = BOX_LEN.of(at).load(region, Ordering::Relaxed)?;
        let sound = state & !KNOWN_BITS == 0
            && id < self.shape.id_count
            && len as usize <= self.max_data_size();
        if sound && len as usize > buf.len() {
            return Err(MailboxLayoutError::BufferTooSmall { len: len as usize });
        }
        if sound {
            region.read(at + BOX_HEADER, &mut buf[..len as usize])?;
        }
        let cleared = self.clear(region, at, state)?;
        if !sound {
            return Err(MailboxLayoutError::BadMessage {
                from_slot: from,
                state,
                id,
                len,
            });
        }
        Ok(Some(Taken {
            from_slot: from,
            id,
            len: len as usize,
            wants_completion: cleared & WANT_COMPLETION != 0,
            rung: state & RUNG != 0,
        }))
    }

    /// Clears a box's state word (release), returning the last value it held, so
    /// a completion request that raced with the take is never lost.
    fn clear<R: Region + ?Sized>(
        &self,
        region: &R,
        at: usize,
        mut current: u32,
    ) -> Result<u32, MailboxLayoutError> {
        for _ in 0..CAS_ATTEMPTS {
            match BOX_STATE.of(at).compare_exchange(region, current, 0)? {
                Ok(_) => return Ok(current),
                Err(now) => current = now,
            }
        }
        // A hostile peer keeps flipping the word: clear it anyway and ring.
        BOX_STATE.of(at).store(region, 0, Ordering::Release)?;
        Ok(current | WANT_COMPLETION)
    }
}

impl crate::section::SectionProtocol for MailboxLayout {
    const KIND: crate::directory::SectionKind = crate::directory::SectionKind::Mailbox;
    const SETUP: SetupWord = SETUP;
    type Shape = MailboxShape;
    type Snapshot = MailboxHeader;
    type Error = MailboxLayoutError;

    fn section_size(shape: &MailboxShape) -> Result<usize, MailboxLayoutError> {
        shape.check()?;
        shape
            .section_size()
            .ok_or(MailboxLayoutError::Invalid("shape out of range"))
    }

    fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: &MailboxShape,
    ) -> Result<Self, MailboxLayoutError> {
        MailboxLayout::create(region, offset, size, *shape)
    }

    fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, MailboxLayoutError> {
        MailboxLayout::open(region, offset, size)
    }

    fn is_initializing(error: &MailboxLayoutError) -> bool {
        matches!(error, MailboxLayoutError::Initializing)
    }

    fn wrong_kind() -> MailboxLayoutError {
        MailboxLayoutError::Invalid("the section has another kind")
    }

    fn snapshot<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<MailboxHeader, MailboxLayoutError> {
        MailboxHeader::read(region, offset, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapRegion;
    use alloc::collections::BTreeMap;
    use alloc::collections::btree_map::Entry;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const SHAPE: MailboxShape = MailboxShape {
        max_members: 4,
        max_data: 100,
        id_count: 16,
        vector: 0,
        completion_vector: 1,
    };
    const AT: usize = 4096;

    fn mailbox() -> (HeapRegion, MailboxLayout) {
        let size = SHAPE.section_size().unwrap();
        let region = HeapRegion::new(AT + size);
        let layout = MailboxLayout::create(&*region, AT, size, SHAPE).unwrap();
        (region, layout)
    }

    #[test]
    fn created_mailboxes_open_with_the_same_shape() {
        let (region, layout) = mailbox();
        let size = SHAPE.section_size().unwrap();
        assert_eq!(MailboxLayout::open(&*region, AT, size).unwrap(), layout);
        assert_eq!(layout.max_data_size(), 100);
        assert_eq!(layout.max_id(), 15);
        assert_eq!(layout.completion_vector(), 1);
        // 64 header + 16 slots -> boxes at 128; 12 boxes of 64 + 128.
        assert_eq!(size, 128 + 12 * 192);
        assert_eq!(
            MailboxLayout::open(&*region, AT, size - 1),
            Err(MailboxLayoutError::Invalid("boxes do not fit the section"))
        );
        assert_eq!(
            MailboxLayout::open(&*region, 0, size),
            Err(MailboxLayoutError::Initializing)
        );
        let bad = MailboxShape {
            id_count: 0,
            ..SHAPE
        };
        assert!(MailboxLayout::create(&*region, AT, size, bad).is_err());
    }

    #[test]
    fn inspection_reads_header_slots_and_boxes_as_they_are() {
        let (region, layout) = mailbox();
        let size = SHAPE.section_size().unwrap();
        let header = MailboxHeader::read(&*region, AT, size).unwrap();
        assert_eq!(
            header,
            MailboxHeader {
                magic: *b"MBX1",
                state: READY,
                max_members: 4,
                max_data: 100,
                id_count: 16,
                vector: 0,
                completion_vector: 1,
            }
        );
        assert!(header.has_magic());
        assert_eq!(header.state_name(), Some("ready"));
        assert_eq!(
            MailboxHeader::read(&*region, AT, 63),
            Err(MailboxLayoutError::Invalid("section too small"))
        );
        assert!(MailboxHeader::read(&*region, AT, size + 1).is_err());

        layout.join(&*region, 10).unwrap();
        layout.join(&*region, 11).unwrap();
        assert_eq!(layout.slot_word(&*region, 1), Ok(12));
        assert_eq!(layout.slot_word(&*region, 2), Ok(0));
        assert!(layout.slot_word(&*region, 4).is_err());

        layout.send(&*region, 1, 0, 3, b"hello", true).unwrap();
        assert!(layout.arm_completion(&*region, 1, 0).unwrap());
        let full = layout.box_snapshot(&*region, 1, 0).unwrap();
        assert_eq!((full.state, full.id, full.len), (7, 3, 5));
        assert!(full.is_full() && full.wants_completion() && full.rung());
        assert_eq!(full.unknown_bits(), 0);
        layout.take(&*region, 0, 0, &mut [0; 100]).unwrap().unwrap();
        let taken = layout.box_snapshot(&*region, 1, 0).unwrap();
        assert_eq!((taken.state, taken.id, taken.len), (0, 3, 5));
        assert!(!taken.is_full());
        assert!(layout.box_snapshot(&*region, 1, 1).is_err());

        // Hostile words are shown as they are.
        let at = layout.box_at(0, 1).unwrap();
        BOX_STATE
            .of(at)
            .store(&*region, 0x19, Ordering::Relaxed)
            .unwrap();
        assert_eq!(
            layout.box_snapshot(&*region, 0, 1).unwrap().unknown_bits(),
            0x18
        );
        SETUP
            .word(AT)
            .store(&*region, 9, Ordering::Relaxed)
            .unwrap();
        region.write(AT, b"XBM1").unwrap();
        let damaged = MailboxHeader::read(&*region, AT, size).unwrap();
        assert_eq!((damaged.state_name(), damaged.has_magic()), (None, false));
        assert_eq!(damaged.magic, *b"XBM1");
    }

    #[test]
    fn messages_round_trip_from_every_sender() {
        let (region, layout) = mailbox();
        for peer in [10, 11, 12] {
            layout.join(&*region, peer).unwrap();
        }
        layout.send(&*region, 1, 0, 3, b"from one", true).unwrap();
        layout.send(&*region, 2, 0, 4, b"from two", false).unwrap();
        assert!(layout.has_message(&*region, 0).unwrap());
        assert!(!layout.has_message(&*region, 1).unwrap());
        let mut buf = [0u8; 100];
        let first = layout.take(&*region, 0, 0, &mut buf).unwrap().unwrap();
        assert_eq!(
            (first.from_slot, first.id, first.len, first.rung),
            (1, 3, 8, true)
        );
        assert_eq!(&buf[..8], b"from one");
        assert_eq!(layout.member(&*region, first.from_slot).unwrap(), Some(11));
        let second = layout.take(&*region, 0, 2, &mut buf).unwrap().unwrap();
        assert_eq!((second.from_slot, second.id, second.rung), (2, 4, false));
        assert_eq!(&buf[..second.len], b"from two");
        assert_eq!(layout.take(&*region, 0, 0, &mut buf).unwrap(), None);
        // Empty messages are messages too.
        layout.send(&*region, 0, 2, 0, b"", true).unwrap();
        let empty = layout.take(&*region, 2, 0, &mut []).unwrap().unwrap();
        assert_eq!((empty.from_slot, empty.len), (0, 0));
    }

    #[test]
    fn busy_until_taken_and_completion_is_requested_once() {
        let (region, layout) = mailbox();
        layout.send(&*region, 1, 0, 1, b"x", true).unwrap();
        assert_eq!(
            layout.send(&*region, 1, 0, 2, b"y", true),
            Err(MailboxLayoutError::Busy)
        );
        assert!(!layout.poll_complete(&*region, 1, 0).unwrap());
        assert!(layout.arm_completion(&*region, 1, 0).unwrap());
        assert!(layout.arm_completion(&*region, 1, 0).unwrap());
        let mut buf = [0u8; 4];
        let taken = layout.take(&*region, 0, 0, &mut buf).unwrap().unwrap();
        assert!(taken.wants_completion);
        assert!(layout.poll_complete(&*region, 1, 0).unwrap());
        assert!(
            !layout.arm_completion(&*region, 1, 0).unwrap(),
            "taken: no sleep"
        );
        layout.send(&*region, 1, 0, 2, b"y", true).unwrap();
        let taken = layout.take(&*region, 0, 0, &mut buf).unwrap().unwrap();
        assert!(!taken.wants_completion);
    }

    #[test]
    fn limits_are_enforced_on_both_sides() {
        let (region, layout) = mailbox();
        assert_eq!(
            layout.send(&*region, 1, 0, 0, &[0; 101], true),
            Err(MailboxLayoutError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            layout.send(&*region, 1, 0, 16, b"", true),
            Err(MailboxLayoutError::BadId {
                id: 16,
                id_count: 16
            })
        );
        assert!(layout.send(&*region, 1, 1, 0, b"", true).is_err());
        assert!(layout.send(&*region, 4, 0, 0, b"", true).is_err());
        layout.send(&*region, 1, 0, 0, &[7; 10], true).unwrap();
        let mut small = [0u8; 4];
        assert_eq!(
            layout.take(&*region, 0, 0, &mut small),
            Err(MailboxLayoutError::BufferTooSmall { len: 10 })
        );
        assert!(layout.has_message(&*region, 0).unwrap(), "it stays");
        // A hostile length is discarded once, then the box is free.
        let at = layout.box_at(1, 0).unwrap();
        BOX_LEN
            .of(at)
            .store(&*region, 5000, Ordering::Relaxed)
            .unwrap();
        let mut buf = [0u8; 100];
        assert!(matches!(
            layout.take(&*region, 0, 0, &mut buf),
            Err(MailboxLayoutError::BadMessage {
                from_slot: 1,
                len: 5000,
                ..
            })
        ));
        assert_eq!(layout.take(&*region, 0, 0, &mut buf).unwrap(), None);
    }

    #[test]
    fn a_new_member_starts_with_empty_boxes() {
        let (region, layout) = mailbox();
        assert_eq!(layout.join(&*region, 5).unwrap(), 0);
        assert_eq!(layout.join(&*region, 6).unwrap(), 1);
        layout.send(&*region, 1, 0, 1, b"stale", true).unwrap();
        layout.send(&*region, 0, 1, 1, b"stale", true).unwrap();
        assert!(layout.evict(&*region, 6).unwrap());
        assert_eq!(layout.join(&*region, 7).unwrap(), 1);
        assert!(!layout.has_message(&*region, 0).unwrap());
        assert!(!layout.has_message(&*region, 1).unwrap());
        assert_eq!(
            layout.members(&*region).collect::<Vec<_>>(),
            vec![(0, 5), (1, 7)]
        );
    }

    #[cfg(not(miri))]
    const THREAD_MESSAGES: u32 = 20_000;
    #[cfg(miri)]
    const THREAD_MESSAGES: u32 = 100;

    /// A sender waiting for each completion and a receiver taking them: every
    /// message arrives intact, once, in order.
    #[test]
    fn two_threads_hand_over_every_message() {
        let (region, layout) = mailbox();
        let region = &*region;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for seq in 0..THREAD_MESSAGES {
                    let data = seq.to_le_bytes().repeat((seq % 25) as usize);
                    loop {
                        match layout.send(region, 2, 3, seq % 16, &data, true) {
                            Ok(()) => break,
                            Err(MailboxLayoutError::Busy) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    if seq % 2 == 0 {
                        while !layout.poll_complete(region, 2, 3).unwrap() {
                            std::thread::yield_now();
                        }
                    }
                }
            });
            let mut buf = [0u8; 100];
            let mut expected = 0u32;
            while expected < THREAD_MESSAGES {
                match layout.take(region, 3, 0, &mut buf).unwrap() {
                    Some(taken) => {
                        assert_eq!(taken.from_slot, 2);
                        assert_eq!(taken.id, expected % 16);
                        let data = expected.to_le_bytes().repeat((expected % 25) as usize);
                        assert_eq!(&buf[..taken.len], &data[..]);
                        expected += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send {
            from: u32,
            to: u32,
            id: u32,
            data: Vec<u8>,
        },
        Take {
            to: u32,
            start: u32,
        },
        Arm {
            from: u32,
            to: u32,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..4, 0u32..4, 0u32..20, proptest::collection::vec(any::<u8>(), 0..120))
                .prop_map(|(from, to, id, data)| Op::Send { from, to, id, data }),
            3 => (0u32..4, 0u32..8).prop_map(|(to, start)| Op::Take { to, start }),
            1 => (0u32..4, 0u32..4).prop_map(|(from, to)| Op::Arm { from, to }),
        ]
    }

    proptest! {
        // Under Miri: few cases, and no failure files (Miri isolates the file system).
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any sequence of operations behaves like one slot per ordered pair,
        /// served from `start` on.
        #[test]
        fn behaves_like_a_box_per_pair(ops in proptest::collection::vec(op(), 1..crate::model_ops(100))) {
            let (region, layout) = mailbox();
            // (from, to) -> (id, data, wants completion)
            let mut model: BTreeMap<(u32, u32), (u32, Vec<u8>, bool)> = BTreeMap::new();
            let mut buf = [0u8; 100];
            for op in ops {
                match op {
                    Op::Send { from, to, id, data } => {
                        let got = layout.send(&*region, from, to, id, &data, true);
                        let expected = if from == to {
                            Err(MailboxLayoutError::Invalid("no such box"))
                        } else if data.len() > 100 {
                            Err(MailboxLayoutError::TooLarge { len: data.len(), max: 100 })
                        } else if id >= 16 {
                            Err(MailboxLayoutError::BadId { id, id_count: 16 })
                        } else {
                            match model.entry((from, to)) {
                                Entry::Occupied(_) => Err(MailboxLayoutError::Busy),
                                Entry::Vacant(slot) => {
                                    slot.insert((id, data, false));
                                    Ok(())
                                }
                            }
                        };
                        prop_assert_eq!(got, expected);
                    }
                    Op::Take { to, start } => {
                        let got = layout.take(&*region, to, start, &mut buf).unwrap();
                        let next = (0..4)
                            .map(|step| (start % 4 + step) % 4)
                            .find(|&from| model.contains_key(&(from, to)));
                        match next {
                            Some(from) => {
                                let (id, data, wants) = model.remove(&(from, to)).unwrap();
                                let taken = got.unwrap();
                                prop_assert_eq!(
                                    (taken.from_slot, taken.id, taken.wants_completion, taken.rung),
                                    (from, id, wants, true)
                                );
                                prop_assert_eq!(&buf[..taken.len], &data[..]);
                            }
                            None => prop_assert_eq!(got, None),
                        }
                    }
                    Op::Arm { from, to } => {
                        let got = layout.arm_completion(&*region, from, to);
                        if from == to {
                            prop_assert!(got.is_err());
                        } else {
                            let pending = model.get_mut(&(from, to));
                            prop_assert_eq!(got.unwrap(), pending.is_some());
                            if let Some(entry) = pending {
                                entry.2 = true;
                            }
                        }
                    }
                }
                for from in 0..4 {
                    for to in (0..4).filter(|&t| t != from) {
                        prop_assert_eq!(
                            layout.poll_complete(&*region, from, to).unwrap(),
                            !model.contains_key(&(from, to))
                        );
                    }
                }
            }
        }

        /// Whatever a hostile peer writes over the header and the boxes, open and
        /// every operation return values or errors, never panic, and taken
        /// messages respect the mailbox's limits.
        #[test]
        fn hostile_bytes_never_panic(
            writes in proptest::collection::vec((0usize..1200, any::<u64>()), 1..24),
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let (region, layout) = mailbox();
            let size = SHAPE.section_size().unwrap();
            for (at, value) in writes {
                let _ = region.write(AT + at, &value.to_le_bytes());
            }
            let mut buf = [0u8; 100];
            let opened = MailboxLayout::open(&*region, AT, size);
            for layout in [Some(layout), opened.ok()].into_iter().flatten() {
                for op in &ops {
                    match op {
                        Op::Send { from, to, id, data } => {
                            let _ = layout.send(&*region, *from, *to, *id, data, true);
                        }
                        Op::Take { to, start } => {
                            if let Ok(Some(taken)) = layout.take(&*region, *to, *start, &mut buf) {
                                prop_assert!(taken.len <= layout.max_data_size());
                                prop_assert!(taken.id < layout.id_count());
                            }
                        }
                        Op::Arm { from, to } => {
                            let _ = layout.arm_completion(&*region, *from, *to);
                        }
                    }
                }
                for slot in 0..layout.max_members() {
                    let _ = layout.member(&*region, slot);
                    let _ = layout.has_message(&*region, slot);
                }
                let _ = layout.join(&*region, 9);
            }
        }

        /// Any shape either is refused or fits its section exactly.
        #[test]
        fn hostile_headers_never_escape_the_section(
            members in any::<u32>(), max_data in any::<u32>(), ids in any::<u32>(),
        ) {
            let (region, _) = mailbox();
            let size = SHAPE.section_size().unwrap();
            MAX_MEMBERS_AT.of(AT).store(&*region, members, Ordering::Relaxed).unwrap();
            MAX_DATA_AT.of(AT).store(&*region, max_data, Ordering::Relaxed).unwrap();
            ID_COUNT_AT.of(AT).store(&*region, ids, Ordering::Relaxed).unwrap();
            if let Ok(layout) = MailboxLayout::open(&*region, AT, size) {
                let m = layout.max_members();
                let last = layout.box_at(m - 1, m - 2).unwrap();
                prop_assert!(last + box_size(max_data) <= AT + size);
            }
        }
    }
}
