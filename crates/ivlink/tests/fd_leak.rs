//! Ten thousand connect/disconnect cycles leave the server with exactly the file
//! descriptors it started with. Alone in its test binary, because it counts the
//! whole process's open fds (`/proc/self/fd`), which any other test running in
//! parallel would disturb.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, TIMEOUT, config, start, wait_until};

const CYCLES: i64 = 10_000;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn connect_disconnect_cycles_leak_no_fds() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(&dir, 2));
    let baseline = open_fds();

    // A long-lived peer, so that every cycle also passes fds to someone else and
    // sends a departure notice.
    let mut witness = RawClient::connect(server.socket_path());
    witness.expect("0 | 0 | -1+fd | 0+fd | 0+fd");
    for id in 1..=CYCLES {
        let mut peer = RawClient::connect(server.socket_path());
        // Read the whole setup so that every fd really crosses the socket.
        peer.expect(&format!(
            "0 | {id} | -1+fd | 0+fd | 0+fd | {id}+fd | {id}+fd"
        ));
        drop(peer);
        // Once the witness hears of the departure, the server has processed it
        // (so the next peer's setup does not include this one). Its fds close here.
        witness.expect(&format!("{id}+fd | {id}+fd | {id}"));
    }
    drop(witness);
    wait_until("every peer is gone", || server.handle().peer_count() == 0);
    // The peer count drops just before the last peer's fds are closed, so give the
    // server thread a moment to finish closing them.
    let deadline = Instant::now() + TIMEOUT;
    let mut now = open_fds();
    while now > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        now = open_fds();
    }
    assert_eq!(now, baseline, "open fds before {baseline}, after {now}");
    server.stop().unwrap();
}
