//! Fuzzes both halves of a split virtqueue with hostile ring contents.
//!
//! The input interleaves operations with `(offset, byte)` patches XORed into the
//! ring. No operation may panic, and the private bookkeeping must stay within the
//! queue size whatever the ring says.
#![no_main]

use ivlink_core::virtio::virtq::{DeviceQueue, DriverQueue, Vring, VringLayout};
use ivlink_core::{HeapRegion, Region};
use libfuzzer_sys::fuzz_target;

const NUM: u16 = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, ops)) = data.split_first() else {
        return;
    };
    let event_idx = flags & 1 != 0;
    let layout = VringLayout::new(NUM, 16).unwrap();
    let region = HeapRegion::new(layout.size().next_multiple_of(64) + 64);
    let ring = Vring::new(64, layout, region.len()).unwrap();
    let mut driver = DriverQueue::new(ring, event_idx);
    driver.reset(&*region).unwrap();
    let mut device = DeviceQueue::new(ring, event_idx);
    for op in ops.chunks(3) {
        let (code, a, b) = (
            op[0],
            op.get(1).copied().unwrap_or(0),
            op.get(2).copied().unwrap_or(0),
        );
        let id = u16::from(a) % NUM;
        let _ = match code % 9 {
            0 => driver
                .post(&*region, id, u64::from(b), u32::from(b), a & 8 != 0)
                .map(|_| ()),
            1 => driver.publish(&*region).map(|_| ()),
            2 => device.take_avail(&*region).map(|_| ()),
            3 => device.put_used(&*region, id, u32::from(b)),
            4 => device.publish(&*region).map(|_| ()),
            5 => driver.take_used(&*region).map(|_| ()),
            6 => driver.set_interrupts(&*region, a & 1 != 0).map(|_| ()),
            7 => device.set_notifications(&*region, a & 1 != 0).map(|_| ()),
            _ => {
                let at = 64 + usize::from(u16::from_le_bytes([a, b])) % layout.size();
                let old = region
                    .load_u8(at, core::sync::atomic::Ordering::Relaxed)
                    .unwrap();
                region
                    .store_u8(
                        at,
                        old ^ b.wrapping_add(1),
                        core::sync::atomic::Ordering::Relaxed,
                    )
                    .unwrap();
                Ok(())
            }
        };
        assert!(driver.outstanding() <= NUM);
        assert!(device.held() <= NUM);
    }
});
