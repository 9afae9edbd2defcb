use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU32, Ordering};

use ivlink_core::Region;

use super::*;
use crate::device::WaitFor;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));
const SHORT: Option<Duration> = Some(Duration::from_millis(30));

/// Options in a private directory: never the samples' socket or shm object.
fn options(dir: &Path) -> OpenampOptions {
    OpenampOptions {
        socket: dir.join("event.0"),
        shm: OpenampShm::File(dir.join("shm")),
        size: 0x10000,
        connect_timeout: Duration::from_secs(5),
        // These tests look at the bytes they write; the table has its own test.
        write_resource_table: false,
    }
}

fn pair(dir: &Path) -> (OpenampPeer, OpenampPeer) {
    let remote = OpenampPeer::listen(options(dir)).unwrap();
    let host = OpenampPeer::connect(options(dir)).unwrap();
    (remote, host)
}

/// A POSIX shm object for one test, removed when the test ends (even by panic).
struct PosixShm(OpenampShm);

impl PosixShm {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ivlink-test-openamp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        PosixShm(OpenampShm::Posix(name))
    }

    fn path(&self) -> PathBuf {
        match &self.0 {
            OpenampShm::Posix(name) => Path::new("/dev/shm").join(name),
            OpenampShm::File(path) => path.clone(),
        }
    }
}

impl Drop for PosixShm {
    fn drop(&mut self) {
        let _ = self.0.unlink();
    }
}

#[test]
fn the_defaults_are_the_samples() {
    let options = OpenampOptions::default();
    assert_eq!(options.socket, Path::new("/tmp/openamp.event.0"));
    assert_eq!(options.shm, OpenampShm::Posix("openamp.shm".into()));
    assert_eq!(options.size, 0x80000);
    assert_eq!(options.connect_timeout, Duration::from_millis(49_500));
}

#[test]
fn both_sides_map_the_same_posix_shm_object() {
    let dir = tempfile::tempdir().unwrap();
    let shm = PosixShm::new();
    let options = OpenampOptions {
        shm: shm.0.clone(),
        size: DEFAULT_SIZE,
        ..options(dir.path())
    };
    let remote = OpenampPeer::listen(options.clone()).unwrap();
    let host = OpenampPeer::connect(options).unwrap();
    assert_eq!(
        std::fs::metadata(shm.path()).unwrap().len(),
        DEFAULT_SIZE as u64
    );
    assert_eq!(remote.region().len(), DEFAULT_SIZE);
    assert_eq!(host.region().len(), DEFAULT_SIZE);

    remote.region().write(0x2C, &[4]).unwrap();
    let mut status = [0u8; 1];
    host.region().read(0x2C, &mut status).unwrap();
    assert_eq!(status, [4]);
    host.region().write(0x7FFF0, b"from the host").unwrap();
    let mut buf = [0u8; 13];
    remote.region().read(0x7FFF0, &mut buf).unwrap();
    assert_eq!(&buf, b"from the host");
    assert!(remote.region().read(DEFAULT_SIZE - 4, &mut buf).is_err());

    let name = match &shm.0 {
        OpenampShm::Posix(name) => name.clone(),
        OpenampShm::File(_) => unreachable!(),
    };
    assert_eq!(
        remote.describe(),
        format!(
            "openamp-linux socket {} (remote side), shm {name}",
            dir.path().join("event.0").display()
        )
    );
    let path = shm.path();
    drop(shm);
    assert!(!path.exists(), "the test's shm object is removed");
}

#[test]
fn listening_rewrites_a_leftover_resource_table_before_the_socket_exists() {
    let dir = tempfile::tempdir().unwrap();
    let with_table = OpenampOptions {
        write_resource_table: true,
        ..options(dir.path())
    };
    // What an earlier run leaves: a host's DRIVER_OK and accepted features.
    {
        let earlier = OpenampPeer::listen(with_table.clone()).unwrap();
        earlier.region().write(0x2C, &[4]).unwrap();
        earlier.region().write(0x24, &1u32.to_le_bytes()).unwrap();
    }
    assert_eq!(std::fs::read(dir.path().join("shm")).unwrap()[0x2C], 4);
    assert!(!dir.path().join("event.0").exists());

    let remote = OpenampPeer::listen(with_table).unwrap();
    let mut status = [0xFFu8; 1];
    remote.region().read(0x2C, &mut status).unwrap();
    assert_eq!(status, [0], "the status byte is reset");
    let mut gfeatures = [0xFFu8; 4];
    remote.region().read(0x24, &mut gfeatures).unwrap();
    assert_eq!(gfeatures, [0; 4], "the accepted features are reset");
    assert!(resource_table::check(remote.region()).unwrap());
}

#[test]
fn a_small_file_grows_and_a_large_one_keeps_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shm");
    std::fs::write(&path, b"kept").unwrap();
    let remote = OpenampPeer::listen(options(dir.path())).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0x10000);
    let mut buf = [0u8; 4];
    remote.region().read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"kept");
    drop(remote);

    let small = OpenampOptions {
        size: 0x1000,
        ..options(dir.path())
    };
    let remote = OpenampPeer::listen(small).unwrap();
    assert_eq!(remote.region().len(), 0x1000);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0x10000);

    let empty = OpenampOptions {
        size: 0,
        ..options(dir.path())
    };
    assert!(OpenampPeer::connect(empty).is_err());
}

#[test]
fn kicks_wake_the_other_side() {
    let dir = tempfile::tempdir().unwrap();
    let (remote, host) = pair(dir.path());
    assert_eq!(
        (remote.role(), host.role()),
        (OpenampRole::Listen, OpenampRole::Connect)
    );
    assert_eq!((remote.id(), host.id()), (0, 1));
    assert_eq!(remote.socket_path(), dir.path().join("event.0"));
    assert_eq!((remote.vectors(), host.vectors()), (1, 1));
    assert!(remote.has_doorbell());
    assert_eq!(
        host.describe(),
        format!(
            "openamp-linux socket {} (host side), shm file {}",
            dir.path().join("event.0").display(),
            dir.path().join("shm").display()
        )
    );

    // The remote side takes the connection while waiting and says so.
    assert_eq!(
        remote.wait(WaitFor::PEER_EVENTS, WAIT).unwrap(),
        Some(Event::PeerJoined {
            peer: 1,
            vectors: 1
        })
    );
    assert_eq!(remote.peers(), vec![PeerInfo { id: 1, vectors: 1 }]);
    assert_eq!(host.peers(), vec![PeerInfo { id: 0, vectors: 1 }]);

    // Host to remote; peer and vector are ignored.
    host.notify(0, 0).unwrap();
    assert_eq!(
        remote.wait(WaitFor::vector(0), WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
    // Remote to host.
    remote.notify(1, 7).unwrap();
    assert_eq!(
        host.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
    // Kicks coalesce, one count per byte.
    for _ in 0..3 {
        host.notify(0, 1).unwrap();
    }
    assert_eq!(
        remote.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 3
        })
    );
    // Nothing left: timeouts are `None`.
    assert_eq!(remote.wait(WaitFor::ANYTHING, SHORT).unwrap(), None);
    assert_eq!(host.wait(WaitFor::ANYTHING, SHORT).unwrap(), None);
    // Waiting for another vector leaves a kick pending.
    remote.notify(1, 0).unwrap();
    assert_eq!(host.wait(WaitFor::vector(1), SHORT).unwrap(), None);
    assert!(matches!(
        host.wait(WaitFor::vector(0), WAIT).unwrap(),
        Some(Event::Notified { vector: 0, .. })
    ));

    // A wait without a timeout, woken from another thread.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| host.wait(WaitFor::vector(0), None).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        remote.notify(1, 0).unwrap();
        assert_eq!(
            waiter.join().unwrap(),
            Some(Event::Notified {
                vector: 0,
                count: 1
            })
        );
    });
}

#[test]
fn the_wait_fd_becomes_readable_on_a_kick_and_on_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let remote = OpenampPeer::listen(options(dir.path())).unwrap();
    let remote_fd = remote.wait_fd().unwrap();
    assert!(!crate::doorbell::poll_readable(remote_fd, Some(Duration::ZERO)).unwrap());
    let host = OpenampPeer::connect(options(dir.path())).unwrap();
    // The listener is in the set until the connection is taken.
    assert!(crate::doorbell::poll_readable(remote_fd, WAIT).unwrap());
    assert!(remote.is_connected());

    let host_fd = host.wait_fd().unwrap();
    assert!(!crate::doorbell::poll_readable(host_fd, Some(Duration::ZERO)).unwrap());
    remote.notify(1, 0).unwrap();
    assert!(crate::doorbell::poll_readable(host_fd, WAIT).unwrap());
    assert!(host.wait(WaitFor::ANYTHING, WAIT).unwrap().is_some());
    assert!(!crate::doorbell::poll_readable(host_fd, Some(Duration::ZERO)).unwrap());
}

#[test]
fn a_kick_before_the_peer_connects_is_delivered_on_accept() {
    let dir = tempfile::tempdir().unwrap();
    let remote = OpenampPeer::listen(options(dir.path())).unwrap();
    assert_eq!(remote.peers(), Vec::new());
    assert!(!remote.is_connected());
    // Nobody to kick yet: remembered, once.
    remote.notify(1, 0).unwrap();
    remote.notify(1, 0).unwrap();
    let host = OpenampPeer::connect(options(dir.path())).unwrap();
    // Not accepted yet, so not sent yet.
    assert_eq!(host.wait(WaitFor::ANYTHING, SHORT).unwrap(), None);
    // Any use of the remote side accepts, and the kick goes out.
    assert_eq!(remote.peers(), vec![PeerInfo { id: 1, vectors: 1 }]);
    assert_eq!(
        host.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
    assert_eq!(host.wait(WaitFor::ANYTHING, SHORT).unwrap(), None);

    // A kick while the peer waits in the backlog is accepted and sent at once.
    let dir = tempfile::tempdir().unwrap();
    let remote = OpenampPeer::open(OpenampRole::Listen, options(dir.path())).unwrap();
    let host = OpenampPeer::open(OpenampRole::Connect, options(dir.path())).unwrap();
    remote.notify(1, 0).unwrap();
    assert_eq!(
        host.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
}

#[test]
fn the_connecting_side_retries_until_someone_listens() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    std::thread::scope(|s| {
        let listener = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            OpenampPeer::listen(options(dir.path())).unwrap()
        });
        let host = OpenampPeer::connect(options(dir.path())).unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        let remote = listener.join().unwrap();
        host.notify(0, 0).unwrap();
        assert_eq!(
            remote.wait(WaitFor::vector(0), WAIT).unwrap(),
            Some(Event::Notified {
                vector: 0,
                count: 1
            })
        );
        remote.notify(1, 0).unwrap();
        assert!(host.wait(WaitFor::vector(0), WAIT).unwrap().is_some());
    });
}

#[test]
fn connecting_gives_up_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = OpenampPeer::connect(OpenampOptions {
        connect_timeout: Duration::from_millis(200),
        ..options(dir.path())
    })
    .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, DeviceError::Open { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("OpenAMP's notification socket"),
        "{message}"
    );
    assert!(message.contains("within 0.2 s"), "{message}");
    assert!(!message.contains("ivshmem server"), "{message}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");

    let started = Instant::now();
    assert!(
        OpenampPeer::connect(OpenampOptions {
            connect_timeout: Duration::ZERO,
            ..options(dir.path())
        })
        .is_err()
    );
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[test]
fn the_host_closing_is_reported_on_the_remote_side() {
    let dir = tempfile::tempdir().unwrap();
    let (remote, host) = pair(dir.path());
    assert!(remote.is_connected());
    // Kicks sent before closing still arrive, then the leave.
    host.notify(0, 0).unwrap();
    host.notify(0, 0).unwrap();
    drop(host);
    assert_eq!(
        remote.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::PeerJoined {
            peer: 1,
            vectors: 1
        })
    );
    assert_eq!(
        remote.wait(WaitFor::vector(0), WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 2
        })
    );
    assert_eq!(
        remote.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::PeerLeft { peer: 1 })
    );
    assert!(remote.peer_closed());
    assert_eq!(remote.peers(), Vec::new());
    assert_eq!(remote.notify(1, 0), Err(NotifyError::UnknownPeer(1)));
    assert_eq!(remote.wait(WaitFor::ANYTHING, SHORT).unwrap(), None);
    // Nothing can ring any more: waiting forever is an error, not a hang.
    let err = remote.wait(WaitFor::vector(0), None).unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");

    // A host that connects and leaves before it is ever accepted.
    let dir = tempfile::tempdir().unwrap();
    let (remote, host) = pair(dir.path());
    drop(host);
    assert_eq!(
        remote.wait(WaitFor::PEER_EVENTS, WAIT).unwrap(),
        Some(Event::PeerJoined {
            peer: 1,
            vectors: 1
        })
    );
    assert_eq!(
        remote.wait(WaitFor::PEER_EVENTS, WAIT).unwrap(),
        Some(Event::PeerLeft { peer: 1 })
    );
}

#[test]
fn the_remote_closing_is_reported_on_the_host_side() {
    let dir = tempfile::tempdir().unwrap();
    let (remote, host) = pair(dir.path());
    remote.notify(1, 0).unwrap();
    drop(remote);
    assert_eq!(
        host.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
    assert_eq!(
        host.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::PeerLeft { peer: 0 })
    );
    assert_eq!(host.notify(0, 0), Err(NotifyError::UnknownPeer(0)));
    assert_eq!(host.peers(), Vec::new());

    // A wait for kicks only, blocked when the remote goes, ends with an error and
    // leaves the leave pending.
    let dir = tempfile::tempdir().unwrap();
    let (remote, host) = pair(dir.path());
    assert!(remote.is_connected());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| host.wait(WaitFor::vector(0), None));
        std::thread::sleep(Duration::from_millis(50));
        drop(remote);
        let err = waiter.join().unwrap().unwrap_err();
        assert!(matches!(err, DeviceError::Io { .. }), "{err}");
    });
    assert_eq!(
        host.wait(WaitFor::PEER_EVENTS, None).unwrap(),
        Some(Event::PeerLeft { peer: 0 })
    );

    // Noticed by notifying too, without waiting first.
    let dir = tempfile::tempdir().unwrap();
    let (remote, host) = pair(dir.path());
    assert!(remote.is_connected());
    drop(remote);
    assert_eq!(host.notify(0, 0), Err(NotifyError::UnknownPeer(0)));
    assert_eq!(
        host.wait(WaitFor::PEER_EVENTS, WAIT).unwrap(),
        Some(Event::PeerLeft { peer: 0 })
    );
}

#[test]
fn a_notify_storm_neither_blocks_nor_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (remote, host) = pair(dir.path());
    assert!(remote.is_connected());
    let started = Instant::now();
    for _ in 0..10_000 {
        host.notify(0, 0).unwrap();
        remote.notify(1, 0).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for side in [&remote, &host] {
        let mut total = 0;
        while let Some(event) = side.wait(WaitFor::ANYTHING, SHORT).unwrap() {
            match event {
                Event::Notified { vector: 0, count } => total += count,
                other => assert!(matches!(other, Event::PeerJoined { .. }), "{other}"),
            }
        }
        assert!((1..=10_000).contains(&total), "{total}");
    }
    // Drained: the next kick is counted alone.
    host.notify(0, 0).unwrap();
    assert_eq!(
        remote.wait(WaitFor::ANYTHING, WAIT).unwrap(),
        Some(Event::Notified {
            vector: 0,
            count: 1
        })
    );
}

#[test]
fn a_stale_socket_is_replaced_and_other_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("event.0");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a dead socket file stays behind");
    let (remote, host) = pair(dir.path());
    host.notify(0, 0).unwrap();
    assert!(remote.wait(WaitFor::vector(0), WAIT).unwrap().is_some());
    drop(remote);
    assert!(
        !socket.exists(),
        "the listening side removes its socket file"
    );
    drop(host);

    std::fs::write(&socket, b"not a socket").unwrap();
    let err = OpenampPeer::listen(options(dir.path())).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
}

#[test]
fn a_socket_replaced_by_another_listener_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let first = OpenampPeer::listen(options(dir.path())).unwrap();
    let second = OpenampPeer::listen(options(dir.path())).unwrap();
    drop(first);
    let socket = dir.path().join("event.0");
    assert!(socket.exists(), "the second listener's socket stays");
    let host = OpenampPeer::connect(options(dir.path())).unwrap();
    host.notify(0, 0).unwrap();
    assert!(second.wait(WaitFor::vector(0), WAIT).unwrap().is_some());
}

#[test]
fn the_rpmsg_remote_listens_and_the_host_connects() {
    use ivlink_core::rpmsg::Role;
    assert_eq!(OpenampRole::from(Role::Remote), OpenampRole::Listen);
    assert_eq!(OpenampRole::from(Role::Host), OpenampRole::Connect);
}
