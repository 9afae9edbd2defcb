//! `ivlink listen`: print each notification with the message in the region, and
//! peers joining and leaving (the seeds' receiving side).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use ivlink::raw_message;
use ivlink::{Device, Event, WaitFor};

use super::printable;
use crate::transport_args::TransportArgs;

/// Longest message shown.
const MAX_SHOWN: usize = 4096;

/// Options of `ivlink listen`.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Exit after this many notifications
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Exit with an error if nothing arrives for this many seconds
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,

    /// Only print notifications, not the message at offset 0
    #[arg(long)]
    pub no_message: bool,

    /// With --file: milliseconds between looks at the region
    #[arg(long, value_name = "MS", default_value_t = 1)]
    pub poll_interval: u64,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl ListenArgs {
    /// Listens until stopped, `--count` notifications, or `--timeout`.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        let stop = super::stop_flag()?;
        let timeout = self.timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let mut received = 0u64;
        let mut last_event = Instant::now();
        // Taken before announcing that we listen, so a change made right after the
        // announcement is seen.
        let mut last_message = self.message(&*device);
        println!(
            "Listening as peer {} ({} vector(s), {} bytes); Ctrl-C to stop",
            device.id(),
            device.vectors(),
            ivlink::Region::len(device.region())
        );
        let tick = Duration::from_millis(if device.has_doorbell() {
            100
        } else {
            self.poll_interval.max(1)
        });
        while !stop.load(Ordering::Relaxed) && self.count.is_none_or(|c| received < c) {
            if let Some(limit) = timeout
                && last_event.elapsed() >= limit
            {
                anyhow::bail!("no notification within {limit:?}");
            }
            match device.wait(WaitFor::ANYTHING, Some(tick))? {
                Some(Event::Notified { vector, count }) => {
                    received += 1;
                    last_event = Instant::now();
                    self.report(&*device, Some((vector, count)));
                }
                Some(Event::ServerGone) => anyhow::bail!("the server went away"),
                Some(other) => println!("{other}"),
                None if !device.has_doorbell() => {
                    // Polling: a changed message stands for a notification.
                    let message = self.message(&*device);
                    if message != last_message {
                        received += 1;
                        last_event = Instant::now();
                        self.report(&*device, None);
                        last_message = message;
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    fn message(&self, device: &dyn Device) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_SHOWN];
        let len = raw_message::read(device.region(), raw_message::OFFSET, &mut buf).unwrap_or(0);
        buf.truncate(len);
        buf
    }

    fn report(&self, device: &dyn Device, notification: Option<(u16, u64)>) {
        let prefix = match notification {
            Some((vector, 1)) => format!("vector {vector}: "),
            Some((vector, count)) => format!("vector {vector} ({count} coalesced): "),
            None => String::from("region changed: "),
        };
        if self.no_message {
            println!("{prefix}received IRQ");
        } else {
            let text = printable(&self.message(device));
            println!("{prefix}received IRQ and full message: {text}");
        }
    }
}
