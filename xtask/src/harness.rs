//! What the VM checks share: the image, the host `ivlink` binary, and an
//! `ivlink server` process on a private socket.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

/// Guest options every VM check takes.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// Use the image in DIR as it is [default: build target/vm-image first]
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// QEMU accelerator (KVM guests hang on this project's machines)
    #[arg(long, default_value = "tcg")]
    pub accel: String,
    /// Seconds allowed from starting QEMU to the guest's shell
    #[arg(long, default_value_t = 120)]
    pub ready_timeout: u64,
    /// Keep the run directory (serial logs) even when every check passes
    #[arg(long)]
    pub keep: bool,
}

/// The image in `dir`, or `target/vm-image` built (or reused) first.
pub fn prepare_image(root: &Path, dir: Option<&Path>) -> Result<PathBuf> {
    let image_dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let out = ivlink_lab::vm::default_image_dir(root);
            crate::image::build(root, &out)?;
            out
        }
    };
    ensure!(
        ivlink_lab::vm::image_exists(&image_dir),
        "no image in {} (run `cargo xtask vm-image`)",
        image_dir.display()
    );
    Ok(image_dir)
}

/// Builds the host's `ivlink` (debug) and returns its path.
pub fn build_host_ivlink(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "-p", "ivlink-cli", "--bin", "ivlink"])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build -p ivlink-cli failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("ivlink");
    ensure!(bin.is_file(), "no {}", bin.display());
    Ok(bin)
}

/// A child process killed by its pid and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ivlink server -F` on `<dir>/ivshmem.sock` with a sealed memfd, logging to
/// `<dir>/server.log`; killed when dropped.
pub struct ServerProcess {
    child: Killed,
    socket: PathBuf,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the server and waits until it listens.
    pub fn start(ivlink: &Path, dir: &Path, vectors: u16) -> Result<ServerProcess> {
        let socket = dir.join("ivshmem.sock");
        let log = dir.join("server.log");
        let child = Command::new(ivlink)
            .args(["server", "-F", "-S"])
            .arg(&socket)
            .args(["--memfd", "-n", &vectors.to_string()])
            .stdin(Stdio::null())
            .stdout(File::create(&log)?)
            .stderr(File::create(&log)?.try_clone()?)
            .spawn()
            .with_context(|| format!("starting {} server", ivlink.display()))?;
        let mut server = ServerProcess {
            child: Killed(child),
            socket,
            log,
        };
        println!(
            "server: pid {}, socket {}",
            server.child.0.id(),
            server.socket.display()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.socket.exists() {
            server.ensure_running()?;
            ensure!(
                Instant::now() < deadline,
                "the server did not create {}",
                server.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The socket peers connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Fails with the server's log if it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.0.try_wait()? {
            bail!(
                "the server exited ({status}): {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}
