//! One RPMsg link: the handshake, the two virtqueues, the endpoints and the name
//! service, for either role. No I/O beyond the region and the doorbell: the caller
//! polls and decides how to wait.

use core::sync::atomic::Ordering;

use super::endpoints::{EndpointError, Endpoints};
use super::layout::{ControlWord, LinkLayout, Profile, Role};
use super::wire::{
    ADDR_ANY, HEADER_SIZE, Header, NS_ADDR, NS_CREATE, NS_DESTROY, NS_MESSAGE_SIZE, Name, NsMessage,
};
use super::{LinkEvent, ResetCause, RpmsgError};
use crate::notify::{Notify, NotifyError, PeerId, Vector};
use crate::region::{Intent, Region, RegionError};
use crate::virtio::status;
use crate::virtio::virtq::{AvailBuffer, DeviceQueue, DriverQueue, VirtqError};

/// How a link is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// This side's role.
    pub role: Role,
    /// Where everything lives.
    pub layout: LinkLayout,
    /// This peer's id (written into the native header so the other side can ring it).
    pub own_id: PeerId,
    /// The peer to ring; `None` reads it from the native header.
    pub peer: Option<PeerId>,
    /// The doorbell vector both vrings use.
    pub vector: Vector,
}

/// Counters since the link object was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages sent (name service included).
    pub sent: u64,
    /// Data messages delivered to the caller.
    pub received: u64,
    /// Messages for an address nobody has, dropped like OpenAMP does.
    pub dropped: u64,
    /// Messages whose header could not be right, dropped.
    pub bad: u64,
    /// Link resets seen.
    pub resets: u64,
    /// Doorbells that could not be rung (the peer was gone).
    pub kick_failures: u64,
}

#[derive(Debug, Clone)]
enum Queues {
    Host {
        rx: DriverQueue,
        tx: DriverQueue,
        tx_fresh: u16,
    },
    Remote {
        tx: DeviceQueue,
        rx: DeviceQueue,
        spare: Option<AvailBuffer>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing done yet.
    Start,
    /// Remote: waiting for the host's `DRIVER_OK` (not of generation `avoid`).
    WaitingForHost { avoid: Option<u32> },
    /// The link is set up as of this status; `up` once the other side is known to be
    /// there (a native host learns it from the remote's acknowledgement).
    Running { word: ControlWord, up: bool },
}

/// One side of an RPMsg link over a region.
#[derive(Debug, Clone)]
pub struct Link {
    config: LinkConfig,
    layout: LinkLayout,
    state: State,
    queues: Queues,
    endpoints: Endpoints,
    stats: LinkStats,
    /// Buffers were handed back (exposed) without deciding about the doorbell:
    /// the next send, poll or arm decides, with one fence for everything since.
    undecided: bool,
    /// Some endpoint may still have to be announced (skips the scan per poll).
    announce_due: bool,
    /// Where the next send will most likely write.
    next_out: NextBuffer,
}

/// Where the next message will most likely be written. Buffers come back in a
/// steady pattern (the same one again in a ping-pong, the next one in a stream),
/// so the step between the last two is the guess; a wrong one costs a prefetch.
#[derive(Debug, Clone, Copy, Default)]
struct NextBuffer {
    last: usize,
    step: usize,
    len: usize,
}

impl NextBuffer {
    /// Lines prefetched at most: a round trip of small messages is what gains.
    const MAX_LINES: usize = 4;
    const LINE: usize = 64;

    #[inline(always)]
    fn record(&mut self, offset: usize, len: usize) {
        self.step = offset.wrapping_sub(self.last);
        self.last = offset;
        self.len = len;
    }

    /// The offset the next message will most likely be written at.
    #[inline(always)]
    fn guess(&self) -> usize {
        self.last.wrapping_add(self.step)
    }

    /// Prefetches the lines of the guessed buffer, owned.
    #[inline(always)]
    fn prefetch<R: Region + ?Sized>(&self, region: &R) {
        let start = self.guess();
        let end = start.saturating_add(self.len);
        let mut at = start;
        for _ in 0..Self::MAX_LINES {
            if at >= end {
                break;
            }
            region.prefetch(at, Intent::Write);
            at = (at & !(Self::LINE - 1)) + Self::LINE;
        }
    }
}

enum Incoming {
    Data { dst: u32, src: u32, len: usize },
    Ns(NsMessage),
    Nothing,
}

impl Link {
    /// A link that starts on the first [`Link::poll`].
    pub fn new(config: LinkConfig) -> Self {
        let layout = config.layout;
        let [ring0, ring1] = layout.vrings;
        let queues = match config.role {
            Role::Host => Queues::Host {
                rx: DriverQueue::new(ring0, false),
                tx: DriverQueue::new(ring1, false),
                tx_fresh: 0,
            },
            Role::Remote => Queues::Remote {
                tx: DeviceQueue::new(ring0, false),
                rx: DeviceQueue::new(ring1, false),
                spare: None,
            },
        };
        Link {
            config,
            layout,
            state: State::Start,
            queues,
            endpoints: Endpoints::new(),
            stats: LinkStats::default(),
            undecided: false,
            announce_due: false,
            next_out: NextBuffer::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The layout in use (a remote may have learned its address base).
    pub fn layout(&self) -> &LinkLayout {
        &self.layout
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Largest payload one message carries.
    pub fn max_payload(&self) -> usize {
        (self.layout.buf_size as usize - HEADER_SIZE).min(usize::from(u16::MAX))
    }

    /// Whether messages can be sent.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Whether the other side is known to be there.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Running { up: true, .. })
    }

    /// Creates an endpoint (see [`Endpoints::create`]); a named, unbound endpoint is
    /// announced as soon as the link runs, and again after every reset.
    pub fn create_endpoint(
        &mut self,
        name: &str,
        local: u32,
        remote: u32,
    ) -> Result<u32, RpmsgError> {
        let name = Name::new(name).ok_or(RpmsgError::BadName)?;
        self.announce_due = true;
        self.endpoints
            .create(name, local, remote)
            .map_err(|e| match e {
                EndpointError::AddressInUse(a) => RpmsgError::AddressInUse(a),
                EndpointError::TooMany => RpmsgError::TooManyEndpoints,
            })
    }

    /// Removes an endpoint, announcing its departure if it was announced.
    pub fn destroy_endpoint<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        local: u32,
    ) -> Result<(), RpmsgError> {
        let ep = self
            .endpoints
            .destroy(local)
            .ok_or(RpmsgError::NoSuchEndpoint(local))?;
        if ep.announce && ep.local >= super::wire::FIRST_DYNAMIC_ADDR && self.is_running() {
            let ns = NsMessage {
                name: ep.name,
                addr: ep.local,
                flags: NS_DESTROY,
            };
            self.transmit(region, notify, ep.local, NS_ADDR, &ns.to_bytes())?;
        }
        Ok(())
    }

    /// Sends `payload` from endpoint `local` to its bound remote address, or to
    /// `dst` if given. `NoBuffer` means the other side has not freed a buffer yet:
    /// wait (see [`Link::arm`]) and try again.
    #[inline]
    pub fn send<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        local: u32,
        dst: Option<u32>,
        payload: &[u8],
    ) -> Result<(), RpmsgError> {
        let ep = self
            .endpoints
            .get(local)
            .ok_or(RpmsgError::NoSuchEndpoint(local))?;
        let dst = dst.unwrap_or(ep.remote);
        if dst == ADDR_ANY {
            return Err(RpmsgError::NotBound(local));
        }
        if payload.len() > self.max_payload() {
            return Err(RpmsgError::TooLarge {
                len: payload.len(),
                max: self.max_payload(),
            });
        }
        if !self.is_running() {
            return Err(RpmsgError::LinkDown);
        }
        self.transmit(region, notify, local, dst, payload)
    }

    /// Drives the link: the handshake, pending announcements, then at most one
    /// incoming message. A data message is copied into `buf`, which must hold
    /// [`Link::max_payload`] bytes. `Ok(None)`: nothing to do now.
    pub fn poll<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        buf: &mut [u8],
    ) -> Result<Option<LinkEvent>, RpmsgError> {
        if buf.len() < self.max_payload() {
            return Err(RpmsgError::BufferTooSmall {
                needed: self.max_payload(),
            });
        }
        match self.drive(region, notify, buf) {
            Err(RpmsgError::Virtq(VirtqError::Corrupt(what)) | RpmsgError::Corrupt(what))
                if self.layout.profile == Profile::Native =>
            {
                self.recover(region, notify, ResetCause::Corrupt(what))
            }
            other => other,
        }
    }

    fn drive<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        buf: &mut [u8],
    ) -> Result<Option<LinkEvent>, RpmsgError> {
        // A running link whose status word is as it left it has no handshake
        // step to take: one load, not the role's whole state machine.
        let steady = match self.state {
            State::Running { word, up: true } => self.layout.control.load(region)? == word,
            _ => false,
        };
        if self.undecided && self.is_running() {
            self.flush_notices(region, notify)?;
        }
        if !steady {
            if let Some(event) = self.handshake(region, notify)? {
                return Ok(Some(event));
            }
            if !self.is_running() {
                return Ok(None);
            }
        }
        if self.announce_due {
            self.announce_pending(region, notify)?;
        }
        loop {
            match self.receive(region, buf)? {
                Incoming::Nothing => return Ok(None),
                Incoming::Ns(ns) => {
                    if let Some(event) = self.name_service(ns) {
                        return Ok(Some(event));
                    }
                }
                Incoming::Data { dst, src, len } => match self.endpoints.get_mut(dst) {
                    Some(ep) => {
                        if ep.remote == ADDR_ANY {
                            ep.remote = src;
                        }
                        self.stats.received += 1;
                        return Ok(Some(LinkEvent::Message {
                            local: dst,
                            src,
                            len,
                        }));
                    }
                    None => self.stats.dropped += 1,
                },
            }
        }
    }

    /// Before sleeping: asks the other side to ring for new messages (and, with
    /// `want_space`, for freed buffers). Returns true if something is already
    /// there: poll again instead of sleeping.
    pub fn arm<R: Region + ?Sized>(
        &mut self,
        region: &R,
        want_space: bool,
    ) -> Result<bool, RpmsgError> {
        if !self.is_running() {
            return Ok(false);
        }
        if self.undecided {
            // A buffer handed back still needs its doorbell decision: the poll
            // that follows makes it, so the other side never waits on a sleeper.
            return Ok(true);
        }
        Ok(match &mut self.queues {
            Queues::Host { rx, tx, .. } => {
                let data = rx.set_interrupts(region, true)?;
                let space = want_space && tx.set_interrupts(region, true)?;
                data || space
            }
            Queues::Remote { tx, rx, .. } => {
                let data = rx.set_notifications(region, true)?;
                let space = want_space && tx.set_notifications(region, true)?;
                data || space
            }
        })
    }

    /// After waking: stops the doorbells again, so a busy link costs the other
    /// side no doorbell per message.
    pub fn disarm<R: Region + ?Sized>(&mut self, region: &R) -> Result<(), RpmsgError> {
        if !self.is_running() {
            return Ok(());
        }
        match &mut self.queues {
            Queues::Host { rx, tx, .. } => {
                rx.set_interrupts(region, false)?;
                tx.set_interrupts(region, false)?;
            }
            Queues::Remote { tx, rx, .. } => {
                rx.set_notifications(region, false)?;
                tx.set_notifications(region, false)?;
            }
        }
        Ok(())
    }

    /// Whether a poll (or, with `want_space`, a send) would find something, reading
    /// only: cheap enough to spin on.
    pub fn pending<R: Region + ?Sized>(
        &self,
        region: &R,
        want_space: bool,
    ) -> Result<bool, RpmsgError> {
        let State::Running { word, .. } = self.state else {
            return Ok(true);
        };
        if self.undecided || self.layout.control.load(region)? != word {
            return Ok(true);
        }
        Ok(match &self.queues {
            Queues::Host { rx, tx, tx_fresh } => {
                rx.has_used(region)?
                    || want_space
                        && (*tx_fresh < tx.ring().layout().num() || tx.has_used(region)?)
            }
            Queues::Remote { tx, rx, spare } => {
                rx.has_avail(region)? || want_space && (spare.is_some() || tx.has_avail(region)?)
            }
        })
    }

    fn peer<R: Region + ?Sized>(&self, region: &R) -> Option<PeerId> {
        let other = match self.config.role {
            Role::Host => Role::Remote,
            Role::Remote => Role::Host,
        };
        self.config
            .peer
            .or_else(|| self.layout.control.peer_of(region, other).ok().flatten())
    }

    fn kick<R: Region + ?Sized, N: Notify + ?Sized>(&mut self, region: &R, notify: &N) {
        let Some(peer) = self.peer(region) else {
            return;
        };
        match notify.notify(peer, self.config.vector) {
            Ok(()) | Err(NotifyError::Unsupported) => {}
            Err(_) => self.stats.kick_failures += 1,
        }
    }

    fn handshake<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
    ) -> Result<Option<LinkEvent>, RpmsgError> {
        match self.config.role {
            Role::Host => self.host_handshake(region, notify),
            Role::Remote => self.remote_handshake(region, notify),
        }
    }

    fn host_handshake<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
    ) -> Result<Option<LinkEvent>, RpmsgError> {
        let control = self.layout.control;
        match self.state {
            State::Start | State::WaitingForHost { .. } => {
                if self.layout.profile == Profile::OpenampLinux
                    && !super::layout::resource_table::check(region)?
                {
                    return Ok(None); // The remote writes the table; wait for it.
                }
                self.host_start(region, notify)?;
                Ok(if self.is_up() {
                    Some(LinkEvent::Up)
                } else {
                    None
                })
            }
            State::Running { word, up } => {
                let now = control.load(region)?;
                if now.generation != word.generation {
                    return Err(RpmsgError::Displaced);
                }
                if now.status & status::NEEDS_RESET != 0 {
                    return self.recover(region, notify, ResetCause::PeerRestarted);
                }
                if !up && control.attached(region)? == Some(word.generation) {
                    self.state = State::Running { word, up: true };
                    return Ok(Some(LinkEvent::Up));
                }
                Ok(None)
            }
        }
    }

    /// Sets the host side up from scratch: status 0, rings zeroed, RX buffers
    /// posted, `DRIVER_OK` (with a new generation in the native layout).
    fn host_start<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
    ) -> Result<(), RpmsgError> {
        let control = self.layout.control;
        let previous = control.load(region)?;
        let generation = match self.layout.profile {
            Profile::Native => (previous.generation + 1) & 0x00FF_FFFF,
            _ => 0,
        };
        let word = ControlWord {
            generation,
            status: 0,
        };
        control.store(region, word)?;
        control.set_peer(region, Role::Host, self.config.own_id)?;
        control.accept_features(region)?;
        let layout = self.layout;
        let Queues::Host { rx, tx, tx_fresh } = &mut self.queues else {
            unreachable!("host queues belong to the host role")
        };
        rx.reset(region)?;
        tx.reset(region)?;
        *tx_fresh = 0;
        region.fill(
            layout.pool,
            2 * usize::from(layout.vrings[0].layout().num()) * layout.buf_size as usize,
            0,
        )?;
        for id in 0..layout.vrings[0].layout().num() {
            let offset = layout.buffer(0, id);
            rx.post(region, id, layout.address(offset), layout.buf_size, true)?;
        }
        rx.publish(region)?;
        tx.set_interrupts(region, false)?;
        let ready = ControlWord {
            generation,
            status: status::DRIVER_OK,
        };
        control.store(region, ready)?;
        let up = self.layout.profile != Profile::Native;
        self.start_running(region, notify, ready, up);
        Ok(())
    }

    /// The link runs as of `word`: endpoints announce themselves again and the
    /// other side is rung to look.
    fn start_running<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        word: ControlWord,
        up: bool,
    ) {
        self.state = State::Running { word, up };
        self.endpoints.link_restarted();
        self.announce_due = true;
        self.kick(region, notify);
    }

    fn remote_handshake<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
    ) -> Result<Option<LinkEvent>, RpmsgError> {
        let control = self.layout.control;
        match self.state {
            State::Start => {
                if self.layout.profile == Profile::OpenampLinux
                    && !super::layout::resource_table::check(region)?
                {
                    super::layout::resource_table::write(region)?;
                }
                let now = control.load(region)?;
                let stale = now.ready() && control.attached(region)? == Some(now.generation);
                if stale {
                    // An earlier remote served this generation; its positions in the
                    // rings are lost, so the host must start over.
                    control.request_reset(region, now)?;
                    self.kick(region, notify);
                }
                self.state = State::WaitingForHost {
                    avoid: stale.then_some(now.generation),
                };
                self.remote_handshake(region, notify)
            }
            State::WaitingForHost { avoid } => {
                let now = control.load(region)?;
                if self.layout.profile != Profile::Native && now.status & status::NEEDS_RESET != 0 {
                    control.store(
                        region,
                        ControlWord {
                            generation: 0,
                            status: 0,
                        },
                    )?;
                    return Ok(None);
                }
                if !now.ready()
                    || avoid == Some(now.generation) && self.layout.profile == Profile::Native
                {
                    return Ok(None);
                }
                self.remote_attach(region, notify, now)?;
                Ok(Some(LinkEvent::Up))
            }
            State::Running { word, .. } => {
                let now = control.load(region)?;
                if now == word {
                    return Ok(None);
                }
                self.state = State::WaitingForHost {
                    avoid: Some(word.generation),
                };
                if self.layout.profile != Profile::Native {
                    self.state = State::WaitingForHost { avoid: None };
                }
                self.stats.resets += 1;
                self.endpoints.link_restarted();
                self.announce_due = true;
                Ok(Some(LinkEvent::Reset {
                    lost: 0,
                    cause: ResetCause::PeerRestarted,
                }))
            }
        }
    }

    fn remote_attach<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        word: ControlWord,
    ) -> Result<(), RpmsgError> {
        let [ring0, ring1] = self.layout.vrings;
        if self.layout.profile == Profile::ZephyrIvshmem {
            // The host's first pool allocation is RX buffer 0, at the pool's start.
            let first = ring0.descriptor(region, 0)?;
            self.layout.address_base = first.addr.wrapping_sub(self.layout.pool as u64);
        }
        let mut tx = DeviceQueue::new(ring0, false);
        let mut rx = DeviceQueue::new(ring1, false);
        tx.set_notifications(region, false)?;
        rx.set_notifications(region, true)?;
        self.queues = Queues::Remote {
            tx,
            rx,
            spare: None,
        };
        let control = self.layout.control;
        control.set_peer(region, Role::Remote, self.config.own_id)?;
        control.set_attached(region, word.generation)?;
        self.start_running(region, notify, word, true);
        Ok(())
    }

    /// The native recovery: a host starts a new generation, a remote asks for one.
    fn recover<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        cause: ResetCause,
    ) -> Result<Option<LinkEvent>, RpmsgError> {
        self.stats.resets += 1;
        let lost = match (&self.queues, self.config.role) {
            (Queues::Host { tx, .. }, Role::Host) => u32::from(tx.outstanding()),
            _ => 0,
        };
        match self.config.role {
            Role::Host => self.host_start(region, notify)?,
            Role::Remote => {
                let now = self.layout.control.load(region)?;
                self.layout.control.request_reset(region, now)?;
                self.kick(region, notify);
                self.state = State::WaitingForHost {
                    avoid: Some(now.generation),
                };
                self.endpoints.link_restarted();
                self.announce_due = true;
            }
        }
        Ok(Some(LinkEvent::Reset { lost, cause }))
    }

    fn announce_pending<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
    ) -> Result<(), RpmsgError> {
        if !self.announce_due {
            return Ok(());
        }
        while let Some(ep) = self.endpoints.pending_announcement() {
            let ns = NsMessage {
                name: ep.name,
                addr: ep.local,
                flags: NS_CREATE,
            };
            match self.transmit(region, notify, ep.local, NS_ADDR, &ns.to_bytes()) {
                Ok(()) => {
                    if let Some(e) = self.endpoints.get_mut(ep.local) {
                        e.announce_pending = false;
                    }
                }
                Err(RpmsgError::NoBuffer) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.announce_due = false;
        Ok(())
    }

    fn name_service(&mut self, ns: NsMessage) -> Option<LinkEvent> {
        match ns.flags {
            NS_CREATE => Some(match self.endpoints.bind_announced(&ns.name, ns.addr) {
                Some(local) => LinkEvent::Bound {
                    local,
                    remote: ns.addr,
                },
                None => LinkEvent::Announced {
                    name: ns.name,
                    addr: ns.addr,
                },
            }),
            NS_DESTROY => {
                let local = self.endpoints.unbind_announced(&ns.name, ns.addr);
                Some(LinkEvent::Unbound {
                    name: ns.name,
                    addr: ns.addr,
                    local,
                })
            }
            _ => None,
        }
    }

    /// Puts one message on the wire.
    #[inline(always)]
    fn transmit<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
        src: u32,
        dst: u32,
        payload: &[u8],
    ) -> Result<(), RpmsgError> {
        let layout = self.layout;
        let header = Header::new(src, dst, payload.len() as u16).to_bytes();
        let exposed =
            match &mut self.queues {
                Queues::Host { tx, tx_fresh, .. } => {
                    // The remote only read it: its reported length says nothing.
                    let id = match tx.take_used_unwritten(region)? {
                        Some(used) => used.id,
                        None if *tx_fresh < tx.ring().layout().num() => {
                            *tx_fresh += 1;
                            *tx_fresh - 1
                        }
                        None => return Err(RpmsgError::NoBuffer),
                    };
                    let offset = layout.buffer(1, id);
                    self.next_out.record(offset, HEADER_SIZE + payload.len());
                    write_message(region, offset, layout.buf_size, &header, payload)?;
                    tx.post(region, id, layout.address(offset), layout.buf_size, false)?;
                    tx.expose(region)?
                }
                Queues::Remote { tx, spare, .. } => {
                    let buffer = match spare.take() {
                        Some(b) => b,
                        None => tx.take_avail(region)?.ok_or(RpmsgError::NoBuffer)?,
                    };
                    let offset = layout.translate(buffer.addr, buffer.len)?;
                    let capacity = (buffer.len as usize).checked_sub(HEADER_SIZE).ok_or(
                        RpmsgError::Corrupt("the host posted a buffer shorter than a header"),
                    )?;
                    if payload.len() > capacity {
                        *spare = Some(buffer);
                        return Err(RpmsgError::TooLarge {
                            len: payload.len(),
                            max: capacity,
                        });
                    }
                    self.next_out.record(offset, HEADER_SIZE + payload.len());
                    write_message(region, offset, buffer.len, &header, payload)?;
                    tx.put_used(region, buffer.id, buffer.len)?;
                    tx.expose(region)?
                }
            };
        self.stats.sent += 1;
        self.undecided |= exposed;
        self.flush_notices(region, notify)
    }

    /// Decides about the doorbell for everything exposed since the last decision,
    /// on both vrings (one fence for both, none when neither has anything new),
    /// and rings once if the other side asked on either.
    #[inline(always)]
    fn flush_notices<R: Region + ?Sized, N: Notify + ?Sized>(
        &mut self,
        region: &R,
        notify: &N,
    ) -> Result<(), RpmsgError> {
        if !self.undecided {
            return Ok(());
        }
        self.undecided = false;
        // One fence for both vrings: it orders every index stored before it
        // against both looks at the other side's wishes.
        let due = match &mut self.queues {
            Queues::Host { rx, tx, .. } => {
                if tx.undecided() || rx.undecided() {
                    region.fence(Ordering::SeqCst);
                }
                tx.notify_due_fenced(region)? | rx.notify_due_fenced(region)?
            }
            Queues::Remote { tx, rx, .. } => {
                if tx.undecided() || rx.undecided() {
                    region.fence(Ordering::SeqCst);
                }
                tx.notify_due_fenced(region)? | rx.notify_due_fenced(region)?
            }
        };
        if due {
            self.kick(region, notify);
        }
        Ok(())
    }

    /// Takes one message off the wire; data goes into `buf`.
    #[inline(always)]
    fn receive<R: Region + ?Sized>(
        &mut self,
        region: &R,
        buf: &mut [u8],
    ) -> Result<Incoming, RpmsgError> {
        let layout = self.layout;
        let (message, returned) = match &mut self.queues {
            Queues::Host { rx, .. } => {
                let Some(used) = rx.take_used(region)? else {
                    return Ok(Incoming::Nothing);
                };
                let offset = layout.buffer(0, used.id);
                let len = used.len.min(layout.buf_size);
                let message = read_message(region, offset, len, buf);
                rx.post(
                    region,
                    used.id,
                    layout.address(offset),
                    layout.buf_size,
                    true,
                )?;
                (message, rx.expose(region)?)
            }
            Queues::Remote { rx, .. } => {
                let Some(buffer) = rx.take_avail(region)? else {
                    return Ok(Incoming::Nothing);
                };
                let offset = layout.translate(buffer.addr, buffer.len)?;
                let message = read_message(region, offset, buffer.len, buf);
                rx.put_used(region, buffer.id, buffer.len)?;
                (message, rx.expose(region)?)
            }
        };
        // The buffer is back; whether the other side wants to hear of it is
        // decided by this side's next send, poll or arm, with one fence for all.
        self.undecided |= returned;
        // A message in usually means a message out soon (a reply): fetch what
        // that send touches now, while this message is read and handled, instead
        // of miss after miss inside the send.
        match &self.queues {
            Queues::Host { tx, .. } => tx.prefetch_next(region),
            Queues::Remote { tx, .. } => tx.prefetch_next(region),
        }
        self.next_out.prefetch(region);
        let Some((header, len)) = message? else {
            self.stats.bad += 1;
            return Ok(Incoming::Nothing);
        };
        if header.dst == NS_ADDR {
            return Ok(match NsMessage::parse(&buf[..len]) {
                Some(ns) if len == NS_MESSAGE_SIZE => Incoming::Ns(ns),
                _ => Incoming::Nothing,
            });
        }
        Ok(Incoming::Data {
            dst: header.dst,
            src: header.src,
            len,
        })
    }
}

/// Reads the header and payload of a buffer of `len` bytes at `offset`; `None`
/// when the header claims more than the buffer holds.
#[inline(always)]
fn read_message<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    len: u32,
    buf: &mut [u8],
) -> Result<Option<(Header, usize)>, RpmsgError> {
    let mut raw = [0u8; HEADER_SIZE];
    let whole_words = offset % 8 == 0;
    if !(whole_words && region.read_words(offset, &mut raw).is_ok()) {
        region.read(offset, &mut raw)?;
    }
    let header = Header::from_bytes(&raw);
    let payload = usize::from(header.len);
    if HEADER_SIZE + payload > len as usize || payload > buf.len() {
        return Ok(None);
    }
    // Whole words when the padded payload stays inside the buffer: the bytes
    // read past the payload are the buffer's own, and dropped.
    let at = offset + HEADER_SIZE;
    let buf = &mut buf[..payload];
    if !(whole_words
        && HEADER_SIZE + payload.next_multiple_of(8) <= len as usize
        && region.read_words(at, buf).is_ok())
    {
        region.read(at, buf)?;
    }
    Ok(Some((header, payload)))
}

/// Writes a message into the buffer of `room` bytes at `offset` (the caller
/// checked that header and payload fit): as whole words when the offset is
/// aligned and the padding stays inside the buffer, else byte-exact.
#[inline(always)]
fn write_message<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    room: u32,
    header: &[u8; HEADER_SIZE],
    payload: &[u8],
) -> Result<(), RegionError> {
    let at = offset + HEADER_SIZE;
    if offset % 8 == 0
        && HEADER_SIZE + payload.len().next_multiple_of(8) <= room as usize
        && region.write_words(offset, header).is_ok()
        && region.write_words(at, payload).is_ok()
    {
        return Ok(());
    }
    region.write(offset, header)?;
    region.write(at, payload)
}

#[cfg(test)]
mod next_buffer_tests {
    use super::NextBuffer;

    #[test]
    fn the_guess_follows_a_steady_pattern() {
        let mut same = NextBuffer::default();
        for _ in 0..3 {
            same.record(0x4000, 80);
        }
        assert_eq!(same.guess(), 0x4000, "a ping-pong reuses its buffer");
        let mut stream = NextBuffer::default();
        for i in 0..3 {
            stream.record(0x8000 + i * 512, 80);
        }
        assert_eq!(
            stream.guess(),
            0x8000 + 3 * 512,
            "a stream takes the next one"
        );
        stream.record(0x8000, 80);
        assert_eq!(stream.guess(), 0x8000 - 1024, "a wrap misleads once");
        stream.record(0x8000 + 512, 80);
        assert_eq!(stream.guess(), 0x8000 + 1024);
    }
}
