//! Mapping a region's memory into this process.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use ivlink_core::RawRegion;
use memmap2::{MmapOptions, MmapRaw};
use thiserror::Error;

/// Why a region could not be mapped.
#[derive(Debug, Error)]
pub enum MapError {
    /// `fstat` failed.
    #[error("cannot inspect the shared memory: {0}")]
    Stat(io::Error),
    /// The object has no bytes (nothing was ever sized).
    #[error("the shared memory is empty (size 0)")]
    Empty,
    /// The object is larger than this process can map.
    #[error("the shared memory is too large to map ({0} bytes)")]
    TooLarge(u64),
    /// The fd is not something that can be mapped (a socket, a pipe...).
    #[error("the shared-memory descriptor is not a file or memory object")]
    NotMappable,
    /// `mmap` failed.
    #[error("cannot map the shared memory: {0}")]
    Mmap(io::Error),
}

/// A shared region mapped read-write, shared with the other peers.
///
/// Reaches the bytes only through [`RawRegion`]'s checked accessors (it derefs to
/// one); the mapping lives as long as this value.
#[derive(Debug)]
pub struct MappedRegion {
    // `region` points into `map`; declared first so it is dropped first.
    region: RawRegion,
    map: MmapRaw,
}

impl MappedRegion {
    /// Maps the whole object behind `fd`. Its size comes from `fstat` and is checked,
    /// never assumed.
    pub fn map_fd(fd: OwnedFd) -> Result<Self, MapError> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| MapError::Stat(e.into()))?;
        let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        if !matches!(
            file_type,
            rustix::fs::FileType::RegularFile
                | rustix::fs::FileType::BlockDevice
                | rustix::fs::FileType::CharacterDevice
        ) {
            return Err(MapError::NotMappable);
        }
        let len = u64::try_from(stat.st_size).map_err(|_| MapError::Empty)?;
        Self::map_file_range(&File::from(fd), 0, len)
    }

    /// Maps `len` bytes of `file` starting at `offset` (a VFIO BAR, a file region).
    pub fn map_file_range(file: &impl AsFd, offset: u64, len: u64) -> Result<Self, MapError> {
        if len == 0 {
            return Err(MapError::Empty);
        }
        let len_usize = usize::try_from(len)
            .ok()
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or(MapError::TooLarge(len))?;
        let map = MmapOptions::new()
            .offset(offset)
            .len(len_usize)
            .map_raw(&file.as_fd())
            .map_err(MapError::Mmap)?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| MapError::Mmap(io::Error::other("null mapping")))?;
        // SAFETY: `map` is a live shared mapping of exactly `len_usize` bytes that this
        // value owns and keeps alive for as long as `region` exists; nothing in this
        // process takes Rust references into it.
        let region = unsafe { RawRegion::new(base, len_usize) };
        Ok(MappedRegion { region, map })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never true: empty objects are refused).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

impl std::ops::Deref for MappedRegion {
    type Target = RawRegion;

    fn deref(&self) -> &RawRegion {
        &self.region
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivlink_core::Region;

    #[test]
    fn two_mappings_of_one_memfd_see_each_other() {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 8192).unwrap();
        let dup = fd.try_clone().unwrap();
        let a = MappedRegion::map_fd(fd).unwrap();
        let b = MappedRegion::map_fd(dup).unwrap();
        assert_eq!(a.len(), 8192);
        a.write(100, b"shared").unwrap();
        let mut buf = [0u8; 6];
        b.read(100, &mut buf).unwrap();
        assert_eq!(&buf, b"shared");
        assert!(b.read(8190, &mut buf).is_err());
    }

    #[test]
    fn refuses_empty_and_unmappable_objects() {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(matches!(MappedRegion::map_fd(fd), Err(MapError::Empty)));
        let efd = crate::doorbell::new_eventfd().unwrap();
        assert!(matches!(
            MappedRegion::map_fd(efd),
            Err(MapError::NotMappable)
        ));
    }
}
