use super::*;
use crate::HeapRegion;
use crate::Region;
use crate::notify::PeerId;
use crate::section::SectionProtocol;
use proptest::prelude::*;

const AT: usize = 4096 + 64;

/// A small switch: three ports with two 4 KiB windows each, cheap under Miri.
fn small_shape() -> NtbShape {
    NtbShape {
        mw_size: MW_ALIGN,
        ..NtbShape::new(3)
    }
}

fn switch(shape: NtbShape) -> (HeapRegion, NtbLayout, usize) {
    let size = shape.section_size().unwrap();
    let region = HeapRegion::new(AT + size);
    let layout = NtbLayout::create(&*region, AT, size, shape).unwrap();
    (region, layout, size)
}

#[test]
fn a_created_switch_opens_with_its_shape_and_reads_back_its_header() {
    let (region, layout, size) = switch(small_shape());
    assert_eq!(NtbLayout::open(&*region, AT, size).unwrap(), layout);
    assert_eq!(layout.shape(), small_shape());
    let header = <NtbLayout as SectionProtocol>::snapshot(&*region, AT, size).unwrap();
    assert!(header.has_magic());
    assert_eq!(
        (
            header.ports,
            header.spad_count,
            header.msg_count,
            header.mw_count
        ),
        (3, 16, 4, 2)
    );
    assert_eq!(header.mw_size, 4096);
}

#[test]
fn a_fresh_section_is_initializing_not_damaged() {
    let size = small_shape().section_size().unwrap();
    let region = HeapRegion::new(AT + size);
    let err = NtbLayout::open(&*region, AT, size).unwrap_err();
    assert!(NtbLayout::is_initializing(&err), "{err}");
}

#[test]
fn windows_are_page_aligned_disjoint_and_inside_the_section() {
    let (_region, layout, size) = switch(small_shape());
    let mut seen = std::vec::Vec::new();
    for port in 0..3 {
        for widx in 0..2 {
            let at = layout.window_offset(port, widx).unwrap();
            assert_eq!(at % 4096, 0);
            assert!(at >= layout.port_block(2).unwrap() + 64);
            assert!(
                at + 4096 <= AT + size,
                "window {port}/{widx} leaves the section"
            );
            seen.push(at);
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6);
    assert!(matches!(
        layout.window_offset(0, 2),
        Err(NtbLayoutError::NoSuch {
            what: "window",
            index: 2,
            count: 2
        })
    ));
    assert!(layout.window_offset(3, 0).is_err());
}

#[test]
fn peer_indices_are_dense_over_the_other_ports() {
    let (_region, layout, _) = switch(small_shape());
    assert_eq!(layout.peer_port(0, 0).unwrap(), 1);
    assert_eq!(layout.peer_port(0, 1).unwrap(), 2);
    assert_eq!(layout.peer_port(1, 0).unwrap(), 0);
    assert_eq!(layout.peer_port(1, 1).unwrap(), 2);
    assert_eq!(layout.peer_port(2, 1).unwrap(), 1);
    assert!(layout.peer_port(2, 2).is_err());
    for port in 0..3 {
        for pidx in 0..2 {
            let peer = layout.peer_port(port, pidx).unwrap();
            assert_eq!(layout.peer_index(port, peer).unwrap(), pidx);
        }
    }
    assert!(layout.peer_index(1, 1).is_err());
}

#[test]
fn bad_shapes_are_refused_before_anything_is_written() {
    let refused = [
        NtbShape::new(1),
        NtbShape::new(MAX_PORTS + 1),
        NtbShape {
            spad_count: 65,
            ..NtbShape::new(2)
        },
        NtbShape {
            msg_count: 5,
            ..NtbShape::new(2)
        },
        NtbShape {
            mw_count: 17,
            ..NtbShape::new(2)
        },
        NtbShape {
            mw_size: 1000,
            ..NtbShape::new(2)
        },
        NtbShape {
            mw_size: 2 << 30,
            ..NtbShape::new(2)
        },
    ];
    for shape in refused {
        assert!(
            <NtbLayout as SectionProtocol>::section_size(&shape).is_err(),
            "{shape:?}"
        );
    }
    let too_small = small_shape().section_size().unwrap() - 1;
    let region = HeapRegion::new(AT + too_small + 1);
    assert!(NtbLayout::create(&*region, AT, too_small, small_shape()).is_err());
    // Without windows the size is free.
    let bare = NtbShape {
        mw_count: 0,
        mw_size: 0,
        ..NtbShape::new(8)
    };
    assert!(bare.section_size().is_some());
}

#[test]
fn the_default_shape_has_a_window_per_peer() {
    let shape = NtbShape::new(8);
    assert_eq!(
        (shape.mw_count, shape.spad_count, shape.msg_count),
        (7, 16, 4)
    );
    assert!(shape.check().is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 8 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a hostile peer writes into the header, opening either fails in
    /// one error or gives a switch whose every window lies inside the section.
    #[test]
    fn hostile_header_bytes_never_reach_outside_the_section(
        words in proptest::collection::vec(any::<u32>(), 8),
        which in proptest::collection::vec(0usize..8, 1..4),
    ) {
        let (region, _layout, size) = switch(small_shape());
        // Each field is patched with an access of its own size: the region's
        // peers never mix sizes on one word.
        for (i, &slot) in which.iter().enumerate() {
            let relaxed = core::sync::atomic::Ordering::Relaxed;
            match slot {
                _ if slot == SETUP.at / 4 => {}
                6 | 7 => region
                    .store_u64(AT + 24, u64::from(words[i]) << (32 * (slot - 6)), relaxed)
                    .unwrap(),
                _ => region.store_u32(AT + 4 * slot, words[i], relaxed).unwrap(),
            }
        }
        if let Ok(layout) = NtbLayout::open(&*region, AT, size) {
            let shape = layout.shape();
            for port in 0..shape.ports {
                prop_assert!(layout.port_block(port).unwrap() < AT + size);
                for widx in 0..shape.mw_count {
                    let at = layout.window_offset(port, widx).unwrap();
                    prop_assert!(at + shape.mw_size as usize <= AT + size);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum DbOp {
    Ring { port: u32, bits: u64 },
    Clear { port: u32, bits: u64 },
    Mask { port: u32, bits: u64 },
    Unmask { port: u32, bits: u64 },
    Arm { port: u32 },
    Take { port: u32 },
}

fn db_op(ports: u32) -> impl Strategy<Value = DbOp> {
    let bits = 0u64..16;
    prop_oneof![
        (0..ports, bits.clone()).prop_map(|(port, bits)| DbOp::Ring { port, bits }),
        (0..ports, bits.clone()).prop_map(|(port, bits)| DbOp::Clear { port, bits }),
        (0..ports, bits.clone()).prop_map(|(port, bits)| DbOp::Mask { port, bits }),
        (0..ports, bits).prop_map(|(port, bits)| DbOp::Unmask { port, bits }),
        (0..ports).prop_map(|port| DbOp::Arm { port }),
        (0..ports).prop_map(|port| DbOp::Take { port }),
    ]
}

/// What the NTB rules say one port's doorbell state is.
#[derive(Debug, Clone, Copy, Default)]
struct DbModel {
    db: u64,
    mask: u64,
    pending: bool,
    want: bool,
}

impl DbModel {
    /// Raises the doorbell event; whether the owner is rung.
    fn raise(&mut self) -> bool {
        self.pending = true;
        core::mem::take(&mut self.want)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any sequence of rings, clears, masks, unmasks, sleeps and wake-ups on two
    /// or three ports: the registers hold what the model says, an event is
    /// raised exactly when an unmasked bit goes from 0 to 1 or a set bit is
    /// unmasked, and the owner is rung only when it asked.
    #[test]
    fn doorbells_follow_the_ntb_rules(
        ports in 2u32..=3,
        ops in proptest::collection::vec(db_op(3), 1..if cfg!(miri) { 12 } else { 64 }),
    ) {
        let shape = NtbShape { mw_count: 0, mw_size: 0, ..NtbShape::new(ports) };
        let (region, layout, _) = switch(shape);
        let mut model = [DbModel::default(); 3];
        for op in ops {
            match op {
                DbOp::Ring { port, bits } if port < ports => {
                    let m = &mut model[port as usize];
                    let newly = bits & !m.db & !m.mask != 0;
                    m.db |= bits;
                    let rung = newly && m.raise();
                    prop_assert_eq!(layout.db_set(&*region, port, bits).unwrap(), Ring(rung));
                }
                DbOp::Clear { port, bits } if port < ports => {
                    model[port as usize].db &= !bits;
                    layout.db_clear(&*region, port, bits).unwrap();
                }
                DbOp::Mask { port, bits } if port < ports => {
                    model[port as usize].mask |= bits;
                    layout.db_set_mask(&*region, port, bits).unwrap();
                }
                DbOp::Unmask { port, bits } if port < ports => {
                    let m = &mut model[port as usize];
                    let redeliver = m.db & bits & m.mask != 0;
                    m.mask &= !bits;
                    let rung = redeliver && m.raise();
                    prop_assert_eq!(layout.db_clear_mask(&*region, port, bits).unwrap(), Ring(rung));
                }
                DbOp::Arm { port } if port < ports => {
                    let m = &mut model[port as usize];
                    m.want = !m.pending;
                    prop_assert_eq!(layout.arm(&*region, port).unwrap(), m.want);
                }
                DbOp::Take { port } if port < ports => {
                    let m = &mut model[port as usize];
                    let events = layout.take_events(&*region, port).unwrap();
                    prop_assert_eq!(events.contains(Events::DB), core::mem::take(&mut m.pending));
                }
                _ => {}
            }
            for port in 0..ports {
                let m = model[port as usize];
                prop_assert_eq!(layout.db_read(&*region, port).unwrap(), m.db);
                prop_assert_eq!(layout.db_read_mask(&*region, port).unwrap(), m.mask);
            }
        }
    }
}

#[test]
fn a_ring_while_masked_is_delivered_when_unmasked() {
    let (region, layout, _) = switch(small_shape());
    layout.db_set_mask(&*region, 1, 0b10).unwrap();
    assert!(layout.arm(&*region, 1).unwrap());
    assert_eq!(layout.db_set(&*region, 1, 0b10).unwrap(), Ring(false));
    assert!(layout.take_events(&*region, 1).unwrap().is_empty());
    assert_eq!(layout.db_read(&*region, 1).unwrap(), 0b10);
    // The owner still sleeps: unmasking rings it.
    assert_eq!(layout.db_clear_mask(&*region, 1, 0b10).unwrap(), Ring(true));
    assert!(
        layout
            .take_events(&*region, 1)
            .unwrap()
            .contains(Events::DB)
    );
    // Bits set by two peers at once are both kept.
    assert_eq!(layout.db_set(&*region, 2, 0b01).unwrap(), Ring(false));
    assert_eq!(layout.db_set(&*region, 2, 0b100).unwrap(), Ring(false));
    assert_eq!(layout.db_read(&*region, 2).unwrap(), 0b101);
    layout.db_clear(&*region, 2, 0b001).unwrap();
    assert_eq!(layout.db_read(&*region, 2).unwrap(), 0b100);
}

#[derive(Debug, Clone)]
enum MsgOp {
    Write {
        from: u32,
        to: u32,
        midx: u32,
        data: u32,
    },
    ClearSts {
        port: u32,
        bits: u32,
    },
    Mask {
        port: u32,
        bits: u32,
    },
    Unmask {
        port: u32,
        bits: u32,
    },
    Take {
        port: u32,
    },
}

fn msg_op() -> impl Strategy<Value = MsgOp> {
    let status = prop_oneof![
        Just(0xf),
        Just(0xf_0000),
        Just(0x1_0001),
        Just(0x2),
        Just(u32::MAX)
    ];
    prop_oneof![
        (0u32..3, 0u32..3, 0u32..4, any::<u32>()).prop_map(|(from, to, midx, data)| MsgOp::Write {
            from,
            to,
            midx,
            data
        }),
        (0u32..3, status.clone()).prop_map(|(port, bits)| MsgOp::ClearSts { port, bits }),
        (0u32..3, status.clone()).prop_map(|(port, bits)| MsgOp::Mask { port, bits }),
        (0u32..3, status).prop_map(|(port, bits)| MsgOp::Unmask { port, bits }),
        (0u32..3).prop_map(|port| MsgOp::Take { port }),
    ]
}

/// What the NTB rules say one port's message registers hold.
#[derive(Debug, Clone, Copy, Default)]
struct MsgModel {
    regs: [Option<(u32, u32)>; 4],
    full: u32,
    out: u32,
    mask: u32,
    pending: bool,
}

impl MsgModel {
    fn sts(&self) -> u32 {
        self.out | self.full << MSG_INBITS_SHIFT
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any sequence of writes, status clears, masks and wake-ups on two or three
    /// ports: a write into a full register is refused and sets the writer's
    /// outbound bit, a delivered one records its source, and events are raised
    /// as the masks say.
    #[test]
    fn message_registers_follow_the_ntb_rules(
        ports in 2u32..=3,
        ops in proptest::collection::vec(msg_op(), 1..if cfg!(miri) { 12 } else { 64 }),
    ) {
        let shape = NtbShape { mw_count: 0, mw_size: 0, ..NtbShape::new(ports) };
        let (region, layout, _) = switch(shape);
        let mut model = [MsgModel::default(); 3];
        for op in ops {
            match op {
                MsgOp::Write { from, to, midx, data } if from < ports && to < ports => {
                    let got = layout.peer_msg_write(&*region, from, to, midx, data);
                    if from == to {
                        prop_assert!(got.is_err());
                        continue;
                    }
                    let bit = 1 << midx;
                    if model[to as usize].full & bit != 0 {
                        let m = &mut model[from as usize];
                        m.out |= bit;
                        m.pending |= m.mask & bit == 0;
                        prop_assert!(matches!(got.unwrap(), MsgWrite::Refused(_)));
                    } else {
                        let m = &mut model[to as usize];
                        m.full |= bit;
                        m.regs[midx as usize] = Some((data, from));
                        m.pending |= m.mask & (bit << MSG_INBITS_SHIFT) == 0;
                        prop_assert!(matches!(got.unwrap(), MsgWrite::Delivered(_)));
                    }
                }
                MsgOp::ClearSts { port, bits } if port < ports => {
                    let m = &mut model[port as usize];
                    m.out &= !(bits & 0xf);
                    m.full &= !((bits >> MSG_INBITS_SHIFT) & 0xf);
                    layout.msg_clear_sts(&*region, port, bits).unwrap();
                }
                MsgOp::Mask { port, bits } if port < ports => {
                    model[port as usize].mask |= bits;
                    layout.msg_set_mask(&*region, port, bits).unwrap();
                }
                MsgOp::Unmask { port, bits } if port < ports => {
                    let m = &mut model[port as usize];
                    m.pending |= m.sts() & bits & m.mask != 0;
                    m.mask &= !bits;
                    let _ = layout.msg_clear_mask(&*region, port, bits).unwrap();
                }
                MsgOp::Take { port } if port < ports => {
                    let events = layout.take_events(&*region, port).unwrap();
                    let m = &mut model[port as usize];
                    prop_assert_eq!(events.contains(Events::MSG), core::mem::take(&mut m.pending));
                }
                _ => {}
            }
            for port in 0..ports {
                let m = model[port as usize];
                prop_assert_eq!(layout.msg_read_sts(&*region, port).unwrap(), m.sts());
                for midx in 0..4 {
                    let read = layout.msg_read(&*region, port, midx).unwrap();
                    prop_assert_eq!(read.full, m.full & (1 << midx) != 0);
                    prop_assert_eq!(m.regs[midx as usize], read.from.map(|from| (read.data, from)));
                }
            }
        }
    }
}

#[test]
fn a_message_to_a_full_register_is_refused_until_the_owner_clears_it() {
    let (region, layout, _) = switch(small_shape());
    let write = |from, data| layout.peer_msg_write(&*region, from, 0, 0, data).unwrap();
    assert!(matches!(write(1, 0xdeadbeef), MsgWrite::Delivered(_)));
    assert!(matches!(write(2, 7), MsgWrite::Refused(_)));
    assert_eq!(layout.msg_read_sts(&*region, 2).unwrap(), 0x1);
    let read = layout.msg_read(&*region, 0, 0).unwrap();
    assert_eq!(
        (read.data, read.from, read.full),
        (0xdeadbeef, Some(1), true)
    );
    assert_eq!(layout.msg_read_sts(&*region, 0).unwrap(), 0x1_0000);
    layout.msg_clear_sts(&*region, 0, u32::MAX).unwrap();
    assert!(matches!(write(2, 7), MsgWrite::Delivered(_)));
    assert_eq!(layout.msg_read(&*region, 0, 0).unwrap().from, Some(2));
    assert!(layout.peer_msg_write(&*region, 1, 0, 4, 0).is_err());
    assert_eq!((layout.msg_inbits(), layout.msg_outbits()), (0xf_0000, 0xf));
}

#[test]
fn a_hostile_message_word_is_reported_not_trusted() {
    let (region, layout, _) = switch(small_shape());
    let register = layout.port_block(1).unwrap() + 192 + 8;
    region
        .store_u64(
            register,
            1 << 63 | 9 << 32 | 5,
            core::sync::atomic::Ordering::Relaxed,
        )
        .unwrap();
    assert!(matches!(
        layout.msg_read(&*region, 1, 1),
        Err(NtbLayoutError::Damaged(_))
    ));
    region
        .store_u64(
            register,
            1 << 50 | 1 << 32,
            core::sync::atomic::Ordering::Relaxed,
        )
        .unwrap();
    assert!(matches!(
        layout.msg_read(&*region, 1, 1),
        Err(NtbLayoutError::Damaged(_))
    ));
}

#[test]
fn scratchpads_are_checked_32_bit_registers() {
    let (region, layout, _) = switch(small_shape());
    layout.spad_write(&*region, 2, 15, 0x1234_5678).unwrap();
    assert_eq!(layout.spad_read(&*region, 2, 15).unwrap(), 0x1234_5678);
    assert_eq!(layout.spad_read(&*region, 1, 15).unwrap(), 0);
    assert!(matches!(
        layout.spad_write(&*region, 2, 16, 1),
        Err(NtbLayoutError::NoSuch {
            what: "scratchpad",
            index: 16,
            count: 16
        })
    ));
}

fn claim(peer: PeerId, port: Option<u32>) -> Claim {
    Claim {
        peer,
        session: u32::from(peer) * 7 + 1,
        port,
    }
}

#[test]
fn links_are_up_only_between_owned_enabled_live_ports() {
    let (region, layout, _) = switch(small_shape());
    let nobody_gone = |_| false;
    let (a, _) = layout
        .claim(&*region, claim(10, None), nobody_gone)
        .unwrap();
    let (b, _) = layout
        .claim(&*region, claim(11, None), nobody_gone)
        .unwrap();
    assert_eq!((a, b), (0, 1));
    assert_eq!(layout.link_is_up(&*region, 0, nobody_gone).unwrap(), 0);
    let _ = layout.set_link(&*region, 0, true).unwrap();
    assert_eq!(layout.link_is_up(&*region, 0, nobody_gone).unwrap(), 0);
    // Port 1's claim raised a link event on port 0.
    assert!(
        layout
            .take_events(&*region, 0)
            .unwrap()
            .contains(Events::LINK)
    );
    assert!(layout.arm(&*region, 0).unwrap());
    let rings = layout.set_link(&*region, 1, true).unwrap();
    assert_eq!(rings.peers(), &[10]);
    assert!(
        layout
            .take_events(&*region, 0)
            .unwrap()
            .contains(Events::LINK)
    );
    assert_eq!(layout.link_is_up(&*region, 0, nobody_gone).unwrap(), 0b01);
    assert_eq!(layout.link_is_up(&*region, 1, nobody_gone).unwrap(), 0b01);
    // Port 1's owner is reported gone: the link is down, and a newcomer takes
    // the port with fresh registers and a new generation.
    assert_eq!(layout.link_is_up(&*region, 0, |p| p == 11).unwrap(), 0);
    layout.spad_write(&*region, 1, 0, 99).unwrap();
    let before = layout.owner(&*region, 1).unwrap().unwrap().generation;
    assert!(matches!(
        layout.claim(&*region, claim(12, Some(1)), nobody_gone),
        Err(NtbLayoutError::PortTaken { port: Some(1) })
    ));
    let (port, _) = layout
        .claim(&*region, claim(12, Some(1)), |p| p == 11)
        .unwrap();
    assert_eq!(port, 1);
    let owner = layout.owner(&*region, 1).unwrap().unwrap();
    assert_eq!((owner.peer, owner.generation), (12, before + 1));
    assert_eq!(layout.spad_read(&*region, 1, 0).unwrap(), 0);
    assert!(
        !layout
            .holds(&*region, 1, 11, claim(11, None).session)
            .unwrap()
    );
    let _ = layout.set_link(&*region, 1, true).unwrap();
    assert_eq!(layout.link_is_up(&*region, 0, nobody_gone).unwrap(), 0b01);
    // Leaving takes the link down for the peers.
    let _ = layout
        .release(&*region, 1, 12, claim(12, None).session)
        .unwrap();
    assert_eq!(layout.link_is_up(&*region, 0, nobody_gone).unwrap(), 0);
    assert_eq!(layout.evict(&*region, 10).unwrap(), 0b1);
    assert_eq!(layout.owner(&*region, 0).unwrap(), None);
}

#[test]
fn a_damaged_owner_word_is_reported_and_the_port_can_be_retaken() {
    let (region, layout, _) = switch(small_shape());
    let owner = layout.port_block(2).unwrap();
    region
        .store_u32(owner, 0x7000_0000, core::sync::atomic::Ordering::Relaxed)
        .unwrap();
    assert!(matches!(
        layout.owner(&*region, 2),
        Err(NtbLayoutError::Damaged(_))
    ));
    assert!(!layout.link_enabled(&*region, 2).unwrap());
    let (port, _) = layout
        .claim(&*region, claim(3, Some(2)), |_| false)
        .unwrap();
    assert_eq!(port, 2);
}

/// Two peers ring and write messages into one port at once, from real threads:
/// every doorbell bit survives (no read-modify-write race), and each message
/// register ends up holding exactly one writer's data with that writer as source.
#[test]
fn writers_racing_on_one_port_lose_no_bit_and_mix_no_message() {
    let (region, layout, _) = switch(small_shape());
    let rounds = if cfg!(miri) { 4 } else { 2000 };
    let refused = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|scope| {
        for from in [1u32, 2] {
            let (region, layout, refused) = (&region, layout, &refused);
            scope.spawn(move || {
                for round in 0..rounds {
                    let bit = 1u64 << ((round % 32) * 2 + from - 1);
                    let _ = layout.db_set(&**region, 0, bit).unwrap();
                    let data = from << 24 | round;
                    if let MsgWrite::Refused(_) = layout
                        .peer_msg_write(&**region, from, 0, round % 4, data)
                        .unwrap()
                    {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let every_bit = if rounds >= 32 {
        u64::MAX
    } else {
        (1 << (2 * rounds)) - 1
    };
    assert_eq!(layout.db_read(&*region, 0).unwrap(), every_bit);
    let mut delivered = 0;
    for midx in 0..4 {
        let message = layout.msg_read(&*region, 0, midx).unwrap();
        assert!(message.full);
        let from = message.from.unwrap();
        assert_eq!(
            message.data >> 24,
            from,
            "register {midx} mixes two writers"
        );
        delivered += 1;
    }
    assert_eq!(delivered + refused.into_inner(), 2 * rounds);
}

#[test]
fn an_outbound_window_reaches_only_what_the_peer_granted() {
    let (region, layout, _) = switch(small_shape());
    let buffer = layout.mw_buffer(1, 0).unwrap();
    assert_eq!(buffer.len, 4096);
    // Port 0 cannot point at port 1's memory before port 1 grants it.
    let addr = buffer.offset as u64;
    assert_eq!(
        layout.peer_mw_set_trans(&*region, 0, 1, 0, addr, 4096),
        Err(NtbLayoutError::NotGranted)
    );
    assert_eq!(
        layout.mw_set_trans(&*region, 1, 0, 0, addr + 1, 4096),
        Err(NtbLayoutError::BadTranslation)
    );
    assert_eq!(
        layout.mw_set_trans(&*region, 1, 0, 0, addr, 8192),
        Err(NtbLayoutError::BadTranslation)
    );
    layout.mw_set_trans(&*region, 1, 0, 0, addr, 4096).unwrap();
    let grant = layout.mw_trans(&*region, 1, 0).unwrap().unwrap();
    assert_eq!((grant.port, grant.window), (0, buffer));
    // Port 2 is not the one granted.
    assert_eq!(
        layout.peer_mw_set_trans(&*region, 2, 1, 0, addr, 4096),
        Err(NtbLayoutError::NotGranted)
    );
    layout
        .peer_mw_set_trans(&*region, 0, 1, 0, addr, 4096)
        .unwrap();
    let out = layout.peer_mw_get_addr(&*region, 0, 0).unwrap().unwrap();
    assert_eq!((out.port, out.window), (1, buffer));
    // Writes through it land in port 1's buffer.
    region.write(out.window.offset + 100, b"zero copy").unwrap();
    let mut seen = [0u8; 9];
    region.read(buffer.offset + 100, &mut seen).unwrap();
    assert_eq!(&seen, b"zero copy");
    // Once port 1 closes its window, port 0's outbound window reaches nothing.
    layout.mw_clear_trans(&*region, 1, 0).unwrap();
    assert_eq!(
        layout.peer_mw_get_addr(&*region, 0, 0),
        Err(NtbLayoutError::NotGranted)
    );
    layout.peer_mw_clear_trans(&*region, 0, 0).unwrap();
    assert_eq!(layout.peer_mw_get_addr(&*region, 0, 0).unwrap(), None);
}

#[test]
fn a_hostile_translation_never_reaches_outside_the_window() {
    let (region, layout, _) = switch(small_shape());
    let buffer = layout.mw_buffer(2, 1).unwrap();
    layout
        .mw_set_trans(&*region, 2, 0, 1, buffer.offset as u64, 4096)
        .unwrap();
    // Port 2 lies: its record now claims 1 GiB.
    let translations = layout.port_block(2).unwrap() + layout.translations_in_block();
    let record = translations + 32;
    region
        .store_u64(record + 16, 1 << 30, core::sync::atomic::Ordering::Relaxed)
        .unwrap();
    assert!(matches!(
        layout.mw_trans(&*region, 2, 1),
        Err(NtbLayoutError::Damaged(_))
    ));
    assert_eq!(
        layout.peer_mw_set_trans(&*region, 0, 2, 0, buffer.offset as u64, 1 << 30),
        Err(NtbLayoutError::NotGranted)
    );
}
