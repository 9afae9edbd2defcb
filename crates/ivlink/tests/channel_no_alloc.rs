//! A channel's message path allocates nothing once both members know each other:
//! sending, publishing, receiving and finding nothing to receive are free of heap
//! traffic, over a shared file and over a real server's region alike.
//!
//! The counting allocator counts only on the thread that armed it, so the test
//! harness and the server's threads do not disturb the count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use ivlink::channel::{self, Channel};
use ivlink::transport::file::FilePeer;
use ivlink::wait::SpinThenSleep;
use ivlink::{Device, PeerId};
use ivlink_core::channel::ChannelShape;

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: allocations during thread teardown are not ours to count.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting
// touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap allocations (and reallocations) `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCATIONS.with(|n| n.get())
}

const SHAPE: ChannelShape = ChannelShape {
    max_members: 4,
    ring_capacity: 4096,
    vector: 0,
};
const TIMEOUT: Duration = Duration::from_secs(10);
const ROUNDS: u32 = 2_000;
const BATCH: u32 = 8;

fn message(seq: u32, into: &mut [u8; 64]) -> &[u8] {
    let len = 4 + (seq as usize * 7) % 60;
    into[..4].copy_from_slice(&seq.to_le_bytes());
    into[4..len].fill(seq as u8);
    &into[..len]
}

/// One round each way.
fn exchange(a: &mut Channel<'_>, b: &mut Channel<'_>, a_id: PeerId, b_id: PeerId, round: u32) {
    one_way(a, b, a_id, b_id, round);
    one_way(b, a, b_id, a_id, round);
}

/// A batch through `try_send`/`flush`/`try_recv`, a look at the drained rings,
/// and one message through `send`/`recv` when no wait is needed, checking every
/// byte that arrives.
fn one_way(tx: &mut Channel<'_>, rx: &mut Channel<'_>, from: PeerId, to: PeerId, round: u32) {
    let mut out = [0u8; 64];
    let mut buf = [0u8; 128];
    for i in 0..BATCH {
        assert!(
            tx.try_send(to, message(round * BATCH + i, &mut out))
                .unwrap()
        );
    }
    tx.flush().unwrap();
    for i in 0..BATCH {
        let (sender, len) = rx.try_recv(&mut buf).unwrap().expect("a message");
        assert_eq!(
            (sender, &buf[..len]),
            (from, message(round * BATCH + i, &mut out))
        );
    }
    assert_eq!(rx.try_recv(&mut buf).unwrap(), None, "drained");
    tx.send(to, message(round, &mut out), Some(TIMEOUT))
        .unwrap();
    tx.flush().unwrap();
    let (sender, len) = rx
        .recv(&mut buf, Some(TIMEOUT))
        .unwrap()
        .expect("a message");
    assert_eq!((sender, &buf[..len]), (from, message(round, &mut out)));
}

fn assert_steady_state_allocates_nothing(a_dev: &dyn Device, b_dev: &dyn Device) {
    let layout_a = channel::open_named(a_dev, "no-alloc", SHAPE, TIMEOUT).unwrap();
    let layout_b = channel::open_named(b_dev, "no-alloc", SHAPE, TIMEOUT).unwrap();
    let policy = SpinThenSleep::default();
    let mut a = Channel::join(a_dev, layout_a, policy).unwrap();
    let mut b = Channel::join(b_dev, layout_b, policy).unwrap();
    let (a_id, b_id) = (a_dev.id(), b_dev.id());
    // Warm-up: both learn of each other and every ring wraps at least once.
    for round in 0..64 {
        exchange(&mut a, &mut b, a_id, b_id, round);
    }
    let allocations = allocations_in(|| {
        for round in 0..ROUNDS {
            exchange(&mut a, &mut b, a_id, b_id, round);
        }
    });
    assert_eq!(
        allocations,
        0,
        "{allocations} heap allocations for {} messages",
        2 * ROUNDS * (BATCH + 1)
    );
}

#[test]
fn channel_messages_over_a_shared_file_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
    let b = FilePeer::open(&path, 2).unwrap();
    assert_steady_state_allocates_nothing(&a, &b);
}

#[test]
fn channel_messages_between_host_peers_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, a, b) = common::two_host_peers(&dir, 1);
    assert_steady_state_allocates_nothing(&a, &b);
}

/// Ping-pong where both sides sleep on the doorbell for every message: the wait,
/// the doorbell and the wake-up allocate nothing either.
#[test]
fn sleeping_on_the_doorbell_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, a, b) = common::two_host_peers(&dir, 1);
    let (a_id, b_id) = (a.id(), b.id());
    let layout = channel::open_named(&a, "no-alloc", SHAPE, TIMEOUT).unwrap();
    // No spinning: every receive that finds nothing sleeps on the doorbell.
    let policy = SpinThenSleep {
        spin: Duration::ZERO,
    };
    let mut pinger = Channel::join(&a, layout, policy).unwrap();
    let layout = channel::open_named(&b, "no-alloc", SHAPE, TIMEOUT).unwrap();
    let mut ponger = Channel::join(&b, layout, policy).unwrap();
    const PINGS: u32 = 500;
    const WARM_UP: u32 = 50;
    let pong = |ponger: &mut Channel<'_>| {
        let mut buf = [0u8; 128];
        let mut out = [0u8; 64];
        let mut serve = |ponger: &mut Channel<'_>, seq: u32| {
            let (from, len) = ponger
                .recv(&mut buf, Some(TIMEOUT))
                .unwrap()
                .expect("a ping");
            assert_eq!((from, &buf[..len]), (a_id, message(seq, &mut out)));
            ponger.send(a_id, &buf[..len], Some(TIMEOUT)).unwrap();
            ponger.flush().unwrap();
        };
        for seq in 0..WARM_UP {
            serve(ponger, seq);
        }
        allocations_in(|| (WARM_UP..PINGS).for_each(|seq| serve(ponger, seq)))
    };
    let ping = |pinger: &mut Channel<'_>| {
        let mut buf = [0u8; 128];
        let mut out = [0u8; 64];
        let mut round = |pinger: &mut Channel<'_>, seq: u32| {
            pinger
                .send(b_id, message(seq, &mut out), Some(TIMEOUT))
                .unwrap();
            pinger.flush().unwrap();
            let (from, len) = pinger
                .recv(&mut buf, Some(TIMEOUT))
                .unwrap()
                .expect("a pong");
            assert_eq!((from, &buf[..len]), (b_id, message(seq, &mut out)));
        };
        for seq in 0..WARM_UP {
            round(pinger, seq);
        }
        allocations_in(|| (WARM_UP..PINGS).for_each(|seq| round(pinger, seq)))
    };
    let (pinged, ponged) = std::thread::scope(|s| {
        let ponging = s.spawn(|| pong(&mut ponger));
        let pinged = ping(&mut pinger);
        (pinged, ponging.join().unwrap())
    });
    assert_eq!(
        (pinged, ponged),
        (0, 0),
        "heap allocations while sleeping for {} round trips",
        PINGS - WARM_UP
    );
}
