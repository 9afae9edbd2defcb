//! NTB ports on host peers of a real server: doorbells, messages and windows
//! across processes' doorbells, waits woken by the eventfd, and a peer that
//! vanishes without giving its port up.

use std::time::{Duration, Instant};

use ivlink::ntb::{Events, MsgWrite, Ntb, NtbOptions, NtbShape};
use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::wait::SpinThenSleep;
use ivlink::{Device, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(20);

fn server(dir: &tempfile::TempDir) -> ServerThread {
    ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 16 << 20,
        vectors: 1,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn peer(server: &ServerThread) -> HostPeer {
    HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap()
}

/// Opens port `port` of a `ports`-port switch, sleeping at once on waits so
/// that the doorbell is what wakes them.
fn open(device: &dyn Device, ports: u32, port: Option<u32>) -> Ntb<'_> {
    let options = NtbOptions {
        port,
        timeout: TIMEOUT,
        policy: SpinThenSleep {
            spin: Duration::ZERO,
        },
    };
    let ntb = Ntb::open(device, "ntb", NtbShape::new(ports), options).unwrap();
    ntb.link_enable().unwrap();
    ntb
}

fn wait_link(ntb: &Ntb<'_>, want: u64) {
    let got = ntb
        .wait_until(Some(TIMEOUT), |n| {
            Ok((n.link_is_up()? == want).then_some(()))
        })
        .unwrap();
    assert_eq!(
        got,
        Some(()),
        "link of port {} never became {want:#b}",
        ntb.port_number()
    );
}

#[test]
fn a_doorbell_and_a_message_wake_the_sleeping_peer() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (da, db) = (peer(&server), peer(&server));
    let a = open(&da, 2, None);
    let b = open(&db, 2, None);
    wait_link(&a, 1);
    wait_link(&b, 1);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            b.wait_until(Some(TIMEOUT), |b| {
                let db = b.db_read()?;
                Ok((db == 0xdead_beef).then_some(db))
            })
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(50));
        a.peer_db_set(0xdead_beef).unwrap();
        assert_eq!(waiter.join().unwrap(), Some(0xdead_beef));
    });

    let mut seen = b.events();
    assert!(matches!(
        a.peer_msg_write(0, 0, 0xdead_beef).unwrap(),
        MsgWrite::Delivered(_)
    ));
    assert!(
        b.wait_events(&mut seen, Some(TIMEOUT))
            .unwrap()
            .contains(Events::MSG)
    );
    let message = b.msg_read(0).unwrap();
    assert_eq!((message.data, message.from), (0xdead_beef, Some(0)));
}

#[test]
fn a_vanished_peer_takes_its_link_down_and_its_port_is_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let da = peer(&server);
    let a = open(&da, 3, None);
    let db = peer(&server);
    let b = open(&db, 3, Some(1));
    let dc = peer(&server);
    let c = open(&dc, 3, Some(2));
    wait_link(&a, 0b11);

    // The process dies without giving the port up: only the server's word
    // that its peer left frees it.
    std::mem::forget(b);
    drop(db);
    let started = Instant::now();
    wait_link(&a, 0b10);
    wait_link(&c, 0b01);
    assert!(started.elapsed() < TIMEOUT);
    // Writes judge the link as this process heard it: down, once waits took
    // the departure in.
    let err = c.peer_spad_write(1, 0, 1).unwrap_err();
    assert_eq!(err.errno(), libc::ENOTCONN);
    c.peer_db_set(1).unwrap();

    let db = peer(&server);
    let b = open(&db, 3, Some(1));
    wait_link(&a, 0b11);
    assert_eq!(b.link_is_up().unwrap(), 0b11);
    a.peer_spad_write(0, 0, 7).unwrap();
    assert_eq!(b.spad_read(0).unwrap(), 7);
}

#[test]
fn a_port_held_by_a_live_peer_is_refused_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (da, db) = (peer(&server), peer(&server));
    let _a = open(&da, 2, Some(0));
    let options = NtbOptions {
        port: Some(0),
        timeout: Duration::from_millis(300),
        ..NtbOptions::default()
    };
    let err = Ntb::open(&db, "ntb", NtbShape::new(2), options).unwrap_err();
    assert_eq!(err.errno(), libc::EBUSY);
    assert_eq!(err.to_string(), "NTB port 0 is taken by a live peer");
}
