//! RPMsg links over any [`Device`]: opens the layout a profile names, drives the
//! handshake, waits with spin-then-sleep, and keeps events that arrive while a
//! sender waits for a buffer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ivlink_core::directory::DirectoryError;
use ivlink_core::rpmsg::{ADDR_ANY, Link, LinkConfig, LinkLayout, RpmsgError};
use ivlink_core::{PeerId, RawRegion, Region, Vector};

use crate::device::{Device, DeviceError, WaitFor};
use crate::section::OpenFailure;

pub use ivlink_core::rpmsg::{LinkEvent, NativeShape, Profile, Role};
pub use ivlink_core::rpmsg::{LinkStats, ResetCause};

mod session;
pub use session::{EchoStep, HostSession, Outcome, SessionError, WaitBudget, serve_echo};

/// How often a side that has nothing to wait on (a handshake without doorbells,
/// a transport without a doorbell) looks at the region again.
const IDLE_TICK: Duration = Duration::from_millis(1);
/// Longest sleep on the doorbell before looking at the status again (status
/// changes of foreign layouts ring no doorbell).
const STATUS_TICK: Duration = Duration::from_millis(100);
/// Looks at the link per clock read while spinning.
const SPIN_CLOCK_EVERY: u32 = 16;

/// Why an RPMsg operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RpmsgLinkError {
    /// The link itself (layout, corruption, addressing).
    #[error(transparent)]
    Rpmsg(#[from] RpmsgError),
    /// The transport.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The region directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The link section did not become usable in time.
    #[error("the RPMsg section {0:?} was not set up in time")]
    SetupTimeout(String),
    /// Nothing happened within the time asked for.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Which link to open and how to behave on it.
#[derive(Debug, Clone)]
pub struct RpmsgOptions {
    /// The layout.
    pub profile: Profile,
    /// This side's role.
    pub role: Role,
    /// Native: the directory section's name.
    pub section: String,
    /// Native: queue size and buffer size (used by whoever creates the section).
    pub shape: NativeShape,
    /// The doorbell vector.
    pub vector: Vector,
    /// The peer to ring; `None`: the native header says, or the profile's rule
    /// (zephyr-ivshmem: own id ± 1).
    pub peer: Option<PeerId>,
    /// zephyr-ivshmem host: the region's start as the Zephyr side addresses it, the
    /// virtual address it maps BAR2 at (its console prints `shmem mapped at 0x…`),
    /// not the physical BAR2 address. A remote learns it from the first RX buffer.
    pub address_base: u64,
    /// How long to spin before sleeping on the doorbell.
    pub spin: Duration,
    /// How long to wait for the native section to be set up by another peer.
    pub setup_timeout: Duration,
}

impl RpmsgOptions {
    /// Defaults for `profile` and `role`: section "rpmsg", 64 buffers of 512 bytes
    /// each way, vector 0, 50 µs spin.
    pub fn new(profile: Profile, role: Role) -> Self {
        RpmsgOptions {
            profile,
            role,
            section: "rpmsg".to_owned(),
            shape: NativeShape::default(),
            vector: 0,
            peer: None,
            address_base: 0,
            spin: Duration::from_micros(50),
            setup_timeout: Duration::from_secs(5),
        }
    }
}

/// The endpoint name the profile's reference sample uses.
pub fn default_endpoint_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Native => "rpmsg-echo",
        Profile::OpenampLinux => "rpmsg-openamp-demo-channel",
        Profile::ZephyrIvshmem => "k",
    }
}

/// One side of an RPMsg link on a device.
pub struct RpmsgLink<'d> {
    device: &'d dyn Device,
    /// The device's region, asked for once: not a virtual call per message.
    region: &'d RawRegion,
    link: Link,
    spin: Duration,
    /// What polls copy messages into ([`Link::max_payload`] bytes).
    buf: Vec<u8>,
    /// Events (with payloads) that arrived while a sender waited for a buffer.
    queued: VecDeque<(LinkEvent, Vec<u8>)>,
    /// Holds the payload of the last message returned, in its first
    /// `payload_len` bytes: it trades places with `buf` when a poll returns a
    /// message, so a payload is copied once, out of the region.
    last: Vec<u8>,
    payload_len: usize,
}

impl<'d> RpmsgLink<'d> {
    /// Opens the link `options` describes; the handshake runs on the first calls
    /// to [`RpmsgLink::next_event`] or [`RpmsgLink::send`].
    pub fn open(device: &'d dyn Device, options: &RpmsgOptions) -> Result<Self, RpmsgLinkError> {
        let region = device.region();
        let layout = match options.profile {
            Profile::Native => open_native(device, options)?,
            Profile::OpenampLinux => LinkLayout::openamp_linux(region.len())?,
            Profile::ZephyrIvshmem => {
                LinkLayout::zephyr_ivshmem(region.len(), options.address_base)?
            }
        };
        let peer = options.peer.or(match options.profile {
            Profile::ZephyrIvshmem => Some(match options.role {
                Role::Host => device.id().wrapping_add(1),
                Role::Remote => device.id().wrapping_sub(1),
            }),
            Profile::OpenampLinux => Some(0),
            Profile::Native => None,
        });
        let link = Link::new(LinkConfig {
            role: options.role,
            layout,
            own_id: device.id(),
            peer,
            vector: options.vector,
        });
        let buf = vec![0u8; link.max_payload()];
        Ok(RpmsgLink {
            device,
            region,
            link,
            spin: options.spin,
            last: buf.clone(),
            buf,
            queued: VecDeque::new(),
            payload_len: 0,
        })
    }

    /// The core link (stats, layout, endpoints).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Largest payload of one message.
    pub fn max_payload(&self) -> usize {
        self.link.max_payload()
    }

    /// Creates an endpoint: `local`/`remote` of `None` mean "allocate" and
    /// "unbound" (a named unbound endpoint is announced).
    pub fn create_endpoint(
        &mut self,
        name: &str,
        local: Option<u32>,
        remote: Option<u32>,
    ) -> Result<u32, RpmsgLinkError> {
        Ok(self.link.create_endpoint(
            name,
            local.unwrap_or(ADDR_ANY),
            remote.unwrap_or(ADDR_ANY),
        )?)
    }

    /// Removes an endpoint (announcing it gone if it was announced).
    pub fn destroy_endpoint(&mut self, local: u32) -> Result<(), RpmsgLinkError> {
        let device = self.device;
        Ok(self.link.destroy_endpoint(self.region, device, local)?)
    }

    /// The payload of the last [`LinkEvent::Message`] returned.
    pub fn payload(&self) -> &[u8] {
        &self.last[..self.payload_len]
    }

    /// The next event without waiting.
    pub fn try_event(&mut self) -> Result<Option<LinkEvent>, RpmsgLinkError> {
        if let Some((event, payload)) = self.queued.pop_front() {
            self.last[..payload.len()].copy_from_slice(&payload);
            self.payload_len = payload.len();
            return Ok(Some(event));
        }
        let device = self.device;
        let event = self.link.poll(self.region, device, &mut self.buf)?;
        if let Some(LinkEvent::Message { len, .. }) = event {
            core::mem::swap(&mut self.buf, &mut self.last);
            self.payload_len = len;
        }
        Ok(event)
    }

    /// Waits up to `timeout` (`None`: forever) for the next event.
    pub fn next_event(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<LinkEvent>, RpmsgLinkError> {
        // The clock is read only once a look found nothing, and once per
        // look after that: a busy link reads it at most once per message.
        if let Some(event) = self.try_event()? {
            return Ok(Some(event));
        }
        let mut now = Instant::now();
        let deadline = timeout.map(|t| now + t);
        loop {
            if !self.pause(now, deadline, false)? {
                return Ok(None);
            }
            if let Some(event) = self.try_event()? {
                return Ok(Some(event));
            }
            now = Instant::now();
        }
    }

    /// Sends `payload` from `local` (to its bound address, or `dst`), waiting up
    /// to `timeout` for a free buffer. Events that arrive meanwhile are kept for
    /// [`RpmsgLink::next_event`].
    pub fn send(
        &mut self,
        local: u32,
        dst: Option<u32>,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<(), RpmsgLinkError> {
        let device = self.device;
        // The clock is read only once the first try found no buffer.
        let mut deadline = None;
        loop {
            match self.link.send(self.region, device, local, dst, payload) {
                Err(RpmsgError::NoBuffer | RpmsgError::LinkDown) => {}
                other => return Ok(other?),
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert_with(|| timeout.map(|t| now + t));
            // Keep the link moving (handshake, incoming messages) while waiting.
            let event = self.link.poll(self.region, device, &mut self.buf)?;
            if let Some(event) = event {
                let payload = match event {
                    LinkEvent::Message { len, .. } => self.buf[..len].to_vec(),
                    _ => Vec::new(),
                };
                self.queued.push_back((event, payload));
                continue;
            }
            if !self.pause(now, deadline, true)? {
                return Err(RpmsgLinkError::Timeout(timeout.unwrap_or_default()));
            }
        }
    }

    /// Waits for something to do: spins for the budget, then sleeps on the
    /// doorbell (armed so the other side rings). False once `deadline` passed.
    /// `now` is the caller's fresh reading of the clock.
    fn pause(
        &mut self,
        now: Instant,
        deadline: Option<Instant>,
        want_space: bool,
    ) -> Result<bool, RpmsgLinkError> {
        let left = match deadline {
            Some(d) if now >= d => return Ok(false),
            Some(d) => Some(d - now),
            None => None,
        };
        let (device, region) = (self.device, self.region);
        if !self.link.is_running() || !device.has_doorbell() {
            let tick = left.map_or(IDLE_TICK, |l| l.min(IDLE_TICK));
            if device.has_doorbell() {
                device.wait(WaitFor::vector(self.link.config().vector), Some(tick))?;
            } else {
                // Not a plain sleep: a vanished server still ends the wait.
                device.wait(WaitFor::NOTHING, Some(tick))?;
            }
            return Ok(true);
        }
        if !self.spin.is_zero() {
            // A look per pause instruction (one can take 140 cycles) and a clock
            // read per SPIN_CLOCK_EVERY looks: a message is seen within tens of
            // nanoseconds of its arrival.
            let spin_until = now + self.spin;
            let mut turns = 0u32;
            loop {
                std::hint::spin_loop();
                if self.link.pending(region, want_space)? {
                    return Ok(true);
                }
                turns = turns.wrapping_add(1);
                if turns % SPIN_CLOCK_EVERY == 0 && Instant::now() >= spin_until {
                    break;
                }
            }
        }
        if self.link.arm(region, want_space)? {
            self.link.disarm(region)?;
            return Ok(true);
        }
        let sleep = left.map_or(STATUS_TICK, |l| l.min(STATUS_TICK));
        let woke = device.wait(WaitFor::vector(self.link.config().vector), Some(sleep));
        self.link.disarm(region)?;
        woke?;
        Ok(true)
    }
}

fn open_native(device: &dyn Device, options: &RpmsgOptions) -> Result<LinkLayout, RpmsgLinkError> {
    crate::section::open_or_create(
        device,
        &options.section,
        &options.shape,
        options.vector,
        options.setup_timeout,
    )
    .map(|(layout, _)| layout)
}

impl OpenFailure<LinkLayout> for RpmsgLinkError {
    fn setup_timeout(name: &str) -> Self {
        RpmsgLinkError::SetupTimeout(name.to_owned())
    }
}

#[cfg(test)]
mod tests;
