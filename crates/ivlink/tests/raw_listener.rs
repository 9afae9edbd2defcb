//! The doorbell sample's receiving side: over a server a ring is heard with the
//! message written before it; over a plain file (no doorbell) a changed message
//! stands for a notification, and an unchanged one is not heard twice.

mod common;

use std::time::{Duration, Instant};

use ivlink::raw_message::{self, Heard, Listener, OFFSET};
use ivlink::{Device, FilePeer, Notify};

/// Calls `next` until it hears something other than a peer event, for at most 10 s.
fn hear(listener: &mut Listener<'_>) -> Heard {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.listen().unwrap() {
            Some(Heard::Peer(_)) | None => {}
            Some(heard) => return heard,
        }
        assert!(Instant::now() < deadline, "nothing heard within 10 s");
    }
}

#[test]
fn a_ring_over_a_server_is_heard_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, rx, tx) = common::two_host_peers(&dir, 1);
    let mut listener = Listener::new(&rx, Duration::from_millis(1));
    raw_message::check_reachable(&tx, rx.id(), 0).unwrap();
    assert!(raw_message::check_reachable(&tx, rx.id(), 1).is_err());
    assert!(raw_message::check_reachable(&tx, 77, 0).is_err());
    raw_message::write(tx.region(), OFFSET, b"ring ring").unwrap();
    tx.notify(rx.id(), 0).unwrap();
    assert!(matches!(
        hear(&mut listener),
        Heard::Notified { vector: 0, .. }
    ));
    assert_eq!(listener.message(), b"ring ring");
}

#[test]
fn over_a_file_a_changed_message_is_heard_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let rx = FilePeer::create(&path, 1 << 16, 0).unwrap();
    let tx = FilePeer::open(&path, 1).unwrap();
    raw_message::write(tx.region(), OFFSET, b"before").unwrap();
    let mut listener = Listener::new(&rx, Duration::from_millis(1));
    for _ in 0..20 {
        assert_eq!(listener.listen().unwrap(), None, "what was there is seen");
    }
    raw_message::write(tx.region(), OFFSET, b"after").unwrap();
    assert_eq!(hear(&mut listener), Heard::Changed);
    assert_eq!(listener.message(), b"after");
    assert_eq!(listener.listen().unwrap(), None, "heard once");
}

#[test]
fn a_raw_send_refuses_the_directory_unless_forced_and_needs_no_doorbell() {
    use ivlink::raw_message::{RawSend, RawSendError, Sent, write_and_notify};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let file = FilePeer::create(&path, 1 << 16, 0).unwrap();
    let directory = ivlink::directory::format(file.region(), 8).unwrap();
    let mut send = RawSend {
        peer: 0,
        vector: 0,
        message: Some(b"over the directory"),
        offset: directory.offset(),
        force: false,
    };
    let refused = write_and_notify(&file, &send).unwrap_err();
    assert!(matches!(refused, RawSendError::Clash { .. }), "{refused}");
    send.force = true;
    assert_eq!(write_and_notify(&file, &send).unwrap(), Sent::WrittenOnly);
    send.message = None;
    let unsupported = write_and_notify(&file, &send).unwrap_err();
    assert!(
        matches!(unsupported, RawSendError::Notify { .. }),
        "{unsupported}"
    );
    send.message = Some(b"in the message area");
    send.offset = OFFSET;
    send.force = false;
    assert_eq!(write_and_notify(&file, &send).unwrap(), Sent::WrittenOnly);
}
