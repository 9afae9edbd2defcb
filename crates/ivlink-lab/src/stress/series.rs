//! A stress run per peer count, one after another: how the message rate grows
//! (or shrinks) with peers, every message still checked.

use std::io::{self, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::{StressConfig, StressSummary};
use crate::testbed::TestbedError;

/// One peer count's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesRow {
    /// Peers that took part.
    pub peers: usize,
    /// Seconds of sending.
    pub seconds: f64,
    /// Data messages sent between peers that finished.
    pub sent: u64,
    /// Of those, received intact.
    pub received: u64,
    /// Messages per second received, all peers together.
    pub messages_per_second: f64,
    /// `messages_per_second` over the peers.
    pub per_peer_messages_per_second: f64,
    /// Bytes per second received, all peers together.
    pub bytes_per_second: f64,
    /// Messages never received.
    pub lost: u64,
    /// Messages received damaged.
    pub corrupted: u64,
    /// Messages received out of order or twice.
    pub reordered: u64,
    /// Peer processes that failed.
    pub failed_peers: usize,
    /// Whether the run proves the link (see [`StressSummary::clean`]).
    pub clean: bool,
}

impl SeriesRow {
    /// The row of one run's totals.
    pub fn of(summary: &StressSummary) -> SeriesRow {
        SeriesRow {
            peers: summary.peers,
            seconds: summary.seconds,
            sent: summary.sent,
            received: summary.received,
            messages_per_second: summary.messages_per_second,
            per_peer_messages_per_second: summary.messages_per_second / summary.peers.max(1) as f64,
            bytes_per_second: summary.bytes_per_second,
            lost: summary.lost,
            corrupted: summary.corrupted,
            reordered: summary.reordered,
            failed_peers: summary.failed_peers,
            clean: summary.clean(),
        }
    }
}

/// A series of stress runs (`ivlink stress --peers 2,4,8`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StressSeries {
    /// `"ivlink stress --peers"`.
    pub tool: &'static str,
    /// Whether Ctrl-C ended the series before its last count.
    pub interrupted: bool,
    /// One row per peer count, in the order run.
    pub rows: Vec<SeriesRow>,
    /// Errors the peers reported, with their peer count.
    pub errors: Vec<String>,
}

impl StressSeries {
    /// Whether every run was clean and none was cut short.
    pub fn clean(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.clean)
    }

    /// The text report.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "stress series: one run per peer count, each peer sending to every other, every message checked"
        )?;
        writeln!(
            out,
            "{:>5} {:>8} {:>12} {:>12} {:>16} {:>8} {:>6} {:>9} {:>9}",
            "peers",
            "seconds",
            "received",
            "M msg/s",
            "per peer M msg/s",
            "MB/s",
            "lost",
            "corrupted",
            "reordered"
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "{:>5} {:>8.1} {:>12} {:>12.3} {:>16.3} {:>8.1} {:>6} {:>9} {:>9}{}",
                r.peers,
                r.seconds,
                r.received,
                r.messages_per_second / 1e6,
                r.per_peer_messages_per_second / 1e6,
                r.bytes_per_second / 1e6,
                r.lost,
                r.corrupted,
                r.reordered,
                if r.failed_peers > 0 {
                    format!("  ({} peers failed)", r.failed_peers)
                } else {
                    String::new()
                }
            )?;
        }
        if self.interrupted {
            writeln!(out, "interrupted: the series stopped early")?;
        }
        for error in &self.errors {
            writeln!(out, "error: {error}")?;
        }
        Ok(())
    }
}

/// Runs [`super::run`] for every count of `counts` with `base`'s other
/// settings; `peer_command(peers, socket)` makes a peer's command. Stops after
/// the current run once `stop` is set.
pub fn run(
    base: &StressConfig,
    counts: &[usize],
    peer_command: &dyn Fn(usize, &Path) -> Command,
    out: &mut dyn Write,
    stop: &AtomicBool,
    progress: &crate::progress::Progress,
) -> Result<StressSeries, TestbedError> {
    let mut series = StressSeries {
        tool: "ivlink stress --peers",
        interrupted: false,
        rows: Vec::new(),
        errors: Vec::new(),
    };
    for &peers in counts {
        if stop.load(Ordering::Relaxed) {
            series.interrupted = true;
            break;
        }
        let config = StressConfig {
            peers,
            ..base.clone()
        };
        let _ = writeln!(out, "stress: {peers} peers");
        let summary = super::run(
            &config,
            &|socket| peer_command(peers, socket),
            out,
            stop,
            progress,
        )?;
        series.interrupted |= summary.interrupted;
        series
            .errors
            .extend(summary.errors.iter().map(|e| format!("{peers} peers: {e}")));
        series.rows.push(SeriesRow::of(&summary));
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_divides_the_rate_among_the_peers() {
        let summary = StressSummary {
            peers: 4,
            seconds: 1.0,
            sent: 800,
            received: 800,
            messages_per_second: 8e6,
            ..StressSummary::default()
        };
        let row = SeriesRow::of(&summary);
        assert_eq!(row.per_peer_messages_per_second, 2e6);
        assert!(row.clean);
        let series = StressSeries {
            tool: "ivlink stress --peers",
            interrupted: false,
            rows: vec![
                row.clone(),
                SeriesRow {
                    lost: 1,
                    clean: false,
                    ..row
                },
            ],
            errors: vec![],
        };
        assert!(!series.clean());
        let mut text = Vec::new();
        series.write_table(&mut text).unwrap();
        assert!(String::from_utf8(text).unwrap().contains("2.000"));
    }
}
