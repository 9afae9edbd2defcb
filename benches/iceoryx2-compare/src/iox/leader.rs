//! The leader's side of the iceoryx2 measurements: for each one, two fresh
//! services (data and back), a peer process on the other CPU, and the same
//! ping-pong and stream loops as `ivlink bench`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use iceoryx2::prelude::*;
use ivlink_lab::bench::Placement;

use super::child::PeerChild;
use super::names::RunNames;
use super::peer::{Pattern, PeerArgs};
use super::ports::{self, Ipc, Rx, Service, Tx};
use super::report::{self, PeerReport};
use crate::settings::{PingPongPlan, StreamPlan};
use ivlink_lab::bench::STREAM_BYTE;
use ivlink_lab::bench::spin::Spinner;

/// Subscriber buffer of the back service (ready, pongs, report).
const BACK_DEPTH: usize = 2;

/// A stream's raw outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamRun {
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// From the first message sent to the peer's report of the last received.
    pub seconds: f64,
}

/// The leader's node and what every measurement shares.
#[derive(Debug)]
pub struct Session {
    node: Node<Ipc>,
    names: RunNames,
    peer_cpu: Option<usize>,
    yield_spin: bool,
    timeout: Duration,
}

/// One measurement's ports and peer. Ports go before services.
struct Link {
    tx: Tx,
    rx: Rx,
    child: PeerChild,
    _data: Service,
    _back: Service,
}

impl Session {
    /// A node for this run; peers go to `placement`'s peer CPU.
    pub fn new(placement: &Placement, timeout: Duration) -> anyhow::Result<Session> {
        let names = RunNames::new();
        Ok(Session {
            node: ports::node(&names.leader())?,
            names,
            peer_cpu: placement.peer_cpu,
            yield_spin: placement.shared_cpu(),
            timeout,
        })
    }

    fn spinner(&self) -> Spinner {
        Spinner::new(self.yield_spin, self.timeout)
    }

    /// Creates the services and ports, starts the peer, waits until it is
    /// ready.
    fn start(&mut self, pattern: Pattern, size: usize, depth: usize) -> anyhow::Result<Link> {
        let names = self.names.next_pair();
        let data = ports::create_service(&self.node, &names.data, depth)?;
        let back = ports::create_service(&self.node, &names.back, BACK_DEPTH)?;
        let tx = Tx::new(&data, size, self.spinner())?;
        let mut rx = Rx::new(&back, BACK_DEPTH, self.spinner())?;
        let mut child = PeerChild::spawn(&PeerArgs {
            pattern,
            data: names.data,
            back: names.back,
            node: names.peer,
            size,
            depth,
            cpu: self.peer_cpu,
            yield_spin: self.yield_spin,
            timeout_ms: self.timeout.as_millis() as u64,
        })?;
        let started = Instant::now();
        let mut buf = [0u8; 1];
        while rx.try_recv(&mut buf)?.is_none() {
            child.check_running()?;
            if started.elapsed() > self.timeout {
                bail!("the iceoryx2 peer was not ready after {:?}", self.timeout);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        Ok(Link {
            tx,
            rx,
            child,
            _data: data,
            _back: back,
        })
    }

    /// Times each round trip of a `payload`-byte message (nanoseconds).
    pub fn ping_pong(&mut self, payload: usize, plan: &PingPongPlan) -> anyhow::Result<Vec<u64>> {
        let mut link = self.start(Pattern::PingPong, payload, 1)?;
        let outcome = link.ping_pong(payload, plan);
        let (samples, sent) = outcome.map_err(|e| link.explain(e))?;
        let report = link.end().map_err(|e| link.explain(e))?;
        link.close()?;
        ensure!(
            report.messages == sent,
            "the iceoryx2 peer echoed {} messages of {sent}",
            report.messages
        );
        Ok(samples)
    }

    /// Streams messages per `plan`; one loan and send per message. With
    /// `zero_copy`, each message is written in place into its sample and the
    /// peer checks it in place; otherwise it is copied in and copied out.
    pub fn stream(&mut self, plan: &StreamPlan, zero_copy: bool) -> anyhow::Result<StreamRun> {
        let pattern = if zero_copy {
            Pattern::ZeroCopyStream
        } else {
            Pattern::Stream
        };
        let mut link = self.start(pattern, plan.size, plan.queue_depth)?;
        let started = Instant::now();
        let outcome = link.stream(plan, zero_copy, started);
        let sent = outcome.map_err(|e| link.explain(e))?;
        let report = link.end().map_err(|e| link.explain(e))?;
        let seconds = started.elapsed().as_secs_f64();
        link.close()?;
        let bytes = sent * plan.size as u64;
        ensure!(
            report.messages == sent && report.bytes == bytes,
            "sent {sent} messages ({bytes} bytes), the iceoryx2 peer received {} ({} bytes)",
            report.messages,
            report.bytes
        );
        Ok(StreamRun {
            messages: sent,
            bytes,
            seconds,
        })
    }

    /// What every name of this run starts with.
    pub fn prefix(&self) -> &str {
        self.names.prefix()
    }
}

impl Link {
    /// The ping-pong loop of `ivlink bench`: the samples and the messages
    /// sent.
    fn ping_pong(
        &mut self,
        payload: usize,
        plan: &PingPongPlan,
    ) -> anyhow::Result<(Vec<u64>, u64)> {
        let message = vec![0x5a; payload];
        let mut buf = vec![0u8; payload];
        let mut samples = Vec::with_capacity(plan.iterations.min(1 << 22) as usize);
        let started = Instant::now();
        let mut before = started;
        let mut sent = 0;
        for i in 0..plan.warmup + plan.iterations {
            self.tx.send(&message)?;
            let len = self.rx.recv(&mut buf)?;
            ensure!(
                len == payload,
                "the iceoryx2 peer echoed {len} bytes of {payload}"
            );
            let after = Instant::now();
            if i >= plan.warmup {
                samples.push(after.duration_since(before).as_nanos() as u64);
            }
            before = after;
            sent += 1;
            if i % 64 == 63
                && samples.len() as u64 >= plan.min_iterations
                && after.duration_since(started) >= plan.time
            {
                break;
            }
        }
        Ok((samples, sent))
    }

    /// The stream loop of `ivlink bench`: the messages sent.
    fn stream(
        &mut self,
        plan: &StreamPlan,
        zero_copy: bool,
        started: Instant,
    ) -> anyhow::Result<u64> {
        let message = vec![STREAM_BYTE; plan.size];
        let mut sent = 0u64;
        while sent < plan.messages {
            if zero_copy {
                self.tx.send_in_place(plan.size)?;
            } else {
                self.tx.send(&message)?;
            }
            sent += 1;
            // Reading the clock costs more than a small message: look now and then.
            if sent.is_multiple_of(1024) && started.elapsed() >= plan.time {
                break;
            }
        }
        Ok(sent)
    }

    /// `error`, saying so if the peer process has died.
    fn explain(&mut self, error: anyhow::Error) -> anyhow::Error {
        match self.child.check_running() {
            Ok(()) => error,
            Err(exited) => error.context(exited),
        }
    }

    /// Sends the end marker and returns the peer's report.
    fn end(&mut self) -> anyhow::Result<PeerReport> {
        self.tx.send(&[])?;
        let mut buf = [0u8; report::LEN];
        let len = self.rx.recv(&mut buf)?;
        PeerReport::decode(&buf, len)
    }

    /// Says bye and waits for the peer to exit.
    fn close(mut self) -> anyhow::Result<()> {
        self.tx.send(&[])?;
        self.child.finish()
    }
}
