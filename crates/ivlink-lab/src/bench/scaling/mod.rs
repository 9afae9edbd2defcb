//! Scaling figures: how cost grows with peers.
//!
//! - `pairs`: `N` independent sender/receiver pairs at once, each on its own
//!   ring, for ivlink and the plain memcpy ring in the same run; aggregate and
//!   per-pair rates and the efficiency against `N` single pairs.
//! - `connect`: the ivshmem server's connect cost as peers grow.
//!
//! The stress run's series over peer counts lives with the stress run
//! (`crate::stress::series`).

pub mod connect;
pub mod pairs;
pub mod report;

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchConfig, BenchError, placement};
use crate::progress::Progress;
pub use connect::{ConnectRow, expected_fd_messages};
pub use pairs::{PairRun, PairsRun};

/// Most pairs at once (two threads each).
pub const MAX_PAIRS: usize = 256;
/// Most peers for the connect cost (the protocol's ids).
pub const MAX_SERVER_PEERS: usize = 65536;
/// Message sizes of a pairs run unless told otherwise.
pub const PAIR_SIZES: [usize; 2] = [64, 4 << 10];

/// What a pairs run measures.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingConfig {
    /// Pair counts, ascending, without repeats; 1 is always among them (the
    /// single-pair reference of the efficiency).
    pub pairs: Vec<usize>,
    /// Message sizes in bytes.
    pub sizes: Vec<usize>,
    /// Data area of every ring, bytes (a power of two).
    pub ring: usize,
    /// Messages per publication and per release.
    pub batch: usize,
    /// How long every run streams.
    pub time: Duration,
    /// Most bytes per pair and run.
    pub stream_bytes: u64,
    /// Runs of every measurement, interleaved; the median is reported.
    pub rounds: usize,
    /// Pin each thread to a CPU, round robin (each pair across two CPUs).
    pub pin: bool,
    /// How long either end may wait for the other before the run fails.
    pub timeout: Duration,
}

impl ScalingConfig {
    /// The pairs run for `pairs` with the bench's ring, batch, timing and pinning;
    /// `sizes` replaces [`PAIR_SIZES`] when given.
    pub fn from_bench(
        bench: &BenchConfig,
        pairs: &[usize],
        sizes: Option<Vec<usize>>,
    ) -> ScalingConfig {
        let mut pairs = pairs.to_vec();
        pairs.push(1);
        pairs.sort_unstable();
        pairs.dedup();
        ScalingConfig {
            pairs,
            sizes: sizes.unwrap_or_else(|| PAIR_SIZES.to_vec()),
            ring: bench.ring,
            batch: bench.batch,
            time: bench.stream_time,
            stream_bytes: bench.stream_bytes,
            rounds: bench.rounds,
            pin: bench.pin,
            timeout: bench.timeout,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |what: String| Err(BenchError::Config(what));
        if let Some(&n) = self.pairs.iter().find(|&&n| n == 0 || n > MAX_PAIRS) {
            return bad(format!("pairs must be 1 to {MAX_PAIRS} (got {n})"));
        }
        // The bench's own checks of ring, sizes, batch and rounds.
        BenchConfig {
            sizes: self.sizes.clone(),
            ring: self.ring,
            batch: self.batch,
            rounds: self.rounds,
            ..BenchConfig::standard()
        }
        .validate()
    }
}

/// Per-pair rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairFigures {
    /// Messages per second.
    pub messages_per_s: f64,
    /// 10^9 bytes per second.
    pub gb_per_s: f64,
}

/// One mechanism, size and pair count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairsRow {
    /// `ivlink` or `memcpy-ring`.
    pub mechanism: &'static str,
    /// Message size.
    pub size_bytes: usize,
    /// Pairs at once.
    pub pairs: usize,
    /// Threads at once (two per pair).
    pub threads: usize,
    /// More threads than CPUs.
    pub oversubscribed: bool,
    /// Messages of all pairs.
    pub messages: u64,
    /// Payload bytes of all pairs.
    pub bytes: u64,
    /// From the first start to the last end, seconds (the median round).
    pub seconds: f64,
    /// All pairs together: messages per second.
    pub messages_per_s: f64,
    /// All pairs together: 10^9 bytes per second.
    pub gb_per_s: f64,
    /// Each pair's own rates.
    pub per_pair: Vec<PairFigures>,
    /// Doorbells all pairs rang (ivlink: an end that slept asked for one; the
    /// memcpy ring has none).
    pub doorbells: u64,
    /// Aggregate over `pairs` × the single pair's rate (1.0: perfect scaling).
    pub efficiency: f64,
    /// The most `efficiency` can be if one pair keeps two CPUs busy: CPUs over
    /// threads, at most 1 (0.25 for 4 pairs on 2 CPUs).
    pub cpu_bound_efficiency: f64,
}

impl PairsRow {
    fn new(mechanism: &'static str, size: usize, cpus: usize, run: &PairsRun) -> PairsRow {
        let pairs = run.pairs.len();
        let messages = run.pairs.iter().map(|p| p.messages).sum();
        let bytes: u64 = run.pairs.iter().map(|p| p.bytes).sum();
        let seconds = run.seconds.max(1e-9);
        PairsRow {
            mechanism,
            size_bytes: size,
            pairs,
            threads: 2 * pairs,
            oversubscribed: 2 * pairs > cpus,
            messages,
            bytes,
            seconds: run.seconds,
            messages_per_s: run.messages_per_s(),
            gb_per_s: bytes as f64 / seconds / 1e9,
            per_pair: run
                .pairs
                .iter()
                .map(|p| PairFigures {
                    messages_per_s: p.messages as f64 / p.seconds.max(1e-9),
                    gb_per_s: p.bytes as f64 / p.seconds.max(1e-9) / 1e9,
                })
                .collect(),
            doorbells: run.pairs.iter().map(|p| p.doorbells).sum(),
            efficiency: 0.0,
            cpu_bound_efficiency: (cpus as f64 / (2 * pairs) as f64).min(1.0),
        }
    }
}

/// A pairs run's outcome (`ivlink bench --pairs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairsReport {
    /// `"ivlink bench --pairs"`.
    pub tool: &'static str,
    /// The program's version.
    pub version: &'static str,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Whether threads were pinned round robin.
    pub pinned: bool,
    /// Ring data area, bytes.
    pub ring_bytes: usize,
    /// Messages per publication and release (at most a quarter of the ring).
    pub batch: usize,
    /// Rounds of every measurement (the median is reported).
    pub rounds: usize,
    /// How long each run streamed at most, seconds.
    pub run_seconds: f64,
    /// One row per mechanism, size and pair count.
    pub rows: Vec<PairsRow>,
    /// The whole run, seconds.
    pub seconds: f64,
}

/// Runs every pair count of `config` for every size, ivlink and the memcpy ring
/// interleaved, `rounds` times; keeps each measurement's median round.
pub fn run_pairs(config: &ScalingConfig, progress: &Progress) -> Result<PairsReport, BenchError> {
    config.validate()?;
    let started = Instant::now();
    let cpus = placement::allowed_cpus()?.len();
    let dir = crate::bench::private_dir()?;
    let most = config.pairs.iter().copied().max().unwrap_or(1);
    let ivlink = pairs::IvlinkPairs::start(dir.path(), most, config.ring, config.timeout)?;
    let mut cells: Vec<(&'static str, usize, usize, Vec<PairsRun>)> = Vec::new();
    for &size in &config.sizes {
        for &n in &config.pairs {
            for mechanism in ["ivlink", "memcpy-ring"] {
                cells.push((mechanism, size, n, Vec::new()));
            }
        }
    }
    let bar = progress.bar((cells.len() * config.rounds) as u64, "starting");
    for round in 0..config.rounds {
        for (mechanism, size, n, runs) in &mut cells {
            bar.set_message(format!(
                "{mechanism}: {n} pairs, {size} B messages, round {}",
                round + 1
            ));
            let run = match *mechanism {
                "ivlink" => pairs::run_ivlink(&ivlink, config, *n, *size)?,
                _ => pairs::run_memring(config, *n, *size)?,
            };
            runs.push(run);
            bar.inc(1);
        }
    }
    bar.clear();
    ivlink.stop()?;
    let mut rows: Vec<PairsRow> = cells
        .into_iter()
        .map(|(mechanism, size, _, mut runs)| {
            runs.sort_by(|a, b| a.messages_per_s().total_cmp(&b.messages_per_s()));
            PairsRow::new(mechanism, size, cpus, &runs[runs.len() / 2])
        })
        .collect();
    fill_efficiency(&mut rows);
    Ok(PairsReport {
        tool: "ivlink bench --pairs",
        version: env!("CARGO_PKG_VERSION"),
        cpus,
        pinned: config.pin && cpus >= 2,
        ring_bytes: config.ring,
        batch: config.batch,
        rounds: config.rounds,
        run_seconds: config.time.as_secs_f64(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Sets every row's efficiency against the single-pair row of its mechanism
/// and size.
fn fill_efficiency(rows: &mut [PairsRow]) {
    let singles: Vec<(&'static str, usize, f64)> = rows
        .iter()
        .filter(|r| r.pairs == 1)
        .map(|r| (r.mechanism, r.size_bytes, r.messages_per_s))
        .collect();
    for row in rows.iter_mut() {
        if let Some(&(_, _, single)) = singles
            .iter()
            .find(|(m, s, _)| *m == row.mechanism && *s == row.size_bytes)
        {
            row.efficiency = row.messages_per_s / (row.pairs as f64 * single).max(1e-9);
        }
    }
}

/// A connect-cost run's outcome (`ivlink bench --server-peers`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectReport {
    /// `"ivlink bench --server-peers"`.
    pub tool: &'static str,
    /// The program's version.
    pub version: &'static str,
    /// Vectors per peer.
    pub vectors: u16,
    /// The curve in words.
    pub curve: String,
    /// One row per peer count.
    pub rows: Vec<ConnectRow>,
    /// The whole run, seconds.
    pub seconds: f64,
}

/// The connect cost's curve, in words.
pub fn curve(vectors: u16) -> String {
    format!(
        "each new peer gets every existing peer's {vectors} eventfd(s) and every existing peer gets the new one's: N peers cost N·(1+V) + V·N·(N−1) fd messages (V = {vectors}), quadratic in N; one more peer costs 1 + V + 2·V·N"
    )
}

/// Measures the server's connect cost for each of `counts` peers.
pub fn run_connect(
    counts: &[usize],
    vectors: u16,
    timeout: Duration,
    progress: &Progress,
) -> Result<ConnectReport, BenchError> {
    if let Some(&n) = counts.iter().find(|&&n| n == 0 || n > MAX_SERVER_PEERS) {
        return Err(BenchError::Config(format!(
            "server peers must be 1 to {MAX_SERVER_PEERS} (got {n})"
        )));
    }
    if vectors == 0 || vectors > ivlink::server::MAX_VECTORS {
        return Err(BenchError::Config(format!(
            "vectors must be 1 to {} (got {vectors})",
            ivlink::server::MAX_VECTORS
        )));
    }
    let started = Instant::now();
    let bar = progress.bar(counts.len() as u64, "starting");
    let rows = connect::measure(counts, vectors, timeout, &mut |what| {
        bar.set_message(what.to_owned());
        bar.inc(1);
    })?;
    bar.clear();
    Ok(ConnectReport {
        tool: "ivlink bench --server-peers",
        version: env!("CARGO_PKG_VERSION"),
        vectors,
        curve: curve(vectors),
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_pair_reference_is_always_measured() {
        let config = ScalingConfig::from_bench(&BenchConfig::quick(), &[4, 2, 4], None);
        assert_eq!(config.pairs, [1, 2, 4]);
        assert_eq!(config.sizes, PAIR_SIZES);
        let zero = ScalingConfig {
            pairs: vec![0, 1],
            ..config
        };
        assert!(zero.validate().unwrap_err().to_string().contains("pairs"));
    }

    #[test]
    fn efficiency_is_the_aggregate_over_n_single_pairs() {
        let run = |n: usize, messages: u64| PairsRun {
            pairs: vec![
                PairRun {
                    messages,
                    bytes: messages * 64,
                    seconds: 1.0,
                    doorbells: 0,
                };
                n
            ],
            seconds: 1.0,
        };
        let mut rows = [
            PairsRow::new("ivlink", 64, 2, &run(1, 100)),
            PairsRow::new("ivlink", 64, 2, &run(4, 50)),
            PairsRow::new("memcpy-ring", 64, 2, &run(1, 400)),
            PairsRow::new("memcpy-ring", 64, 2, &run(2, 400)),
        ];
        fill_efficiency(&mut rows);
        assert!(!rows[0].oversubscribed && rows[1].oversubscribed);
        assert_eq!(rows[1].threads, 8);
        assert_eq!(rows[1].cpu_bound_efficiency, 0.25);
        assert_eq!(rows[0].cpu_bound_efficiency, 1.0);
        assert_eq!(rows[1].messages_per_s, 200.0);
        assert_eq!(rows[1].per_pair.len(), 4);
        let efficiency: Vec<f64> = rows.iter().map(|r| r.efficiency).collect();
        assert_eq!(efficiency, [1.0, 0.5, 1.0, 1.0]);
    }
}
