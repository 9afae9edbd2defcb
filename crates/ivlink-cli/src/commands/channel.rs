//! `ivlink channel send` and `ivlink channel recv` (also spelled `ivlink send` and
//! `ivlink recv`, as before): messages over a named channel, where any number of
//! peers can write without corrupting each other.

use std::time::Duration;

use clap::{Args, Subcommand};
use ivlink::channel::{Channel, ChannelShape, open_named};
use ivlink::wait::SpinThenSleep;
use serde::Serialize;
use serde_json::json;

use super::printable;
use crate::grammar::{parse_duration, parse_duration_was_us, parse_size_as, parse_uint};
use crate::report::Lines;
use crate::transport_args::TransportArgs;

/// `ivlink channel` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ChannelCommand {
    /// Send messages to a peer over a named channel
    Send(SendArgs),
    /// Receive messages from every peer on a named channel
    Recv(RecvArgs),
}

impl ChannelCommand {
    /// Runs the subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            ChannelCommand::Send(args) => args.run(),
            ChannelCommand::Recv(args) => args.run(),
        }
    }
}

/// How a channel is opened (and shaped, if this peer creates it).
#[derive(Debug, Clone, Args)]
pub struct ChannelArgs {
    /// Channel name (created in the region's directory if missing)
    pub channel: String,

    /// If creating: member slots
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = parse_uint::<u32>)]
    pub members: u32,

    /// If creating: data bytes per ring (a power of two: 16K, 1M, ...)
    #[arg(long, value_name = "SIZE", default_value = "16K", value_parser = parse_size_as::<usize>)]
    pub ring_capacity: usize,

    /// If creating: the doorbell vector of the channel
    #[arg(long, value_name = "V", default_value_t = 0, value_parser = parse_uint::<u16>)]
    pub vector: u16,

    /// How long to spin before sleeping on the doorbell (50us, 1ms, ...)
    #[arg(long, value_name = "TIME", default_value = "50us", value_parser = parse_duration_was_us)]
    pub spin: Duration,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl ChannelArgs {
    fn shape(&self) -> ChannelShape {
        ChannelShape {
            max_members: self.members,
            ring_capacity: self.ring_capacity,
            vector: self.vector,
        }
    }

    fn policy(&self) -> SpinThenSleep {
        SpinThenSleep { spin: self.spin }
    }
}

/// Options of `ivlink channel send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Channel and transport
    #[command(flatten)]
    pub channel: ChannelArgs,

    /// Peer to send to
    #[arg(long, value_name = "PEER", value_parser = parse_uint::<u16>)]
    pub to: u16,

    /// Messages (each argument one message)
    #[arg(required = true)]
    pub messages: Vec<String>,

    /// How long to wait for the peer to join and make room (500ms, 10s, ...)
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// What `ivlink channel send --json` prints, once everything is published.
#[derive(Debug, Serialize)]
struct SendReport<'a> {
    channel: &'a str,
    from: ivlink::PeerId,
    to: ivlink::PeerId,
    messages: usize,
    bytes: usize,
}

impl SendArgs {
    /// Sends every message, then publishes them (ringing the peer if it sleeps).
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.channel.transport.transport().open()?;
        let timeout = self.timeout;
        let layout = open_named(
            &*device,
            &self.channel.channel,
            self.channel.shape(),
            timeout,
        )?;
        let mut endpoint = Channel::join(&*device, layout, self.channel.policy())?;
        if !endpoint.wait_for_member(self.to, timeout)? {
            anyhow::bail!(
                "peer {} did not join channel '{}' in time",
                self.to,
                self.channel.channel
            );
        }
        for message in &self.messages {
            endpoint.send(self.to, message.as_bytes(), Some(timeout))?;
        }
        endpoint.flush()?;
        if self.json {
            return crate::report::print_json(&SendReport {
                channel: &self.channel.channel,
                from: device.id(),
                to: self.to,
                messages: self.messages.len(),
                bytes: self.messages.iter().map(String::len).sum(),
            });
        }
        println!(
            "sent {} message(s) to peer {} on channel '{}'",
            self.messages.len(),
            self.to,
            self.channel.channel
        );
        Ok(())
    }
}

/// Options of `ivlink channel recv`.
#[derive(Debug, Clone, Args)]
pub struct RecvArgs {
    /// Channel and transport
    #[command(flatten)]
    pub channel: ChannelArgs,

    /// Exit after this many messages
    #[arg(long, value_name = "N", value_parser = parse_uint::<u64>)]
    pub count: Option<u64>,

    /// Exit with an error if nothing arrives for this long (500ms, 10s, 5m, ...)
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Print JSON lines (one object per event)
    #[arg(long)]
    pub json: bool,
}

impl RecvArgs {
    /// Prints each message with its sender.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.channel.transport.transport().open()?;
        let layout = open_named(
            &*device,
            &self.channel.channel,
            self.channel.shape(),
            Duration::from_secs(10),
        )?;
        let mut endpoint = Channel::join(&*device, layout, self.channel.policy())?;
        let lines = Lines::new(self.json);
        lines.line(
            format_args!(
                "peer {} receiving on channel '{}' (slot {})",
                device.id(),
                self.channel.channel,
                endpoint.slot()
            ),
            json!({
                "event": "receiving",
                "id": device.id(),
                "channel": self.channel.channel,
                "slot": endpoint.slot(),
            }),
        )?;
        let stop = super::stop_flag()?;
        let timeout = self.timeout;
        let mut buf = vec![0u8; self.channel.ring_capacity.max(1 << 16)];
        let mut received = 0u64;
        let mut last = std::time::Instant::now();
        while self.count.is_none_or(|c| received < c)
            && !stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            match endpoint.recv(&mut buf, Some(Duration::from_millis(200)))? {
                Some((from, len)) => {
                    received += 1;
                    last = std::time::Instant::now();
                    let text = printable(&buf[..len]);
                    lines.line(
                        format_args!("from peer {from}: {text}"),
                        json!({ "event": "message", "from": from, "len": len, "text": text }),
                    )?;
                }
                None => {
                    // Everything is drained: free the slots of peers that left, so
                    // the channel does not fill up with departed members.
                    endpoint.evict_departed()?;
                    if let Some(limit) = timeout
                        && last.elapsed() >= limit
                    {
                        anyhow::bail!("no message within {limit:?}");
                    }
                }
            }
        }
        Ok(())
    }
}
