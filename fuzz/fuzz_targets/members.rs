//! Fuzzes member slots with a hostile peer.
//!
//! Eight slots are joined, evicted and read in any order while a hostile peer
//! writes any word into any slot. Nothing may panic; a peer the slots report is
//! always a valid id found at the slot reported; and while nothing hostile
//! happened the slots agree with a plain model (one slot per peer, first free
//! slot taken, a rejoining peer keeps its slot).
#![no_main]

use core::sync::atomic::Ordering;

use ivlink_core::members::MemberSlots;
use ivlink_core::{HeapRegion, PeerId, Region, RegionError};
use libfuzzer_sys::fuzz_target;

const AT: usize = 64;
const COUNT: u32 = 8;

fuzz_target!(|data: &[u8]| {
    let region = HeapRegion::new(AT + MemberSlots::size(COUNT) + 64);
    let slots = MemberSlots::new(AT, COUNT);
    slots.clear(&*region).unwrap();
    let mut model: [Option<PeerId>; COUNT as usize] = [None; COUNT as usize];
    let mut hostile = false;
    let mut input = data;
    while let [op, arg, rest @ ..] = input {
        input = rest;
        let peer = PeerId::from(*arg) * 7;
        match op % 5 {
            0 => {
                let joined = slots
                    .join(&*region, peer, |_| Ok::<(), RegionError>(()))
                    .unwrap();
                if !hostile {
                    let expected = model
                        .iter()
                        .position(|&p| p == Some(peer))
                        .or_else(|| model.iter().position(Option::is_none));
                    assert_eq!(joined, expected.map(|s| s as u32));
                    if let Some(slot) = expected {
                        model[slot] = Some(peer);
                    }
                }
            }
            1 => {
                let evicted = slots.evict(&*region, peer);
                if !hostile {
                    let held = model.iter().position(|&p| p == Some(peer));
                    assert_eq!(evicted, Ok(held.is_some()));
                    if let Some(slot) = held {
                        model[slot] = None;
                    }
                }
            }
            2 => {
                for (slot, member) in slots.members(&*region) {
                    assert!(slot < COUNT);
                    assert_eq!(slots.member(&*region, slot), Ok(Some(member)));
                    if !hostile {
                        assert_eq!(model[slot as usize], Some(member));
                    }
                }
            }
            3 => {
                let slot = u32::from(*arg) % (COUNT + 2);
                if let Ok(raw) = slots.raw(&*region, slot) {
                    let _ = ivlink_core::members::SlotState::decode(raw);
                }
                let _ = slots.member(&*region, slot).map_err(|e| e.describe());
            }
            _ => {
                let [b0, b1, b2, b3, after @ ..] = input else {
                    break;
                };
                input = after;
                let slot = usize::from(*arg) % COUNT as usize;
                let word = u32::from_le_bytes([*b0, *b1, *b2, *b3]);
                region
                    .store_u32(AT + 4 * slot, word, Ordering::Relaxed)
                    .unwrap();
                hostile = true;
            }
        }
    }
});
