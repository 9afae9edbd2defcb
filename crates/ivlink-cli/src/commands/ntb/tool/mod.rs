//! `ivlink ntb tool`: Linux's ntb_tool debugfs files (`port`, `link`, `db`,
//! `peer_db`, `spadN`, `msgN`, `msg_sts`, `peerN/...`) over one port of a
//! switch on the region, with the kernel's formats, parsers and errnos.
//!
//! `--mount DIR` serves them as real files through FUSE until SIGINT or
//! SIGTERM; `read FILE` and `write FILE VALUE` do one file without FUSE.
//!
//! A one-shot run takes a port for its own lifetime, and taking a port clears
//! its registers, so its own `db`, `spadN` and `msgN` always start empty: it
//! is for the peer side (`peer_db`, `peerN/spadM`, `peerN/msgM`, `peerN/port`,
//! `peerN/link`, ...) of ports held by longer-lived processes (a `--mount`,
//! `ivlink ntb pingpong`, a guest's driver), and for the switch's fixed values.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::SwitchArgs;

mod files;
mod fuse;
mod ops;

/// Options of `ivlink ntb tool`.
#[derive(Debug, Clone, Args)]
pub struct ToolArgs {
    /// The switch and the port
    #[command(flatten)]
    pub switch: SwitchArgs,

    /// Serve the files under DIR (FUSE) until SIGINT/SIGTERM
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,

    /// One file at a time, without FUSE
    #[command(subcommand)]
    pub action: Option<ToolAction>,
}

/// `ivlink ntb tool read|write`.
#[derive(Debug, Clone, Subcommand)]
pub enum ToolAction {
    /// Print a file (`db`, `peer0/spad0`, `msg0`, ...)
    Read {
        /// The file's path in ntb_tool's directory
        file: String,
    },
    /// Write VALUE into a file, as `echo -n VALUE > FILE` would (`peer_db 's 0x1'`)
    Write {
        /// The file's path in ntb_tool's directory
        file: String,
        /// What to write
        value: String,
    },
}

impl ToolArgs {
    /// Runs it.
    pub fn run(&self) -> anyhow::Result<()> {
        let stop = crate::commands::stop_flag()?;
        match (&self.mount, &self.action) {
            (Some(dir), None) => self.mount(dir, stop),
            (None, Some(action)) => self.once(action, &stop),
            (Some(_), Some(_)) => bail!("give either --mount DIR or read/write, not both"),
            (None, None) => {
                bail!("give --mount DIR, or `read FILE`, or `write FILE VALUE`")
            }
        }
    }

    fn mount(&self, dir: &std::path::Path, stop: std::sync::Arc<AtomicBool>) -> anyhow::Result<()> {
        // The filesystem outlives any borrow fuser could take: the device stays
        // for the life of the process; the port is released when serving ends.
        let device: &'static dyn ivlink::Device = Box::leak(self.switch.device()?);
        let ntb = self.switch.open(device)?;
        // ntb_tool enables the link when it probes.
        ntb.link_enable()?;
        fuse::serve(ntb, dir, stop, |ntb| {
            println!(
                "ntb tool: port {} of switch '{}' ({} ports), files at {}",
                ntb.port_number(),
                self.switch.switch,
                ntb.port_count(),
                dir.display()
            );
        })
    }

    fn once(&self, action: &ToolAction, stop: &AtomicBool) -> anyhow::Result<()> {
        let device = self.switch.device()?;
        let ntb = self.switch.open(&*device)?;
        ntb.link_enable()?;
        let (path, value) = match action {
            ToolAction::Read { file } => (file, None),
            ToolAction::Write { file, value } => (file, Some(value)),
        };
        let failed = |e: rustix::io::Errno| {
            let text = std::io::Error::from_raw_os_error(e.raw_os_error());
            anyhow::anyhow!("{path}: {}", without_code(&text.to_string()))
        };
        let file = ops::lookup(&ntb, path).map_err(failed)?;
        match value {
            None => {
                let bytes = if file.is_window() {
                    let mut bytes = Vec::new();
                    loop {
                        let chunk =
                            ops::read(&ntb, &file, bytes.len() as u64, 1 << 16).map_err(failed)?;
                        if chunk.is_empty() {
                            break;
                        }
                        bytes.extend(chunk);
                    }
                    bytes
                } else {
                    ops::read_text(&ntb, &file).map_err(failed)?.into_bytes()
                };
                use std::io::Write;
                std::io::stdout().write_all(&bytes)?;
            }
            Some(value) => {
                ops::write(&ntb, &file, 0, value.as_bytes(), stop).map_err(failed)?;
            }
        }
        Ok(())
    }
}

/// "Invalid argument (os error 22)" without the code.
fn without_code(text: &str) -> &str {
    text.rsplit_once(" (os error").map_or(text, |(t, _)| t)
}
