//! `ivlink inspect`: decode a live region (directory, sections, channels and their
//! rings, mailboxes and their boxes, streams and their ends, RPMsg links, consoles,
//! NTB switches and their ports).

use clap::Args;

use crate::transport_args::TransportArgs;

/// Options of `ivlink inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl InspectArgs {
    /// Reads the region and prints what is in it; exits non-zero if anything is
    /// inconsistent or the layout is unrecognised.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        let report = ivlink::inspect::inspect(device.region());
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{report}");
        }
        // The verdict printed above, as the exit code.
        if !report.ok {
            anyhow::bail!("{}", report.verdict);
        }
        Ok(())
    }
}
