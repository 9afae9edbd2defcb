//! One stress peer: sends to every other member as fast as the rings allow,
//! receives from all, and checks every message for loss, damage and order.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ivlink_core::PeerId;
use ivlink_core::channel::ChannelLayout;
use serde::{Deserialize, Serialize};

use super::message::{self, Header, Kind, Verdict};
use ivlink::channel::{Channel, ChannelError};
use ivlink::device::{Device, DeviceError, Event, WaitFor};
use ivlink::wait::SpinThenSleep;

/// What a stress peer does.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    /// Members expected (this one included).
    pub peers: usize,
    /// How long to send.
    pub duration: Duration,
    /// Smallest and largest message, in bytes (at least the 32-byte header).
    pub message_len: (usize, usize),
    /// How often to print a progress line (`None`: never).
    pub progress: Option<Duration>,
    /// How long to wait for the others to join and, at the end, to finish.
    pub timeout: Duration,
}

/// Counters for what one peer received from one sender.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FromPeer {
    /// Intact messages in order.
    pub received: u64,
    /// Messages the sender sent that never arrived.
    pub lost: u64,
    /// Messages that arrived damaged.
    pub corrupted: u64,
    /// Messages that arrived out of order or twice.
    pub reordered: u64,
    /// The sender left (its end marker never came).
    pub gone: bool,
}

/// What one peer did; printed as one JSON line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerReport {
    /// This peer's id.
    pub id: PeerId,
    /// Seconds spent sending.
    pub seconds: f64,
    /// Data messages sent.
    pub sent: u64,
    /// Bytes of data messages sent.
    pub sent_bytes: u64,
    /// Data messages sent, per receiver.
    #[serde(default)]
    pub sent_to: BTreeMap<PeerId, u64>,
    /// Data messages received intact.
    pub received: u64,
    /// Bytes of data messages received intact.
    pub received_bytes: u64,
    /// Lost, summed over senders.
    pub lost: u64,
    /// Corrupted, summed over senders.
    pub corrupted: u64,
    /// Reordered or duplicated, summed over senders.
    pub reordered: u64,
    /// Peers that left during the run.
    pub gone: Vec<PeerId>,
    /// Errors on single rings (e.g. corruption that cut a peer off).
    pub errors: Vec<String>,
    /// One-way latencies of a sample of messages, in nanoseconds (same-host clocks).
    pub latency_ns: Vec<u64>,
    /// Per sender.
    pub from: BTreeMap<PeerId, FromPeer>,
}

/// Progress so far; printed as a JSON line every `progress` interval.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// This peer's id.
    pub id: PeerId,
    /// Data messages sent so far.
    pub sent: u64,
    /// Bytes sent so far.
    pub sent_bytes: u64,
    /// Data messages sent so far, per receiver.
    #[serde(default)]
    pub sent_to: BTreeMap<PeerId, u64>,
    /// Intact messages received so far.
    pub received: u64,
    /// Intact messages received so far, per sender.
    #[serde(default)]
    pub received_from: BTreeMap<PeerId, u64>,
    /// Corrupted so far.
    pub corrupted: u64,
    /// Reordered so far.
    pub reordered: u64,
}

/// Keep at most this many latency samples per peer.
const MAX_SAMPLES: usize = 200_000;

struct Tally {
    me: PeerId,
    report: PeerReport,
    next_seq: BTreeMap<PeerId, u64>,
    ended: BTreeSet<PeerId>,
    end_counts: BTreeMap<PeerId, u64>,
    sample_every: u64,
}

impl Tally {
    fn take(&mut self, from: PeerId, data: &[u8]) {
        let stats = self.report.from.entry(from).or_default();
        match message::verify(data, from, self.me) {
            Verdict::Corrupted => stats.corrupted += 1,
            Verdict::Intact(Header {
                kind: Kind::End,
                seq,
                ..
            }) => {
                self.ended.insert(from);
                self.end_counts.insert(from, seq);
            }
            Verdict::Intact(Header {
                kind: Kind::Data,
                seq,
                sent_ns,
            }) => {
                let next = self.next_seq.entry(from).or_insert(0);
                if seq < *next {
                    stats.reordered += 1;
                    return;
                }
                // A gap is counted lost now; a late arrival would count as reordered.
                stats.lost += seq - *next;
                *next = seq + 1;
                stats.received += 1;
                self.report.received += 1;
                self.report.received_bytes += data.len() as u64;
                if self.report.received % self.sample_every == 0
                    && self.report.latency_ns.len() < MAX_SAMPLES
                {
                    self.report
                        .latency_ns
                        .push(now_ns().saturating_sub(sent_ns));
                }
            }
        }
    }

    fn finish(&mut self) {
        for (from, stats) in self.report.from.iter_mut() {
            match self.end_counts.get(from) {
                Some(&sent) => {
                    let next = self.next_seq.get(from).copied().unwrap_or(0);
                    stats.lost += sent.saturating_sub(next);
                }
                None => stats.gone = true,
            }
        }
        self.report.lost = self
            .report
            .from
            .values()
            .filter(|s| !s.gone)
            .map(|s| s.lost)
            .sum();
        self.report.corrupted = self.report.from.values().map(|s| s.corrupted).sum();
        self.report.reordered = self.report.from.values().map(|s| s.reordered).sum();
    }
}

/// The monotonic clock in nanoseconds (the same clock for every process on a host).
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// Runs one stress peer on the channel `layout` of `device`; progress lines go to
/// `out` (one as soon as the others have joined, so this peer's id is known). Once
/// `stop` is set it stops sending early and finishes as if the duration were over,
/// so its report still counts everything. Errors on single rings are recorded in
/// the report, not returned; the server going away is returned.
pub fn run_peer(
    device: &dyn Device,
    layout: ChannelLayout,
    plan: &PeerPlan,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<PeerReport, ChannelError> {
    let mut endpoint = Channel::join(device, layout, SpinThenSleep::default())?;
    let deadline = Instant::now() + plan.timeout;
    while endpoint.members()?.len() + 1 < plan.peers {
        if Instant::now() > deadline {
            return Err(ChannelError::NotMember(device.id()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut run = PeerRun::new(device, endpoint, plan)?;
    run.flood(out, stop)?;
    // Tell every sender how many messages to expect, then wait for theirs.
    let finish_by = Instant::now() + plan.timeout;
    run.send_end_markers(finish_by)?;
    run.await_end_markers(finish_by)?;
    run.tally.finish();
    Ok(run.tally.report)
}

/// One stress peer once everyone has joined.
struct PeerRun<'d, 'p> {
    device: &'d dyn Device,
    endpoint: Channel<'d>,
    plan: &'p PeerPlan,
    me: PeerId,
    /// The members still there.
    others: Vec<PeerId>,
    tally: Tally,
    /// The next sequence number to each member.
    seq: BTreeMap<PeerId, u64>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    min_len: usize,
    max_len: usize,
}

impl<'d, 'p> PeerRun<'d, 'p> {
    fn new(
        device: &'d dyn Device,
        mut endpoint: Channel<'d>,
        plan: &'p PeerPlan,
    ) -> Result<Self, ChannelError> {
        let me = device.id();
        let others: Vec<PeerId> = endpoint.members()?;
        let tally = Tally {
            me,
            report: PeerReport {
                id: me,
                ..PeerReport::default()
            },
            next_seq: BTreeMap::new(),
            ended: BTreeSet::new(),
            end_counts: BTreeMap::new(),
            sample_every: 16,
        };
        let seq = others.iter().map(|&p| (p, 0)).collect();
        let buf = vec![0u8; plan.message_len.1.max(message::HEADER_LEN)];
        let scratch = Vec::with_capacity(buf.len());
        Ok(PeerRun {
            device,
            endpoint,
            plan,
            me,
            others,
            tally,
            seq,
            buf,
            scratch,
            min_len: plan.message_len.0.max(message::HEADER_LEN),
            max_len: plan.message_len.1.max(message::HEADER_LEN),
        })
    }

    /// Sends to everyone and takes what arrives until the duration is over or
    /// `stop` is set, printing progress as planned.
    fn flood(&mut self, out: &mut dyn Write, stop: &AtomicBool) -> Result<(), ChannelError> {
        let plan = self.plan;
        let started = Instant::now();
        let mut next_progress = plan.progress.map(|p| started + p);
        if plan.progress.is_some() {
            print_progress(out, &self.tally.report);
        }
        let mut round = 0u64;
        while started.elapsed() < plan.duration && !stop.load(Ordering::Relaxed) {
            round += 1;
            self.send_round();
            if round % 8 == 0 {
                flush(&mut self.endpoint, &mut self.tally.report);
            }
            drain(&mut self.endpoint, &mut self.buf, &mut self.tally);
            if round % 256 == 0 {
                self.watch_peers()?;
                if let Some(at) = next_progress
                    && Instant::now() >= at
                {
                    print_progress(out, &self.tally.report);
                    next_progress = plan.progress.map(|p| at + p);
                }
            }
        }
        self.tally.report.seconds = started.elapsed().as_secs_f64();
        flush(&mut self.endpoint, &mut self.tally.report);
        Ok(())
    }

    /// One message to every member still there, of a length its sequence picks.
    fn send_round(&mut self) {
        let (me, min_len, max_len) = (self.me, self.min_len, self.max_len);
        for &to in &self.others {
            let n = self.seq[&to];
            let len = min_len + (n.wrapping_mul(2_654_435_761) as usize % (max_len - min_len + 1));
            message::encode(&mut self.scratch, Kind::Data, me, to, n, now_ns(), len);
            let report = &mut self.tally.report;
            match self.endpoint.try_send(to, &self.scratch) {
                Ok(true) => {
                    *self.seq.get_mut(&to).expect("listed") += 1;
                    report.sent += 1;
                    *report.sent_to.entry(to).or_default() += 1;
                    report.sent_bytes += len as u64;
                }
                Ok(false) => {}
                // Evicted by another member before the server told us: it left.
                Err(ChannelError::NotMember(peer)) => {
                    if !report.gone.contains(&peer) {
                        report.gone.push(peer);
                    }
                }
                Err(e) => record(report, &e),
            }
        }
        let gone = &self.tally.report.gone;
        self.others.retain(|p| !gone.contains(p));
    }

    fn watch_peers(&mut self) -> Result<(), ChannelError> {
        watch_peers(
            self.device,
            &mut self.endpoint,
            &mut self.others,
            &mut self.tally.report,
        )
    }

    /// Sends every member the count of messages it should have had, waiting
    /// (and draining) until `finish_by` for room.
    fn send_end_markers(&mut self, finish_by: Instant) -> Result<(), ChannelError> {
        for to in self.others.clone() {
            message::encode(
                &mut self.scratch,
                Kind::End,
                self.me,
                to,
                self.seq[&to],
                now_ns(),
                message::HEADER_LEN,
            );
            loop {
                match self.endpoint.try_send(to, &self.scratch) {
                    Ok(true) => break,
                    Ok(false) if Instant::now() < finish_by => {
                        flush(&mut self.endpoint, &mut self.tally.report);
                        drain(&mut self.endpoint, &mut self.buf, &mut self.tally);
                        self.watch_peers()?;
                        if !self.others.contains(&to) {
                            break;
                        }
                    }
                    Ok(false) => {
                        self.tally
                            .report
                            .errors
                            .push(format!("peer {to} never made room for the end marker"));
                        break;
                    }
                    Err(ChannelError::NotMember(_)) => break,
                    Err(e) => {
                        record(&mut self.tally.report, &e);
                        break;
                    }
                }
            }
        }
        flush(&mut self.endpoint, &mut self.tally.report);
        Ok(())
    }

    /// Takes messages until every member still there has sent its end marker,
    /// or `finish_by`.
    fn await_end_markers(&mut self, finish_by: Instant) -> Result<(), ChannelError> {
        while self.others.iter().any(|p| !self.tally.ended.contains(p))
            && Instant::now() < finish_by
        {
            match self
                .endpoint
                .recv(&mut self.buf, Some(Duration::from_millis(20)))
            {
                Ok(Some((from, len))) => self.tally.take(from, &self.buf[..len]),
                Ok(None) => self.watch_peers()?,
                Err(e @ ChannelError::Device(DeviceError::ServerGone)) => return Err(e),
                Err(e) => record(&mut self.tally.report, &e),
            }
        }
        Ok(())
    }
}

fn flush(endpoint: &mut Channel<'_>, report: &mut PeerReport) {
    if let Err(e) = endpoint.flush() {
        record(report, &e);
    }
}

fn drain(endpoint: &mut Channel<'_>, buf: &mut [u8], tally: &mut Tally) {
    loop {
        match endpoint.try_recv(buf) {
            Ok(Some((from, len))) => tally.take(from, &buf[..len]),
            Ok(None) => return,
            Err(e) => {
                record(&mut tally.report, &e);
                return;
            }
        }
    }
}

/// Takes in joins and leaves: a peer that left is evicted so the rest go on. The
/// server going away ends the run (no leave could be seen any more).
fn watch_peers(
    device: &dyn Device,
    endpoint: &mut Channel<'_>,
    others: &mut Vec<PeerId>,
    report: &mut PeerReport,
) -> Result<(), ChannelError> {
    loop {
        let event = match device.wait(WaitFor::PEER_EVENTS, Some(Duration::ZERO)) {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(DeviceError::ServerGone) => return Err(DeviceError::ServerGone.into()),
            Err(e) => {
                record(report, &e.into());
                return Ok(());
            }
        };
        if event == Event::ServerGone {
            return Err(DeviceError::ServerGone.into());
        }
        if let Event::PeerLeft { peer } = event
            && others.contains(&peer)
        {
            others.retain(|&p| p != peer);
            if !report.gone.contains(&peer) {
                report.gone.push(peer);
            }
            if let Err(e) = endpoint.evict(peer) {
                record(report, &e);
            }
        }
    }
}

fn record(report: &mut PeerReport, error: &ChannelError) {
    let text = error.to_string();
    if !report.errors.contains(&text) {
        report.errors.push(text);
    }
}

fn print_progress(out: &mut dyn Write, report: &PeerReport) {
    let progress = Progress {
        id: report.id,
        sent: report.sent,
        sent_bytes: report.sent_bytes,
        sent_to: report.sent_to.clone(),
        received: report.received,
        received_from: report.from.iter().map(|(&p, s)| (p, s.received)).collect(),
        corrupted: report.from.values().map(|s| s.corrupted).sum(),
        reordered: report.from.values().map(|s| s.reordered).sum(),
    };
    if let Ok(line) = serde_json::to_string(&progress) {
        let _ = writeln!(out, "progress {line}");
        let _ = out.flush();
    }
}
