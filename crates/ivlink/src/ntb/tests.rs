use std::time::Duration;

use super::*;
use crate::FilePeer;

const TIMEOUT: Duration = Duration::from_secs(10);

fn peers(dir: &tempfile::TempDir, count: u16) -> Vec<FilePeer> {
    let path = dir.path().join("region");
    (0..count)
        .map(|id| FilePeer::create(&path, 16 << 20, id).unwrap())
        .collect()
}

fn open(device: &dyn Device, ports: u32, port: Option<u32>) -> Ntb<'_> {
    let options = NtbOptions {
        port,
        timeout: TIMEOUT,
        ..NtbOptions::default()
    };
    Ntb::open(device, "ntb", NtbShape::new(ports), options).unwrap()
}

fn linked<'d>(devices: &'d [FilePeer], ports: u32) -> Vec<Ntb<'d>> {
    let ntbs: Vec<_> = devices
        .iter()
        .map(|d| open(d, ports, None))
        .collect::<Vec<_>>();
    for ntb in &ntbs {
        ntb.link_enable().unwrap();
    }
    ntbs
}

#[test]
fn the_seed_lines_doorbell_and_message_cross_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let devices = peers(&dir, 2);
    let ntb = linked(&devices, 2);
    let (a, b) = (&ntb[0], &ntb[1]);
    assert_eq!((a.port_number(), b.port_number()), (0, 1));
    assert_eq!((a.link_is_up().unwrap(), b.link_is_up().unwrap()), (1, 1));

    a.peer_db_set(0xdead_beef).unwrap();
    assert_eq!(b.db_read().unwrap(), 0xdead_beef);
    b.db_clear(0xffff).unwrap();
    assert_eq!(b.db_read().unwrap(), 0xdead_0000);
    assert_eq!(a.peer_db_read().unwrap(), 0xdead_0000);

    assert!(matches!(
        a.peer_msg_write(0, 0, 0xdead_beef).unwrap(),
        MsgWrite::Delivered(_)
    ));
    assert_eq!(
        b.msg_read(0).unwrap(),
        Message {
            data: 0xdead_beef,
            from: Some(0),
            full: true
        }
    );
    assert_eq!(b.msg_read_sts().unwrap(), b.msg_inbits() & 1 << 16);
    // Still full: refused, and the writer's outbound status says so.
    assert!(matches!(
        a.peer_msg_write(0, 0, 1).unwrap(),
        MsgWrite::Refused(_)
    ));
    assert_eq!(a.msg_read_sts().unwrap(), 1);
    b.msg_clear_sts(1 << 16).unwrap();
    assert!(matches!(
        a.peer_msg_write(0, 0, 2).unwrap(),
        MsgWrite::Delivered(_)
    ));
    assert_eq!(b.msg_read(0).unwrap().data, 2);
}

#[test]
fn a_window_granted_by_its_owner_is_written_in_place_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let devices = peers(&dir, 2);
    let ntb = linked(&devices, 2);
    let (a, b) = (&ntb[0], &ntb[1]);
    let inbound = b.mw_buffer(0).unwrap();
    assert_eq!(a.peer_mw_get_addr(0).unwrap(), None);
    let size = 64 << 10;
    let offset = inbound.offset as u64;
    assert!(a.peer_mw_set_trans(0, 0, offset, size).is_err(), "no grant");
    b.mw_set_trans(0, 0, offset, size).unwrap();
    a.peer_mw_set_trans(0, 0, offset, size).unwrap();
    assert_eq!(
        a.peer_mw_get_addr(0).unwrap(),
        Some((
            0,
            Window {
                offset: inbound.offset,
                len: size as usize
            }
        ))
    );
    a.peer_mw_write(0, 100, b"through the window").unwrap();
    let mut got = [0; 18];
    b.mw_read(0, 100, &mut got).unwrap();
    assert_eq!(&got, b"through the window");
    let past = a
        .peer_mw_write(0, size as usize - 4, b"too long")
        .unwrap_err();
    assert_eq!(past.errno(), libc::EINVAL, "{past}");
    // The owner closes the window: the next write is refused, not misplaced.
    b.mw_clear_trans(0, 0).unwrap();
    let closed = a.peer_mw_write(0, 0, b"late").unwrap_err();
    assert_eq!(closed.errno(), libc::EACCES, "{closed}");
}

#[test]
fn writes_to_a_peer_whose_link_is_down_fail_with_enotconn() {
    let dir = tempfile::tempdir().unwrap();
    let devices = peers(&dir, 2);
    let a = open(&devices[0], 2, None);
    let b = open(&devices[1], 2, None);
    a.link_enable().unwrap();
    assert_eq!(a.link_is_up().unwrap(), 0, "b has not enabled its link");
    for error in [
        a.peer_db_set(1).unwrap_err(),
        a.peer_msg_write(0, 0, 1).unwrap_err(),
        a.peer_spad_write(0, 0, 1).unwrap_err(),
    ] {
        assert_eq!(error.errno(), libc::ENOTCONN, "{error}");
    }
    assert_eq!(a.spad_write(99, 1).unwrap_err().errno(), libc::EINVAL);
    assert_eq!(a.peer_spad_read(5, 0).unwrap_err().errno(), libc::EINVAL);
    b.link_enable().unwrap();
    a.peer_spad_write(0, 3, 42).unwrap();
    assert_eq!(b.spad_read(3).unwrap(), 42);
    b.link_disable().unwrap();
    assert_eq!(a.link_is_up().unwrap(), 0);
}

#[test]
fn a_doorbell_wakes_every_thread_waiting_on_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let devices = peers(&dir, 2);
    let ntb = linked(&devices, 2);
    let (a, b) = (&ntb[0], &ntb[1]);
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    b.wait_until(Some(TIMEOUT), |b| {
                        Ok((b.db_read()? & 0x10 != 0).then_some(()))
                    })
                    .unwrap()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        a.peer_db_set(0x10).unwrap();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Some(()));
        }
    });
    let mut seen = b.events();
    assert!(
        b.wait_events(&mut seen, Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_masked_doorbell_raises_no_event_until_unmasked() {
    let dir = tempfile::tempdir().unwrap();
    let devices = peers(&dir, 2);
    let ntb = linked(&devices, 2);
    let (a, b) = (&ntb[0], &ntb[1]);
    let mut seen = b.events();
    b.wait_events(&mut seen, Some(Duration::ZERO)).unwrap();
    b.db_set_mask(0xff).unwrap();
    a.peer_db_set(0x1).unwrap();
    assert!(
        b.wait_events(&mut seen, Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty()
    );
    b.db_clear_mask(0x1).unwrap();
    assert!(
        b.wait_events(&mut seen, Some(TIMEOUT))
            .unwrap()
            .contains(Events::DB)
    );
}

#[test]
fn three_ports_ring_every_linked_peer_and_a_dropped_port_is_free_again() {
    let dir = tempfile::tempdir().unwrap();
    let devices = peers(&dir, 4);
    let ntb = linked(&devices[..3], 3);
    assert_eq!(ntb[0].link_is_up().unwrap(), 0b11);
    ntb[0].peer_db_set(0x4).unwrap();
    assert_eq!(ntb[1].db_read().unwrap(), 0x4);
    assert_eq!(ntb[2].db_read().unwrap(), 0x4);
    let late = Ntb::open(
        &devices[3],
        "ntb",
        NtbShape::new(3),
        NtbOptions {
            timeout: Duration::from_millis(100),
            ..NtbOptions::default()
        },
    );
    assert_eq!(late.unwrap_err().errno(), libc::EBUSY);

    let mut ntb = ntb;
    drop(ntb.remove(2));
    assert_eq!(ntb[0].link_is_up().unwrap(), 0b01);
    let again = open(&devices[3], 3, None);
    assert_eq!(again.port_number(), 2);
    again.link_enable().unwrap();
    assert_eq!(ntb[0].link_is_up().unwrap(), 0b11);
    assert_eq!(again.db_read().unwrap(), 0, "a new owner starts clean");
}

#[test]
fn a_region_holding_something_else_under_the_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let devices = peers(&dir, 1);
    crate::stream::Stream::open(&devices[0], "ntb", 2, 128, 0, TIMEOUT).unwrap();
    let err = Ntb::open(&devices[0], "ntb", NtbShape::new(2), NtbOptions::default()).unwrap_err();
    assert!(err.to_string().contains("another kind"), "{err}");
}
