use super::*;
use crate::FilePeer;

/// Over a plain file (no doorbell) both sides poll; the link works the same.
#[test]
fn native_echo_over_a_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let host_dev = FilePeer::create(&path, 1 << 20, 1).unwrap();
    let remote_dev = FilePeer::create(&path, 1 << 20, 2).unwrap();
    let timeout = Some(Duration::from_secs(10));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let options = RpmsgOptions::new(Profile::Native, Role::Remote);
            let mut remote = RpmsgLink::open(&remote_dev, &options).unwrap();
            let ep = remote.create_endpoint("echo", None, None).unwrap();
            let mut echoed = 0;
            while echoed < 50 {
                if let Some(LinkEvent::Message { src, .. }) = remote.next_event(timeout).unwrap() {
                    let data = remote.payload().to_vec();
                    remote.send(ep, Some(src), &data, timeout).unwrap();
                    echoed += 1;
                }
            }
        });
        let options = RpmsgOptions::new(Profile::Native, Role::Host);
        let mut host = RpmsgLink::open(&host_dev, &options).unwrap();
        let ep = host.create_endpoint("echo", None, None).unwrap();
        while !matches!(
            host.next_event(timeout).unwrap(),
            Some(LinkEvent::Bound { .. })
        ) {}
        for i in 0..50u32 {
            let msg = vec![i as u8; (i as usize * 11) % host.max_payload()];
            host.send(ep, None, &msg, timeout).unwrap();
            loop {
                match host.next_event(timeout).unwrap() {
                    Some(LinkEvent::Message { .. }) => break,
                    Some(_) => {}
                    None => panic!("no echo for message {i}"),
                }
            }
            assert_eq!(host.payload(), &msg[..]);
        }
    });
}

#[test]
fn a_section_of_another_kind_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dev = FilePeer::create(&dir.path().join("region"), 1 << 20, 1).unwrap();
    crate::mailbox::open_named(
        &dev,
        "rpmsg",
        ivlink_core::mailbox::MailboxShape {
            max_members: 2,
            max_data: 8,
            id_count: 1,
            vector: 0,
            completion_vector: 0,
        },
        Duration::from_secs(1),
    )
    .unwrap();
    let options = RpmsgOptions::new(Profile::Native, Role::Host);
    assert!(matches!(
        RpmsgLink::open(&dev, &options),
        Err(RpmsgLinkError::Rpmsg(RpmsgError::Layout(_)))
    ));
}

#[test]
fn a_native_section_whose_creator_died_mid_setup_is_set_up_again() {
    use ivlink_core::directory::{Directory, SectionKind, SectionSpec};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let mut options = RpmsgOptions::new(Profile::Native, Role::Host);
    options.setup_timeout = Duration::from_secs(20);
    let dead = FilePeer::create(&path, 1 << 20, 7).unwrap();
    let size = options.shape.section_size().unwrap();
    let stuck = Directory::open_or_create(dead.region(), 64)
        .unwrap()
        .add(&SectionSpec::new("rpmsg", SectionKind::Rpmsg, size).with_align(4096))
        .unwrap();
    drop(dead);
    let dev = FilePeer::create(&path, 1 << 20, 1).unwrap();
    RpmsgLink::open(&dev, &options).unwrap();
    let now = Directory::open(dev.region())
        .unwrap()
        .find("rpmsg")
        .unwrap()
        .unwrap();
    assert_ne!(now.offset, stuck.offset, "set up again in fresh bytes");
}

/// A message's payload stays readable while a later send waits for a buffer and
/// keeps what arrives meanwhile for the next event.
#[test]
fn a_payload_outlives_a_send_that_waits_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let host_dev = FilePeer::create(&path, 1 << 20, 1).unwrap();
    let remote_dev = FilePeer::create(&path, 1 << 20, 2).unwrap();
    let mut host =
        RpmsgLink::open(&host_dev, &RpmsgOptions::new(Profile::Native, Role::Host)).unwrap();
    let mut remote = RpmsgLink::open(
        &remote_dev,
        &RpmsgOptions::new(Profile::Native, Role::Remote),
    )
    .unwrap();
    let host_ep = host.create_endpoint("echo", None, None).unwrap();
    let remote_ep = remote.create_endpoint("echo", None, None).unwrap();
    let mut bound = false;
    for _ in 0..10_000 {
        while remote.try_event().unwrap().is_some() {}
        while let Some(event) = host.try_event().unwrap() {
            bound |= matches!(event, LinkEvent::Bound { .. });
        }
        if bound {
            break;
        }
    }
    assert!(bound, "the link did not come up");
    let timeout = Some(Duration::from_millis(50));
    remote.send(remote_ep, None, b"first", timeout).unwrap();
    assert!(matches!(
        host.try_event().unwrap(),
        Some(LinkEvent::Message { len: 5, .. })
    ));
    assert_eq!(host.payload(), b"first");
    remote.send(remote_ep, None, b"second", timeout).unwrap();
    // The remote takes nothing: the host runs out of buffers, and its waiting
    // send polls the second message in.
    let mut sent = 0;
    while host.send(host_ep, None, b"x", timeout).is_ok() {
        sent += 1;
        assert!(sent < 10_000, "the host never ran out of buffers");
    }
    assert_eq!(host.payload(), b"first");
    assert!(matches!(
        host.try_event().unwrap(),
        Some(LinkEvent::Message { len: 6, .. })
    ));
    assert_eq!(host.payload(), b"second");
}
