//! Helpers shared by the raw-client integration tests: an embedded server on a
//! private socket, and a client that reads the wire exactly as QEMU's standalone
//! client does (one `recvmsg` of 8 bytes per message) and records every message as
//! `(value, whether an fd came with it)`.
//!
//! The client is deliberately independent of `ivlink::wire` and `HostPeer`: it is
//! the yardstick the server is measured against, so it checks the framing rules of
//! the protocol doc (section 1.1) on every single message and panics on any
//! violation.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ivlink::ServerConfig;
use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

/// How long any single wait may take before the test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Size of the shared memory the test servers use.
pub const SHM_SIZE: u64 = 1 << 20;

/// A server configuration on a private socket in `dir` with a sealed memfd.
pub fn config(dir: &tempfile::TempDir, vectors: u16) -> ServerConfig {
    ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: SHM_SIZE,
        vectors,
        ..ServerConfig::default()
    }
}

/// Starts a server on its own thread.
pub fn start(config: ServerConfig) -> ServerThread {
    ServerThread::start(config).expect("the server starts")
}

/// A server with `vectors` vectors per peer on a private socket in `dir`, and two
/// host peers connected to it.
pub fn two_host_peers(
    dir: &tempfile::TempDir,
    vectors: u16,
) -> (ServerThread, ivlink::HostPeer, ivlink::HostPeer) {
    let server = start(config(dir, vectors));
    let connect = || {
        ivlink::HostPeer::connect(&ivlink::transport::host::HostConfig::new(
            server.socket_path(),
        ))
        .expect("a peer connects")
    };
    let (a, b) = (connect(), connect());
    (server, a, b)
}

/// One message as it arrived.
#[derive(Debug)]
pub struct Msg {
    /// The decoded little-endian value.
    pub value: i64,
    /// The fd that came with the message's bytes.
    pub fd: Option<OwnedFd>,
}

impl Msg {
    /// What the transcript records.
    pub fn key(&self) -> (i64, bool) {
        (self.value, self.fd.is_some())
    }
}

/// Outcome of one non-blocking receive.
#[derive(Debug)]
pub enum Next {
    /// A whole message.
    Msg(Msg),
    /// The server closed the connection (0 bytes read).
    Eof,
    /// The server closed the connection while our own unread writes sat in its
    /// receive queue (ECONNRESET); only clients that write see this.
    Reset,
    /// Nothing to read yet.
    Empty,
}

/// Receives one message with exactly one non-blocking `recvmsg` of 8 bytes.
///
/// Panics unless the message arrives whole in that call, carries at most one fd
/// and the control data is not truncated (the buffer has room for several fds, so
/// a batched message would show up as more than one fd rather than as a silent
/// truncation).
pub fn recv_one(socket: BorrowedFd<'_>) -> Next {
    let mut bytes = [0u8; 8];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [IoSliceMut::new(&mut bytes)];
        match recvmsg(
            socket,
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Ok(r) => break r,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Next::Empty,
            Err(Errno::CONNRESET) => return Next::Reset,
            Err(e) => panic!("recvmsg failed: {e}"),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    assert!(
        !received.flags.contains(ReturnFlags::CTRUNC),
        "MSG_CTRUNC: a message carried more control data than fits {} fds",
        8
    );
    assert!(
        fds.len() <= 1,
        "one 8-byte message carried {} fds; at most one is allowed",
        fds.len()
    );
    if received.bytes == 0 {
        assert!(fds.is_empty(), "an fd arrived with end-of-file");
        return Next::Eof;
    }
    assert_eq!(
        received.bytes, 8,
        "a message did not arrive whole in one recvmsg (sent in pieces?)"
    );
    Next::Msg(Msg {
        value: i64::from_le_bytes(bytes),
        fd: fds.pop(),
    })
}

/// Renders a transcript as the protocol doc writes it: `0 | 2 | -1+fd | 0+fd`.
pub fn render(items: &[(i64, bool)]) -> String {
    items
        .iter()
        .map(|&(value, fd)| {
            if fd {
                format!("{value}+fd")
            } else {
                value.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `n` vector messages for `id`: `id+fd | id+fd | ...` (empty for 0).
pub fn fds(id: i64, n: u16) -> String {
    vec![format!("{id}+fd"); usize::from(n)].join(" | ")
}

/// Joins transcript pieces, skipping empty ones.
pub fn join<S: AsRef<str>>(parts: &[S]) -> String {
    parts
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// How many messages a transcript string describes.
fn count(expected: &str) -> usize {
    if expected.trim().is_empty() {
        0
    } else {
        expected.split('|').count()
    }
}

/// A peer that speaks the wire protocol by hand and records everything it receives.
#[derive(Debug)]
pub struct RawClient {
    /// The connection to the server (non-blocking).
    pub socket: UnixStream,
    /// Everything received so far, in order.
    pub log: Vec<(i64, bool)>,
}

impl RawClient {
    /// Connects to the server at `path`.
    pub fn connect(path: &Path) -> Self {
        let socket = UnixStream::connect(path).expect("connect to the server");
        socket.set_nonblocking(true).unwrap();
        RawClient {
            socket,
            log: Vec::new(),
        }
    }

    /// Receives without waiting, recording any message.
    pub fn try_next(&mut self) -> Next {
        let next = recv_one(self.socket.as_fd());
        if let Next::Msg(m) = &next {
            self.log.push(m.key());
        }
        next
    }

    /// Waits (at most [`TIMEOUT`]) for the next message or the end of the connection.
    pub fn next(&mut self) -> Next {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.try_next() {
                Next::Empty => {}
                other => return other,
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "no message within {TIMEOUT:?}; received so far: {}",
                        render(&self.log)
                    )
                });
            ivlink::doorbell::poll_readable(&self.socket, Some(left)).unwrap();
        }
    }

    /// The next message; panics at the end of the connection.
    pub fn msg(&mut self) -> Msg {
        match self.next() {
            Next::Msg(m) => m,
            other => panic!(
                "expected a message, got {other:?}; received so far: {}",
                render(&self.log)
            ),
        }
    }

    /// Reads as many messages as `expected` lists and checks them exactly, e.g.
    /// `"0 | 2 | -1+fd | 0+fd"`. Returns them with their fds.
    pub fn expect(&mut self, expected: &str) -> Vec<Msg> {
        let n = count(expected);
        let mut got = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        while got.len() < n {
            match self.next() {
                Next::Msg(m) => {
                    keys.push(m.key());
                    got.push(m);
                }
                other => panic!(
                    "expected `{expected}`, got `{}` and then {other:?}",
                    render(&keys)
                ),
            }
        }
        assert_eq!(render(&keys), expected, "transcript mismatch");
        got
    }

    /// Checks that the server closed the connection with no further message.
    pub fn expect_eof(&mut self) {
        match self.next() {
            Next::Eof => {}
            other => panic!(
                "expected end of connection, got {other:?}; received so far: {}",
                render(&self.log)
            ),
        }
    }

    /// Reads the greeting `0 | id | -1+fd` and returns the id and the shared memory.
    pub fn greeting(&mut self) -> (i64, OwnedFd) {
        let version = self.msg();
        assert_eq!(version.key(), (0, false), "version message");
        let id = self.msg();
        assert!(
            id.fd.is_none() && (0..=65535).contains(&id.value),
            "id message {:?}",
            id.key()
        );
        let shm = self.msg();
        assert_eq!(shm.value, -1, "shared-memory message");
        (
            id.value,
            shm.fd.expect("the shared-memory message carries an fd"),
        )
    }
}

/// Waits until `done` holds, checking every millisecond, for at most [`TIMEOUT`];
/// for state with no notification (e.g. the server's peer count).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
