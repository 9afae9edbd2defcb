//! The device side: takes the driver's buffers, fills its receive buffers with
//! the device's output and hands out the bytes of its transmit buffers.
//!
//! Multiport: from the start (`DRIVER_OK`) the device sends `DEVICE_ADD` for
//! each port as control buffers allow; it answers the driver's `PORT_READY`
//! with `CONSOLE_PORT` and `RESIZE` (port 0), `PORT_NAME` (named ports) and
//! `PORT_OPEN` (its side's state). The driver's `PORT_OPEN` opens or closes the
//! driver's side: a close is the end of the driver's stream.

use super::control::{Encoded, resize_payload};
use super::{
    CONTROL_HEADER_SIZE, CONTROL_RECEIVEQ, CONTROL_TRANSMITQ, ConsoleConfig, ConsoleError,
    ControlMessage, F_EMERG_WRITE, F_MULTIPORT, MAX_PORTS, PortCounters, PortName, emergency_byte,
    event, has, port_count, receiveq, transmitq,
};
use crate::region::Region;
use crate::virtio::AddressMap;
use crate::virtio::features::RING_F_EVENT_IDX;
use crate::virtio::virtq::{AvailBuffer, DeviceQueue, Vring};

/// What the driver told the device (multiport control messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// `DEVICE_READY 1`: the driver takes `DEVICE_ADD`s.
    DriverReady,
    /// `DEVICE_READY 0`: the driver gave up on the device.
    DriverFailed,
    /// `PORT_READY 1`: the port is set up on the driver's side; the device may
    /// write to it.
    PortReady(u32),
    /// `PORT_READY 0`: the driver could not set the port up.
    PortFailed(u32),
    /// `PORT_OPEN 1`: the driver opened its side.
    DriverOpened(u32),
    /// `PORT_OPEN 0`: the driver closed its side; reads end once drained.
    DriverClosed(u32),
}

/// One port as the device sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevicePortState {
    /// The driver reported the port ready (always, without multiport).
    pub ready: bool,
    /// The name announced with `PORT_NAME`.
    pub name: PortName,
    /// The driver's side is open (always, without multiport).
    pub driver_open: bool,
    /// The driver closed its side.
    pub driver_closed: bool,
    /// End of stream: the driver closed its side and every byte before it was read.
    pub input_ended: bool,
    /// This side closed its output (`PORT_OPEN 0` sent or about to be).
    pub output_closed: bool,
    /// Byte accounting.
    pub counters: PortCounters,
}

/// A driver's buffer this side holds, and how far it got.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: u16,
    offset: usize,
    len: u32,
    done: u32,
}

/// Control messages a port still has to send, in this order.
const SEND_ADD: u8 = 1;
const SEND_CONSOLE: u8 = 2;
const SEND_RESIZE: u8 = 4;
const SEND_NAME: u8 = 8;
const SEND_OPEN: u8 = 16;

#[derive(Debug, Clone)]
struct Port {
    /// The driver's receiveq: buffers this side fills.
    rx: DeviceQueue,
    filling: Option<Held>,
    /// The driver's transmitq: buffers this side drains.
    tx: DeviceQueue,
    draining: Option<Held>,
    state: DevicePortState,
    pending: u8,
}

/// The buffer checks every side of the device applies.
#[derive(Debug, Clone, Copy)]
struct Limits {
    map: AddressMap,
    max_len: u32,
}

impl Limits {
    /// Takes the next buffer the driver posted on `queue`, checked: the
    /// direction (`writable`: the device must be allowed to write it, or must
    /// not), the length and the address.
    fn take<R: Region + ?Sized>(
        &self,
        region: &R,
        queue: &mut DeviceQueue,
        writable: bool,
    ) -> Result<Option<(AvailBuffer, usize)>, ConsoleError> {
        let Some(buffer) = queue.take_avail(region)? else {
            return Ok(None);
        };
        if buffer.device_writes != writable {
            return Err(ConsoleError::Corrupt(if writable {
                "a receive buffer the device may not write"
            } else {
                "a transmit buffer the device may write"
            }));
        }
        if buffer.len > self.max_len {
            return Err(ConsoleError::Corrupt(
                "a buffer longer than the pool's buffers",
            ));
        }
        let offset = self.map.translate(buffer.addr, buffer.len)?;
        Ok(Some((buffer, offset)))
    }
}

#[derive(Debug, Clone)]
struct Control {
    /// The driver's control receiveq: buffers this side writes messages into.
    rx: DeviceQueue,
    /// The driver's control transmitq: the driver's messages.
    tx: DeviceQueue,
}

/// The device side of a virtio console.
#[derive(Debug, Clone)]
pub struct ConsoleDevice {
    features: u64,
    limits: Limits,
    config: ConsoleConfig,
    ports: [Option<Port>; MAX_PORTS],
    nr_ports: u32,
    control: Option<Control>,
}

impl ConsoleDevice {
    /// The device of a console with the negotiated `features` and this side's
    /// `config`, over `queues` (indexed by queue number) as the driver set them
    /// up (at `DRIVER_OK`). Buffers must lie inside `map`'s window and hold at
    /// most `max_buffer_len` bytes.
    pub fn new(
        features: u64,
        config: ConsoleConfig,
        queues: &[Vring],
        map: AddressMap,
        max_buffer_len: u32,
    ) -> Result<Self, ConsoleError> {
        let multiport = has(features, F_MULTIPORT);
        if multiport && config.max_nr_ports as usize > MAX_PORTS {
            return Err(ConsoleError::Layout("more ports than a console serves"));
        }
        let nr_ports = port_count(features, &config, queues.len())?;
        if max_buffer_len == 0 {
            return Err(ConsoleError::Layout("buffers of 0 bytes"));
        }
        let event_idx = has(features, RING_F_EVENT_IDX);
        let mut ports: [Option<Port>; MAX_PORTS] = core::array::from_fn(|_| None);
        for (p, slot) in (0..nr_ports).zip(ports.iter_mut()) {
            *slot = Some(Port {
                rx: DeviceQueue::new(queues[receiveq(p)], event_idx),
                filling: None,
                tx: DeviceQueue::new(queues[transmitq(p)], event_idx),
                draining: None,
                state: DevicePortState {
                    ready: !multiport,
                    driver_open: !multiport,
                    ..DevicePortState::default()
                },
                pending: if multiport { SEND_ADD } else { 0 },
            });
        }
        let control = multiport.then(|| Control {
            rx: DeviceQueue::new(queues[CONTROL_RECEIVEQ], event_idx),
            tx: DeviceQueue::new(queues[CONTROL_TRANSMITQ], event_idx),
        });
        Ok(ConsoleDevice {
            features,
            limits: Limits {
                map,
                max_len: max_buffer_len,
            },
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

    /// The config space this side shows (write its bytes into the transport's
    /// config area).
    pub fn config(&self) -> ConsoleConfig {
        self.config
    }

    /// Ports served (`0..ports()`).
    pub fn ports(&self) -> u32 {
        self.nr_ports
    }

    /// Port `port`'s state.
    pub fn port(&self, port: u32) -> Result<DevicePortState, ConsoleError> {
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

    /// Names `port` (multiport: sent as `PORT_NAME` once the driver reports it
    /// ready, or on the next flush if it already did).
    pub fn set_port_name(&mut self, port: u32, name: &str) -> Result<(), ConsoleError> {
        let name = PortName::new(name)?;
        let p = self.port_mut(port)?;
        p.state.name = name;
        if p.state.ready && !name.is_empty() {
            p.pending |= SEND_NAME;
        }
        Ok(())
    }

    /// Sets the console's size and returns the new config space. With
    /// multiport, port 0 (the console port) gets a `RESIZE` on the next flush;
    /// without it, with `F_SIZE`, the caller writes the config and signals a
    /// config change.
    pub fn resize(&mut self, cols: u16, rows: u16) -> ConsoleConfig {
        self.config.cols = cols;
        self.config.rows = rows;
        if let Some(p) = self.ports[0].as_mut() {
            if self.control.is_some() && p.state.ready {
                p.pending |= SEND_RESIZE;
            }
        }
        self.config
    }

    /// The driver wrote `word` into `emerg_wr`: the byte to print, if
    /// `F_EMERG_WRITE` was negotiated and the word is one byte.
    pub fn emergency_write(&mut self, word: u32) -> Option<u8> {
        self.config.emerg_wr = word;
        if !has(self.features, F_EMERG_WRITE) {
            return None;
        }
        emergency_byte(word)
    }

    /// Fills the driver's receive buffers of `port` with as much of `data` as
    /// they hold and returns how many bytes it took (0 when the driver has no
    /// buffer posted). A buffer goes back when full or on
    /// [`ConsoleDevice::flush`].
    pub fn write<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        data: &[u8],
    ) -> Result<usize, ConsoleError> {
        let limits = self.limits;
        let p = self.port_mut(port)?;
        if !p.state.ready {
            return Err(ConsoleError::PortNotReady(port));
        }
        if p.state.output_closed {
            return Err(ConsoleError::OutputClosed(port));
        }
        let counters = &mut p.state.counters;
        let mut budget = p.rx.ring().layout().num();
        let mut taken = 0;
        while taken < data.len() {
            let mut held = match p.filling.take() {
                Some(held) => held,
                None => {
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    let Some((buffer, offset)) = limits.take(region, &mut p.rx, true)? else {
                        break;
                    };
                    if buffer.len == 0 {
                        return Err(ConsoleError::Corrupt("a receive buffer of 0 bytes"));
                    }
                    Held {
                        id: buffer.id,
                        offset,
                        len: buffer.len,
                        done: 0,
                    }
                }
            };
            let n = ((held.len - held.done) as usize).min(data.len() - taken);
            region.write(held.offset + held.done as usize, &data[taken..taken + n])?;
            taken += n;
            held.done += n as u32;
            counters.written += n as u64;
            counters.buffered += n as u64;
            if held.done == held.len {
                complete(region, &mut p.rx, held, counters)?;
            } else {
                p.filling = Some(held);
            }
        }
        Ok(taken)
    }

    /// Copies the bytes of the driver's transmit buffers of `port` into `buf`
    /// and returns how many (0: nothing now, or end of stream when
    /// [`DevicePortState::input_ended`] says so). A buffer read only in part is
    /// kept for the next call; a drained one is returned used (visible after
    /// [`ConsoleDevice::flush`]).
    pub fn read<R: Region + ?Sized>(
        &mut self,
        region: &R,
        port: u32,
        buf: &mut [u8],
    ) -> Result<usize, ConsoleError> {
        let limits = self.limits;
        let p = self.port_mut(port)?;
        let mut budget = p.tx.ring().layout().num();
        let mut got = 0;
        while got < buf.len() {
            let mut held = match p.draining.take() {
                Some(held) => held,
                None => {
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    let Some((buffer, offset)) = limits.take(region, &mut p.tx, false)? else {
                        break;
                    };
                    if buffer.len == 0 {
                        p.tx.put_used(region, buffer.id, 0)?;
                        continue;
                    }
                    Held {
                        id: buffer.id,
                        offset,
                        len: buffer.len,
                        done: 0,
                    }
                }
            };
            let n = ((held.len - held.done) as usize).min(buf.len() - got);
            region.read(held.offset + held.done as usize, &mut buf[got..got + n])?;
            got += n;
            held.done += n as u32;
            p.state.counters.received += n as u64;
            if held.done == held.len {
                // Used length 0: the device wrote nothing into a transmit buffer.
                p.tx.put_used(region, held.id, 0)?;
            } else {
                p.draining = Some(held);
            }
        }
        if got == 0 && p.state.driver_closed && p.draining.is_none() && !p.tx.has_avail(region)? {
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
        if p.state.ready {
            p.pending |= SEND_OPEN;
        }
        Ok(())
    }

    /// Hands over everything pending: partly filled receive buffers (never one
    /// of 0 bytes), drained transmit buffers, control messages (after the data,
    /// so an end of stream never overtakes it). Returns whether the driver asked
    /// for an interrupt: ring its doorbell then.
    pub fn flush<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, ConsoleError> {
        let mut ring = false;
        for p in self.ports.iter_mut().flatten() {
            if let Some(held) = p.filling.take() {
                if held.done > 0 {
                    let held = Held {
                        len: held.done,
                        ..held
                    };
                    complete(region, &mut p.rx, held, &mut p.state.counters)?;
                } else {
                    p.filling = Some(held);
                }
            }
            ring |= p.rx.publish(region)?;
            ring |= p.tx.publish(region)?;
        }
        self.send_control(region)?;
        if let Some(c) = &mut self.control {
            ring |= c.rx.publish(region)?;
            ring |= c.tx.publish(region)?;
        }
        Ok(ring)
    }

    /// Writes pending control messages into the driver's control buffers.
    fn send_control<R: Region + ?Sized>(&mut self, region: &R) -> Result<(), ConsoleError> {
        let limits = self.limits;
        let config = self.config;
        let Some(c) = &mut self.control else {
            return Ok(());
        };
        for (id, p) in (0u32..).zip(self.ports.iter_mut()) {
            let Some(p) = p else { continue };
            for flag in [SEND_ADD, SEND_CONSOLE, SEND_RESIZE, SEND_NAME, SEND_OPEN] {
                if p.pending & flag == 0 {
                    continue;
                }
                if flag == SEND_RESIZE && (config.cols, config.rows) == (0, 0) {
                    // No size known yet: nothing to tell.
                    p.pending &= !flag;
                    continue;
                }
                let size = resize_payload(config.cols, config.rows);
                let (event, value, payload): (u16, u16, &[u8]) = match flag {
                    SEND_ADD => (event::DEVICE_ADD, 1, &[]),
                    SEND_CONSOLE => (event::CONSOLE_PORT, 1, &[]),
                    SEND_RESIZE => (event::RESIZE, 0, &size),
                    SEND_NAME => (event::PORT_NAME, 1, p.state.name.as_bytes()),
                    _ => (event::PORT_OPEN, u16::from(!p.state.output_closed), &[]),
                };
                let encoded = Encoded::new(ControlMessage { id, event, value }, payload);
                let bytes = encoded.as_bytes();
                let Some((buffer, offset)) = limits.take(region, &mut c.rx, true)? else {
                    return Ok(());
                };
                if (buffer.len as usize) < bytes.len() {
                    return Err(ConsoleError::Corrupt(
                        "a control buffer too small for its message",
                    ));
                }
                region.write(offset, bytes)?;
                c.rx.put_used(region, buffer.id, bytes.len() as u32)?;
                p.pending &= !flag;
            }
        }
        Ok(())
    }

    /// Takes the driver's control messages (multiport) and reports the next one
    /// that changed something; `None` when there is none left. Answers go out on
    /// the next flush. Looks at no more messages than the control queue holds.
    pub fn poll<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<Option<DeviceEvent>, ConsoleError> {
        let limits = self.limits;
        let nr_ports = self.nr_ports;
        let Self { control, ports, .. } = self;
        let Some(c) = control else {
            return Ok(None);
        };
        for _ in 0..c.tx.ring().layout().num() {
            let Some((buffer, offset)) = limits.take(region, &mut c.tx, false)? else {
                return Ok(None);
            };
            if (buffer.len as usize) < CONTROL_HEADER_SIZE {
                return Err(ConsoleError::Corrupt(
                    "a control message shorter than its header",
                ));
            }
            let mut header = [0u8; CONTROL_HEADER_SIZE];
            region.read(offset, &mut header)?;
            c.tx.put_used(region, buffer.id, 0)?;
            let message = ControlMessage::from_bytes(&header);
            if let Some(e) = handle(ports, nr_ports, message)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Asks the driver to notify (or not) when it posts buffers or control
    /// messages. Enabling returns whether something arrived meanwhile: then do
    /// not sleep.
    pub fn set_wakeups<R: Region + ?Sized>(
        &mut self,
        region: &R,
        enabled: bool,
    ) -> Result<bool, ConsoleError> {
        let mut pending = false;
        for p in self.ports.iter_mut().flatten() {
            pending |= p.rx.set_notifications(region, enabled)?;
            pending |= p.tx.set_notifications(region, enabled)?;
        }
        if let Some(c) = &mut self.control {
            pending |= c.rx.set_notifications(region, enabled)?;
            pending |= c.tx.set_notifications(region, enabled)?;
        }
        Ok(pending)
    }
}

/// Returns a filled receive buffer with its `held.len` bytes.
fn complete<R: Region + ?Sized>(
    region: &R,
    queue: &mut DeviceQueue,
    held: Held,
    counters: &mut PortCounters,
) -> Result<(), ConsoleError> {
    queue.put_used(region, held.id, held.len)?;
    counters.buffered -= u64::from(held.len);
    counters.acknowledged += u64::from(held.len);
    Ok(())
}

/// Applies one control message from the driver.
fn handle(
    ports: &mut [Option<Port>; MAX_PORTS],
    nr_ports: u32,
    message: ControlMessage,
) -> Result<Option<DeviceEvent>, ConsoleError> {
    let id = message.id;
    let on = message.value != 0;
    match message.event {
        event::DEVICE_READY => {
            return Ok(Some(if on {
                DeviceEvent::DriverReady
            } else {
                DeviceEvent::DriverFailed
            }));
        }
        event::PORT_READY | event::PORT_OPEN => {}
        // Unknown events (and ones only a device sends) are skipped.
        _ => return Ok(None),
    }
    let p = ports
        .get_mut(id as usize)
        .and_then(Option::as_mut)
        .filter(|_| id < nr_ports)
        .ok_or(ConsoleError::UnknownPort(id))?;
    let s = &mut p.state;
    Ok(Some(match (message.event, on) {
        (event::PORT_READY, true) => {
            s.ready = true;
            let console = if id == 0 {
                SEND_CONSOLE | SEND_RESIZE
            } else {
                0
            };
            let name = if s.name.is_empty() { 0 } else { SEND_NAME };
            p.pending |= console | name | SEND_OPEN;
            DeviceEvent::PortReady(id)
        }
        (event::PORT_READY, false) => DeviceEvent::PortFailed(id),
        (_, true) => {
            s.driver_open = true;
            s.driver_closed = false;
            s.input_ended = false;
            DeviceEvent::DriverOpened(id)
        }
        (_, false) => {
            s.driver_open = false;
            s.driver_closed = true;
            DeviceEvent::DriverClosed(id)
        }
    }))
}
