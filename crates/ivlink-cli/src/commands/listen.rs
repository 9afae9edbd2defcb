//! `ivlink listen`: print each notification with the message in the region, and
//! peers joining and leaving (the seeds' receiving side).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use ivlink::Event;
use ivlink::raw_message::{Heard, Listener};
use serde_json::{Value, json};

use super::printable;
use crate::grammar::{parse_duration, parse_duration_was_ms, parse_uint};
use crate::report::Lines;
use crate::transport_args::TransportArgs;

/// Options of `ivlink listen`.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Exit after this many notifications
    #[arg(long, value_name = "N", value_parser = parse_uint::<u64>)]
    pub count: Option<u64>,

    /// Exit with an error if nothing arrives for this long (500ms, 10s, 5m, ...)
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Only print notifications, not the message at offset 0
    #[arg(long)]
    pub no_message: bool,

    /// With --file: time between looks at the region (1ms, 500us, ...)
    #[arg(long, value_name = "TIME", default_value = "1ms", value_parser = parse_duration_was_ms)]
    pub poll_interval: Duration,

    /// Print JSON lines (one object per event)
    #[arg(long)]
    pub json: bool,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl ListenArgs {
    /// Listens until stopped, `--count` notifications, or `--timeout`.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        let stop = super::stop_flag()?;
        let timeout = self.timeout;
        let mut received = 0u64;
        let mut last_event = Instant::now();
        // Made before announcing that we listen, so a change made right after the
        // announcement is seen.
        let mut listener = Listener::new(&*device, self.poll_interval);
        let lines = Lines::new(self.json);
        let size = ivlink::Region::len(device.region());
        lines.line(
            format_args!(
                "Listening as peer {} ({} vector(s), {size} bytes); Ctrl-C to stop",
                device.id(),
                device.vectors(),
            ),
            json!({
                "event": "listening",
                "id": device.id(),
                "vectors": device.vectors(),
                "size": size,
            }),
        )?;
        while !stop.load(Ordering::Relaxed) && self.count.is_none_or(|c| received < c) {
            if let Some(limit) = timeout
                && last_event.elapsed() >= limit
            {
                anyhow::bail!("no notification within {limit:?}");
            }
            let notification = match listener.listen()? {
                Some(Heard::Notified { vector, count }) => Some((vector, count)),
                Some(Heard::Changed) => None,
                Some(Heard::ServerGone) => anyhow::bail!("the server went away"),
                Some(Heard::Peer(event)) => {
                    lines.line(&event, event_json(&event))?;
                    continue;
                }
                None => continue,
            };
            received += 1;
            last_event = Instant::now();
            self.report(lines, &listener, notification)?;
        }
        Ok(())
    }

    fn report(
        &self,
        lines: Lines,
        listener: &Listener<'_>,
        notification: Option<(u16, u64)>,
    ) -> anyhow::Result<()> {
        let prefix = match notification {
            Some((vector, 1)) => format!("vector {vector}: "),
            Some((vector, count)) => format!("vector {vector} ({count} coalesced): "),
            None => String::from("region changed: "),
        };
        let message = (!self.no_message).then(|| printable(&listener.message()));
        let text = match &message {
            None => format!("{prefix}received IRQ"),
            Some(message) => format!("{prefix}received IRQ and full message: {message}"),
        };
        let json = match notification {
            Some((vector, count)) => json!({
                "event": "notification",
                "vector": vector,
                "count": count,
                "message": message,
            }),
            None => json!({ "event": "region_changed", "message": message }),
        };
        lines.line(text, json)
    }
}

/// A device event as a JSON line (listeners only hear peers join and leave).
fn event_json(event: &Event) -> Value {
    match *event {
        Event::PeerJoined { peer, vectors } => {
            json!({ "event": "peer_joined", "id": peer, "vectors": vectors })
        }
        Event::PeerLeft { peer } => json!({ "event": "peer_left", "id": peer }),
        Event::Notified { vector, count } => {
            json!({ "event": "notification", "vector": vector, "count": count, "message": null })
        }
        Event::ServerGone => json!({ "event": "server_gone" }),
    }
}
