//! Both sides over one region: the handshakes in every interleaving, hostile
//! blocks, and OpenAMP's hypervisor-less driver (in `tests/hvl.rs`).

use core::sync::atomic::Ordering;

use alloc::vec::Vec;
use proptest::prelude::*;

use super::registers::*;
use super::*;
use crate::region::{HeapRegion, Le32, RawRegion, Region};
use crate::virtio::features::{VERSION_1, bit};
use crate::virtio::id::CONSOLE;
use crate::virtio::status::{DRIVER_OK, NEEDS_RESET};

mod hostile;
mod hvl;
mod watched;

use watched::Watched;

const REQUEST: usize = 0x200;
const ACK: usize = 0x240;
const SEQ: Handshake = Handshake::Sequenced {
    request: REQUEST,
    ack: ACK,
};
const REGION_LEN: usize = 0x1000;
/// Enough steps for the longest handshake (four queues) with every side idle half
/// the time.
const MAX_STEPS: usize = 400;
const CASES: u32 = if cfg!(miri) { 4 } else { 128 };

fn block() -> MmioBlock {
    MmioBlock::new(0).unwrap()
}

/// Queue `index` of `num` entries: contiguous for legacy, three scattered parts for
/// modern.
fn setup(version: u32, index: usize, num: u16) -> QueueSetup {
    let desc = 0x10_0000 * (index as u64 + 1);
    if version == VERSION_LEGACY {
        QueueSetup::contiguous(desc, VringLayout::new(num, 4096).unwrap())
    } else {
        QueueSetup {
            num,
            desc,
            driver: desc + 0x4000,
            device: desc + 0x8000,
        }
    }
}

fn device_config(version: u32, features: u64, num_max: &[u16]) -> DeviceConfig<'_> {
    DeviceConfig {
        device_id: CONSOLE,
        vendor_id: 0x1af4,
        version,
        features,
        queue_num_max: num_max,
        shm: None,
        config_size: 12,
    }
}

fn driver_config(version: u32, features: u64, queues: &[QueueSetup]) -> DriverConfig<'_> {
    DriverConfig {
        device_id: CONSOLE,
        version: Some(version),
        features,
        queues,
        legacy_align: 4096,
    }
}

/// A device and a driver over one region, run one step at a time.
struct Pair {
    device: MmioDevice,
    driver: MmioDriver,
    published: bool,
    /// Whether each side has a doorbell pending from the other.
    device_rung: bool,
    driver_rung: bool,
    events: Vec<DeviceEvent>,
    driver_result: Option<Result<Step, MmioError>>,
}

impl Pair {
    fn new(device: MmioDevice, driver: MmioDriver) -> Self {
        Pair {
            device,
            driver,
            published: false,
            device_rung: false,
            driver_rung: false,
            events: Vec::new(),
            driver_result: None,
        }
    }

    fn device_turn<R: Region + ?Sized>(&mut self, region: &R) {
        self.device_rung = false;
        if !self.published {
            self.published = true;
            self.driver_rung |= self.device.publish(region, &[]).unwrap();
            return;
        }
        let poll = self.device.poll(region).unwrap();
        self.driver_rung |= poll.ring;
        self.events.extend(poll.event);
    }

    fn driver_turn<R: Region + ?Sized>(&mut self, region: &R) {
        self.driver_rung = false;
        let result = self.driver.step(region);
        if result == Ok(Step::Ring) {
            self.device_rung = true;
        }
        self.driver_result = Some(result);
    }

    /// Runs the sides in the order `schedule` says (true: the device), then
    /// alternately; every side runs whether or not it was rung (spurious wakes).
    /// Returns the steps taken until both are idle with the driver done, if they got
    /// there.
    fn run<R: Region + ?Sized>(&mut self, region: &R, schedule: &[bool]) -> Option<usize> {
        self.run_seen_as(region, region, schedule)
    }

    /// [`run`](Self::run), with the driver seeing the region as `driver_view`.
    fn run_seen_as<R: Region + ?Sized, V: Region + ?Sized>(
        &mut self,
        region: &R,
        driver_view: &V,
        schedule: &[bool],
    ) -> Option<usize> {
        self.driver_result = None;
        for i in 0..MAX_STEPS {
            if schedule.get(i).copied().unwrap_or(i % 2 == 0) {
                self.device_turn(region);
            } else {
                self.driver_turn(driver_view);
            }
            if let Some(Err(_)) = self.driver_result {
                return None;
            }
            if self.published && self.driver_result == Some(Ok(Step::Done)) && !self.device_rung {
                let poll = self.device.poll(region).unwrap();
                self.driver_rung |= poll.ring;
                match poll.event {
                    Some(event) => self.events.push(event),
                    None if !poll.ring => return Some(i),
                    None => {}
                }
            }
        }
        None
    }
}

fn pair(version: u32, offered: u64, wanted: u64, nums: &[u16]) -> Pair {
    let max: Vec<u16> = nums.iter().map(|&n| n.max(16)).collect();
    let setups: Vec<QueueSetup> = nums
        .iter()
        .enumerate()
        .map(|(i, &n)| setup(version, i, n))
        .collect();
    let device = MmioDevice::new(block(), SEQ, &device_config(version, offered, &max)).unwrap();
    let driver = MmioDriver::new(block(), SEQ, &driver_config(version, wanted, &setups)).unwrap();
    Pair::new(device, driver)
}

fn check_agreement(pair: &Pair, version: u32, offered: u64, wanted: u64, nums: &[u16]) {
    let expected = if version == VERSION_MODERN {
        offered & wanted | bit(VERSION_1)
    } else {
        offered & wanted
    };
    assert_eq!(pair.driver.features(), Some(expected));
    assert_eq!(pair.device.features(), Some(expected));
    assert!(pair.device.is_driver_ok());
    for (i, &num) in nums.iter().enumerate() {
        let queue = pair.device.queue(i).expect("queue configured");
        assert_eq!(Some(queue), pair.driver.queue(i));
        let s = setup(version, i, num);
        assert_eq!(
            (queue.num, queue.desc, queue.driver, queue.device),
            (s.num, s.desc, s.driver, s.device)
        );
    }
    assert_eq!(pair.device.queue(nums.len()), None);
    assert_eq!(pair.events.last(), Some(&DeviceEvent::DriverOk));
    assert!(
        !pair.events.iter().any(|e| matches!(
            e,
            DeviceEvent::Failed(_) | DeviceEvent::FeaturesRefused { .. }
        )),
        "{:?}",
        pair.events
    );
}

#[test]
fn modern_handshake_negotiates_features_and_queues() {
    let region = HeapRegion::new(REGION_LEN);
    let watched = Watched::new(&region);
    let offered = bit(VERSION_1) | 0b111;
    let mut p = pair(VERSION_MODERN, offered, 0b101 | 1 << 40, &[16, 16, 4]);
    let steps = p
        .run_seen_as(&*region, &watched, &[true])
        .expect("handshake finishes");
    check_agreement(&p, VERSION_MODERN, offered, 0b101, &[16, 16, 4]);
    assert_eq!(watched.early_reads.get(), 0);
    assert!(steps < MAX_STEPS);
    assert_eq!(
        p.events[..2],
        [DeviceEvent::Status(1), DeviceEvent::Status(3)],
        "reset of a fresh device reports nothing"
    );
    assert!(
        p.events
            .contains(&DeviceEvent::FeaturesAccepted(0b101 | bit(VERSION_1)))
    );
    assert_eq!(p.device.queue(2).unwrap().contiguous(), None);
}

#[test]
fn legacy_handshake_over_the_sequenced_words() {
    let region = HeapRegion::new(REGION_LEN);
    let watched = Watched::new(&region);
    let mut p = pair(VERSION_LEGACY, 0b11, 0b10, &[4, 4]);
    p.run_seen_as(&*region, &watched, &[])
        .expect("handshake finishes");
    check_agreement(&p, VERSION_LEGACY, 0b11, 0b10, &[4, 4]);
    assert_eq!(watched.early_reads.get(), 0);
    let queue = p.device.queue(1).unwrap();
    assert_eq!(queue.align, Some(4096));
    assert_eq!(
        queue.contiguous(),
        Some((0x20_0000, VringLayout::new(4, 4096).unwrap()))
    );
    assert_eq!(
        block().load(&*region, QUEUE_PFN).unwrap(),
        0x200,
        "the PFN reads back while in use"
    );
}

#[test]
fn queues_laid_out_contiguously_are_recognised() {
    let layout = VringLayout::new(16, 64).unwrap();
    let s = QueueSetup::contiguous(0x4000, layout);
    let modern = QueueConfig {
        index: 0,
        num: s.num,
        desc: s.desc,
        driver: s.driver,
        device: s.device,
        align: None,
    };
    // The smallest alignment that puts the used ring there (32 does, like 64).
    let (base, found) = modern.contiguous().unwrap();
    assert_eq!((base, found.align()), (0x4000, 32));
    assert_eq!(
        (found.used_offset(), found.size()),
        (layout.used_offset(), layout.size())
    );
    let legacy = QueueConfig {
        align: Some(4096),
        ..modern
    };
    assert_eq!(
        legacy.contiguous(),
        None,
        "used ring not where QueueAlign puts it"
    );
    let overflowing = QueueConfig {
        desc: u64::MAX - 8,
        ..modern
    };
    assert_eq!(overflowing.contiguous(), None);
}

#[test]
fn driver_first_waits_for_the_device() {
    let region = HeapRegion::new(REGION_LEN);
    let mut p = pair(VERSION_MODERN, bit(VERSION_1), 0, &[8, 8]);
    for _ in 0..3 {
        p.driver_turn(&*region);
        assert_eq!(p.driver_result, Some(Ok(Step::Wait)));
    }
    p.run(&*region, &[]).expect("handshake finishes");
    check_agreement(&p, VERSION_MODERN, bit(VERSION_1), 0, &[8, 8]);
}

#[test]
fn either_side_restarts_and_the_handshake_runs_again() {
    let region = HeapRegion::new(REGION_LEN);
    let r = &*region;
    let offered = bit(VERSION_1) | 1;
    let mut p = pair(VERSION_MODERN, offered, 1, &[16, 16]);
    p.run(r, &[true]).unwrap();

    // A new driver process: the device sees the reset and the new queues.
    let fresh = pair(VERSION_MODERN, offered, 1, &[16, 16]);
    p.driver = fresh.driver;
    p.events.clear();
    p.run(r, &[]).expect("second driver finishes");
    assert_eq!(p.events[0], DeviceEvent::Reset);
    check_agreement(&p, VERSION_MODERN, offered, 1, &[16, 16]);

    // A new device process: the running driver is told to reset, and does.
    p.device = pair(VERSION_MODERN, offered, 1, &[16, 16]).device;
    assert!(p.device.publish(r, &[]).unwrap(), "the driver is rung");
    assert!(p.driver.device_needs_reset(r).unwrap());
    assert_ne!(
        p.driver.interrupt_status(r).unwrap() & INTERRUPT_CONFIG_CHANGE,
        0
    );
    p.driver.reset();
    p.events.clear();
    p.run(r, &[])
        .expect("handshake with the new device finishes");
    assert_eq!(p.events[0], DeviceEvent::Reset);
    check_agreement(&p, VERSION_MODERN, offered, 1, &[16, 16]);
    assert!(!p.driver.device_needs_reset(r).unwrap());
}

#[test]
fn config_space_reads_are_consistent_and_bounded() {
    let region = HeapRegion::new(REGION_LEN);
    let r = &*region;
    let mut p = pair(VERSION_MODERN, bit(VERSION_1), 0, &[4]);
    p.device.publish(r, &[80, 0, 24, 0]).unwrap();
    p.published = true;
    let mut buf = [0u8; 4];
    p.driver.read_config(r, 0, &mut buf).unwrap();
    assert_eq!(buf, [80, 0, 24, 0]);
    assert!(
        !p.device.write_config(r, 0, &[100, 0]).unwrap(),
        "no driver yet"
    );
    p.run(r, &[]).unwrap();
    let before = block().config_generation(r).unwrap();
    assert!(
        p.device.write_config(r, 2, &[30, 0]).unwrap(),
        "resize interrupts"
    );
    assert_eq!(block().config_generation(r).unwrap(), before + 2);
    assert_eq!(before % 2, 0);
    p.driver.read_config(r, 0, &mut buf).unwrap();
    assert_eq!(buf, [100, 0, 30, 0]);
    assert_eq!(
        p.driver.interrupt_status(r).unwrap(),
        INTERRUPT_CONFIG_CHANGE
    );

    // The driver's own field (emerg_wr) reaches the device.
    p.driver.write_config(r, 8, b"x\0\0\0").unwrap();
    p.device.read_config(r, 8, &mut buf).unwrap();
    assert_eq!(&buf, b"x\0\0\0");

    assert_eq!(
        p.device.write_config(r, 10, &[0; 4]),
        Err(MmioError::ConfigRange { offset: 10, len: 4 })
    );
    assert!(p.driver.read_config(r, 0xfe, &mut buf).is_err());
    assert!(p.driver.read_config(r, usize::MAX, &mut buf).is_err());

    // A device stuck in the middle of a write: the read gives up, bounded.
    block().store(r, CONFIG_GENERATION, 7).unwrap();
    assert_eq!(
        p.driver.read_config(r, 0, &mut buf),
        Err(MmioError::ConfigUnstable)
    );
}

#[test]
fn interrupt_bits_live_in_the_region() {
    let region = HeapRegion::new(REGION_LEN);
    let r = &*region;
    let mut p = pair(VERSION_MODERN, bit(VERSION_1), 0, &[4]);
    p.run(r, &[true]).unwrap();
    assert!(p.device.raise_interrupt(r, INTERRUPT_USED_BUFFER).unwrap());
    assert!(
        !p.device.raise_interrupt(r, INTERRUPT_USED_BUFFER).unwrap(),
        "the driver has yet to look"
    );
    assert_eq!(p.driver.interrupt_status(r).unwrap(), INTERRUPT_USED_BUFFER);
    assert!(!p.driver.ack_interrupt(r, INTERRUPT_USED_BUFFER).unwrap());
    assert_eq!(p.driver.interrupt_status(r).unwrap(), 0);
    assert!(p.device.raise_interrupt(r, INTERRUPT_USED_BUFFER).unwrap());

    p.driver.notify(r, 0).unwrap();
    assert_eq!(block().load(r, QUEUE_NOTIFY).unwrap(), 0);
    assert_eq!(p.driver.notify(r, 1), Err(MmioError::BadQueueIndex(1)));
}

#[test]
fn configurations_that_cannot_work_are_refused() {
    let max = [16u16];
    let bad = |version, features, num_max: &[u16], handshake| {
        MmioDevice::new(
            block(),
            handshake,
            &device_config(version, features, num_max),
        )
        .is_err()
    };
    assert!(bad(2, 0, &max, SEQ), "modern without VERSION_1");
    assert!(
        bad(1, bit(VERSION_1), &max, SEQ),
        "legacy with 64-bit features"
    );
    assert!(bad(3, 0, &max, SEQ));
    assert!(bad(1, 0, &[12], SEQ));
    assert!(bad(1, 0, &[2048], SEQ));
    assert!(bad(1, 0, &[4; MAX_QUEUES + 1], SEQ));
    assert!(bad(1, 0, &max, Handshake::OpenampHvl), "HVL without SHM");
    assert!(bad(2, bit(VERSION_1), &max, Handshake::OpenampHvl));
    assert!(bad(
        1,
        0,
        &max,
        Handshake::Sequenced {
            request: 0x10,
            ack: 0x300
        }
    ));
    assert!(bad(
        1,
        0,
        &max,
        Handshake::Sequenced {
            request: 0x300,
            ack: 0x300
        }
    ));
    assert!(bad(
        1,
        0,
        &max,
        Handshake::Sequenced {
            request: 0x302,
            ack: 0x300
        }
    ));
    assert!(MmioBlock::new(2).is_err());
    let region = HeapRegion::new(REGION_LEN);
    let mut unpublished = MmioDevice::new(block(), SEQ, &device_config(1, 0, &max)).unwrap();
    assert!(unpublished.poll(&*region).is_err(), "poll before publish");

    let driver = |version, queues: &[QueueSetup]| {
        MmioDriver::new(block(), SEQ, &driver_config(version, 0, queues))
    };
    let odd = QueueSetup {
        num: 6,
        ..setup(2, 0, 4)
    };
    assert!(driver(2, &[odd]).is_err());
    let misaligned = QueueSetup {
        desc: 8,
        ..setup(2, 0, 4)
    };
    assert!(driver(2, &[misaligned]).is_err());
    assert!(driver(2, &[setup(2, 0, 4); MAX_QUEUES + 1]).is_err());

    // A modern layout handed to a legacy device: refused once the version is known.
    let region = HeapRegion::new(REGION_LEN);
    let r = &*region;
    let mut device = MmioDevice::new(block(), SEQ, &device_config(1, 0, &max)).unwrap();
    device.publish(r, &[]).unwrap();
    let mut d = MmioDriver::new(
        block(),
        SEQ,
        &DriverConfig {
            version: None,
            ..driver_config(1, 0, &[setup(2, 0, 4)])
        },
    )
    .unwrap();
    assert!(matches!(d.step(r), Err(MmioError::Config(_))));
}

#[test]
fn errors_read_as_one_line() {
    let errors = [
        MmioError::BadMagic(1),
        MmioError::BadVersion(3),
        MmioError::NeedsReset,
        MmioError::BadAck { request: 4, ack: 9 },
        MmioError::QueueTooSmall {
            queue: 1,
            max: 2,
            wanted: 4,
        },
        MmioError::Region(RegionError::Misaligned {
            offset: 2,
            align: 4,
        }),
    ];
    for e in errors {
        let line = alloc::format!("{e}");
        assert!(!line.is_empty() && !line.contains('\n'), "{line}");
    }
    assert_eq!(
        alloc::format!(
            "{}",
            MmioError::WrongDevice {
                expected: 3,
                found: 7
            }
        ),
        "virtio device id 7, expected 3"
    );
}

fn features_strategy() -> impl Strategy<Value = (u32, u64, u64)> {
    (1u32..=2, any::<u64>(), any::<u64>()).prop_map(|(version, offered, wanted)| {
        if version == VERSION_LEGACY {
            (version, offered & u64::from(u32::MAX), wanted)
        } else {
            (version, offered | bit(VERSION_1), wanted)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whoever runs next, and however often a side runs without being rung, both
    /// finish with the same features and queues, and the driver never reads an
    /// answer before its ack.
    #[test]
    fn any_interleaving_agrees(
        (version, offered, wanted) in features_strategy(),
        shifts in proptest::collection::vec(0u32..5, 1..5),
        schedule in proptest::collection::vec(any::<bool>(), 0..120),
    ) {
        let nums: Vec<u16> = shifts.iter().map(|&s| 1 << s).collect();
        let region = HeapRegion::new(REGION_LEN);
        let watched = Watched::new(&region);
        let mut p = pair(version, offered, wanted, &nums);
        prop_assert!(p.run_seen_as(&*region, &watched, &schedule).is_some(), "stuck: {:?}", p.driver_result);
        check_agreement(&p, version, offered, wanted, &nums);
        prop_assert_eq!(watched.early_reads.get(), 0);
    }

    /// A peer scribbling over the block and the handshake words while both sides
    /// run: errors and resets, never a panic, and every call returns.
    #[test]
    fn random_writes_never_panic(
        version in 1u32..=2,
        hvl in any::<bool>(),
        ops in proptest::collection::vec((0u8..3, 0usize..(0x280 / 4), any::<u32>()), 1..150),
    ) {
        let region = HeapRegion::new(REGION_LEN);
        let r = &*region;
        let handshake = if hvl { Handshake::OpenampHvl } else { SEQ };
        let version = if hvl { VERSION_LEGACY } else { version };
        let features = if version == VERSION_MODERN { bit(VERSION_1) | 3 } else { 3 };
        let config = DeviceConfig {
            shm: Some(Shm { base: 0xafa0_0000, len: 0x200 }),
            ..device_config(version, features, &[4, 4])
        };
        let setups = [setup(version, 0, 4), setup(version, 1, 4)];
        let mut device = MmioDevice::new(block(), handshake, &config).unwrap();
        let mut driver = MmioDriver::new(block(), handshake, &driver_config(version, 1, &setups)).unwrap();
        device.publish(r, &[]).unwrap();
        for (side, word, value) in ops {
            match side {
                0 => {
                    if driver.step(r).is_err() {
                        driver.reset();
                    }
                }
                1 => {
                    let poll = device.poll(r);
                    prop_assert!(poll.is_ok(), "{:?}", poll);
                }
                _ => r.store_u32(word * 4, value, Ordering::Relaxed).unwrap(),
            }
        }
        let mut buf = [0u8; 8];
        let _ = driver.read_config(r, 0, &mut buf);
        let _ = driver.ack_interrupt(r, u32::MAX);
    }
}

#[test]
fn needs_reset_bit_and_driver_ok_are_the_virtio_ones() {
    assert_eq!(NEEDS_RESET, 0x40);
    assert_eq!(DRIVER_OK, 4);
    assert_eq!(BLOCK_SIZE, 0x200);
    assert_eq!(CONFIG_OFFSET, 0x100);
    assert_eq!(MAGIC.to_le_bytes(), *b"virt");
}
