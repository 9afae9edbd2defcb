//! Why an NTB operation failed, and the errno the kernel's NTB API gives for it.

use ivlink_core::directory::DirectoryError;
use ivlink_core::ntb::{NtbLayout, NtbLayoutError};
use ivlink_core::{NotifyError, PeerId};
use thiserror::Error;

use crate::device::DeviceError;
use crate::section::OpenFailure;

/// Why an NTB operation failed.
#[derive(Debug, Error)]
pub enum NtbError {
    /// The switch refused (bad index, bad translation, port taken, damaged
    /// section, ...).
    #[error(transparent)]
    Layout(#[from] NtbLayoutError),
    /// The region's directory could not be opened or extended.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Another peer was still setting the switch up when the timeout passed.
    #[error("NTB switch '{0}' was still being set up by another peer")]
    SetupTimeout(String),
    /// The link to the peer (`None`: to every peer) is down.
    #[error("{}", match .pidx {
        Some(pidx) => format!("the link to NTB peer {pidx} is down"),
        None => "the link to every NTB peer is down".to_owned(),
    })]
    NotConnected {
        /// The peer index, or `None` for an operation on every peer.
        pidx: Option<u32>,
    },
    /// Ringing a peer's doorbell failed.
    #[error("notify peer {peer}: {error}")]
    Notify {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: NotifyError,
    },
    /// Waiting for events failed (the server went away, ...).
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl NtbError {
    /// The errno the kernel's NTB API (and ntb_tool's debugfs files) give for this
    /// failure: `EINVAL` for a bad index or translation, `EBUSY` for a port taken,
    /// `ENOTCONN` for a link that is down (as `mw_transM` gives), `EIO` for a damaged switch or a failed
    /// device.
    pub fn errno(&self) -> i32 {
        match self {
            NtbError::Layout(e) => match e {
                NtbLayoutError::NoSuch { .. }
                | NtbLayoutError::BadTranslation
                | NtbLayoutError::Invalid(_) => libc::EINVAL,
                NtbLayoutError::NotGranted => libc::EACCES,
                NtbLayoutError::PortTaken { .. } | NtbLayoutError::Initializing => libc::EBUSY,
                NtbLayoutError::PortLost { .. } => libc::ENODEV,
                NtbLayoutError::Damaged(_) | NtbLayoutError::Region(_) => libc::EIO,
            },
            NtbError::NotConnected { .. } => libc::ENOTCONN,
            NtbError::SetupTimeout(_) => libc::ETIMEDOUT,
            NtbError::Directory(_) | NtbError::Notify { .. } | NtbError::Device(_) => libc::EIO,
        }
    }
}

impl From<ivlink_core::RegionError> for NtbError {
    fn from(e: ivlink_core::RegionError) -> Self {
        NtbError::Layout(NtbLayoutError::Region(e))
    }
}

impl OpenFailure<NtbLayout> for NtbError {
    fn setup_timeout(name: &str) -> Self {
        NtbError::SetupTimeout(name.to_owned())
    }
}
