//! `ivlink console bench`: a native console between two host processes against
//! a UNIX socket and a pty pair (bulk throughput, keystroke round trips,
//! targets).

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ivlink_lab::bench::console::{self, ConsoleBenchConfig};

use crate::grammar::{parse_duration_was_us, parse_size, parse_uint};

/// Options of `ivlink console bench`.
#[derive(Debug, Clone, Args)]
pub struct ConsoleBenchArgs {
    /// Small counts: about a second, rough figures (smoke test)
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,

    /// Bulk bytes each way per mechanism [default: 1G, 16M with --quick]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub bytes: Option<u64>,

    /// Keystroke round trips measured per mechanism [default: 20000, 1000 with --quick]
    #[arg(long, value_name = "N", value_parser = parse_uint::<u64>)]
    pub round_trips: Option<u64>,

    /// Bytes per bulk write
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size)]
    pub write_size: u64,

    /// Console entries per queue (a power of two up to 64)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = parse_uint::<u16>)]
    pub buffers: u16,

    /// Console bytes per buffer (a multiple of 64, up to 64K)
    #[arg(long, value_name = "SIZE", default_value = "16K", value_parser = parse_size)]
    pub buffer_size: u64,

    /// How long a console side spins before sleeping on the doorbell (50us, 1ms, ...)
    #[arg(long, value_name = "TIME", default_value = "50us", value_parser = parse_duration_was_us)]
    pub spin: Duration,

    /// Do not pin the two processes to two CPUs
    #[arg(long)]
    pub no_pin: bool,
}

impl ConsoleBenchArgs {
    /// Runs the benchmark and prints the report.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut config = if self.quick {
            ConsoleBenchConfig::quick()
        } else {
            ConsoleBenchConfig::standard()
        };
        if let Some(bytes) = self.bytes {
            config.bytes = bytes;
        }
        if let Some(round_trips) = self.round_trips {
            config.round_trips = round_trips;
        }
        config.chunk = usize::try_from(self.write_size)?;
        config.buffers = self.buffers;
        config.buffer_size = u32::try_from(self.buffer_size).context("--buffer-size")?;
        config.spin = self.spin;
        config.pin = !self.no_pin;
        let exe = std::env::current_exe().context("cannot find the ivlink executable")?;
        let command = move || {
            let mut command = Command::new(&exe);
            command.args(["console", "bench-peer", "--"]);
            command
        };
        let progress = ivlink_lab::progress::Progress::new(self.json);
        let report = console::run(&config, &command, &progress)?;
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", report.to_json())?;
        } else {
            report.write_table(&mut out)?;
        }
        Ok(())
    }
}
