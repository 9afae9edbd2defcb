//! Offsets and sizes of the directory's header and entries, and the arithmetic on them.

use core::sync::atomic::Ordering;

use super::DirectoryError;
use crate::region::Region;

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
pub(super) mod ent {
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

pub(super) fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

pub(super) fn ld32<R: Region + ?Sized>(
    r: &R,
    off: usize,
    order: Ordering,
) -> Result<u32, DirectoryError> {
    Ok(u32::from_le(r.load_u32(off, order)?))
}

pub(super) fn st32<R: Region + ?Sized>(
    r: &R,
    off: usize,
    value: u32,
    order: Ordering,
) -> Result<(), DirectoryError> {
    Ok(r.store_u32(off, value.to_le(), order)?)
}

pub(super) fn ld64<R: Region + ?Sized>(
    r: &R,
    off: usize,
    order: Ordering,
) -> Result<u64, DirectoryError> {
    Ok(u64::from_le(r.load_u64(off, order)?))
}

pub(super) fn st64<R: Region + ?Sized>(
    r: &R,
    off: usize,
    value: u64,
    order: Ordering,
) -> Result<(), DirectoryError> {
    Ok(r.store_u64(off, value.to_le(), order)?)
}

pub(super) fn cas32<R: Region + ?Sized>(
    r: &R,
    off: usize,
    current: u32,
    new: u32,
) -> Result<Result<u32, u32>, DirectoryError> {
    Ok(r.compare_exchange_u32(off, current.to_le(), new.to_le())?
        .map(u32::from_le)
        .map_err(u32::from_le))
}

pub(super) fn cas64<R: Region + ?Sized>(
    r: &R,
    off: usize,
    current: u64,
    new: u64,
) -> Result<Result<u64, u64>, DirectoryError> {
    Ok(r.compare_exchange_u64(off, current.to_le(), new.to_le())?
        .map(u64::from_le)
        .map_err(u64::from_le))
}
