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
//! |      8 | `owner`  | `u16`      | peer id of the creator ([`PeerId`](crate::PeerId))                  |
//! |     10 | `vector` | `u16`      | doorbell vector for the section ([`Vector`](crate::Vector))         |
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

mod add;
mod check;
mod create;
mod error;
mod kind;
mod layout;
mod name;
mod section;
#[cfg(test)]
mod tests;

use core::fmt;
use core::sync::atomic::Ordering;

use crate::region::Le64;
use crate::region::Region;
use crate::region::field::{LeField, Word};
pub use check::Inconsistency;
use create::{Probe, check_new, has_legacy_header, initialize, probe};
pub use create::{format, locate};
pub use error::{DirectoryError, EntryProblem};
pub use kind::{EntryState, SectionKind};
use layout::*;
pub use layout::{
    DIRECTORY_OFFSET, ENTRY_SIZE, HEADER_SIZE, LEGACY_DIRECTORY_OFFSET, MAGIC, MAX_SECTIONS_LIMIT,
    MESSAGE_AREA_LEN, MIN_SECTION_ALIGN, NAME_LEN, SECTION_SPACE_ALIGN, VERSION, min_region_len,
};
pub use name::{NameError, SectionName};
pub use section::{GetOrAdd, SectionInfo, SectionSpec};

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

impl<'r, R: Region + ?Sized> Directory<'r, R> {
    /// The directory at `base` whose header the caller has validated or written.
    fn at(region: &'r R, base: usize, max_sections: u32, space_start: usize) -> Self {
        Directory {
            region,
            base,
            max_sections,
            region_size: region.len(),
            space_start,
        }
    }

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
            Probe::Empty => hdr::STATE
                .of(base)
                .compare_exchange(region, hdr::EMPTY, hdr::INITIALIZING)?
                .is_ok(),
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
        Ok(Directory::at(region, base, max_sections, space_start))
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
        let version = hdr::VERSION.of(base).load(region, acq)?;
        if version != VERSION {
            return Err(DirectoryError::UnsupportedVersion(version));
        }
        let recorded = hdr::REGION_SIZE.of(base).load(region, acq)?;
        if recorded != to_u64(region.len()) {
            return Err(DirectoryError::RegionSizeMismatch {
                recorded,
                actual: region.len(),
            });
        }
        let max_sections = hdr::MAX_SECTIONS.of(base).load(region, acq)?;
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
        Ok(Directory::at(region, base, max_sections, space_start))
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
        let count = hdr::SECTION_COUNT
            .of(self.base)
            .load(self.region, Ordering::Acquire)?;
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
        let next_free = hdr::NEXT_FREE
            .of(self.base)
            .load(self.region, Ordering::Acquire)?;
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

    /// Entry `index`'s word `field`, checked against `max_sections`.
    fn word<T: Word>(&self, index: u32, field: LeField<T>) -> Result<LeField<T>, DirectoryError> {
        Ok(LeField::at(self.field(index, field.offset())?))
    }

    fn entry_state(&self, index: u32) -> Result<u32, DirectoryError> {
        Ok(self
            .word(index, ent::STATE)?
            .load(self.region, Ordering::Acquire)?)
    }

    fn entry_cas(
        &self,
        index: u32,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, DirectoryError> {
        Ok(self
            .word(index, ent::STATE)?
            .compare_exchange(self.region, current, new)?)
    }

    fn raw_name(&self, index: u32) -> Result<[u8; NAME_LEN], DirectoryError> {
        let mut raw = [0u8; NAME_LEN];
        for (word, chunk) in raw.chunks_exact_mut(8).enumerate() {
            let off = self.field(index, ent::NAME + 8 * word)?;
            // Bytes in memory order, each 8 read as one atomic word.
            let word = Le64::at(off).load(self.region, Ordering::Relaxed)?;
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Ok(raw)
    }

    fn write_name(&self, index: u32, name: &SectionName) -> Result<(), DirectoryError> {
        let raw = name.to_raw();
        for (word, chunk) in raw.chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            let off = self.field(index, ent::NAME + 8 * word)?;
            Le64::at(off).store(self.region, u64::from_le_bytes(bytes), Ordering::Relaxed)?;
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
        let kind = SectionKind::from_u32(self.word(index, ent::KIND)?.load(r, rlx)?);
        let owner_vector = self.word(index, ent::OWNER_VECTOR)?.load(r, rlx)?;
        let flags = self.word(index, ent::FLAGS)?.load(r, rlx)?;
        let raw_offset = self.word(index, ent::OFFSET)?.load(r, rlx)?;
        let raw_size = self.word(index, ent::SIZE)?.load(r, rlx)?;
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
