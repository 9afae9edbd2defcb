//! `ivlink ntb perf`.

use clap::Args;

use super::SwitchArgs;

/// Options of `ivlink ntb perf`.
#[derive(Debug, Clone, Args)]
pub struct PerfArgs {
    /// The switch and the port
    #[command(flatten)]
    pub switch: SwitchArgs,
}

impl PerfArgs {
    /// Runs it.
    pub fn run(&self) -> anyhow::Result<()> {
        anyhow::bail!("ivlink ntb perf is not available yet")
    }
}
