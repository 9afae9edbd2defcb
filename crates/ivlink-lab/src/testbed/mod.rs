//! The test bed: a server and several peers exchanging notifications and messages,
//! checked end to end. Replaces the seeds' "open two terminals, start the host
//! first" choreography with one command.
//!
//! Peers pass a token around a ring ordered by id: the holder writes a message into
//! the region (Zephyr's raw doorbell layout, a string at offset 0), rings the next
//! peer, and waits for its predecessor. Only the holder writes, so the shared string
//! is never torn, and with two peers every vector is exercised in both directions.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ivlink_core::region::Le64;
use ivlink_core::{PeerId, Region, Vector, raw_message};
use serde::Serialize;
use thiserror::Error;

use ivlink::ServerConfig;
use ivlink::device::{Device, DeviceError, Event, WaitFor};
use ivlink::server::{ServerError, ServerThread};
use ivlink::shm::ShmBacking;

/// Why the test bed failed.
#[derive(Debug, Error)]
pub enum TestbedError {
    /// The server could not start.
    #[error("cannot start the test bed's server")]
    Server(#[from] ServerError),
    /// A peer's device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Ringing failed.
    #[error("notify failed")]
    Notify(#[from] ivlink_core::NotifyError),
    /// A peer did not hear from its predecessor in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The message in the region was not the one expected.
    #[error("wrong message on vector {vector}: expected '{expected}', found '{found}'")]
    WrongMessage {
        /// The vector that rang.
        vector: Vector,
        /// What the sender should have written.
        expected: String,
        /// What was there.
        found: String,
    },
    /// The region refused the message.
    #[error("region: {0}")]
    Region(String),
    /// Peers disagree on the number of vectors, or have none.
    #[error("{0}")]
    Setup(String),
    /// Starting or watching a peer process failed.
    #[error("peer process")]
    Process(#[from] std::io::Error),
    /// Some peer processes failed.
    #[error("{failed} of {total} peer process(es) failed")]
    PeersFailed {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
    },
}

/// What one peer of the test bed does.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    /// How many peers take part (this one included).
    pub peers: usize,
    /// Laps of the token around the ring, per vector.
    pub rounds: u32,
    /// Longest wait for any one step.
    pub timeout: Duration,
    /// The ids taking part, when this peer cannot discover them (a guest sees no
    /// peer events); `None` waits for the server to announce them.
    pub ring: Option<Vec<PeerId>>,
    /// A value unique to this run, published by each peer once it listens, so
    /// flags left in a reused region from an earlier run are not mistaken for
    /// readiness.
    pub nonce: u64,
}

/// Where each peer publishes its "listening" word (after the raw message area).
const READY_BASE: usize = 0x1_0000;
/// Room for the message a peer leaves in the region, NUL included (ids, vectors
/// and rounds as large as they come still fit).
const MESSAGE_ROOM: usize = 256;

/// The smallest region the test bed works in with `peers` peers: the message
/// area and every peer's "listening" word.
pub fn min_region_size(peers: usize) -> u64 {
    let message_end = raw_message::OFFSET + MESSAGE_ROOM;
    let ready_end = READY_BASE + 8 * peers;
    message_end.max(ready_end) as u64
}

/// Refuses, up front, a region too small for `peers` peers.
fn check_region_size(size: u64, peers: usize) -> Result<(), TestbedError> {
    let needed = min_region_size(peers);
    if size < needed {
        return Err(TestbedError::Setup(format!(
            "a {size}-byte region is too small for the test bed with {peers} peers: it needs \
             at least {needed} bytes (-l {})",
            ivlink::size::format_size(needed.next_power_of_two())
        )));
    }
    Ok(())
}

/// What one peer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// Messages written and rung.
    pub sent: u64,
    /// Messages received and verified.
    pub received: u64,
}

/// How a peer's first line starts: its id follows.
const CONNECTED_PREFIX: &str = "connected: peer id ";

/// The peer's last line: its totals, as [`parse_done_line`] reads them back.
pub fn done_line(report: &PeerReport) -> String {
    format!("done: sent {}, received {}", report.sent, report.received)
}

/// The totals in a peer's [`done_line`], or `None` for any other line. A guest's
/// console may put other output before it on the line.
pub fn parse_done_line(line: &str) -> Option<PeerReport> {
    const MARK: &str = "done: sent ";
    let line = line.trim_end();
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let (sent, received) = rest.split_once(", received ")?;
    Some(PeerReport {
        sent: sent.parse().ok()?,
        received: received.parse().ok()?,
    })
}

/// The peer id in a peer's first line (`connected: peer id 3, ...`), or `None`
/// for any other line.
fn parse_connected_line(line: &str) -> Option<PeerId> {
    let rest = line.strip_prefix(CONNECTED_PREFIX)?;
    let id = rest.split(',').next()?;
    id.parse().ok()
}

/// What one peer (process or guest) reported about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerResult {
    /// Its number among the peers: `N` of `[peer process N]` or `guestN`.
    pub peer: usize,
    /// Its peer id on the server, if it said.
    pub id: Option<PeerId>,
    /// Messages it wrote and rang.
    pub sent: u64,
    /// Messages it received and verified.
    pub received: u64,
}

/// Gathers [`PeerResult`]s from the lines peers print.
#[derive(Debug, Default)]
pub(crate) struct PeerResults {
    ids: std::collections::BTreeMap<usize, PeerId>,
    done: std::collections::BTreeMap<usize, PeerReport>,
}

impl PeerResults {
    /// Takes note of `line`, printed by peer number `peer`.
    pub(crate) fn see(&mut self, peer: usize, line: &str) {
        if let Some(id) = parse_connected_line(line) {
            self.ids.insert(peer, id);
        }
        if let Some(report) = parse_done_line(line) {
            self.done.insert(peer, report);
        }
    }

    /// Records `id` as peer number `peer`'s, when it is known otherwise.
    pub(crate) fn set_id(&mut self, peer: usize, id: PeerId) {
        self.ids.insert(peer, id);
    }

    /// One result per peer that printed its totals, by number.
    pub(crate) fn results(&self) -> Vec<PeerResult> {
        self.done
            .iter()
            .map(|(&peer, report)| PeerResult {
                peer,
                id: self.ids.get(&peer).copied(),
                sent: report.sent,
                received: report.received,
            })
            .collect()
    }
}

fn expected_message(from: PeerId, to: PeerId, vector: Vector, round: u32) -> String {
    format!("message from peer {from} to peer {to} on vector {vector} round {round}")
}

/// Runs one peer's part; progress lines go to `out`.
pub fn run_peer(
    device: &dyn Device,
    plan: &PeerPlan,
    out: &mut dyn Write,
) -> Result<PeerReport, TestbedError> {
    let me = device.id();
    let vectors = device.vectors();
    if vectors == 0 {
        return Err(TestbedError::Setup(
            "this peer has no vectors: the test bed needs a server with -n 1 or more".into(),
        ));
    }
    let _ = writeln!(
        out,
        "{CONNECTED_PREFIX}{me}, {vectors} vector(s), {} bytes of shared memory",
        device.region().len()
    );
    check_region_size(
        device.region().len() as u64,
        plan.ring.as_ref().map_or(plan.peers, Vec::len),
    )?;
    let ids = match &plan.ring {
        Some(ring) => ring_with(ring, me)?,
        None => discover(device, plan, out)?,
    };
    let position = ids.iter().position(|&id| id == me).expect("own id listed");
    let next = ids[(position + 1) % ids.len()];
    let prev = ids[(position + ids.len() - 1) % ids.len()];
    let vectors = device
        .peers()
        .iter()
        .map(|p| p.vectors)
        .chain([vectors])
        .min()
        .unwrap_or(0) as Vector;

    // A doorbell rung before its receiver listens is lost on a real device: the
    // first sender waits until every peer has said it listens.
    let ready_at = |position: usize| Le64::at(READY_BASE + 8 * position);
    ready_at(position)
        .store(device.region(), plan.nonce, Ordering::Release)
        .map_err(|e| TestbedError::Region(e.to_string()))?;
    if position == 0 {
        let deadline = Instant::now() + plan.timeout;
        for (other, id) in ids.iter().enumerate().skip(1) {
            while ready_at(other)
                .load(device.region(), Ordering::Acquire)
                .map_err(|e| TestbedError::Region(e.to_string()))?
                != plan.nonce
            {
                if Instant::now() > deadline {
                    return Err(TestbedError::Timeout(
                        plan.timeout,
                        format!("peer {id} to listen"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = writeln!(out, "all {} peers listening", ids.len());
    }

    let mut report = PeerReport::default();
    for round in 0..plan.rounds {
        for vector in 0..vectors {
            if position == 0 {
                send(device, next, vector, round, out)?;
                receive(device, prev, vector, round, plan.timeout, out)?;
                report.received += 1;
            } else {
                receive(device, prev, vector, round, plan.timeout, out)?;
                report.received += 1;
                send(device, next, vector, round, out)?;
            }
            report.sent += 1;
        }
    }
    let _ = writeln!(out, "{}", done_line(&report));
    Ok(report)
}

/// The ring from an explicit list of ids, which must include ours.
fn ring_with(ring: &[PeerId], me: PeerId) -> Result<Vec<PeerId>, TestbedError> {
    let mut ids = ring.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if !ids.contains(&me) || ids.len() < 2 {
        return Err(TestbedError::Setup(format!(
            "the ring {ring:?} must hold this peer ({me}) and at least one other"
        )));
    }
    Ok(ids)
}

/// The ring from the peers the server announces, once `plan.peers` are there.
fn discover(
    device: &dyn Device,
    plan: &PeerPlan,
    out: &mut dyn Write,
) -> Result<Vec<PeerId>, TestbedError> {
    let deadline = Instant::now() + plan.timeout;
    while device.peers().len() + 1 < plan.peers {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TestbedError::Timeout(
                plan.timeout,
                format!("{} peers to join", plan.peers),
            ));
        }
        if let Some(Event::PeerJoined { peer, .. }) =
            device.wait(WaitFor::PEER_EVENTS, Some(left))?
        {
            let _ = writeln!(out, "peer {peer} joined");
        }
    }
    let mut ids: Vec<PeerId> = device
        .peers()
        .iter()
        .map(|p| p.id)
        .chain([device.id()])
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn send(
    device: &dyn Device,
    to: PeerId,
    vector: Vector,
    round: u32,
    out: &mut dyn Write,
) -> Result<(), TestbedError> {
    let text = expected_message(device.id(), to, vector, round);
    raw_message::write(device.region(), raw_message::OFFSET, text.as_bytes())
        .map_err(|e| TestbedError::Region(e.to_string()))?;
    device.notify(to, vector)?;
    let _ = writeln!(out, "Message {text} sent to peer {to} on vector {vector}");
    Ok(())
}

fn receive(
    device: &dyn Device,
    from: PeerId,
    vector: Vector,
    round: u32,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), TestbedError> {
    match device.wait(WaitFor::vector(vector), Some(timeout))? {
        Some(Event::Notified { .. }) => {}
        _ => {
            return Err(TestbedError::Timeout(
                timeout,
                format!("a notification from peer {from} on vector {vector}"),
            ));
        }
    }
    let mut buf = [0u8; MESSAGE_ROOM];
    let len = raw_message::read(device.region(), raw_message::OFFSET, &mut buf)
        .map_err(|e| TestbedError::Region(e.to_string()))?;
    let found = String::from_utf8_lossy(&buf[..len]).into_owned();
    let expected = expected_message(from, device.id(), vector, round);
    if found != expected {
        return Err(TestbedError::WrongMessage {
            vector,
            expected,
            found,
        });
    }
    let _ = writeln!(out, "received IRQ and full message: {found}");
    Ok(())
}

/// The whole test bed.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Peer processes to start.
    pub peers: usize,
    /// Vectors per peer.
    pub vectors: u16,
    /// Shared memory size.
    pub size: u64,
    /// Laps of the token per vector.
    pub rounds: u32,
    /// Longest wait for any one step, and for each peer process to finish.
    pub timeout: Duration,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            peers: 2,
            vectors: 2,
            size: 4 << 20,
            rounds: 1,
            timeout: Duration::from_secs(20),
        }
    }
}

/// What the whole test bed did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Peer processes (or guests) that ran.
    pub peers: usize,
    /// Messages sent and verified across all peers.
    pub messages: u64,
    /// Bytes of shared memory the server made (the size asked for, rounded up
    /// to a power of two).
    pub size: u64,
    /// What each peer reported, by number; a peer that printed no totals has
    /// none.
    pub results: Vec<PeerResult>,
}

/// Starts a server on a private socket and `config.peers` peer processes, each made
/// by `peer_command(socket_path)`, relays their output to `out` prefixed with the
/// peer's number, and succeeds only if every peer does.
pub fn run(
    config: &TestbedConfig,
    peer_command: &dyn Fn(&Path) -> Command,
    out: &mut dyn Write,
) -> Result<Summary, TestbedError> {
    if config.peers < 2 {
        return Err(TestbedError::Setup(
            "the test bed needs at least 2 peers".into(),
        ));
    }
    if config.vectors == 0 {
        return Err(TestbedError::Setup(
            "the test bed needs at least 1 vector".into(),
        ));
    }
    check_region_size(server_size(config.size)?, config.peers)?;
    let dir = tempfile::Builder::new()
        .prefix("ivlink-testbed.")
        .tempdir()?;
    let socket = dir.path().join("ivshmem.sock");
    let server = start_server(&socket, config.size, config.vectors)?;
    let _ = writeln!(
        out,
        "testbed: server on {}, {} bytes of shared memory, {} vector(s) per peer; starting {} peers",
        socket.display(),
        server.shm_size(),
        config.vectors,
        config.peers
    );

    let (mut children, lines_rx) = spawn_peers(config.peers, &socket, peer_command)?;
    let mut results = PeerResults::default();
    let mut relay = |(number, line): (usize, String), out: &mut dyn Write| {
        results.see(number, &line);
        let _ = writeln!(out, "[peer process {number}] {line}");
    };

    let deadline = Instant::now() + config.timeout + Duration::from_secs(5);
    let mut failed = 0;
    let mut statuses = vec![None; children.0.len()];
    while statuses.iter().any(Option::is_none) {
        while let Ok(line) = lines_rx.try_recv() {
            relay(line, out);
        }
        for (child, status) in children.0.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait()?;
            }
        }
        if Instant::now() > deadline {
            let _ = writeln!(out, "testbed: peers did not finish in time; stopping them");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(children);
    for line in lines_rx.iter() {
        relay(line, out);
    }
    for (number, status) in statuses.iter().enumerate() {
        match status {
            Some(s) if s.success() => {}
            Some(s) => {
                failed += 1;
                let _ = writeln!(out, "testbed: peer process {number} failed ({s})");
            }
            None => failed += 1,
        }
    }
    let size = server.shm_size();
    server.stop()?;
    if failed > 0 {
        return Err(TestbedError::PeersFailed {
            failed,
            total: config.peers,
        });
    }
    let messages = config.peers as u64 * u64::from(config.rounds) * u64::from(config.vectors);
    Ok(Summary {
        peers: config.peers,
        messages,
        size,
        results: results.results(),
    })
}

/// The size the server makes of `size` (it rounds up to a power of two).
pub(crate) fn server_size(size: u64) -> Result<u64, ServerError> {
    Ok(ivlink::shm::round_size(size)?)
}

/// The test bed's server: a sealed memfd, private socket.
pub(crate) fn start_server(
    socket: &Path,
    size: u64,
    vectors: u16,
) -> Result<ServerThread, ServerError> {
    ServerThread::start(ServerConfig {
        socket_path: socket.to_path_buf(),
        shm: ShmBacking::Memfd,
        size,
        vectors,
        ..ServerConfig::default()
    })
}

/// A value that differs between runs (never 0, the region's initial content).
pub fn run_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ u64::from(std::process::id())) | 1
}

/// Starts `count` peer processes made by `peer_command(socket)`, with every line
/// they print (stdout and stderr) sent to the receiver with the peer's number.
pub(crate) fn spawn_peers(
    count: usize,
    socket: &Path,
    peer_command: &dyn Fn(&Path) -> Command,
) -> Result<(Children, mpsc::Receiver<(usize, String)>), std::io::Error> {
    let (lines_tx, lines_rx) = mpsc::channel();
    let mut children = Children(Vec::new());
    for number in 0..count {
        let mut command = peer_command(socket);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let streams = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let tx = lines_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send((number, line));
                }
            });
        }
        children.0.push(child);
    }
    Ok((children, lines_rx))
}

/// Peer processes, killed (by pid) and reaped if still running when dropped.
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

pub mod console;
pub mod guests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_peers_totals_are_read_back_from_its_last_line() {
        let report = PeerReport {
            sent: 12,
            received: 11,
        };
        assert_eq!(parse_done_line(&done_line(&report)), Some(report.clone()));
        assert_eq!(
            parse_done_line(&format!("\u{1b}[0m# {}\r", done_line(&report))),
            Some(report)
        );
        assert_eq!(parse_done_line("done: sent 1"), None);
        assert_eq!(parse_done_line("done: sent x, received 1"), None);
        assert_eq!(parse_done_line("received IRQ and full message: done"), None);
        assert_eq!(
            parse_connected_line("connected: peer id 3, 2 vector(s), 4096 bytes"),
            Some(3)
        );
        assert_eq!(parse_connected_line("connected: peer id x, 2"), None);
    }

    #[test]
    fn the_summary_holds_what_each_peer_process_reported() {
        // Stand-in peers: the first says its id and totals, the second only exits 0.
        let started = AtomicUsize::new(0);
        let peer = |_: &Path| {
            let script = match started.fetch_add(1, Ordering::Relaxed) {
                0 => {
                    "echo 'connected: peer id 7, 2 vector(s), 4096 bytes'; echo 'done: sent 2, received 2'"
                }
                _ => "true",
            };
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            command
        };
        let config = TestbedConfig {
            size: 3 << 20,
            timeout: Duration::from_secs(5),
            ..TestbedConfig::default()
        };
        let summary = run(&config, &peer, &mut std::io::sink()).unwrap();
        assert_eq!(summary.size, 4 << 20);
        assert_eq!(summary.messages, 4);
        assert_eq!(
            summary.results,
            [PeerResult {
                peer: 0,
                id: Some(7),
                sent: 2,
                received: 2
            }]
        );
    }
}
