//! `ivlink ntb` on a region that holds no switch under the name, or a damaged
//! one: one clear line and a failed exit, never a panic or a switch set up over
//! someone else's bytes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{run, text};
use ivlink::directory::Directory;
use ivlink::ntb::{Ntb, NtbOptions, NtbShape};
use ivlink::{Device, FilePeer, Region};

fn region(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("region")
}

/// `ivlink ntb tool --file PATH read port`, and its one line on stderr.
fn read_port(path: &Path) -> (bool, String) {
    let out = run(&[
        "ntb",
        "tool",
        "--file",
        path.to_str().unwrap(),
        "--id",
        "3",
        "read",
        "port",
    ]);
    (out.status.success(), text(&out))
}

#[test]
fn a_name_holding_another_kind_of_section_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = region(&dir);
    let device = FilePeer::create(&path, 8 << 20, 0).unwrap();
    ivlink::stream::Stream::open(&device, "ntb", 2, 128, 0, Duration::from_secs(5)).unwrap();
    let (ok, output) = read_port(&path);
    assert!(!ok, "{output}");
    let lines: Vec<_> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{output}");
    assert!(lines[0].contains("another kind"), "{output}");
}

#[test]
fn a_damaged_switch_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = region(&dir);
    let device = FilePeer::create(&path, 8 << 20, 0).unwrap();
    drop(Ntb::open(&device, "ntb", NtbShape::new(2), NtbOptions::default()).unwrap());
    let (ok, output) = read_port(&path);
    assert!(ok, "an intact switch answers: {output}");

    let info = Directory::open(device.region())
        .unwrap()
        .find("ntb")
        .unwrap()
        .unwrap();
    // A hostile peer claims the switch has 200 ports.
    device
        .region()
        .write(info.offset + 4, &200u32.to_le_bytes())
        .unwrap();
    let (ok, output) = read_port(&path);
    assert!(!ok, "{output}");
    let lines: Vec<_> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{output}");
    assert!(lines[0].contains("not a valid NTB switch"), "{output}");
}
