//! Socket activation: the listening socket a service manager opened and handed
//! in as fd 3, used as it is.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use rustix::io::{Errno, FdFlags};
use rustix::net::{AddressFamily, SocketType};
use thiserror::Error;
use tracing::warn;

use super::take_env;
use crate::server::Listener;

/// The first fd a service manager passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Why the socket a service manager passed cannot be served on.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ActivationError {
    /// `LISTEN_PID` names this process but `LISTEN_FDS` is not a count.
    #[error("socket activation: LISTEN_FDS={0:?} is not a number of sockets")]
    BadCount(String),
    /// `LISTEN_PID` is not a process id.
    #[error("socket activation: LISTEN_PID={0:?} is not a process id")]
    BadPid(String),
    /// The service manager said it passed sockets but fd 3 is closed.
    #[error("socket activation: LISTEN_FDS={0} but fd 3 is not open")]
    NotOpen(u32),
    /// fd 3 is not a listening UNIX stream socket.
    #[error(
        "socket activation: fd 3 is {0}, not a listening UNIX stream socket \
         (the .socket unit needs ListenStream=/path)"
    )]
    WrongSocket(String),
    /// The socket is right but could not be set up.
    #[error("socket activation: cannot use the socket passed as fd 3: {0}")]
    Unusable(String),
}

/// Takes the listening socket a service manager passed, if it passed one to
/// this process: `LISTEN_PID` is this process's id and `LISTEN_FDS` is one or
/// more. The socket (fd 3) must be a listening `AF_UNIX` `SOCK_STREAM` socket; it
/// is used as it is (its path, mode and owner are the unit's). Further sockets
/// are left alone with a warning.
///
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the
/// environment while the process is single-threaded (call this early), and fd 3
/// is made close-on-exec: nothing this process starts inherits either. A
/// second call finds nothing.
pub fn take_listener() -> Result<Option<Listener>, ActivationError> {
    let pid = take_env("LISTEN_PID");
    let fds = take_env("LISTEN_FDS");
    let _ = take_env("LISTEN_FDNAMES");
    let count = passed_count(
        pid.as_deref().map(|p| p.to_string_lossy()).as_deref(),
        fds.as_deref().map(|f| f.to_string_lossy()).as_deref(),
        std::process::id(),
    )?;
    if count == 0 {
        return Ok(None);
    }
    if count > 1 {
        warn!(
            "socket activation: {count} sockets passed; serving on the first (fd 3), \
             the others are not used"
        );
    }
    // SAFETY: fcntl(F_GETFD) on a plain fd number reads flags and touches no memory.
    if unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_GETFD) } < 0 {
        return Err(ActivationError::NotOpen(count));
    }
    // SAFETY: fd 3 is open (checked above) and was handed to this process by the
    // service manager (LISTEN_PID names it); nothing else in the process owns it,
    // and the variables that announced it are gone, so it is taken only once.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    let _ = rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC);
    check_listening_unix_stream(&fd)?;
    Listener::adopt(fd)
        .map(Some)
        .map_err(|e| ActivationError::Unusable(e.to_string()))
}

/// How many sockets the environment says were passed to the process `own_pid`
/// (0 when none or when they were meant for another process), as
/// `sd_listen_fds(3)` decides it.
fn passed_count(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    own_pid: u32,
) -> Result<u32, ActivationError> {
    let Some(pid) = listen_pid else {
        return Ok(0);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadPid(pid.to_owned()))?;
    if pid != own_pid {
        return Ok(0);
    }
    let Some(fds) = listen_fds else {
        return Ok(0);
    };
    fds.trim()
        .parse()
        .map_err(|_| ActivationError::BadCount(fds.to_owned()))
}

/// Refuses anything but a listening UNIX stream socket, saying what it is.
fn check_listening_unix_stream(fd: &OwnedFd) -> Result<(), ActivationError> {
    let wrong = |what: String| ActivationError::WrongSocket(what);
    let family = match rustix::net::sockopt::socket_domain(fd) {
        Ok(family) => family,
        Err(Errno::NOTSOCK) => return Err(wrong(file_kind(fd))),
        Err(e) => return Err(wrong(format!("a socket that cannot be queried ({e})"))),
    };
    let kind = rustix::net::sockopt::socket_type(fd)
        .map_err(|e| wrong(format!("a socket that cannot be queried ({e})")))?;
    let listening = rustix::net::sockopt::socket_acceptconn(fd).unwrap_or(false);
    if family == AddressFamily::UNIX && kind == SocketType::STREAM && listening {
        return Ok(());
    }
    let state = if listening || kind != SocketType::STREAM {
        ""
    } else {
        " that is not listening"
    };
    Err(wrong(format!(
        "{} {} socket{state}",
        family_name(family),
        type_name(kind)
    )))
}

/// What a non-socket fd is, for the error line.
fn file_kind(fd: &OwnedFd) -> String {
    use rustix::fs::FileType;
    match rustix::fs::fstat(fd).map(|st| FileType::from_raw_mode(st.st_mode)) {
        Ok(FileType::RegularFile) => "a regular file".into(),
        Ok(FileType::Directory) => "a directory".into(),
        Ok(FileType::Fifo) => "a pipe".into(),
        Ok(FileType::CharacterDevice) => "a character device".into(),
        Ok(FileType::BlockDevice) => "a block device".into(),
        _ => "not a socket".into(),
    }
}

fn family_name(family: AddressFamily) -> String {
    match family {
        AddressFamily::UNIX => "a UNIX".into(),
        AddressFamily::INET => "an IPv4".into(),
        AddressFamily::INET6 => "an IPv6".into(),
        AddressFamily::NETLINK => "a netlink".into(),
        other => format!("a family {}", other.as_raw()),
    }
}

fn type_name(kind: SocketType) -> String {
    match kind {
        SocketType::STREAM => "stream".into(),
        SocketType::DGRAM => "datagram".into(),
        SocketType::SEQPACKET => "seqpacket".into(),
        SocketType::RAW => "raw".into(),
        other => format!("type {}", other.as_raw()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

    #[test]
    fn sockets_are_taken_only_when_meant_for_this_process() {
        assert_eq!(passed_count(None, None, 7), Ok(0));
        assert_eq!(passed_count(None, Some("1"), 7), Ok(0));
        assert_eq!(passed_count(Some("8"), Some("1"), 7), Ok(0));
        assert_eq!(passed_count(Some("7"), None, 7), Ok(0));
        assert_eq!(passed_count(Some("7"), Some("1"), 7), Ok(1));
        assert_eq!(passed_count(Some("7"), Some("2"), 7), Ok(2));
        assert_eq!(
            passed_count(Some("7"), Some("x"), 7),
            Err(ActivationError::BadCount("x".into()))
        );
        assert_eq!(
            passed_count(Some("me"), Some("1"), 7),
            Err(ActivationError::BadPid("me".into()))
        );
    }

    fn refusal(fd: OwnedFd) -> String {
        check_listening_unix_stream(&fd).unwrap_err().to_string()
    }

    #[test]
    fn only_a_listening_unix_stream_socket_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("sock")).unwrap();
        assert_eq!(check_listening_unix_stream(&listener.into()), Ok(()));

        let datagram = UnixDatagram::unbound().unwrap();
        assert!(refusal(datagram.into()).contains("fd 3 is a UNIX datagram socket, not"));
        let (stream, _other) = UnixStream::pair().unwrap();
        assert!(refusal(stream.into()).contains("a UNIX stream socket that is not listening"));
        let file = std::fs::File::create(dir.path().join("file")).unwrap();
        assert!(refusal(file.into()).contains("fd 3 is a regular file"));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(refusal(tcp.into()).contains("an IPv4 stream socket, not"));
    }
}
