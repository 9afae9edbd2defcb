//! Fuzzes a byte stream between two ends with a hostile peer.
//!
//! Both ends attach to a stream of 256 bytes each way. The input is a stream of
//! operations on either end (writes, publishes, reads, releases, sleep
//! handshakes, closes) and hostile writes of any byte into the section, or a
//! reopen of the section. Nothing may panic, no read may return more than was
//! asked or than the ring holds, and while nothing hostile happened every byte
//! read is the next byte written, in order.
#![no_main]

use std::collections::VecDeque;

use ivlink_core::stream::{Side, StreamEnd, StreamLayout};
use ivlink_core::{HeapRegion, Region};
use libfuzzer_sys::fuzz_target;

const AT: usize = 4096;
const CAPACITY: usize = 256;

fuzz_target!(|data: &[u8]| {
    let size = StreamLayout::section_size(CAPACITY).unwrap();
    let region = HeapRegion::new(AT + size + 64);
    let layout = StreamLayout::create(&*region, AT, size, CAPACITY, [1, 2]).unwrap();
    let mut ends = [
        StreamEnd::attach(&*region, layout, Side::A).unwrap(),
        StreamEnd::attach(&*region, layout, Side::B).unwrap(),
    ];
    let mut hostile = false;
    // Bytes written by each end, not yet read by the other.
    let mut in_flight: [VecDeque<u8>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut next = [0u8; 2];
    let mut buf = [0u8; 2 * CAPACITY];
    let mut input = data;
    while let [op, arg, rest @ ..] = input {
        input = rest;
        let end = usize::from(op & 1);
        let other = 1 - end;
        match (op >> 1) % 10 {
            0 => {
                let len = usize::from(*arg) % (CAPACITY + 8);
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        next[end] = next[end].wrapping_add(1);
                        next[end]
                    })
                    .collect();
                if let Ok(n) = ends[end].write(&bytes) {
                    assert!(n <= bytes.len());
                    in_flight[end].extend(&bytes[..n]);
                    // Unwritten bytes are not sent: the next write starts after
                    // the last byte taken.
                    next[end] = next[end].wrapping_sub((bytes.len() - n) as u8);
                }
            }
            1 => {
                let _ = ends[end].publish();
            }
            2 => {
                let want = usize::from(*arg) % buf.len() + 1;
                if let Ok(n) = ends[end].read(&mut buf[..want]) {
                    assert!(n <= want && n <= CAPACITY);
                    if !hostile {
                        for &byte in &buf[..n] {
                            assert_eq!(in_flight[other].pop_front(), Some(byte));
                        }
                    }
                }
            }
            3 => {
                let _ = ends[end].release();
            }
            4 => {
                if let Ok(n) = ends[end].data_ready() {
                    assert!(n <= CAPACITY);
                }
                if let Ok(n) = ends[end].buffer_space() {
                    assert!(n <= CAPACITY);
                }
            }
            5 => {
                if let Ok(true) = ends[end].prepare_sleep_read() {
                    let _ = ends[end].finish_sleep_read();
                }
                if let Ok(true) = ends[end].prepare_sleep_write(usize::from(*arg)) {
                    let _ = ends[end].finish_sleep_write();
                }
            }
            6 => {
                let _ = ends[end].close();
            }
            7 => {
                let _ = ends[end].at_eof();
                let _ = ends[end].peer_state();
            }
            8 => {
                // A hostile byte anywhere in the section.
                let [offset_lo, value, ..] = input else { break };
                input = &input[2..];
                let offset = (usize::from(*arg) << 8 | usize::from(*offset_lo)) % size;
                region.write(AT + offset, &[*value]).unwrap();
                hostile = true;
            }
            _ => {
                if let Err(e) = StreamLayout::open(&*region, AT, size) {
                    let _ = e.to_string();
                }
            }
        }
    }
});
