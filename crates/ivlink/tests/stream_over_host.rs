//! Byte streams between two host peers of a real server: megabytes both ways at
//! once, end of stream on close, and a peer that dies reported as an error.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::stream::Stream;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(20);
const CAPACITY: usize = 64 * 1024;

fn server(dir: &tempfile::TempDir) -> ServerThread {
    ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        vectors: 1,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn peer(server: &ServerThread) -> HostPeer {
    HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap()
}

fn open<'d>(device: &'d HostPeer, other: &HostPeer, name: &str) -> Stream<'d> {
    let mut stream = Stream::open(device, name, other.id(), CAPACITY, 0, TIMEOUT).unwrap();
    stream.set_timeout(Some(TIMEOUT));
    stream
}

/// Byte `i` of what `seed` sends.
fn byte(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

/// FNV-1a over a byte sequence, fed in pieces.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Sends `total` bytes of `seed`'s pattern in uneven pieces, then closes.
fn send_all(mut tx: impl Write, seed: u64, total: u64) -> u64 {
    let mut hash = FNV_START;
    let mut sent = 0u64;
    let mut piece = 1usize;
    let mut buf = vec![0u8; 40_000];
    while sent < total {
        let len = piece.min((total - sent) as usize);
        for (k, b) in buf[..len].iter_mut().enumerate() {
            *b = byte(seed, sent + k as u64);
        }
        tx.write_all(&buf[..len]).unwrap();
        hash = fnv(hash, &buf[..len]);
        sent += len as u64;
        piece = piece * 7 % 39_989 + 1;
    }
    tx.flush().unwrap();
    hash
}

/// Reads to end of stream, checking every byte against `seed`'s pattern.
fn receive_all(mut rx: impl Read, seed: u64) -> (u64, u64) {
    let mut hash = FNV_START;
    let mut got = 0u64;
    let mut buf = vec![0u8; 12_345];
    loop {
        let n = rx.read(&mut buf).unwrap();
        if n == 0 {
            return (got, hash);
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte(seed, got + k as u64), "byte {}", got + k as u64);
        }
        hash = fnv(hash, &buf[..n]);
        got += n as u64;
    }
}

#[test]
fn eight_mebibytes_cross_both_ways_at_once_with_matching_checksums() {
    const TOTAL: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (a, b) = (peer(&server), peer(&server));
    let (a, b) = (&a, &b);
    std::thread::scope(|scope| {
        let ends: Vec<_> = [(a, b, 1u64, 2u64), (b, a, 2, 1)]
            .into_iter()
            .map(|(me, other, mine, theirs)| {
                scope.spawn(move || {
                    // Both open at once: one creates, the other finds it.
                    let (rx, tx) = open(me, other, "bulk").split();
                    std::thread::scope(|inner| {
                        let sender = inner.spawn(move || send_all(tx, mine, TOTAL));
                        let (got, hash) = receive_all(rx, theirs);
                        (sender.join().unwrap(), got, hash)
                    })
                })
            })
            .collect();
        let results: Vec<_> = ends.into_iter().map(|h| h.join().unwrap()).collect();
        let [(sent_a, got_a, hash_a), (sent_b, got_b, hash_b)] = results[..] else {
            unreachable!()
        };
        assert_eq!((got_a, got_b), (TOTAL, TOTAL));
        assert_eq!(hash_a, sent_b, "what A read is what B sent");
        assert_eq!(hash_b, sent_a, "what B read is what A sent");
    });
}

#[test]
fn closing_gives_end_of_stream_after_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (a, b) = (peer(&server), peer(&server));
    let mut left = open(&a, &b, "eof");
    let mut right = open(&b, &a, "eof");
    left.write_all(b"hello, ").unwrap();
    left.write_all(b"world").unwrap();
    left.close().unwrap();
    let mut text = String::new();
    right.read_to_string(&mut text).unwrap();
    assert_eq!(text, "hello, world");
    assert_eq!(right.read(&mut [0u8; 8]).unwrap(), 0, "stays at the end");
    // Half-close: the other way still works until it closes too.
    right.write_all(b"bye").unwrap();
    drop(right);
    let mut reply = Vec::new();
    left.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"bye");
    assert_eq!(
        left.write(b"more").unwrap_err().kind(),
        ErrorKind::BrokenPipe,
        "this side closed"
    );
}

#[test]
fn a_peer_that_dies_is_an_error_not_an_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (a, b) = (peer(&server), peer(&server));
    let mut survivor = open(&a, &b, "fragile");
    let mut doomed = open(&b, &a, "fragile");
    doomed.write_all(b"last").unwrap();
    doomed.flush().unwrap();
    // Die without closing: no close in the region, only the server's PeerLeft.
    std::mem::forget(doomed);
    drop(b);
    let mut buf = [0u8; 16];
    assert_eq!(
        survivor.read(&mut buf).unwrap(),
        4,
        "what it sent still arrives"
    );
    assert_eq!(&buf[..4], b"last");
    let started = std::time::Instant::now();
    let err = survivor.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = survivor.write(b"anyone?").unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
        "{err}"
    );
}

#[test]
fn a_blocked_read_times_out_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (a, b) = (peer(&server), peer(&server));
    let mut lonely = open(&a, &b, "quiet");
    lonely.set_timeout(Some(Duration::from_millis(200)));
    let err = lonely.read(&mut [0u8; 4]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(Stream::open(&a, "quiet", a.id(), CAPACITY, 0, TIMEOUT).is_err());
    let c = peer(&server);
    let err = Stream::open(&c, "quiet", a.id(), CAPACITY, 0, TIMEOUT)
        .err()
        .unwrap();
    assert!(err.to_string().contains("not this pair"), "{err}");
    let err = Stream::open(&a, "quiet", b.id(), CAPACITY, 0, TIMEOUT)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("already"),
        "a side attaches once: {err}"
    );
}
