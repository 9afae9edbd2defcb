//! `ivlink rpmsg`: RPMsg echo like OpenAMP's `rpmsg_ivshmem` sample, without its
//! start-order and restart limits: `echo` is the remote side, `send` and `bench`
//! the host side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

use ivlink::rpmsg::{
    EchoStep, HostSession, LinkEvent, NativeShape, Outcome, Profile, ResetCause, Role, RpmsgLink,
    RpmsgOptions, SessionError, WaitBudget, default_endpoint_name, serve_echo,
};
use ivlink::transport::openamp::{OpenampOptions, OpenampShm};
use ivlink::{Device, Transport};
use ivlink_lab::bench::placement;
use ivlink_lab::bench::rpmsg_rtt::{self, Comparison, RttPlan, RttResult};

use super::printable;
use crate::grammar::{
    parse_duration, parse_duration_was_us, parse_size_as, parse_uint, parse_wait,
};
use crate::report::{Lines, cli_name};
use crate::transport_args::TransportArgs;

/// `ivlink rpmsg` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RpmsgCommand {
    /// Remote side: announce an echo endpoint and send every message back
    Echo(EchoArgs),
    /// Host side: send a string COUNT times, printing each echo (5 s timeout each)
    Send(SendArgs),
    /// Host side: round trips per second and latency percentiles against `echo`
    Bench(BenchArgs),
}

impl RpmsgCommand {
    /// Runs the subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            RpmsgCommand::Echo(args) => args.run(),
            RpmsgCommand::Send(args) => args.run(),
            RpmsgCommand::Bench(args) => args.run(),
        }
    }
}

/// The layouts on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// ivlink's own layout through the region directory: any start order, restarts
    Native,
    /// OpenAMP's Linux generic machine layout (resource table at 0)
    OpenampLinux,
    /// openamp-system-reference dual_qemu_ivshmem (Zephyr): status at 0, vrings at the end
    ZephyrIvshmem,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Native => Profile::Native,
            ProfileArg::OpenampLinux => Profile::OpenampLinux,
            ProfileArg::ZephyrIvshmem => Profile::ZephyrIvshmem,
        }
    }
}

/// Link options shared by the subcommands.
#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// Layout of the region
    #[arg(long, value_enum, default_value_t = ProfileArg::Native)]
    pub profile: ProfileArg,

    /// Endpoint name (default: the profile's sample: rpmsg-echo, rpmsg-openamp-demo-channel, k)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// native: the section's name in the region directory
    #[arg(long, value_name = "NAME", default_value = "rpmsg")]
    pub section: String,

    /// native, if creating: buffers each way (a power of two up to 1024)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = parse_uint::<u16>)]
    pub buffers: u16,

    /// native, if creating: bytes per buffer, 16-byte header included (512, 4K, ...)
    #[arg(long, value_name = "SIZE", default_value_t = 512, value_parser = parse_size_as::<u32>)]
    pub buffer_size: u32,

    /// The doorbell vector
    #[arg(long, value_name = "V", default_value_t = 0, value_parser = parse_uint::<u16>)]
    pub vector: u16,

    /// Peer to ring (default: the native header says; zephyr-ivshmem: own id ± 1)
    #[arg(long, value_name = "ID", value_parser = parse_uint::<u16>)]
    pub peer: Option<u16>,

    /// zephyr-ivshmem host: the region's start as the Zephyr side addresses it: the
    /// virtual address its console prints as `shmem mapped at 0x…` (not the physical
    /// BAR2 address); a remote learns it from the host's first buffer
    #[arg(long, value_name = "ADDR", value_parser = parse_address, default_value = "0")]
    pub address_base: u64,

    /// How long to spin before sleeping on the doorbell (50us, 1ms, ...)
    #[arg(long, value_name = "TIME", default_value = "50us", value_parser = parse_duration_was_us)]
    pub spin: Duration,

    /// openamp-linux: the notification socket (the remote listens, the host connects)
    #[arg(long, value_name = "PATH", default_value = ivlink::transport::openamp::DEFAULT_SOCKET)]
    pub openamp_socket: PathBuf,

    /// openamp-linux: the POSIX shared memory object
    #[arg(long, value_name = "NAME", default_value = ivlink::transport::openamp::DEFAULT_SHM_NAME)]
    pub openamp_shm: String,

    /// openamp-linux: a plain file instead of the POSIX shared memory object
    #[arg(long, value_name = "PATH")]
    pub openamp_file: Option<PathBuf>,

    /// How to reach the region (every profile but openamp-linux)
    #[command(flatten)]
    pub transport: TransportArgs,
}

pub(crate) fn parse_address(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("'{s}' is not an address (decimal or 0x-hex)"))
}

impl LinkArgs {
    fn options(&self, role: Role) -> RpmsgOptions {
        let mut options = RpmsgOptions::new(self.profile.into(), role);
        options.section = self.section.clone();
        options.shape = NativeShape {
            num: self.buffers,
            buf_size: self.buffer_size,
        };
        options.vector = self.vector;
        options.peer = self.peer;
        options.address_base = self.address_base;
        options.spin = self.spin;
        options
    }

    /// The device: OpenAMP's shm and socket for openamp-linux, else the transport.
    /// A host on openamp-linux waits there for the remote side, as `wait` says.
    fn open_device(
        &self,
        role: Role,
        wait: Option<&mut RemoteWait>,
    ) -> anyhow::Result<Box<dyn Device>> {
        if self.profile != ProfileArg::OpenampLinux {
            return Ok(self.transport.transport().open()?);
        }
        let mut connect_timeout = OpenampOptions::default().connect_timeout;
        if let Some(wait) = wait {
            // The remote side is the one that listens: connecting is waiting for it.
            wait.announce(self.endpoint_name());
            connect_timeout = wait.left();
        }
        let options = OpenampOptions {
            socket: self.openamp_socket.clone(),
            shm: match &self.openamp_file {
                Some(path) => OpenampShm::File(path.clone()),
                None => OpenampShm::Posix(self.openamp_shm.clone()),
            },
            connect_timeout,
            ..OpenampOptions::default()
        };
        let role = role.into();
        Ok(Transport::Openamp { role, options }.open()?)
    }

    fn endpoint_name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| default_endpoint_name(self.profile.into()))
    }
}

/// Options of `ivlink rpmsg echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Print nothing per message
    #[arg(long, short)]
    pub quiet: bool,

    /// Exit after echoing this many messages
    #[arg(long, value_name = "N", value_parser = parse_uint::<u64>)]
    pub count: Option<u64>,

    /// Print JSON lines (each with an "event") instead of text
    #[arg(long)]
    pub json: bool,

    /// Pin this side to CPU N (give `rpmsg bench` the same as --echo-cpu)
    #[arg(long, value_name = "N", value_parser = parse_uint::<usize>)]
    pub cpu: Option<usize>,

    /// Link and transport
    #[command(flatten)]
    pub link: LinkArgs,
}

impl EchoArgs {
    /// Echoes until Ctrl-C (or `--count`).
    pub fn run(&self) -> anyhow::Result<()> {
        if let Some(cpu) = self.cpu {
            placement::pin(cpu).with_context(|| format!("cannot pin to CPU {cpu}"))?;
        }
        let device = self.link.open_device(Role::Remote, None)?;
        let mut link = RpmsgLink::open(&*device, &self.link.options(Role::Remote))?;
        let name = self.link.endpoint_name();
        let ep = link
            .create_endpoint(name, None, None)
            .with_context(|| format!("cannot create endpoint '{name}'"))?;
        let reports = Reports::new(self.json);
        let profile = cli_name(&self.link.profile);
        reports.event(
            format_args!(
                "peer {} echoing on endpoint '{name}' ({ep:#x}), profile {profile}; waiting for the host side",
                device.id(),
            ),
            serde_json::json!({
                "event": "start", "peer": device.id(), "endpoint": name, "addr": ep,
                "profile": profile,
            }),
        );
        let stop = super::stop_flag()?;
        let quiet = self.quiet;
        let echoed = serve_echo(
            &mut link,
            ep,
            self.count,
            self.link.profile == ProfileArg::OpenampLinux,
            &stop,
            &mut |step| match step {
                EchoStep::Message(payload) if !quiet => {
                    let text = trim_nul(payload);
                    reports.message(
                        format_args!(
                            "Host side sent a string:\n[ {} ]\nNow echoing it back!\n",
                            printable(text)
                        ),
                        serde_json::json!({
                            "event": "echo",
                            "text": String::from_utf8_lossy(text),
                            "bytes": payload.len(),
                        }),
                    );
                }
                EchoStep::Message(_) => {}
                EchoStep::Event(event) => reports.link(event),
                EchoStep::HostLeft => reports.event(
                    "the host side left; exiting",
                    serde_json::json!({"event": "host_left"}),
                ),
            },
        )?;
        reports.event(
            format_args!("echoed {echoed} messages"),
            serde_json::json!({"event": "done", "echoed": echoed}),
        );
        Ok(())
    }
}

/// Where `rpmsg echo` and `send` report: as text, messages on standard output
/// and link events on standard error; with `--json`, every one as a JSON line
/// on standard output.
#[derive(Debug, Clone, Copy)]
struct Reports {
    lines: Lines,
}

impl Reports {
    /// Text, or JSON lines when `json`.
    fn new(json: bool) -> Self {
        Reports {
            lines: Lines::new(json),
        }
    }

    /// A message line: `text` on standard output, or `json`. A closed standard
    /// output does not stop the link (the other side still gets its echoes).
    fn message(&self, text: impl std::fmt::Display, json: serde_json::Value) {
        let _ = self.lines.line(text, json);
    }

    /// An event: `text` on standard error, or `json` on standard output.
    fn event(&self, text: impl std::fmt::Display, json: serde_json::Value) {
        if self.lines.is_json() {
            let _ = self.lines.line("", json);
        } else {
            eprintln!("{text}");
        }
    }

    /// [`link`](Self::link) on the host side, which is ready only once its
    /// endpoint is bound (see [`wait_bound`]), not when the link comes up.
    fn host_link(&self, event: &LinkEvent) {
        if !matches!(event, LinkEvent::Up) {
            self.link(event);
        }
    }

    /// A link event other than a message for us.
    fn link(&self, event: &LinkEvent) {
        use serde_json::json;
        match event {
            LinkEvent::Up => self.event(
                "the communication over RPMsg is ready to use!",
                json!({"event": "up"}),
            ),
            LinkEvent::Reset { lost, cause } => {
                let (why, cause, detail) = match cause {
                    ResetCause::PeerRestarted => (
                        "the other side restarted".to_owned(),
                        "peer-restarted",
                        None,
                    ),
                    ResetCause::Corrupt(what) => {
                        (format!("corrupted ring: {what}"), "corrupt", Some(*what))
                    }
                };
                self.event(
                    format_args!(
                        "link reset ({why}): {lost} message(s) in flight lost; reconnecting"
                    ),
                    json!({"event": "reset", "cause": cause, "detail": detail, "lost": lost}),
                );
            }
            LinkEvent::Bound { local, remote } => self.event(
                format_args!("endpoint {local:#x} bound to remote endpoint {remote:#x}"),
                json!({"event": "bound", "local": local, "remote": remote}),
            ),
            LinkEvent::Announced { name, addr } => self.event(
                format_args!("remote endpoint '{name}' at {addr:#x} announced (not ours)"),
                json!({"event": "announced", "name": name.to_string(), "addr": addr}),
            ),
            LinkEvent::Unbound { name, addr, local } => self.event(
                format_args!("remote endpoint '{name}' at {addr:#x} went away"),
                json!({"event": "unbound", "name": name.to_string(), "addr": addr, "local": local}),
            ),
            LinkEvent::Message { local, src, len } => self.event(
                format_args!("dropped a {len}-byte message from {src:#x} to {local:#x}"),
                json!({"event": "dropped", "local": local, "src": src, "bytes": len}),
            ),
        }
    }
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(&[0]).unwrap_or(bytes)
}

/// How long a host waits for the remote side to come up and bind its endpoint:
/// one deadline for connecting and binding, announced once.
struct RemoteWait {
    budget: WaitBudget,
    announced: bool,
}

impl RemoteWait {
    /// `total` of a billion seconds or more (`--wait inf`) is forever.
    fn new(total: Duration) -> Self {
        RemoteWait {
            budget: WaitBudget::new(total),
            announced: false,
        }
    }

    fn left(&self) -> Duration {
        self.budget.left()
    }

    /// Says once that this side waits, and for how long still.
    fn announce(&mut self, endpoint: &str) {
        if std::mem::replace(&mut self.announced, true) {
            return;
        }
        if self.budget.is_forever() {
            eprintln!("waiting for the remote side (endpoint '{endpoint}')…");
        } else {
            eprintln!(
                "waiting for the remote side (endpoint '{endpoint}')… {:.1} s left",
                self.left().as_secs_f64()
            );
        }
    }
}

/// Opens the host side's session and waits until the remote binds its endpoint.
fn connect<'d>(
    device: &'d dyn Device,
    args: &LinkArgs,
    wait: &mut RemoteWait,
    stop: &AtomicBool,
    reports: Reports,
) -> anyhow::Result<HostSession<'d>> {
    let name = args.endpoint_name();
    let mut session = HostSession::open(device, &args.options(Role::Host), name)?;
    wait.announce(name);
    wait_bound(&mut session, args, &wait.budget, stop, reports)?;
    Ok(session)
}

/// Waits until the remote side has bound our endpoint: only then is the link
/// ready to use.
fn wait_bound(
    session: &mut HostSession<'_>,
    args: &LinkArgs,
    budget: &WaitBudget,
    stop: &AtomicBool,
    reports: Reports,
) -> anyhow::Result<()> {
    match session.wait_bound(budget, stop, &mut |event| reports.host_link(event)) {
        Ok(remote) => {
            reports.event(
                format_args!(
                    "connected to remote endpoint {remote:#x}\n\
                     the communication over RPMsg is ready to use!"
                ),
                serde_json::json!({
                    "event": "connected", "endpoint": args.endpoint_name(), "remote": remote,
                    "profile": cli_name(&args.profile),
                }),
            );
            Ok(())
        }
        Err(SessionError::NotAnnounced { name, waited })
            if args.profile == ProfileArg::ZephyrIvshmem =>
        {
            // Its only sign of addresses it cannot map is silence.
            Err(anyhow!(
                "the remote side did not announce endpoint '{name}' within {:.1} s: it likely \
                 rejects our buffers' addresses; pass --address-base the address the Zephyr \
                 side prints as `shmem mapped at 0x…` (now {:#x})",
                waited.as_secs_f64(),
                args.address_base
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Options of `ivlink rpmsg send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The string to send (with its NUL, like the sample)
    pub string: String,

    /// How many times
    #[arg(default_value_t = 1, value_parser = parse_uint::<u64>)]
    pub count: u64,

    /// How long to wait for each echo (500ms, 5s, ...; a bare number is seconds)
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How long to wait for the remote side to come up and bind (inf: as long as it takes)
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_wait)]
    pub wait: Duration,

    /// Print only the summary
    #[arg(long, short)]
    pub quiet: bool,

    /// Print JSON lines (each with an "event") instead of text
    #[arg(long)]
    pub json: bool,

    /// Link and transport
    #[command(flatten)]
    pub link: LinkArgs,
}

impl SendArgs {
    /// Sends and checks every echo.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut data = self.string.as_bytes().to_vec();
        data.push(0);
        let mut wait = RemoteWait::new(self.wait);
        let device = self.link.open_device(Role::Host, Some(&mut wait))?;
        let stop = super::stop_flag()?;
        let reports = Reports::new(self.json);
        let mut session = connect(&*device, &self.link, &mut wait, &stop, reports)?;
        if data.len() > session.max_payload() {
            bail!(
                "the string is {} bytes with its NUL; one RPMsg message carries at most {}",
                data.len(),
                session.max_payload()
            );
        }
        let timeout = self.timeout;
        let (mut echoed, mut lost) = (0u64, 0u64);
        for number in 1..=self.count {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let text = &data[..data.len() - 1];
            match session.round_trip(&data, timeout, &mut |event| reports.host_link(event))? {
                Outcome::Echoed => {
                    echoed += 1;
                    if !self.quiet {
                        reports.lines.line(
                            format_args!(
                                "Remote side echoed the string back:\n[ {} ]\nat message number {number}\n",
                                printable(text)
                            ),
                            serde_json::json!({
                                "event": "echoed", "number": number,
                                "text": String::from_utf8_lossy(text), "bytes": data.len(),
                            }),
                        )?;
                    }
                }
                Outcome::Mismatch => {
                    if self.json {
                        let mismatch = serde_json::json!({"event": "mismatch", "number": number});
                        reports.lines.line("", mismatch)?;
                    }
                    bail!("the echo of message {number} differs from what was sent")
                }
                Outcome::Lost => {
                    lost += 1;
                    reports.event(
                        format_args!("message number {number} was lost in the reset"),
                        serde_json::json!({"event": "lost", "number": number}),
                    );
                    let budget = WaitBudget::new(self.wait);
                    wait_bound(&mut session, &self.link, &budget, &stop, reports)?;
                }
                Outcome::TimedOut => {
                    reports.lines.line(
                        "Remote side response timed out!",
                        serde_json::json!({"event": "timed_out", "number": number}),
                    )?;
                    std::process::exit(1);
                }
            }
        }
        let sent = echoed + lost;
        if self.json {
            reports.lines.line(
                "",
                serde_json::json!({"event": "done", "sent": sent, "echoed": echoed, "lost": lost}),
            )?;
        } else if self.quiet || lost > 0 {
            println!("sent {sent}, echoed {echoed}, lost {lost}");
        }
        Ok(())
    }
}

/// Options of `ivlink rpmsg bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Round trips to measure
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = parse_uint::<u64>)]
    pub count: u64,

    /// Payload per message (a size: 64, 1K, ...)
    #[arg(long, value_name = "SIZE", default_value_t = 64, value_parser = parse_size_as::<usize>)]
    pub size: usize,

    /// Round trips before measuring, in every round
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = parse_uint::<u64>)]
    pub warmup: u64,

    /// Rounds that alternate RPMsg and the reference ring ping-pong, sharing
    /// --count: a slow phase of the machine weighs on both alike
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = parse_uint::<u64>)]
    pub rounds: u64,

    /// How long to wait for each echo (500ms, 5s, ...; a bare number is seconds)
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How long to wait for the remote side to come up (inf: as long as it takes)
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_wait)]
    pub wait: Duration,

    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,

    /// Pin this side to CPU N
    #[arg(long, value_name = "N", value_parser = parse_uint::<usize>)]
    pub cpu: Option<usize>,

    /// The CPU the echo side runs on (`rpmsg echo --cpu N`): the reference ring
    /// ping-pong's echo thread is pinned there, for the same placement
    #[arg(long, value_name = "N", value_parser = parse_uint::<usize>)]
    pub echo_cpu: Option<usize>,

    /// Link and transport
    #[command(flatten)]
    pub link: LinkArgs,
}

impl BenchArgs {
    /// Measures round trips against a running `ivlink rpmsg echo` and the
    /// reference ring ping-pong with the same payload, in alternating rounds.
    pub fn run(&self) -> anyhow::Result<()> {
        if self.rounds == 0 {
            anyhow::bail!("--rounds must be at least 1");
        }
        if let Some(cpu) = self.cpu {
            placement::pin(cpu).with_context(|| format!("cannot pin to CPU {cpu}"))?;
        }
        let mut wait = RemoteWait::new(self.wait);
        let device = self.link.open_device(Role::Host, Some(&mut wait))?;
        let stop = super::stop_flag()?;
        // With --json standard output carries the one object: link events stay text, on stderr.
        let reports = Reports::new(false);
        let mut session = connect(&*device, &self.link, &mut wait, &stop, reports)?;
        let plan = RttPlan {
            size: self.size,
            warmup: self.warmup,
            count: self.count,
            timeout: self.timeout,
        };
        let compared = rpmsg_rtt::compare(&plan, self.rounds, self.echo_cpu, |round| {
            rpmsg_rtt::measure(&mut session, round, &mut |event| reports.host_link(event))
        })?;
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.json_report(&compared))?
            );
        } else {
            self.print_text(&compared);
        }
        Ok(())
    }

    /// The one JSON object (docs/json.md).
    fn json_report(&self, compared: &Comparison) -> serde_json::Value {
        use serde_json::json;
        let latency = |r: &RttResult| {
            let p = r.latency_ns;
            json!({
                "min": p.min, "p50": p.p50, "p90": p.p90, "p99": p.p99, "p999": p.p999, "max": p.max,
            })
        };
        let rpmsg = &compared.rpmsg;
        let ring = &compared.ring;
        let ratios: Vec<_> = compared
            .ratios()
            .iter()
            .map(|(metric, value)| json!({"name": "rpmsg/ring", "metric": metric, "value": value}))
            .collect();
        json!({
            "profile": cli_name(&self.link.profile),
            "size": self.size,
            "round_trips": self.count,
            "rounds": self.rounds,
            "seconds": rpmsg.seconds,
            "round_trips_per_second": rpmsg.round_trips_per_second,
            "latency_ns": latency(rpmsg),
            "cpu": self.cpu,
            "echo_cpu": self.echo_cpu,
            "reference": {
                "mechanism": "memcpy-ring",
                "how": rpmsg_rtt::REFERENCE_HOW,
                "round_trips": self.count,
                "seconds": ring.seconds,
                "round_trips_per_second": ring.round_trips_per_second,
                "latency_ns": latency(ring),
            },
            "ratios": ratios,
            "targets": [compared.target()],
        })
    }

    fn print_text(&self, compared: &Comparison) {
        let (rpmsg, ring) = (&compared.rpmsg, &compared.ring);
        let p = rpmsg.latency_ns;
        println!(
            "{} round trips of {} bytes in {:.3} s: {:.0} round trips/s",
            self.count, self.size, rpmsg.seconds, rpmsg.round_trips_per_second
        );
        println!(
            "round-trip latency: min {} p50 {} p99 {} p99.9 {} max {}",
            micros(p.min),
            micros(p.p50),
            micros(p.p99),
            micros(p.p999),
            micros(p.max)
        );
        let r = ring.latency_ns;
        println!(
            "reference ({}{}): {:.0} round trips/s, p50 {} p99 {}",
            rpmsg_rtt::REFERENCE_HOW,
            self.echo_cpu
                .map_or(String::new(), |cpu| format!(", echo thread on CPU {cpu}")),
            ring.round_trips_per_second,
            micros(r.p50),
            micros(r.p99),
        );
        let ratios = compared.ratios();
        println!(
            "rpmsg/ring: {:.2}x p50, {:.2}x p99, {:.2}x time per round trip",
            ratios[0].1, ratios[1].1, ratios[2].1
        );
        println!("\nTargets (reported, not asserted)");
        let t = compared.target();
        println!(
            "  {:<64} {:<28} {}",
            t.goal,
            t.shown,
            if t.met { "met" } else { "NOT met" }
        );
    }
}

fn micros(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}
