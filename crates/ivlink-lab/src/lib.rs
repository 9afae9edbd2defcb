//! The tools around ivlink: what the `ivlink` command and the project's
//! automation run, and what a program embedding the `ivlink` runtime never needs.
//!
//! - [`bench`](mod@bench): ivlink between two host processes, measured against baselines
//!   (memcpy ring, eventfd, UNIX socket, pipe) in the same run.
//! - [`progress`]: spinners and bars on standard error where a person waits,
//!   drawn only at a terminal.
//! - [`stress`]: many host peers exchanging checked messages over channels.
//! - [`testbed`]: an embedded server and a set of peer processes or QEMU
//!   guests, driven from one process.
//! - [`vm`]: launching QEMU guests with an ivshmem device and talking to their
//!   serial console.

pub mod bench;
pub mod progress;
pub mod stress;
pub mod testbed;
pub mod vm;
