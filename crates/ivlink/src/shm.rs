//! The server's shared memory: a POSIX shm object, a file, an unlinked file in a
//! directory (hugetlbfs), or a sealed memfd.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, Gid, Mode, OFlags, SealFlags};
use rustix::io::Errno;
use thiserror::Error;
use tracing::{debug, info, warn};

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
    /// An existing object has another size, and resizing was not asked for.
    #[error(
        "{what} already has {current} bytes, not {size}: resizing it would crash every peer \
         that maps it (a QEMU guest maps it as BAR2); ask for {current} bytes, or remove it first"
    )]
    SizeDiffers {
        /// The object.
        what: String,
        /// Its size.
        current: u64,
        /// The size asked for.
        size: u64,
    },
    /// An existing object that a server or its peers still map would have to be
    /// resized.
    #[error(
        "{what} is in use (a server or its peers map it) with {current} bytes; refusing to \
         resize it to {size}: ask for {current} bytes, or stop them first"
    )]
    InUse {
        /// The object.
        what: String,
        /// Its size.
        current: u64,
        /// The size asked for.
        size: u64,
    },
    /// An existing object that a server or its peers still map would have its
    /// mode or group changed (which could lock them out).
    #[error(
        "{what} is in use (a server or its peers map it); refusing to change its mode or group: \
         keep them, or stop its users first"
    )]
    PermissionsInUse {
        /// The object.
        what: String,
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

/// How long to wait for another server that is setting up the same object.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The memory all peers of a server share.
///
/// A named object (POSIX shm or file) carries a shared `flock` on the open file
/// that every peer receives. The lock lasts as long as anyone holds that file
/// open or mapped, even after the server is gone, so another server's start can
/// tell the object is in use and refuses to resize it or change its permissions.
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    size: u64,
    backing: ShmBacking,
    /// Whether this start created the object's name (removed again on failure).
    created: bool,
}

impl SharedMemory {
    /// Opens or creates the memory and sizes it to `requested` rounded up to a power
    /// of two (QEMU requires power-of-two BARs). An existing object that already has
    /// that size keeps its contents. An existing object of another (non-zero) size
    /// is refused unless `resize_existing`, and is never resized, nor its mode or
    /// group changed, while it is in use. A failure leaves no new name behind and
    /// an existing object as it was.
    pub fn create(
        backing: ShmBacking,
        requested: u64,
        mode: Option<u32>,
        group: Option<Gid>,
        resize_existing: bool,
    ) -> Result<Self, ShmError> {
        let size = round_size(requested)?;
        if size != requested {
            info!("shared memory size {requested} rounded up to {size}, a power of two");
        }
        let create_mode = Mode::from_bits_truncate(mode.unwrap_or(DEFAULT_SHM_MODE));
        let what = backing.to_string();
        let (fd, created) = open_backing(&backing, create_mode, &what)?;
        let mut shm = SharedMemory {
            fd,
            size: 0,
            backing,
            created,
        };
        match shm.prepare(size, mode, group, resize_existing, &what) {
            Ok(size) => {
                shm.size = size;
                Ok(shm)
            }
            Err(e) => {
                shm.discard_if_created();
                Err(e)
            }
        }
    }

    /// Checks an existing object, then sets permissions and size; gives the size.
    fn prepare(
        &self,
        size: u64,
        mode: Option<u32>,
        group: Option<Gid>,
        resize_existing: bool,
        what: &str,
    ) -> Result<u64, ShmError> {
        let open_err = |e: Errno| ShmError::Open {
            what: what.to_owned(),
            error: e.into(),
        };
        let named = matches!(self.backing, ShmBacking::Posix(_) | ShmBacking::File(_));
        let in_use = named && !lock_exclusive(&self.fd, what);
        let stat = rustix::fs::fstat(&self.fd).map_err(open_err)?;
        let current = stat.st_size as u64;
        if current != size && !self.created {
            if in_use {
                return Err(ShmError::InUse {
                    what: what.to_owned(),
                    current,
                    size,
                });
            }
            if current != 0 && !resize_existing {
                return Err(ShmError::SizeDiffers {
                    what: what.to_owned(),
                    current,
                    size,
                });
            }
        }
        if self.backing == ShmBacking::Memfd {
            let size = resize(&self.fd, size, current, what)?;
            // Sealed: nobody holding the fd can shrink it and crash the other peers.
            rustix::fs::fcntl_add_seals(
                &self.fd,
                SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
            )
            .map_err(open_err)?;
            return Ok(size);
        }
        let permissions_err = |error| ShmError::Permissions {
            what: what.to_owned(),
            error,
        };
        if in_use {
            let mode_differs = mode.is_some_and(|m| stat.st_mode & 0o7777 != m & 0o7777);
            let group_differs = group.is_some_and(|g| stat.st_gid != g.as_raw());
            if mode_differs || group_differs {
                return Err(ShmError::PermissionsInUse {
                    what: what.to_owned(),
                });
            }
        } else {
            // Before the size: a refused chown or chmod leaves the size as it was.
            apply_permissions(&self.fd, mode, group).map_err(permissions_err)?;
        }
        let size = resize(&self.fd, size, current, what)?;
        if named {
            lock_shared(&self.fd, what)?;
        }
        Ok(size)
    }

    /// Removes the name this start created (after a later step of the start
    /// failed); an object that existed stays.
    pub(crate) fn discard_if_created(&self) {
        if self.created
            && let Err(e) = self.unlink()
        {
            warn!("cannot remove {}: {e}", self.backing);
        }
    }

    /// The memory's fd, sent to every peer.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A warning when the memory cannot really hold [`size`](Self::size) bytes:
    /// files and memfds are filled lazily, so a region larger than its
    /// filesystem's free space (or, for a memfd, than RAM and swap) starts fine
    /// and its peers get SIGBUS once the space runs out. `None` when it fits or
    /// the space cannot be learnt.
    pub fn capacity_warning(&self) -> Option<String> {
        let stat = rustix::fs::fstatvfs(&self.fd).ok()?;
        // A filesystem without a size (a memfd's) is bounded by memory only.
        let unlimited = stat.f_blocks == 0;
        let free = if unlimited {
            let info = rustix::system::sysinfo();
            let memory = (info.totalram as u64).saturating_add(info.totalswap as u64);
            memory.saturating_mul(u64::from(info.mem_unit.max(1)))
        } else {
            stat.f_bavail.saturating_mul(stat.f_frsize)
        };
        // Blocks the object holds already count as room for it.
        let held = rustix::fs::fstat(&self.fd)
            .map(|st| (st.st_blocks as u64).saturating_mul(512))
            .unwrap_or(0);
        let room = free.saturating_add(held);
        if self.size <= room {
            return None;
        }
        let room = format!("{room} bytes ({})", approx_size(room));
        let limit = if unlimited {
            format!("the machine has only {room} of RAM and swap")
        } else {
            format!("only {room} are free on its filesystem")
        };
        Some(format!(
            "{} is {} bytes ({}) but {limit}: a peer writing beyond that gets SIGBUS",
            self.backing,
            self.size,
            approx_size(self.size)
        ))
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

/// A byte count rounded for people: `1.0 TiB`, `23.5 GiB`, `512 B`.
fn approx_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if unit == "B" {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {unit}")
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

/// The size a server uses for `requested` bytes: the next power of two.
///
/// Fails with [`ShmError::BadSize`] for 0 and for sizes whose next power of
/// two does not fit in a `u64`.
pub fn round_size(requested: u64) -> Result<u64, ShmError> {
    if requested == 0 {
        return Err(ShmError::BadSize(requested));
    }
    requested
        .checked_next_power_of_two()
        .ok_or(ShmError::BadSize(requested))
}

/// Opens the backing; says whether this call created the object.
fn open_backing(
    backing: &ShmBacking,
    create_mode: Mode,
    what: &str,
) -> Result<(OwnedFd, bool), ShmError> {
    let open_err = |error: io::Error| ShmError::Open {
        what: what.to_owned(),
        error,
    };
    match backing {
        ShmBacking::Posix(name) => open_or_create(what, |create| {
            let flags = rustix::shm::OFlags::RDWR;
            let flags = if create {
                flags | rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL
            } else {
                flags
            };
            rustix::shm::open(name.as_str(), flags, create_mode)
        }),
        ShmBacking::File(path) => open_or_create(what, |create| {
            let flags = OFlags::RDWR | OFlags::CLOEXEC;
            let flags = if create {
                flags | OFlags::CREATE | OFlags::EXCL
            } else {
                flags
            };
            rustix::fs::open(path, flags, create_mode)
        }),
        ShmBacking::Dir(dir) => tempfile::tempfile_in(dir)
            .map(|file| (OwnedFd::from(file), true))
            .map_err(open_err),
        ShmBacking::Memfd => rustix::fs::memfd_create(
            "ivshmem",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .map(|fd| (fd, true))
        .map_err(|e| open_err(e.into())),
    }
}

/// Creates a named object exclusively, or opens the existing one, so the caller
/// knows whether the name is its own to remove on failure.
fn open_or_create(
    what: &str,
    open: impl Fn(bool) -> rustix::io::Result<OwnedFd>,
) -> Result<(OwnedFd, bool), ShmError> {
    let open_err = |e: Errno| ShmError::Open {
        what: what.to_owned(),
        error: e.into(),
    };
    // Bounded: the name can only vanish and reappear a few times in a row.
    for _ in 0..8 {
        match open(true) {
            Ok(fd) => return Ok((fd, true)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(open_err(e)),
        }
        match open(false) {
            Ok(fd) => return Ok((fd, false)),
            Err(Errno::NOENT) => continue, // removed in between: create it
            Err(e) => return Err(open_err(e)),
        }
    }
    Err(open_err(Errno::EXIST))
}

/// Takes the exclusive lock if nobody else holds one: whether the object is free.
/// A filesystem without `flock` cannot tell, and counts as free.
fn lock_exclusive(fd: &OwnedFd, what: &str) -> bool {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => true,
        Err(Errno::WOULDBLOCK) => false,
        Err(e) => {
            debug!("cannot lock {what} ({e}); assuming nobody else uses it");
            true
        }
    }
}

/// Holds the shared lock that marks the object as in use, for as long as this
/// open file lives (every peer gets it). Waits, bounded, for a server that
/// holds the exclusive lock while it sets the object up.
fn lock_shared(fd: &OwnedFd, what: &str) -> Result<(), ShmError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(fd, FlockOperation::NonBlockingLockShared) {
            Ok(()) => return Ok(()),
            Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(ShmError::Open {
                    what: what.to_owned(),
                    error: io::Error::other("another server kept it locked while setting it up"),
                });
            }
            Err(e) => {
                debug!("cannot lock {what} ({e}); it will not show as in use");
                return Ok(());
            }
        }
    }
}

/// Sizes the object unless it already has the size. On hugetlbfs a size below the
/// huge page size fails with EINVAL; like QEMU, double until it fits (up to 1 GiB).
fn resize(fd: &OwnedFd, size: u64, current: u64, what: &str) -> Result<u64, ShmError> {
    if current == size {
        if size != 0 {
            info!("{what} already has {size} bytes; keeping its contents");
        }
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
        let shm = SharedMemory::create(ShmBacking::Memfd, 3000, None, None, false).unwrap();
        assert_eq!(shm.size(), 4096);
        assert!(rustix::fs::ftruncate(shm.fd(), 100).is_err());
    }

    #[test]
    fn file_backing_keeps_contents_when_the_size_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let backing = ShmBacking::File(path.clone());
        let shm = SharedMemory::create(backing.clone(), 4096, Some(0o640), None, false).unwrap();
        rustix::io::pwrite(shm.fd(), b"keep", 0).unwrap();
        drop(shm);
        let shm = SharedMemory::create(backing, 4096, None, None, false).unwrap();
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
    fn an_object_in_use_is_never_resized_and_an_idle_one_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let backing = ShmBacking::File(dir.path().join("region"));
        let live = SharedMemory::create(backing.clone(), 8192, None, None, false).unwrap();
        // Only a mapping keeps it in use, as for a peer that closed its fd.
        let mapping =
            crate::mapping::MappedRegion::map_fd(live.fd().try_clone_to_owned().unwrap()).unwrap();
        drop(live);
        let err = SharedMemory::create(backing.clone(), 4096, None, None, true).unwrap_err();
        assert!(
            matches!(err, ShmError::InUse { current: 8192, .. }),
            "{err}"
        );
        let err =
            SharedMemory::create(backing.clone(), 8192, Some(0o666), None, false).unwrap_err();
        assert!(matches!(err, ShmError::PermissionsInUse { .. }), "{err}");
        let shared = SharedMemory::create(backing.clone(), 8192, None, None, false).unwrap();
        drop((shared, mapping));

        let err = SharedMemory::create(backing.clone(), 4096, None, None, false).unwrap_err();
        assert!(
            matches!(
                err,
                ShmError::SizeDiffers {
                    current: 8192,
                    size: 4096,
                    ..
                }
            ),
            "{err}"
        );
        let resized = SharedMemory::create(backing, 4096, None, None, true).unwrap();
        assert_eq!(rustix::fs::fstat(resized.fd()).unwrap().st_size, 4096);
    }

    #[test]
    fn a_failed_start_removes_only_the_name_it_created() {
        let name = format!("ivlink-shm-unit-{}", std::process::id());
        let backing = ShmBacking::Posix(name.clone());
        let shm = SharedMemory::create(backing.clone(), 4096, None, None, false).unwrap();
        assert!(shm.created);
        shm.discard_if_created();
        assert!(
            rustix::shm::open(name.as_str(), rustix::shm::OFlags::RDONLY, Mode::empty()).is_err()
        );
        let shm = SharedMemory::create(backing.clone(), 4096, None, None, false).unwrap();
        let again = SharedMemory::create(backing, 4096, None, None, false).unwrap();
        assert!(!again.created);
        again.discard_if_created();
        assert!(
            rustix::shm::open(name.as_str(), rustix::shm::OFlags::RDONLY, Mode::empty()).is_ok()
        );
        shm.unlink().unwrap();
    }

    #[test]
    fn a_region_larger_than_memory_is_warned_about() {
        let small = SharedMemory::create(ShmBacking::Memfd, 4096, None, None, false).unwrap();
        assert_eq!(small.capacity_warning(), None);
        // Sized, never touched: a memfd is allocated as it is written.
        let huge = SharedMemory::create(ShmBacking::Memfd, 1 << 50, None, None, false).unwrap();
        let warning = huge.capacity_warning().expect("1 PiB exceeds RAM and swap");
        assert!(
            warning.contains("(1.0 PiB) but the machine has only"),
            "{warning}"
        );
        assert!(
            warning.contains("of RAM and swap: a peer writing beyond"),
            "{warning}"
        );
    }

    #[test]
    fn a_file_larger_than_its_filesystem_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let backing = ShmBacking::Dir(dir.path().into());
        let fits = SharedMemory::create(backing.clone(), 4096, None, None, false).unwrap();
        assert_eq!(fits.capacity_warning(), None);
        let stat = rustix::fs::statvfs(dir.path()).unwrap();
        let beyond = (stat.f_bavail * stat.f_frsize + 1).next_power_of_two();
        let huge = SharedMemory::create(backing, beyond, None, None, false).unwrap();
        let warning = huge.capacity_warning().expect("larger than the free space");
        assert!(
            warning.contains(") are free on its filesystem"),
            "{warning}"
        );
    }

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(approx_size(512), "512 B");
        assert_eq!(approx_size(1536), "1.5 KiB");
        assert_eq!(approx_size(1 << 40), "1.0 TiB");
    }

    #[test]
    fn sizes_above_one_gibibyte_work() {
        let shm =
            SharedMemory::create(ShmBacking::Memfd, (2 << 30) + 1, None, None, false).unwrap();
        assert_eq!(shm.size(), 4 << 30);
    }

    #[test]
    fn directory_backing_leaves_no_name_behind() {
        let dir = tempfile::tempdir().unwrap();
        let shm = SharedMemory::create(ShmBacking::Dir(dir.path().into()), 8192, None, None, false)
            .unwrap();
        assert_eq!(shm.size(), 8192);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
