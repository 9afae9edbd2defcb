//! One port of an NTB switch on the region, shaped after Linux's NTB API
//! (`include/linux/ntb.h`): ports and peer indices, link, doorbells,
//! scratchpads, message registers and memory windows, and a wait for the
//! port's events.
//!
//! The registers live in the region (see [`ivlink_core::ntb`]); this layer adds
//! what needs a process: taking a port for the life of the [`Ntb`], ringing the
//! owner of a port whose event was raised, telling a live peer from one the
//! server reported gone (its ports are freed and every other port sees its link
//! go down), and waiting from several threads at once.
//!
//! Peers are addressed as in the kernel: by peer index (`pidx`, 0..
//! [`Ntb::peer_port_count`]), the other ports in port order. Doorbells are
//! rung on every peer whose link is up (`peer_db_set`), scratchpads, messages
//! and windows on one peer. A write to a peer whose link is down fails with
//! [`NtbError::NotConnected`] rather than vanish. Writes judge a peer's owner
//! alive by what this process has heard from the server (no system call per
//! doorbell); [`Ntb::link_is_up`] asks the server's socket for news each time.
//!
//! A guest sees a host peer die only through a host peer of the same region,
//! which frees the dead peer's ports when the server reports it gone: there is
//! no heartbeat in the switch.

use std::time::{Duration, Instant};

use ivlink_core::ntb::{Claim, NtbLayoutError, Ring, Rings};
use ivlink_core::{PeerId, RawRegion, Region};

use crate::device::{Device, Event, VectorSet, WaitFor};
use crate::section::open_or_create;
use crate::wait::SpinThenSleep;

mod error;
mod events;
#[cfg(test)]
mod tests;

pub use error::NtbError;
pub use events::EventCount;
use events::{EventLog, Turn};
/// The switch's register model and its parts, from the core.
pub use ivlink_core::ntb::{Events, MsgWrite, MwAlign, NtbLayout, NtbShape, Window};

/// How a port is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtbOptions {
    /// The port wanted (`None`: the first free one). Asking for a port held by
    /// this same peer, or by one that is gone, takes it over.
    pub port: Option<u32>,
    /// How long to wait while another peer sets the switch up, or while the
    /// server has not yet reported the previous owner of the port asked for gone.
    pub timeout: Duration,
    /// How waits spin before they sleep.
    pub policy: SpinThenSleep,
}

impl Default for NtbOptions {
    fn default() -> Self {
        NtbOptions {
            port: None,
            timeout: Duration::from_secs(10),
            policy: SpinThenSleep::default(),
        }
    }
}

/// A message as read from an inbound register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The data.
    pub data: u32,
    /// The peer index that wrote it (`None`: never written since the port was
    /// taken).
    pub from: Option<u32>,
    /// The inbound status bit is still set: not yet cleared with
    /// [`Ntb::msg_clear_sts`].
    pub full: bool,
}

/// How long to keep trying to take a port asked for by number while its owner
/// still looks alive: the server reports a dead peer within milliseconds.
const TAKEOVER_GRACE: Duration = Duration::from_secs(2);
/// How often a transport without a doorbell looks again.
const POLL_TICK: Duration = Duration::from_micros(200);

/// One port of an NTB switch, held for the life of the value. Every method
/// takes `&self`: threads may share it.
pub struct Ntb<'d> {
    device: &'d dyn Device,
    layout: NtbLayout,
    port: u32,
    session: u32,
    policy: SpinThenSleep,
    log: EventLog,
}

impl std::fmt::Debug for Ntb<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ntb")
            .field("port", &self.port)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl<'d> Ntb<'d> {
    /// Finds (or creates, with `shape`) the switch `name` in `device`'s region
    /// and takes a port of it. Peers may start in any order; a switch already
    /// there keeps its own shape.
    pub fn open(
        device: &'d dyn Device,
        name: &str,
        shape: NtbShape,
        options: NtbOptions,
    ) -> Result<Self, NtbError> {
        let (layout, _) = open_or_create::<NtbLayout, NtbError>(
            device,
            name,
            &shape,
            shape.vector,
            options.timeout,
        )?;
        let session = new_session();
        let claim = Claim {
            peer: device.id(),
            session,
            port: options.port,
        };
        let grace = Instant::now() + TAKEOVER_GRACE.min(options.timeout);
        let ntb = loop {
            match layout.claim(device.region(), claim, |peer| gone(device, peer)) {
                Ok((port, rings)) => {
                    let ntb = Ntb {
                        device,
                        layout,
                        port,
                        session,
                        policy: options.policy,
                        log: EventLog::default(),
                    };
                    ntb.ring_peers(rings);
                    break ntb;
                }
                Err(NtbLayoutError::PortTaken { port: Some(port) })
                    if Instant::now() < grace && device.knows_peers() =>
                {
                    // The owner may be dead with the server's word on its way.
                    if let Some(Event::PeerLeft { peer }) =
                        device.wait(WaitFor::PEER_EVENTS, Some(Duration::from_millis(10)))?
                    {
                        tracing::debug!(peer, port, "a peer left while waiting for its port");
                        layout.evict(device.region(), peer)?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(ntb)
    }

    /// The device the port is reached through.
    pub fn device(&self) -> &'d dyn Device {
        self.device
    }

    /// The switch's geometry.
    pub fn layout(&self) -> NtbLayout {
        self.layout
    }

    fn region(&self) -> &'d RawRegion {
        self.device.region()
    }

    // ---- ports ----

    /// This port's number (`ntb_port_number`).
    pub fn port_number(&self) -> u32 {
        self.port
    }

    /// How many ports the switch has.
    pub fn port_count(&self) -> u32 {
        self.layout.shape().ports
    }

    /// How many peers this port has (`ntb_peer_port_count`).
    pub fn peer_port_count(&self) -> u32 {
        self.port_count() - 1
    }

    /// The port of peer `pidx` (`ntb_peer_port_number`).
    pub fn peer_port_number(&self, pidx: u32) -> Result<u32, NtbError> {
        Ok(self.layout.peer_port(self.port, pidx)?)
    }

    /// The peer index of `port` (`ntb_peer_port_idx`).
    pub fn peer_port_idx(&self, port: u32) -> Result<u32, NtbError> {
        Ok(self.layout.peer_index(self.port, port)?)
    }

    // ---- link ----

    /// Enables this port's link (`ntb_link_enable`): peers that enabled theirs
    /// see it up and get a link event.
    pub fn link_enable(&self) -> Result<(), NtbError> {
        self.check_held()?;
        let rings = self.layout.set_link(self.region(), self.port, true)?;
        self.ring_peers(rings);
        Ok(())
    }

    /// Disables this port's link (`ntb_link_disable`).
    pub fn link_disable(&self) -> Result<(), NtbError> {
        self.check_held()?;
        let rings = self.layout.set_link(self.region(), self.port, false)?;
        self.ring_peers(rings);
        Ok(())
    }

    /// The peers whose link is up, as a bitmask of peer indices
    /// (`ntb_link_is_up`): both ports enabled their link and both owners are
    /// connected.
    pub fn link_is_up(&self) -> Result<u64, NtbError> {
        Ok(self
            .layout
            .link_is_up(self.region(), self.port, |peer| gone(self.device, peer))?)
    }

    /// Whether the link to peer `pidx` is up.
    pub fn peer_link_is_up(&self, pidx: u32) -> Result<bool, NtbError> {
        self.peer_port_number(pidx)?;
        Ok(self.link_is_up()? & (1 << pidx) != 0)
    }

    // ---- doorbells ----

    /// The doorbell bits that exist (`ntb_db_valid_mask`).
    pub fn db_valid_mask(&self) -> u64 {
        u64::MAX
    }

    /// How many doorbell vectors (`ntb_db_vector_count`): every bit rings the
    /// one vector of the switch.
    pub fn db_vector_count(&self) -> u32 {
        1
    }

    /// The doorbell bits of vector `vector` (`ntb_db_vector_mask`).
    pub fn db_vector_mask(&self, vector: u32) -> u64 {
        if vector == 0 { self.db_valid_mask() } else { 0 }
    }

    /// The inbound doorbell register (`ntb_db_read`).
    pub fn db_read(&self) -> Result<u64, NtbError> {
        Ok(self.layout.db_read(self.region(), self.port)?)
    }

    /// Sets bits of the inbound doorbell register (`ntb_db_set`, a self-test).
    pub fn db_set(&self, bits: u64) -> Result<(), NtbError> {
        let ring = self.layout.db_set(self.region(), self.port, bits)?;
        self.ring_port(self.port, ring);
        Ok(())
    }

    /// Clears bits of the inbound doorbell register (`ntb_db_clear`).
    pub fn db_clear(&self, bits: u64) -> Result<(), NtbError> {
        Ok(self.layout.db_clear(self.region(), self.port, bits)?)
    }

    /// The doorbell mask (`ntb_db_read_mask`): masked bits raise no event.
    pub fn db_read_mask(&self) -> Result<u64, NtbError> {
        Ok(self.layout.db_read_mask(self.region(), self.port)?)
    }

    /// Masks doorbell bits (`ntb_db_set_mask`).
    pub fn db_set_mask(&self, bits: u64) -> Result<(), NtbError> {
        Ok(self.layout.db_set_mask(self.region(), self.port, bits)?)
    }

    /// Unmasks doorbell bits (`ntb_db_clear_mask`); a bit already set raises
    /// its event now.
    pub fn db_clear_mask(&self, bits: u64) -> Result<(), NtbError> {
        let ring = self.layout.db_clear_mask(self.region(), self.port, bits)?;
        self.ring_port(self.port, ring);
        Ok(())
    }

    /// Rings `bits` on every peer whose link is up (`ntb_peer_db_set`): an
    /// atomic OR into each one's doorbell register.
    pub fn peer_db_set(&self, bits: u64) -> Result<(), NtbError> {
        for port in self.linked_peer_ports()? {
            let ring = self.layout.db_set(self.region(), port, bits)?;
            self.ring_port(port, ring);
        }
        Ok(())
    }

    /// Clears `bits` of every linked peer's doorbell register
    /// (`ntb_peer_db_clear`).
    pub fn peer_db_clear(&self, bits: u64) -> Result<(), NtbError> {
        for port in self.linked_peer_ports()? {
            self.layout.db_clear(self.region(), port, bits)?;
        }
        Ok(())
    }

    /// The linked peers' doorbell registers, OR-ed (`ntb_peer_db_read`).
    pub fn peer_db_read(&self) -> Result<u64, NtbError> {
        self.linked_peer_ports()?.try_fold(0, |all, port| {
            Ok(all | self.layout.db_read(self.region(), port)?)
        })
    }

    /// The linked peers' doorbell masks, OR-ed (`ntb_peer_db_read_mask`).
    pub fn peer_db_read_mask(&self) -> Result<u64, NtbError> {
        self.linked_peer_ports()?.try_fold(0, |all, port| {
            Ok(all | self.layout.db_read_mask(self.region(), port)?)
        })
    }

    /// Masks doorbell bits on every linked peer (`ntb_peer_db_set_mask`).
    pub fn peer_db_set_mask(&self, bits: u64) -> Result<(), NtbError> {
        for port in self.linked_peer_ports()? {
            self.layout.db_set_mask(self.region(), port, bits)?;
        }
        Ok(())
    }

    /// Unmasks doorbell bits on every linked peer (`ntb_peer_db_clear_mask`).
    pub fn peer_db_clear_mask(&self, bits: u64) -> Result<(), NtbError> {
        for port in self.linked_peer_ports()? {
            let ring = self.layout.db_clear_mask(self.region(), port, bits)?;
            self.ring_port(port, ring);
        }
        Ok(())
    }

    // ---- scratchpads ----

    /// Scratchpads per port (`ntb_spad_count`).
    pub fn spad_count(&self) -> u32 {
        self.layout.shape().spad_count
    }

    /// This port's scratchpad `sidx` (`ntb_spad_read`).
    pub fn spad_read(&self, sidx: u32) -> Result<u32, NtbError> {
        Ok(self.layout.spad_read(self.region(), self.port, sidx)?)
    }

    /// Writes this port's scratchpad `sidx` (`ntb_spad_write`).
    pub fn spad_write(&self, sidx: u32, value: u32) -> Result<(), NtbError> {
        Ok(self
            .layout
            .spad_write(self.region(), self.port, sidx, value)?)
    }

    /// Peer `pidx`'s scratchpad `sidx` (`ntb_peer_spad_read`).
    pub fn peer_spad_read(&self, pidx: u32, sidx: u32) -> Result<u32, NtbError> {
        let port = self.peer_port_number(pidx)?;
        Ok(self.layout.spad_read(self.region(), port, sidx)?)
    }

    /// Writes peer `pidx`'s scratchpad `sidx` (`ntb_peer_spad_write`); the
    /// link to it must be up.
    pub fn peer_spad_write(&self, pidx: u32, sidx: u32, value: u32) -> Result<(), NtbError> {
        let port = self.linked_peer(pidx)?;
        Ok(self.layout.spad_write(self.region(), port, sidx, value)?)
    }

    // ---- messages ----

    /// Message registers per port (`ntb_msg_count`).
    pub fn msg_count(&self) -> u32 {
        self.layout.shape().msg_count
    }

    /// The inbound status bits (`ntb_msg_inbits`).
    pub fn msg_inbits(&self) -> u32 {
        self.layout.msg_inbits()
    }

    /// The outbound status bits (`ntb_msg_outbits`).
    pub fn msg_outbits(&self) -> u32 {
        self.layout.msg_outbits()
    }

    /// The message status (`ntb_msg_read_sts`): inbound bits for full
    /// registers, outbound bits for refused writes.
    pub fn msg_read_sts(&self) -> Result<u32, NtbError> {
        Ok(self.layout.msg_read_sts(self.region(), self.port)?)
    }

    /// Clears status bits (`ntb_msg_clear_sts`): an inbound bit frees its
    /// register for the next message.
    pub fn msg_clear_sts(&self, bits: u32) -> Result<(), NtbError> {
        Ok(self.layout.msg_clear_sts(self.region(), self.port, bits)?)
    }

    /// The message status mask.
    pub fn msg_read_mask(&self) -> Result<u32, NtbError> {
        Ok(self.layout.msg_read_mask(self.region(), self.port)?)
    }

    /// Masks status bits (`ntb_msg_set_mask`).
    pub fn msg_set_mask(&self, bits: u32) -> Result<(), NtbError> {
        Ok(self.layout.msg_set_mask(self.region(), self.port, bits)?)
    }

    /// Unmasks status bits (`ntb_msg_clear_mask`); a bit already set raises
    /// its event now.
    pub fn msg_clear_mask(&self, bits: u32) -> Result<(), NtbError> {
        let ring = self.layout.msg_clear_mask(self.region(), self.port, bits)?;
        self.ring_port(self.port, ring);
        Ok(())
    }

    /// Inbound register `midx` and who wrote it (`ntb_msg_read`). Reading does
    /// not free the register: [`msg_clear_sts`](Self::msg_clear_sts) does.
    pub fn msg_read(&self, midx: u32) -> Result<Message, NtbError> {
        let message = self.layout.msg_read(self.region(), self.port, midx)?;
        let from = match message.from {
            Some(port) => Some(self.peer_port_idx(port)?),
            None => None,
        };
        Ok(Message {
            data: message.data,
            from,
            full: message.full,
        })
    }

    /// Writes `data` into peer `pidx`'s inbound register `midx`
    /// (`ntb_peer_msg_write`). A register still full refuses it and sets this
    /// port's outbound status bit `midx`, as the hardware does.
    pub fn peer_msg_write(&self, pidx: u32, midx: u32, data: u32) -> Result<MsgWrite, NtbError> {
        let port = self.linked_peer(pidx)?;
        let written = self
            .layout
            .peer_msg_write(self.region(), self.port, port, midx, data)?;
        match written {
            MsgWrite::Delivered(ring) => self.ring_port(port, ring),
            MsgWrite::Refused(ring) => self.ring_port(self.port, ring),
        }
        Ok(written)
    }

    // ---- memory windows ----

    /// Inbound (and outbound) windows per port (`ntb_mw_count`).
    pub fn mw_count(&self) -> u32 {
        self.layout.shape().mw_count
    }

    /// The alignment rules for translating window `widx` for peer `pidx`
    /// (`ntb_mw_get_align`); like the kernel's, only while the link is up.
    pub fn mw_get_align(&self, pidx: u32, widx: u32) -> Result<MwAlign, NtbError> {
        self.linked_peer(pidx)?;
        self.layout.mw_buffer(self.port, widx)?;
        Ok(self.layout.mw_align())
    }

    /// This port's inbound window `widx`: the region memory it may translate
    /// (what a driver would allocate for `ntb_mw_set_trans`).
    pub fn mw_buffer(&self, widx: u32) -> Result<Window, NtbError> {
        Ok(self.layout.mw_buffer(self.port, widx)?)
    }

    /// Lets peer `pidx` into `size` bytes of inbound window `widx` from region
    /// offset `addr` (`ntb_mw_set_trans`).
    pub fn mw_set_trans(&self, pidx: u32, widx: u32, addr: u64, size: u64) -> Result<(), NtbError> {
        let port = self.peer_port_number(pidx)?;
        Ok(self
            .layout
            .mw_set_trans(self.region(), self.port, port, widx, addr, size)?)
    }

    /// Closes inbound window `widx` (`ntb_mw_clear_trans`).
    pub fn mw_clear_trans(&self, pidx: u32, widx: u32) -> Result<(), NtbError> {
        self.peer_port_number(pidx)?;
        Ok(self.layout.mw_clear_trans(self.region(), self.port, widx)?)
    }

    /// The part of inbound window `widx` translated now, and for which peer.
    pub fn mw_trans(&self, widx: u32) -> Result<Option<(u32, Window)>, NtbError> {
        match self.layout.mw_trans(self.region(), self.port, widx)? {
            Some(t) => Ok(Some((self.peer_port_idx(t.port)?, t.window))),
            None => Ok(None),
        }
    }

    /// Points outbound window `widx` at `size` bytes from region offset `addr`
    /// of peer `pidx`'s memory (`ntb_peer_mw_set_trans`): refused unless one of
    /// the peer's inbound windows grants this port that range.
    pub fn peer_mw_set_trans(
        &self,
        pidx: u32,
        widx: u32,
        addr: u64,
        size: u64,
    ) -> Result<(), NtbError> {
        let port = self.linked_peer(pidx)?;
        Ok(self
            .layout
            .peer_mw_set_trans(self.region(), self.port, port, widx, addr, size)?)
    }

    /// Closes outbound window `widx` (`ntb_peer_mw_clear_trans`).
    pub fn peer_mw_clear_trans(&self, pidx: u32, widx: u32) -> Result<(), NtbError> {
        self.peer_port_number(pidx)?;
        Ok(self
            .layout
            .peer_mw_clear_trans(self.region(), self.port, widx)?)
    }

    /// Where outbound window `widx` reaches now (`ntb_peer_mw_get_addr`), and
    /// whose memory it is: checked against the peer's grant on every call.
    /// `None` if the window is not set.
    pub fn peer_mw_get_addr(&self, widx: u32) -> Result<Option<(u32, Window)>, NtbError> {
        match self
            .layout
            .peer_mw_get_addr(self.region(), self.port, widx)?
        {
            Some(t) => Ok(Some((self.peer_port_idx(t.port)?, t.window))),
            None => Ok(None),
        }
    }

    /// Copies `data` into outbound window `widx` at byte `at`: the peer's
    /// memory, zero copy beyond this one. The grant is checked once per call.
    pub fn peer_mw_write(&self, widx: u32, at: usize, data: &[u8]) -> Result<(), NtbError> {
        let window = self.outbound(widx)?;
        let offset = within(window, at, data.len())?;
        Ok(self.region().write(offset, data)?)
    }

    /// Copies bytes from outbound window `widx` at byte `at` into `buf`.
    pub fn peer_mw_read(&self, widx: u32, at: usize, buf: &mut [u8]) -> Result<(), NtbError> {
        let window = self.outbound(widx)?;
        let offset = within(window, at, buf.len())?;
        Ok(self.region().read(offset, buf)?)
    }

    /// Copies bytes from inbound window `widx` at byte `at` into `buf`: what
    /// peers wrote into this port's memory.
    pub fn mw_read(&self, widx: u32, at: usize, buf: &mut [u8]) -> Result<(), NtbError> {
        let offset = within(self.mw_buffer(widx)?, at, buf.len())?;
        Ok(self.region().read(offset, buf)?)
    }

    /// Copies `data` into inbound window `widx` at byte `at`.
    pub fn mw_write(&self, widx: u32, at: usize, data: &[u8]) -> Result<(), NtbError> {
        let offset = within(self.mw_buffer(widx)?, at, data.len())?;
        Ok(self.region().write(offset, data)?)
    }

    fn outbound(&self, widx: u32) -> Result<Window, NtbError> {
        self.layout
            .peer_mw_get_addr(self.region(), self.port, widx)?
            .map(|t| t.window)
            .ok_or(NtbError::Layout(NtbLayoutError::NotGranted))
    }

    // ---- events ----

    /// Now, as the point after which [`wait_events`](Self::wait_events)
    /// reports events.
    pub fn events(&self) -> EventCount {
        self.log.now()
    }

    /// Waits up to `timeout` (`None`: forever) for events after `seen` and
    /// returns them (empty on timeout), advancing `seen`. Spins briefly, then
    /// sleeps on the switch's doorbell vector. Any number of threads may wait
    /// at once; each sees every event. A peer the server reports gone frees
    /// its ports and brings a link event.
    pub fn wait_events(
        &self,
        seen: &mut EventCount,
        timeout: Option<Duration>,
    ) -> Result<Events, NtbError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let taken = self.layout.take_events(self.region(), self.port)?;
            self.log.record(taken);
            match self.log.turn(seen, deadline) {
                Turn::News(events) => return Ok(events),
                Turn::TimedOut => return Ok(Events::default()),
                Turn::Pump => {
                    let pumped = self.pump(deadline);
                    self.log.end_pump();
                    pumped?;
                }
            }
        }
    }

    /// Waits up to `timeout` until `check` gives a value, re-checking after
    /// every event: how ntb_tool's `db_event`, `msg_event` and `link_event`
    /// block. `Ok(None)` on timeout.
    pub fn wait_until<T>(
        &self,
        timeout: Option<Duration>,
        mut check: impl FnMut(&Self) -> Result<Option<T>, NtbError>,
    ) -> Result<Option<T>, NtbError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut seen = self.events();
        loop {
            if let Some(value) = check(self)? {
                return Ok(Some(value));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(None);
            }
            self.wait_events(&mut seen, left)?;
        }
    }

    /// An fd that becomes readable when an event may be waiting (for epoll or
    /// an async reactor); then call [`wait_events`](Self::wait_events) with a
    /// zero timeout. `None` on a transport without a doorbell.
    pub fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.device.wait_fd()
    }

    /// Sleeps on the doorbell until this port's events word holds something or
    /// the deadline passes; what it takes goes into the log.
    fn pump(&self, deadline: Option<Instant>) -> Result<(), NtbError> {
        let region = self.region();
        let spin_until = Instant::now() + self.policy.spin;
        let vector = self.layout.shape().vector;
        loop {
            let taken = self.layout.take_events(region, self.port)?;
            if !taken.is_empty() {
                self.log.record(taken);
                return Ok(());
            }
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(());
            }
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            if !self.device.has_doorbell() {
                let tick = left.unwrap_or(POLL_TICK).min(POLL_TICK);
                self.device.wait(WaitFor::NOTHING, Some(tick))?;
                continue;
            }
            if !self.layout.arm(region, self.port)? {
                continue;
            }
            let what = WaitFor {
                vectors: VectorSet::one(vector),
                peer_events: true,
            };
            let event = self.device.wait(what, left);
            self.layout.disarm(region, self.port)?;
            match event? {
                Some(Event::PeerLeft { peer }) => {
                    if self.peer_left(peer)? {
                        return Ok(());
                    }
                }
                Some(Event::ServerGone) => {
                    self.log.record(Events::LINK);
                    return Ok(());
                }
                Some(Event::Notified { .. } | Event::PeerJoined { .. }) | None => {}
            }
        }
    }

    /// The server reported `peer` gone: free its ports, and tell every other
    /// port (guests cannot see the server) that a link went down. Whether it
    /// held any.
    fn peer_left(&self, peer: PeerId) -> Result<bool, NtbError> {
        let region = self.region();
        if self.layout.evict(region, peer)? == 0 {
            return Ok(false);
        }
        tracing::debug!(peer, "an NTB peer left; its ports are free");
        for port in (0..self.port_count()).filter(|&p| p != self.port) {
            if let Ok(Some(_)) = self.layout.owner(region, port) {
                let ring = self.layout.raise(region, port, Events::LINK)?;
                self.ring_port(port, ring);
            }
        }
        self.log.record(Events::LINK);
        Ok(true)
    }

    // ---- helpers ----

    /// Fails once another process took this port over.
    fn check_held(&self) -> Result<(), NtbError> {
        if self
            .layout
            .holds(self.region(), self.port, self.device.id(), self.session)?
        {
            Ok(())
        } else {
            Err(NtbLayoutError::PortLost { port: self.port }.into())
        }
    }

    /// [`link_is_up`](Self::link_is_up) by what this process has heard from
    /// the server: a departure not yet read counts from the next wait (or
    /// `link_is_up`), as if the peer had died just after this look.
    fn linked_as_heard(&self) -> Result<u64, NtbError> {
        Ok(self.layout.link_is_up(self.region(), self.port, |peer| {
            gone_as_heard(self.device, peer)
        })?)
    }

    /// The port of peer `pidx`, if the link to it is up.
    fn linked_peer(&self, pidx: u32) -> Result<u32, NtbError> {
        let port = self.peer_port_number(pidx)?;
        if self.linked_as_heard()? & (1 << pidx) == 0 {
            return Err(NtbError::NotConnected { pidx: Some(pidx) });
        }
        Ok(port)
    }

    /// The ports of every peer whose link is up; at least one.
    fn linked_peer_ports(&self) -> Result<impl Iterator<Item = u32> + use<'_, 'd>, NtbError> {
        let up = self.linked_as_heard()?;
        if up == 0 {
            return Err(NtbError::NotConnected { pidx: None });
        }
        Ok((0..self.peer_port_count())
            .filter(move |pidx| up & (1 << pidx) != 0)
            .filter_map(|pidx| self.peer_port_number(pidx).ok()))
    }

    /// Rings the owner of `port` if the core said to. A failed ring loses no
    /// event (it stays in the port's events word for the next look), so it is
    /// only logged.
    fn ring_port(&self, port: u32, ring: Ring) {
        if ring != Ring(true) || !self.device.has_doorbell() {
            return;
        }
        if let Ok(Some(owner)) = self.layout.owner(self.region(), port) {
            self.ring_peer(owner.peer);
        }
    }

    fn ring_peers(&self, rings: Rings) {
        if self.device.has_doorbell() {
            for &peer in rings.peers() {
                self.ring_peer(peer);
            }
        }
    }

    fn ring_peer(&self, peer: PeerId) {
        if let Err(error) = self.device.notify(peer, self.layout.shape().vector) {
            tracing::debug!(peer, %error, "cannot ring an NTB port's owner");
        }
    }
}

impl Drop for Ntb<'_> {
    /// Gives the port up: every peer sees the link go down.
    fn drop(&mut self) {
        match self
            .layout
            .release(self.region(), self.port, self.device.id(), self.session)
        {
            Ok(rings) => self.ring_peers(rings),
            Err(error) => tracing::debug!(port = self.port, %error, "NTB port not released"),
        }
    }
}

/// Whether the server says `peer` is gone (never, on a transport that cannot
/// see other peers).
fn gone(device: &dyn Device, peer: PeerId) -> bool {
    device.knows_peers() && peer != device.id() && !device.peers().iter().any(|p| p.id == peer)
}

/// [`gone`] by what `device` has heard, asking the server only about a peer it
/// has not heard of.
fn gone_as_heard(device: &dyn Device, peer: PeerId) -> bool {
    device.knows_peers() && peer != device.id() && !device.knows_peer(peer)
}

/// The region offset of `len` bytes at `at` inside `window`.
fn within(window: Window, at: usize, len: usize) -> Result<usize, NtbError> {
    match at.checked_add(len) {
        Some(end) if end <= window.len => Ok(window.offset + at),
        _ => Err(NtbError::Layout(NtbLayoutError::NoSuch {
            what: "window byte",
            index: at as u64,
            count: window.len as u64,
        })),
    }
}

/// A nonce for this process's claim, so that a takeover of the port is noticed.
fn new_session() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() as u32).max(1)
}
