//! `ivlink bench`: ivlink between two host processes, measured against
//! baselines in the same run (performance.md, section 12).
//!
//! The leader (this process) starts an embedded ivshmem server on a memfd and
//! connects as a host peer; for every measurement it starts a peer process
//! (the caller says how: `ivlink bench-peer`), hands it fds over a control
//! socketpair on its stdin, and pins the two processes to two CPUs.
//!
//! - Latency: one-way = RTT / 2 of a ping-pong, per-iteration percentiles, for
//!   ivlink busy-polling and with a sleeping receiver, against the plain memcpy
//!   ring, a bare eventfd, a UNIX socketpair and pipes; and an NTB switch's
//!   doorbell (`peer_db_set` to the other port's wait) on a server of its own.
//! - Throughput: streaming messages of several sizes through ivlink's ring,
//!   against the memcpy ring, the UNIX socket and a pipe.
//!
//! Targets are reported, never asserted: machines are noisy.

mod baselines;
pub mod console;
mod drive;
mod ends;
mod export;
pub mod histogram;
mod ivlink;
mod job;
pub mod memring;
mod ntb;
pub mod placement;
pub mod report;
pub mod rpmsg_rtt;
mod run;
pub mod scaling;
pub mod spin;
pub mod svg;
mod table;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use thiserror::Error;

pub use self::ivlink::{STREAM_BYTE, checked_ends};
use ::ivlink::DeviceError;
use ::ivlink::server::ServerError;
use ::ivlink::transport::host::HostPeer;
use job::{Control, Done, Job, Mechanism};
pub use placement::Placement;
pub use report::{LatencyResult, Report, Settings, ThroughputResult};
pub use run::run;

/// What to measure and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// Small iteration counts (a few seconds in all).
    pub quick: bool,
    /// Message sizes for the throughput runs, in bytes.
    pub sizes: Vec<usize>,
    /// Data area of the streaming rings, in bytes (a power of two).
    pub ring: usize,
    /// Messages per publication and per release on the rings.
    pub batch: usize,
    /// Ping-pong payload in bytes.
    pub payload: usize,
    /// Pin the two processes to two CPUs when there are two.
    pub pin: bool,
    /// Round trips for busy-polling mechanisms.
    pub busy_iterations: u64,
    /// Round trips for mechanisms that block in the kernel.
    pub blocking_iterations: u64,
    /// Most time per latency run (once a fifth of the round trips are in).
    pub latency_time: Duration,
    /// Most bytes per throughput run.
    pub stream_bytes: u64,
    /// Most time per throughput run.
    pub stream_time: Duration,
    /// Runs of every stream, interleaved; the median is reported.
    pub rounds: usize,
    /// How long either side may wait for the other before the run fails.
    pub timeout: Duration,
}

impl BenchConfig {
    /// The full run: well under a minute on two CPUs.
    pub fn standard() -> BenchConfig {
        BenchConfig {
            quick: false,
            sizes: vec![64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10],
            ring: 256 << 10,
            batch: 16,
            payload: 64,
            pin: true,
            busy_iterations: 200_000,
            blocking_iterations: 20_000,
            latency_time: Duration::from_secs(2),
            stream_bytes: 4 << 30,
            stream_time: Duration::from_millis(150),
            rounds: 3,
            timeout: Duration::from_secs(10),
        }
    }

    /// A smoke run of a few seconds (tests).
    pub fn quick() -> BenchConfig {
        BenchConfig {
            quick: true,
            busy_iterations: 5_000,
            blocking_iterations: 500,
            latency_time: Duration::from_millis(150),
            stream_bytes: 64 << 20,
            stream_time: Duration::from_millis(40),
            rounds: 1,
            ..BenchConfig::standard()
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |what: String| Err(BenchError::Config(what));
        if !self.ring.is_power_of_two() || !(4096..=(64 << 20)).contains(&self.ring) {
            return bad(format!(
                "the ring size must be a power of two from 4 KiB to 64 MiB (got {})",
                self.ring
            ));
        }
        let max_message = self.ring - ivlink_core::ring::RECORD_HEADER;
        if let Some(&size) = self.sizes.iter().find(|&&s| s == 0 || s > max_message) {
            return bad(format!(
                "message size {size} must be 1 to {max_message} bytes for a {} byte ring",
                self.ring
            ));
        }
        if self.sizes.is_empty() {
            return bad("no message sizes".into());
        }
        if self.payload == 0 || self.payload > 1024 {
            return bad(format!(
                "the ping-pong payload must be 1 to 1024 bytes (got {})",
                self.payload
            ));
        }
        if self.batch == 0 || self.batch > 4096 {
            return bad(format!(
                "the batch must be 1 to 4096 messages (got {})",
                self.batch
            ));
        }
        if self.rounds == 0 || self.rounds > 100 {
            return bad(format!("rounds must be 1 to 100 (got {})", self.rounds));
        }
        if self.busy_iterations == 0 || self.blocking_iterations == 0 {
            return bad("iteration counts must be positive".into());
        }
        Ok(())
    }
}

/// Why a benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// The peer process was given arguments it cannot use.
    #[error("bad bench-peer arguments: {0}")]
    BadJob(String),
    /// The other side stopped answering.
    #[error("timed out waiting for {0}")]
    Stalled(&'static str),
    /// The peer process failed or broke the protocol.
    #[error("bench peer: {0}")]
    Peer(String),
    /// A system call failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The system's reason.
        error: std::io::Error,
    },
    /// The embedded server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A host peer failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A ring reported an error.
    #[error("ring: {0}")]
    Ring(#[from] ivlink_core::ring::RingError),
    /// Ringing a doorbell failed.
    #[error("doorbell: {0}")]
    Notify(#[from] ivlink_core::NotifyError),
}

impl BenchError {
    fn io(context: &'static str) -> impl FnOnce(rustix::io::Errno) -> BenchError {
        move |e| BenchError::Io {
            context,
            error: e.into(),
        }
    }
}

impl From<::ivlink::wait::WaitError<ivlink_core::ring::RingError>> for BenchError {
    fn from(e: ::ivlink::wait::WaitError<ivlink_core::ring::RingError>) -> Self {
        match e {
            ::ivlink::wait::WaitError::Protocol(e) => BenchError::Ring(e),
            ::ivlink::wait::WaitError::Device(e) => BenchError::Device(e),
        }
    }
}

/// What the leader needs to start peers.
struct Leader<'a> {
    command: &'a dyn Fn() -> Command,
    host: Option<&'a HostPeer>,
    /// A host peer of the NTB switch's server, and that server's socket.
    ntb: Option<(&'a HostPeer, &'a Path)>,
}

impl Leader<'_> {
    fn command(&self) -> Command {
        (self.command)()
    }

    fn host(&self) -> Result<&HostPeer, BenchError> {
        self.host
            .ok_or_else(|| BenchError::Config("no ivshmem server for ivlink".into()))
    }

    fn ntb_host(&self) -> Result<&HostPeer, BenchError> {
        self.ntb
            .map(|(host, _)| host)
            .ok_or_else(|| BenchError::Config("no ivshmem server for the NTB switch".into()))
    }
}

/// A ping-pong's raw outcome.
struct LatencyRun {
    samples: Vec<u64>,
    doorbells: u64,
    messages: u64,
}

/// A stream's raw outcome.
struct StreamRun {
    messages: u64,
    bytes: u64,
    seconds: f64,
    doorbells: u64,
}

impl StreamRun {
    /// Checks that the peer got everything sent.
    fn checked(
        job: &Job,
        sent: u64,
        done: Done,
        seconds: f64,
        doorbells: u64,
    ) -> Result<StreamRun, BenchError> {
        let bytes = sent * job.size as u64;
        if done.bytes != bytes {
            return Err(BenchError::Peer(format!(
                "{} stream: sent {bytes} bytes, the peer received {}",
                job.mechanism.name(),
                done.bytes
            )));
        }
        Ok(StreamRun {
            messages: sent,
            bytes,
            seconds,
            doorbells,
        })
    }
}

/// The peer process's part: `args` are what the leader appended to the
/// command. Reads the control channel on stdin.
pub fn run_peer(args: &[String]) -> Result<(), BenchError> {
    let job = Job::decode(args)?;
    let control = Control::stdin(job.timeout);
    let fds = control.receive_fds(job.fd_count())?;
    if let Some(cpu) = job.cpu {
        placement::pin(cpu)?;
    }
    let done = match job.mechanism {
        Mechanism::Ivlink => ivlink::follow(&job, &control)?,
        Mechanism::Ntb => ntb::follow(&job, &control)?,
        _ => baselines::follow(&job, &control, fds)?,
    };
    control.done(done)
}

/// Writes the latency plot (SVG) to `path`.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), BenchError> {
    std::fs::write(path, report.latency_svg()).map_err(|e| BenchError::Io {
        context: "writing the SVG plot",
        error: e,
    })
}

/// A private directory for a run's sockets and files, removed when dropped.
fn private_dir() -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("ivlink-bench.")
        .tempdir()
        .map_err(|e| BenchError::Io {
            context: "creating a temporary directory",
            error: e,
        })
}
