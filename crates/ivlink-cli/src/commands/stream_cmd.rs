//! `ivlink stream`: like `nc`, copies standard input to a byte stream to one peer
//! and the stream to standard output, until both have ended; or relays the
//! stream to a pty or a command ([`crate::relay_args`]).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ivlink::stream::Stream;
use ivlink::wait::SpinThenSleep;

use crate::grammar::{parse_duration, parse_duration_was_us, parse_size_as, parse_uint};
use crate::relay_args::{RELAY_HELP, RelayArgs};
use crate::transport_args::TransportArgs;

/// Options of `ivlink stream`.
#[derive(Debug, Clone, Args)]
#[command(after_help = RELAY_HELP)]
pub struct StreamArgs {
    /// Stream name (created in the region's directory if missing)
    pub name: String,

    /// The peer at the other end
    #[arg(long, value_name = "N", value_parser = parse_uint::<u16>)]
    pub peer: u16,

    /// If creating: data bytes per direction (a power of two, at least 128: 64K, 1M, ...)
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size_as::<usize>)]
    pub capacity: usize,

    /// If creating: the doorbell vector of the stream
    #[arg(long, value_name = "V", default_value_t = 0, value_parser = parse_uint::<u16>)]
    pub vector: u16,

    /// How long to spin before sleeping on the doorbell (50us, 1ms, ...)
    #[arg(long, value_name = "TIME", default_value = "50us", value_parser = parse_duration_was_us)]
    pub spin: Duration,

    /// How long to wait while another peer sets the stream up, and for the peer to open it
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Say on standard error which peer this is once the stream is open
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Where the stream goes
    #[command(flatten)]
    pub relay: RelayArgs,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl StreamArgs {
    /// Copies both ways until standard input and the stream have both ended.
    pub fn run(&self) -> anyhow::Result<()> {
        let relay = self.relay.prepare("stream")?;
        let device = self.transport.transport().open()?;
        let timeout = self.timeout;
        let mut stream = Stream::open(
            &*device,
            &self.name,
            self.peer,
            self.capacity,
            self.vector,
            timeout,
        )
        .with_context(|| format!("opening stream '{}'", self.name))?;
        stream.set_policy(SpinThenSleep { spin: self.spin });
        if self.verbose {
            eprintln!(
                "peer {} on stream '{}' to peer {}",
                device.id(),
                self.name,
                self.peer
            );
        }
        // Without this, a peer that never comes leaves us waiting for its bytes forever.
        stream
            .wait_for_peer(timeout)
            .with_context(|| format!("opening stream '{}'", self.name))?;
        relay.run(stream)
    }
}
