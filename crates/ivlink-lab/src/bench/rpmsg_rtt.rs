//! Round trips per second and latency percentiles of an RPMsg link, measured
//! from the host side against a running echo (`ivlink rpmsg bench`), and the
//! reference it is compared with in the same run: a plain ring ping-pong of the
//! same payload ([`measure_ring`]).

use std::time::{Duration, Instant};

use ivlink::rpmsg::{HostSession, LinkEvent, Outcome, RpmsgLinkError};
use thiserror::Error;

use super::BenchError;
use super::histogram::{Histogram, Percentiles};
use super::memring::{self, MemConsumer, MemProducer, MemRing};
use super::report::{Target, format_ns};
use super::spin::Spinner;

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
    /// The reference ring ping-pong failed.
    #[error("reference ring: {0}")]
    Reference(#[from] BenchError),
}

/// The round trips of one measurement, before they are summed up.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Seconds the measured round trips took.
    pub seconds: f64,
    /// Each measured round trip, in nanoseconds.
    pub latency_ns: Vec<u64>,
}

impl Samples {
    /// Adds `other`'s round trips (another round of the same measurement).
    pub fn append(&mut self, mut other: Samples) {
        self.seconds += other.seconds;
        self.latency_ns.append(&mut other.latency_ns);
    }

    /// The rate and the percentiles.
    pub fn result(self) -> Result<RttResult, RttError> {
        let count = self.latency_ns.len() as f64;
        let latency_ns = Histogram::new(self.latency_ns)
            .percentiles()
            .ok_or(RttError::NoRoundTrips)?;
        Ok(RttResult {
            seconds: self.seconds,
            round_trips_per_second: count / self.seconds,
            latency_ns,
        })
    }
}

/// Measures RPMsg (`rpmsg`, called once per round with that round's plan) and
/// the reference ring ping-pong in `rounds` alternating rounds that share
/// `plan.count` between them, each round warming up first: a slow phase of a
/// shared machine then weighs on both lines alike. The figures pool the rounds.
pub fn compare(
    plan: &RttPlan,
    rounds: u64,
    echo_cpu: Option<usize>,
    mut rpmsg: impl FnMut(&RttPlan) -> Result<Samples, RttError>,
) -> Result<Comparison, RttError> {
    if plan.count == 0 {
        return Err(RttError::NoRoundTrips);
    }
    let rounds = rounds.clamp(1, plan.count);
    let (mut on_rpmsg, mut on_ring) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        let count = plan.count / rounds + u64::from(round < plan.count % rounds);
        let plan = RttPlan { count, ..*plan };
        on_rpmsg.append(rpmsg(&plan)?);
        on_ring.append(measure_ring(&plan, echo_cpu)?);
    }
    Ok(Comparison {
        rpmsg: on_rpmsg.result()?,
        ring: on_ring.result()?,
    })
}

/// Runs `plan` on a bound session; events other than echoes go to `on_event`.
pub fn measure(
    session: &mut HostSession<'_>,
    plan: &RttPlan,
    on_event: &mut dyn FnMut(&LinkEvent),
) -> Result<Samples, RttError> {
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
    timed(plan, || {
        match session.round_trip(&data, plan.timeout, on_event)? {
            Outcome::Echoed => Ok(()),
            Outcome::Mismatch => Err(RttError::Mismatch),
            Outcome::Lost => Err(RttError::Reset),
            Outcome::TimedOut => Err(RttError::TimedOut),
        }
    })
}

/// Runs `plan.warmup + plan.count` round trips of `round_trip`, timing each one
/// after the warm-up.
fn timed(
    plan: &RttPlan,
    mut round_trip: impl FnMut() -> Result<(), RttError>,
) -> Result<Samples, RttError> {
    let mut samples = Vec::with_capacity(plan.count as usize);
    let mut measuring_since = Instant::now();
    for i in 0..plan.warmup + plan.count {
        if i == plan.warmup {
            measuring_since = Instant::now();
        }
        let t0 = Instant::now();
        round_trip()?;
        if i >= plan.warmup {
            samples.push(t0.elapsed().as_nanos() as u64);
        }
    }
    Ok(Samples {
        seconds: measuring_since.elapsed().as_secs_f64(),
        latency_ns: samples,
    })
}

/// How the reference ring ping-pong runs, in words (for the report).
pub const REFERENCE_HOW: &str = "plain memcpy ring ping-pong: two rings in one memfd, one each way, \
     an echo thread, both sides busy-polling, the same payload";

/// The reference line: a plain ring ping-pong of `plan.size` bytes between this
/// thread and an echo thread (pinned to `echo_cpu` if given), both busy-polling:
/// what one round trip costs without RPMsg, measured in the same run.
pub fn measure_ring(plan: &RttPlan, echo_cpu: Option<usize>) -> Result<Samples, RttError> {
    if plan.count == 0 {
        return Err(RttError::NoRoundTrips);
    }
    let capacity = ((memring::RECORD_HEADER + plan.size) * 8)
        .next_power_of_two()
        .max(4096);
    let (ring, _fd) = MemRing::create(capacity, 2)?;
    let total = plan.warmup + plan.count;
    let yield_cpu = super::placement::allowed_cpus()?.len() < 2 && echo_cpu.is_none();
    let timeout = plan.timeout;
    let ring = &ring;
    std::thread::scope(|scope| {
        let echo = scope.spawn(move || -> Result<(), RttError> {
            if let Some(cpu) = echo_cpu {
                super::placement::pin(cpu)?;
            }
            ring_echo(
                ring,
                total,
                plan.size,
                &mut Spinner::new(yield_cpu, timeout),
            )
        });
        let measured = ring_ping(ring, plan, &mut Spinner::new(yield_cpu, timeout));
        let echoed = echo
            .join()
            .unwrap_or(Err(RttError::Reference(BenchError::Peer(
                "the reference ring's echo thread panicked".into(),
            ))));
        // The measuring side's error says more (the echo only stalls after it).
        let result = measured?;
        echoed?;
        Ok(result)
    })
}

/// The echo thread: sends every message of ring 0 back on ring 1.
fn ring_echo(
    ring: &MemRing,
    total: u64,
    size: usize,
    spinner: &mut Spinner,
) -> Result<(), RttError> {
    let (mut rx, mut tx) = (ring.consumer(0), ring.producer(1));
    let mut buf = vec![0u8; size];
    for _ in 0..total {
        let len = take(&mut rx, &mut buf, spinner, "the reference ring's ping")?;
        put(&mut tx, &buf[..len.min(size)], spinner)?;
    }
    Ok(())
}

/// Sends and publishes one message, spinning while the ring is full.
fn put(tx: &mut MemProducer<'_>, message: &[u8], spinner: &mut Spinner) -> Result<(), RttError> {
    while !tx.try_send(message) {
        spinner.pause("space in the reference ring")?;
    }
    tx.publish();
    Ok(())
}

/// Receives and releases one message into `buf`, spinning while there is none
/// (`what` names it in a stall); its length.
fn take(
    rx: &mut MemConsumer<'_>,
    buf: &mut [u8],
    spinner: &mut Spinner,
    what: &'static str,
) -> Result<usize, RttError> {
    let len = loop {
        if let Some(len) = rx.try_recv(buf) {
            break len;
        }
        spinner.pause(what)?;
    };
    rx.release();
    spinner.progress();
    Ok(len)
}

/// The measuring side: `plan.warmup + plan.count` round trips, each checked.
fn ring_ping(ring: &MemRing, plan: &RttPlan, spinner: &mut Spinner) -> Result<Samples, RttError> {
    let (mut tx, mut rx) = (ring.producer(0), ring.consumer(1));
    let data: Vec<u8> = (0..plan.size).map(|i| i as u8).collect();
    let mut back = vec![0u8; plan.size];
    timed(plan, || {
        put(&mut tx, &data, spinner)?;
        let len = take(&mut rx, &mut back, spinner, "the reference ring's echo")?;
        if len != data.len() || back != data {
            return Err(RttError::Mismatch);
        }
        Ok(())
    })
}

/// The RPMsg round trip over the reference ring's, in the same run.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// The RPMsg link's figures.
    pub rpmsg: RttResult,
    /// The plain ring ping-pong's figures.
    pub ring: RttResult,
}

/// The target: an RPMsg round trip at most this many times the ring's (median).
pub const TARGET_RATIO: f64 = 1.5;

impl Comparison {
    /// RPMsg's over the ring's: `(metric, value)` for the median, the 99th
    /// percentile and the time per round trip (the inverse of the rates).
    pub fn ratios(&self) -> [(&'static str, f64); 3] {
        let (r, g) = (&self.rpmsg, &self.ring);
        [
            (
                "round-trip latency p50",
                r.latency_ns.p50 / g.latency_ns.p50,
            ),
            (
                "round-trip latency p99",
                r.latency_ns.p99 / g.latency_ns.p99,
            ),
            (
                "time per round trip (1 / rate)",
                g.round_trips_per_second / r.round_trips_per_second,
            ),
        ]
    }

    /// The target with what was measured (reported, never asserted).
    pub fn target(&self) -> Target {
        let ratio = self.ratios()[0].1;
        let measured = ratio.is_finite().then_some(ratio);
        Target {
            name: "rpmsg-vs-ring",
            goal: "RPMsg round trip within 1.5x of a plain ring ping-pong (median)",
            measured,
            shown: measured.map_or("not measured".into(), |v| {
                format!(
                    "{v:.2}x ({} vs {})",
                    format_ns(self.rpmsg.latency_ns.p50),
                    format_ns(self.ring.latency_ns.p50)
                )
            }),
            met: measured.is_some_and(|v| v <= TARGET_RATIO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(size: usize) -> RttPlan {
        RttPlan {
            size,
            warmup: 10,
            count: 200,
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_reference_ring_measures_every_round_trip() {
        for size in [1, 64, 496, 4000] {
            let result = measure_ring(&plan(size), None).unwrap().result().unwrap();
            assert_eq!(result.latency_ns.count, 200, "size {size}");
            assert!(result.round_trips_per_second > 0.0);
            assert!(result.latency_ns.min <= result.latency_ns.p50);
        }
    }

    #[test]
    fn the_reference_ring_refuses_nothing_to_measure() {
        let nothing = RttPlan {
            count: 0,
            ..plan(64)
        };
        assert!(matches!(
            measure_ring(&nothing, None),
            Err(RttError::NoRoundTrips)
        ));
    }

    #[test]
    fn rounds_alternate_and_share_the_count() {
        let mut calls = Vec::new();
        let compared = compare(&plan(64), 3, None, |round| {
            calls.push(round.count);
            measure_ring(round, None)
        })
        .unwrap();
        assert_eq!(calls, [67, 67, 66]);
        assert_eq!(compared.rpmsg.latency_ns.count, 200);
        assert_eq!(compared.ring.latency_ns.count, 200);
        let many = compare(
            &RttPlan {
                count: 2,
                ..plan(8)
            },
            10,
            None,
            |round| measure_ring(round, None),
        )
        .unwrap();
        assert_eq!(
            many.ring.latency_ns.count, 2,
            "no round without round trips"
        );
        let failed = compare(&plan(64), 2, None, |_| Err(RttError::Mismatch));
        assert!(matches!(failed, Err(RttError::Mismatch)));
    }

    fn result(p50: f64, rate: f64) -> RttResult {
        let p = Histogram::new(vec![p50 as u64]).percentiles().unwrap();
        RttResult {
            seconds: 1.0,
            round_trips_per_second: rate,
            latency_ns: Percentiles {
                p50,
                p99: 2.0 * p50,
                ..p
            },
        }
    }

    #[test]
    fn the_target_compares_medians_and_says_whether_it_is_met() {
        let slow = Comparison {
            rpmsg: result(3000.0, 300_000.0),
            ring: result(1000.0, 1_000_000.0),
        };
        let ratios = slow.ratios();
        assert_eq!(ratios[0], ("round-trip latency p50", 3.0));
        assert_eq!(ratios[1].1, 3.0);
        assert!((ratios[2].1 - 1_000_000.0 / 300_000.0).abs() < 1e-9);
        let target = slow.target();
        assert_eq!(target.measured, Some(3.0));
        assert!(!target.met);
        assert!(target.shown.starts_with("3.00x"), "{}", target.shown);
        let close = Comparison {
            rpmsg: result(1400.0, 700_000.0),
            ring: result(1000.0, 1_000_000.0),
        };
        assert!(close.target().met);
    }
}
