//! The leader's handle on a peer process: started from this executable,
//! checked while the leader waits for it, and never left behind.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::peer::PeerArgs;

/// The hidden subcommand that runs [`super::peer::run`].
pub const SUBCOMMAND: &str = "iceoryx2-peer";

/// A running peer process.
#[derive(Debug)]
pub struct PeerChild {
    child: std::process::Child,
}

impl PeerChild {
    /// Starts this executable as the peer of `args`. Its standard output goes
    /// to our standard error, so that it can never mix into a JSON report.
    pub fn spawn(args: &PeerArgs) -> anyhow::Result<PeerChild> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating standard error")?;
        let child = Command::new(exe)
            .arg(SUBCOMMAND)
            .args(args.to_args())
            .envs(super::domain::get().env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr))
            .spawn()
            .context("starting the iceoryx2 peer process")?;
        Ok(PeerChild { child })
    }

    /// Fails if the peer has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self
            .child
            .try_wait()
            .context("checking the iceoryx2 peer")?
        {
            None => Ok(()),
            Some(status) => bail!("the iceoryx2 peer process exited early ({status})"),
        }
    }

    /// Waits for the peer to exit, successfully.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let status = self.child.wait().context("waiting for the iceoryx2 peer")?;
        if !status.success() {
            bail!("the iceoryx2 peer process failed ({status})");
        }
        Ok(())
    }
}

impl Drop for PeerChild {
    fn drop(&mut self) {
        // After an error: end the peer we started (it may be spinning on a
        // leader that is gone) and reap it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
