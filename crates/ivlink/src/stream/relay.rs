//! Relaying a stream like `nc`: an input copied into the stream, the stream copied
//! to an output, until both have ended.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use thiserror::Error;

use super::Stream;

/// Bytes read from the input, and from the stream, at a time.
const CHUNK: usize = 64 * 1024;
/// How often an idle sender checks that the stream is still there.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Where a relay failed.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Reading the input.
    #[error("reading the input")]
    ReadInput(#[source] io::Error),
    /// Writing into the stream (or the stream went away while the input was idle).
    #[error("writing to the stream")]
    WriteStream(#[source] io::Error),
    /// Closing this side of the stream.
    #[error("closing the stream")]
    CloseStream(#[source] io::Error),
    /// Reading from the stream.
    #[error("reading from the stream")]
    ReadStream(#[source] io::Error),
    /// Writing the output.
    #[error("writing the output")]
    WriteOutput(#[source] io::Error),
    /// The sending thread panicked.
    #[error("the sending thread panicked")]
    SenderPanicked,
}

/// Copies `input` into `stream` (closing its side at the input's end) and the
/// stream into `output` (flushed after each read), until both have ended.
///
/// `input` is read on a thread of its own that is left behind if the stream
/// fails, since a read from a terminal cannot be interrupted.
pub fn relay<I, O>(stream: Stream<'_>, input: I, output: &mut O) -> Result<(), RelayError>
where
    I: Read + Send + 'static,
    O: Write,
{
    let (mut rx, mut tx) = stream.split();
    let (chunks, input_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || read_input(input, chunks));
    let stop = AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| {
        let sender = scope.spawn(move || -> Result<(), RelayError> {
            loop {
                match input_rx.recv_timeout(IDLE_CHECK) {
                    Ok(chunk) => {
                        let chunk = chunk.map_err(RelayError::ReadInput)?;
                        tx.write_all(&chunk).map_err(RelayError::WriteStream)?;
                        tx.flush().map_err(RelayError::WriteStream)?;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {
                        // Idle input: still notice a server or peer that is gone.
                        tx.check().map_err(RelayError::WriteStream)?;
                    }
                    Err(_) => break,
                }
            }
            tx.close().map_err(RelayError::CloseStream)
        });
        let received = copy_out(&mut rx, output);
        if received.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let sent = sender.join().unwrap_or(Err(RelayError::SenderPanicked));
        received.and(sent)
    })
}

fn read_input(mut input: impl Read, chunks: mpsc::SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match input.read(&mut buf) {
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

fn copy_out(rx: &mut impl Read, output: &mut impl Write) -> Result<(), RelayError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = rx.read(&mut buf).map_err(RelayError::ReadStream)?;
        if n == 0 {
            return Ok(());
        }
        output
            .write_all(&buf[..n])
            .and_then(|()| output.flush())
            .map_err(RelayError::WriteOutput)?;
    }
}
