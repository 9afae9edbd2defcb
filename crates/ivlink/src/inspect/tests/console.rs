//! Consoles: a live native section between a driver and a device run in turns,
//! the same section damaged and overwritten at random, and the Zephyr sample's
//! layout as a foreign region.

use super::*;
use ivlink_core::console::{
    ConsoleConfig, DeviceSession, DriverSession, NativeShape, SessionPoll, SideKind,
};
use ivlink_core::virtio::mmio::registers as reg;

const CONFIG: ConsoleConfig = ConsoleConfig {
    cols: 80,
    rows: 25,
    max_nr_ports: 1,
    emerg_wr: 0,
};

/// Polls both sides until neither has anything to do.
fn settle(region: &HeapRegion, drv: &mut DriverSession, dev: &mut DeviceSession) {
    let mut quiet = 0;
    for _ in 0..10_000 {
        let a: SessionPoll = drv.poll(&**region).unwrap();
        let b = dev.poll(&**region).unwrap();
        drv.flush(&**region).unwrap();
        dev.flush(&**region).unwrap();
        drv.commit_taken(&**region).unwrap();
        dev.commit_taken(&**region).unwrap();
        let busy = a.event.is_some() || b.event.is_some() || a.ring || b.ring;
        quiet = if busy { 0 } else { quiet + 1 };
        if quiet > 3 {
            return;
        }
    }
    panic!("the sides never settled");
}

/// Reads what reached `port 0` of one side, polling both.
fn drain(
    region: &HeapRegion,
    drv: &mut DriverSession,
    dev: &mut DeviceSession,
    at_device: bool,
    want: usize,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..1000 {
        let r = &**region;
        let n = if at_device {
            dev.read(r, 0, &mut buf).unwrap()
        } else {
            drv.read(r, 0, &mut buf).unwrap()
        };
        got.extend_from_slice(&buf[..n]);
        if got.len() >= want && n == 0 {
            break;
        }
        settle(region, drv, dev);
    }
    got
}

/// A directory with a native console "console" (peer 1 added it), a device
/// (peer 1) and a driver (peer 0) that negotiated and exchanged 12 bytes to the
/// device and 2 back.
fn console_region(shape: NativeShape) -> (HeapRegion, SectionInfo, ConsoleLayout) {
    let region = HeapRegion::new(1 << 20);
    let size = <ConsoleLayout as SectionProtocol>::section_size(&shape).unwrap();
    let spec = SectionSpec::new("console", SectionKind::Console, size)
        .with_owner(1)
        .with_align(4096);
    let info = Directory::create(&*region, 8).unwrap().add(&spec).unwrap();
    let layout =
        <ConsoleLayout as SectionProtocol>::create(&*region, info.offset, size, &shape).unwrap();
    let (mut dev, _) = DeviceSession::new(&*region, layout, 1, CONFIG).unwrap();
    let mut drv = DriverSession::new(&*region, layout, 0).unwrap();
    settle(&region, &mut drv, &mut dev);
    assert!(drv.is_up() && dev.is_up());
    assert_eq!(drv.write(&*region, 0, b"hello device").unwrap(), 12);
    drv.flush(&*region).unwrap();
    assert_eq!(
        drain(&region, &mut drv, &mut dev, true, 12),
        b"hello device"
    );
    assert_eq!(dev.write(&*region, 0, b"hi").unwrap(), 2);
    dev.flush(&*region).unwrap();
    assert_eq!(drain(&region, &mut drv, &mut dev, false, 2), b"hi");
    settle(&region, &mut drv, &mut dev);
    (region, info, layout)
}

#[test]
fn a_live_native_console_is_decoded() {
    let (region, _, layout) = console_region(NativeShape::default());
    let report = inspect(&region);
    assert!(report.ok, "{report}");
    let s = section(&report, "console");
    assert_eq!(s.kind, "console");
    let c = s.console.as_ref().unwrap();
    assert_eq!(c.profile, "native");
    let h = c.header.as_ref().unwrap();
    assert_eq!((h.magic.as_str(), h.state_name.as_str()), ("VCN1", "ready"));
    assert_eq!((h.ports, h.entries, h.buf_size), (1, 32, 4096));
    let sides: Vec<_> = h
        .sides
        .iter()
        .map(|s| (s.side.as_str(), s.generation, s.peer, s.ended, s.taken))
        .collect();
    assert_eq!(
        sides,
        [("driver", 1, Some(0), 0, 2), ("device", 1, Some(1), 0, 12)]
    );
    assert_eq!(h.sides[0].sequence, h.sides[1].sequence, "nothing pending");
    assert!(h.sides[0].sequence > 0);

    let r = c.registers.as_ref().unwrap();
    assert_eq!(r.offset, layout.block);
    assert_eq!(
        (r.magic, r.version, r.device_id, r.vendor.as_str()),
        (reg::MAGIC, 2, 3, "IVLK")
    );
    assert_eq!(
        r.status_bits,
        ["ACKNOWLEDGE", "DRIVER", "DRIVER_OK", "FEATURES_OK"]
    );
    assert!(r.queue_ready.is_some() && r.queue_pfn.is_none());
    assert_eq!(r.config_generation % 2, 0);
    assert_eq!(
        (r.config.cols, r.config.rows, r.config.max_nr_ports),
        (80, 25, 1)
    );

    assert_eq!(c.queues.len(), 2);
    let rx = &c.queues[0];
    assert_eq!(
        (rx.name.as_str(), rx.direction.as_str(), rx.num),
        ("port 0 receiveq", "device -> driver", 32)
    );
    // The driver posts every receive buffer; the device returned one, which
    // the driver drained and posted again.
    assert_eq!((rx.avail_idx, rx.used_idx), (33, 1));
    assert_eq!(rx.outstanding, Some(32));
    let tx = &c.queues[1];
    assert_eq!((tx.avail_idx, tx.used_idx, tx.outstanding), (1, 1, Some(0)));

    contains_all(
        &report.to_string(),
        &[
            "console: setup VCN1 (ready), 1 port(s), 32 entries per queue, buffers of 4096 B",
            "driver: generation 1, peer 0, sequence",
            "device: generation 1, peer 1, sequence",
            "ended ports none, taken 12 B",
            "MagicValue 0x74726976, Version 2, DeviceID 3, VendorID 0x4b4c5649 (IVLK)",
            "Status 0x0f (ACKNOWLEDGE DRIVER DRIVER_OK FEATURES_OK)",
            "config: cols 80, rows 25, max_nr_ports 1, emerg_wr 0x0",
            "queue 0  port 0 receiveq",
            "outstanding 32",
            "inconsistencies: none",
        ],
    );
    let json = serde_json::to_value(s).unwrap();
    assert_eq!(json["console"]["header"]["sides"][1]["side"], "device");
    assert_eq!(json["console"]["queues"][1]["name"], "port 0 transmitq");
    assert!(json.get("rpmsg").is_none());
}

#[test]
fn a_multiport_console_names_its_control_queues() {
    let shape = NativeShape {
        ports: 2,
        num: 8,
        buf_size: 512,
    };
    let (region, _, _) = console_region(shape);
    let report = inspect(&region);
    assert!(report.ok, "{report}");
    let c = section(&report, "console").console.as_ref().unwrap();
    let names: Vec<_> = c.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "port 0 receiveq",
            "port 0 transmitq",
            "control receiveq",
            "control transmitq",
            "port 1 receiveq",
            "port 1 transmitq"
        ]
    );
    let r = c.registers.as_ref().unwrap();
    assert_eq!(r.config.max_nr_ports, 2);
}

#[test]
fn a_damaged_console_is_shown_as_read_with_its_problems() {
    let (region, info, layout) = console_region(NativeShape::default());
    let block = layout.block;
    let store = |at: usize, value: u32| region.store_u32(at, value, Ordering::Relaxed).unwrap();
    // The device started, yet its block has no magic; Status holds a bit no
    // side writes; the device acknowledged a request the driver never made;
    // the driver ended a port that does not exist; the device returned more
    // transmit buffers than were posted.
    store(block, 0);
    store(block + 0x70, 0x10f);
    let device = layout.side(SideKind::Device).unwrap();
    let ack = region
        .load_u32(device.sequence_at(), Ordering::Relaxed)
        .unwrap();
    store(device.sequence_at(), ack + 5);
    let driver = layout.side(SideKind::Driver).unwrap();
    driver.set_ended(&*region, 0b100).unwrap();
    let tx = layout.queues()[1];
    let used_idx_at = tx.base() + tx.layout().used_offset() + 2;
    region.write(used_idx_at, &200u16.to_le_bytes()).unwrap();

    let report = inspect(&region);
    assert!(!report.ok);
    let s = section(&report, "console");
    contains_all(
        &s.problems.join("\n"),
        &[
            "MagicValue is 0 though the device started (generation 1)",
            "ahead of the driver's latest request",
            "driver line: ended ports 0x4 name ports beyond the header's 1",
            "queue 1 (port 0 transmitq): avail idx 1 ran more than 32 ahead of used idx 200",
        ],
    );
    let c = s.console.as_ref().unwrap();
    assert_eq!(c.queues[1].outstanding, None);
    assert_eq!(c.header.as_ref().unwrap().sides[0].ended_ports, [2]);
    // With the magic back, the block's own checks apply again.
    store(block, reg::MAGIC);
    let report = inspect(&region);
    let problems = section(&report, "console").problems.join("\n");
    assert!(
        problems.contains("Status 0x10f holds bits no side writes"),
        "{problems}"
    );
    let text = report.to_string();
    assert!(text.contains("outstanding ?"), "{text}");
    assert!(text.contains("PROBLEM: "), "{text}");

    // A header that lies about its shape: shown, the queues left unread.
    region
        .store_u32(info.offset + 8, 3, Ordering::Relaxed)
        .unwrap();
    let report = inspect(&region);
    let s = section(&report, "console");
    let c = s.console.as_ref().unwrap();
    assert_eq!(c.header.as_ref().unwrap().entries, 3);
    assert!(c.queues.is_empty());
    assert!(!s.problems.is_empty());
}

/// The Zephyr sample's layout in a region of its size, run by an ivlink device
/// and driver whose driver VM sees the region at `BASE`.
const BASE: u64 = 0xafa0_0000;

fn hvl_region() -> HeapRegion {
    let region = HeapRegion::new(0x200000);
    let layout = ConsoleLayout::hvl_zephyr(region.len(), BASE).unwrap();
    let (mut dev, _) = DeviceSession::new(&*region, layout, 1, CONFIG).unwrap();
    let mut drv = DriverSession::new(&*region, layout, 0).unwrap();
    settle(&region, &mut drv, &mut dev);
    assert!(drv.is_up() && dev.is_up());
    assert_eq!(drv.write(&*region, 0, b"Hello World\n").unwrap(), 12);
    drv.flush(&*region).unwrap();
    assert_eq!(
        drain(&region, &mut drv, &mut dev, true, 12),
        b"Hello World\n"
    );
    region
}

#[test]
fn the_zephyr_samples_layout_is_a_decoded_foreign_console() {
    let region = hvl_region();
    let report = inspect(&region);
    assert_eq!(report.layout, "hvl-zephyr", "{report}");
    assert!(report.ok, "{report}");
    assert!(report.sections.is_empty());
    let c = report.console.as_ref().unwrap();
    assert!(c.header.is_none());
    let r = c.registers.as_ref().unwrap();
    assert_eq!((r.magic, r.version, r.device_id), (reg::MAGIC, 1, 3));
    assert_eq!(r.shm_base, BASE, "SHMBase as read");
    assert!(r.queue_ready.is_none());
    // QueuePFN as the device left it after the sample's handshake: the value
    // read, whatever it is, and no translation.
    assert!(r.queue_pfn.is_some());
    assert!(r.status_bits.iter().any(|b| b == "DRIVER_OK"));
    let offsets: Vec<_> = c.queues.iter().map(|q| (q.offset, q.num)).collect();
    assert_eq!(offsets, [(0x101000, 4), (0x103000, 4)]);
    assert_eq!(c.queues[1].used_idx, c.queues[1].avail_idx);
    assert!(c.queues[1].avail_idx > 0);
    contains_all(
        &report.to_string(),
        &[
            "region: 2097152 bytes, layout hvl-zephyr",
            "console: virtio-mmio console (the Zephyr hypervisor-less sample's layout)",
            "MagicValue 0x74726976, Version 1, DeviceID 3",
            "GuestPageSize 4096",
            "QueuePFN 0x",
            "queue 1  port 0 transmitq",
            "inconsistencies: none",
            "verdict: a foreign layout: virtio-mmio console (the Zephyr hypervisor-less sample's layout)",
        ],
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["console"]["profile"], "hvl-zephyr");

    // A hostile vring index once the driver is up is an inconsistency.
    let tx = ConsoleLayout::hvl_zephyr(region.len(), 0).unwrap().queues()[1];
    let used_idx_at = tx.base() + tx.layout().used_offset() + 2;
    region.write(used_idx_at, &100u16.to_le_bytes()).unwrap();
    let report = inspect(&region);
    assert!(!report.ok);
    assert!(
        report
            .inconsistencies
            .iter()
            .any(|i| i.contains("queue 1 (port 0 transmitq)")),
        "{report}"
    );
    assert!(report.verdict.contains("1 inconsistency found"), "{report}");
}

#[test]
fn a_block_that_is_not_the_samples_console_stays_unrecognised() {
    let region = HeapRegion::new(0x200000);
    region.store_u32(0, reg::MAGIC, Ordering::Relaxed).unwrap();
    region.store_u32(4, 1, Ordering::Relaxed).unwrap();
    region.store_u32(8, 2, Ordering::Relaxed).unwrap();
    let report = inspect(&region);
    assert_eq!(report.layout, "unrecognised", "{report}");
    assert!(report.console.is_none());
    // Too small for the sample's heaps: the block is decoded, the rings are not.
    let small = HeapRegion::new(0x10000);
    small.store_u32(0, reg::MAGIC, Ordering::Relaxed).unwrap();
    small.store_u32(4, 1, Ordering::Relaxed).unwrap();
    small.store_u32(8, 3, Ordering::Relaxed).unwrap();
    let report = inspect(&small);
    assert_eq!(report.layout, "hvl-zephyr");
    assert!(report.console.as_ref().unwrap().queues.is_empty());
    assert!(
        report
            .inconsistencies
            .iter()
            .any(|i| i.contains("vrings not read")),
        "{report}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a hostile peer writes over a native console (header, register
    /// block, vrings, buffers), the report is made and printed without a panic.
    #[test]
    fn a_hostile_console_section_never_panics(
        writes in proptest::collection::vec((0usize..0x1400, any::<u64>()), 1..48),
    ) {
        let (region, info, _) = console_region(NativeShape { ports: 2, num: 8, buf_size: 256 });
        for (at, value) in writes {
            let _ = region.write(info.offset + at, &value.to_le_bytes());
        }
        let report = inspect(&region);
        let _ = report.to_string();
        let _ = serde_json::to_string(&report).unwrap();
    }

    /// The same over the Zephyr sample's block and vrings.
    #[test]
    fn a_hostile_zephyr_console_never_panics(
        writes in proptest::collection::vec((any::<bool>(), 0usize..0x3000, any::<u64>()), 1..48),
    ) {
        let region = hvl_region();
        for (in_rings, at, value) in writes {
            let base = if in_rings { 0x101000 } else { 0 };
            let _ = region.write(base + at, &value.to_le_bytes());
        }
        let report = inspect(&region);
        let _ = report.to_string();
        let _ = serde_json::to_string(&report).unwrap();
    }
}
