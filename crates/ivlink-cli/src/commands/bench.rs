//! `ivlink bench`: ivlink between two host processes against baselines measured
//! in the same run (latency percentiles, streaming throughput, targets).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use clap::Args;
use ivlink_lab::bench::{self, BenchConfig};

use crate::grammar::{parse_size, parse_size_as, parse_uint};

/// Options of `ivlink bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Small iteration counts: a few seconds, rough figures (smoke test)
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object instead of the tables
    #[arg(long)]
    pub json: bool,

    /// Also write the latency plot (SVG) to PATH
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,

    /// Message sizes for the throughput runs, comma-separated
    #[arg(long, value_name = "SIZES", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Option<Vec<u64>>,

    /// Streaming ring data area (a power of two)
    #[arg(long, value_name = "SIZE", default_value = "256K", value_parser = parse_size)]
    pub ring_size: u64,

    /// Messages per publication and per release on the rings
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = parse_uint::<usize>)]
    pub batch: usize,

    /// Ping-pong payload (a size: 64, 1K, ...)
    #[arg(long, value_name = "SIZE", default_value_t = 64, value_parser = parse_size_as::<usize>)]
    pub payload: usize,

    /// Runs of every stream, interleaved; the median is reported [default: 3, 1 with --quick]
    #[arg(long, value_name = "N", value_parser = parse_uint::<usize>)]
    pub rounds: Option<usize>,

    /// Do not pin the two processes to two CPUs
    #[arg(long)]
    pub no_pin: bool,
}

impl BenchArgs {
    /// Runs the benchmark and prints the report.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut config = if self.quick {
            BenchConfig::quick()
        } else {
            BenchConfig::standard()
        };
        if let Some(sizes) = &self.sizes {
            config.sizes = sizes
                .iter()
                .map(|&s| usize::try_from(s))
                .collect::<Result<_, _>>()?;
        }
        config.ring = usize::try_from(self.ring_size)?;
        config.batch = self.batch;
        config.payload = self.payload;
        config.pin = !self.no_pin;
        if let Some(rounds) = self.rounds {
            config.rounds = rounds;
        }
        let exe = std::env::current_exe().context("cannot find the ivlink executable")?;
        let command = move || {
            let mut command = Command::new(&exe);
            command.arg("bench-peer").arg("--");
            command
        };
        let progress = ivlink_lab::progress::Progress::new(self.json);
        let report = bench::run(&config, &command, &progress)?;
        if let Some(path) = &self.svg {
            bench::write_svg(&report, path)?;
        }
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", report.to_json())?;
        } else {
            report.write_table(&mut out)?;
            if let Some(path) = &self.svg {
                writeln!(out, "Latency plot: {}", path.display())?;
            }
        }
        Ok(())
    }
}

/// Options of the hidden `ivlink bench-peer`: the peer process of a measurement.
#[derive(Debug, Clone, Args)]
pub struct BenchPeerArgs {
    /// The measurement, as `ivlink bench` encodes it
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub job: Vec<String>,
}

impl BenchPeerArgs {
    /// Runs the peer's part (control channel on stdin).
    pub fn run(&self) -> anyhow::Result<()> {
        bench::run_peer(&self.job)?;
        Ok(())
    }
}
