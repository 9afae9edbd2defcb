//! The measurements of one run, in order: every latency, then every
//! throughput, then the per-message strategy for the 64-byte rate.

use std::process::Command;
use std::time::{Duration, Instant};

use super::drive::{PingPongPlan, StreamPlan};
use super::job::{Job, Mechanism, Pattern};
use super::report::{LatencyResult, Report, Settings, ThroughputResult};
use super::{BenchConfig, BenchError, Leader, Placement, baselines, ivlink, ntb, placement};
use crate::progress::Progress;
use ::ivlink::Device;
use ::ivlink::server::{ServerConfig, ServerThread};
use ::ivlink::shm::ShmBacking;
use ::ivlink::transport::host::{HostConfig, HostPeer};

/// One latency measurement of the run.
struct LatencySpec {
    name: &'static str,
    how: &'static str,
    mechanism: Mechanism,
    spin: Option<Duration>,
    blocking: bool,
}

const LATENCY: [LatencySpec; 8] = [
    LatencySpec {
        name: "ivlink-busy",
        how: "ivlink rings, both sides busy-poll; publish per message, release per batch",
        mechanism: Mechanism::Ivlink,
        spin: None,
        blocking: false,
    },
    LatencySpec {
        name: "memcpy-ring-busy",
        how: "plain memcpy ring (no checks), both sides busy-poll",
        mechanism: Mechanism::MemRing,
        spin: None,
        blocking: false,
    },
    LatencySpec {
        name: "ivlink-sleep",
        how: "ivlink rings, spin budget 0 then sleep: a doorbell (eventfd via epoll) per message",
        mechanism: Mechanism::Ivlink,
        spin: Some(Duration::ZERO),
        blocking: true,
    },
    LatencySpec {
        name: "ntb-busy",
        how: "NTB doorbell: peer_db_set to the other port, which busy-polls db_read, then db_clear; no payload",
        mechanism: Mechanism::Ntb,
        spin: None,
        blocking: false,
    },
    LatencySpec {
        name: "ntb-sleep",
        how: "NTB doorbell, sleeping receiver: peer_db_set, the other port sleeps in wait_until (spin 0), then db_clear; no payload",
        mechanism: Mechanism::Ntb,
        spin: Some(Duration::ZERO),
        blocking: true,
    },
    LatencySpec {
        name: "eventfd",
        how: "bare eventfd each way, blocking read(), no payload",
        mechanism: Mechanism::Eventfd,
        spin: None,
        blocking: true,
    },
    LatencySpec {
        name: "unix",
        how: "UNIX stream socketpair, blocking read()",
        mechanism: Mechanism::Unix,
        spin: None,
        blocking: true,
    },
    LatencySpec {
        name: "pipe",
        how: "two pipes, blocking read()",
        mechanism: Mechanism::Pipe,
        spin: None,
        blocking: true,
    },
];

/// How long the ivlink stream consumer spins before sleeping.
pub(super) const STREAM_SPIN: Duration = Duration::from_micros(50);

/// Runs every measurement and returns the report. `command` makes a command
/// that starts this program's peer role (`ivlink bench-peer`); the job's
/// arguments are appended. `progress` shows a bar over the measurements.
///
/// Pins the calling thread to a CPU for the run (restored at the end).
pub fn run(
    config: &BenchConfig,
    command: &dyn Fn() -> Command,
    progress: &Progress,
) -> Result<Report, BenchError> {
    config.validate()?;
    let started = Instant::now();
    let placement = Placement::choose(config.pin)?;
    let restore = placement.leader_cpu.map(placement::pin).transpose()?;
    let result = run_pinned(config, command, progress, placement);
    if let Some(mask) = restore {
        placement::restore(&mask)?;
    }
    let mut report = result?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn run_pinned(
    config: &BenchConfig,
    command: &dyn Fn() -> Command,
    progress: &Progress,
    placement: Placement,
) -> Result<Report, BenchError> {
    let dir = super::private_dir()?;
    let region = ivlink::region_size(config.ring);
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
    // The NTB switch gets a region of its own: its directory would sit where
    // the ivlink rings are.
    let ntb_server = ServerThread::start(ServerConfig {
        socket_path: dir.path().join("ntb.sock"),
        shm: ShmBacking::Memfd,
        size: ntb::region_size(),
        vectors: 1,
        ..ServerConfig::default()
    })?;
    let ntb_host = HostPeer::connect(&HostConfig {
        socket_path: ntb_server.socket_path().to_owned(),
        vectors: Some(1),
        setup_timeout: config.timeout,
    })?;
    let leader = Leader {
        command,
        host: Some(&host),
        ntb: Some((&ntb_host, ntb_server.socket_path())),
    };
    let base = Job {
        mechanism: Mechanism::Ivlink,
        pattern: Pattern::PingPong,
        size: config.payload,
        batch: config.batch,
        ring: config.ring,
        spin: None,
        socket: Some(server.socket_path().to_owned()),
        leader: host.id(),
        cpu: placement.peer_cpu,
        yield_spin: placement.shared_cpu(),
        timeout: config.timeout,
        grants: false,
        eager: false,
    };
    let total = LATENCY.len() + stream_jobs(config, &base, &base).len() * config.rounds;
    let bar = progress.bar(total as u64, "starting");
    let mut done = 0;
    let mut say = |what: &str| {
        bar.set_position(done);
        bar.set_message(what.to_owned());
        done += 1;
    };

    let latency = measure_latency(config, &leader, &base, &mut say)?;
    let ntb_base = ntb_job(&leader, base.clone())?;
    let streams = stream_jobs(config, &base, &ntb_base);
    let throughput = measure_throughput(config, &leader, &streams, &mut say)?;
    bar.clear();
    drop(host);
    drop(ntb_host);
    server.stop()?;
    ntb_server.stop()?;
    Ok(Report {
        settings: Settings {
            quick: config.quick,
            placement,
            ring: config.ring,
            latency_ring: ivlink::LATENCY_RING,
            batch: config.batch,
            payload: config.payload,
            region: region as usize,
            stream_spin: STREAM_SPIN,
            rounds: config.rounds,
        },
        latency,
        throughput,
        seconds: 0.0,
    })
}

/// Every latency of [`LATENCY`], in order.
fn measure_latency(
    config: &BenchConfig,
    leader: &Leader<'_>,
    base: &Job,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<LatencyResult>, BenchError> {
    let mut latency = Vec::new();
    for spec in &LATENCY {
        say(&format!("latency: {}", spec.name));
        let job = Job {
            mechanism: spec.mechanism,
            spin: spec.spin,
            ..base.clone()
        };
        let iterations = if spec.blocking {
            config.blocking_iterations
        } else {
            config.busy_iterations
        };
        let plan = PingPongPlan {
            warmup: (iterations / 20).max(10),
            iterations,
            min_iterations: (iterations / 5).max(1),
            time: config.latency_time,
        };
        let run = match spec.mechanism {
            Mechanism::Ivlink => ivlink::lead_ping_pong(leader, &job, &plan)?,
            Mechanism::Ntb => ntb::lead_ping_pong(leader, &ntb_job(leader, job)?, &plan)?,
            _ => baselines::lead_ping_pong(leader, &job, &plan)?,
        };
        latency.push(LatencyResult::new(
            spec.name,
            spec.how,
            config.payload,
            run.samples,
            run.doorbells,
            run.messages,
        ));
    }

    Ok(latency)
}

/// `job` on the NTB switch's server.
fn ntb_job(leader: &Leader<'_>, job: Job) -> Result<Job, BenchError> {
    let (host, socket) = leader
        .ntb
        .ok_or_else(|| BenchError::Config("no ivshmem server for the NTB switch".into()))?;
    Ok(Job {
        socket: Some(socket.to_owned()),
        leader: host.id(),
        ..job
    })
}

/// One throughput measurement: its name, how it works, and the job.
type StreamJob = (&'static str, &'static str, Job);

/// The throughput measurements of the run, in report order.
fn stream_jobs(config: &BenchConfig, base: &Job, ntb_base: &Job) -> Vec<StreamJob> {
    // Every stream, run `rounds` times in turn (interleaved, so that a burst of
    // load hits all mechanisms alike); the median round is reported.
    let mut streams: Vec<StreamJob> = Vec::new();
    for &size in &config.sizes {
        let job = Job {
            pattern: Pattern::Stream,
            size,
            ..base.clone()
        };
        streams.push((
            "ivlink",
            "ivlink ring: publish per batch and release per batch (the notify flag checked with a fence every 16th time and before waiting), consumer spins 50 µs then sleeps, doorbell only when asked",
            Job {
                spin: Some(STREAM_SPIN),
                ..job.clone()
            },
        ));
        streams.push((
            "ivlink-grant",
            "ivlink ring, zero-copy: the producer fills each payload in place through a write grant, the consumer reads its first and last 8 bytes in place through a read grant; publish and release per batch as in the ivlink row, consumer spins 50 µs then sleeps",
            Job {
                spin: Some(STREAM_SPIN),
                grants: true,
                ..job.clone()
            },
        ));
        for (name, how, mechanism) in [
            (
                "memcpy-ring",
                "plain memcpy ring (no checks): publish per batch, both sides busy-poll",
                Mechanism::MemRing,
            ),
            (
                "unix",
                "UNIX stream socketpair: one write() per message, reads of a message-sized buffer",
                Mechanism::Unix,
            ),
            (
                "pipe",
                "pipe: one write() per message, reads of a message-sized buffer",
                Mechanism::Pipe,
            ),
        ] {
            streams.push((
                name,
                how,
                Job {
                    mechanism,
                    ..job.clone()
                },
            ));
        }
    }
    // The per-message strategy, for the 64-byte rate: publish (and check for a
    // sleeping consumer) after every message.
    streams.push((
        "ivlink-batch1",
        "ivlink ring: publish and check the notify flag after every message",
        Job {
            pattern: Pattern::Stream,
            size: 64,
            batch: 1,
            spin: Some(STREAM_SPIN),
            ..base.clone()
        },
    ));
    // The latency-sensitive sender: every message published at once with a
    // release store, the notify flag checked per batch.
    streams.push((
        "ivlink-eager",
        "ivlink ring: publish every message with one release store (publish_quiet), check the notify flag per batch",
        Job {
            pattern: Pattern::Stream,
            size: 64,
            eager: true,
            spin: Some(STREAM_SPIN),
            ..base.clone()
        },
    ));
    for size in ntb::STREAM_SIZES {
        streams.push((
            "ntb-window",
            "NTB window: peer_mw_write of each chunk into a slot of the peer's inbound window (up to 16 slots), a doorbell bit per slot each way; the receiver copies out with mw_read; both spin 50 µs then sleep",
            Job {
                mechanism: Mechanism::Ntb,
                pattern: Pattern::Stream,
                size,
                batch: 1,
                spin: Some(STREAM_SPIN),
                ..ntb_base.clone()
            },
        ));
    }
    streams
}

/// Runs every stream `rounds` times and keeps each one's median round.
fn measure_throughput(
    config: &BenchConfig,
    leader: &Leader<'_>,
    streams: &[StreamJob],
    say: &mut dyn FnMut(&str),
) -> Result<Vec<ThroughputResult>, BenchError> {
    let mut rounds: Vec<Vec<ThroughputResult>> = vec![Vec::new(); streams.len()];
    for round in 0..config.rounds {
        for ((name, how, job), runs) in streams.iter().zip(&mut rounds) {
            say(&format!(
                "throughput: {name}, {} B messages, round {}",
                job.size,
                round + 1
            ));
            let plan = StreamPlan {
                messages: (config.stream_bytes / job.size as u64).max(job.batch as u64),
                time: config.stream_time,
                batch: job.batch,
            };
            let run = match job.mechanism {
                Mechanism::Ivlink => ivlink::lead_stream(leader, job, &plan)?,
                Mechanism::Ntb => ntb::lead_stream(leader, job, &plan)?,
                _ => baselines::lead_stream(leader, job, &plan)?,
            };
            runs.push(ThroughputResult {
                mechanism: name,
                how,
                size: job.size,
                messages: run.messages,
                bytes: run.bytes,
                seconds: run.seconds,
                doorbells: run.doorbells,
                rounds: 1,
                range: (0.0, 0.0),
            });
        }
    }
    Ok(rounds.into_iter().map(ThroughputResult::median).collect())
}
