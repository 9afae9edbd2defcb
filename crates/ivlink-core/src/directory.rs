//! The region directory: a self-describing table of named sections at offset 4096.
//!
//! In a region that ivlink owns, the first 4096 bytes are a message area
//! ([`MESSAGE_AREA_LEN`]) for raw messages (Zephyr's doorbell sample writes a
//! NUL-terminated string at offset 0, `ivlink notify` too), and the directory
//! follows at [`DIRECTORY_OFFSET`]: a directory that any peer can
//! create (once), open, extend with named sections and search, and that
//! `ivlink inspect` can list on a live region. Every value in it may have been written
//! by a peer we do not trust: each one is validated before use, and a bad one is a
//! [`DirectoryError`] (or an [`Inconsistency`] from `Directory::check`), never a
//! panic, an overflow or an out-of-bounds access. Every access to the directory's own
//! bytes is an atomic load or store of the field's own width, so racing peers never
//! make a data race.
//!
//! # Layout
//!
//! All fields are little-endian; every `u32`/`u64` is naturally aligned.
//!
//! Header, 64 bytes at [`DIRECTORY_OFFSET`] (offsets below are relative to it):
//!
//! | offset | field          | type  | meaning                                                    |
//! |-------:|----------------|-------|------------------------------------------------------------|
//! |      0 | `magic`        | `u64` | `u64::from_le_bytes(*b"IVLINKD\x01")` ([`MAGIC`])           |
//! |      8 | `version`      | `u32` | 1 ([`VERSION`])                                            |
//! |     12 | `state`        | `u32` | 0 empty, 1 initializing, 2 ready                           |
//! |     16 | `region_size`  | `u64` | region length as the creator saw it                        |
//! |     24 | `max_sections` | `u32` | number of entries that follow the header                   |
//! |     28 | `section_count`| `u32` | entries claimed so far (never decreases)                   |
//! |     32 | `next_free`    | `u64` | bump-allocation cursor for section space (absolute offset) |
//! |     40 | reserved       | 24 B  | zero                                                       |
//!
//! Then `max_sections` entries of 64 bytes each, entry `i` at `64 + 64 * i` from the
//! header:
//!
//! | offset | field    | type       | meaning                                              |
//! |-------:|----------|------------|------------------------------------------------------|
//! |      0 | `state`  | `u32`      | 0 free, 1 claimed, 2 ready, 3 withdrawn ([`EntryState`]) |
//! |      4 | `kind`   | `u32`      | [`SectionKind`]                                      |
//! |      8 | `owner`  | `u16`      | peer id of the creator ([`PeerId`])                  |
//! |     10 | `vector` | `u16`      | doorbell vector for the section ([`Vector`])         |
//! |     12 | `flags`  | `u32`      | free for the section's protocol                      |
//! |     16 | `offset` | `u64`      | absolute offset of the section's first byte          |
//! |     24 | `size`   | `u64`      | section length in bytes (> 0)                        |
//! |     32 | `name`   | `[u8; 32]` | UTF-8, NUL-padded, 1 to 32 bytes ([`SectionName`])   |
//!
//! Section space starts after the entries, rounded up to 4096
//! ([`SECTION_SPACE_ALIGN`]); each section's offset (absolute, from the region's
//! start) is aligned as its creator asked, at least to 64 bytes
//! ([`MIN_SECTION_ALIGN`]). [`min_region_len`] gives the smallest region that holds
//! the message area and a directory.
//!
//! Regions laid out by the first releases have the directory at offset 0
//! ([`LEGACY_DIRECTORY_OFFSET`]), with the same layout. They still open: every
//! opener looks at offset 0 first ([`locate`]), uses a directory whose magic is
//! there, and only otherwise looks at [`DIRECTORY_OFFSET`]. New directories are
//! only ever created at [`DIRECTORY_OFFSET`]; [`format`] moves a region to it.
//!
//! # Protocols
//!
//! **Creation.** A creator first checks that the header is all zero: a region whose
//! header bytes are anything else is [`Foreign`](DirectoryError::Foreign) and is
//! never overwritten (the message area before it may hold anything).
//! It then moves `state` from 0 to 1 by compare-and-exchange; the single winner zeroes
//! the entries, stores the header fields and finally `state = 2` (release). A loser,
//! or an opener that sees `state = 1`, gets
//! [`Initializing`](DirectoryError::Initializing) and retries with its own clock
//! (nothing here waits). [`format`] is the explicit way to take over a foreign or
//! damaged region.
//!
//! **Adding a section.** The adder
//! 1. claims an entry index by compare-and-exchange on `section_count`
//!    ([`Full`](DirectoryError::Full) at `max_sections`);
//! 2. writes `kind`, `owner`, `vector`, `flags` and `name` while the entry is still
//!    0, then moves its state 0 → 1 (the name is stable from then on);
//! 3. allocates space by compare-and-exchange on `next_free`, with the requested
//!    alignment, inside `region_size` ([`NoSpace`](DirectoryError::NoSpace)), and
//!    writes `offset` and `size`;
//! 4. publishes by moving its state 1 → 2;
//! 5. settles duplicates: it walks the entries below its own in index order. An entry
//!    that may still become ready under the same name (state 0, whose name is not
//!    written yet, or state 1 with the same name) is withdrawn by moving its state to
//!    3 with compare-and-exchange, so that it can never become ready. The first
//!    entry found ready with the same name wins: the adder withdraws its own entry
//!    (state 3) and returns that one.
//!
//! An adder whose entry was withdrawn under it (its 0 → 1 or 1 → 2 step fails)
//! starts again and usually finds the winner. So among racing adders of one name the
//! lowest index that ever becomes ready wins, every adder returns that entry, and a
//! ready winner is never withdrawn by an adder (only by [`Directory::withdraw`],
//! for a section whose protocol setup was abandoned). [`Directory::find`] takes step 5 too before it
//! answers, so its answer is final as well. A peer that dies half-way through an
//! add leaves an entry in state 0 or 1; later adders withdraw it when it is in their
//! way.
//!
//! **Leaks.** Nothing is ever freed: the entry and the space of a withdrawn entry
//! stay used, as does the entry of an add that failed with `NoSpace` after claiming
//! it (it is withdrawn). Entries and sections live as long as the directory; formatting
//! the region is the only reset. Section bytes are not zeroed by the directory: the
//! section's protocol initialises them.
//!
//! Only the 64 header bytes decide whether a region is foreign: a layout that keeps
//! them zero and uses bytes further on is not detected. The message area never
//! makes a region foreign.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::notify::{PeerId, Vector};
use crate::region::{Region, RegionError};

/// The directory's magic number: the bytes `IVLINKD\x01` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IVLINKD\x01");
/// The layout version this module reads and writes.
pub const VERSION: u32 = 1;
/// Bytes at the start of the region kept for raw messages (Zephyr's doorbell
/// sample writes a NUL-terminated string at offset 0): ivlink never writes there,
/// except to clear a directory of the first layout.
pub const MESSAGE_AREA_LEN: usize = 4096;
/// Offset of the directory's header, right after the message area.
pub const DIRECTORY_OFFSET: usize = MESSAGE_AREA_LEN;
/// Offset of the header in regions laid out by the first ivlink releases, which
/// still open: a directory whose magic is at offset 0 is used where it is.
pub const LEGACY_DIRECTORY_OFFSET: usize = 0;
/// Size of the header, in bytes.
pub const HEADER_SIZE: usize = 64;
/// Size of one entry, in bytes.
pub const ENTRY_SIZE: usize = 64;
/// Longest section name, in bytes of UTF-8.
pub const NAME_LEN: usize = 32;
/// Alignment of the start of section space.
pub const SECTION_SPACE_ALIGN: usize = 4096;
/// Smallest alignment of a section's offset.
pub const MIN_SECTION_ALIGN: usize = 64;
/// Largest `max_sections` this module creates or opens (4 MiB of entries), so that a
/// hostile header cannot make every search walk millions of entries.
pub const MAX_SECTIONS_LIMIT: u32 = 65_536;

/// Header field offsets.
mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const STATE: usize = 12;
    pub const REGION_SIZE: usize = 16;
    pub const MAX_SECTIONS: usize = 24;
    pub const SECTION_COUNT: usize = 28;
    pub const NEXT_FREE: usize = 32;
    pub const RESERVED: [usize; 3] = [40, 48, 56];

    pub const EMPTY: u32 = 0;
    pub const INITIALIZING: u32 = 1;
    pub const READY: u32 = 2;
}

/// Entry field offsets, relative to the entry.
mod ent {
    pub const STATE: usize = 0;
    pub const KIND: usize = 4;
    /// `owner: u16` and `vector: u16`, accessed together as one `u32`.
    pub const OWNER_VECTOR: usize = 8;
    pub const FLAGS: usize = 12;
    pub const OFFSET: usize = 16;
    pub const SIZE: usize = 24;
    pub const NAME: usize = 32;

    pub const FREE: u32 = 0;
    pub const CLAIMED: u32 = 1;
    pub const READY: u32 = 2;
    pub const WITHDRAWN: u32 = 3;
}

/// Upper bound on compare-and-exchange retries. Every failed attempt means another
/// peer made progress, so an honest directory never gets near it; a hostile peer
/// flipping a word gets [`DirectoryError::Contended`] instead of a livelock.
const CAS_ATTEMPTS: usize = 4096;
/// Re-reads of one entry while settling duplicates (its state only moves forward).
const SETTLE_ATTEMPTS: usize = 8;

/// Smallest region that holds a directory with `max_sections` entries: the message
/// area, the header, the entries and the padding up to the start of section space.
/// `None` on overflow.
pub fn min_region_len(max_sections: u32) -> Option<usize> {
    space_start(DIRECTORY_OFFSET, max_sections)
}

/// Start of section space of a directory at `base` with `max_sections` entries: the
/// header and entries, rounded up to [`SECTION_SPACE_ALIGN`]. `None` on overflow.
fn space_start(base: usize, max_sections: u32) -> Option<usize> {
    let entries = usize::try_from(max_sections)
        .ok()?
        .checked_mul(ENTRY_SIZE)?;
    base.checked_add(align_up(
        HEADER_SIZE.checked_add(entries)?,
        SECTION_SPACE_ALIGN,
    )?)
}

/// Rounds `value` up to `align` (a power of two); `None` on overflow.
fn align_up(value: usize, align: usize) -> Option<usize> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

// ---------------------------------------------------------------------------------
// Names and kinds
// ---------------------------------------------------------------------------------

/// Why a section name is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`NAME_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains a NUL byte (NUL is the padding).
    ContainsNul,
    /// The stored bytes are not UTF-8.
    NotUtf8,
    /// The stored bytes have non-NUL bytes after the first NUL.
    BadPadding,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("section name is empty"),
            NameError::TooLong { len } => {
                write!(f, "section name is {len} bytes, longer than {NAME_LEN}")
            }
            NameError::ContainsNul => f.write_str("section name contains a NUL byte"),
            NameError::NotUtf8 => f.write_str("section name is not UTF-8"),
            NameError::BadPadding => {
                f.write_str("section name has bytes after its terminating NUL")
            }
        }
    }
}

impl core::error::Error for NameError {}

/// A section name: 1 to 32 bytes of UTF-8 without NUL, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SectionName {
    // NUL-padded; `len` bytes of UTF-8 then zeros.
    bytes: [u8; NAME_LEN],
    len: u8,
}

impl SectionName {
    /// Checks `name` and stores it.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let src = name.as_bytes();
        if src.is_empty() {
            return Err(NameError::Empty);
        }
        if src.len() > NAME_LEN {
            return Err(NameError::TooLong { len: src.len() });
        }
        if src.contains(&0) {
            return Err(NameError::ContainsNul);
        }
        let mut bytes = [0u8; NAME_LEN];
        for (dst, &b) in bytes.iter_mut().zip(src) {
            *dst = b;
        }
        // src.len() <= NAME_LEN = 32, so it fits in a u8.
        let len = u8::try_from(src.len()).map_err(|_| NameError::TooLong { len: src.len() })?;
        Ok(SectionName { bytes, len })
    }

    /// Checks the 32 stored bytes of an entry's `name` field: UTF-8, not empty, and
    /// nothing but NULs after the first NUL.
    pub fn from_raw(raw: [u8; NAME_LEN]) -> Result<Self, NameError> {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let (text, padding) = raw.split_at(len);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if padding.iter().any(|&b| b != 0) {
            return Err(NameError::BadPadding);
        }
        if core::str::from_utf8(text).is_err() {
            return Err(NameError::NotUtf8);
        }
        let len = u8::try_from(len).map_err(|_| NameError::TooLong { len })?;
        Ok(SectionName { bytes: raw, len })
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The name's bytes, without padding.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The 32 bytes as stored in an entry (NUL-padded).
    pub fn to_raw(&self) -> [u8; NAME_LEN] {
        self.bytes
    }

    /// Length in bytes (1 to 32).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a section name has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SectionName({:?})", self.as_str())
    }
}

impl fmt::Display for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for SectionName {
    type Error = NameError;

    fn try_from(name: &str) -> Result<Self, NameError> {
        SectionName::new(name)
    }
}

/// What protocol a section holds.
///
/// Stored as a `u32`; values this version does not know are kept as
/// [`Other`](SectionKind::Other). `Other(n)` with `n` a known value reads back as the
/// named variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// A message ring (1).
    Ring,
    /// A mailbox (2).
    Mailbox,
    /// A byte stream (3).
    Stream,
    /// RPMsg virtqueues (4).
    Rpmsg,
    /// A virtio console (5).
    Console,
    /// An NTB-style device (6).
    Ntb,
    /// Any other value.
    Other(u32),
}

impl SectionKind {
    /// The kind stored as `value`.
    pub const fn from_u32(value: u32) -> Self {
        match value {
            1 => SectionKind::Ring,
            2 => SectionKind::Mailbox,
            3 => SectionKind::Stream,
            4 => SectionKind::Rpmsg,
            5 => SectionKind::Console,
            6 => SectionKind::Ntb,
            other => SectionKind::Other(other),
        }
    }

    /// The value stored for this kind.
    pub const fn as_u32(self) -> u32 {
        match self {
            SectionKind::Ring => 1,
            SectionKind::Mailbox => 2,
            SectionKind::Stream => 3,
            SectionKind::Rpmsg => 4,
            SectionKind::Console => 5,
            SectionKind::Ntb => 6,
            SectionKind::Other(other) => other,
        }
    }
}

impl From<u32> for SectionKind {
    fn from(value: u32) -> Self {
        SectionKind::from_u32(value)
    }
}

impl From<SectionKind> for u32 {
    fn from(kind: SectionKind) -> Self {
        kind.as_u32()
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SectionKind::Ring => f.write_str("ring"),
            SectionKind::Mailbox => f.write_str("mailbox"),
            SectionKind::Stream => f.write_str("stream"),
            SectionKind::Rpmsg => f.write_str("rpmsg"),
            SectionKind::Console => f.write_str("console"),
            SectionKind::Ntb => f.write_str("ntb"),
            SectionKind::Other(other) => write!(f, "kind {other}"),
        }
    }
}

/// The state of an entry, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// 0: unused. Below `section_count` it means a peer has claimed the index and not
    /// yet written the entry's name.
    Free,
    /// 1: claimed; the name is written, the section is being set up.
    Claimed,
    /// 2: the section is ready.
    Ready,
    /// 3: withdrawn (a duplicate of an earlier section, or an add that did not
    /// complete); its space is leaked.
    Withdrawn,
}

impl EntryState {
    /// The state stored as `value`, if it is a known one.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            ent::FREE => Some(EntryState::Free),
            ent::CLAIMED => Some(EntryState::Claimed),
            ent::READY => Some(EntryState::Ready),
            ent::WITHDRAWN => Some(EntryState::Withdrawn),
            _ => None,
        }
    }

    /// The value stored for this state.
    pub const fn as_u32(self) -> u32 {
        match self {
            EntryState::Free => ent::FREE,
            EntryState::Claimed => ent::CLAIMED,
            EntryState::Ready => ent::READY,
            EntryState::Withdrawn => ent::WITHDRAWN,
        }
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryState::Free => "free",
            EntryState::Claimed => "claimed",
            EntryState::Ready => "ready",
            EntryState::Withdrawn => "withdrawn",
        })
    }
}

// ---------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------

/// A ready section, as validated from its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionInfo {
    /// Index of its entry.
    pub index: u32,
    /// Its name.
    pub name: SectionName,
    /// Its protocol.
    pub kind: SectionKind,
    /// The peer that created it.
    pub owner: PeerId,
    /// The doorbell vector its protocol uses.
    pub vector: Vector,
    /// Flags for its protocol.
    pub flags: u32,
    /// Offset of its first byte in the region (inside the region, past the directory).
    pub offset: usize,
    /// Its length in bytes (at least 1; `offset + size` is inside the region).
    pub size: usize,
}

impl SectionInfo {
    /// The section's bytes as a range of region offsets.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset..self.offset.saturating_add(self.size)
    }
}

/// What to add: a name, a kind and a size, plus optional owner, vector, flags and
/// alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionSpec<'a> {
    /// Name (1 to 32 bytes of UTF-8, no NUL).
    pub name: &'a str,
    /// Protocol.
    pub kind: SectionKind,
    /// Creating peer.
    pub owner: PeerId,
    /// Doorbell vector.
    pub vector: Vector,
    /// Protocol flags.
    pub flags: u32,
    /// Length in bytes (at least 1).
    pub size: usize,
    /// Alignment of the section's offset: a power of two; values below
    /// [`MIN_SECTION_ALIGN`] are raised to it.
    pub align: usize,
}

impl<'a> SectionSpec<'a> {
    /// A section of `size` bytes owned by peer 0 on vector 0, no flags, 64-byte aligned.
    pub fn new(name: &'a str, kind: SectionKind, size: usize) -> Self {
        SectionSpec {
            name,
            kind,
            owner: 0,
            vector: 0,
            flags: 0,
            size,
            align: MIN_SECTION_ALIGN,
        }
    }

    /// Sets the owning peer.
    pub fn with_owner(mut self, owner: PeerId) -> Self {
        self.owner = owner;
        self
    }

    /// Sets the doorbell vector.
    pub fn with_vector(mut self, vector: Vector) -> Self {
        self.vector = vector;
        self
    }

    /// Sets the protocol flags.
    pub fn with_flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the alignment of the section's offset.
    pub fn with_align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }
}

/// The result of [`Directory::get_or_add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetOrAdd {
    /// This call added the section: the caller initialises its bytes.
    Added(SectionInfo),
    /// The section already existed (possibly added by a racing peer just now); its
    /// kind and size are whatever its creator chose.
    Existing(SectionInfo),
}

impl GetOrAdd {
    /// The section, either way.
    pub fn info(&self) -> &SectionInfo {
        match self {
            GetOrAdd::Added(info) | GetOrAdd::Existing(info) => info,
        }
    }

    /// Whether this call added it.
    pub fn is_added(&self) -> bool {
        matches!(self, GetOrAdd::Added(_))
    }
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// What is wrong with a ready entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryProblem {
    /// Its state is not one of 0..=3.
    UnknownState(u32),
    /// Its name is not valid.
    Name(NameError),
    /// Its size is 0.
    ZeroSize,
    /// Its offset is not a multiple of [`MIN_SECTION_ALIGN`].
    Misaligned {
        /// The stored offset.
        offset: u64,
    },
    /// It starts inside the header or the entries.
    InsideDirectory {
        /// The stored offset.
        offset: u64,
        /// Where section space starts.
        section_space: usize,
    },
    /// It does not end inside the region.
    OutsideRegion {
        /// The stored offset.
        offset: u64,
        /// The stored size.
        size: u64,
        /// The region's length.
        region_size: usize,
    },
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EntryProblem::UnknownState(state) => write!(f, "unknown state {state}"),
            EntryProblem::Name(e) => write!(f, "{e}"),
            EntryProblem::ZeroSize => f.write_str("size is 0"),
            EntryProblem::Misaligned { offset } => {
                write!(
                    f,
                    "offset {offset:#x} is not {MIN_SECTION_ALIGN}-byte aligned"
                )
            }
            EntryProblem::InsideDirectory {
                offset,
                section_space,
            } => write!(
                f,
                "offset {offset:#x} is inside the directory (section space starts at {section_space:#x})"
            ),
            EntryProblem::OutsideRegion {
                offset,
                size,
                region_size,
            } => write!(
                f,
                "{size} bytes at offset {offset:#x} do not fit the {region_size}-byte region"
            ),
        }
    }
}

/// Why a directory operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryError {
    /// The region refused an access (a bug in the region, since every offset is
    /// checked first).
    Region(RegionError),
    /// The region cannot hold the header and entries.
    RegionTooSmall {
        /// The region's length.
        region_len: usize,
        /// Bytes the directory needs ([`min_region_len`]).
        needed: usize,
    },
    /// `max_sections` passed to create or format is 0 or above [`MAX_SECTIONS_LIMIT`].
    InvalidMaxSections(u32),
    /// The region's first bytes are not an ivlink directory; it is left untouched.
    Foreign {
        /// The region's first 8 bytes.
        first_bytes: [u8; 8],
    },
    /// The header is all zero: nobody has created a directory yet.
    NotCreated,
    /// A peer is creating the directory right now: retry later.
    Initializing,
    /// `create` found a ready directory (open it instead).
    AlreadyCreated,
    /// The header has our magic but a version this module does not know.
    UnsupportedVersion(u32),
    /// The header's state is not 0, 1 or 2 (or is 0 with our magic).
    BadHeaderState(u32),
    /// The header's `region_size` is not the region's length.
    RegionSizeMismatch {
        /// Length the creator recorded.
        recorded: u64,
        /// Length of the region we see.
        actual: usize,
    },
    /// The header's `max_sections` is 0, too large, or its entries do not fit.
    BadMaxSections {
        /// The stored value.
        max_sections: u32,
        /// The region's length.
        region_len: usize,
    },
    /// The header's `section_count` exceeds `max_sections`.
    BadSectionCount {
        /// The stored count.
        count: u32,
        /// The directory's `max_sections`.
        max_sections: u32,
    },
    /// The header's `next_free` is before section space or past the region's end.
    BadNextFree {
        /// The stored cursor.
        next_free: u64,
    },
    /// The name given is not a valid section name.
    InvalidName(NameError),
    /// The size given is 0 (or does not fit in 64 bits).
    InvalidSize(usize),
    /// The alignment given is not a power of two.
    InvalidAlign(usize),
    /// Every entry is claimed.
    Full {
        /// The directory's `max_sections`.
        max_sections: u32,
    },
    /// Section space has no room for the section.
    NoSpace {
        /// Bytes asked for.
        requested: usize,
        /// Bytes left after `next_free` (before alignment).
        free: usize,
    },
    /// A section with this name exists already.
    Exists(SectionInfo),
    /// The index is not below `max_sections`.
    NoSuchEntry {
        /// The index asked for.
        index: u32,
        /// The directory's `max_sections`.
        max_sections: u32,
    },
    /// The entry is not ready (being written, withdrawn, or never claimed).
    NotReady {
        /// Its index.
        index: u32,
        /// Its state.
        state: EntryState,
        /// Its name, if the state says it is written and it is valid.
        name: Option<SectionName>,
    },
    /// A ready (or unknown-state) entry holds a bad value.
    BadEntry {
        /// Its index.
        index: u32,
        /// What is wrong.
        problem: EntryProblem,
    },
    /// A shared word kept changing under compare-and-exchange (a misbehaving peer).
    Contended,
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DirectoryError::Region(e) => write!(f, "directory access failed: {e}"),
            DirectoryError::RegionTooSmall { region_len, needed } => write!(
                f,
                "the {region_len}-byte region is too small for the directory ({needed} bytes needed)"
            ),
            DirectoryError::InvalidMaxSections(n) => write!(
                f,
                "max_sections must be between 1 and {MAX_SECTIONS_LIMIT}, not {n}"
            ),
            DirectoryError::Foreign { first_bytes } => write!(
                f,
                "the region holds something else where the directory goes (it starts with \"{}\"); `ivlink format` takes it over",
                first_bytes.escape_ascii()
            ),
            DirectoryError::NotCreated => f.write_str("the region has no directory yet"),
            DirectoryError::Initializing => {
                f.write_str("a peer is creating the directory; retry shortly")
            }
            DirectoryError::AlreadyCreated => f.write_str("the region already has a directory"),
            DirectoryError::UnsupportedVersion(v) => write!(
                f,
                "directory version {v} is not supported (this build reads version {VERSION})"
            ),
            DirectoryError::BadHeaderState(s) => write!(f, "directory header has bad state {s}"),
            DirectoryError::RegionSizeMismatch { recorded, actual } => write!(
                f,
                "directory was created for a {recorded}-byte region but this region is {actual} bytes"
            ),
            DirectoryError::BadMaxSections {
                max_sections,
                region_len,
            } => write!(
                f,
                "directory header has bad max_sections {max_sections} for a {region_len}-byte region"
            ),
            DirectoryError::BadSectionCount {
                count,
                max_sections,
            } => write!(
                f,
                "directory header has section_count {count}, more than max_sections {max_sections}"
            ),
            DirectoryError::BadNextFree { next_free } => write!(
                f,
                "directory header has next_free {next_free:#x} outside section space"
            ),
            DirectoryError::InvalidName(e) => write!(f, "{e}"),
            DirectoryError::InvalidSize(size) => write!(f, "section size {size} is not allowed"),
            DirectoryError::InvalidAlign(align) => {
                write!(f, "section alignment {align} is not a power of two")
            }
            DirectoryError::Full { max_sections } => {
                write!(f, "all {max_sections} directory entries are in use")
            }
            DirectoryError::NoSpace { requested, free } => write!(
                f,
                "no room for a {requested}-byte section ({free} bytes left in the region)"
            ),
            DirectoryError::Exists(info) => write!(
                f,
                "section \"{}\" already exists (entry {})",
                info.name, info.index
            ),
            DirectoryError::NoSuchEntry {
                index,
                max_sections,
            } => write!(
                f,
                "entry {index} does not exist (the directory has {max_sections})"
            ),
            DirectoryError::NotReady { index, state, name } => match name {
                Some(name) => write!(f, "entry {index} (\"{name}\") is {state}"),
                None => write!(f, "entry {index} is {state}"),
            },
            DirectoryError::BadEntry { index, problem } => {
                write!(f, "entry {index} is bad: {problem}")
            }
            DirectoryError::Contended => {
                f.write_str("directory word kept changing under update (misbehaving peer?)")
            }
        }
    }
}

impl core::error::Error for DirectoryError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            DirectoryError::Region(e) => Some(e),
            DirectoryError::InvalidName(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RegionError> for DirectoryError {
    fn from(e: RegionError) -> Self {
        DirectoryError::Region(e)
    }
}

impl From<NameError> for DirectoryError {
    fn from(e: NameError) -> Self {
        DirectoryError::InvalidName(e)
    }
}

// ---------------------------------------------------------------------------------
// Little-endian atomic field access
// ---------------------------------------------------------------------------------

fn ld32<R: Region + ?Sized>(r: &R, off: usize, order: Ordering) -> Result<u32, DirectoryError> {
    Ok(u32::from_le(r.load_u32(off, order)?))
}

fn st32<R: Region + ?Sized>(
    r: &R,
    off: usize,
    value: u32,
    order: Ordering,
) -> Result<(), DirectoryError> {
    Ok(r.store_u32(off, value.to_le(), order)?)
}

fn ld64<R: Region + ?Sized>(r: &R, off: usize, order: Ordering) -> Result<u64, DirectoryError> {
    Ok(u64::from_le(r.load_u64(off, order)?))
}

fn st64<R: Region + ?Sized>(
    r: &R,
    off: usize,
    value: u64,
    order: Ordering,
) -> Result<(), DirectoryError> {
    Ok(r.store_u64(off, value.to_le(), order)?)
}

fn cas32<R: Region + ?Sized>(
    r: &R,
    off: usize,
    current: u32,
    new: u32,
) -> Result<Result<u32, u32>, DirectoryError> {
    Ok(r.compare_exchange_u32(off, current.to_le(), new.to_le())?
        .map(u32::from_le)
        .map_err(u32::from_le))
}

fn cas64<R: Region + ?Sized>(
    r: &R,
    off: usize,
    current: u64,
    new: u64,
) -> Result<Result<u64, u64>, DirectoryError> {
    Ok(r.compare_exchange_u64(off, current.to_le(), new.to_le())?
        .map(u64::from_le)
        .map_err(u64::from_le))
}

/// The first 8 bytes of the header at `base`, in memory order.
fn first_bytes<R: Region + ?Sized>(r: &R, base: usize) -> Result<[u8; 8], DirectoryError> {
    Ok(r.load_u64(base + hdr::MAGIC, Ordering::Acquire)?
        .to_ne_bytes())
}

/// Whether every header field except `state` is zero (acquire loads, so that seeing
/// a creator's store also shows its earlier claim of `state`).
fn header_is_zero<R: Region + ?Sized>(r: &R, base: usize) -> Result<bool, DirectoryError> {
    let acq = Ordering::Acquire;
    let mut any = ld64(r, base + hdr::MAGIC, acq)? | ld64(r, base + hdr::REGION_SIZE, acq)?;
    any |= ld64(r, base + hdr::NEXT_FREE, acq)?;
    for off in hdr::RESERVED {
        any |= ld64(r, base + off, acq)?;
    }
    any |= u64::from(ld32(r, base + hdr::VERSION, acq)?);
    any |= u64::from(ld32(r, base + hdr::MAX_SECTIONS, acq)?);
    any |= u64::from(ld32(r, base + hdr::SECTION_COUNT, acq)?);
    Ok(any == 0)
}

/// What the header says, before it is trusted.
enum Probe {
    Empty,
    Initializing,
    Ready,
    Foreign([u8; 8]),
    BadState(u32),
}

fn probe<R: Region + ?Sized>(r: &R, base: usize) -> Result<Probe, DirectoryError> {
    let needed = base + HEADER_SIZE;
    if r.len() < needed {
        return Err(DirectoryError::RegionTooSmall {
            region_len: r.len(),
            needed,
        });
    }
    let mut state = ld32(r, base + hdr::STATE, Ordering::Acquire)?;
    if state == hdr::EMPTY {
        if header_is_zero(r, base)? {
            return Ok(Probe::Empty);
        }
        // Either foreign bytes, or a creator that claimed the header since we looked.
        state = ld32(r, base + hdr::STATE, Ordering::Acquire)?;
    }
    let first = first_bytes(r, base)?;
    let ours = u64::from_le_bytes(first) == MAGIC;
    Ok(match state {
        hdr::READY if ours => Probe::Ready,
        hdr::INITIALIZING if ours || first == [0; 8] => Probe::Initializing,
        _ if !ours => Probe::Foreign(first),
        other => Probe::BadState(other),
    })
}

/// Checks the arguments of create and format; returns the start of section space
/// of a directory at [`DIRECTORY_OFFSET`].
fn check_new<R: Region + ?Sized>(r: &R, max_sections: u32) -> Result<usize, DirectoryError> {
    if max_sections == 0 || max_sections > MAX_SECTIONS_LIMIT {
        return Err(DirectoryError::InvalidMaxSections(max_sections));
    }
    let needed =
        min_region_len(max_sections).ok_or(DirectoryError::InvalidMaxSections(max_sections))?;
    if r.len() < needed {
        return Err(DirectoryError::RegionTooSmall {
            region_len: r.len(),
            needed,
        });
    }
    Ok(needed)
}

/// Offset of entry `index`'s field `field`; `None` on overflow.
fn entry_field(base: usize, index: u32, field: usize) -> Option<usize> {
    usize::try_from(index)
        .ok()?
        .checked_mul(ENTRY_SIZE)?
        .checked_add(base)?
        .checked_add(HEADER_SIZE)?
        .checked_add(field)
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------------

/// An open directory: the validated, immutable header fields and the region.
///
/// Cheap to copy; every operation re-reads the words peers change (`section_count`,
/// `next_free`, entries) and validates them again.
pub struct Directory<'r, R: Region + ?Sized> {
    region: &'r R,
    base: usize,
    max_sections: u32,
    region_size: usize,
    space_start: usize,
}

impl<R: Region + ?Sized> Clone for Directory<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Region + ?Sized> Copy for Directory<'_, R> {}

impl<R: Region + ?Sized> fmt::Debug for Directory<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("offset", &self.base)
            .field("max_sections", &self.max_sections)
            .field("region_size", &self.region_size)
            .field("section_space", &self.space_start)
            .finish_non_exhaustive()
    }
}

/// Writes `max_sections` zeroed entries and the header at `base`, then publishes
/// `state = 2`. The caller owns `state = 1`.
fn initialize<R: Region + ?Sized>(
    region: &R,
    base: usize,
    max_sections: u32,
    space_start: usize,
) -> Result<(), DirectoryError> {
    let rel = Ordering::Release;
    for index in 0..max_sections {
        zero_entry(region, base, index)?;
    }
    st64(region, base + hdr::MAGIC, MAGIC, rel)?;
    st32(region, base + hdr::VERSION, VERSION, rel)?;
    st64(region, base + hdr::REGION_SIZE, to_u64(region.len()), rel)?;
    st32(region, base + hdr::MAX_SECTIONS, max_sections, rel)?;
    st32(region, base + hdr::SECTION_COUNT, 0, rel)?;
    st64(region, base + hdr::NEXT_FREE, to_u64(space_start), rel)?;
    for off in hdr::RESERVED {
        st64(region, base + off, 0, rel)?;
    }
    st32(region, base + hdr::STATE, hdr::READY, rel)
}

fn zero_entry<R: Region + ?Sized>(
    region: &R,
    base: usize,
    index: u32,
) -> Result<(), DirectoryError> {
    let field = |f| {
        entry_field(base, index, f).ok_or(DirectoryError::NoSuchEntry {
            index,
            max_sections: index,
        })
    };
    let rlx = Ordering::Relaxed;
    for f in [ent::STATE, ent::KIND, ent::OWNER_VECTOR, ent::FLAGS] {
        st32(region, field(f)?, 0, rlx)?;
    }
    for f in [ent::OFFSET, ent::SIZE] {
        st64(region, field(f)?, 0, rlx)?;
    }
    for word in 0..NAME_LEN / 8 {
        region.store_u64(field(ent::NAME + 8 * word)?, 0, rlx)?;
    }
    Ok(())
}

/// Whether the region holds a directory of the first layout, at offset 0
/// ([`LEGACY_DIRECTORY_OFFSET`]): its magic is there.
fn has_legacy_header<R: Region + ?Sized>(region: &R) -> Result<bool, DirectoryError> {
    if region.len() < HEADER_SIZE {
        return Ok(false);
    }
    Ok(u64::from_le_bytes(first_bytes(region, LEGACY_DIRECTORY_OFFSET)?) == MAGIC)
}

/// Where the region's directory is, or would be created: offset 0 if a directory of
/// the first layout is there (its magic), else [`DIRECTORY_OFFSET`].
pub fn locate<R: Region + ?Sized>(region: &R) -> Result<usize, DirectoryError> {
    Ok(if has_legacy_header(region)? {
        LEGACY_DIRECTORY_OFFSET
    } else {
        DIRECTORY_OFFSET
    })
}

/// Creates an empty directory at [`DIRECTORY_OFFSET`], overwriting whatever its
/// header held, and clears a directory of the first layout at offset 0 (the bytes
/// of the message area are otherwise left alone). What `ivlink format` does. Section
/// space is not touched: sections are forgotten, their protocols initialise their
/// bytes again when re-created. Racing peers see [`DirectoryError::Initializing`]
/// until it is done.
pub fn format<R: Region + ?Sized>(
    region: &R,
    max_sections: u32,
) -> Result<Directory<'_, R>, DirectoryError> {
    let space_start = check_new(region, max_sections)?;
    let base = DIRECTORY_OFFSET;
    let legacy = has_legacy_header(region)?;
    if legacy {
        // Openers look at offset 0 first: keep them waiting there until the new
        // directory is ready.
        st32(region, hdr::STATE, hdr::INITIALIZING, Ordering::SeqCst)?;
    }
    st32(
        region,
        base + hdr::STATE,
        hdr::INITIALIZING,
        Ordering::SeqCst,
    )?;
    initialize(region, base, max_sections, space_start)?;
    if legacy {
        // The magic first: from then on openers find the new directory.
        st64(region, hdr::MAGIC, 0, Ordering::SeqCst)?;
        // Each field at its own width, as every other access to it.
        for at in [
            hdr::VERSION,
            hdr::STATE,
            hdr::MAX_SECTIONS,
            hdr::SECTION_COUNT,
        ] {
            st32(region, at, 0, Ordering::Release)?;
        }
        for at in [hdr::REGION_SIZE, hdr::NEXT_FREE]
            .into_iter()
            .chain(hdr::RESERVED)
        {
            st64(region, at, 0, Ordering::Release)?;
        }
    }
    Ok(Directory {
        region,
        base,
        max_sections,
        region_size: region.len(),
        space_start,
    })
}

impl<'r, R: Region + ?Sized> Directory<'r, R> {
    /// Creates a directory with room for `max_sections` entries at
    /// [`DIRECTORY_OFFSET`], in a region whose header there is all zero (the
    /// message area before it may hold anything).
    ///
    /// Exactly one of several racing creators succeeds; the others get
    /// [`Initializing`](DirectoryError::Initializing) or
    /// [`AlreadyCreated`](DirectoryError::AlreadyCreated) (also for a directory of
    /// the first layout at offset 0). A region whose header holds anything else is
    /// [`Foreign`](DirectoryError::Foreign) and is not modified (see [`format`]).
    pub fn create(region: &'r R, max_sections: u32) -> Result<Self, DirectoryError> {
        let space_start = check_new(region, max_sections)?;
        if has_legacy_header(region)? {
            return Err(match probe(region, LEGACY_DIRECTORY_OFFSET)? {
                Probe::Initializing => DirectoryError::Initializing,
                Probe::BadState(state) => DirectoryError::BadHeaderState(state),
                _ => DirectoryError::AlreadyCreated,
            });
        }
        let base = DIRECTORY_OFFSET;
        let claimed = match probe(region, base)? {
            Probe::Empty => {
                cas32(region, base + hdr::STATE, hdr::EMPTY, hdr::INITIALIZING)?.is_ok()
            }
            _ => false,
        };
        if !claimed {
            return Err(match probe(region, base)? {
                Probe::Empty | Probe::Initializing => DirectoryError::Initializing,
                Probe::Ready => DirectoryError::AlreadyCreated,
                Probe::Foreign(first_bytes) => DirectoryError::Foreign { first_bytes },
                Probe::BadState(state) => DirectoryError::BadHeaderState(state),
            });
        }
        initialize(region, base, max_sections, space_start)?;
        Ok(Directory {
            region,
            base,
            max_sections,
            region_size: region.len(),
            space_start,
        })
    }

    /// Opens the directory in `region` (at offset 0 if a directory of the first
    /// layout is there, else at [`DIRECTORY_OFFSET`]), checking its magic, version,
    /// state, recorded size and `max_sections`.
    pub fn open(region: &'r R) -> Result<Self, DirectoryError> {
        let base = locate(region)?;
        match probe(region, base)? {
            Probe::Ready => {}
            Probe::Empty => return Err(DirectoryError::NotCreated),
            Probe::Initializing => return Err(DirectoryError::Initializing),
            Probe::Foreign(first_bytes) => return Err(DirectoryError::Foreign { first_bytes }),
            Probe::BadState(state) => return Err(DirectoryError::BadHeaderState(state)),
        }
        let acq = Ordering::Acquire;
        let version = ld32(region, base + hdr::VERSION, acq)?;
        if version != VERSION {
            return Err(DirectoryError::UnsupportedVersion(version));
        }
        let recorded = ld64(region, base + hdr::REGION_SIZE, acq)?;
        if recorded != to_u64(region.len()) {
            return Err(DirectoryError::RegionSizeMismatch {
                recorded,
                actual: region.len(),
            });
        }
        let max_sections = ld32(region, base + hdr::MAX_SECTIONS, acq)?;
        let space_start = match space_start(base, max_sections) {
            Some(start)
                if max_sections != 0
                    && max_sections <= MAX_SECTIONS_LIMIT
                    && start <= region.len() =>
            {
                start
            }
            _ => {
                return Err(DirectoryError::BadMaxSections {
                    max_sections,
                    region_len: region.len(),
                });
            }
        };
        Ok(Directory {
            region,
            base,
            max_sections,
            region_size: region.len(),
            space_start,
        })
    }

    /// Opens the directory, creating it first if the header is all zero. What every
    /// peer calls at start-up; on [`Initializing`](DirectoryError::Initializing) it
    /// retries later with its own clock.
    pub fn open_or_create(region: &'r R, max_sections: u32) -> Result<Self, DirectoryError> {
        match Self::open(region) {
            Err(DirectoryError::NotCreated) => match Self::create(region, max_sections) {
                Err(DirectoryError::AlreadyCreated) => Self::open(region),
                other => other,
            },
            other => other,
        }
    }

    /// Offset of the directory's header: [`DIRECTORY_OFFSET`], or 0 for a directory
    /// of the first layout.
    pub fn offset(&self) -> usize {
        self.base
    }

    /// The region the directory lives in.
    pub fn region(&self) -> &'r R {
        self.region
    }

    /// Number of entries.
    pub fn max_sections(&self) -> u32 {
        self.max_sections
    }

    /// The region's length (equal to the header's `region_size`).
    pub fn region_size(&self) -> usize {
        self.region_size
    }

    /// Offset where section space starts.
    pub fn section_space_start(&self) -> usize {
        self.space_start
    }

    /// Entries claimed so far (validated against `max_sections`).
    pub fn section_count(&self) -> Result<u32, DirectoryError> {
        let count = ld32(
            self.region,
            self.base + hdr::SECTION_COUNT,
            Ordering::Acquire,
        )?;
        if count > self.max_sections {
            return Err(DirectoryError::BadSectionCount {
                count,
                max_sections: self.max_sections,
            });
        }
        Ok(count)
    }

    /// The allocation cursor (validated to lie in section space).
    pub fn next_free(&self) -> Result<usize, DirectoryError> {
        let next_free = ld64(self.region, self.base + hdr::NEXT_FREE, Ordering::Acquire)?;
        match usize::try_from(next_free) {
            Ok(n) if n >= self.space_start && n <= self.region_size => Ok(n),
            _ => Err(DirectoryError::BadNextFree { next_free }),
        }
    }

    fn field(&self, index: u32, field: usize) -> Result<usize, DirectoryError> {
        if index >= self.max_sections {
            return Err(DirectoryError::NoSuchEntry {
                index,
                max_sections: self.max_sections,
            });
        }
        entry_field(self.base, index, field).ok_or(DirectoryError::NoSuchEntry {
            index,
            max_sections: self.max_sections,
        })
    }

    fn entry_state(&self, index: u32) -> Result<u32, DirectoryError> {
        ld32(
            self.region,
            self.field(index, ent::STATE)?,
            Ordering::Acquire,
        )
    }

    fn entry_cas(
        &self,
        index: u32,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, DirectoryError> {
        cas32(self.region, self.field(index, ent::STATE)?, current, new)
    }

    fn raw_name(&self, index: u32) -> Result<[u8; NAME_LEN], DirectoryError> {
        let mut raw = [0u8; NAME_LEN];
        for (word, chunk) in raw.chunks_exact_mut(8).enumerate() {
            let off = self.field(index, ent::NAME + 8 * word)?;
            let bytes = self.region.load_u64(off, Ordering::Relaxed)?.to_ne_bytes();
            chunk.copy_from_slice(&bytes);
        }
        Ok(raw)
    }

    fn write_name(&self, index: u32, name: &SectionName) -> Result<(), DirectoryError> {
        let raw = name.to_raw();
        for (word, chunk) in raw.chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            let off = self.field(index, ent::NAME + 8 * word)?;
            self.region
                .store_u64(off, u64::from_ne_bytes(bytes), Ordering::Relaxed)?;
        }
        Ok(())
    }

    /// Entry `index`, validated: a [`SectionInfo`] if it is ready and sound;
    /// [`NotReady`](DirectoryError::NotReady) for a free, claimed or withdrawn entry;
    /// [`BadEntry`](DirectoryError::BadEntry) for an unknown state or a bad field.
    pub fn entry(&self, index: u32) -> Result<SectionInfo, DirectoryError> {
        let state = self.entry_state(index)?;
        match EntryState::from_u32(state) {
            Some(EntryState::Ready) => self.read_ready(index),
            Some(state) => {
                let name = match state {
                    EntryState::Free => None,
                    _ => SectionName::from_raw(self.raw_name(index)?).ok(),
                };
                Err(DirectoryError::NotReady { index, state, name })
            }
            None => Err(DirectoryError::BadEntry {
                index,
                problem: EntryProblem::UnknownState(state),
            }),
        }
    }

    /// Reads and validates the fields of an entry the caller saw ready (acquire).
    fn read_ready(&self, index: u32) -> Result<SectionInfo, DirectoryError> {
        let r = self.region;
        let rlx = Ordering::Relaxed;
        let bad = |problem| DirectoryError::BadEntry { index, problem };
        let name =
            SectionName::from_raw(self.raw_name(index)?).map_err(|e| bad(EntryProblem::Name(e)))?;
        let kind = SectionKind::from_u32(ld32(r, self.field(index, ent::KIND)?, rlx)?);
        let owner_vector = ld32(r, self.field(index, ent::OWNER_VECTOR)?, rlx)?;
        let flags = ld32(r, self.field(index, ent::FLAGS)?, rlx)?;
        let raw_offset = ld64(r, self.field(index, ent::OFFSET)?, rlx)?;
        let raw_size = ld64(r, self.field(index, ent::SIZE)?, rlx)?;
        if raw_size == 0 {
            return Err(bad(EntryProblem::ZeroSize));
        }
        let outside = EntryProblem::OutsideRegion {
            offset: raw_offset,
            size: raw_size,
            region_size: self.region_size,
        };
        let (Ok(offset), Ok(size)) = (usize::try_from(raw_offset), usize::try_from(raw_size))
        else {
            return Err(bad(outside));
        };
        if offset < self.space_start {
            return Err(bad(EntryProblem::InsideDirectory {
                offset: raw_offset,
                section_space: self.space_start,
            }));
        }
        if offset % MIN_SECTION_ALIGN != 0 {
            return Err(bad(EntryProblem::Misaligned { offset: raw_offset }));
        }
        match offset.checked_add(size) {
            Some(end) if end <= self.region_size => {}
            _ => return Err(bad(outside)),
        }
        let [o0, o1, v0, v1] = owner_vector.to_le_bytes();
        Ok(SectionInfo {
            index,
            name,
            kind,
            owner: u16::from_le_bytes([o0, o1]),
            vector: u16::from_le_bytes([v0, v1]),
            flags,
            offset,
            size,
        })
    }

    /// Finds the ready section called `name`.
    ///
    /// Returns `Ok(None)` if there is none, and an error if the entry found is bad or
    /// the header's `section_count` is. If adds of the same name are racing, the
    /// answer is the one every adder returns: entries below it that could still
    /// become ready under that name (state 0, or state 1 with that name) are withdrawn
    /// first, as their own adders' rivals would do.
    pub fn find(&self, name: &str) -> Result<Option<SectionInfo>, DirectoryError> {
        self.find_name(&SectionName::new(name)?)
    }

    /// [`find`](Self::find) for a name already checked.
    pub fn find_name(&self, name: &SectionName) -> Result<Option<SectionInfo>, DirectoryError> {
        let count = self.section_count()?;
        let raw = name.to_raw();
        let mut candidate = None;
        for index in 0..count {
            if self.entry_state(index)? == ent::READY && self.raw_name(index)? == raw {
                candidate = Some(index);
                break;
            }
        }
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let winner = self.settle(&raw, candidate)?.unwrap_or(candidate);
        self.read_ready(winner).map(Some)
    }

    /// Walks entries `0..limit` in order, withdrawing every entry that could still
    /// become ready as `name` (state 0, or 1 with this name), and returns the first
    /// entry that is ready with this name. Once this has passed an index, that entry
    /// can never newly become ready as `name`.
    fn settle(&self, name: &[u8; NAME_LEN], limit: u32) -> Result<Option<u32>, DirectoryError> {
        for index in 0..limit {
            let mut state = self.entry_state(index)?;
            for _ in 0..SETTLE_ATTEMPTS {
                let kill_from = match state {
                    ent::READY if self.raw_name(index)? == *name => return Ok(Some(index)),
                    ent::CLAIMED if self.raw_name(index)? == *name => ent::CLAIMED,
                    ent::FREE => ent::FREE,
                    _ => break,
                };
                match self.entry_cas(index, kill_from, ent::WITHDRAWN)? {
                    Ok(_) => break,
                    Err(now) => state = now,
                }
            }
        }
        Ok(None)
    }

    /// Adds a section. Fails with [`Exists`](DirectoryError::Exists) if one with the
    /// same name is ready, including when a racing peer's add of that name wins.
    pub fn add(&self, spec: &SectionSpec<'_>) -> Result<SectionInfo, DirectoryError> {
        match self.get_or_add(spec)? {
            GetOrAdd::Added(info) => Ok(info),
            GetOrAdd::Existing(info) => Err(DirectoryError::Exists(info)),
        }
    }

    /// Returns the ready section called `spec.name`, adding it as `spec` describes if
    /// there is none. The result tells whether this call added it.
    pub fn get_or_add(&self, spec: &SectionSpec<'_>) -> Result<GetOrAdd, DirectoryError> {
        let name = SectionName::new(spec.name)?;
        if spec.size == 0 || u64::try_from(spec.size).is_err() {
            return Err(DirectoryError::InvalidSize(spec.size));
        }
        if !spec.align.is_power_of_two() {
            return Err(DirectoryError::InvalidAlign(spec.align));
        }
        let align = spec.align.max(MIN_SECTION_ALIGN);
        // Each attempt claims an entry, so Full ends the loop before the bound does.
        for _ in 0..=self.max_sections {
            if let Some(info) = self.find_name(&name)? {
                return Ok(GetOrAdd::Existing(info));
            }
            // Cheap checks first, so that a plain failure uses up nothing.
            if self.section_count()? >= self.max_sections {
                return Err(DirectoryError::Full {
                    max_sections: self.max_sections,
                });
            }
            self.placement(self.next_free()?, spec.size, align)?;
            let index = self.claim_index()?;
            if let Some(info) = self.fill_entry(index, &name, spec, align)? {
                match self.settle(&name.to_raw(), index)? {
                    None => return Ok(GetOrAdd::Added(info)),
                    Some(winner) => {
                        // A peer's entry of the same name became ready first: it wins.
                        let _ = self.entry_cas(index, ent::READY, ent::WITHDRAWN)?;
                        return Ok(GetOrAdd::Existing(self.read_ready(winner)?));
                    }
                }
            }
            // Our entry was withdrawn by a peer settling a race: start again.
        }
        Err(DirectoryError::Contended)
    }

    /// Claims the next entry index by compare-and-exchange on `section_count`.
    fn claim_index(&self) -> Result<u32, DirectoryError> {
        let mut count = self.section_count()?;
        for _ in 0..CAS_ATTEMPTS {
            if count > self.max_sections {
                return Err(DirectoryError::BadSectionCount {
                    count,
                    max_sections: self.max_sections,
                });
            }
            if count == self.max_sections {
                return Err(DirectoryError::Full {
                    max_sections: self.max_sections,
                });
            }
            let next = count.checked_add(1).ok_or(DirectoryError::Full {
                max_sections: self.max_sections,
            })?;
            match cas32(self.region, self.base + hdr::SECTION_COUNT, count, next)? {
                Ok(_) => return Ok(count),
                Err(now) => count = now,
            }
        }
        Err(DirectoryError::Contended)
    }

    /// Where a section of `size` bytes aligned to `align` goes if allocated at
    /// `next_free`: its offset and the new cursor.
    fn placement(
        &self,
        next_free: usize,
        size: usize,
        align: usize,
    ) -> Result<(usize, usize), DirectoryError> {
        let no_space = DirectoryError::NoSpace {
            requested: size,
            free: self.region_size.saturating_sub(next_free),
        };
        let offset = align_up(next_free, align).ok_or(no_space)?;
        match offset.checked_add(size) {
            Some(end) if end <= self.region_size => Ok((offset, end)),
            _ => Err(no_space),
        }
    }

    /// Allocates section space by compare-and-exchange on `next_free`.
    fn allocate(&self, size: usize, align: usize) -> Result<usize, DirectoryError> {
        let mut next_free = self.next_free()?;
        for _ in 0..CAS_ATTEMPTS {
            let (offset, end) = self.placement(next_free, size, align)?;
            match cas64(
                self.region,
                self.base + hdr::NEXT_FREE,
                to_u64(next_free),
                to_u64(end),
            )? {
                Ok(_) => return Ok(offset),
                Err(now) => match usize::try_from(now) {
                    Ok(n) if n >= self.space_start && n <= self.region_size => next_free = n,
                    _ => return Err(DirectoryError::BadNextFree { next_free: now }),
                },
            }
        }
        Err(DirectoryError::Contended)
    }

    /// Writes entry `index` (claimed by us) and publishes it. `Ok(None)` if a peer
    /// withdrew it under us.
    fn fill_entry(
        &self,
        index: u32,
        name: &SectionName,
        spec: &SectionSpec<'_>,
        align: usize,
    ) -> Result<Option<SectionInfo>, DirectoryError> {
        let r = self.region;
        let rlx = Ordering::Relaxed;
        // Steps 2-4 of the add protocol (see the module documentation).
        st32(r, self.field(index, ent::KIND)?, spec.kind.as_u32(), rlx)?;
        let [o0, o1] = spec.owner.to_le_bytes();
        let [v0, v1] = spec.vector.to_le_bytes();
        let owner_vector = u32::from_le_bytes([o0, o1, v0, v1]);
        st32(r, self.field(index, ent::OWNER_VECTOR)?, owner_vector, rlx)?;
        st32(r, self.field(index, ent::FLAGS)?, spec.flags, rlx)?;
        st64(r, self.field(index, ent::OFFSET)?, 0, rlx)?;
        st64(r, self.field(index, ent::SIZE)?, 0, rlx)?;
        self.write_name(index, name)?;
        if self.entry_cas(index, ent::FREE, ent::CLAIMED)?.is_err() {
            return Ok(None);
        }
        let offset = match self.allocate(spec.size, align) {
            Ok(offset) => offset,
            Err(e) => {
                // Leave no entry half-made: withdraw it (the entry is leaked).
                let _ = self.entry_cas(index, ent::CLAIMED, ent::WITHDRAWN)?;
                return Err(e);
            }
        };
        st64(r, self.field(index, ent::OFFSET)?, to_u64(offset), rlx)?;
        st64(r, self.field(index, ent::SIZE)?, to_u64(spec.size), rlx)?;
        if self.entry_cas(index, ent::CLAIMED, ent::READY)?.is_err() {
            return Ok(None);
        }
        Ok(Some(SectionInfo {
            index,
            name: *name,
            kind: spec.kind,
            owner: spec.owner,
            vector: spec.vector,
            flags: spec.flags,
            offset,
            size: spec.size,
        }))
    }

    /// Withdraws the ready entry `index` (compare-and-exchange of its state from
    /// ready to withdrawn), so that [`find`](Self::find) no longer returns it and
    /// the name can be added again. Only for a section whose protocol was never set
    /// up (its creator died or gave up: see [`crate::setup`]); a section in use is
    /// never withdrawn. `Ok(false)` if the entry was not ready (a racing peer
    /// withdrew it first).
    pub fn withdraw(&self, index: u32) -> Result<bool, DirectoryError> {
        Ok(self.entry_cas(index, ent::READY, ent::WITHDRAWN)?.is_ok())
    }

    /// Every claimed entry in index order, validated: a [`SectionInfo`] for each ready
    /// one, an error for each other (see [`entry`](Self::entry)). If the header's
    /// `section_count` is bad, the first item is that error and all `max_sections`
    /// entries follow.
    pub fn sections(&self) -> Sections<'r, R> {
        let (end, pending) = match self.section_count() {
            Ok(count) => (count, None),
            Err(e @ DirectoryError::BadSectionCount { .. }) => (self.max_sections, Some(e)),
            Err(e) => (0, Some(e)),
        };
        Sections {
            dir: *self,
            next: 0,
            end,
            pending,
        }
    }

    /// Checks the whole directory and lists every inconsistency found: a header that
    /// changed since it was opened, a bad `section_count` or `next_free`, bad ready
    /// entries, sections past `next_free`, overlapping sections, duplicate names, and
    /// entries past `section_count` that are not free. An empty list means sound.
    #[cfg(any(test, feature = "alloc"))]
    pub fn check(&self) -> alloc::vec::Vec<Inconsistency> {
        use alloc::vec::Vec;

        let mut found = Vec::new();
        match Self::open(self.region) {
            Ok(now) if now.max_sections == self.max_sections => {}
            Ok(now) => found.push(Inconsistency::Header(DirectoryError::BadMaxSections {
                max_sections: now.max_sections,
                region_len: self.region_size,
            })),
            Err(e) => found.push(Inconsistency::Header(e)),
        }
        let next_free = match self.next_free() {
            Ok(n) => Some(n),
            Err(e) => {
                found.push(Inconsistency::Header(e));
                None
            }
        };
        let count = match self.section_count() {
            Ok(count) => count,
            Err(e) => {
                found.push(Inconsistency::Header(e));
                self.max_sections
            }
        };
        let mut ready: Vec<SectionInfo> = Vec::new();
        for index in 0..count {
            match self.entry(index) {
                Ok(info) => {
                    if let Some(next_free) = next_free {
                        let end = info.offset.saturating_add(info.size);
                        if end > next_free {
                            found.push(Inconsistency::BeyondNextFree {
                                index,
                                end,
                                next_free,
                            });
                        }
                    }
                    ready.push(info);
                }
                Err(DirectoryError::NotReady { .. }) => {}
                Err(DirectoryError::BadEntry { index, problem }) => {
                    found.push(Inconsistency::Entry { index, problem });
                }
                Err(e) => found.push(Inconsistency::Access(e)),
            }
        }
        for index in count..self.max_sections {
            match self.entry_state(index) {
                Ok(ent::FREE) => {}
                Ok(state) => found.push(Inconsistency::Unclaimed { index, state }),
                Err(e) => found.push(Inconsistency::Access(e)),
            }
        }
        // Overlaps: sort by offset and compare each section with the furthest-reaching
        // one before it.
        ready.sort_unstable_by_key(|info| (info.offset, info.index));
        let mut reach: Option<(usize, u32)> = None;
        for info in &ready {
            if let Some((end, first)) = reach {
                if info.offset < end {
                    found.push(Inconsistency::Overlap {
                        first,
                        second: info.index,
                    });
                }
            }
            let end = info.offset.saturating_add(info.size);
            if reach.is_none_or(|(furthest, _)| end > furthest) {
                reach = Some((end, info.index));
            }
        }
        ready.sort_unstable_by_key(|info| (info.name, info.index));
        for pair in ready.windows(2) {
            if let [a, b] = pair {
                if a.name == b.name {
                    found.push(Inconsistency::DuplicateName {
                        name: a.name,
                        first: a.index,
                        second: b.index,
                    });
                }
            }
        }
        found
    }
}

/// The iterator returned by [`Directory::sections`].
#[derive(Debug)]
pub struct Sections<'r, R: Region + ?Sized> {
    dir: Directory<'r, R>,
    next: u32,
    end: u32,
    pending: Option<DirectoryError>,
}

impl<R: Region + ?Sized> Iterator for Sections<'_, R> {
    type Item = Result<SectionInfo, DirectoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        if self.next >= self.end {
            return None;
        }
        let index = self.next;
        self.next = self.next.saturating_add(1);
        Some(self.dir.entry(index))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.end.saturating_sub(self.next)).unwrap_or(usize::MAX);
        let left = left.saturating_add(usize::from(self.pending.is_some()));
        (left, Some(left))
    }
}

impl<R: Region + ?Sized> core::iter::FusedIterator for Sections<'_, R> {}

/// One problem found by `Directory::check` (with the `alloc` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconsistency {
    /// The header is no longer valid, or a header word is bad.
    Header(DirectoryError),
    /// A ready (or unknown-state) entry holds a bad value.
    Entry {
        /// Its index.
        index: u32,
        /// What is wrong.
        problem: EntryProblem,
    },
    /// A section ends past `next_free`, in space nobody allocated.
    BeyondNextFree {
        /// Its entry.
        index: u32,
        /// Its end offset.
        end: usize,
        /// The cursor.
        next_free: usize,
    },
    /// Two ready sections overlap.
    Overlap {
        /// The entry of the section that starts first.
        first: u32,
        /// The entry of the section that starts inside it.
        second: u32,
    },
    /// Two ready sections have the same name.
    DuplicateName {
        /// The name.
        name: SectionName,
        /// The lower entry.
        first: u32,
        /// The higher entry.
        second: u32,
    },
    /// An entry past `section_count` is not free.
    Unclaimed {
        /// Its index.
        index: u32,
        /// Its stored state.
        state: u32,
    },
    /// Reading the directory failed.
    Access(DirectoryError),
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Inconsistency::Header(e) => write!(f, "header: {e}"),
            Inconsistency::Entry { index, problem } => write!(f, "entry {index}: {problem}"),
            Inconsistency::BeyondNextFree {
                index,
                end,
                next_free,
            } => write!(
                f,
                "entry {index}: section ends at {end:#x}, past next_free {next_free:#x}"
            ),
            Inconsistency::Overlap { first, second } => {
                write!(f, "entries {first} and {second}: sections overlap")
            }
            Inconsistency::DuplicateName {
                name,
                first,
                second,
            } => write!(f, "entries {first} and {second}: both ready as \"{name}\""),
            Inconsistency::Unclaimed { index, state } => write!(
                f,
                "entry {index}: state {state} past section_count (should be free)"
            ),
            Inconsistency::Access(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{HeapRegion, RawRegion};
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    const KIB: usize = 1024;
    /// Where new directories go.
    const B: usize = DIRECTORY_OFFSET;

    fn ring(name: &str, size: usize) -> SectionSpec<'_> {
        SectionSpec::new(name, SectionKind::Ring, size)
    }

    /// Writes entry `index` by hand, as a peer (honest or not) would.
    fn poke_entry(r: &RawRegion, index: u32, state: u32, name: &[u8], offset: u64, size: u64) {
        let at = |f| entry_field(B, index, f).unwrap();
        let mut raw = [0u8; NAME_LEN];
        raw[..name.len()].copy_from_slice(name);
        r.write(at(ent::NAME), &raw).unwrap();
        r.store_u64(at(ent::OFFSET), offset.to_le(), Relaxed)
            .unwrap();
        r.store_u64(at(ent::SIZE), size.to_le(), Relaxed).unwrap();
        r.store_u32(at(ent::KIND), 1u32.to_le(), Relaxed).unwrap();
        r.store_u32(at(ent::STATE), state.to_le(), Relaxed).unwrap();
    }

    fn set_count(r: &RawRegion, count: u32) {
        r.store_u32(B + hdr::SECTION_COUNT, count.to_le(), Relaxed)
            .unwrap();
    }

    fn state_of(r: &RawRegion, index: u32) -> u32 {
        u32::from_le(
            r.load_u32(entry_field(B, index, 0).unwrap(), Relaxed)
                .unwrap(),
        )
    }

    #[test]
    fn create_open_add_find_round_trip() {
        let region = HeapRegion::new(64 * KIB);
        let dir = Directory::create(&*region, 8).unwrap();
        assert_eq!(dir.max_sections(), 8);
        assert_eq!(dir.offset(), DIRECTORY_OFFSET);
        assert_eq!(dir.section_space_start(), 8192);
        assert_eq!(dir.next_free().unwrap(), 8192);

        let spec = ring("tx:0->1", 1000)
            .with_owner(3)
            .with_vector(2)
            .with_flags(0xf00d)
            .with_align(256);
        let a = dir.add(&spec).unwrap();
        assert_eq!(a.index, 0);
        assert_eq!(a.name.as_str(), "tx:0->1");
        assert_eq!(
            (a.kind, a.owner, a.vector, a.flags),
            (SectionKind::Ring, 3, 2, 0xf00d)
        );
        assert_eq!((a.offset, a.size), (8192, 1000));
        let b = dir
            .add(&SectionSpec::new("console", SectionKind::Console, 64).with_align(4096))
            .unwrap();
        assert_eq!((b.index, b.offset, b.size), (1, 12288, 64));
        // A small alignment is raised to 64.
        let c = dir.add(&ring("c", 1).with_align(1)).unwrap();
        assert_eq!(c.offset, 12288 + 64);
        assert_eq!(dir.next_free().unwrap(), 12288 + 65);

        let again = Directory::open(&*region).unwrap();
        assert_eq!(again.find("tx:0->1").unwrap(), Some(a));
        assert_eq!(again.find("console").unwrap(), Some(b));
        assert_eq!(again.find("nope").unwrap(), None);
        assert_eq!(again.entry(2).unwrap(), c);
        let listed: Vec<_> = again.sections().collect();
        assert_eq!(listed, [Ok(a), Ok(b), Ok(c)]);
        assert_eq!(again.check(), []);
        assert_eq!(
            again.entry(3),
            Err(DirectoryError::NotReady {
                index: 3,
                state: EntryState::Free,
                name: None
            })
        );
        assert!(matches!(
            again.entry(8),
            Err(DirectoryError::NoSuchEntry { .. })
        ));

        // get_or_add returns the existing section without adding.
        let got = again.get_or_add(&ring("console", 999)).unwrap();
        assert_eq!(got, GetOrAdd::Existing(b));
        assert!(!got.is_added());
        let new = again.get_or_add(&ring("new", 8)).unwrap();
        assert!(new.is_added());
        assert_eq!(new.info().index, 3);
        assert_eq!(a.range(), 8192..9192);
    }

    #[test]
    fn layout_matches_the_documented_table() {
        let region = HeapRegion::new(16 * KIB);
        let dir = Directory::create(&*region, 2).unwrap();
        dir.add(
            &SectionSpec::new("abc", SectionKind::Mailbox, 0x123)
                .with_owner(0x0102)
                .with_vector(0x0304)
                .with_flags(0x0506_0708),
        )
        .unwrap();
        let mut message_area = [0xffu8; MESSAGE_AREA_LEN];
        region.read(0, &mut message_area).unwrap();
        assert_eq!(
            message_area, [0u8; MESSAGE_AREA_LEN],
            "the message area is left alone"
        );
        let mut header = [0u8; 64];
        region.read(4096, &mut header).unwrap();
        assert_eq!(&header[0..8], b"IVLINKD\x01");
        assert_eq!(header[8..12], 1u32.to_le_bytes());
        assert_eq!(header[12..16], 2u32.to_le_bytes());
        assert_eq!(header[16..24], (16 * KIB as u64).to_le_bytes());
        assert_eq!(header[24..28], 2u32.to_le_bytes());
        assert_eq!(header[28..32], 1u32.to_le_bytes());
        assert_eq!(header[32..40], (8192u64 + 0x123).to_le_bytes());
        assert_eq!(header[40..64], [0u8; 24]);
        let mut entry = [0u8; 64];
        region.read(4096 + 64, &mut entry).unwrap();
        assert_eq!(entry[0..4], 2u32.to_le_bytes());
        assert_eq!(entry[4..8], 2u32.to_le_bytes());
        assert_eq!(entry[8..10], 0x0102u16.to_le_bytes());
        assert_eq!(entry[10..12], 0x0304u16.to_le_bytes());
        assert_eq!(entry[12..16], 0x0506_0708u32.to_le_bytes());
        assert_eq!(entry[16..24], 8192u64.to_le_bytes());
        assert_eq!(entry[24..32], 0x123u64.to_le_bytes());
        assert_eq!(&entry[32..35], b"abc");
        assert_eq!(entry[35..64], [0u8; 29]);
        assert_eq!(min_region_len(2), Some(8192));
        assert_eq!(min_region_len(63), Some(8192));
        assert_eq!(min_region_len(64), Some(12288));
    }

    #[test]
    fn concurrent_creators_have_one_winner_and_every_opener_succeeds() {
        let rounds = if cfg!(miri) { 2 } else { 50 };
        let threads = if cfg!(miri) { 3 } else { 8 };
        for _ in 0..rounds {
            let region = HeapRegion::new(8 * KIB);
            let winners = AtomicUsize::new(0);
            let start = Barrier::new(threads);
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (region, winners, start) = (&*region, &winners, &start);
                    s.spawn(move || {
                        start.wait();
                        if t % 2 == 0 {
                            match Directory::create(region, 4) {
                                Ok(_) => {
                                    winners.fetch_add(1, Relaxed);
                                }
                                Err(
                                    DirectoryError::Initializing | DirectoryError::AlreadyCreated,
                                ) => {}
                                Err(e) => panic!("unexpected create error: {e}"),
                            }
                        }
                        // Every peer then opens, retrying while it is not ready yet.
                        loop {
                            match Directory::open(region) {
                                Ok(dir) => {
                                    assert_eq!(dir.max_sections(), 4);
                                    break;
                                }
                                Err(DirectoryError::NotCreated | DirectoryError::Initializing) => {
                                    std::thread::yield_now()
                                }
                                Err(e) => panic!("unexpected open error: {e}"),
                            }
                        }
                    });
                }
            });
            assert_eq!(winners.load(Relaxed), 1);
        }
    }

    #[test]
    fn concurrent_open_or_create_converges() {
        let threads = if cfg!(miri) { 3 } else { 8 };
        let region = HeapRegion::new(8 * KIB);
        let start = Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (region, start) = (&*region, &start);
                s.spawn(move || {
                    start.wait();
                    loop {
                        match Directory::open_or_create(region, 4) {
                            Ok(dir) => return dir.max_sections(),
                            Err(DirectoryError::Initializing) => std::thread::yield_now(),
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                });
            }
        });
        assert!(Directory::open(&*region).is_ok());
    }

    #[test]
    fn racing_duplicate_adds_agree_on_the_first() {
        let rounds = if cfg!(miri) { 3 } else { 300 };
        let threads = if cfg!(miri) { 3 } else { 6 };
        let finders = if cfg!(miri) { 1 } else { 2 };
        let mut contended = 0;
        for _ in 0..rounds {
            let region = HeapRegion::new(64 * KIB);
            let dir = Directory::create(&*region, 16).unwrap();
            let start = Barrier::new(threads + finders);
            let (results, seen): (Vec<GetOrAdd>, Vec<SectionInfo>) = std::thread::scope(|s| {
                let start = &start;
                let adders: Vec<_> = (0..threads)
                    .map(|t| {
                        s.spawn(move || {
                            let spec = ring("shared", 100 + t).with_owner(t as PeerId);
                            start.wait();
                            dir.get_or_add(&spec).unwrap()
                        })
                    })
                    .collect();
                // Readers racing the adders must only ever see the final winner.
                let readers: Vec<_> = (0..finders)
                    .map(|_| {
                        s.spawn(move || {
                            start.wait();
                            loop {
                                if let Some(info) = dir.find("shared").unwrap() {
                                    return info;
                                }
                                std::thread::yield_now();
                            }
                        })
                    })
                    .collect();
                (
                    adders.into_iter().map(|h| h.join().unwrap()).collect(),
                    readers.into_iter().map(|h| h.join().unwrap()).collect(),
                )
            });
            let winner = *results[0].info();
            assert!(seen.iter().all(|i| *i == winner), "{seen:?} vs {winner:?}");
            if dir.section_count().unwrap() > 1 {
                contended += 1;
            }
            assert!(results.iter().all(|r| *r.info() == winner), "{results:?}");
            assert_eq!(results.iter().filter(|r| r.is_added()).count(), 1);
            assert_eq!(dir.find("shared").unwrap(), Some(winner));
            // Every other claimed entry is withdrawn; nothing else is ready.
            let ready: Vec<_> = dir.sections().filter_map(Result::ok).collect();
            assert_eq!(ready, [winner]);
            assert_eq!(dir.check(), []);
            assert!(matches!(
                dir.add(&ring("shared", 1)),
                Err(DirectoryError::Exists(info)) if info == winner
            ));
        }
        std::eprintln!("{contended} of {rounds} rounds had more than one claimed entry");
    }

    #[test]
    fn racing_adds_of_different_names_all_succeed() {
        let threads = if cfg!(miri) { 3 } else { 8 };
        let region = HeapRegion::new(256 * KIB);
        let dir = Directory::create(&*region, 64).unwrap();
        let start = Barrier::new(threads);
        let infos: Vec<SectionInfo> = std::thread::scope(|s| {
            let start = &start;
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        start.wait();
                        let mut mine = Vec::new();
                        for i in 0..3 {
                            let name = alloc::format!("t{t}-s{i}");
                            mine.push(dir.add(&ring(&name, 64 * (i + 1))).unwrap());
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(infos.len(), threads * 3);
        for info in &infos {
            assert_eq!(dir.find(info.name.as_str()).unwrap(), Some(*info));
        }
        assert_eq!(dir.check(), []);
    }

    #[test]
    fn full_no_space_and_exists() {
        let region = HeapRegion::new(12 * KIB);
        let dir = Directory::create(&*region, 2).unwrap();
        // Section space is 8192..12288.
        assert_eq!(
            dir.add(&ring("big", 4097)),
            Err(DirectoryError::NoSpace {
                requested: 4097,
                free: 4096
            })
        );
        assert_eq!(
            dir.section_count().unwrap(),
            0,
            "a refused add uses nothing"
        );
        let a = dir.add(&ring("a", 4000)).unwrap();
        assert_eq!(dir.add(&ring("a", 1)), Err(DirectoryError::Exists(a)));
        assert!(matches!(
            dir.add(&ring("b", 100)),
            Err(DirectoryError::NoSpace { requested: 100, .. })
        ));
        let b = dir.add(&ring("b", 32)).unwrap();
        assert_eq!(b.offset, 8192 + 4032);
        assert_eq!(
            dir.add(&ring("c", 1)),
            Err(DirectoryError::Full { max_sections: 2 })
        );
        assert_eq!(
            dir.get_or_add(&ring("b", 1)).unwrap(),
            GetOrAdd::Existing(b)
        );
        assert_eq!(dir.check(), []);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let region = HeapRegion::new(12 * KIB);
        let dir = Directory::create(&*region, 2).unwrap();
        let long = "x".repeat(33);
        assert_eq!(
            dir.add(&ring(&long, 1)),
            Err(DirectoryError::InvalidName(NameError::TooLong { len: 33 }))
        );
        assert!(dir.add(&ring(&long[..32], 1)).is_ok());
        assert_eq!(
            dir.find(""),
            Err(DirectoryError::InvalidName(NameError::Empty))
        );
        assert_eq!(
            dir.add(&ring("a\0b", 1)),
            Err(DirectoryError::InvalidName(NameError::ContainsNul))
        );
        assert_eq!(dir.add(&ring("z", 0)), Err(DirectoryError::InvalidSize(0)));
        assert_eq!(
            dir.add(&ring("z", 1).with_align(96)),
            Err(DirectoryError::InvalidAlign(96))
        );
        assert_eq!(
            dir.add(&ring("z", 1).with_align(0)),
            Err(DirectoryError::InvalidAlign(0))
        );
        assert!(matches!(
            dir.add(&ring("z", 1).with_align(1 << 40)),
            Err(DirectoryError::NoSpace { .. })
        ));
        let tiny = HeapRegion::new(8191);
        assert_eq!(
            Directory::create(&*tiny, 1).unwrap_err(),
            DirectoryError::RegionTooSmall {
                region_len: 8191,
                needed: 8192
            }
        );
        assert_eq!(
            Directory::create(&*region, 0).unwrap_err(),
            DirectoryError::InvalidMaxSections(0)
        );
        assert_eq!(
            Directory::create(&*region, MAX_SECTIONS_LIMIT + 1).unwrap_err(),
            DirectoryError::InvalidMaxSections(MAX_SECTIONS_LIMIT + 1)
        );
        assert!(matches!(
            Directory::open(&*HeapRegion::new(10)),
            Err(DirectoryError::RegionTooSmall { .. })
        ));
    }

    #[test]
    fn a_foreign_region_is_refused_untouched_until_formatted() {
        let region = HeapRegion::new(16 * KIB);
        region.write(B, b"hello world\0").unwrap();
        let before = |r: &RawRegion| {
            let mut b = [0u8; 128];
            r.read(B, &mut b).unwrap();
            b
        };
        let snapshot = before(&region);
        let foreign = DirectoryError::Foreign {
            first_bytes: *b"hello wo",
        };
        assert_eq!(Directory::create(&*region, 4).unwrap_err(), foreign);
        assert_eq!(Directory::open(&*region).unwrap_err(), foreign);
        assert_eq!(Directory::open_or_create(&*region, 4).unwrap_err(), foreign);
        assert_eq!(before(&region), snapshot);
        assert_eq!(
            foreign.to_string(),
            "the region holds something else where the directory goes (it starts with \"hello wo\"); `ivlink format` takes it over"
        );

        let dir = format(&*region, 4).unwrap();
        dir.add(&ring("a", 10)).unwrap();
        let dir = Directory::open(&*region).unwrap();
        assert_eq!(dir.find("a").unwrap().unwrap().offset, 8192);
        assert_eq!(
            Directory::create(&*region, 4).unwrap_err(),
            DirectoryError::AlreadyCreated
        );
        // Formatting again starts from scratch.
        let dir = format(&*region, 6).unwrap();
        assert_eq!(dir.find("a").unwrap(), None);
        assert_eq!(Directory::open(&*region).unwrap().max_sections(), 6);
    }

    #[test]
    fn a_raw_message_and_the_directory_never_share_bytes_in_either_order() {
        let message = b"hello from a zephyr guest\0";
        // A message first (`ivlink notify`, then `ivlink recv`).
        let region = HeapRegion::new(16 * KIB);
        region.write(0, message).unwrap();
        let dir = Directory::open_or_create(&*region, 4).unwrap();
        assert_eq!(dir.offset(), DIRECTORY_OFFSET);
        dir.add(&ring("demo", 100)).unwrap();
        let mut read = [0u8; 26];
        region.read(0, &mut read).unwrap();
        assert_eq!(&read, message);
        // The directory first, then a message as long as the message area allows.
        let region = HeapRegion::new(16 * KIB);
        let dir = Directory::open_or_create(&*region, 4).unwrap();
        let a = dir.add(&ring("demo", 100)).unwrap();
        region.fill(0, MESSAGE_AREA_LEN - 1, b'x').unwrap();
        region.write(MESSAGE_AREA_LEN - 1, &[0]).unwrap();
        let dir = Directory::open(&*region).unwrap();
        assert_eq!(dir.find("demo").unwrap(), Some(a));
        assert_eq!(dir.check(), []);
    }

    /// Lays out a directory of the first releases: the same layout at offset 0.
    fn legacy_directory(region: &RawRegion, max_sections: u32) {
        let start = space_start(LEGACY_DIRECTORY_OFFSET, max_sections).unwrap();
        region
            .store_u32(hdr::STATE, hdr::INITIALIZING.to_le(), Relaxed)
            .unwrap();
        initialize(region, LEGACY_DIRECTORY_OFFSET, max_sections, start).unwrap();
    }

    #[test]
    fn a_directory_of_the_first_layout_at_offset_0_still_opens_and_grows() {
        let region = HeapRegion::new(16 * KIB);
        legacy_directory(&region, 8);
        let dir = Directory::open(&*region).unwrap();
        assert_eq!(dir.offset(), LEGACY_DIRECTORY_OFFSET);
        assert_eq!(dir.section_space_start(), 4096);
        let a = dir.add(&ring("a", 100)).unwrap();
        assert_eq!(a.offset, 4096);
        assert_eq!(locate(&*region).unwrap(), LEGACY_DIRECTORY_OFFSET);
        // Nobody creates a second directory beside it.
        assert_eq!(
            Directory::create(&*region, 4).unwrap_err(),
            DirectoryError::AlreadyCreated
        );
        let again = Directory::open_or_create(&*region, 4).unwrap();
        assert_eq!(again.find("a").unwrap(), Some(a));
        assert_eq!(again.check(), []);
    }

    #[test]
    fn format_moves_a_first_layout_directory_to_its_new_place() {
        let region = HeapRegion::new(16 * KIB);
        legacy_directory(&region, 8);
        Directory::open(&*region)
            .unwrap()
            .add(&ring("a", 100))
            .unwrap();
        let dir = format(&*region, 4).unwrap();
        assert_eq!(dir.offset(), DIRECTORY_OFFSET);
        let mut header = [0xffu8; HEADER_SIZE];
        region.read(0, &mut header).unwrap();
        assert_eq!(header, [0u8; HEADER_SIZE], "the old header is cleared");
        let dir = Directory::open(&*region).unwrap();
        assert_eq!(dir.offset(), DIRECTORY_OFFSET);
        assert_eq!(dir.find("a").unwrap(), None);
        assert_eq!(dir.max_sections(), 4);
    }

    #[test]
    fn withdrawing_a_ready_section_lets_its_name_be_added_again() {
        let region = HeapRegion::new(32 * KIB);
        let dir = Directory::create(&*region, 4).unwrap();
        let first = dir.add(&ring("a", 100)).unwrap();
        assert!(dir.withdraw(first.index).unwrap());
        assert!(!dir.withdraw(first.index).unwrap(), "only once");
        assert_eq!(dir.find("a").unwrap(), None);
        let second = dir.add(&ring("a", 100)).unwrap();
        assert_ne!(
            second.offset, first.offset,
            "the abandoned space is not reused"
        );
        assert_eq!(dir.find("a").unwrap(), Some(second));
        assert_eq!(dir.check(), []);
    }

    #[test]
    fn open_validates_the_header() {
        let region = HeapRegion::new(16 * KIB);
        assert_eq!(
            Directory::open(&*region).unwrap_err(),
            DirectoryError::NotCreated
        );
        Directory::create(&*region, 4).unwrap();
        let set32 = |off, v: u32| region.store_u32(off, v.to_le(), Relaxed).unwrap();
        let set64 = |off, v: u64| region.store_u64(off, v.to_le(), Relaxed).unwrap();
        let open = || Directory::open(&*region).map(|_| ());

        set32(B + hdr::VERSION, 2);
        assert_eq!(open(), Err(DirectoryError::UnsupportedVersion(2)));
        set32(B + hdr::VERSION, 1);
        set64(B + hdr::REGION_SIZE, 8 * KIB as u64);
        assert_eq!(
            open(),
            Err(DirectoryError::RegionSizeMismatch {
                recorded: 8192,
                actual: 16384
            })
        );
        set64(B + hdr::REGION_SIZE, 16 * KIB as u64);
        for bad in [0, 256, MAX_SECTIONS_LIMIT + 1, u32::MAX] {
            set32(B + hdr::MAX_SECTIONS, bad);
            assert_eq!(
                open(),
                Err(DirectoryError::BadMaxSections {
                    max_sections: bad,
                    region_len: 16 * KIB
                })
            );
        }
        set32(B + hdr::MAX_SECTIONS, 190);
        assert_eq!(open(), Ok(()));
        set32(B + hdr::STATE, 1);
        assert_eq!(open(), Err(DirectoryError::Initializing));
        set32(B + hdr::STATE, 7);
        assert_eq!(open(), Err(DirectoryError::BadHeaderState(7)));
        set32(B + hdr::STATE, 0);
        assert_eq!(open(), Err(DirectoryError::BadHeaderState(0)));
        set32(B + hdr::STATE, 2);
        set64(B + hdr::MAGIC, 0x1234);
        assert!(matches!(open(), Err(DirectoryError::Foreign { .. })));
        set64(B + hdr::MAGIC, MAGIC);
        let dir = Directory::open(&*region).unwrap();
        set32(B + hdr::SECTION_COUNT, 191);
        assert_eq!(
            dir.find("a"),
            Err(DirectoryError::BadSectionCount {
                count: 191,
                max_sections: 190
            })
        );
        set32(B + hdr::SECTION_COUNT, 0);
        set64(B + hdr::NEXT_FREE, 100);
        assert_eq!(
            dir.add(&ring("a", 1)),
            Err(DirectoryError::BadNextFree { next_free: 100 })
        );
    }

    #[test]
    fn stale_claims_in_the_way_are_withdrawn() {
        let region = HeapRegion::new(16 * KIB);
        let dir = Directory::create(&*region, 8).unwrap();
        // A peer claimed index 0 and died before naming it; another is setting up
        // "x" at 1, another "y" at 2.
        set_count(&region, 3);
        poke_entry(&region, 1, ent::CLAIMED, b"x", 0, 0);
        poke_entry(&region, 2, ent::CLAIMED, b"y", 0, 0);
        let x = dir.add(&ring("x", 64)).unwrap();
        assert_eq!(x.index, 3);
        assert_eq!(state_of(&region, 0), ent::WITHDRAWN);
        assert_eq!(state_of(&region, 1), ent::WITHDRAWN);
        assert_eq!(
            state_of(&region, 2),
            ent::CLAIMED,
            "other names are left alone"
        );
        // The slow adder of "x" at 1 can no longer publish.
        assert!(dir.entry_cas(1, ent::CLAIMED, ent::READY).unwrap().is_err());
        assert_eq!(
            dir.entry(1),
            Err(DirectoryError::NotReady {
                index: 1,
                state: EntryState::Withdrawn,
                name: Some(SectionName::new("x").unwrap())
            })
        );
        assert_eq!(dir.find("x").unwrap(), Some(x));
    }

    #[test]
    fn interleaved_steps_of_two_adders_agree() {
        let spec = ring("x", 64);
        let name = SectionName::new("x").unwrap();
        let fresh = || {
            let region = HeapRegion::new(16 * KIB);
            Directory::create(&*region, 8).unwrap();
            region
        };

        // B publishes and settles while A has only claimed its index: A's entry is
        // withdrawn, A cannot publish, and A's retry finds B.
        let region = fresh();
        let dir = Directory::open(&*region).unwrap();
        let (a, b) = (dir.claim_index().unwrap(), dir.claim_index().unwrap());
        let b_info = dir.fill_entry(b, &name, &spec, 64).unwrap().unwrap();
        assert_eq!(dir.settle(&name.to_raw(), b).unwrap(), None);
        assert_eq!(dir.fill_entry(a, &name, &spec, 64).unwrap(), None);
        assert_eq!(dir.get_or_add(&spec).unwrap(), GetOrAdd::Existing(b_info));

        // Both publish before either settles: the lower index wins for both.
        let region = fresh();
        let dir = Directory::open(&*region).unwrap();
        let (a, b) = (dir.claim_index().unwrap(), dir.claim_index().unwrap());
        dir.fill_entry(b, &name, &spec, 64).unwrap().unwrap();
        let a_info = dir.fill_entry(a, &name, &spec, 64).unwrap().unwrap();
        assert_eq!(dir.settle(&name.to_raw(), b).unwrap(), Some(a));
        assert_eq!(dir.settle(&name.to_raw(), a).unwrap(), None);
        assert_eq!(dir.find("x").unwrap(), Some(a_info));

        // A publishes and settles first: B, publishing later, finds A.
        let region = fresh();
        let dir = Directory::open(&*region).unwrap();
        let (a, b) = (dir.claim_index().unwrap(), dir.claim_index().unwrap());
        let a_info = dir.fill_entry(a, &name, &spec, 64).unwrap().unwrap();
        assert_eq!(dir.settle(&name.to_raw(), a).unwrap(), None);
        dir.fill_entry(b, &name, &spec, 64).unwrap().unwrap();
        assert_eq!(dir.settle(&name.to_raw(), b).unwrap(), Some(a));
        assert_eq!(dir.find("x").unwrap(), Some(a_info));
    }

    #[test]
    fn find_settles_a_race_before_answering() {
        let region = HeapRegion::new(16 * KIB);
        let dir = Directory::create(&*region, 8).unwrap();
        // Entry 0 is "x" being set up; entry 1 is "x", published but not yet settled.
        set_count(&region, 2);
        poke_entry(&region, 0, ent::CLAIMED, b"x", 0, 0);
        poke_entry(&region, 1, ent::READY, b"x", 8192, 64);
        region
            .store_u64(B + hdr::NEXT_FREE, (8192u64 + 64).to_le(), Relaxed)
            .unwrap();
        let found = dir.find("x").unwrap().unwrap();
        assert_eq!(found.index, 1);
        assert_eq!(state_of(&region, 0), ent::WITHDRAWN);
        // A lower entry that is ready wins over a higher one.
        poke_entry(&region, 0, ent::READY, b"x", 8192 + 64, 64);
        assert_eq!(dir.find("x").unwrap().unwrap().index, 0);
        assert!(dir.check().contains(&Inconsistency::DuplicateName {
            name: SectionName::new("x").unwrap(),
            first: 0,
            second: 1
        }));
    }

    #[test]
    fn hostile_entries_are_reported_not_trusted() {
        let region = HeapRegion::new(16 * KIB);
        let dir = Directory::create(&*region, 9).unwrap();
        let a = dir.add(&ring("a", 4096)).unwrap();
        set_count(&region, 9);
        let region_len = 16 * KIB as u64;
        poke_entry(&region, 1, ent::READY, b"in-dir", 64, 64);
        poke_entry(&region, 2, ent::READY, b"past-end", region_len - 64, 65);
        poke_entry(&region, 3, ent::READY, b"overlap", 8192 + 1024, 64);
        poke_entry(&region, 4, ent::READY, b"\xff\xfe", 8192, 64);
        poke_entry(&region, 5, 9, b"weird", 8192, 64);
        poke_entry(&region, 6, ent::READY, b"huge", u64::MAX - 63, u64::MAX);
        poke_entry(&region, 7, ent::READY, b"zero", 8192, 0);
        poke_entry(&region, 8, ent::READY, b"beyond", 12288, 64);
        let items: Vec<_> = dir.sections().collect();
        assert_eq!(items.len(), 9);
        assert_eq!(items[0], Ok(a));
        let problem = |i: usize| match items[i] {
            Err(DirectoryError::BadEntry { problem, .. }) => problem,
            ref other => panic!("entry {i}: {other:?}"),
        };
        assert!(matches!(problem(1), EntryProblem::InsideDirectory { .. }));
        assert!(matches!(problem(2), EntryProblem::OutsideRegion { .. }));
        assert_eq!(problem(4), EntryProblem::Name(NameError::NotUtf8));
        assert_eq!(problem(5), EntryProblem::UnknownState(9));
        assert!(matches!(problem(6), EntryProblem::OutsideRegion { .. }));
        assert_eq!(problem(7), EntryProblem::ZeroSize);
        assert!(items[3].is_ok(), "overlap is only visible to check()");
        assert!(items[8].is_ok(), "so is a section past next_free");
        assert!(matches!(
            dir.find("past-end"),
            Err(DirectoryError::BadEntry { index: 2, .. })
        ));

        let found = dir.check();
        assert!(
            found.contains(&Inconsistency::Overlap {
                first: 0,
                second: 3
            }),
            "{found:?}"
        );
        assert!(found.contains(&Inconsistency::BeyondNextFree {
            index: 8,
            end: 12288 + 64,
            next_free: 12288
        }));
        assert_eq!(
            found
                .iter()
                .filter(|i| matches!(i, Inconsistency::Entry { .. }))
                .count(),
            6
        );
        // The rest of the directory still works.
        assert_eq!(dir.find("a").unwrap(), Some(a));
        assert_eq!(
            dir.add(&ring("b", 1)),
            Err(DirectoryError::Full { max_sections: 9 })
        );

        // A count beyond max_sections is reported first, then every entry listed.
        set_count(&region, 1000);
        let items: Vec<_> = dir.sections().collect();
        assert_eq!(items.len(), 10);
        assert!(matches!(
            items[0],
            Err(DirectoryError::BadSectionCount { count: 1000, .. })
        ));
        assert!(
            dir.check()
                .contains(&Inconsistency::Header(DirectoryError::BadSectionCount {
                    count: 1000,
                    max_sections: 9
                }))
        );
        // Entries past the count that are in use are reported.
        set_count(&region, 1);
        assert!(
            dir.check()
                .contains(&Inconsistency::Unclaimed { index: 5, state: 9 })
        );
    }

    #[test]
    fn names_kinds_and_states_convert() {
        let name = SectionName::new("héllo").unwrap();
        assert_eq!(name.as_str(), "héllo");
        assert_eq!(name.len(), 6);
        assert!(!name.is_empty());
        assert_eq!(SectionName::from_raw(name.to_raw()), Ok(name));
        let mut raw = [0u8; NAME_LEN];
        assert_eq!(SectionName::from_raw(raw), Err(NameError::Empty));
        raw[0] = b'a';
        raw[5] = b'b';
        assert_eq!(SectionName::from_raw(raw), Err(NameError::BadPadding));
        let full = [b'z'; NAME_LEN];
        assert_eq!(SectionName::from_raw(full).unwrap().len(), 32);
        assert_eq!(alloc::format!("{name:?}"), "SectionName(\"héllo\")");
        for v in 0..10 {
            assert_eq!(SectionKind::from_u32(v).as_u32(), v);
        }
        assert_eq!(SectionKind::from(4), SectionKind::Rpmsg);
        assert_eq!(u32::from(SectionKind::Ntb), 6);
        assert_eq!(SectionKind::Other(77).to_string(), "kind 77");
        for v in 0..4 {
            assert_eq!(EntryState::from_u32(v).unwrap().as_u32(), v);
        }
        assert_eq!(EntryState::from_u32(4), None);
    }

    #[test]
    fn errors_read_as_sentences() {
        let region = HeapRegion::new(12 * KIB);
        let dir = Directory::create(&*region, 2).unwrap();
        let a = dir.add(&ring("a", 1)).unwrap();
        let cases: [(DirectoryError, &str); 5] = [
            (
                DirectoryError::Exists(a),
                "section \"a\" already exists (entry 0)",
            ),
            (
                DirectoryError::Full { max_sections: 2 },
                "all 2 directory entries are in use",
            ),
            (
                DirectoryError::NoSpace {
                    requested: 10,
                    free: 5,
                },
                "no room for a 10-byte section (5 bytes left in the region)",
            ),
            (
                DirectoryError::InvalidName(NameError::TooLong { len: 40 }),
                "section name is 40 bytes, longer than 32",
            ),
            (
                DirectoryError::BadEntry {
                    index: 3,
                    problem: EntryProblem::UnknownState(9),
                },
                "entry 3 is bad: unknown state 9",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
        let e: &dyn core::error::Error = &DirectoryError::InvalidName(NameError::Empty);
        assert!(e.source().is_some());
        assert_eq!(
            Inconsistency::Overlap {
                first: 1,
                second: 2
            }
            .to_string(),
            "entries 1 and 2: sections overlap"
        );
    }

    // ------------------------------------------------------------------ properties

    const NAMES: [&str; 6] = [
        "a",
        "b",
        "ring:0->1",
        "console",
        "x",
        "a-very-long-name-of-32-bytes-xyz",
    ];

    /// Runs every read path (and a couple of writes) on a possibly hostile region,
    /// checking that whatever is returned is sound.
    fn exercise(region: &RawRegion) {
        let Ok(dir) = Directory::open(region) else {
            let _ = Directory::create(region, 4);
            return;
        };
        let sound = |info: &SectionInfo| {
            assert!(info.offset >= dir.section_space_start());
            assert_eq!(info.offset % MIN_SECTION_ALIGN, 0);
            assert!(info.size > 0 && info.offset + info.size <= region.len());
        };
        for name in NAMES {
            if let Ok(Some(info)) = dir.find(name) {
                sound(&info);
                assert_eq!(info.name.as_str(), name);
            }
        }
        for info in dir.sections().flatten() {
            sound(&info);
        }
        let _ = dir.check();
        for item in dir.sections() {
            let _ = item.map_err(|e| e.to_string());
        }
        match dir.get_or_add(&ring("fuzz", 100)) {
            Ok(r) => sound(r.info()),
            Err(e) => {
                let _ = e.to_string();
            }
        }
        for found in dir.check() {
            let _ = found.to_string();
        }
    }

    fn populated(len: usize) -> HeapRegion {
        let region = HeapRegion::new(len);
        let dir = Directory::create(&*region, 6).unwrap();
        for (i, name) in NAMES.iter().take(3).enumerate() {
            dir.add(&ring(name, 100 * (i + 1))).unwrap();
        }
        region
    }

    /// Bytes of header and entries in `populated`.
    const DIR_BYTES: usize = HEADER_SIZE + 6 * ENTRY_SIZE;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        #[cfg_attr(miri, ignore)]
        fn hostile_bytes_in_the_directory_never_panic(
            patches in proptest::collection::vec(
                (0..DIR_BYTES, proptest::collection::vec(any::<u8>(), 1..16)),
                0..8,
            ),
            words in proptest::collection::vec(
                (0..DIR_BYTES / 4, prop_oneof![0u32..8, Just(4096), any::<u32>()]),
                0..8,
            ),
        ) {
            let region = populated(16 * KIB);
            for (offset, bytes) in patches {
                let n = bytes.len().min(DIR_BYTES - offset);
                region.write(B + offset, &bytes[..n]).unwrap();
            }
            for (word, value) in words {
                region.store_u32(B + word * 4, value.to_le(), Relaxed).unwrap();
            }
            exercise(&region);
        }

        #[test]
        #[cfg_attr(miri, ignore)]
        fn hostile_headers_with_our_magic_never_panic(
            words in proptest::collection::vec(any::<u32>(), 16),
            state in 0u32..4,
            len in prop_oneof![Just(4096usize), Just(16 * KIB), 64usize..20_000],
        ) {
            let region = HeapRegion::new(len);
            for (i, w) in words.iter().enumerate() {
                region.store_u32(i * 4, w.to_le(), Relaxed).unwrap();
            }
            // Our magic at offset 0: a directory of the first layout.
            region.store_u64(hdr::MAGIC, MAGIC.to_le(), Relaxed).unwrap();
            region.store_u32(hdr::VERSION, 1u32.to_le(), Relaxed).unwrap();
            region.store_u32(hdr::STATE, state.to_le(), Relaxed).unwrap();
            region.store_u64(hdr::REGION_SIZE, (len as u64).to_le(), Relaxed).unwrap();
            exercise(&region);
        }

        #[test]
        #[cfg_attr(miri, ignore)]
        fn adds_agree_with_a_model(
            ops in proptest::collection::vec((0..NAMES.len(), 1usize..6000, 0u32..14), 1..24),
        ) {
            const LEN: usize = 32 * KIB;
            const MAX: u32 = 5;
            let region = HeapRegion::new(LEN);
            let dir = Directory::create(&*region, MAX).unwrap();
            let mut model: Vec<SectionInfo> = Vec::new();
            let mut next_free = dir.section_space_start();
            for (t, (name_idx, size, align_shift)) in ops.into_iter().enumerate() {
                let name = NAMES[name_idx];
                let align = 1usize << align_shift;
                let spec = ring(name, size).with_owner(t as PeerId).with_align(align);
                let expected = if let Some(info) = model.iter().find(|i| i.name.as_str() == name) {
                    Err(DirectoryError::Exists(*info))
                } else if model.len() == MAX as usize {
                    Err(DirectoryError::Full { max_sections: MAX })
                } else {
                    let offset = align_up(next_free, align.max(64)).unwrap();
                    if offset + size > LEN {
                        Err(DirectoryError::NoSpace { requested: size, free: LEN - next_free })
                    } else {
                        next_free = offset + size;
                        let info = SectionInfo {
                            index: model.len() as u32,
                            name: SectionName::new(name).unwrap(),
                            kind: SectionKind::Ring,
                            owner: t as PeerId,
                            vector: 0,
                            flags: 0,
                            offset,
                            size,
                        };
                        model.push(info);
                        Ok(info)
                    }
                };
                prop_assert_eq!(dir.add(&spec), expected);
                for name in NAMES {
                    let want = model.iter().find(|i| i.name.as_str() == name).copied();
                    prop_assert_eq!(dir.find(name).unwrap(), want);
                }
            }
            let listed: Vec<SectionInfo> = dir.sections().map(Result::unwrap).collect();
            prop_assert_eq!(listed, model);
            prop_assert_eq!(dir.check(), Vec::new());
            prop_assert_eq!(dir.next_free().unwrap(), next_free);
        }
    }

    #[test]
    fn a_short_add_sequence_agrees_with_a_model_under_miri_too() {
        // The deterministic core of `adds_agree_with_a_model`, small enough for Miri.
        let region = HeapRegion::new(16 * KIB);
        let dir = Directory::create(&*region, 3).unwrap();
        let mut names: Vec<String> = Vec::new();
        for (name, size) in [
            ("a", 100),
            ("b", 5000),
            ("a", 1),
            ("c", 8000),
            ("d", 1),
            ("e", 1),
        ] {
            let result = dir.add(&ring(name, size));
            match result {
                Ok(_) => names.push(name.into()),
                Err(DirectoryError::Exists(info)) => assert_eq!(info.name.as_str(), name),
                Err(DirectoryError::NoSpace { .. }) => assert_eq!(name, "c"),
                Err(DirectoryError::Full { .. }) => assert_eq!(name, "e"),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(names, ["a", "b", "d"]);
        for name in &names {
            assert!(dir.find(name).unwrap().is_some());
        }
        assert_eq!(dir.find("c").unwrap(), None);
    }
}
