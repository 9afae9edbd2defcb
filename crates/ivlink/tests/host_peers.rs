//! Two and more host peers on a real server: notifications on every vector, each
//! other's bytes in the region, join and leave events.

use std::time::Duration;

use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostError, HostPeer};
use ivlink::{
    Device, Event, Notify, NotifyError, Region, ServerConfig, TransportErrorKind, WaitFor,
};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));

fn server(dir: &tempfile::TempDir, vectors: u16) -> ServerThread {
    ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        vectors,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn connect(server: &ServerThread) -> HostPeer {
    HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap()
}

#[test]
fn two_peers_notify_each_other_on_every_vector_and_share_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 3);
    let a = connect(&server);
    let b = connect(&server);
    assert_eq!((a.id(), b.id()), (0, 1));
    assert_eq!((a.vectors(), b.vectors()), (3, 3));
    assert_eq!(b.peers(), vec![ivlink::PeerInfo { id: 0, vectors: 3 }]);
    assert_eq!(
        a.wait(WaitFor::PEER_EVENTS, TIMEOUT).unwrap(),
        Some(Event::PeerJoined {
            peer: 1,
            vectors: 3
        })
    );
    assert_eq!(a.region().len(), 1 << 20);

    for vector in 0..3u16 {
        let text = format!("from a on {vector}");
        a.region().write(0, text.as_bytes()).unwrap();
        a.notify(1, vector).unwrap();
        assert_eq!(
            b.wait(WaitFor::vector(vector), TIMEOUT).unwrap(),
            Some(Event::Notified { vector, count: 1 })
        );
        let mut buf = vec![0u8; text.len()];
        b.region().read(0, &mut buf).unwrap();
        assert_eq!(buf, text.as_bytes());

        b.region().write(4096, b"reply").unwrap();
        b.notify(0, vector).unwrap();
        assert_eq!(
            a.wait(WaitFor::vector(vector), TIMEOUT).unwrap(),
            Some(Event::Notified { vector, count: 1 })
        );
        let mut reply = [0u8; 5];
        a.region().read(4096, &mut reply).unwrap();
        assert_eq!(&reply, b"reply");
    }
    assert_eq!(
        a.wait(WaitFor::ANYTHING, Some(Duration::from_millis(20)))
            .unwrap(),
        None
    );
}

#[test]
fn notifications_coalesce_and_wait_only_for_the_vector_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 2);
    let a = connect(&server);
    let b = connect(&server);
    for _ in 0..3 {
        a.notify(b.id(), 1).unwrap();
    }
    a.notify(b.id(), 0).unwrap();
    assert_eq!(
        b.wait(WaitFor::vector(0), TIMEOUT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
    assert_eq!(
        b.wait(WaitFor::vector(1), TIMEOUT).unwrap(),
        Some(Event::Notified {
            vector: 1,
            count: 3
        })
    );
}

#[test]
fn bad_notifications_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 2);
    let a = connect(&server);
    assert_eq!(a.notify(9, 0), Err(NotifyError::UnknownPeer(9)));
    assert_eq!(
        a.notify(a.id(), 2),
        Err(NotifyError::NoSuchVector {
            peer: 0,
            vector: 2,
            available: 2
        })
    );
    // Our own id is accepted: a peer may notify itself.
    a.notify(a.id(), 1).unwrap();
    assert_eq!(
        a.wait(WaitFor::vector(1), TIMEOUT).unwrap(),
        Some(Event::Notified {
            vector: 1,
            count: 1
        })
    );
}

#[test]
fn peers_see_others_join_and_leave_and_the_server_go_away() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1);
    let a = connect(&server);
    let b = connect(&server);
    let c = connect(&server);
    assert_eq!(
        c.peers().iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![0, 1]
    );
    drop(b);
    let mut seen = Vec::new();
    while let Some(event) = a.wait(WaitFor::PEER_EVENTS, TIMEOUT).unwrap() {
        seen.push(event.clone());
        if event == (Event::PeerLeft { peer: 1 }) {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            Event::PeerJoined {
                peer: 1,
                vectors: 1
            },
            Event::PeerJoined {
                peer: 2,
                vectors: 1
            },
            Event::PeerLeft { peer: 1 },
        ]
    );
    assert_eq!(a.peers().iter().map(|p| p.id).collect::<Vec<_>>(), vec![2]);
    server.stop().unwrap();
    assert_eq!(
        c.wait(WaitFor::PEER_EVENTS, TIMEOUT).unwrap(),
        Some(Event::PeerLeft { peer: 1 })
    );
    assert_eq!(
        c.wait(WaitFor::PEER_EVENTS, TIMEOUT).unwrap(),
        Some(Event::PeerLeft { peer: 0 })
    );
    assert_eq!(
        c.wait(WaitFor::PEER_EVENTS, TIMEOUT).unwrap(),
        Some(Event::ServerGone)
    );
    assert!(c.server_gone());
    assert!(!dir.path().join("sock").exists(), "socket removed on stop");
}

#[test]
fn the_wait_fd_becomes_readable_when_a_notification_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1);
    let a = connect(&server);
    let b = connect(&server);
    let fd = b.wait_fd().unwrap();
    assert!(!ivlink::doorbell::poll_readable(fd, Some(Duration::from_millis(10))).unwrap());
    a.notify(b.id(), 0).unwrap();
    assert!(ivlink::doorbell::poll_readable(fd, TIMEOUT).unwrap());
}

#[test]
fn connecting_to_nothing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = HostPeer::connect(&HostConfig::new(dir.path().join("absent"))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot connect to the ivshmem server at"),
        "{text}"
    );
    // Any caller can tell what kind of trouble it is without knowing the host
    // transport; one that does gets the host's error back.
    assert!(
        matches!(&err, ivlink::DeviceError::Transport(e) if e.kind() == TransportErrorKind::NotFound),
        "{err:?}"
    );
    assert!(matches!(
        HostError::find_in(&err),
        Some(HostError::Connect { .. })
    ));
}

#[test]
fn a_full_server_turning_a_peer_away_is_a_refusal_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        max_peers: 1,
        ..ServerConfig::default()
    })
    .unwrap();
    let _only = connect(&server);
    let err = HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server refused the connection (it may be full: see its log)"
    );
    assert!(
        matches!(&err, ivlink::DeviceError::Transport(e) if e.kind() == TransportErrorKind::Refused),
        "{err:?}"
    );
    assert!(matches!(
        HostError::find_in(&err),
        Some(HostError::RefusedByServer)
    ));
}

#[test]
fn once_the_server_is_gone_a_wait_on_a_vector_fails_instead_of_sleeping_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir, 1);
    let a = connect(&server);
    let b = connect(&server);
    a.notify(b.id(), 0).unwrap();
    server.stop().unwrap();
    // What was pending still comes first, and the doorbell between the peers
    // still rings.
    assert_eq!(
        b.wait(WaitFor::vector(0), TIMEOUT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
    let started = std::time::Instant::now();
    let err = b.wait(WaitFor::vector(0), None).unwrap_err();
    assert!(matches!(err, ivlink::DeviceError::ServerGone), "{err}");
    assert_eq!(err.to_string(), "the server went away");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A wait for peer events gets the event once, then the error too.
    assert_eq!(
        b.wait(WaitFor::PEER_EVENTS, TIMEOUT).unwrap(),
        Some(Event::PeerLeft { peer: 0 })
    );
    assert_eq!(
        b.wait(WaitFor::PEER_EVENTS, TIMEOUT).unwrap(),
        Some(Event::ServerGone)
    );
    assert!(matches!(
        b.wait(WaitFor::PEER_EVENTS, TIMEOUT),
        Err(ivlink::DeviceError::ServerGone)
    ));
    assert!(matches!(
        b.wait(WaitFor::NOTHING, Some(Duration::from_millis(1))),
        Err(ivlink::DeviceError::ServerGone)
    ));
}
