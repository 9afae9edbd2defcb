//! What can go wrong reading or changing a directory.

use core::fmt;

use super::{
    EntryState, MAX_SECTIONS_LIMIT, MIN_SECTION_ALIGN, NameError, SectionInfo, SectionName, VERSION,
};
use crate::region::RegionError;

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
        /// Bytes the directory needs ([`min_region_len`](super::min_region_len)).
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
