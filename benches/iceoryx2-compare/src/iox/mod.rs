//! iceoryx2's side of the comparison: publish-subscribe on the `ipc` service
//! type between this process and a peer process, zero-copy loan and send,
//! busy-polling receive; measured with the same loops and summaries as
//! `ivlink bench`.

mod child;
mod cleanup;
mod domain;
mod leader;
mod names;
pub mod peer;
mod ports;
mod report;

use ivlink_lab::bench::{LatencyResult, Placement, ThroughputResult, placement};

pub use names::ROOT as SERVICE_ROOT;

use crate::settings::{Settings, StreamPlan};
use leader::Session;

/// The name of the iceoryx2 rows.
pub const MECHANISM: &str = "iceoryx2";

/// The name of the iceoryx2 zero-copy stream rows.
pub const MECHANISM_ZERO_COPY: &str = "iceoryx2-zero-copy";

/// How the latency was measured.
pub const LATENCY_HOW: &str = "iceoryx2 ipc publish-subscribe of byte slices, one service each way: \
     loan, write, send per message; both sides busy-poll receive() and copy the payload out";

/// How the throughput was measured.
pub const STREAM_HOW: &str = "iceoryx2 ipc publish-subscribe: loan, write, send per message \
     (a full subscriber buffer holds the publisher back); the subscriber busy-polls receive()";

/// How the zero-copy throughput was measured.
pub const ZERO_COPY_HOW: &str = "iceoryx2 ipc publish-subscribe, zero-copy: loan, fill the payload in place, \
     send per message; the subscriber busy-polls receive() and checks the first and last 8 bytes in place";

/// What iceoryx2 measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Iceoryx2Results {
    /// Busy-poll ping-pong latency.
    pub latency: LatencyResult,
    /// Streaming throughput per size (median of the rounds): copied in and
    /// out ([`MECHANISM`]), then in place ([`MECHANISM_ZERO_COPY`]), per size.
    pub throughput: Vec<ThroughputResult>,
    /// Subscriber buffer of the streams of each size, in the sizes' order.
    pub queue_depths: Vec<usize>,
    /// Services and nodes of the run found after it ended (empty when
    /// cleaned up).
    pub leftovers: Vec<String>,
}

/// Runs every iceoryx2 measurement, with this thread pinned to the leader's
/// CPU (restored at the end). `progress` hears one line per measurement.
pub fn measure(
    settings: &Settings,
    placement: &Placement,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Iceoryx2Results> {
    let restore = placement.leader_cpu.map(placement::pin).transpose()?;
    let result = measure_pinned(settings, placement, progress);
    if let Some(mask) = restore {
        placement::restore(&mask)?;
    }
    result
}

fn measure_pinned(
    settings: &Settings,
    placement: &Placement,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Iceoryx2Results> {
    let mut session = Session::new(placement, settings.timeout)?;
    let result = measure_all(&mut session, settings, progress);
    let prefix = session.prefix().to_owned();
    drop(session);
    let mut leftovers = cleanup::leftovers(&prefix)?;
    leftovers.extend(domain::get().remove());
    Ok(Iceoryx2Results {
        leftovers,
        ..result?
    })
}

fn measure_all(
    session: &mut Session,
    settings: &Settings,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Iceoryx2Results> {
    progress("iceoryx2 latency: busy-poll ping-pong");
    let plan = settings.ping_pong_plan();
    let samples = session.ping_pong(settings.payload, &plan)?;
    let messages = 2 * samples.len() as u64;
    let latency = LatencyResult::new(
        MECHANISM,
        LATENCY_HOW,
        settings.payload,
        samples,
        0,
        messages,
    );

    let plans: Vec<_> = settings
        .sizes
        .iter()
        .map(|&size| settings.stream_plan(size))
        .collect();
    let streams: Vec<(&StreamPlan, bool)> = plans
        .iter()
        .flat_map(|plan| [(plan, false), (plan, true)])
        .collect();
    let mut rounds: Vec<Vec<ThroughputResult>> = vec![Vec::new(); streams.len()];
    for round in 0..settings.rounds {
        for (&(plan, zero_copy), runs) in streams.iter().zip(&mut rounds) {
            progress(&format!(
                "iceoryx2 throughput: {} B messages{}, round {}",
                plan.size,
                if zero_copy { ", zero-copy" } else { "" },
                round + 1
            ));
            let run = session.stream(plan, zero_copy)?;
            let (mechanism, how) = if zero_copy {
                (MECHANISM_ZERO_COPY, ZERO_COPY_HOW)
            } else {
                (MECHANISM, STREAM_HOW)
            };
            runs.push(ThroughputResult {
                mechanism,
                how,
                size: plan.size,
                messages: run.messages,
                bytes: run.bytes,
                seconds: run.seconds,
                doorbells: 0,
                rounds: 1,
                range: (0.0, 0.0),
            });
        }
    }
    Ok(Iceoryx2Results {
        latency,
        throughput: rounds.into_iter().map(ThroughputResult::median).collect(),
        queue_depths: plans.iter().map(|p| p.queue_depth).collect(),
        leftovers: Vec::new(),
    })
}

/// The peer process's part (the hidden subcommand).
pub fn run_peer(args: &peer::PeerArgs) -> anyhow::Result<()> {
    peer::run(args)
}
