//! `ivlink dump`: what this peer sees, in the shape of Zephyr's `ivshmem` shell.

use std::io::Write;

use clap::Args;
use ivlink::{Device, Region};

use crate::transport_args::TransportArgs;

/// Options of `ivlink dump`.
#[derive(Debug, Clone, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    transport: TransportArgs,
}

impl DumpArgs {
    /// Connects, prints, disconnects.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        print(&*device, &mut std::io::stdout().lock())?;
        Ok(())
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
