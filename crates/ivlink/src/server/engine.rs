//! The server's event loop.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SocketFlags};
use tracing::{debug, info, warn};

use super::ids::IdAllocator;
use super::listener::{self, Listener};
use super::peer::{Flush, Peer};
use super::systemd::{Notifier, Readiness};
use super::{MAX_PEERS, MAX_VECTORS, ServerConfig, ServerError, ServerHandle};
use crate::doorbell;
use crate::shm::{self, SharedMemory};
use crate::wire;

const LISTENER_TOKEN: u64 = 0;
const STOP_TOKEN: u64 = 1;
const FIRST_PEER_TOKEN: u64 = 2;
/// How soon to retry sends refused for too many fds in flight.
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// A bound server, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    listener: Listener,
    shm: SharedMemory,
    shm_fd: Arc<OwnedFd>,
    epoll: OwnedFd,
    stop_rx: UnixStream,
    handle: ServerHandle,
    ids: IdAllocator,
    /// Connected peers by token; tokens rise with connect order, so iteration order
    /// is the reference server's list order.
    peers: BTreeMap<u64, Peer>,
    next_token: u64,
    /// Peers to remove once the current step is done, with the reason.
    doomed: Vec<(u64, String)>,
    /// An fd held in reserve so a connection can be refused when fds run out.
    spare_fd: Option<OwnedFd>,
    /// The service manager to tell about readiness, peers and stopping.
    readiness: Option<Readiness>,
}

impl Server {
    /// Binds the socket and sets up the shared memory (nothing is accepted until
    /// [`run`](Server::run)). Also raises the open-file limit to its maximum.
    ///
    /// Everything that can refuse the start (the configuration, the socket path:
    /// a live server there, a missing directory, permissions) is checked before
    /// the shared memory is touched, and the shared memory's own checks (see
    /// [`SharedMemory::create`]) before it is changed; a failed start removes what
    /// it created and changes nothing else.
    pub fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        Self::start(config, None)
    }

    /// Like [`bind`](Self::bind), serving on a socket that is already listening
    /// (socket activation, see [`super::systemd::take_listener`]) instead of
    /// binding `config.socket_path`; the socket's mode and owner are its
    /// creator's, and its file stays when the server stops.
    pub fn bind_adopted(config: ServerConfig, listener: Listener) -> Result<Self, ServerError> {
        Self::start(config, Some(listener))
    }

    fn start(config: ServerConfig, adopted: Option<Listener>) -> Result<Self, ServerError> {
        if config.vectors > MAX_VECTORS {
            return Err(ServerError::Config(format!(
                "too many requested vectors (max is {MAX_VECTORS})"
            )));
        }
        if config.max_peers == 0 || config.max_peers > MAX_PEERS {
            return Err(ServerError::Config(format!(
                "max peers must be between 1 and {MAX_PEERS}"
            )));
        }
        shm::round_size(config.size)?;
        raise_fd_limit();
        let io_err = |context| {
            move |e: Errno| ServerError::Io {
                context,
                error: e.into(),
            }
        };
        let epoll =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(io_err("creating an epoll set"))?;
        let stop_err = |error| ServerError::Io {
            context: "creating the stop channel",
            error,
        };
        let (stop_tx, stop_rx) = UnixStream::pair().map_err(stop_err)?;
        stop_rx.set_nonblocking(true).map_err(stop_err)?;
        epoll::add(
            &epoll,
            &stop_rx,
            epoll::EventData::new_u64(STOP_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(io_err("watching the stop channel"))?;
        // The socket before the shared memory: binding it also claims the path
        // against a second server started at the same time, and dropping it on a
        // later error removes the file.
        let listener = match adopted {
            Some(listener) => listener,
            None => Listener::bind(&config.socket_path, config.socket_mode, config.group)?,
        };
        epoll::add(
            &epoll,
            listener.socket(),
            epoll::EventData::new_u64(LISTENER_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(io_err("watching the listening socket"))?;
        let shm = SharedMemory::create(
            config.shm.clone(),
            config.size,
            config.shm_mode,
            config.group,
            config.resize_existing_shm,
        )?;
        let shm_fd = match shm.fd().try_clone_to_owned() {
            Ok(fd) => Arc::new(fd),
            Err(error) => {
                shm.discard_if_created();
                return Err(ServerError::Io {
                    context: "duplicating the shared memory fd",
                    error,
                });
            }
        };
        // Logged once the start can no longer fail.
        info!("using {}, {} bytes", shm.backing(), shm.size());
        if let Some(warning) = shm.capacity_warning() {
            warn!("{warning}");
        }
        if listener.is_adopted() {
            info!(
                "serving on {}, the socket the service manager passed",
                listener.path().display()
            );
        } else {
            info!("create & bind socket {}", config.socket_path.display());
        }
        let ids = IdAllocator::new(config.id_policy, config.first_id);
        Ok(Server {
            handle: ServerHandle {
                stop: Arc::new(stop_tx),
                peers: Arc::new(AtomicUsize::new(0)),
                sent: Arc::default(),
            },
            config,
            listener,
            shm,
            shm_fd,
            epoll,
            stop_rx,
            ids,
            peers: BTreeMap::new(),
            next_token: FIRST_PEER_TOKEN,
            doomed: Vec::new(),
            spare_fd: reserve_spare_fd(),
            readiness: None,
        })
    }

    /// Tells a service manager (`sd_notify(3)`) through `notifier`: `READY=1`
    /// with a `STATUS=` line (socket, size, vectors) once [`run`](Self::run)
    /// starts, the peer count as it changes (at most twice a second), and
    /// `STOPPING=1` when the server stops.
    pub fn notify_service_manager(&mut self, notifier: Notifier) {
        let listening = format!(
            "listening on {}, {} bytes, {} vector{}",
            self.listener.path().display(),
            self.shm.size(),
            self.config.vectors,
            if self.config.vectors == 1 { "" } else { "s" }
        );
        self.readiness = Some(Readiness::new(notifier, listening));
    }

    /// A handle to stop the server from another thread or a signal handler.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        self.listener.path()
    }

    /// The shared memory size in bytes (after rounding).
    pub fn shm_size(&self) -> u64 {
        self.shm.size()
    }

    /// Serves peers until stopped, then disconnects them all and removes the socket.
    pub fn run(mut self) -> Result<(), ServerError> {
        if let Some(readiness) = &mut self.readiness {
            readiness.ready(Instant::now());
        }
        let result = self.serve();
        self.shutdown();
        result
    }

    fn serve(&mut self) -> Result<(), ServerError> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        loop {
            let retrying = self.peers.values().any(|p| p.retry);
            let status_due = self
                .readiness
                .as_ref()
                .and_then(Readiness::deadline)
                .map(|due| due.saturating_duration_since(Instant::now()));
            let timeout = [retrying.then_some(RETRY_INTERVAL), status_due]
                .into_iter()
                .flatten()
                .min()
                .map(doorbell::to_timespec);
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(ServerError::Io {
                        context: "waiting for events",
                        error: e.into(),
                    });
                }
            }
            for event in &events {
                match event.data.u64() {
                    LISTENER_TOKEN => self.accept_all()?,
                    STOP_TOKEN => {
                        let mut buf = [0u8; 64];
                        let _ = (&self.stop_rx).read(&mut buf);
                        info!("stop requested");
                        return Ok(());
                    }
                    token => self.peer_ready(token, event.flags),
                }
            }
            if retrying {
                let tokens: Vec<u64> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.retry)
                    .map(|(&t, _)| t)
                    .collect();
                for token in tokens {
                    self.flush(token);
                }
            }
            self.remove_doomed();
            if let Some(readiness) = &mut self.readiness {
                readiness.peers(self.peers.len(), Instant::now());
            }
        }
    }

    fn accept_all(&mut self) -> Result<(), ServerError> {
        loop {
            match rustix::net::acceptfrom_with(
                self.listener.socket(),
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok((socket, address)) if listener::is_probe(address.as_ref()) => {
                    // Another server checking whether this one is alive: not a peer.
                    debug!("answered a liveness probe");
                    drop(socket);
                }
                Ok((socket, _)) => {
                    self.add_peer(socket);
                    self.remove_doomed();
                }
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                    // Out of resources. The pending connection would keep the
                    // listener readable and spin the loop: free the spare fd,
                    // accept and close the connection, then take the spare back.
                    warn!("refusing a connection: {e}");
                    self.spare_fd = None;
                    let _ = rustix::net::accept_with(self.listener.socket(), SocketFlags::CLOEXEC);
                    self.spare_fd = reserve_spare_fd();
                    return Ok(());
                }
                Err(e) => {
                    return Err(ServerError::Io {
                        context: "accepting a connection",
                        error: e.into(),
                    });
                }
            }
        }
    }

    /// The reference connect sequence (ivshmem_server_handle_new_conn).
    fn add_peer(&mut self, socket: OwnedFd) {
        let credentials = match rustix::net::sockopt::socket_peercred(&socket) {
            Ok(c) => format!(
                "pid {}, uid {}, gid {}",
                c.pid.as_raw_nonzero(),
                c.uid.as_raw(),
                c.gid.as_raw()
            ),
            Err(_) => "credentials unknown".into(),
        };
        if self.peers.len() >= self.config.max_peers {
            warn!(
                "refusing a connection ({credentials}): the server is full, with {} peer(s) \
                 connected, its maximum",
                self.peers.len()
            );
            return;
        }
        let Some(id) = self.ids.allocate() else {
            warn!("cannot allocate new client id ({credentials}): all 65536 ids are in use");
            return;
        };
        let vectors: io::Result<Vec<Arc<OwnedFd>>> = (0..self.config.vectors)
            .map(|_| doorbell::new_eventfd().map(Arc::new))
            .collect();
        let vectors = match vectors {
            Ok(v) => v,
            Err(e) => {
                warn!("cannot create eventfds for a new peer ({credentials}): {e}");
                self.ids.release(id);
                return;
            }
        };
        let token = self.next_token;
        if let Err(e) = epoll::add(
            &self.epoll,
            &socket,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        ) {
            warn!("cannot watch a new peer's socket ({credentials}): {e}");
            self.ids.release(id);
            return;
        }
        self.next_token += 1;
        info!("new peer id = {id} ({credentials})");

        let mut peer = Peer::new(id, socket, vectors);
        peer.push(wire::PROTOCOL_VERSION, None);
        peer.push(i64::from(id), None);
        peer.push(wire::SHM_MESSAGE, Some(self.shm_fd.clone()));

        let existing: Vec<u64> = self.peers.keys().copied().collect();
        for &other in &existing {
            let target = self.peers.get_mut(&other).expect("listed");
            for fd in &peer.vectors {
                target.push(i64::from(id), Some(fd.clone()));
            }
            self.after_push(other);
        }
        for other in self.peers.values() {
            for fd in &other.vectors {
                peer.push(i64::from(other.id), Some(fd.clone()));
            }
        }
        for fd in peer.vectors.clone() {
            peer.push(i64::from(id), Some(fd));
        }
        // A large setup still being read is not a sign of a stuck peer.
        peer.setup_len = peer.backlog();
        self.peers.insert(token, peer);
        self.handle.peers.store(self.peers.len(), Ordering::Relaxed);
        self.flush(token);
    }

    fn peer_ready(&mut self, token: u64, flags: epoll::EventFlags) {
        let Some(peer) = self.peers.get(&token) else {
            return; // removed earlier in this batch
        };
        let hangup = epoll::EventFlags::IN
            | epoll::EventFlags::HUP
            | epoll::EventFlags::ERR
            | epoll::EventFlags::RDHUP;
        if flags.intersects(hangup) {
            // Peers never write: any readability is a disconnect, as in QEMU's server.
            let mut byte = [0u8; 1];
            let reason = match rustix::net::recv(
                &peer.socket,
                &mut byte,
                RecvFlags::PEEK | RecvFlags::DONTWAIT,
            ) {
                Ok((n, _)) if n > 0 => {
                    "it wrote to the server socket, which peers must never do".to_owned()
                }
                Ok(_) | Err(Errno::CONNRESET) => "it disconnected".to_owned(),
                Err(e) => format!("its socket failed: {e}"),
            };
            self.doom(token, reason);
        } else if flags.contains(epoll::EventFlags::OUT) {
            self.flush(token);
        }
    }

    /// Checks a peer after messages were queued for it: send, or drop it if it has
    /// stopped reading.
    fn after_push(&mut self, token: u64) {
        self.flush(token);
        if let Some(peer) = self.peers.get(&token)
            && peer.backlog() > self.config.max_backlog + peer.setup_len
        {
            let reason = format!(
                "it is not reading its socket ({} messages queued, limit {})",
                peer.backlog(),
                self.config.max_backlog
            );
            self.doom(token, reason);
        }
    }

    fn flush(&mut self, token: u64) {
        let Some(peer) = self.peers.get_mut(&token) else {
            return;
        };
        peer.retry = false;
        let want_writable = match peer.flush(&self.handle.sent) {
            Flush::Done => false,
            Flush::Blocked => true,
            Flush::Retry => {
                peer.retry = true;
                false
            }
            Flush::Failed(e) => {
                self.doom(token, format!("sending to it failed: {e}"));
                return;
            }
        };
        if want_writable != peer.watching_writable {
            let mut flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
            if want_writable {
                flags |= epoll::EventFlags::OUT;
            }
            if epoll::modify(
                &self.epoll,
                &peer.socket,
                epoll::EventData::new_u64(token),
                flags,
            )
            .is_ok()
            {
                peer.watching_writable = want_writable;
            }
        }
    }

    fn doom(&mut self, token: u64, reason: String) {
        if !self.doomed.iter().any(|(t, _)| *t == token) {
            self.doomed.push((token, reason));
        }
    }

    fn remove_doomed(&mut self) {
        while let Some((token, reason)) = self.doomed.pop() {
            self.remove_peer(token, &reason);
        }
    }

    /// Frees a peer and tells the others (ivshmem_server_free_peer).
    fn remove_peer(&mut self, token: u64, reason: &str) {
        let Some(peer) = self.peers.remove(&token) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &peer.socket);
        self.ids.release(peer.id);
        self.handle.peers.store(self.peers.len(), Ordering::Relaxed);
        info!("free peer {}: {reason}", peer.id);
        let id = peer.id;
        drop(peer); // closes its socket; queued copies keep its eventfds open until sent
        let remaining: Vec<u64> = self.peers.keys().copied().collect();
        for other in remaining {
            if let Some(target) = self.peers.get_mut(&other) {
                target.push(i64::from(id), None);
            }
            self.after_push(other);
        }
    }

    fn shutdown(&mut self) {
        if let Some(readiness) = &mut self.readiness {
            readiness.stopping();
        }
        info!("close server: disconnecting {} peer(s)", self.peers.len());
        while let Some(&token) = self.peers.keys().next() {
            self.remove_peer(token, "the server is stopping");
            self.doomed.clear();
        }
        self.listener.remove();
        if self.config.unlink_shm_on_exit {
            match self.shm.unlink() {
                Ok(()) => debug!("removed {}", self.shm.backing()),
                Err(e) => warn!("cannot remove {}: {e}", self.shm.backing()),
            }
        }
    }
}

fn reserve_spare_fd() -> Option<OwnedFd> {
    rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()
}

/// Lifts the soft open-file limit to the hard one: each peer costs a socket and one
/// eventfd per vector.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => debug!("open-file limit raised to {:?}", limit.maximum),
            Err(e) => warn!("cannot raise the open-file limit: {e}"),
        }
    }
}
