//! A reliable byte stream each way between two peers, in the spirit of Xen's
//! libvchan: one section holds two byte rings (one per direction), each side's
//! liveness word and both peers' ids.
//!
//! Layout (little-endian, offsets from the section's start, which is 128-byte
//! aligned):
//!
//! | offset | size | written by | field |
//! |---|---|---|---|
//! | 0 | 4 | creator | `magic` = `b"STM1"` |
//! | 4 | 4 | creator | `state`: 1 initializing, 2 ready, 3 abandoned, else not claimed ([`SETUP`], see [`crate::setup`]) |
//! | 8 | 8 | creator | `capacity`: data bytes per direction (a power of two, >= [`MIN_CAPACITY`]) |
//! | 16 | 4 | creator | peer ids: side A in the low 16 bits, side B in the high 16 bits |
//! | 128 | 4 | side A (and B, see below) | side A's liveness ([`PeerState`]) |
//! | 256 | 4 | side B (and A) | side B's liveness |
//! | 384 | 256 + capacity | | ring A → B: [`ring`]'s header (free-running indices on separate 128-byte lines, "please notify" flags), then data |
//! | 640 + capacity | 256 + capacity | | ring B → A |
//!
//! There is no framing: a ring's data area holds the bytes in order, and the
//! indices count bytes. The index protocol (caching the other side's index,
//! validating every value re-read, publishing per batch, the sleep handshake) is
//! [`ring`]'s own, shared through [`RingLayout`].
//!
//! Liveness: 0 never connected, 1 connected, 2 closed (this side sends no more;
//! the other reads end-of-stream once it has drained the ring), 3 dead (written by
//! the *other* side when its transport reports that this peer left without
//! closing). A side's word moves 0 → 1 when it attaches (a second attach is
//! refused), 1 → 2 when it closes, and 0/1 → 3 when it is declared dead.
//!
//! Zero-copy: [`StreamWriter::reserve`] and [`StreamReader::peek`] lend bytes in
//! the ring through checked accessors (see [`StreamWriteGrant`]).
//!
//! Everything read from the region is validated: an index that runs ahead or
//! falls behind poisons that direction with [`StreamLayoutError::Corrupt`] (sticky); an
//! unknown liveness value is [`StreamLayoutError::BadState`]. Nothing panics or reaches
//! outside the section.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::notify::PeerId;
use crate::region::{Area, Le32, Le64, Region, RegionError, check_bounds};
use crate::ring::{self, Corruption, RingError, RingLayout};
use crate::setup::{SetupError, SetupState, SetupWord};

mod grant;

pub use grant::{StreamReadGrant, StreamWriteGrant};

/// Smallest data area per direction (keeps both rings 128-byte aligned).
pub const MIN_CAPACITY: usize = 128;

const MAGIC: u32 = u32::from_le_bytes(*b"STM1");
const MAGIC_AT: Le32 = Le32::at(0);
const STATE_AT: usize = 4;
const CAPACITY_AT: Le64 = Le64::at(8);
const IDS_AT: Le32 = Le32::at(16);
const SIDE_A_AT: Le32 = Le32::at(128);
const SIDE_B_AT: Le32 = Le32::at(256);
const RINGS_AT: usize = 384;
const EMPTY: u32 = 0;
const INITIALIZING: u32 = SETUP.initializing;
const READY: u32 = SETUP.ready;

/// A stream's setup word (see [`crate::setup`]).
pub const SETUP: SetupWord = SetupWord::numbered(STATE_AT);

/// One of the stream's two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Side A: sends on the first ring.
    A,
    /// Side B: sends on the second ring.
    B,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// A side's liveness, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// 0: has not attached yet.
    Never,
    /// 1: attached.
    Connected,
    /// 2: closed: sends nothing more (end-of-stream after draining).
    Closed,
    /// 3: left without closing, as the other side's transport reported.
    Dead,
}

impl PeerState {
    /// Decodes a liveness word as stored (`None` for a value no peer writes).
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(PeerState::Never),
            1 => Some(PeerState::Connected),
            2 => Some(PeerState::Closed),
            3 => Some(PeerState::Dead),
            _ => None,
        }
    }

    /// The liveness word for this state.
    pub const fn as_u32(self) -> u32 {
        match self {
            PeerState::Never => 0,
            PeerState::Connected => 1,
            PeerState::Closed => 2,
            PeerState::Dead => 3,
        }
    }

    /// Whether the side will send nothing more (closed or dead).
    pub fn is_gone(self) -> bool {
        matches!(self, PeerState::Closed | PeerState::Dead)
    }

    /// A short name for people: `never connected`, `connected`, `closed` or
    /// `dead`.
    pub const fn name(self) -> &'static str {
        match self {
            PeerState::Never => "never connected",
            PeerState::Connected => "connected",
            PeerState::Closed => "closed",
            PeerState::Dead => "dead",
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stream header as read, nothing validated: what [`StreamLayout::open`]
/// checks plus both liveness words, for showing to people (`ivlink inspect`).
/// Values may be hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// The magic bytes (`STM1` in a stream).
    pub magic: [u8; 4],
    /// Setup state: 0 empty, 1 initializing, 2 ready.
    pub state: u32,
    /// Data bytes per direction.
    pub capacity: u64,
    /// The peers recorded for side A and side B.
    pub peers: [PeerId; 2],
    /// Side A's and side B's liveness words (decode with
    /// [`PeerState::from_u32`]).
    pub liveness: [u32; 2],
}

impl StreamHeader {
    /// Bytes of section the header needs (the rings start there).
    pub const SIZE: usize = RINGS_AT;

    /// Reads the header of the section at `offset` of `size` bytes. Fails only if
    /// the section lies outside the region, is smaller than [`Self::SIZE`] or
    /// misaligned for word access.
    pub fn read<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, StreamLayoutError> {
        check_bounds(offset, size, region.len())?;
        if size < Self::SIZE {
            return Err(StreamLayoutError::Invalid("section too small"));
        }
        let state = SETUP.word(offset).load(region, Ordering::Acquire)?;
        let mut magic = [0u8; 4];
        region.read(offset, &mut magic)?;
        let ids = IDS_AT.of(offset).load(region, Ordering::Relaxed)?;
        Ok(StreamHeader {
            magic,
            state,
            capacity: CAPACITY_AT.of(offset).load(region, Ordering::Relaxed)?,
            peers: [ids as PeerId, (ids >> 16) as PeerId],
            liveness: [
                SIDE_A_AT.of(offset).load(region, Ordering::Acquire)?,
                SIDE_B_AT.of(offset).load(region, Ordering::Acquire)?,
            ],
        })
    }

    /// Whether the magic is `STM1`.
    pub fn has_magic(&self) -> bool {
        u32::from_le_bytes(self.magic) == MAGIC
    }

    /// The meaning of `state` (`"empty"`, `"initializing"`, `"ready"`), or `None`
    /// for a value no peer writes.
    pub fn state_name(&self) -> Option<&'static str> {
        match self.state {
            EMPTY => Some("empty"),
            INITIALIZING => Some("initializing"),
            READY => Some("ready"),
            _ => None,
        }
    }
}

/// Why a stream operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLayoutError {
    /// The section does not hold a stream, or the requested shape is bad.
    Invalid(&'static str),
    /// Another peer is still setting the stream up; try again shortly.
    Initializing,
    /// The side is already attached (or finished): its state word holds this.
    SideTaken {
        /// The side.
        side: Side,
        /// Its state.
        state: PeerState,
    },
    /// This end was closed; it may not send any more.
    Closed,
    /// The other side left without closing.
    PeerDead,
    /// A liveness word holds an unknown value.
    BadState(u32),
    /// The other side wrote indices that cannot be right; this direction is
    /// unusable (sticky).
    Corrupt(Corruption),
    /// The region refused an access.
    Region(RegionError),
}

impl fmt::Display for StreamLayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamLayoutError::Invalid(what) => write!(f, "not a valid stream: {what}"),
            StreamLayoutError::Initializing => {
                f.write_str("the stream is being set up by another peer")
            }
            StreamLayoutError::SideTaken { side, state } => {
                write!(f, "side {side:?} of the stream is already {state:?}")
            }
            StreamLayoutError::Closed => f.write_str("this end of the stream is closed"),
            StreamLayoutError::PeerDead => {
                f.write_str("the other peer left without closing the stream")
            }
            StreamLayoutError::BadState(value) => {
                write!(f, "stream corrupted: liveness word {value}")
            }
            StreamLayoutError::Corrupt(what) => write!(f, "{}", RingError::Corrupt(*what)),
            StreamLayoutError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for StreamLayoutError {}

impl From<RegionError> for StreamLayoutError {
    fn from(e: RegionError) -> Self {
        StreamLayoutError::Region(e)
    }
}

impl From<SetupError> for StreamLayoutError {
    fn from(e: SetupError) -> Self {
        match e {
            // Given up on by another peer: its replacement is being set up.
            SetupError::Abandoned => StreamLayoutError::Initializing,
            SetupError::Region(e) => StreamLayoutError::Region(e),
        }
    }
}

impl From<RingError> for StreamLayoutError {
    fn from(e: RingError) -> Self {
        match e {
            RingError::Corrupt(what) => StreamLayoutError::Corrupt(what),
            RingError::Region(e) => StreamLayoutError::Region(e),
            RingError::BadLayout { .. } => StreamLayoutError::Invalid("a ring does not fit"),
            RingError::OutsideGrant { .. } => {
                StreamLayoutError::Invalid("access outside the grant")
            }
            RingError::TooLarge { .. } | RingError::BufferTooSmall { .. } => {
                StreamLayoutError::Invalid("unexpected ring error")
            }
        }
    }
}

/// Where a stream lives in the region, checked once when created or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    base: usize,
    capacity: usize,
    peers: [PeerId; 2],
    rings: [RingLayout; 2],
}

impl StreamLayout {
    /// Checks a capacity (a power of two of at least [`MIN_CAPACITY`]), before
    /// anything is created.
    pub fn check_capacity(capacity: usize) -> Result<(), StreamLayoutError> {
        if !capacity.is_power_of_two() || capacity < MIN_CAPACITY {
            return Err(StreamLayoutError::Invalid(
                "capacity must be a power of two of at least 128",
            ));
        }
        Ok(())
    }

    /// Bytes a section needs for `capacity` data bytes per direction (`None` on
    /// overflow).
    pub fn section_size(capacity: usize) -> Option<usize> {
        RingLayout::section_size(capacity)
            .checked_mul(2)?
            .checked_add(RINGS_AT)
    }

    /// Writes a new stream between `peers` (side A, side B) into the section at
    /// `offset` of `size` bytes. Only the peer that allocated the section may do
    /// this, once.
    pub fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        capacity: usize,
        peers: [PeerId; 2],
    ) -> Result<Self, StreamLayoutError> {
        Self::check_capacity(capacity)?;
        if Self::section_size(capacity).is_none_or(|needed| needed > size) {
            return Err(StreamLayoutError::Invalid(
                "section too small for the capacity",
            ));
        }
        let layout = Self::locate(region, offset, size, capacity, peers)?;
        SETUP.claim(region, offset)?;
        // The bytes may be left over from an earlier use of the region; the setup
        // word is ours to move by compare-and-exchange only.
        region.fill(offset, STATE_AT, 0)?;
        region.fill(offset + STATE_AT + 4, RINGS_AT - STATE_AT - 4, 0)?;
        CAPACITY_AT
            .of(offset)
            .store(region, capacity as u64, Ordering::Relaxed)?;
        let ids = u32::from(peers[0]) | (u32::from(peers[1]) << 16);
        IDS_AT.of(offset).store(region, ids, Ordering::Relaxed)?;
        for ring in layout.rings {
            ring.init(region)?;
        }
        MAGIC_AT
            .of(offset)
            .store(region, MAGIC, Ordering::Relaxed)?;
        SETUP.publish(region, offset)?;
        Ok(layout)
    }

    /// Opens the stream in the section at `offset` of `size` bytes, validating its
    /// header against the section.
    pub fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, StreamLayoutError> {
        check_bounds(offset, size, region.len())?;
        if size < RINGS_AT {
            return Err(StreamLayoutError::Invalid("section too small"));
        }
        match SETUP.state(region, offset)? {
            SetupState::Ready => {}
            SetupState::Pending(EMPTY | INITIALIZING) | SetupState::Abandoned => {
                return Err(StreamLayoutError::Initializing);
            }
            SetupState::Pending(_) => return Err(StreamLayoutError::Invalid("unknown state")),
        }
        if MAGIC_AT.of(offset).load(region, Ordering::Relaxed)? != MAGIC {
            return Err(StreamLayoutError::Invalid("bad magic"));
        }
        let capacity = usize::try_from(CAPACITY_AT.of(offset).load(region, Ordering::Relaxed)?)
            .ok()
            .filter(|c| c.is_power_of_two() && *c >= MIN_CAPACITY)
            .ok_or(StreamLayoutError::Invalid("capacity out of range"))?;
        if Self::section_size(capacity).is_none_or(|needed| needed > size) {
            return Err(StreamLayoutError::Invalid("rings do not fit the section"));
        }
        let ids = IDS_AT.of(offset).load(region, Ordering::Relaxed)?;
        let peers = [ids as PeerId, (ids >> 16) as PeerId];
        Self::locate(region, offset, size, capacity, peers)
    }

    fn locate<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        capacity: usize,
        peers: [PeerId; 2],
    ) -> Result<Self, StreamLayoutError> {
        check_bounds(offset, size, region.len())?;
        if offset % 128 != 0 {
            return Err(StreamLayoutError::Invalid("section not 128-byte aligned"));
        }
        let ring_size = RingLayout::section_size(capacity);
        let first = offset + RINGS_AT;
        let rings = [
            RingLayout::new(region.len(), first, ring_size)?,
            RingLayout::new(region.len(), first + ring_size, ring_size)?,
        ];
        Ok(StreamLayout {
            base: offset,
            capacity,
            peers,
            rings,
        })
    }

    /// Data bytes per direction.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The peer recorded for `side` when the stream was created.
    pub fn peer(&self, side: Side) -> PeerId {
        self.peers[side as usize]
    }

    /// The side recorded for `peer`, if it is one of the two.
    pub fn side_of(&self, peer: PeerId) -> Option<Side> {
        [Side::A, Side::B]
            .into_iter()
            .find(|&side| self.peer(side) == peer)
    }

    /// The ring `side` sends on.
    pub fn ring(&self, from: Side) -> RingLayout {
        self.rings[from as usize]
    }

    /// `side`'s liveness as stored now.
    pub fn state<R: Region + ?Sized>(
        &self,
        region: &R,
        side: Side,
    ) -> Result<PeerState, StreamLayoutError> {
        let raw = self.state_at(side).load(region, Ordering::Acquire)?;
        PeerState::from_u32(raw).ok_or(StreamLayoutError::BadState(raw))
    }

    /// `side`'s liveness word as read, not validated (for inspection; see
    /// [`state`](Self::state)).
    pub fn state_word<R: Region + ?Sized>(
        &self,
        region: &R,
        side: Side,
    ) -> Result<u32, StreamLayoutError> {
        Ok(self.state_at(side).load(region, Ordering::Acquire)?)
    }

    /// Declares `side` dead (its peer left without closing), unless it closed:
    /// the other end then reads an error instead of waiting forever. Returns
    /// whether the word changed.
    pub fn mark_dead<R: Region + ?Sized>(
        &self,
        region: &R,
        side: Side,
    ) -> Result<bool, StreamLayoutError> {
        for from in [PeerState::Connected, PeerState::Never] {
            let swapped = self.state_at(side).compare_exchange(
                region,
                from.as_u32(),
                PeerState::Dead.as_u32(),
            )?;
            if swapped.is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn state_at(&self, side: Side) -> Le32 {
        match side {
            Side::A => SIDE_A_AT,
            Side::B => SIDE_B_AT,
        }
        .of(self.base)
    }
}

/// The receiving half of an end: reads the other side's ring.
#[derive(Debug)]
pub struct StreamReader<'r, R: Region + ?Sized> {
    region: &'r R,
    layout: StreamLayout,
    side: Side,
    ring: RingLayout,
    /// The ring's data area, checked once at attach.
    area: Area<'r, R>,
    tail: u64,
    released: u64,
    head_cache: u64,
    poisoned: Option<StreamLayoutError>,
}

impl<'r, R: Region + ?Sized> StreamReader<'r, R> {
    /// Copies up to `buf.len()` bytes that have arrived into `buf`; 0 if none
    /// (see [`at_eof`](Self::at_eof)). The space returns to the sender at the next
    /// [`release`](Self::release).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamLayoutError> {
        self.healthy()?;
        if self.cached() < buf.len() as u64 {
            self.refresh()?;
        }
        let n = (self.cached() as usize).min(buf.len());
        self.area.read_wrapping(self.tail, &mut buf[..n])?;
        self.tail = self.tail.wrapping_add(n as u64);
        Ok(n)
    }

    /// Bytes waiting (re-reads the sender's index).
    pub fn data_ready(&mut self) -> Result<usize, StreamLayoutError> {
        self.healthy()?;
        self.refresh()?;
        Ok(self.cached() as usize)
    }

    /// Returns the space of every byte read so far to the sender; returns whether
    /// the sender asked to be told (it sleeps on a full ring).
    pub fn release(&mut self) -> Result<bool, StreamLayoutError> {
        self.healthy()?;
        if self.tail == self.released {
            return Ok(false);
        }
        let asked = self.ring.store_tail(self.region, self.tail)?;
        self.released = self.tail;
        Ok(asked)
    }

    /// Announces that this end will sleep until data arrives; returns `false`
    /// (and withdraws) if data already waits or the other side is gone, so the
    /// caller must not sleep. Call [`finish_sleep`](Self::finish_sleep) after.
    pub fn prepare_sleep(&mut self) -> Result<bool, StreamLayoutError> {
        self.healthy()?;
        self.ring.arm_want_data(self.region)?;
        let sleep = match (self.peer_state(), self.data_ready()) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(state), Ok(0)) => Ok(!state.is_gone()),
            _ => Ok(false),
        };
        if sleep != Ok(true) {
            self.finish_sleep()?;
        }
        sleep
    }

    /// Withdraws the request to be woken for data.
    pub fn finish_sleep(&mut self) -> Result<(), StreamLayoutError> {
        Ok(self.ring.disarm_want_data(self.region)?)
    }

    /// Whether the stream has ended: the other side closed (or died) and every
    /// byte it sent has been read. The order matters: its state is read first,
    /// so bytes it published before closing are seen.
    pub fn at_eof(&mut self) -> Result<bool, StreamLayoutError> {
        if !self.peer_state()?.is_gone() {
            return Ok(false);
        }
        Ok(self.data_ready()? == 0)
    }

    /// The other side's liveness.
    pub fn peer_state(&self) -> Result<PeerState, StreamLayoutError> {
        self.layout.state(self.region, self.side.other())
    }

    fn cached(&self) -> u64 {
        self.head_cache.wrapping_sub(self.tail)
    }

    fn refresh(&mut self) -> Result<(), StreamLayoutError> {
        match self.ring.load_head(self.region, self.head_cache, self.tail) {
            Ok(head) => {
                self.head_cache = head;
                Ok(())
            }
            Err(e) => Err(self.poison(e.into())),
        }
    }

    fn poison(&mut self, error: StreamLayoutError) -> StreamLayoutError {
        if let StreamLayoutError::Corrupt(_) = error {
            self.poisoned = Some(error);
        }
        error
    }

    fn healthy(&self) -> Result<(), StreamLayoutError> {
        self.poisoned.map_or(Ok(()), Err)
    }
}

/// The sending half of an end: writes this side's ring.
#[derive(Debug)]
pub struct StreamWriter<'r, R: Region + ?Sized> {
    region: &'r R,
    layout: StreamLayout,
    side: Side,
    ring: RingLayout,
    /// The ring's data area, checked once at attach.
    area: Area<'r, R>,
    head: u64,
    published: u64,
    tail_cache: u64,
    closed: bool,
    poisoned: Option<StreamLayoutError>,
}

impl<'r, R: Region + ?Sized> StreamWriter<'r, R> {
    /// Copies as much of `data` as fits into the ring and returns how much (0 if
    /// it is full). The bytes become visible at the next
    /// [`publish`](Self::publish). Refused once this end closed or the other side
    /// is dead; a peer that closed may still be reading, so it is written to.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamLayoutError> {
        self.healthy()?;
        if self.peer_state()? == PeerState::Dead {
            return Err(StreamLayoutError::PeerDead);
        }
        if self.free_cached() < data.len() as u64 {
            self.refresh()?;
        }
        let n = (self.free_cached() as usize).min(data.len());
        self.area.write_wrapping(self.head, &data[..n])?;
        self.head = self.head.wrapping_add(n as u64);
        Ok(n)
    }

    /// Bytes that can be written now (re-reads the reader's index).
    pub fn buffer_space(&mut self) -> Result<usize, StreamLayoutError> {
        self.healthy()?;
        self.refresh()?;
        Ok(self.free_cached() as usize)
    }

    /// Bytes written but not yet published.
    pub fn unpublished(&self) -> usize {
        self.head.wrapping_sub(self.published) as usize
    }

    /// Makes every byte written so far visible; returns whether the reader asked
    /// to be notified (the caller then rings its doorbell). One fence per batch.
    pub fn publish(&mut self) -> Result<bool, StreamLayoutError> {
        // Nothing pending is not an error, even once closed or poisoned.
        if self.head == self.published {
            return Ok(false);
        }
        self.healthy()?;
        let asked = self.ring.store_head(self.region, self.head)?;
        self.published = self.head;
        Ok(asked)
    }

    /// Announces that this end will sleep until `needed` bytes (at most the
    /// capacity) are free; returns `false` (and withdraws) if they already are or
    /// the other side is dead. Call [`finish_sleep`](Self::finish_sleep) after.
    pub fn prepare_sleep(&mut self, needed: usize) -> Result<bool, StreamLayoutError> {
        self.healthy()?;
        self.ring.arm_want_space(self.region)?;
        let needed = needed.clamp(1, self.layout.capacity) as u64;
        let sleep = match (self.peer_state(), self.refresh()) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(state), Ok(())) => Ok(state != PeerState::Dead && self.free_cached() < needed),
        };
        if sleep != Ok(true) {
            self.finish_sleep()?;
        }
        sleep
    }

    /// Withdraws the request to be woken for space.
    pub fn finish_sleep(&mut self) -> Result<(), StreamLayoutError> {
        Ok(self.ring.disarm_want_space(self.region)?)
    }

    /// Publishes what was written and marks this side closed: the other side reads
    /// end-of-stream once it has drained the ring. Returns whether it asked to be
    /// notified (it may sleep waiting for data, and must wake to see the end).
    /// Closing twice is harmless.
    pub fn close(&mut self) -> Result<bool, StreamLayoutError> {
        if self.closed {
            return Ok(false);
        }
        let mut asked = self.publish().unwrap_or(false);
        self.closed = true;
        self.poisoned = Some(StreamLayoutError::Closed);
        // Only a connected side closes; a side declared dead stays dead.
        let _ = self.layout.state_at(self.side).compare_exchange(
            self.region,
            PeerState::Connected.as_u32(),
            PeerState::Closed.as_u32(),
        )?;
        self.region.fence(Ordering::SeqCst);
        asked |= self.ring.wants_data(self.region)?;
        Ok(asked)
    }

    /// The other side's liveness.
    pub fn peer_state(&self) -> Result<PeerState, StreamLayoutError> {
        self.layout.state(self.region, self.side.other())
    }

    fn free_cached(&self) -> u64 {
        (self.layout.capacity as u64).wrapping_sub(self.head.wrapping_sub(self.tail_cache))
    }

    fn refresh(&mut self) -> Result<(), StreamLayoutError> {
        match self
            .ring
            .load_tail(self.region, self.tail_cache, self.published)
        {
            Ok(tail) => {
                self.tail_cache = tail;
                Ok(())
            }
            Err(e) => {
                let e = StreamLayoutError::from(e);
                if let StreamLayoutError::Corrupt(_) = e {
                    self.poisoned = Some(e);
                }
                Err(e)
            }
        }
    }

    fn healthy(&self) -> Result<(), StreamLayoutError> {
        self.poisoned.map_or(Ok(()), Err)
    }
}

/// One side's end of a stream: a reader and a writer, usable together or split
/// (for a thread each way).
#[derive(Debug)]
pub struct StreamEnd<'r, R: Region + ?Sized> {
    reader: StreamReader<'r, R>,
    writer: StreamWriter<'r, R>,
}

impl<'r, R: Region + ?Sized> StreamEnd<'r, R> {
    /// Attaches as `side`: its liveness word must still be 0 (never connected),
    /// and both rings' indices must be consistent.
    pub fn attach(
        region: &'r R,
        layout: StreamLayout,
        side: Side,
    ) -> Result<Self, StreamLayoutError> {
        let tx = layout.ring(side);
        let rx = layout.ring(side.other());
        let (head, tx_tail) = tx.load_indices(region)?;
        let (_, rx_tail) = rx.load_indices(region)?;
        let (tx_area, rx_area) = (tx.area(region)?, rx.area(region)?);
        let claimed = layout.state_at(side).compare_exchange(
            region,
            PeerState::Never.as_u32(),
            PeerState::Connected.as_u32(),
        )?;
        if let Err(raw) = claimed {
            return Err(match PeerState::from_u32(raw) {
                Some(state) => StreamLayoutError::SideTaken { side, state },
                None => StreamLayoutError::BadState(raw),
            });
        }
        Ok(StreamEnd {
            reader: StreamReader {
                region,
                layout,
                side,
                ring: rx,
                area: rx_area,
                tail: rx_tail,
                released: rx_tail,
                head_cache: rx_tail,
                poisoned: None,
            },
            writer: StreamWriter {
                region,
                layout,
                side,
                ring: tx,
                area: tx_area,
                head,
                published: head,
                tail_cache: tx_tail,
                closed: false,
                poisoned: None,
            },
        })
    }

    /// This end's side.
    pub fn side(&self) -> Side {
        self.writer.side
    }

    /// The stream's layout.
    pub fn layout(&self) -> StreamLayout {
        self.writer.layout
    }

    /// Splits into the reading and the writing half.
    pub fn split(self) -> (StreamReader<'r, R>, StreamWriter<'r, R>) {
        (self.reader, self.writer)
    }

    /// See [`StreamWriter::write`].
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamLayoutError> {
        self.writer.write(data)
    }

    /// See [`StreamReader::read`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamLayoutError> {
        self.reader.read(buf)
    }

    /// See [`StreamReader::data_ready`].
    pub fn data_ready(&mut self) -> Result<usize, StreamLayoutError> {
        self.reader.data_ready()
    }

    /// See [`StreamWriter::buffer_space`].
    pub fn buffer_space(&mut self) -> Result<usize, StreamLayoutError> {
        self.writer.buffer_space()
    }

    /// See [`StreamWriter::publish`].
    pub fn publish(&mut self) -> Result<bool, StreamLayoutError> {
        self.writer.publish()
    }

    /// See [`StreamReader::release`].
    pub fn release(&mut self) -> Result<bool, StreamLayoutError> {
        self.reader.release()
    }

    /// See [`StreamReader::prepare_sleep`].
    pub fn prepare_sleep_read(&mut self) -> Result<bool, StreamLayoutError> {
        self.reader.prepare_sleep()
    }

    /// See [`StreamReader::finish_sleep`].
    pub fn finish_sleep_read(&mut self) -> Result<(), StreamLayoutError> {
        self.reader.finish_sleep()
    }

    /// See [`StreamWriter::prepare_sleep`].
    pub fn prepare_sleep_write(&mut self, needed: usize) -> Result<bool, StreamLayoutError> {
        self.writer.prepare_sleep(needed)
    }

    /// See [`StreamWriter::finish_sleep`].
    pub fn finish_sleep_write(&mut self) -> Result<(), StreamLayoutError> {
        self.writer.finish_sleep()
    }

    /// See [`StreamReader::at_eof`].
    pub fn at_eof(&mut self) -> Result<bool, StreamLayoutError> {
        self.reader.at_eof()
    }

    /// See [`StreamWriter::close`].
    pub fn close(&mut self) -> Result<bool, StreamLayoutError> {
        self.writer.close()
    }

    /// The other side's liveness.
    pub fn peer_state(&self) -> Result<PeerState, StreamLayoutError> {
        self.writer.peer_state()
    }

    /// Declares the other side dead (its transport reported that it left); see
    /// [`StreamLayout::mark_dead`].
    pub fn mark_peer_dead(&self) -> Result<bool, StreamLayoutError> {
        self.writer
            .layout
            .mark_dead(self.writer.region, self.side().other())
    }
}

// Keep the ring header size in one place: the stream's rings are `ring`'s.
const _: () = assert!(RINGS_AT % 128 == 0 && ring::HEADER % 128 == 0 && MIN_CAPACITY % 128 == 0);

/// How a new stream is shaped: what its creator writes into the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamShape {
    /// Data bytes per direction (a power of two, at least [`MIN_CAPACITY`]).
    pub capacity: usize,
    /// The peers of side A and side B.
    pub peers: [PeerId; 2],
}

impl crate::section::SectionProtocol for StreamLayout {
    const KIND: crate::directory::SectionKind = crate::directory::SectionKind::Stream;
    const SETUP: SetupWord = SETUP;
    type Shape = StreamShape;
    type Snapshot = StreamHeader;
    type Error = StreamLayoutError;

    fn section_size(shape: &StreamShape) -> Result<usize, StreamLayoutError> {
        StreamLayout::check_capacity(shape.capacity)?;
        StreamLayout::section_size(shape.capacity)
            .ok_or(StreamLayoutError::Invalid("capacity too large"))
    }

    fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: &StreamShape,
    ) -> Result<Self, StreamLayoutError> {
        StreamLayout::create(region, offset, size, shape.capacity, shape.peers)
    }

    fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, StreamLayoutError> {
        StreamLayout::open(region, offset, size)
    }

    fn is_initializing(error: &StreamLayoutError) -> bool {
        matches!(error, StreamLayoutError::Initializing)
    }

    fn wrong_kind() -> StreamLayoutError {
        StreamLayoutError::Invalid("the section has another kind")
    }

    fn snapshot<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<StreamHeader, StreamLayoutError> {
        StreamHeader::read(region, offset, size)
    }
}

#[cfg(test)]
mod tests;
