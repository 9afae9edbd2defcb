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
use ivlink::channel::{Endpoint, EndpointError};
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
) -> Result<PeerReport, EndpointError> {
    let me = device.id();
    let mut endpoint = Endpoint::join(device, layout, SpinThenSleep::default())?;
    let deadline = Instant::now() + plan.timeout;
    while endpoint.members()?.len() + 1 < plan.peers {
        if Instant::now() > deadline {
            return Err(EndpointError::NotMember(me));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut others: Vec<PeerId> = endpoint.members()?;
    let mut tally = Tally {
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
    let mut seq: BTreeMap<PeerId, u64> = others.iter().map(|&p| (p, 0)).collect();
    let mut buf = vec![0u8; plan.message_len.1.max(message::HEADER_LEN)];
    let mut scratch = Vec::with_capacity(buf.len());
    let (min_len, max_len) = (
        plan.message_len.0.max(message::HEADER_LEN),
        plan.message_len.1.max(message::HEADER_LEN),
    );
    let started = Instant::now();
    let mut next_progress = plan.progress.map(|p| started + p);
    if plan.progress.is_some() {
        print_progress(out, &tally.report);
    }
    let mut round = 0u64;
    while started.elapsed() < plan.duration && !stop.load(Ordering::Relaxed) {
        round += 1;
        for &to in &others {
            let n = seq[&to];
            let len = min_len + (n.wrapping_mul(2_654_435_761) as usize % (max_len - min_len + 1));
            message::encode(&mut scratch, Kind::Data, me, to, n, now_ns(), len);
            match endpoint.try_send(to, &scratch) {
                Ok(true) => {
                    *seq.get_mut(&to).expect("listed") += 1;
                    tally.report.sent += 1;
                    *tally.report.sent_to.entry(to).or_default() += 1;
                    tally.report.sent_bytes += len as u64;
                }
                Ok(false) => {}
                // Evicted by another member before the server told us: it left.
                Err(EndpointError::NotMember(peer)) => {
                    if !tally.report.gone.contains(&peer) {
                        tally.report.gone.push(peer);
                    }
                }
                Err(e) => record(&mut tally.report, &e),
            }
        }
        others.retain(|p| !tally.report.gone.contains(p));
        if round % 8 == 0 {
            flush(&mut endpoint, &mut tally.report);
        }
        drain(&mut endpoint, &mut buf, &mut tally);
        if round % 256 == 0 {
            watch_peers(device, &mut endpoint, &mut others, &mut tally.report)?;
            if let Some(at) = next_progress
                && Instant::now() >= at
            {
                print_progress(out, &tally.report);
                next_progress = plan.progress.map(|p| at + p);
            }
        }
    }
    tally.report.seconds = started.elapsed().as_secs_f64();
    flush(&mut endpoint, &mut tally.report);

    // Tell every sender how many messages to expect, then wait for theirs.
    let finish_by = Instant::now() + plan.timeout;
    for to in others.clone() {
        message::encode(
            &mut scratch,
            Kind::End,
            me,
            to,
            seq[&to],
            now_ns(),
            message::HEADER_LEN,
        );
        loop {
            match endpoint.try_send(to, &scratch) {
                Ok(true) => break,
                Ok(false) if Instant::now() < finish_by => {
                    flush(&mut endpoint, &mut tally.report);
                    drain(&mut endpoint, &mut buf, &mut tally);
                    watch_peers(device, &mut endpoint, &mut others, &mut tally.report)?;
                    if !others.contains(&to) {
                        break;
                    }
                }
                Ok(false) => {
                    tally
                        .report
                        .errors
                        .push(format!("peer {to} never made room for the end marker"));
                    break;
                }
                Err(EndpointError::NotMember(_)) => break,
                Err(e) => {
                    record(&mut tally.report, &e);
                    break;
                }
            }
        }
    }
    flush(&mut endpoint, &mut tally.report);
    while others.iter().any(|p| !tally.ended.contains(p)) && Instant::now() < finish_by {
        match endpoint.recv(&mut buf, Some(Duration::from_millis(20))) {
            Ok(Some((from, len))) => tally.take(from, &buf[..len]),
            Ok(None) => watch_peers(device, &mut endpoint, &mut others, &mut tally.report)?,
            Err(e @ EndpointError::Device(DeviceError::ServerGone)) => return Err(e),
            Err(e) => record(&mut tally.report, &e),
        }
    }
    tally.finish();
    Ok(tally.report)
}

fn flush(endpoint: &mut Endpoint<'_>, report: &mut PeerReport) {
    if let Err(e) = endpoint.flush() {
        record(report, &e);
    }
}

fn drain(endpoint: &mut Endpoint<'_>, buf: &mut [u8], tally: &mut Tally) {
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
    endpoint: &mut Endpoint<'_>,
    others: &mut Vec<PeerId>,
    report: &mut PeerReport,
) -> Result<(), EndpointError> {
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

fn record(report: &mut PeerReport, error: &EndpointError) {
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
