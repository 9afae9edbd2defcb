//! Drop-in replacement for QEMU's `ivshmem-server`.

#![forbid(unsafe_code)]

fn main() {
    std::process::exit(ivlink_cli::dropin_server::main_with_args(
        std::env::args_os().collect(),
    ));
}
