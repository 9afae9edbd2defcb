//! Busy waiting with a way out: a pause per turn (or a yield when both sides
//! share one CPU), and an error once nothing has happened for too long.

use std::time::{Duration, Instant};

use super::BenchError;

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
    /// Gives up after `timeout` without progress; yields the CPU each turn when
    /// `yield_cpu`.
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
    pub fn pause(&mut self, what: &'static str) -> Result<(), BenchError> {
        if self.yield_cpu {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
        self.turns = self.turns.wrapping_add(1);
        if self.turns % CHECK_EVERY == 0 {
            let now = Instant::now();
            match self.since {
                None => self.since = Some(now),
                Some(since) if now.duration_since(since) > self.timeout => {
                    return Err(BenchError::Stalled(what));
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
        let err = loop {
            if let Err(e) = spinner.pause("nothing") {
                break e;
            }
        };
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(matches!(err, BenchError::Stalled("nothing")));
        spinner.progress();
        assert!(spinner.pause("again").is_ok());
    }
}
