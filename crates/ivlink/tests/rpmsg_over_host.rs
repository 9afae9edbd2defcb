//! RPMsg echo between two host peers of a real server: thousands of messages of
//! random sizes in both start orders, and either side restarting in the middle.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ivlink::rpmsg::{ResetCause, RpmsgLink, RpmsgOptions};
use ivlink::server::ServerThread;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink_core::rpmsg::{LinkEvent, Profile, Role};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

fn server(dir: &tempfile::TempDir) -> ServerThread {
    common::start(common::config(dir, 1))
}

fn peer(server: &ServerThread) -> HostPeer {
    HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap()
}

/// Echoes until `stop`, or until `limit` messages (then returns, like a crash:
/// no goodbye). Returns how many it echoed.
fn echo(device: &HostPeer, stop: &AtomicBool, limit: Option<u64>) -> u64 {
    let options = RpmsgOptions::new(Profile::Native, Role::Remote);
    let mut link = RpmsgLink::open(device, &options).unwrap();
    let ep = link.create_endpoint("echo", None, None).unwrap();
    let mut echoed = 0;
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| echoed < l) {
        if let Some(LinkEvent::Message { src, .. }) =
            link.next_event(Some(Duration::from_millis(20))).unwrap()
        {
            let data = link.payload().to_vec();
            link.send(ep, Some(src), &data, TIMEOUT).unwrap();
            echoed += 1;
        }
    }
    echoed
}

/// A message: its sequence number, then bytes derived from it, of a
/// pseudo-random length up to the payload limit.
fn message(seq: u32, max: usize) -> Vec<u8> {
    let mut x = u64::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    x ^= x >> 29;
    let len = 4 + (x as usize) % (max - 3);
    let mut m = seq.to_le_bytes().to_vec();
    m.extend((4..len).map(|i| (x >> (i % 56)) as u8 ^ i as u8));
    m
}

#[derive(Debug, Default)]
struct Tally {
    echoed: u32,
    lost: u32,
    resets: u32,
}

/// The host side: sends `count` messages one at a time and checks each echo.
/// A reset loses the message in flight (counted, never resent) and the host
/// waits for the remote to bind again.
fn host(device: &HostPeer, count: u32, first_seq: u32) -> Tally {
    let options = RpmsgOptions::new(Profile::Native, Role::Host);
    let mut link = RpmsgLink::open(device, &options).unwrap();
    let ep = link.create_endpoint("echo", None, None).unwrap();
    let max = link.max_payload();
    let mut tally = Tally::default();
    let mut bound = false;
    let mut seen = std::collections::HashSet::new();
    let mut seq = first_seq;
    while seq < first_seq + count {
        while !bound {
            match link.next_event(TIMEOUT).unwrap() {
                Some(LinkEvent::Bound { .. }) => bound = true,
                Some(LinkEvent::Reset { .. }) => tally.resets += 1,
                Some(_) => {}
                None => panic!("the remote never bound"),
            }
        }
        let msg = message(seq, max);
        link.send(ep, None, &msg, TIMEOUT).unwrap();
        loop {
            match link.next_event(TIMEOUT).unwrap() {
                Some(LinkEvent::Message { .. }) => {
                    let got = link.payload();
                    let got_seq = u32::from_le_bytes(got[..4].try_into().unwrap());
                    assert!(seen.insert(got_seq), "message {got_seq} echoed twice");
                    assert_eq!(
                        got,
                        &message(got_seq, max)[..],
                        "message {got_seq} corrupted"
                    );
                    assert_eq!(got_seq, seq, "echo out of order");
                    tally.echoed += 1;
                    break;
                }
                Some(LinkEvent::Reset { lost, cause }) => {
                    assert_eq!(cause, ResetCause::PeerRestarted);
                    assert!(lost <= 1, "only one message was in flight");
                    tally.lost += 1;
                    tally.resets += 1;
                    bound = false;
                    break;
                }
                Some(_) => {}
                None => panic!("no echo for message {seq}"),
            }
        }
        seq += 1;
    }
    tally
}

#[test]
fn ten_thousand_echoes_in_both_start_orders() {
    for remote_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let server = server(&dir);
        let (a, b) = (peer(&server), peer(&server));
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let remote = if remote_first {
                let r = scope.spawn(|| echo(&a, &stop, None));
                std::thread::sleep(Duration::from_millis(50));
                r
            } else {
                scope.spawn(|| {
                    std::thread::sleep(Duration::from_millis(50));
                    echo(&a, &stop, None)
                })
            };
            let tally = host(&b, 10_000, 0);
            stop.store(true, Ordering::Relaxed);
            assert_eq!(tally.echoed, 10_000, "{tally:?}");
            assert_eq!(remote.join().unwrap(), 10_000);
        });
    }
}

#[test]
fn a_remote_restarting_mid_run_loses_at_most_the_message_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let host_dev = peer(&server);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let remote = scope.spawn(|| {
            let first = peer(&server);
            let before = echo(&first, &stop, Some(700));
            drop(first); // The remote's process is gone: the server says so.
            let second = peer(&server);
            before + echo(&second, &stop, None)
        });
        let tally = host(&host_dev, 2_000, 0);
        stop.store(true, Ordering::Relaxed);
        let echoed_by_remote = remote.join().unwrap();
        assert!(tally.resets >= 1, "{tally:?}");
        assert_eq!(tally.echoed + tally.lost, 2_000, "{tally:?}");
        assert!(tally.lost <= 1, "{tally:?}");
        assert_eq!(u64::from(tally.echoed), echoed_by_remote);
    });
}

#[test]
fn a_host_restarting_mid_run_is_followed_by_the_remote() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let remote_dev = peer(&server);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let remote = scope.spawn(|| echo(&remote_dev, &stop, None));
        let first = peer(&server);
        assert_eq!(host(&first, 500, 0).echoed, 500);
        drop(first);
        let second = peer(&server);
        let tally = host(&second, 500, 500);
        assert_eq!(tally.echoed, 500, "{tally:?}");
        stop.store(true, Ordering::Relaxed);
        assert_eq!(remote.join().unwrap(), 1_000);
    });
}
