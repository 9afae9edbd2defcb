//! `ivlink stream`: like `nc`, copies standard input to a byte stream to one peer
//! and the stream to standard output, until both have ended.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ivlink::stream::Stream;
use ivlink::wait::SpinThenSleep;

use crate::transport_args::TransportArgs;

/// Options of `ivlink stream`.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Stream name (created in the region's directory if missing)
    pub name: String,

    /// The peer at the other end
    #[arg(long, value_name = "N")]
    pub peer: u16,

    /// If creating: data bytes per direction (a power of two, at least 128)
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub capacity: usize,

    /// If creating: the doorbell vector of the stream
    #[arg(long, value_name = "V", default_value_t = 0)]
    pub vector: u16,

    /// Microseconds to spin before sleeping on the doorbell
    #[arg(long, value_name = "US", default_value_t = 50)]
    pub spin: u64,

    /// Seconds to wait while another peer sets the stream up, and for the peer to open it
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,

    /// Say on standard error which peer this is once the stream is open
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// Bytes read from standard input at a time.
const CHUNK: usize = 64 * 1024;

impl StreamArgs {
    /// Copies both ways until standard input and the stream have both ended.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        let timeout = Duration::from_secs_f64(self.timeout.max(0.0));
        let mut stream = Stream::open(
            &*device,
            &self.name,
            self.peer,
            self.capacity,
            self.vector,
            timeout,
        )
        .with_context(|| format!("opening stream '{}'", self.name))?;
        stream.set_policy(SpinThenSleep {
            spin: Duration::from_micros(self.spin),
        });
        if self.verbose {
            eprintln!(
                "peer {} on stream '{}' to peer {}",
                device.id(),
                self.name,
                self.peer
            );
        }
        // Without this, a peer that never comes leaves us waiting for its bytes forever.
        stream
            .wait_for_peer(timeout)
            .with_context(|| format!("opening stream '{}'", self.name))?;
        let (mut rx, mut tx) = stream.split();
        // Standard input is read on a thread of its own that is left behind if the
        // stream fails, since a read from a terminal cannot be interrupted.
        let (chunks, input) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        std::thread::spawn(move || read_input(chunks));
        let stop = AtomicBool::new(false);
        let stop = &stop;
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || -> anyhow::Result<()> {
                loop {
                    match input.recv_timeout(Duration::from_millis(100)) {
                        Ok(chunk) => {
                            let chunk = chunk.context("reading standard input")?;
                            tx.write_all(&chunk).context("writing to the stream")?;
                            tx.flush().context("writing to the stream")?;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {
                            // Idle input: still notice a server or peer that is gone.
                            tx.check().context("writing to the stream")?;
                        }
                        Err(_) => break,
                    }
                }
                tx.close().context("closing the stream")
            });
            let received = copy_out(&mut rx);
            if received.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let sent = sender
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the sending thread panicked")));
            received.and(sent)
        })
    }
}

fn read_input(chunks: mpsc::SyncSender<io::Result<Vec<u8>>>) {
    let mut stdin = io::stdin().lock();
    loop {
        let mut buf = vec![0u8; CHUNK];
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if chunks.send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = chunks.send(Err(e));
                return;
            }
        }
    }
}

fn copy_out(rx: &mut impl Read) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = rx.read(&mut buf).context("reading from the stream")?;
        if n == 0 {
            return Ok(());
        }
        stdout
            .write_all(&buf[..n])
            .and_then(|()| stdout.flush())
            .context("writing standard output")?;
    }
}
