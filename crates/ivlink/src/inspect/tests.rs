use super::*;
use ivlink_core::HeapRegion;
use ivlink_core::directory::SectionSpec;
use ivlink_core::mailbox::MailboxShape;
use ivlink_core::rpmsg::LinkLayout;
use ivlink_core::section::SectionProtocol;
use ivlink_core::stream::{Side, StreamEnd};
use proptest::prelude::*;
use std::sync::atomic::Ordering;

mod console;
mod ntb;

const SHAPE: MailboxShape = MailboxShape {
    max_members: 4,
    max_data: 100,
    id_count: 16,
    vector: 0,
    completion_vector: 1,
};
const CAPACITY: usize = 256;

/// A region with a directory, a mailbox "ipm" and a stream "pipe".
fn region() -> (HeapRegion, SectionInfo, SectionInfo) {
    let region = HeapRegion::new(1 << 20);
    let directory = Directory::create(&*region, 8).unwrap();
    let add = |name, kind, size| {
        let spec = SectionSpec::new(name, kind, size)
            .with_owner(3)
            .with_vector(1)
            .with_align(4096);
        directory.add(&spec).unwrap()
    };
    let mbx = add("ipm", SectionKind::Mailbox, SHAPE.section_size().unwrap());
    let stm = add(
        "pipe",
        SectionKind::Stream,
        StreamLayout::section_size(CAPACITY).unwrap(),
    );
    MailboxLayout::create(&*region, mbx.offset, mbx.size, SHAPE).unwrap();
    StreamLayout::create(&*region, stm.offset, stm.size, CAPACITY, [3, 5]).unwrap();
    (region, mbx, stm)
}

/// Peers 3, 5 and 7 join the mailbox; 5 sends to 3 (taken), 7 sends to 3 and
/// waits for completion (not taken yet). On the stream, A (3) sends 12 bytes
/// and closes, B (5) reads 5, answers 4 and sleeps waiting for room.
fn traffic(region: &HeapRegion, mbx: &SectionInfo, stm: &SectionInfo) {
    let layout = MailboxLayout::open(&**region, mbx.offset, mbx.size).unwrap();
    for peer in [3, 5, 7] {
        layout.join(&**region, peer).unwrap();
    }
    layout.send(&**region, 1, 0, 4, b"hello", true).unwrap();
    let mut buf = [0u8; 100];
    let taken = layout.take(&**region, 0, 0, &mut buf).unwrap().unwrap();
    assert_eq!(&buf[..taken.len], b"hello");
    layout.send(&**region, 2, 0, 9, b"waiting", true).unwrap();
    assert!(layout.arm_completion(&**region, 2, 0).unwrap());

    let layout = StreamLayout::open(&**region, stm.offset, stm.size).unwrap();
    let mut a = StreamEnd::attach(&**region, layout, Side::A).unwrap();
    let mut b = StreamEnd::attach(&**region, layout, Side::B).unwrap();
    assert_eq!(a.write(b"hello stream").unwrap(), 12);
    a.publish().unwrap();
    let mut five = [0u8; 5];
    assert_eq!(b.read(&mut five).unwrap(), 5);
    assert_eq!(&five, b"hello");
    b.release().unwrap();
    assert_eq!(b.write(b"back").unwrap(), 4);
    b.publish().unwrap();
    a.close().unwrap();
    assert!(
        b.prepare_sleep_write(CAPACITY).unwrap(),
        "4 bytes in use: sleeps"
    );
}

/// Asserts that `text` contains every one of `needles`.
fn contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

fn section<'a>(report: &'a RegionReport, name: &str) -> &'a SectionReport {
    report.sections.iter().find(|s| s.name == name).unwrap()
}

#[test]
fn mailbox_and_stream_are_decoded_after_an_exchange() {
    let (region, mbx, stm) = region();
    traffic(&region, &mbx, &stm);
    let report = inspect(&region);
    assert!(report.inconsistencies.is_empty(), "{report}");

    let ipm = section(&report, "ipm");
    assert!(ipm.problems.is_empty(), "{report}");
    assert_eq!(ipm.members, [(0, 3), (1, 5), (2, 7)]);
    let m = ipm.mailbox.as_ref().unwrap();
    assert_eq!(
        (m.magic.as_str(), m.state, m.state_name.as_str()),
        ("MBX1", 2, "ready")
    );
    assert_eq!((m.max_members, m.max_data, m.id_count), (4, 100, 16));
    assert_eq!((m.vector, m.completion_vector), (0, 1));
    assert_eq!(m.slots.len(), 3);
    assert_eq!(
        (m.slots[2].word, m.slots[2].state.as_str(), m.slots[2].peer),
        (8, "member", Some(7))
    );
    assert_eq!(m.boxes.len(), 2, "{report}");
    let done = &m.boxes[0];
    assert_eq!((done.from.as_str(), done.to.as_str()), ("peer 5", "peer 3"));
    assert_eq!(
        (done.busy, done.id, done.len, done.completion.as_str()),
        (false, 4, 5, "complete")
    );
    let waiting = &m.boxes[1];
    assert_eq!(
        (waiting.from_slot, waiting.to_slot, waiting.state),
        (2, 0, 7)
    );
    assert!(waiting.busy && waiting.wants_completion && waiting.rung);
    assert_eq!(
        (waiting.id, waiting.len, waiting.completion.as_str()),
        (9, 7, "awaited")
    );

    let pipe = section(&report, "pipe");
    assert!(pipe.problems.is_empty(), "{report}");
    let s = pipe.stream.as_ref().unwrap();
    assert_eq!(
        (s.magic.as_str(), s.state_name.as_str(), s.capacity),
        ("STM1", "ready", 256)
    );
    let sides: Vec<_> = s
        .sides
        .iter()
        .map(|side| {
            (
                side.side.as_str(),
                side.peer,
                side.liveness,
                side.state.as_str(),
            )
        })
        .collect();
    assert_eq!(sides, [("A", 3, 2, "closed"), ("B", 5, 1, "connected")]);
    let rings: Vec<_> = s
        .rings
        .iter()
        .map(|r| (r.from.as_str(), r.head, r.tail, r.fill, r.capacity, r.flags))
        .collect();
    assert_eq!(
        rings,
        [
            ("A (peer 3)", 12, 5, Some(7), 256, (false, false)),
            ("B (peer 5)", 4, 0, Some(4), 256, (true, false)),
        ]
    );

    let text = report.to_string();
    contains_all(
        &text,
        &[
            "mailbox: magic MBX1, state ready (2), 4 member slots, max data 100 B, 16 ids, vector 0, completion vector 1",
            "members (slot:peer): 0:3 1:5 2:7",
            "busy  id 9          len 7        completion awaited  rung true  state 0x7",
            "empty id 4          len 5        completion complete rung false state 0x0",
            "stream: magic STM1, state ready (2), capacity 256 B per direction",
            "side A: peer 3     closed (2)",
            "side B: peer 5     connected (1)",
            "fill 4 B (2%)",
            "inconsistencies: none",
        ],
    );
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["sections"][0]["mailbox"]["boxes"][1]["completion"],
        "awaited"
    );
    assert_eq!(
        json["sections"][1]["stream"]["sides"][1]["state"],
        "connected"
    );
    assert!(json["sections"][0].get("stream").is_none());
}

/// Absolute offset of a box's `len` word (the layout documented in
/// `ivlink_core::mailbox`).
fn box_len_at(mbx: &SectionInfo, from: usize, to: usize) -> usize {
    let m = SHAPE.max_members as usize;
    let boxes = (64 + 4 * m).next_multiple_of(64);
    let box_size = 64 + (SHAPE.max_data as usize).next_multiple_of(64);
    let column = if to < from { to } else { to - 1 };
    mbx.offset + boxes + (from * (m - 1) + column) * box_size + 8
}

#[test]
fn corrupted_words_become_problems_not_panics() {
    let (region, mbx, stm) = region();
    traffic(&region, &mbx, &stm);
    // The waiting box 7 -> 3 claims more data than a message may hold, and
    // has an unknown state bit; slot 3 holds no peer id.
    let len_at = box_len_at(&mbx, 2, 0);
    region.store_u32(len_at, 5000, Ordering::Relaxed).unwrap();
    region.store_u32(len_at - 4, 77, Ordering::Relaxed).unwrap();
    region
        .store_u32(len_at - 8, 0x17, Ordering::Relaxed)
        .unwrap();
    region
        .store_u32(mbx.offset + 64 + 12, 0x7000_0000, Ordering::Relaxed)
        .unwrap();
    // Side B's liveness word holds garbage; ring A -> B's head runs ahead.
    region
        .store_u32(stm.offset + 256, 0xdead_beef, Ordering::Relaxed)
        .unwrap();
    region
        .store_u64(stm.offset + 384, 1 << 40, Ordering::Relaxed)
        .unwrap();

    let report = inspect(&region);
    let ipm = section(&report, "ipm");
    contains_all(
        &ipm.problems.join("\n"),
        &[
            "box peer 7 -> peer 3: length 5000 exceeds the maximum of 100 bytes",
            "box peer 7 -> peer 3: id 77 is out of range (ids 0..16)",
            "box peer 7 -> peer 3: unknown state bits 0x10 (state word 0x17)",
            "slot 3 holds 0x70000000, not a peer id",
        ],
    );
    let m = ipm.mailbox.as_ref().unwrap();
    let damaged = m.slots.iter().find(|s| s.slot == 3).unwrap();
    assert_eq!(
        (damaged.word, damaged.state.as_str(), damaged.peer),
        (0x7000_0000, "damaged", None)
    );
    assert!(
        m.boxes.iter().any(|b| b.len == 5000 && b.id == 77),
        "values as read"
    );

    let pipe = section(&report, "pipe");
    let problems = pipe.problems.join("\n");
    contains_all(
        &problems,
        &[
            "side B (peer 5): liveness word 0xdeadbeef is not a known state",
            "ring A (peer 3) -> B (peer 5): head 1099511627776 and tail 5 are inconsistent",
        ],
    );
    let s = pipe.stream.as_ref().unwrap();
    assert_eq!(
        (s.sides[1].liveness, s.sides[1].state.as_str()),
        (0xdead_beef, "unknown")
    );
    assert_eq!(s.rings[0].fill, None);
    let text = report.to_string();
    assert!(
        text.contains("PROBLEM: side B (peer 5): liveness word 0xdeadbeef"),
        "{text}"
    );
    assert!(text.contains("fill ?"), "{text}");
}

#[test]
fn damaged_headers_are_shown_as_read() {
    let (region, mbx, stm) = region();
    // A mailbox whose header lies about its size, a stream whose magic is
    // wrong and whose never-connected side A shows traffic.
    region
        .store_u32(mbx.offset + 4, 1000, Ordering::Relaxed)
        .unwrap();
    region.write(stm.offset, b"ST\x00\xff").unwrap();
    let report = inspect(&region);
    let ipm = section(&report, "ipm");
    let m = ipm.mailbox.as_ref().unwrap();
    assert_eq!(m.max_members, 1000);
    assert!(m.slots.is_empty() && m.boxes.is_empty());
    assert_eq!(
        ipm.problems,
        ["not a valid mailbox: member count out of range"]
    );
    let pipe = section(&report, "pipe");
    let s = pipe.stream.as_ref().unwrap();
    assert_eq!(s.magic, "ST\\x00\\xff");
    assert!(s.rings.is_empty());
    assert_eq!(pipe.problems, ["not a valid stream: bad magic"]);
    assert!(
        report
            .to_string()
            .contains("stream: magic ST\\x00\\xff, state ready (2)")
    );

    let (region, _, stm) = self::region();
    region
        .store_u64(stm.offset + 384, 3, Ordering::Relaxed)
        .unwrap();
    let report = inspect(&region);
    assert_eq!(
        section(&report, "pipe").problems,
        ["side A (peer 3) never connected, yet it sent 3 and read 0 bytes"]
    );
}

#[test]
fn foreign_regions_are_named_or_unrecognised() {
    let region = HeapRegion::new(1 << 16);
    ivlink_core::rpmsg::resource_table::write(&*region).unwrap();
    let report = inspect(&region);
    assert_eq!(
        (report.layout.as_str(), report.ok),
        ("openamp", true),
        "{report}"
    );

    let region = HeapRegion::new(1 << 16);
    region.write(0, b"\x01\x02binary\x00").unwrap();
    let report = inspect(&region);
    assert_eq!((report.layout.as_str(), report.ok), ("unrecognised", false));
    assert_eq!(report.raw_message, None);
    let text = report.to_string();
    assert!(text.contains(r#"first bytes: "\x01\x02binary"#), "{text}");
    assert!(text.ends_with("verdict: unrecognised: neither an ivlink directory nor a known foreign layout (Zephyr's doorbell text, OpenAMP's resource table)\n"), "{text}");
}

/// Doorbells go nowhere: both sides are polled in turn.
struct NoDoorbell;

impl ivlink_core::Notify for NoDoorbell {
    fn notify(&self, _: u16, _: u16) -> Result<(), ivlink_core::NotifyError> {
        Ok(())
    }
}

/// A region with a native RPMsg section "rpmsg" of 8 buffers each way, a host
/// (peer 3) and a remote (peer 5) that have exchanged "ping"/"pong" on bound
/// "demo" endpoints; then the host announces "late" and sends "hello" to the
/// remote, which polls no more: both wait on vring 1.
fn rpmsg_region() -> (HeapRegion, SectionInfo, u32) {
    use ivlink_core::rpmsg::{ADDR_ANY, Link, LinkConfig, LinkEvent, NativeShape, Role};
    let region = HeapRegion::new(1 << 20);
    let shape = NativeShape {
        num: 8,
        buf_size: 512,
    };
    let size = <LinkLayout as SectionProtocol>::section_size(&shape).unwrap();
    let spec = SectionSpec::new("rpmsg", SectionKind::Rpmsg, size)
        .with_owner(3)
        .with_align(4096);
    let info = Directory::create(&*region, 8).unwrap().add(&spec).unwrap();
    let layout =
        <LinkLayout as SectionProtocol>::create(&*region, info.offset, size, &shape).unwrap();
    let side = |role, own_id, peer| {
        Link::new(LinkConfig {
            role,
            layout,
            own_id,
            peer: Some(peer),
            vector: 0,
        })
    };
    let (mut host, mut remote) = (side(Role::Host, 3, 5), side(Role::Remote, 5, 3));
    let local = host.create_endpoint("demo", ADDR_ANY, ADDR_ANY).unwrap();
    let far = remote.create_endpoint("demo", ADDR_ANY, ADDR_ANY).unwrap();
    let mut buf = vec![0u8; 512];
    let mut got_pong = false;
    for _ in 0..200 {
        let _ = host.poll(&*region, &NoDoorbell, &mut buf).unwrap();
        if let Some(LinkEvent::Message { len, .. }) =
            remote.poll(&*region, &NoDoorbell, &mut buf).unwrap()
        {
            assert_eq!(&buf[..len], b"ping");
            remote
                .send(&*region, &NoDoorbell, far, None, b"pong")
                .unwrap();
        }
        if host
            .endpoints()
            .get(local)
            .is_some_and(|e| e.remote != ADDR_ANY)
            && !got_pong
        {
            match host.send(&*region, &NoDoorbell, local, None, b"ping") {
                Ok(()) => got_pong = true,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(got_pong && host.is_up() && remote.is_up());
    let late = host.create_endpoint("late", ADDR_ANY, ADDR_ANY).unwrap();
    for _ in 0..10 {
        let _ = host.poll(&*region, &NoDoorbell, &mut buf).unwrap();
    }
    host.send(&*region, &NoDoorbell, local, None, b"hello")
        .unwrap();
    (region, info, late)
}

#[test]
fn a_native_rpmsg_section_is_decoded_with_its_messages_in_flight() {
    let (region, info, late) = rpmsg_region();
    let report = inspect(&region);
    assert!(report.ok, "{report}");
    let link = section(&report, "rpmsg");
    assert_eq!(link.kind, "rpmsg");
    let r = link.rpmsg.as_ref().unwrap();
    assert_eq!(
        (r.magic.as_str(), r.state_name.as_str(), r.link.as_str()),
        ("RPM1", "ready", "up")
    );
    assert_eq!((r.generation, r.attached), (1, Some(1)));
    assert!(r.driver_ok && !r.needs_reset);
    assert_eq!((r.host_peer, r.remote_peer), (Some(3), Some(5)));
    assert_eq!((r.num, r.buf_size), (8, 512));
    assert_eq!(r.vrings.len(), 2);
    assert_eq!(r.vrings[1].in_flight, Some(2), "{report}");
    let announced = r.in_flight[0].announces.as_ref().unwrap();
    assert_eq!(
        (
            announced.name.as_str(),
            announced.addr,
            announced.action.as_str()
        ),
        ("late", late, "create")
    );
    assert_eq!((r.in_flight[0].dst, r.in_flight[0].len), (0x35, 40));
    assert_eq!(r.in_flight[1].len, 5);
    assert!(r.in_flight[1].announces.is_none());
    contains_all(
        &report.to_string(),
        &[
            "rpmsg: magic RPM1, state ready, generation 1, status 0x04, attached 1, link up",
            "host peer 3, remote peer 5, 8 buffers of 512 B each way",
            "announces create 'late'",
        ],
    );
    let json = serde_json::to_value(link).unwrap();
    assert_eq!(json["rpmsg"]["vrings"][1]["direction"], "host -> remote");
    assert!(json.get("mailbox").is_none() && json.get("stream").is_none());

    // A hostile remote returns more buffers than were ever posted.
    let used_idx = r.vrings[1].used_idx;
    let ring = LinkLayout::open_native(&*region, info.offset, info.size)
        .unwrap()
        .vrings[1];
    let used_at = ring.base() + ring.layout().used_offset() + 2;
    region
        .write(used_at, &used_idx.wrapping_add(100).to_le_bytes())
        .unwrap();
    let report = inspect(&region);
    let problems = section(&report, "rpmsg").problems.join("\n");
    assert!(
        problems.contains("vring 1 (host -> remote): avail idx"),
        "{problems}"
    );
    assert!(report.to_string().contains("in flight ?"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a hostile peer writes over the mailbox and the stream, the
    /// report is made and printed without a panic.
    #[test]
    fn hostile_sections_never_panic(
        writes in proptest::collection::vec((any::<bool>(), 0usize..1200, any::<u64>()), 1..32),
    ) {
        let (region, mbx, stm) = region();
        traffic(&region, &mbx, &stm);
        for (in_mailbox, at, value) in writes {
            let base = if in_mailbox { mbx.offset } else { stm.offset };
            let _ = region.write(base + at, &value.to_le_bytes());
        }
        let report = inspect(&region);
        let _ = report.to_string();
        let _ = serde_json::to_string(&report).unwrap();
    }

    /// Whatever a hostile peer writes over a native RPMsg section (header,
    /// vrings, buffers), the report is made and printed without a panic.
    #[test]
    fn a_hostile_rpmsg_section_never_panics(
        writes in proptest::collection::vec((0usize..9000, any::<u64>()), 1..32),
    ) {
        let (region, info, _) = rpmsg_region();
        for (at, value) in writes {
            let _ = region.write(info.offset + at, &value.to_le_bytes());
        }
        let report = inspect(&region);
        let _ = report.to_string();
        let _ = serde_json::to_string(&report).unwrap();
    }
}
