//! The drop-in `ivshmem-server`: QEMU's command line (`hvFp:S:m:M:l:n:`), its
//! defaults and messages, on ivlink's server.
//!
//! Differences from QEMU's example server, all on purpose:
//! - no `*** Example code, do not use in production ***` banner;
//! - usage after a bad option goes to stderr (QEMU prints it on stdout), and the
//!   offending option is named first, as glibc's getopt does;
//! - arguments after the options are refused (QEMU silently ignores them);
//! - `-n` values beyond 32 bits are refused as too many (QEMU truncates them);
//! - `-l` takes ivlink's sizes (K/M/G/T, 1K = 1024; fractions are not accepted);
//! - startup failures print one line saying what failed and why, and happen
//!   before the shared memory is touched (QEMU's server resizes it first);
//! - an existing shared memory object of another size is refused, not resized:
//!   peers mapping it would crash (remove it, or give its size);
//! - under a service manager it takes a socket passed by socket activation and
//!   sends readiness notifications, as `ivlink server` does.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use ivlink::ServerConfig;
use ivlink::server::MAX_VECTORS;
use ivlink::shm::ShmBacking;

use crate::getopt::{Getopt, Opt};
use crate::logging::{self, LogFormat, LogTarget};
use crate::server_cmd::{self, DEFAULT_PIDFILE, RunOptions};

/// QEMU's option string.
const OPTSTRING: &str = "hvFp:S:m:M:l:n:";
/// Default POSIX shared memory name (`-M`).
const DEFAULT_SHM_NAME: &str = "ivshmem";
/// Default shared memory size (`-l`).
const DEFAULT_SIZE: u64 = 4 << 20;
/// Default vectors per peer (`-n`).
const DEFAULT_VECTORS: u16 = 1;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// `-v`: debug lines on stdout.
    pub verbose: bool,
    /// `-F`: stay in the foreground.
    pub foreground: bool,
    /// `-p`: pid file of the daemon.
    pub pidfile: PathBuf,
    /// `-S`: listening socket.
    pub socket: PathBuf,
    /// `-M` (POSIX shm name) or `-m` (directory), the last one given.
    pub shm: ShmBacking,
    /// `-l`: shared memory size in bytes.
    pub size: u64,
    /// `-n`: vectors per peer.
    pub vectors: u16,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            verbose: false,
            foreground: false,
            pidfile: PathBuf::from(DEFAULT_PIDFILE),
            socket: PathBuf::from(ivlink::DEFAULT_SOCKET_PATH),
            shm: ShmBacking::Posix(DEFAULT_SHM_NAME.into()),
            size: DEFAULT_SIZE,
            vectors: DEFAULT_VECTORS,
        }
    }
}

impl ServerOptions {
    /// The server configuration: QEMU's defaults with these options applied.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            socket_path: self.socket.clone(),
            shm: self.shm.clone(),
            size: self.size,
            vectors: self.vectors,
            ..ServerConfig::default()
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `-h`: print the usage and exit 0.
    Help,
    /// Run a server.
    Run(ServerOptions),
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// A malformed option (unknown, or missing its value), or a stray argument:
    /// the message, then the usage.
    BadOption(String),
    /// A value or combination that is not allowed: the message, then the hint
    /// to try `-h`.
    BadValue(String),
}

/// Parses QEMU's `ivshmem-server` options (`args` without the program name).
pub fn parse_args(args: &[OsString]) -> Result<Parsed, UsageError> {
    let mut options = ServerOptions::default();
    let mut getopt = Getopt::new(args, OPTSTRING);
    for opt in getopt.by_ref() {
        let opt = opt.map_err(|e| UsageError::BadOption(e.to_string()))?;
        match opt {
            Opt::Flag('h') => return Ok(Parsed::Help),
            Opt::Flag('v') => options.verbose = true,
            Opt::Flag('F') => options.foreground = true,
            Opt::Value('p', v) => options.pidfile = v.into(),
            Opt::Value('S', v) => options.socket = v.into(),
            Opt::Value('M', v) => {
                let name = v.into_string().map_err(|v| {
                    UsageError::BadValue(format!(
                        "shared memory name {} is not valid UTF-8",
                        Path::new(&v).display()
                    ))
                })?;
                options.shm = ShmBacking::Posix(name);
            }
            Opt::Value('m', v) => options.shm = ShmBacking::Dir(v.into()),
            Opt::Value('l', v) => {
                let text = v.to_string_lossy();
                options.size = server_cmd::parse_size(&text)
                    .map_err(|e| UsageError::BadValue(format!("cannot parse shm size: {e}")))?;
            }
            Opt::Value('n', v) => {
                let n = parse_uint(&v.to_string_lossy())
                    .ok_or_else(|| UsageError::BadValue("cannot parse n_vectors".into()))?;
                options.vectors = match u16::try_from(n) {
                    Ok(n) if n <= MAX_VECTORS => n,
                    _ => u16::MAX,
                };
            }
            other => unreachable!("option -{} is in the option string", other.letter()),
        }
    }
    if let Some(extra) = getopt.operands().first() {
        return Err(UsageError::BadOption(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }
    if options.vectors > MAX_VECTORS {
        return Err(UsageError::BadValue(format!(
            "too many requested vectors (max is {MAX_VECTORS})"
        )));
    }
    if options.verbose && !options.foreground {
        return Err(UsageError::BadValue(
            "cannot use verbose in daemon mode".into(),
        ));
    }
    Ok(Parsed::Run(options))
}

/// Parses an unsigned number the way QEMU's `parse_uint_full(.., 0)` does:
/// decimal, `0x` hexadecimal or `0` octal, leading blanks allowed, no sign but `+`.
fn parse_uint(text: &str) -> Option<u64> {
    let text = text.trim_start();
    let text = text.strip_prefix('+').unwrap_or(text);
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The usage text, modelled on QEMU's.
pub fn usage(prog: &str) -> String {
    format!(
        "Usage: {prog} [OPTION]...\n\
         \x20 -h: show this help\n\
         \x20 -v: verbose mode (needs -F)\n\
         \x20 -F: foreground mode (default is to daemonize)\n\
         \x20 -p <pid-file>: path to the PID file (used in daemon mode only)\n\
         \x20    default {DEFAULT_PIDFILE}\n\
         \x20 -S <unix-socket-path>: path to the unix socket to listen to\n\
         \x20    default {socket}\n\
         \x20 -M <shm-name>: POSIX shared memory object to use\n\
         \x20    default {DEFAULT_SHM_NAME}\n\
         \x20 -m <dir-name>: where to create shared memory (an unlinked file,\n\
         \x20    e.g. on a hugetlbfs mount); the last of -M and -m wins\n\
         \x20 -l <size>: size of shared memory in bytes, rounded up to a power of two\n\
         \x20    suffixes K, M and G can be used, e.g. 1K means 1024\n\
         \x20    default {DEFAULT_SIZE}\n\
         \x20 -n <nvectors>: number of vectors (at most {MAX_VECTORS})\n\
         \x20    default {DEFAULT_VECTORS}\n",
        socket = ivlink::DEFAULT_SOCKET_PATH,
    )
}

/// An error and its causes on one line, each cause said once: library errors
/// often repeat their source in their own message.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The program name for messages: `args[0]` as given, like QEMU.
fn program_name(args: &[OsString]) -> String {
    args.first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ivshmem-server".into())
}

/// Runs `ivshmem-server` with QEMU's command line (`args[0]` is the program
/// name) and returns the exit code: 0 after a clean stop on SIGINT or SIGTERM
/// (and for `-h`), 1 on a bad command line or a failure.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let prog = program_name(&args);
    let options = match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(Parsed::Help) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(usage(&prog).as_bytes());
            let _ = out.flush();
            return 0;
        }
        Ok(Parsed::Run(options)) => options,
        Err(UsageError::BadOption(message)) => {
            eprintln!("{prog}: {message}");
            eprint!("{}", usage(&prog));
            return 1;
        }
        Err(UsageError::BadValue(message)) => {
            eprintln!("{message}");
            eprintln!("Try '{prog} -h' for more information.");
            return 1;
        }
    };

    let (level, target) = if options.verbose {
        (tracing::Level::DEBUG, LogTarget::Stdout)
    } else {
        (tracing::Level::WARN, LogTarget::Stderr)
    };
    if let Err(e) = logging::init(level, LogFormat::Text, target, None) {
        eprintln!("{prog}: {}", error_line(&e));
        return 1;
    }
    let run_options = RunOptions {
        foreground: options.foreground,
        pidfile: options.pidfile.clone(),
    };
    match server_cmd::run(options.config(), &run_options) {
        Ok(()) => {
            // QEMU's last line; stdout may be gone in daemon mode.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "server disconnected");
            let _ = out.flush();
            0
        }
        Err(e) => {
            eprintln!("{prog}: {}", error_line(&e));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Parsed, UsageError> {
        let args: Vec<OsString> = list.iter().map(OsString::from).collect();
        parse_args(&args)
    }

    fn run(list: &[&str]) -> ServerOptions {
        match parse(list) {
            Ok(Parsed::Run(options)) => options,
            other => panic!("{list:?} gave {other:?}"),
        }
    }

    fn bad_value(list: &[&str]) -> String {
        match parse(list) {
            Err(UsageError::BadValue(m)) => m,
            other => panic!("{list:?} gave {other:?}"),
        }
    }

    #[test]
    fn defaults_are_qemus() {
        let options = run(&[]);
        assert_eq!(options, ServerOptions::default());
        let config = options.config();
        assert_eq!(config.socket_path, Path::new("/tmp/ivshmem_socket"));
        assert_eq!(config.shm, ShmBacking::Posix("ivshmem".into()));
        assert_eq!(config.size, 4 << 20);
        assert_eq!(config.vectors, 1);
        assert_eq!(options.pidfile, Path::new("/var/run/ivshmem-server.pid"));
        assert!(!options.foreground && !options.verbose);
    }

    #[test]
    fn every_option_is_applied() {
        let options = run(&[
            "-vF", "-p", "/x/pid", "-S", "/x/sock", "-M", "shm", "-l", "1M", "-n2",
        ]);
        assert!(options.verbose && options.foreground);
        assert_eq!(options.pidfile, Path::new("/x/pid"));
        assert_eq!(options.socket, Path::new("/x/sock"));
        assert_eq!(options.shm, ShmBacking::Posix("shm".into()));
        assert_eq!(options.size, 1 << 20);
        assert_eq!(options.vectors, 2);
    }

    #[test]
    fn last_of_shm_name_and_dir_wins() {
        assert_eq!(
            run(&["-M", "a", "-m", "/dir"]).shm,
            ShmBacking::Dir("/dir".into())
        );
        assert_eq!(
            run(&["-m", "/dir", "-M", "a"]).shm,
            ShmBacking::Posix("a".into())
        );
    }

    #[test]
    fn help_wins_when_reached() {
        assert_eq!(parse(&["-h"]), Ok(Parsed::Help));
        assert_eq!(parse(&["-F", "-h", "-x"]), Ok(Parsed::Help));
        assert_eq!(parse(&["-v", "-h"]), Ok(Parsed::Help));
    }

    #[test]
    fn vectors_parse_like_parse_uint_full() {
        assert_eq!(run(&["-n", "64"]).vectors, 64);
        assert_eq!(run(&["-n", "0"]).vectors, 0);
        assert_eq!(run(&["-n", "0x10"]).vectors, 16);
        assert_eq!(run(&["-n", "010"]).vectors, 8);
        assert_eq!(run(&["-n", " +3"]).vectors, 3);
        for bad in ["abc", "", "-1", "2x", "0x", "08", "1 "] {
            assert_eq!(bad_value(&["-n", bad]), "cannot parse n_vectors", "{bad:?}");
        }
    }

    #[test]
    fn too_many_vectors_are_refused() {
        for n in ["65", "65536", "4294967297", "99999999999999999"] {
            assert_eq!(
                bad_value(&["-n", n]),
                "too many requested vectors (max is 64)",
                "{n}"
            );
        }
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(run(&["-l", "1K"]).size, 1024);
        assert_eq!(run(&["-l4M"]).size, 4 << 20);
        assert_eq!(run(&["-l", "1G"]).size, 1 << 30);
        assert!(bad_value(&["-l", "4X"]).starts_with("cannot parse shm size: "));
    }

    #[test]
    fn verbose_needs_the_foreground() {
        assert_eq!(bad_value(&["-v"]), "cannot use verbose in daemon mode");
        assert!(run(&["-v", "-F"]).verbose);
    }

    #[test]
    fn malformed_options_show_the_usage() {
        assert_eq!(
            parse(&["-x"]),
            Err(UsageError::BadOption("invalid option -- 'x'".into()))
        );
        assert_eq!(
            parse(&["-F", "-S"]),
            Err(UsageError::BadOption(
                "option requires an argument -- 'S'".into()
            ))
        );
        assert_eq!(
            parse(&["-F", "stray"]),
            Err(UsageError::BadOption("unexpected argument 'stray'".into()))
        );
    }

    #[test]
    fn error_lines_say_each_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(io).context("cannot bind /x: disk on fire");
        assert_eq!(error_line(&e), "cannot bind /x: disk on fire");
        let e = anyhow::Error::new(std::io::Error::other("denied")).context("cannot daemonize");
        assert_eq!(error_line(&e), "cannot daemonize: denied");
    }

    #[test]
    fn usage_lists_every_option_and_default() {
        let text = usage("ivshmem-server");
        assert!(text.starts_with("Usage: ivshmem-server [OPTION]...\n"));
        for needle in [
            "-h:",
            "-v:",
            "-F:",
            "-p <pid-file>",
            "-S <unix-socket-path>",
            "-M <shm-name>",
            "-m <dir-name>",
            "-l <size>",
            "-n <nvectors>",
            "/var/run/ivshmem-server.pid",
            "/tmp/ivshmem_socket",
            "default ivshmem\n",
            "default 4194304\n",
            "default 1\n",
        ] {
            assert!(text.contains(needle), "usage lacks {needle:?}");
        }
    }
}
