//! Offsets and sizes of the directory's header and entries, and the arithmetic on them.

use crate::region::field::{LeField, Word};

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
pub(super) mod hdr {
    use crate::region::{Le32, Le64};

    pub const MAGIC: Le64 = Le64::at(0);
    pub const VERSION: Le32 = Le32::at(8);
    pub const STATE: Le32 = Le32::at(12);
    pub const REGION_SIZE: Le64 = Le64::at(16);
    pub const MAX_SECTIONS: Le32 = Le32::at(24);
    pub const SECTION_COUNT: Le32 = Le32::at(28);
    pub const NEXT_FREE: Le64 = Le64::at(32);
    pub const RESERVED: [Le64; 3] = [Le64::at(40), Le64::at(48), Le64::at(56)];

    pub const EMPTY: u32 = 0;
    pub const INITIALIZING: u32 = 1;
    pub const READY: u32 = 2;
}

/// Entry field offsets, relative to the entry.
pub(super) mod ent {
    use crate::region::{Le32, Le64};

    pub const STATE: Le32 = Le32::at(0);
    pub const KIND: Le32 = Le32::at(4);
    /// `owner: u16` and `vector: u16`, accessed together as one `u32`.
    pub const OWNER_VECTOR: Le32 = Le32::at(8);
    pub const FLAGS: Le32 = Le32::at(12);
    pub const OFFSET: Le64 = Le64::at(16);
    pub const SIZE: Le64 = Le64::at(24);
    /// Raw bytes, copied as 8-byte words in memory order.
    pub const NAME: usize = 32;

    pub const FREE: u32 = 0;
    pub const CLAIMED: u32 = 1;
    pub const READY: u32 = 2;
    pub const WITHDRAWN: u32 = 3;
}

/// Upper bound on compare-and-exchange retries. Every failed attempt means another
/// peer made progress, so an honest directory never gets near it; a hostile peer
/// flipping a word gets [`DirectoryError::Contended`] instead of a livelock.
pub(super) const CAS_ATTEMPTS: usize = 4096;
/// Re-reads of one entry while settling duplicates (its state only moves forward).
pub(super) const SETTLE_ATTEMPTS: usize = 8;

/// Smallest region that holds a directory with `max_sections` entries: the message
/// area, the header, the entries and the padding up to the start of section space.
/// `None` on overflow.
pub fn min_region_len(max_sections: u32) -> Option<usize> {
    space_start(DIRECTORY_OFFSET, max_sections)
}

/// Start of section space of a directory at `base` with `max_sections` entries: the
/// header and entries, rounded up to [`SECTION_SPACE_ALIGN`]. `None` on overflow.
pub(super) fn space_start(base: usize, max_sections: u32) -> Option<usize> {
    let entries = usize::try_from(max_sections)
        .ok()?
        .checked_mul(ENTRY_SIZE)?;
    base.checked_add(align_up(
        HEADER_SIZE.checked_add(entries)?,
        SECTION_SPACE_ALIGN,
    )?)
}

/// Rounds `value` up to `align` (a power of two); `None` on overflow.
pub(super) fn align_up(value: usize, align: usize) -> Option<usize> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

/// Offset of entry `index`'s field `field`; `None` on overflow.
pub(super) fn entry_field(base: usize, index: u32, field: usize) -> Option<usize> {
    usize::try_from(index)
        .ok()?
        .checked_mul(ENTRY_SIZE)?
        .checked_add(base)?
        .checked_add(HEADER_SIZE)?
        .checked_add(field)
}

/// Entry `index`'s word `field`; `None` on overflow.
pub(super) fn entry_word<T: Word>(
    base: usize,
    index: u32,
    field: LeField<T>,
) -> Option<LeField<T>> {
    entry_field(base, index, field.offset()).map(LeField::at)
}

pub(super) fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}
