//! `ivlink stress`: peers flooding each other through one channel, every message
//! checked; exits non-zero unless nothing was lost, damaged or reordered.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ivlink_lab::stress::{self, PeerPlan, StressConfig, StressSummary};

use crate::grammar::{parse_duration, parse_size, parse_size_as, parse_uint};
use crate::transport_args::TransportArgs;

/// Options of `ivlink stress`.
#[derive(Debug, Clone, Args)]
pub struct StressArgs {
    /// Peer processes, each sending to every other; several counts (2,4,8) run one after another, one row each
    #[arg(long, value_name = "N[,N...]", default_value = "3", value_delimiter = ',', value_parser = parse_peer_count)]
    pub peers: Vec<usize>,

    /// How long to send: 500ms, 10s, 5m, 6h (a long run replaces hours of watching a console; Ctrl-C ends it early with the totals so far)
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_run_duration)]
    pub duration: Duration,

    /// Message sizes, MIN..MAX (sizes such as 64 or 1K; at least 32: sequence number, time, checksum)
    #[arg(long, value_name = "MIN..MAX", default_value = "32..1024", value_parser = parse_range)]
    pub message_size: (usize, usize),

    /// Shared memory size
    #[arg(short = 'l', long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub size: u64,

    /// Kill one peer with SIGKILL after this long, to show the others carry on
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub kill_one_after: Option<Duration>,

    /// Time between progress lines (at least 100ms)
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = parse_duration)]
    pub progress: Duration,

    /// Print the totals as JSON (progress lines then go to standard error)
    #[arg(long)]
    pub json: bool,
}

impl StressArgs {
    /// Runs the stress test and prints the report.
    pub fn run(&self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the ivlink executable")?;
        for &peers in &self.peers {
            let capacity = stress::ring_capacity(self.size, peers);
            if capacity < 2 * self.message_size.1 {
                anyhow::bail!(
                    "{peers} peers need {} rings: at {} bytes of shared memory each ring would hold {capacity} bytes, too small for {}-byte messages (raise --size)",
                    peers * (peers - 1),
                    self.size,
                    self.message_size.1
                );
            }
        }
        let (duration, sizes, size) = (self.duration, self.message_size, self.size);
        let command = move |peers: usize, socket: &Path| {
            let mut command = Command::new(&exe);
            command
                .arg("stress-peer")
                .arg("--socket")
                .arg(socket)
                .args(["--peers", &peers.to_string()])
                .args(["--duration", &format!("{}ms", duration.as_millis())])
                .args(["--message-size", &format!("{}..{}", sizes.0, sizes.1)])
                .args([
                    "--ring-capacity",
                    &stress::ring_capacity(size, peers).to_string(),
                ]);
            command
        };
        let config = StressConfig {
            peers: self.peers[0],
            duration: self.duration,
            message_len: self.message_size,
            size: self.size,
            kill_one_after: self.kill_one_after,
            progress: self.progress.max(Duration::from_millis(100)),
        };
        let stop = super::stop_flag()?;
        // Standard output carries nothing but the JSON when asked for it.
        let mut progress: Box<dyn std::io::Write> = if self.json {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        let bar = ivlink_lab::progress::Progress::new(self.json);
        if self.peers.len() > 1 {
            let series =
                stress::series::run(&config, &self.peers, &command, &mut progress, &stop, &bar)?;
            drop(progress);
            return self.print_series(&series);
        }
        let peers = self.peers[0];
        let capacity = stress::ring_capacity(self.size, peers);
        let summary = stress::run(
            &config,
            &|socket| command(peers, socket),
            &mut progress,
            &stop,
            &bar,
        )?;
        drop(progress);
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
        } else {
            print_summary(&mut out, &summary, capacity)?;
        }
        out.flush()?;
        if summary.sent == 0 {
            anyhow::bail!("stress run failed: no message went through");
        }
        if !summary.clean() {
            anyhow::bail!(
                "stress run failed: lost {}, corrupted {}, reordered {}, failed peers {}",
                summary.lost,
                summary.corrupted,
                summary.reordered,
                summary.failed_peers
            );
        }
        if summary.interrupted {
            // Clean so far, but not the run asked for: the shell's code for SIGINT.
            eprintln!(
                "stress: interrupted after {:.1} s of {:?}: nothing lost, corrupted or reordered so far",
                summary.seconds, self.duration
            );
            std::process::exit(INTERRUPTED);
        }
        Ok(())
    }
}

impl StressArgs {
    /// Prints a series and fails unless every run was clean.
    fn print_series(&self, series: &stress::series::StressSeries) -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string_pretty(series)?)?;
        } else {
            series.write_table(&mut out)?;
        }
        out.flush()?;
        if let Some(bad) = series.rows.iter().find(|r| !r.clean) {
            anyhow::bail!(
                "stress run with {} peers failed: sent {}, lost {}, corrupted {}, reordered {}, failed peers {}",
                bad.peers,
                bad.sent,
                bad.lost,
                bad.corrupted,
                bad.reordered,
                bad.failed_peers
            );
        }
        if series.interrupted {
            eprintln!(
                "stress: interrupted after {} of {} peer counts: nothing lost, corrupted or reordered so far",
                series.rows.len(),
                self.peers.len()
            );
            std::process::exit(INTERRUPTED);
        }
        Ok(())
    }
}

/// A peer count: at least 2 (someone to send to), at most 64 (a channel's members).
fn parse_peer_count(text: &str) -> Result<usize, String> {
    match parse_uint::<usize>(text)? {
        n if n < 2 => Err(format!("{n}: a stress run needs at least 2 peers")),
        n if n > 64 => Err(format!("{n}: at most 64 peers")),
        n => Ok(n),
    }
}

/// Exit code of a clean run cut short by Ctrl-C (128 + SIGINT, as shells report).
const INTERRUPTED: i32 = 130;

fn print_summary(
    out: &mut dyn std::io::Write,
    s: &StressSummary,
    capacity: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "stress: {} peers, {:.1} s, rings of {capacity} bytes",
        s.peers, s.seconds
    )?;
    if s.interrupted {
        writeln!(out, "  interrupted: the totals so far")?;
    }
    writeln!(
        out,
        "  messages  sent {}  received {}  ({:.2} M msg/s, {:.1} MB/s)",
        s.sent,
        s.received,
        s.messages_per_second / 1e6,
        s.bytes_per_second / 1e6
    )?;
    let l = &s.latency;
    let t = stress::format_ns;
    writeln!(
        out,
        "  latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        t(l.p50),
        t(l.p90),
        t(l.p99),
        t(l.p999),
        t(l.max),
        l.samples
    )?;
    writeln!(
        out,
        "  lost {}  corrupted {}  reordered {}  peers gone {:?}",
        s.lost, s.corrupted, s.reordered, s.gone
    )?;
    if !s.gone.is_empty() {
        writeln!(
            out,
            "  in flight to gone peers {} (sent before they left: not lost)  received from gone peers {} (both apart from the totals above)",
            s.in_flight_to_gone, s.received_from_gone
        )?;
    }
    for error in &s.errors {
        writeln!(out, "  error: {error}")?;
    }
    Ok(())
}

/// Options of the hidden `ivlink stress-peer`.
#[derive(Debug, Clone, Args)]
pub struct StressPeerArgs {
    /// Peers taking part
    #[arg(long, default_value_t = 3, value_parser = parse_uint::<usize>)]
    pub peers: usize,
    /// How long to send
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Message sizes
    #[arg(long, value_parser = parse_range, default_value = "32..1024")]
    pub message_size: (usize, usize),
    /// Ring data size (the same for every peer)
    #[arg(long, default_value = "64K", value_parser = parse_size_as::<usize>)]
    pub ring_capacity: usize,
    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl StressPeerArgs {
    /// Runs one peer and prints its report as a `result` JSON line.
    pub fn run(&self) -> anyhow::Result<()> {
        // First: a Ctrl-C at the terminal reaches the peers too, and must end them
        // with a report, not kill them.
        let stop = super::stop_flag()?;
        let device = self.transport.transport().open()?;
        let plan = PeerPlan {
            peers: self.peers,
            duration: self.duration,
            message_len: self.message_size,
            progress: Some(Duration::from_millis(500)),
            timeout: Duration::from_secs(20),
        };
        let mut out = std::io::stdout().lock();
        let report = stress::join_and_run(&*device, &plan, self.ring_capacity, &mut out, &stop)?;
        use std::io::Write;
        writeln!(out, "result {}", serde_json::to_string(&report)?)?;
        Ok(())
    }
}

/// Like [`parse_duration`], refusing zero: a run of no time proves nothing.
pub fn parse_run_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("zero: a stress run needs more than zero".to_owned());
    }
    Ok(duration)
}

/// Parses `MIN..MAX` (or a single size).
pub fn parse_range(text: &str) -> Result<(usize, usize), String> {
    let parse = |t: &str| parse_size_as::<usize>(t);
    let (min, max) = match text.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let v = parse(text)?;
            (v, v)
        }
    };
    if min > max || max < ivlink_lab::stress::message::HEADER_LEN {
        return Err("need MIN <= MAX and MAX >= 32".to_owned());
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needs_more_than_no_time() {
        assert!(parse_run_duration("0s").is_err());
        assert!(parse_run_duration("2x").is_err());
        assert_eq!(parse_run_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn ranges_need_room_for_the_header() {
        assert_eq!(parse_range("32..1024"), Ok((32, 1024)));
        assert_eq!(parse_range("64"), Ok((64, 64)));
        assert_eq!(parse_range("1K..4K"), Ok((1024, 4096)));
        assert!(parse_range("100..50").is_err());
        assert!(parse_range("8..16").is_err());
    }
}
