//! `--latency`: how long a doorbell takes from `peer_db_set` on one port to
//! the wake of the other's event wait, as half a ping-pong round trip (the
//! serving peer echoes every ring), against a bare eventfd ping-pong between
//! two threads of this process measured in the same run.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ivlink::ntb::Ntb;
use rustix::event::{EventfdFlags, eventfd};

/// Round trips before the timed ones.
const WARMUP: usize = 20;
/// How long one round trip may take before the run is given up.
const ROUND_LIMIT: Duration = Duration::from_secs(2);

/// Percentiles of one-way times.
#[derive(Debug, Clone, Copy)]
pub struct OneWay {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
}

impl OneWay {
    /// From round trips, halved.
    pub fn from_round_trips(mut trips: Vec<Duration>) -> Option<OneWay> {
        if trips.is_empty() {
            return None;
        }
        trips.sort_unstable();
        let at = |q: f64| trips[((trips.len() - 1) as f64 * q).round() as usize] / 2;
        Some(OneWay {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        })
    }

    /// As JSON, in nanoseconds.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "p50_ns": self.p50.as_nanos() as u64,
            "p90_ns": self.p90.as_nanos() as u64,
            "p99_ns": self.p99.as_nanos() as u64,
            "max_ns": self.max.as_nanos() as u64,
        })
    }
}

/// `rounds` doorbell round trips to the port `peer_port`, which echoes them
/// (it was sent `PERF_CMD_ECHO`).
pub fn doorbell_round_trips(
    ntb: &Ntb<'_>,
    peer_port: u32,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let in_db = 1u64 << ntb.port_number();
    let out_db = 1u64 << peer_port;
    ntb.db_clear(in_db)?;
    ntb.db_clear_mask(in_db)?;
    let mut trips = Vec::with_capacity(rounds);
    for round in 0..WARMUP + rounds {
        let began = Instant::now();
        ntb.peer_db_set(out_db)?;
        let rung = ntb.wait_until(Some(ROUND_LIMIT), |ntb| {
            Ok((ntb.db_read()? & in_db != 0).then_some(()))
        })?;
        let trip = began.elapsed();
        if rung.is_none() {
            anyhow::bail!("port {peer_port} did not answer a doorbell within {ROUND_LIMIT:?}");
        }
        ntb.db_clear(in_db)?;
        if round >= WARMUP {
            trips.push(trip);
        }
    }
    ntb.db_set_mask(in_db)?;
    Ok(trips)
}

/// `rounds` round trips over two eventfds between two threads, blocking reads.
pub fn eventfd_round_trips(rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let to_echo = eventfd(0, EventfdFlags::empty())?;
    let to_us = eventfd(0, EventfdFlags::empty())?;
    let total = WARMUP + rounds;
    std::thread::scope(|scope| {
        let echo = scope.spawn(|| -> rustix::io::Result<()> {
            for _ in 0..total {
                take(&to_echo)?;
                give(&to_us)?;
            }
            Ok(())
        });
        let mut trips = Vec::with_capacity(rounds);
        for round in 0..total {
            let began = Instant::now();
            give(&to_echo)?;
            take(&to_us)?;
            if round >= WARMUP {
                trips.push(began.elapsed());
            }
        }
        echo.join()
            .map_err(|_| anyhow::anyhow!("the eventfd echo thread panicked"))??;
        Ok(trips)
    })
}

fn give(fd: &OwnedFd) -> rustix::io::Result<()> {
    rustix::io::write(fd, &1u64.to_ne_bytes()).map(drop)
}

fn take(fd: &OwnedFd) -> rustix::io::Result<()> {
    let mut value = [0u8; 8];
    rustix::io::read(fd, &mut value).map(drop)
}
