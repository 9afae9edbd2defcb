//! Drop-in replacement for QEMU's `ivshmem-client`: options `-h`, `-v` and
//! `-S <unix_sock_path>`, then the interactive client of
//! [`ivlink_cli::client`].

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;

use ivlink_cli::dropin_server::error_line;
use ivlink_cli::getopt::{Getopt, Opt};
use ivlink_cli::logging::{self, LogFormat, LogTarget};

/// QEMU's option string.
const OPTSTRING: &str = "hvS:";

/// QEMU's usage text (printed on stderr, like QEMU).
fn usage(prog: &str) -> String {
    format!(
        "{prog} [opts]\n\
         \x20 -h: show this help\n\
         \x20 -v: verbose mode\n\
         \x20 -S <unix_sock_path>: path to the unix socket\n\
         \x20    to connect to.\n\
         \x20    default={}\n",
        ivlink::DEFAULT_SOCKET_PATH
    )
}

fn main() {
    std::process::exit(run(std::env::args_os().collect()));
}

fn run(args: Vec<OsString>) -> i32 {
    let prog = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ivshmem-client".into());
    let mut verbose = false;
    let mut socket = PathBuf::from(ivlink::DEFAULT_SOCKET_PATH);
    let rest = args.get(1..).unwrap_or_default();
    let mut getopt = Getopt::new(rest, OPTSTRING);
    for opt in getopt.by_ref() {
        match opt {
            Ok(Opt::Flag('h')) => {
                eprint!("{}", usage(&prog));
                return 0;
            }
            Ok(Opt::Flag('v')) => verbose = true,
            Ok(Opt::Value('S', path)) => socket = path.into(),
            Ok(other) => unreachable!("option -{} is in the option string", other.letter()),
            Err(e) => {
                eprintln!("{prog}: {e}");
                eprint!("{}", usage(&prog));
                return 1;
            }
        }
    }
    if let Some(extra) = getopt.operands().first() {
        eprintln!("{prog}: unexpected argument '{}'", extra.to_string_lossy());
        eprint!("{}", usage(&prog));
        return 1;
    }
    // Library warnings only; the client prints its own (verbose) lines.
    if let Err(e) = logging::init(
        tracing::Level::WARN,
        LogFormat::Text,
        LogTarget::Stderr,
        None,
    ) {
        eprintln!("{prog}: {}", error_line(&e));
        return 1;
    }
    match ivlink_cli::client::run_interactive(&socket, verbose) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{prog}: {}", error_line(&e));
            1
        }
    }
}
