//! Stress runs: N peers send to every other peer through one channel with sequence
//! numbers and checksums; the report proves nothing was lost, damaged or
//! reordered. Replaces the seeds' hours of watching a console scroll.

pub mod message;
pub mod peer;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use peer::{PeerPlan, PeerReport, Progress, run_peer};

use crate::testbed::TestbedError;

/// Name of the channel stress runs use.
pub const CHANNEL: &str = "stress";

/// A whole stress run.
#[derive(Debug, Clone)]
pub struct StressConfig {
    /// Peer processes.
    pub peers: usize,
    /// How long they send.
    pub duration: Duration,
    /// Smallest and largest message.
    pub message_len: (usize, usize),
    /// Shared memory size.
    pub size: u64,
    /// Kill one peer (SIGKILL) this long after the start, to prove the others
    /// carry on.
    pub kill_one_after: Option<Duration>,
    /// Print a progress line this often.
    pub progress: Duration,
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub samples: usize,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Percentiles of `samples` (sorted in place).
    pub fn of(samples: &mut [u64]) -> Percentiles {
        samples.sort_unstable();
        let at = |q: f64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index]
        };
        Percentiles {
            samples: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

/// Totals of a stress run (`--json` prints this).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StressSummary {
    /// Peers that took part.
    pub peers: usize,
    /// Seconds of sending (the longest peer).
    pub seconds: f64,
    /// Data messages sent.
    pub sent: u64,
    /// Data messages received intact.
    pub received: u64,
    /// Bytes received intact.
    pub bytes: u64,
    /// Messages per second received.
    pub messages_per_second: f64,
    /// Bytes per second received.
    pub bytes_per_second: f64,
    /// Messages sent to peers that stayed but never received.
    pub lost: u64,
    /// Messages received damaged.
    pub corrupted: u64,
    /// Messages received out of order or twice.
    pub reordered: u64,
    /// Peers that left during the run (killed on purpose with `kill_one_after`).
    pub gone: Vec<u16>,
    /// Peer processes that failed.
    pub failed_peers: usize,
    /// Errors the peers reported.
    pub errors: Vec<String>,
    /// One-way latency (same-host monotonic clock).
    pub latency: Percentiles,
}

impl StressSummary {
    /// Whether the run proves the link: nothing lost, damaged or reordered, and
    /// every surviving peer finished.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.corrupted == 0 && self.reordered == 0 && self.failed_peers == 0
    }
}

/// Runs the peers, each made by `peer_command(socket)` for a server this function
/// starts on a private socket; relays progress to `out` and sums the reports.
pub fn run(
    config: &StressConfig,
    peer_command: &dyn Fn(&Path) -> Command,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<StressSummary, TestbedError> {
    if config.peers < 2 {
        return Err(TestbedError::Setup(
            "a stress run needs at least 2 peers".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("ivlink-stress.")
        .tempdir()?;
    let socket = dir.path().join("ivshmem.sock");
    let server = crate::testbed::start_server(&socket, config.size, 1)?;
    let (mut children, lines_rx) =
        crate::testbed::spawn_peers(config.peers, &socket, peer_command)?;

    let started = Instant::now();
    let limit = config.duration + Duration::from_secs(60);
    let mut progress: BTreeMap<usize, Progress> = BTreeMap::new();
    let mut reports: BTreeMap<usize, PeerReport> = BTreeMap::new();
    let mut killed = None;
    let mut next_line = started + config.progress;
    let mut other_lines = Vec::new();
    loop {
        match lines_rx.recv_timeout(Duration::from_millis(50)) {
            Ok((number, line)) => {
                if let Some(json) = line.strip_prefix("progress ") {
                    if let Ok(p) = serde_json::from_str(json) {
                        progress.insert(number, p);
                    }
                } else if let Some(json) = line.strip_prefix("result ") {
                    match serde_json::from_str(json) {
                        Ok(report) => {
                            reports.insert(number, report);
                        }
                        Err(e) => other_lines
                            .push(format!("[peer process {number}] unreadable result: {e}")),
                    }
                } else {
                    other_lines.push(format!("[peer process {number}] {line}"));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(after) = config.kill_one_after
            && killed.is_none()
            && started.elapsed() >= after
        {
            let victim = config.peers - 1;
            let _ = children.0[victim].kill();
            killed = Some(victim);
            let _ = writeln!(
                out,
                "stress: killed peer process {victim} (SIGKILL) after {after:?}"
            );
        }
        if Instant::now() >= next_line && !progress.is_empty() {
            let sent: u64 = progress.values().map(|p| p.sent).sum();
            let bytes: u64 = progress.values().map(|p| p.sent_bytes).sum();
            let received: u64 = progress.values().map(|p| p.received).sum();
            let corrupted: u64 = progress.values().map(|p| p.corrupted).sum();
            let reordered: u64 = progress.values().map(|p| p.reordered).sum();
            let secs = started.elapsed().as_secs_f64();
            let _ = writeln!(
                out,
                "[{secs:7.1}s] sent {sent} ({:.1} MB/s), received {received}, corrupted {corrupted}, reordered {reordered}",
                bytes as f64 / secs / 1e6
            );
            next_line += config.progress;
        }
        if stop.load(Ordering::Relaxed) || started.elapsed() > limit {
            let _ = writeln!(out, "stress: stopping the peers");
            break;
        }
    }
    for line in &other_lines {
        let _ = writeln!(out, "{line}");
    }
    let mut failed = 0;
    for (number, child) in children.0.iter_mut().enumerate() {
        let status = child.wait()?;
        if Some(number) != killed && (!status.success() || !reports.contains_key(&number)) {
            failed += 1;
            let _ = writeln!(out, "stress: peer process {number} failed ({status})");
        }
    }
    server.stop()?;
    let mut summary = StressSummary {
        peers: config.peers,
        failed_peers: failed,
        ..StressSummary::default()
    };
    let mut latencies = Vec::new();
    for report in reports.values_mut() {
        summary.seconds = summary.seconds.max(report.seconds);
        summary.sent += report.sent;
        summary.received += report.received;
        summary.bytes += report.received_bytes;
        summary.lost += report.lost;
        summary.corrupted += report.corrupted;
        summary.reordered += report.reordered;
        for gone in &report.gone {
            if !summary.gone.contains(gone) {
                summary.gone.push(*gone);
            }
        }
        summary.errors.extend(report.errors.iter().cloned());
        latencies.append(&mut report.latency_ns);
    }
    summary.latency = Percentiles::of(&mut latencies);
    if summary.seconds > 0.0 {
        summary.messages_per_second = summary.received as f64 / summary.seconds;
        summary.bytes_per_second = summary.bytes as f64 / summary.seconds;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranked_sample() {
        let mut samples: Vec<u64> = (1..=1000).rev().collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
