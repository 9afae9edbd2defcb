use super::*;
use crate::notify::PeerId;
use crate::region::{HeapRegion, RawRegion};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use proptest::prelude::*;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const KIB: usize = 1024;
/// Where new directories go.
const B: usize = DIRECTORY_OFFSET;

fn ring(name: &str, size: usize) -> SectionSpec<'_> {
    SectionSpec::new(name, SectionKind::Channel, size)
}

/// Writes entry `index` by hand, as a peer (honest or not) would.
fn poke_entry(r: &RawRegion, index: u32, state: u32, name: &[u8], offset: u64, size: u64) {
    let at = |f| entry_field(B, index, f).unwrap();
    let mut raw = [0u8; NAME_LEN];
    raw[..name.len()].copy_from_slice(name);
    r.write(at(ent::NAME), &raw).unwrap();
    r.store_u64(at(ent::OFFSET.offset()), offset.to_le(), Relaxed)
        .unwrap();
    r.store_u64(at(ent::SIZE.offset()), size.to_le(), Relaxed)
        .unwrap();
    r.store_u32(at(ent::KIND.offset()), 1u32.to_le(), Relaxed)
        .unwrap();
    r.store_u32(at(ent::STATE.offset()), state.to_le(), Relaxed)
        .unwrap();
}

fn set_count(r: &RawRegion, count: u32) {
    r.store_u32(B + hdr::SECTION_COUNT.offset(), count.to_le(), Relaxed)
        .unwrap();
}

fn state_of(r: &RawRegion, index: u32) -> u32 {
    u32::from_le(
        r.load_u32(entry_field(B, index, 0).unwrap(), Relaxed)
            .unwrap(),
    )
}

#[test]
fn create_open_add_find_round_trip() {
    let region = HeapRegion::new(64 * KIB);
    let dir = Directory::create(&*region, 8).unwrap();
    assert_eq!(dir.max_sections(), 8);
    assert_eq!(dir.offset(), DIRECTORY_OFFSET);
    assert_eq!(dir.section_space_start(), 8192);
    assert_eq!(dir.next_free().unwrap(), 8192);

    let spec = ring("tx:0->1", 1000)
        .with_owner(3)
        .with_vector(2)
        .with_flags(0xf00d)
        .with_align(256);
    let a = dir.add(&spec).unwrap();
    assert_eq!(a.index, 0);
    assert_eq!(a.name.as_str(), "tx:0->1");
    assert_eq!(
        (a.kind, a.owner, a.vector, a.flags),
        (SectionKind::Channel, 3, 2, 0xf00d)
    );
    assert_eq!((a.offset, a.size), (8192, 1000));
    let b = dir
        .add(&SectionSpec::new("console", SectionKind::Console, 64).with_align(4096))
        .unwrap();
    assert_eq!((b.index, b.offset, b.size), (1, 12288, 64));
    // A small alignment is raised to 64.
    let c = dir.add(&ring("c", 1).with_align(1)).unwrap();
    assert_eq!(c.offset, 12288 + 64);
    assert_eq!(dir.next_free().unwrap(), 12288 + 65);

    let again = Directory::open(&*region).unwrap();
    assert_eq!(again.find("tx:0->1").unwrap(), Some(a));
    assert_eq!(again.find("console").unwrap(), Some(b));
    assert_eq!(again.find("nope").unwrap(), None);
    assert_eq!(again.entry(2).unwrap(), c);
    let listed: Vec<_> = again.sections().collect();
    assert_eq!(listed, [Ok(a), Ok(b), Ok(c)]);
    assert_eq!(again.check(), []);
    assert_eq!(
        again.entry(3),
        Err(DirectoryError::NotReady {
            index: 3,
            state: EntryState::Free,
            name: None
        })
    );
    assert!(matches!(
        again.entry(8),
        Err(DirectoryError::NoSuchEntry { .. })
    ));

    // get_or_add returns the existing section without adding.
    let got = again.get_or_add(&ring("console", 999)).unwrap();
    assert_eq!(got, GetOrAdd::Existing(b));
    assert!(!got.is_added());
    let new = again.get_or_add(&ring("new", 8)).unwrap();
    assert!(new.is_added());
    assert_eq!(new.info().index, 3);
    assert_eq!(a.range(), 8192..9192);
}

#[test]
fn layout_matches_the_documented_table() {
    let region = HeapRegion::new(16 * KIB);
    let dir = Directory::create(&*region, 2).unwrap();
    dir.add(
        &SectionSpec::new("abc", SectionKind::Mailbox, 0x123)
            .with_owner(0x0102)
            .with_vector(0x0304)
            .with_flags(0x0506_0708),
    )
    .unwrap();
    let mut message_area = [0xffu8; MESSAGE_AREA_LEN];
    region.read(0, &mut message_area).unwrap();
    assert_eq!(
        message_area, [0u8; MESSAGE_AREA_LEN],
        "the message area is left alone"
    );
    let mut header = [0u8; 64];
    region.read(4096, &mut header).unwrap();
    assert_eq!(&header[0..8], b"IVLINKD\x01");
    assert_eq!(header[8..12], 1u32.to_le_bytes());
    assert_eq!(header[12..16], 2u32.to_le_bytes());
    assert_eq!(header[16..24], (16 * KIB as u64).to_le_bytes());
    assert_eq!(header[24..28], 2u32.to_le_bytes());
    assert_eq!(header[28..32], 1u32.to_le_bytes());
    assert_eq!(header[32..40], (8192u64 + 0x123).to_le_bytes());
    assert_eq!(header[40..64], [0u8; 24]);
    let mut entry = [0u8; 64];
    region.read(4096 + 64, &mut entry).unwrap();
    assert_eq!(entry[0..4], 2u32.to_le_bytes());
    assert_eq!(entry[4..8], 2u32.to_le_bytes());
    assert_eq!(entry[8..10], 0x0102u16.to_le_bytes());
    assert_eq!(entry[10..12], 0x0304u16.to_le_bytes());
    assert_eq!(entry[12..16], 0x0506_0708u32.to_le_bytes());
    assert_eq!(entry[16..24], 8192u64.to_le_bytes());
    assert_eq!(entry[24..32], 0x123u64.to_le_bytes());
    assert_eq!(&entry[32..35], b"abc");
    assert_eq!(entry[35..64], [0u8; 29]);
    assert_eq!(min_region_len(2), Some(8192));
    assert_eq!(min_region_len(63), Some(8192));
    assert_eq!(min_region_len(64), Some(12288));
}

#[test]
fn concurrent_creators_have_one_winner_and_every_opener_succeeds() {
    let rounds = if cfg!(miri) { 2 } else { 50 };
    let threads = if cfg!(miri) { 3 } else { 8 };
    for _ in 0..rounds {
        let region = HeapRegion::new(8 * KIB);
        let winners = AtomicUsize::new(0);
        let start = Barrier::new(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (region, winners, start) = (&*region, &winners, &start);
                s.spawn(move || {
                    start.wait();
                    if t % 2 == 0 {
                        match Directory::create(region, 4) {
                            Ok(_) => {
                                winners.fetch_add(1, Relaxed);
                            }
                            Err(DirectoryError::Initializing | DirectoryError::AlreadyCreated) => {}
                            Err(e) => panic!("unexpected create error: {e}"),
                        }
                    }
                    // Every peer then opens, retrying while it is not ready yet.
                    loop {
                        match Directory::open(region) {
                            Ok(dir) => {
                                assert_eq!(dir.max_sections(), 4);
                                break;
                            }
                            Err(DirectoryError::NotCreated | DirectoryError::Initializing) => {
                                std::thread::yield_now()
                            }
                            Err(e) => panic!("unexpected open error: {e}"),
                        }
                    }
                });
            }
        });
        assert_eq!(winners.load(Relaxed), 1);
    }
}

#[test]
fn concurrent_open_or_create_converges() {
    let threads = if cfg!(miri) { 3 } else { 8 };
    let region = HeapRegion::new(8 * KIB);
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (region, start) = (&*region, &start);
            s.spawn(move || {
                start.wait();
                loop {
                    match Directory::open_or_create(region, 4) {
                        Ok(dir) => return dir.max_sections(),
                        Err(DirectoryError::Initializing) => std::thread::yield_now(),
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            });
        }
    });
    assert!(Directory::open(&*region).is_ok());
}

#[test]
fn racing_duplicate_adds_agree_on_the_first() {
    let rounds = if cfg!(miri) { 3 } else { 300 };
    let threads = if cfg!(miri) { 3 } else { 6 };
    let finders = if cfg!(miri) { 1 } else { 2 };
    let mut contended = 0;
    for _ in 0..rounds {
        let region = HeapRegion::new(64 * KIB);
        let dir = Directory::create(&*region, 16).unwrap();
        let start = Barrier::new(threads + finders);
        let (results, seen): (Vec<GetOrAdd>, Vec<SectionInfo>) = std::thread::scope(|s| {
            let start = &start;
            let adders: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let spec = ring("shared", 100 + t).with_owner(t as PeerId);
                        start.wait();
                        dir.get_or_add(&spec).unwrap()
                    })
                })
                .collect();
            // Readers racing the adders must only ever see the final winner.
            let readers: Vec<_> = (0..finders)
                .map(|_| {
                    s.spawn(move || {
                        start.wait();
                        loop {
                            if let Some(info) = dir.find("shared").unwrap() {
                                return info;
                            }
                            std::thread::yield_now();
                        }
                    })
                })
                .collect();
            (
                adders.into_iter().map(|h| h.join().unwrap()).collect(),
                readers.into_iter().map(|h| h.join().unwrap()).collect(),
            )
        });
        let winner = *results[0].info();
        assert!(seen.iter().all(|i| *i == winner), "{seen:?} vs {winner:?}");
        if dir.section_count().unwrap() > 1 {
            contended += 1;
        }
        assert!(results.iter().all(|r| *r.info() == winner), "{results:?}");
        assert_eq!(results.iter().filter(|r| r.is_added()).count(), 1);
        assert_eq!(dir.find("shared").unwrap(), Some(winner));
        // Every other claimed entry is withdrawn; nothing else is ready.
        let ready: Vec<_> = dir.sections().filter_map(Result::ok).collect();
        assert_eq!(ready, [winner]);
        assert_eq!(dir.check(), []);
        assert!(matches!(
            dir.add(&ring("shared", 1)),
            Err(DirectoryError::Exists(info)) if info == winner
        ));
    }
    std::eprintln!("{contended} of {rounds} rounds had more than one claimed entry");
}

#[test]
fn racing_adds_of_different_names_all_succeed() {
    let threads = if cfg!(miri) { 3 } else { 8 };
    let region = HeapRegion::new(256 * KIB);
    let dir = Directory::create(&*region, 64).unwrap();
    let start = Barrier::new(threads);
    let infos: Vec<SectionInfo> = std::thread::scope(|s| {
        let start = &start;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    start.wait();
                    let mut mine = Vec::new();
                    for i in 0..3 {
                        let name = alloc::format!("t{t}-s{i}");
                        mine.push(dir.add(&ring(&name, 64 * (i + 1))).unwrap());
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(infos.len(), threads * 3);
    for info in &infos {
        assert_eq!(dir.find(info.name.as_str()).unwrap(), Some(*info));
    }
    assert_eq!(dir.check(), []);
}

#[test]
fn full_no_space_and_exists() {
    let region = HeapRegion::new(12 * KIB);
    let dir = Directory::create(&*region, 2).unwrap();
    // Section space is 8192..12288.
    assert_eq!(
        dir.add(&ring("big", 4097)),
        Err(DirectoryError::NoSpace {
            requested: 4097,
            free: 4096
        })
    );
    assert_eq!(
        dir.section_count().unwrap(),
        0,
        "a refused add uses nothing"
    );
    let a = dir.add(&ring("a", 4000)).unwrap();
    assert_eq!(dir.add(&ring("a", 1)), Err(DirectoryError::Exists(a)));
    assert!(matches!(
        dir.add(&ring("b", 100)),
        Err(DirectoryError::NoSpace { requested: 100, .. })
    ));
    let b = dir.add(&ring("b", 32)).unwrap();
    assert_eq!(b.offset, 8192 + 4032);
    assert_eq!(
        dir.add(&ring("c", 1)),
        Err(DirectoryError::Full { max_sections: 2 })
    );
    assert_eq!(
        dir.get_or_add(&ring("b", 1)).unwrap(),
        GetOrAdd::Existing(b)
    );
    assert_eq!(dir.check(), []);
}

#[test]
fn bad_arguments_are_refused() {
    let region = HeapRegion::new(12 * KIB);
    let dir = Directory::create(&*region, 2).unwrap();
    let long = "x".repeat(33);
    assert_eq!(
        dir.add(&ring(&long, 1)),
        Err(DirectoryError::InvalidName(NameError::TooLong { len: 33 }))
    );
    assert!(dir.add(&ring(&long[..32], 1)).is_ok());
    assert_eq!(
        dir.find(""),
        Err(DirectoryError::InvalidName(NameError::Empty))
    );
    assert_eq!(
        dir.add(&ring("a\0b", 1)),
        Err(DirectoryError::InvalidName(NameError::ContainsNul))
    );
    assert_eq!(dir.add(&ring("z", 0)), Err(DirectoryError::InvalidSize(0)));
    assert_eq!(
        dir.add(&ring("z", 1).with_align(96)),
        Err(DirectoryError::InvalidAlign(96))
    );
    assert_eq!(
        dir.add(&ring("z", 1).with_align(0)),
        Err(DirectoryError::InvalidAlign(0))
    );
    assert!(matches!(
        dir.add(&ring("z", 1).with_align(1 << 40)),
        Err(DirectoryError::NoSpace { .. })
    ));
    let tiny = HeapRegion::new(8191);
    assert_eq!(
        Directory::create(&*tiny, 1).unwrap_err(),
        DirectoryError::RegionTooSmall {
            region_len: 8191,
            needed: 8192
        }
    );
    assert_eq!(
        Directory::create(&*region, 0).unwrap_err(),
        DirectoryError::InvalidMaxSections(0)
    );
    assert_eq!(
        Directory::create(&*region, MAX_SECTIONS_LIMIT + 1).unwrap_err(),
        DirectoryError::InvalidMaxSections(MAX_SECTIONS_LIMIT + 1)
    );
    assert!(matches!(
        Directory::open(&*HeapRegion::new(10)),
        Err(DirectoryError::RegionTooSmall { .. })
    ));
}

#[test]
fn a_foreign_region_is_refused_untouched_until_formatted() {
    let region = HeapRegion::new(16 * KIB);
    region.write(B, b"hello world\0").unwrap();
    let before = |r: &RawRegion| {
        let mut b = [0u8; 128];
        r.read(B, &mut b).unwrap();
        b
    };
    let snapshot = before(&region);
    let foreign = DirectoryError::Foreign {
        first_bytes: *b"hello wo",
    };
    assert_eq!(Directory::create(&*region, 4).unwrap_err(), foreign);
    assert_eq!(Directory::open(&*region).unwrap_err(), foreign);
    assert_eq!(Directory::open_or_create(&*region, 4).unwrap_err(), foreign);
    assert_eq!(before(&region), snapshot);
    assert_eq!(
        foreign.to_string(),
        "the region holds something else where the directory goes (it starts with \"hello wo\"); `ivlink format` takes it over"
    );

    let dir = format(&*region, 4).unwrap();
    dir.add(&ring("a", 10)).unwrap();
    let dir = Directory::open(&*region).unwrap();
    assert_eq!(dir.find("a").unwrap().unwrap().offset, 8192);
    assert_eq!(
        Directory::create(&*region, 4).unwrap_err(),
        DirectoryError::AlreadyCreated
    );
    // Formatting again starts from scratch.
    let dir = format(&*region, 6).unwrap();
    assert_eq!(dir.find("a").unwrap(), None);
    assert_eq!(Directory::open(&*region).unwrap().max_sections(), 6);
}

#[test]
fn a_raw_message_and_the_directory_never_share_bytes_in_either_order() {
    let message = b"hello from a zephyr guest\0";
    // A message first (`ivlink notify`, then `ivlink recv`).
    let region = HeapRegion::new(16 * KIB);
    region.write(0, message).unwrap();
    let dir = Directory::open_or_create(&*region, 4).unwrap();
    assert_eq!(dir.offset(), DIRECTORY_OFFSET);
    dir.add(&ring("demo", 100)).unwrap();
    let mut read = [0u8; 26];
    region.read(0, &mut read).unwrap();
    assert_eq!(&read, message);
    // The directory first, then a message as long as the message area allows.
    let region = HeapRegion::new(16 * KIB);
    let dir = Directory::open_or_create(&*region, 4).unwrap();
    let a = dir.add(&ring("demo", 100)).unwrap();
    region.fill(0, MESSAGE_AREA_LEN - 1, b'x').unwrap();
    region.write(MESSAGE_AREA_LEN - 1, &[0]).unwrap();
    let dir = Directory::open(&*region).unwrap();
    assert_eq!(dir.find("demo").unwrap(), Some(a));
    assert_eq!(dir.check(), []);
}

/// Lays out a directory of the first releases: the same layout at offset 0.
fn legacy_directory(region: &RawRegion, max_sections: u32) {
    let start = space_start(LEGACY_DIRECTORY_OFFSET, max_sections).unwrap();
    region
        .store_u32(hdr::STATE.offset(), hdr::INITIALIZING.to_le(), Relaxed)
        .unwrap();
    initialize(region, LEGACY_DIRECTORY_OFFSET, max_sections, start).unwrap();
}

#[test]
fn a_directory_of_the_first_layout_at_offset_0_still_opens_and_grows() {
    let region = HeapRegion::new(16 * KIB);
    legacy_directory(&region, 8);
    let dir = Directory::open(&*region).unwrap();
    assert_eq!(dir.offset(), LEGACY_DIRECTORY_OFFSET);
    assert_eq!(dir.section_space_start(), 4096);
    let a = dir.add(&ring("a", 100)).unwrap();
    assert_eq!(a.offset, 4096);
    assert_eq!(locate(&*region).unwrap(), LEGACY_DIRECTORY_OFFSET);
    // Nobody creates a second directory beside it.
    assert_eq!(
        Directory::create(&*region, 4).unwrap_err(),
        DirectoryError::AlreadyCreated
    );
    let again = Directory::open_or_create(&*region, 4).unwrap();
    assert_eq!(again.find("a").unwrap(), Some(a));
    assert_eq!(again.check(), []);
}

#[test]
fn format_moves_a_first_layout_directory_to_its_new_place() {
    let region = HeapRegion::new(16 * KIB);
    legacy_directory(&region, 8);
    Directory::open(&*region)
        .unwrap()
        .add(&ring("a", 100))
        .unwrap();
    let dir = format(&*region, 4).unwrap();
    assert_eq!(dir.offset(), DIRECTORY_OFFSET);
    let mut header = [0xffu8; HEADER_SIZE];
    region.read(0, &mut header).unwrap();
    assert_eq!(header, [0u8; HEADER_SIZE], "the old header is cleared");
    let dir = Directory::open(&*region).unwrap();
    assert_eq!(dir.offset(), DIRECTORY_OFFSET);
    assert_eq!(dir.find("a").unwrap(), None);
    assert_eq!(dir.max_sections(), 4);
}

#[test]
fn withdrawing_a_ready_section_lets_its_name_be_added_again() {
    let region = HeapRegion::new(32 * KIB);
    let dir = Directory::create(&*region, 4).unwrap();
    let first = dir.add(&ring("a", 100)).unwrap();
    assert!(dir.withdraw(first.index).unwrap());
    assert!(!dir.withdraw(first.index).unwrap(), "only once");
    assert_eq!(dir.find("a").unwrap(), None);
    let second = dir.add(&ring("a", 100)).unwrap();
    assert_ne!(
        second.offset, first.offset,
        "the abandoned space is not reused"
    );
    assert_eq!(dir.find("a").unwrap(), Some(second));
    assert_eq!(dir.check(), []);
}

#[test]
fn open_validates_the_header() {
    let region = HeapRegion::new(16 * KIB);
    assert_eq!(
        Directory::open(&*region).unwrap_err(),
        DirectoryError::NotCreated
    );
    Directory::create(&*region, 4).unwrap();
    let set32 = |off, v: u32| region.store_u32(off, v.to_le(), Relaxed).unwrap();
    let set64 = |off, v: u64| region.store_u64(off, v.to_le(), Relaxed).unwrap();
    let open = || Directory::open(&*region).map(|_| ());

    set32(B + hdr::VERSION.offset(), 2);
    assert_eq!(open(), Err(DirectoryError::UnsupportedVersion(2)));
    set32(B + hdr::VERSION.offset(), 1);
    set64(B + hdr::REGION_SIZE.offset(), 8 * KIB as u64);
    assert_eq!(
        open(),
        Err(DirectoryError::RegionSizeMismatch {
            recorded: 8192,
            actual: 16384
        })
    );
    set64(B + hdr::REGION_SIZE.offset(), 16 * KIB as u64);
    for bad in [0, 256, MAX_SECTIONS_LIMIT + 1, u32::MAX] {
        set32(B + hdr::MAX_SECTIONS.offset(), bad);
        assert_eq!(
            open(),
            Err(DirectoryError::BadMaxSections {
                max_sections: bad,
                region_len: 16 * KIB
            })
        );
    }
    set32(B + hdr::MAX_SECTIONS.offset(), 190);
    assert_eq!(open(), Ok(()));
    set32(B + hdr::STATE.offset(), 1);
    assert_eq!(open(), Err(DirectoryError::Initializing));
    set32(B + hdr::STATE.offset(), 7);
    assert_eq!(open(), Err(DirectoryError::BadHeaderState(7)));
    set32(B + hdr::STATE.offset(), 0);
    assert_eq!(open(), Err(DirectoryError::BadHeaderState(0)));
    set32(B + hdr::STATE.offset(), 2);
    set64(B + hdr::MAGIC.offset(), 0x1234);
    assert!(matches!(open(), Err(DirectoryError::Foreign { .. })));
    set64(B + hdr::MAGIC.offset(), MAGIC);
    let dir = Directory::open(&*region).unwrap();
    set32(B + hdr::SECTION_COUNT.offset(), 191);
    assert_eq!(
        dir.find("a"),
        Err(DirectoryError::BadSectionCount {
            count: 191,
            max_sections: 190
        })
    );
    set32(B + hdr::SECTION_COUNT.offset(), 0);
    set64(B + hdr::NEXT_FREE.offset(), 100);
    assert_eq!(
        dir.add(&ring("a", 1)),
        Err(DirectoryError::BadNextFree { next_free: 100 })
    );
}

#[test]
fn stale_claims_in_the_way_are_withdrawn() {
    let region = HeapRegion::new(16 * KIB);
    let dir = Directory::create(&*region, 8).unwrap();
    // A peer claimed index 0 and died before naming it; another is setting up
    // "x" at 1, another "y" at 2.
    set_count(&region, 3);
    poke_entry(&region, 1, ent::CLAIMED, b"x", 0, 0);
    poke_entry(&region, 2, ent::CLAIMED, b"y", 0, 0);
    let x = dir.add(&ring("x", 64)).unwrap();
    assert_eq!(x.index, 3);
    assert_eq!(state_of(&region, 0), ent::WITHDRAWN);
    assert_eq!(state_of(&region, 1), ent::WITHDRAWN);
    assert_eq!(
        state_of(&region, 2),
        ent::CLAIMED,
        "other names are left alone"
    );
    // The slow adder of "x" at 1 can no longer publish.
    assert!(dir.entry_cas(1, ent::CLAIMED, ent::READY).unwrap().is_err());
    assert_eq!(
        dir.entry(1),
        Err(DirectoryError::NotReady {
            index: 1,
            state: EntryState::Withdrawn,
            name: Some(SectionName::new("x").unwrap())
        })
    );
    assert_eq!(dir.find("x").unwrap(), Some(x));
}

#[test]
fn interleaved_steps_of_two_adders_agree() {
    let spec = ring("x", 64);
    let name = SectionName::new("x").unwrap();
    let fresh = || {
        let region = HeapRegion::new(16 * KIB);
        Directory::create(&*region, 8).unwrap();
        region
    };

    // B publishes and settles while A has only claimed its index: A's entry is
    // withdrawn, A cannot publish, and A's retry finds B.
    let region = fresh();
    let dir = Directory::open(&*region).unwrap();
    let (a, b) = (dir.claim_index().unwrap(), dir.claim_index().unwrap());
    let b_info = dir.fill_entry(b, &name, &spec, 64).unwrap().unwrap();
    assert_eq!(dir.settle(&name.to_raw(), b).unwrap(), None);
    assert_eq!(dir.fill_entry(a, &name, &spec, 64).unwrap(), None);
    assert_eq!(dir.get_or_add(&spec).unwrap(), GetOrAdd::Existing(b_info));

    // Both publish before either settles: the lower index wins for both.
    let region = fresh();
    let dir = Directory::open(&*region).unwrap();
    let (a, b) = (dir.claim_index().unwrap(), dir.claim_index().unwrap());
    dir.fill_entry(b, &name, &spec, 64).unwrap().unwrap();
    let a_info = dir.fill_entry(a, &name, &spec, 64).unwrap().unwrap();
    assert_eq!(dir.settle(&name.to_raw(), b).unwrap(), Some(a));
    assert_eq!(dir.settle(&name.to_raw(), a).unwrap(), None);
    assert_eq!(dir.find("x").unwrap(), Some(a_info));

    // A publishes and settles first: B, publishing later, finds A.
    let region = fresh();
    let dir = Directory::open(&*region).unwrap();
    let (a, b) = (dir.claim_index().unwrap(), dir.claim_index().unwrap());
    let a_info = dir.fill_entry(a, &name, &spec, 64).unwrap().unwrap();
    assert_eq!(dir.settle(&name.to_raw(), a).unwrap(), None);
    dir.fill_entry(b, &name, &spec, 64).unwrap().unwrap();
    assert_eq!(dir.settle(&name.to_raw(), b).unwrap(), Some(a));
    assert_eq!(dir.find("x").unwrap(), Some(a_info));
}

#[test]
fn find_settles_a_race_before_answering() {
    let region = HeapRegion::new(16 * KIB);
    let dir = Directory::create(&*region, 8).unwrap();
    // Entry 0 is "x" being set up; entry 1 is "x", published but not yet settled.
    set_count(&region, 2);
    poke_entry(&region, 0, ent::CLAIMED, b"x", 0, 0);
    poke_entry(&region, 1, ent::READY, b"x", 8192, 64);
    region
        .store_u64(B + hdr::NEXT_FREE.offset(), (8192u64 + 64).to_le(), Relaxed)
        .unwrap();
    let found = dir.find("x").unwrap().unwrap();
    assert_eq!(found.index, 1);
    assert_eq!(state_of(&region, 0), ent::WITHDRAWN);
    // A lower entry that is ready wins over a higher one.
    poke_entry(&region, 0, ent::READY, b"x", 8192 + 64, 64);
    assert_eq!(dir.find("x").unwrap().unwrap().index, 0);
    assert!(dir.check().contains(&Inconsistency::DuplicateName {
        name: SectionName::new("x").unwrap(),
        first: 0,
        second: 1
    }));
}

#[test]
fn hostile_entries_are_reported_not_trusted() {
    let region = HeapRegion::new(16 * KIB);
    let dir = Directory::create(&*region, 9).unwrap();
    let a = dir.add(&ring("a", 4096)).unwrap();
    set_count(&region, 9);
    let region_len = 16 * KIB as u64;
    poke_entry(&region, 1, ent::READY, b"in-dir", 64, 64);
    poke_entry(&region, 2, ent::READY, b"past-end", region_len - 64, 65);
    poke_entry(&region, 3, ent::READY, b"overlap", 8192 + 1024, 64);
    poke_entry(&region, 4, ent::READY, b"\xff\xfe", 8192, 64);
    poke_entry(&region, 5, 9, b"weird", 8192, 64);
    poke_entry(&region, 6, ent::READY, b"huge", u64::MAX - 63, u64::MAX);
    poke_entry(&region, 7, ent::READY, b"zero", 8192, 0);
    poke_entry(&region, 8, ent::READY, b"beyond", 12288, 64);
    let items: Vec<_> = dir.sections().collect();
    assert_eq!(items.len(), 9);
    assert_eq!(items[0], Ok(a));
    let problem = |i: usize| match items[i] {
        Err(DirectoryError::BadEntry { problem, .. }) => problem,
        ref other => panic!("entry {i}: {other:?}"),
    };
    assert!(matches!(problem(1), EntryProblem::InsideDirectory { .. }));
    assert!(matches!(problem(2), EntryProblem::OutsideRegion { .. }));
    assert_eq!(problem(4), EntryProblem::Name(NameError::NotUtf8));
    assert_eq!(problem(5), EntryProblem::UnknownState(9));
    assert!(matches!(problem(6), EntryProblem::OutsideRegion { .. }));
    assert_eq!(problem(7), EntryProblem::ZeroSize);
    assert!(items[3].is_ok(), "overlap is only visible to check()");
    assert!(items[8].is_ok(), "so is a section past next_free");
    assert!(matches!(
        dir.find("past-end"),
        Err(DirectoryError::BadEntry { index: 2, .. })
    ));

    let found = dir.check();
    assert!(
        found.contains(&Inconsistency::Overlap {
            first: 0,
            second: 3
        }),
        "{found:?}"
    );
    assert!(found.contains(&Inconsistency::BeyondNextFree {
        index: 8,
        end: 12288 + 64,
        next_free: 12288
    }));
    assert_eq!(
        found
            .iter()
            .filter(|i| matches!(i, Inconsistency::Entry { .. }))
            .count(),
        6
    );
    // The rest of the directory still works.
    assert_eq!(dir.find("a").unwrap(), Some(a));
    assert_eq!(
        dir.add(&ring("b", 1)),
        Err(DirectoryError::Full { max_sections: 9 })
    );

    // A count beyond max_sections is reported first, then every entry listed.
    set_count(&region, 1000);
    let items: Vec<_> = dir.sections().collect();
    assert_eq!(items.len(), 10);
    assert!(matches!(
        items[0],
        Err(DirectoryError::BadSectionCount { count: 1000, .. })
    ));
    assert!(
        dir.check()
            .contains(&Inconsistency::Header(DirectoryError::BadSectionCount {
                count: 1000,
                max_sections: 9
            }))
    );
    // Entries past the count that are in use are reported.
    set_count(&region, 1);
    assert!(
        dir.check()
            .contains(&Inconsistency::Unclaimed { index: 5, state: 9 })
    );
}

#[test]
fn names_kinds_and_states_convert() {
    let name = SectionName::new("héllo").unwrap();
    assert_eq!(name.as_str(), "héllo");
    assert_eq!(name.len(), 6);
    assert!(!name.is_empty());
    assert_eq!(SectionName::from_raw(name.to_raw()), Ok(name));
    let mut raw = [0u8; NAME_LEN];
    assert_eq!(SectionName::from_raw(raw), Err(NameError::Empty));
    raw[0] = b'a';
    raw[5] = b'b';
    assert_eq!(SectionName::from_raw(raw), Err(NameError::BadPadding));
    let full = [b'z'; NAME_LEN];
    assert_eq!(SectionName::from_raw(full).unwrap().len(), 32);
    assert_eq!(alloc::format!("{name:?}"), "SectionName(\"héllo\")");
    for v in 0..10 {
        assert_eq!(SectionKind::from_u32(v).as_u32(), v);
    }
    assert_eq!(SectionKind::from(4), SectionKind::Rpmsg);
    assert_eq!(u32::from(SectionKind::Ntb), 6);
    assert_eq!(SectionKind::Other(77).to_string(), "kind 77");
    for v in 0..4 {
        assert_eq!(EntryState::from_u32(v).unwrap().as_u32(), v);
    }
    assert_eq!(EntryState::from_u32(4), None);
}

#[test]
fn errors_read_as_sentences() {
    let region = HeapRegion::new(12 * KIB);
    let dir = Directory::create(&*region, 2).unwrap();
    let a = dir.add(&ring("a", 1)).unwrap();
    let cases: [(DirectoryError, &str); 5] = [
        (
            DirectoryError::Exists(a),
            "section \"a\" already exists (entry 0)",
        ),
        (
            DirectoryError::Full { max_sections: 2 },
            "all 2 directory entries are in use",
        ),
        (
            DirectoryError::NoSpace {
                requested: 10,
                free: 5,
            },
            "no room for a 10-byte section (5 bytes left in the region)",
        ),
        (
            DirectoryError::InvalidName(NameError::TooLong { len: 40 }),
            "section name is 40 bytes, longer than 32",
        ),
        (
            DirectoryError::BadEntry {
                index: 3,
                problem: EntryProblem::UnknownState(9),
            },
            "entry 3 is bad: unknown state 9",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
    let e: &dyn core::error::Error = &DirectoryError::InvalidName(NameError::Empty);
    assert!(e.source().is_some());
    assert_eq!(
        Inconsistency::Overlap {
            first: 1,
            second: 2
        }
        .to_string(),
        "entries 1 and 2: sections overlap"
    );
}

// ------------------------------------------------------------------ properties

const NAMES: [&str; 6] = [
    "a",
    "b",
    "ring:0->1",
    "console",
    "x",
    "a-very-long-name-of-32-bytes-xyz",
];

/// Runs every read path (and a couple of writes) on a possibly hostile region,
/// checking that whatever is returned is sound.
fn exercise(region: &RawRegion) {
    let Ok(dir) = Directory::open(region) else {
        let _ = Directory::create(region, 4);
        return;
    };
    let sound = |info: &SectionInfo| {
        assert!(info.offset >= dir.section_space_start());
        assert_eq!(info.offset % MIN_SECTION_ALIGN, 0);
        assert!(info.size > 0 && info.offset + info.size <= region.len());
    };
    for name in NAMES {
        if let Ok(Some(info)) = dir.find(name) {
            sound(&info);
            assert_eq!(info.name.as_str(), name);
        }
    }
    for info in dir.sections().flatten() {
        sound(&info);
    }
    let _ = dir.check();
    for item in dir.sections() {
        let _ = item.map_err(|e| e.to_string());
    }
    match dir.get_or_add(&ring("fuzz", 100)) {
        Ok(r) => sound(r.info()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for found in dir.check() {
        let _ = found.to_string();
    }
}

fn populated(len: usize) -> HeapRegion {
    let region = HeapRegion::new(len);
    let dir = Directory::create(&*region, 6).unwrap();
    for (i, name) in NAMES.iter().take(3).enumerate() {
        dir.add(&ring(name, 100 * (i + 1))).unwrap();
    }
    region
}

/// Bytes of header and entries in `populated`.
const DIR_BYTES: usize = HEADER_SIZE + 6 * ENTRY_SIZE;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    #[cfg_attr(miri, ignore)]
    fn hostile_bytes_in_the_directory_never_panic(
        patches in proptest::collection::vec(
            (0..DIR_BYTES, proptest::collection::vec(any::<u8>(), 1..16)),
            0..8,
        ),
        words in proptest::collection::vec(
            (0..DIR_BYTES / 4, prop_oneof![0u32..8, Just(4096), any::<u32>()]),
            0..8,
        ),
    ) {
        let region = populated(16 * KIB);
        for (offset, bytes) in patches {
            let n = bytes.len().min(DIR_BYTES - offset);
            region.write(B + offset, &bytes[..n]).unwrap();
        }
        for (word, value) in words {
            region.store_u32(B + word * 4, value.to_le(), Relaxed).unwrap();
        }
        exercise(&region);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn hostile_headers_with_our_magic_never_panic(
        words in proptest::collection::vec(any::<u32>(), 16),
        state in 0u32..4,
        len in prop_oneof![Just(4096usize), Just(16 * KIB), 64usize..20_000],
    ) {
        let region = HeapRegion::new(len);
        for (i, w) in words.iter().enumerate() {
            region.store_u32(i * 4, w.to_le(), Relaxed).unwrap();
        }
        // Our magic at offset 0: a directory of the first layout.
        region.store_u64(hdr::MAGIC.offset(), MAGIC.to_le(), Relaxed).unwrap();
        region.store_u32(hdr::VERSION.offset(), 1u32.to_le(), Relaxed).unwrap();
        region.store_u32(hdr::STATE.offset(), state.to_le(), Relaxed).unwrap();
        region.store_u64(hdr::REGION_SIZE.offset(), (len as u64).to_le(), Relaxed).unwrap();
        exercise(&region);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn adds_agree_with_a_model(
        ops in proptest::collection::vec((0..NAMES.len(), 1usize..6000, 0u32..14), 1..24),
    ) {
        const LEN: usize = 32 * KIB;
        const MAX: u32 = 5;
        let region = HeapRegion::new(LEN);
        let dir = Directory::create(&*region, MAX).unwrap();
        let mut model: Vec<SectionInfo> = Vec::new();
        let mut next_free = dir.section_space_start();
        for (t, (name_idx, size, align_shift)) in ops.into_iter().enumerate() {
            let name = NAMES[name_idx];
            let align = 1usize << align_shift;
            let spec = ring(name, size).with_owner(t as PeerId).with_align(align);
            let expected = if let Some(info) = model.iter().find(|i| i.name.as_str() == name) {
                Err(DirectoryError::Exists(*info))
            } else if model.len() == MAX as usize {
                Err(DirectoryError::Full { max_sections: MAX })
            } else {
                let offset = align_up(next_free, align.max(64)).unwrap();
                if offset + size > LEN {
                    Err(DirectoryError::NoSpace { requested: size, free: LEN - next_free })
                } else {
                    next_free = offset + size;
                    let info = SectionInfo {
                        index: model.len() as u32,
                        name: SectionName::new(name).unwrap(),
                        kind: SectionKind::Channel,
                        owner: t as PeerId,
                        vector: 0,
                        flags: 0,
                        offset,
                        size,
                    };
                    model.push(info);
                    Ok(info)
                }
            };
            prop_assert_eq!(dir.add(&spec), expected);
            for name in NAMES {
                let want = model.iter().find(|i| i.name.as_str() == name).copied();
                prop_assert_eq!(dir.find(name).unwrap(), want);
            }
        }
        let listed: Vec<SectionInfo> = dir.sections().map(Result::unwrap).collect();
        prop_assert_eq!(listed, model);
        prop_assert_eq!(dir.check(), Vec::new());
        prop_assert_eq!(dir.next_free().unwrap(), next_free);
    }
}

#[test]
fn a_short_add_sequence_agrees_with_a_model_under_miri_too() {
    // The deterministic core of `adds_agree_with_a_model`, small enough for Miri.
    let region = HeapRegion::new(16 * KIB);
    let dir = Directory::create(&*region, 3).unwrap();
    let mut names: Vec<String> = Vec::new();
    for (name, size) in [
        ("a", 100),
        ("b", 5000),
        ("a", 1),
        ("c", 8000),
        ("d", 1),
        ("e", 1),
    ] {
        let result = dir.add(&ring(name, size));
        match result {
            Ok(_) => names.push(name.into()),
            Err(DirectoryError::Exists(info)) => assert_eq!(info.name.as_str(), name),
            Err(DirectoryError::NoSpace { .. }) => assert_eq!(name, "c"),
            Err(DirectoryError::Full { .. }) => assert_eq!(name, "e"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(names, ["a", "b", "d"]);
    for name in &names {
        assert!(dir.find(name).unwrap().is_some());
    }
    assert_eq!(dir.find("c").unwrap(), None);
}
