//! `ivlink dump`: what this peer sees, in the shape of Zephyr's `ivshmem` shell.

use std::io::Write;

use clap::Args;
use ivlink::{Device, PeerId, Region};
use serde::Serialize;

use crate::transport_args::TransportArgs;

/// Options of `ivlink dump`.
#[derive(Debug, Clone, Args)]
pub struct DumpArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    transport: TransportArgs,
}

impl DumpArgs {
    /// Connects, prints, disconnects.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        if self.json {
            crate::report::print_json(&Dump::of(&*device))?;
        } else {
            print(&*device, &mut std::io::stdout().lock())?;
        }
        Ok(())
    }
}

/// What `ivlink dump --json` prints.
#[derive(Debug, Serialize)]
struct Dump {
    id: PeerId,
    vectors: usize,
    region: RegionReport,
    peers: Vec<PeerReport>,
    transport: String,
}

#[derive(Debug, Serialize)]
struct RegionReport {
    base_address: usize,
    size: usize,
}

#[derive(Debug, Serialize)]
struct PeerReport {
    id: PeerId,
    vectors: usize,
}

impl Dump {
    fn of(device: &dyn Device) -> Self {
        let region = device.region();
        Dump {
            id: device.id(),
            vectors: device.vectors(),
            region: RegionReport {
                base_address: region.base_address(),
                size: region.len(),
            },
            peers: device
                .peers()
                .iter()
                .map(|p| PeerReport {
                    id: p.id,
                    vectors: p.vectors,
                })
                .collect(),
            transport: device.describe(),
        }
    }
}

/// Prints the region, this peer and the known peers.
pub fn print(device: &dyn Device, out: &mut dyn Write) -> std::io::Result<()> {
    let region = device.region();
    writeln!(out, "IVshmem up and running: ")?;
    writeln!(
        out,
        "\tShared memory: {:#x} of size {} bytes",
        region.base_address(),
        region.len()
    )?;
    writeln!(out, "\tPeer id: {}", device.id())?;
    writeln!(out, "\tNotification vectors: {}", device.vectors())?;
    let peers = device.peers();
    if peers.is_empty() {
        writeln!(out, "\tPeers: none")?;
    } else {
        let list: Vec<String> = peers
            .iter()
            .map(|p| {
                format!(
                    "{} ({} vector{})",
                    p.id,
                    p.vectors,
                    if p.vectors == 1 { "" } else { "s" }
                )
            })
            .collect();
        writeln!(out, "\tPeers: {}", list.join(", "))?;
    }
    writeln!(out, "\tTransport: {}", device.describe())
}
