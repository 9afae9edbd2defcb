//! Stress runs: N peers send to every other peer through one channel with sequence
//! numbers and checksums; the report proves nothing was lost, damaged or
//! reordered. Replaces the seeds' hours of watching a console scroll.

pub mod message;
pub mod peer;
pub mod series;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use peer::{PeerPlan, PeerReport, Progress, run_peer};

use crate::testbed::{Children, TestbedError};

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
///
/// Messages count among the peers that finished: `sent` = `received` + `lost`
/// (+ `corrupted`) once the run is clean. Traffic with peers that left (killed on
/// purpose with `kill_one_after`) is counted apart, since what they received
/// before they died is not known.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StressSummary {
    /// Peers that took part.
    pub peers: usize,
    /// Seconds of sending (the longest peer).
    pub seconds: f64,
    /// Whether the run was interrupted (SIGINT or SIGTERM) before its duration: the
    /// totals are those so far.
    pub interrupted: bool,
    /// Data messages sent between peers that finished.
    pub sent: u64,
    /// Of those, received intact.
    pub received: u64,
    /// Bytes received intact (also from peers that left).
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
    /// Peers (by id) that left during the run.
    pub gone: Vec<u16>,
    /// Messages sent to peers that left: in flight when they went, not lost.
    pub in_flight_to_gone: u64,
    /// Messages received intact from peers that left.
    pub received_from_gone: u64,
    /// Peer processes that failed.
    pub failed_peers: usize,
    /// Errors the peers reported.
    pub errors: Vec<String>,
    /// One-way latency (same-host monotonic clock), in nanoseconds.
    #[serde(rename = "latency_ns")]
    pub latency: Percentiles,
}

impl StressSummary {
    /// Whether the run proves the link: messages went through, nothing was lost,
    /// damaged or reordered, and every surviving peer finished.
    pub fn clean(&self) -> bool {
        self.sent > 0
            && self.lost == 0
            && self.corrupted == 0
            && self.reordered == 0
            && self.failed_peers == 0
    }
}

/// Ring data size for `peers` members in `size` bytes: half the region shared
/// among the rings, a power of two, at most 1 MiB (0: the region is too small).
pub fn ring_capacity(size: u64, peers: usize) -> usize {
    let rings = (peers * peers.saturating_sub(1)).max(1) as u64;
    let share = (size / 2 / rings).min(1 << 20);
    if share < 64 {
        0
    } else {
        1usize << (63 - share.leading_zeros())
    }
}

/// One peer of a run started by [`run`]: opens (or creates) the [`CHANNEL`] with
/// rings of `ring_capacity` bytes, then [`run_peer`]s it.
pub fn join_and_run(
    device: &dyn ivlink::Device,
    plan: &PeerPlan,
    ring_capacity: usize,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<PeerReport, ivlink::channel::ChannelError> {
    let shape = ivlink::channel::ChannelShape {
        max_members: plan.peers.clamp(2, 64) as u32,
        ring_capacity,
        vector: 0,
    };
    let layout = ivlink::channel::open_named(device, CHANNEL, shape, Duration::from_secs(10))?;
    run_peer(device, layout, plan, out, stop)
}

/// How long the peers get to finish once asked to stop early (they exchange end
/// markers and wait up to their own 20 s timeout for the others').
const STOP_GRACE: Duration = Duration::from_secs(25);

/// Runs the peers, each made by `peer_command(socket)` for a server this function
/// starts on a private socket; relays progress lines to `out`, draws a bar over
/// the run's duration on `progress`, and sums the reports.
///
/// Once `stop` is set (Ctrl-C), the peers are asked to stop early (SIGINT): they
/// finish as at the end of the duration, so the totals so far are reported.
pub fn run(
    config: &StressConfig,
    peer_command: &dyn Fn(&Path) -> Command,
    out: &mut dyn Write,
    stop: &AtomicBool,
    progress: &crate::progress::Progress,
) -> Result<StressSummary, TestbedError> {
    if config.peers < 2 {
        return Err(TestbedError::Setup(
            "a stress run needs at least 2 peers".into(),
        ));
    }
    if config.duration.is_zero() {
        return Err(TestbedError::Setup(
            "a stress run needs a duration above zero".into(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("ivlink-stress.")
        .tempdir()?;
    let socket = dir.path().join("ivshmem.sock");
    let server = crate::testbed::start_server(&socket, config.size, 1)?;
    let (mut children, lines_rx) =
        crate::testbed::spawn_peers(config.peers, &socket, peer_command)?;

    let mut watch = Watch::new();
    {
        let mut out = progress.lines(out);
        let bar = progress.timed(config.duration, "starting the peers");
        watch.supervise(config, &mut children, &lines_rx, &mut out, stop, &bar);
        bar.clear();
    }
    for line in &watch.other_lines {
        let _ = writeln!(out, "{line}");
    }
    let failed = watch.reap(&mut children, out)?;
    server.stop()?;
    Ok(watch.summarize(config, failed))
}

/// What the leader of a stress run has heard from its peers so far.
struct Watch {
    started: Instant,
    progress: BTreeMap<usize, Progress>,
    reports: BTreeMap<usize, PeerReport>,
    /// Peer ids by process: every name the user sees is a peer id.
    ids: BTreeMap<usize, u16>,
    killed: Option<(usize, u16)>,
    interrupted: bool,
    other_lines: Vec<String>,
}

impl Watch {
    fn new() -> Self {
        Watch {
            started: Instant::now(),
            progress: BTreeMap::new(),
            reports: BTreeMap::new(),
            ids: BTreeMap::new(),
            killed: None,
            interrupted: false,
            other_lines: Vec::new(),
        }
    }

    /// A peer process by its id once known.
    fn name(&self, number: usize) -> String {
        match self.ids.get(&number) {
            Some(id) => format!("peer {id}"),
            None => format!("peer process {number}"),
        }
    }

    /// Relays progress, kills the victim, and stops the peers on `stop`, until
    /// every peer has closed its output or the time limit passes.
    fn supervise(
        &mut self,
        config: &StressConfig,
        children: &mut Children,
        lines_rx: &mpsc::Receiver<(usize, String)>,
        out: &mut dyn Write,
        stop: &AtomicBool,
        bar: &crate::progress::Step,
    ) {
        let mut limit = self.started + config.duration + Duration::from_secs(60);
        let mut next_line = self.started + config.progress;
        loop {
            match lines_rx.recv_timeout(Duration::from_millis(50)) {
                Ok((number, line)) => self.take_line(number, &line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.kill_victim_when_due(config, children, out);
            let gone: Vec<u16> = self.killed.iter().map(|&(_, id)| id).collect();
            bar.set_elapsed(self.started.elapsed());
            if !self.progress.is_empty() && !bar.is_hidden() {
                bar.set_message(bar_message(&self.progress, &gone, self.started));
            }
            if Instant::now() >= next_line && !self.progress.is_empty() {
                let _ = writeln!(
                    out,
                    "{}",
                    progress_line(&self.progress, &gone, self.started)
                );
                next_line += config.progress;
            }
            if stop.load(Ordering::Relaxed) && !self.interrupted {
                self.interrupt(children, out);
                limit = limit.min(Instant::now() + STOP_GRACE);
            }
            if Instant::now() > limit {
                let _ = writeln!(
                    out,
                    "stress: the peers did not finish in time; killing them"
                );
                for child in children.0.iter_mut() {
                    let _ = child.kill();
                }
                break;
            }
        }
    }

    /// One line of a peer's output: progress, its result, or anything else.
    fn take_line(&mut self, number: usize, line: &str) {
        if let Some(json) = line.strip_prefix("progress ") {
            if let Ok(p) = serde_json::from_str::<Progress>(json) {
                self.ids.insert(number, p.id);
                self.progress.insert(number, p);
            }
        } else if let Some(json) = line.strip_prefix("result ") {
            match serde_json::from_str::<PeerReport>(json) {
                Ok(report) => {
                    self.ids.insert(number, report.id);
                    self.reports.insert(number, report);
                }
                Err(e) => {
                    let line = format!("[{}] unreadable result: {e}", self.name(number));
                    self.other_lines.push(line);
                }
            }
        } else {
            let line = format!("[{}] {line}", self.name(number));
            self.other_lines.push(line);
        }
    }

    /// With `kill_one_after`: SIGKILLs the last peer once that time has passed.
    fn kill_victim_when_due(
        &mut self,
        config: &StressConfig,
        children: &mut Children,
        out: &mut dyn Write,
    ) {
        let victim = config.peers - 1;
        if let Some(after) = config.kill_one_after
            && self.killed.is_none()
            && !self.interrupted
            && self.started.elapsed() >= after
            // Its id comes with its first progress line, right after joining.
            && let Some(&id) = self.ids.get(&victim)
        {
            let _ = children.0[victim].kill();
            self.killed = Some((victim, id));
            let _ = writeln!(out, "stress: killed peer {id} (SIGKILL) after {after:?}");
        }
    }

    /// Asks every running peer to stop early (SIGINT), as at the end of the run.
    fn interrupt(&mut self, children: &mut Children, out: &mut dyn Write) {
        self.interrupted = true;
        let _ = writeln!(
            out,
            "stress: interrupted; stopping the peers and collecting their totals"
        );
        for (number, child) in children.0.iter_mut().enumerate() {
            if self.killed.is_none_or(|(k, _)| k != number)
                && let Ok(None) = child.try_wait()
                && let Ok(pid) = i32::try_from(child.id())
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
        }
    }

    /// Waits for every peer process; returns how many failed (the victim aside).
    fn reap(&self, children: &mut Children, out: &mut dyn Write) -> std::io::Result<usize> {
        let mut failed = 0;
        for (number, child) in children.0.iter_mut().enumerate() {
            let status = child.wait()?;
            if self.killed.is_none_or(|(k, _)| k != number)
                && (!status.success() || !self.reports.contains_key(&number))
            {
                failed += 1;
                let _ = writeln!(out, "stress: {} failed ({status})", self.name(number));
            }
        }
        Ok(failed)
    }

    /// Sums the peers' reports.
    fn summarize(mut self, config: &StressConfig, failed: usize) -> StressSummary {
        let mut summary = StressSummary {
            peers: config.peers,
            failed_peers: failed,
            interrupted: self.interrupted,
            ..StressSummary::default()
        };
        summary.gone.extend(self.killed.map(|(_, id)| id));
        for report in self.reports.values() {
            for gone in &report.gone {
                if !summary.gone.contains(gone) {
                    summary.gone.push(*gone);
                }
            }
        }
        summary.gone.sort_unstable();
        let mut latencies = Vec::new();
        for report in self.reports.values_mut() {
            summary.seconds = summary.seconds.max(report.seconds);
            for (to, &count) in &report.sent_to {
                if summary.gone.contains(to) {
                    summary.in_flight_to_gone += count;
                } else {
                    summary.sent += count;
                }
            }
            for (from, stats) in &report.from {
                if summary.gone.contains(from) {
                    summary.received_from_gone += stats.received;
                } else {
                    summary.received += stats.received;
                }
            }
            summary.bytes += report.received_bytes;
            summary.lost += report.lost;
            summary.corrupted += report.corrupted;
            summary.reordered += report.reordered;
            summary.errors.extend(report.errors.iter().cloned());
            latencies.append(&mut report.latency_ns);
        }
        summary.latency = Percentiles::of(&mut latencies);
        if summary.seconds > 0.0 {
            let received = summary.received + summary.received_from_gone;
            summary.messages_per_second = received as f64 / summary.seconds;
            summary.bytes_per_second = summary.bytes as f64 / summary.seconds;
        }
        summary
    }
}

/// What the peers still running have sent and received so far (`gone` left).
struct Totals {
    sent: u64,
    received: u64,
    bytes: u64,
    corrupted: u64,
    reordered: u64,
    seconds: f64,
}

impl Totals {
    fn of(progress: &BTreeMap<usize, Progress>, gone: &[u16], started: Instant) -> Totals {
        let alive = || progress.values().filter(|p| !gone.contains(&p.id));
        let sent: u64 = alive()
            .flat_map(|p| p.sent_to.iter())
            .filter(|(to, _)| !gone.contains(to))
            .map(|(_, n)| n)
            .sum();
        let received: u64 = alive()
            .flat_map(|p| p.received_from.iter())
            .filter(|(from, _)| !gone.contains(from))
            .map(|(_, n)| n)
            .sum();
        Totals {
            // Each peer's counts are a snapshot of its own moment: a receiver's can
            // be newer than its sender's. What was received was sent, so show at
            // least that.
            sent: sent.max(received),
            received,
            bytes: alive().map(|p| p.sent_bytes).sum(),
            corrupted: alive().map(|p| p.corrupted).sum(),
            reordered: alive().map(|p| p.reordered).sum(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// One progress line: the totals of the peers still running (`gone` left).
fn progress_line(progress: &BTreeMap<usize, Progress>, gone: &[u16], started: Instant) -> String {
    let t = Totals::of(progress, gone, started);
    let mut line = format!(
        "[{:7.1}s] sent {} ({:.1} MB/s), received {}, corrupted {}, reordered {}",
        t.seconds,
        t.sent,
        t.bytes as f64 / t.seconds / 1e6,
        t.received,
        t.corrupted,
        t.reordered
    );
    if !gone.is_empty() {
        line.push_str(&format!(" (between the peers left; gone {gone:?})"));
    }
    line
}

/// The progress bar's message: messages received so far and their rate.
fn bar_message(progress: &BTreeMap<usize, Progress>, gone: &[u16], started: Instant) -> String {
    let totals = Totals::of(progress, gone, started);
    format!(
        "received {}, {:.2} M msg/s",
        totals.received,
        totals.received as f64 / totals.seconds.max(1e-3) / 1e6
    )
}

/// A latency in the unit that reads best: ns, µs, ms or s.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
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

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(format_ns(850), "850 ns");
        assert_eq!(format_ns(12_345), "12.3 µs");
        assert_eq!(format_ns(1_234_567), "1.23 ms");
        assert_eq!(format_ns(2_500_000_000), "2.50 s");
    }
}

#[cfg(test)]
mod sizing_tests {
    use super::ring_capacity;

    #[test]
    fn ring_capacity_shares_half_the_region() {
        assert_eq!(ring_capacity(16 << 20, 3), 1 << 20);
        assert_eq!(ring_capacity(4 << 20, 8), 32768);
        assert_eq!(ring_capacity(1024, 64), 0);
    }
}
