//! OpenAMP's hypervisor-less style: a script of exactly what the `virtio-exp`
//! driver writes, reads and rings (rpmsg-virtio.md 9.1) against [`MmioDevice`], the
//! seed's register block byte for byte, and ivlink's own driver in that style.

use super::*;

/// The seed's register block: the driver VM maps BAR2 here.
const BAR2: u64 = 0xafa0_0000;
/// The seed's vrings (4 entries, 4096-aligned) in the vring heap.
const VRINGS: [u64; 2] = [0xafb0_1000, 0xafb0_3000];

fn seed_config() -> DeviceConfig<'static> {
    DeviceConfig {
        device_id: CONSOLE,
        vendor_id: 0,
        version: VERSION_LEGACY,
        features: 0,
        queue_num_max: &[4, 4],
        shm: Some(Shm {
            base: BAR2,
            len: BLOCK_SIZE as u64,
        }),
        config_size: 0,
    }
}

fn seed_device() -> MmioDevice {
    MmioDevice::new(block(), Handshake::OpenampHvl, &seed_config()).unwrap()
}

#[test]
fn the_seed_block_byte_for_byte() {
    let region = HeapRegion::new(REGION_LEN);
    region.fill(0, REGION_LEN, 0xee).unwrap();
    let mut device = seed_device();
    assert!(!device.publish(&*region, &[]).unwrap());
    let mut expected = [0u8; CONFIG_OFFSET];
    let mut put =
        |offset: usize, bytes: [u8; 4]| expected[offset..offset + 4].copy_from_slice(&bytes);
    put(0x000, *b"virt"); // MagicValue 0x74726976
    put(0x004, [1, 0, 0, 0]); // Version 1 (legacy)
    put(0x008, [3, 0, 0, 0]); // DeviceID 3 (console)
    put(0x034, [4, 0, 0, 0]); // QueueNumMax 4
    put(0x0b0, [0x00, 0x02, 0, 0]); // SHMLenLow 0x200
    put(0x0b8, [0x00, 0x00, 0xa0, 0xaf]); // SHMBaseLow: the register block's address
    let mut block_bytes = [0u8; CONFIG_OFFSET];
    region.read(0, &mut block_bytes).unwrap();
    assert_eq!(block_bytes, expected, "QueuePFN (0x040) and the rest are 0");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The device runs on each doorbell.
    OnRing,
    /// The device also runs after every single register write.
    EveryWrite,
    /// Doorbells coalesce: the device runs only while the driver waits for an ack.
    WhileWaiting,
}

/// OpenAMP's `virtio-exp` driver: which registers it writes and reads, and where it
/// rings.
struct OpenampDriver<'a> {
    region: &'a RawRegion,
    device: MmioDevice,
    wake: Wake,
    events: Vec<DeviceEvent>,
    rung_back: u32,
}

/// Status bare (`virtio-exp`: 1, 2, 4) or cumulative with a reset first
/// (`v2025.04`); the queue index in `QueueSel` or, like the 2022 code, in
/// `DriverFeaturesSel`.
#[derive(Debug, Clone, Copy)]
struct Flavour {
    bare_status: bool,
    queue_index_at_0x024: bool,
}

impl OpenampDriver<'_> {
    fn write(&mut self, reg: Le32, value: u32) {
        block().store(self.region, reg, value).unwrap();
        if self.wake == Wake::EveryWrite {
            self.device_runs();
        }
    }

    fn read(&self, reg: Le32) -> u32 {
        block().load(self.region, reg).unwrap()
    }

    fn ring(&mut self) {
        if self.wake != Wake::WhileWaiting {
            self.device_runs();
        }
    }

    fn device_runs(&mut self) {
        for _ in 0..EVENT_BOUND {
            let poll = self.device.poll(self.region).unwrap();
            self.rung_back += u32::from(poll.ring);
            match poll.event {
                Some(event) => self.events.push(event),
                None => return,
            }
        }
        panic!("the device keeps reporting events: {:?}", self.events);
    }

    fn init(&mut self, flavour: Flavour) {
        assert_eq!(self.read(MAGIC_VALUE), MAGIC);
        assert_eq!(self.read(VERSION), 1);
        assert_eq!(self.read(DEVICE_ID), 3);
        let _vendor = self.read(VENDOR_ID);
        assert_ne!(self.read(SHM_LEN_LOW), 0, "HVL mode needs SHMLen");
        assert_ne!(self.read(SHM_BASE_LOW), 0, "and SHMBase");
        let status = |bit: u32, all: u32| if flavour.bare_status { bit } else { all };
        if !flavour.bare_status {
            self.write(STATUS, 0);
            self.ring();
        }
        self.write(STATUS, 1);
        self.ring();
        self.write(STATUS, status(2, 3));
        self.ring();
        // virtio_serial_drv.c asks for no features.
        let _offered = self.read(HOST_FEATURES);
        self.write(GUEST_FEATURES, 0);
        self.ring();
        self.write(GUEST_PAGE_SIZE, 4096);
        for (q, vring) in VRINGS.iter().enumerate() {
            let pfn = (vring / 4096) as u32;
            let sel = if flavour.queue_index_at_0x024 {
                DRIVER_FEATURES_SEL
            } else {
                QUEUE_SEL
            };
            self.write(sel, q as u32);
            assert!(self.read(QUEUE_NUM_MAX) >= 4);
            self.write(QUEUE_NUM, 4);
            self.write(QUEUE_ALIGN, 4096);
            let rung_back = self.rung_back;
            self.write(QUEUE_PFN, pfn);
            self.ring();
            // The platform's wait: bounded, woken by the device's doorbell.
            let acked = (0..3).any(|_| {
                if self.read(QUEUE_PFN) == HVL_PFN_ACK {
                    return true;
                }
                self.device_runs();
                false
            });
            assert!(acked, "queue {q} not acked: {:?}", self.events);
            assert!(self.rung_back > rung_back, "the ack rings back");
            self.write(QUEUE_PFN, pfn);
            if self.wake == Wake::OnRing {
                // A wake for some other reason: the rewrite is not a request.
                let poll = self.device.poll(self.region).unwrap();
                assert_eq!(poll, DevicePoll::default());
            }
        }
        self.write(STATUS, status(4, 7));
        self.ring();
        self.device_runs();
    }
}

const EVENT_BOUND: usize = 16;

fn seed_queue(q: usize) -> QueueConfig {
    QueueConfig {
        index: q as u16,
        num: 4,
        desc: VRINGS[q],
        driver: VRINGS[q] + 0x40,
        device: VRINGS[q] + 0x1000,
        align: Some(4096),
    }
}

fn check_session(events: &[DeviceEvent], device: &MmioDevice) {
    assert!(
        !events.iter().any(|e| matches!(e, DeviceEvent::Failed(_))),
        "{events:?}"
    );
    let queues: Vec<QueueConfig> = events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::QueueReady(q) => Some(*q),
            _ => None,
        })
        .collect();
    assert_eq!(
        queues,
        [seed_queue(0), seed_queue(1)],
        "the seed's vring dump"
    );
    assert_eq!(events.last(), Some(&DeviceEvent::DriverOk));
    assert!(events.contains(&DeviceEvent::FeaturesAccepted(0)));
    assert!(device.is_driver_ok());
    assert_eq!(device.features(), Some(0));
    assert_eq!(
        device.queue(0).unwrap().contiguous(),
        Some((VRINGS[0], VringLayout::new(4, 4096).unwrap()))
    );
}

#[test]
fn openamp_virtio_exp_driver_against_the_device() {
    for wake in [Wake::OnRing, Wake::EveryWrite, Wake::WhileWaiting] {
        for (bare_status, queue_index_at_0x024) in [(true, false), (false, false), (true, true)] {
            let flavour = Flavour {
                bare_status,
                queue_index_at_0x024,
            };
            let region = HeapRegion::new(REGION_LEN);
            let mut driver = OpenampDriver {
                region: &region,
                device: seed_device(),
                wake,
                events: Vec::new(),
                rung_back: 0,
            };
            driver.device.publish(&*region, &[]).unwrap();
            driver.init(flavour);
            check_session(&driver.events, &driver.device);

            // Data: a kick is no event; an interrupt is cleared by InterruptACK.
            driver.write(QUEUE_NOTIFY, 1);
            driver.ring();
            assert!(
                driver
                    .device
                    .raise_interrupt(&*region, INTERRUPT_USED_BUFFER)
                    .unwrap()
            );
            assert_eq!(driver.read(INTERRUPT_STATUS), INTERRUPT_USED_BUFFER);
            driver.write(INTERRUPT_ACK, INTERRUPT_USED_BUFFER);
            driver.ring();
            driver.device_runs();
            assert_eq!(driver.read(INTERRUPT_STATUS), 0, "{wake:?} {flavour:?}");

            // The driver starts over (a reboot of its VM): same vrings, new session.
            driver.events.clear();
            driver.init(flavour);
            assert_eq!(driver.events[0], DeviceEvent::Reset, "{wake:?} {flavour:?}");
            check_session(&driver.events, &driver.device);
        }
    }
}

#[test]
fn ivlink_driver_in_the_hypervisor_less_style() {
    let region = HeapRegion::new(REGION_LEN);
    let r = &*region;
    let layout = VringLayout::new(4, 4096).unwrap();
    let setups = [
        QueueSetup::contiguous(VRINGS[0], layout),
        QueueSetup::contiguous(VRINGS[1], layout),
    ];
    let driver = MmioDriver::new(
        block(),
        Handshake::OpenampHvl,
        &driver_config(VERSION_LEGACY, 0b1, &setups),
    )
    .unwrap();
    let mut p = Pair::new(seed_device(), driver);
    p.run(r, &[true]).expect("handshake finishes");
    check_session(&p.events, &p.device);
    assert_eq!(p.driver.queue(1), Some(seed_queue(1)));
    assert_eq!(p.driver.features(), Some(0));

    assert!(p.device.raise_interrupt(r, INTERRUPT_USED_BUFFER).unwrap());
    assert!(
        p.driver.ack_interrupt(r, INTERRUPT_USED_BUFFER).unwrap(),
        "InterruptACK rings"
    );
    assert_eq!(
        block().load(r, INTERRUPT_ACK).unwrap(),
        INTERRUPT_USED_BUFFER
    );
    assert_eq!(p.device.poll(r).unwrap(), DevicePoll::default());
    assert_eq!(block().load(r, INTERRUPT_ACK).unwrap(), 0, "consumed");

    let modern = MmioDriver::new(
        block(),
        Handshake::OpenampHvl,
        &driver_config(VERSION_MODERN, 0, &setups),
    );
    assert!(modern.is_err());
    let mut no_shm = MmioDriver::new(
        block(),
        Handshake::OpenampHvl,
        &driver_config(VERSION_LEGACY, 0, &setups),
    )
    .unwrap();
    block().store(r, SHM_LEN_LOW, 0).unwrap();
    assert_eq!(no_shm.step(r), Err(MmioError::NoSharedMemory));
}

#[test]
fn a_driver_that_starts_over_mid_init_is_served_again() {
    let region = HeapRegion::new(REGION_LEN);
    let mut driver = OpenampDriver {
        region: &region,
        device: seed_device(),
        wake: Wake::OnRing,
        events: Vec::new(),
        rung_back: 0,
    };
    driver.device.publish(&*region, &[]).unwrap();
    // Up to queue 0's ack, then the driver's VM reboots (bare status, no reset).
    driver.write(STATUS, 1);
    driver.ring();
    driver.write(STATUS, 2);
    driver.ring();
    driver.write(GUEST_PAGE_SIZE, 4096);
    driver.write(QUEUE_NUM, 4);
    driver.write(QUEUE_ALIGN, 4096);
    driver.write(QUEUE_PFN, (VRINGS[0] / 4096) as u32);
    driver.ring();
    assert_eq!(driver.read(QUEUE_PFN), HVL_PFN_ACK);
    driver.events.clear();
    driver.init(Flavour {
        bare_status: true,
        queue_index_at_0x024: false,
    });
    assert_eq!(driver.events[0], DeviceEvent::Reset);
    check_session(&driver.events, &driver.device);
}

#[test]
fn a_queue_the_device_cannot_take_gets_no_ack() {
    let region = HeapRegion::new(REGION_LEN);
    let mut driver = OpenampDriver {
        region: &region,
        device: seed_device(),
        wake: Wake::OnRing,
        events: Vec::new(),
        rung_back: 0,
    };
    driver.device.publish(&*region, &[]).unwrap();
    driver.write(STATUS, 1);
    driver.ring();
    driver.write(STATUS, 2);
    driver.ring();
    driver.write(GUEST_PAGE_SIZE, 4096);
    driver.write(QUEUE_SEL, 5);
    // Not rung since QueueSel: QueueNumMax still says 4 (why every queue should have
    // the same size in this style).
    assert_eq!(driver.read(QUEUE_NUM_MAX), 4);
    driver.write(QUEUE_NUM, 4);
    driver.write(QUEUE_ALIGN, 4096);
    driver.write(QUEUE_PFN, 0xafb01);
    driver.ring();
    assert_ne!(driver.read(QUEUE_PFN), HVL_PFN_ACK);
    assert!(
        driver
            .events
            .contains(&DeviceEvent::Failed(MmioError::BadQueueIndex(5)))
    );
    assert_ne!(driver.read(STATUS) & u32::from(NEEDS_RESET), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// ivlink's driver in OpenAMP's style, in any interleaving: the device sees
    /// coalesced views and still ends up with the same queues.
    #[test]
    fn hvl_any_interleaving_agrees(schedule in proptest::collection::vec(any::<bool>(), 0..80)) {
        let region = HeapRegion::new(REGION_LEN);
        let layout = VringLayout::new(4, 4096).unwrap();
        let setups = [
            QueueSetup::contiguous(VRINGS[0], layout),
            QueueSetup::contiguous(VRINGS[1], layout),
        ];
        let driver = MmioDriver::new(
            block(),
            Handshake::OpenampHvl,
            &driver_config(VERSION_LEGACY, 0, &setups),
        )
        .unwrap();
        let mut schedule = schedule;
        schedule.insert(0, true);
        let mut p = Pair::new(seed_device(), driver);
        prop_assert!(p.run(&*region, &schedule).is_some(), "{:?} {:?}", p.driver_result, p.events);
        check_session(&p.events, &p.device);
    }
}
