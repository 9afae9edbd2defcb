//! Checking a whole directory for inconsistencies (with the `alloc` feature).

use core::fmt;

#[cfg(any(test, feature = "alloc"))]
use super::{Directory, SectionInfo, layout::ent};
use super::{DirectoryError, EntryProblem, SectionName};
#[cfg(any(test, feature = "alloc"))]
use crate::region::Region;

#[cfg(any(test, feature = "alloc"))]
impl<R: Region + ?Sized> Directory<'_, R> {
    /// Checks the whole directory and lists every inconsistency found: a header that
    /// changed since it was opened, a bad `section_count` or `next_free`, bad ready
    /// entries, sections past `next_free`, overlapping sections, duplicate names, and
    /// entries past `section_count` that are not free. An empty list means sound.
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
