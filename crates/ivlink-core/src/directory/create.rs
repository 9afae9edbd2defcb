//! Finding, probing, creating and formatting a directory in a region.

use core::sync::atomic::Ordering;

use super::layout::*;
use super::{Directory, DirectoryError};
use crate::region::{Le64, Region};

/// The first 8 bytes of the header at `base`, in memory order.
pub(super) fn first_bytes<R: Region + ?Sized>(
    r: &R,
    base: usize,
) -> Result<[u8; 8], DirectoryError> {
    Ok(hdr::MAGIC
        .of(base)
        .load(r, Ordering::Acquire)?
        .to_le_bytes())
}

/// Whether every header field except `state` is zero (acquire loads, so that seeing
/// a creator's store also shows its earlier claim of `state`).
pub(super) fn header_is_zero<R: Region + ?Sized>(
    r: &R,
    base: usize,
) -> Result<bool, DirectoryError> {
    let acq = Ordering::Acquire;
    let mut any = hdr::MAGIC.of(base).load(r, acq)? | hdr::REGION_SIZE.of(base).load(r, acq)?;
    any |= hdr::NEXT_FREE.of(base).load(r, acq)?;
    for off in hdr::RESERVED {
        any |= off.of(base).load(r, acq)?;
    }
    any |= u64::from(hdr::VERSION.of(base).load(r, acq)?);
    any |= u64::from(hdr::MAX_SECTIONS.of(base).load(r, acq)?);
    any |= u64::from(hdr::SECTION_COUNT.of(base).load(r, acq)?);
    Ok(any == 0)
}

/// What the header says, before it is trusted.
pub(super) enum Probe {
    Empty,
    Initializing,
    Ready,
    Foreign([u8; 8]),
    BadState(u32),
}

pub(super) fn probe<R: Region + ?Sized>(r: &R, base: usize) -> Result<Probe, DirectoryError> {
    let needed = base + HEADER_SIZE;
    if r.len() < needed {
        return Err(DirectoryError::RegionTooSmall {
            region_len: r.len(),
            needed,
        });
    }
    let mut state = hdr::STATE.of(base).load(r, Ordering::Acquire)?;
    if state == hdr::EMPTY {
        if header_is_zero(r, base)? {
            return Ok(Probe::Empty);
        }
        // Either foreign bytes, or a creator that claimed the header since we looked.
        state = hdr::STATE.of(base).load(r, Ordering::Acquire)?;
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
pub(super) fn check_new<R: Region + ?Sized>(
    r: &R,
    max_sections: u32,
) -> Result<usize, DirectoryError> {
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

/// Writes `max_sections` zeroed entries and the header at `base`, then publishes
/// `state = 2`. The caller owns `state = 1`.
pub(super) fn initialize<R: Region + ?Sized>(
    region: &R,
    base: usize,
    max_sections: u32,
    space_start: usize,
) -> Result<(), DirectoryError> {
    let rel = Ordering::Release;
    for index in 0..max_sections {
        zero_entry(region, base, index)?;
    }
    hdr::MAGIC.of(base).store(region, MAGIC, rel)?;
    hdr::VERSION.of(base).store(region, VERSION, rel)?;
    hdr::REGION_SIZE
        .of(base)
        .store(region, to_u64(region.len()), rel)?;
    hdr::MAX_SECTIONS
        .of(base)
        .store(region, max_sections, rel)?;
    hdr::SECTION_COUNT.of(base).store(region, 0, rel)?;
    hdr::NEXT_FREE
        .of(base)
        .store(region, to_u64(space_start), rel)?;
    for off in hdr::RESERVED {
        off.of(base).store(region, 0, rel)?;
    }
    Ok(hdr::STATE.of(base).store(region, hdr::READY, rel)?)
}

pub(super) fn zero_entry<R: Region + ?Sized>(
    region: &R,
    base: usize,
    index: u32,
) -> Result<(), DirectoryError> {
    let no_entry = DirectoryError::NoSuchEntry {
        index,
        max_sections: index,
    };
    let rlx = Ordering::Relaxed;
    for f in [ent::STATE, ent::KIND, ent::OWNER_VECTOR, ent::FLAGS] {
        entry_word(base, index, f)
            .ok_or(no_entry)?
            .store(region, 0, rlx)?;
    }
    for f in [ent::OFFSET, ent::SIZE] {
        entry_word(base, index, f)
            .ok_or(no_entry)?
            .store(region, 0, rlx)?;
    }
    for word in 0..NAME_LEN / 8 {
        let at = entry_field(base, index, ent::NAME + 8 * word).ok_or(no_entry)?;
        Le64::at(at).store(region, 0, rlx)?;
    }
    Ok(())
}

/// Whether the region holds a directory of the first layout, at offset 0
/// ([`LEGACY_DIRECTORY_OFFSET`]): its magic is there.
pub(super) fn has_legacy_header<R: Region + ?Sized>(region: &R) -> Result<bool, DirectoryError> {
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
        hdr::STATE.store(region, hdr::INITIALIZING, Ordering::SeqCst)?;
    }
    hdr::STATE
        .of(base)
        .store(region, hdr::INITIALIZING, Ordering::SeqCst)?;
    initialize(region, base, max_sections, space_start)?;
    if legacy {
        // The magic first: from then on openers find the new directory.
        hdr::MAGIC.store(region, 0, Ordering::SeqCst)?;
        // Each field at its own width, as every other access to it.
        for at in [
            hdr::VERSION,
            hdr::STATE,
            hdr::MAX_SECTIONS,
            hdr::SECTION_COUNT,
        ] {
            at.store(region, 0, Ordering::Release)?;
        }
        for at in [hdr::REGION_SIZE, hdr::NEXT_FREE]
            .into_iter()
            .chain(hdr::RESERVED)
        {
            at.store(region, 0, Ordering::Release)?;
        }
    }
    Ok(Directory::at(region, base, max_sections, space_start))
}
