//! The server's listening socket: refuses to steal a live server's path, replaces a
//! stale one, and removes only its own socket file on exit. A socket handed in by
//! a service manager is used as it is and its file never removed.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use rustix::fs::{Gid, Mode};
use rustix::net::sockopt::Timeout;
use rustix::net::{AddressFamily, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType};
use tracing::{debug, info};

use super::ServerError;

/// A bound, listening, non-blocking UNIX socket.
#[derive(Debug)]
pub struct Listener {
    socket: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file this listener created; none for a
    /// socket handed in, whose file belongs to whoever made it.
    identity: Option<(u64, u64)>,
}

impl Listener {
    /// Binds `path`, applying `mode` and `group` to the socket file.
    pub fn bind(path: &Path, mode: Option<u32>, group: Option<Gid>) -> Result<Self, ServerError> {
        remove_if_stale(path)?;
        let bind_err = |error: io::Error| ServerError::Bind {
            path: path.to_owned(),
            error,
        };
        let socket = UnixListener::bind(path).map_err(bind_err)?;
        let identity = match std::fs::symlink_metadata(path) {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(error) => {
                let _ = std::fs::remove_file(path);
                return Err(bind_err(error));
            }
        };
        // From here on, dropping the listener on an error removes the file.
        let listener = Listener {
            socket,
            path: path.to_owned(),
            identity,
        };
        listener.socket.set_nonblocking(true).map_err(bind_err)?;
        if let Some(group) = group {
            rustix::fs::chown(path, None, Some(group)).map_err(|e| bind_err(e.into()))?;
        }
        if let Some(mode) = mode {
            rustix::fs::chmod(path, Mode::from_bits_truncate(mode))
                .map_err(|e| bind_err(e.into()))?;
        }
        Ok(listener)
    }

    /// Serves on a socket that is already bound and listening (socket
    /// activation), as it is: its mode and owner are left alone, and its file is
    /// not removed when the server stops. The path comes from the socket's own
    /// address (`@name` for an abstract one).
    pub fn adopt(socket: OwnedFd) -> io::Result<Self> {
        let address = rustix::net::getsockname(&socket)?;
        let path = SocketAddrUnix::try_from(address)
            .map(|address| describe(&address))
            .unwrap_or_else(|_| PathBuf::from("(not a UNIX socket)"));
        let socket = UnixListener::from(socket);
        socket.set_nonblocking(true)?;
        Ok(Listener {
            socket,
            path,
            identity: None,
        })
    }

    /// Whether the socket was handed in rather than bound by this listener.
    pub fn is_adopted(&self) -> bool {
        self.identity.is_none()
    }

    /// The listening socket.
    pub fn socket(&self) -> &UnixListener {
        &self.socket
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unlinks the socket file if it is still ours (another server may have
    /// replaced it meanwhile).
    pub fn remove(&self) {
        if let Some(identity) = self.identity
            && let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Listener {
    /// A server that never ran (or failed) leaves no socket file behind.
    fn drop(&mut self) {
        self.remove();
    }
}

/// A socket address as a path for messages: the path, `@name` for an abstract
/// address, `(unnamed)` for none.
fn describe(address: &SocketAddrUnix) -> PathBuf {
    use std::ffi::OsStr;
    if let Some(path) = address.path_bytes() {
        PathBuf::from(OsStr::from_bytes(path))
    } else if let Some(name) = address.abstract_name() {
        let mut text = b"@".to_vec();
        text.extend_from_slice(name);
        PathBuf::from(OsStr::from_bytes(&text))
    } else {
        PathBuf::from("(unnamed)")
    }
}

/// Removes `path` if it is a socket nobody listens on; refuses a live one and any
/// other kind of file.
fn remove_if_stale(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(ServerError::Bind {
                path: path.to_owned(),
                error,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_owned()));
    }
    match probe(path) {
        Ok(()) => Err(ServerError::AlreadyRunning(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            info!("replacing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|error| ServerError::Bind {
                path: path.to_owned(),
                error,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Timed out in a full backlog: a server is there, just busy.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(ServerError::AlreadyRunning(path.to_owned()))
        }
        Err(error) => Err(ServerError::Bind {
            path: path.to_owned(),
            error,
        }),
    }
}

/// Start of the abstract address a liveness probe connects from, so that an
/// ivlink server recognises the probe and does not take it for a peer.
pub(super) const PROBE_ADDRESS_PREFIX: &[u8] = b"ivlink-liveness-probe/";

/// How long a liveness probe may wait for a connection.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a connection came from another server's liveness probe.
pub(super) fn is_probe(peer_address: Option<&SocketAddrAny>) -> bool {
    peer_address
        .cloned()
        .and_then(|address| SocketAddrUnix::try_from(address).ok())
        .is_some_and(|address| {
            address
                .abstract_name()
                .is_some_and(|name| name.starts_with(PROBE_ADDRESS_PREFIX))
        })
}

/// Connects to `path` to see whether a server listens there, from an abstract
/// address that marks the connection as a probe (a plain connection when that
/// address cannot be bound).
fn probe(path: &Path) -> io::Result<()> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let target = SocketAddrUnix::new(path)?;
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let name = format!(
        "{}{}/{}",
        String::from_utf8_lossy(PROBE_ADDRESS_PREFIX),
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    );
    // A live server whose backlog is full would block the connect forever.
    rustix::net::sockopt::set_socket_timeout(&socket, Timeout::Send, Some(PROBE_TIMEOUT))?;
    if let Err(e) = SocketAddrUnix::new_abstract_name(name.as_bytes())
        .and_then(|address| rustix::net::bind(&socket, &address))
    {
        debug!("liveness probe unmarked: cannot bind {name:?}: {e}");
    }
    rustix::net::connect(&socket, &target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_stale_socket_but_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves a dead socket file
        let live = Listener::bind(&path, Some(0o660), None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = Listener::bind(&path, None, None).unwrap_err();
        assert!(matches!(err, ServerError::AlreadyRunning(_)), "{err}");
        live.remove();
        assert!(!path.exists());
    }

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"data").unwrap();
        let err = Listener::bind(&path, None, None).unwrap_err();
        assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[test]
    fn an_adopted_socket_keeps_its_file_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let socket = UnixListener::bind(&path).unwrap();
        rustix::fs::chmod(&path, Mode::from_bits_truncate(0o640)).unwrap();
        let adopted = Listener::adopt(socket.into()).unwrap();
        assert!(adopted.is_adopted());
        assert_eq!(adopted.path(), path);
        drop(adopted);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket(), "the socket file must stay");
        assert_eq!(meta.mode() & 0o777, 0o640);
    }

    #[test]
    fn abstract_addresses_are_shown_with_an_at_sign() {
        let address = SocketAddrUnix::new_abstract_name(b"ivlink-x").unwrap();
        assert_eq!(describe(&address), Path::new("@ivlink-x"));
    }

    #[test]
    fn removes_only_its_own_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let first = Listener::bind(&path, None, None).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _second = UnixListener::bind(&path).unwrap();
        first.remove();
        assert!(path.exists(), "another server's socket must survive");
    }
}
