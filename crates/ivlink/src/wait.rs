//! Waiting for events on an epoll set, shared by the transports that have one.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::epoll;

use crate::device::DeviceError;
use crate::doorbell;

/// Returns the first event `take` yields, polling `epoll` and handing what became
/// ready to `collect` in between, until `timeout` passes (`None`: forever). A zero
/// timeout still looks once.
pub(crate) fn wait_epoll<T>(
    epoll: BorrowedFd<'_>,
    timeout: Option<Duration>,
    mut take: impl FnMut() -> Option<T>,
    mut collect: impl FnMut(&[epoll::Event]) -> Result<(), DeviceError>,
) -> Result<Option<T>, DeviceError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut ready = Vec::with_capacity(16);
    let mut polled = false;
    loop {
        if let Some(event) = take() {
            return Ok(Some(event));
        }
        let remaining = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() && polled {
                    return Ok(None);
                }
                Some(doorbell::to_timespec(left))
            }
            None => None,
        };
        polled = true;
        ready.clear();
        match epoll::wait(
            epoll,
            rustix::buffer::spare_capacity(&mut ready),
            remaining.as_ref(),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(DeviceError::io("waiting for events")(e.into())),
        }
        collect(&ready)?;
    }
}
