//! Waiting for a device's events on a tokio reactor (feature `tokio`).
//!
//! [`AsyncDevice`] registers the device's [`wait_fd`](Device::wait_fd) with
//! tokio's reactor and awaits readiness, then takes the event with a
//! non-blocking [`Device::wait`]: no thread blocks, and events that were not
//! asked for stay pending for later calls, as with the blocking call.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::device::{Device, DeviceError, Event, WaitFor};

/// A device whose events can be awaited.
pub struct AsyncDevice<'d> {
    device: &'d dyn Device,
    fd: AsyncFd<BorrowedFd<'d>>,
}

impl<'d> AsyncDevice<'d> {
    /// Registers `device`'s wait fd with the current tokio reactor (call it
    /// inside a runtime). Fails with [`io::ErrorKind::Unsupported`] on a
    /// transport that cannot wake (a plain file: poll the region instead).
    pub fn new(device: &'d dyn Device) -> io::Result<Self> {
        let fd = device.wait_fd().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{} has no wait fd", device.describe()),
            )
        })?;
        // SAFETY: `fd` is borrowed from `device` for 'd, so it stays open and names
        // the same file description for as long as the `AsyncFd` (which cannot
        // outlive 'd) holds it; `BorrowedFd::as_raw_fd` always returns that fd.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(AsyncDevice { device, fd })
    }

    /// The device.
    pub fn device(&self) -> &'d dyn Device {
        self.device
    }

    /// Waits for the next event that `what` asks for. Cancel-safe: dropping the
    /// future loses no event. Use `tokio::time::timeout` for a deadline.
    pub async fn wait(&self, what: WaitFor) -> Result<Event, DeviceError> {
        loop {
            if let Some(event) = self.device.wait(what, Some(Duration::ZERO))? {
                return Ok(event);
            }
            let mut guard = self.fd.readable().await.map_err(|error| DeviceError::Io {
                context: "waiting for the device on the reactor",
                error,
            })?;
            // Take what made the fd readable; if it was not for us (or nothing),
            // the fd is drained and readiness can be cleared without losing a
            // newer wake-up (tokio only clears the readiness it reported).
            match self.device.wait(what, Some(Duration::ZERO))? {
                Some(event) => return Ok(event),
                None => guard.clear_ready(),
            }
        }
    }
}
