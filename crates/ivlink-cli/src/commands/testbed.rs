//! `ivlink testbed`: a server and peer processes on private paths, exchanging
//! notifications and messages both ways; exits 0 only if everything arrived.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ivlink::testbed::{self, PeerPlan, TestbedConfig};

use crate::server_cmd::parse_size;
use crate::transport_args::TransportArgs;

/// Options of `ivlink testbed`.
#[derive(Debug, Clone, Args)]
pub struct TestbedArgs {
    /// Peer processes to start
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub peers: usize,

    /// Vectors per peer (Zephyr's default is 2)
    #[arg(short = 'n', long, value_name = "N", default_value_t = 2)]
    pub vectors: u16,

    /// Shared memory size
    #[arg(short = 'l', long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    pub size: u64,

    /// Laps of messages around the peers, per vector
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rounds: u32,

    /// Seconds any one step may take
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0)]
    pub timeout: f64,
}

impl TestbedArgs {
    /// Runs the test bed and prints what happened.
    pub fn run(&self) -> anyhow::Result<()> {
        let config = TestbedConfig {
            peers: self.peers,
            vectors: self.vectors,
            size: self.size,
            rounds: self.rounds,
            timeout: Duration::from_secs_f64(self.timeout.max(0.1)),
        };
        let exe = std::env::current_exe().context("cannot find the ivlink executable")?;
        let peers = self.peers;
        let rounds = self.rounds;
        let timeout = self.timeout;
        let nonce = run_nonce();
        let command = move |socket: &Path| {
            let mut command = Command::new(&exe);
            command
                .arg("testbed-peer")
                .arg("--socket")
                .arg(socket)
                .arg("--peers")
                .arg(peers.to_string())
                .arg("--rounds")
                .arg(rounds.to_string())
                .arg("--timeout")
                .arg(timeout.to_string())
                .arg("--nonce")
                .arg(nonce.to_string());
            command
        };
        let mut out = std::io::stdout().lock();
        let summary = testbed::run(&config, &command, &mut out)?;
        use std::io::Write;
        writeln!(
            out,
            "testbed: OK: {} peers exchanged {} messages on {} vector(s), each delivered intact, in both directions",
            summary.peers, summary.messages, config.vectors
        )?;
        Ok(())
    }
}

/// Options of the hidden `ivlink testbed-peer`, one peer of the test bed.
#[derive(Debug, Clone, Args)]
pub struct TestbedPeerArgs {
    /// Peers taking part, this one included
    #[arg(long, default_value_t = 2)]
    pub peers: usize,

    /// Laps per vector
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,

    /// Seconds any one step may take
    #[arg(long, default_value_t = 20.0)]
    pub timeout: f64,

    /// Ids taking part, comma-separated (needed where peers cannot be discovered, as in a guest)
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub ring: Option<Vec<u16>>,

    /// Value unique to this run, marking the peers ready
    #[arg(long, default_value_t = 1)]
    pub nonce: u64,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl TestbedPeerArgs {
    /// Runs one peer's part.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        let plan = PeerPlan {
            peers: self.peers,
            rounds: self.rounds,
            timeout: Duration::from_secs_f64(self.timeout.max(0.1)),
            ring: self.ring.clone(),
            nonce: self.nonce,
        };
        testbed::run_peer(&*device, &plan, &mut std::io::stdout().lock())?;
        Ok(())
    }
}

/// A value that differs between runs (never 0, the region's initial content).
pub fn run_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()) | 1
}
