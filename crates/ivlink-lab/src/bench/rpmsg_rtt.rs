//! Round trips per second and latency percentiles of an RPMsg link, measured
//! from the host side against a running echo (`ivlink rpmsg bench`).

use std::time::{Duration, Instant};

use ivlink::rpmsg::{HostSession, LinkEvent, Outcome, RpmsgLinkError};
use thiserror::Error;

use super::histogram::{Histogram, Percentiles};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct RttPlan {
    /// Payload bytes per message.
    pub size: usize,
    /// Round trips before measuring.
    pub warmup: u64,
    /// Round trips measured (at least 1).
    pub count: u64,
    /// How long to wait for each echo.
    pub timeout: Duration,
}

/// What was measured.
#[derive(Debug, Clone, Copy)]
pub struct RttResult {
    /// Seconds the measured round trips took.
    pub seconds: f64,
    /// Measured round trips per second.
    pub round_trips_per_second: f64,
    /// Per-round-trip latency in nanoseconds.
    pub latency_ns: Percentiles,
}

/// Why a measurement stopped.
#[derive(Debug, Error)]
pub enum RttError {
    /// The payload does not fit one message.
    #[error("--size {size} exceeds the {max}-byte payload of one message")]
    TooLarge {
        /// Bytes asked for.
        size: usize,
        /// Bytes one message carries.
        max: usize,
    },
    /// Nothing to measure.
    #[error("--count must be at least 1")]
    NoRoundTrips,
    /// The link or the transport.
    #[error(transparent)]
    Link(#[from] RpmsgLinkError),
    /// An echo came back different.
    #[error("an echo differs from what was sent")]
    Mismatch,
    /// A reset lost a message.
    #[error("the link was reset during the benchmark")]
    Reset,
    /// An echo did not come back in time.
    #[error("Remote side response timed out!")]
    TimedOut,
}

/// Runs `plan` on a bound session; events other than echoes go to `on_event`.
pub fn measure(
    session: &mut HostSession<'_>,
    plan: &RttPlan,
    on_event: &mut dyn FnMut(&LinkEvent),
) -> Result<RttResult, RttError> {
    if plan.size > session.max_payload() {
        return Err(RttError::TooLarge {
            size: plan.size,
            max: session.max_payload(),
        });
    }
    if plan.count == 0 {
        return Err(RttError::NoRoundTrips);
    }
    let data: Vec<u8> = (0..plan.size).map(|i| i as u8).collect();
    let mut samples = Vec::with_capacity(plan.count as usize);
    let mut measuring_since = Instant::now();
    for i in 0..plan.warmup + plan.count {
        if i == plan.warmup {
            measuring_since = Instant::now();
        }
        let t0 = Instant::now();
        match session.round_trip(&data, plan.timeout, on_event)? {
            Outcome::Echoed => {}
            Outcome::Mismatch => return Err(RttError::Mismatch),
            Outcome::Lost => return Err(RttError::Reset),
            Outcome::TimedOut => return Err(RttError::TimedOut),
        }
        if i >= plan.warmup {
            samples.push(t0.elapsed().as_nanos() as u64);
        }
    }
    let seconds = measuring_since.elapsed().as_secs_f64();
    let latency_ns = Histogram::new(samples)
        .percentiles()
        .ok_or(RttError::NoRoundTrips)?;
    Ok(RttResult {
        seconds,
        round_trips_per_second: plan.count as f64 / seconds,
        latency_ns,
    })
}
