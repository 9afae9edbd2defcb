//! The interactive client of `ivshmem-client` (and `ivlink client`): QEMU's
//! command set and output lines, on ivlink's host peer.
//!
//! The client prints the help and the prompt `cmd> `, connects to the server and
//! waits on stdin and on the peer at once. Commands (`help`, `?`, `dump`,
//! `int <peer> <vector>`, `int <peer> all`, `int all`) are separated by newlines,
//! carriage returns or `;`, and the prompt follows each batch read. When the
//! server goes away the client says `disconnected from server` and tries again
//! every second until it is back. End of input ends the client.
//!
//! The pieces are separate so they can be tested without a server:
//! [`InputBuffer`] splits input into commands, [`parse_command`] reads one, and
//! [`execute`] runs it on a [`ClientPeer`], writing to any [`Write`].
//! [`run_interactive`] is the I/O loop around them.
//!
//! Differences from QEMU's example client, on purpose:
//! - end of input exits (QEMU spins printing prompts forever);
//! - `?` prints the help only (QEMU adds `invalid command, type help`);
//! - commands are read strictly: `int 3` or `int 0 1x` are invalid (QEMU's
//!   `sscanf` takes the first as `int 3 all` and the second as `int 0 1`);
//!   blanks around and between words are allowed;
//! - a command cut by a full read buffer is completed by the next read instead
//!   of being split in two;
//! - commands typed while disconnected are answered at once (as with no peers,
//!   `our_id = -1`) rather than left waiting in the terminal;
//! - peers are listed by id, not in the order they joined;
//! - `int <peer> <vector>` with a vector the peer does not have says so
//!   (`invalid vector 7 on peer 1 (its vectors are 0 to 1)`); QEMU's says it
//!   only with `-v`;
//! - the verbose `shm_fd=<fd>` line is not printed: the shared memory is mapped
//!   and its fd not kept.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, Event, Notify, NotifyError, PeerId, Vector, WaitFor};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;

/// The help text, QEMU's four lines.
pub const HELP: &str = "dump: dump peers (including us)\n\
                        int <peer> <vector>: notify one vector on a peer\n\
                        int <peer> all: notify all vectors of a peer\n\
                        int all: notify all vectors of all peers (excepting us)\n";

/// The prompt, printed without a newline.
pub const PROMPT: &str = "cmd> ";

/// How long to wait between connection attempts.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How many bytes one read of stdin takes.
const READ_CHUNK: usize = 4096;

/// Size of `sun_path` in a UNIX socket address, its terminating NUL included.
const SUN_PATH_LEN: usize = 108;

/// The longest unterminated command kept waiting for the rest of its line.
const MAX_PENDING: usize = 64 * 1024;

/// One command typed at the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help` or `?`: print [`HELP`].
    Help,
    /// `dump`: our id and vectors, then every peer and its vectors.
    Dump,
    /// `int all`: every vector of every other peer.
    NotifyAll,
    /// `int <peer> all`: every vector of one peer.
    NotifyPeer {
        /// The peer id as typed (it may not exist).
        peer: i64,
    },
    /// `int <peer> <vector>`: one vector of one peer.
    NotifyVector {
        /// The peer id as typed (it may not exist).
        peer: i64,
        /// The vector as typed (it may not exist).
        vector: i64,
    },
    /// Anything else.
    Invalid,
}

/// Reads one command (already split from its neighbours).
pub fn parse_command(text: &str) -> Command {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    match words.as_slice() {
        ["help"] | ["?"] => Command::Help,
        ["dump"] => Command::Dump,
        ["int", "all"] => Command::NotifyAll,
        ["int", peer, "all"] => match peer.parse() {
            Ok(peer) => Command::NotifyPeer { peer },
            Err(_) => Command::Invalid,
        },
        ["int", peer, vector] => match (peer.parse(), vector.parse()) {
            (Ok(peer), Ok(vector)) => Command::NotifyVector { peer, vector },
            _ => Command::Invalid,
        },
        _ => Command::Invalid,
    }
}

/// Whether `byte` separates commands.
fn is_separator(byte: u8) -> bool {
    matches!(byte, b'\n' | b'\r' | b';')
}

/// Splits `text` into commands on `\n`, `\r` and `;`, skipping empty ones.
pub fn split_commands(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\n', '\r', ';'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// Collects stdin chunks into commands.
///
/// A chunk that filled the whole read buffer may end in the middle of a command;
/// that tail waits for the next chunk. Any other chunk is taken whole, so a
/// command typed without a newline (or piped without one) still runs at once.
#[derive(Debug, Default)]
pub struct InputBuffer {
    pending: Vec<u8>,
}

impl InputBuffer {
    /// Adds a chunk and returns the commands now complete. `more_may_follow`
    /// says that the chunk filled the read buffer; pass `false` at end of input
    /// to take everything.
    pub fn push(&mut self, chunk: &[u8], more_may_follow: bool) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let cut = if more_may_follow && self.pending.len() < MAX_PENDING {
            match self.pending.iter().rposition(|&b| is_separator(b)) {
                Some(at) => at + 1,
                None => return Vec::new(),
            }
        } else {
            self.pending.len()
        };
        let complete: Vec<u8> = self.pending.drain(..cut).collect();
        split_commands(&String::from_utf8_lossy(&complete))
            .map(str::to_owned)
            .collect()
    }

    /// Whether part of a command is waiting for the rest.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// What [`execute`] needs from a connected peer.
pub trait ClientPeer {
    /// Our id.
    fn id(&self) -> PeerId;
    /// The other peers' ids, lowest first.
    fn peer_ids(&self) -> Vec<PeerId>;
    /// The fd numbers of `peer`'s vectors (ours for our id), `None` if unknown.
    fn vector_fds(&self, peer: PeerId) -> Option<Vec<RawFd>>;
    /// Rings `peer`'s `vector`.
    fn notify(&self, peer: PeerId, vector: Vector) -> Result<(), NotifyError>;
}

impl ClientPeer for HostPeer {
    fn id(&self) -> PeerId {
        Device::id(self)
    }

    fn peer_ids(&self) -> Vec<PeerId> {
        Device::peers(self).into_iter().map(|p| p.id).collect()
    }

    fn vector_fds(&self, peer: PeerId) -> Option<Vec<RawFd>> {
        self.vector_fd_numbers(peer).or_else(|| {
            // It may have joined since we last read the socket; peers() reads it.
            let _ = Device::peers(self);
            self.vector_fd_numbers(peer)
        })
    }

    fn notify(&self, peer: PeerId, vector: Vector) -> Result<(), NotifyError> {
        Notify::notify(self, peer, vector)
    }
}

/// Runs `command` on `peer` (`None` while disconnected: no id, no peers).
/// Results go to `out`; failures to ring a doorbell go to `err`. With
/// `verbose`, each ring is reported on `out`; a vector the peer does not have
/// is reported there always.
pub fn execute(
    command: &Command,
    peer: Option<&dyn ClientPeer>,
    verbose: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    match command {
        Command::Help => out.write_all(HELP.as_bytes()),
        Command::Dump => dump(peer, out),
        Command::NotifyAll => {
            let Some(peer) = peer else { return Ok(()) };
            let own = peer.id();
            for id in peer.peer_ids() {
                if id == own {
                    continue;
                }
                if let Some(fds) = peer.vector_fds(id) {
                    for vector in 0..fds.len() {
                        ring(peer, id, &fds, vector as i64, verbose, out, err)?;
                    }
                }
            }
            Ok(())
        }
        Command::NotifyPeer { peer: wanted } => match find(peer, *wanted) {
            Some((peer, id, fds)) => {
                for vector in 0..fds.len() {
                    ring(peer, id, &fds, vector as i64, verbose, out, err)?;
                }
                Ok(())
            }
            None => writeln!(out, "cannot find peer_id = {wanted}"),
        },
        Command::NotifyVector {
            peer: wanted,
            vector,
        } => match find(peer, *wanted) {
            Some((peer, id, fds)) => ring(peer, id, &fds, *vector, verbose, out, err),
            None => writeln!(out, "cannot find peer_id = {wanted}"),
        },
        Command::Invalid => writeln!(out, "invalid command, type help"),
    }
}

/// Finds a peer (or ourselves) by the id typed, with its vector fds.
fn find(
    peer: Option<&dyn ClientPeer>,
    wanted: i64,
) -> Option<(&dyn ClientPeer, PeerId, Vec<RawFd>)> {
    let peer = peer?;
    let id = PeerId::try_from(wanted).ok()?;
    let fds = peer.vector_fds(id)?;
    Some((peer, id, fds))
}

fn dump(peer: Option<&dyn ClientPeer>, out: &mut dyn Write) -> io::Result<()> {
    let Some(peer) = peer else {
        return writeln!(out, "our_id = -1");
    };
    let own = peer.id();
    writeln!(out, "our_id = {own}")?;
    write_vectors(out, &peer.vector_fds(own).unwrap_or_default())?;
    for id in peer.peer_ids() {
        if id == own {
            continue;
        }
        writeln!(out, "peer_id = {id}")?;
        write_vectors(out, &peer.vector_fds(id).unwrap_or_default())?;
    }
    Ok(())
}

fn write_vectors(out: &mut dyn Write, fds: &[RawFd]) -> io::Result<()> {
    for (vector, fd) in fds.iter().enumerate() {
        writeln!(out, "  vector {vector} is enabled (fd={fd})")?;
    }
    Ok(())
}

fn ring(
    peer: &dyn ClientPeer,
    id: PeerId,
    fds: &[RawFd],
    vector: i64,
    verbose: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let found = usize::try_from(vector)
        .ok()
        .and_then(|v| Some((Vector::try_from(v).ok()?, *fds.get(v)?)));
    let Some((vector, fd)) = found else {
        // QEMU's client says this only in verbose mode, leaving a mistyped
        // `int` without a word.
        return match fds.len() {
            0 => writeln!(out, "invalid vector {vector} on peer {id} (it has none)"),
            n => writeln!(
                out,
                "invalid vector {vector} on peer {id} (its vectors are 0 to {})",
                n - 1
            ),
        };
    };
    if verbose {
        writeln!(out, "notify peer {id} on vector {vector}, fd {fd}")?;
    }
    if let Err(e) = peer.notify(id, vector) {
        writeln!(err, "could not write to {fd}: {e}")?;
    }
    Ok(())
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Keep going.
    Continue,
    /// The server went away: reconnect.
    Disconnected,
    /// Input ended: exit.
    Exit,
}

/// The state of one interactive client.
struct Session {
    verbose: bool,
    input: InputBuffer,
    /// Peers we have reported and how many of their vectors (verbose lines).
    known: BTreeMap<PeerId, usize>,
    out: io::Stdout,
    err: io::Stderr,
}

/// Runs QEMU's interactive ivshmem-client on `socket` until stdin closes.
///
/// Prints the help and the prompt, then connects (retrying every second) and
/// serves commands from stdin and notifications from the server. `verbose`
/// adds QEMU's debug lines (peers and vectors as they come, every ring).
/// Returns `Ok` at end of input; errors are a socket path too long to use and
/// failures to read stdin or to write stdout.
pub fn run_interactive(socket: &Path, verbose: bool) -> anyhow::Result<()> {
    // Retrying cannot help a path that no socket address can hold.
    if socket.as_os_str().len() >= SUN_PATH_LEN {
        anyhow::bail!(
            "socket path {} is too long (at most {} bytes)",
            socket.display(),
            SUN_PATH_LEN - 1
        );
    }
    let mut session = Session {
        verbose,
        input: InputBuffer::default(),
        known: BTreeMap::new(),
        out: io::stdout(),
        err: io::stderr(),
    };
    session.out.write_all(HELP.as_bytes())?;
    session.out.write_all(PROMPT.as_bytes())?;
    session.out.flush()?;
    loop {
        if verbose {
            writeln!(session.out, "connect to client {}", socket.display())?;
        }
        let peer = match HostPeer::connect(&HostConfig::new(socket)) {
            Ok(peer) => peer,
            Err(e) => {
                if verbose {
                    writeln!(session.out, "{e}")?;
                    session.out.flush()?;
                }
                writeln!(session.err, "cannot connect to server, retry in 1 second")?;
                if session.idle(RETRY_INTERVAL)? == Flow::Exit {
                    return Ok(());
                }
                continue;
            }
        };
        writeln!(
            session.out,
            "listen on server socket {}",
            peer.socket_fd_number()
        )?;
        session.greet(&peer)?;
        session.out.flush()?;
        let flow = session.serve(&peer)?;
        session.known.clear();
        drop(peer);
        if flow == Flow::Exit {
            return Ok(());
        }
        writeln!(session.out, "disconnected from server")?;
        session.out.flush()?;
    }
}

impl Session {
    /// Serves stdin alone for `duration` (while disconnected).
    fn idle(&mut self, duration: Duration) -> io::Result<Flow> {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Flow::Continue);
            }
            let stdin = rustix::stdio::stdin();
            let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
            match poll(&mut fds, Some(&ivlink::doorbell::to_timespec(left))) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if !fds[0].revents().is_empty() && self.read_stdin(None)? == Flow::Exit {
                return Ok(Flow::Exit);
            }
        }
    }

    /// Serves stdin and the peer until one of them ends.
    fn serve(&mut self, peer: &HostPeer) -> io::Result<Flow> {
        let stdin = rustix::stdio::stdin();
        loop {
            // Pending events first: commands may have read the socket, leaving
            // events queued that the wait fd no longer signals.
            loop {
                match peer.wait(WaitFor::ANYTHING, Some(Duration::ZERO)) {
                    Ok(Some(event)) => {
                        if self.event(peer, event)? == Flow::Disconnected {
                            return Ok(Flow::Disconnected);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The server broke the protocol: drop it and start again.
                        writeln!(self.err, "{e}")?;
                        return Ok(Flow::Disconnected);
                    }
                }
            }
            self.out.flush()?;
            let wait_fd = Device::wait_fd(peer);
            let mut fds = Vec::with_capacity(2);
            fds.push(PollFd::new(&stdin, PollFlags::IN));
            if let Some(fd) = &wait_fd {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let stdin_ready = !fds[0].revents().is_empty();
            drop(fds);
            if stdin_ready && self.read_stdin(Some(peer))? == Flow::Exit {
                return Ok(Flow::Exit);
            }
        }
    }

    /// Reads one chunk of stdin and runs the commands in it.
    fn read_stdin(&mut self, peer: Option<&HostPeer>) -> io::Result<Flow> {
        let mut buf = [0u8; READ_CHUNK];
        let n = match rustix::io::read(rustix::stdio::stdin(), &mut buf) {
            Ok(n) => n,
            Err(Errno::INTR | Errno::AGAIN) => return Ok(Flow::Continue),
            Err(e) => return Err(e.into()),
        };
        let commands = self.input.push(&buf[..n], n == buf.len());
        for text in &commands {
            let peer = peer.map(|p| p as &dyn ClientPeer);
            execute(
                &parse_command(text),
                peer,
                self.verbose,
                &mut self.out,
                &mut self.err,
            )?;
        }
        if n == 0 {
            self.out.flush()?;
            return Ok(Flow::Exit);
        }
        if !self.input.has_pending() {
            self.out.write_all(PROMPT.as_bytes())?;
        }
        self.out.flush()?;
        Ok(Flow::Continue)
    }

    /// Reports a fresh connection (verbose) and records the peers already there.
    fn greet(&mut self, peer: &HostPeer) -> io::Result<()> {
        let own = ClientPeer::id(peer);
        if self.verbose {
            writeln!(self.out, "our_id={own}")?;
        }
        for id in peer.peer_ids() {
            let count = ClientPeer::vector_fds(peer, id).map_or(0, |f| f.len());
            self.peer_vectors(peer, id, count)?;
        }
        let own_vectors = ClientPeer::vector_fds(peer, own).map_or(0, |f| f.len());
        if self.verbose {
            self.new_vector_lines(peer, own, 0, own_vectors)?;
        }
        Ok(())
    }

    /// Records that `id` now has `count` vectors, with QEMU's verbose lines.
    fn peer_vectors(&mut self, peer: &HostPeer, id: PeerId, count: usize) -> io::Result<()> {
        let before = self.known.insert(id, count);
        if self.verbose {
            if before.is_none() {
                writeln!(self.out, "new peer id = {id}")?;
            }
            self.new_vector_lines(peer, id, before.unwrap_or(0), count)?;
        }
        Ok(())
    }

    fn new_vector_lines(
        &mut self,
        peer: &HostPeer,
        id: PeerId,
        from: usize,
        to: usize,
    ) -> io::Result<()> {
        let fds = peer.vector_fd_numbers(id).unwrap_or_default();
        for vector in from..to {
            let fd = fds.get(vector).copied().unwrap_or(-1);
            writeln!(self.out, "  new vector {vector} (fd={fd}) for peer id {id}")?;
        }
        Ok(())
    }

    /// Prints one event.
    fn event(&mut self, peer: &HostPeer, event: Event) -> io::Result<Flow> {
        let own = ClientPeer::id(peer);
        match event {
            Event::Notified { vector, count } => {
                if self.verbose {
                    let fd = peer
                        .vector_fd_numbers(own)
                        .and_then(|fds| fds.get(usize::from(vector)).copied())
                        .unwrap_or(-1);
                    writeln!(
                        self.out,
                        "received event on fd {fd} vector {vector}: {count}"
                    )?;
                }
                // QEMU prints our own id here: it is what users look for.
                writeln!(
                    self.out,
                    "receive notification from peer_id={own} vector={vector}"
                )?;
            }
            Event::PeerJoined { peer: id, vectors } => self.peer_vectors(peer, id, vectors)?,
            Event::PeerLeft { peer: id } => {
                self.known.remove(&id);
                if self.verbose {
                    writeln!(self.out, "delete peer id = {id}")?;
                }
            }
            Event::ServerGone => return Ok(Flow::Disconnected),
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("help"), Command::Help);
        assert_eq!(parse_command("?"), Command::Help);
        assert_eq!(parse_command("dump"), Command::Dump);
        assert_eq!(parse_command("  dump "), Command::Dump);
        assert_eq!(parse_command("int all"), Command::NotifyAll);
        assert_eq!(parse_command("int 3 all"), Command::NotifyPeer { peer: 3 });
        assert_eq!(
            parse_command("int 0 1"),
            Command::NotifyVector { peer: 0, vector: 1 }
        );
        assert_eq!(
            parse_command("int\t2   5"),
            Command::NotifyVector { peer: 2, vector: 5 }
        );
        assert_eq!(
            parse_command("int -1 0"),
            Command::NotifyVector {
                peer: -1,
                vector: 0
            }
        );
    }

    #[test]
    fn other_text_is_invalid() {
        for text in [
            "",
            "hello",
            "help me",
            "dumps",
            "int",
            "int 3",
            "int x 1",
            "int 0 1x",
            "int 0 1 2",
            "int all 1",
            "INT 0 1",
            "int 99999999999999999999 0",
        ] {
            assert_eq!(parse_command(text), Command::Invalid, "{text:?}");
        }
    }

    #[test]
    fn commands_split_on_newlines_returns_and_semicolons() {
        let found: Vec<&str> = split_commands("dump;int 0 1\r\nhelp;;\n\n  ;int all").collect();
        assert_eq!(found, ["dump", "int 0 1", "help", "int all"]);
        assert_eq!(split_commands(";\r\n").count(), 0);
    }

    #[test]
    fn short_reads_are_taken_whole() {
        let mut input = InputBuffer::default();
        assert_eq!(input.push(b"dump", false), ["dump"]);
        assert_eq!(input.push(b"help;int 0 1\n", false), ["help", "int 0 1"]);
        assert!(!input.has_pending());
    }

    #[test]
    fn full_reads_keep_their_unfinished_tail() {
        let mut input = InputBuffer::default();
        assert_eq!(input.push(b"dump\nint 0", true), ["dump"]);
        assert!(input.has_pending());
        assert_eq!(input.push(b" 1\nhe", true), ["int 0 1"]);
        assert_eq!(input.push(b"lp", false), ["help"]);
        assert!(!input.has_pending());
        // End of input takes what is left.
        assert!(input.push(b"int 0", true).is_empty());
        assert_eq!(input.push(b"", false), ["int 0"]);
    }

    #[test]
    fn endless_lines_do_not_grow_without_bound() {
        let mut input = InputBuffer::default();
        let chunk = vec![b'x'; READ_CHUNK];
        let mut total = 0;
        while total + chunk.len() < MAX_PENDING {
            assert!(input.push(&chunk, true).is_empty());
            total += chunk.len();
        }
        assert_eq!(input.push(&chunk, true).len(), 1);
        assert!(!input.has_pending());
    }

    /// A peer with fixed vectors that records the rings.
    struct FakePeer {
        id: PeerId,
        vectors: BTreeMap<PeerId, Vec<RawFd>>,
        rung: RefCell<Vec<(PeerId, Vector)>>,
        fail: bool,
    }

    impl FakePeer {
        /// We are 1 with fds 10, 11; peer 0 has 20, 21; peer 4 has 40.
        fn new() -> Self {
            FakePeer {
                id: 1,
                vectors: BTreeMap::from([(0, vec![20, 21]), (1, vec![10, 11]), (4, vec![40])]),
                rung: RefCell::new(Vec::new()),
                fail: false,
            }
        }
    }

    impl ClientPeer for FakePeer {
        fn id(&self) -> PeerId {
            self.id
        }
        fn peer_ids(&self) -> Vec<PeerId> {
            self.vectors
                .keys()
                .copied()
                .filter(|&p| p != self.id)
                .collect()
        }
        fn vector_fds(&self, peer: PeerId) -> Option<Vec<RawFd>> {
            self.vectors.get(&peer).cloned()
        }
        fn notify(&self, peer: PeerId, vector: Vector) -> Result<(), NotifyError> {
            if self.fail {
                return Err(NotifyError::UnknownPeer(peer));
            }
            self.rung.borrow_mut().push((peer, vector));
            Ok(())
        }
    }

    /// Runs `text` as one command; gives stdout and stderr.
    fn run(peer: Option<&FakePeer>, text: &str, verbose: bool) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let peer = peer.map(|p| p as &dyn ClientPeer);
        execute(&parse_command(text), peer, verbose, &mut out, &mut err).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn help_prints_qemus_four_lines() {
        let (out, _) = run(None, "?", false);
        assert_eq!(out, HELP);
        assert_eq!(out.lines().count(), 4);
        assert!(out.starts_with("dump: dump peers (including us)\n"));
    }

    #[test]
    fn dump_lists_us_then_the_peers() {
        let peer = FakePeer::new();
        let (out, _) = run(Some(&peer), "dump", false);
        assert_eq!(
            out,
            "our_id = 1\n\
             \x20 vector 0 is enabled (fd=10)\n\
             \x20 vector 1 is enabled (fd=11)\n\
             peer_id = 0\n\
             \x20 vector 0 is enabled (fd=20)\n\
             \x20 vector 1 is enabled (fd=21)\n\
             peer_id = 4\n\
             \x20 vector 0 is enabled (fd=40)\n"
        );
        assert_eq!(run(None, "dump", false).0, "our_id = -1\n");
    }

    #[test]
    fn int_rings_one_vector() {
        let peer = FakePeer::new();
        let (out, _) = run(Some(&peer), "int 0 1", false);
        assert_eq!(out, "");
        assert_eq!(*peer.rung.borrow(), [(0, 1)]);
        // Our own id is accepted: we ring ourselves.
        run(Some(&peer), "int 1 0", false);
        assert_eq!(peer.rung.borrow().last(), Some(&(1, 0)));
    }

    #[test]
    fn int_reports_unknown_peers() {
        let peer = FakePeer::new();
        for (text, id) in [
            ("int 9 0", "9"),
            ("int 9 all", "9"),
            ("int -1 0", "-1"),
            ("int 70000 0", "70000"),
        ] {
            assert_eq!(
                run(Some(&peer), text, false).0,
                format!("cannot find peer_id = {id}\n")
            );
        }
        assert_eq!(run(None, "int 0 0", false).0, "cannot find peer_id = 0\n");
        assert!(peer.rung.borrow().is_empty());
    }

    #[test]
    fn bad_vectors_are_reported_verbose_or_not() {
        let mut peer = FakePeer::new();
        for verbose in [false, true] {
            assert_eq!(
                run(Some(&peer), "int 0 2", verbose).0,
                "invalid vector 2 on peer 0 (its vectors are 0 to 1)\n"
            );
            assert_eq!(
                run(Some(&peer), "int 4 7", verbose).0,
                "invalid vector 7 on peer 4 (its vectors are 0 to 0)\n"
            );
        }
        assert_eq!(
            run(Some(&peer), "int 0 -1", false).0,
            "invalid vector -1 on peer 0 (its vectors are 0 to 1)\n"
        );
        assert!(peer.rung.borrow().is_empty());
        peer.vectors.insert(5, Vec::new());
        assert_eq!(
            run(Some(&peer), "int 5 0", false).0,
            "invalid vector 0 on peer 5 (it has none)\n"
        );
    }

    #[test]
    fn verbose_rings_name_the_fd() {
        let peer = FakePeer::new();
        assert_eq!(
            run(Some(&peer), "int 4 0", true).0,
            "notify peer 4 on vector 0, fd 40\n"
        );
    }

    #[test]
    fn int_peer_all_rings_every_vector_of_that_peer() {
        let peer = FakePeer::new();
        run(Some(&peer), "int 0 all", false);
        assert_eq!(*peer.rung.borrow(), [(0, 0), (0, 1)]);
    }

    #[test]
    fn int_all_rings_everyone_but_us() {
        let peer = FakePeer::new();
        run(Some(&peer), "int all", false);
        assert_eq!(*peer.rung.borrow(), [(0, 0), (0, 1), (4, 0)]);
        assert_eq!(run(None, "int all", false), (String::new(), String::new()));
    }

    #[test]
    fn failed_rings_go_to_stderr() {
        let mut peer = FakePeer::new();
        peer.fail = true;
        let (out, err) = run(Some(&peer), "int 4 0", false);
        assert_eq!(out, "");
        assert_eq!(err, "could not write to 40: peer 4 is not connected\n");
    }

    #[test]
    fn garbage_asks_for_help() {
        assert_eq!(run(None, "bla", false).0, "invalid command, type help\n");
    }
}
