//! The NTB switch's side of the bench: two ports of a switch in a region from an
//! ivshmem server of its own (the switch's directory would sit where the ivlink
//! rings are), one per process. A ping-pong rings the other port's doorbell
//! with `peer_db_set` and waits for its own to be rung, as ntb_tool's `db_event`
//! does; no payload moves. A stream writes chunks into the other port's inbound
//! window with `peer_mw_write` (slots of the window, a doorbell bit each way per
//! slot: full, then free again), and the other side copies them out.

use std::time::Duration;

use ivlink::ntb::{Ntb, NtbError, NtbOptions, NtbShape};
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::wait::SpinThenSleep;

use super::drive::{self, Link, PingPongPlan, Sink, Source, StreamPlan};
use super::job::{Control, Done, Job, Pattern, PeerProcess};
use super::spin::Spinner;
use super::{BenchError, LatencyRun, Leader, StreamRun};

/// The switch's name in the NTB region's directory.
const SWITCH: &str = "bench-ntb";
/// The leader's port; the peer process takes the other.
const LEADER_PORT: u32 = 0;
const PEER_PORT: u32 = 1;
/// A ping (or its echo).
const PING: u64 = 1;
/// The end of the run.
const END: u64 = 2;
/// The window streamed through (each port's first).
const WINDOW: u32 = 0;
/// Most slots of the window in use at once: a doorbell bit each.
const MAX_SLOTS: usize = 16;
/// Bytes of the window streamed through at most (unless two chunks need
/// more), as the rings' data area: what stays in cache is what is measured.
const STREAM_SPAN: usize = 256 << 10;
/// The doorbell bit of slot 0 (full, to the receiver; free, to the sender).
const SLOT_BIT: u32 = 2;

/// Chunk sizes of the window streams.
pub const STREAM_SIZES: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10];

/// Two ports with the default registers and a 1 MiB window each.
fn shape() -> NtbShape {
    NtbShape::new(2)
}

/// Region size for the NTB server: the directory and the switch.
pub fn region_size() -> u64 {
    let switch = shape().section_size().unwrap_or(4 << 20) as u64;
    (switch + (1 << 20)).next_power_of_two()
}

impl From<NtbError> for BenchError {
    fn from(e: NtbError) -> Self {
        BenchError::Peer(format!("ntb: {e}"))
    }
}

/// Takes `port` of the switch and enables its link; waits sleep at once when
/// the job has a spin budget of 0.
fn open<'d>(device: &'d HostPeer, port: u32, job: &Job) -> Result<Ntb<'d>, BenchError> {
    let options = NtbOptions {
        port: Some(port),
        timeout: job.timeout,
        policy: SpinThenSleep {
            spin: job.spin.unwrap_or(Duration::ZERO),
        },
    };
    let ntb = Ntb::open(device, SWITCH, shape(), options)?;
    ntb.link_enable()?;
    Ok(ntb)
}

/// Ringing the other port and waiting for this one's doorbell bits.
struct Doorbells<'a, 'd> {
    ntb: &'a Ntb<'d>,
    /// `None`: sleep in `wait_until` (after the port's spin budget); else
    /// busy-poll the doorbell register.
    spinner: Option<Spinner>,
    timeout: Duration,
    rung: u64,
}

impl<'a, 'd> Doorbells<'a, 'd> {
    fn new(ntb: &'a Ntb<'d>, job: &Job) -> Doorbells<'a, 'd> {
        Doorbells {
            ntb,
            spinner: job
                .spin
                .is_none()
                .then(|| Spinner::new(job.yield_spin, job.timeout)),
            timeout: job.timeout,
            rung: 0,
        }
    }

    fn ring(&mut self, bits: u64) -> Result<(), BenchError> {
        self.ntb.peer_db_set(bits)?;
        self.rung += 1;
        Ok(())
    }

    /// Waits until one of `bits` is rung; which of them are (not cleared).
    fn wait_any(&mut self, bits: u64) -> Result<u64, BenchError> {
        match &mut self.spinner {
            Some(spinner) => loop {
                let rung = self.ntb.db_read()? & bits;
                if rung != 0 {
                    spinner.progress();
                    return Ok(rung);
                }
                spinner.pause("a doorbell")?;
            },
            None => self
                .ntb
                .wait_until(Some(self.timeout), |ntb| {
                    Ok(Some(ntb.db_read()? & bits).filter(|&rung| rung != 0))
                })?
                .ok_or(BenchError::Stalled("a doorbell")),
        }
    }
}

/// One port's end of the doorbell ping-pong.
struct DoorbellLink<'a, 'd>(Doorbells<'a, 'd>);

impl DoorbellLink<'_, '_> {
    /// Waits until `PING` or `END` is rung, clears it, and says which.
    fn rung(&mut self) -> Result<u64, BenchError> {
        let rung = self.0.wait_any(PING | END)?;
        self.0.ntb.db_clear(rung)?;
        Ok(rung)
    }
}

impl Link for DoorbellLink<'_, '_> {
    fn send(&mut self, _payload: &[u8]) -> Result<(), BenchError> {
        self.0.ring(PING)
    }

    fn recv(&mut self, _buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        Ok((self.rung()? & END == 0).then_some(0))
    }

    fn finish(&mut self) -> Result<(), BenchError> {
        self.0.ring(END)
    }

    fn doorbells(&self) -> u64 {
        self.0.rung
    }
}

/// Slots of `size` bytes the window is streamed through.
fn slots(size: usize) -> Result<usize, BenchError> {
    let window = shape().mw_size as usize;
    if size == 0 || size > window {
        return Err(BenchError::Config(format!(
            "NTB window chunks must be 1 to {window} bytes (got {size})"
        )));
    }
    Ok((STREAM_SPAN / size).clamp(2, MAX_SLOTS).min(window / size))
}

fn slot_bit(slot: usize) -> u64 {
    1 << (SLOT_BIT as usize + slot)
}

/// Writing chunks into the other port's window, slot after slot: each waits
/// until the receiver rang it free.
struct WindowTx<'a, 'd> {
    bells: Doorbells<'a, 'd>,
    size: usize,
    slots: usize,
    next: usize,
    /// Slots known free (all, at first).
    free: u64,
}

impl Sink for WindowTx<'_, '_> {
    fn push(&mut self, message: &[u8]) -> Result<(), BenchError> {
        let bit = slot_bit(self.next);
        if self.free & bit == 0 {
            let all = (0..self.slots).fold(0, |all, slot| all | slot_bit(slot));
            let rung = self.bells.wait_any(bit)? | (self.bells.ntb.db_read()? & all);
            self.bells.ntb.db_clear(rung)?;
            self.free |= rung;
        }
        self.bells
            .ntb
            .peer_mw_write(WINDOW, self.next * self.size, message)?;
        self.free &= !bit;
        self.bells.ring(bit)?;
        self.next = (self.next + 1) % self.slots;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BenchError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), BenchError> {
        self.bells.ring(END)
    }

    fn doorbells(&self) -> u64 {
        self.bells.rung
    }
}

/// Copying chunks out of this port's window in slot order, ringing each slot
/// free; the end comes after the last slot rung full.
struct WindowRx<'a, 'd> {
    bells: Doorbells<'a, 'd>,
    size: usize,
    slots: usize,
    next: usize,
}

impl Source for WindowRx<'_, '_> {
    fn pull(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        let bit = slot_bit(self.next);
        let rung = self.bells.wait_any(bit | END)?;
        if rung & bit == 0 {
            // The sender fills slots in order: nothing is left in any.
            return Ok(None);
        }
        let len = self.size.min(buf.len());
        self.bells
            .ntb
            .mw_read(WINDOW, self.next * self.size, &mut buf[..len])?;
        self.bells.ntb.db_clear(bit)?;
        self.bells.ring(bit)?;
        self.next = (self.next + 1) % self.slots;
        Ok(Some(len))
    }

    fn doorbells(&self) -> u64 {
        self.bells.rung
    }
}

/// Leads a doorbell ping-pong with a peer process on the other port.
pub fn lead_ping_pong(
    leader: &Leader<'_>,
    job: &Job,
    plan: &PingPongPlan,
) -> Result<LatencyRun, BenchError> {
    let host = leader.ntb_host()?;
    let ntb = open(host, LEADER_PORT, job)?;
    let mut peer = PeerProcess::spawn(leader.command(), job, &[])?;
    peer.ready()?;
    wait_link(&ntb, job)?;
    let mut link = DoorbellLink(Doorbells::new(&ntb, job));
    let samples = drive::ping_pong(&mut link, &[], plan)?;
    let done = peer.report()?;
    peer.exit()?;
    Ok(LatencyRun {
        samples,
        doorbells: link.doorbells() + done.doorbells,
        messages: 2 * done.messages,
    })
}

/// The peer enabled its link before it said it was ready; this side may not
/// have heard of the peer process from the server yet.
fn wait_link(ntb: &Ntb<'_>, job: &Job) -> Result<(), BenchError> {
    let linked = ntb.wait_until(Some(job.timeout), |ntb| {
        Ok((ntb.link_is_up()? & 1 != 0).then_some(()))
    })?;
    linked.ok_or(BenchError::Stalled("the NTB link to come up"))
}

/// Leads a stream of chunks into the peer process's inbound window.
pub fn lead_stream(
    leader: &Leader<'_>,
    job: &Job,
    plan: &StreamPlan,
) -> Result<StreamRun, BenchError> {
    let slots = slots(job.size)?;
    let host = leader.ntb_host()?;
    let ntb = open(host, LEADER_PORT, job)?;
    let mut peer = PeerProcess::spawn(leader.command(), job, &[])?;
    let window = peer.ready()?;
    let window = u64::try_from(window)
        .map_err(|_| BenchError::Peer(format!("bad window offset {window}")))?;
    wait_link(&ntb, job)?;
    ntb.peer_mw_set_trans(0, WINDOW, window, shape().mw_size)?;
    let mut sink = WindowTx {
        bells: Doorbells::new(&ntb, job),
        size: job.size,
        slots,
        next: 0,
        free: u64::MAX,
    };
    let plan = StreamPlan { batch: 1, ..*plan };
    let started = std::time::Instant::now();
    let sent = drive::stream(&mut sink, &vec![0xa5; job.size], &plan)?;
    let done = peer.report()?;
    let seconds = started.elapsed().as_secs_f64();
    peer.exit()?;
    StreamRun::checked(job, sent, done, seconds, sink.doorbells() + done.doorbells)
}

/// The peer's part: take the other port, then echo every doorbell or drain
/// the window.
pub fn follow(job: &Job, control: &Control) -> Result<Done, BenchError> {
    let socket = job
        .socket
        .clone()
        .ok_or_else(|| BenchError::BadJob("ntb needs socket=".into()))?;
    let host = HostPeer::connect(&HostConfig {
        socket_path: socket,
        vectors: Some(1),
        setup_timeout: job.timeout,
    })?;
    let ntb = open(&host, PEER_PORT, job)?;
    match job.pattern {
        Pattern::PingPong => {
            control.send(i64::from(PEER_PORT))?;
            let mut link = DoorbellLink(Doorbells::new(&ntb, job));
            let messages = drive::echo(&mut link, 0)?;
            Ok(Done {
                messages,
                bytes: 0,
                doorbells: link.doorbells(),
            })
        }
        Pattern::Stream => {
            let slots = slots(job.size)?;
            // Grants the leader's port this port's inbound window.
            let window = ntb.mw_buffer(WINDOW)?;
            ntb.mw_set_trans(0, WINDOW, window.offset as u64, window.len as u64)?;
            control.send(window.offset as i64)?;
            let mut source = WindowRx {
                bells: Doorbells::new(&ntb, job),
                size: job.size,
                slots,
                next: 0,
            };
            drive::drain(&mut source, job.size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_get_slots_of_the_window_and_bits_of_their_own() {
        assert_eq!(slots(4 << 10).unwrap(), MAX_SLOTS);
        assert_eq!(slots(64 << 10).unwrap(), 4, "a quarter of the span each");
        assert_eq!(slots(256 << 10).unwrap(), 2, "two at least");
        assert_eq!(slots(512 << 10).unwrap(), 2);
        assert_eq!(slots(1 << 20).unwrap(), 1);
        assert!(slots(0).is_err());
        assert!(slots((1 << 20) + 1).is_err());
        let bits = (0..MAX_SLOTS).fold(0, |all, slot| all | slot_bit(slot));
        assert_eq!(bits & (PING | END), 0, "slot bits clash with ping and end");
        assert_eq!(bits.count_ones() as usize, MAX_SLOTS);
        assert!(STREAM_SIZES.iter().all(|&size| slots(size).is_ok()));
    }

    #[test]
    fn the_region_holds_the_switch() {
        let needed = shape().section_size().unwrap() as u64;
        assert!(region_size() > needed);
        assert!(region_size().is_power_of_two());
    }
}
