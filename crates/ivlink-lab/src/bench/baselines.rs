//! The baselines measured in the same run: the plain memcpy ring (busy-poll),
//! a bare eventfd each way (blocking reads: the floor for any doorbell wake), a
//! UNIX stream socketpair and pipes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::drive::{self, Duplex, Link, PingPongPlan, Sink, StreamPlan};
use super::ends::{
    DEAD, EventfdLink, ReadEnd, WriteEnd, eventfd, mem_rx, mem_tx, pipe, socket_link, socketpair,
    write_value,
};
use super::ivlink::{LATENCY_RING, cadence};
use super::job::{Control, Done, Job, Mechanism, Pattern, PeerProcess};
use super::memring::MemRing;
use super::{BenchError, LatencyRun, Leader, StreamRun};

/// Leads a ping-pong over a baseline mechanism.
pub fn lead_ping_pong(
    leader: &Leader<'_>,
    job: &Job,
    plan: &PingPongPlan,
) -> Result<LatencyRun, BenchError> {
    match job.mechanism {
        Mechanism::MemRing => {
            let (ring, fd) = MemRing::create(LATENCY_RING, 2)?;
            let peer = spawn(leader, job, &[fd.as_fd()])?;
            let link = Duplex(mem_tx(&ring, 0, job), mem_rx(&ring, 1, job, LATENCY_RING));
            ping_pong(peer, link, job, plan)
        }
        Mechanism::Eventfd => {
            let to_peer = eventfd()?;
            let to_leader = eventfd()?;
            let peer = spawn(leader, job, &[to_peer.as_fd(), to_leader.as_fd()])?;
            eventfd_ping_pong(
                peer,
                EventfdLink {
                    tx: to_peer,
                    rx: to_leader,
                },
                job,
                plan,
            )
        }
        Mechanism::Unix => {
            let (ours, theirs) = socketpair()?;
            let peer = spawn(leader, job, &[theirs.as_fd()])?;
            drop(theirs);
            ping_pong(peer, socket_link(ours, true)?, job, plan)
        }
        Mechanism::Pipe => {
            let (peer_reads, we_write) = pipe()?;
            let (we_read, peer_writes) = pipe()?;
            let peer = spawn(leader, job, &[peer_reads.as_fd(), peer_writes.as_fd()])?;
            drop((peer_reads, peer_writes));
            let link = Duplex(WriteEnd::new(we_write, false), ReadEnd::new(we_read, true));
            ping_pong(peer, link, job, plan)
        }
        Mechanism::Ivlink | Mechanism::Ntb => Err(BenchError::BadJob(format!(
            "{} is not a baseline",
            job.mechanism.name()
        ))),
    }
}

/// Leads a stream over a baseline mechanism.
pub fn lead_stream(
    leader: &Leader<'_>,
    job: &Job,
    plan: &StreamPlan,
) -> Result<StreamRun, BenchError> {
    match job.mechanism {
        Mechanism::MemRing => {
            let (ring, fd) = MemRing::create(job.ring, 1)?;
            let peer = spawn(leader, job, &[fd.as_fd()])?;
            let plan = StreamPlan {
                batch: cadence(job.ring, job.size, plan.batch),
                ..*plan
            };
            stream(peer, mem_tx(&ring, 0, job), job, &plan)
        }
        Mechanism::Unix => {
            let (ours, theirs) = socketpair()?;
            let peer = spawn(leader, job, &[theirs.as_fd()])?;
            drop(theirs);
            stream(peer, WriteEnd::new(ours, true), job, plan)
        }
        Mechanism::Pipe => {
            let (peer_reads, we_write) = pipe()?;
            let peer = spawn(leader, job, &[peer_reads.as_fd()])?;
            drop(peer_reads);
            stream(peer, WriteEnd::new(we_write, false), job, plan)
        }
        Mechanism::Eventfd | Mechanism::Ivlink | Mechanism::Ntb => Err(BenchError::BadJob(
            format!("no {} stream baseline", job.mechanism.name()),
        )),
    }
}

/// The peer's part of a baseline: echo or drain over the fds it was handed.
pub fn follow(job: &Job, control: &Control, fds: Vec<OwnedFd>) -> Result<Done, BenchError> {
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or_else(|| BenchError::Peer("missing descriptor".into()))
    };
    let echoed = |messages: u64| Done {
        messages,
        bytes: messages * job.size as u64,
        doorbells: 0,
    };
    match (job.mechanism, job.pattern) {
        (Mechanism::MemRing, Pattern::PingPong) => {
            let ring = MemRing::open(&next()?, LATENCY_RING, 2)?;
            let mut link = Duplex(mem_tx(&ring, 1, job), mem_rx(&ring, 0, job, LATENCY_RING));
            control.send(0)?;
            drive::echo(&mut link, job.size).map(echoed)
        }
        (Mechanism::MemRing, Pattern::Stream) => {
            let ring = MemRing::open(&next()?, job.ring, 1)?;
            let mut source = mem_rx(&ring, 0, job, job.ring);
            control.send(0)?;
            drive::drain(&mut source, job.size)
        }
        (Mechanism::Eventfd, Pattern::PingPong) => {
            let rx = next()?;
            let mut link = EventfdLink { tx: next()?, rx };
            control.send(0)?;
            drive::echo(&mut link, job.size).map(echoed)
        }
        (Mechanism::Unix, Pattern::PingPong) => {
            let mut link = socket_link(next()?, true)?;
            control.send(0)?;
            drive::echo(&mut link, job.size).map(echoed)
        }
        (Mechanism::Pipe, Pattern::PingPong) => {
            let reads = next()?;
            let mut link = Duplex(WriteEnd::new(next()?, false), ReadEnd::new(reads, true));
            control.send(0)?;
            drive::echo(&mut link, job.size).map(echoed)
        }
        (Mechanism::Unix | Mechanism::Pipe, Pattern::Stream) => {
            let mut source = ReadEnd::new(next()?, false);
            control.send(0)?;
            drive::drain(&mut source, job.size)
        }
        (mechanism, _) => Err(BenchError::BadJob(format!(
            "no {} baseline for this pattern",
            mechanism.name()
        ))),
    }
}

fn spawn(
    leader: &Leader<'_>,
    job: &Job,
    fds: &[BorrowedFd<'_>],
) -> Result<PeerProcess, BenchError> {
    let mut peer = PeerProcess::spawn(leader.command(), job, fds)?;
    peer.ready()?;
    Ok(peer)
}

fn ping_pong<L: Link>(
    mut peer: PeerProcess,
    mut link: L,
    job: &Job,
    plan: &PingPongPlan,
) -> Result<LatencyRun, BenchError> {
    let samples = drive::ping_pong(&mut link, &vec![0x5a; job.size], plan)?;
    let done = peer.report()?;
    peer.exit()?;
    Ok(LatencyRun {
        samples,
        doorbells: 0,
        messages: 2 * done.messages,
    })
}

/// A blocking eventfd read cannot time out: a watchdog thread rings our own
/// eventfd with a value no peer sends if the peer process dies mid-run.
fn eventfd_ping_pong(
    mut peer: PeerProcess,
    mut link: EventfdLink,
    job: &Job,
    plan: &PingPongPlan,
) -> Result<LatencyRun, BenchError> {
    let finished = AtomicBool::new(false);
    let own = link.rx.try_clone().map_err(|e| BenchError::Io {
        context: "duplicating an eventfd",
        error: e,
    })?;
    let samples = std::thread::scope(|scope| {
        let control = peer.control();
        let finished = &finished;
        scope.spawn(move || {
            // Readable only once the peer reports (after our last message) or dies.
            let _ = ivlink::doorbell::poll_readable(control, None);
            if !finished.load(Ordering::SeqCst) {
                let _ = write_value(own.as_fd(), DEAD);
            }
        });
        let result = drive::ping_pong(&mut link, &vec![0; job.size], plan);
        finished.store(true, Ordering::SeqCst);
        if result.is_err() {
            // Let a live peer end, so that the watchdog wakes.
            let _ = link.finish();
        }
        result
    })?;
    let done = peer.report()?;
    peer.exit()?;
    Ok(LatencyRun {
        samples,
        doorbells: 0,
        messages: 2 * done.messages,
    })
}

fn stream<S: Sink>(
    mut peer: PeerProcess,
    mut sink: S,
    job: &Job,
    plan: &StreamPlan,
) -> Result<StreamRun, BenchError> {
    let started = std::time::Instant::now();
    let sent = drive::stream(&mut sink, &vec![0xa5; job.size], plan)?;
    drop(sink);
    let done = peer.report()?;
    let seconds = started.elapsed().as_secs_f64();
    peer.exit()?;
    StreamRun::checked(job, sent, done, seconds, 0)
}
