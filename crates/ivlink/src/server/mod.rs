//! An ivshmem server, byte-compatible with QEMU's `ivshmem-server`.
//!
//! It hands every peer the shared memory, an id and eventfds, in exactly the
//! reference order, and tells the others when a peer joins or leaves. Unlike the
//! reference it uses epoll (no 1024-fd cap), queues output per peer so one stuck
//! peer never blocks the rest, and drops a peer that stops reading.

mod engine;
mod ids;
mod listener;
mod peer;
pub mod process;
pub mod systemd;

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use ivlink_core::PeerId;
use rustix::fs::Gid;
use thiserror::Error;

pub use engine::Server;
pub use ids::{IdAllocator, IdPolicy};
pub use listener::Listener;

use crate::shm::{ShmBacking, ShmError};

/// QEMU's limit on vectors per peer.
pub const MAX_VECTORS: u16 = 64;
/// Every id the protocol can name.
pub const MAX_PEERS: usize = 65536;

/// How a server is set up. [`Default`] gives QEMU's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Listening socket path (`-S`); unused by [`Server::bind_adopted`].
    pub socket_path: PathBuf,
    /// Where the shared memory lives (`-M`, `-m`, `--shm-file`, `--memfd`).
    pub shm: ShmBacking,
    /// Shared memory size in bytes, rounded up to a power of two (`-l`).
    pub size: u64,
    /// Vectors per peer (`-n`), at most 64.
    pub vectors: u16,
    /// Most peers connected at once; further connections are refused.
    pub max_peers: usize,
    /// How ids are chosen.
    pub id_policy: IdPolicy,
    /// Where the rotating id cursor starts (0, as QEMU; other values suit tests
    /// of the wrap-around).
    pub first_id: PeerId,
    /// Mode for the socket file (e.g. 0o660); the umask decides when unset.
    pub socket_mode: Option<u32>,
    /// Mode for new shared memory; owner read-write when unset.
    pub shm_mode: Option<u32>,
    /// Group for the socket and the shared memory.
    pub group: Option<Gid>,
    /// Messages queued for one peer beyond which it counts as not reading and is
    /// dropped.
    pub max_backlog: usize,
    /// Remove the shared memory's name when the server stops (QEMU keeps it).
    pub unlink_shm_on_exit: bool,
    /// Resize an existing shared memory object of another size (QEMU's server
    /// always does). Off, such a start is refused: peers still mapping the object
    /// would crash. An object in use is never resized either way.
    pub resize_existing_shm: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket_path: PathBuf::from(crate::DEFAULT_SOCKET_PATH),
            shm: ShmBacking::Posix("ivshmem".into()),
            size: 4 << 20,
            vectors: 1,
            max_peers: MAX_PEERS,
            id_policy: IdPolicy::Rotating,
            first_id: 0,
            socket_mode: None,
            shm_mode: None,
            group: None,
            max_backlog: 1 << 16,
            unlink_shm_on_exit: false,
            resize_existing_shm: false,
        }
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// Setting up the shared memory failed.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// Another server answers on the socket path.
    #[error("a server is already listening on {}; stop it or choose another socket path", .0.display())]
    AlreadyRunning(PathBuf),
    /// Something that is not a socket sits at the socket path.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// Binding the socket failed.
    #[error("cannot bind {}: {error}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The system's reason.
        error: io::Error,
    },
    /// The socket a service manager passed cannot be served on.
    #[error(transparent)]
    Activation(#[from] systemd::ActivationError),
    /// A system call in the event loop failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The system's reason.
        error: io::Error,
    },
}

/// Stops a running server and reports how many peers it has, from any thread.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    stop: Arc<UnixStream>,
    peers: Arc<AtomicUsize>,
    sent: Arc<SentCounters>,
}

/// What a server has sent to its peers since it started: every 8-byte message,
/// and of those the ones that carried an fd (the shared memory or an eventfd).
/// A message counts once it is wholly sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentMessages {
    /// Messages sent.
    pub messages: u64,
    /// Of those, messages that carried an fd.
    pub fd_messages: u64,
}

/// The counters behind [`ServerHandle::sent`].
#[derive(Debug, Default)]
pub(crate) struct SentCounters {
    messages: AtomicU64,
    fd_messages: AtomicU64,
}

impl SentCounters {
    /// One message wholly sent.
    pub(crate) fn count(&self, with_fd: bool) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        if with_fd {
            self.fd_messages.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ServerHandle {
    /// Asks the server to stop: it disconnects every peer (the others are told),
    /// removes its socket file and returns from [`Server::run`].
    pub fn stop(&self) {
        use std::io::Write;
        let _ = (&*self.stop).write(&[1]);
    }

    /// How many peers are connected.
    pub fn peer_count(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    /// What the server has sent so far (e.g. the connect cost of many peers:
    /// each new peer gets every existing peer's eventfds and every existing peer
    /// the new one's, so fd messages grow with the square of the peers).
    pub fn sent(&self) -> SentMessages {
        SentMessages {
            fd_messages: self.sent.fd_messages.load(Ordering::Relaxed),
            messages: self.sent.messages.load(Ordering::Relaxed),
        }
    }

    /// A stream whose writes stop the server, for async-signal-safe handlers
    /// (e.g. `signal_hook::low_level::pipe::register`).
    pub fn stop_stream(&self) -> io::Result<UnixStream> {
        self.stop.try_clone()
    }
}

/// A server running on its own thread (tests, the test bed, embedding programs).
#[derive(Debug)]
pub struct ServerThread {
    handle: ServerHandle,
    socket_path: PathBuf,
    shm_size: u64,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl ServerThread {
    /// Binds with `config` and runs the server on a new thread.
    pub fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let server = Server::bind(config)?;
        let handle = server.handle();
        let socket_path = server.socket_path().to_owned();
        let shm_size = server.shm_size();
        let thread = std::thread::Builder::new()
            .name("ivshmem-server".into())
            .spawn(move || server.run())
            .map_err(|error| ServerError::Io {
                context: "starting the server thread",
                error,
            })?;
        Ok(ServerThread {
            handle,
            socket_path,
            shm_size,
            thread: Some(thread),
        })
    }

    /// The server's handle.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The socket peers connect to.
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket_path
    }

    /// The shared memory size.
    pub fn shm_size(&self) -> u64 {
        self.shm_size
    }

    /// Stops the server and waits for it to finish.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServerError> {
        self.handle.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServerError::Config("the server thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::host::{HostConfig, HostPeer};
    use std::time::{Duration, Instant};

    /// Polls `sent` until it stops short of `fd_messages` no longer (the count
    /// follows each send, which may return just after the peer read it).
    fn settled(handle: &ServerHandle, fd_messages: u64) -> SentMessages {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = handle.sent();
            if sent.fd_messages >= fd_messages || Instant::now() >= deadline {
                return sent;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_handle_counts_every_message_and_every_fd_sent() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerThread::start(ServerConfig {
            socket_path: dir.path().join("ivshmem.sock"),
            shm: ShmBacking::Memfd,
            size: 4096,
            vectors: 2,
            ..ServerConfig::default()
        })
        .unwrap();
        assert_eq!(server.handle().sent(), SentMessages::default());
        let connect = || {
            HostPeer::connect(&HostConfig {
                socket_path: server.socket_path().to_owned(),
                vectors: Some(2),
                setup_timeout: Duration::from_secs(10),
            })
            .unwrap()
        };
        let _a = connect();
        // The shared memory and its own two eventfds; version and id carry none.
        let one = settled(server.handle(), 3);
        assert_eq!((one.messages, one.fd_messages), (5, 3));
        let _b = connect();
        // b: the shared memory, a's two eventfds, its own two; a: b's two.
        let two = settled(server.handle(), 3 + 5 + 2);
        assert_eq!((two.messages, two.fd_messages), (5 + 7 + 2, 10));
    }
}
