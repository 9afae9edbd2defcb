//! The command line: the comparison's options, and the hidden subcommands
//! that run the two peer processes.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::iox::peer::PeerArgs;
use crate::settings::Settings;

/// ivlink against iceoryx2 publish-subscribe, measured in one run: one-way
/// latency with busy-polling receivers and streaming throughput, two
/// processes on two CPUs, with the ratio ivlink / iceoryx2.
#[derive(Debug, Parser)]
#[command(
    name = "ivlink-iceoryx2-compare",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// The comparison's options.
    #[command(flatten)]
    pub options: Options,
    /// A peer process's role (started by the run itself).
    #[command(subcommand)]
    pub role: Option<Role>,
}

/// The peer processes' roles.
#[derive(Debug, Subcommand)]
pub enum Role {
    /// ivlink's peer process (`ivlink bench-peer`)
    #[command(name = "bench-peer", hide = true)]
    IvlinkPeer {
        /// The measurement, as `ivlink bench` encodes it
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        job: Vec<String>,
    },
    /// iceoryx2's peer process
    #[command(name = "iceoryx2-peer", hide = true)]
    Iceoryx2Peer(PeerArgs),
}

/// Options of the comparison.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Small counts: a few seconds in all, rough figures (CI smoke run)
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,

    /// Most time per latency run, seconds [default: 2, 0.15 with --quick]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Round trips recorded at most per latency run [default: 200000, 5000 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,

    /// Most time per throughput run, seconds [default: 0.15, 0.04 with --quick]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub stream_time: Option<Duration>,

    /// Rounds, each side measured once per round, taking turns going first; the median round is reported [default: 3, 1 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rounds: Option<u64>,

    /// Message sizes of the throughput runs, comma-separated (suffixes K, M) [default: `ivlink bench`'s: 64,256,1K,4K,16K,64K; 64,4K,64K with --quick]
    #[arg(long, value_name = "SIZES", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Option<Vec<usize>>,

    /// Ping-pong payload in bytes (1 to 1024)
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub payload: u64,

    /// iceoryx2 subscriber buffer of the streams, samples [default: 256 KiB of messages, 16 to 4096]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub queue_depth: Option<u64>,

    /// Do not pin the two processes to two CPUs
    #[arg(long)]
    pub no_pin: bool,

    /// How long either side may wait for the other before the run fails, seconds
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "10")]
    pub timeout: Duration,
}

impl Options {
    /// The run's settings: the defaults of a full or `--quick` run, with what
    /// was given on the command line.
    pub fn settings(&self) -> Settings {
        let defaults = Settings::defaults(self.quick);
        Settings {
            payload: self.payload as usize,
            iterations: self.iterations.unwrap_or(defaults.iterations),
            duration: self.duration.unwrap_or(defaults.duration),
            sizes: self.sizes.clone().unwrap_or(defaults.sizes.clone()),
            stream_time: self.stream_time.unwrap_or(defaults.stream_time),
            rounds: self.rounds.map_or(defaults.rounds, |n| n as usize),
            queue_depth: self.queue_depth.map(|n| n as usize),
            pin: !self.no_pin,
            timeout: self.timeout,
            ..defaults
        }
    }
}

/// "2", "0.5": seconds.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?}: give a positive number of seconds"))
}

/// "64", "4K", "4KiB", "1M": bytes, at least 1.
fn parse_size(text: &str) -> Result<usize, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shift = match &text[digits.len()..] {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        unit => return Err(format!("unknown unit {unit:?} (use K or M)")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a size in bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("compare").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_defaults_are_the_full_run() {
        let cli = parse(&[]);
        assert!(cli.role.is_none());
        let settings = cli.options.settings();
        assert_eq!(settings, Settings::defaults(false));
        assert_eq!(
            settings.sizes,
            ivlink_lab::bench::BenchConfig::standard().sizes,
            "the sizes of `ivlink bench`"
        );
        let quick = parse(&["--quick"]).options.settings();
        assert_eq!(quick.sizes, vec![64, 4096, 64 << 10]);
    }

    #[test]
    fn options_override_the_quick_defaults() {
        let cli = parse(&[
            "--quick",
            "--json",
            "--duration",
            "0.5",
            "--iterations",
            "1000",
            "--sizes",
            "64,1K",
            "--rounds",
            "2",
            "--queue-depth",
            "32",
            "--no-pin",
        ]);
        assert!(cli.options.json);
        let settings = cli.options.settings();
        assert!(settings.quick);
        assert_eq!(settings.duration, Duration::from_millis(500));
        assert_eq!(settings.iterations, 1000);
        assert_eq!(settings.sizes, vec![64, 1024]);
        assert_eq!(settings.rounds, 2);
        assert_eq!(settings.queue_depth, Some(32));
        assert!(!settings.pin);
        assert_eq!(
            settings.stream_time,
            Settings::defaults(true).stream_time,
            "not given: quick's"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["--duration", "0"][..],
            &["--duration", "x"],
            &["--iterations", "0"],
            &["--rounds", "0"],
            &["--sizes", "0"],
            &["--sizes", "4Q"],
            &["--payload", "2000"],
        ] {
            let line = std::iter::once("compare").chain(args.iter().copied());
            assert!(Cli::try_parse_from(line).is_err(), "{args:?}");
        }
    }

    #[test]
    fn the_peer_roles_parse() {
        let cli = parse(&["bench-peer", "--", "mechanism=pipe", "pattern=stream"]);
        assert!(
            matches!(cli.role, Some(Role::IvlinkPeer { job }) if job == ["mechanism=pipe", "pattern=stream"])
        );
        let cli = parse(&[
            "iceoryx2-peer",
            "--pattern=stream",
            "--data=a",
            "--back=b",
            "--node=n",
            "--size=64",
            "--depth=4",
            "--timeout-ms=100",
        ]);
        assert!(matches!(cli.role, Some(Role::Iceoryx2Peer(_))));
    }
}
