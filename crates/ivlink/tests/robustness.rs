//! The server under hostile or heavy load, watched by raw clients: a peer that
//! never reads is dropped without stalling anybody, a peer that writes is dropped,
//! and a thousand peers with two vectors each all end up knowing each other.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Next, RawClient, config, fds, join, render, start};
use ivlink::ServerConfig;
use rustix::event::epoll;

/// Reads `expected` from `witness`, letting through (and counting) the single
/// notice that the peer `dropped` left, which may come at any point.
fn expect_around(witness: &mut RawClient, expected: &str, dropped: i64, heard: &mut usize) {
    let mut left = expected.split(" | ").count();
    let mut got = Vec::new();
    while left > 0 {
        let m = witness.msg();
        if m.key() == (dropped, false) {
            *heard += 1;
            continue;
        }
        got.push(m.key());
        left -= 1;
    }
    assert_eq!(render(&got), expected);
}

#[test]
fn a_peer_that_never_reads_is_dropped_while_the_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(ServerConfig {
        max_backlog: 32,
        ..config(&dir, 2)
    });
    let path = server.socket_path().to_owned();
    let mut witness = RawClient::connect(&path);
    witness.expect("0 | 0 | -1+fd | 0+fd | 0+fd");
    // Connects, then never reads until the end of the test.
    let mut sleeper = RawClient::connect(&path);
    witness.expect("1+fd | 1+fd");

    // Peers come and go; each one queues 3 messages for the sleeper, whose socket
    // buffer fills and whose queue then passes the limit.
    let mut heard_drop = 0;
    let mut dropped_after = None;
    let mut id = 2i64;
    loop {
        let mut peer = RawClient::connect(&path);
        let with_sleeper = join(&[
            format!("0 | {id} | -1+fd"),
            fds(0, 2),
            fds(1, 2),
            fds(id, 2),
        ]);
        let without_sleeper = join(&[format!("0 | {id} | -1+fd"), fds(0, 2), fds(id, 2)]);
        let mut setup = Vec::new();
        while setup.iter().filter(|&&k| k == (id, true)).count() < 2 {
            setup.push(peer.msg().key());
        }
        let setup = render(&setup);
        if dropped_after.is_some() {
            assert_eq!(
                setup, without_sleeper,
                "a new peer never hears of a dropped one"
            );
        } else {
            assert!(
                setup == with_sleeper || setup == without_sleeper,
                "setup of peer {id}: {setup}"
            );
        }
        expect_around(&mut witness, &fds(id, 2), 1, &mut heard_drop);
        drop(peer);
        expect_around(&mut witness, &id.to_string(), 1, &mut heard_drop);
        if heard_drop > 0 && dropped_after.is_none() {
            dropped_after = Some(id);
        }
        id += 1;
        if let Some(at) = dropped_after
            && id > at + 5
        {
            break;
        }
        assert!(
            id < 10_000,
            "the server never dropped the peer that does not read"
        );
    }
    assert_eq!(heard_drop, 1, "the witness hears of the drop exactly once");
    assert_eq!(server.handle().peer_count(), 1);

    // The witness heard, apart from the sleeper's one departure notice, exactly
    // every arrival and departure, in order.
    let mut expected = vec!["0 | 0 | -1+fd | 0+fd | 0+fd".to_owned(), fds(1, 2)];
    for p in 2..id {
        expected.push(fds(p, 2));
        expected.push(p.to_string());
    }
    let mut log = witness.log.clone();
    let at = log
        .iter()
        .position(|&k| k == (1, false))
        .expect("the sleeper's departure notice");
    assert!(
        at >= 7,
        "the departure notice comes after the sleeper's arrival"
    );
    log.remove(at);
    assert_eq!(render(&log), join(&expected));

    // The sleeper finally reads: whole messages of a valid transcript, cut short
    // where the server gave up, then the end of the connection.
    let mut full = vec!["0 | 1 | -1+fd".to_owned(), fds(0, 2), fds(1, 2)];
    for p in 2..id {
        full.push(fds(p, 2));
        full.push(p.to_string());
    }
    let full = join(&full);
    loop {
        match sleeper.next() {
            Next::Msg(_) => {}
            Next::Eof => break,
            other => panic!("the sleeper read {other:?}"),
        }
    }
    let got = render(&sleeper.log);
    assert!(
        sleeper.log.len() >= 7 && (full == got || full.starts_with(&format!("{got} | "))),
        "the sleeper's transcript is a prefix of the full one: {got}"
    );
}

#[test]
fn a_peer_that_writes_is_dropped_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, 1));
    let path = server.socket_path().to_owned();
    let mut witness = RawClient::connect(&path);
    witness.expect("0 | 0 | -1+fd | 0+fd");

    // After its setup, a peer writes a lot of garbage.
    let mut writer = RawClient::connect(&path);
    writer.expect("0 | 1 | -1+fd | 0+fd | 1+fd");
    witness.expect("1+fd");
    let garbage = [0xa5u8; 64 * 1024];
    let _ = (&writer.socket).write(&garbage); // may be short: the server never reads
    witness.expect("1");
    assert!(matches!(writer.next(), Next::Eof | Next::Reset));

    // A peer that writes before reading anything.
    let early = UnixStream::connect(&path).unwrap();
    (&early).write_all(b"hello?\n").unwrap();
    witness.expect("2+fd | 2");
    drop(early);

    // A peer that shuts its writing side down.
    let mut half = RawClient::connect(&path);
    half.socket.shutdown(Shutdown::Write).unwrap();
    witness.expect("3+fd | 3");
    half.expect("0 | 3 | -1+fd | 0+fd | 3+fd");
    half.expect_eof();

    // The server carries on.
    let mut fresh = RawClient::connect(&path);
    fresh.expect("0 | 4 | -1+fd | 0+fd | 4+fd");
    witness.expect("4+fd");
    assert_eq!(server.handle().peer_count(), 2);
    drop(fresh);
    witness.expect("4");
}

/// What one of many clients has heard, kept as counts (fds are closed at once).
struct Tally {
    socket: Option<UnixStream>,
    messages: usize,
    id: Option<usize>,
    /// Vector fds received per peer id.
    vectors: Vec<u8>,
    /// Peers whose vectors are all here.
    complete: usize,
    /// Departure notices received per peer id.
    gone: Vec<u8>,
    departures: usize,
}

const PEERS: usize = 1000;

impl Tally {
    fn new(socket: UnixStream) -> Self {
        Tally {
            socket: Some(socket),
            messages: 0,
            id: None,
            vectors: vec![0; PEERS],
            complete: 0,
            gone: vec![0; PEERS],
            departures: 0,
        }
    }

    fn knows_everybody(&self) -> bool {
        self.complete == PEERS
    }

    /// Checks one message against what this client has heard so far.
    fn hear(&mut self, value: i64, fd: bool) {
        let n = self.messages;
        self.messages += 1;
        match n {
            0 => assert_eq!((value, fd), (0, false), "version"),
            1 => {
                assert!(!fd && (0..PEERS as i64).contains(&value), "id {value}");
                self.id = Some(value as usize);
            }
            2 => assert_eq!((value, fd), (-1, true), "shared memory"),
            _ => {
                assert!((0..PEERS as i64).contains(&value), "peer id {value}");
                let peer = value as usize;
                assert_eq!(self.gone[peer], 0, "news of peer {peer} after it left");
                if fd {
                    self.vectors[peer] += 1;
                    assert!(self.vectors[peer] <= 2, "a third vector for peer {peer}");
                    if self.vectors[peer] == 2 {
                        self.complete += 1;
                    }
                } else {
                    assert_eq!(self.vectors[peer], 2, "peer {peer} left before it arrived");
                    assert_ne!(Some(peer), self.id, "told of its own departure");
                    self.gone[peer] = 1;
                    self.departures += 1;
                }
            }
        }
    }
}

/// Waits for readable clients (at most `timeout`) and drains each completely.
/// Returns whether anything was ready.
fn pump(
    epoll: &impl AsFd,
    events: &mut Vec<epoll::Event>,
    tallies: &mut [Tally],
    timeout: Option<Duration>,
) -> bool {
    let timeout = timeout.map(ivlink::doorbell::to_timespec);
    events.clear();
    match epoll::wait(
        epoll,
        rustix::buffer::spare_capacity(&mut *events),
        timeout.as_ref(),
    ) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => panic!("epoll_wait: {e}"),
    }
    for event in events.iter() {
        let tally = &mut tallies[event.data.u64() as usize];
        let socket = tally.socket.take().expect("only open clients are watched");
        loop {
            match common::recv_one(socket.as_fd()) {
                Next::Msg(m) => tally.hear(m.value, m.fd.is_some()), // the fd closes here
                Next::Empty => break,
                other => panic!("client {:?} was disconnected: {other:?}", tally.id),
            }
        }
        tally.socket = Some(socket);
    }
    !events.is_empty()
}

#[test]
fn a_thousand_peers_with_two_vectors_all_know_each_other() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, 2));
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    let mut events = Vec::with_capacity(1024);
    let mut tallies: Vec<Tally> = Vec::with_capacity(PEERS);
    let stalled = |tallies: &[Tally]| -> String {
        let behind = tallies
            .iter()
            .filter(|t| t.socket.is_some() && !t.knows_everybody())
            .count();
        format!(
            "no progress for {:?}; {behind} clients incomplete",
            common::TIMEOUT
        )
    };

    // Connect one by one, draining whatever has arrived in between.
    for index in 0..PEERS {
        let socket = UnixStream::connect(server.socket_path()).unwrap();
        socket.set_nonblocking(true).unwrap();
        epoll::add(
            &epoll,
            &socket,
            epoll::EventData::new_u64(index as u64),
            epoll::EventFlags::IN,
        )
        .unwrap();
        tallies.push(Tally::new(socket));
        pump(&epoll, &mut events, &mut tallies, Some(Duration::ZERO));
    }
    while !tallies.iter().all(Tally::knows_everybody) {
        assert!(
            pump(&epoll, &mut events, &mut tallies, Some(common::TIMEOUT)),
            "{}",
            stalled(&tallies)
        );
    }
    let mut ids: Vec<usize> = tallies.iter().map(|t| t.id.unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), PEERS, "every client has a distinct id");
    assert_eq!(server.handle().peer_count(), PEERS);
    // Everybody heard exactly: version, id, shm, 2 vectors for each of 1000 peers.
    for t in &tallies {
        assert_eq!(t.messages, 3 + 2 * PEERS);
    }

    // Half of them leave; the other half hear of each departure exactly once.
    for t in &mut tallies {
        if t.id.unwrap() % 2 == 1 {
            let socket = t.socket.take().unwrap();
            epoll::delete(&epoll, &socket).unwrap();
        }
    }
    let stayed = |t: &Tally| t.socket.is_some();
    while !tallies
        .iter()
        .filter(|t| stayed(t))
        .all(|t| t.departures == PEERS / 2)
    {
        assert!(
            pump(&epoll, &mut events, &mut tallies, Some(common::TIMEOUT)),
            "no departure notices for {:?}",
            common::TIMEOUT
        );
    }
    for t in tallies.iter().filter(|t| stayed(t)) {
        for peer in 0..PEERS {
            assert_eq!(usize::from(t.gone[peer]), peer % 2, "departure of {peer}");
            // What each knows: 2 vectors per peer, minus those that left.
            assert_eq!(t.vectors[peer], 2);
        }
        assert_eq!(t.messages, 3 + 2 * PEERS + PEERS / 2);
    }
    assert_eq!(server.handle().peer_count(), PEERS / 2);
    server.stop().unwrap();
}
