//! `ivlink ntb tool`.

use clap::Args;

use super::SwitchArgs;

/// Options of `ivlink ntb tool`.
#[derive(Debug, Clone, Args)]
pub struct ToolArgs {
    /// The switch and the port
    #[command(flatten)]
    pub switch: SwitchArgs,
}

impl ToolArgs {
    /// Runs it.
    pub fn run(&self) -> anyhow::Result<()> {
        anyhow::bail!("ivlink ntb tool is not available yet")
    }
}
