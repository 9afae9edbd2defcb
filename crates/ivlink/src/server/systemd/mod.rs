//! Running under systemd (or any service manager speaking its protocols):
//! socket activation (`sd_listen_fds(3)`) and readiness notification
//! (`sd_notify(3)`), a few system calls on rustix.

mod activation;
mod notify;

use std::ffi::OsString;

pub use activation::{ActivationError, LISTEN_FDS_START, take_listener};
pub(super) use notify::Readiness;
pub use notify::{NOTIFY_SOCKET, Notifier, NotifyError};

/// Reads an environment variable and removes it, so that programs this process
/// starts do not act on it (`sd_notify(3)`'s `unset_environment`).
///
/// The variable is removed only while this process has a single thread: with
/// others running, `remove_var` could race their reads of the environment. It
/// is read either way; a variable left in place is harmless here, since the
/// server starts no programs and fd 3 is made close-on-exec.
fn take_env(name: &str) -> Option<OsString> {
    let value = std::env::var_os(name)?;
    if single_threaded() {
        // SAFETY: this process has one thread (checked just above, and only this
        // thread could start another), so nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    Some(value)
}

/// Whether this process runs a single thread (from `/proc/self/task`).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}
