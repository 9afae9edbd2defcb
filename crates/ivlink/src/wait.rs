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
/// (tens of microseconds between vCPUs). A spin that outlasts a few microseconds
/// yields the CPU now and then, so that with more runnable threads than CPUs the
/// waiter does not spin away the time the other side needs to make progress.
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
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let spun = now.duration_since(started);
            if spun >= self.spin {
                break;
            }
            if spins >= YIELD_AFTER_CHECKS && spun >= YIELD_AFTER {
                // This long without the condition, the other side is probably not
                // running at all (more runnable threads than CPUs): hand it the CPU
                // rather than spin the whole budget away. Cheap when nothing else
                // is runnable; a short wait (a round trip) never gets here.
                yield_cpu();
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

/// A spinning wait yields the CPU at each clock read once it has made this many
/// checks and spun [`YIELD_AFTER`]: a wait that ends sooner costs no system call.
const YIELD_AFTER_CHECKS: u32 = 2 * CHECKS_PER_CLOCK;

/// Spinning this long without the condition, a wait starts yielding the CPU.
const YIELD_AFTER: Duration = Duration::from_micros(5);

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

    /// Ready on check `.0`, or once `.1` has passed since the first check;
    /// counts checks in `.2`.
    struct ReadyOn(u32, Duration, u32, Option<Instant>);

    impl Waitable for ReadyOn {
        type Error = ();
        fn ready(&mut self) -> Result<bool, ()> {
            self.2 += 1;
            let first = *self.3.get_or_insert_with(Instant::now);
            Ok(self.2 >= self.0 || first.elapsed() >= self.1)
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
        // A budget no wait below reaches: each ends by readiness alone.
        let policy = SpinThenSleep {
            spin: Duration::from_secs(3600),
        };
        let yields = |checks: u32, time: Duration| {
            YIELDS.with(|y| y.set(0));
            let mut what = ReadyOn(checks, time, 0, None);
            assert!(policy.wait(&mut what, &device, 0, None).unwrap());
            (YIELDS.with(|y| y.get()), what.2)
        };
        let forever = Duration::from_secs(3600);
        assert_eq!(yields(1, forever), (0, 1), "ready at once");
        assert_eq!(
            yields(YIELD_AFTER_CHECKS, forever),
            (0, YIELD_AFTER_CHECKS),
            "a short spin pays no system call, however slow the checks"
        );
        // Spinning 2 ms while the other side cannot run (oversubscribed) would
        // burn the CPU it needs: past 5 µs, yield at every clock read.
        let (yielded, checks) = yields(u32::MAX, 400 * YIELD_AFTER);
        let clock_reads = u64::from(checks / CHECKS_PER_CLOCK);
        assert!(yielded >= 1, "{checks} checks, no yield");
        assert!(
            yielded < clock_reads,
            "{yielded} yields, {clock_reads} clock reads"
        );
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
