//! Fuzzes the region directory with hostile region contents.
//!
//! The first input byte picks a mode:
//! - even: the rest of the input is the bytes a peer left where a directory is
//!   looked for: at offset 0 (a directory of the first layout) when bit 1 is clear,
//!   at `DIRECTORY_OFFSET` (after the message area) when it is set;
//! - odd: a sound directory is built first (its `max_sections` taken from the second
//!   byte) and the rest of the input is XORed over its header and entries, so that
//!   most inputs keep the magic and reach the deeper checks.
//!
//! Then every operation runs; none may panic, and any section handed out must lie
//! inside the region, past the directory.
#![no_main]

use ivlink_core::directory::{self, Directory, SectionKind, SectionSpec};
use ivlink_core::{HeapRegion, RawRegion, Region};
use libfuzzer_sys::fuzz_target;

const REGION_LEN: usize = 64 * 1024;
const NAMES: [&str; 5] = ["a", "b", "ring:0->1", "console", "x"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let region = HeapRegion::new(REGION_LEN);
    if mode & 1 == 0 {
        let at = if mode & 2 == 0 {
            directory::LEGACY_DIRECTORY_OFFSET
        } else {
            directory::DIRECTORY_OFFSET
        };
        let n = rest.len().min(REGION_LEN - at);
        region.write(at, &rest[..n]).unwrap();
    } else {
        let Some((&max, patch)) = rest.split_first() else {
            return;
        };
        let dir = directory::format(&*region, u32::from(max % 16) + 1).unwrap();
        for (i, name) in NAMES.iter().enumerate().take(3) {
            let _ = dir.add(&SectionSpec::new(name, SectionKind::Channel, 100 * (i + 1)));
        }
        let at = dir.offset();
        let n = patch.len().min(REGION_LEN - at);
        let mut bytes = vec![0u8; n];
        region.read(at, &mut bytes).unwrap();
        for (b, p) in bytes.iter_mut().zip(patch) {
            *b ^= p;
        }
        region.write(at, &bytes).unwrap();
    }
    exercise(&region);
});

fn exercise(region: &RawRegion) {
    let dir = match Directory::open(region) {
        Ok(dir) => dir,
        Err(e) => {
            let _ = e.to_string();
            // Creating over anything but an all-zero header must be refused.
            let _ = Directory::create(region, 4);
            return;
        }
    };
    let sound = |info: &directory::SectionInfo| {
        assert!(info.offset >= dir.section_space_start());
        assert!(info.size > 0);
        assert!(info.offset.checked_add(info.size).unwrap() <= region.len());
    };
    for name in NAMES {
        match dir.find(name) {
            Ok(Some(info)) => {
                sound(&info);
                assert_eq!(info.name.as_str(), name);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    for item in dir.sections() {
        match item {
            Ok(info) => sound(&info),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    for found in dir.check() {
        let _ = found.to_string();
    }
    match dir.add(&SectionSpec::new("fuzz", SectionKind::Other(99), 4096).with_align(4096)) {
        Ok(info) => sound(&info),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match dir.get_or_add(&SectionSpec::new("a", SectionKind::Channel, 1)) {
        Ok(got) => sound(got.info()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = dir.check();
}
