//! Ways to reach a region, each giving a [`Device`].
//!
//! Naming: each transport is a module named for how it reaches the region
//! (`host`, `guest`, `file`, `openamp`), and its device type is `<Kind>Peer`
//! ([`host::HostPeer`], [`guest::GuestPeer`], [`file::FilePeer`],
//! [`openamp::OpenampPeer`]): one peer of the region, whatever else is on it.
//! Settings, where there are several, are `<Kind>Config` or `<Kind>Options`
//! ([`host::HostConfig`], [`openamp::OpenampOptions`]); errors of its own are
//! `<Kind>Error`
//! ([`host::HostError`], [`guest::GuestError`]), which reach callers as a
//! [`crate::DeviceError::Transport`] and are taken back out with
//! `<Kind>Error::find_in`. The [`Transport`] enum has one variant per kind, so a
//! tool opens any of them the same way.

pub mod file;
pub mod guest;
pub mod host;
pub mod openamp;

use std::path::PathBuf;

use crate::device::{Device, DeviceError};

/// How a peer-side tool reaches the region: chosen the same way by every command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A peer of an ivshmem server on its UNIX socket.
    Host(host::HostConfig),
    /// A plain shared file, polled (no doorbell).
    File {
        /// The file.
        path: PathBuf,
        /// The id this peer uses for itself.
        id: ivlink_core::PeerId,
    },
    /// A Linux guest on QEMU's ivshmem PCI device (VFIO or sysfs).
    Guest {
        /// The device's PCI address (`"0000:00:03.0"` or `"00:03.0"`); `None` finds
        /// the first ivshmem device.
        device: Option<String>,
        /// How to reach it.
        mode: guest::GuestMode,
    },
    /// One side of OpenAMP's Linux machine: a POSIX shm object (or a file) and
    /// the samples' kick socket.
    Openamp {
        /// Listen (process 0, the RPMsg remote) or connect (process 1, the host).
        role: openamp::OpenampRole,
        /// The socket, the shared memory and how long to keep connecting.
        options: openamp::OpenampOptions,
    },
}

impl Transport {
    /// Connects or maps, giving the device.
    pub fn open(&self) -> Result<Box<dyn Device>, DeviceError> {
        Ok(match self {
            Transport::Host(config) => Box::new(host::HostPeer::connect(config)?),
            Transport::File { path, id } => Box::new(file::FilePeer::open(path, *id)?),
            Transport::Guest { device, mode } => {
                Box::new(guest::GuestPeer::open(device.as_deref(), *mode)?)
            }
            Transport::Openamp { role, options } => {
                Box::new(openamp::OpenampPeer::open(*role, options.clone())?)
            }
        })
    }
}
