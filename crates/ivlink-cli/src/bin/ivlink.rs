//! `ivlink`: ivshmem server, peer tools and test bed in one command.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ivlink_cli::cli::main()
}
