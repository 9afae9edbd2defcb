//! The raw VFIO interface: ioctl numbers, `#[repr(C)]` argument structs and the few
//! calls the guest transport makes. Every `unsafe` block of the guest transport is in
//! this file.
//!
//! Numbers and layouts follow the Linux uapi header `include/uapi/linux/vfio.h`
//! (checked against linux-libc-dev 6.1): every VFIO ioctl is `_IO(';', 100 + n)`,
//! i.e. direction and size bits 0, type `';'` (0x3b) in bits 8-15 and the number in
//! bits 0-7; the argument is a pointer or an integer as each call documents.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::error::GuestError;

/// `VFIO_TYPE`: the ioctl type byte of every VFIO call.
const VFIO_TYPE: u32 = b';' as u32;
/// `VFIO_BASE`: the first VFIO ioctl number.
const VFIO_BASE: u32 = 100;

/// `_IO(type, nr)`: no direction and no size bits.
const fn io(nr: u32) -> u32 {
    (VFIO_TYPE << 8) | (VFIO_BASE + nr)
}

/// `VFIO_GET_API_VERSION`: returns the API version (must be [`VFIO_API_VERSION`]).
pub(crate) const VFIO_GET_API_VERSION: u32 = io(0);
/// `VFIO_CHECK_EXTENSION(int)`: whether the container supports an IOMMU type.
pub(crate) const VFIO_CHECK_EXTENSION: u32 = io(1);
/// `VFIO_SET_IOMMU(int)`: selects the container's IOMMU type.
pub(crate) const VFIO_SET_IOMMU: u32 = io(2);
/// `VFIO_GROUP_GET_STATUS(struct vfio_group_status *)`.
pub(crate) const VFIO_GROUP_GET_STATUS: u32 = io(3);
/// `VFIO_GROUP_SET_CONTAINER(int *)`: puts the group into a container.
pub(crate) const VFIO_GROUP_SET_CONTAINER: u32 = io(4);
/// `VFIO_GROUP_GET_DEVICE_FD(char *)`: a device fd for a device name (the BDF).
pub(crate) const VFIO_GROUP_GET_DEVICE_FD: u32 = io(6);
/// `VFIO_DEVICE_GET_INFO(struct vfio_device_info *)` (not used; listed for the record).
#[allow(dead_code)]
pub(crate) const VFIO_DEVICE_GET_INFO: u32 = io(7);
/// `VFIO_DEVICE_GET_REGION_INFO(struct vfio_region_info *)`.
pub(crate) const VFIO_DEVICE_GET_REGION_INFO: u32 = io(8);
/// `VFIO_DEVICE_GET_IRQ_INFO(struct vfio_irq_info *)`.
pub(crate) const VFIO_DEVICE_GET_IRQ_INFO: u32 = io(9);
/// `VFIO_DEVICE_SET_IRQS(struct vfio_irq_set *)`.
pub(crate) const VFIO_DEVICE_SET_IRQS: u32 = io(10);

/// `VFIO_API_VERSION`.
pub(crate) const VFIO_API_VERSION: i32 = 0;
/// `VFIO_TYPE1_IOMMU`.
pub(crate) const VFIO_TYPE1_IOMMU: u32 = 1;
/// `VFIO_GROUP_FLAGS_VIABLE`: every device of the group is bound to a VFIO driver or
/// to none.
pub(crate) const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
/// `VFIO_REGION_INFO_FLAG_MMAP`.
pub(crate) const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
/// `VFIO_IRQ_SET_DATA_EVENTFD`: the data is an array of `__s32` eventfds.
pub(crate) const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
/// `VFIO_IRQ_SET_ACTION_TRIGGER`: signal the eventfds when the interrupt fires.
pub(crate) const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

/// `VFIO_PCI_BAR0_REGION_INDEX`.
pub(crate) const BAR0_REGION_INDEX: u32 = 0;
/// `VFIO_PCI_BAR2_REGION_INDEX`.
pub(crate) const BAR2_REGION_INDEX: u32 = 2;
/// `VFIO_PCI_CONFIG_REGION_INDEX`.
pub(crate) const CONFIG_REGION_INDEX: u32 = 7;
/// `VFIO_PCI_MSIX_IRQ_INDEX`.
pub(crate) const MSIX_IRQ_INDEX: u32 = 2;

/// The most eventfds one `VFIO_DEVICE_SET_IRQS` call here attaches (ivshmem's
/// vectors are at most 64 in practice; the event API holds 64).
pub(crate) const MAX_IRQS: usize = 64;

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct VfioGroupStatus {
    pub argsz: u32,
    pub flags: u32,
}

/// `struct vfio_region_info` (without capabilities).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct VfioRegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

/// `struct vfio_irq_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct VfioIrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

/// The fixed part of `struct vfio_irq_set` (its `data[]` follows).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct VfioIrqSetHeader {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
}

/// `struct vfio_irq_set` with room for [`MAX_IRQS`] `__s32` eventfds as its data.
/// `argsz` says how many of them the kernel reads.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct VfioIrqSetEventfds {
    header: VfioIrqSetHeader,
    fds: [i32; MAX_IRQS],
}

fn size_u32<T>() -> u32 {
    size_of::<T>() as u32
}

fn last_error(op: &'static str) -> GuestError {
    GuestError::Vfio {
        op,
        error: io::Error::last_os_error(),
    }
}

/// Opens a character device read-write, close-on-exec.
fn open_rw(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A VFIO container (`/dev/vfio/vfio`): the IOMMU context the group joins.
#[derive(Debug)]
pub(crate) struct Container {
    fd: OwnedFd,
}

impl Container {
    /// Opens the container and checks the API version and type-1 IOMMU support.
    pub(crate) fn open(path: &Path) -> Result<Container, GuestError> {
        let fd = open_rw(path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => GuestError::VfioMissing {
                missing: path.display().to_string(),
            },
            io::ErrorKind::PermissionDenied => GuestError::PermissionDenied {
                path: path.display().to_string(),
            },
            _ => GuestError::Vfio {
                op: "opening the container",
                error,
            },
        })?;
        // SAFETY: VFIO_GET_API_VERSION takes no argument and only returns an integer;
        // `fd` is an open file descriptor that lives across the call.
        let version = unsafe { libc::ioctl(fd.as_raw_fd(), VFIO_GET_API_VERSION as _) };
        if version < 0 {
            return Err(last_error("VFIO_GET_API_VERSION"));
        }
        if version != VFIO_API_VERSION {
            return Err(GuestError::ApiVersion(version));
        }
        // SAFETY: VFIO_CHECK_EXTENSION takes an integer argument by value and returns
        // an integer; `fd` is open across the call.
        let type1 = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                VFIO_CHECK_EXTENSION as _,
                VFIO_TYPE1_IOMMU as libc::c_ulong,
            )
        };
        if type1 <= 0 {
            return Err(GuestError::VfioMissing {
                missing: "type-1 IOMMU support (module vfio_iommu_type1)".into(),
            });
        }
        Ok(Container { fd })
    }

    /// Selects the type-1 IOMMU; only valid once a group is in the container.
    pub(crate) fn set_type1_iommu(&self) -> Result<(), GuestError> {
        // SAFETY: VFIO_SET_IOMMU takes an integer argument by value; `self.fd` is open.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                VFIO_SET_IOMMU as _,
                VFIO_TYPE1_IOMMU as libc::c_ulong,
            )
        };
        if ret < 0 {
            return Err(last_error("VFIO_SET_IOMMU"));
        }
        Ok(())
    }
}

/// A VFIO group (`/dev/vfio/<group>`).
#[derive(Debug)]
pub(crate) struct Group {
    fd: OwnedFd,
    name: String,
}

impl Group {
    /// Opens the group node. `EBUSY` means another process holds it.
    pub(crate) fn open(path: &Path, name: &str, bdf: &str) -> Result<Group, GuestError> {
        let fd = open_rw(path).map_err(|error| match error.raw_os_error() {
            Some(libc::EBUSY) => GuestError::Busy {
                bdf: bdf.to_owned(),
                group: name.to_owned(),
            },
            Some(libc::ENOENT) => GuestError::VfioMissing {
                missing: path.display().to_string(),
            },
            Some(libc::EACCES | libc::EPERM) => GuestError::PermissionDenied {
                path: path.display().to_string(),
            },
            _ => GuestError::Vfio {
                op: "opening the group",
                error,
            },
        })?;
        Ok(Group {
            fd,
            name: name.to_owned(),
        })
    }

    /// The group's name (its number).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Fails unless the group is viable (all its devices bound to VFIO or to nothing).
    pub(crate) fn check_viable(&self) -> Result<(), GuestError> {
        let mut status = VfioGroupStatus {
            argsz: size_u32::<VfioGroupStatus>(),
            flags: 0,
        };
        // SAFETY: VFIO_GROUP_GET_STATUS writes a `struct vfio_group_status`, which
        // `VfioGroupStatus` matches (size asserted in tests); the pointer is to a live,
        // exclusively borrowed local with `argsz` set to its size.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                VFIO_GROUP_GET_STATUS as _,
                &mut status as *mut VfioGroupStatus,
            )
        };
        if ret < 0 {
            return Err(last_error("VFIO_GROUP_GET_STATUS"));
        }
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(GuestError::NotViable {
                group: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Puts this group into `container`.
    pub(crate) fn set_container(&self, container: &Container) -> Result<(), GuestError> {
        let container_fd: libc::c_int = container.fd.as_raw_fd();
        // SAFETY: VFIO_GROUP_SET_CONTAINER reads one `int` (the container fd) through
        // the pointer, which points to a live local; both fds are open.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                VFIO_GROUP_SET_CONTAINER as _,
                &container_fd as *const libc::c_int,
            )
        };
        if ret < 0 {
            return Err(last_error("VFIO_GROUP_SET_CONTAINER"));
        }
        Ok(())
    }

    /// Opens the device named `bdf` in this group.
    pub(crate) fn device(&self, bdf: &str) -> Result<VfioDevice, GuestError> {
        let name = CString::new(bdf).map_err(|_| GuestError::BadAddress(bdf.to_owned()))?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD reads a NUL-terminated string through the
        // pointer, which `name` keeps alive across the call; it returns a new fd or -1.
        let fd: RawFd = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                VFIO_GROUP_GET_DEVICE_FD as _,
                name.as_ptr(),
            )
        };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::EBUSY) => GuestError::Busy {
                    bdf: bdf.to_owned(),
                    group: self.name.clone(),
                },
                _ => GuestError::Vfio {
                    op: "VFIO_GROUP_GET_DEVICE_FD",
                    error,
                },
            });
        }
        // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else
        // owns; taking ownership closes it exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(VfioDevice {
            file: File::from(fd),
        })
    }
}

/// Where a device region is in the device fd, and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegionInfo {
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Size in bytes (0: the BAR is not implemented).
    pub size: u64,
    /// Offset of the region in the device fd, for pread/pwrite and mmap.
    pub offset: u64,
}

impl RegionInfo {
    /// Whether the region may be mmapped.
    pub(crate) fn mappable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_MMAP != 0
    }
}

/// A VFIO device fd.
#[derive(Debug)]
pub(crate) struct VfioDevice {
    file: File,
}

impl VfioDevice {
    /// The device fd, e.g. to mmap a region from.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for region `index`.
    pub(crate) fn region_info(&self, index: u32) -> Result<RegionInfo, GuestError> {
        let mut info = VfioRegionInfo {
            argsz: size_u32::<VfioRegionInfo>(),
            index,
            ..VfioRegionInfo::default()
        };
        // SAFETY: VFIO_DEVICE_GET_REGION_INFO reads and writes a `struct
        // vfio_region_info`, which `VfioRegionInfo` matches (size asserted in tests);
        // `argsz` tells the kernel not to write past it (capabilities that do not fit
        // are only announced through a larger `argsz`, never written).
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                VFIO_DEVICE_GET_REGION_INFO as _,
                &mut info as *mut VfioRegionInfo,
            )
        };
        if ret < 0 {
            return Err(last_error("VFIO_DEVICE_GET_REGION_INFO"));
        }
        Ok(RegionInfo {
            flags: info.flags,
            size: info.size,
            offset: info.offset,
        })
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` for interrupt `index`: how many interrupts it has.
    pub(crate) fn irq_count(&self, index: u32) -> Result<u32, GuestError> {
        let mut info = VfioIrqInfo {
            argsz: size_u32::<VfioIrqInfo>(),
            index,
            ..VfioIrqInfo::default()
        };
        // SAFETY: VFIO_DEVICE_GET_IRQ_INFO reads and writes a `struct vfio_irq_info`,
        // which `VfioIrqInfo` matches (size asserted in tests); it is a live local.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                VFIO_DEVICE_GET_IRQ_INFO as _,
                &mut info as *mut VfioIrqInfo,
            )
        };
        if ret < 0 {
            return Err(last_error("VFIO_DEVICE_GET_IRQ_INFO"));
        }
        Ok(info.count)
    }

    /// Attaches `eventfds[i]` as the trigger of interrupt `i` of `index` (this enables
    /// MSI-X with that many vectors).
    pub(crate) fn set_irq_eventfds(
        &self,
        index: u32,
        eventfds: &[BorrowedFd<'_>],
    ) -> Result<(), GuestError> {
        if eventfds.is_empty() || eventfds.len() > MAX_IRQS {
            return Err(GuestError::Unexpected(format!(
                "cannot attach {} interrupt eventfds (1 to {MAX_IRQS})",
                eventfds.len()
            )));
        }
        let mut set = VfioIrqSetEventfds {
            header: VfioIrqSetHeader {
                argsz: (size_of::<VfioIrqSetHeader>() + eventfds.len() * size_of::<i32>()) as u32,
                flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                index,
                start: 0,
                count: eventfds.len() as u32,
            },
            fds: [-1; MAX_IRQS],
        };
        for (slot, fd) in set.fds.iter_mut().zip(eventfds) {
            *slot = fd.as_raw_fd();
        }
        // SAFETY: VFIO_DEVICE_SET_IRQS reads a `struct vfio_irq_set` followed by
        // `count` `__s32` eventfds; `VfioIrqSetEventfds` lays out the 20-byte header
        // directly followed by the fds (size asserted in tests) and `argsz` covers only
        // the `count` fds filled in. The eventfds are borrowed, so open, for the call;
        // the kernel takes its own references to them.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                VFIO_DEVICE_SET_IRQS as _,
                &mut set as *mut VfioIrqSetEventfds,
            )
        };
        if ret < 0 {
            return Err(last_error("VFIO_DEVICE_SET_IRQS"));
        }
        Ok(())
    }

    /// Reads a little-endian u32 at `offset` of a region (exactly one 4-byte access).
    pub(crate) fn read_u32(&self, region: &RegionInfo, offset: u64) -> io::Result<u32> {
        let mut buf = [0u8; 4];
        self.read_exact_at(region, offset, &mut buf)?;
        Ok(u32::from_le_bytes(buf))
    }

    /// Writes a little-endian u32 at `offset` of a region (exactly one 4-byte access).
    pub(crate) fn write_u32(&self, region: &RegionInfo, offset: u64, value: u32) -> io::Result<()> {
        self.write_exact_at(region, offset, &value.to_le_bytes())
    }

    /// Reads a little-endian u16 at `offset` of a region.
    pub(crate) fn read_u16(&self, region: &RegionInfo, offset: u64) -> io::Result<u16> {
        let mut buf = [0u8; 2];
        self.read_exact_at(region, offset, &mut buf)?;
        Ok(u16::from_le_bytes(buf))
    }

    /// Writes a little-endian u16 at `offset` of a region.
    pub(crate) fn write_u16(&self, region: &RegionInfo, offset: u64, value: u16) -> io::Result<()> {
        self.write_exact_at(region, offset, &value.to_le_bytes())
    }

    fn checked(region: &RegionInfo, offset: u64, len: usize) -> io::Result<u64> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|end| end > region.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "access of {len} bytes at {offset:#x} is outside a region of {} bytes",
                    region.size
                ),
            ));
        }
        region
            .offset
            .checked_add(offset)
            .ok_or_else(|| io::Error::other("region offset overflows"))
    }

    // One pread/pwrite is one access of exactly `buf.len()` bytes on the device:
    // vfio-pci splits only at natural alignment, so a short transfer is an error, not
    // something to retry piecewise (which would change the access size).
    fn read_exact_at(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = Self::checked(region, offset, buf.len())?;
        loop {
            match self.file.read_at(buf, at) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("short device read ({n} of {} bytes)", buf.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn write_exact_at(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> io::Result<()> {
        let at = Self::checked(region, offset, buf.len())?;
        loop {
            match self.file.write_at(buf, at) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short device write ({n} of {} bytes)", buf.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for VfioDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_the_kernels_sizes() {
        assert_eq!(size_of::<VfioRegionInfo>(), 32);
        assert_eq!(size_of::<VfioIrqInfo>(), 16);
        assert_eq!(size_of::<VfioIrqSetHeader>(), 20);
        assert_eq!(size_of::<VfioGroupStatus>(), 8);
        // The eventfds follow the header with no padding, as `__u8 data[]` does.
        assert_eq!(
            std::mem::offset_of!(VfioIrqSetEventfds, fds),
            size_of::<VfioIrqSetHeader>()
        );
        assert_eq!(std::mem::offset_of!(VfioRegionInfo, size), 16);
        assert_eq!(std::mem::offset_of!(VfioRegionInfo, offset), 24);
    }

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        // _IO(';', 100 + n) = 0x3b00 | (100 + n).
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_GET_STATUS, 0x3b67);
        assert_eq!(VFIO_GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
    }

    #[test]
    fn register_accesses_stay_inside_their_region() {
        let region = RegionInfo {
            flags: 0,
            size: 256,
            offset: 0x1000,
        };
        assert_eq!(VfioDevice::checked(&region, 0x0c, 4).unwrap(), 0x100c);
        assert_eq!(VfioDevice::checked(&region, 252, 4).unwrap(), 0x10fc);
        assert!(VfioDevice::checked(&region, 253, 4).is_err());
        assert!(VfioDevice::checked(&region, u64::MAX, 4).is_err());
    }

    #[test]
    fn a_missing_container_names_the_modules() {
        let dir = tempfile::tempdir().unwrap();
        let err = Container::open(&dir.path().join("vfio")).unwrap_err();
        assert!(matches!(err, GuestError::VfioMissing { .. }), "{err}");
        assert!(err.to_string().contains("vfio_iommu_type1"), "{err}");
    }
}
