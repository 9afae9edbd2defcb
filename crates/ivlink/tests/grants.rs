//! Zero-copy grants between two host peers of a real server (memfd-backed
//! region): channel messages and stream bytes written and read in place,
//! across the ring's wrap, and a hostile peer that rewrites a record's length
//! or the indices around an open grant, which is an error, never a panic.

use std::io::{ErrorKind, Write};
use std::sync::atomic::Ordering;

use ivlink::channel::{Channel, ChannelError};
use ivlink::server::ServerThread;
use ivlink::stream::Stream;
use ivlink::transport::host::HostPeer;
use ivlink::wait::SpinThenSleep;
use ivlink::{Device, Region};
use ivlink_core::channel::{ChannelLayout, ChannelShape};
use ivlink_core::ring::{self, RingError};

mod common;
use common::TIMEOUT;

const OFFSET: usize = 1 << 16;
const SHAPE: ChannelShape = ChannelShape {
    max_members: 2,
    ring_capacity: 1 << 17,
    vector: 1,
};

fn setup() -> (tempfile::TempDir, ServerThread, HostPeer, HostPeer) {
    let dir = tempfile::tempdir().unwrap();
    let (server, a, b) = common::two_host_peers(&dir, 2);
    (dir, server, a, b)
}

fn channel_layout(a: &HostPeer) -> ChannelLayout {
    let size = SHAPE.section_size().unwrap();
    ChannelLayout::create(a.region(), OFFSET, size, SHAPE).unwrap()
}

/// Byte `i` of message `seq`.
fn byte(seq: u32, i: usize) -> u8 {
    (seq as usize).wrapping_mul(31).wrapping_add(i * 7) as u8
}

#[test]
fn channel_messages_are_written_and_read_in_place() {
    let (_dir, _server, a, b) = setup();
    let layout = channel_layout(&a);
    let mut ea = Channel::join(&a, layout, SpinThenSleep::default()).unwrap();
    let mut eb = Channel::join(&b, layout, SpinThenSleep::default()).unwrap();
    // Sizes up to 64 KiB in a 128 KiB ring: records wrap many times.
    let sizes = [65_536, 1, 12, 40_000, 0, 8, 65_536, 4096, 33, 60_000];
    let mut buf = vec![0u8; 1 << 17];
    for round in 0..3u32 {
        for (k, &len) in sizes.iter().enumerate() {
            let seq = round * 100 + k as u32;
            let mut grant = ea.try_reserve(b.id(), len + 5).unwrap().expect("room");
            let body: Vec<u8> = (0..len).map(|i| byte(seq, i)).collect();
            grant.fill(0, len + 5, 0xEE).unwrap();
            grant.write(0, &body).unwrap();
            if len >= 12 {
                grant.write_u32_le(0, seq).unwrap();
                grant.write_u64_le(4, u64::from(seq) << 32).unwrap();
            }
            assert!(grant.write(len + 5, &[0]).is_err(), "past the grant");
            grant.truncate(len);
            grant.commit().unwrap();
            // A dropped grant sends nothing.
            ea.try_reserve(b.id(), 100)
                .unwrap()
                .unwrap()
                .fill(0, 100, 1)
                .unwrap();
            ea.flush().unwrap();
            // Alternate grants and copies on the receiving side.
            let got = if k % 2 == 0 {
                let (from, grant) = eb.try_peek().unwrap().expect("published");
                assert_eq!(from, a.id());
                assert_eq!(grant.len(), len);
                if len >= 12 {
                    assert_eq!(grant.read_u32_le(0).unwrap(), seq);
                    assert_eq!(grant.read_u64_le(4).unwrap(), u64::from(seq) << 32);
                }
                if len >= 14 {
                    let last = grant.read_u16_le(len - 2).unwrap().to_le_bytes();
                    assert_eq!(last, [byte(seq, len - 2), byte(seq, len - 1)]);
                }
                assert!(grant.read_u8(len).is_err());
                let mut out = vec![0u8; len];
                grant.read(0, &mut out).unwrap();
                grant.release();
                out
            } else {
                let (from, n) = eb.try_recv(&mut buf).unwrap().expect("published");
                assert_eq!(from, a.id());
                buf[..n].to_vec()
            };
            let mut expected: Vec<u8> = (0..len).map(|i| byte(seq, i)).collect();
            if len >= 12 {
                expected[..4].copy_from_slice(&seq.to_le_bytes());
                expected[4..12].copy_from_slice(&(u64::from(seq) << 32).to_le_bytes());
            }
            assert_eq!(got, expected, "message {seq} of {len} bytes");
            assert!(eb.try_peek().unwrap().is_none(), "nothing else arrived");
        }
    }
    assert!(matches!(
        ea.try_reserve(b.id(), SHAPE.ring_capacity),
        Err(ChannelError::Ring(RingError::TooLarge { .. }))
    ));
}

/// The data area of the ring from `from`'s slot to `to`'s.
fn data_at(layout: ChannelLayout, from: u32, to: u32) -> (usize, usize) {
    let ring = layout.ring(from, to).unwrap();
    (ring.offset(), ring.offset() + ring::HEADER)
}

#[test]
fn a_hostile_length_or_index_is_an_error_not_a_panic() {
    let (_dir, _server, a, b) = setup();
    let layout = channel_layout(&a);
    let mut ea = Channel::join(&a, layout, SpinThenSleep::default()).unwrap();
    let mut eb = Channel::join(&b, layout, SpinThenSleep::default()).unwrap();
    let (ring_at, data) = data_at(layout, ea.slot(), eb.slot());
    for seq in 0..2u32 {
        let mut grant = ea.try_reserve(b.id(), 16).unwrap().unwrap();
        grant.fill(0, 16, seq as u8).unwrap();
        grant.commit().unwrap();
    }
    ea.flush().unwrap();

    // While b holds a grant on the first record, a rewrites its length and the
    // head: the grant keeps the length it validated.
    {
        let (_, grant) = eb.try_peek().unwrap().unwrap();
        a.region().write(data, &u32::MAX.to_le_bytes()).unwrap();
        a.region()
            .store_u64(ring_at, u64::MAX / 3, Ordering::Relaxed)
            .unwrap();
        assert_eq!(grant.len(), 16);
        assert_eq!(grant.read_u8(15).unwrap(), 0);
        assert!(grant.read_u8(16).is_err());
        let mut big = [0u8; 17];
        assert!(grant.read(0, &mut big).is_err());
        grant.release();
    }
    // The second record's length is rewritten before the peek: b cuts a off.
    a.region().write(data + 24, &4000u32.to_le_bytes()).unwrap();
    match eb.try_peek() {
        Err(ChannelError::Corrupt { peer, .. }) => assert_eq!(peer, a.id()),
        other => panic!(
            "expected a corrupt ring, got {:?}",
            other.map(|g| g.map(|(p, _)| p))
        ),
    }
    assert_eq!(eb.broken(), vec![a.id()]);
    assert!(
        eb.try_peek().unwrap().is_none(),
        "the broken ring is skipped"
    );
}

#[test]
fn a_hostile_consumer_index_fails_a_reserve() {
    let (_dir, _server, a, b) = setup();
    let layout = channel_layout(&a);
    let ea = Channel::join(&a, layout, SpinThenSleep::default()).unwrap();
    let mut eb = Channel::join(&b, layout, SpinThenSleep::default()).unwrap();
    // b's ring to a gets a consumer index that runs ahead.
    let (back_at, _) = data_at(layout, eb.slot(), ea.slot());
    let tail_at = back_at + 128;
    eb.try_reserve(a.id(), 8)
        .unwrap()
        .unwrap()
        .commit()
        .unwrap();
    eb.flush().unwrap();
    a.region()
        .store_u64(tail_at, 1 << 40, Ordering::Relaxed)
        .unwrap();
    let mut failed = false;
    for _ in 0..(SHAPE.ring_capacity / 64) {
        match eb.try_reserve(a.id(), 56) {
            Ok(Some(grant)) => grant.commit().unwrap(),
            Ok(None) => panic!("full without noticing the index"),
            Err(ChannelError::Corrupt { peer, .. }) => {
                assert_eq!(peer, a.id());
                failed = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(failed, "the bad index was noticed once the ring filled");
}

fn streams<'d>(a: &'d HostPeer, b: &'d HostPeer) -> (Stream<'d>, Stream<'d>) {
    let mut sa = Stream::open(a, "grants", b.id(), 4096, 0, TIMEOUT).unwrap();
    let mut sb = Stream::open(b, "grants", a.id(), 4096, 0, TIMEOUT).unwrap();
    sa.set_timeout(Some(TIMEOUT));
    sb.set_timeout(Some(TIMEOUT));
    (sa, sb)
}

#[test]
fn stream_bytes_are_written_and_read_in_place_across_the_wrap() {
    let (_dir, _server, a, b) = setup();
    let (mut sa, mut sb) = streams(&a, &b);
    let mut sent = 0usize;
    let mut received = 0usize;
    for round in 0..50usize {
        let len = 1 + (round * 997) % 3000;
        let mut grant = sa.reserve(len).unwrap();
        let body: Vec<u8> = (0..len).map(|i| ((sent + i) % 251) as u8).collect();
        grant.write(0, &body).unwrap();
        assert!(grant.write(len, &[0]).is_err());
        grant.commit();
        sa.flush().unwrap();
        sent += len;
        while received < sent {
            let grant = sb.peek().unwrap().expect("bytes");
            let mut out = vec![0u8; grant.len()];
            grant.read(0, &mut out).unwrap();
            for (i, b) in out.iter().enumerate() {
                assert_eq!(*b, ((received + i) % 251) as u8, "byte {}", received + i);
            }
            received += out.len();
            grant.release();
            sb.release().unwrap();
        }
    }
    assert!(sb.try_peek().unwrap().is_none());
    // Both ways: b answers through a grant, a reads it through one.
    let mut grant = sb.reserve(8).unwrap();
    grant.write_u64_le(0, 0x0123_4567_89ab_cdef).unwrap();
    grant.commit();
    sb.flush().unwrap();
    let grant = sa.peek().unwrap().unwrap();
    assert_eq!(grant.read_u64_le(0).unwrap(), 0x0123_4567_89ab_cdef);
    grant.release();
    sa.release().unwrap();
    // The end of the stream is a `None` peek.
    sa.close().unwrap();
    assert!(sb.peek().unwrap().is_none());
}

#[test]
fn a_hostile_stream_index_fails_a_peek() {
    let (_dir, _server, a, b) = setup();
    let (mut sa, mut sb) = streams(&a, &b);
    let mut grant = sa.reserve(3).unwrap();
    grant.write(0, b"abc").unwrap();
    grant.commit();
    sa.flush().unwrap();
    // Find a's ring's head word by its value (3) inside the stream section.
    let region = a.region();
    let head_at = (OFFSET / 8..region.len() / 8)
        .map(|w| w * 8)
        .find(|&o| region.load_u64(o, Ordering::Relaxed).unwrap() == 3)
        .or_else(|| {
            (0..region.len() / 8)
                .map(|w| w * 8)
                .find(|&o| region.load_u64(o, Ordering::Relaxed).unwrap() == 3)
        })
        .unwrap();
    region
        .store_u64(head_at, 1 << 40, Ordering::Relaxed)
        .unwrap();
    let err = sb.try_peek().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert_eq!(
        sb.try_peek().unwrap_err().kind(),
        ErrorKind::InvalidData,
        "sticky"
    );
}
