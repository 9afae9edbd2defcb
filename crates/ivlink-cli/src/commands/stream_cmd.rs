//! `ivlink stream`: like `nc`, copies standard input to a byte stream to one peer
//! and the stream to standard output, until both have ended; or relays the
//! stream to a pty or a command ([`crate::relay_args`]).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ivlink::stream::Stream;
use ivlink::wait::SpinThenSleep;

use crate::relay_args::{RELAY_HELP, RelayArgs};
use crate::transport_args::TransportArgs;

/// Options of `ivlink stream`.
#[derive(Debug, Clone, Args)]
#[command(after_help = RELAY_HELP)]
pub struct StreamArgs {
    /// Stream name (created in the region's directory if missing)
    pub name: String,

    /// The peer at the other end
    #[arg(long, value_name = "N")]
    pub peer: u16,

    /// If creating: data bytes per direction (a power of two, at least 128)
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub capacity: usize,

    /// If creating: the doorbell vector of the stream
    #[arg(long, value_name = "V", default_value_t = 0)]
    pub vector: u16,

    /// Microseconds to spin before sleeping on the doorbell
    #[arg(long, value_name = "US", default_value_t = 50)]
    pub spin: u64,

    /// Seconds to wait while another peer sets the stream up, and for the peer to open it
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,

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
        let timeout = Duration::from_secs_f64(self.timeout.max(0.0));
        let mut stream = Stream::open(
            &*device,
            &self.name,
            self.peer,
            self.capacity,
            self.vector,
            timeout,
        )
        .with_context(|| format!("opening stream '{}'", self.name))?;
        stream.set_policy(SpinThenSleep {
            spin: Duration::from_micros(self.spin),
        });
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
