//! The server's connect cost as peers grow: a real server on a private socket,
//! `N` real clients of the ivshmem wire protocol connecting one after another,
//! and the messages the server sent to get them all connected.
//!
//! Each new peer gets the shared memory, its id, every existing peer's eventfds
//! and its own; every existing peer gets the new peer's eventfds. With `V`
//! vectors the `k`-th peer (0-based) costs `1 + V + 2·k·V` fd messages, so `N`
//! peers cost `N·(1 + V) + V·N·(N − 1)`: the curve is quadratic in the peers.
//!
//! The clients count what they receive and close every fd at once (a real peer
//! keeps them, `N·V` per peer: more than one process may hold for large `N`).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::super::BenchError;
use ivlink::server::{ServerConfig, ServerThread};
use ivlink::shm::ShmBacking;
use ivlink::wire::Receiver;

/// One peer count's connect cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectRow {
    /// Peers connected.
    pub peers: usize,
    /// Vectors (eventfds) per peer.
    pub vectors: u16,
    /// From the first connect to the last peer knowing everyone, seconds.
    pub seconds: f64,
    /// `seconds` over the peers, microseconds.
    pub per_peer_us: f64,
    /// The last peer alone: its connect, its setup and the others learning of
    /// it, microseconds (what one more peer costs at this size).
    pub last_peer_us: f64,
    /// Messages the server sent.
    pub messages: u64,
    /// Of those, messages carrying an fd.
    pub fd_messages: u64,
    /// `N·(1 + V) + V·N·(N − 1)`: what the protocol asks for.
    pub expected_fd_messages: u64,
}

/// Fd messages the ivshmem protocol needs to connect `peers` peers of `vectors`
/// vectors one after another.
pub fn expected_fd_messages(peers: usize, vectors: u16) -> u64 {
    let (n, v) = (peers as u64, u64::from(vectors));
    n * (1 + v) + v * n * n.saturating_sub(1)
}

/// Open files this process needs for `peers` peers: per peer a server socket, a
/// client socket and the server's eventfds, and a margin for everything else.
pub fn files_needed(peers: usize, vectors: u16) -> u64 {
    peers as u64 * (2 + u64::from(vectors)) + 64
}

/// Raises the soft open-file limit to cover `peers` (never lowers it); refuses
/// when the hard limit cannot.
pub fn ensure_files(peers: usize, vectors: u16) -> Result<(), BenchError> {
    ensure_open_files(files_needed(peers, vectors), &format!("{peers} peers"))
}

/// Raises the soft open-file limit to `needed` (never lowers it); refuses, in
/// one sentence naming `what` needs them, when the hard limit is lower.
pub fn ensure_open_files(needed: u64, what: &str) -> Result<(), BenchError> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|c| c >= needed) {
        return Ok(());
    }
    if let Some(hard) = limit.maximum.filter(|&m| m < needed) {
        return Err(BenchError::Config(format!(
            "{what} need about {needed} open files, but the hard limit is {hard} (raise it, e.g. ulimit -Hn, or ask for fewer)"
        )));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(needed),
            maximum: limit.maximum,
        },
    )
    .map_err(BenchError::io("raising the open-file limit"))
}

/// Measures the connect cost for each peer count in `counts` (a fresh server
/// each), with `vectors` vectors per peer.
pub fn measure(
    counts: &[usize],
    vectors: u16,
    timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<ConnectRow>, BenchError> {
    if let Some(&most) = counts.iter().max() {
        ensure_files(most, vectors)?;
    }
    let dir = crate::bench::private_dir()?;
    counts
        .iter()
        .enumerate()
        .map(|(i, &peers)| {
            say(&format!("server connect cost: {peers} peers"));
            one(
                &dir.path().join(format!("ivshmem-{i}.sock")),
                peers,
                vectors,
                timeout,
            )
        })
        .collect()
}

/// A client that counts what the server sends it.
struct Client {
    socket: UnixStream,
    receiver: Receiver,
    messages: u64,
    fd_messages: u64,
}

impl Client {
    /// Reads `count` messages, closing their fds.
    fn read(&mut self, count: u64, timeout: Duration) -> Result<(), BenchError> {
        for _ in 0..count {
            match self.receiver.recv_timeout(&self.socket, Some(timeout)) {
                Ok(Some((_, fd))) => {
                    self.messages += 1;
                    self.fd_messages += u64::from(fd.is_some());
                }
                Ok(None) => return Err(BenchError::Stalled("the server's connect messages")),
                Err(e) => return Err(BenchError::Peer(format!("server connection: {e}"))),
            }
        }
        Ok(())
    }
}

fn one(
    socket: &Path,
    peers: usize,
    vectors: u16,
    timeout: Duration,
) -> Result<ConnectRow, BenchError> {
    let server = ServerThread::start(ServerConfig {
        socket_path: socket.to_owned(),
        shm: ShmBacking::Memfd,
        size: 4096,
        vectors,
        ..ServerConfig::default()
    })?;
    let v = u64::from(vectors);
    let mut clients: Vec<Client> = Vec::with_capacity(peers);
    let started = Instant::now();
    let mut last = Duration::ZERO;
    for k in 0..peers {
        let began = Instant::now();
        let socket = UnixStream::connect(socket).map_err(|e| BenchError::Io {
            context: "connecting to the server",
            error: e,
        })?;
        let mut client = Client {
            socket,
            receiver: Receiver::new(),
            messages: 0,
            fd_messages: 0,
        };
        // Version, id, shared memory, everyone's eventfds, then its own.
        client.read(3 + (k as u64 + 1) * v, timeout)?;
        for other in &mut clients {
            other.read(v, timeout)?;
        }
        clients.push(client);
        last = began.elapsed();
    }
    let seconds = started.elapsed().as_secs_f64();
    let (received, received_fds) = clients
        .iter()
        .fold((0, 0), |(m, f), c| (m + c.messages, f + c.fd_messages));
    // The server counts a message once its send returned, which may be just
    // after the client read it.
    let deadline = Instant::now() + timeout;
    let sent = loop {
        let sent = server.handle().sent();
        if sent.messages >= received || Instant::now() >= deadline {
            break sent;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if sent.messages != received || sent.fd_messages != received_fds {
        return Err(BenchError::Peer(format!(
            "the server counts {} messages ({} with fds), the clients received {received} ({received_fds})",
            sent.messages, sent.fd_messages
        )));
    }
    drop(clients);
    server.stop()?;
    Ok(ConnectRow {
        peers,
        vectors,
        seconds,
        per_peer_us: seconds * 1e6 / peers.max(1) as f64,
        last_peer_us: last.as_secs_f64() * 1e6,
        messages: sent.messages,
        fd_messages: sent.fd_messages,
        expected_fd_messages: expected_fd_messages(peers, vectors),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_counts_each_connect_sequence() {
        // One peer: the shared memory and its own eventfds.
        assert_eq!(expected_fd_messages(1, 1), 2);
        // Two: the second also gets the first's, and the first the second's.
        assert_eq!(expected_fd_messages(2, 1), 2 + 4);
        assert_eq!(expected_fd_messages(2, 2), 3 + 7);
        assert_eq!(expected_fd_messages(1000, 2), 2_001_000);
    }

    #[test]
    fn a_real_server_sends_what_the_formula_says() {
        let rows = measure(&[1, 3], 2, Duration::from_secs(10), &mut |_| {}).unwrap();
        for row in rows {
            assert_eq!(row.fd_messages, expected_fd_messages(row.peers, 2));
            // Version and id per peer carry no fd.
            assert_eq!(row.messages, row.fd_messages + 2 * row.peers as u64);
        }
    }

    #[test]
    fn a_limit_too_low_is_refused_in_one_sentence() {
        use rustix::process::{Resource, getrlimit};
        if getrlimit(Resource::Nofile).maximum.is_none() {
            return; // no hard limit to run into
        }
        let err = ensure_files(usize::MAX / 8, 1).unwrap_err().to_string();
        assert!(err.contains("open files"), "{err}");
    }
}
