//! `ivlink ntb`: the kernel's NTB test clients over a switch on the region —
//! `tool` (ntb_tool's debugfs files), `pingpong` (ntb_pingpong) and `perf`
//! (ntb_perf).

use std::time::Duration;

use clap::{Args, Subcommand};
use ivlink::Device;
use ivlink::ntb::{Ntb, NtbOptions, NtbShape};
use ivlink::wait::SpinThenSleep;

use crate::grammar::{parse_duration_was_us, parse_size, parse_uint};
use crate::transport_args::TransportArgs;

pub mod perf;
pub mod pingpong;
pub mod tool;

/// `ivlink ntb` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum NtbCommand {
    /// ntb_tool's debugfs files (port, link, db, peer_db, spadN, msgN, peerN/...) as real files
    Tool(tool::ToolArgs),
    /// ntb_pingpong: a counter passed from port to port by doorbell, scratchpad and message
    Pingpong(pingpong::PingpongArgs),
    /// ntb_perf: memory-window copy bandwidth, windows set up by the message handshake
    Perf(perf::PerfArgs),
}

impl NtbCommand {
    /// Runs the subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            NtbCommand::Tool(args) => args.run(),
            NtbCommand::Pingpong(args) => args.run(),
            NtbCommand::Perf(args) => args.run(),
        }
    }
}

/// How the switch is found (and shaped, if this peer creates it) and which port
/// is taken.
#[derive(Debug, Clone, Args)]
pub struct SwitchArgs {
    /// Switch name in the region's directory (created if missing)
    #[arg(long = "switch", value_name = "NAME", default_value = "ntb")]
    pub switch: String,

    /// If creating: ports of the switch (2..=16)
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = parse_uint::<u32>)]
    pub ports: u32,

    /// If creating: bytes per memory window (a multiple of 4096: 256K, 1M, ...)
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    pub mw_size: u64,

    /// If creating: the doorbell vector every event rings
    #[arg(long, value_name = "V", default_value_t = 0, value_parser = parse_uint::<u16>)]
    pub vector: u16,

    /// The port to take (default: the first free one); a port whose owner is gone is taken over
    #[arg(long, value_name = "P", value_parser = parse_uint::<u32>)]
    pub port: Option<u32>,

    /// How long to spin before sleeping on the doorbell (50us, 1ms, ...)
    #[arg(long, value_name = "TIME", default_value = "50us", value_parser = parse_duration_was_us)]
    pub spin: Duration,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl SwitchArgs {
    /// Opens the transport.
    pub fn device(&self) -> anyhow::Result<Box<dyn Device>> {
        Ok(self.transport.transport().open()?)
    }

    /// The shape the switch gets if this peer creates it.
    pub fn shape(&self) -> NtbShape {
        NtbShape {
            mw_size: self.mw_size,
            vector: self.vector,
            ..NtbShape::new(self.ports)
        }
    }

    /// Finds or creates the switch on `device` and takes a port.
    pub fn open<'d>(&self, device: &'d dyn Device) -> anyhow::Result<Ntb<'d>> {
        let options = NtbOptions {
            port: self.port,
            timeout: Duration::from_secs(10),
            policy: SpinThenSleep { spin: self.spin },
        };
        Ok(Ntb::open(device, &self.switch, self.shape(), options)?)
    }
}
