//! One side of a console from start to end: the virtio-mmio negotiation, the
//! console on the negotiated queues, and starting over when the other side
//! restarts. [`DriverSession`] and [`DeviceSession`] are what a runtime drives:
//! it calls `poll` until it returns no event, moves bytes with `read`/`write`,
//! calls `flush`, and rings the other side whenever one of them says so.
//!
//! # Restarts
//!
//! A driver always starts with a reset, so a device sees a driver's restart as
//! a reset request; a device that starts while a driver is there sets
//! `NEEDS_RESET` (see [`crate::virtio::mmio`]), so a driver sees a device's
//! restart as that bit or, in the native profile, as a new device generation.
//! Either way both sides drop their queues and negotiate again, and the
//! survivor reports the bytes it had sent that the other side never took
//! ([`SessionEvent::PeerRestarted`]): in the native profile each side records in
//! its header line how many bytes it took since the last reset, so the figure
//! is exact up to what the crashed process held between taking bytes and
//! recording them.
//!
//! # End of stream
//!
//! With `F_MULTIPORT` a side ends a port's output with `PORT_OPEN 0`. Without
//! it the native profile records ended ports in the side's header line, after
//! the data is published, so that the other side reads end of stream only once
//! it has drained everything before it. The Zephyr sample's profile has neither:
//! its ports never end.

use core::sync::atomic::Ordering;

use super::{
    CONFIG_SIZE, ConsoleConfig, ConsoleDevice, ConsoleDriver, ConsoleError, ConsoleLayout,
    DeviceEvent, DriverEvent, EMERG_WR_OFFSET, F_EMERG_WRITE, F_MULTIPORT, MAX_QUEUES,
    PortCounters, Side, SideKind, has,
};
use crate::PeerId;
use crate::region::{Le32, Region};
use crate::virtio::id::CONSOLE;
use crate::virtio::mmio::registers::{
    INTERRUPT_CONFIG_CHANGE, INTERRUPT_USED_BUFFER, LEGACY_PAGE_SIZE,
};
use crate::virtio::mmio::{
    self, DeviceConfig, DriverConfig, MmioBlock, MmioDevice, MmioDriver, MmioError, QueueConfig,
    QueueSetup, Shm, Step,
};
use crate::virtio::virtq::{Vring, VringLayout};

#[cfg(test)]
mod tests;

/// What happened on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Negotiation finished: the ports carry data.
    Up {
        /// The features both sides use.
        features: u64,
    },
    /// The other side started again; `lost` bytes this side had sent were never
    /// taken by it.
    PeerRestarted {
        /// Bytes sent and never taken.
        lost: u64,
    },
    /// A port event on the driver side.
    Driver(DriverEvent),
    /// A port event on the device side.
    Device(DeviceEvent),
    /// Device side: the driver wrote a byte through `emerg_wr`.
    Emergency(u8),
    /// Device side: the driver broke the negotiation's rules; the device asked
    /// for a reset and waits for it.
    DriverFailed(MmioError),
    /// The other side wrote something no correct peer writes into the queues:
    /// this side dropped them and negotiates again.
    PeerFault(ConsoleError),
}

/// What one call to `poll` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionPoll {
    /// Something happened (`None`: nothing more to do now).
    pub event: Option<SessionEvent>,
    /// Ring the other side.
    pub ring: bool,
}

impl SessionPoll {
    const IDLE: SessionPoll = SessionPoll {
        event: None,
        ring: false,
    };

    fn event(event: SessionEvent, ring: bool) -> Self {
        SessionPoll {
            event: Some(event),
            ring,
        }
    }
}

impl From<MmioError> for ConsoleError {
    fn from(e: MmioError) -> Self {
        ConsoleError::Mmio(e)
    }
}

/// Sums of every port's counters.
fn totals(counters: impl Iterator<Item = PortCounters>) -> PortCounters {
    counters.fold(PortCounters::default(), |sum, c| PortCounters {
        written: sum.written + c.written,
        buffered: sum.buffered + c.buffered,
        in_flight: sum.in_flight + c.in_flight,
        acknowledged: sum.acknowledged + c.acknowledged,
        received: sum.received + c.received,
    })
}

/// Bytes of `written` the other side did not take, by its own (untrusted) count.
fn not_taken(written: u64, taken_by_peer: u64) -> u64 {
    written - taken_by_peer.min(written)
}

/// The header lines of a native layout: this side's and the other's.
fn sides(layout: &ConsoleLayout, me: SideKind) -> Option<(Side, Side)> {
    Some((layout.side(me)?, layout.side(me.other())?))
}

/// The driver side of one console.
#[derive(Debug)]
pub struct DriverSession {
    layout: ConsoleLayout,
    mmio: MmioDriver,
    console: Option<ConsoleDriver>,
    sides: Option<(Side, Side)>,
    /// The device's generation when this session came up.
    device_generation: u32,
    /// Ports whose output this side ended (kept across restarts).
    ended: u32,
    /// An event found outside `poll`, handed out by the next one.
    pending: Option<SessionEvent>,
}

impl DriverSession {
    /// Advances negotiation, notices a restarted or misbehaving peer, and hands
    /// out one event.
    pub fn poll<R: Region + ?Sized>(&mut self, region: &R) -> Result<SessionPoll, ConsoleError> {
        if let Some(event) = self.pending.take() {
            return Ok(SessionPoll::event(event, true));
        }
        let polled = self.poll_inner(region);
        self.guard(region, polled)
    }

    /// Copies up to `buf.len()` bytes the other side sent on `port`; 0 if none
    /// now.
    pub fn read<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        buf: &mut [u8],
    ) -> Result<usize, ConsoleError> {
        let n = self.read_inner(region, port, buf);
        self.guard(region, n)
    }

    /// Takes as much of `data` for `port` as the buffers hold (0 while the
    /// console is down or no buffer is free).
    pub fn write<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        data: &[u8],
    ) -> Result<usize, ConsoleError> {
        let n = self.write_inner(region, port, data);
        self.guard(region, n)
    }

    /// Publishes what was written and read; returns whether to ring.
    pub fn flush<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, ConsoleError> {
        let ring = self.flush_inner(region);
        self.guard(region, ring)
    }

    /// Turns what the other side got wrong into a reset of the session (its
    /// event comes from the next `poll`); passes everything else on.
    fn guard<R: Region + ?Sized, T: Default>(
        &mut self,
        region: &R,
        result: Result<T, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        match result {
            Err(e) if e.is_peer_fault() => {
                self.pending = Some(self.fault(region, e)?);
                Ok(T::default())
            }
            other => other,
        }
    }
    /// Starts the driver side of `layout` as peer `id`.
    pub fn new<R: Region + ?Sized>(
        region: &R,
        layout: ConsoleLayout,
        id: PeerId,
    ) -> Result<Self, ConsoleError> {
        let mut queues = [QueueSetup::contiguous(0, VringLayout::new(1, 4)?); MAX_QUEUES];
        for (setup, ring) in queues.iter_mut().zip(layout.queues()) {
            *setup = QueueSetup::contiguous(layout.map.address_of(ring.base()), ring.layout());
        }
        let config = DriverConfig {
            device_id: CONSOLE,
            version: Some(layout.version),
            features: layout.device_features,
            queues: &queues[..layout.queues().len()],
            legacy_align: LEGACY_PAGE_SIZE,
        };
        let mmio = MmioDriver::new(MmioBlock::new(layout.block)?, layout.handshake, &config)?;
        let sides = sides(&layout, SideKind::Driver);
        if let Some((me, _)) = sides {
            me.attach(region, id)?;
        }
        let mut session = DriverSession {
            layout,
            mmio,
            console: None,
            sides,
            device_generation: 0,
            ended: 0,
            pending: None,
        };
        session.start_over(region)?;
        Ok(session)
    }

    /// The layout.
    pub fn layout(&self) -> &ConsoleLayout {
        &self.layout
    }

    /// Whether the ports carry data.
    pub fn is_up(&self) -> bool {
        self.console.is_some()
    }

    /// The console, once up.
    pub fn console(&self) -> Option<&ConsoleDriver> {
        self.console.as_ref()
    }

    /// The device wrote something no correct device writes (or restarted under
    /// the session): start over, reporting what was lost.
    fn fault<R: Region + ?Sized>(
        &mut self,
        region: &R,
        error: ConsoleError,
    ) -> Result<SessionEvent, ConsoleError> {
        let restarted = match self.sides {
            Some((_, device)) => device.generation(region)? != self.device_generation,
            None => false,
        };
        let lost = match self.console.as_ref() {
            Some(console) => {
                let sent = totals(
                    (0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)),
                );
                match self.sides {
                    Some((_, device)) => not_taken(sent.written, device.taken(region)?),
                    None => sent.written - sent.acknowledged,
                }
            }
            None => 0,
        };
        self.start_over(region)?;
        Ok(if restarted {
            SessionEvent::PeerRestarted { lost }
        } else {
            SessionEvent::PeerFault(error)
        })
    }

    /// Drops the queues and negotiates again from a reset. The rings are zeroed
    /// first: a device reads them only after `DRIVER_OK`, and must then find no
    /// index left from an earlier session.
    fn start_over<R: Region + ?Sized>(&mut self, region: &R) -> Result<(), ConsoleError> {
        self.console = None;
        self.mmio.reset();
        for ring in self.layout.queues() {
            ring.clear(region)?;
        }
        Ok(())
    }

    /// Advances negotiation, notices a restarted device, and hands out one event.
    fn poll_inner<R: Region + ?Sized>(&mut self, region: &R) -> Result<SessionPoll, ConsoleError> {
        let Some(console) = self.console.as_mut() else {
            return match self.mmio.step(region)? {
                Step::Ring => Ok(SessionPoll {
                    event: None,
                    ring: true,
                }),
                Step::Wait => Ok(SessionPoll::IDLE),
                Step::Done => self.come_up(region),
            };
        };
        let restarted = self.mmio.device_needs_reset(region)?
            || match self.sides {
                Some((_, device)) => device.generation(region)? != self.device_generation,
                None => false,
            };
        if restarted {
            let sent = totals(
                (0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)),
            );
            let lost = match self.sides {
                Some((_, device)) => not_taken(sent.written, device.taken(region)?),
                None => sent.written - sent.acknowledged,
            };
            self.start_over(region)?;
            return Ok(SessionPoll::event(
                SessionEvent::PeerRestarted { lost },
                false,
            ));
        }
        let bits = self.mmio.interrupt_status(region)?;
        let mut ring = false;
        if bits != 0 {
            ring = self.mmio.ack_interrupt(region, bits)?;
            if bits & INTERRUPT_CONFIG_CHANGE != 0 {
                let mut bytes = [0u8; CONFIG_SIZE];
                self.mmio.read_config(region, 0, &mut bytes)?;
                if let Some(event) = console.config_changed(ConsoleConfig::from_bytes(&bytes)) {
                    return Ok(SessionPoll::event(SessionEvent::Driver(event), ring));
                }
            }
        }
        Ok(SessionPoll {
            event: console.poll(region)?.map(SessionEvent::Driver),
            ring,
        })
    }

    fn come_up<R: Region + ?Sized>(&mut self, region: &R) -> Result<SessionPoll, ConsoleError> {
        let features = self.mmio.features().unwrap_or(0);
        let mut bytes = [0u8; CONFIG_SIZE];
        self.mmio.read_config(region, 0, &mut bytes)?;
        let mut console = ConsoleDriver::new(
            region,
            features,
            ConsoleConfig::from_bytes(&bytes),
            self.layout.queues(),
            self.layout.pool,
            self.layout.map,
        )?;
        if let Some((me, device)) = self.sides {
            me.set_taken(region, 0)?;
            me.set_ended(region, 0)?;
            self.device_generation = device.generation(region)?;
        }
        // An output that ended before a restart stays ended.
        for port in 0..console.ports() {
            if self.ended & (1 << port) != 0 {
                end_output(&mut console, self.sides.map(|(me, _)| me), region, port)?;
            }
        }
        // The receive buffers are posted: tell the device even if it did not ask.
        console.flush(region)?;
        self.console = Some(console);
        Ok(SessionPoll::event(SessionEvent::Up { features }, true))
    }

    /// Copies up to `buf.len()` bytes the device sent on `port`; 0 if none now.
    fn read_inner<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        buf: &mut [u8],
    ) -> Result<usize, ConsoleError> {
        let Some(console) = self.console.as_mut() else {
            return Ok(0);
        };
        console.read(region, port, buf)
    }

    /// Records, for the other side's accounting, that every byte `read` handed
    /// out so far is taken for good (call it once they are written out: a
    /// restart of this side then loses nothing the other side counts as taken).
    pub fn commit_taken<R: Region + ?Sized>(&self, region: &R) -> Result<(), ConsoleError> {
        if let (Some(console), Some((me, _))) = (self.console.as_ref(), self.sides) {
            let taken = totals(
                (0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)),
            );
            me.set_taken(region, taken.received)?;
        }
        Ok(())
    }

    /// Takes as much of `data` for `port` as the free buffers hold (0 while the
    /// console is down or every buffer is with the device).
    fn write_inner<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        data: &[u8],
    ) -> Result<usize, ConsoleError> {
        match self.console.as_mut() {
            Some(console) => console.write(region, port, data),
            None => Ok(0),
        }
    }

    /// Asks the other side to ring (or not) when it publishes; enabling returns
    /// whether something arrived meanwhile (then do not sleep). Nothing to ask
    /// while the console is down: negotiation steps always ring.
    pub fn set_wakeups<R: Region + ?Sized>(
        &mut self,
        region: &R,
        enabled: bool,
    ) -> Result<bool, ConsoleError> {
        match self.console.as_mut() {
            Some(console) => console.set_wakeups(region, enabled),
            None => Ok(false),
        }
    }

    /// Publishes what was written and read; returns whether to ring.
    fn flush_inner<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, ConsoleError> {
        match self.console.as_mut() {
            Some(console) => console.flush(region),
            None => Ok(false),
        }
    }

    /// Ends this side's output of `port` after what was written so far (call
    /// [`flush`](Self::flush) first). It stays ended across restarts.
    pub fn close_output<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
    ) -> Result<(), ConsoleError> {
        check_can_end(&self.layout, port)?;
        self.ended |= 1 << port;
        if let Some(console) = self.console.as_mut() {
            end_output(console, self.sides.map(|(me, _)| me), region, port)?;
        }
        Ok(())
    }

    /// Whether the device ended its output of `port` (read on until `read`
    /// returns 0: that is the end of the stream).
    pub fn peer_ended<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<bool, ConsoleError> {
        let Some(console) = self.console.as_ref() else {
            return Ok(false);
        };
        if has(console.features(), F_MULTIPORT) {
            return Ok(console.port(port)?.peer_closed);
        }
        match self.sides {
            Some((_, device)) => Ok(device.ended(region)? & (1 << port) != 0),
            None => Ok(false),
        }
    }

    /// Whether the device took every byte this side sent.
    pub fn all_taken<R: Region + ?Sized>(&self, region: &R) -> Result<bool, ConsoleError> {
        let Some(console) = self.console.as_ref() else {
            return Ok(false);
        };
        let sent =
            totals((0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)));
        Ok(match self.sides {
            Some((_, device)) => not_taken(sent.written, device.taken(region)?) == 0,
            None => sent.acknowledged == sent.written,
        })
    }

    /// Writes one byte through `emerg_wr` (needs `F_EMERG_WRITE`). `Ok(false)`
    /// while the device has not taken the previous one; ring after `Ok(true)`.
    pub fn emergency_write<R: Region + ?Sized>(
        &self,
        region: &R,
        byte: u8,
    ) -> Result<bool, ConsoleError> {
        let Some(console) = self.console.as_ref() else {
            return Ok(false);
        };
        let word = emerg_wr(self.mmio.block());
        if word.load(region, Ordering::Acquire)? != 0 {
            return Ok(false);
        }
        let bytes = console.emergency_write(byte)?;
        word.store(region, u32::from_le_bytes(bytes), Ordering::Release)?;
        Ok(true)
    }
}

/// Ends `port`'s output: `PORT_OPEN 0` with multiport, else the ended bit in
/// this side's header line.
fn end_output<R: Region + ?Sized, C: EndOutput>(
    console: &mut C,
    me: Option<Side>,
    region: &R,
    port: u32,
) -> Result<(), ConsoleError> {
    if console.multiport() {
        return console.close(port);
    }
    let me = me.ok_or(ConsoleError::NotNegotiated(
        "ending a port's output needs the native profile or multiport",
    ))?;
    let ended = me.ended(region)?;
    me.set_ended(region, ended | 1 << port)
}

/// Refuses to end a port no profile can end.
fn check_can_end(layout: &ConsoleLayout, port: u32) -> Result<(), ConsoleError> {
    if port >= layout.ports {
        return Err(ConsoleError::NoSuchPort(port));
    }
    if layout.header.is_none() && !has(layout.device_features, F_MULTIPORT) {
        return Err(ConsoleError::NotNegotiated(
            "ending a port's output needs the native profile or multiport",
        ));
    }
    Ok(())
}

/// What [`end_output`] needs of either side's console.
trait EndOutput {
    fn multiport(&self) -> bool;
    fn close(&mut self, port: u32) -> Result<(), ConsoleError>;
}

impl EndOutput for ConsoleDriver {
    fn multiport(&self) -> bool {
        has(self.features(), F_MULTIPORT)
    }
    fn close(&mut self, port: u32) -> Result<(), ConsoleError> {
        self.close_output(port)
    }
}

impl EndOutput for ConsoleDevice {
    fn multiport(&self) -> bool {
        has(self.features(), F_MULTIPORT)
    }
    fn close(&mut self, port: u32) -> Result<(), ConsoleError> {
        self.close_output(port)
    }
}

/// The console config's `emerg_wr` word.
fn emerg_wr(block: MmioBlock) -> Le32 {
    Le32::at(block.config(EMERG_WR_OFFSET))
}

/// The device side of one console.
#[derive(Debug)]
pub struct DeviceSession {
    layout: ConsoleLayout,
    mmio: MmioDevice,
    config: ConsoleConfig,
    queues: [Option<Vring>; MAX_QUEUES],
    console: Option<ConsoleDevice>,
    sides: Option<(Side, Side)>,
    ended: u32,
    /// Bytes completed and taken as of the last flush.
    returned: (u64, u64),
    /// The driver's generation when this session came up.
    driver_generation: u32,
    /// An event found outside `poll`, handed out by the next one.
    pending: Option<SessionEvent>,
}

impl DeviceSession {
    /// Advances negotiation, notices a restarted or misbehaving peer, and hands
    /// out one event.
    pub fn poll<R: Region + ?Sized>(&mut self, region: &R) -> Result<SessionPoll, ConsoleError> {
        if let Some(event) = self.pending.take() {
            return Ok(SessionPoll::event(event, true));
        }
        let polled = self.poll_inner(region);
        self.guard(region, polled)
    }

    /// Copies up to `buf.len()` bytes the other side sent on `port`; 0 if none
    /// now.
    pub fn read<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        buf: &mut [u8],
    ) -> Result<usize, ConsoleError> {
        let n = self.read_inner(region, port, buf);
        self.guard(region, n)
    }

    /// Takes as much of `data` for `port` as the buffers hold (0 while the
    /// console is down or no buffer is free).
    pub fn write<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        data: &[u8],
    ) -> Result<usize, ConsoleError> {
        let n = self.write_inner(region, port, data);
        self.guard(region, n)
    }

    /// Publishes what was written and read; returns whether to ring.
    pub fn flush<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, ConsoleError> {
        let ring = self.flush_inner(region);
        self.guard(region, ring)
    }

    /// Turns what the other side got wrong into a reset of the session (its
    /// event comes from the next `poll`); passes everything else on.
    fn guard<R: Region + ?Sized, T: Default>(
        &mut self,
        region: &R,
        result: Result<T, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        match result {
            Err(e) if e.is_peer_fault() => {
                self.pending = Some(self.fault(region, e)?);
                Ok(T::default())
            }
            other => other,
        }
    }
    /// Starts the device side of `layout` as peer `id`, offering `config`
    /// (`max_nr_ports` is the layout's) and publishing the register block.
    /// Returns the session and whether to ring the driver.
    pub fn new<R: Region + ?Sized>(
        region: &R,
        layout: ConsoleLayout,
        id: PeerId,
        config: ConsoleConfig,
    ) -> Result<(Self, bool), ConsoleError> {
        let num_max = layout
            .queues()
            .first()
            .map_or(0, |ring| ring.layout().num());
        let queue_num_max = [num_max; MAX_QUEUES];
        let block = MmioBlock::new(layout.block)?;
        // The sample's driver wants to see shared memory: the register block, at
        // the address it knows it by.
        let shm = (layout.handshake == mmio::Handshake::OpenampHvl).then(|| Shm {
            base: layout.map.address_of(layout.block),
            len: super::layout::hvl::SHM_LEN.into(),
        });
        let mmio = MmioDevice::new(
            block,
            layout.handshake,
            &DeviceConfig {
                device_id: CONSOLE,
                vendor_id: VENDOR_ID,
                version: layout.version,
                features: layout.device_features,
                queue_num_max: &queue_num_max[..layout.queues().len()],
                shm,
                config_size: CONFIG_SIZE,
            },
        )?;
        let config = ConsoleConfig {
            max_nr_ports: layout.ports,
            emerg_wr: 0,
            ..config
        };
        let sides = sides(&layout, SideKind::Device);
        if let Some((me, _)) = sides {
            me.attach(region, id)?;
        }
        let mut session = DeviceSession {
            layout,
            mmio,
            config,
            queues: [None; MAX_QUEUES],
            console: None,
            sides,
            ended: 0,
            returned: (0, 0),
            driver_generation: 0,
            pending: None,
        };
        let ring = session.mmio.publish(region, &config.to_bytes())?;
        Ok((session, ring))
    }

    /// The layout.
    pub fn layout(&self) -> &ConsoleLayout {
        &self.layout
    }

    /// Whether the ports carry data.
    pub fn is_up(&self) -> bool {
        self.console.is_some()
    }

    /// The console, once up.
    pub fn console(&self) -> Option<&ConsoleDevice> {
        self.console.as_ref()
    }

    /// The register block's device side (for showing what was negotiated).
    pub fn mmio(&self) -> &MmioDevice {
        &self.mmio
    }

    /// Serves the negotiation and hands out one event.
    fn poll_inner<R: Region + ?Sized>(&mut self, region: &R) -> Result<SessionPoll, ConsoleError> {
        let polled = self.mmio.poll(region)?;
        let ring = polled.ring;
        let Some(event) = polled.event else {
            return self.poll_console(region);
        };
        use crate::virtio::mmio::DeviceEvent as Mmio;
        Ok(match event {
            Mmio::Reset => match self.drop_console(region)? {
                Some(lost) => SessionPoll::event(SessionEvent::PeerRestarted { lost }, ring),
                None => SessionPoll { event: None, ring },
            },
            Mmio::QueueReady(queue) => match self.accept_queue(region, queue) {
                Ok(()) => SessionPoll { event: None, ring },
                Err(e) => {
                    let again = self.mmio.set_needs_reset(region)?;
                    SessionPoll::event(SessionEvent::DriverFailed(e), ring || again)
                }
            },
            Mmio::DriverOk => self.come_up(region, ring)?,
            Mmio::Failed(e) => SessionPoll::event(SessionEvent::DriverFailed(e), ring),
            Mmio::Status(_) | Mmio::FeaturesAccepted(_) | Mmio::FeaturesRefused { .. } => {
                SessionPoll { event: None, ring }
            }
        })
    }

    fn poll_console<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<SessionPoll, ConsoleError> {
        let Some(console) = self.console.as_mut() else {
            return Ok(SessionPoll::IDLE);
        };
        if has(console.features(), F_EMERG_WRITE) {
            let word = emerg_wr(self.mmio.block());
            let value = word.load(region, Ordering::Acquire)?;
            if value != 0 {
                word.store(region, 0, Ordering::Release)?;
                if let Some(byte) = console.emergency_write(value) {
                    return Ok(SessionPoll::event(SessionEvent::Emergency(byte), false));
                }
            }
        }
        Ok(SessionPoll {
            event: console.poll(region)?.map(SessionEvent::Device),
            ring: false,
        })
    }

    /// The driver wrote something no correct driver writes (or restarted under
    /// the session): drop the queues and ask for a reset, reporting what was
    /// lost.
    fn fault<R: Region + ?Sized>(
        &mut self,
        region: &R,
        error: ConsoleError,
    ) -> Result<SessionEvent, ConsoleError> {
        let restarted = match self.sides {
            Some((_, driver)) => driver.generation(region)? != self.driver_generation,
            None => false,
        };
        let lost = self.drop_console(region)?.unwrap_or(0);
        self.mmio.set_needs_reset(region)?;
        Ok(if restarted {
            SessionEvent::PeerRestarted { lost }
        } else {
            SessionEvent::PeerFault(error)
        })
    }

    /// Forgets the queues of a session the driver reset; the bytes it never took,
    /// if there was a session.
    fn drop_console<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<Option<u64>, ConsoleError> {
        self.queues = [None; MAX_QUEUES];
        self.returned = (0, 0);
        let Some(console) = self.console.take() else {
            return Ok(None);
        };
        let sent =
            totals((0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)));
        let lost = match self.sides {
            Some((me, driver)) => {
                let lost = not_taken(sent.written, driver.taken(region)?);
                me.set_taken(region, 0)?;
                me.set_ended(region, 0)?;
                lost
            }
            None => sent.buffered,
        };
        Ok(Some(lost))
    }

    /// Checks a queue the driver configured against the layout: its rings must
    /// lie in the layout's vring area, in the region, where the driver said.
    fn accept_queue<R: Region + ?Sized>(
        &mut self,
        region: &R,
        queue: QueueConfig,
    ) -> Result<(), MmioError> {
        let bad = MmioError::BadQueueLayout(queue.index);
        let (address, layout) = queue.contiguous().ok_or(bad)?;
        let (start, len) = self.layout.vring_area;
        let offset = address
            .checked_sub(self.layout.map.base())
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(bad)?;
        let inside = offset >= start
            && offset
                .checked_add(layout.size())
                .is_some_and(|end| end <= start + len);
        let slot = self
            .queues
            .get_mut(usize::from(queue.index))
            .ok_or(MmioError::BadQueueIndex(queue.index.into()))?;
        if !inside {
            return Err(bad);
        }
        *slot = Some(Vring::new(offset, layout, region.len()).map_err(|_| bad)?);
        Ok(())
    }

    fn come_up<R: Region + ?Sized>(
        &mut self,
        region: &R,
        ring: bool,
    ) -> Result<SessionPoll, ConsoleError> {
        let count = self.layout.queues().len();
        let mut queues = [self.layout.queues()[0]; MAX_QUEUES];
        for (index, (slot, got)) in queues.iter_mut().zip(&self.queues[..count]).enumerate() {
            match got {
                Some(ring) => *slot = *ring,
                None => {
                    let again = self.mmio.set_needs_reset(region)?;
                    return Ok(SessionPoll::event(
                        SessionEvent::DriverFailed(MmioError::QueueAbsent(index as u16)),
                        ring || again,
                    ));
                }
            }
        }
        let features = self.mmio.features().unwrap_or(0);
        let mut console = ConsoleDevice::new(
            features,
            self.config,
            &queues[..count],
            self.layout.map,
            self.layout.max_buffer_len,
        )?;
        for port in 0..console.ports() {
            if self.ended & (1 << port) != 0 {
                end_output(&mut console, self.sides.map(|(me, _)| me), region, port)?;
            }
        }
        if let Some((_, driver)) = self.sides {
            self.driver_generation = driver.generation(region)?;
        }
        self.console = Some(console);
        Ok(SessionPoll::event(SessionEvent::Up { features }, ring))
    }

    /// Copies up to `buf.len()` bytes the driver sent on `port`; 0 if none now.
    fn read_inner<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        buf: &mut [u8],
    ) -> Result<usize, ConsoleError> {
        let Some(console) = self.console.as_mut() else {
            return Ok(0);
        };
        console.read(region, port, buf)
    }

    /// Records, for the other side's accounting, that every byte `read` handed
    /// out so far is taken for good (call it once they are written out: a
    /// restart of this side then loses nothing the other side counts as taken).
    pub fn commit_taken<R: Region + ?Sized>(&self, region: &R) -> Result<(), ConsoleError> {
        if let (Some(console), Some((me, _))) = (self.console.as_ref(), self.sides) {
            let taken = totals(
                (0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)),
            );
            me.set_taken(region, taken.received)?;
        }
        Ok(())
    }

    /// Puts as much of `data` for `port` into the driver's receive buffers as
    /// they hold (0 while the console is down or no buffer is posted).
    fn write_inner<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        data: &[u8],
    ) -> Result<usize, ConsoleError> {
        match self.console.as_mut() {
            Some(console) => console.write(region, port, data),
            None => Ok(0),
        }
    }

    /// Asks the other side to ring (or not) when it publishes; enabling returns
    /// whether something arrived meanwhile (then do not sleep). Nothing to ask
    /// while the console is down: negotiation steps always ring.
    pub fn set_wakeups<R: Region + ?Sized>(
        &mut self,
        region: &R,
        enabled: bool,
    ) -> Result<bool, ConsoleError> {
        match self.console.as_mut() {
            Some(console) => console.set_wakeups(region, enabled),
            None => Ok(false),
        }
    }

    /// Publishes what was written and read; returns whether to ring.
    fn flush_inner<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, ConsoleError> {
        let Some(console) = self.console.as_mut() else {
            return Ok(false);
        };
        let ring = console.flush(region)?;
        // The sample's driver asks for nothing: it learns of used buffers from
        // InterruptStatus and a doorbell, so every returned buffer raises both.
        let sent =
            totals((0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)));
        let progress = (sent.acknowledged, sent.received);
        let returned = progress != self.returned;
        self.returned = progress;
        if ring || (returned && self.layout.handshake == mmio::Handshake::OpenampHvl) {
            return Ok(self.mmio.raise_interrupt(region, INTERRUPT_USED_BUFFER)? || ring);
        }
        Ok(false)
    }

    /// Ends this side's output of `port` (call [`flush`](Self::flush) first).
    pub fn close_output<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
    ) -> Result<(), ConsoleError> {
        check_can_end(&self.layout, port)?;
        self.ended |= 1 << port;
        if let Some(console) = self.console.as_mut() {
            end_output(console, self.sides.map(|(me, _)| me), region, port)?;
        }
        Ok(())
    }

    /// Whether the driver ended its output of `port` (read on until `read`
    /// returns 0).
    pub fn peer_ended<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<bool, ConsoleError> {
        let Some(console) = self.console.as_ref() else {
            return Ok(false);
        };
        if has(console.features(), F_MULTIPORT) {
            return Ok(console.port(port)?.driver_closed);
        }
        match self.sides {
            Some((_, driver)) => Ok(driver.ended(region)? & (1 << port) != 0),
            None => Ok(false),
        }
    }

    /// Whether the driver took every byte this side sent.
    pub fn all_taken<R: Region + ?Sized>(&self, region: &R) -> Result<bool, ConsoleError> {
        let Some(console) = self.console.as_ref() else {
            return Ok(false);
        };
        let sent =
            totals((0..console.ports()).filter_map(|p| console.port(p).ok().map(|s| s.counters)));
        Ok(match self.sides {
            Some((_, driver)) => not_taken(sent.written, driver.taken(region)?) == 0,
            None => sent.acknowledged == sent.written,
        })
    }

    /// Resizes the console (`F_SIZE`): the new size reaches the driver as a
    /// `RESIZE` message or a configuration change. Returns whether to ring.
    pub fn resize<R: Region + ?Sized>(
        &mut self,
        region: &R,
        cols: u16,
        rows: u16,
    ) -> Result<bool, ConsoleError> {
        self.config.cols = cols;
        self.config.rows = rows;
        let Some(console) = self.console.as_mut() else {
            return Ok(self
                .mmio
                .write_config(region, 0, &self.config.to_bytes()[..4])?);
        };
        let config = console.resize(cols, rows);
        if has(console.features(), F_MULTIPORT) {
            return console.flush(region);
        }
        Ok(self.mmio.write_config(region, 0, &config.to_bytes()[..4])?)
    }
}

/// The `VendorID` an ivlink device publishes ("IVLK").
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"IVLK");
