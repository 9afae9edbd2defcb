//! Waiting for a port's events (doorbell, message, link) from any number of
//! threads at once.
//!
//! The region keeps one pending-events word per port; whoever takes it clears
//! it. So that several waiters of one process (ntb_tool's blocking
//! `db_event`, `msg_event` and `link_event` files) all see every event, the
//! events taken are recorded here with a generation, and each waiter keeps the
//! generation it has seen ([`EventCount`]). One waiter at a time sleeps on the
//! doorbell (the pump); the others sleep on a condition variable it signals.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ivlink_core::ntb::Events;

/// Where a waiter has got to in a port's events: events recorded after it are
/// news to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCount(pub(super) u64);

/// Each event kind, by its bit.
const KINDS: [Events; 3] = [Events::DB, Events::MSG, Events::LINK];

#[derive(Debug, Default)]
struct Log {
    generation: u64,
    /// The generation each kind was last recorded at.
    raised_at: [u64; KINDS.len()],
    /// A waiter is sleeping on the doorbell.
    pumping: bool,
    /// Waiters sleeping on the condition variable: with none, nobody is
    /// signalled (a signal costs a system call even when no one listens).
    sleepers: usize,
}

impl Log {
    fn record(&mut self, events: Events) {
        if events.is_empty() {
            return;
        }
        self.generation += 1;
        for (at, kind) in self.raised_at.iter_mut().zip(KINDS) {
            if events.contains(kind) {
                *at = self.generation;
            }
        }
    }

    fn since(&self, seen: EventCount) -> Events {
        self.raised_at
            .iter()
            .zip(KINDS)
            .filter(|&(&at, _)| at > seen.0)
            .fold(Events(0), |all, (_, kind)| all.union(kind))
    }
}

/// The events of one port as this process has taken them.
#[derive(Debug, Default)]
pub(super) struct EventLog {
    log: Mutex<Log>,
    changed: Condvar,
}

/// What a waiter is to do next.
pub(super) enum Turn {
    /// Return these events.
    News(Events),
    /// The timeout passed.
    TimedOut,
    /// Sleep on the doorbell until the deadline, then [`EventLog::end_pump`].
    Pump,
}

impl EventLog {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Now, as a waiter's starting point.
    pub(super) fn now(&self) -> EventCount {
        EventCount(self.lock().generation)
    }

    /// Records `events` taken from the region and wakes every waiter.
    pub(super) fn record(&self, events: Events) {
        if !events.is_empty() {
            let mut log = self.lock();
            log.record(events);
            self.wake_sleepers(log);
        }
    }

    /// Signals the waiters on the condition variable, if there are any. They
    /// count themselves in under the lock before they sleep, so none is missed.
    fn wake_sleepers(&self, log: MutexGuard<'_, Log>) {
        let sleepers = log.sleepers;
        drop(log);
        if sleepers > 0 {
            self.changed.notify_all();
        }
    }

    /// Decides a waiter's next step: news since `seen` (advancing it), the
    /// deadline passed, or its turn to pump; otherwise sleeps on the condition
    /// until another waiter's pump brings something or ends.
    pub(super) fn turn(&self, seen: &mut EventCount, deadline: Option<Instant>) -> Turn {
        let mut log = self.lock();
        loop {
            let news = log.since(*seen);
            if !news.is_empty() {
                seen.0 = log.generation;
                return Turn::News(news);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Turn::TimedOut;
            }
            if !log.pumping {
                log.pumping = true;
                return Turn::Pump;
            }
            // Bounded even without a deadline: a pump that ends without news
            // hands over the doorbell through the same signal.
            let slice = left.unwrap_or(IDLE_CHECK).min(IDLE_CHECK);
            log.sleepers += 1;
            log = self
                .changed
                .wait_timeout(log, slice)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            log.sleepers -= 1;
        }
    }

    /// The pumping waiter is done sleeping on the doorbell.
    pub(super) fn end_pump(&self) {
        let mut log = self.lock();
        log.pumping = false;
        self.wake_sleepers(log);
    }
}

/// How long a waiter behind the pump sleeps before it looks again.
const IDLE_CHECK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_waiter_sees_each_kind_recorded_after_it_looked() {
        let log = EventLog::default();
        let mut early = log.now();
        log.record(Events::DB);
        let mut late = log.now();
        log.record(Events::LINK);
        assert!(matches!(
            log.turn(&mut early, None),
            Turn::News(e) if e == Events::DB.union(Events::LINK)
        ));
        assert!(matches!(
            log.turn(&mut late, None),
            Turn::News(Events::LINK)
        ));
        assert!(matches!(
            log.turn(&mut late, Some(Instant::now())),
            Turn::TimedOut
        ));
    }

    #[test]
    fn one_waiter_pumps_and_the_next_waits_for_it() {
        let log = EventLog::default();
        let mut a = log.now();
        let mut b = log.now();
        assert!(matches!(log.turn(&mut a, None), Turn::Pump));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| log.turn(&mut b, None));
            std::thread::sleep(Duration::from_millis(20));
            log.record(Events::MSG);
            log.end_pump();
            assert!(matches!(waiter.join().unwrap(), Turn::News(Events::MSG)));
        });
        assert!(matches!(log.turn(&mut a, None), Turn::News(Events::MSG)));
        assert!(matches!(log.turn(&mut a, None), Turn::Pump));
    }

    /// Only sleepers are signalled: the count must let none sleep through an
    /// event until its idle check.
    #[test]
    fn a_sleeping_waiter_wakes_at_once_for_news_and_for_the_pump_ending() {
        let log = EventLog::default();
        let mut pump = log.now();
        assert!(matches!(log.turn(&mut pump, None), Turn::Pump));
        let behind = log.now();
        let sleeping = || {
            while log.lock().sleepers == 0 {
                std::thread::yield_now();
            }
        };
        let wait = |mut seen: EventCount| {
            let started = Instant::now();
            let turn = log.turn(&mut seen, None);
            (turn, seen, started.elapsed())
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(move || wait(behind));
            sleeping();
            log.record(Events::DB);
            let (turn, seen, took) = waiter.join().unwrap();
            assert!(matches!(turn, Turn::News(Events::DB)));
            assert!(took < IDLE_CHECK / 2, "woken after {took:?}");

            let waiter = s.spawn(move || wait(seen));
            sleeping();
            log.end_pump();
            let (turn, _, took) = waiter.join().unwrap();
            assert!(matches!(turn, Turn::Pump), "the pump is handed over");
            assert!(took < IDLE_CHECK / 2, "woken after {took:?}");
        });
        assert_eq!(log.lock().sleepers, 0);
    }
}
