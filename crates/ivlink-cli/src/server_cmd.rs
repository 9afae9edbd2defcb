//! Running a server from the command line: `ivlink server` and the drop-in
//! `ivshmem-server` share [`run`].

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use ivlink::server::{IdPolicy, MAX_VECTORS, ServerError, systemd};
use ivlink::shm::{ShmBacking, ShmError};
use ivlink::{Server, ServerConfig};
use tracing::{info, warn};

use crate::logging::{self, LogFormat, LogTarget};

/// Default pid file of a daemonized server (QEMU's).
pub const DEFAULT_PIDFILE: &str = "/var/run/ivshmem-server.pid";

/// How ids are handed out, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdPolicyArg {
    /// QEMU's rotating cursor (first peer 0, freed ids reused after wrapping)
    Rotating,
    /// The lowest free id
    LowestFree,
}

/// Options of `ivlink server`: QEMU's flags with long names, plus more.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Listening socket path
    #[arg(short = 'S', long, value_name = "PATH", default_value = ivlink::DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,

    /// POSIX shared memory object name (/dev/shm/NAME)
    #[arg(
        short = 'M',
        long,
        value_name = "NAME",
        default_value = "ivshmem",
        group = "backing"
    )]
    pub shm_name: String,

    /// Directory for an unlinked shared memory file (e.g. a hugetlbfs mount)
    #[arg(short = 'm', long, value_name = "DIR", group = "backing")]
    pub shm_dir: Option<PathBuf>,

    /// File to use as shared memory, kept after exit (e.g. /dev/shm/x or a hugetlbfs file)
    #[arg(long, value_name = "PATH", group = "backing")]
    pub shm_file: Option<PathBuf>,

    /// Anonymous memfd sealed against resizing (no name anyone could truncate)
    #[arg(long, group = "backing")]
    pub memfd: bool,

    /// Shared memory size, K/M/G/T suffixes; rounded up to a power of two
    #[arg(
        short = 'l',
        long,
        value_name = "SIZE",
        default_value = "4M",
        value_parser = parse_size,
        allow_negative_numbers = true
    )]
    pub size: u64,

    /// Vectors per peer (at most 64; Zephyr guests expect 2)
    #[arg(
        short = 'n',
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = parse_vectors,
        allow_negative_numbers = true
    )]
    pub vectors: u16,

    /// Stay in the foreground (otherwise daemonize, like QEMU's server)
    #[arg(short = 'F', long)]
    pub foreground: bool,

    /// Pid file (daemon mode only)
    #[arg(short = 'p', long, value_name = "PATH", default_value = DEFAULT_PIDFILE)]
    pub pidfile: PathBuf,

    /// Log every peer event (debug level)
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Mode of the socket file and the shared memory, in octal (e.g. 0660)
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,

    /// Group of the socket file and the shared memory (name or number)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Most peers connected at once (1-65536)
    #[arg(long, value_name = "N", default_value_t = ivlink::server::MAX_PEERS)]
    pub max_peers: usize,

    /// How peer ids are chosen
    #[arg(long, value_enum, default_value_t = IdPolicyArg::Rotating)]
    pub id_policy: IdPolicyArg,

    /// Messages queued for a peer that is not reading before it is dropped
    #[arg(long, value_name = "N", default_value_t = 1 << 16)]
    pub max_backlog: usize,

    /// Remove the shared memory's name on exit (QEMU's server keeps it)
    #[arg(long)]
    pub unlink_shm: bool,

    /// Resize existing shared memory of another size (refused by default, and
    /// always while a server or its peers still map it)
    #[arg(long)]
    pub resize_shm: bool,

    /// Log format
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Append logs to this file (useful in daemon mode)
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The library configuration these options describe.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let shm = if let Some(dir) = &self.shm_dir {
            ShmBacking::Dir(dir.clone())
        } else if let Some(file) = &self.shm_file {
            ShmBacking::File(file.clone())
        } else if self.memfd {
            ShmBacking::Memfd
        } else {
            ShmBacking::Posix(self.shm_name.clone())
        };
        let group = self.group.as_deref().map(resolve_group).transpose()?;
        Ok(ServerConfig {
            socket_path: self.socket.clone(),
            shm,
            size: self.size,
            vectors: self.vectors,
            max_peers: self.max_peers,
            id_policy: match self.id_policy {
                IdPolicyArg::Rotating => IdPolicy::Rotating,
                IdPolicyArg::LowestFree => IdPolicy::LowestFree,
            },
            socket_mode: self.mode,
            shm_mode: self.mode,
            group,
            max_backlog: self.max_backlog,
            unlink_shm_on_exit: self.unlink_shm,
            resize_existing_shm: self.resize_shm,
            ..ServerConfig::default()
        })
    }

    /// Runs `ivlink server`.
    pub fn run(&self) -> anyhow::Result<()> {
        let level = if self.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        logging::init(
            level,
            self.log_format,
            LogTarget::Stderr,
            self.log_file.as_deref(),
        )?;
        let options = RunOptions {
            foreground: self.foreground,
            pidfile: self.pidfile.clone(),
        };
        run(self.config()?, &options).map_err(|e| {
            let size_differs = matches!(
                e.downcast_ref::<ServerError>(),
                Some(ServerError::Shm(ShmError::SizeDiffers { .. }))
            );
            if size_differs {
                anyhow!("{e}, or pass --resize-shm if nothing maps it")
            } else {
                e
            }
        })
    }
}

/// Process-level choices around a server.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stay attached to the terminal.
    pub foreground: bool,
    /// Where a daemon writes its pid.
    pub pidfile: PathBuf,
}

/// Binds, daemonizes unless in the foreground, and serves until SIGINT or SIGTERM.
/// On a signal every peer is disconnected (the others are told) and the socket
/// file is removed.
///
/// Under a service manager: a listening socket it passed (socket activation,
/// `LISTEN_PID`/`LISTEN_FDS`) is served on as it is, and `config.socket_path`
/// ignored; with `NOTIFY_SOCKET` set, the server reports `READY=1`, its status
/// and `STOPPING=1` (a daemonized server also sends `MAINPID=`, which the
/// manager takes only with `NotifyAccess=all`: under systemd, run in the
/// foreground). Call it before any thread starts: the variables are taken out
/// of the environment.
pub fn run(config: ServerConfig, options: &RunOptions) -> anyhow::Result<()> {
    let adopted = systemd::take_listener()?;
    let notifier = match systemd::Notifier::from_env() {
        Some(Ok(notifier)) => Some(notifier),
        Some(Err(e)) => {
            warn!("{e}; the service manager will not hear from this server");
            None
        }
        None => None,
    };
    let pid_err = || format!("cannot write pid file {}", options.pidfile.display());
    // The pid file is opened before the server binds: a failure is then found
    // before the socket and the shared memory are touched, and reported by the
    // process the user started. It is emptied only once the server is bound, so
    // a refused start leaves a running daemon's pid file as it was.
    let pidfile = if options.foreground {
        None
    } else {
        let existed = options.pidfile.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&options.pidfile)
            .with_context(pid_err)?;
        Some((file, existed))
    };
    let bound = match adopted {
        Some(listener) => {
            if listener.path() != config.socket_path {
                info!(
                    "socket activation: serving on {}, the socket the service manager passed; \
                     -S {} is ignored",
                    listener.path().display(),
                    config.socket_path.display()
                );
            }
            Server::bind_adopted(config, listener)
        }
        None => Server::bind(config),
    };
    let mut server = match bound {
        Ok(server) => server,
        Err(e) => {
            if let Some((_, false)) = pidfile {
                let _ = std::fs::remove_file(&options.pidfile);
            }
            return Err(e.into());
        }
    };
    if let Some((mut pidfile, _)) = pidfile {
        ivlink::server::process::daemonize().context("cannot daemonize")?;
        use std::io::Write;
        pidfile.set_len(0).with_context(pid_err)?;
        writeln!(pidfile, "{}", std::process::id()).with_context(pid_err)?;
        if let Some(notifier) = &notifier
            && let Err(e) = notifier.send(&format!("MAINPID={}", std::process::id()))
        {
            warn!("cannot notify {}: {e}", notifier.address());
        }
    }
    if let Some(notifier) = notifier {
        server.notify_service_manager(notifier);
    }
    let handle = server.handle();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(signal, handle.stop_stream()?)
            .context("cannot install signal handlers")?;
    }
    info!(
        "listening on {} ({} bytes of shared memory)",
        server.socket_path().display(),
        server.shm_size()
    );
    server.run()?;
    if !options.foreground {
        let _ = std::fs::remove_file(&options.pidfile);
    }
    Ok(())
}

/// Parses a size with K/M/G/T suffixes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    ivlink::size::parse_size(text).map_err(|e| e.to_string())
}

/// Parses a number of vectors per peer, 0 to [`MAX_VECTORS`].
pub fn parse_vectors(text: &str) -> Result<u16, String> {
    let digits = text.trim();
    if let Some(magnitude) = digits.strip_prefix('-') {
        if !magnitude.is_empty() && magnitude.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "a number of vectors cannot be negative (0 to {MAX_VECTORS})"
            ));
        }
    }
    let too_many = || format!("too many vectors: at most {MAX_VECTORS} per peer (QEMU's limit)");
    match digits.parse::<u64>() {
        Ok(n) if n <= u64::from(MAX_VECTORS) => Ok(n as u16),
        Ok(_) => Err(too_many()),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(too_many()),
        Err(_) => Err(format!("not a number of vectors (0 to {MAX_VECTORS})")),
    }
}

/// Parses an octal mode such as `0660` or `660`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "invalid mode '{text}': expected octal digits such as 0660"
        )),
    }
}

/// Resolves a group name or number.
pub fn resolve_group(name: &str) -> anyhow::Result<rustix::fs::Gid> {
    Ok(ivlink::server::process::resolve_group(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_refused_with_the_reason() {
        assert_eq!(parse_vectors("0"), Ok(0));
        assert_eq!(parse_vectors("64"), Ok(64));
        for too_many in ["65", "65536", "100000000000", "99999999999999999999999"] {
            assert_eq!(
                parse_vectors(too_many),
                Err("too many vectors: at most 64 per peer (QEMU's limit)".into()),
                "{too_many}"
            );
        }
        assert_eq!(
            parse_vectors("-1"),
            Err("a number of vectors cannot be negative (0 to 64)".into())
        );
        assert_eq!(
            parse_vectors("two"),
            Err("not a number of vectors (0 to 64)".into())
        );
    }

    #[test]
    fn parses_octal_modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0990").is_err());
        assert!(parse_mode("77777").is_err());
    }

    #[test]
    fn resolves_groups_by_name_and_number() {
        assert_eq!(resolve_group("0").unwrap().as_raw(), 0);
        assert_eq!(resolve_group("root").unwrap().as_raw(), 0);
        assert!(resolve_group("no-such-group-ivlink").is_err());
    }
}
