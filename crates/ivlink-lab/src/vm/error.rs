//! [`VmError`]: why a guest could not be booted or driven.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Why a guest could not be booted or driven.
#[derive(Debug, Error)]
pub enum VmError {
    /// The configuration cannot work (missing image, missing server socket, ...).
    #[error("{0}")]
    Config(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// QEMU exited when it should not have.
    #[error(
        "guest {name}: QEMU exited ({status}) {context}\n\
         --- QEMU output ---\n{qemu_output}\n--- serial log (last lines) ---\n{log_tail}"
    )]
    Exited {
        /// The guest's name.
        name: String,
        /// How QEMU exited.
        status: String,
        /// What the harness was doing.
        context: String,
        /// The end of QEMU's stdout/stderr.
        qemu_output: String,
        /// The end of the serial log.
        log_tail: String,
    },
    /// A wait ran out of time.
    #[error(
        "guest {name}: timed out after {after:?} waiting for {what}\n\
         --- serial log (last lines) ---\n{log_tail}"
    )]
    Timeout {
        /// The guest's name.
        name: String,
        /// What was awaited.
        what: String,
        /// The time allowed.
        after: Duration,
        /// The end of the serial log.
        log_tail: String,
    },
    /// The console connection failed.
    #[error("guest {name}: console {path}: {source}")]
    Console {
        /// The guest's name.
        name: String,
        /// The console socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The console shell exited (the command ran `exit`) before the command's end
    /// marker; `/init` has started a new shell.
    #[error("guest {name}: the console shell exited during `{command}`")]
    ShellExited {
        /// The guest's name.
        name: String,
        /// The command (abbreviated).
        command: String,
    },
    /// A command's end marker had no readable exit status.
    #[error("guest {name}: bad exit status line '{line}'")]
    BadStatus {
        /// The guest's name.
        name: String,
        /// The marker line as printed.
        line: String,
    },
}
