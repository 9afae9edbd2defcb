//! Waiting: for transport events on an epoll set, and for conditions in the region
//! (spin briefly, then sleep on a doorbell).

use std::mem::MaybeUninit;
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
    // On the stack: a wait per message must not cost an allocation.
    let mut ready = [const { MaybeUninit::<epoll::Event>::uninit() }; 16];
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
        match epoll::wait(epoll, &mut ready, remaining.as_ref()) {
            Ok((events, _)) => collect(events)?,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(DeviceError::io("waiting for events")(e.into())),
        }
    }
}

/// Something a peer can wait for in the region: data in a ring, space in a ring, a
/// mailbox slot. The protocol decides when to ask for a doorbell.
pub trait Waitable {
    /// The protocol's error.
    type Error;

    /// Whether the condition holds now (cheap; called while spinning).
    fn ready(&mut self) -> Result<bool, Self::Error>;

    /// Asks the other side to ring the doorbell, then re-checks: `Ok(false)` if the
    /// condition already holds (and the request was withdrawn), so the caller must
    /// not sleep.
    fn arm(&mut self) -> Result<bool, Self::Error>;

    /// Withdraws the request after waking.
    fn disarm(&mut self) -> Result<(), Self::Error>;
}

/// Why a wait failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    /// The protocol reported an error (e.g. a corrupted ring).
    #[error("{0}")]
    Protocol(E),
    /// Sleeping on the doorbell failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Spin briefly, then sleep on a doorbell: a busy link costs no syscall, an idle
/// one no CPU. The spin budget is roughly the price of one blocking wake-up
/// (tens of microseconds between vCPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinThenSleep {
    /// How long to spin before sleeping (zero: sleep at once; a long budget trades
    /// CPU for latency).
    pub spin: Duration,
}

impl Default for SpinThenSleep {
    fn default() -> Self {
        SpinThenSleep {
            spin: Duration::from_micros(50),
        }
    }
}

impl SpinThenSleep {
    /// Waits until `what` is ready or `timeout` passes (`None`: forever), sleeping
    /// on `vector` of `device` once the spin budget is spent. Returns whether it
    /// became ready. On a transport without a doorbell it keeps polling with short
    /// sleeps.
    pub fn wait<W: Waitable>(
        &self,
        what: &mut W,
        device: &dyn crate::Device,
        vector: ivlink_core::Vector,
        timeout: Option<Duration>,
    ) -> Result<bool, WaitError<W::Error>> {
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        let mut spins = 0u32;
        loop {
            if what.ready().map_err(WaitError::Protocol)? {
                return Ok(true);
            }
            spins = spins.wrapping_add(1);
            // Read the clock only now and then: it costs more than a check. A zero
            // budget sleeps after the first check.
            if spins % CHECKS_PER_CLOCK != 0 && !self.spin.is_zero() {
                core::hint::spin_loop();
                continue;
            }
            if spins >= YIELD_AFTER {
                // Past the first stretch the other side is probably not running at
                // all (more runnable threads than CPUs): hand it the CPU rather than
                // spin the whole budget away. Cheap when nothing else is runnable.
                yield_cpu();
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            if now.duration_since(started) >= self.spin {
                break;
            }
        }
        loop {
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return what.ready().map_err(WaitError::Protocol);
                    }
                    Some(left)
                }
                None => None,
            };
            if !device.has_doorbell() {
                // Not a plain sleep: a vanished server still ends the wait.
                device.wait(
                    crate::WaitFor::NOTHING,
                    Some(left.unwrap_or(POLL_TICK).min(POLL_TICK)),
                )?;
                if what.ready().map_err(WaitError::Protocol)? {
                    return Ok(true);
                }
                continue;
            }
            if !what.arm().map_err(WaitError::Protocol)? {
                return Ok(true);
            }
            let woke = device.wait(crate::WaitFor::vector(vector), left);
            what.disarm().map_err(WaitError::Protocol)?;
            woke?;
            if what.ready().map_err(WaitError::Protocol)? {
                return Ok(true);
            }
        }
    }
}

/// Checks between clock reads while spinning.
const CHECKS_PER_CLOCK: u32 = 64;

/// Checks spent purely spinning before each clock read also yields the CPU: a wait
/// that ends within a few hundred nanoseconds costs no system call.
const YIELD_AFTER: u32 = 2 * CHECKS_PER_CLOCK;

/// Gives the CPU to another runnable thread, if any (`sched_yield`).
fn yield_cpu() {
    #[cfg(test)]
    tests::YIELDS.with(|y| y.set(y.get() + 1));
    std::thread::yield_now();
}

/// How often a transport without a doorbell looks again.
const POLL_TICK: Duration = Duration::from_micros(200);

/// Waiting for data in a ring.
pub struct DataIn<'a, 'r, R: ivlink_core::Region + ?Sized>(
    pub &'a mut ivlink_core::ring::Consumer<'r, R>,
);

impl<R: ivlink_core::Region + ?Sized> Waitable for DataIn<'_, '_, R> {
    type Error = ivlink_core::ring::RingError;

    fn ready(&mut self) -> Result<bool, Self::Error> {
        self.0.has_data()
    }

    fn arm(&mut self) -> Result<bool, Self::Error> {
        self.0.prepare_sleep()
    }

    fn disarm(&mut self) -> Result<(), Self::Error> {
        self.0.finish_sleep()
    }
}

/// Waiting for room for a message of `.1` bytes in a ring.
pub struct SpaceIn<'a, 'r, R: ivlink_core::Region + ?Sized>(
    pub &'a mut ivlink_core::ring::Producer<'r, R>,
    pub usize,
);

impl<R: ivlink_core::Region + ?Sized> Waitable for SpaceIn<'_, '_, R> {
    type Error = ivlink_core::ring::RingError;

    fn ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.0.free()? >= ivlink_core::ring::record_size(self.1))
    }

    fn arm(&mut self) -> Result<bool, Self::Error> {
        self.0.prepare_sleep(self.1)
    }

    fn disarm(&mut self) -> Result<(), Self::Error> {
        self.0.finish_sleep()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// CPU yields of this thread's spinning waits.
        pub(super) static YIELDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Ready on check `.0`; counts checks in `.1`.
    struct ReadyOn(u32, u32);

    impl Waitable for ReadyOn {
        type Error = ();
        fn ready(&mut self) -> Result<bool, ()> {
            self.1 += 1;
            Ok(self.1 >= self.0)
        }
        fn arm(&mut self) -> Result<bool, ()> {
            Ok(true)
        }
        fn disarm(&mut self) -> Result<(), ()> {
            Ok(())
        }
    }

    #[test]
    fn a_long_spin_yields_the_cpu_now_and_then_a_short_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let device = crate::FilePeer::create(&dir.path().join("region"), 4096, 0).unwrap();
        // A budget no check count below reaches: the wait ends by readiness alone.
        let policy = SpinThenSleep {
            spin: Duration::from_secs(3600),
        };
        let yields = |checks: u32| {
            YIELDS.with(|y| y.set(0));
            let mut what = ReadyOn(checks, 0);
            assert!(policy.wait(&mut what, &device, 0, None).unwrap());
            assert_eq!(what.1, checks);
            YIELDS.with(|y| y.get())
        };
        assert_eq!(yields(1), 0, "ready at once");
        assert_eq!(yields(YIELD_AFTER), 0, "a short spin pays no system call");
        // Spinning 64 000 checks while the other side cannot run (oversubscribed)
        // would burn the CPU it needs: yield at every clock read past the first
        // stretch.
        let checks = 1000 * CHECKS_PER_CLOCK;
        let expected = u64::from((checks - 1) / CHECKS_PER_CLOCK - 1);
        assert_eq!(yields(checks), expected);
    }

    /// Ready on its third check.
    struct ThirdTime(u32);

    impl Waitable for ThirdTime {
        type Error = ();
        fn ready(&mut self) -> Result<bool, ()> {
            self.0 += 1;
            Ok(self.0 >= 3)
        }
        fn arm(&mut self) -> Result<bool, ()> {
            Ok(true)
        }
        fn disarm(&mut self) -> Result<(), ()> {
            Ok(())
        }
    }

    #[test]
    fn a_zero_spin_budget_sleeps_after_the_first_check() {
        let dir = tempfile::tempdir().unwrap();
        let device = crate::FilePeer::create(&dir.path().join("region"), 4096, 0).unwrap();
        let started = Instant::now();
        let mut what = ThirdTime(0);
        let policy = SpinThenSleep {
            spin: Duration::ZERO,
        };
        assert!(policy.wait(&mut what, &device, 0, None).unwrap());
        // Without a doorbell, sleeping is polling in ticks: two ticks went by.
        assert!(
            started.elapsed() >= 2 * POLL_TICK,
            "{:?}",
            started.elapsed()
        );
    }
}
