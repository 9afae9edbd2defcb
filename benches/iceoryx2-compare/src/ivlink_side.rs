//! ivlink's side of the comparison: `ivlink bench` itself, through its public
//! API (an embedded ivshmem server, two host peers in two processes, the same
//! ping-pong and stream loops), run from this executable.

use std::process::Command;

use anyhow::Context;
use ivlink_lab::bench::{self, LatencyResult, Report, ThroughputResult};
use ivlink_lab::progress::Progress;

use crate::settings::Settings;

/// The hidden subcommand that runs ivlink's peer process.
pub const PEER_SUBCOMMAND: &str = "bench-peer";

/// ivlink's busy-poll ping-pong in `ivlink bench`'s report.
pub const BUSY: &str = "ivlink-busy";
/// ivlink's streams (publish per batch).
pub const STREAM: &str = "ivlink";
/// ivlink's zero-copy streams (write and read grants, publish per batch).
pub const STREAM_ZERO_COPY: &str = "ivlink-grant";
/// ivlink's 64-byte stream publishing every message.
pub const STREAM_EVERY_MESSAGE: &str = "ivlink-batch1";
/// The plain memcpy ring's busy-poll ping-pong (a floor for any ring).
pub const MEMCPY_BUSY: &str = "memcpy-ring-busy";

/// Runs `ivlink bench` with `settings`' counts and sizes. Every mechanism of
/// `ivlink bench` is measured (its baselines too); the comparison uses
/// ivlink's rows and quotes the memcpy ring as a floor.
pub fn measure(settings: &Settings, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let command = move || {
        let mut command = Command::new(&exe);
        command.arg(PEER_SUBCOMMAND).arg("--");
        command
    };
    progress("ivlink bench");
    // Its bar shows only at a terminal, as the lines of `progress`.
    let bar = Progress::new(false);
    Ok(bench::run(&settings.ivlink_config(), &command, &bar)?)
}

/// The peer process's part (the hidden subcommand).
pub fn run_peer(job: &[String]) -> anyhow::Result<()> {
    Ok(bench::run_peer(job)?)
}

/// ivlink's busy-poll latency.
pub fn busy_latency(report: &Report) -> anyhow::Result<&LatencyResult> {
    report
        .latency(BUSY)
        .with_context(|| format!("ivlink bench reported no {BUSY} latency"))
}

/// ivlink's stream of `size`-byte messages, copied in and out or (with
/// `zero_copy`) through grants.
pub fn stream(report: &Report, size: usize, zero_copy: bool) -> anyhow::Result<&ThroughputResult> {
    let mechanism = if zero_copy { STREAM_ZERO_COPY } else { STREAM };
    report
        .throughput(mechanism, size)
        .with_context(|| format!("ivlink bench reported no {size}-byte {mechanism} stream"))
}
