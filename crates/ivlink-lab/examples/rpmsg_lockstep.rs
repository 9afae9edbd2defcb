//! Round trips in lock step on one thread, for instruction counts (callgrind
//! counts no spinning this way, so the figure per round trip is exact):
//!
//! ```text
//! rpmsg_lockstep rpmsg N [SIZE]   N RPMsg round trips between two host peers of an
//!                                 embedded server (a memfd region): the host sends,
//!                                 the remote echoes, the host receives, each through
//!                                 the calls `rpmsg bench` and `rpmsg echo` use
//! rpmsg_lockstep ring N [SIZE]    N round trips of the plain ring ping-pong that
//!                                 `rpmsg bench` reports as its reference
//! ```
//!
//! Instructions per round trip = (count at 2N - count at N) / N.

use std::time::Duration;

use ivlink::rpmsg::{LinkEvent, Profile, Role, RpmsgLink, RpmsgOptions};
use ivlink::server::{ServerConfig, ServerThread};
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink_lab::bench::memring::MemRing;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: rpmsg_lockstep rpmsg|ring N [SIZE]";
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let size: usize = args.get(3).map_or(64, |a| a.parse().expect(usage));
    match args.get(1).map(String::as_str) {
        Some("rpmsg") => rpmsg(n, size),
        Some("ring") => ring(n, size),
        _ => panic!("{usage}"),
    }
}

fn rpmsg(n: u64, size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(ServerConfig {
        socket_path: dir.path().join("ivshmem.sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        vectors: 1,
        ..ServerConfig::default()
    })
    .unwrap();
    let peer = || {
        HostPeer::connect(&HostConfig {
            socket_path: server.socket_path().to_owned(),
            vectors: Some(1),
            setup_timeout: Duration::from_secs(5),
        })
        .unwrap()
    };
    let (host_dev, remote_dev) = (peer(), peer());
    let mut host =
        RpmsgLink::open(&host_dev, &RpmsgOptions::new(Profile::Native, Role::Host)).unwrap();
    let mut remote = RpmsgLink::open(
        &remote_dev,
        &RpmsgOptions::new(Profile::Native, Role::Remote),
    )
    .unwrap();
    let host_ep = host.create_endpoint("echo", None, None).unwrap();
    let remote_ep = remote.create_endpoint("echo", None, None).unwrap();
    let mut bound = false;
    for _ in 0..10_000 {
        while remote.try_event().unwrap().is_some() {}
        while let Some(event) = host.try_event().unwrap() {
            bound |= matches!(event, LinkEvent::Bound { local, .. } if local == host_ep);
        }
        if bound {
            break;
        }
    }
    assert!(bound, "the link did not come up");
    // Both sides wait once, as they do between messages of a busy link: spin,
    // arm, sleep, disarm; so the doorbells stay quiet, as in the bench.
    for _ in 0..2 {
        assert!(
            host.next_event(Some(Duration::from_millis(2)))
                .unwrap()
                .is_none()
        );
        assert!(
            remote
                .next_event(Some(Duration::from_millis(2)))
                .unwrap()
                .is_none()
        );
    }
    let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let timeout = Some(Duration::from_secs(5));
    let mut echo = Vec::new();
    for _ in 0..n {
        host.send(host_ep, None, &data, timeout).unwrap();
        // The echo side, as `serve_echo` does it.
        let Some(LinkEvent::Message { src, .. }) = remote.try_event().unwrap() else {
            panic!("no message at the remote");
        };
        echo.clear();
        echo.extend_from_slice(remote.payload());
        remote.send(remote_ep, Some(src), &echo, timeout).unwrap();
        // The host side, as `HostSession::round_trip` does it.
        let Some(LinkEvent::Message { .. }) = host.try_event().unwrap() else {
            panic!("no echo at the host");
        };
        assert_eq!(host.payload(), &data[..]);
    }
}

fn ring(n: u64, size: usize) {
    let (ring, _fd) = MemRing::create(4096, 2).unwrap();
    let (mut ping, mut echo_rx) = (ring.producer(0), ring.consumer(0));
    let (mut echo_tx, mut pong) = (ring.producer(1), ring.consumer(1));
    let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut buf = vec![0u8; size];
    let mut back = vec![0u8; size];
    for _ in 0..n {
        assert!(ping.try_send(&data));
        ping.publish();
        let len = echo_rx.try_recv(&mut buf).unwrap();
        echo_rx.release();
        assert!(echo_tx.try_send(&buf[..len]));
        echo_tx.publish();
        let len = pong.try_recv(&mut back).unwrap();
        pong.release();
        assert!(len == size && back == data);
    }
}
