//! `ivlink format`: give a region an empty ivlink directory, forgetting every
//! section (and taking over a region that holds something else).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::Args;
use ivlink::directory;
use ivlink::{Device, Region};
use serde::Serialize;

use crate::report::Lines;
use crate::transport_args::TransportArgs;

/// Options of `ivlink format`.
#[derive(Debug, Clone, Args)]
pub struct FormatArgs {
    /// Do not ask: format right away
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Format even while other peers are connected (they lose their sections)
    #[arg(long)]
    pub force: bool,

    /// Entries of the new directory
    #[arg(long, value_name = "N", default_value_t = ivlink::channel::DEFAULT_MAX_SECTIONS,
          value_parser = crate::grammar::parse_uint::<u32>)]
    pub max_sections: u32,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// What `ivlink format --json` prints.
#[derive(Debug, Serialize)]
struct Formatted {
    size: usize,
    directory_offset: usize,
    max_sections: u32,
    message_area_len: usize,
    transport: String,
}

impl FormatArgs {
    /// Checks that nobody else uses the region (where the transport knows), asks
    /// unless `--yes`, then writes the empty directory.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        if device.knows_peers() && !self.force {
            refuse_if_peers(&*device)?;
        }
        let lines = Lines::new(self.json);
        if !self.yes {
            confirm(&*device, &mut lines.prose())?;
        }
        let dir = directory::format(device.region(), self.max_sections)
            .context("cannot format the region")?;
        if self.json {
            return crate::report::print_json(&Formatted {
                size: device.region().len(),
                directory_offset: dir.offset(),
                max_sections: dir.max_sections(),
                message_area_len: directory::MESSAGE_AREA_LEN,
                transport: device.describe(),
            });
        }
        println!(
            "formatted the {}-byte region: an empty directory at offset {} ({} entries); the first {} bytes are the message area",
            device.region().len(),
            dir.offset(),
            dir.max_sections(),
            directory::MESSAGE_AREA_LEN
        );
        Ok(())
    }
}

fn refuse_if_peers(device: &dyn Device) -> anyhow::Result<()> {
    let peers = device.peers();
    if peers.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = peers.iter().map(|p| p.id.to_string()).collect();
    anyhow::bail!(
        "not formatting: {} other peer(s) are connected (peer {}) and would lose their sections; stop them first, or pass --force",
        peers.len(),
        ids.join(", ")
    );
}

/// Asks on `prompt` (standard error with `--json`), reads the answer from the terminal.
fn confirm(device: &dyn Device, prompt: &mut dyn Write) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!(
            "not formatting without confirmation: pass --yes to format {} (every section in it is forgotten)",
            device.describe()
        );
    }
    write!(
        prompt,
        "Format the {}-byte region of {}? Every section in it is forgotten. [y/N] ",
        device.region().len(),
        device.describe()
    )?;
    prompt.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        anyhow::bail!("not formatting: not confirmed");
    }
    Ok(())
}
