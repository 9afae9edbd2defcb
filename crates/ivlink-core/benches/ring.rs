//! The ring's copy path on one thread against the plain memcpy ring: what the
//! checks cost per message, without the cross-core cache-line traffic (and its
//! noise) that `ivlink bench` streams add.
//!
//! Each iteration sends a batch of 16 messages, publishes, receives them and
//! releases, on a heap region (the same `RawRegion` accessors as a mapping).
//!
//! `cargo bench -p ivlink-core --features alloc --bench ring`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ivlink_core::ring::{Consumer, Producer, RingLayout, record_size};
use ivlink_core::{HeapRegion, Region};

mod support;
use support::plain_ring::Plain;

const SIZES: [usize; 6] = [64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10];
const BATCH: usize = 16;

/// Room for two batches, so a batch wraps at the end of the data area as
/// often as it would in a stream.
fn capacity(size: usize) -> usize {
    (2 * BATCH * record_size(size))
        .next_power_of_two()
        .max(4096)
}

fn ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in SIZES {
        group.throughput(Throughput::Bytes((size * BATCH) as u64));
        let message = vec![0x5au8; size];
        let mut buf = vec![0u8; size];
        let capacity = capacity(size);

        let region = HeapRegion::new(RingLayout::section_size(capacity));
        let layout = RingLayout::new(region.len(), 0, RingLayout::section_size(capacity))
            .expect("the section holds the ring");
        layout.init(&*region).expect("the ring is in the region");
        let mut tx = Producer::attach(&*region, layout).expect("a fresh ring");
        let mut rx = Consumer::attach(&*region, layout).expect("a fresh ring");
        group.bench_function(BenchmarkId::new("ivlink", size), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    assert!(tx.try_send(black_box(&message)).expect("a healthy ring"));
                }
                tx.publish().expect("a healthy ring");
                for _ in 0..BATCH {
                    let got = rx.try_recv(black_box(&mut buf)).expect("a healthy ring");
                    assert_eq!(got, Some(size));
                }
                rx.release().expect("a healthy ring");
            })
        });

        let plain = Plain::new(capacity);
        let (mut ptx, mut prx) = plain.ends();
        group.bench_function(BenchmarkId::new("plain", size), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    assert!(ptx.try_send(black_box(&message)));
                }
                ptx.publish();
                for _ in 0..BATCH {
                    assert_eq!(prx.try_recv(black_box(&mut buf)), Some(size));
                }
                prx.release();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
