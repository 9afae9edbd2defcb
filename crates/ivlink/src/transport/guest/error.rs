//! Why the guest transport could not reach the ivshmem device, each with the fix.

use std::io;

use thiserror::Error;

use crate::device::{DeviceError, TransportError, TransportErrorKind};

/// The modules VFIO needs, in the order they load.
pub const VFIO_MODULES: &str = "irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci";

/// Why a guest could not open its ivshmem PCI device.
///
/// Converts into [`DeviceError`] (as a [`DeviceError::Transport`] of the kind
/// [`GuestError::kind`] says); [`GuestError::find_in`] gets it back, for its hints.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GuestError {
    /// No PCI device has the ivshmem ids.
    #[error(
        "no ivshmem PCI device (1af4:1110) found; start QEMU with \
         -device ivshmem-doorbell,vectors=N,chardev=ID -chardev socket,path=SOCKET,id=ID \
         (with notifications) or -device ivshmem-plain,memdev=ID (shared memory only)"
    )]
    NoDevice,
    /// The address given is not a PCI address.
    #[error("{0:?} is not a PCI address (expected DDDD:BB:DD.F or BB:DD.F, e.g. 0000:00:03.0)")]
    BadAddress(String),
    /// No PCI device has the address given.
    #[error("no PCI device {bdf} (nothing at {path})")]
    NoSuchDevice {
        /// The address.
        bdf: String,
        /// Where it was looked for.
        path: String,
    },
    /// The device at the address given is something else.
    #[error("PCI device {bdf} is {vendor:04x}:{device:04x}, not an ivshmem device (1af4:1110)")]
    NotIvshmem {
        /// The address.
        bdf: String,
        /// Its vendor id.
        vendor: u16,
        /// Its device id.
        device: u16,
    },
    /// VFIO was asked for on an `ivshmem-plain` device, which has no interrupts.
    #[error(
        "PCI device {bdf} is ivshmem-plain (no MSI-X): it has no doorbell, notifications need \
         ivshmem-doorbell; use --device-mode sysfs to share memory by polling"
    )]
    PlainDevice {
        /// The address.
        bdf: String,
    },
    /// The guest has no IOMMU, which VFIO needs.
    #[error(
        "PCI device {bdf} has no IOMMU group, and VFIO needs an IOMMU in the guest: add \
         `-M q35 -device intel-iommu` to the QEMU command line BEFORE the ivshmem device, and \
         `intel_iommu=on` to the guest kernel command line (or use --device-mode sysfs: shared \
         memory without notifications)"
    )]
    NoIommu {
        /// The address.
        bdf: String,
    },
    /// The VFIO modules are not loaded.
    #[error(
        "VFIO is not available ({missing} is missing): load the modules in this order: \
         {modules}",
        modules = VFIO_MODULES
    )]
    VfioMissing {
        /// What was looked for and not found.
        missing: String,
    },
    /// Another process holds the device's VFIO group.
    #[error(
        "PCI device {bdf} is busy: another process holds VFIO group {group} (only one process \
         at a time can use the device through VFIO)"
    )]
    Busy {
        /// The address.
        bdf: String,
        /// The group.
        group: String,
    },
    /// Some device in the group is bound to a non-VFIO driver.
    #[error(
        "VFIO group {group} is not viable: every device in it must be bound to vfio-pci or to \
         no driver (see /sys/kernel/iommu_groups/{group}/devices)"
    )]
    NotViable {
        /// The group.
        group: String,
    },
    /// Binding the device to vfio-pci did not work.
    #[error("cannot bind PCI device {bdf} to vfio-pci: {reason}")]
    Bind {
        /// The address.
        bdf: String,
        /// What went wrong.
        reason: String,
    },
    /// Not allowed to use sysfs or VFIO.
    #[error("permission denied on {path}: binding a PCI device and using VFIO need root")]
    PermissionDenied {
        /// What was refused.
        path: String,
    },
    /// Reading or writing a sysfs file failed.
    #[error("{path}: {error}")]
    Sysfs {
        /// The file.
        path: String,
        /// The system's reason.
        error: io::Error,
    },
    /// A VFIO call failed.
    #[error("VFIO: {op} failed: {error}")]
    Vfio {
        /// The call.
        op: &'static str,
        /// The system's reason.
        error: io::Error,
    },
    /// The kernel speaks another VFIO API version.
    #[error("the kernel's VFIO API version is {0}, not the supported 0")]
    ApiVersion(i32),
    /// The device does not look like an ivshmem device should.
    #[error("unexpected ivshmem device: {0}")]
    Unexpected(String),
}

impl From<GuestError> for DeviceError {
    fn from(error: GuestError) -> Self {
        DeviceError::Transport(TransportError::new(error.kind(), error))
    }
}

impl GuestError {
    /// The guest error inside a [`DeviceError`], if it is one.
    pub fn find_in(error: &DeviceError) -> Option<&GuestError> {
        error.transport_error()
    }

    /// What kind of trouble it is, for callers that do not know this transport.
    pub fn kind(&self) -> TransportErrorKind {
        match self {
            GuestError::NoDevice | GuestError::NoSuchDevice { .. } => TransportErrorKind::NotFound,
            GuestError::BadAddress(_)
            | GuestError::NotIvshmem { .. }
            | GuestError::Unexpected(_) => TransportErrorKind::Invalid,
            GuestError::PlainDevice { .. }
            | GuestError::NoIommu { .. }
            | GuestError::VfioMissing { .. }
            | GuestError::NotViable { .. }
            | GuestError::ApiVersion(_) => TransportErrorKind::Unsupported,
            GuestError::Busy { .. } => TransportErrorKind::Busy,
            GuestError::PermissionDenied { .. } => TransportErrorKind::PermissionDenied,
            GuestError::Sysfs { error, .. } | GuestError::Vfio { error, .. } => {
                TransportErrorKind::from_io(error.kind())
            }
            GuestError::Bind { .. } => TransportErrorKind::Io,
        }
    }

    /// A sysfs failure on `path`, with permission problems named as such.
    pub(crate) fn sysfs(path: &std::path::Path, error: io::Error) -> GuestError {
        let path = path.display().to_string();
        if error.kind() == io::ErrorKind::PermissionDenied {
            GuestError::PermissionDenied { path }
        } else {
            GuestError::Sysfs { path, error }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_how_to_fix_the_problem() {
        let no_device = GuestError::NoDevice.to_string();
        assert!(
            no_device.starts_with(
                "no ivshmem PCI device (1af4:1110) found; start QEMU with -device ivshmem-doorbell,"
            ),
            "{no_device}"
        );
        assert!(no_device.contains("ivshmem-plain"));

        let no_iommu = GuestError::NoIommu {
            bdf: "0000:00:03.0".into(),
        }
        .to_string();
        assert!(
            no_iommu.contains("-M q35 -device intel-iommu"),
            "{no_iommu}"
        );
        assert!(no_iommu.contains("BEFORE the ivshmem device"), "{no_iommu}");
        assert!(no_iommu.contains("intel_iommu=on"), "{no_iommu}");

        let missing = GuestError::VfioMissing {
            missing: "/dev/vfio/vfio".into(),
        }
        .to_string();
        assert!(missing.contains(VFIO_MODULES), "{missing}");
        assert!(missing.contains("/dev/vfio/vfio"), "{missing}");

        let busy = GuestError::Busy {
            bdf: "0000:00:03.0".into(),
            group: "5".into(),
        }
        .to_string();
        assert!(
            busy.contains("busy") && busy.contains("another process"),
            "{busy}"
        );

        let plain = GuestError::PlainDevice {
            bdf: "0000:00:03.0".into(),
        }
        .to_string();
        assert!(
            plain.contains("notifications need ivshmem-doorbell"),
            "{plain}"
        );
    }

    #[test]
    fn converts_into_a_device_error_and_back() {
        let device: DeviceError = GuestError::NotViable { group: "7".into() }.into();
        assert!(
            device.to_string().starts_with("VFIO group 7 is not viable"),
            "{device}"
        );
        assert!(matches!(
            GuestError::find_in(&device),
            Some(GuestError::NotViable { group }) if group == "7"
        ));
        assert!(GuestError::find_in(&DeviceError::NoDoorbell).is_none());
        match &device {
            DeviceError::Transport(error) => {
                assert_eq!(error.kind(), TransportErrorKind::Unsupported);
            }
            other => panic!("not a transport error: {other:?}"),
        }
        let missing: DeviceError = GuestError::NoDevice.into();
        assert!(
            matches!(&missing, DeviceError::Transport(e) if e.kind() == TransportErrorKind::NotFound)
        );
    }
}
