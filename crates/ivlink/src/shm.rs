//! The server's shared memory: a POSIX shm object, a file, an unlinked file in a
//! directory (hugetlbfs), or a sealed memfd.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Gid, Mode, OFlags, SealFlags};
use rustix::io::Errno;
use thiserror::Error;
use tracing::{info, warn};

/// Where the server's shared memory lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShmBacking {
    /// A POSIX shared-memory object (`/dev/shm/<name>`), QEMU's default (`-M`).
    Posix(String),
    /// An unlinked temporary file in a directory, e.g. a hugetlbfs mount (`-m`).
    Dir(PathBuf),
    /// A named file that stays after the server ends (`/dev/shm/x`, hugetlbfs...).
    File(PathBuf),
    /// An anonymous memfd sealed against resizing: no peer can shrink it under
    /// another's mapping.
    Memfd,
}

impl fmt::Display for ShmBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmBacking::Posix(name) => write!(f, "POSIX shared memory {name}"),
            ShmBacking::Dir(dir) => write!(f, "a temporary file in {}", dir.display()),
            ShmBacking::File(path) => write!(f, "file {}", path.display()),
            ShmBacking::Memfd => f.write_str("a sealed memfd"),
        }
    }
}

/// Why the shared memory could not be set up.
#[derive(Debug, Error)]
pub enum ShmError {
    /// The requested size is zero or does not round up to a power of two.
    #[error("invalid shared memory size {0}: it must be between 1 byte and 2^63 bytes")]
    BadSize(u64),
    /// Opening or creating failed.
    #[error("cannot open {what}: {error}")]
    Open {
        /// The object that could not be opened.
        what: String,
        /// The system's reason.
        error: io::Error,
    },
    /// Sizing failed.
    #[error("ftruncate({what}) to {size} bytes failed: {error}")]
    Truncate {
        /// The object.
        what: String,
        /// The size asked for.
        size: u64,
        /// The system's reason.
        error: io::Error,
    },
    /// Setting the mode or group failed.
    #[error("cannot set permissions of {what}: {error}")]
    Permissions {
        /// The object.
        what: String,
        /// The system's reason.
        error: io::Error,
    },
}

/// Mode for new shared memory when none is asked for: owner read-write.
pub const DEFAULT_SHM_MODE: u32 = 0o600;

/// The memory all peers of a server share.
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    size: u64,
    backing: ShmBacking,
}

impl SharedMemory {
    /// Opens or creates the memory and sizes it to `requested` rounded up to a power
    /// of two (QEMU requires power-of-two BARs). An existing object that already has
    /// that size keeps its contents.
    pub fn create(
        backing: ShmBacking,
        requested: u64,
        mode: Option<u32>,
        group: Option<Gid>,
    ) -> Result<Self, ShmError> {
        let size = round_size(requested)?;
        if size != requested {
            info!("shared memory size {requested} rounded up to {size}, a power of two");
        }
        let create_mode = Mode::from_bits_truncate(mode.unwrap_or(DEFAULT_SHM_MODE));
        let what = backing.to_string();
        let open_err = |error: io::Error| ShmError::Open {
            what: what.clone(),
            error,
        };
        let fd: OwnedFd = match &backing {
            ShmBacking::Posix(name) => rustix::shm::open(
                name.as_str(),
                rustix::shm::OFlags::CREATE | rustix::shm::OFlags::RDWR,
                create_mode,
            )
            .map_err(|e| open_err(e.into()))?,
            ShmBacking::Dir(dir) => tempfile::tempfile_in(dir)
                .map(OwnedFd::from)
                .map_err(open_err)?,
            ShmBacking::File(path) => rustix::fs::open(
                path,
                OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
                create_mode,
            )
            .map_err(|e| open_err(e.into()))?,
            ShmBacking::Memfd => rustix::fs::memfd_create(
                "ivshmem",
                rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
            )
            .map_err(|e| open_err(e.into()))?,
        };
        let size = resize(&fd, size, &what)?;
        if backing == ShmBacking::Memfd {
            // Sealed: nobody holding the fd can shrink it and crash the other peers.
            rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
                .map_err(|e| open_err(e.into()))?;
        } else {
            apply_permissions(&fd, mode, group).map_err(|error| ShmError::Permissions {
                what: what.clone(),
                error,
            })?;
        }
        Ok(SharedMemory { fd, size, backing })
    }

    /// The memory's fd, sent to every peer.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where it lives.
    pub fn backing(&self) -> &ShmBacking {
        &self.backing
    }

    /// Removes the name of a POSIX object or file (the memory itself lives on while
    /// peers map it). Unnamed memory has nothing to remove.
    pub fn unlink(&self) -> io::Result<()> {
        match &self.backing {
            ShmBacking::Posix(name) => Ok(rustix::shm::unlink(name.as_str())?),
            ShmBacking::File(path) => std::fs::remove_file(path),
            ShmBacking::Dir(_) | ShmBacking::Memfd => Ok(()),
        }
    }
}

/// Applies an explicit mode and group to an fd (socket files use the path form).
pub fn apply_permissions(fd: &impl AsFd, mode: Option<u32>, group: Option<Gid>) -> io::Result<()> {
    if let Some(group) = group {
        rustix::fs::fchown(fd, None, Some(group))?;
    }
    if let Some(mode) = mode {
        rustix::fs::fchmod(fd, Mode::from_bits_truncate(mode))?;
    }
    Ok(())
}

fn round_size(requested: u64) -> Result<u64, ShmError> {
    if requested == 0 {
        return Err(ShmError::BadSize(requested));
    }
    requested
        .checked_next_power_of_two()
        .ok_or(ShmError::BadSize(requested))
}

/// Sizes the object unless it already has the size. On hugetlbfs a size below the
/// huge page size fails with EINVAL; like QEMU, double until it fits (up to 1 GiB).
fn resize(fd: &OwnedFd, size: u64, what: &str) -> Result<u64, ShmError> {
    let current = rustix::fs::fstat(fd)
        .map(|st| st.st_size as u64)
        .map_err(|e| ShmError::Open {
            what: what.to_owned(),
            error: e.into(),
        })?;
    if current == size {
        info!("{what} already has {size} bytes; keeping its contents");
        return Ok(size);
    }
    if current > size {
        warn!("{what} shrinks from {current} to {size} bytes");
    }
    let mut attempt = size;
    loop {
        match rustix::fs::ftruncate(fd, attempt) {
            Ok(()) => return Ok(attempt),
            Err(Errno::INVAL) if attempt < (1 << 30) => attempt *= 2,
            Err(e) => {
                return Err(ShmError::Truncate {
                    what: what.to_owned(),
                    size,
                    error: e.into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_sizes_up_to_powers_of_two() {
        assert_eq!(round_size(1).unwrap(), 1);
        assert_eq!(round_size(3 << 20).unwrap(), 4 << 20);
        assert_eq!(round_size(4 << 20).unwrap(), 4 << 20);
        assert_eq!(round_size(5 << 30).unwrap(), 8 << 30);
        assert!(round_size(0).is_err());
        assert!(round_size(u64::MAX).is_err());
    }

    #[test]
    fn memfd_is_sealed_against_resizing() {
        let shm = SharedMemory::create(ShmBacking::Memfd, 3000, None, None).unwrap();
        assert_eq!(shm.size(), 4096);
        assert!(rustix::fs::ftruncate(shm.fd(), 100).is_err());
    }

    #[test]
    fn file_backing_keeps_contents_when_the_size_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let backing = ShmBacking::File(path.clone());
        let shm = SharedMemory::create(backing.clone(), 4096, Some(0o640), None).unwrap();
        rustix::io::pwrite(shm.fd(), b"keep", 0).unwrap();
        drop(shm);
        let shm = SharedMemory::create(backing, 4096, None, None).unwrap();
        let mut buf = [0u8; 4];
        rustix::io::pread(shm.fd(), &mut buf, 0).unwrap();
        assert_eq!(&buf, b"keep");
        let mode = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o640);
        shm.unlink().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn sizes_above_one_gibibyte_work() {
        let shm = SharedMemory::create(ShmBacking::Memfd, (2 << 30) + 1, None, None).unwrap();
        assert_eq!(shm.size(), 4 << 30);
    }

    #[test]
    fn directory_backing_leaves_no_name_behind() {
        let dir = tempfile::tempdir().unwrap();
        let shm =
            SharedMemory::create(ShmBacking::Dir(dir.path().into()), 8192, None, None).unwrap();
        assert_eq!(shm.size(), 8192);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
