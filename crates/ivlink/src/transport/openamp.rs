//! OpenAMP's Linux "generic machine": two processes share a POSIX shm object and
//! kick each other over one UNIX stream socket (layout A of
//! `docs/rpmsg-virtio.md`), as OpenAMP's `rpmsg-echo` (process 0, the RPMsg remote)
//! and `rpmsg-echo-ping` (process 1, the RPMsg host) samples do.
//!
//! - Memory: `shm_open("openamp.shm")`, 0x80000 bytes, created if absent.
//! - Doorbell: process 0 binds `/tmp/openamp.event.0`, listens and accepts one
//!   connection; process 1 connects, retrying while process 0 is not up yet. A kick
//!   is the single byte `0x01`, whatever vring it is for: there is one vector, and
//!   the receiver runs every vring callback on any byte.
//!
//! [`OpenampPeer::listen`] is process 0 and [`OpenampPeer::connect`] process 1. The
//! listening side never blocks to accept: the connection is taken whenever the link
//! is used (waiting, notifying, asking for peers), and a kick sent before that is
//! remembered and delivered on accept, so no wake-up is lost.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ivlink_core::rpmsg::resource_table;
use ivlink_core::{Notify, NotifyError, PeerId, RawRegion, Vector};
use rustix::event::epoll;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use tracing::debug;

use crate::device::{Device, DeviceError, Event, PeerInfo, WaitFor};
use crate::mapping::MappedRegion;

/// The notification socket of OpenAMP's Linux samples.
pub const DEFAULT_SOCKET: &str = "/tmp/openamp.event.0";
/// The POSIX shm object of OpenAMP's Linux samples (`/dev/shm/openamp.shm`).
pub const DEFAULT_SHM_NAME: &str = "openamp.shm";
/// The size of the samples' shared memory.
pub const DEFAULT_SIZE: usize = 0x80000;
/// How long the samples' host keeps trying to connect: 100 attempts with sleeps of
/// 0, 10, 20, ... 990 ms, 49.5 s in all.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(49_500);

/// The byte every kick sends.
const KICK: u8 = 0x01;
/// Bytes read per `read` call, as the samples do.
const READ_CHUNK: usize = 32;
/// Reads per drain at most, so that a peer kicking without pause cannot keep a
/// waiter in the drain loop forever (the socket stays readable; the next wait
/// picks up the rest).
const MAX_READS_PER_DRAIN: usize = 4096;
/// The samples' `listen` backlog.
const BACKLOG: i32 = 5;
/// Connect retries sleep 10 ms longer each time, as the samples do, up to this.
const MAX_RETRY_SLEEP: Duration = Duration::from_secs(1);

/// Epoll token of the listening socket (until the peer is accepted).
const LISTENER_TOKEN: u64 = 0;
/// Epoll token of the connected socket.
const STREAM_TOKEN: u64 = 1;

/// Where the shared memory lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenampShm {
    /// A POSIX shm object (`shm_open`), as the samples use: `"openamp.shm"` is
    /// `/dev/shm/openamp.shm`.
    Posix(String),
    /// A plain file (for tests, or a hugetlbfs or tmpfs file elsewhere).
    File(PathBuf),
}

impl fmt::Display for OpenampShm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenampShm::Posix(name) => write!(f, "shm {name}"),
            OpenampShm::File(path) => write!(f, "shm file {}", path.display()),
        }
    }
}

impl OpenampShm {
    /// Removes the object's name (the memory lives on while it is mapped). For
    /// cleaning up after a run: the samples never remove it.
    pub fn unlink(&self) -> io::Result<()> {
        match self {
            OpenampShm::Posix(name) => Ok(rustix::shm::unlink(name.as_str())?),
            OpenampShm::File(path) => std::fs::remove_file(path),
        }
    }
}

/// Which side of the link this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenampRole {
    /// Process 0, the RPMsg remote (virtio device, `rpmsg-echo`): binds and listens.
    Listen,
    /// Process 1, the RPMsg host (virtio driver, `rpmsg-echo-ping`): connects.
    Connect,
}

impl OpenampRole {
    /// The peer id of this side: 0 for [`OpenampRole::Listen`], 1 for
    /// [`OpenampRole::Connect`].
    pub fn id(self) -> PeerId {
        match self {
            OpenampRole::Listen => 0,
            OpenampRole::Connect => 1,
        }
    }

    /// The peer id of the other side.
    pub fn other(self) -> PeerId {
        1 - self.id()
    }
}

/// The side an RPMsg role takes: the remote (virtio device) listens, as
/// `rpmsg-echo` does; the host (virtio driver) connects.
impl From<ivlink_core::rpmsg::Role> for OpenampRole {
    fn from(role: ivlink_core::rpmsg::Role) -> Self {
        match role {
            ivlink_core::rpmsg::Role::Remote => OpenampRole::Listen,
            ivlink_core::rpmsg::Role::Host => OpenampRole::Connect,
        }
    }
}

/// How to reach the link. [`Default`] is what OpenAMP's Linux samples use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenampOptions {
    /// The notification socket ([`DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    /// The shared memory ([`DEFAULT_SHM_NAME`]).
    pub shm: OpenampShm,
    /// Bytes of shared memory to map ([`DEFAULT_SIZE`]). A smaller object is grown
    /// to this size; a larger one keeps its size and only this much is mapped.
    pub size: usize,
    /// How long [`OpenampPeer::connect`] keeps retrying while nobody listens
    /// ([`DEFAULT_CONNECT_TIMEOUT`]); zero tries once. Not used when listening.
    pub connect_timeout: Duration,
    /// Whether [`OpenampPeer::listen`] writes a fresh resource table (status 0,
    /// gfeatures 0) before it listens, as OpenAMP's `rpmsg-echo` does on start
    /// (true by default). A table left by an earlier run still says `DRIVER_OK`:
    /// kept, it would pass for a live host. Not used when connecting.
    pub write_resource_table: bool,
}

impl Default for OpenampOptions {
    fn default() -> Self {
        OpenampOptions {
            socket: PathBuf::from(DEFAULT_SOCKET),
            shm: OpenampShm::Posix(DEFAULT_SHM_NAME.to_owned()),
            size: DEFAULT_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_resource_table: true,
        }
    }
}

/// One side of an OpenAMP Linux-machine link: the mapped shared memory and the
/// kick socket. One vector (0); notifying ignores the peer and vector given.
///
/// - Process 0 ([`OpenampPeer::listen`]) has id 0, process 1
///   ([`OpenampPeer::connect`]) id 1.
/// - Kicks arrive as [`Event::Notified`] on vector 0, `count` being the number of
///   kick bytes read (kicks coalesce; a kick sent while the socket buffer is full
///   is merged into the unread ones).
/// - The listening side reports the accepted connection as [`Event::PeerJoined`]
///   (peer 1, 1 vector).
/// - The other side closing its socket is [`Event::PeerLeft`] with its id (the
///   closest event: the one peer is gone and can no longer be notified; there is
///   no server). Afterwards [`Notify::notify`] fails with
///   [`NotifyError::UnknownPeer`], and the link is not re-established: OpenAMP's
///   samples accept one connection per run, and so does this.
#[derive(Debug)]
pub struct OpenampPeer {
    role: OpenampRole,
    socket_path: PathBuf,
    shm: OpenampShm,
    region: MappedRegion,
    epoll: OwnedFd,
    /// Device and inode of the socket file we bound, to remove it on drop only if
    /// nobody replaced it since.
    bound: Option<(u64, u64)>,
    state: Mutex<State>,
}

/// The name this type had before every transport was a `<Kind>Peer`.
#[deprecated(note = "renamed to OpenampPeer, like HostPeer, FilePeer and GuestPeer")]
pub type OpenampLink = OpenampPeer;

#[derive(Debug, Default)]
struct State {
    /// The listening socket, until the peer is accepted.
    listener: Option<OwnedFd>,
    /// The connected socket, until the peer closes it.
    stream: Option<OwnedFd>,
    /// A kick was sent before the peer was accepted: send it on accept.
    kick_on_accept: bool,
    /// The peer closed its socket.
    closed: bool,
    /// Events not yet taken.
    pending: VecDeque<Event>,
}

impl OpenampPeer {
    /// Process 0 (the RPMsg remote): maps the shared memory, writes a fresh
    /// resource table (see [`OpenampOptions::write_resource_table`]), replaces a
    /// stale socket file at `options.socket`, binds and listens. Returns at once;
    /// the connection is accepted when it arrives (see the type's docs).
    ///
    /// The table is written before the socket exists, so a host, which can only
    /// look at it once connected, never sees a leftover one.
    ///
    /// An existing socket file is removed first, as the samples do (a live
    /// listener's too: it is not probed, since a probe would use up its one
    /// accept). Any other kind of file there is an error and stays untouched.
    pub fn listen(options: OpenampOptions) -> Result<Self, DeviceError> {
        let region = map_shm(&options.shm, options.size)?;
        if options.write_resource_table {
            resource_table::write(&*region).map_err(|e| DeviceError::Open {
                path: options.shm.to_string(),
                error: io::Error::other(format!("cannot write the resource table: {e}")),
            })?;
        }
        let path = &options.socket;
        let socket_err = |error: Errno| DeviceError::Open {
            path: format!("notification socket {}", path.display()),
            error: error.into(),
        };
        match rustix::fs::lstat(path) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Socket => {
                debug!("replacing the socket file {}", path.display());
                rustix::fs::unlink(path).map_err(socket_err)?;
            }
            Ok(_) => {
                return Err(DeviceError::Open {
                    path: format!("notification socket {}", path.display()),
                    error: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is in the way",
                    ),
                });
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(socket_err(e)),
        }
        let address = SocketAddrUnix::new(path.as_path()).map_err(socket_err)?;
        let listener = new_socket().map_err(socket_err)?;
        rustix::net::bind(&listener, &address).map_err(socket_err)?;
        let bound = rustix::fs::lstat(path)
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        rustix::net::listen(&listener, BACKLOG).map_err(socket_err)?;
        let epoll = new_epoll()?;
        watch(&epoll, listener.as_fd(), LISTENER_TOKEN)?;
        debug!(
            size = region.len(),
            "OpenAMP remote side listening on {}",
            path.display()
        );
        Ok(OpenampPeer {
            role: OpenampRole::Listen,
            socket_path: options.socket,
            shm: options.shm,
            region,
            epoll,
            bound,
            state: Mutex::new(State {
                listener: Some(listener),
                ..State::default()
            }),
        })
    }

    /// Process 1 (the RPMsg host): maps the shared memory and connects to
    /// `options.socket`, retrying while nobody listens there yet (no file, refused,
    /// backlog full) with sleeps growing by 10 ms, until `options.connect_timeout`.
    /// Failing, it is [`DeviceError::Open`] naming OpenAMP's notification socket.
    pub fn connect(options: OpenampOptions) -> Result<Self, DeviceError> {
        let region = map_shm(&options.shm, options.size)?;
        let path = &options.socket;
        // Not "the ivshmem server": this socket is OpenAMP's, and the remote
        // side's process listens on it.
        let socket_name = format!("OpenAMP's notification socket {}", path.display());
        let connect_err = |error: Errno| DeviceError::Open {
            path: socket_name.clone(),
            error: error.into(),
        };
        let address = SocketAddrUnix::new(path.as_path()).map_err(connect_err)?;
        // A timeout too long to add up is forever.
        let deadline = Instant::now().checked_add(options.connect_timeout);
        let mut attempt = 0u32;
        let stream = loop {
            let socket = new_socket().map_err(connect_err)?;
            match rustix::net::connect(&socket, &address) {
                Ok(()) => break socket,
                Err(Errno::INTR) => continue,
                Err(e @ (Errno::NOENT | Errno::CONNREFUSED | Errno::AGAIN)) => {
                    let left = deadline.map_or(MAX_RETRY_SLEEP, |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    if left.is_zero() {
                        return Err(DeviceError::Open {
                            path: socket_name,
                            error: io::Error::new(
                                io::Error::from(e).kind(),
                                format!(
                                    "no remote side listened there within {:.1} s ({e})",
                                    options.connect_timeout.as_secs_f64()
                                ),
                            ),
                        });
                    }
                    let sleep = (Duration::from_millis(10) * attempt).min(MAX_RETRY_SLEEP);
                    std::thread::sleep(sleep.min(left));
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(connect_err(e)),
            }
        };
        let epoll = new_epoll()?;
        watch(&epoll, stream.as_fd(), STREAM_TOKEN)?;
        debug!(
            attempts = attempt + 1,
            size = region.len(),
            "OpenAMP host side connected to {}",
            path.display()
        );
        Ok(OpenampPeer {
            role: OpenampRole::Connect,
            socket_path: options.socket,
            shm: options.shm,
            region,
            epoll,
            bound: None,
            state: Mutex::new(State {
                stream: Some(stream),
                ..State::default()
            }),
        })
    }

    /// [`OpenampPeer::listen`] or [`OpenampPeer::connect`], as `role` says.
    pub fn open(role: OpenampRole, options: OpenampOptions) -> Result<Self, DeviceError> {
        match role {
            OpenampRole::Listen => OpenampPeer::listen(options),
            OpenampRole::Connect => OpenampPeer::connect(options),
        }
    }

    /// Which side this is.
    pub fn role(&self) -> OpenampRole {
        self.role
    }

    /// The notification socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The shared memory.
    pub fn shm(&self) -> &OpenampShm {
        &self.shm
    }

    /// Whether the other side is connected, as far as can be told now: accepts it
    /// if it is waiting, and reads what it sent to notice whether it has closed
    /// (kicks read are kept for [`Device::wait`]).
    pub fn is_connected(&self) -> bool {
        let mut state = self.lock();
        let _ = self.try_accept(&mut state);
        let _ = self.drain(&mut state);
        state.stream.is_some()
    }

    /// Whether the other side has closed its socket.
    pub fn peer_closed(&self) -> bool {
        self.lock().closed
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts the peer if it is waiting; sends a remembered kick. `Ok(false)` if
    /// nobody is waiting (or this side does not listen).
    fn try_accept(&self, state: &mut State) -> io::Result<bool> {
        let Some(listener) = &state.listener else {
            return Ok(false);
        };
        let stream = loop {
            match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(stream) => break stream,
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(Errno::AGAIN) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        };
        // One connection, as the samples accept: stop listening.
        let _ = epoll::delete(&self.epoll, listener);
        state.listener = None;
        epoll::add(
            &self.epoll,
            &stream,
            epoll::EventData::new_u64(STREAM_TOKEN),
            epoll::EventFlags::IN,
        )?;
        debug!(
            "OpenAMP host side connected on {}",
            self.socket_path.display()
        );
        state.stream = Some(stream);
        state.pending.push_back(Event::PeerJoined {
            peer: self.role.other(),
            vectors: 1,
        });
        if std::mem::take(&mut state.kick_on_accept) {
            self.kick(state)?;
        }
        Ok(true)
    }

    /// Sends one kick byte. A full socket buffer means the peer has unread kicks
    /// already: that is success. `Ok(false)` if the peer is gone.
    fn kick(&self, state: &mut State) -> io::Result<bool> {
        let Some(stream) = &state.stream else {
            return Ok(false);
        };
        loop {
            match rustix::net::send(stream, &[KICK], SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
                Ok(_) | Err(Errno::AGAIN) => return Ok(true),
                Err(Errno::INTR) => continue,
                Err(Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN) => {
                    // Read what it sent before it went, then report it gone.
                    self.drain(state)?;
                    if !state.closed {
                        self.mark_closed(state);
                    }
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`OpenampPeer::kick`] as [`Notify::notify`] reports it.
    fn kick_or_gone(&self, state: &mut State) -> Result<(), NotifyError> {
        match self.kick(state) {
            Ok(true) => Ok(()),
            Ok(false) => Err(NotifyError::UnknownPeer(self.role.other())),
            Err(e) => Err(NotifyError::Os(e.raw_os_error().unwrap_or(0))),
        }
    }

    /// Reads every kick byte that is there (up to a bound); notices the peer
    /// closing.
    fn drain(&self, state: &mut State) -> io::Result<()> {
        let Some(stream) = &state.stream else {
            return Ok(());
        };
        let mut buf = [0u8; READ_CHUNK];
        let mut count = 0u64;
        let mut closed = false;
        let mut reads = 0;
        while reads < MAX_READS_PER_DRAIN {
            match rustix::io::read(stream, &mut buf) {
                Ok(0) | Err(Errno::CONNRESET) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    count += n as u64;
                    reads += 1;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if count > 0 {
            state.push_notified(count);
        }
        if closed {
            self.mark_closed(state);
        }
        Ok(())
    }

    fn mark_closed(&self, state: &mut State) {
        if let Some(stream) = state.stream.take() {
            let _ = epoll::delete(&self.epoll, &stream);
        }
        state.closed = true;
        state.pending.push_back(Event::PeerLeft {
            peer: self.role.other(),
        });
        debug!(
            "OpenAMP peer {} closed {}",
            self.role.other(),
            self.socket_path.display()
        );
    }

    fn collect(&self, state: &mut State, ready: &[epoll::Event]) -> Result<(), DeviceError> {
        for event in ready {
            match event.data.u64() {
                LISTENER_TOKEN => {
                    self.try_accept(state)
                        .map_err(DeviceError::io("accepting the OpenAMP peer"))?;
                }
                _ => self
                    .drain(state)
                    .map_err(DeviceError::io("reading the OpenAMP notification socket"))?,
            }
        }
        Ok(())
    }
}

impl State {
    fn push_notified(&mut self, count: u64) {
        for event in self.pending.iter_mut() {
            if let Event::Notified { count: c, .. } = event {
                *c += count;
                return;
            }
        }
        self.pending.push_back(Event::Notified { vector: 0, count });
    }

    fn take(&mut self, what: WaitFor) -> Option<Event> {
        let index = self.pending.iter().position(|e| what.matches(e))?;
        self.pending.remove(index)
    }
}

impl Drop for OpenampPeer {
    fn drop(&mut self) {
        // Remove the socket file we bound, unless someone has replaced it since.
        if let Some(bound) = self.bound
            && let Ok(stat) = rustix::fs::lstat(&self.socket_path)
            && (stat.st_dev, stat.st_ino) == bound
        {
            let _ = rustix::fs::unlink(&self.socket_path);
        }
    }
}

impl Notify for OpenampPeer {
    /// Kicks the other side; `peer` and `vector` are ignored (the samples ignore
    /// the notify id too). Never blocks.
    ///
    /// On the listening side before the other side has connected, the kick is
    /// remembered and sent when it is accepted, and this returns `Ok`: the peer
    /// is expected, and a spurious kick is harmless where a lost one is not. Once
    /// the other side has closed its socket, this fails with
    /// [`NotifyError::UnknownPeer`].
    fn notify(&self, _peer: PeerId, _vector: Vector) -> Result<(), NotifyError> {
        let os = |e: io::Error| NotifyError::Os(e.raw_os_error().unwrap_or(0));
        let mut state = self.lock();
        if state.closed {
            return Err(NotifyError::UnknownPeer(self.role.other()));
        }
        if state.stream.is_none() {
            // The listening side before the peer came: remember the kick, and take
            // the peer if it is waiting (accepting sends the kick).
            state.kick_on_accept = true;
            self.try_accept(&mut state).map_err(os)?;
            return if state.closed {
                Err(NotifyError::UnknownPeer(self.role.other()))
            } else {
                Ok(())
            };
        }
        self.kick_or_gone(&mut state)
    }
}

impl Device for OpenampPeer {
    fn region(&self) -> &RawRegion {
        &self.region
    }

    fn id(&self) -> PeerId {
        self.role.id()
    }

    fn vectors(&self) -> usize {
        1
    }

    /// The other side, once connected and until it closes.
    fn peers(&self) -> Vec<PeerInfo> {
        if self.is_connected() {
            vec![PeerInfo {
                id: self.role.other(),
                vectors: 1,
            }]
        } else {
            Vec::new()
        }
    }

    /// The one other side is known once it has connected.
    fn knows_peers(&self) -> bool {
        true
    }

    /// Kicks are [`Event::Notified`] on vector 0; the listening side's accept is
    /// [`Event::PeerJoined`]; the other side closing is [`Event::PeerLeft`].
    ///
    /// Once the other side has closed, nothing can ring any more: a wait without a
    /// timeout for something not already pending fails (with
    /// [`io::ErrorKind::NotConnected`]) instead of sleeping forever; a wait with a
    /// timeout times out as usual.
    fn wait(&self, what: WaitFor, timeout: Option<Duration>) -> Result<Option<Event>, DeviceError> {
        let found = crate::wait::wait_epoll(
            self.epoll.as_fd(),
            timeout,
            || {
                let mut state = self.lock();
                match state.take(what) {
                    Some(event) => Some(Ok(event)),
                    None if state.closed && timeout.is_none() => Some(Err(DeviceError::Io {
                        context: "waiting for a kick",
                        error: io::Error::new(
                            io::ErrorKind::NotConnected,
                            "the other side closed the OpenAMP notification socket",
                        ),
                    })),
                    None => None,
                }
            },
            |ready| self.collect(&mut self.lock(), ready),
        )?;
        found.transpose()
    }

    /// An epoll set holding the listening socket until the peer is accepted, then
    /// the connected socket.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.epoll.as_fd())
    }

    fn describe(&self) -> String {
        let side = match self.role {
            OpenampRole::Listen => "remote side",
            OpenampRole::Connect => "host side",
        };
        format!(
            "openamp-linux socket {} ({side}), {}",
            self.socket_path.display(),
            self.shm
        )
    }
}

/// Opens or creates the shared memory, grows it to `size` if smaller, maps `size`
/// bytes.
fn map_shm(shm: &OpenampShm, size: usize) -> Result<MappedRegion, DeviceError> {
    let open_err = |error: Errno| DeviceError::Open {
        path: shm.to_string(),
        error: error.into(),
    };
    let mode = Mode::from_bits_truncate(0o600);
    let fd = match shm {
        OpenampShm::Posix(name) => rustix::shm::open(
            name.as_str(),
            rustix::shm::OFlags::CREATE | rustix::shm::OFlags::RDWR,
            mode,
        ),
        OpenampShm::File(path) => {
            rustix::fs::open(path, OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC, mode)
        }
    }
    .map_err(open_err)?;
    let current = rustix::fs::fstat(&fd).map_err(open_err)?.st_size as u64;
    if current < size as u64 {
        rustix::fs::ftruncate(&fd, size as u64).map_err(open_err)?;
    }
    Ok(MappedRegion::map_file_range(&fd, 0, size as u64)?)
}

fn new_socket() -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
}

fn new_epoll() -> Result<OwnedFd, DeviceError> {
    epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| DeviceError::io("creating an epoll set")(e.into()))
}

fn watch(epoll: &OwnedFd, fd: BorrowedFd<'_>, token: u64) -> Result<(), DeviceError> {
    epoll::add(
        epoll,
        fd,
        epoll::EventData::new_u64(token),
        epoll::EventFlags::IN,
    )
    .map_err(|e| DeviceError::io("watching the notification socket")(e.into()))
}

#[cfg(test)]
mod tests;
