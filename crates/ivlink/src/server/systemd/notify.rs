//! Readiness notification: `READY=1`, `STATUS=…` and `STOPPING=1` datagrams to
//! the socket named by `NOTIFY_SOCKET`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use thiserror::Error;
use tracing::{debug, warn};

use super::take_env;

/// The variable a service manager sets to the socket it reads notifications on.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Why notifications cannot be sent.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// The address is neither an absolute path nor `@name`.
    #[error(
        "NOTIFY_SOCKET={0:?}: expected an absolute socket path or @abstract-name \
         (other kinds, such as vsock, are not supported)"
    )]
    BadAddress(String),
    /// Creating the socket failed.
    #[error("cannot create a socket for notifications to {address}: {error}")]
    Socket {
        /// The address it was meant for.
        address: String,
        /// The system's reason.
        error: io::Error,
    },
}

/// A service manager's notification socket (`sd_notify(3)`).
#[derive(Debug)]
pub struct Notifier {
    socket: OwnedFd,
    address: SocketAddrUnix,
    display: String,
}

impl Notifier {
    /// A notifier for `address`: an absolute path, or `@name` for an abstract
    /// socket, as in `NOTIFY_SOCKET`.
    pub fn new(address: &OsStr) -> Result<Self, NotifyError> {
        let display = address.to_string_lossy().into_owned();
        let bytes = address.as_bytes();
        let socket_address = match bytes.first() {
            Some(b'/') => SocketAddrUnix::new(bytes),
            Some(b'@') => SocketAddrUnix::new_abstract_name(&bytes[1..]),
            _ => return Err(NotifyError::BadAddress(display)),
        }
        .map_err(|_| NotifyError::BadAddress(display.clone()))?;
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| NotifyError::Socket {
            address: display.clone(),
            error: e.into(),
        })?;
        Ok(Notifier {
            socket,
            address: socket_address,
            display,
        })
    }

    /// The notifier `NOTIFY_SOCKET` asks for, if it is set. The variable is
    /// removed from the environment while the process is single-threaded (call
    /// this early), so programs it starts do not notify in its name.
    pub fn from_env() -> Option<Result<Self, NotifyError>> {
        take_env(NOTIFY_SOCKET).map(|address| Self::new(&address))
    }

    /// Sends one notification: newline-separated `KEY=value` assignments, such
    /// as `"READY=1\nSTATUS=listening"`.
    pub fn send(&self, state: &str) -> io::Result<()> {
        rustix::net::sendto(
            &self.socket,
            state.as_bytes(),
            SendFlags::NOSIGNAL,
            &self.address,
        )?;
        Ok(())
    }

    /// Where notifications go, as given.
    pub fn address(&self) -> &str {
        &self.display
    }
}

/// Least time between two peer-count updates: a burst of connections sends one
/// update, not one per peer.
const STATUS_INTERVAL: Duration = Duration::from_millis(500);

/// What a server tells its service manager: ready once listening, the peer
/// count when it changes (at most every [`STATUS_INTERVAL`]), stopping at the
/// end. A failed send is logged once and never stops the server.
#[derive(Debug)]
pub(in crate::server) struct Readiness {
    notifier: Notifier,
    listening: String,
    reported_peers: usize,
    last_sent: Option<Instant>,
    /// When a peer count not reported yet may be sent.
    pending_until: Option<Instant>,
    warned: bool,
}

impl Readiness {
    /// Reports through `notifier`; `listening` describes the server (socket,
    /// size, vectors) and starts every status line.
    pub(in crate::server) fn new(notifier: Notifier, listening: String) -> Self {
        Readiness {
            notifier,
            listening,
            reported_peers: 0,
            last_sent: None,
            pending_until: None,
            warned: false,
        }
    }

    /// `READY=1` with the status line.
    pub(in crate::server) fn ready(&mut self, now: Instant) {
        let state = format!("READY=1\nSTATUS={}", self.listening);
        self.send(&state);
        self.last_sent = Some(now);
    }

    /// Reports `peers` if it changed and the last update is old enough;
    /// otherwise remembers to, at the instant [`deadline`](Self::deadline) gives.
    pub(in crate::server) fn peers(&mut self, peers: usize, now: Instant) {
        if peers == self.reported_peers {
            self.pending_until = None;
            return;
        }
        let due = self
            .last_sent
            .map_or(now, |last| last + STATUS_INTERVAL)
            .max(now);
        if due > now {
            self.pending_until = Some(due);
            return;
        }
        let state = format!(
            "STATUS={}; {peers} peer{}",
            self.listening,
            if peers == 1 { "" } else { "s" }
        );
        self.send(&state);
        self.reported_peers = peers;
        self.last_sent = Some(now);
        self.pending_until = None;
    }

    /// When an update held back by the rate limit is due.
    pub(in crate::server) fn deadline(&self) -> Option<Instant> {
        self.pending_until
    }

    /// `STOPPING=1`, when the server begins to shut down.
    pub(in crate::server) fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&mut self, state: &str) {
        match self.notifier.send(state) {
            Ok(()) => debug!(
                "notified {}: {}",
                self.notifier.address(),
                state.replace('\n', " ")
            ),
            Err(e) if !self.warned => {
                self.warned = true;
                warn!(
                    "cannot notify the service manager on {}: {e}",
                    self.notifier.address()
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn receiver() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let notifier = Notifier::new(path.as_os_str()).unwrap();
        (dir, socket, notifier)
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let mut all = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        all
    }

    #[test]
    fn notifies_a_path_and_an_abstract_socket() {
        let (_dir, socket, notifier) = receiver();
        notifier.send("READY=1").unwrap();
        assert_eq!(received(&socket), ["READY=1"]);

        let name = format!("ivlink-notify-test-{}", std::process::id());
        let address = SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap();
        let abstract_socket =
            rustix::net::socket(AddressFamily::UNIX, SocketType::DGRAM, None).unwrap();
        rustix::net::bind(&abstract_socket, &address).unwrap();
        let abstract_socket = UnixDatagram::from(abstract_socket);
        abstract_socket.set_nonblocking(true).unwrap();
        Notifier::new(OsStr::new(&format!("@{name}")))
            .unwrap()
            .send("STOPPING=1")
            .unwrap();
        assert_eq!(received(&abstract_socket), ["STOPPING=1"]);
    }

    #[test]
    fn refuses_relative_and_empty_addresses() {
        for bad in ["", "notify", "vsock:2:1234"] {
            assert!(
                matches!(
                    Notifier::new(OsStr::new(bad)),
                    Err(NotifyError::BadAddress(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn peer_counts_are_sent_on_change_and_rate_limited() {
        let (_dir, socket, notifier) = receiver();
        let mut readiness = Readiness::new(notifier, "listening on /s".into());
        let start = Instant::now();
        readiness.ready(start);
        assert_eq!(received(&socket), ["READY=1\nSTATUS=listening on /s"]);

        // A change right after the last update waits for the interval.
        readiness.peers(1, start);
        assert!(received(&socket).is_empty());
        assert_eq!(readiness.deadline(), Some(start + STATUS_INTERVAL));
        readiness.peers(3, start + STATUS_INTERVAL / 2);
        assert!(received(&socket).is_empty());
        let later = start + STATUS_INTERVAL;
        readiness.peers(3, later);
        assert_eq!(received(&socket), ["STATUS=listening on /s; 3 peers"]);
        assert_eq!(readiness.deadline(), None);

        // A change undone before it went out sends nothing; no change, nothing.
        readiness.peers(4, later + STATUS_INTERVAL / 4);
        readiness.peers(3, later + STATUS_INTERVAL / 2);
        assert_eq!(readiness.deadline(), None);
        readiness.peers(3, later + STATUS_INTERVAL * 4);
        assert!(received(&socket).is_empty());

        readiness.peers(1, later + STATUS_INTERVAL * 2);
        readiness.stopping();
        assert_eq!(
            received(&socket),
            [
                "STATUS=listening on /s; 1 peer",
                "STOPPING=1\nSTATUS=stopping"
            ]
        );
    }

    #[test]
    fn a_vanished_manager_does_not_stop_the_server() {
        let (dir, socket, notifier) = receiver();
        drop(socket);
        drop(dir);
        let mut readiness = Readiness::new(notifier, "x".into());
        readiness.ready(Instant::now());
        readiness.stopping();
        assert!(readiness.warned);
    }
}
