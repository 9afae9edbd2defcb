//! A plain shared file as a region: `/dev/shm/x`, a hugetlbfs file, a DAX device, or
//! the file behind an `ivshmem-plain` memory backend. No doorbell: peers poll.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ivlink_core::{Notify, NotifyError, PeerId, RawRegion, Vector};
use rustix::fs::{Mode, OFlags};

use crate::device::{Device, DeviceError, Event, PeerInfo, WaitFor};
use crate::mapping::MappedRegion;

/// A peer that maps a shared file.
#[derive(Debug)]
pub struct FilePeer {
    path: PathBuf,
    region: MappedRegion,
    id: PeerId,
}

impl FilePeer {
    /// Maps an existing, non-empty file. `id` is the id this peer calls itself.
    pub fn open(path: &Path, id: PeerId) -> Result<Self, DeviceError> {
        let fd =
            rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                DeviceError::Open {
                    path: path.display().to_string(),
                    error: e.into(),
                }
            })?;
        Ok(FilePeer {
            path: path.to_owned(),
            region: MappedRegion::map_fd(fd)?,
            id,
        })
    }

    /// Creates (or grows) the file to `size` bytes and maps it.
    pub fn create(path: &Path, size: u64, id: PeerId) -> Result<Self, DeviceError> {
        let open_err = |e: rustix::io::Errno| DeviceError::Open {
            path: path.display().to_string(),
            error: e.into(),
        };
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(open_err)?;
        let current = rustix::fs::fstat(&fd).map_err(open_err)?.st_size as u64;
        if current < size {
            rustix::fs::ftruncate(&fd, size).map_err(open_err)?;
        }
        Ok(FilePeer {
            path: path.to_owned(),
            region: MappedRegion::map_fd(fd)?,
            id,
        })
    }
}

impl Notify for FilePeer {
    fn notify(&self, _peer: PeerId, _vector: Vector) -> Result<(), NotifyError> {
        Err(NotifyError::Unsupported)
    }
}

impl Device for FilePeer {
    fn region(&self) -> &RawRegion {
        &self.region
    }

    fn id(&self) -> PeerId {
        self.id
    }

    fn vectors(&self) -> usize {
        0
    }

    fn peers(&self) -> Vec<PeerInfo> {
        Vec::new()
    }

    /// Nothing can ring: sleeps for the timeout (a polling tick) and reports no
    /// event. Waiting forever would never end, so it is an error.
    fn wait(
        &self,
        _what: WaitFor,
        timeout: Option<Duration>,
    ) -> Result<Option<Event>, DeviceError> {
        let timeout = timeout.ok_or(DeviceError::NoDoorbell)?;
        std::thread::sleep(timeout);
        Ok(None)
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn describe(&self) -> String {
        format!("shared file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivlink_core::Region;

    #[test]
    fn two_peers_on_one_file_share_bytes_but_have_no_doorbell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let a = FilePeer::create(&path, 1 << 16, 0).unwrap();
        let b = FilePeer::open(&path, 1).unwrap();
        a.region().write(10, b"over a file").unwrap();
        let mut buf = [0u8; 11];
        b.region().read(10, &mut buf).unwrap();
        assert_eq!(&buf, b"over a file");
        assert_eq!(b.region().len(), 1 << 16);
        assert!(!a.has_doorbell());
        assert_eq!(a.notify(1, 0), Err(NotifyError::Unsupported));
        assert!(matches!(
            b.wait(WaitFor::ANYTHING, None),
            Err(DeviceError::NoDoorbell)
        ));
        assert_eq!(
            b.wait(WaitFor::ANYTHING, Some(Duration::from_millis(1)))
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_missing_or_empty_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = FilePeer::open(&missing, 0).unwrap_err();
        assert!(err.to_string().starts_with("cannot open"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(FilePeer::open(&empty, 0).is_err());
    }
}
