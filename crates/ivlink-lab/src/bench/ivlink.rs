//! ivlink's side of the bench: message rings in a region from an embedded
//! ivshmem server, two host peers in two processes, doorbells only when the
//! other side asked for one.
//!
//! The rings sit at fixed offsets (no directory): ping (leader to peer) at 0,
//! pong (peer to leader) at 32 KiB, each with a 16 KiB data area; the streaming
//! ring at 64 KiB.

use std::time::Duration;

use ivlink_core::ring::{Consumer, Producer, RingLayout, record_size};
use ivlink_core::{Notify, PeerId, RawRegion, Region};

use super::drive::{self, Duplex, Link, PingPongPlan, Sink, Source, StreamPlan};
use super::job::{Control, Done, Job, Pattern, PeerProcess};
use super::spin::Spinner;
use super::{BenchError, LatencyRun, Leader, StreamRun};
use ivlink::Device;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::wait::{DataIn, SpaceIn, SpinThenSleep};

const PING_OFFSET: usize = 0;
const PONG_OFFSET: usize = 32 << 10;
/// Data area of each latency ring.
pub const LATENCY_RING: usize = 16 << 10;
const STREAM_OFFSET: usize = 64 << 10;
/// The only vector used.
const VECTOR: u16 = 0;

/// The byte every streamed payload is made of (both modes).
pub const STREAM_BYTE: u8 = 0xa5;

/// The bytes a zero-copy consumer reads of a `len`-byte payload: the first
/// and the last 8 (the whole payload below 8 bytes), as offsets and lengths.
pub fn checked_ends(len: usize) -> [(usize, usize); 2] {
    let n = len.min(8);
    [(0, n), (len - n, n)]
}

/// Region size for a streaming ring of `ring` bytes (a power of two, as the
/// server rounds up anyway).
pub fn region_size(ring: usize) -> u64 {
    (STREAM_OFFSET + RingLayout::section_size(ring)).next_power_of_two() as u64
}

/// Messages per publication or release: the batch, but never more than a
/// quarter of the ring, so the other side always has room to go on.
pub fn cadence(capacity: usize, size: usize, batch: usize) -> usize {
    (capacity / 4 / record_size(size)).clamp(1, batch.max(1))
}

struct Layouts {
    ping: RingLayout,
    pong: RingLayout,
    stream: RingLayout,
}

impl Layouts {
    fn new(region_len: usize, ring: usize) -> Result<Layouts, BenchError> {
        let latency = RingLayout::section_size(LATENCY_RING);
        Ok(Layouts {
            ping: RingLayout::new(region_len, PING_OFFSET, latency)?,
            pong: RingLayout::new(region_len, PONG_OFFSET, latency)?,
            stream: RingLayout::new(region_len, STREAM_OFFSET, RingLayout::section_size(ring))?,
        })
    }
}

/// Batches per fenced publication or release on a stream of batches. The
/// others are quiet: a release store and a relaxed look at the other side's
/// "please notify" flag, which shows a side that went to sleep a while ago
/// (it is then told at once). A fence waits until the index's cache line
/// comes back from the other side, which polls it: at 64-byte messages that
/// wait was about a third of the time of a batch. The fence decides the race
/// of a side falling asleep just then: every 16th batch, before either side
/// waits, and at the end, so a sleeper is never missed. Ping-pongs and the
/// per-message strategies check every time.
const CHECKED_EVERY: u32 = 16;

fn checked_every(job: &Job) -> u32 {
    if job.pattern == Pattern::Stream && job.batch > 1 && !job.eager {
        CHECKED_EVERY
    } else {
        1
    }
}

/// How one side waits: busy-polling, or spin-then-sleep on its doorbell.
#[derive(Debug, Clone)]
struct Waiting {
    policy: Option<SpinThenSleep>,
    spinner: Spinner,
    timeout: Duration,
}

impl Waiting {
    fn new(job: &Job) -> Waiting {
        Waiting {
            policy: job.spin.map(|spin| SpinThenSleep { spin }),
            spinner: Spinner::new(job.yield_spin, job.timeout),
            timeout: job.timeout,
        }
    }
}

/// The sending end of a ring.
pub(super) struct TxEnd<'a> {
    host: &'a HostPeer,
    other: PeerId,
    tx: Producer<'a, RawRegion>,
    waiting: Waiting,
    doorbells: u64,
    /// Fill each message in place through a grant instead of copying it in.
    grants: bool,
    /// Publish each message at once with a release store (the flush per
    /// batch still checks the notify flag).
    eager: bool,
    /// Flushes per fenced publication (see [`checked_every`]).
    checked_every: u32,
    flushes: u32,
}

impl TxEnd<'_> {
    /// Queues a message, in place or as a copy; `false` if the ring is full.
    #[inline]
    fn try_push(&mut self, message: &[u8]) -> Result<bool, BenchError> {
        if !self.grants {
            return Ok(self.tx.try_send(message)?);
        }
        let Some(mut grant) = self.tx.reserve(message.len())? else {
            return Ok(false);
        };
        // What a zero-copy sender does: produce the bytes where they will be
        // read, with no private buffer to copy from.
        grant.fill(0, message.len(), STREAM_BYTE)?;
        grant.commit()?;
        Ok(true)
    }
}

impl Sink for TxEnd<'_> {
    #[inline]
    fn push(&mut self, message: &[u8]) -> Result<(), BenchError> {
        while !self.try_push(message)? {
            // It may sleep next: the consumer must not sleep on what it
            // cannot see.
            self.flush_checked()?;
            match &self.waiting.policy {
                None => self.waiting.spinner.pause("space in the ring")?,
                Some(policy) => {
                    let mut space = SpaceIn(&mut self.tx, message.len());
                    if !policy.wait(&mut space, self.host, VECTOR, Some(self.waiting.timeout))? {
                        return Err(BenchError::Stalled("space in the ring"));
                    }
                }
            }
        }
        if self.eager {
            self.tx.publish_quiet()?;
        }
        self.waiting.spinner.progress();
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> Result<(), BenchError> {
        self.flushes = self.flushes.wrapping_add(1);
        if self.flushes % self.checked_every != 0 {
            self.tx.publish_quiet()?;
            if !self.tx.consumer_sleeps()? {
                return Ok(());
            }
        }
        self.flush_checked()
    }

    fn close(&mut self) -> Result<(), BenchError> {
        // An empty message marks the end.
        self.push(&[])?;
        self.flush_checked()
    }

    fn doorbells(&self) -> u64 {
        self.doorbells
    }
}

impl TxEnd<'_> {
    /// Publishes with the flag check, ringing a sleeping consumer.
    fn flush_checked(&mut self) -> Result<(), BenchError> {
        if self.tx.publish()? {
            self.host.notify(self.other, VECTOR)?;
            self.doorbells += 1;
        }
        Ok(())
    }
}

/// The receiving end of a ring.
pub(super) struct RxEnd<'a> {
    host: &'a HostPeer,
    other: PeerId,
    rx: Consumer<'a, RawRegion>,
    waiting: Waiting,
    release_every: usize,
    unreleased: usize,
    doorbells: u64,
    /// Read each message in place through a grant instead of copying it out.
    grants: bool,
    /// Releases per fenced release (see [`checked_every`]).
    checked_every: u32,
    releases: u32,
}

impl RxEnd<'_> {
    /// Takes the next message, in place (checking its first and last 8 bytes)
    /// or as a copy into `buf`; its length, or `None` if the ring is empty.
    #[inline]
    fn try_take(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        if !self.grants {
            return Ok(self.rx.try_recv(buf)?);
        }
        let Some(grant) = self.rx.peek()? else {
            return Ok(None);
        };
        let len = grant.len();
        let mut word = [0u8; 8];
        for (offset, n) in checked_ends(len) {
            grant.read(offset, &mut word[..n])?;
            if word[..n].iter().any(|&b| b != STREAM_BYTE) {
                return Err(BenchError::Peer(
                    "a zero-copy payload was not as written".into(),
                ));
            }
        }
        grant.release();
        Ok(Some(len))
    }

    /// Returns the space of the messages taken, quietly but every
    /// [`checked_every`]th time.
    fn release(&mut self) -> Result<(), BenchError> {
        self.unreleased = 0;
        self.releases = self.releases.wrapping_add(1);
        if self.releases % self.checked_every != 0 {
            self.rx.release_quiet()?;
            if !self.rx.producer_sleeps()? {
                return Ok(());
            }
        }
        self.release_checked()
    }

    /// Returns the space with the flag check, ringing a sleeping producer.
    fn release_checked(&mut self) -> Result<(), BenchError> {
        self.unreleased = 0;
        if self.rx.release()? {
            self.host.notify(self.other, VECTOR)?;
            self.doorbells += 1;
        }
        Ok(())
    }
}

impl Source for RxEnd<'_> {
    #[inline]
    fn pull(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        loop {
            if let Some(len) = self.try_take(buf)? {
                self.waiting.spinner.progress();
                self.unreleased += 1;
                if len == 0 {
                    self.release_checked()?;
                } else if self.unreleased >= self.release_every {
                    self.release()?;
                }
                return Ok((len > 0).then_some(len));
            }
            if self.waiting.policy.is_some() {
                // It may sleep next: a producer asleep on a full ring must
                // have seen the quiet releases' space.
                self.release_checked()?;
            }
            match &self.waiting.policy {
                None => self.waiting.spinner.pause("a message")?,
                Some(policy) => {
                    let mut data = DataIn(&mut self.rx);
                    if !policy.wait(&mut data, self.host, VECTOR, Some(self.waiting.timeout))? {
                        return Err(BenchError::Stalled("a message"));
                    }
                }
            }
        }
    }

    fn doorbells(&self) -> u64 {
        self.doorbells
    }
}

pub(super) fn tx_end<'a>(
    host: &'a HostPeer,
    other: PeerId,
    layout: RingLayout,
    job: &Job,
) -> Result<TxEnd<'a>, BenchError> {
    Ok(TxEnd {
        host,
        other,
        tx: Producer::attach(host.region(), layout)?,
        waiting: Waiting::new(job),
        doorbells: 0,
        grants: job.grants,
        eager: job.eager,
        checked_every: checked_every(job),
        flushes: 0,
    })
}

pub(super) fn rx_end<'a>(
    host: &'a HostPeer,
    other: PeerId,
    layout: RingLayout,
    job: &Job,
) -> Result<RxEnd<'a>, BenchError> {
    Ok(RxEnd {
        host,
        other,
        rx: Consumer::attach(host.region(), layout)?,
        waiting: Waiting::new(job),
        release_every: cadence(layout.capacity(), job.size, job.batch),
        unreleased: 0,
        doorbells: 0,
        grants: job.grants,
        checked_every: checked_every(job),
        releases: 0,
    })
}

/// Starts the peer process on fresh rings and learns its id.
fn start_peer(
    leader: &Leader<'_>,
    host: &HostPeer,
    job: &Job,
) -> Result<(PeerProcess, PeerId, Layouts), BenchError> {
    let region = host.region();
    let layouts = Layouts::new(region.len(), job.ring)?;
    for layout in [layouts.ping, layouts.pong, layouts.stream] {
        layout.init(region)?;
    }
    let mut peer = PeerProcess::spawn(leader.command(), job, &[])?;
    let id = peer.ready()?;
    let id = PeerId::try_from(id).map_err(|_| BenchError::Peer(format!("bad peer id {id}")))?;
    Ok((peer, id, layouts))
}

/// Leads a ping-pong over the ping and pong rings.
pub fn lead_ping_pong(
    leader: &Leader<'_>,
    job: &Job,
    plan: &PingPongPlan,
) -> Result<LatencyRun, BenchError> {
    let host = leader.host()?;
    let (mut peer, id, layouts) = start_peer(leader, host, job)?;
    let mut link = Duplex(
        tx_end(host, id, layouts.ping, job)?,
        rx_end(host, id, layouts.pong, job)?,
    );
    let samples = drive::ping_pong(&mut link, &vec![0x5a; job.size], plan)?;
    let done = peer.report()?;
    peer.exit()?;
    Ok(LatencyRun {
        samples,
        doorbells: link.doorbells() + done.doorbells,
        messages: 2 * done.messages,
    })
}

/// Leads a stream through the streaming ring.
pub fn lead_stream(
    leader: &Leader<'_>,
    job: &Job,
    plan: &StreamPlan,
) -> Result<StreamRun, BenchError> {
    let host = leader.host()?;
    let (mut peer, id, layouts) = start_peer(leader, host, job)?;
    let mut sink = tx_end(host, id, layouts.stream, job)?;
    let plan = StreamPlan {
        batch: cadence(layouts.stream.capacity(), job.size, plan.batch),
        ..*plan
    };
    let started = std::time::Instant::now();
    let sent = drive::stream(&mut sink, &vec![STREAM_BYTE; job.size], &plan)?;
    let done = peer.report()?;
    let seconds = started.elapsed().as_secs_f64();
    peer.exit()?;
    StreamRun::checked(job, sent, done, seconds, sink.doorbells() + done.doorbells)
}

/// The peer's part: connect as a host peer, then echo or drain.
pub fn follow(job: &Job, control: &Control) -> Result<Done, BenchError> {
    let socket = job
        .socket
        .clone()
        .ok_or_else(|| BenchError::BadJob("ivlink needs socket=".into()))?;
    let host = HostPeer::connect(&HostConfig {
        socket_path: socket,
        vectors: Some(1),
        setup_timeout: job.timeout,
    })?;
    let layouts = Layouts::new(host.region().len(), job.ring)?;
    let leader = job.leader;
    match job.pattern {
        Pattern::PingPong => {
            let mut link = Duplex(
                tx_end(&host, leader, layouts.pong, job)?,
                rx_end(&host, leader, layouts.ping, job)?,
            );
            control.send(i64::from(host.id()))?;
            let messages = drive::echo(&mut link, job.size)?;
            Ok(Done {
                messages,
                bytes: messages * job.size as u64,
                doorbells: link.doorbells(),
            })
        }
        Pattern::Stream => {
            let mut source = rx_end(&host, leader, layouts.stream, job)?;
            control.send(i64::from(host.id()))?;
            drive::drain(&mut source, job.size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_holds_every_ring() {
        for ring in [4096, 1 << 18, 1 << 20] {
            let size = region_size(ring) as usize;
            assert!(size.is_power_of_two());
            let layouts = Layouts::new(size, ring).unwrap();
            assert_eq!(layouts.stream.capacity(), ring);
            assert_eq!(layouts.ping.capacity(), LATENCY_RING);
        }
    }

    #[test]
    fn cadence_keeps_a_quarter_of_the_ring() {
        assert_eq!(cadence(1 << 18, 64, 16), 16);
        assert_eq!(cadence(1 << 18, 64 << 10, 16), 1);
        assert_eq!(cadence(1 << 18, 16 << 10, 16), 3);
        assert_eq!(cadence(1 << 18, 64, 0), 1);
    }

    #[test]
    fn zero_copy_checks_both_ends_of_a_payload() {
        assert_eq!(checked_ends(64), [(0, 8), (56, 8)]);
        assert_eq!(checked_ends(8), [(0, 8), (0, 8)]);
        assert_eq!(checked_ends(3), [(0, 3), (0, 3)]);
        assert_eq!(checked_ends(0), [(0, 0), (0, 0)]);
    }
}
