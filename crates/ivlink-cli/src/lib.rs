//! Argument parsing and printing for the `ivlink` command and the drop-in
//! `ivshmem-server` and `ivshmem-client` binaries. Behaviour lives in the `ivlink`
//! library; this crate only turns arguments into calls and results into lines.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod dropin_server;
pub mod getopt;
pub mod grammar;
pub mod logging;
pub mod relay_args;
pub mod report;
pub mod server_cmd;
pub mod transport_args;
