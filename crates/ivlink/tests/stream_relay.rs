//! `stream::relay` between two host peers of a real server, as two `nc`s: each
//! side's input arrives at the other's output, larger than one chunk, and both
//! relays end once both inputs have.

mod common;

use std::io::Cursor;
use std::time::Duration;

use ivlink::Device;
use ivlink::stream::{Stream, relay};
use ivlink::transport::host::HostPeer;

const TIMEOUT: Duration = Duration::from_secs(10);

fn input(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn two_relays_swap_their_inputs_and_both_end() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, a, b) = common::two_host_peers(&dir, 1);
    let (from_a, from_b) = (input(1, 200_000), input(2, 70_000));
    let run = |me: &HostPeer, other: &HostPeer, data: Vec<u8>| {
        let stream = Stream::open(me, "relay", other.id(), 4096, 0, TIMEOUT).unwrap();
        stream.wait_for_peer(TIMEOUT).unwrap();
        let mut output = Vec::new();
        relay(stream, Cursor::new(data), &mut output).unwrap();
        output
    };
    std::thread::scope(|scope| {
        let at_b = scope.spawn(|| run(&b, &a, from_b.clone()));
        let at_a = run(&a, &b, from_a.clone());
        assert_eq!(at_a, from_b);
        assert_eq!(at_b.join().unwrap(), from_a);
    });
}
