//! A peer of an ivshmem server, over the server's UNIX socket.
//!
//! The server sends our id, the shared memory, our vectors (eventfds we wait on) and,
//! for every other peer, the eventfds that ring it. Later messages announce peers
//! that join or leave. After the id, messages are accepted in any order, as QEMU's
//! device does.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ivlink_core::{Notify, NotifyError, PeerId, RawRegion, Vector};
use rustix::event::epoll;
use thiserror::Error;
use tracing::{debug, warn};

use crate::device::{
    Device, DeviceError, Event, PeerInfo, TransportError, TransportErrorKind, WaitFor,
};
use crate::doorbell;
use crate::mapping::MappedRegion;
use crate::wire::{self, Message, ProtocolError, Receiver, RecvError};

/// Token of the server socket in our epoll set; vectors use their index.
const SOCKET_TOKEN: u64 = u64::MAX;

/// How a host peer connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The server's socket.
    pub socket_path: PathBuf,
    /// How many vectors to expect for ourselves. The protocol never says; when
    /// unset, setup ends once our vectors have arrived and the socket is quiet.
    pub vectors: Option<usize>,
    /// How long the whole setup may take.
    pub setup_timeout: Duration,
}

impl HostConfig {
    /// Connect to the server at `socket_path` with default settings.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        HostConfig {
            socket_path: socket_path.into(),
            vectors: None,
            setup_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a host peer could not join a server, or lost track of it.
///
/// Reaches callers as [`DeviceError::Transport`]; [`HostError::find_in`] gets it
/// back.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HostError {
    /// The server socket could not be reached.
    #[error("cannot connect to the ivshmem server at {path}: {error}")]
    Connect {
        /// Socket path.
        path: String,
        /// The system's reason.
        error: io::Error,
    },
    /// The server closed the connection before sending anything, as a server
    /// does when it refuses a peer (e.g. it has `--max-peers` peers already).
    #[error("the server refused the connection (it may be full: see its log)")]
    RefusedByServer,
    /// The server closed the connection during setup.
    #[error("the server closed the connection during setup")]
    ClosedDuringSetup,
    /// The server did not finish the handshake in time.
    #[error("the server did not send {0} within the setup timeout")]
    SetupTimeout(&'static str),
    /// The server broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl HostError {
    /// What kind of trouble it is, for callers that do not know this transport.
    pub fn kind(&self) -> TransportErrorKind {
        match self {
            HostError::Connect { error, .. } => TransportErrorKind::from_io(error.kind()),
            HostError::RefusedByServer => TransportErrorKind::Refused,
            HostError::ClosedDuringSetup => TransportErrorKind::Gone,
            HostError::SetupTimeout(_) => TransportErrorKind::TimedOut,
            HostError::Protocol(_) => TransportErrorKind::Invalid,
        }
    }

    /// The host error inside a [`DeviceError`], if it is one.
    pub fn find_in(error: &DeviceError) -> Option<&HostError> {
        error.transport_error()
    }
}

impl From<HostError> for DeviceError {
    fn from(error: HostError) -> Self {
        DeviceError::Transport(TransportError::new(error.kind(), error))
    }
}

impl From<ProtocolError> for DeviceError {
    fn from(error: ProtocolError) -> Self {
        HostError::Protocol(error).into()
    }
}

/// Quiet time after our last vector before setup counts as done.
const QUIET_AFTER_VECTORS: Duration = Duration::from_millis(20);
/// Quiet time after the shared memory before we assume a server with no vectors.
const QUIET_WITHOUT_VECTORS: Duration = Duration::from_millis(250);

/// A peer of an ivshmem server.
#[derive(Debug)]
pub struct HostPeer {
    socket_path: PathBuf,
    socket: UnixStream,
    region: MappedRegion,
    id: PeerId,
    epoll: OwnedFd,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    receiver: Receiver,
    own: Vec<OwnedFd>,
    peers: BTreeMap<PeerId, Vec<OwnedFd>>,
    pending: VecDeque<Event>,
    server_gone: bool,
}

/// The protocol version and our peer id, the first two setup messages.
fn recv_greeting(
    state: &mut State,
    socket: &UnixStream,
    deadline: Instant,
) -> Result<PeerId, DeviceError> {
    let (version, fd) = recv_setup(
        &mut state.receiver,
        socket,
        deadline,
        "its protocol version",
    )
    .map_err(|e| match HostError::find_in(&e) {
        // Closed before its first message: the server turned us away.
        Some(HostError::ClosedDuringSetup) => HostError::RefusedByServer.into(),
        _ => e,
    })?;
    if fd.is_some() {
        return Err(ProtocolError::VersionWithFd.into());
    }
    if version != wire::PROTOCOL_VERSION {
        return Err(ProtocolError::BadVersion(version).into());
    }
    let (id, fd) = recv_setup(&mut state.receiver, socket, deadline, "our peer id")?;
    match (PeerId::try_from(id), fd) {
        (Ok(id), None) => Ok(id),
        _ => Err(ProtocolError::BadId(id).into()),
    }
}

/// The shared memory's fd, applying the other peers' vectors sent before it.
fn recv_shared_memory(
    state: &mut State,
    id: PeerId,
    socket: &UnixStream,
    deadline: Instant,
) -> Result<OwnedFd, DeviceError> {
    loop {
        let (value, fd) = recv_setup(&mut state.receiver, socket, deadline, "the shared memory")?;
        match wire::classify(value, fd)? {
            Message::SharedMemory(fd) => return Ok(fd),
            other => state.apply(id, other, false)?,
        }
    }
}

/// Our own vectors, which come last: the protocol never says how many there are,
/// so without `want` the end is a quiet moment on the socket.
fn recv_own_vectors(
    state: &mut State,
    id: PeerId,
    socket: &UnixStream,
    deadline: Instant,
    want: Option<usize>,
) -> Result<(), DeviceError> {
    loop {
        let have = state.own.len();
        if want.is_some_and(|want| have >= want) {
            return Ok(());
        }
        let quiet = if have == 0 {
            QUIET_WITHOUT_VECTORS
        } else {
            QUIET_AFTER_VECTORS
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if want.is_some() {
            left
        } else {
            quiet.min(left)
        };
        match state.receiver.recv_timeout(socket, Some(wait)) {
            Ok(Some((value, fd))) => match wire::classify(value, fd)? {
                Message::SharedMemory(_) => {
                    return Err(ProtocolError::InvalidValue(wire::SHM_MESSAGE).into());
                }
                other => state.apply(id, other, false)?,
            },
            Ok(None) if want.is_some() => {
                return Err(HostError::SetupTimeout("all our vectors").into());
            }
            Ok(None) => return Ok(()),
            Err(RecvError::Closed) => return Err(HostError::ClosedDuringSetup.into()),
            Err(RecvError::Protocol(e)) => return Err(e.into()),
            Err(RecvError::Io(e)) => {
                return Err(DeviceError::io("reading the server socket")(e));
            }
        }
    }
}

/// One epoll set for the server socket and our vectors.
fn watch_socket_and_vectors(socket: &UnixStream, state: &State) -> Result<OwnedFd, DeviceError> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| DeviceError::io("creating an epoll set")(e.into()))?;
    let watch = |fd: BorrowedFd<'_>, token: u64| {
        epoll::add(
            &epoll,
            fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
        .map_err(|e| DeviceError::io("watching a file descriptor")(e.into()))
    };
    watch(socket.as_fd(), SOCKET_TOKEN)?;
    for (vector, fd) in state.own.iter().enumerate() {
        watch(fd.as_fd(), vector as u64)?;
    }
    Ok(epoll)
}

impl HostPeer {
    /// Connects, runs the setup handshake and maps the shared memory.
    pub fn connect(config: &HostConfig) -> Result<Self, DeviceError> {
        let socket =
            UnixStream::connect(&config.socket_path).map_err(|error| HostError::Connect {
                path: config.socket_path.display().to_string(),
                error,
            })?;
        socket
            .set_nonblocking(true)
            .map_err(DeviceError::io("making the server socket non-blocking"))?;
        let deadline = Instant::now() + config.setup_timeout;
        let mut state = State::default();
        let id = recv_greeting(&mut state, &socket, deadline)?;
        let shm = recv_shared_memory(&mut state, id, &socket, deadline)?;
        recv_own_vectors(&mut state, id, &socket, deadline, config.vectors)?;
        let region = MappedRegion::map_fd(shm)?;
        let epoll = watch_socket_and_vectors(&socket, &state)?;
        debug!(
            id,
            vectors = state.own.len(),
            peers = state.peers.len(),
            size = region.len(),
            "connected to {}",
            config.socket_path.display()
        );
        Ok(HostPeer {
            socket_path: config.socket_path.clone(),
            socket,
            region,
            id,
            epoll,
            state: Mutex::new(state),
        })
    }

    /// The server socket this peer is connected to.
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket_path
    }

    /// Whether the server has closed our connection.
    pub fn server_gone(&self) -> bool {
        self.lock().server_gone
    }

    /// The numbers of `peer`'s vector fds (ours when `peer` is our id), or `None`
    /// for an unknown peer. For display only (QEMU's `ivshmem-client` prints them
    /// in `dump`): the fds stay owned by this peer and may be closed at any time.
    pub fn vector_fd_numbers(&self, peer: PeerId) -> Option<Vec<RawFd>> {
        let state = self.lock();
        let fds = if peer == self.id {
            &state.own
        } else {
            state.peers.get(&peer)?
        };
        Some(fds.iter().map(AsRawFd::as_raw_fd).collect())
    }

    /// The number of the server socket's fd, for display only.
    pub fn socket_fd_number(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (every mutation is
        // a single push or insert), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in everything that is ready: socket messages and rung vectors.
    fn collect(&self, state: &mut State, ready: &[epoll::Event]) -> Result<(), DeviceError> {
        for event in ready {
            let token = event.data.u64();
            if token == SOCKET_TOKEN {
                self.drain_socket(state)?;
            } else if let Some(fd) = state.own.get(token as usize) {
                let count =
                    doorbell::drain(fd.as_fd()).map_err(DeviceError::io("reading a vector"))?;
                if count > 0 {
                    state.push_notified(token as Vector, count);
                }
            }
        }
        Ok(())
    }

    fn drain_socket(&self, state: &mut State) -> Result<(), DeviceError> {
        loop {
            match state.receiver.recv(&self.socket) {
                Ok(Some((value, fd))) => {
                    let message = wire::classify(value, fd)?;
                    if let Message::SharedMemory(_) = message {
                        warn!("server sent unexpected shared memory message; ignored");
                        continue;
                    }
                    let before = state.own.len();
                    state.apply(self.id, message, true)?;
                    for vector in before..state.own.len() {
                        epoll::add(
                            &self.epoll,
                            state.own[vector].as_fd(),
                            epoll::EventData::new_u64(vector as u64),
                            epoll::EventFlags::IN,
                        )
                        .map_err(|e| DeviceError::io("watching a vector")(e.into()))?;
                    }
                }
                Ok(None) => return Ok(()),
                Err(RecvError::Closed | RecvError::Io(_)) => {
                    let _ = epoll::delete(&self.epoll, &self.socket);
                    state.server_gone = true;
                    state.pending.push_back(Event::ServerGone);
                    return Ok(());
                }
                Err(RecvError::Protocol(e)) => return Err(e.into()),
            }
        }
    }
}

impl State {
    /// Applies a post-handshake message; `announce` queues peer events.
    fn apply(
        &mut self,
        own_id: PeerId,
        message: Message,
        announce: bool,
    ) -> Result<(), DeviceError> {
        match message {
            Message::SharedMemory(_) => Err(ProtocolError::InvalidValue(wire::SHM_MESSAGE).into()),
            Message::PeerVector(peer, fd) if peer == own_id => {
                if self.own.len() >= 64 {
                    warn!("server sent more than 64 vectors for us; extra closed");
                } else {
                    self.own.push(fd);
                }
                Ok(())
            }
            Message::PeerVector(peer, fd) => {
                let vectors = self.peers.entry(peer).or_default();
                vectors.push(fd);
                let count = vectors.len();
                // Every peer of a server has the same number of vectors, sent one
                // message each: announce the peer once it has as many as we do, so
                // that every vector can be rung when the event is seen.
                if announce && count == self.own.len().max(1) {
                    self.pending.push_back(Event::PeerJoined {
                        peer,
                        vectors: count,
                    });
                }
                Ok(())
            }
            Message::PeerGone(peer) => {
                if self.peers.remove(&peer).is_none() {
                    warn!("server announced that unknown peer {peer} left; ignored");
                } else if announce {
                    self.pending.push_back(Event::PeerLeft { peer });
                }
                Ok(())
            }
        }
    }

    fn push_notified(&mut self, vector: Vector, count: u64) {
        for event in self.pending.iter_mut() {
            if let Event::Notified {
                vector: v,
                count: c,
            } = event
                && *v == vector
            {
                *c += count;
                return;
            }
        }
        self.pending.push_back(Event::Notified { vector, count });
    }

    fn take(&mut self, what: WaitFor) -> Option<Event> {
        let index = self.pending.iter().position(|e| what.matches(e))?;
        self.pending.remove(index)
    }
}

fn recv_setup(
    receiver: &mut Receiver,
    socket: &UnixStream,
    deadline: Instant,
    what: &'static str,
) -> Result<(i64, Option<OwnedFd>), DeviceError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    match receiver.recv_timeout(socket, Some(remaining)) {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(HostError::SetupTimeout(what).into()),
        Err(RecvError::Closed) => Err(HostError::ClosedDuringSetup.into()),
        Err(RecvError::Protocol(e)) => Err(e.into()),
        Err(RecvError::Io(e)) => Err(DeviceError::io("reading the server socket")(e)),
    }
}

impl Notify for HostPeer {
    /// Rings `peer`'s eventfd for `vector`. Our own id is accepted (we notify
    /// ourselves), as QEMU's client does.
    fn notify(&self, peer: PeerId, vector: Vector) -> Result<(), NotifyError> {
        let mut state = self.lock();
        if peer != self.id && !state.peers.contains_key(&peer) {
            // It may have joined since we last looked at the socket.
            let _ = self.drain_socket(&mut state);
        }
        let fds = if peer == self.id {
            &state.own
        } else {
            state
                .peers
                .get(&peer)
                .ok_or(NotifyError::UnknownPeer(peer))?
        };
        let fd = fds
            .get(usize::from(vector))
            .ok_or(NotifyError::NoSuchVector {
                peer,
                vector,
                available: fds.len(),
            })?;
        doorbell::ring(fd.as_fd()).map_err(|e| NotifyError::Os(e.raw_os_error().unwrap_or(0)))
    }
}

impl Device for HostPeer {
    fn region(&self) -> &RawRegion {
        &self.region
    }

    fn id(&self) -> PeerId {
        self.id
    }

    fn vectors(&self) -> usize {
        self.lock().own.len()
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let mut state = self.lock();
        let _ = self.drain_socket(&mut state);
        state
            .peers
            .iter()
            .map(|(&id, fds)| PeerInfo {
                id,
                vectors: fds.len(),
            })
            .collect()
    }

    /// The server tells every peer of every other peer's arrival and departure.
    fn knows_peers(&self) -> bool {
        true
    }

    fn knows_peer(&self, peer: PeerId) -> bool {
        let mut state = self.lock();
        if state.peers.contains_key(&peer) {
            return true;
        }
        // It may have joined since we last looked at the socket.
        let _ = self.drain_socket(&mut state);
        state.peers.contains_key(&peer)
    }

    fn wait(&self, what: WaitFor, timeout: Option<Duration>) -> Result<Option<Event>, DeviceError> {
        let found = crate::wait::wait_epoll(
            self.epoll.as_fd(),
            timeout,
            || {
                let mut state = self.lock();
                match state.take(what) {
                    Some(event) => Some(Ok(event)),
                    // Whatever else is pending does not answer this wait, and no
                    // more will come from the server.
                    None if state.server_gone => Some(Err(DeviceError::ServerGone)),
                    None => None,
                }
            },
            |ready| self.collect(&mut self.lock(), ready),
        )?;
        found.transpose()
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.epoll.as_fd())
    }

    fn describe(&self) -> String {
        format!("host peer on {}", self.socket_path.display())
    }
}
