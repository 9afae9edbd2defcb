//! Hostile register blocks and hostile drivers: an error for the side that reads
//! them, never a panic.

use super::*;

const EVENT_SLOTS_IN_TESTS: usize = 8;

/// Alternates the sides, applying `after_device` after every device turn and
/// `after_driver` after every driver turn; returns the driver's last result.
fn run_tampered(
    p: &mut Pair,
    region: &RawRegion,
    mut after_device: impl FnMut(&RawRegion),
    mut after_driver: impl FnMut(&RawRegion),
) -> Result<Step, MmioError> {
    for _ in 0..MAX_STEPS {
        p.device_turn(region);
        after_device(region);
        p.driver_turn(region);
        after_driver(region);
        match p.driver_result {
            Some(Ok(Step::Done)) | Some(Err(_)) => break,
            _ => {}
        }
    }
    // Collect what the device still has to report.
    for _ in 0..EVENT_SLOTS_IN_TESTS {
        p.device_turn(region);
    }
    p.driver_result.unwrap()
}

fn published(version: u32) -> (HeapRegion, Pair) {
    let region = HeapRegion::new(REGION_LEN);
    let features = if version == VERSION_MODERN {
        bit(VERSION_1)
    } else {
        0
    };
    let mut p = pair(version, features, 0, &[4, 4]);
    p.device_turn(&*region);
    (region, p)
}

#[test]
fn a_block_that_is_not_a_device_is_refused() {
    for (reg, value, expected) in [
        (MAGIC_VALUE, 0x1234_5678, MmioError::BadMagic(0x1234_5678)),
        (VERSION, 3, MmioError::BadVersion(3)),
        (VERSION, 0, MmioError::BadVersion(0)),
        (
            DEVICE_ID,
            7,
            MmioError::WrongDevice {
                expected: CONSOLE,
                found: 7,
            },
        ),
    ] {
        let (region, mut p) = published(VERSION_MODERN);
        block().store(&*region, reg, value).unwrap();
        assert_eq!(p.driver.step(&*region), Err(expected));
        assert_eq!(p.driver.step(&*region), Err(expected), "stays failed");
    }
    let (region, mut p) = published(VERSION_MODERN);
    assert_eq!(p.driver.step(&*region), Ok(Step::Ring));
    let mut legacy_only =
        MmioDriver::new(block(), SEQ, &driver_config(VERSION_LEGACY, 0, &[])).unwrap();
    assert_eq!(
        legacy_only.step(&*region),
        Err(MmioError::BadVersion(VERSION_MODERN))
    );
    let small = HeapRegion::new(0x100);
    assert!(matches!(
        p.driver.clone().step(&*small),
        Err(MmioError::Region(_))
    ));
    assert!(matches!(
        p.device.publish(&*small, &[]),
        Err(MmioError::Region(_))
    ));
}

#[test]
fn queue_sizes_the_driver_cannot_use_are_refused() {
    for (version, value, expected) in [
        (2, 3, MmioError::BadQueueNumMax { queue: 0, value: 3 }),
        (
            1,
            2048,
            MmioError::BadQueueNumMax {
                queue: 0,
                value: 2048,
            },
        ),
        (
            2,
            u32::MAX,
            MmioError::BadQueueNumMax {
                queue: 0,
                value: u32::MAX,
            },
        ),
        (1, 0, MmioError::QueueAbsent(0)),
        (
            2,
            2,
            MmioError::QueueTooSmall {
                queue: 0,
                max: 2,
                wanted: 4,
            },
        ),
    ] {
        let (region, mut p) = published(version);
        let result = run_tampered(
            &mut p,
            &region,
            |r| block().store(r, QUEUE_NUM_MAX, value).unwrap(),
            |_| {},
        );
        assert_eq!(result, Err(expected));
    }
}

#[test]
fn a_queue_already_live_is_refused() {
    let (region, mut p) = published(VERSION_MODERN);
    let result = run_tampered(
        &mut p,
        &region,
        |r| {
            // The device answers that queue 1 is live already.
            if block().load(r, QUEUE_SEL).unwrap() == 1 {
                block().store(r, QUEUE_READY, 1).unwrap();
            }
        },
        |_| {},
    );
    assert_eq!(result, Err(MmioError::QueueRefused(1)));
}

#[test]
fn ack_words_that_name_no_request_are_refused() {
    // Garbage, an ack ahead of the driver, and an ack of a request never made.
    for offset in [0x8000_0000u32, 7, 1] {
        let (region, mut p) = published(VERSION_MODERN);
        let r = &*region;
        assert_eq!(p.driver.step(r), Ok(Step::Ring));
        let request = r.load_u32(REQUEST, Ordering::Relaxed).unwrap();
        r.store_u32(ACK, request.wrapping_add(offset), Ordering::Relaxed)
            .unwrap();
        assert!(
            matches!(p.driver.step(r), Err(MmioError::BadAck { .. })),
            "offset {offset}"
        );
    }
    // Before the first request.
    let (region, mut p) = published(VERSION_MODERN);
    region.store_u32(ACK, 5, Ordering::Relaxed).unwrap();
    assert_eq!(
        p.driver.step(&*region),
        Err(MmioError::BadAck { request: 0, ack: 5 })
    );
    // An earlier driver's request still outstanding is fine.
    let (region, mut p) = published(VERSION_MODERN);
    region.store_u32(REQUEST, 9, Ordering::Relaxed).unwrap();
    region.store_u32(ACK, 8, Ordering::Relaxed).unwrap();
    assert_eq!(p.driver.step(&*region), Ok(Step::Ring));
    assert_eq!(p.driver.step(&*region), Ok(Step::Wait));
    p.run(&*region, &[]).expect("the device acks both");
}

#[test]
fn a_driver_that_breaks_the_rules_gets_needs_reset_then_recovers() {
    type Expected = fn(&MmioError) -> bool;
    let cases: [(u32, Le32, u32, Expected); 4] = [
        (2, QUEUE_NUM, 3, |e| {
            matches!(e, MmioError::BadQueueNum { num: 3, .. })
        }),
        (1, QUEUE_NUM, 32, |e| {
            matches!(e, MmioError::BadQueueNum { num: 32, .. })
        }),
        (1, QUEUE_ALIGN, 3, |e| *e == MmioError::BadQueueLayout(0)),
        (2, QUEUE_DESC_LOW, 8, |e| *e == MmioError::BadQueueLayout(0)),
    ];
    for (version, reg, value, expected) in cases {
        let (region, mut p) = published(version);
        let r = &*region;
        let trigger = if version == VERSION_MODERN {
            QUEUE_READY
        } else {
            QUEUE_PFN
        };
        let result = run_tampered(
            &mut p,
            r,
            |_| {},
            |r| {
                if block().load(r, trigger).unwrap() != 0 {
                    block().store(r, reg, value).unwrap();
                }
            },
        );
        assert_eq!(result, Err(MmioError::NeedsReset));
        let failure = p.events.iter().find_map(|e| match e {
            DeviceEvent::Failed(e) => Some(*e),
            _ => None,
        });
        assert!(failure.as_ref().is_some_and(expected), "{failure:?}");
        assert!(p.device.needs_reset());
        assert_ne!(
            block().interrupt_status(r).unwrap() & INTERRUPT_CONFIG_CHANGE,
            0
        );

        p.driver.reset();
        p.events.clear();
        assert!(
            p.run(r, &[]).is_some(),
            "{:?} {:?}",
            p.driver_result,
            p.events
        );
        assert_eq!(p.events[0], DeviceEvent::Reset);
        assert!(p.device.is_driver_ok());
        assert_eq!(block().status(r).unwrap() & u32::from(NEEDS_RESET), 0);
    }
}

#[test]
fn features_the_device_does_not_offer_are_refused() {
    let (region, mut p) = published(VERSION_MODERN);
    let result = run_tampered(
        &mut p,
        &region,
        |_| {},
        |r| {
            if block().load(r, DRIVER_FEATURES_SEL).unwrap() == 0 {
                block().store(r, DRIVER_FEATURES, u32::MAX).unwrap();
            }
        },
    );
    assert!(
        matches!(result, Err(MmioError::FeaturesRefused { .. })),
        "{result:?} {:?}",
        p.events
    );
    assert!(p.events.iter().any(
        |e| matches!(e, DeviceEvent::FeaturesRefused { requested } if *requested as u32 == u32::MAX)
    ));
    assert_eq!(
        block().status(&*region).unwrap() & 8,
        0,
        "FEATURES_OK cleared"
    );

    // Legacy has no FEATURES_OK: the device refuses at DRIVER_OK.
    let (region, mut p) = published(VERSION_LEGACY);
    let result = run_tampered(
        &mut p,
        &region,
        |_| {},
        |r| block().store(r, DRIVER_FEATURES, 1 << 7).unwrap(),
    );
    assert_eq!(result, Err(MmioError::NeedsReset));
    assert!(
        p.events
            .contains(&DeviceEvent::Failed(MmioError::FeaturesRefused {
                requested: 1 << 7,
                offered: 0
            }))
    );
}

#[test]
fn status_bits_the_driver_drops_are_illegal() {
    let (region, mut p) = published(VERSION_MODERN);
    let r = &*region;
    p.run(r, &[]).unwrap();
    block().store(r, STATUS, 1).unwrap();
    r.store_u32(
        REQUEST,
        r.load_u32(REQUEST, Ordering::Relaxed).unwrap() + 1,
        Ordering::Relaxed,
    )
    .unwrap();
    let poll = p.device.poll(r).unwrap();
    assert!(poll.ring);
    assert_eq!(
        poll.event,
        Some(DeviceEvent::Failed(MmioError::IllegalStatus {
            from: 0xf,
            to: 1
        }))
    );
    assert!(p.driver.device_needs_reset(r).unwrap());
    assert!(!p.device.is_driver_ok());
}

#[test]
fn a_device_that_needs_a_reset_stops_the_driver() {
    let (region, mut p) = published(VERSION_MODERN);
    let r = &*region;
    for _ in 0..6 {
        p.driver_turn(r);
        p.device_turn(r);
    }
    assert!(p.device.set_needs_reset(r).unwrap());
    let result = run_tampered(&mut p, r, |_| {}, |_| {});
    assert_eq!(result, Err(MmioError::NeedsReset));
    assert!(!p.events.contains(&DeviceEvent::DriverOk));
}
