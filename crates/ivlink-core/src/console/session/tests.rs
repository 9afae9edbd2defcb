use core::sync::atomic::Ordering;

use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::HeapRegion;
use crate::console::{ConsoleConfig, NativeShape, hvl};
use crate::virtio::virtq::Vring;

/// The shape most tests use: Miri interprets every byte of a section's setup,
/// so it gets a small one.
fn shape() -> NativeShape {
    if cfg!(miri) {
        NativeShape {
            ports: 1,
            num: 4,
            buf_size: 256,
        }
    } else {
        NativeShape::default()
    }
}

/// Bytes to carry in a test of `normal` bytes (fewer under Miri).
const fn scaled(normal: usize) -> usize {
    if cfg!(miri) { normal / 50 } else { normal }
}

/// Bytes of the region the native tests use (Miri: less to allocate).
const REGION: usize = if cfg!(miri) { 1 << 16 } else { 1 << 20 };

fn native(shape: NativeShape) -> (HeapRegion, ConsoleLayout) {
    let region = HeapRegion::new(REGION);
    let size = shape.section_size().unwrap();
    let layout = ConsoleLayout::create_native(&*region, 4096, size, shape).unwrap();
    (region, layout)
}

fn device(region: &HeapRegion, layout: ConsoleLayout) -> DeviceSession {
    let config = ConsoleConfig {
        cols: 80,
        rows: 25,
        max_nr_ports: 1,
        emerg_wr: 0,
    };
    DeviceSession::new(&**region, layout, 1, config).unwrap().0
}

fn driver(region: &HeapRegion, layout: ConsoleLayout) -> DriverSession {
    DriverSession::new(&**region, layout, 0).unwrap()
}

/// Events each side saw while both ran until neither had anything to do.
#[derive(Debug, Default)]
struct Seen {
    driver: Vec<SessionEvent>,
    device: Vec<SessionEvent>,
}

fn settle(region: &HeapRegion, drv: &mut DriverSession, dev: &mut DeviceSession) -> Seen {
    let mut seen = Seen::default();
    let mut quiet = 0;
    for _ in 0..10_000 {
        let a = drv.poll(&**region).unwrap();
        let b = dev.poll(&**region).unwrap();
        seen.driver.extend(a.event);
        seen.device.extend(b.event);
        drv.flush(&**region).unwrap();
        dev.flush(&**region).unwrap();
        quiet = if a.event.is_none() && b.event.is_none() && !a.ring && !b.ring {
            quiet + 1
        } else {
            0
        };
        if quiet > 3 {
            return seen;
        }
    }
    panic!("the sides never settled: {seen:?}");
}

fn up(events: &[SessionEvent]) -> bool {
    events.iter().any(|e| matches!(e, SessionEvent::Up { .. }))
}

/// Moves `data` from one side to the other through `send` and `recv`, with
/// polls in between, and returns what arrived.
fn carry(
    region: &HeapRegion,
    drv: &mut DriverSession,
    dev: &mut DeviceSession,
    data: &[u8],
    to_device: bool,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut sent = 0;
    let mut buf = [0u8; 1500];
    for _ in 0..100_000 {
        if got.len() == data.len() {
            return got;
        }
        let r = &**region;
        if sent < data.len() {
            sent += if to_device {
                drv.write(r, 0, &data[sent..]).unwrap()
            } else {
                dev.write(r, 0, &data[sent..]).unwrap()
            };
        }
        drv.flush(r).unwrap();
        dev.flush(r).unwrap();
        let n = if to_device {
            dev.read(r, 0, &mut buf).unwrap()
        } else {
            drv.read(r, 0, &mut buf).unwrap()
        };
        drv.commit_taken(r).unwrap();
        dev.commit_taken(r).unwrap();
        got.extend_from_slice(&buf[..n]);
        drv.poll(r).unwrap();
        dev.poll(r).unwrap();
    }
    panic!("only {} of {} bytes arrived", got.len(), data.len());
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn either_start_order_comes_up_and_carries_bytes_both_ways() {
    for device_first in [true, false] {
        let (region, layout) = native(shape());
        let (mut drv, mut dev) = if device_first {
            let dev = device(&region, layout);
            (driver(&region, layout), dev)
        } else {
            let drv = driver(&region, layout);
            // The driver alone waits: no device has published the block yet.
            let mut lone = drv;
            for _ in 0..10 {
                assert_eq!(lone.poll(&*region).unwrap().event, None);
            }
            (lone, device(&region, layout))
        };
        let seen = settle(&region, &mut drv, &mut dev);
        assert!(up(&seen.driver) && up(&seen.device), "{seen:?}");
        let data = pattern(scaled(100_000), 7);
        assert_eq!(carry(&region, &mut drv, &mut dev, &data, true), data);
        let back = pattern(scaled(70_000), 9);
        assert_eq!(carry(&region, &mut drv, &mut dev, &back, false), back);
        assert!(drv.all_taken(&*region).unwrap());
        assert!(dev.all_taken(&*region).unwrap());
    }
}

#[test]
fn a_restarted_driver_is_served_again_and_the_device_reports_what_it_lost() {
    let (region, layout) = native(shape());
    let mut dev = device(&region, layout);
    let mut drv = driver(&region, layout);
    settle(&region, &mut drv, &mut dev);
    let data = pattern(scaled(5000), 1);
    assert_eq!(carry(&region, &mut drv, &mut dev, &data, false), data);
    // 300 bytes reach the driver's buffers, then the driver dies unread.
    assert_eq!(dev.write(&*region, 0, &[5; 300]).unwrap(), 300);
    dev.flush(&*region).unwrap();
    // The driver dies: its process state is gone, the region keeps its words.
    let _ = drv;
    let mut drv = driver(&region, layout);
    let seen = settle(&region, &mut drv, &mut dev);
    assert_eq!(
        seen.device.first(),
        Some(&SessionEvent::PeerRestarted { lost: 300 }),
        "{seen:?}"
    );
    assert!(up(&seen.device) && up(&seen.driver));
    let data = pattern(scaled(9000), 2);
    assert_eq!(carry(&region, &mut drv, &mut dev, &data, true), data);
    assert_eq!(carry(&region, &mut drv, &mut dev, &data, false), data);
}

#[test]
fn a_restarted_device_makes_the_driver_start_over_and_report_what_it_lost() {
    let (region, layout) = native(shape());
    let mut dev = device(&region, layout);
    let mut drv = driver(&region, layout);
    settle(&region, &mut drv, &mut dev);
    let data = pattern(scaled(3000), 3);
    assert_eq!(carry(&region, &mut drv, &mut dev, &data, true), data);
    // 1000 bytes posted, and the device takes only 400 before it dies.
    let posted = drv.write(&*region, 0, &[6; 1000]).unwrap();
    assert!(posted > 400, "only {posted} bytes fit");
    drv.flush(&*region).unwrap();
    let mut buf = [0u8; 400];
    assert_eq!(dev.read(&*region, 0, &mut buf).unwrap(), 400);
    dev.commit_taken(&*region).unwrap();
    let _ = dev;
    let mut dev = device(&region, layout);
    let seen = settle(&region, &mut drv, &mut dev);
    assert_eq!(
        seen.driver.first(),
        Some(&SessionEvent::PeerRestarted {
            lost: posted as u64 - 400
        }),
        "{seen:?}"
    );
    assert!(up(&seen.device) && up(&seen.driver));
    let data = pattern(scaled(20_000), 4);
    assert_eq!(carry(&region, &mut drv, &mut dev, &data, true), data);
    assert_eq!(carry(&region, &mut drv, &mut dev, &data, false), data);
}

#[test]
fn an_ended_output_reads_as_end_of_stream_after_its_data() {
    for ports in [1, 2] {
        let shape = NativeShape { ports, ..shape() };
        let (region, layout) = native(shape);
        let mut dev = device(&region, layout);
        let mut drv = driver(&region, layout);
        settle(&region, &mut drv, &mut dev);
        assert_eq!(drv.write(&*region, 0, b"last words").unwrap(), 10);
        drv.flush(&*region).unwrap();
        drv.close_output(&*region, 0).unwrap();
        drv.flush(&*region).unwrap();
        settle(&region, &mut drv, &mut dev);
        assert!(dev.peer_ended(&*region, 0).unwrap());
        let mut buf = [0u8; 64];
        assert_eq!(dev.read(&*region, 0, &mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], b"last words");
        assert_eq!(dev.read(&*region, 0, &mut buf).unwrap(), 0);
        dev.commit_taken(&*region).unwrap();
        assert!(
            !drv.peer_ended(&*region, 0).unwrap(),
            "the other way is open"
        );
        dev.close_output(&*region, 0).unwrap();
        dev.flush(&*region).unwrap();
        settle(&region, &mut drv, &mut dev);
        assert!(drv.peer_ended(&*region, 0).unwrap());
        assert!(drv.all_taken(&*region).unwrap() && dev.all_taken(&*region).unwrap());
    }
}

#[test]
fn the_zephyr_samples_profile_runs_between_ivlink_sides() {
    let region = HeapRegion::new(0x200000);
    let layout = ConsoleLayout::hvl_zephyr(region.len(), 0xafa0_0000).unwrap();
    let mut dev = device(&region, layout);
    let mut drv = driver(&region, layout);
    let seen = settle(&region, &mut drv, &mut dev);
    assert!(up(&seen.driver) && up(&seen.device), "{seen:?}");
    // What the sample's device prints for the queues.
    let q0 = dev.mmio().queue(0).unwrap();
    assert_eq!(
        (q0.desc, q0.driver, q0.device),
        (0xafb0_1000, 0xafb0_1040, 0xafb0_2000)
    );
    let line =
        b"[8010]: Hello World I'm qemu_cortex_a53 sending data over Virtio-MMIO Serial Port\n";
    assert_eq!(carry(&region, &mut drv, &mut dev, line, true), line);
    assert!(
        drv.close_output(&*region, 0).is_err(),
        "the sample cannot end a port"
    );
}

#[test]
fn a_driver_that_places_a_queue_outside_the_vring_area_is_refused() {
    let (region, layout) = native(shape());
    let mut dev = device(&region, layout);
    // A driver whose layout puts queue 1 over the buffer pool.
    let mut lying = layout;
    lying.vring_area = (0, region.len());
    let pool_ring = Vring::new(
        layout.pool.offset,
        layout.queues()[1].layout(),
        region.len(),
    )
    .unwrap();
    let mut drv = DriverSession::new(&*region, with_queue(lying, 1, pool_ring), 0).unwrap();
    let mut failed = false;
    for _ in 0..1000 {
        let _ = drv.poll(&*region);
        if let Some(SessionEvent::DriverFailed(_)) = dev.poll(&*region).unwrap().event {
            failed = true;
        }
    }
    assert!(failed);
    assert!(!dev.is_up() && !drv.is_up());
}

fn with_queue(mut layout: ConsoleLayout, index: usize, ring: Vring) -> ConsoleLayout {
    layout.queues[index] = ring;
    layout
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 48 }, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a hostile peer writes over the section while both sides run,
    /// neither panics and every call returns.
    #[cfg_attr(miri, ignore)]
    #[test]
    fn hostile_bytes_in_the_section_never_panic(
        writes in proptest::collection::vec((0usize..16384, any::<u8>()), 1..64),
    ) {
        let (region, layout) = native(NativeShape { ports: 2, num: 8, buf_size: 256 });
        let mut dev = device(&region, layout);
        let mut drv = driver(&region, layout);
        let mut buf = [0u8; 256];
        for (at, byte) in writes {
            region.store_u8(4096 + at % layout.pool.offset, byte, Ordering::Relaxed).unwrap();
            for _ in 0..8 {
                let _ = drv.poll(&*region);
                let _ = dev.poll(&*region);
                let _ = drv.write(&*region, 0, &buf[..100]);
                let _ = dev.write(&*region, 1, &buf[..50]);
                let _ = drv.flush(&*region);
                let _ = dev.flush(&*region);
                let _ = drv.read(&*region, 1, &mut buf);
                let _ = dev.read(&*region, 0, &mut buf);
            }
        }
    }
}

#[test]
fn the_samples_block_holds_its_values() {
    let region = HeapRegion::new(0x200000);
    let layout = ConsoleLayout::hvl_zephyr(region.len(), 0xafa0_0000).unwrap();
    let _dev = device(&region, layout);
    let word = |at: usize| region.load_u32(at, Ordering::Relaxed).unwrap();
    assert_eq!(word(0x000), 0x7472_6976, "MagicValue");
    assert_eq!(word(0x004), 1, "Version");
    assert_eq!(word(0x008), 3, "DeviceID");
    assert_eq!(word(0x040), 0, "QueuePFN");
    assert_eq!(word(0x0b8), 0xafa0_0000, "SHMBaseLow");
    assert_eq!(word(0x0b0), hvl::SHM_LEN, "SHMLenLow");
    let _ = Le32::at(0);
}

#[test]
fn the_devices_port_names_reach_the_driver_again_after_a_restart() {
    let shape = NativeShape {
        ports: 3,
        ..shape()
    };
    let (region, layout) = native(shape);
    let mut dev = device(&region, layout);
    dev.set_port_name(0, "console").unwrap();
    dev.set_port_name(2, "log").unwrap();
    assert!(dev.set_port_name(3, "data").is_err(), "no port 3");
    assert!(dev.set_port_name(1, &"x".repeat(57)).is_err(), "too long");
    assert_eq!(dev.port_named("log"), Some(2));
    assert_eq!(dev.port_named(""), None, "port 1 has no name");
    for _restart in 0..2 {
        let mut drv = driver(&region, layout);
        assert!(!drv.names_known());
        settle(&region, &mut drv, &mut dev);
        assert!(drv.names_known());
        assert_eq!(drv.port_named("log"), Some(2));
        assert_eq!(drv.port_named("console"), Some(0));
        assert_eq!(drv.port_named("data"), None);
        assert_eq!(drv.port_named(""), None);
    }
}

#[test]
fn a_port_name_corrupted_in_the_region_makes_the_driver_start_over() {
    let shape = NativeShape {
        ports: 2,
        ..shape()
    };
    let (region, layout) = native(shape);
    let mut dev = device(&region, layout);
    let mut drv = driver(&region, layout);
    settle(&region, &mut drv, &mut dev);
    dev.set_port_name(1, "xyz").unwrap();
    dev.flush(&*region).unwrap();
    let pool = layout.pool.offset..region.len() - 3;
    let at = pool
        .into_iter()
        .find(|&at| {
            let mut b = [0u8; 3];
            region.read(at, &mut b).unwrap();
            &b == b"xyz"
        })
        .expect("the name is in a control buffer");
    region.write(at, &[0xff]).unwrap();
    let seen = settle(&region, &mut drv, &mut dev);
    assert!(
        seen.driver
            .iter()
            .any(|e| matches!(e, SessionEvent::PeerFault(ConsoleError::Corrupt(_)))),
        "{seen:?}"
    );
    // Negotiated again, the name arrives intact.
    assert!(up(&seen.driver), "{seen:?}");
    assert_eq!(drv.port_named("xyz"), Some(1));
}
