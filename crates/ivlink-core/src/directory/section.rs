//! A section as found in the directory, and a section asked for.

use super::{MIN_SECTION_ALIGN, SectionKind, SectionName};
use crate::notify::{PeerId, Vector};

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

/// The result of [`Directory::get_or_add`](super::Directory::get_or_add).
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
