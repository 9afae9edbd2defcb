//! Fuzzes an RPMsg host and remote (every profile) with hostile region bytes.
//!
//! Both sides are set up and exchange messages; the input then patches bytes in
//! the status, vrings and buffers between operations. Nothing may panic, every
//! message delivered must fit the payload limit, and the link keeps answering.
#![no_main]

use core::sync::atomic::Ordering;

use ivlink_core::rpmsg::{ADDR_ANY, Link, LinkConfig, LinkEvent, LinkLayout, NativeShape, Role};
use ivlink_core::{HeapRegion, Notify, NotifyError, PeerId, Region, Vector};
use libfuzzer_sys::fuzz_target;

struct NoDoorbell;

impl Notify for NoDoorbell {
    fn notify(&self, _: PeerId, _: Vector) -> Result<(), NotifyError> {
        Ok(())
    }
}

const SIZE: usize = 0x80000;

fuzz_target!(|data: &[u8]| {
    let Some((&profile, ops)) = data.split_first() else {
        return;
    };
    let region = HeapRegion::new(SIZE);
    let (host_layout, remote_layout) = match profile % 3 {
        0 => {
            let shape = NativeShape {
                num: 8,
                buf_size: 256,
            };
            let l = LinkLayout::create_native(&*region, 4096, shape.section_size().unwrap(), shape)
                .unwrap();
            (l, l)
        }
        1 => (
            LinkLayout::zephyr_ivshmem(SIZE, 0x1000_0000).unwrap(),
            LinkLayout::zephyr_ivshmem(SIZE, 0).unwrap(),
        ),
        _ => {
            let l = LinkLayout::openamp_linux(SIZE).unwrap();
            (l, l)
        }
    };
    let config = |role, layout, own_id, peer| LinkConfig {
        role,
        layout,
        own_id,
        peer,
        vector: 0,
    };
    let mut host = Link::new(config(Role::Host, host_layout, 1, Some(2)));
    let mut remote = Link::new(config(Role::Remote, remote_layout, 2, Some(1)));
    let h = host.create_endpoint("echo", ADDR_ANY, ADDR_ANY).unwrap();
    let r = remote.create_endpoint("echo", ADDR_ANY, ADDR_ANY).unwrap();
    let mut buf = vec![0u8; 512];
    for _ in 0..8 {
        let _ = remote.poll(&*region, &NoDoorbell, &mut buf);
        let _ = host.poll(&*region, &NoDoorbell, &mut buf);
    }
    // Patches land where the link lives: the control area, the vrings, the pool start.
    let spots = [
        host_layout.vrings[0].base(),
        host_layout.vrings[1].base(),
        host_layout.pool,
        0,
        4096,
    ];
    for op in ops.chunks(4) {
        let (code, a, b, c) = (
            op[0],
            op.get(1).copied().unwrap_or(0),
            op.get(2).copied().unwrap_or(0),
            op.get(3).copied().unwrap_or(0),
        );
        match code % 5 {
            0 => {
                let len = usize::from(a) * 2;
                let _ = host.send(
                    &*region,
                    &NoDoorbell,
                    h,
                    Some(r),
                    &buf.clone()[..len.min(500)],
                );
            }
            1 => {
                let _ = remote.send(&*region, &NoDoorbell, r, Some(h), &[b; 7]);
            }
            2 | 3 => {
                let link = if code % 5 == 2 {
                    &mut host
                } else {
                    &mut remote
                };
                if let Ok(Some(LinkEvent::Message { len, .. })) =
                    link.poll(&*region, &NoDoorbell, &mut buf)
                {
                    assert!(len <= link.max_payload());
                }
            }
            _ => {
                let spot = spots[usize::from(a) % spots.len()];
                let at = (spot + usize::from(u16::from_le_bytes([b, c])) % 0x1000) % SIZE;
                let old = region.load_u8(at, Ordering::Relaxed).unwrap();
                region
                    .store_u8(at, old ^ c.wrapping_add(1), Ordering::Relaxed)
                    .unwrap();
            }
        }
    }
});
