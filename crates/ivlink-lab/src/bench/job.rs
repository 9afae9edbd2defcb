//! One measurement as both processes see it: what to run (encoded into the peer
//! process's arguments), and the control channel between them (the peer's stdin,
//! one end of a socketpair, carrying 8-byte values and fds as the server
//! protocol does).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::BenchError;
use ivlink::wire;

/// How the two sides talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// ivlink rings in a region from an ivshmem server, doorbells on request.
    Ivlink,
    /// The plain memcpy ring over a shared memfd (the C-equivalent reference).
    MemRing,
    /// A bare eventfd each way (notification only, no payload).
    Eventfd,
    /// A UNIX stream socketpair.
    Unix,
    /// Pipes.
    Pipe,
    /// Doorbells (and windows) of an NTB switch in a region from an ivshmem
    /// server of its own.
    Ntb,
}

/// What the two sides do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// The leader sends, the peer echoes; the leader times each round trip.
    PingPong,
    /// The leader streams messages, the peer consumes them.
    Stream,
}

/// One measurement's parameters, shared by leader and peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The transport.
    pub mechanism: Mechanism,
    /// Ping-pong or stream.
    pub pattern: Pattern,
    /// Message size in bytes.
    pub size: usize,
    /// Messages per publication and per release (rings).
    pub batch: usize,
    /// Ring data area in bytes (streaming rings).
    pub ring: usize,
    /// `None`: busy-poll. `Some(d)`: spin for `d`, then sleep on the doorbell.
    pub spin: Option<Duration>,
    /// The ivshmem server socket (ivlink).
    pub socket: Option<PathBuf>,
    /// The leader's peer id (ivlink).
    pub leader: u16,
    /// CPU to pin the peer process to.
    pub cpu: Option<usize>,
    /// Yield instead of pausing while spinning (both sides share one CPU).
    pub yield_spin: bool,
    /// How long a side may wait for the other before giving up.
    pub timeout: Duration,
    /// Zero-copy (ivlink streams): the sender fills each payload in place
    /// through a write grant, the receiver checks its first and last 8 bytes
    /// in place through a read grant, instead of copying in and out.
    pub grants: bool,
    /// Publish every message with one release store (no fence), checking the
    /// "please notify" flag once per batch (ivlink streams).
    pub eager: bool,
}

impl Job {
    /// The peer process's arguments (after the hidden subcommand).
    pub fn encode(&self) -> Vec<String> {
        let mut args = vec![
            format!("mechanism={}", self.mechanism.name()),
            format!("pattern={}", self.pattern.name()),
            format!("size={}", self.size),
            format!("batch={}", self.batch),
            format!("ring={}", self.ring),
            format!(
                "spin={}",
                self.spin
                    .map_or("busy".into(), |d| d.as_nanos().to_string())
            ),
            format!("leader={}", self.leader),
            format!("yield={}", u8::from(self.yield_spin)),
            format!("timeout-ms={}", self.timeout.as_millis()),
            format!("grants={}", u8::from(self.grants)),
            format!("eager={}", u8::from(self.eager)),
        ];
        if let Some(cpu) = self.cpu {
            args.push(format!("cpu={cpu}"));
        }
        if let Some(socket) = &self.socket {
            args.push(format!("socket={}", socket.display()));
        }
        args
    }

    /// Parses what [`encode`](Self::encode) wrote.
    pub fn decode(args: &[String]) -> Result<Job, BenchError> {
        let bad = |what: &str| BenchError::BadJob(what.to_owned());
        let mut job = Job {
            mechanism: Mechanism::Pipe,
            pattern: Pattern::PingPong,
            size: 0,
            batch: 1,
            ring: 0,
            spin: None,
            socket: None,
            leader: 0,
            cpu: None,
            yield_spin: false,
            timeout: Duration::from_secs(10),
            grants: false,
            eager: false,
        };
        let (mut mechanism, mut pattern) = (false, false);
        for arg in args {
            let (key, value) = arg.split_once('=').ok_or_else(|| bad(arg))?;
            let number = || value.parse::<u64>().map_err(|_| bad(arg));
            match key {
                "mechanism" => {
                    job.mechanism = Mechanism::from_name(value).ok_or_else(|| bad(arg))?;
                    mechanism = true;
                }
                "pattern" => {
                    job.pattern = Pattern::from_name(value).ok_or_else(|| bad(arg))?;
                    pattern = true;
                }
                "size" => job.size = number()? as usize,
                "batch" => job.batch = (number()? as usize).max(1),
                "ring" => job.ring = number()? as usize,
                "spin" if value == "busy" => job.spin = None,
                "spin" => job.spin = Some(Duration::from_nanos(number()?)),
                "leader" => job.leader = u16::try_from(number()?).map_err(|_| bad(arg))?,
                "yield" => job.yield_spin = number()? != 0,
                "timeout-ms" => job.timeout = Duration::from_millis(number()?),
                "grants" => job.grants = number()? != 0,
                "eager" => job.eager = number()? != 0,
                "cpu" => job.cpu = Some(number()? as usize),
                "socket" => job.socket = Some(PathBuf::from(value)),
                _ => return Err(bad(arg)),
            }
        }
        if !mechanism || !pattern {
            return Err(bad("mechanism= and pattern= are required"));
        }
        Ok(job)
    }

    /// How many fds the leader hands the peer.
    pub fn fd_count(&self) -> usize {
        match (self.mechanism, self.pattern) {
            (Mechanism::Ivlink | Mechanism::Ntb, _) => 0,
            (Mechanism::MemRing | Mechanism::Unix, _) => 1,
            (Mechanism::Pipe, Pattern::Stream) => 1,
            (Mechanism::Pipe | Mechanism::Eventfd, _) => 2,
        }
    }
}

impl Mechanism {
    /// The name used in arguments.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Ivlink => "ivlink",
            Mechanism::MemRing => "memcpy-ring",
            Mechanism::Eventfd => "eventfd",
            Mechanism::Unix => "unix",
            Mechanism::Pipe => "pipe",
            Mechanism::Ntb => "ntb",
        }
    }

    fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::Ivlink,
            Mechanism::MemRing,
            Mechanism::Eventfd,
            Mechanism::Unix,
            Mechanism::Pipe,
            Mechanism::Ntb,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::PingPong => "ping-pong",
            Pattern::Stream => "stream",
        }
    }

    fn from_name(name: &str) -> Option<Pattern> {
        [Pattern::PingPong, Pattern::Stream]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// What the peer reports at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done {
    /// Messages received (ring records, or reads for sockets and pipes).
    pub messages: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Doorbells the peer rang.
    pub doorbells: u64,
}

/// The leader's handle on a running peer process.
#[derive(Debug)]
pub struct PeerProcess {
    child: std::process::Child,
    control: OwnedFd,
    receiver: wire::Receiver,
    timeout: Duration,
}

impl PeerProcess {
    /// Starts `command` with `job`'s arguments and the control channel as its
    /// stdin, and hands it `fds`.
    pub fn spawn(
        command: Command,
        job: &Job,
        fds: &[BorrowedFd<'_>],
    ) -> Result<PeerProcess, BenchError> {
        PeerProcess::spawn_with(command, job.encode(), job.timeout, fds)
    }

    /// Starts `command` with `args` appended and the control channel as its
    /// stdin, hands it `fds`, and waits up to `timeout` for each of its reports.
    pub fn spawn_with(
        mut command: Command,
        args: Vec<String>,
        timeout: Duration,
        fds: &[BorrowedFd<'_>],
    ) -> Result<PeerProcess, BenchError> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(BenchError::io("creating the control socketpair"))?;
        let child = command
            .args(args)
            .stdin(Stdio::from(theirs))
            .spawn()
            .map_err(|e| BenchError::Io {
                context: "starting the bench peer process",
                error: e,
            })?;
        let mut peer = PeerProcess {
            child,
            control: ours,
            receiver: wire::Receiver::new(),
            timeout,
        };
        for (i, fd) in fds.iter().enumerate() {
            wire::send_blocking(peer.control.as_fd(), i as i64, Some(*fd))
                .map_err(|e| peer.failed("handing it a descriptor", e))?;
        }
        Ok(peer)
    }

    /// The control socket (readable when the peer reports or exits).
    pub fn control(&self) -> BorrowedFd<'_> {
        self.control.as_fd()
    }

    /// Waits for the peer's "ready" value (its peer id for ivlink, else 0).
    pub fn ready(&mut self) -> Result<i64, BenchError> {
        self.recv("ready")
    }

    /// Waits for the peer's report at the end of the run.
    pub fn report(&mut self) -> Result<Done, BenchError> {
        Ok(Done {
            messages: self.recv("the message count")? as u64,
            bytes: self.recv("the byte count")? as u64,
            doorbells: self.recv("the doorbell count")? as u64,
        })
    }

    /// Waits for the peer process to exit, successfully.
    pub fn exit(mut self) -> Result<(), BenchError> {
        let status = self.child.wait().map_err(|e| BenchError::Io {
            context: "waiting for the bench peer",
            error: e,
        })?;
        if !status.success() {
            return Err(BenchError::Peer(format!("the peer process {status}")));
        }
        Ok(())
    }

    fn recv(&mut self, what: &'static str) -> Result<i64, BenchError> {
        match self
            .receiver
            .recv_timeout(&self.control, Some(self.timeout))
        {
            Ok(Some((value, _))) => Ok(value),
            Ok(None) => Err(BenchError::Stalled(what)),
            Err(e) => Err(self.failed(what, e)),
        }
    }

    /// An error that names the peer's exit status when it has died.
    fn failed(&mut self, what: &str, error: impl std::fmt::Display) -> BenchError {
        std::thread::sleep(Duration::from_millis(50));
        match self.child.try_wait() {
            Ok(Some(status)) => BenchError::Peer(format!(
                "the peer process {status} (while waiting for {what})"
            )),
            _ => BenchError::Peer(format!("{what}: {error}")),
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        // Reap it; a peer still running after an error gets the control channel
        // closed under it (its next report fails and it exits) or is killed.
        if let Ok(None) = self.child.try_wait() {
            let _ = rustix::net::shutdown(&self.control, rustix::net::Shutdown::Both);
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// The peer's side of the control channel (its stdin).
#[derive(Debug)]
pub struct Control {
    fd: BorrowedFd<'static>,
    timeout: Duration,
}

impl Control {
    /// The channel on this process's stdin.
    pub fn stdin(timeout: Duration) -> Control {
        Control {
            fd: rustix::stdio::stdin(),
            timeout,
        }
    }

    /// Receives the `count` fds the leader hands over.
    pub fn receive_fds(&self, count: usize) -> Result<Vec<OwnedFd>, BenchError> {
        let mut receiver = wire::Receiver::new();
        let mut fds = Vec::with_capacity(count);
        for _ in 0..count {
            match receiver.recv_timeout(self.fd, Some(self.timeout)) {
                Ok(Some((_, Some(fd)))) => fds.push(fd),
                Ok(Some((_, None))) => {
                    return Err(BenchError::Peer("expected a descriptor".into()));
                }
                Ok(None) => return Err(BenchError::Stalled("the leader's descriptors")),
                Err(e) => return Err(BenchError::Peer(format!("control channel: {e}"))),
            }
        }
        Ok(fds)
    }

    /// Sends one value to the leader.
    pub fn send(&self, value: i64) -> Result<(), BenchError> {
        wire::send_blocking(self.fd, value, None)
            .map_err(|e| BenchError::Peer(format!("control channel: {e}")))
    }

    /// Reports the end of the run.
    pub fn done(&self, done: Done) -> Result<(), BenchError> {
        self.send(done.messages as i64)?;
        self.send(done.bytes as i64)?;
        self.send(done.doorbells as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_survive_the_command_line() {
        let job = Job {
            mechanism: Mechanism::Ivlink,
            pattern: Pattern::Stream,
            size: 4096,
            batch: 16,
            ring: 1 << 18,
            spin: Some(Duration::from_micros(50)),
            socket: Some("/tmp/x y/sock".into()),
            leader: 7,
            cpu: Some(1),
            yield_spin: true,
            timeout: Duration::from_secs(3),
            grants: true,
            eager: true,
        };
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
        let busy = Job {
            mechanism: Mechanism::Pipe,
            pattern: Pattern::PingPong,
            spin: None,
            grants: false,
            socket: None,
            cpu: None,
            ..job
        };
        assert_eq!(Job::decode(&busy.encode()).unwrap(), busy);
        assert_eq!(busy.fd_count(), 2);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            vec!["pattern=stream"],
            vec!["mechanism=carrier-pigeon", "pattern=stream"],
            vec!["mechanism=pipe", "pattern=stream", "size=x"],
            vec!["mechanism=pipe", "pattern=stream", "color=red"],
            vec!["mechanism=pipe", "pattern=stream", "leader=70000"],
            vec!["mechanism=pipe", "pattern=stream", "nonsense"],
        ] {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            assert!(Job::decode(&args).is_err(), "{args:?}");
        }
    }
}
