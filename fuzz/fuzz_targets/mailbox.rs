//! Fuzzes the mailbox with hostile region contents and hostile operations.
//!
//! A sound mailbox (4 members, 64 data bytes, 16 ids) is built, members join,
//! and a few messages are sent. The first input byte says how many of the
//! following bytes are `(offset, byte)` pairs XORed into the section (header,
//! slots and boxes); the rest drives operations. None may panic, and every
//! message taken must respect the limits of the layout it was taken through.
#![no_main]

use ivlink_core::mailbox::{MailboxLayout, MailboxShape};
use ivlink_core::{HeapRegion, Region};
use libfuzzer_sys::fuzz_target;

const AT: usize = 4096;
const SHAPE: MailboxShape = MailboxShape {
    max_members: 4,
    max_data: 64,
    id_count: 16,
    vector: 0,
    completion_vector: 1,
};

fuzz_target!(|data: &[u8]| {
    let Some((&patches, rest)) = data.split_first() else {
        return;
    };
    let size = SHAPE.section_size().unwrap();
    let region = HeapRegion::new(AT + size + 64);
    let layout = MailboxLayout::create(&*region, AT, size, SHAPE).unwrap();
    for peer in [3, 4, 5] {
        layout.join(&*region, peer).unwrap();
    }
    layout.send(&*region, 1, 0, 2, b"one", true).unwrap();
    layout.send(&*region, 2, 0, 15, &[9; 64], false).unwrap();
    layout.send(&*region, 0, 1, 0, b"", true).unwrap();

    let split = (usize::from(patches) * 3).min(rest.len());
    let (patch, ops) = rest.split_at(split);
    for pair in patch.chunks_exact(3) {
        let offset = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % size;
        let mut byte = [0u8; 1];
        region.read(AT + offset, &mut byte).unwrap();
        region.write(AT + offset, &[byte[0] ^ pair[2]]).unwrap();
    }

    let reopened = MailboxLayout::open(&*region, AT, size);
    if let Err(e) = &reopened {
        let _ = e.to_string();
    }
    let mut buf = [0u8; 64];
    for layout in [Some(layout), reopened.ok()].into_iter().flatten() {
        // A reopened layout must lie inside the section.
        let m = layout.max_members();
        assert!(layout.shape().section_size().unwrap() <= size);
        for op in ops.chunks(2) {
            let (code, arg) = (op[0], op.get(1).copied().unwrap_or(0));
            let (a, b) = (u32::from(arg & 7), u32::from(arg >> 3 & 7));
            let result = match code % 6 {
                0 => layout
                    .send(
                        &*region,
                        a,
                        b,
                        u32::from(code >> 3),
                        &buf[..usize::from(arg) % 80 % 65],
                        true,
                    )
                    .map(|_| ()),
                1 => match layout.take(&*region, a, b, &mut buf) {
                    Ok(Some(taken)) => {
                        assert!(taken.len <= layout.max_data_size());
                        assert!(taken.id < layout.id_count());
                        assert!(taken.from_slot < m && taken.from_slot != a);
                        Ok(())
                    }
                    other => other.map(|_| ()),
                },
                2 => layout.arm_completion(&*region, a, b).map(|_| ()),
                3 => layout.poll_complete(&*region, a, b).map(|_| ()),
                4 => layout.has_message(&*region, a).map(|_| ()),
                _ => {
                    let _ = layout.members(&*region).count();
                    let _ = layout.evict(&*region, u16::from(arg));
                    layout.join(&*region, u16::from(arg)).map(|_| ())
                }
            };
            if let Err(e) = result {
                let _ = e.to_string();
            }
        }
    }
});
