//! The std runtime of ivlink: everything that connects to an ivshmem region.
//!
//! - [`server`]: an ivshmem server, byte-compatible with QEMU's, embeddable in
//!   programs and tests.
//! - [`transport`]: peers of the region. [`transport::host`] is a peer of a server
//!   over its UNIX socket; [`transport::guest`] is a Linux guest on QEMU's ivshmem
//!   PCI device (VFIO or sysfs); [`transport::file`] maps a plain shared file;
//!   [`transport::openamp`] is one side of OpenAMP's Linux machine. Each gives a
//!   [`Device`], opened the same way through [`Transport`].
//! - [`wire`]: the server socket protocol shared by both sides.
//!
//! The protocols that run inside the region live in `ivlink-core` and reach it
//! through [`Device::region`] and the [`ivlink_core::Notify`] trait.

pub mod channel;
pub mod console;
pub mod device;
pub mod doorbell;
pub mod inspect;
pub mod mailbox;
pub mod mapping;
pub mod ntb;
pub mod raw_message;
pub mod relay;
pub mod server;
pub use server::{Server, ServerConfig, ServerHandle, ServerThread};
#[cfg(feature = "tokio")]
pub mod async_wait;
pub mod rpmsg;
pub mod section;
pub mod shm;
pub mod size;
pub mod stream;
pub mod transport;
pub mod wait;
pub mod wire;

pub use device::{
    Device, DeviceError, Event, PeerInfo, TransportError, TransportErrorKind, VectorSet, WaitFor,
};
/// The region directory (for `format` and tools that read it), from the core.
pub use ivlink_core::directory;
pub use ivlink_core::{Notify, NotifyError, PeerId, RawRegion, Region, RegionError, Vector};
pub use mapping::MappedRegion;

pub use transport::openamp::{OpenampOptions, OpenampPeer, OpenampRole, OpenampShm};
pub use transport::{Transport, file::FilePeer, guest::GuestPeer, host::HostPeer};

/// The socket path QEMU's tools use when none is given.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/ivshmem_socket";
