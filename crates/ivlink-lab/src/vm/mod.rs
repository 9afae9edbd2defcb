//! Small Linux test guests under QEMU, each an ivshmem peer, driven through their
//! serial console.
//!
//! A [`Guest`] is one QEMU process booting the image that `cargo xtask vm-image`
//! builds (a Debian kernel, the VFIO modules, busybox and a static `ivlink`; see
//! [`default_image_dir`]). The guest's `/init` prints [`READY_MARKER`] once the
//! modules are loaded, then keeps an interactive shell on the serial console.
//!
//! The serial console is a QEMU socket chardev: a UNIX socket server at
//! [`GuestConfig::console_socket`] that takes one client at a time, with everything the
//! guest prints also written to [`GuestConfig::log_path`], whether or not a client is
//! attached. The harness is that client: it types commands and reads their output
//! over the socket (the exact byte stream). [`Guest::detach_console`] frees the
//! socket for a person (`socat -,raw,echo=0 UNIX-CONNECT:<socket>`); what the guest
//! prints meanwhile is only in the log.
//!
//! The log is for people and error messages, not for parsing: QEMU 7.2 writes a
//! byte to it twice when the socket is momentarily full (it logs the failed
//! attempt and the retry), which happens under load.
//!
//! Every wait is bounded. A timeout, or QEMU exiting when it should not, is a
//! [`VmError`] whose message ends with the last lines of the serial log (and QEMU's
//! own output when it exited). Dropping a [`Guest`] kills its QEMU by pid and reaps it.
//!
//! Guests use software emulation (`-accel tcg`) unless told otherwise: on this
//! project's machines a KVM guest hangs in early boot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod config;
mod console;
mod error;
mod guest;
mod shell;

pub use config::GuestConfig;
pub use error::VmError;
pub use guest::Guest;
pub use shell::CommandOutput;

/// The line the guest's `/init` prints when the modules are loaded and the console
/// shell is about to start.
pub const READY_MARKER: &str = "ivlink-guest: ready";
/// The QEMU binary looked for on `PATH`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";
/// The environment variable that names a QEMU binary to use instead of the one on
/// `PATH` (see [`find_qemu`]).
pub const QEMU_ENV: &str = "IVLINK_QEMU";
/// The kernel's file name in an image directory (the compressed bzImage Debian
/// ships).
pub const KERNEL_FILE: &str = "vmlinuz";
/// The uncompressed kernel's file name in an image directory: an ELF that QEMU
/// boots through its PVH entry, which skips the kernel's own decompression (about
/// 3 s under TCG). [`image_kernel`] prefers it.
pub const VMLINUX_FILE: &str = "vmlinux";
/// The initramfs's file name in an image directory.
pub const INITRD_FILE: &str = "initramfs.gz";
/// Lines of the serial log that errors quote.
pub const ERROR_LOG_LINES: usize = 30;
/// The kernel command line every guest gets (before `ivlink.name=` and
/// [`GuestConfig::extra_append`]).
pub const BASE_APPEND: &str = "console=ttyS0 intel_iommu=on panic=-1 quiet";

/// `qemu-system-x86_64` to use: the file named by `IVLINK_QEMU` if set, else the
/// first executable one on `PATH`.
pub fn find_qemu() -> Option<PathBuf> {
    let executable = |file: &Path| {
        file.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(path) = std::env::var_os(QEMU_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return executable(&path).then_some(path);
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(DEFAULT_QEMU))
        .find(|file| executable(file))
}

/// Where `cargo xtask vm-image` puts the image of a workspace: `target/vm-image`.
pub fn default_image_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join("target").join("vm-image")
}

/// The kernel to boot from `image_dir`: [`VMLINUX_FILE`] if it is there (faster),
/// else [`KERNEL_FILE`].
pub fn image_kernel(image_dir: &Path) -> PathBuf {
    let vmlinux = image_dir.join(VMLINUX_FILE);
    if vmlinux.is_file() {
        vmlinux
    } else {
        image_dir.join(KERNEL_FILE)
    }
}

/// Whether `image_dir` holds a kernel and an initramfs.
pub fn image_exists(image_dir: &Path) -> bool {
    image_dir.join(KERNEL_FILE).is_file() && image_dir.join(INITRD_FILE).is_file()
}
