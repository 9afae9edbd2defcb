//! The relay over an in-memory port: half-close, waiting until bytes are taken,
//! keep-open, stop, escape, a program, a pty opened twice, raw mode restored.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, Cursor, Read, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::termios::{LocalModes, OptionalActions, OutputModes, tcgetattr, tcsetattr};

use super::engine::{self, Plan};
use super::local::{Sink, Source};
use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// One direction of the in-memory port.
#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
}

#[derive(Default)]
struct PipeState {
    bytes: VecDeque<u8>,
    closed: bool,
    dead: bool,
    /// The writer closed while the reader had not taken everything.
    closed_early: bool,
}

impl Pipe {
    fn with<T>(&self, f: impl FnOnce(&mut PipeState) -> T) -> T {
        let mut state = self.state.lock().unwrap();
        let out = f(&mut state);
        self.changed.notify_all();
        out
    }

    /// Waits (up to `timeout`) until `done` holds.
    fn wait_until(
        &self,
        timeout: Option<Duration>,
        mut done: impl FnMut(&PipeState) -> bool,
    ) -> (std::sync::MutexGuard<'_, PipeState>, bool) {
        let deadline = Instant::now() + timeout.unwrap_or(WAIT * 6);
        let mut state = self.state.lock().unwrap();
        loop {
            if done(&state) {
                return (state, true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (state, false);
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

/// Reads a [`Pipe`].
struct MemReader {
    pipe: Arc<Pipe>,
    timeout: Option<Duration>,
}

/// Writes a [`Pipe`]; dropping it closes, as a stream does.
struct MemWriter {
    pipe: Arc<Pipe>,
    timeout: Option<Duration>,
}

/// One end of an in-memory duplex port.
struct MemPort {
    reader: MemReader,
    writer: MemWriter,
}

/// Two connected ends.
fn port_pair() -> (MemPort, MemPort) {
    let (ab, ba) = (Arc::new(Pipe::default()), Arc::new(Pipe::default()));
    let end = |rx: &Arc<Pipe>, tx: &Arc<Pipe>| MemPort {
        reader: MemReader {
            pipe: rx.clone(),
            timeout: None,
        },
        writer: MemWriter {
            pipe: tx.clone(),
            timeout: None,
        },
    };
    (end(&ba, &ab), end(&ab, &ba))
}

impl DuplexPort for MemPort {
    type Reader = MemReader;
    type Writer = MemWriter;

    fn split(self) -> (MemReader, MemWriter) {
        (self.reader, self.writer)
    }
}

impl Read for MemReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (mut state, ready) = self
            .pipe
            .wait_until(self.timeout, |s| !s.bytes.is_empty() || s.closed || s.dead);
        if !ready {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if state.bytes.is_empty() {
            return match state.dead {
                true => Err(io::ErrorKind::ConnectionAborted.into()),
                false => Ok(0),
            };
        }
        let n = buf.len().min(state.bytes.len());
        for (slot, byte) in buf.iter_mut().zip(state.bytes.drain(..n)) {
            *slot = byte;
        }
        drop(state);
        self.pipe.changed.notify_all();
        Ok(n)
    }
}

impl PortRead for MemReader {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pipe.with(|s| {
            if s.closed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            s.bytes.extend(buf);
            Ok(buf.len())
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PortWrite for MemWriter {
    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    fn wait_taken(&mut self, timeout: Duration) -> io::Result<bool> {
        let (state, taken) = self
            .pipe
            .wait_until(Some(timeout), |s| s.bytes.is_empty() || s.dead);
        match state.dead {
            true => Err(io::ErrorKind::BrokenPipe.into()),
            false => Ok(taken),
        }
    }

    fn close(&mut self) -> io::Result<()> {
        self.pipe.with(|s| {
            s.closed_early |= !s.closed && !s.bytes.is_empty();
            s.closed = true;
        });
        Ok(())
    }

    fn check(&mut self) -> io::Result<()> {
        match self.pipe.with(|s| s.dead) {
            true => Err(io::ErrorKind::BrokenPipe.into()),
            false => Ok(()),
        }
    }
}

impl Drop for MemWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Everything the peer end reads until the end of file, on a thread.
fn read_to_end(mut reader: MemReader) -> thread::JoinHandle<io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all)?;
        Ok(all)
    })
}

/// Reads until `want` bytes came (or panics after [`WAIT`]).
fn read_exact_within(reader: &mut MemReader, want: usize) -> Vec<u8> {
    reader.timeout = Some(WAIT);
    let mut got = vec![0u8; want];
    reader.read_exact(&mut got).expect("bytes from the relay");
    got
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed)
        .collect()
}

#[test]
fn relay_swaps_both_ways_and_closes_only_after_the_peer_took_everything() {
    let (mine, theirs) = port_pair();
    let (to_peer, to_me) = (pattern(300_000, 1), pattern(90_000, 2));
    let peer_sent = to_me.clone();
    let peer = thread::spawn(move || {
        let MemPort { reader, mut writer } = theirs;
        // A slow reader: the relay must not close before it took all.
        thread::sleep(Duration::from_millis(200));
        let got = read_to_end(reader);
        writer.write_all(&peer_sent).unwrap();
        writer.close().unwrap();
        got.join().unwrap().unwrap()
    });
    let ab = mine.writer.pipe.clone();
    let mut output = Vec::new();
    relay(mine, Cursor::new(to_peer.clone()), &mut output).unwrap();
    assert_eq!(output, to_me);
    assert_eq!(peer.join().unwrap(), to_peer);
    assert!(
        !ab.with(|s| s.closed_early),
        "closed before the peer took it"
    );
}

#[test]
fn keep_open_holds_the_output_open_after_the_input_until_the_peers_end() {
    let (mine, theirs) = port_pair();
    let (done_tx, from_input) = mpsc::sync_channel(1);
    drop(done_tx); // the input ends at once
    let (out_tx, out_rx) = mpsc::channel();
    let relay = thread::spawn(move || {
        let mut output = Vec::new();
        let plan = Plan {
            source: Source::chunks(from_input),
            sink: Sink::Writer(&mut output),
            close_at_source_end: false,
            end_at_port_end: true,
            escape: None,
            child: None,
        };
        let outcome = engine::run(mine, plan, None);
        out_tx.send(output).unwrap();
        outcome
    });
    let MemPort {
        mut reader,
        mut writer,
    } = theirs;
    reader.timeout = Some(Duration::from_millis(300));
    let mut buf = [0u8; 8];
    let early = reader.read(&mut buf);
    assert_eq!(
        early.map_err(|e| e.kind()),
        Err(io::ErrorKind::TimedOut),
        "the output stayed open"
    );
    writer.write_all(b"still here").unwrap();
    writer.close().unwrap();
    assert_eq!(relay.join().unwrap().unwrap(), Outcome::Ended);
    assert_eq!(out_rx.recv().unwrap(), b"still here");
    assert_eq!(reader.read(&mut buf).unwrap(), 0, "then end of file");
}

#[test]
fn a_stop_descriptor_ends_the_relay_and_closes_the_output() {
    let (mine, theirs) = port_pair();
    let (_input_open, from_input) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let (stop_read, stop_write) = rustix::pipe::pipe().unwrap();
    let relay = thread::spawn(move || {
        let mut output = Vec::new();
        let plan = Plan {
            source: Source::chunks(from_input),
            sink: Sink::Writer(&mut output),
            close_at_source_end: true,
            end_at_port_end: false,
            escape: None,
            child: None,
        };
        engine::run(mine, plan, Some(stop_read.as_fd()))
    });
    thread::sleep(Duration::from_millis(100));
    assert!(!relay.is_finished(), "runs while input and port are open");
    rustix::io::write(&stop_write, b"x").unwrap();
    assert_eq!(relay.join().unwrap().unwrap(), Outcome::Stopped);
    let mut reader = theirs.reader;
    reader.timeout = Some(WAIT);
    assert_eq!(
        reader.read(&mut [0u8; 4]).unwrap(),
        0,
        "the peer sees the end"
    );
}

#[test]
fn the_escape_key_sends_what_came_before_it_and_ends() {
    let (mine, theirs) = port_pair();
    let (input, from_input) = mpsc::sync_channel(1);
    input.send(Ok(b"ab\x1dcd".to_vec())).unwrap();
    let peer = read_to_end(theirs.reader);
    let mut output = Vec::new();
    let plan = Plan {
        source: Source::chunks(from_input),
        sink: Sink::Writer(&mut output),
        close_at_source_end: true,
        end_at_port_end: false,
        escape: Some(ESCAPE),
        child: None,
    };
    assert_eq!(engine::run(mine, plan, None).unwrap(), Outcome::Escaped);
    assert_eq!(peer.join().unwrap().unwrap(), b"ab");
    drop(input);
}

#[test]
fn a_peer_that_dies_fails_the_relay() {
    let (mine, theirs) = port_pair();
    let (_input_open, from_input) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let to_me = theirs.writer.pipe.clone();
    let relay = thread::spawn(move || {
        let mut output = Vec::new();
        let plan = Plan {
            source: Source::chunks(from_input),
            sink: Sink::Writer(&mut output),
            close_at_source_end: true,
            end_at_port_end: false,
            escape: None,
            child: None,
        };
        engine::run(mine, plan, None)
    });
    to_me.with(|s| s.dead = true);
    match relay.join().unwrap() {
        Err(RelayError::ReadStream(e)) => assert!(is_peer_gone(&e), "{e}"),
        other => panic!("{other:?}"),
    }
    drop(theirs);
}

#[test]
fn exec_cat_echoes_and_ends_with_its_status() {
    let (mine, theirs) = port_pair();
    let MemPort { reader, mut writer } = theirs;
    let echoed = read_to_end(reader);
    let relay =
        thread::spawn(move || run(mine, Endpoint::Exec(shell("cat")), &RelayOptions::default()));
    let data = pattern(200_000, 7);
    writer.write_all(&data).unwrap();
    writer.close().unwrap();
    match relay.join().unwrap().unwrap() {
        Outcome::Exited(status) => assert!(status.success(), "{status}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(echoed.join().unwrap().unwrap(), data);
}

#[test]
fn exec_merges_standard_error_and_reports_a_failing_status() {
    let (mine, theirs) = port_pair();
    let MemPort { reader, writer } = theirs;
    let output = read_to_end(reader);
    // The port's input stays open: the program's exit alone ends the relay.
    let command = shell("echo out; echo err >&2; exit 3");
    let outcome = run(mine, Endpoint::Exec(command), &RelayOptions::default()).unwrap();
    assert_eq!(
        outcome.clone_status().and_then(|s| s.code()),
        Some(3),
        "{outcome:?}"
    );
    assert_eq!(output.join().unwrap().unwrap(), b"out\nerr\n");
    drop(writer);
}

#[test]
fn exec_shell_runs_a_command_sent_through_the_port() {
    let (mine, theirs) = port_pair();
    let MemPort {
        mut reader,
        mut writer,
    } = theirs;
    let relay = thread::spawn(move || {
        run(
            mine,
            Endpoint::Exec(shell("/bin/sh")),
            &RelayOptions::default(),
        )
    });
    writer.write_all(b"echo hello from $0\n").unwrap();
    assert_eq!(read_exact_within(&mut reader, 19), b"hello from /bin/sh\n");
    writer.write_all(b"exit 5\n").unwrap();
    let outcome = relay.join().unwrap().unwrap();
    assert_eq!(outcome.clone_status().and_then(|s| s.code()), Some(5));
    assert_eq!(reader.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn a_pty_is_opened_and_closed_twice_by_another_program() {
    let (mine, theirs) = port_pair();
    let pty = Pty::open().unwrap();
    let path = pty.path().to_owned();
    assert!(path.starts_with("/dev/pts"), "{}", path.display());
    let relay = thread::spawn(move || run(mine, Endpoint::Pty(pty), &RelayOptions::default()));
    let MemPort {
        mut reader,
        mut writer,
    } = theirs;
    for round in 0..2u8 {
        let mut terminal = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let line = format!("ping {round}\n");
        terminal.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_exact_within(&mut reader, line.len()), line.as_bytes());
        let reply = format!("pong {round}\n");
        writer.write_all(reply.as_bytes()).unwrap();
        let (got_tx, got) = mpsc::channel();
        let want = reply.len();
        thread::spawn(move || {
            let mut buf = vec![0u8; want];
            let _ = got_tx.send(terminal.read_exact(&mut buf).map(|()| buf));
        });
        let bytes = got.recv_timeout(WAIT).expect("reply through the pty");
        assert_eq!(bytes.unwrap(), reply.as_bytes());
    }
    // The peer's end ends a pty relay.
    writer.close().unwrap();
    assert_eq!(relay.join().unwrap().unwrap(), Outcome::Ended);
    reader.timeout = Some(WAIT);
    assert_eq!(reader.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn raw_mode_is_restored_on_drop_and_on_unwinding() {
    let pty = Pty::open().unwrap();
    let slave = pty.slave();
    let mut cooked = tcgetattr(slave).unwrap();
    cooked.local_modes |= LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG;
    tcsetattr(slave, OptionalActions::Now, &cooked).unwrap();
    let cooked = tcgetattr(slave).unwrap();

    let raw = RawMode::enter(slave).unwrap();
    let modes = tcgetattr(slave).unwrap();
    assert!(
        !modes
            .local_modes
            .intersects(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG)
    );
    // Newlines from a peer without a terminal still start a line.
    assert!(
        modes
            .output_modes
            .contains(OutputModes::OPOST | OutputModes::ONLCR)
    );
    drop(raw);
    assert_eq!(tcgetattr(slave).unwrap().local_modes, cooked.local_modes);

    let unwound = std::panic::catch_unwind(|| {
        let _raw = RawMode::enter(slave).unwrap();
        panic!("an error path");
    });
    assert!(unwound.is_err());
    let after = tcgetattr(slave).unwrap();
    assert_eq!(after.local_modes, cooked.local_modes);
    assert_eq!(after.input_modes, cooked.input_modes);
    assert_eq!(after.output_modes, cooked.output_modes);

    RawMode::enter(slave).unwrap().restore().unwrap();
    assert_eq!(tcgetattr(slave).unwrap().local_modes, cooked.local_modes);
    assert!(is_terminal(slave));
}

impl Outcome {
    fn clone_status(&self) -> Option<std::process::ExitStatus> {
        match self {
            Outcome::Exited(status) => Some(*status),
            _ => None,
        }
    }
}

#[test]
fn a_pty_whose_slave_was_hung_up_is_opened_again() {
    let (mine, theirs) = port_pair();
    let (master, slave, path) = Pty::open().unwrap().into_parts();
    let pty_path = path.clone();
    // As after a hangup: no working slave descriptor is left, the master reads EIO.
    drop(slave);
    let hung_up = std::fs::File::open("/dev/null").unwrap().into();
    let relay = thread::spawn(move || {
        let sink = Sink::Fd {
            fd: Some(master.try_clone().unwrap()),
            discard_when_gone: false,
            close_at_end: false,
        };
        let plan = Plan {
            source: Source::Pty {
                master,
                slave: hung_up,
                path,
                reopened: false,
            },
            sink,
            close_at_source_end: false,
            end_at_port_end: true,
            escape: None,
            child: None,
        };
        engine::run(mine, plan, None)
    });
    let MemPort { mut reader, writer } = theirs;
    thread::sleep(Duration::from_millis(100));
    assert!(!relay.is_finished(), "EIO did not end the relay");
    for _ in 0..2 {
        let mut terminal = OpenOptions::new().write(true).open(&pty_path).unwrap();
        terminal.write_all(b"after the hangup\n").unwrap();
        assert_eq!(read_exact_within(&mut reader, 17), b"after the hangup\n");
        drop(terminal);
        thread::sleep(Duration::from_millis(50));
        assert!(
            !relay.is_finished(),
            "the reopened slave keeps the master up"
        );
    }
    drop(writer);
    assert_eq!(relay.join().unwrap().unwrap(), Outcome::Ended);
}
