//! `ivlink mailbox` (alias `ivlink ipm`): a Zephyr-IPM-like mailbox (the seed's `ivshmem_ipm_send` and
//! "Received IPM notification over IVSHMEM"), with an id and a few bytes of data per
//! message and an optional completion.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use ivlink::mailbox::{
    Delivery, Mailbox, MailboxLayout, MailboxShape, Message, Outgoing, ZEPHYR_IPM_VECTOR, deliver,
    open_named,
};
use ivlink::wait::SpinThenSleep;
use ivlink::{Device, PeerId};
use serde::Serialize;
use serde_json::{Value, json};

use super::printable;
use crate::grammar::{parse_duration, parse_duration_was_us, parse_size_as, parse_uint};
use crate::report::Lines;
use crate::transport_args::TransportArgs;

/// The line Zephyr's IPM sample prints for each notification.
pub const RECEIVED: &str = "Received IPM notification over IVSHMEM";

/// `ivlink mailbox` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum MailboxCommand {
    /// Send an IPM message (an id and optional data) to a peer and ring it
    Send(MailboxSendArgs),
    /// Print each IPM message, and each bare doorbell on the mailbox vector
    Listen(MailboxListenArgs),
    /// Show the mailbox: its limits (max data size, ids, vectors) and its members
    Info(MailboxInfoArgs),
}

impl MailboxCommand {
    /// Runs the subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            MailboxCommand::Send(args) => args.run(),
            MailboxCommand::Listen(args) => args.run(),
            MailboxCommand::Info(args) => args.run(),
        }
    }
}

/// How the mailbox is opened (and shaped, if this peer creates it).
#[derive(Debug, Clone, Args)]
pub struct MailboxArgs {
    /// Mailbox name in the region's directory (created if missing)
    #[arg(long, value_name = "NAME", default_value = "ipm")]
    pub mailbox: String,

    /// If creating: member slots
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = parse_uint::<u32>)]
    pub members: u32,

    /// If creating: largest message data (a size: 1024, 4K, ...)
    #[arg(long, value_name = "SIZE", default_value = "1K", value_parser = parse_size_as::<u32>)]
    pub max_data: u32,

    /// If creating: number of message ids (ids are 0..N)
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = parse_uint::<u32>)]
    pub ids: u32,

    /// If creating: the doorbell vector messages ring (Zephyr's IPM driver uses 0)
    #[arg(long, value_name = "V", default_value_t = 0, value_parser = parse_uint::<u16>)]
    pub vector: u16,

    /// If creating: the vector completions ring on a waiting sender
    #[arg(long, value_name = "V", default_value_t = 1, value_parser = parse_uint::<u16>)]
    pub completion_vector: u16,

    /// How long to spin before sleeping on the doorbell (50us, 1ms, ...)
    #[arg(long, value_name = "TIME", default_value = "50us", value_parser = parse_duration_was_us)]
    pub spin: Duration,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl MailboxArgs {
    /// Opens the transport and the mailbox (creating it if missing).
    fn open(&self) -> anyhow::Result<(Box<dyn Device>, MailboxLayout)> {
        let device = self.transport.transport().open()?;
        let layout = open_named(
            &*device,
            &self.mailbox,
            self.shape(),
            Duration::from_secs(10),
        )?;
        Ok((device, layout))
    }

    fn shape(&self) -> MailboxShape {
        MailboxShape {
            max_members: self.members,
            max_data: self.max_data,
            id_count: self.ids,
            vector: self.vector,
            completion_vector: self.completion_vector,
        }
    }

    fn policy(&self) -> SpinThenSleep {
        SpinThenSleep { spin: self.spin }
    }
}

/// Options of `ivlink mailbox send`.
// `--id` is the message id here (as in IPM): the transport's `--self-id` loses
// its `--id` alias.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("self_id", |a| a
    .alias(None)
    .help("With --file: the peer id this process uses for itself (--id is the message id here)")))]
pub struct MailboxSendArgs {
    /// Peer to send to: a member of the mailbox gets a message; any other peer (a
    /// Zephyr IPM guest) only a bare doorbell on vector 0, so give it no data
    #[arg(value_parser = parse_uint::<u16>)]
    pub peer: PeerId,

    /// Data (UTF-8 text) to put in the message
    pub data: Option<String>,

    /// Message id (this peer's own id is --self-id)
    #[arg(long = "id", value_name = "N", default_value_t = 0, value_parser = parse_uint::<u32>)]
    pub message_id: u32,

    /// Wait until the peer has taken the message (IPM's `wait`)
    #[arg(long)]
    pub wait: bool,

    /// How long to wait for room, with --wait for completion, and (where the
    /// transport cannot tell who is connected) for the peer to join
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,

    /// Mailbox and transport
    #[command(flatten)]
    pub mailbox: MailboxArgs,
}

/// What `ivlink mailbox send --json` prints.
#[derive(Debug, Serialize)]
struct SendReport<'a> {
    peer: PeerId,
    mailbox: &'a str,
    /// `message`, or `bare_doorbell` for a peer outside the mailbox.
    delivery: &'static str,
    /// The message id; none goes with a bare doorbell.
    id: Option<u32>,
    data_len: usize,
    /// With `--wait`: the peer took the message.
    taken: bool,
}

impl MailboxSendArgs {
    /// Sends one message.
    pub fn run(&self) -> anyhow::Result<()> {
        let data = self.data.as_deref().unwrap_or_default().as_bytes();
        let device = self.mailbox.transport.transport().open()?;
        let message = Outgoing {
            peer: self.peer,
            id: self.message_id,
            data,
            wait: self.wait,
            timeout: self.timeout,
        };
        let delivery = deliver(
            &*device,
            &self.mailbox.mailbox,
            self.mailbox.shape(),
            self.mailbox.policy(),
            &message,
        )?;
        if self.json {
            let message = matches!(delivery, Delivery::Message);
            return crate::report::print_json(&SendReport {
                peer: self.peer,
                mailbox: &self.mailbox.mailbox,
                delivery: if message { "message" } else { "bare_doorbell" },
                id: message.then_some(self.message_id),
                data_len: if message { data.len() } else { 0 },
                taken: message && self.wait,
            });
        }
        match delivery {
            Delivery::BareDoorbell => println!(
                "IPM doorbell rung on peer {} (vector {ZEPHYR_IPM_VECTOR}, like Zephyr's ivshmem_ipm_send): \
                 it is no member of mailbox '{}'",
                self.peer, self.mailbox.mailbox
            ),
            Delivery::Message => {
                println!(
                    "IPM notification sent to peer {} (id {}, {} bytes)",
                    self.peer,
                    self.message_id,
                    data.len()
                );
                if self.wait {
                    println!("peer {} took the message", self.peer);
                }
            }
        }
        Ok(())
    }
}

/// Options of `ivlink mailbox listen`.
#[derive(Debug, Clone, Args)]
pub struct MailboxListenArgs {
    /// Exit after this many notifications
    #[arg(long, value_name = "N", value_parser = parse_uint::<u64>)]
    pub count: Option<u64>,

    /// Exit with an error if nothing arrives for this long (500ms, 10s, 5m, ...)
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Print JSON lines (one object per event)
    #[arg(long)]
    pub json: bool,

    /// Mailbox and transport
    #[command(flatten)]
    pub mailbox: MailboxArgs,
}

impl MailboxListenArgs {
    /// Prints each message as Zephyr's sample does, plus its sender, id and data.
    pub fn run(&self) -> anyhow::Result<()> {
        let (device, layout) = self.mailbox.open()?;
        let mut mailbox = Mailbox::join(&*device, layout, self.mailbox.policy())?;
        let lines = Lines::new(self.json);
        lines.line(
            format_args!(
                "peer {} listening on mailbox '{}' (vector {}, slot {})",
                device.id(),
                self.mailbox.mailbox,
                layout.vector(),
                mailbox.slot()
            ),
            json!({
                "event": "listening",
                "id": device.id(),
                "mailbox": self.mailbox.mailbox,
                "vector": layout.vector(),
                "slot": mailbox.slot(),
            }),
        )?;
        let stop = super::stop_flag()?;
        let timeout = self.timeout;
        let mut received = 0u64;
        let mut last = Instant::now();
        while self.count.is_none_or(|c| received < c) && !stop.load(Ordering::Relaxed) {
            match mailbox.recv(Some(Duration::from_millis(200)))? {
                Some(message) => {
                    received += 1;
                    last = Instant::now();
                    print_message(lines, &message)?;
                }
                None => {
                    // Idle: free the slots of peers that left, taking first what
                    // they left for us.
                    let left = self.count.map(|c| c - received);
                    for message in mailbox.evict_departed(left)? {
                        received += 1;
                        last = Instant::now();
                        print_message(lines, &message)?;
                    }
                    if let Some(limit) = timeout
                        && last.elapsed() >= limit
                    {
                        anyhow::bail!("no IPM notification within {limit:?}");
                    }
                }
            }
        }
        Ok(())
    }
}

/// Prints a message as Zephyr's sample does; a bare doorbell exactly so.
fn print_message(lines: Lines, message: &Message) -> anyhow::Result<()> {
    if message.is_bare() {
        return lines.line(RECEIVED, json!({ "event": "doorbell" }));
    }
    let from = message
        .from
        .map_or_else(|| "a departed peer".to_owned(), |p| format!("peer {p}"));
    let data = printable(&message.data);
    lines.line(
        format_args!(
            "{RECEIVED}: from {from}, id {}, {} bytes: {data}",
            message.id,
            message.data.len(),
        ),
        message_json(message, &data),
    )
}

/// A message as a JSON line; `from` is null when the sender has left its slot.
fn message_json(message: &Message, data: &str) -> Value {
    json!({
        "event": "message",
        "from": message.from,
        "id": message.id,
        "data": data,
        "data_len": message.data.len(),
    })
}

/// Options of `ivlink mailbox info`.
#[derive(Debug, Clone, Args)]
pub struct MailboxInfoArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,

    /// Mailbox and transport
    #[command(flatten)]
    pub mailbox: MailboxArgs,
}

impl MailboxInfoArgs {
    /// Prints the mailbox's limits (opening or creating it).
    pub fn run(&self) -> anyhow::Result<()> {
        let (device, layout) = self.mailbox.open()?;
        if self.json {
            return crate::report::print_json(&InfoReport {
                mailbox: &self.mailbox.mailbox,
                limits: Limits {
                    max_data: layout.max_data_size(),
                    ids: layout.id_count(),
                    max_id: layout.max_id(),
                    vector: layout.vector(),
                    completion_vector: layout.completion_vector(),
                    members: layout.max_members(),
                },
                members: layout
                    .members(device.region())
                    .map(|(slot, id)| Member { id, slot })
                    .collect(),
            });
        }
        let members: Vec<String> = layout
            .members(device.region())
            .map(|(slot, peer)| format!("{peer} (slot {slot})"))
            .collect();
        println!("mailbox '{}'", self.mailbox.mailbox);
        println!("max data size: {} bytes", layout.max_data_size());
        println!("ids: {} (max id {})", layout.id_count(), layout.max_id());
        println!(
            "vector: {}, completion vector: {}",
            layout.vector(),
            layout.completion_vector()
        );
        println!(
            "members: {} of {}{}{}",
            members.len(),
            layout.max_members(),
            if members.is_empty() { "" } else { ": " },
            members.join(", ")
        );
        Ok(())
    }
}

/// What `ivlink mailbox info --json` prints.
#[derive(Debug, Serialize)]
struct InfoReport<'a> {
    mailbox: &'a str,
    limits: Limits,
    members: Vec<Member>,
}

/// A mailbox's limits, as its creator shaped it.
#[derive(Debug, Serialize)]
struct Limits {
    max_data: usize,
    ids: u32,
    max_id: u32,
    vector: u16,
    completion_vector: u16,
    /// Member slots.
    members: u32,
}

/// A member of a mailbox: a peer in a slot.
#[derive(Debug, Serialize)]
struct Member {
    id: PeerId,
    slot: u32,
}
