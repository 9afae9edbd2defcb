//! The NTB switch's side of the bench: two ports of a switch in a region from an
//! ivshmem server of its own (the switch's directory would sit where the ivlink
//! rings are), one per process. A ping-pong rings the other port's doorbell
//! with `peer_db_set` and waits for its own to be rung, as ntb_tool's `db_event`
//! does; no payload moves.

use std::time::Duration;

use ivlink::ntb::{Ntb, NtbError, NtbOptions, NtbShape};
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::wait::SpinThenSleep;

use super::drive::{self, Link, PingPongPlan};
use super::job::{Control, Done, Job, PeerProcess};
use super::spin::Spinner;
use super::{BenchError, LatencyRun, Leader};

/// The switch's name in the NTB region's directory.
const SWITCH: &str = "bench-ntb";
/// The leader's port; the peer process takes the other.
const LEADER_PORT: u32 = 0;
const PEER_PORT: u32 = 1;
/// A ping (or its echo).
const PING: u64 = 1;
/// The end of the run.
const END: u64 = 2;

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

/// One port's end of the doorbell ping-pong.
struct DoorbellLink<'a, 'd> {
    ntb: &'a Ntb<'d>,
    /// `None`: sleep in `wait_until`; else busy-poll the doorbell register.
    spinner: Option<Spinner>,
    timeout: Duration,
    doorbells: u64,
}

impl<'a, 'd> DoorbellLink<'a, 'd> {
    fn new(ntb: &'a Ntb<'d>, job: &Job) -> DoorbellLink<'a, 'd> {
        DoorbellLink {
            ntb,
            spinner: job
                .spin
                .is_none()
                .then(|| Spinner::new(job.yield_spin, job.timeout)),
            timeout: job.timeout,
            doorbells: 0,
        }
    }

    fn ring(&mut self, bit: u64) -> Result<(), BenchError> {
        self.ntb.peer_db_set(bit)?;
        self.doorbells += 1;
        Ok(())
    }

    /// Waits until `PING` or `END` is rung, clears it, and says which.
    fn rung(&mut self) -> Result<u64, BenchError> {
        let bits = PING | END;
        let rung = match &mut self.spinner {
            Some(spinner) => loop {
                let rung = self.ntb.db_read()? & bits;
                if rung != 0 {
                    spinner.progress();
                    break rung;
                }
                spinner.pause("a doorbell")?;
            },
            None => self
                .ntb
                .wait_until(Some(self.timeout), |ntb| {
                    Ok(Some(ntb.db_read()? & bits).filter(|&rung| rung != 0))
                })?
                .ok_or(BenchError::Stalled("a doorbell"))?,
        };
        self.ntb.db_clear(rung)?;
        Ok(rung)
    }
}

impl Link for DoorbellLink<'_, '_> {
    fn send(&mut self, _payload: &[u8]) -> Result<(), BenchError> {
        self.ring(PING)
    }

    fn recv(&mut self, _buf: &mut [u8]) -> Result<Option<usize>, BenchError> {
        Ok((self.rung()? & END == 0).then_some(0))
    }

    fn finish(&mut self) -> Result<(), BenchError> {
        self.ring(END)
    }

    fn doorbells(&self) -> u64 {
        self.doorbells
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
    // The peer enabled its link before it said so; this side may not have
    // heard of the peer process from the server yet.
    let linked = ntb.wait_until(Some(job.timeout), |ntb| {
        Ok((ntb.link_is_up()? & 1 != 0).then_some(()))
    })?;
    if linked.is_none() {
        return Err(BenchError::Stalled("the NTB link to come up"));
    }
    let mut link = DoorbellLink::new(&ntb, job);
    let samples = drive::ping_pong(&mut link, &[], plan)?;
    let done = peer.report()?;
    peer.exit()?;
    Ok(LatencyRun {
        samples,
        doorbells: link.doorbells() + done.doorbells,
        messages: 2 * done.messages,
    })
}

/// The peer's part: take the other port and echo every doorbell.
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
    control.send(i64::from(PEER_PORT))?;
    let mut link = DoorbellLink::new(&ntb, job);
    let messages = drive::echo(&mut link, 0)?;
    Ok(Done {
        messages,
        bytes: 0,
        doorbells: link.doorbells(),
    })
}
