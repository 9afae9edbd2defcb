//! Fuzzes a host peer against a hostile ivshmem server.
//!
//! Each run binds a private socket, and a host peer connects to it while the
//! "server" sends what the input says: a sequence of messages, each a value
//! from a small alphabet (the protocol's own values and their edges) with no
//! fd, a memfd of some size, an eventfd or a pipe. Then the server closes the
//! connection or keeps it open. The peer must either refuse with an error or
//! come up with the id and region it was sent; afterwards its waits, peer list
//! and doorbells must not panic. The socket file is gone before the peer reads
//! a byte, so runs leave nothing behind.
#![no_main]

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, Notify, Region, WaitFor, wire};
use libfuzzer_sys::fuzz_target;

/// The values a hostile server sends, by input byte.
fn value(byte: u8) -> i64 {
    match byte {
        0..=199 => i64::from(byte) - 2,
        200 => wire::MAX_PEER_ID,
        201 => wire::MAX_PEER_ID + 1,
        202 => i64::MAX,
        203 => i64::MIN,
        204 => i64::from(u32::MAX),
        _ => -i64::from(byte),
    }
}

/// The fd a message carries, by input byte.
fn fd(byte: u8) -> Option<OwnedFd> {
    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    match byte % 8 {
        0..=2 => None,
        3 => {
            let size = [0u64, 4096, 1 << 20, 4097][usize::from(byte >> 3) % 4];
            let fd = memfd_create("ivlink-fuzz", MemfdFlags::CLOEXEC).ok()?;
            ftruncate(&fd, size).ok()?;
            Some(fd)
        }
        4..=6 => rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).ok(),
        _ => rustix::pipe::pipe().ok().map(|(read, _)| read),
    }
}

fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("ivlink-fuzz-host-{}.sock", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, script)) = data.split_first() else {
        return;
    };
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let config = HostConfig {
        vectors: [None, Some(0), Some(1), Some(2)][usize::from(flags & 3)],
        setup_timeout: Duration::from_millis(30),
        ..HostConfig::new(&path)
    };
    std::thread::scope(|scope| {
        let peer = scope.spawn(|| HostPeer::connect(&config));
        let (server, _) = listener.accept().unwrap();
        // Connected: the name is no longer needed by anyone.
        let _ = std::fs::remove_file(&path);
        for message in script.chunks_exact(2).take(64) {
            let fd = fd(message[1]);
            let sent = wire::send_blocking(
                server.as_fd(),
                value(message[0]),
                fd.as_ref().map(|f| f.as_fd()),
            );
            if sent.is_err() {
                break;
            }
        }
        let keep_open = flags & 4 != 0;
        if !keep_open {
            drop(server);
            let peer = peer.join().unwrap();
            exercise(peer);
        } else {
            let peer = peer.join().unwrap();
            exercise(peer);
            drop(server);
        }
    });
});

/// Uses a peer that came up (or reads the error of one that did not).
fn exercise(peer: Result<HostPeer, ivlink::DeviceError>) {
    let peer = match peer {
        Ok(peer) => peer,
        Err(error) => {
            let _ = error.to_string();
            let _ = error.kind();
            return;
        }
    };
    assert!(peer.region().len() > 0);
    for _ in 0..4 {
        match peer.wait(WaitFor::ANYTHING, Some(Duration::ZERO)) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    for info in peer.peers() {
        let _ = peer.notify(info.id, 0);
    }
    let _ = peer.notify(peer.id(), 0);
}
