//! The driver side: owns every buffer, carved from its pool, and posts them.
//!
//! Pool plan: with [`F_MULTIPORT`] the first pool buffers are cut into
//! [`CONTROL_BUFFER_SIZE`]-byte control buffers (up to [`CONTROL_BUFFERS`] per
//! control queue); the rest is shared equally among the ports' receiveqs and
//! transmitqs, each getting at most its ring size and [`MAX_BUFFERS`] full-size
//! buffers. Descriptor `id` of a queue always uses the queue's buffer `id`, so
//! nothing about a buffer is ever read back from the region.

use super::control::{Encoded, parse_resize};
use super::ids::{Buffers, IdSet, MAX_BUFFERS};
use super::{
    CONTROL_BUFFER_SIZE, CONTROL_HEADER_SIZE, CONTROL_RECEIVEQ, CONTROL_TRANSMITQ, ConsoleConfig,
    ConsoleError, ControlMessage, F_EMERG_WRITE, F_MULTIPORT, F_SIZE, MAX_PORTS, PortCounters,
    PortName, event, has, port_count, receiveq, transmitq,
};
use crate::region::{Region, check_bounds};
use crate::virtio::AddressMap;
use crate::virtio::features::RING_F_EVENT_IDX;
use crate::virtio::virtq::{DriverQueue, Vring};

/// Control buffers per control queue, at most.
pub const CONTROL_BUFFERS: u16 = 8;

/// The driver's buffer pool: `count` buffers of `buf_size` bytes from region
/// offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverPool {
    /// Region offset of the first buffer.
    pub offset: usize,
    /// Bytes per buffer (the most a device may be handed in one descriptor).
    pub buf_size: u32,
    /// Buffers in the pool.
    pub count: usize,
}

/// What the device told the driver (multiport control messages, or a config
/// change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverEvent {
    /// `DEVICE_ADD`: the port exists; the driver answers `PORT_READY` and opens
    /// its side on the next flush.
    PortAdded(u32),
    /// `DEVICE_REMOVE`: the port is gone.
    PortRemoved(u32),
    /// `CONSOLE_PORT`: the port is a console.
    ConsolePort(u32),
    /// `PORT_NAME`: the port has a name ([`DriverPortState::name`]).
    PortNamed(u32),
    /// `RESIZE` (or a config change with `F_SIZE`): the console's new size.
    Resized {
        /// The port.
        port: u32,
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// `PORT_OPEN 1`: the device opened its side.
    PeerOpened(u32),
    /// `PORT_OPEN 0`: the device closed its side; reads end once drained.
    PeerClosed(u32),
}

/// One port as the driver sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverPortState {
    /// The device added the port (always, without multiport).
    pub added: bool,
    /// The device said the port is a console.
    pub console: bool,
    /// The name the device gave it.
    pub name: PortName,
    /// Console size `(cols, rows)`, once known.
    pub size: Option<(u16, u16)>,
    /// The device's side is open (always, without multiport).
    pub peer_open: bool,
    /// The device closed its side.
    pub peer_closed: bool,
    /// End of stream: the device closed its side and every byte before it was read.
    pub input_ended: bool,
    /// This side closed its output (`PORT_OPEN 0` sent or about to be).
    pub output_closed: bool,
    /// Byte accounting.
    pub counters: PortCounters,
}

/// A used receive buffer being read.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: u16,
    len: u32,
    consumed: u32,
}

#[derive(Debug, Clone)]
struct Rx {
    queue: DriverQueue,
    buffers: Buffers,
    current: Option<Held>,
}

impl Rx {
    fn repost<R: Region + ?Sized>(
        &mut self,
        region: &R,
        map: &AddressMap,
        id: u16,
        len: u32,
    ) -> Result<(), ConsoleError> {
        let addr = map.address_of(self.buffers.offset(id));
        Ok(self.queue.post(region, id, addr, len, true)?)
    }
}

#[derive(Debug, Clone)]
struct Tx {
    queue: DriverQueue,
    buffers: Buffers,
    free: IdSet,
    lens: [u32; MAX_BUFFERS],
    /// The buffer being filled and its bytes so far.
    fill: Option<(u16, u32)>,
}

impl Tx {
    /// Takes back every buffer the device returned.
    fn reclaim<R: Region + ?Sized>(
        &mut self,
        region: &R,
        counters: &mut PortCounters,
    ) -> Result<(), ConsoleError> {
        // Each success takes one buffer back from the device: at most `count`.
        while let Some(used) = self.queue.take_used(region)? {
            let len = u64::from(self.lens[usize::from(used.id)]);
            counters.in_flight -= len;
            counters.acknowledged += len;
            self.free.insert(used.id);
        }
        Ok(())
    }

    /// Posts the buffer being filled, if it holds anything.
    fn post_fill<R: Region + ?Sized>(
        &mut self,
        region: &R,
        map: &AddressMap,
        counters: &mut PortCounters,
    ) -> Result<(), ConsoleError> {
        let Some((id, len)) = self.fill.take() else {
            return Ok(());
        };
        if len == 0 {
            self.free.insert(id);
            return Ok(());
        }
        let addr = map.address_of(self.buffers.offset(id));
        self.queue.post(region, id, addr, len, false)?;
        self.lens[usize::from(id)] = len;
        counters.buffered -= u64::from(len);
        counters.in_flight += u64::from(len);
        Ok(())
    }
}

/// Control messages a port still has to send.
const SEND_READY: u8 = 1;
const SEND_OPEN: u8 = 2;

#[derive(Debug, Clone)]
struct Port {
    rx: Rx,
    tx: Tx,
    state: DriverPortState,
    pending: u8,
}

#[derive(Debug, Clone)]
struct Control {
    rx: DriverQueue,
    rx_buffers: Buffers,
    tx: DriverQueue,
    tx_buffers: Buffers,
    tx_free: IdSet,
    device_ready_pending: bool,
}

impl Control {
    /// Writes `message` into a free control buffer and posts it; false if every
    /// buffer is with the device.
    fn send<R: Region + ?Sized>(
        &mut self,
        region: &R,
        map: &AddressMap,
        message: ControlMessage,
    ) -> Result<bool, ConsoleError> {
        let Some(id) = self.tx_free.pop() else {
            return Ok(false);
        };
        let encoded = Encoded::new(message, &[]);
        let offset = self.tx_buffers.offset(id);
        region.write(offset, encoded.as_bytes())?;
        let len = encoded.as_bytes().len() as u32;
        self.tx
            .post(region, id, map.address_of(offset), len, false)?;
        Ok(true)
    }
}

/// The port id of messages about no port (`DEVICE_READY`), as Linux sends it.
const NO_PORT: u32 = u32::MAX;

/// The driver side of a virtio console.
#[derive(Debug, Clone)]
pub struct ConsoleDriver {
    features: u64,
    map: AddressMap,
    config: ConsoleConfig,
    ports: [Option<Port>; MAX_PORTS],
    nr_ports: u32,
    control: Option<Control>,
}

/// Hands out consecutive stretches of the pool.
struct Carver {
    next: usize,
    left: usize,
    buf_size: u32,
}

impl Carver {
    fn take(&mut self, buffers: usize, size: u32, count: u16) -> Result<Buffers, ConsoleError> {
        if buffers > self.left {
            return Err(ConsoleError::Layout(
                "the buffer pool is too small for the console's queues",
            ));
        }
        let start = self.next;
        self.next += buffers * self.buf_size as usize;
        self.left -= buffers;
        Ok(Buffers { start, size, count })
    }
}

impl ConsoleDriver {
    /// The driver of a console with the negotiated `features` and the device's
    /// `config`, over `queues` (indexed by queue number; at least the ones the
    /// ports need), with buffers from `pool` and addresses from `map`.
    ///
    /// Zeroes every ring and posts every receive buffer; the device sees them
    /// after [`ConsoleDriver::flush`].
    pub fn new<R: Region + ?Sized>(
        region: &R,
        features: u64,
        config: ConsoleConfig,
        queues: &[Vring],
        pool: DriverPool,
        map: AddressMap,
    ) -> Result<Self, ConsoleError> {
        let nr_ports = port_count(features, &config, queues.len())?;
        let multiport = has(features, F_MULTIPORT);
        let event_idx = has(features, RING_F_EVENT_IDX);
        if pool.buf_size == 0 || pool.count == 0 {
            return Err(ConsoleError::Layout("the buffer pool is empty"));
        }
        let span = pool
            .count
            .checked_mul(pool.buf_size as usize)
            .ok_or(ConsoleError::Layout(
                "the buffer pool does not fit in the region",
            ))?;
        check_bounds(pool.offset, span, region.len())
            .map_err(|_| ConsoleError::Layout("the buffer pool does not fit in the region"))?;
        let last = pool.offset + span - pool.buf_size as usize;
        for at in [pool.offset, last] {
            map.translate(map.address_of(at), pool.buf_size)
                .map_err(|_| ConsoleError::Layout("the address map does not cover the pool"))?;
        }
        let mut carver = Carver {
            next: pool.offset,
            left: pool.count,
            buf_size: pool.buf_size,
        };
        let control = if multiport {
            let rx_n = queues[CONTROL_RECEIVEQ].layout().num().min(CONTROL_BUFFERS);
            let tx_n = queues[CONTROL_TRANSMITQ]
                .layout()
                .num()
                .min(CONTROL_BUFFERS);
            let bytes = usize::from(rx_n + tx_n) * CONTROL_BUFFER_SIZE;
            let all = carver.take(
                bytes.div_ceil(pool.buf_size as usize),
                CONTROL_BUFFER_SIZE as u32,
                rx_n,
            )?;
            let mut rx = DriverQueue::new(queues[CONTROL_RECEIVEQ], event_idx);
            let mut tx = DriverQueue::new(queues[CONTROL_TRANSMITQ], event_idx);
            rx.reset(region)?;
            tx.reset(region)?;
            let tx_buffers = Buffers {
                start: all.start + all.span(),
                size: CONTROL_BUFFER_SIZE as u32,
                count: tx_n,
            };
            for id in 0..rx_n {
                let addr = map.address_of(all.offset(id));
                rx.post(region, id, addr, CONTROL_BUFFER_SIZE as u32, true)?;
            }
            Some(Control {
                rx,
                rx_buffers: all,
                tx,
                tx_buffers,
                tx_free: IdSet::first(tx_n),
                device_ready_pending: true,
            })
        } else {
            None
        };
        let share = carver.left / (2 * nr_ports as usize);
        let mut ports: [Option<Port>; MAX_PORTS] = core::array::from_fn(|_| None);
        for (p, slot) in (0..nr_ports).zip(ports.iter_mut()) {
            let mut per_queue = |q: usize| -> Result<(DriverQueue, Buffers), ConsoleError> {
                let ring = queues[q];
                let count = share.min(usize::from(ring.layout().num())).min(MAX_BUFFERS) as u16;
                let buffers = carver.take(usize::from(count), pool.buf_size, count)?;
                if count == 0 {
                    return Err(ConsoleError::Layout(
                        "the buffer pool has fewer buffers than the ports' queues",
                    ));
                }
                let mut queue = DriverQueue::new(ring, event_idx);
                queue.reset(region)?;
                Ok((queue, buffers))
            };
            let (rx_queue, rx_buffers) = per_queue(receiveq(p))?;
            let (tx_queue, tx_buffers) = per_queue(transmitq(p))?;
            let mut rx = Rx {
                queue: rx_queue,
                buffers: rx_buffers,
                current: None,
            };
            for id in 0..rx_buffers.count {
                rx.repost(region, &map, id, rx_buffers.size)?;
            }
            let size = (has(features, F_SIZE) && !multiport).then_some((config.cols, config.rows));
            *slot = Some(Port {
                rx,
                tx: Tx {
                    queue: tx_queue,
                    buffers: tx_buffers,
                    free: IdSet::first(tx_buffers.count),
                    lens: [0; MAX_BUFFERS],
                    fill: None,
                },
                state: DriverPortState {
                    added: !multiport,
                    peer_open: !multiport,
                    size,
                    ..DriverPortState::default()
                },
                pending: 0,
            });
        }
        Ok(ConsoleDriver {
            features,
            map,
            config,
            ports,
            nr_ports,
            control,
        })
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The config space as last given.
    pub fn config(&self) -> ConsoleConfig {
        self.config
    }

    /// Ports served (`0..ports()`).
    pub fn ports(&self) -> u32 {
        self.nr_ports
    }

    /// Port `port`'s state.
    pub fn port(&self, port: u32) -> Result<DriverPortState, ConsoleError> {
        self.ports
            .get(port as usize)
            .and_then(Option::as_ref)
            .map(|p| p.state)
            .ok_or(ConsoleError::NoSuchPort(port))
    }

    fn port_mut(&mut self, port: u32) -> Result<&mut Port, ConsoleError> {
        self.ports
            .get_mut(port as usize)
            .and_then(Option::as_mut)
            .ok_or(ConsoleError::NoSuchPort(port))
    }

    /// Copies as much of `data` as free transmit buffers hold into them and
    /// returns how many bytes it took (0 when every buffer is with the device:
    /// flush, and wait for it to return some). A buffer goes to the device when
    /// it is full or on [`ConsoleDriver::flush`], so small writes coalesce.
    pub fn write<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        data: &[u8],
    ) -> Result<usize, ConsoleError> {
        let map = self.map;
        let p = self.port_mut(port)?;
        if !p.state.added {
            return Err(ConsoleError::PortNotReady(port));
        }
        if p.state.output_closed {
            return Err(ConsoleError::OutputClosed(port));
        }
        let tx = &mut p.tx;
        let counters = &mut p.state.counters;
        let mut taken = 0;
        while taken < data.len() {
            let (id, filled) = match tx.fill {
                Some(fill) => fill,
                None => {
                    if tx.free.len() == 0 {
                        tx.reclaim(region, counters)?;
                    }
                    match tx.free.pop() {
                        Some(id) => (id, 0),
                        None => break,
                    }
                }
            };
            let room = (tx.buffers.size - filled) as usize;
            let n = room.min(data.len() - taken);
            region.write(
                tx.buffers.offset(id) + filled as usize,
                &data[taken..taken + n],
            )?;
            taken += n;
            counters.written += n as u64;
            counters.buffered += n as u64;
            let filled = filled + n as u32;
            tx.fill = Some((id, filled));
            if filled == tx.buffers.size {
                tx.post_fill(region, &map, counters)?;
            }
        }
        Ok(taken)
    }

    /// Copies received bytes into `buf` and returns how many (0: nothing now, or
    /// end of stream when [`DriverPortState::input_ended`] says so). A buffer
    /// read only in part keeps the rest for the next call; a drained one is
    /// posted again (visible after [`ConsoleDriver::flush`]).
    pub fn read<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        buf: &mut [u8],
    ) -> Result<usize, ConsoleError> {
        let map = self.map;
        let p = self.port_mut(port)?;
        if !p.state.added {
            return Err(ConsoleError::PortNotReady(port));
        }
        let rx = &mut p.rx;
        let mut budget = rx.buffers.count;
        let mut got = 0;
        while got < buf.len() {
            let mut held = match rx.current.take() {
                Some(held) => held,
                None => {
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    let Some(used) = rx.queue.take_used(region)? else {
                        break;
                    };
                    if used.len > rx.buffers.size {
                        return Err(ConsoleError::Corrupt(
                            "the device wrote past the end of a receive buffer",
                        ));
                    }
                    if used.len == 0 {
                        rx.repost(region, &map, used.id, rx.buffers.size)?;
                        continue;
                    }
                    Held {
                        id: used.id,
                        len: used.len,
                        consumed: 0,
                    }
                }
            };
            let n = ((held.len - held.consumed) as usize).min(buf.len() - got);
            region.read(
                rx.buffers.offset(held.id) + held.consumed as usize,
                &mut buf[got..got + n],
            )?;
            got += n;
            held.consumed += n as u32;
            p.state.counters.received += n as u64;
            if held.consumed == held.len {
                rx.repost(region, &map, held.id, rx.buffers.size)?;
            } else {
                rx.current = Some(held);
            }
        }
        if got == 0 && p.state.peer_closed && rx.current.is_none() && !rx.queue.has_used(region)? {
            p.state.input_ended = true;
        }
        Ok(got)
    }

    /// Ends this side's output on `port` (multiport only: `PORT_OPEN 0`, sent
    /// after the bytes already written on the next flush).
    pub fn close_output(&mut self, port: u32) -> Result<(), ConsoleError> {
        if !has(self.features, F_MULTIPORT) {
            return Err(ConsoleError::NotNegotiated(
                "a port's end of stream needs multiport",
            ));
        }
        let p = self.port_mut(port)?;
        p.state.output_closed = true;
        p.pending |= SEND_OPEN;
        Ok(())
    }

    /// Takes back the transmit buffers the device returned (counting their
    /// bytes acknowledged), then hands over everything pending: partly filled
    /// transmit buffers, reposted receive buffers, control messages (after the
    /// data, so an end of stream never overtakes it). Returns whether the device
    /// asked to be notified: ring its doorbell then.
    pub fn flush<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, ConsoleError> {
        let map = self.map;
        let mut ring = false;
        for p in self.ports.iter_mut().flatten() {
            p.tx.reclaim(region, &mut p.state.counters)?;
            p.tx.post_fill(region, &map, &mut p.state.counters)?;
            ring |= p.tx.queue.publish(region)?;
            ring |= p.rx.queue.publish(region)?;
        }
        if self.control.is_some() {
            self.send_control(region)?;
        }
        if let Some(c) = &mut self.control {
            ring |= c.tx.publish(region)?;
            ring |= c.rx.publish(region)?;
        }
        Ok(ring)
    }

    /// Writes pending control messages into free control buffers.
    fn send_control<R: Region + ?Sized>(&mut self, region: &R) -> Result<(), ConsoleError> {
        let map = self.map;
        let Some(c) = &mut self.control else {
            return Ok(());
        };
        while let Some(used) = c.tx.take_used(region)? {
            c.tx_free.insert(used.id);
        }
        if c.device_ready_pending {
            let ready = ControlMessage {
                id: NO_PORT,
                event: event::DEVICE_READY,
                value: 1,
            };
            if !c.send(region, &map, ready)? {
                return Ok(());
            }
            c.device_ready_pending = false;
        }
        for (id, p) in (0u32..).zip(self.ports.iter_mut()) {
            let Some(p) = p else { continue };
            for (flag, event, value) in [
                (SEND_READY, event::PORT_READY, 1),
                (
                    SEND_OPEN,
                    event::PORT_OPEN,
                    u16::from(!p.state.output_closed),
                ),
            ] {
                if p.pending & flag == 0 {
                    continue;
                }
                if !c.send(region, &map, ControlMessage { id, event, value })? {
                    return Ok(());
                }
                p.pending &= !flag;
            }
        }
        Ok(())
    }

    /// Takes the device's control messages (multiport) and reports the next one
    /// that changed something; `None` when there is none left. Answers go out on
    /// the next flush. Looks at no more messages than the control queue holds.
    pub fn poll<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<Option<DriverEvent>, ConsoleError> {
        let map = self.map;
        let announced = self.config.max_nr_ports;
        let Self { control, ports, .. } = self;
        let Some(c) = control else {
            return Ok(None);
        };
        for _ in 0..c.rx_buffers.count {
            let Some(used) = c.rx.take_used(region)? else {
                return Ok(None);
            };
            let len = used.len as usize;
            if !(CONTROL_HEADER_SIZE..=CONTROL_BUFFER_SIZE).contains(&len) {
                return Err(ConsoleError::Corrupt(
                    "a control message shorter than its header or longer than its buffer",
                ));
            }
            let mut bytes = [0u8; CONTROL_BUFFER_SIZE];
            let offset = c.rx_buffers.offset(used.id);
            region.read(offset, &mut bytes[..len])?;
            c.rx.post(
                region,
                used.id,
                map.address_of(offset),
                CONTROL_BUFFER_SIZE as u32,
                true,
            )?;
            let mut header = [0u8; CONTROL_HEADER_SIZE];
            header.copy_from_slice(&bytes[..CONTROL_HEADER_SIZE]);
            let message = ControlMessage::from_bytes(&header);
            let payload = &bytes[CONTROL_HEADER_SIZE..len];
            if let Some(e) = handle(ports, announced, message, payload)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Takes a new config space (after a config change interrupt). With `F_SIZE`
    /// and without multiport, a new size is port 0's resize.
    pub fn config_changed(&mut self, config: ConsoleConfig) -> Option<DriverEvent> {
        let old = core::mem::replace(&mut self.config, config);
        if !has(self.features, F_SIZE) || has(self.features, F_MULTIPORT) {
            return None;
        }
        if (old.cols, old.rows) == (config.cols, config.rows) {
            return None;
        }
        if let Some(p) = self.ports[0].as_mut() {
            p.state.size = Some((config.cols, config.rows));
        }
        Some(DriverEvent::Resized {
            port: 0,
            cols: config.cols,
            rows: config.rows,
        })
    }

    /// The config-space word to write at [`super::EMERG_WR_OFFSET`] to put
    /// `byte` out through the emergency path (needs `F_EMERG_WRITE`).
    pub fn emergency_write(&self, byte: u8) -> Result<[u8; 4], ConsoleError> {
        if !has(self.features, F_EMERG_WRITE) {
            return Err(ConsoleError::NotNegotiated("emergency write"));
        }
        Ok(u32::from(byte).to_le_bytes())
    }

    /// Asks the device to notify (or not) when it returns buffers or sends
    /// control messages. Enabling returns whether something arrived meanwhile:
    /// then do not sleep.
    pub fn set_wakeups<R: Region + ?Sized>(
        &mut self,
        region: &R,
        enabled: bool,
    ) -> Result<bool, ConsoleError> {
        let mut pending = false;
        for p in self.ports.iter_mut().flatten() {
            pending |= p.rx.queue.set_interrupts(region, enabled)?;
            pending |= p.tx.queue.set_interrupts(region, enabled)?;
        }
        if let Some(c) = &mut self.control {
            pending |= c.rx.set_interrupts(region, enabled)?;
            pending |= c.tx.set_interrupts(region, enabled)?;
        }
        Ok(pending)
    }
}

/// Applies one control message from the device.
fn handle(
    ports: &mut [Option<Port>; MAX_PORTS],
    announced: u32,
    message: ControlMessage,
    payload: &[u8],
) -> Result<Option<DriverEvent>, ConsoleError> {
    let id = message.id;
    let known = matches!(
        message.event,
        event::DEVICE_ADD
            | event::DEVICE_REMOVE
            | event::CONSOLE_PORT
            | event::RESIZE
            | event::PORT_OPEN
            | event::PORT_NAME
    );
    if !known {
        return Ok(None);
    }
    if id >= announced {
        return Err(ConsoleError::UnknownPort(id));
    }
    // Ports past the ones served were announced by the config: skipped, not
    // an error.
    let Some(p) = ports.get_mut(id as usize).and_then(Option::as_mut) else {
        return Ok(None);
    };
    let s = &mut p.state;
    Ok(Some(match message.event {
        event::DEVICE_ADD => {
            s.added = true;
            p.pending |= SEND_READY | SEND_OPEN;
            DriverEvent::PortAdded(id)
        }
        event::DEVICE_REMOVE => {
            s.added = false;
            s.peer_open = false;
            DriverEvent::PortRemoved(id)
        }
        event::CONSOLE_PORT => {
            s.console = message.value != 0;
            DriverEvent::ConsolePort(id)
        }
        event::RESIZE => {
            let (cols, rows) = parse_resize(payload)?;
            s.size = Some((cols, rows));
            DriverEvent::Resized {
                port: id,
                cols,
                rows,
            }
        }
        event::PORT_OPEN if message.value != 0 => {
            s.peer_open = true;
            s.peer_closed = false;
            s.input_ended = false;
            DriverEvent::PeerOpened(id)
        }
        event::PORT_OPEN => {
            s.peer_open = false;
            s.peer_closed = true;
            DriverEvent::PeerClosed(id)
        }
        _ => {
            s.name = PortName::from_bytes(payload).ok_or(ConsoleError::Corrupt(
                "a port name that is not UTF-8 or too long",
            ))?;
            DriverEvent::PortNamed(id)
        }
    }))
}
