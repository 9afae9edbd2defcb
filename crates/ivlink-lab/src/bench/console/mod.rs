//! `ivlink console bench`: a native virtio console between two host processes,
//! against a UNIX socket pair and a pty pair measured in the same run.
//!
//! The leader (this process) starts a private ivshmem server on a memfd in a
//! temporary directory, opens the console's driver side as a host peer, and
//! starts a peer process (`ivlink console bench-peer`) that opens the device
//! side; the two are pinned to two CPUs when there are two, as `ivlink bench`
//! does. The socket pair and the pty slave are handed to a peer process of
//! their own over the control channel. Every mechanism runs the same
//! [`exchange`]: bulk throughput each way, then one-byte keystroke round trips.
//!
//! Decisions:
//! - Bulk writes are 64 KiB: a terminal program writes what it has, and the
//!   sockets and the pty get the same calls, so the comparison is of the
//!   mechanisms, not of call counts.
//! - The console's defaults here, 64 buffers of 16 KiB per queue, were the
//!   fastest of the shapes tried (32 × 4 KiB, the console's own default, moved
//!   about a third as much; 64 × 64 KiB about as much, in four times the
//!   region); other shapes are a flag away.
//! - A pty moves tens of MB/s: its bulk transfers stop at [`PTY_BYTES`] so a
//!   full run stays short; every result says how many bytes it moved.
//! - Targets are reported, never asserted: machines are noisy.

mod exchange;
mod report;

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ::ivlink::Device;
use ::ivlink::console::{Console, ConsoleOptions, ConsoleRole, NativeShape, Profile};
use ::ivlink::server::{ServerConfig, ServerThread};
use ::ivlink::shm::ShmBacking;
use ::ivlink::transport::host::{HostConfig, HostPeer};

use super::job::{Control, Done, PeerProcess};
use super::{BenchError, Placement, placement};
use crate::progress::Progress;
pub use exchange::Plan;
pub use report::{ConsoleReport, MechanismResult};

/// Most bulk bytes each way over the pty.
pub const PTY_BYTES: u64 = 64 << 20;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleBenchConfig {
    /// Small counts (a smoke run).
    pub quick: bool,
    /// Bulk bytes each way, per mechanism.
    pub bytes: u64,
    /// Bytes per bulk write.
    pub chunk: usize,
    /// Measured keystroke round trips, per mechanism.
    pub round_trips: u64,
    /// Console entries per queue.
    pub buffers: u16,
    /// Console bytes per buffer.
    pub buffer_size: u32,
    /// How long a console side spins before sleeping on the doorbell.
    pub spin: Duration,
    /// Pin the two processes to two CPUs when there are two.
    pub pin: bool,
    /// How long either side may wait for the other.
    pub timeout: Duration,
}

impl ConsoleBenchConfig {
    /// The full run: a few seconds per mechanism.
    pub fn standard() -> Self {
        ConsoleBenchConfig {
            quick: false,
            bytes: 1 << 30,
            chunk: 64 << 10,
            round_trips: 20_000,
            buffers: 64,
            buffer_size: 16 << 10,
            spin: Duration::from_micros(50),
            pin: true,
            timeout: Duration::from_secs(20),
        }
    }

    /// A smoke run of about a second.
    pub fn quick() -> Self {
        ConsoleBenchConfig {
            quick: true,
            bytes: 16 << 20,
            round_trips: 1_000,
            ..Self::standard()
        }
    }

    fn shape(&self) -> NativeShape {
        NativeShape {
            ports: 1,
            num: self.buffers,
            buf_size: self.buffer_size,
        }
    }

    fn plan(&self) -> Plan {
        Plan {
            bytes: self.bytes,
            chunk: self.chunk,
            warmup: (self.round_trips / 10).clamp(10, 2_000),
            round_trips: self.round_trips,
        }
    }

    fn validate(&self) -> Result<u64, BenchError> {
        let bad = |what: String| Err(BenchError::Config(what));
        if self.bytes == 0 || self.round_trips == 0 {
            return bad("--bytes and --round-trips must be positive".into());
        }
        if !(1..=(16 << 20)).contains(&self.chunk) {
            return bad(format!(
                "the write size must be 1 B to 16 MiB (got {})",
                self.chunk
            ));
        }
        let section = self
            .shape()
            .section_size()
            .map_err(|e| BenchError::Config(format!("console shape: {e}")))?;
        // The directory and alignment need far less than a MiB.
        Ok(((section + (1 << 20)) as u64).next_power_of_two())
    }
}

/// The streams compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Console,
    Unix,
    Pty,
}

impl Mechanism {
    const ALL: [Mechanism; 3] = [Mechanism::Console, Mechanism::Unix, Mechanism::Pty];

    fn name(self) -> &'static str {
        match self {
            Mechanism::Console => "console",
            Mechanism::Unix => "unix",
            Mechanism::Pty => "pty",
        }
    }

    fn how(self) -> &'static str {
        match self {
            Mechanism::Console => {
                "native virtio console between two host peers: memfd region, doorbells only when asked"
            }
            Mechanism::Unix => "UNIX stream socketpair, blocking read() and write()",
            Mechanism::Pty => {
                "pty pair in raw mode: the driver on the master, the device on the slave"
            }
        }
    }

    fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// One peer process's job (its arguments).
#[derive(Debug, Clone, PartialEq)]
struct PeerJob {
    mechanism: Mechanism,
    plan: Plan,
    spin: Duration,
    cpu: Option<usize>,
    socket: Option<PathBuf>,
    timeout: Duration,
}

impl PeerJob {
    fn encode(&self) -> Vec<String> {
        let mut args = vec![
            format!("mechanism={}", self.mechanism.name()),
            format!("bytes={}", self.plan.bytes),
            format!("chunk={}", self.plan.chunk),
            format!("warmup={}", self.plan.warmup),
            format!("round-trips={}", self.plan.round_trips),
            format!("spin-ns={}", self.spin.as_nanos()),
            format!("timeout-ms={}", self.timeout.as_millis()),
        ];
        if let Some(cpu) = self.cpu {
            args.push(format!("cpu={cpu}"));
        }
        if let Some(socket) = &self.socket {
            args.push(format!("socket={}", socket.display()));
        }
        args
    }

    fn decode(args: &[String]) -> Result<PeerJob, BenchError> {
        let bad = |what: &str| BenchError::BadJob(what.to_owned());
        let mut job = PeerJob {
            mechanism: Mechanism::Unix,
            plan: Plan {
                bytes: 0,
                chunk: 1,
                warmup: 0,
                round_trips: 0,
            },
            spin: Duration::ZERO,
            cpu: None,
            socket: None,
            timeout: Duration::from_secs(10),
        };
        let mut named = false;
        for arg in args {
            let (key, value) = arg.split_once('=').ok_or_else(|| bad(arg))?;
            let number = || value.parse::<u64>().map_err(|_| bad(arg));
            match key {
                "mechanism" => {
                    job.mechanism = Mechanism::from_name(value).ok_or_else(|| bad(arg))?;
                    named = true;
                }
                "bytes" => job.plan.bytes = number()?,
                "chunk" => {
                    job.plan.chunk = usize::try_from(number()?)
                        .ok()
                        .filter(|&c| (1..=(16 << 20)).contains(&c))
                        .ok_or_else(|| bad(arg))?;
                }
                "warmup" => job.plan.warmup = number()?,
                "round-trips" => job.plan.round_trips = number()?,
                "spin-ns" => job.spin = Duration::from_nanos(number()?),
                "timeout-ms" => job.timeout = Duration::from_millis(number()?),
                "cpu" => job.cpu = Some(number()? as usize),
                "socket" => job.socket = Some(PathBuf::from(value)),
                _ => return Err(bad(arg)),
            }
        }
        if !named {
            return Err(bad("mechanism= is required"));
        }
        Ok(job)
    }

    fn fd_count(&self) -> usize {
        match self.mechanism {
            Mechanism::Console => 0,
            Mechanism::Unix | Mechanism::Pty => 1,
        }
    }
}

fn console_options(role: ConsoleRole, spin: Duration, timeout: Duration) -> ConsoleOptions {
    ConsoleOptions {
        spin,
        setup_timeout: timeout,
        absence_timeout: Some(timeout),
        ..ConsoleOptions::new(Profile::Native, role)
    }
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
    move |error| BenchError::Io { context, error }
}

/// Runs every measurement. `command` makes a command that starts this
/// program's peer role (`ivlink console bench-peer --`); the job's arguments
/// are appended. `progress` shows a bar over the mechanisms.
///
/// Pins the calling thread to a CPU for the run (restored at the end).
pub fn run(
    config: &ConsoleBenchConfig,
    command: &dyn Fn() -> Command,
    progress: &Progress,
) -> Result<ConsoleReport, BenchError> {
    let region = config.validate()?;
    let started = Instant::now();
    let placement = Placement::choose(config.pin)?;
    let restore = placement.leader_cpu.map(placement::pin).transpose()?;
    let result = run_pinned(config, command, progress, placement, region);
    if let Some(mask) = restore {
        placement::restore(&mask)?;
    }
    let mut report = result?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn run_pinned(
    config: &ConsoleBenchConfig,
    command: &dyn Fn() -> Command,
    progress: &Progress,
    placement: Placement,
    region: u64,
) -> Result<ConsoleReport, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("ivlink-console-bench.")
        .tempdir()
        .map_err(io("creating a temporary directory"))?;
    let server = ServerThread::start(ServerConfig {
        socket_path: dir.path().join("ivshmem.sock"),
        shm: ShmBacking::Memfd,
        size: region,
        vectors: 1,
        ..ServerConfig::default()
    })?;
    let host = HostPeer::connect(&HostConfig {
        socket_path: server.socket_path().to_owned(),
        vectors: Some(1),
        setup_timeout: config.timeout,
    })?;
    let base = PeerJob {
        mechanism: Mechanism::Console,
        plan: config.plan(),
        spin: config.spin,
        cpu: placement.peer_cpu,
        socket: Some(server.socket_path().to_owned()),
        timeout: config.timeout,
    };
    let mut results = Vec::new();
    let bar = progress.bar(Mechanism::ALL.len() as u64, "starting");
    for (done, mechanism) in Mechanism::ALL.into_iter().enumerate() {
        bar.set_position(done as u64);
        bar.set_message(mechanism.name());
        let mut job = PeerJob {
            mechanism,
            ..base.clone()
        };
        if mechanism == Mechanism::Pty {
            job.plan.bytes = job.plan.bytes.min(PTY_BYTES);
        }
        let measured = match mechanism {
            Mechanism::Console => lead_console(config, &host, command, &job)?,
            Mechanism::Unix => lead_unix(command, &job)?,
            Mechanism::Pty => lead_pty(command, &job)?,
        };
        results.push(MechanismResult::new(
            mechanism.name(),
            mechanism.how(),
            job.plan.bytes,
            measured,
        ));
    }
    bar.clear();
    drop(host);
    server.stop()?;
    Ok(ConsoleReport {
        quick: config.quick,
        placement,
        bytes: config.bytes,
        chunk: config.chunk,
        round_trips: config.round_trips,
        buffers: config.buffers,
        buffer_size: config.buffer_size,
        spin: config.spin,
        region: region as usize,
        results,
        seconds: 0.0,
    })
}

/// Starts the peer, runs the exchange as the driver, and checks the peer's
/// account of it.
fn lead_with<P: std::io::Read + std::io::Write>(
    mut peer: PeerProcess,
    port: &mut P,
    job: &PeerJob,
) -> Result<exchange::Measured, BenchError> {
    let measured = exchange::lead(port, &job.plan)?;
    let done = peer.report()?;
    let keystrokes = job.plan.warmup + job.plan.round_trips;
    if done.bytes != job.plan.bytes || done.messages != keystrokes {
        return Err(BenchError::Peer(format!(
            "{}: the device side counted {} bytes and {} keystrokes, expected {} and {keystrokes}",
            job.mechanism.name(),
            done.bytes,
            done.messages,
            job.plan.bytes
        )));
    }
    peer.exit()?;
    Ok(measured)
}

fn lead_console(
    config: &ConsoleBenchConfig,
    host: &HostPeer,
    command: &dyn Fn() -> Command,
    job: &PeerJob,
) -> Result<exchange::Measured, BenchError> {
    let options = ConsoleOptions {
        shape: config.shape(),
        ..console_options(ConsoleRole::Driver, job.spin, job.timeout)
    };
    let mut console = Console::open(host, &options)
        .map_err(|e| BenchError::Peer(format!("opening the console driver: {e}")))?;
    let mut peer = PeerProcess::spawn_with(command(), job.encode(), job.timeout, &[])?;
    peer.ready()?;
    console
        .wait_up(job.timeout)
        .map_err(io("waiting for the console device"))?;
    console.set_timeout(Some(job.timeout));
    lead_with(peer, &mut console, job)
}

fn lead_unix(
    command: &dyn Fn() -> Command,
    job: &PeerJob,
) -> Result<exchange::Measured, BenchError> {
    let (ours, theirs) = UnixStream::pair().map_err(io("creating a socketpair"))?;
    let mut peer =
        PeerProcess::spawn_with(command(), job.encode(), job.timeout, &[theirs.as_fd()])?;
    drop(theirs);
    peer.ready()?;
    let mut ours = timed(ours, job.timeout)?;
    lead_with(peer, &mut ours, job)
}

fn lead_pty(
    command: &dyn Fn() -> Command,
    job: &PeerJob,
) -> Result<exchange::Measured, BenchError> {
    let (master, slave) = open_pty().map_err(io("opening a pty pair"))?;
    let mut peer = PeerProcess::spawn_with(command(), job.encode(), job.timeout, &[slave.as_fd()])?;
    // Ours closed, the master reads EIO if the peer dies instead of waiting.
    drop(slave);
    peer.ready()?;
    let mut master = Bounded {
        file: File::from(master),
        timeout: job.timeout,
    };
    lead_with(peer, &mut master, job)
}

/// A descriptor whose reads and writes wait at most `timeout` (a pty has no
/// socket timeouts): past it they fail with `TimedOut`.
struct Bounded {
    file: File,
    timeout: Duration,
}

impl Bounded {
    fn ready(&self, flags: rustix::event::PollFlags) -> std::io::Result<()> {
        let mut fds = [rustix::event::PollFd::new(&self.file, flags)];
        let timeout = rustix::event::Timespec::try_from(self.timeout)
            .map_err(|_| std::io::Error::other("timeout too long"))?;
        loop {
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the pty peer went quiet",
                    ));
                }
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl std::io::Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.ready(rustix::event::PollFlags::IN)?;
        self.file.read(buf)
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.ready(rustix::event::PollFlags::OUT)?;
        self.file.write(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A pty pair, the slave in raw mode: bytes pass unchanged both ways.
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags, open};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut termios = tcgetattr(&slave)?;
    termios.make_raw();
    tcsetattr(&slave, OptionalActions::Now, &termios)?;
    Ok((master, slave))
}

/// A socket whose reads and writes give up after `timeout`.
fn timed(socket: UnixStream, timeout: Duration) -> Result<UnixStream, BenchError> {
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .map_err(io("setting socket timeouts"))?;
    Ok(socket)
}

/// The peer process's part: `args` are what the leader appended to the
/// command. Reads the control channel on stdin.
pub fn run_peer(args: &[String]) -> Result<(), BenchError> {
    let job = PeerJob::decode(args)?;
    let control = Control::stdin(job.timeout);
    let fds = control.receive_fds(job.fd_count())?;
    if let Some(cpu) = job.cpu {
        placement::pin(cpu)?;
    }
    let (bytes, keystrokes) = match job.mechanism {
        Mechanism::Console => follow_console(&job, &control)?,
        Mechanism::Unix | Mechanism::Pty => {
            let fd = fds
                .into_iter()
                .next()
                .ok_or_else(|| BenchError::Peer("missing descriptor".into()))?;
            control.send(0)?;
            if job.mechanism == Mechanism::Unix {
                exchange::follow(&mut timed(UnixStream::from(fd), job.timeout)?, &job.plan)?
            } else {
                exchange::follow(&mut File::from(fd), &job.plan)?
            }
        }
    };
    control.done(Done {
        messages: keystrokes,
        bytes,
        doorbells: 0,
    })
}

fn follow_console(job: &PeerJob, control: &Control) -> Result<(u64, u64), BenchError> {
    let socket = job
        .socket
        .clone()
        .ok_or_else(|| BenchError::BadJob("the console needs socket=".into()))?;
    let host = HostPeer::connect(&HostConfig {
        socket_path: socket,
        vectors: Some(1),
        setup_timeout: job.timeout,
    })?;
    let options = console_options(ConsoleRole::Device, job.spin, job.timeout);
    let mut console = Console::open(&host, &options)
        .map_err(|e| BenchError::Peer(format!("opening the console device: {e}")))?;
    console.set_timeout(Some(job.timeout));
    control.send(i64::from(host.id()))?;
    let counted = exchange::follow(&mut console, &job.plan)?;
    // The driver read the last echo; nothing is left in flight.
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_jobs_survive_the_command_line() {
        let job = PeerJob {
            mechanism: Mechanism::Console,
            plan: Plan {
                bytes: 1 << 30,
                chunk: 65_536,
                warmup: 10,
                round_trips: 999,
            },
            spin: Duration::from_micros(50),
            cpu: Some(1),
            socket: Some("/tmp/a b/sock".into()),
            timeout: Duration::from_secs(3),
        };
        assert_eq!(PeerJob::decode(&job.encode()).unwrap(), job);
        let pty = PeerJob {
            mechanism: Mechanism::Pty,
            cpu: None,
            socket: None,
            ..job
        };
        assert_eq!(PeerJob::decode(&pty.encode()).unwrap(), pty);
        assert_eq!(pty.fd_count(), 1);
        for bad in [
            vec!["bytes=1"],
            vec!["mechanism=carrier-pigeon"],
            vec!["mechanism=unix", "chunk=0"],
            vec!["mechanism=unix", "colour=red"],
        ] {
            let args: Vec<String> = bad.into_iter().map(String::from).collect();
            assert!(PeerJob::decode(&args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn configurations_are_checked_and_sized() {
        let region = ConsoleBenchConfig::quick().validate().unwrap();
        assert!(region.is_power_of_two());
        let shape = ConsoleBenchConfig::quick().shape();
        assert!(region as usize > shape.section_size().unwrap());
        let odd = ConsoleBenchConfig {
            buffer_size: 100,
            ..ConsoleBenchConfig::quick()
        };
        assert!(matches!(odd.validate(), Err(BenchError::Config(_))));
        let none = ConsoleBenchConfig {
            round_trips: 0,
            ..ConsoleBenchConfig::quick()
        };
        assert!(none.validate().is_err());
    }
}
