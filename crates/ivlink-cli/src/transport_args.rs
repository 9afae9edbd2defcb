//! How every peer-side command picks its transport: `--socket` (a host peer of a
//! server, the default) or `--file` (a plain shared file, polled).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ivlink::Transport;
use ivlink::transport::host::HostConfig;

/// Transport options shared by every peer-side command.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// Server socket to connect to as a host peer
    #[arg(short = 'S', long, value_name = "PATH", default_value = ivlink::DEFAULT_SOCKET_PATH, conflicts_with = "file")]
    pub socket: PathBuf,

    /// Map a plain shared file instead of connecting to a server (no doorbell: polling)
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// With --file: the peer id this process uses for itself
    #[arg(long, value_name = "ID", default_value_t = 0, requires = "file")]
    pub id: u16,

    /// Vectors to expect for this peer (the protocol never says; by default setup
    /// ends when the server goes quiet)
    #[arg(long = "expect-vectors", value_name = "N")]
    pub expect_vectors: Option<usize>,

    /// Seconds to wait for the server's setup messages
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub setup_timeout: f64,
}

impl TransportArgs {
    /// The transport these options name.
    pub fn transport(&self) -> Transport {
        match &self.file {
            Some(path) => Transport::File {
                path: path.clone(),
                id: self.id,
            },
            None => Transport::Host(HostConfig {
                socket_path: self.socket.clone(),
                vectors: self.expect_vectors,
                setup_timeout: Duration::from_secs_f64(self.setup_timeout.max(0.0)),
            }),
        }
    }
}
