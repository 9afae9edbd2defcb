//! Eventfd doorbells: the kernel object behind every ivshmem vector on a host.
//!
//! Ringing writes the integer 1; the receiver reads (drains) the counter, so several
//! rings before a read coalesce into one wake-up with a count.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::io::{Errno, ReadWriteFlags, preadv2};

/// Creates a doorbell as QEMU's server does: non-blocking, close-on-exec.
pub fn new_eventfd() -> io::Result<OwnedFd> {
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// Rings a doorbell (adds 1 to its counter).
pub fn ring(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        match rustix::io::write(fd, &1u64.to_ne_bytes()) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            // The counter is saturated: the receiver has a wake-up pending anyway.
            Err(Errno::AGAIN) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads and resets a doorbell's counter without blocking: 0 if it was not rung.
///
/// Works on blocking and non-blocking eventfds alike (the fd's flags are shared with
/// whoever created it, so we do not rely on them): one `preadv2(RWF_NOWAIT)`, or
/// where the kernel cannot do that for the fd, a zero-timeout poll and a read.
pub fn drain(fd: BorrowedFd<'_>) -> io::Result<u64> {
    if !NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        let mut buf = [0u8; 8];
        loop {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            // u64::MAX: the current position (an eventfd has none).
            match preadv2(fd, &mut bufs, u64::MAX, ReadWriteFlags::NOWAIT) {
                Ok(n) => return counter(&buf, n),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(0),
                Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                    NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !poll_readable(fd, Some(Duration::ZERO))? {
        return Ok(0);
    }
    let mut buf = [0u8; 8];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(n) => return counter(&buf, n),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Set once a kernel refused `RWF_NOWAIT` on a doorbell: later drains go
/// straight to poll and read.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// The counter from a read of `n` bytes into `buf`.
fn counter(buf: &[u8; 8], n: usize) -> io::Result<u64> {
    if n != 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("short read of {n} bytes from an eventfd"),
        ));
    }
    Ok(u64::from_ne_bytes(*buf))
}

/// Waits until `fd` is readable or `timeout` passes (`None`: forever).
/// Returns whether it became readable (hang-up and errors count as readable).
pub fn poll_readable(fd: impl AsFd, timeout: Option<Duration>) -> io::Result<bool> {
    let timeout = timeout.map(to_timespec);
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, timeout.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Converts a duration to a kernel timespec, saturating.
pub fn to_timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_coalesce_until_drained() {
        let fd = new_eventfd().unwrap();
        assert_eq!(drain(fd.as_fd()).unwrap(), 0);
        ring(fd.as_fd()).unwrap();
        ring(fd.as_fd()).unwrap();
        assert!(poll_readable(&fd, Some(Duration::ZERO)).unwrap());
        assert_eq!(drain(fd.as_fd()).unwrap(), 2);
        assert!(!poll_readable(&fd, Some(Duration::from_millis(1))).unwrap());
    }

    #[test]
    fn drains_blocking_eventfds_without_blocking() {
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        assert_eq!(drain(fd.as_fd()).unwrap(), 0);
        ring(fd.as_fd()).unwrap();
        assert_eq!(drain(fd.as_fd()).unwrap(), 1);
    }

    /// Both ways of draining give the same counts (the poll-and-read one is
    /// what kernels without `RWF_NOWAIT` for eventfds get).
    #[test]
    fn the_poll_and_read_fallback_drains_alike() {
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let was = NOWAIT_UNSUPPORTED.swap(true, Ordering::Relaxed);
        assert_eq!(drain(fd.as_fd()).unwrap(), 0);
        ring(fd.as_fd()).unwrap();
        ring(fd.as_fd()).unwrap();
        assert_eq!(drain(fd.as_fd()).unwrap(), 2);
        NOWAIT_UNSUPPORTED.store(was, Ordering::Relaxed);
        ring(fd.as_fd()).unwrap();
        assert_eq!(drain(fd.as_fd()).unwrap(), 1);
        assert_eq!(drain(fd.as_fd()).unwrap(), 0);
    }
}
