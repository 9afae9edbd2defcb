//! `N` independent sender/receiver pairs at once, each on its own ring, two
//! threads per pair: ivlink rings (each end a host peer of one embedded
//! server, doorbells only when asked) and the plain memcpy ring, in the same run.
//!
//! With more threads than CPUs every spinning end yields the CPU, so an
//! oversubscribed run measures the design rather than a spin-wait livelock.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use ivlink_core::ring::RingLayout;
use ivlink_core::{PeerId, Region};

use super::super::drive::{self, Sink, Source, StreamPlan};
use super::super::ends::{mem_rx, mem_tx};
use super::super::ivlink::{cadence, rx_end, tx_end};
use super::super::job::{Job, Mechanism, Pattern};
use super::super::memring::MemRing;
use super::super::run::STREAM_SPIN;
use super::super::{BenchError, placement};
use super::ScalingConfig;
use ivlink::Device;
use ivlink::server::{ServerConfig, ServerThread};
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};

/// What one pair moved in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairRun {
    /// Messages the receiver got (all that were sent).
    pub messages: u64,
    /// Payload bytes the receiver got.
    pub bytes: u64,
    /// From the sender's first message to the receiver's end, seconds.
    pub seconds: f64,
    /// Doorbells both ends rang (a sleeping other side asked for them).
    pub doorbells: u64,
}

/// All pairs of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct PairsRun {
    /// Each pair's figures.
    pub pairs: Vec<PairRun>,
    /// From the first sender's start to the last receiver's end, seconds.
    pub seconds: f64,
}

impl PairsRun {
    /// Messages per second of all pairs together.
    pub fn messages_per_s(&self) -> f64 {
        let messages: u64 = self.pairs.iter().map(|p| p.messages).sum();
        messages as f64 / self.seconds.max(1e-9)
    }
}

/// When the threads of pair `i` started and ended.
struct Timed {
    started: Instant,
    ended: Instant,
}

/// The pairs' ivlink side: a server, a region with a ring per pair, and two
/// host peers per pair.
pub struct IvlinkPairs {
    server: Option<ServerThread>,
    /// `(sender, receiver)` per pair.
    peers: Vec<(HostPeer, HostPeer)>,
    layouts: Vec<RingLayout>,
}

impl IvlinkPairs {
    /// Starts the server (socket in `dir`) and connects two peers per pair, for
    /// up to `pairs` pairs on rings of `ring` bytes.
    pub fn start(
        dir: &std::path::Path,
        pairs: usize,
        ring: usize,
        timeout: Duration,
    ) -> Result<IvlinkPairs, BenchError> {
        // Every host peer holds every peer's eventfd, and the server one per peer.
        let peers = 2 * pairs as u64;
        super::connect::ensure_open_files(
            peers * peers + 3 * peers + 64,
            &format!("{pairs} ivlink pairs ({peers} host peers)"),
        )?;
        let section = RingLayout::section_size(ring).next_multiple_of(4096);
        let size = (section * pairs).next_power_of_two() as u64;
        let server = ServerThread::start(ServerConfig {
            socket_path: dir.join("pairs.sock"),
            shm: ShmBacking::Memfd,
            size,
            vectors: 1,
            ..ServerConfig::default()
        })?;
        let connect = || {
            HostPeer::connect(&HostConfig {
                socket_path: server.socket_path().to_owned(),
                vectors: Some(1),
                setup_timeout: timeout,
            })
        };
        let mut peers = Vec::with_capacity(pairs);
        for _ in 0..pairs {
            peers.push((connect()?, connect()?));
        }
        let region_len = peers[0].0.region().len();
        let layouts = (0..pairs)
            .map(|i| RingLayout::new(region_len, i * section, RingLayout::section_size(ring)))
            .collect::<Result<_, _>>()?;
        Ok(IvlinkPairs {
            server: Some(server),
            peers,
            layouts,
        })
    }

    /// Disconnects the peers and stops the server.
    pub fn stop(mut self) -> Result<(), BenchError> {
        self.peers.clear();
        if let Some(server) = self.server.take() {
            server.stop()?;
        }
        Ok(())
    }
}

/// The job both ends of every pair follow.
fn stream_job(config: &ScalingConfig, mechanism: Mechanism, size: usize, yield_spin: bool) -> Job {
    Job {
        mechanism,
        pattern: Pattern::Stream,
        size,
        batch: config.batch,
        ring: config.ring,
        spin: (mechanism == Mechanism::Ivlink).then_some(STREAM_SPIN),
        socket: None,
        leader: 0,
        cpu: None,
        yield_spin,
        grants: false,
        eager: false,
        timeout: config.timeout,
    }
}

/// The CPU for thread `thread` (sender of pair `i` is `2i`, its receiver
/// `2i + 1`): round robin over the allowed CPUs, so each pair crosses CPUs.
fn cpu_for(cpus: &[usize], pin: bool, thread: usize) -> Option<usize> {
    (pin && cpus.len() >= 2).then(|| cpus[thread % cpus.len()])
}

/// Runs `pairs` ivlink pairs of `size`-byte messages at once.
pub fn run_ivlink(
    setup: &IvlinkPairs,
    config: &ScalingConfig,
    pairs: usize,
    size: usize,
) -> Result<PairsRun, BenchError> {
    let cpus = placement::allowed_cpus()?;
    let job = stream_job(config, Mechanism::Ivlink, size, 2 * pairs > cpus.len());
    for layout in &setup.layouts[..pairs] {
        layout.init(setup.peers[0].0.region())?;
    }
    let barrier = Barrier::new(2 * pairs);
    let plan = plan(config, size, setup.layouts[0].capacity());
    let message = vec![0xa5; size];
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, ((tx, rx), layout)) in setup
            .peers
            .iter()
            .zip(&setup.layouts)
            .take(pairs)
            .enumerate()
        {
            let (job, barrier, message) = (&job, &barrier, &message);
            let (tx_id, rx_id): (PeerId, PeerId) = (tx.id(), rx.id());
            let (tx_cpu, rx_cpu) = (
                cpu_for(&cpus, config.pin, 2 * i),
                cpu_for(&cpus, config.pin, 2 * i + 1),
            );
            let layout = *layout;
            let sender = scope.spawn(move || -> Result<Sent, BenchError> {
                pin(tx_cpu)?;
                let mut sink = tx_end(tx, rx_id, layout, job)?;
                barrier.wait();
                let started = Instant::now();
                let sent = drive::stream(&mut sink, message, &plan)?;
                Ok((sent, sink.doorbells(), started))
            });
            let receiver = scope.spawn(move || -> Result<Got, BenchError> {
                pin(rx_cpu)?;
                let mut source = rx_end(rx, tx_id, layout, job)?;
                barrier.wait();
                let done = drive::drain(&mut source, job.size)?;
                Ok((
                    done.messages,
                    done.bytes,
                    source.doorbells(),
                    Instant::now(),
                ))
            });
            handles.push((sender, receiver));
        }
        collect(handles, size)
    })
}

/// Runs `pairs` plain memcpy ring pairs of `size`-byte messages at once.
pub fn run_memring(
    config: &ScalingConfig,
    pairs: usize,
    size: usize,
) -> Result<PairsRun, BenchError> {
    let cpus = placement::allowed_cpus()?;
    let job = stream_job(config, Mechanism::MemRing, size, 2 * pairs > cpus.len());
    let (ring, _fd) = MemRing::create(config.ring, pairs)?;
    let barrier = Barrier::new(2 * pairs);
    let plan = plan(config, size, config.ring);
    let message = vec![0xa5; size];
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for i in 0..pairs {
            let (job, barrier, message, ring) = (&job, &barrier, &message, &ring);
            let (tx_cpu, rx_cpu) = (
                cpu_for(&cpus, config.pin, 2 * i),
                cpu_for(&cpus, config.pin, 2 * i + 1),
            );
            let sender = scope.spawn(move || -> Result<Sent, BenchError> {
                pin(tx_cpu)?;
                let mut sink = mem_tx(ring, i, job);
                barrier.wait();
                let started = Instant::now();
                let sent = drive::stream(&mut sink, message, &plan)?;
                Ok((sent, 0, started))
            });
            let receiver = scope.spawn(move || -> Result<Got, BenchError> {
                pin(rx_cpu)?;
                let mut source = mem_rx(ring, i, job, config.ring);
                barrier.wait();
                let done = drive::drain(&mut source, job.size)?;
                Ok((done.messages, done.bytes, 0, Instant::now()))
            });
            handles.push((sender, receiver));
        }
        collect(handles, size)
    })
}

fn pin(cpu: Option<usize>) -> Result<(), BenchError> {
    cpu.map(placement::pin).transpose().map(drop)
}

fn plan(config: &ScalingConfig, size: usize, capacity: usize) -> StreamPlan {
    let batch = cadence(capacity, size, config.batch);
    StreamPlan {
        messages: (config.stream_bytes / size as u64).max(batch as u64),
        time: config.time,
        batch,
    }
}

/// A sender's outcome: messages sent, doorbells rung, when it started.
type Sent = (u64, u64, Instant);
/// A receiver's outcome: messages and bytes received, doorbells rung, when it
/// ended.
type Got = (u64, u64, u64, Instant);
type Sender<'s> = std::thread::ScopedJoinHandle<'s, Result<Sent, BenchError>>;
type Receiver<'s> = std::thread::ScopedJoinHandle<'s, Result<Got, BenchError>>;

/// Joins every thread, checks that each receiver got what its sender sent, and
/// times the pairs.
fn collect(handles: Vec<(Sender<'_>, Receiver<'_>)>, size: usize) -> Result<PairsRun, BenchError> {
    let join = |what: &str| BenchError::Peer(format!("a {what} thread panicked"));
    let mut outcomes = Vec::new();
    for (sender, receiver) in handles {
        // Join both before looking at either: a failed side ends the other by
        // its timeout, never leaves it running.
        let sent = sender.join().map_err(|_| join("sender"))?;
        let got = receiver.join().map_err(|_| join("receiver"))?;
        outcomes.push((sent, got));
    }
    let mut pairs = Vec::new();
    let mut times = Vec::new();
    for (i, (sent, got)) in outcomes.into_iter().enumerate() {
        let (sent, tx_doorbells, started) = sent?;
        let (messages, bytes, rx_doorbells, ended) = got?;
        if messages != sent || bytes != sent * size as u64 {
            return Err(BenchError::Peer(format!(
                "pair {i}: sent {sent} messages of {size} bytes, the receiver got {bytes} bytes"
            )));
        }
        let timed = Timed { started, ended };
        pairs.push(PairRun {
            messages: sent,
            bytes,
            seconds: timed.ended.duration_since(timed.started).as_secs_f64(),
            doorbells: tx_doorbells + rx_doorbells,
        });
        times.push(timed);
    }
    let first = times.iter().map(|t| t.started).min();
    let last = times.iter().map(|t| t.ended).max();
    let seconds = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(PairsRun { pairs, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_crosses_cpus_round_robin() {
        let cpus = [0, 1];
        let got: Vec<_> = (0..4).map(|t| cpu_for(&cpus, true, t)).collect();
        assert_eq!(got, [Some(0), Some(1), Some(0), Some(1)]);
        assert_eq!(cpu_for(&[3], true, 0), None, "one CPU: nothing to choose");
        assert_eq!(cpu_for(&cpus, false, 1), None);
    }
}
