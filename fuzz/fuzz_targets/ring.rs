//! Fuzzes a message ring with a hostile peer.
//!
//! A producer and a consumer attach to a 128-byte ring. The input is a stream
//! of operations: sends, publishes, receives, releases, sleep handshakes, sends
//! and receives in place through grants (a reserve also dropped uncommitted), and
//! hostile writes of any word into the ring's header or data. Nothing may panic,
//! every message received must fit the ring, and while no hostile write has
//! happened the messages must come out exactly as they went in.
#![no_main]

use std::collections::VecDeque;

use ivlink_core::ring::{Consumer, HEADER, Producer, RingLayout};
use ivlink_core::{HeapRegion, Region};
use libfuzzer_sys::fuzz_target;

const AT: usize = 1024;
const CAPACITY: usize = 128;

fuzz_target!(|data: &[u8]| {
    let region = HeapRegion::new(AT + HEADER + CAPACITY + 64);
    let layout = RingLayout::new(region.len(), AT, HEADER + CAPACITY).unwrap();
    layout.init(&*region).unwrap();
    let mut tx = Producer::attach(&*region, layout).unwrap();
    let mut rx = Consumer::attach(&*region, layout).unwrap();
    let mut hostile = false;
    let mut sent: VecDeque<Vec<u8>> = VecDeque::new();
    let mut published: VecDeque<Vec<u8>> = VecDeque::new();
    let mut unpublished = 0usize;
    let mut buf = [0u8; CAPACITY];
    let mut input = data;
    while let Some((&code, rest)) = input.split_first() {
        input = rest;
        match code % 8 {
            0 => {
                let len = usize::from(code >> 3) * 4 % (CAPACITY + 8);
                let message: Vec<u8> = (0..len).map(|i| (i as u8) ^ code).collect();
                match tx.try_send(&message) {
                    Ok(true) => {
                        sent.push_back(message);
                        unpublished += 1;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
            1 => {
                if tx.publish().is_ok() {
                    for _ in 0..unpublished {
                        if let Some(m) = sent.pop_front() {
                            published.push_back(m);
                        }
                    }
                    unpublished = 0;
                }
            }
            2 => match rx.try_recv(&mut buf) {
                Ok(Some(len)) => {
                    assert!(len <= layout.max_message());
                    if !hostile {
                        let expected = published.pop_front().expect("a published message");
                        assert_eq!(&buf[..len], &expected[..]);
                    }
                }
                Ok(None) => assert!(hostile || published.is_empty()),
                Err(e) => {
                    assert!(hostile, "{e}");
                }
            },
            3 => {
                let _ = rx.release();
            }
            4 => {
                let _ = rx.prepare_sleep().and_then(|_| rx.finish_sleep());
                let _ = tx
                    .prepare_sleep(usize::from(code >> 3))
                    .and_then(|_| tx.finish_sleep());
            }
            5 => match (code >> 3) % 4 {
                0 => {
                    let _ = tx.free();
                    let _ = rx.has_data();
                    let _ = layout.snapshot(&*region).map(|s| s.fill());
                }
                // A message written in place through a grant, the same bytes a
                // copy would have sent.
                1 => {
                    let len = usize::from(code >> 5) * 20 % (CAPACITY + 8);
                    let message: Vec<u8> = (0..len).map(|i| (i as u8) ^ code).collect();
                    if let Ok(Some(mut grant)) = tx.reserve(len) {
                        if grant.write(0, &message).is_ok() && grant.commit().is_ok() {
                            sent.push_back(message);
                            unpublished += 1;
                        }
                    }
                }
                // A reserve dropped without a commit leaves nothing behind.
                2 => {
                    let _ = tx.reserve(usize::from(code >> 5) * 12);
                }
                // A message read in place through a grant.
                _ => match rx.peek() {
                    Ok(Some(grant)) => {
                        let len = grant.len();
                        assert!(len <= layout.max_message());
                        let read = grant.read(0, &mut buf[..len]);
                        assert!(grant.read(len, &mut [0u8]).is_err(), "a read past the grant");
                        grant.release();
                        if !hostile {
                            read.expect("a validated record reads in place");
                            let expected = published.pop_front().expect("a published message");
                            assert_eq!(&buf[..len], &expected[..]);
                        }
                    }
                    Ok(None) => assert!(hostile || published.is_empty()),
                    Err(e) => assert!(hostile, "{e}"),
                },
            },
            _ => {
                // A hostile write: offset and 8 bytes from the input.
                if input.len() < 9 {
                    return;
                }
                let (word, rest) = input.split_at(9);
                input = rest;
                let offset = usize::from(word[0]) * 8 % (HEADER + CAPACITY);
                let _ = region.write(AT + offset, &word[1..]);
                hostile = true;
                if code & 8 != 0 {
                    // Re-attach over whatever is there now.
                    if let Ok(p) = Producer::attach(&*region, layout) {
                        tx = p;
                    }
                    if let Ok(c) = Consumer::attach(&*region, layout) {
                        rx = c;
                    }
                }
            }
        }
    }
});
