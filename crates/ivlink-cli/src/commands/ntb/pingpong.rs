//! `ivlink ntb pingpong`: ntb_pingpong (drivers/ntb/test/ntb_pingpong.c) over
//! a switch on the region. A counter goes from port to port: each ping writes
//! this port's count into the chosen peer's scratchpad 0 and message 0 and
//! rings the doorbell bit of the peer's port number; each doorbell on this
//! port's own bit is a pong, which counts one up and pings back after the
//! delay.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use ivlink::ntb::{Events, Ntb, NtbError};

use super::SwitchArgs;
use crate::grammar::{format_duration, parse_duration, parse_uint};
use crate::report::Lines;

/// How often a wait looks at the stop flag.
const STOP_TICK: Duration = Duration::from_millis(100);

/// Options of `ivlink ntb pingpong`.
#[derive(Debug, Clone, Args)]
pub struct PingpongArgs {
    /// Time between a pong and the next ping (ntb_pingpong's `delay_ms`; also
    /// `--delay-ms N` in milliseconds, as the module parameter is spelled)
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = parse_duration)]
    pub delay: Duration,

    /// ntb_pingpong's `delay_ms`: the delay in milliseconds
    #[arg(long, value_name = "MS", hide = true, conflicts_with = "delay",
          value_parser = parse_uint::<u64>)]
    pub delay_ms: Option<u64>,

    /// Stop after this many pongs
    #[arg(long, value_name = "N", value_parser = parse_uint::<u64>)]
    pub count: Option<u64>,

    /// Stop after this long (500ms, 10s, 5m, ...)
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Print JSON lines instead of text
    #[arg(long)]
    pub json: bool,

    /// The switch and the port
    #[command(flatten)]
    pub switch: SwitchArgs,
}

impl PingpongArgs {
    /// Runs it until `--count` pongs, `--duration`, SIGINT or SIGTERM.
    pub fn run(&self) -> anyhow::Result<()> {
        let stop = crate::commands::stop_flag()?;
        let device = self.switch.device()?;
        let ntb = self.switch.open(&*device)?;
        let delay = self.delay_ms.map_or(self.delay, Duration::from_millis);
        let mut pingpong = PingPong::start(&ntb, delay)?;
        let mut out = Output {
            lines: Lines::new(self.json),
        };
        out.started(&ntb, delay)?;
        let end = self.duration.map(|d| Instant::now() + d);
        let mut seen = ntb.events();
        pingpong.setup(&mut out)?;
        while !stop.load(Ordering::Relaxed)
            && self.count.is_none_or(|n| pingpong.count < n)
            && end.is_none_or(|end| Instant::now() < end)
        {
            pingpong.ping_if_due()?;
            let mut timeout = STOP_TICK;
            if let Some(due) = pingpong.ping_at {
                timeout = timeout.min(due.saturating_duration_since(Instant::now()));
            }
            if let Some(end) = end {
                timeout = timeout.min(end.saturating_duration_since(Instant::now()));
            }
            let events = ntb.wait_events(&mut seen, Some(timeout))?;
            if events.contains(Events::LINK) {
                pingpong.setup(&mut out)?;
            }
            // Looked at on every wake, not only on a doorbell event: the
            // register, not the event, is the truth.
            pingpong.pong_if_rung(&mut out)?;
        }
        pingpong.clear()?;
        ntb.link_disable()?;
        Ok(())
    }
}

/// ntb_pingpong's context (`struct pp_ctx`).
struct PingPong<'a, 'd> {
    ntb: &'a Ntb<'d>,
    delay: Duration,
    /// `BIT(local port)`.
    in_db: u64,
    /// The peers whose link is up, as last seen.
    link: u64,
    /// The peer pinged, and its doorbell bit `BIT(peer port)`.
    out: Option<(u32, u64)>,
    /// When the timer fires, if armed.
    ping_at: Option<Instant>,
    /// Whether `in_db` is unmasked (between a ping and its pong).
    armed: bool,
    /// Pongs received.
    count: u64,
}

impl<'a, 'd> PingPong<'a, 'd> {
    /// `pp_mask_events` and `ntb_link_enable`: every doorbell and message
    /// event masked, then the link up.
    fn start(ntb: &'a Ntb<'d>, delay: Duration) -> anyhow::Result<Self> {
        let port = ntb.port_number();
        if port >= 64 {
            anyhow::bail!("port {port} has no doorbell bit");
        }
        ntb.db_set_mask(ntb.db_valid_mask())?;
        if ntb.msg_count() > 0 {
            ntb.msg_set_mask(ntb.msg_inbits() | ntb.msg_outbits())?;
        }
        ntb.link_enable()?;
        Ok(PingPong {
            ntb,
            delay,
            in_db: 1 << port,
            link: 0,
            out: None,
            ping_at: None,
            armed: false,
            count: 0,
        })
    }

    /// `pp_setup`, on every link event: mask the inbound bit, stop the
    /// timer, choose the peer again and start the timer if there is one.
    fn setup(&mut self, out: &mut Output) -> anyhow::Result<()> {
        self.ntb.db_set_mask(self.in_db)?;
        self.armed = false;
        self.ping_at = None;
        let link = self.ntb.link_is_up()?;
        for pidx in 0..self.ntb.peer_port_count() {
            let bit = 1 << pidx;
            if (link ^ self.link) & bit != 0 {
                out.link(self.ntb.peer_port_number(pidx)?, link & bit != 0)?;
            }
        }
        self.link = link;
        let out_peer = self.next_peer(link)?;
        if out_peer.map(|(pidx, _)| pidx) != self.out.map(|(pidx, _)| pidx) {
            let port = match out_peer {
                Some((pidx, _)) => Some(self.ntb.peer_port_number(pidx)?),
                None => None,
            };
            out.peer(port)?;
        }
        self.out = out_peer;
        if self.out.is_some() {
            self.ping_at = Some(Instant::now() + self.delay);
        }
        Ok(())
    }

    /// `pp_find_next_peer`: the first linked-up peer with a higher port
    /// number, else the first with a lower one.
    fn next_peer(&self, link: u64) -> anyhow::Result<Option<(u32, u64)>> {
        let port = self.ntb.port_number();
        let mut lower = None;
        for pidx in (0..self.ntb.peer_port_count()).filter(|p| link & (1 << p) != 0) {
            let peer_port = self.ntb.peer_port_number(pidx)?;
            if peer_port >= 64 {
                continue;
            }
            let chosen = Some((pidx, 1u64 << peer_port));
            if peer_port > port {
                return Ok(chosen);
            }
            lower = lower.or(chosen);
        }
        Ok(lower)
    }

    /// `pp_ping`, when the timer is due: the count into the peer's
    /// scratchpad 0 and message 0, its doorbell bit rung, the inbound bit
    /// unmasked.
    fn ping_if_due(&mut self) -> anyhow::Result<()> {
        let (Some(due), Some((pidx, out_db))) = (self.ping_at, self.out) else {
            return Ok(());
        };
        if Instant::now() < due {
            return Ok(());
        }
        self.ping_at = None;
        let count = self.count as u32;
        let pinged = (|| {
            self.ntb.peer_spad_write(pidx, 0, count)?;
            // A refused message (the register still full) is what the
            // hardware would do too: the scratchpad carries the count.
            self.ntb.peer_msg_write(pidx, 0, count)?;
            self.ntb.peer_db_set(out_db)
        })();
        match pinged {
            Ok(()) => {}
            // The link went down under the ping: its event sets things up again.
            Err(NtbError::NotConnected { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.ntb.db_clear_mask(self.in_db)?;
        self.armed = true;
        Ok(())
    }

    /// `pp_pong`, when the inbound bit is rung while unmasked: read the
    /// scratchpad and the message, free the message registers, count, mask
    /// and clear the bit and start the timer.
    fn pong_if_rung(&mut self, out: &mut Output) -> anyhow::Result<()> {
        if !self.armed || self.ntb.db_read()? & self.in_db == 0 {
            return Ok(());
        }
        let spad = self.ntb.spad_read(0)?;
        let message = if self.ntb.msg_count() > 0 {
            let message = self.ntb.msg_read(0)?;
            self.ntb.msg_clear_sts(u32::MAX)?;
            Some(message)
        } else {
            None
        };
        self.count += 1;
        self.ntb.db_set_mask(self.in_db)?;
        self.armed = false;
        self.ntb.db_clear(self.in_db)?;
        if self.out.is_some() {
            self.ping_at = Some(Instant::now() + self.delay);
        }
        let full = message.filter(|m| m.full);
        let from = match full.and_then(|m| m.from) {
            Some(pidx) => Some(self.ntb.peer_port_number(pidx)?),
            None => None,
        };
        out.pong(Pong {
            from,
            count: self.count,
            spad,
            msg: full.map(|m| m.data),
        })
    }

    /// `pp_clear`: the timer stopped and the inbound bit masked.
    fn clear(&mut self) -> anyhow::Result<()> {
        self.ping_at = None;
        self.armed = false;
        self.ntb.db_set_mask(self.in_db)?;
        Ok(())
    }
}

/// One pong as printed.
struct Pong {
    /// The port whose message came with it.
    from: Option<u32>,
    /// This port's count, the pong included.
    count: u64,
    /// Scratchpad 0: the peer's count when it pinged.
    spad: u32,
    /// Message 0, if one was waiting.
    msg: Option<u32>,
}

/// Where the lines go: text or JSON lines on standard output.
struct Output {
    lines: Lines,
}

impl Output {
    fn line(&mut self, text: &str, json: serde_json::Value) -> anyhow::Result<()> {
        self.lines.line(text, json)
    }

    fn started(&mut self, ntb: &Ntb<'_>, delay: Duration) -> anyhow::Result<()> {
        let (port, ports) = (ntb.port_number(), ntb.port_count());
        let delay_ms = delay.as_millis();
        self.line(
            &format!("pingpong on port {port} of {ports}, delay {}", format_duration(delay)),
            serde_json::json!({"event": "start", "port": port, "ports": ports, "delay_ms": delay_ms}),
        )
    }

    fn link(&mut self, port: u32, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        self.line(
            &format!("link {state}: port {port}"),
            serde_json::json!({"event": "link", "port": port, "up": up}),
        )
    }

    fn peer(&mut self, port: Option<u32>) -> anyhow::Result<()> {
        let text = match port {
            Some(port) => format!("pinging port {port}"),
            None => "no peer to ping".to_owned(),
        };
        self.line(&text, serde_json::json!({"event": "peer", "port": port}))
    }

    fn pong(&mut self, pong: Pong) -> anyhow::Result<()> {
        let from = pong
            .from
            .map_or_else(|| "an unknown port".to_owned(), |p| format!("port {p}"));
        let msg = pong
            .msg
            .map_or_else(|| "none".to_owned(), |m| m.to_string());
        self.line(
            &format!(
                "pong from {from}: count {} (spad {}, msg {msg})",
                pong.count, pong.spad
            ),
            serde_json::json!({
                "event": "pong",
                "from": pong.from,
                "count": pong.count,
                "spad": pong.spad,
                "msg": pong.msg,
            }),
        )
    }
}
