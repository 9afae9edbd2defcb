//! Project automation for ivlink, run as `cargo xtask <command>`.
//!
//! - `vm-image`: builds the test guest image (kernel, initramfs) from Debian's
//!   packages and a static `ivlink`, into `target/vm-image`.
//! - `vm-smoke`: boots one guest on an `ivlink server` and checks it works.
//! - `vm-test`: the VM tests: guests and a host peer on one server, end to end.
//! - `man`: the man pages, generated from the command line's definitions.
//! - `deb`: the Debian package (binaries, man pages, completions, systemd units).

mod cpio;
mod deb;
mod harness;
mod image;
mod man;
mod phases;
mod smoke;
mod vm_test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "ivlink's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)] // variants are the commands users type: vm-image, vm-test...
enum Task {
    /// Build the test guest image (vmlinuz, vmlinux, initramfs.gz, manifest.txt)
    VmImage {
        /// Output directory [default: target/vm-image]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Boot one guest on an `ivlink server`, run a few commands in it, report
    VmSmoke(smoke::SmokeArgs),
    /// Run the VM tests: two guests and a host peer, notifications both ways, a
    /// guest leaving and a new one joining
    VmTest(vm_test::VmTestArgs),
    /// Write the man pages (ivlink.1, one per command, the drop-in tools')
    Man {
        /// Output directory [default: target/man]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Build the Debian package (release binaries, man pages, completions, systemd units)
    Deb {
        /// Output directory [default: target/debian]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    let result = match cli.command {
        Task::VmImage { out } => {
            let out = out.unwrap_or_else(|| ivlink_lab::vm::default_image_dir(&root));
            image::build(&root, &out).map(|_| ())
        }
        Task::VmSmoke(args) => smoke::run(&root, &args),
        Task::VmTest(args) => vm_test::run(&root, &args),
        Task::Man { out } => {
            let out = out.unwrap_or_else(|| root.join("target").join("man"));
            man::generate(&root, &out).map(|pages| {
                println!("{} man pages in {}", pages.len(), out.display());
            })
        }
        Task::Deb { out } => {
            let out = out.unwrap_or_else(|| root.join("target").join("debian"));
            deb::build(&root, &out).map(|deb| println!("{}", deb.display()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's root directory (this crate's parent).
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}
