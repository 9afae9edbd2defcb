//! Three host peers flood each other through one channel: every message arrives
//! once, intact and in order per sender, and corruption cuts off only the
//! corrupted pair.

use std::time::Duration;

use ivlink::channel::{Channel, ChannelError};
use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::wait::SpinThenSleep;
use ivlink::{Device, Region, ServerConfig};
use ivlink_core::channel::{ChannelLayout, ChannelShape};

const OFFSET: usize = 1 << 16;
const SHAPE: ChannelShape = ChannelShape {
    max_members: 4,
    ring_capacity: 4096,
    vector: 1,
};
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

fn setup(
    peers: usize,
) -> (
    tempfile::TempDir,
    ServerThread,
    Vec<HostPeer>,
    ChannelLayout,
) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        vectors: 2,
        ..ServerConfig::default()
    })
    .unwrap();
    let devices: Vec<HostPeer> = (0..peers)
        .map(|_| HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap())
        .collect();
    let size = SHAPE.section_size().unwrap();
    let layout = ChannelLayout::create(devices[0].region(), OFFSET, size, SHAPE).unwrap();
    (dir, server, devices, layout)
}

fn message(from: u16, to: u16, seq: u32) -> Vec<u8> {
    let len = 8 + (seq as usize * 7) % 300;
    let mut m = vec![0u8; len];
    m[..2].copy_from_slice(&from.to_le_bytes());
    m[2..4].copy_from_slice(&to.to_le_bytes());
    m[4..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in m[8..].iter_mut().enumerate() {
        *b = (seq as usize ^ i ^ usize::from(from)) as u8;
    }
    m
}

#[test]
fn three_peers_flooding_each_other_lose_and_corrupt_nothing() {
    const EACH: u32 = 5_000;
    let (_dir, _server, devices, layout) = setup(3);
    let ids: Vec<u16> = devices.iter().map(|d| d.id()).collect();
    // Everyone joins before anyone sends.
    let endpoints: Vec<Channel<'_>> = devices
        .iter()
        .map(|d| Channel::join(d, layout, SpinThenSleep::default()).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for mut endpoint in endpoints {
            let ids = ids.clone();
            scope.spawn(move || {
                let me = ids[endpoint.slot() as usize];
                let others: Vec<u16> = ids.iter().copied().filter(|&p| p != me).collect();
                let mut next_expected = std::collections::BTreeMap::new();
                let mut received = 0u32;
                let mut buf = vec![0u8; 4096];
                let mut check = |from: u16, data: &[u8]| {
                    let seq = u32::from_le_bytes(data[4..8].try_into().unwrap());
                    let expected = next_expected.entry(from).or_insert(0u32);
                    assert_eq!(seq, *expected, "reordered or lost from {from}");
                    assert_eq!(data, &message(from, me, seq)[..], "corrupted from {from}");
                    *expected += 1;
                };
                for seq in 0..EACH {
                    for &to in &others {
                        let m = message(me, to, seq);
                        // Never block on a full ring while others wait on ours:
                        // publish, drain what came in, try again.
                        while !endpoint.try_send(to, &m).unwrap() {
                            endpoint.flush().unwrap();
                            match endpoint
                                .recv(&mut buf, Some(Duration::from_millis(1)))
                                .unwrap()
                            {
                                Some((from, len)) => {
                                    check(from, &buf[..len]);
                                    received += 1;
                                }
                                None => std::thread::yield_now(),
                            }
                        }
                    }
                    if seq % 8 == 7 {
                        endpoint.flush().unwrap();
                    }
                    while let Some((from, len)) = endpoint.try_recv(&mut buf).unwrap() {
                        check(from, &buf[..len]);
                        received += 1;
                    }
                }
                endpoint.flush().unwrap();
                while received < EACH * 2 {
                    let (from, len) = endpoint
                        .recv(&mut buf, TIMEOUT)
                        .unwrap()
                        .unwrap_or_else(|| panic!("peer {me}: nothing for 10 s after {received}"));
                    check(from, &buf[..len]);
                    received += 1;
                }
                endpoint.flush().unwrap();
                assert_eq!(received, EACH * 2);
            });
        }
    });
}

#[test]
fn a_corrupted_ring_cuts_off_only_its_peer() {
    let (_dir, _server, devices, layout) = setup(3);
    let (a, b, c) = (&devices[0], &devices[1], &devices[2]);
    let mut ea = Channel::join(a, layout, SpinThenSleep::default()).unwrap();
    let mut eb = Channel::join(b, layout, SpinThenSleep::default()).unwrap();
    let mut ec = Channel::join(c, layout, SpinThenSleep::default()).unwrap();
    eb.send(a.id(), b"from b", TIMEOUT).unwrap();
    eb.flush().unwrap();
    ec.send(a.id(), b"from c", TIMEOUT).unwrap();
    ec.flush().unwrap();
    // b's ring to a gets a hostile head index.
    let ring = layout.ring(eb.slot(), ea.slot()).unwrap();
    let head_at = {
        let s = ring.snapshot(a.region()).unwrap();
        assert_eq!(s.fill(), Some(16));
        // The head is the first word of the ring; find it by its value.
        (0..a.region().len() / 8)
            .map(|w| w * 8)
            .find(|&o| {
                o >= OFFSET
                    && a.region()
                        .load_u64(o, std::sync::atomic::Ordering::Relaxed)
                        .unwrap()
                        == s.head
            })
            .unwrap()
    };
    a.region()
        .store_u64(head_at, u64::MAX / 3, std::sync::atomic::Ordering::Relaxed)
        .unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..4 {
        match ea.try_recv(&mut buf) {
            Ok(Some((from, len))) => got.push((from, buf[..len].to_vec())),
            Ok(None) => {}
            Err(ChannelError::Corrupt { peer, .. }) => errors.push(peer),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        got,
        vec![(c.id(), b"from c".to_vec())],
        "c still gets through"
    );
    assert_eq!(errors, vec![b.id()], "the error names b, once");
    assert_eq!(ea.broken(), vec![b.id()]);
    // a can still talk to c both ways.
    ea.send(c.id(), b"still here", TIMEOUT).unwrap();
    ea.flush().unwrap();
    let (from, len) = ec.recv(&mut buf, TIMEOUT).unwrap().unwrap();
    assert_eq!((from, &buf[..len]), (a.id(), &b"still here"[..]));
}
