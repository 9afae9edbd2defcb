//! Instructions per message of the ring's hot path, for `valgrind --tool=callgrind`.
//!
//! Sends and receives `N` messages of SIZE bytes (the argument; 64 unless
//! given) in batches of 16 through a ring on a heap region (the same `RawRegion`
//! accessors as a mapped region), and through a plain memcpy ring with no checks
//! for reference. Each phase runs in its own `#[inline(never)]` function, so
//! `callgrind_annotate --inclusive=yes` gives the instructions of each; divide by
//! `N`, and `ivlink_recv`'s by `3 N` (three of the send phases share it):
//!
//! ```text
//! cargo build --release -p ivlink-core --features alloc --example ring_cost
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/ring_cost [SIZE]
//! callgrind_annotate --inclusive=yes cg.out | grep ring_cost::
//! ```

use std::hint::black_box;

use ivlink_core::ring::{Consumer, Producer, RingLayout};
use ivlink_core::{HeapRegion, Region};

#[path = "../benches/support/plain_ring.rs"]
mod plain_ring;
use plain_ring::{Plain, PlainRx, PlainTx};

/// Messages per phase.
const N: usize = 1 << 16;
/// The largest message the example sends.
const MAX_SIZE: usize = 4096;
const BATCH: usize = 16;
/// Room for a batch of the largest messages.
const CAPACITY: usize = 1 << 17;

#[inline(never)]
fn ivlink_send(tx: &mut Producer<'_, ivlink_core::RawRegion>, message: &[u8]) {
    for _ in 0..BATCH {
        assert!(tx.try_send(black_box(message)).unwrap());
    }
    tx.publish().unwrap();
}

#[inline(never)]
fn ivlink_send_each(tx: &mut Producer<'_, ivlink_core::RawRegion>, message: &[u8]) {
    for _ in 0..BATCH {
        assert!(tx.try_send(black_box(message)).unwrap());
        tx.publish().unwrap();
    }
}

#[inline(never)]
fn ivlink_send_quiet(tx: &mut Producer<'_, ivlink_core::RawRegion>, message: &[u8]) {
    for _ in 0..BATCH {
        assert!(tx.try_send(black_box(message)).unwrap());
        tx.publish_quiet().unwrap();
    }
    tx.publish().unwrap();
}

#[inline(never)]
fn ivlink_recv(rx: &mut Consumer<'_, ivlink_core::RawRegion>, buf: &mut [u8]) {
    for _ in 0..BATCH {
        assert_eq!(rx.try_recv(black_box(&mut *buf)).unwrap(), Some(buf.len()));
    }
    rx.release().unwrap();
}

/// Zero-copy: fill each message in place through a grant.
#[inline(never)]
fn ivlink_send_grant(tx: &mut Producer<'_, ivlink_core::RawRegion>, size: usize) {
    for _ in 0..BATCH {
        let mut grant = tx.reserve(black_box(size)).unwrap().unwrap();
        grant.fill(0, size, 0x5a).unwrap();
        grant.commit().unwrap();
    }
    tx.publish().unwrap();
}

/// Zero-copy: read each message's first and last words in place.
#[inline(never)]
fn ivlink_recv_grant(rx: &mut Consumer<'_, ivlink_core::RawRegion>) {
    for _ in 0..BATCH {
        let grant = rx.peek().unwrap().unwrap();
        let len = grant.len();
        black_box(grant.read_u64_le(0).unwrap() ^ grant.read_u64_le(len - 8).unwrap());
        grant.release();
    }
    rx.release().unwrap();
}

#[inline(never)]
fn plain_send(tx: &mut PlainTx<'_>, message: &[u8]) {
    for _ in 0..BATCH {
        assert!(tx.try_send(black_box(message)));
    }
    tx.publish();
}

#[inline(never)]
fn plain_recv(rx: &mut PlainRx<'_>, buf: &mut [u8]) {
    for _ in 0..BATCH {
        assert_eq!(rx.try_recv(black_box(&mut *buf)), Some(buf.len()));
    }
    rx.release();
}

fn main() {
    let usage = "usage: ring_cost [SIZE], SIZE 8..=4096";
    let size: usize = std::env::args()
        .nth(1)
        .map_or(64, |a| a.parse().expect(usage));
    assert!((8..=MAX_SIZE).contains(&size), "{usage}");
    let message = vec![0x5au8; size];
    let mut buf = vec![0u8; size];

    let region = HeapRegion::new(RingLayout::section_size(CAPACITY));
    let layout = RingLayout::new(region.len(), 0, RingLayout::section_size(CAPACITY)).unwrap();
    layout.init(&*region).unwrap();
    let mut tx = Producer::attach(&*region, layout).unwrap();
    let mut rx = Consumer::attach(&*region, layout).unwrap();
    for _ in 0..N / BATCH {
        ivlink_send(&mut tx, &message);
        ivlink_recv(&mut rx, &mut buf);
    }
    for _ in 0..N / BATCH {
        ivlink_send_each(&mut tx, &message);
        ivlink_recv(&mut rx, &mut buf);
    }

    for _ in 0..N / BATCH {
        ivlink_send_quiet(&mut tx, &message);
        ivlink_recv(&mut rx, &mut buf);
    }

    for _ in 0..N / BATCH {
        ivlink_send_grant(&mut tx, size);
        ivlink_recv_grant(&mut rx);
    }

    let plain = Plain::new(CAPACITY);
    let (mut ptx, mut prx) = plain.ends();
    for _ in 0..N / BATCH {
        plain_send(&mut ptx, &message);
        plain_recv(&mut prx, &mut buf);
    }
    println!("{N} messages of {size} bytes per phase, batches of {BATCH}");
}
