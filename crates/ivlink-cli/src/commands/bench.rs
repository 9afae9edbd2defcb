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

    /// Scaling instead: N independent sender/receiver pairs at once, each on its own ring (ivlink and the memcpy ring), for each N given; sizes 64 and 4K unless --sizes
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', value_parser = parse_pairs, conflicts_with = "server_peers")]
    pub pairs: Option<Vec<usize>>,

    /// Scaling instead: the server's connect cost for each peer count given (real clients on a private socket)
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', value_parser = parse_server_peers)]
    pub server_peers: Option<Vec<usize>>,

    /// Vectors (eventfds) per peer with --server-peers
    #[arg(long, value_name = "N", default_value_t = 1, requires = "server_peers", value_parser = clap::value_parser!(u16).range(1..=i64::from(ivlink::server::MAX_VECTORS)))]
    pub vectors: u16,
}

/// A pair count: 1 to [`bench::scaling::MAX_PAIRS`].
fn parse_pairs(text: &str) -> Result<usize, String> {
    parse_count(text, bench::scaling::MAX_PAIRS)
}

/// A peer count: 1 to [`bench::scaling::MAX_SERVER_PEERS`].
fn parse_server_peers(text: &str) -> Result<usize, String> {
    parse_count(text, bench::scaling::MAX_SERVER_PEERS)
}

fn parse_count(text: &str, most: usize) -> Result<usize, String> {
    match parse_uint::<usize>(text)? {
        0 => Err("zero: give 1 or more".to_owned()),
        n if n > most => Err(format!("too large (at most {most})")),
        n => Ok(n),
    }
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
        let progress = ivlink_lab::progress::Progress::new(self.json);
        if let Some(counts) = &self.server_peers {
            let report =
                bench::scaling::run_connect(counts, self.vectors, config.timeout, &progress)?;
            return self.print(|| report.to_json(), |out| report.write_table(out));
        }
        if let Some(pairs) = &self.pairs {
            let sizes = self.sizes.as_ref().map(|_| config.sizes.clone());
            let scaling = bench::scaling::ScalingConfig::from_bench(&config, pairs, sizes);
            let report = bench::scaling::run_pairs(&scaling, &progress)?;
            return self.print(|| report.to_json(), |out| report.write_table(out));
        }
        let exe = std::env::current_exe().context("cannot find the ivlink executable")?;
        let command = move || {
            let mut command = Command::new(&exe);
            command.arg("bench-peer").arg("--");
            command
        };
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

impl BenchArgs {
    /// Prints a scaling report: JSON or the table.
    fn print(
        &self,
        json: impl FnOnce() -> String,
        table: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", json())?;
        } else {
            table(&mut out)?;
        }
        out.flush()?;
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
