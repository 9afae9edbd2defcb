//! The exchange both processes run over any byte stream, in three phases:
//!
//! 1. bulk to the device: the driver writes `bytes` in `chunk`-sized writes,
//!    the device reads them all and answers with one byte; the figure is
//!    `bytes` over the time from the first write to that answer;
//! 2. bulk to the driver: the driver writes one byte, the device answers with
//!    `bytes`; timed from that byte to the last one read;
//! 3. keystrokes: the driver writes one byte and reads its echo,
//!    `warmup + round_trips` times; each measured round trip is a sample.
//!
//! The acknowledgements go over the stream itself, not the control channel, so
//! each process keeps calling read and write, as a console needs to make
//! progress, and the figures include nothing but the stream.

use std::io::{self, Read, Write};
use std::time::Instant;

use super::super::BenchError;

/// The byte the device answers a bulk transfer with, and the driver starts
/// the second one with.
const GO: u8 = 0x47;

/// How much to move, shared by both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Bulk bytes each way.
    pub bytes: u64,
    /// Bytes per write (and read buffer) of the bulk phases.
    pub chunk: usize,
    /// Round trips before the measured ones.
    pub warmup: u64,
    /// Measured round trips.
    pub round_trips: u64,
}

/// What the driver side measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Seconds of the transfer to the device.
    pub to_device_seconds: f64,
    /// Seconds of the transfer to the driver.
    pub to_driver_seconds: f64,
    /// Round trips, nanoseconds each.
    pub round_trips_ns: Vec<u64>,
}

fn io(context: &'static str) -> impl FnOnce(io::Error) -> BenchError {
    move |error| BenchError::Io { context, error }
}

/// Writes `bytes` of `data` repeated, in writes of at most `data.len()`.
fn send(port: &mut impl Write, data: &[u8], bytes: u64) -> Result<(), BenchError> {
    let mut left = bytes;
    while left > 0 {
        let len = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = port.write(&data[..len]).map_err(io("bulk write"))?;
        if n == 0 {
            return Err(BenchError::Peer("the stream took no bytes".into()));
        }
        left -= n as u64;
    }
    Ok(())
}

/// Reads exactly `bytes` into `buf` (over and over): the count is checked,
/// the content is not (a check per byte would be measured with the stream).
fn receive(port: &mut impl Read, buf: &mut [u8], bytes: u64) -> Result<(), BenchError> {
    let mut left = bytes;
    while left > 0 {
        let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = port.read(&mut buf[..len]).map_err(io("bulk read"))?;
        if n == 0 {
            return Err(BenchError::Peer(format!(
                "end of stream with {left} bulk bytes still to come"
            )));
        }
        left -= n as u64;
    }
    Ok(())
}

fn byte(port: &mut impl Read, what: &'static str) -> Result<u8, BenchError> {
    let mut b = [0u8; 1];
    port.read_exact(&mut b).map_err(io(what))?;
    Ok(b[0])
}

fn put(port: &mut impl Write, b: u8, what: &'static str) -> Result<(), BenchError> {
    port.write_all(&[b]).map_err(io(what))
}

/// The bulk data: a byte pattern (not zeros, which some paths could skip).
fn pattern(chunk: usize) -> Vec<u8> {
    (0..chunk).map(|i| (i % 251) as u8).collect()
}

/// The driver's side: runs the three phases and returns their timings.
pub fn lead<P: Read + Write>(port: &mut P, plan: &Plan) -> Result<Measured, BenchError> {
    let data = pattern(plan.chunk);
    let mut buf = vec![0u8; plan.chunk];

    let started = Instant::now();
    send(port, &data, plan.bytes)?;
    if byte(port, "waiting for the device's answer")? != GO {
        return Err(BenchError::Peer(
            "the device answered the bulk data wrongly".into(),
        ));
    }
    let to_device_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    put(port, GO, "starting the transfer to the driver")?;
    receive(port, &mut buf, plan.bytes)?;
    let to_driver_seconds = started.elapsed().as_secs_f64();

    let mut round_trips_ns = Vec::with_capacity(plan.round_trips as usize);
    for i in 0..plan.warmup + plan.round_trips {
        let key = (i % 94) as u8 + b'!';
        let t0 = Instant::now();
        put(port, key, "writing a keystroke")?;
        let echo = byte(port, "reading a keystroke's echo")?;
        let elapsed = t0.elapsed();
        if echo != key {
            return Err(BenchError::Peer(format!(
                "keystroke {key:#x} came back as {echo:#x}"
            )));
        }
        if i >= plan.warmup {
            round_trips_ns.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(Measured {
        to_device_seconds,
        to_driver_seconds,
        round_trips_ns,
    })
}

/// The device's side: takes the bulk data, answers, sends its own, echoes
/// every keystroke. Returns the bytes received and keystrokes echoed.
pub fn follow<P: Read + Write>(port: &mut P, plan: &Plan) -> Result<(u64, u64), BenchError> {
    let data = pattern(plan.chunk);
    let mut buf = vec![0u8; plan.chunk];
    receive(port, &mut buf, plan.bytes)?;
    put(port, GO, "answering the bulk data")?;
    if byte(port, "waiting for the driver's start")? != GO {
        return Err(BenchError::Peer(
            "the driver started the transfer wrongly".into(),
        ));
    }
    send(port, &data, plan.bytes)?;
    let keystrokes = plan.warmup + plan.round_trips;
    for _ in 0..keystrokes {
        let key = byte(port, "reading a keystroke")?;
        put(port, key, "echoing a keystroke")?;
    }
    Ok((plan.bytes, keystrokes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn both_sides_complete_over_a_socket_pair() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let plan = Plan {
            bytes: 1_000_003,
            chunk: 4096,
            warmup: 3,
            round_trips: 50,
        };
        let peer = std::thread::spawn(move || follow(&mut b, &plan).unwrap());
        let measured = lead(&mut a, &plan).unwrap();
        assert_eq!(peer.join().unwrap(), (1_000_003, 53));
        assert_eq!(measured.round_trips_ns.len(), 50);
        assert!(measured.to_device_seconds > 0.0 && measured.to_driver_seconds > 0.0);
    }

    #[test]
    fn a_stream_that_ends_early_is_an_error() {
        let (mut a, b) = UnixStream::pair().unwrap();
        drop(b);
        let plan = Plan {
            bytes: 10,
            chunk: 4,
            warmup: 0,
            round_trips: 1,
        };
        assert!(lead(&mut a, &plan).is_err());
        let (a, mut b) = UnixStream::pair().unwrap();
        (&a).write_all(&[1, 2, 3]).unwrap();
        drop(a);
        assert!(follow(&mut b, &plan).is_err());
    }
}
