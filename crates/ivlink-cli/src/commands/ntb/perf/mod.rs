//! `ivlink ntb perf`: ntb_perf (drivers/ntb/test/ntb_perf.c) over a switch on
//! the region. Every port runs it; each sets up windows with its peers by the
//! message handshake and serves until stopped, but the one started with
//! `--run` measures the write bandwidth into one peer's window, prints it with
//! a plain memcpy of the same sizes as the ceiling, and exits.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use ivlink::ntb::{Events, Ntb};

use super::SwitchArgs;
use crate::grammar::{parse_duration, parse_uint};

mod copy;
mod latency;
mod service;

use copy::{Copied, Parts, Plan};
use latency::OneWay;
use service::{CMD_ECHO, ECHO_OFF, Service};

/// How often a wait looks at the stop flag.
const STOP_TICK: Duration = Duration::from_millis(100);

/// Options of `ivlink ntb perf`.
#[derive(Debug, Clone, Args)]
pub struct PerfArgs {
    /// Measure into this peer's window (a peer index; `--run` alone: the
    /// first peer whose link comes up), print and exit; without it, serve
    #[arg(long, value_name = "PEER", num_args = 0..=1, value_parser = parse_uint::<u32>)]
    pub run: Option<Option<u32>>,

    /// log2 of the bytes per copy
    #[arg(long, value_name = "N", default_value_t = 19,
          value_parser = clap::value_parser!(u32).range(0..=20))]
    pub chunk_order: u32,

    /// log2 of the bytes every thread copies
    #[arg(long, value_name = "N", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(0..=40))]
    pub total_order: u32,

    /// Copy threads, each into a part of the window of its own
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=32))]
    pub threads: u32,

    /// With --run: also time this many doorbell round trips (the peer echoes
    /// them) against an eventfd ping-pong
    #[arg(long, value_name = "ROUNDS", default_value_t = 0, value_parser = parse_uint::<usize>)]
    pub latency: usize,

    /// With --run: how long to wait for the peer's link and window
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print one JSON object on standard output instead of the statistics
    #[arg(long)]
    pub json: bool,

    /// The switch and the port
    #[command(flatten)]
    pub switch: SwitchArgs,
}

impl PerfArgs {
    /// Serves, or with `--run` measures.
    pub fn run(&self) -> anyhow::Result<()> {
        let stop = crate::commands::stop_flag()?;
        let device = self.switch.device()?;
        let ntb = self.switch.open(&*device)?;
        let mut service = Service::start(&ntb, true)?;
        let result = match self.run {
            None => serve(&ntb, &mut service, &stop),
            Some(peer) => self.measure(&ntb, &mut service, peer, &stop),
        };
        service.stop()?;
        result
    }

    fn measure(
        &self,
        ntb: &Ntb<'_>,
        service: &mut Service<'_, '_>,
        peer: Option<u32>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<()> {
        if let Some(pidx) = peer {
            ntb.peer_port_number(pidx)?;
        }
        let (pidx, widx, window) = wait_for_window(ntb, service, peer, self.timeout, stop)?;
        let peer_port = ntb.peer_port_number(pidx)?;
        let plan = Plan {
            chunk: 1 << self.chunk_order,
            total: 1 << self.total_order.max(self.chunk_order),
            threads: self.threads as usize,
        };
        let parts = Parts::new(window, &plan)?;
        eprintln!(
            "perf: port {peer_port}: {} thread(s) copy {} bytes each in {}-byte chunks",
            plan.threads, plan.total, parts.chunk
        );
        let threads = copy::through_window(ntb, widx, parts, &plan)?;
        let ceiling = copy::memcpy(parts, &plan);
        let latency = if self.latency > 0 {
            Some(self.latency(ntb, service, pidx, peer_port)?)
        } else {
            None
        };
        let report = Report {
            pidx,
            port: peer_port,
            threads,
            memcpy: ceiling,
            latency,
        };
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", report.to_json())?;
        } else {
            report.write_text(&mut out)?;
        }
        Ok(())
    }

    fn latency(
        &self,
        ntb: &Ntb<'_>,
        service: &mut Service<'_, '_>,
        pidx: u32,
        peer_port: u32,
    ) -> anyhow::Result<Latency> {
        if !service.send(pidx, CMD_ECHO, u64::from(ntb.port_number()))? {
            anyhow::bail!("port {peer_port} did not take the echo command");
        }
        let trips = latency::doorbell_round_trips(ntb, peer_port, self.latency);
        service.send(pidx, CMD_ECHO, ECHO_OFF)?;
        let doorbell = OneWay::from_round_trips(trips?);
        let eventfd = OneWay::from_round_trips(latency::eventfd_round_trips(self.latency)?);
        match (doorbell, eventfd) {
            (Some(doorbell), Some(eventfd)) => Ok(Latency {
                rounds: self.latency,
                spin: ntb_spin(&self.switch),
                doorbell,
                eventfd,
            }),
            _ => anyhow::bail!("no round trips timed"),
        }
    }
}

fn ntb_spin(switch: &SwitchArgs) -> Duration {
    switch.spin
}

/// Serves the handshake (and echoes, if asked) until SIGINT or SIGTERM.
fn serve(
    ntb: &Ntb<'_>,
    service: &mut Service<'_, '_>,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    eprintln!(
        "perf: serving on port {} of {}",
        ntb.port_number(),
        ntb.port_count()
    );
    let mut seen = ntb.events();
    let mut events = Events::LINK;
    while !stop.load(Ordering::Relaxed) {
        service.poll(events)?;
        events = ntb.wait_events(&mut seen, Some(STOP_TICK))?;
    }
    Ok(())
}

/// Waits until the outbound window to the peer (`None`: the first whose link
/// comes up) is set: its peer index, the window index and its size.
fn wait_for_window(
    ntb: &Ntb<'_>,
    service: &mut Service<'_, '_>,
    peer: Option<u32>,
    timeout: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<(u32, u32, usize)> {
    let deadline = Instant::now() + timeout;
    let mut seen = ntb.events();
    let mut events = Events::LINK;
    loop {
        service.poll(events)?;
        let chosen = peer.or_else(|| service.first_linked());
        if let Some(pidx) = chosen {
            if let Some((widx, size)) = service.peer(pidx).and_then(|p| p.outbound) {
                return Ok((pidx, widx, size));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let waited = format!("{:.1}s", timeout.as_secs_f64());
            match chosen {
                Some(pidx) if service.peer(pidx).is_some_and(|p| p.link) => anyhow::bail!(
                    "port {} did not set up its window within {waited} (is `ivlink ntb perf` running there?)",
                    ntb.peer_port_number(pidx)?
                ),
                Some(pidx) => anyhow::bail!(
                    "the link to port {} did not come up within {waited}",
                    ntb.peer_port_number(pidx)?
                ),
                None => anyhow::bail!(
                    "no peer's link came up within {waited} (start `ivlink ntb perf` on another port)"
                ),
            }
        }
        if stop.load(Ordering::Relaxed) {
            anyhow::bail!("stopped before the test began");
        }
        events = ntb.wait_events(&mut seen, Some(left.min(STOP_TICK)))?;
    }
}

/// The doorbell latency run's figures.
struct Latency {
    rounds: usize,
    spin: Duration,
    doorbell: OneWay,
    eventfd: OneWay,
}

/// What a `--run` prints.
struct Report {
    pidx: u32,
    port: u32,
    threads: Vec<Copied>,
    memcpy: Vec<Copied>,
    latency: Option<Latency>,
}

impl Report {
    fn ratio(&self) -> f64 {
        let window = Copied::total(&self.threads).mbytes_per_s();
        let memcpy = Copied::total(&self.memcpy).mbytes_per_s();
        window as f64 / memcpy.max(1) as f64
    }

    /// ntb_perf's `run` file, then the ceiling and the ratio.
    fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "    Peer {} test statistics:", self.pidx)?;
        for (tidx, copied) in self.threads.iter().enumerate() {
            writeln!(out, "{tidx}: {}", copied_text(copied))?;
        }
        if self.threads.len() > 1 {
            writeln!(out, "total: {}", copied_text(&Copied::total(&self.threads)))?;
        }
        writeln!(out, "memcpy: {}", copied_text(&Copied::total(&self.memcpy)))?;
        writeln!(out, "ratio: {:.2} of memcpy", self.ratio())?;
        if let Some(latency) = &self.latency {
            let line = |name: &str, o: &OneWay| {
                format!(
                    "{name}: one-way p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
                    us(o.p50),
                    us(o.p90),
                    us(o.p99),
                    us(o.max)
                )
            };
            writeln!(
                out,
                "latency ({} round trips halved, spin {} us):",
                latency.rounds,
                latency.spin.as_micros()
            )?;
            writeln!(out, "{}", line("doorbell", &latency.doorbell))?;
            writeln!(out, "{}", line("eventfd", &latency.eventfd))?;
        }
        Ok(())
    }

    fn to_json(&self) -> serde_json::Value {
        let copied_json = |c: &Copied| {
            serde_json::json!({
                "bytes": c.bytes,
                "usecs": c.usecs(),
                "mbytes_per_s": c.mbytes_per_s(),
            })
        };
        let total = Copied::total(&self.threads);
        let mut json = serde_json::json!({
            "peer": self.pidx,
            "port": self.port,
            "threads": self.threads.iter().enumerate().map(|(tidx, c)| {
                let mut t = copied_json(c);
                t["thread"] = tidx.into();
                t
            }).collect::<Vec<_>>(),
            "bytes": total.bytes,
            "usecs": total.usecs(),
            "mbytes_per_s": total.mbytes_per_s(),
            "memcpy": copied_json(&Copied::total(&self.memcpy)),
            "ratio": self.ratio(),
            "verified": true,
        });
        if let Some(latency) = &self.latency {
            json["latency"] = serde_json::json!({
                "rounds": latency.rounds,
                "spin_us": latency.spin.as_micros() as u64,
                "doorbell": latency.doorbell.to_json(),
                "eventfd": latency.eventfd.to_json(),
            });
        }
        json
    }
}

/// `copied %llu bytes in %llu usecs, %llu MBytes/s`.
fn copied_text(copied: &Copied) -> String {
    format!(
        "copied {} bytes in {} usecs, {} MBytes/s",
        copied.bytes,
        copied.usecs(),
        copied.mbytes_per_s()
    )
}

fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}
