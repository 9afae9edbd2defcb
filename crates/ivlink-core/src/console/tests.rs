use super::*;
use crate::region::{HeapRegion, RawRegion, Region};
use crate::virtio::AddressMap;
use crate::virtio::features::bit;
use crate::virtio::virtq::{DESC_F_WRITE, DriverQueue, Vring, VringLayout};
use alloc::vec::Vec;
use core::cell::Cell;
use core::sync::atomic::Ordering;
use proptest::prelude::*;

const NUM: u16 = 8;
const RING_SPAN: usize = 512;
const POOL: usize = 4096;
const BUF: u32 = 256;
const BUFS: usize = 40;
const REGION: usize = POOL + BUFS * BUF as usize;

/// The address of the pool's first byte in descriptors.
const POOL_ADDR: u64 = 0x4000_0000 + POOL as u64;

const MULTI: u64 = bit(F_MULTIPORT);

/// A driver and a device over one region: `2 + 2 * ports` vrings of 8 entries
/// from offset 0, a pool of 40 buffers of 256 bytes at 4096.
struct Bed {
    region: HeapRegion,
    queues: Vec<Vring>,
    driver: ConsoleDriver,
    device: ConsoleDevice,
}

fn bed(features: u64, ports: u32) -> Bed {
    let region = HeapRegion::new(REGION);
    let layout = VringLayout::new(NUM, 64).unwrap();
    let count = queue_count(has(features, F_MULTIPORT), ports);
    let queues: Vec<Vring> = (0..count)
        .map(|q| Vring::new(q * RING_SPAN, layout, REGION).unwrap())
        .collect();
    let config = ConsoleConfig {
        cols: 80,
        rows: 25,
        max_nr_ports: ports,
        emerg_wr: 0,
    };
    let pool = DriverPool {
        offset: POOL,
        buf_size: BUF,
        count: BUFS,
    };
    let map = AddressMap::new(0x4000_0000, POOL, BUFS * BUF as usize);
    let driver = ConsoleDriver::new(&*region, features, config, &queues, pool, map).unwrap();
    let device = ConsoleDevice::new(features, config, &queues, map, BUF).unwrap();
    Bed {
        region,
        queues,
        driver,
        device,
    }
}

impl Bed {
    /// Flushes and polls both sides until neither has anything to say; returns
    /// the events each side saw.
    fn settle(&mut self) -> (Vec<DriverEvent>, Vec<DeviceEvent>) {
        let (mut driver_events, mut device_events) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            self.driver.flush(&*self.region).unwrap();
            while let Some(e) = self.device.poll(&*self.region).unwrap() {
                device_events.push(e);
            }
            self.device.flush(&*self.region).unwrap();
            while let Some(e) = self.driver.poll(&*self.region).unwrap() {
                driver_events.push(e);
            }
        }
        (driver_events, device_events)
    }

    fn device_read_all(&mut self, port: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 700];
        loop {
            let n = self.device.read(&*self.region, port, &mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn driver_read_all(&mut self, port: u32, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = alloc::vec![0u8; chunk];
        loop {
            let n = self.driver.read(&*self.region, port, &mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn check_counters(c: &PortCounters) {
    assert_eq!(
        c.written,
        c.buffered + c.in_flight + c.acknowledged,
        "{c:?}"
    );
}

#[test]
fn queue_numbers_follow_the_specification() {
    assert_eq!((receiveq(0), transmitq(0)), (0, 1));
    assert_eq!((receiveq(1), transmitq(1)), (4, 5));
    assert_eq!((receiveq(3), transmitq(3)), (8, 9));
    assert_eq!((CONTROL_RECEIVEQ, CONTROL_TRANSMITQ), (2, 3));
    assert_eq!(queue_count(false, 5), 2);
    assert_eq!(queue_count(true, 2), 6);
}

#[test]
fn port_0_carries_bytes_both_ways_in_full_buffers() {
    let mut bed = bed(0, 1);
    let out = pattern(1000, 1);
    assert_eq!(bed.driver.write(&*bed.region, 0, &out[..10]).unwrap(), 10);
    assert_eq!(bed.driver.write(&*bed.region, 0, &out[10..]).unwrap(), 990);
    let c = bed.driver.port(0).unwrap().counters;
    assert_eq!((c.written, c.in_flight, c.buffered), (1000, 768, 232));
    assert!(
        bed.driver.flush(&*bed.region).unwrap(),
        "the device did not opt out"
    );
    // 1000 bytes in four buffers: three full ones and the rest, not a byte per kick.
    assert_eq!(bed.queues[1].avail_idx(&*bed.region).unwrap(), 4);
    assert_eq!(bed.device_read_all(0), out);
    assert_eq!(bed.device.port(0).unwrap().counters.received, 1000);

    let back = pattern(600, 7);
    assert_eq!(bed.device.write(&*bed.region, 0, &back).unwrap(), 600);
    bed.device.flush(&*bed.region).unwrap();
    assert_eq!(bed.queues[0].used_idx(&*bed.region).unwrap(), 3);
    // Reads of 100 bytes leave the rest of each buffer for the next one.
    assert_eq!(bed.driver_read_all(0, 100), back);
    let d = bed.device.port(0).unwrap().counters;
    assert_eq!((d.written, d.acknowledged, d.buffered), (600, 600, 0));

    // The device returned the transmit buffers: the driver counts them
    // acknowledged once it takes them back.
    bed.driver
        .write(&*bed.region, 0, &[0; BUF as usize * 8])
        .unwrap();
    let c = bed.driver.port(0).unwrap().counters;
    check_counters(&c);
    assert_eq!(c.acknowledged, 1000);
    assert_eq!(c.received, 600);
}

#[test]
fn writes_stop_when_every_buffer_is_with_the_device() {
    let mut bed = bed(0, 1);
    let big = pattern(BUF as usize * 9, 3);
    // 40 buffers, 2 queues, at most 8 per ring: 8 transmit buffers.
    assert_eq!(
        bed.driver.write(&*bed.region, 0, &big).unwrap(),
        BUF as usize * 8
    );
    assert_eq!(bed.driver.write(&*bed.region, 0, &big).unwrap(), 0);
    bed.driver.flush(&*bed.region).unwrap();
    let mut buf = [0u8; 300];
    assert_eq!(bed.device.read(&*bed.region, 0, &mut buf).unwrap(), 300);
    bed.device.flush(&*bed.region).unwrap();
    // One buffer drained and returned; the second is held half read.
    assert_eq!(
        bed.driver.write(&*bed.region, 0, &big).unwrap(),
        BUF as usize
    );
    let c = bed.driver.port(0).unwrap().counters;
    check_counters(&c);
    assert_eq!(
        (c.acknowledged, c.in_flight, c.buffered),
        (u64::from(BUF), u64::from(BUF) * 8, 0)
    );
}

#[test]
fn multiport_names_ports_opens_closes_and_resizes() {
    let mut bed = bed(MULTI | bit(F_SIZE), 2);
    bed.device.set_port_name(1, "org.ivlink.serial").unwrap();
    assert_eq!(
        bed.driver.write(&*bed.region, 1, b"early"),
        Err(ConsoleError::PortNotReady(1))
    );
    assert_eq!(
        bed.device.write(&*bed.region, 1, b"early"),
        Err(ConsoleError::PortNotReady(1))
    );
    let (driver_events, device_events) = bed.settle();
    for e in [
        DriverEvent::PortAdded(0),
        DriverEvent::PortAdded(1),
        DriverEvent::ConsolePort(0),
        DriverEvent::Resized {
            port: 0,
            cols: 80,
            rows: 25,
        },
        DriverEvent::PortNamed(1),
        DriverEvent::PeerOpened(0),
        DriverEvent::PeerOpened(1),
    ] {
        assert!(driver_events.contains(&e), "{e:?} not in {driver_events:?}");
    }
    for e in [
        DeviceEvent::DriverReady,
        DeviceEvent::PortReady(0),
        DeviceEvent::PortReady(1),
        DeviceEvent::DriverOpened(0),
        DeviceEvent::DriverOpened(1),
    ] {
        assert!(device_events.contains(&e), "{e:?} not in {device_events:?}");
    }
    let port1 = bed.driver.port(1).unwrap();
    assert_eq!(port1.name.as_str(), "org.ivlink.serial");
    assert!(port1.added && port1.peer_open && !port1.console);
    assert!(bed.driver.port(0).unwrap().console);

    // Data on port 1 uses queues 4 and 5.
    bed.driver.write(&*bed.region, 1, b"hello one").unwrap();
    bed.driver.flush(&*bed.region).unwrap();
    assert_eq!(bed.queues[5].avail_idx(&*bed.region).unwrap(), 1);
    assert_eq!(bed.device_read_all(1), b"hello one");
    assert_eq!(bed.device_read_all(0), b"");

    // Half-close by the driver: the device sees the control message first and
    // still reads the bytes before it, then end of stream.
    bed.driver.write(&*bed.region, 1, b"bye").unwrap();
    bed.driver.close_output(1).unwrap();
    assert_eq!(
        bed.driver.write(&*bed.region, 1, b"more"),
        Err(ConsoleError::OutputClosed(1))
    );
    bed.driver.flush(&*bed.region).unwrap();
    assert_eq!(
        bed.device.poll(&*bed.region).unwrap(),
        Some(DeviceEvent::DriverClosed(1))
    );
    assert!(!bed.device.port(1).unwrap().input_ended);
    assert_eq!(bed.device_read_all(1), b"bye");
    assert!(bed.device.port(1).unwrap().input_ended);
    // The other direction still works.
    bed.device.write(&*bed.region, 1, b"reply").unwrap();
    bed.device.close_output(1).unwrap();
    bed.device.flush(&*bed.region).unwrap();
    assert_eq!(
        bed.driver.poll(&*bed.region).unwrap(),
        Some(DriverEvent::PeerClosed(1))
    );
    assert_eq!(bed.driver_read_all(1, 2), b"reply");
    assert!(bed.driver.port(1).unwrap().input_ended);
    assert!(!bed.driver.port(0).unwrap().input_ended);

    // Resize reaches the console port.
    let config = bed.device.resize(132, 43);
    assert_eq!((config.cols, config.rows), (132, 43));
    let (events, _) = bed.settle();
    assert_eq!(
        events,
        [DriverEvent::Resized {
            port: 0,
            cols: 132,
            rows: 43
        }]
    );
    assert_eq!(bed.driver.port(0).unwrap().size, Some((132, 43)));
}

#[test]
fn size_without_multiport_is_a_config_change() {
    let mut bed = bed(bit(F_SIZE) | bit(F_EMERG_WRITE), 1);
    assert_eq!(bed.driver.port(0).unwrap().size, Some((80, 25)));
    let config = bed.device.resize(100, 30);
    let seen = ConsoleConfig::from_bytes(&config.to_bytes());
    assert_eq!(
        bed.driver.config_changed(seen),
        Some(DriverEvent::Resized {
            port: 0,
            cols: 100,
            rows: 30
        })
    );
    assert_eq!(bed.driver.config_changed(seen), None);
    assert_eq!(
        bed.driver.close_output(0),
        Err(ConsoleError::NotNegotiated(
            "a port's end of stream needs multiport"
        ))
    );
    let word = bed.driver.emergency_write(b'!').unwrap();
    assert_eq!(
        bed.device.emergency_write(u32::from_le_bytes(word)),
        Some(b'!')
    );
    assert_eq!(bed.device.config().emerg_wr, u32::from(b'!'));
    let plain = self::bed(0, 1);
    assert!(plain.driver.emergency_write(b'!').is_err());
}

#[test]
fn construction_refuses_impossible_layouts() {
    let region = HeapRegion::new(REGION);
    let layout = VringLayout::new(NUM, 64).unwrap();
    let queues: Vec<Vring> = (0..4)
        .map(|q| Vring::new(q * RING_SPAN, layout, REGION).unwrap())
        .collect();
    let config = ConsoleConfig {
        max_nr_ports: 2,
        ..ConsoleConfig::default()
    };
    let map = AddressMap::offsets(REGION);
    let pool = DriverPool {
        offset: POOL,
        buf_size: BUF,
        count: BUFS,
    };
    let new =
        |features, pool, map| ConsoleDriver::new(&*region, features, config, &queues, pool, map);
    assert!(
        matches!(new(MULTI, pool, map), Err(ConsoleError::Layout(_))),
        "two ports need six queues"
    );
    assert!(new(0, pool, map).is_ok());
    assert!(new(0, DriverPool { count: 1, ..pool }, map).is_err());
    assert!(
        new(
            0,
            DriverPool {
                count: BUFS + 1,
                ..pool
            },
            map
        )
        .is_err()
    );
    assert!(new(0, pool, map.with_window(POOL, 256)).is_err());
    assert!(ConsoleDevice::new(MULTI, config, &queues, map, BUF).is_err());
    let many = ConsoleConfig {
        max_nr_ports: MAX_PORTS as u32 + 1,
        ..config
    };
    assert!(ConsoleDevice::new(MULTI, many, &queues, map, BUF).is_err());
}

// ---- hostile peers ----

fn desc_at(bed: &Bed, queue: usize, id: usize) -> usize {
    bed.queues[queue].base() + 16 * id
}

fn one_line(e: ConsoleError) -> ConsoleError {
    let text = alloc::format!("{e}");
    assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
    e
}

#[test]
fn the_device_refuses_buffers_in_the_wrong_direction() {
    let mut bed = bed(0, 1);
    bed.driver.write(&*bed.region, 0, b"data").unwrap();
    bed.driver.flush(&*bed.region).unwrap();
    let flags = desc_at(&bed, 1, 0) + 12;
    // Descriptors are plain bytes to both sides: overwrite them as bytes.
    bed.region
        .write(flags, &DESC_F_WRITE.to_le_bytes())
        .unwrap();
    let mut buf = [0u8; 8];
    let e = one_line(bed.device.read(&*bed.region, 0, &mut buf).unwrap_err());
    assert_eq!(
        e,
        ConsoleError::Corrupt("a transmit buffer the device may write")
    );

    let mut bed = self::bed(0, 1);
    bed.driver.flush(&*bed.region).unwrap();
    bed.region.write(desc_at(&bed, 0, 0) + 12, &[0, 0]).unwrap();
    let e = one_line(bed.device.write(&*bed.region, 0, b"x").unwrap_err());
    assert_eq!(
        e,
        ConsoleError::Corrupt("a receive buffer the device may not write")
    );
}

#[test]
fn the_device_refuses_buffers_outside_the_pool_or_too_long() {
    for (addr, len) in [
        (Some(POOL_ADDR - 1), None),
        (Some(0), None),
        (Some(u64::MAX), None),
        (Some(POOL_ADDR + (BUFS as u64 * 256) - 16), Some(32)),
        (None, Some(BUF + 1)),
        (None, Some(u32::MAX)),
    ] {
        let mut bed = bed(0, 1);
        bed.driver.flush(&*bed.region).unwrap();
        let d = desc_at(&bed, 0, 0);
        if let Some(addr) = addr {
            bed.region.write(d, &u64::to_le_bytes(addr)).unwrap();
        }
        if let Some(len) = len {
            bed.region.write(d + 8, &len.to_le_bytes()).unwrap();
        }
        let e = one_line(bed.device.write(&*bed.region, 0, b"x").unwrap_err());
        assert!(
            matches!(e, ConsoleError::Address(_) | ConsoleError::Corrupt(_)),
            "{e:?}"
        );
    }
}

#[test]
fn the_driver_refuses_used_lengths_past_its_buffers() {
    let mut bed = bed(0, 1);
    bed.driver.flush(&*bed.region).unwrap();
    bed.device.write(&*bed.region, 0, b"abc").unwrap();
    bed.device.flush(&*bed.region).unwrap();
    let used = bed.queues[0].base() + bed.queues[0].layout().used_offset();
    bed.region
        .store_u32(used + 8, BUF + 1, Ordering::Relaxed)
        .unwrap();
    let mut buf = [0u8; 8];
    let e = one_line(bed.driver.read(&*bed.region, 0, &mut buf).unwrap_err());
    assert!(matches!(e, ConsoleError::Corrupt(_)));
}

#[test]
fn control_messages_for_unknown_ports_are_errors() {
    // Device to driver: the first message (DEVICE_ADD 0) lands in control
    // receive buffer 0, at the pool's start.
    let mut bed = bed(MULTI, 2);
    bed.driver.flush(&*bed.region).unwrap();
    bed.device.flush(&*bed.region).unwrap();
    bed.region.write(POOL, &7u32.to_le_bytes()).unwrap();
    let e = one_line(bed.driver.poll(&*bed.region).unwrap_err());
    assert_eq!(e, ConsoleError::UnknownPort(7));

    // Driver to device: DEVICE_READY goes in control transmit buffer 0, the
    // first PORT_READY in buffer 1 (after the eight receive buffers).
    let mut bed = self::bed(MULTI, 2);
    bed.driver.flush(&*bed.region).unwrap();
    bed.device.flush(&*bed.region).unwrap();
    assert_eq!(
        bed.driver.poll(&*bed.region).unwrap(),
        Some(DriverEvent::PortAdded(0))
    );
    bed.driver.flush(&*bed.region).unwrap();
    let port_ready = POOL + 9 * CONTROL_BUFFER_SIZE;
    bed.region.write(port_ready, &9u32.to_le_bytes()).unwrap();
    assert_eq!(
        bed.device.poll(&*bed.region).unwrap(),
        Some(DeviceEvent::DriverReady)
    );
    let e = one_line(bed.device.poll(&*bed.region).unwrap_err());
    assert_eq!(e, ConsoleError::UnknownPort(9));

    // A name that is not UTF-8.
    let mut bed = self::bed(MULTI, 2);
    bed.device.set_port_name(1, "abc").unwrap();
    bed.settle();
    bed.device.set_port_name(1, "xyz").unwrap();
    bed.device.flush(&*bed.region).unwrap();
    let slot = (0..8)
        .map(|i| POOL + i * CONTROL_BUFFER_SIZE)
        .find(|&at| {
            let mut b = [0u8; 11];
            bed.region.read(at, &mut b).unwrap();
            &b[8..] == b"xyz"
        })
        .unwrap();
    bed.region.write(slot + 8, &[0xff]).unwrap();
    assert!(matches!(
        one_line(bed.driver.poll(&*bed.region).unwrap_err()),
        ConsoleError::Corrupt(_)
    ));
}

/// A region that counts the accesses made through it, to bound each call's work.
struct Counting<'a> {
    inner: &'a RawRegion,
    ops: Cell<usize>,
}

macro_rules! counted {
    ($($name:ident($($arg:ident: $t:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self, $($arg: $t),*) -> $ret {
            self.ops.set(self.ops.get() + 1);
            self.inner.$name($($arg),*)
        })*
    };
}

impl Region for Counting<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    counted! {
        read(offset: usize, buf: &mut [u8]) -> Result<(), RegionError>;
        write(offset: usize, data: &[u8]) -> Result<(), RegionError>;
        fill(offset: usize, len: usize, byte: u8) -> Result<(), RegionError>;
        load_u8(offset: usize, order: Ordering) -> Result<u8, RegionError>;
        store_u8(offset: usize, value: u8, order: Ordering) -> Result<(), RegionError>;
        load_u16(offset: usize, order: Ordering) -> Result<u16, RegionError>;
        store_u16(offset: usize, value: u16, order: Ordering) -> Result<(), RegionError>;
        load_u32(offset: usize, order: Ordering) -> Result<u32, RegionError>;
        store_u32(offset: usize, value: u32, order: Ordering) -> Result<(), RegionError>;
        load_u64(offset: usize, order: Ordering) -> Result<u64, RegionError>;
        store_u64(offset: usize, value: u64, order: Ordering) -> Result<(), RegionError>;
        compare_exchange_u32(offset: usize, current: u32, new: u32) -> Result<Result<u32, u32>, RegionError>;
        compare_exchange_u64(offset: usize, current: u64, new: u64) -> Result<Result<u64, u64>, RegionError>;
        compare_exchange_u8(offset: usize, current: u8, new: u8) -> Result<Result<u8, u8>, RegionError>;
        compare_exchange_u16(offset: usize, current: u16, new: u16) -> Result<Result<u16, u16>, RegionError>;
        fetch_or_u32(offset: usize, value: u32, order: Ordering) -> Result<u32, RegionError>;
        fetch_and_u32(offset: usize, value: u32, order: Ordering) -> Result<u32, RegionError>;
        fetch_or_u64(offset: usize, value: u64, order: Ordering) -> Result<u64, RegionError>;
        fetch_and_u64(offset: usize, value: u64, order: Ordering) -> Result<u64, RegionError>;
    }
}

/// One step of either side.
#[derive(Debug, Clone, Copy)]
enum Step {
    DriverWrite(usize),
    DriverRead(usize),
    DriverFlush,
    DriverPoll,
    DeviceWrite(usize),
    DeviceRead(usize),
    DeviceFlush,
    DevicePoll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..1200).prop_map(Step::DriverWrite),
        (0usize..1200).prop_map(Step::DriverRead),
        Just(Step::DriverFlush),
        Just(Step::DriverPoll),
        (0usize..1200).prop_map(Step::DeviceWrite),
        (0usize..1200).prop_map(Step::DeviceRead),
        Just(Step::DeviceFlush),
        Just(Step::DevicePoll),
    ]
}

/// Both directions of one port as the model sees them.
#[derive(Default)]
struct Streams {
    down: Vec<u8>,
    down_sent: usize,
    down_got: Vec<u8>,
    up: Vec<u8>,
    up_sent: usize,
    up_got: Vec<u8>,
}

/// Runs `s` on `port`; errors are returned, not unwrapped, for the hostile test.
fn run(
    sides: (&mut ConsoleDriver, &mut ConsoleDevice),
    region: &impl Region,
    port: u32,
    s: Step,
    m: &mut Streams,
) -> Result<(), ConsoleError> {
    let (driver, device) = sides;
    {
        let mut buf = [0u8; 1200];
        match s {
            Step::DriverWrite(n) => {
                let end = (m.down_sent + n).min(m.down.len());
                m.down_sent += driver.write(region, port, &m.down[m.down_sent..end])?;
            }
            Step::DriverRead(n) => {
                let got = driver.read(region, port, &mut buf[..n])?;
                m.up_got.extend_from_slice(&buf[..got]);
            }
            Step::DriverFlush => {
                driver.flush(region)?;
            }
            Step::DriverPoll => {
                driver.poll(region)?;
            }
            Step::DeviceWrite(n) => {
                let end = (m.up_sent + n).min(m.up.len());
                m.up_sent += device.write(region, port, &m.up[m.up_sent..end])?;
            }
            Step::DeviceRead(n) => {
                let got = device.read(region, port, &mut buf[..n])?;
                m.down_got.extend_from_slice(&buf[..got]);
            }
            Step::DeviceFlush => {
                device.flush(region)?;
            }
            Step::DevicePoll => {
                device.poll(region)?;
            }
        }
        Ok(())
    }
}

const CASES: u32 = if cfg!(miri) { 2 } else { 128 };

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the interleaving and the sizes, each side receives exactly the
    /// bytes the other sent, in order, and the accounting adds up.
    #[test]
    fn streams_arrive_whole_and_in_order(
        down in proptest::collection::vec(any::<u8>(), 0..6000),
        up in proptest::collection::vec(any::<u8>(), 0..6000),
        steps in proptest::collection::vec(step(), 0..200),
        multiport: bool,
        event_idx: bool,
    ) {
        let features = if multiport { MULTI } else { 0 } | if event_idx { bit(crate::virtio::features::RING_F_EVENT_IDX) } else { 0 };
        let (ports, port) = if multiport { (2, 1) } else { (1, 0) };
        let mut bed = bed(features, ports);
        if multiport {
            bed.settle();
        }
        let mut m = Streams { down, up, ..Streams::default() };
        for s in steps {
            run((&mut bed.driver, &mut bed.device), &*bed.region, port, s, &mut m).unwrap();
            prop_assert!(m.down.starts_with(&m.down_got) && m.up.starts_with(&m.up_got));
            let c = bed.driver.port(port).unwrap().counters;
            prop_assert_eq!(c.written, c.buffered + c.in_flight + c.acknowledged);
            prop_assert_eq!(c.written, m.down_sent as u64);
            let d = bed.device.port(port).unwrap().counters;
            prop_assert_eq!(d.written, d.buffered + d.acknowledged);
            prop_assert_eq!(d.received, m.down_got.len() as u64);
        }
        // Drain: everything sent arrives.
        for _ in 0..200 {
            for s in [Step::DriverWrite(1200), Step::DeviceWrite(1200), Step::DriverFlush, Step::DeviceFlush, Step::DeviceRead(1200), Step::DriverRead(1200), Step::DeviceFlush, Step::DriverFlush] {
                run((&mut bed.driver, &mut bed.device), &*bed.region, port, s, &mut m).unwrap();
            }
            if m.down_got.len() == m.down.len() && m.up_got.len() == m.up.len() {
                break;
            }
        }
        prop_assert_eq!(&m.down_got, &m.down);
        prop_assert_eq!(&m.up_got, &m.up);
        let c = bed.driver.port(port).unwrap().counters;
        prop_assert_eq!((c.buffered, c.in_flight), (0, 0));
        prop_assert_eq!(c.acknowledged, m.down.len() as u64);
    }

    /// Random bytes written over the rings while both sides run: errors, never
    /// a panic, and each call does a bounded amount of work.
    // Byte writes over words used atomically are a mixed-size race Miri's weak
    // memory model cannot represent (it aborts); covered natively.
    #[cfg_attr(miri, ignore)]
    #[test]
    fn hostile_rings_and_buffers_never_panic(
        writes in proptest::collection::vec((0usize..REGION, any::<u8>()), 0..200),
        steps in proptest::collection::vec(step(), 0..200),
        multiport: bool,
    ) {
        let (ports, port) = if multiport { (2, 1) } else { (1, 0) };
        let mut bed = bed(if multiport { MULTI } else { 0 }, ports);
        if multiport {
            bed.settle();
        }
        let mut m = Streams { down: pattern(4000, 1), up: pattern(4000, 2), ..Streams::default() };
        let raw: &RawRegion = &bed.region;
        let counting = Counting { inner: raw, ops: Cell::new(0) };
        let mut writes = writes.into_iter();
        for s in steps {
            // Rings mostly (where damage is subtle), sometimes buffers.
            if let Some((at, byte)) = writes.next() {
                let at = if at % 4 == 0 { at } else { at % (RING_SPAN * 6) };
                raw.store_u8(at, byte, Ordering::Relaxed).unwrap();
            }
            counting.ops.set(0);
            let _ = run((&mut bed.driver, &mut bed.device), &counting, port, s, &mut m);
            prop_assert!(counting.ops.get() < 400, "{:?} took {} accesses", s, counting.ops.get());
        }
    }
}

#[test]
fn a_legacy_drivers_one_byte_buffers_are_filled_never_left_empty() {
    // The seed's driver: one-byte buffers; 4-entry vrings aligned to 4096.
    const LEGACY_POOL: usize = 0x1100; // between the two vrings
    let region = HeapRegion::new(REGION);
    let layout = VringLayout::new(4, 4096).unwrap();
    let queues = [
        Vring::new(0, layout, REGION).unwrap(),
        Vring::new(0x2000, layout, REGION).unwrap(),
    ];
    let map = AddressMap::new(0x8000_0000, LEGACY_POOL, 64);
    let mut device = ConsoleDevice::new(0, ConsoleConfig::default(), &queues, map, 1).unwrap();
    let mut rx = DriverQueue::new(queues[0], false);
    let mut tx = DriverQueue::new(queues[1], false);
    rx.reset(&*region).unwrap();
    tx.reset(&*region).unwrap();
    for id in 0..4u16 {
        let at = LEGACY_POOL + usize::from(id);
        rx.post(&*region, id, map.address_of(at), 1, true).unwrap();
        region
            .write(LEGACY_POOL + 32 + usize::from(id), &[b'a' + id as u8])
            .unwrap();
        tx.post(
            &*region,
            id,
            map.address_of(LEGACY_POOL + 32 + usize::from(id)),
            1,
            false,
        )
        .unwrap();
    }
    rx.publish(&*region).unwrap();
    tx.publish(&*region).unwrap();

    assert_eq!(device.write(&*region, 0, b"hey!!").unwrap(), 4);
    // Nothing partly filled is left to complete with 0 bytes.
    device.flush(&*region).unwrap();
    let mut got = Vec::new();
    while let Some(used) = rx.take_used(&*region).unwrap() {
        assert_eq!(used.len, 1);
        let mut b = [0u8];
        region
            .read(LEGACY_POOL + usize::from(used.id), &mut b)
            .unwrap();
        got.push(b[0]);
    }
    assert_eq!(got, b"hey!");

    let mut buf = [0u8; 16];
    assert_eq!(device.read(&*region, 0, &mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"abcd");
    device.flush(&*region).unwrap();
    let mut returned = 0;
    while let Some(used) = tx.take_used(&*region).unwrap() {
        assert_eq!(used.len, 0);
        returned += 1;
    }
    assert_eq!(returned, 4);
}
