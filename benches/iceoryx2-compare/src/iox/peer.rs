//! The peer process of an iceoryx2 measurement: opens the run's two services,
//! says it is ready, then echoes every message (ping-pong) or counts them
//! (stream) until the end marker, reports, and waits for the leader's bye.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::ports::{self, Rx, Tx};
use super::report::{self, PeerReport};
use ivlink_lab::bench::spin::Spinner;

/// What the two sides do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    /// The leader sends, the peer echoes; the leader times each round trip.
    PingPong,
    /// The leader streams messages, the peer copies each out and counts them.
    Stream,
    /// The leader writes each message in place into its loaned sample, the
    /// peer checks each in place (first and last 8 bytes) and counts them.
    ZeroCopyStream,
}

/// The peer's arguments, written by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PeerArgs {
    /// Ping-pong or stream
    #[arg(long, value_enum)]
    pub pattern: Pattern,
    /// The leader-to-peer service
    #[arg(long)]
    pub data: String,
    /// The peer-to-leader service
    #[arg(long)]
    pub back: String,
    /// This process's iceoryx2 node
    #[arg(long)]
    pub node: String,
    /// Message size, bytes
    #[arg(long)]
    pub size: usize,
    /// Subscriber buffer on the data service, samples
    #[arg(long)]
    pub depth: usize,
    /// CPU to pin this process to
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Yield instead of pausing while spinning (both sides share one CPU)
    #[arg(long)]
    pub yield_spin: bool,
    /// How long to wait for the leader before giving up, milliseconds
    #[arg(long)]
    pub timeout_ms: u64,
}

impl PeerArgs {
    /// The command-line form, for the leader to start the peer with.
    pub fn to_args(&self) -> Vec<String> {
        let pattern = match self.pattern {
            Pattern::PingPong => "ping-pong",
            Pattern::Stream => "stream",
            Pattern::ZeroCopyStream => "zero-copy-stream",
        };
        let mut args = vec![
            format!("--pattern={pattern}"),
            format!("--data={}", self.data),
            format!("--back={}", self.back),
            format!("--node={}", self.node),
            format!("--size={}", self.size),
            format!("--depth={}", self.depth),
            format!("--timeout-ms={}", self.timeout_ms),
        ];
        if let Some(cpu) = self.cpu {
            args.push(format!("--cpu={cpu}"));
        }
        if self.yield_spin {
            args.push("--yield-spin".into());
        }
        args
    }
}

/// Runs the peer's part.
pub fn run(args: &PeerArgs) -> anyhow::Result<()> {
    if let Some(cpu) = args.cpu {
        ivlink_lab::bench::placement::pin(cpu)?;
    }
    let spinner = Spinner::new(args.yield_spin, Duration::from_millis(args.timeout_ms));
    let node = ports::node(&args.node)?;
    let data = ports::open_service(&node, &args.data)?;
    let back = ports::open_service(&node, &args.back)?;
    let mut rx = Rx::new(&data, args.depth, spinner.clone())?;
    let mut tx = Tx::new(&back, args.size.max(report::LEN), spinner)?;
    tx.send(&[])?;

    let mut buf = vec![0u8; args.size];
    let mut received = PeerReport::default();
    loop {
        let len = if args.pattern == Pattern::ZeroCopyStream {
            rx.recv_in_place()?
        } else {
            rx.recv(&mut buf)?
        };
        if len == 0 {
            break;
        }
        received.messages += 1;
        received.bytes += len as u64;
        if args.pattern == Pattern::PingPong {
            tx.send(&buf[..len.min(buf.len())])?;
        }
    }
    std::hint::black_box(&buf);
    tx.send(&received.encode())?;
    // The leader's bye: it has the report, so the ports may go.
    rx.recv(&mut buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        peer: PeerArgs,
    }

    #[test]
    fn peer_arguments_survive_the_command_line() {
        let args = PeerArgs {
            pattern: Pattern::Stream,
            data: "ivlink-compare/1-a/1/data".into(),
            back: "ivlink-compare/1-a/1/back".into(),
            node: "ivlink-compare/1-a/1/peer".into(),
            size: 4096,
            depth: 64,
            cpu: Some(1),
            yield_spin: true,
            timeout_ms: 10_000,
        };
        let line = std::iter::once("peer".to_owned()).chain(args.to_args());
        assert_eq!(Wrapper::parse_from(line).peer, args);
        let zero_copy = PeerArgs {
            pattern: Pattern::ZeroCopyStream,
            ..args.clone()
        };
        let line = std::iter::once("peer".to_owned()).chain(zero_copy.to_args());
        assert_eq!(Wrapper::parse_from(line).peer, zero_copy);
        let plain = PeerArgs {
            pattern: Pattern::PingPong,
            cpu: None,
            yield_spin: false,
            ..args
        };
        let line = std::iter::once("peer".to_owned()).chain(plain.to_args());
        assert_eq!(Wrapper::parse_from(line).peer, plain);
    }
}
