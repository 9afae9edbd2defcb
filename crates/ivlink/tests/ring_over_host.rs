//! A ring between two host peers of a real server: the consumer spins, then
//! sleeps on its doorbell; the producer rings only when asked.

mod common;

use std::time::Duration;

use ivlink::wait::{DataIn, SpaceIn, SpinThenSleep};
use ivlink::{Device, Notify, Region};
use ivlink_core::ring::{Consumer, Producer, RingLayout};

const MESSAGES: u32 = 20_000;
const OFFSET: usize = 1 << 16;

fn run(spin: Duration) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let (_server, sender, receiver) = common::two_host_peers(&dir, 1);
    let layout = RingLayout::new(
        sender.region().len(),
        OFFSET,
        RingLayout::section_size(4096),
    )
    .unwrap();
    layout.init(sender.region()).unwrap();
    let policy = SpinThenSleep { spin };
    let (receiver_id, sender_id) = (receiver.id(), sender.id());
    let mut doorbells = 0u64;
    std::thread::scope(|scope| {
        let receiver = &receiver;
        scope.spawn(move || {
            let mut rx = Consumer::attach(receiver.region(), layout).unwrap();
            let mut buf = [0u8; 256];
            for expected in 0..MESSAGES {
                let len = loop {
                    if let Some(len) = rx.try_recv(&mut buf).unwrap() {
                        break len;
                    }
                    if rx.release().unwrap() {
                        receiver.notify(sender_id, 0).unwrap();
                    }
                    let woke = policy
                        .wait(
                            &mut DataIn(&mut rx),
                            receiver,
                            0,
                            Some(Duration::from_secs(10)),
                        )
                        .unwrap();
                    assert!(woke, "no message {expected} within 10 s");
                };
                assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), expected);
                assert_eq!(len, 4 + (expected % 200) as usize);
            }
            rx.release().unwrap();
        });
        let mut tx = Producer::attach(sender.region(), layout).unwrap();
        for seq in 0..MESSAGES {
            let mut message = vec![0xa5u8; 4 + (seq % 200) as usize];
            message[..4].copy_from_slice(&seq.to_le_bytes());
            while !tx.try_send(&message).unwrap() {
                if tx.publish().unwrap() {
                    sender.notify(receiver_id, 0).unwrap();
                    doorbells += 1;
                }
                policy
                    .wait(
                        &mut SpaceIn(&mut tx, message.len()),
                        &sender,
                        0,
                        Some(Duration::from_secs(10)),
                    )
                    .unwrap();
            }
            // Batches of 16: one publication and one flag check per batch.
            if seq % 16 == 15 && tx.publish().unwrap() {
                sender.notify(receiver_id, 0).unwrap();
                doorbells += 1;
            }
        }
        if tx.publish().unwrap() {
            sender.notify(receiver_id, 0).unwrap();
            doorbells += 1;
        }
    });
    doorbells
}

#[test]
fn a_sleeping_receiver_gets_every_message_and_is_rung_only_when_asleep() {
    let doorbells = run(Duration::ZERO);
    assert!(doorbells > 0, "a receiver that never spins must have slept");
    assert!(
        doorbells < u64::from(MESSAGES),
        "rung {doorbells} times for {MESSAGES} messages: not per message"
    );
}

#[test]
fn a_spinning_receiver_gets_every_message() {
    run(Duration::from_millis(5));
}
