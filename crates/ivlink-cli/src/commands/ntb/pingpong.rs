//! `ivlink ntb pingpong`.

use clap::Args;

use super::SwitchArgs;

/// Options of `ivlink ntb pingpong`.
#[derive(Debug, Clone, Args)]
pub struct PingpongArgs {
    /// The switch and the port
    #[command(flatten)]
    pub switch: SwitchArgs,
}

impl PingpongArgs {
    /// Runs it.
    pub fn run(&self) -> anyhow::Result<()> {
        anyhow::bail!("ivlink ntb pingpong is not available yet")
    }
}
