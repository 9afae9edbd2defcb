//! One suite of checks, run unchanged against every transport that can run in a
//! plain process: a host peer of a real server (in this process, on a private
//! socket), a plain shared file, and OpenAMP's Linux machine (a file and a kick
//! socket in a private directory). Every device is opened through
//! [`Transport::open`], as the tools open them.
//!
//! Each check is written once, generic over a [`Fixture`] that opens two peers of
//! one fresh region. Where a transport legitimately behaves otherwise (a file has
//! no doorbell; OpenAMP ignores the peer and vector it is asked to ring), its
//! [`Capabilities`] say so, in one place, and the check asserts that behaviour
//! instead: nothing is skipped silently.
//!
//! The guest transport (VFIO or sysfs on QEMU's ivshmem PCI device) needs a VM, so
//! it cannot run here and is not in this suite: the VM tests (`cargo xtask
//! vm-test`) exercise it inside guests.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ivlink::server::ServerThread;
use ivlink::transport::host::HostConfig;
use ivlink::transport::openamp::{OpenampOptions, OpenampRole, OpenampShm};
use ivlink::{
    Device, DeviceError, Event, FilePeer, NotifyError, PeerId, Region, Transport, WaitFor,
};

use common::TIMEOUT;

/// How long a wait that should find nothing is given.
const SHORT: Duration = Duration::from_millis(30);

/// What a transport does where transports differ.
#[derive(Debug, Clone, Copy)]
struct Capabilities {
    /// Bytes of region each peer maps.
    region_len: usize,
    /// Vectors each peer has (0: no doorbell; peers poll).
    vectors: usize,
    /// What notifying a peer that does not exist does.
    unknown_peer: Ringing,
    /// What notifying a vector the peer does not have does.
    missing_vector: Ringing,
    /// What [`Device::knows_peers`] says: whether `peers()` is the whole truth.
    knows_peers: bool,
    /// Whether the first peer is told, as an event, when the second one comes and
    /// when it goes (otherwise neither can be seen).
    sees_peers_come_and_go: bool,
    /// Whether a wait without a timeout fails, instead of sleeping, once the only
    /// other peer has gone (nothing can ring any more). Where others may still
    /// come (a server), it sleeps on.
    last_peer_gone_ends_waits: bool,
    /// Whether there is a server whose going away every peer sees.
    server: bool,
    /// A word [`Device::describe`] names the transport by.
    describes_as: &'static str,
    /// How the one-line error opening where nothing is begins.
    nothing_there: &'static str,
}

/// What a notification the transport cannot deliver as asked does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ringing {
    /// Fails, naming the peer or vector.
    Refused,
    /// Rings the one other peer anyway (the transport has one peer and one
    /// vector, and ignores the numbers).
    Ignored,
    /// Fails: there is no doorbell at all.
    Unsupported,
}

/// Two peers of one fresh region: `first` has id 0 and was there first, `second`
/// has id 1.
struct Pair {
    first: Box<dyn Device>,
    second: Box<dyn Device>,
    /// What the peers need to stay up, until the check ends.
    keep: Keep,
}

impl Pair {
    fn new(
        first: Box<dyn Device>,
        second: Box<dyn Device>,
        server: Option<ServerThread>,
        dir: tempfile::TempDir,
    ) -> Self {
        Pair {
            first,
            second,
            keep: Keep { server, _dir: dir },
        }
    }
}

/// The server and the private directory of a [`Pair`].
struct Keep {
    /// The server, for transports that have one.
    server: Option<ServerThread>,
    _dir: tempfile::TempDir,
}

/// A transport under test.
trait Fixture {
    /// How it differs from the others.
    const CAPS: Capabilities;
    /// Two peers of a fresh region in a private directory.
    fn pair() -> Pair;
    /// Opens a peer where nothing is, in `dir` (no server, file or listener).
    fn open_nothing(dir: &std::path::Path) -> Result<Box<dyn Device>, DeviceError>;
}

/// A host peer of a real ivshmem server.
struct Host;

/// Vectors the host fixture's server gives each peer.
const HOST_VECTORS: u16 = 2;

impl Fixture for Host {
    const CAPS: Capabilities = Capabilities {
        region_len: common::SHM_SIZE as usize,
        vectors: HOST_VECTORS as usize,
        unknown_peer: Ringing::Refused,
        missing_vector: Ringing::Refused,
        knows_peers: true,
        sees_peers_come_and_go: true,
        last_peer_gone_ends_waits: false,
        server: true,
        describes_as: "host peer",
        nothing_there: "cannot connect to the ivshmem server at",
    };

    fn open_nothing(dir: &std::path::Path) -> Result<Box<dyn Device>, DeviceError> {
        Transport::Host(HostConfig::new(dir.join("sock"))).open()
    }

    fn pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let server = common::start(common::config(&dir, HOST_VECTORS));
        let transport = Transport::Host(HostConfig::new(server.socket_path()));
        let first = transport.open().unwrap();
        let second = transport.open().unwrap();
        Pair::new(first, second, Some(server), dir)
    }
}

/// A plain shared file, polled.
struct File;

/// Bytes of the file fixture's region.
const FILE_SIZE: u64 = 1 << 16;

impl Fixture for File {
    const CAPS: Capabilities = Capabilities {
        region_len: FILE_SIZE as usize,
        vectors: 0,
        unknown_peer: Ringing::Unsupported,
        missing_vector: Ringing::Unsupported,
        knows_peers: false,
        sees_peers_come_and_go: false,
        last_peer_gone_ends_waits: false,
        server: false,
        describes_as: "shared file",
        nothing_there: "cannot open",
    };

    fn open_nothing(dir: &std::path::Path) -> Result<Box<dyn Device>, DeviceError> {
        Transport::File {
            path: dir.join("region"),
            id: 0,
        }
        .open()
    }

    fn pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        // `Transport::File` opens an existing file: the first peer creates it.
        let first = Box::new(FilePeer::create(&path, FILE_SIZE, 0).unwrap());
        let second = Transport::File { path, id: 1 }.open().unwrap();
        Pair::new(first, second, None, dir)
    }
}

/// OpenAMP's Linux machine: the first peer listens (the RPMsg remote), the
/// second connects (the RPMsg host).
struct Openamp;

/// Bytes of the OpenAMP fixture's region.
const OPENAMP_SIZE: usize = 0x10000;

impl Fixture for Openamp {
    const CAPS: Capabilities = Capabilities {
        region_len: OPENAMP_SIZE,
        vectors: 1,
        unknown_peer: Ringing::Ignored,
        missing_vector: Ringing::Ignored,
        knows_peers: true,
        sees_peers_come_and_go: true,
        last_peer_gone_ends_waits: true,
        server: false,
        describes_as: "openamp-linux",
        nothing_there: "cannot open OpenAMP's notification socket",
    };

    fn open_nothing(dir: &std::path::Path) -> Result<Box<dyn Device>, DeviceError> {
        let options = OpenampOptions {
            connect_timeout: Duration::ZERO,
            ..openamp_options(dir)
        };
        Transport::Openamp {
            role: OpenampRole::Connect,
            options,
        }
        .open()
    }

    fn pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let options = openamp_options(dir.path());
        let open = |role| {
            Transport::Openamp {
                role,
                options: options.clone(),
            }
            .open()
            .unwrap()
        };
        let first = open(OpenampRole::Listen);
        let second = open(OpenampRole::Connect);
        Pair::new(first, second, None, dir)
    }
}

/// The socket and shared memory of one OpenAMP fixture, in `dir`.
fn openamp_options(dir: &std::path::Path) -> OpenampOptions {
    OpenampOptions {
        socket: dir.join("event.0"),
        shm: OpenampShm::File(dir.join("shm")),
        size: OPENAMP_SIZE,
        connect_timeout: TIMEOUT,
        // The checks look at the bytes they write, not at a resource table.
        write_resource_table: false,
    }
}

/// A peer id no fixture gives out.
const NOBODY: PeerId = 99;

/// The next event `what` asks for that is not a [`Event::PeerJoined`] (each
/// fixture's first peer may have one pending from the second joining).
fn next_after_joins(device: &dyn Device, what: WaitFor) -> Option<Event> {
    loop {
        match device.wait(what, Some(TIMEOUT)).unwrap() {
            Some(Event::PeerJoined { .. }) => continue,
            other => return other,
        }
    }
}

/// Runs `wait` on a thread and gives its result, failing the check if it has not
/// returned within [`TIMEOUT`] (a wait that should end must not hang the suite).
fn bounded<T: Send + 'static>(wait: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait());
    });
    rx.recv_timeout(TIMEOUT)
        .expect("the wait returned within the bound")
}

fn opening_where_nothing_is_fails_in_one_clear_line<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let err = bounded({
        let dir = dir.path().to_owned();
        move || F::open_nothing(&dir).map(|_| ())
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(F::CAPS.nothing_there), "{text}");
    assert!(!text.contains('\n'), "{text}");
    // Whatever the transport, a caller can tell that nothing was there.
    assert_eq!(err.kind(), ivlink::TransportErrorKind::NotFound, "{err:?}");
}

fn region_is_shared_both_ways<F: Fixture>() {
    let Pair {
        first,
        second,
        keep: _keep,
    } = F::pair();
    assert_eq!(first.region().len(), F::CAPS.region_len);
    assert_eq!(second.region().len(), F::CAPS.region_len);

    first.region().write(0, b"from the first").unwrap();
    let mut buf = [0u8; 14];
    second.region().read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from the first");

    let end = F::CAPS.region_len - 6;
    second.region().write(end, b"second").unwrap();
    let mut buf = [0u8; 6];
    first.region().read(end, &mut buf).unwrap();
    assert_eq!(&buf, b"second");

    // The region ends where its length says, for both.
    assert!(first.region().write(end + 1, b"second").is_err());
    assert!(second.region().read(F::CAPS.region_len, &mut [0]).is_err());
}

fn ids_vectors_and_description<F: Fixture>() {
    let Pair {
        first,
        second,
        keep: _keep,
    } = F::pair();
    assert_eq!((first.id(), second.id()), (0, 1));
    for device in [&first, &second] {
        assert_eq!(device.vectors(), F::CAPS.vectors, "{}", device.describe());
        assert_eq!(device.has_doorbell(), F::CAPS.vectors > 0);
        assert_eq!(device.wait_fd().is_some(), F::CAPS.vectors > 0);
        assert!(
            device.describe().contains(F::CAPS.describes_as),
            "{}",
            device.describe()
        );
    }
}

fn a_notification_wakes_the_other_peers_wait<F: Fixture>() {
    let Pair {
        first,
        second,
        keep: _keep,
    } = F::pair();
    if F::CAPS.vectors == 0 {
        assert_eq!(first.notify(1, 0), Err(NotifyError::Unsupported));
        // Waiting for a ring that cannot come, forever, is refused at once.
        assert!(matches!(
            second.wait(WaitFor::vector(0), None),
            Err(DeviceError::NoDoorbell)
        ));
        return;
    }
    let last = (F::CAPS.vectors - 1) as u16;
    for (from, to) in [(&first, &second), (&second, &first)] {
        to.region().write(64, &[0]).unwrap();
        from.region().write(64, &[from.id() as u8 + 1]).unwrap();
        from.notify(to.id(), last).unwrap();
        let fd = to.wait_fd().expect("a doorbell has a wait fd");
        assert!(ivlink::doorbell::poll_readable(fd, Some(TIMEOUT)).unwrap());
        assert_eq!(
            next_after_joins(&**to, WaitFor::vector(last)),
            Some(Event::Notified {
                vector: last,
                count: 1
            })
        );
        // What was written before the ring is there once the wait returns.
        let mut seen = [0u8];
        to.region().read(64, &mut seen).unwrap();
        assert_eq!(seen[0], from.id() as u8 + 1);
    }
}

fn a_wait_with_a_timeout_and_nothing_to_find_returns_none<F: Fixture>() {
    let Pair {
        first,
        second,
        keep: _keep,
    } = F::pair();
    for device in [first, second] {
        // Peer events may be pending (the second peer joining); the rest is not.
        for what in [WaitFor::vector(0), WaitFor::NOTHING] {
            let started = Instant::now();
            assert_eq!(device.wait(what, Some(SHORT)).unwrap(), None);
            assert!(started.elapsed() < TIMEOUT);
        }
        // A zero timeout only looks.
        assert_eq!(
            device
                .wait(WaitFor::vector(0), Some(Duration::ZERO))
                .unwrap(),
            None
        );
    }
}

fn ringing_a_peer_or_vector_that_is_not_there<F: Fixture>() {
    let Pair {
        first,
        second,
        keep: _keep,
    } = F::pair();
    let unknown = first.notify(NOBODY, 0);
    let expected = match F::CAPS.unknown_peer {
        Ringing::Refused => Err(NotifyError::UnknownPeer(NOBODY)),
        Ringing::Ignored => Ok(()),
        Ringing::Unsupported => Err(NotifyError::Unsupported),
    };
    assert_eq!(unknown, expected, "ringing a peer that is not there");

    let beyond = F::CAPS.vectors.max(1) as u16;
    let missing = first.notify(second.id(), beyond);
    let expected = match F::CAPS.missing_vector {
        Ringing::Refused => Err(NotifyError::NoSuchVector {
            peer: second.id(),
            vector: beyond,
            available: F::CAPS.vectors,
        }),
        Ringing::Ignored => Ok(()),
        Ringing::Unsupported => Err(NotifyError::Unsupported),
    };
    assert_eq!(missing, expected, "ringing a vector that is not there");

    // An ignored number still rings the other peer; a refused one rings nobody.
    let rang = second.wait(WaitFor::ANYTHING, Some(SHORT)).unwrap();
    let ignored = F::CAPS.unknown_peer == Ringing::Ignored;
    assert_eq!(
        matches!(rang, Some(Event::Notified { .. })),
        ignored,
        "{rang:?}"
    );
}

fn peers_and_knows_peers<F: Fixture>() {
    let Pair {
        first,
        second,
        keep: _keep,
    } = F::pair();
    assert_eq!(first.knows_peers(), F::CAPS.knows_peers);
    assert_eq!(second.knows_peers(), F::CAPS.knows_peers);
    if F::CAPS.knows_peers {
        // Without a wait or a listing: a peer not heard of yet is looked for.
        common::wait_until("the first peer knows of the second", || first.knows_peer(1));
        assert!(second.knows_peer(0));
        assert!(!first.knows_peer(7));
        let expected = vec![ivlink::PeerInfo {
            id: 1,
            vectors: F::CAPS.vectors,
        }];
        common::wait_until("the first peer lists the second", || {
            first.peers() == expected
        });
        assert_eq!(
            second.peers(),
            vec![ivlink::PeerInfo {
                id: 0,
                vectors: F::CAPS.vectors
            }]
        );
    } else {
        // Not knowing, it lists nobody: an empty list then says nothing.
        assert!(first.peers().is_empty());
        assert!(second.peers().is_empty());
        assert!(!first.knows_peer(1));
    }
}

fn the_other_peer_coming_and_going<F: Fixture>() {
    let Pair {
        first,
        second,
        keep: _keep,
    } = F::pair();
    if !F::CAPS.sees_peers_come_and_go {
        drop(second);
        assert_eq!(first.wait(WaitFor::PEER_EVENTS, Some(SHORT)).unwrap(), None);
        return;
    }
    assert_eq!(
        first.wait(WaitFor::PEER_EVENTS, Some(TIMEOUT)).unwrap(),
        Some(Event::PeerJoined {
            peer: 1,
            vectors: F::CAPS.vectors
        })
    );
    drop(second);
    assert_eq!(
        first.wait(WaitFor::PEER_EVENTS, Some(TIMEOUT)).unwrap(),
        Some(Event::PeerLeft { peer: 1 })
    );
    assert_eq!(first.notify(1, 0), Err(NotifyError::UnknownPeer(1)));
    if F::CAPS.knows_peers {
        assert!(!first.knows_peer(1), "a departure read is known");
        assert!(first.peers().is_empty());
    }
    let first: std::sync::Arc<dyn Device> = first.into();
    let waiter = first.clone();
    if F::CAPS.last_peer_gone_ends_waits {
        let result = bounded(move || waiter.wait(WaitFor::vector(0), None).map(|_| ()));
        assert!(result.is_err(), "a wait forever after the last peer left");
    } else {
        assert_eq!(waiter.wait(WaitFor::vector(0), Some(SHORT)).unwrap(), None);
    }
}

fn the_server_going_away<F: Fixture>() {
    let Pair {
        first,
        second,
        mut keep,
    } = F::pair();
    let Some(server) = keep.server.take() else {
        assert!(!F::CAPS.server);
        // No server to lose: a wait for nothing just times out, never "gone".
        assert_eq!(first.wait(WaitFor::NOTHING, Some(SHORT)).unwrap(), None);
        return;
    };
    assert!(F::CAPS.server);
    server.stop().unwrap();
    // Told once, to a wait for peer events (after the second peer's leaving,
    // which the stopping server announces too).
    loop {
        match first.wait(WaitFor::PEER_EVENTS, Some(TIMEOUT)).unwrap() {
            Some(Event::ServerGone) => break,
            Some(Event::PeerJoined { .. } | Event::PeerLeft { .. }) => {}
            other => panic!("expected the server to go, got {other:?}"),
        }
    }
    // Then every wait fails at once, even one without a timeout.
    let first: std::sync::Arc<dyn Device> = first.into();
    for what in [WaitFor::PEER_EVENTS, WaitFor::vector(0), WaitFor::NOTHING] {
        let waiter = first.clone();
        let result = bounded(move || waiter.wait(what, None).map(|_| ()));
        assert!(
            matches!(result, Err(DeviceError::ServerGone)),
            "{what:?}: {result:?}"
        );
    }
    drop(second);
}

/// Instantiates every check for one fixture, as a module of tests.
macro_rules! conformance {
    ($module:ident, $fixture:ty) => {
        conformance!(
            @checks $module,
            $fixture,
            opening_where_nothing_is_fails_in_one_clear_line,
            region_is_shared_both_ways,
            ids_vectors_and_description,
            a_notification_wakes_the_other_peers_wait,
            a_wait_with_a_timeout_and_nothing_to_find_returns_none,
            ringing_a_peer_or_vector_that_is_not_there,
            peers_and_knows_peers,
            the_other_peer_coming_and_going,
            the_server_going_away
        );
    };
    (@checks $module:ident, $fixture:ty, $($check:ident),+) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $check() {
                    super::$check::<$fixture>();
                }
            )+
        }
    };
}

conformance!(host, Host);
conformance!(file, File);
conformance!(openamp, Openamp);
