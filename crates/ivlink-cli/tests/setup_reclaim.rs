//! Sections are never left half-built for good: a bad shape creates nothing, and a
//! section whose creator went away mid-setup is set up again by the next peer.
//! Real servers and peers.

mod common;

use common::{Running, run, server, text};
use ivlink::Device;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink_core::channel::ChannelShape;
use ivlink_core::directory::{Directory, SectionKind, SectionSpec};

/// The peer id a `recv` prints once it receives.
fn receiver_id(recv: &Running) -> String {
    let line = recv.expect_line("receiving on channel");
    line.split_whitespace().nth(1).unwrap().to_owned()
}

fn recv_and_send_work(sock: &str, name: &str) {
    let recv = Running::start(&["recv", name, "-S", sock, "--count", "1"]);
    let id = receiver_id(&recv);
    let sent = run(&["send", name, "-S", sock, "--to", &id, "it works"]);
    assert!(sent.status.success(), "{}", text(&sent));
    recv.expect_line(": it works");
}

#[test]
fn a_ring_capacity_that_is_not_a_power_of_two_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket, &["--memfd"]);
    for command in ["recv", "send"] {
        let mut args = vec![command, "demo", "-S", sock, "--ring-capacity", "1000"];
        if command == "send" {
            args.extend_from_slice(&["--to", "0", "x"]);
        }
        let refused = run(&args);
        let all = text(&refused);
        assert!(!refused.status.success(), "{all}");
        assert!(all.contains("power of two"), "{all}");
        assert_eq!(all.lines().count(), 1, "one line: {all}");
    }
    let inspect = run(&["inspect", "-S", sock]);
    let report = text(&inspect);
    assert!(
        !report.contains("demo"),
        "no section was created:\n{report}"
    );
    recv_and_send_work(sock, "demo");
}

#[test]
fn a_section_left_half_built_by_a_peer_that_went_away_is_set_up_again() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let sock = socket.to_str().unwrap();
    let _server = server(&socket, &["--memfd"]);
    // A peer adds the channel's section, claims its setup and is gone before
    // publishing it (as if killed half-way).
    let creator = HostPeer::connect(&HostConfig::new(&socket)).unwrap();
    let region = creator.region();
    let shape = ChannelShape {
        max_members: 8,
        ring_capacity: 16384,
        vector: 0,
    };
    let directory = Directory::open_or_create(region, 64).unwrap();
    let stuck = directory
        .add(
            &SectionSpec::new("demo", SectionKind::Channel, shape.check().unwrap())
                .with_owner(creator.id())
                .with_align(4096),
        )
        .unwrap();
    ivlink_core::channel::SETUP
        .claim(region, stuck.offset)
        .unwrap();
    drop(creator);

    recv_and_send_work(sock, "demo");
    let inspect = run(&["inspect", "-S", sock]);
    let report = text(&inspect);
    assert!(report.contains("demo"), "{report}");
    assert!(
        inspect.status.success(),
        "the withdrawn entry is no inconsistency:\n{report}"
    );
}
