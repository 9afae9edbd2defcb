//! The device side: serves the negotiation, checks the queues the driver set
//! up, runs the console on them, and asks for a reset when the driver breaks
//! them.

use core::sync::atomic::Ordering;

use super::{
    PortSide as _, SessionEvent, SessionPoll, VENDOR_ID, check_can_end, emerg_wr, end_output,
    not_taken, sides,
};
use crate::PeerId;
use crate::console::{
    CONFIG_SIZE, ConsoleConfig, ConsoleDevice, ConsoleError, ConsoleLayout, F_EMERG_WRITE,
    F_MULTIPORT, MAX_PORTS, MAX_QUEUES, PortName, Side, SideKind, has,
};
use crate::region::Region;
use crate::virtio::id::CONSOLE;
use crate::virtio::mmio::registers::INTERRUPT_USED_BUFFER;
use crate::virtio::mmio::{self, DeviceConfig, MmioBlock, MmioDevice, MmioError, QueueConfig, Shm};
use crate::virtio::virtq::Vring;

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
    /// Each port's name (kept across restarts).
    names: [PortName; MAX_PORTS],
    /// Bytes completed and taken as of the last flush.
    returned: (u64, u64),
    /// The driver's generation when this session came up.
    driver_generation: u32,
    /// An event found outside `poll`, handed out by the next one.
    pending: Option<SessionEvent>,
}

impl DeviceSession {
    guarded_io!();
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
            len: crate::console::hvl::SHM_LEN.into(),
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
            names: [PortName::EMPTY; MAX_PORTS],
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

    /// Names `port`: with multiport the driver gets a `PORT_NAME` when it reports
    /// the port ready, also after every restart of the driver.
    pub fn set_port_name(&mut self, port: u32, name: &str) -> Result<(), ConsoleError> {
        let name = PortName::new(name)?;
        let slot = self
            .names
            .get_mut(port as usize)
            .filter(|_| port < self.layout.ports)
            .ok_or(ConsoleError::NoSuchPort(port))?;
        *slot = name;
        if let Some(console) = self.console.as_mut() {
            console.set_port_name(port, name.as_str())?;
        }
        Ok(())
    }

    /// The port this side named `name`.
    pub fn port_named(&self, name: &str) -> Option<u32> {
        (0..self.layout.ports).find(|&p| {
            self.names
                .get(p as usize)
                .is_some_and(|n| !n.is_empty() && n.as_str() == name)
        })
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
        let sent = console.totals();
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
            let name = self.names.get(port as usize).copied().unwrap_or_default();
            if !name.is_empty() {
                console.set_port_name(port, name.as_str())?;
            }
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
            let taken = console.totals();
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
        let sent = console.totals();
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
        let sent = console.totals();
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
