//! NTB switches: a 3-port switch with registers set by two owners, the same
//! switch damaged word by word and overwritten at random.

use super::*;
use ivlink_core::ntb::{Claim, MW_ALIGN, NtbShape};

/// Three ports, four scratchpads, two 4 KiB windows each, vector 2.
const SHAPE: NtbShape = NtbShape {
    ports: 3,
    spad_count: 4,
    msg_count: 4,
    mw_count: 2,
    mw_size: MW_ALIGN,
    vector: 2,
};

/// A directory with switch "ntb": peer 3 owns port 0, peer 5 port 1, port 2 is
/// free. Both links are enabled; port 1 rang port 0's doorbell bits 0 and 2 and
/// wrote 0xdeadbeef into its message register 0; port 0 masked doorbell bit 8,
/// set scratchpad 3 and granted both its windows to port 1, which pointed its
/// outbound windows at them; then port 0 closed window 1.
fn switch_region() -> (HeapRegion, SectionInfo, NtbLayout) {
    let region = HeapRegion::new(1 << 20);
    let size = SHAPE.section_size().unwrap();
    let spec = SectionSpec::new("ntb", SectionKind::Ntb, size)
        .with_owner(3)
        .with_align(4096);
    let info = Directory::create(&*region, 8).unwrap().add(&spec).unwrap();
    let layout = NtbLayout::create(&*region, info.offset, size, SHAPE).unwrap();
    let r = &*region;
    for (peer, session, port) in [(3, 0x2a, 0), (5, 7, 1)] {
        let claim = Claim {
            peer,
            session,
            port: Some(port),
        };
        assert_eq!(layout.claim(r, claim, |_| false).unwrap().0, port);
        let _ = layout.set_link(r, port, true).unwrap();
    }
    let _ = layout.db_set(r, 0, 0b101).unwrap();
    layout.db_set_mask(r, 0, 0x100).unwrap();
    let _ = layout.peer_msg_write(r, 1, 0, 0, 0xdead_beef).unwrap();
    layout.spad_write(r, 0, 3, 0x1234_5678).unwrap();
    for widx in 0..2 {
        let window = layout.mw_buffer(0, widx).unwrap().offset as u64;
        layout
            .mw_set_trans(r, 0, 1, widx, window, MW_ALIGN)
            .unwrap();
        layout
            .peer_mw_set_trans(r, 1, 0, widx, window, MW_ALIGN)
            .unwrap();
    }
    layout.mw_clear_trans(r, 0, 1).unwrap();
    (region, info, layout)
}

#[test]
fn a_three_port_switch_is_decoded_with_its_registers() {
    let (region, _, layout) = switch_region();
    let report = inspect(&region);
    assert!(report.ok, "{report}");
    let s = section(&report, "ntb");
    assert_eq!(s.kind, "ntb");
    let n = s.ntb.as_ref().unwrap();
    assert_eq!(
        (n.magic.as_str(), n.state_name.as_str(), n.port_count),
        ("NTB1", "ready", 3)
    );
    assert_eq!(
        (n.spad_count, n.msg_count, n.mw_count, n.mw_size, n.vector),
        (4, 4, 2, 4096, 2)
    );
    assert_eq!(n.ports.len(), 3);

    let p0 = &n.ports[0];
    let owner = p0.owner.as_ref().unwrap();
    assert_eq!((owner.peer, owner.session, owner.generation), (3, 0x2a, 1));
    assert_eq!(
        (p0.link_enabled, p0.link_up.as_slice()),
        (Some(true), &[1][..])
    );
    assert_eq!((p0.db, p0.db_mask), (Some(0b101), Some(0x100)));
    assert_eq!((p0.msg_sts, p0.msg_mask), (Some(0x1_0000), Some(0)));
    let m = &p0.messages[0];
    assert_eq!(
        (m.register, m.data, m.from, m.full),
        (0, 0xdead_beef, Some(1), true)
    );
    assert!(p0.messages[1..].iter().all(|m| m.from.is_none() && !m.full));
    assert_eq!(p0.spads, [Some(0), Some(0), Some(0), Some(0x1234_5678)]);
    let window0 = layout.mw_buffer(0, 0).unwrap();
    let t = p0.inbound[0].translation.as_ref().unwrap();
    assert_eq!((t.port, t.offset, t.len), (1, window0.offset, 4096));
    assert_eq!(p0.inbound[0].buffer_offset, window0.offset);
    assert!(p0.inbound[1].translation.is_none());
    assert!(
        p0.outbound
            .iter()
            .all(|o| o.reaches.is_none() && o.refused.is_none())
    );

    let p1 = &n.ports[1];
    assert_eq!(p1.owner.as_ref().map(|o| o.peer), Some(5));
    assert_eq!(p1.link_up, [0]);
    let reaches = p1.outbound[0].reaches.as_ref().unwrap();
    assert_eq!((reaches.port, reaches.offset), (0, window0.offset));
    assert!(p1.outbound[1].reaches.is_none());
    assert!(
        p1.outbound[1]
            .refused
            .as_ref()
            .unwrap()
            .contains("does not grant")
    );

    let p2 = &n.ports[2];
    assert!(p2.owner.is_none() && p2.link_up.is_empty());
    assert_eq!(p2.link_enabled, Some(false));

    let text = report.to_string();
    contains_all(
        &text,
        &[
            "ntb: magic NTB1, state ready (2), 3 ports, 4 scratchpads, 4 message registers, 2 windows of 4096 B, vector 2",
            "port 0: peer 3 (session 0x0000002a, generation 1), link enabled, up with port 1",
            "doorbell 0x0000000000000005 mask 0x0000000000000100, message status 0x00010000 mask 0x00000000",
            "messages: 0: 0xdeadbeef from port 1 (full), 1: empty, 2: empty, 3: empty",
            "scratchpads: 3: 0x12345678\n",
            &format!(
                "inbound window 0 at {:#x}, 4096 B: granted to port 1 at {:#x}, 4096 B",
                window0.offset, window0.offset
            ),
            &format!("outbound window 0: port 0 at {:#x}, 4096 B", window0.offset),
            "outbound window 1: refused: the peer's inbound window does not grant",
            "port 2: free, link disabled, no link up",
            "inconsistencies: none",
        ],
    );
    assert!(!text.contains("inbound window 1"), "{text}");

    let json = serde_json::to_value(s).unwrap();
    let ports = &json["ntb"]["ports"];
    assert_eq!(ports[0]["owner"]["session"], 0x2a);
    assert_eq!(ports[0]["db"], 5);
    assert_eq!(ports[0]["spads"], serde_json::json!([0, 0, 0, 0x1234_5678]));
    assert_eq!(ports[0]["messages"][0]["from"], 1);
    assert_eq!(ports[1]["outbound"][0]["reaches"]["port"], 0);
    assert!(ports[2]["owner"].is_null());
    assert!(json.get("mailbox").is_none() && json.get("console").is_none());
}

/// Writes `value` at `at`, as a hostile peer would.
fn scribble(region: &HeapRegion, at: usize, value: u32) {
    region.store_u32(at, value, Ordering::Relaxed).unwrap();
}

#[test]
fn damaged_registers_become_problems_not_panics() {
    let (region, _, layout) = switch_region();
    let block = |port| layout.port_block(port).unwrap();
    // Port 1's owner word names no peer; port 0's message register 1 claims a
    // source port the switch lacks; port 0's inbound window 0 is translated for
    // port 98, and port 2's for itself.
    scribble(&region, block(1), 0x7000_0000);
    region
        .store_u64(block(0) + 192 + 8, 9 << 32 | 0x55, Ordering::Relaxed)
        .unwrap();
    let translations = (256 + 4 * SHAPE.spad_count as usize).next_multiple_of(64);
    scribble(&region, block(0) + translations, 99);
    scribble(&region, block(2) + translations, 3);
    region
        .store_u64(block(2) + translations + 16, MW_ALIGN, Ordering::Relaxed)
        .unwrap();

    let report = inspect(&region);
    assert!(!report.ok);
    let s = section(&report, "ntb");
    contains_all(
        &s.problems.join("\n"),
        &[
            "port 1 owner: damaged NTB register: port owner",
            "port 0 message register 1: damaged NTB register: message from no port",
            "port 0 inbound window 0: damaged NTB register: translation for no port",
            "port 2 inbound window 0: translated for the port itself",
        ],
    );
    let n = s.ntb.as_ref().unwrap();
    assert!(n.ports[1].owner.is_none());
    assert_eq!(
        n.ports[1].link_enabled,
        Some(false),
        "a damaged owner owns nothing"
    );
    assert!(n.ports[0].messages.iter().all(|m| m.register != 1));
    assert!(n.ports[0].inbound[0].translation.is_none());
    let text = report.to_string();
    assert!(
        text.contains("PROBLEM: port 1 owner: damaged NTB register: port owner"),
        "{text}"
    );
    assert!(text.contains(&format!("inconsistencies: {}", report.problem_count)));
}

#[test]
fn a_damaged_header_is_shown_as_read_with_a_problem() {
    let cases: [(usize, u32, &str); 4] = [
        (
            0,
            u32::from_le_bytes(*b"NT\0\xff"),
            "not a valid NTB switch: bad magic",
        ),
        (
            4,
            0,
            "not a valid NTB switch: port count out of range (2..=16)",
        ),
        (
            4,
            u32::MAX,
            "not a valid NTB switch: port count out of range (2..=16)",
        ),
        (
            8,
            1 << 20,
            "not a valid NTB switch: more than 64 scratchpads",
        ),
    ];
    for (field, value, problem) in cases {
        let (region, info, _) = switch_region();
        scribble(&region, info.offset + field, value);
        let report = inspect(&region);
        let s = section(&report, "ntb");
        assert_eq!(s.problems, [problem], "{report}");
        let n = s.ntb.as_ref().unwrap();
        assert!(n.ports.is_empty());
        let text = report.to_string();
        assert!(text.contains(&format!("PROBLEM: {problem}")), "{text}");
        assert!(!report.ok);
    }
    let (region, info, _) = switch_region();
    scribble(&region, info.offset, u32::from_le_bytes(*b"NT\0\xff"));
    let report = inspect(&region);
    assert!(
        report
            .to_string()
            .contains("ntb: magic NT\\x00\\xff, state ready (2), 3 ports"),
        "{report}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a hostile peer writes over the switch (header, port blocks,
    /// translations), the report is made and printed without a panic.
    #[test]
    fn a_hostile_switch_never_panics(
        writes in proptest::collection::vec((0usize..2400, any::<u64>()), 1..32),
    ) {
        let (region, info, _) = switch_region();
        for (at, value) in writes {
            let _ = region.write(info.offset + at, &value.to_le_bytes());
        }
        let report = inspect(&region);
        let _ = report.to_string();
        let _ = serde_json::to_string(&report).unwrap();
    }
}
