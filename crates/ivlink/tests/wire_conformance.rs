//! Wire conformance of the embedded server, measured with a raw client that reads
//! one 8-byte message per `recvmsg` and records each as `(value, fd?)`: the exact
//! reference connect order (protocol doc 1.3), framing (1.1), the shared memory and
//! eventfds being the same kernel objects for every peer, disconnect notices (1.4),
//! shutdown (1.8), id allocation (1.6) and the peer limit.

mod common;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use common::{Next, RawClient, SHM_SIZE, config, fds, join, start};
use ivlink::server::IdPolicy;
use rustix::io::Errno;

/// Sorts the vector fds of a peer's messages by owner id, in arrival order
/// (the k-th fd for an id is vector k).
fn vectors_by_id(messages: impl IntoIterator<Item = common::Msg>) -> BTreeMap<i64, Vec<OwnedFd>> {
    let mut map: BTreeMap<i64, Vec<OwnedFd>> = BTreeMap::new();
    for m in messages {
        if m.value >= 0
            && let Some(fd) = m.fd
        {
            map.entry(m.value).or_default().push(fd);
        }
    }
    map
}

/// Adds 1 to an eventfd's counter.
fn ring(fd: &OwnedFd) {
    assert_eq!(rustix::io::write(fd, &1u64.to_ne_bytes()), Ok(8));
}

/// Reads an eventfd's counter: `None` if it is zero (the server's eventfds are
/// non-blocking, so this never waits).
fn take(fd: &OwnedFd) -> Option<u64> {
    let mut buf = [0u8; 8];
    match rustix::io::read(fd, &mut buf) {
        Ok(8) => Some(u64::from_ne_bytes(buf)),
        Err(Errno::AGAIN) => None,
        other => panic!("reading an eventfd: {other:?}"),
    }
}

#[test]
fn connect_order_matches_the_reference_example_and_fds_are_shared_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, 2));
    let path = server.socket_path().to_owned();

    // One peer.
    let mut p0 = RawClient::connect(&path);
    let mut m0 = p0.expect("0 | 0 | -1+fd | 0+fd | 0+fd");
    // Two peers.
    let mut p1 = RawClient::connect(&path);
    let mut m1 = p1.expect("0 | 1 | -1+fd | 0+fd | 0+fd | 1+fd | 1+fd");
    m0.extend(p0.expect("1+fd | 1+fd"));
    // Three peers: the example of protocol doc 1.3, verbatim.
    let mut p2 = RawClient::connect(&path);
    let mut m2 = p2.expect("0 | 2 | -1+fd | 0+fd | 0+fd | 1+fd | 1+fd | 2+fd | 2+fd");
    m0.extend(p0.expect("2+fd | 2+fd"));
    m1.extend(p1.expect("2+fd | 2+fd"));

    // The shared memory: configured size, one object for everybody.
    let shm: Vec<OwnedFd> = [&mut m0, &mut m1, &mut m2]
        .into_iter()
        .map(|m| m[2].fd.take().expect("shm fd"))
        .collect();
    assert_eq!(server.shm_size(), SHM_SIZE);
    let stats: Vec<_> = shm
        .iter()
        .map(|fd| rustix::fs::fstat(fd).unwrap())
        .collect();
    for st in &stats {
        assert_eq!(st.st_size as u64, SHM_SIZE, "fstat size of the shm fd");
        assert_eq!(
            (st.st_dev, st.st_ino),
            (stats[0].st_dev, stats[0].st_ino),
            "every peer gets the same shared memory object"
        );
    }
    let text = b"written by peer 0";
    assert_eq!(rustix::io::pwrite(&shm[0], text, 4096), Ok(text.len()));
    let mut back = [0u8; 17];
    assert_eq!(rustix::io::pread(&shm[2], &mut back, 4096), Ok(text.len()));
    assert_eq!(&back, text);

    // Eventfds: what peer H holds as vector v of peer X is X's own vector v.
    let held: Vec<BTreeMap<i64, Vec<OwnedFd>>> =
        [m0, m1, m2].into_iter().map(vectors_by_id).collect();
    for (holder, map) in held.iter().enumerate() {
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        for (&target, fds) in map {
            assert_eq!(fds.len(), 2);
            let own = &held[target as usize][&target];
            for v in 0..2 {
                ring(&fds[v]);
                assert_eq!(
                    take(&own[v]),
                    Some(1),
                    "peer {holder}'s vector {v} of peer {target} rings peer {target}'s own vector {v}"
                );
                assert_eq!(take(&own[1 - v]), None, "no other vector was rung");
            }
        }
    }

    // Shutdown (doc 1.8): peers are freed in connect order and the rest are told.
    server.stop().unwrap();
    p0.expect_eof();
    p1.expect("0");
    p1.expect_eof();
    p2.expect("0 | 1");
    p2.expect_eof();
}

/// Connects four peers one by one with `vectors` vectors and checks every peer's
/// complete transcript, up to and including the server's shutdown.
fn check_reference_order(vectors: u16) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, vectors));
    let mut peers: Vec<RawClient> = Vec::new();
    for new in 0..4i64 {
        let mut client = RawClient::connect(server.socket_path());
        let mut expected = vec!["0".to_owned(), new.to_string(), "-1+fd".to_owned()];
        expected.extend((0..new).map(|old| fds(old, vectors)));
        expected.push(fds(new, vectors));
        client.expect(&join(&expected));
        for old in &mut peers {
            old.expect(&fds(new, vectors));
        }
        peers.push(client);
    }
    server.stop().unwrap();
    // Nothing else arrived: only the shutdown's disconnect notices, then EOF.
    for (id, peer) in peers.iter_mut().enumerate() {
        let notices: Vec<String> = (0..id).map(|gone| gone.to_string()).collect();
        peer.expect(&join(&notices));
        peer.expect_eof();
    }
}

#[test]
fn connect_order_is_exact_for_0_1_3_and_64_vectors() {
    for vectors in [0, 1, 3, 64] {
        check_reference_order(vectors);
    }
}

#[test]
fn leaving_peers_are_announced_to_every_remaining_peer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, 2));
    let mut peers: Vec<Option<RawClient>> = Vec::new();
    for new in 0..5i64 {
        let mut client = RawClient::connect(server.socket_path());
        let (id, _shm) = client.greeting();
        assert_eq!(id, new);
        for old in peers.iter_mut().flatten() {
            old.expect(&fds(new, 2));
        }
        let setup: Vec<String> = (0..=new).map(|p| fds(p, 2)).collect();
        client.expect(&join(&setup));
        peers.push(Some(client));
    }
    let setup_len: Vec<usize> = peers.iter().flatten().map(|p| p.log.len()).collect();
    // Peers leave one at a time; peer 4 witnesses each departure before the next.
    for gone in [1usize, 3, 0] {
        drop(peers[gone].take());
        peers[4].as_mut().unwrap().expect(&gone.to_string());
    }
    peers[2].as_mut().unwrap().expect("1 | 3 | 0");
    for (id, peer) in peers.iter().enumerate() {
        if let Some(peer) = peer {
            let notices = &peer.log[setup_len[id]..];
            assert_eq!(
                common::render(notices),
                "1 | 3 | 0",
                "peer {id}: one notice per departure, without fds, in order"
            );
        }
    }
    server.stop().unwrap();
    peers[2].as_mut().unwrap().expect_eof();
    peers[4].as_mut().unwrap().expect("2");
    peers[4].as_mut().unwrap().expect_eof();
}

#[test]
fn zero_vectors_sends_only_version_id_and_shared_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, 0));
    let mut p0 = RawClient::connect(server.socket_path());
    p0.expect("0 | 0 | -1+fd");
    let mut p1 = RawClient::connect(server.socket_path());
    p1.expect("0 | 1 | -1+fd");
    drop(p1);
    // The next thing peer 0 hears is the departure: the join sent it nothing.
    p0.expect("1");
    let mut p2 = RawClient::connect(server.socket_path());
    p2.expect("0 | 2 | -1+fd");
    server.stop().unwrap();
    p0.expect_eof();
    p2.expect("0");
    p2.expect_eof();
    assert_eq!(common::render(&p0.log), "0 | 0 | -1+fd | 1");
}

#[test]
fn ids_rise_and_a_freed_id_waits_for_the_cursor_to_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, 0));
    let connect = || {
        let mut c = RawClient::connect(server.socket_path());
        let (id, _) = c.greeting();
        (c, id)
    };
    let (mut a, id_a) = connect();
    let (b, id_b) = connect();
    let (c, id_c) = connect();
    assert_eq!((id_a, id_b, id_c), (0, 1, 2));
    drop(b);
    a.expect("1"); // the server has freed id 1
    let (d, id_d) = connect();
    assert_eq!(id_d, 3, "a freed id is not reused before the cursor wraps");
    drop(c);
    a.expect("2");
    drop(d);
    a.expect("3");
    let (_e, id_e) = connect();
    assert_eq!(id_e, 4);
}

#[test]
fn lowest_free_policy_fills_holes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(ivlink::ServerConfig {
        id_policy: IdPolicy::LowestFree,
        ..config(&dir, 0)
    });
    let connect = || {
        let mut c = RawClient::connect(server.socket_path());
        let (id, _) = c.greeting();
        (c, id)
    };
    let (mut a, _) = connect();
    let (b, _) = connect();
    let (_c, id_c) = connect();
    assert_eq!(id_c, 2);
    drop(b);
    a.expect("1");
    let (_d, id_d) = connect();
    assert_eq!(id_d, 1);
    let (_e, id_e) = connect();
    assert_eq!(id_e, 3);
}

#[test]
fn ids_wrap_from_65535_to_0_and_skip_ids_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(ivlink::ServerConfig {
        first_id: 65534,
        ..config(&dir, 0)
    });
    let path = server.socket_path().to_owned();
    let connect = || {
        let mut c = RawClient::connect(&path);
        let (id, _) = c.greeting();
        (c, id)
    };
    let (mut a, id_a) = connect();
    let (b, id_b) = connect();
    let (mut c, id_c) = connect();
    let (mut d, id_d) = connect();
    assert_eq!((id_a, id_b, id_c, id_d), (65534, 65535, 0, 1));
    drop(b);
    for witness in [&mut a, &mut c, &mut d] {
        witness.expect("65535");
    }

    // Walk the cursor once around (ids 2..=65533), so that it comes back to 65534
    // (taken by a) while 0 and 1 are still taken by c and d. Batches of 8
    // connections pipeline the round trips without many notices among themselves.
    const BATCH: i64 = 7;
    let mut next = 2i64;
    let mut departed = 0usize;
    let mut heard = [0usize; 3];
    while next <= 65533 {
        let mut batch: Vec<RawClient> = (next..=(next + BATCH).min(65533))
            .map(|_| RawClient::connect(&path))
            .collect();
        for (expected, client) in (next..).zip(&mut batch) {
            assert_eq!(client.greeting().0, expected, "ids rise one by one");
        }
        next += batch.len() as i64;
        departed += batch.len();
        drop(batch);
        // Keep the witnesses reading so that they are never dropped as slow.
        for (i, w) in [&mut a, &mut c, &mut d].into_iter().enumerate() {
            while let Next::Msg(m) = w.try_next() {
                assert!(m.fd.is_none() && (2..=65533).contains(&m.value));
                heard[i] += 1;
            }
        }
    }
    // Every departure has been processed once every witness heard of it.
    for (i, w) in [&mut a, &mut c, &mut d].into_iter().enumerate() {
        while heard[i] < departed {
            let m = w.msg();
            assert!(m.fd.is_none() && (2..=65533).contains(&m.value));
            heard[i] += 1;
        }
    }
    let (_e, id_e) = connect();
    assert_eq!(id_e, 65535, "65534 is still in use, so it is skipped");
    let (_f, id_f) = connect();
    assert_eq!(
        id_f, 2,
        "0 and 1 are still in use after the wrap, so they are skipped"
    );
}

#[test]
fn a_connection_beyond_max_peers_is_closed_without_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(ivlink::ServerConfig {
        max_peers: 3,
        ..config(&dir, 1)
    });
    let mut a = RawClient::connect(server.socket_path());
    a.expect("0 | 0 | -1+fd | 0+fd");
    let mut b = RawClient::connect(server.socket_path());
    b.expect("0 | 1 | -1+fd | 0+fd | 1+fd");
    let mut c = RawClient::connect(server.socket_path());
    c.expect("0 | 2 | -1+fd | 0+fd | 1+fd | 2+fd");
    a.expect("1+fd | 2+fd");
    b.expect("2+fd");

    let mut refused = RawClient::connect(server.socket_path());
    refused.expect_eof();
    assert!(refused.log.is_empty());
    assert_eq!(server.handle().peer_count(), 3);

    // The others noticed nothing: their next message is c's departure.
    drop(c);
    a.expect("2");
    b.expect("2");
    // The refused connection did not use up an id.
    let mut e = RawClient::connect(server.socket_path());
    e.expect("0 | 3 | -1+fd | 0+fd | 1+fd | 3+fd");
    a.expect("3+fd");
    b.expect("3+fd");
}
