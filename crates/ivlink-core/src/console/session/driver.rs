//! The driver side: negotiates, then runs the console on its queues, and
//! starts over when the device restarts or breaks them.

use core::sync::atomic::Ordering;

use super::{SessionEvent, SessionPoll, check_can_end, emerg_wr, end_output, not_taken, sides};
use crate::PeerId;
use crate::console::{
    CONFIG_SIZE, ConsoleConfig, ConsoleDriver, ConsoleError, ConsoleLayout, F_MULTIPORT,
    MAX_QUEUES, Side, SideKind, has,
};
use crate::region::Region;
use crate::virtio::id::CONSOLE;
use crate::virtio::mmio::registers::{INTERRUPT_CONFIG_CHANGE, LEGACY_PAGE_SIZE};
use crate::virtio::mmio::{DriverConfig, MmioBlock, MmioDriver, QueueSetup, Step};
use crate::virtio::virtq::VringLayout;

use super::PortSide as _;

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
    guarded_io!();
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

    /// The port the device named `name`, once its `PORT_NAME` arrived.
    pub fn port_named(&self, name: &str) -> Option<u32> {
        let console = self.console.as_ref()?;
        (0..console.ports()).find(|&p| {
            console
                .port(p)
                .is_ok_and(|s| !s.name.is_empty() && s.name.as_str() == name)
        })
    }

    /// Whether every port's name (if it has one) is known: the console is up and
    /// the device opened or closed each port, which it does after naming it. A
    /// name [`port_named`](Self::port_named) does not find by then is no port's.
    pub fn names_known(&self) -> bool {
        self.console.as_ref().is_some_and(|console| {
            (0..console.ports())
                .all(|p| console.port(p).is_ok_and(|s| s.peer_open || s.peer_closed))
        })
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
                let sent = console.totals();
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
            let sent = console.totals();
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
            let taken = console.totals();
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
        let sent = console.totals();
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
