//! Channel and mailbox membership over a real server: waiting for a peer to
//! join, and freeing the slot of a peer whose process is gone (the server tells
//! the others), after taking what it left in a mailbox.

use std::time::{Duration, Instant};

use ivlink::channel::{Channel, ChannelShape};
use ivlink::mailbox::{Mailbox, MailboxShape};
use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::wait::SpinThenSleep;
use ivlink::{Device, ServerConfig};
use ivlink_core::channel::ChannelLayout;
use ivlink_core::mailbox::MailboxLayout;

const OFFSET: usize = 1 << 16;
const LIMIT: Duration = Duration::from_secs(10);

fn server(dir: &tempfile::TempDir) -> ServerThread {
    ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        vectors: 2,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn peer(server: &ServerThread) -> HostPeer {
    HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap()
}

/// Retries `step` until it gives `Some`, for at most [`LIMIT`].
fn within<T>(what: &str, mut step: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(value) = step() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_channel_waits_for_a_member_and_evicts_it_once_its_peer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (a, b) = (peer(&server), peer(&server));
    let shape = ChannelShape {
        max_members: 4,
        ring_capacity: 4096,
        vector: 1,
    };
    let size = shape.section_size().unwrap();
    let layout = ChannelLayout::create(a.region(), OFFSET, size, shape).unwrap();
    let mut endpoint = Channel::join(&a, layout, SpinThenSleep::default()).unwrap();

    assert!(
        !endpoint
            .wait_for_member(b.id(), Duration::from_millis(50))
            .unwrap()
    );
    let b_endpoint = Channel::join(&b, layout, SpinThenSleep::default()).unwrap();
    assert!(endpoint.wait_for_member(b.id(), LIMIT).unwrap());
    assert_eq!(endpoint.evict_departed().unwrap(), 0, "nobody left yet");

    let b_id = b.id();
    drop(b_endpoint);
    drop(b);
    within("the departed peer evicted", || {
        (endpoint.evict_departed().unwrap() == 1).then_some(())
    });
    assert!(!endpoint.members().unwrap().contains(&b_id));
}

#[test]
fn a_mailbox_takes_what_a_departed_peer_left_before_evicting_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir);
    let (a, b) = (peer(&server), peer(&server));
    let shape = MailboxShape {
        max_members: 4,
        max_data: 64,
        id_count: 16,
        vector: 0,
        completion_vector: 1,
    };
    let size = shape.section_size().unwrap();
    let layout = MailboxLayout::create(a.region(), OFFSET, size, shape).unwrap();
    let mut mailbox = Mailbox::join(&a, layout, SpinThenSleep::default()).unwrap();

    assert!(!mailbox.wait_for_member(b.id(), Duration::from_millis(50)));
    let b_id = b.id();
    {
        let mut sender = Mailbox::join(&b, layout, SpinThenSleep::default()).unwrap();
        assert!(mailbox.wait_for_member(b_id, LIMIT));
        sender.send(a.id(), 7, b"left behind", None).unwrap();
    }
    drop(b);
    let taken = within("the departed peer evicted", || {
        let taken = mailbox.evict_departed(None).unwrap();
        (!mailbox.members().contains(&b_id)).then_some(taken)
    });
    let message = taken
        .iter()
        .find(|m| m.id == 7)
        .expect("the message it left is taken first");
    assert_eq!(message.data, b"left behind");
}
