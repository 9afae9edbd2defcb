//! Busy waiting with a way out: a pause per turn (a yield when both sides
//! share one CPU), and an error once nothing has happened for too long.

use std::time::{Duration, Instant};

use anyhow::bail;

/// Turns between clock reads.
const CHECK_EVERY: u32 = 4096;

/// One side's busy-wait state.
#[derive(Debug, Clone)]
pub struct Spinner {
    yield_cpu: bool,
    turns: u32,
    since: Option<Instant>,
    timeout: Duration,
}

impl Spinner {
    /// Gives up after `timeout` without progress; yields the CPU each turn
    /// when `yield_cpu`.
    pub fn new(yield_cpu: bool, timeout: Duration) -> Spinner {
        Spinner {
            yield_cpu,
            turns: 0,
            since: None,
            timeout,
        }
    }

    /// How long it waits without progress.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One turn of waiting for `what`.
    #[inline]
    pub fn pause(&mut self, what: &str) -> anyhow::Result<()> {
        if self.yield_cpu {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
        self.turns = self.turns.wrapping_add(1);
        if self.turns.is_multiple_of(CHECK_EVERY) {
            let now = Instant::now();
            match self.since {
                None => self.since = Some(now),
                Some(since) if now.duration_since(since) > self.timeout => {
                    bail!("timed out after {:?} waiting for {what}", self.timeout)
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Something happened: the stall clock starts over.
    #[inline]
    pub fn progress(&mut self) {
        self.turns = 0;
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_only_after_the_timeout_without_progress() {
        let mut spinner = Spinner::new(false, Duration::from_millis(20));
        let started = Instant::now();
        while spinner.pause("nothing").is_ok() {}
        assert!(started.elapsed() >= Duration::from_millis(20));
        spinner.progress();
        assert!(spinner.pause("again").is_ok());
    }
}
