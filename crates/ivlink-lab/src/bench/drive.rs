//! The two measurement patterns, written once over any transport: a timed
//! ping-pong (and its echo), and a stream (and its drain).

use std::time::{Duration, Instant};

use super::BenchError;
use super::job::Done;

/// A two-way link for ping-pong.
pub trait Link {
    /// Sends one message and makes it visible to the other side at once.
    fn send(&mut self, payload: &[u8]) -> Result<(), BenchError>;
    /// Waits for the next message and copies it into `buf` (sized to the
    /// message); `None` at the end of the run.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError>;
    /// Tells the other side the run is over.
    fn finish(&mut self) -> Result<(), BenchError>;
    /// Doorbells this side rang.
    fn doorbells(&self) -> u64 {
        0
    }
}

/// The sending end of a stream.
pub trait Sink {
    /// Queues one message, waiting while there is no room.
    fn push(&mut self, message: &[u8]) -> Result<(), BenchError>;
    /// Makes every queued message visible (one publication per batch).
    fn flush(&mut self) -> Result<(), BenchError>;
    /// Ends the stream (the receiver sees the end after the last message).
    fn close(&mut self) -> Result<(), BenchError>;
    /// Doorbells this side rang.
    fn doorbells(&self) -> u64 {
        0
    }
}

/// The receiving end of a stream.
pub trait Source {
    /// Waits for the next message (or bytes, for byte streams) and returns its
    /// length; `None` at the end of the stream.
    fn pull(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError>;
    /// Doorbells this side rang.
    fn doorbells(&self) -> u64 {
        0
    }
}

/// A sink and a source used together as a ping-pong link.
#[derive(Debug)]
pub struct Duplex<T, R>(pub T, pub R);

impl<T: Sink, R: Source> Link for Duplex<T, R> {
    fn send(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        self.0.push(payload)?;
        self.0.flush()
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        self.1.pull(buf)
    }

    fn finish(&mut self) -> Result<(), BenchError> {
        self.0.close()
    }

    fn doorbells(&self) -> u64 {
        self.0.doorbells() + self.1.doorbells()
    }
}

/// How long a ping-pong runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPongPlan {
    /// Round trips not recorded at the start (page faults, cold caches).
    pub warmup: u64,
    /// Round trips recorded at most.
    pub iterations: u64,
    /// Round trips recorded at least, whatever the time.
    pub min_iterations: u64,
    /// Stop after this long once `min_iterations` are in.
    pub time: Duration,
}

/// Times each round trip of `payload` (nanoseconds), then ends the run.
pub fn ping_pong<L: Link>(
    link: &mut L,
    payload: &[u8],
    plan: &PingPongPlan,
) -> Result<Vec<u64>, BenchError> {
    let mut buf = vec![0u8; payload.len()];
    let mut samples = Vec::with_capacity(plan.iterations.min(1 << 22) as usize);
    let started = Instant::now();
    let mut before = started;
    for i in 0..plan.warmup + plan.iterations {
        link.send(payload)?;
        if link.recv(&mut buf)?.is_none() {
            return Err(BenchError::Peer("the peer ended the ping-pong".into()));
        }
        let after = Instant::now();
        if i >= plan.warmup {
            samples.push(after.duration_since(before).as_nanos() as u64);
        }
        before = after;
        if i % 64 == 63
            && samples.len() as u64 >= plan.min_iterations
            && after.duration_since(started) >= plan.time
        {
            break;
        }
    }
    link.finish()?;
    Ok(samples)
}

/// Sends back every message of `size` bytes until the run ends; returns how
/// many.
pub fn echo<L: Link>(link: &mut L, size: usize) -> Result<u64, BenchError> {
    let mut buf = vec![0u8; size];
    let mut count = 0;
    while let Some(len) = link.recv(&mut buf)? {
        link.send(&buf[..len])?;
        count += 1;
    }
    Ok(count)
}

/// How long a stream runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    /// Messages sent at most.
    pub messages: u64,
    /// Stop after this long.
    pub time: Duration,
    /// Messages per flush (publication).
    pub batch: usize,
}

/// Streams `message` through `sink` per `plan`, then closes it; returns the
/// number of messages sent.
pub fn stream<S: Sink>(sink: &mut S, message: &[u8], plan: &StreamPlan) -> Result<u64, BenchError> {
    let started = Instant::now();
    let batch = plan.batch.max(1) as u64;
    let mut sent = 0u64;
    let mut since_check = 0u64;
    while sent < plan.messages {
        for _ in 0..batch {
            sink.push(message)?;
        }
        sink.flush()?;
        sent += batch;
        since_check += batch;
        // Reading the clock costs more than a small message: look now and then.
        if since_check >= 1024 {
            since_check = 0;
            if started.elapsed() >= plan.time {
                break;
            }
        }
    }
    sink.close()?;
    Ok(sent)
}

/// Receives until the end of the stream; counts what arrived.
pub fn drain<S: Source>(source: &mut S, size: usize) -> Result<Done, BenchError> {
    let mut buf = vec![0u8; size];
    let mut done = Done::default();
    while let Some(len) = source.pull(&mut buf)? {
        done.messages += 1;
        done.bytes += len as u64;
    }
    done.doorbells = source.doorbells();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A loopback: what is sent comes straight back.
    #[derive(Default)]
    struct Loop {
        queue: VecDeque<Vec<u8>>,
        closed: bool,
        flushes: u64,
    }

    impl Sink for Loop {
        fn push(&mut self, message: &[u8]) -> Result<(), BenchError> {
            self.queue.push_back(message.to_vec());
            Ok(())
        }
        fn flush(&mut self) -> Result<(), BenchError> {
            self.flushes += 1;
            Ok(())
        }
        fn close(&mut self) -> Result<(), BenchError> {
            self.closed = true;
            Ok(())
        }
    }

    impl Source for Loop {
        fn pull(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
            Ok(self.queue.pop_front().map(|m| {
                buf[..m.len()].copy_from_slice(&m);
                m.len()
            }))
        }
    }

    impl Link for Loop {
        fn send(&mut self, payload: &[u8]) -> Result<(), BenchError> {
            self.push(payload)
        }
        fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
            self.pull(buf)
        }
        fn finish(&mut self) -> Result<(), BenchError> {
            self.close()
        }
    }

    #[test]
    fn ping_pong_records_every_round_trip_after_the_warmup() {
        let mut link = Loop::default();
        let plan = PingPongPlan {
            warmup: 10,
            iterations: 100,
            min_iterations: 100,
            time: Duration::from_secs(60),
        };
        let samples = ping_pong(&mut link, &[1, 2, 3], &plan).unwrap();
        assert_eq!(samples.len(), 100);
        assert!(link.closed);
    }

    #[test]
    fn ping_pong_stops_on_time_once_the_minimum_is_in() {
        let mut link = Loop::default();
        let plan = PingPongPlan {
            warmup: 0,
            iterations: u64::MAX / 2,
            min_iterations: 500,
            time: Duration::ZERO,
        };
        let samples = ping_pong(&mut link, &[0; 8], &plan).unwrap();
        assert!((500..600).contains(&samples.len()), "{}", samples.len());
    }

    #[test]
    fn streams_whole_batches_and_drains_them() {
        let mut link = Loop::default();
        let plan = StreamPlan {
            messages: 100,
            time: Duration::from_secs(60),
            batch: 16,
        };
        let sent = stream(&mut link, &[7; 5], &plan).unwrap();
        assert_eq!(sent, 112, "seven batches of 16");
        assert_eq!(link.flushes, 7);
        assert!(link.closed);
        let done = drain(&mut link, 5).unwrap();
        assert_eq!((done.messages, done.bytes), (112, 560));
    }
}
