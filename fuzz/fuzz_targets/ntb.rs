//! Fuzzes the NTB switch with hostile register bytes and hostile operations.
//!
//! A sound three-port switch is built, two ports are claimed and linked, a
//! doorbell rung and a message written. The first input byte says how many of the
//! following bytes are `(offset, byte)` triples XORed into the section's header
//! and port blocks; the rest drives operations from any port on any port. None
//! may panic, and a reopened switch must lie inside its section.
#![no_main]

use ivlink_core::ntb::{Claim, NtbLayout, NtbShape};
use ivlink_core::{HeapRegion, Region};
use libfuzzer_sys::fuzz_target;

const AT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&patches, rest)) = data.split_first() else {
        return;
    };
    let shape = NtbShape {
        mw_count: 1,
        mw_size: 4096,
        ..NtbShape::new(3)
    };
    let size = shape.section_size().unwrap();
    let region = HeapRegion::new(AT + size);
    let layout = NtbLayout::create(&*region, AT, size, shape).unwrap();
    for peer in [1, 2] {
        let claim = Claim {
            peer,
            session: 7,
            port: None,
        };
        let (port, _) = layout.claim(&*region, claim, |_| false).unwrap();
        let _ = layout.set_link(&*region, port, true).unwrap();
    }
    let _ = layout.db_set(&*region, 1, 0xdead_beef).unwrap();
    let _ = layout.peer_msg_write(&*region, 0, 1, 0, 42).unwrap();

    let registers = layout.window_offset(0, 0).unwrap() - AT;
    let split = (usize::from(patches) * 3).min(rest.len());
    let (patch, ops) = rest.split_at(split);
    for triple in patch.chunks_exact(3) {
        let offset = usize::from(u16::from_le_bytes([triple[0], triple[1]])) % registers;
        let mut byte = [0u8; 1];
        region.read(AT + offset, &mut byte).unwrap();
        region.write(AT + offset, &[byte[0] ^ triple[2]]).unwrap();
    }

    let reopened = NtbLayout::open(&*region, AT, size);
    if let Err(e) = &reopened {
        let _ = e.to_string();
    }
    for layout in [Some(layout), reopened.ok()].into_iter().flatten() {
        assert!(layout.shape().section_size().unwrap() <= size);
        for op in ops.chunks(3) {
            let code = op[0];
            let arg = op.get(1).copied().unwrap_or(0);
            let bits = u64::from(op.get(2).copied().unwrap_or(0)).rotate_left(u32::from(arg));
            let (port, other, index) = (
                u32::from(arg & 3),
                u32::from(arg >> 2 & 3),
                u32::from(arg >> 4),
            );
            let _ = match code % 12 {
                0 => layout.db_set(&*region, port, bits).map(drop),
                1 => layout.db_clear(&*region, port, bits),
                2 => layout.db_clear_mask(&*region, port, bits).map(drop),
                3 => layout.db_set_mask(&*region, port, bits),
                4 => layout
                    .peer_msg_write(&*region, port, other, index, bits as u32)
                    .map(drop),
                5 => layout.msg_read(&*region, port, index).map(drop),
                6 => layout.msg_clear_sts(&*region, port, bits as u32),
                7 => layout.msg_clear_mask(&*region, port, bits as u32).map(drop),
                8 => layout.spad_write(&*region, port, index, bits as u32),
                9 => layout.link_is_up(&*region, port, |_| false).map(drop),
                10 => layout
                    .claim(
                        &*region,
                        Claim {
                            peer: u16::from(arg),
                            session: 1,
                            port: Some(port),
                        },
                        |_| true,
                    )
                    .map(drop),
                _ => layout.take_events(&*region, port).map(drop),
            };
        }
    }
});
