//! `ivlink notify`: write a message into the region and ring a peer, once or
//! continuously (the seeds' `ivshmem_send_notify` and `ivshmem_send_continuous`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ivlink::raw_message::{self, RawSend, RawSendError, Sent};
use ivlink::{PeerId, Vector};
use serde::Serialize;

use crate::grammar::{parse_duration, parse_duration_was_ms, parse_size_as, parse_uint};
use crate::transport_args::TransportArgs;

/// Options of `ivlink notify`.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// Peer to notify
    #[arg(value_parser = parse_uint::<u16>)]
    pub peer: PeerId,
    /// Vector to ring on the peer
    #[arg(value_parser = parse_uint::<u16>)]
    pub vector: Vector,
    /// Message written at offset 0 of the region, in the message area before the
    /// ivlink directory (Zephyr's doorbell sample layout)
    pub message: Option<String>,

    /// Write the message at this offset instead of 0 (a size: 4096, 1M, ...)
    #[arg(long, value_name = "OFFSET", default_value_t = raw_message::OFFSET,
          value_parser = parse_size_as::<usize>)]
    pub offset: usize,

    /// Write the message even over an ivlink directory or its sections
    #[arg(long)]
    pub force: bool,

    /// Keep sending until Ctrl-C (or --count / --duration)
    #[arg(long)]
    pub continuous: bool,

    /// With --continuous: time between messages (100ms, 2s, ...)
    #[arg(long, value_name = "TIME", default_value = "100ms", value_parser = parse_duration_was_ms)]
    pub interval: Duration,

    /// With --continuous: stop after this many messages
    #[arg(long, value_name = "N", value_parser = parse_uint::<u64>)]
    pub count: Option<u64>,

    /// With --continuous: stop after this long (500ms, 2s, 10m, 6h; a bare number is seconds)
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Ring a peer above vector 255 anyway (QEMU guests only see the low 8 bits)
    #[arg(long)]
    pub allow_wide_vector: bool,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// What `ivlink notify --json` prints, once at the end.
#[derive(Debug, Serialize)]
struct NotifyReport<'a> {
    peer: PeerId,
    vector: Vector,
    message: Option<&'a str>,
    message_len: usize,
    offset: usize,
    /// False where the transport has no doorbell: the message is only written.
    notified: bool,
    sent: u64,
    continuous: bool,
    transport: String,
}

impl NotifyArgs {
    /// Sends.
    pub fn run(&self) -> anyhow::Result<()> {
        if self.vector > 255 && !self.allow_wide_vector {
            anyhow::bail!(
                "vector {} is above 255: QEMU's doorbell keeps only the low 8 bits (use --allow-wide-vector to force)",
                self.vector
            );
        }
        let device = self.transport.transport().open()?;
        // Where the transport knows the peers, a wrong peer or vector is an error
        // before anything is written.
        if device.knows_peers() {
            raw_message::check_reachable(&*device, self.peer, self.vector).with_context(|| {
                format!("cannot notify peer {} on vector {}", self.peer, self.vector)
            })?;
        }
        let stop = super::stop_flag()?;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut notified = true;
        let lines = crate::report::Lines::new(self.json);
        let send = RawSend {
            peer: self.peer,
            vector: self.vector,
            message: self.message.as_deref().map(str::as_bytes),
            offset: self.offset,
            force: self.force,
        };
        loop {
            match raw_message::write_and_notify(&*device, &send) {
                Ok(Sent::Notified) => match &self.message {
                    Some(m) => lines.text(format_args!(
                        "Message {m} sent to peer {} on vector {}",
                        self.peer, self.vector
                    ))?,
                    None => lines.text(format_args!(
                        "Notification sent to peer {} on vector {}",
                        self.peer, self.vector
                    ))?,
                },
                Ok(Sent::WrittenOnly) => {
                    notified = false;
                    lines.text(format_args!(
                        "Message {} written; {} has no doorbell, so peers see it by polling",
                        self.message.as_deref().unwrap_or_default(),
                        device.describe()
                    ))?;
                }
                Err(e @ RawSendError::Clash { .. }) => anyhow::bail!(
                    "{e}; pass --offset N to write it elsewhere, or --force to overwrite"
                ),
                Err(e) => return Err(e.into()),
            }
            sent += 1;
            let done = !self.continuous
                || stop.load(Ordering::Relaxed)
                || self.count.is_some_and(|c| sent >= c)
                || self.duration.is_some_and(|d| started.elapsed() >= d);
            if done {
                break;
            }
            sleep_unless_stopped(self.interval, &stop);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if self.json {
            crate::report::print_json(&NotifyReport {
                peer: self.peer,
                vector: self.vector,
                message: self.message.as_deref(),
                message_len: self.message.as_deref().map_or(0, str::len),
                offset: self.offset,
                notified,
                sent,
                continuous: self.continuous,
                transport: device.describe(),
            })?;
        } else if self.continuous {
            println!("Stopped after {sent} message(s)");
        }
        Ok(())
    }
}

fn sleep_unless_stopped(total: Duration, stop: &std::sync::atomic::AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
