use super::*;
use crate::HeapRegion;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use proptest::prelude::*;

const OFFSET: usize = 4096;
const PEERS: [PeerId; 2] = [3, 7];

fn stream(capacity: usize) -> (HeapRegion, StreamLayout) {
    let size = StreamLayout::section_size(capacity).unwrap();
    let region = HeapRegion::new(OFFSET + size);
    let layout = StreamLayout::create(&*region, OFFSET, size, capacity, PEERS).unwrap();
    (region, layout)
}

fn ends(
    region: &HeapRegion,
    layout: StreamLayout,
) -> (
    StreamEnd<'_, crate::RawRegion>,
    StreamEnd<'_, crate::RawRegion>,
) {
    (
        StreamEnd::attach(&**region, layout, Side::A).unwrap(),
        StreamEnd::attach(&**region, layout, Side::B).unwrap(),
    )
}

#[test]
fn created_streams_open_with_the_same_geometry_and_peers() {
    let (region, layout) = stream(256);
    let size = StreamLayout::section_size(256).unwrap();
    assert_eq!(StreamLayout::open(&*region, OFFSET, size).unwrap(), layout);
    assert_eq!(layout.capacity(), 256);
    assert_eq!((layout.peer(Side::A), layout.peer(Side::B)), (3, 7));
    assert_eq!(layout.side_of(7), Some(Side::B));
    assert_eq!(layout.side_of(9), None);
    assert_eq!(
        StreamLayout::open(&*region, OFFSET, size - 1),
        Err(StreamLayoutError::Invalid("rings do not fit the section"))
    );
    assert!(StreamLayout::create(&*region, OFFSET, size, 100, PEERS).is_err());
    assert!(StreamLayout::create(&*region, OFFSET, size, 64, PEERS).is_err());
    assert!(StreamLayout::create(&*region, OFFSET, size - 1, 256, PEERS).is_err());
    let blank = HeapRegion::new(OFFSET + size);
    assert_eq!(
        StreamLayout::open(&*blank, OFFSET, size),
        Err(StreamLayoutError::Initializing)
    );
}

#[test]
fn bytes_round_trip_both_ways_across_the_wrap() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    let mut buf = [0u8; 128];
    for round in 0..60u8 {
        let data: Vec<u8> = (0..(round % 50 + 1)).map(|i| i ^ round).collect();
        assert_eq!(a.write(&data).unwrap(), data.len());
        assert_eq!(b.read(&mut buf).unwrap(), 0, "not yet published");
        assert!(!a.publish().unwrap());
        assert_eq!(b.data_ready().unwrap(), data.len());
        assert_eq!(b.read(&mut buf).unwrap(), data.len());
        assert_eq!(&buf[..data.len()], &data[..]);
        b.release().unwrap();
        // And back.
        assert_eq!(b.write(&data).unwrap(), data.len());
        b.publish().unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 7];
        loop {
            let n = a.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        a.release().unwrap();
    }
}

#[test]
fn writes_are_partial_when_the_ring_fills() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    assert_eq!(a.buffer_space().unwrap(), 128);
    assert_eq!(a.write(&[1; 100]).unwrap(), 100);
    assert_eq!(a.write(&[2; 100]).unwrap(), 28, "only what fits");
    assert_eq!(a.write(&[3; 10]).unwrap(), 0, "full");
    a.publish().unwrap();
    let mut buf = [0u8; 50];
    assert_eq!(b.read(&mut buf).unwrap(), 50);
    assert_eq!(a.write(&[3; 10]).unwrap(), 0, "not released yet");
    assert!(!b.release().unwrap());
    assert_eq!(a.buffer_space().unwrap(), 50);
    assert_eq!(a.write(&[3; 60]).unwrap(), 50);
    assert_eq!(a.write(&[]).unwrap(), 0);
}

#[test]
fn close_gives_end_of_stream_after_the_data() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    assert_eq!(b.peer_state().unwrap(), PeerState::Connected);
    a.write(b"last words").unwrap();
    assert!(
        b.prepare_sleep_read().unwrap(),
        "nothing published: may sleep"
    );
    assert!(a.close().unwrap(), "the sleeping reader must be woken");
    b.finish_sleep_read().unwrap();
    assert_eq!(b.peer_state().unwrap(), PeerState::Closed);
    assert!(!b.at_eof().unwrap(), "data still waits");
    assert!(!b.prepare_sleep_read().unwrap(), "data waits: do not sleep");
    let mut buf = [0u8; 64];
    assert_eq!(b.read(&mut buf).unwrap(), 10);
    assert_eq!(&buf[..10], b"last words");
    assert!(b.at_eof().unwrap());
    assert!(!b.prepare_sleep_read().unwrap(), "closed: never sleep");
    assert_eq!(a.write(b"x"), Err(StreamLayoutError::Closed));
    assert!(!a.close().unwrap(), "closing twice is harmless");
    assert!(!a.publish().unwrap(), "nothing to publish is not an error");
    // Half-close: the closed side still reads what the other sends.
    assert_eq!(b.write(b"reply").unwrap(), 5);
    b.publish().unwrap();
    assert_eq!(a.read(&mut buf).unwrap(), 5);
    assert!(!a.at_eof().unwrap());
}

#[test]
fn a_dead_peer_is_reported_and_a_closed_one_stays_closed() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    b.write(b"before").unwrap();
    b.publish().unwrap();
    assert!(a.mark_peer_dead().unwrap());
    assert_eq!(a.peer_state().unwrap(), PeerState::Dead);
    assert_eq!(a.write(b"x"), Err(StreamLayoutError::PeerDead));
    assert!(!a.prepare_sleep_write(1).unwrap(), "dead: never sleep");
    let mut buf = [0u8; 16];
    assert_eq!(a.read(&mut buf).unwrap(), 6, "published bytes still read");
    assert!(a.at_eof().unwrap());

    let (region, layout) = stream(128);
    let (a, mut b) = ends(&region, layout);
    b.close().unwrap();
    assert!(!a.mark_peer_dead().unwrap(), "closed before it left");
    assert_eq!(a.peer_state().unwrap(), PeerState::Closed);
}

#[test]
fn each_side_attaches_once() {
    let (region, layout) = stream(128);
    let a = StreamEnd::attach(&*region, layout, Side::A).unwrap();
    assert_eq!(a.peer_state().unwrap(), PeerState::Never);
    assert_eq!(
        StreamEnd::attach(&*region, layout, Side::A).err(),
        Some(StreamLayoutError::SideTaken {
            side: Side::A,
            state: PeerState::Connected
        })
    );
    let b = StreamEnd::attach(&*region, layout, Side::B).unwrap();
    assert_eq!(b.side(), Side::B);
    assert_eq!(a.peer_state().unwrap(), PeerState::Connected);
}

#[test]
fn the_sleep_handshakes_never_miss_a_wakeup() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    assert!(b.prepare_sleep_read().unwrap());
    a.write(b"wake").unwrap();
    assert!(a.publish().unwrap(), "the sleeper asked for a doorbell");
    b.finish_sleep_read().unwrap();
    a.write(b"more").unwrap();
    assert!(!a.publish().unwrap(), "awake: no doorbell");

    a.write(&[0; 120]).unwrap();
    a.publish().unwrap();
    assert!(a.prepare_sleep_write(64).unwrap(), "full: may sleep");
    let mut buf = [0u8; 100];
    b.read(&mut buf).unwrap();
    assert!(b.release().unwrap(), "the writer asked to be woken");
    a.finish_sleep_write().unwrap();
    assert!(!a.prepare_sleep_write(64).unwrap(), "room already");
}

#[test]
fn hostile_indices_poison_a_direction_for_good() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    a.write(b"ok").unwrap();
    a.publish().unwrap();
    // Side A's head runs far ahead of anything that fits.
    let head_at = OFFSET + RINGS_AT;
    region
        .store_u64(head_at, 1 << 40, Ordering::Relaxed)
        .unwrap();
    let mut buf = [0u8; 16];
    let err = b.read(&mut buf).unwrap_err();
    assert!(matches!(err, StreamLayoutError::Corrupt(_)), "{err}");
    region.store_u64(head_at, 2, Ordering::Relaxed).unwrap();
    assert_eq!(b.read(&mut buf), Err(err), "sticky");
    assert_eq!(b.data_ready(), Err(err));
    // The other direction still works.
    b.write(b"still").unwrap();
    b.publish().unwrap();
    assert_eq!(a.read(&mut buf).unwrap(), 5);

    // A tail that moves past what was published.
    let tail_at = OFFSET + RINGS_AT + 128;
    region.store_u64(tail_at, 999, Ordering::Relaxed).unwrap();
    assert!(matches!(
        a.buffer_space(),
        Err(StreamLayoutError::Corrupt(_))
    ));
    assert!(matches!(a.write(b"x"), Err(StreamLayoutError::Corrupt(_))));

    // An unknown liveness value (with consistent indices, so attach gets to it).
    region.store_u64(tail_at, 2, Ordering::Relaxed).unwrap();
    region
        .store_u32(OFFSET + SIDE_B_AT.offset(), 77, Ordering::Relaxed)
        .unwrap();
    assert_eq!(a.peer_state(), Err(StreamLayoutError::BadState(77)));
    assert_eq!(
        StreamEnd::attach(&*region, layout, Side::B).err(),
        Some(StreamLayoutError::BadState(77))
    );
}

#[cfg(not(miri))]
const THREAD_BYTES: usize = 1 << 20;
#[cfg(miri)]
const THREAD_BYTES: usize = 3000;

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

#[test]
fn two_threads_stream_every_byte_in_order() {
    let (region, layout) = stream(256);
    let region = &*region;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut tx = StreamEnd::attach(region, layout, Side::A).unwrap();
            let mut sent = 0;
            let mut step = 1;
            while sent < THREAD_BYTES {
                let chunk: Vec<u8> = (sent..THREAD_BYTES.min(sent + step)).map(pattern).collect();
                let n = tx.write(&chunk).unwrap();
                sent += n;
                if n < chunk.len() || sent % 3 == 0 {
                    tx.publish().unwrap();
                    std::thread::yield_now();
                }
                step = step % 97 + 1;
            }
            tx.close().unwrap();
        });
        let mut rx = StreamEnd::attach(region, layout, Side::B).unwrap();
        let mut buf = [0u8; 61];
        let mut got = 0;
        loop {
            let n = rx.read(&mut buf).unwrap();
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(got + i), "byte {}", got + i);
            }
            got += n;
            if n == 0 {
                rx.release().unwrap();
                if rx.at_eof().unwrap() {
                    break;
                }
                std::thread::yield_now();
            } else if got % 5 == 0 {
                rx.release().unwrap();
            }
        }
        assert_eq!(got, THREAD_BYTES);
    });
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<u8>),
    /// Write through a grant; `true`: drop the grant instead of committing.
    Reserve(Vec<u8>, bool),
    Publish,
    Read(usize),
    /// Read up to `len` bytes through a grant; `true`: drop it unreleased.
    Peek(usize, bool),
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..90).prop_map(Op::Write),
        2 => (proptest::collection::vec(any::<u8>(), 0..90), proptest::bool::weighted(0.2))
            .prop_map(|(d, drop)| Op::Reserve(d, drop)),
        1 => Just(Op::Publish),
        3 => (0usize..90).prop_map(Op::Read),
        2 => (0usize..90, proptest::bool::weighted(0.2)).prop_map(|(n, drop)| Op::Peek(n, drop)),
        1 => Just(Op::Release),
    ]
}

proptest! {
    // Under Miri: few cases, and no failure files (Miri isolates the file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any interleaving behaves like a byte queue with room for `capacity`
    /// bytes not yet released.
    #[test]
    fn behaves_like_a_bounded_byte_queue(ops in proptest::collection::vec(op(), 1..crate::model_ops(150))) {
        let (region, layout) = stream(128);
        let (mut a, mut b) = ends(&region, layout);
        let mut written: VecDeque<u8> = VecDeque::new(); // not yet published
        let mut visible: VecDeque<u8> = VecDeque::new(); // published, not read
        let mut in_use = 0usize; // written and not released
        let mut unreleased = 0usize; // read, not released
        let mut buf = [0u8; 90];
        for op in ops {
            match op {
                Op::Write(data) => {
                    let n = a.write(&data).unwrap();
                    // The writer may not have seen every release, but never
                    // overfills and always takes what it knows fits.
                    prop_assert!(n <= data.len());
                    prop_assert!(in_use + n <= 128);
                    prop_assert_eq!(n, data.len().min(128 - in_use));
                    in_use += n;
                    written.extend(&data[..n]);
                }
                Op::Reserve(data, drop) => match a.reserve(data.len()).unwrap() {
                    Some(mut grant) => {
                        prop_assert!(in_use + data.len() <= 128);
                        let half = data.len() / 2;
                        grant.write(half, &data[half..]).unwrap();
                        grant.write(0, &data[..half]).unwrap();
                        prop_assert!(grant.write(data.len(), &[0]).is_err());
                        if !drop {
                            grant.commit();
                            in_use += data.len();
                            written.extend(&data);
                        }
                    }
                    None => prop_assert!(in_use + data.len() > 128),
                },
                Op::Peek(len, drop) => match b.peek().unwrap() {
                    Some(mut grant) => {
                        prop_assert_eq!(grant.len(), visible.len());
                        grant.truncate(len);
                        let n = grant.len();
                        prop_assert_eq!(n, len.min(visible.len()));
                        grant.read(0, &mut buf[..n]).unwrap();
                        prop_assert!(grant.read_u8(n).is_err());
                        let expected: Vec<u8> = visible.iter().take(n).copied().collect();
                        prop_assert_eq!(&buf[..n], &expected[..]);
                        if !drop {
                            grant.release();
                            visible.drain(..n);
                            unreleased += n;
                        }
                    }
                    None => prop_assert!(visible.is_empty()),
                },
                Op::Publish => {
                    a.publish().unwrap();
                    visible.extend(written.drain(..));
                }
                Op::Read(len) => {
                    let n = b.read(&mut buf[..len]).unwrap();
                    prop_assert_eq!(n, len.min(visible.len()));
                    let expected: Vec<u8> = visible.drain(..n).collect();
                    prop_assert_eq!(&buf[..n], &expected[..]);
                    unreleased += n;
                }
                Op::Release => {
                    b.release().unwrap();
                    in_use -= unreleased;
                    unreleased = 0;
                    // After a release the writer sees all the room there is.
                    prop_assert_eq!(a.buffer_space().unwrap(), 128 - in_use);
                }
            }
        }
    }

    /// Whatever a hostile peer writes over the header, the liveness words, the
    /// indices and the data, both ends return values or errors: no panic, no
    /// access outside the section.
    #[test]
    fn hostile_bytes_never_panic(
        writes in proptest::collection::vec((0usize..(RINGS_AT + 2 * (ring::HEADER + 128)), any::<u64>()), 1..24),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let (region, layout) = stream(128);
        let size = StreamLayout::section_size(128).unwrap();
        let (mut a, mut b) = ends(&region, layout);
        for (at, value) in writes {
            let n = (size - at).min(8);
            let _ = region.write(OFFSET + at, &value.to_le_bytes()[..n]);
        }
        let mut buf = [0u8; 90];
        for op in ops {
            let _ = match op {
                Op::Write(data) => a.write(&data).map(|_| ()),
                Op::Reserve(data, _) => match a.reserve(data.len()) {
                    Ok(Some(mut grant)) => grant.write(0, &data).map(|()| grant.commit()),
                    other => other.map(|_| ()),
                },
                Op::Publish => a.publish().map(|_| ()),
                Op::Read(len) => b.read(&mut buf[..len]).map(|_| ()),
                Op::Peek(len, _) => match b.peek() {
                    Ok(Some(mut grant)) => {
                        grant.truncate(len);
                        let n = grant.len();
                        let read = grant.read(0, &mut buf[..n]);
                        grant.release();
                        read
                    }
                    other => other.map(|_| ()),
                },
                Op::Release => b.release().map(|_| ()),
            };
            let _ = (b.at_eof(), a.prepare_sleep_write(64), b.prepare_sleep_read());
            let _ = (a.finish_sleep_write(), b.finish_sleep_read(), a.mark_peer_dead());
        }
        let _ = a.close();
        if let Ok(reopened) = StreamLayout::open(&*region, OFFSET, size) {
            prop_assert!(reopened.capacity() == 128, "capacity must fit the section");
            let _ = StreamEnd::attach(&*region, reopened, Side::A);
        }
    }
}

#[test]
fn errors_read_as_sentences() {
    use alloc::string::ToString;
    assert_eq!(
        StreamLayoutError::PeerDead.to_string(),
        "the other peer left without closing the stream"
    );
    assert!(
        StreamLayoutError::Corrupt(Corruption::Indices { head: 9, tail: 1 })
            .to_string()
            .contains("head 9 and tail 1")
    );
}

#[test]
fn inspection_reads_the_header_and_liveness_as_they_are() {
    let (region, layout) = stream(256);
    let size = StreamLayout::section_size(256).unwrap();
    let fresh = StreamHeader::read(&*region, OFFSET, size).unwrap();
    assert_eq!(
        fresh,
        StreamHeader {
            magic: *b"STM1",
            state: READY,
            capacity: 256,
            peers: PEERS,
            liveness: [0, 0],
        }
    );
    assert!(fresh.has_magic());
    assert_eq!(fresh.state_name(), Some("ready"));
    assert_eq!(
        StreamHeader::read(&*region, OFFSET, StreamHeader::SIZE - 1),
        Err(StreamLayoutError::Invalid("section too small"))
    );
    assert!(StreamHeader::read(&*region, OFFSET, size + 1).is_err());

    let (mut a, _b) = ends(&region, layout);
    a.close().unwrap();
    assert!(a.mark_peer_dead().unwrap(), "B left without closing");
    let header = StreamHeader::read(&*region, OFFSET, size).unwrap();
    assert_eq!(header.liveness, [2, 3]);
    assert_eq!(layout.state_word(&*region, Side::B), Ok(3));
    let names = header
        .liveness
        .map(|w| PeerState::from_u32(w).map(PeerState::name));
    assert_eq!(names, [Some("closed"), Some("dead")]);
    assert_eq!(alloc::format!("{}", PeerState::Never), "never connected");
    assert_eq!(
        PeerState::from_u32(PeerState::Connected.as_u32()),
        Some(PeerState::Connected)
    );

    // Hostile words are shown as they are.
    region
        .store_u32(OFFSET + SIDE_A_AT.offset(), 0xdead, Ordering::Relaxed)
        .unwrap();
    region
        .store_u32(OFFSET + STATE_AT, 7, Ordering::Relaxed)
        .unwrap();
    region.write(OFFSET, b"\0TM1").unwrap();
    let damaged = StreamHeader::read(&*region, OFFSET, size).unwrap();
    assert_eq!(damaged.liveness[0], 0xdead);
    assert_eq!(PeerState::from_u32(0xdead), None);
    assert_eq!((damaged.state_name(), damaged.has_magic()), (None, false));
}

#[test]
fn grants_write_and_read_bytes_in_place_across_the_wrap() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    for round in 0..40u8 {
        let data: Vec<u8> = (0..(round % 50 + 1)).map(|i| i ^ round).collect();
        let mut grant = a.reserve(data.len()).unwrap().expect("room");
        grant.write(0, &data).unwrap();
        if data.len() >= 8 {
            grant
                .write_u64_le(0, u64::from_le_bytes(data[..8].try_into().unwrap()))
                .unwrap();
        }
        grant.commit();
        a.publish().unwrap();
        let grant = b.peek().unwrap().expect("arrived");
        assert_eq!(grant.len(), data.len());
        let mut got = alloc::vec![0u8; data.len()];
        grant.read(0, &mut got).unwrap();
        assert_eq!(got, data, "round {round}");
        grant.release();
        b.release().unwrap();
    }
    assert!(b.peek().unwrap().is_none());
    assert!(a.reserve(129).is_err(), "more than the capacity");
}

#[test]
fn a_hostile_index_poisons_a_peek() {
    let (region, layout) = stream(128);
    let (mut a, mut b) = ends(&region, layout);
    a.write(b"abc").unwrap();
    a.publish().unwrap();
    // The writer's index jumps far beyond the free room.
    let head_at = OFFSET + RINGS_AT;
    region.write(head_at, &(1u64 << 40).to_le_bytes()).unwrap();
    assert!(matches!(b.peek(), Err(StreamLayoutError::Corrupt(_))));
    assert!(
        matches!(b.peek(), Err(StreamLayoutError::Corrupt(_))),
        "sticky"
    );
}
