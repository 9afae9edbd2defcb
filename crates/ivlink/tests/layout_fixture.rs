//! The region layout is a wire format: a region written by an earlier release must
//! open and work unchanged, and today's code must write the very same bytes.
//!
//! `fixtures/region-layout-1.hex` holds a region made by the release that put the
//! directory at offset 4096: one section of every kind (channel, mailbox, stream,
//! RPMsg native), each with a message in flight, and the stream's writer gone. The file lists the non-zero
//! 32-byte rows of the region as `offset: hex`. To write it anew after a deliberate
//! layout change (which also needs a new fixture name, so the old one stays tested),
//! run with `IVLINK_BLESS_LAYOUT=1`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ivlink::FilePeer;
use ivlink::channel::{self, Channel};
use ivlink::mailbox::{self, Mailbox};
use ivlink::rpmsg::{RpmsgLink, RpmsgOptions};
use ivlink::stream::Stream;
use ivlink::wait::SpinThenSleep;
use ivlink_core::channel::ChannelShape;
use ivlink_core::mailbox::MailboxShape;
use ivlink_core::rpmsg::{LinkEvent, Profile, Role};

const REGION_LEN: u64 = 1 << 20;
const ROW: usize = 32;
const TIMEOUT: Duration = Duration::from_secs(5);

const CHANNEL_MESSAGE: &[u8] = b"channel message in flight";
const MAILBOX_ID: u32 = 7;
const MAILBOX_MESSAGE: &[u8] = b"mailbox message in flight";
const STREAM_BYTES: &[u8] = b"stream bytes in flight";
const RPMSG_MESSAGE: &[u8] = b"rpmsg message in flight";

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/region-layout-1.hex")
}

fn channel_shape() -> ChannelShape {
    ChannelShape {
        max_members: 4,
        ring_capacity: 4096,
        vector: 1,
    }
}

fn mailbox_shape() -> MailboxShape {
    MailboxShape {
        max_members: 4,
        max_data: 64,
        id_count: 16,
        vector: 3,
        completion_vector: 4,
    }
}

fn rpmsg_options(role: Role) -> RpmsgOptions {
    let mut options = RpmsgOptions::new(Profile::Native, role);
    options.vector = 5;
    options.setup_timeout = TIMEOUT;
    options
}

/// Peers 1 and 2 build one section of each kind and leave a message in each, one
/// step after the other, so the bytes are the same on every run.
fn write_region(path: &Path) {
    let one = FilePeer::create(path, REGION_LEN, 1).unwrap();
    let two = FilePeer::open(path, 2).unwrap();

    let layout = channel::open_named(&one, "chan", channel_shape(), TIMEOUT).unwrap();
    let mut chan_one = Channel::join(&one, layout, SpinThenSleep::default()).unwrap();
    let layout = channel::open_named(&two, "chan", channel_shape(), TIMEOUT).unwrap();
    let _chan_two = Channel::join(&two, layout, SpinThenSleep::default()).unwrap();
    chan_one
        .send(2, CHANNEL_MESSAGE, Some(TIMEOUT))
        .expect("channel send");
    chan_one.flush().unwrap();

    let layout = mailbox::open_named(&one, "mbox", mailbox_shape(), TIMEOUT).unwrap();
    let mut mbox_one = Mailbox::join(&one, layout, SpinThenSleep::default()).unwrap();
    let layout = mailbox::open_named(&two, "mbox", mailbox_shape(), TIMEOUT).unwrap();
    let _mbox_two = Mailbox::join(&two, layout, SpinThenSleep::default()).unwrap();
    mbox_one
        .send(2, MAILBOX_ID, MAILBOX_MESSAGE, None)
        .expect("mailbox send");

    let mut pipe_one = Stream::open(&one, "pipe", 2, 4096, 2, TIMEOUT).unwrap();
    pipe_one.write_all(STREAM_BYTES).unwrap();
    pipe_one.flush().unwrap();

    let (mut host, host_ep, _remote) = bind_rpmsg(&one, &two);
    host.send(host_ep, None, RPMSG_MESSAGE, Some(TIMEOUT))
        .unwrap();
}

/// Opens both sides of the native RPMsg link and drives them in turn, in one
/// thread (so the bytes are the same every run), until the host has bound to the
/// remote's endpoint.
fn bind_rpmsg<'d>(
    host_dev: &'d FilePeer,
    remote_dev: &'d FilePeer,
) -> (RpmsgLink<'d>, u32, RpmsgLink<'d>) {
    let mut host = RpmsgLink::open(host_dev, &rpmsg_options(Role::Host)).unwrap();
    let mut remote = RpmsgLink::open(remote_dev, &rpmsg_options(Role::Remote)).unwrap();
    let host_ep = host.create_endpoint("fixture", None, None).unwrap();
    let mut remote_ep = None;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the link never came up"
        );
        if remote_ep.is_none() {
            remote_ep = remote.create_endpoint("fixture", None, None).ok();
        }
        let _ = remote.try_event().unwrap();
        if let Some(LinkEvent::Bound { .. }) = host.try_event().unwrap() {
            return (host, host_ep, remote);
        }
    }
}

fn to_rows(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (index, row) in bytes.chunks(ROW).enumerate() {
        if row.iter().any(|&b| b != 0) {
            let hex: String = row.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!("{:06x}: {hex}\n", index * ROW));
        }
    }
    out
}

fn from_rows(text: &str, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for line in text.lines() {
        let (offset, hex) = line.split_once(": ").expect("offset: hex");
        let offset = usize::from_str_radix(offset, 16).unwrap();
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).unwrap();
            bytes[offset + i] = u8::from_str_radix(pair, 16).unwrap();
        }
    }
    bytes
}

fn fixture_bytes() -> Vec<u8> {
    let text = std::fs::read_to_string(fixture_path()).expect("the layout fixture");
    from_rows(&text, REGION_LEN as usize)
}

#[test]
fn todays_code_writes_the_fixture_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    write_region(&path);
    let written = to_rows(&std::fs::read(&path).unwrap());
    if std::env::var_os("IVLINK_BLESS_LAYOUT").is_some() {
        std::fs::write(fixture_path(), &written).unwrap();
    }
    let expected = std::fs::read_to_string(fixture_path()).expect("the layout fixture");
    let differing: Vec<_> = written
        .lines()
        .zip(expected.lines())
        .filter(|(w, e)| w != e)
        .take(4)
        .collect();
    assert!(
        written == expected,
        "the region layout changed; first differing rows (written, fixture): {differing:#?}"
    );
}

#[test]
fn a_region_of_the_fixture_layout_opens_and_delivers_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    std::fs::write(&path, fixture_bytes()).unwrap();
    let one = FilePeer::open(&path, 1).unwrap();
    let two = FilePeer::open(&path, 2).unwrap();

    let layout = channel::open_named(&two, "chan", channel_shape(), TIMEOUT).unwrap();
    let mut chan_two = Channel::join(&two, layout, SpinThenSleep::default()).unwrap();
    let mut buf = [0u8; 64];
    let (from, len) = chan_two
        .recv(&mut buf, Some(TIMEOUT))
        .unwrap()
        .expect("the channel message in flight");
    assert_eq!((from, &buf[..len]), (1, CHANNEL_MESSAGE));
    let layout = channel::open_named(&one, "chan", channel_shape(), TIMEOUT).unwrap();
    let mut chan_one = Channel::join(&one, layout, SpinThenSleep::default()).unwrap();
    chan_one.send(2, b"and one more", Some(TIMEOUT)).unwrap();
    chan_one.flush().unwrap();
    let (_, len) = chan_two.recv(&mut buf, Some(TIMEOUT)).unwrap().unwrap();
    assert_eq!(&buf[..len], b"and one more");

    let layout = mailbox::open_named(&two, "mbox", mailbox_shape(), TIMEOUT).unwrap();
    let mut mbox_two = Mailbox::join(&two, layout, SpinThenSleep::default()).unwrap();
    let message = mbox_two
        .recv(Some(TIMEOUT))
        .unwrap()
        .expect("the mailbox message in flight");
    assert_eq!(
        (message.from, message.id, &message.data[..]),
        (Some(1), MAILBOX_ID, MAILBOX_MESSAGE)
    );

    let mut pipe_two = Stream::open(&two, "pipe", 1, 4096, 2, TIMEOUT).unwrap();
    pipe_two.set_timeout(Some(TIMEOUT));
    let mut got = vec![0u8; STREAM_BYTES.len()];
    pipe_two.read_exact(&mut got).unwrap();
    assert_eq!(got, STREAM_BYTES);
    assert_eq!(
        pipe_two.read(&mut got).unwrap(),
        0,
        "side A closed the stream"
    );

    // Nothing is resent over RPMsg when a side comes back, so the message in flight
    // is gone by design; the link itself must come up again on the old section.
    let (mut host, host_ep, mut remote) = bind_rpmsg(&one, &two);
    host.send(host_ep, None, b"after reopening", Some(TIMEOUT))
        .unwrap();
    loop {
        match remote.next_event(Some(TIMEOUT)).unwrap() {
            Some(LinkEvent::Message { .. }) if remote.payload() == b"after reopening" => break,
            Some(_) => {}
            None => panic!("the host's message never arrived"),
        }
    }
}
