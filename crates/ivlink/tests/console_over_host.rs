//! Virtio consoles between two host peers of a real server: megabytes each way
//! in either start order, end of stream, a restarted side, a second driver.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use ivlink::console::{Console, ConsoleFailure, ConsoleOptions, ConsoleRole, Notice, Profile};
use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(20);

fn server(dir: &tempfile::TempDir, size: u64) -> ServerThread {
    ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size,
        vectors: 1,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn peer(server: &ServerThread) -> HostPeer {
    HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap()
}

fn options(role: ConsoleRole) -> ConsoleOptions {
    ConsoleOptions {
        absence_timeout: Some(TIMEOUT),
        ..ConsoleOptions::new(Profile::Native, role)
    }
}

fn open<'d>(device: &'d HostPeer, role: ConsoleRole) -> Console<'d> {
    let mut console = Console::open(device, &options(role)).unwrap();
    console.set_timeout(Some(TIMEOUT));
    console
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect()
}

/// Sends `out` and reads until end of file on both halves of `console`.
fn exchange(console: Console<'_>, out: &[u8]) -> Vec<u8> {
    let (mut rx, mut tx) = console.split();
    std::thread::scope(|scope| {
        let sender = scope.spawn(move || {
            for chunk in out.chunks(50_000) {
                tx.write_all(chunk).unwrap();
            }
            use ivlink::relay::PortWrite;
            assert!(tx.wait_taken(TIMEOUT).unwrap(), "every byte taken");
            tx.close().unwrap();
        });
        let mut got = Vec::new();
        rx.read_to_end(&mut got).unwrap();
        sender.join().unwrap();
        got
    })
}

#[test]
fn megabytes_each_way_in_either_start_order() {
    for driver_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let server = server(&dir, 4 << 20);
        let (a, b) = (peer(&server), peer(&server));
        let (to_device, to_driver) = (pattern(3 << 20, 1), pattern(2 << 20, 2));
        let (driver_got, device_got) = std::thread::scope(|scope| {
            let (first, second) = if driver_first {
                (ConsoleRole::Driver, ConsoleRole::Device)
            } else {
                (ConsoleRole::Device, ConsoleRole::Driver)
            };
            let c1 = open(&a, first);
            let c2 = open(&b, second);
            let data = |role| {
                if role == ConsoleRole::Driver {
                    &to_device
                } else {
                    &to_driver
                }
            };
            let out1 = data(first);
            let t1 = scope.spawn(move || exchange(c1, out1));
            let got2 = exchange(c2, data(second));
            let got1 = t1.join().unwrap();
            if driver_first {
                (got1, got2)
            } else {
                (got2, got1)
            }
        });
        assert!(
            driver_got == to_driver,
            "driver got {} bytes",
            driver_got.len()
        );
        assert!(
            device_got == to_device,
            "device got {} bytes",
            device_got.len()
        );
    }
}

/// Drives both consoles until both are up (each side negotiates inside its own
/// calls, so both must run).
fn both_up(one: &Console<'_>, other: &Console<'_>) {
    std::thread::scope(|scope| {
        let t = scope.spawn(|| one.wait_up(TIMEOUT));
        other.wait_up(TIMEOUT).unwrap();
        t.join().unwrap().unwrap();
    });
}

#[test]
fn the_device_reports_the_drivers_setup_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20);
    let (a, b) = (peer(&server), peer(&server));
    let device = open(&a, ConsoleRole::Device);
    let (tx, rx) = std::sync::mpsc::channel();
    device.set_observer(Box::new(move |notice: &Notice| {
        let _ = tx.send(notice.to_string());
    }));
    let driver = open(&b, ConsoleRole::Driver);
    both_up(&driver, &device);
    let dump = rx.recv_timeout(TIMEOUT).unwrap();
    assert!(
        dump.contains("VIRTIO_MMIO_MAGIC_VALUE: 0x74726976"),
        "{dump}"
    );
    assert!(dump.contains("VIRTIO_MMIO_VERSION: 0x2"), "{dump}");
    assert!(dump.contains("VIRTIO_MMIO_DEVICE_ID: 0x3"), "{dump}");
    assert_eq!(
        dump.matches("Dump of incoming Vring information").count(),
        2
    );
    assert!(dump.ends_with("Config Status DRIVER_OK"), "{dump}");
}

#[test]
fn a_second_driver_is_refused_while_the_first_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20);
    let (a, b, c) = (peer(&server), peer(&server), peer(&server));
    let device = open(&a, ConsoleRole::Device);
    let driver = open(&b, ConsoleRole::Driver);
    both_up(&driver, &device);
    let Err(e) = Console::open(&c, &options(ConsoleRole::Driver)) else {
        panic!("a second driver opened");
    };
    assert!(matches!(e, ConsoleFailure::Taken { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "console \"console\" already has a driver (peer {}); stop it first",
            b.id()
        )
    );
    // The first pair still works.
    let (mut device, mut driver) = (device, driver);
    std::thread::scope(|scope| {
        scope.spawn(|| driver.write_all(b"still here").unwrap());
        let mut buf = [0u8; 10];
        device.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still here");
    });
}

#[test]
fn a_restarted_driver_resumes_and_the_device_counts_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20);
    let a = peer(&server);
    let mut device = open(&a, ConsoleRole::Device);
    let (gone_tx, gone_rx) = std::sync::mpsc::channel();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let device = &mut device;
        scope.spawn(move || {
            let mut buf = [0u8; 6];
            device.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"before");
            // Bytes to a driver that leaves without reading them.
            device.write_all(&[7; 1000]).unwrap();
            sent_tx.send(()).unwrap();
            gone_rx.recv().unwrap();
            let mut buf = [0u8; 5];
            device.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"after");
            assert_eq!(device.lost(), 1000);
            device.write_all(b"welcome back").unwrap();
        });
        {
            let b = peer(&server);
            let mut driver = open(&b, ConsoleRole::Driver);
            driver.write_all(b"before").unwrap();
            // Keep the first driver's session served until the device wrote.
            while sent_rx.try_recv().is_err() {
                driver.wait_up(TIMEOUT).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        gone_tx.send(()).unwrap();
        let c = peer(&server);
        let mut driver = open(&c, ConsoleRole::Driver);
        driver.write_all(b"after").unwrap();
        let mut buf = [0u8; 12];
        driver.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"welcome back");
    });
}

#[test]
fn a_side_that_never_comes_is_reported_once_the_absence_timeout_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1 << 20);
    let a = peer(&server);
    let mut console = Console::open(
        &a,
        &ConsoleOptions {
            absence_timeout: Some(Duration::from_millis(300)),
            ..ConsoleOptions::new(Profile::Native, ConsoleRole::Driver)
        },
    )
    .unwrap();
    let err = console.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    assert!(err.to_string().contains("device did not come"), "{err}");
}
