//! Awaiting a host peer's doorbell on a tokio reactor (feature `tokio`).
#![cfg(feature = "tokio")]

use std::time::Duration;

use ivlink::async_wait::AsyncDevice;
use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, Event, Notify, ServerConfig, WaitFor};

#[test]
fn a_doorbell_wakes_an_awaiting_task_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        vectors: 2,
        ..ServerConfig::default()
    })
    .unwrap();
    let sender = HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap();
    let receiver = HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let device = AsyncDevice::new(&receiver).unwrap();
        // Nothing rang: the wait does not finish.
        let quiet =
            tokio::time::timeout(Duration::from_millis(100), device.wait(WaitFor::vector(1))).await;
        assert!(quiet.is_err(), "woke without a doorbell: {quiet:?}");
        // A ring on another vector stays pending; ours wakes the task.
        let ring = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sender.notify(receiver.id(), 0).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            sender.notify(receiver.id(), 1).unwrap();
        };
        let (event, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), device.wait(WaitFor::vector(1))),
            ring
        );
        assert_eq!(
            event.unwrap().unwrap(),
            Event::Notified {
                vector: 1,
                count: 1
            }
        );
        let pending = device
            .device()
            .wait(WaitFor::vector(0), Some(Duration::ZERO));
        assert_eq!(
            pending.unwrap(),
            Some(Event::Notified {
                vector: 0,
                count: 1
            })
        );
    });
}

#[test]
fn a_device_without_a_wait_fd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = ivlink::FilePeer::create(&dir.path().join("region"), 4096, 0).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let err = AsyncDevice::new(&file).err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    });
}
