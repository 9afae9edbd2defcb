//! Console sections (`VCN1`) and the Zephyr hypervisor-less sample's register
//! block: the native header with each side's line, the virtio-mmio register block
//! as read (status and features decoded into names, the console's config space)
//! and every queue's indices.
//!
//! # Decisions
//!
//! - A console is read while both sides run, and several of its words are written
//!   in two steps (a side's peer, then its generation; `MagicValue` cleared, then
//!   set again when a device starts; the sequence words). A reading that finds a
//!   problem is therefore taken again, up to
//!   [`SNAPSHOT_ATTEMPTS`](super::SNAPSHOT_ATTEMPTS) times, and only what stays
//!   wrong is reported, as the ring decoders do.
//! - Only the register block's current selections are visible: `DeviceFeatures`
//!   and `DriverFeatures` are the words `DeviceFeaturesSel`/`DriverFeaturesSel`
//!   select, and `QueueNumMax`, `QueuePFN`/`QueueReady` and the queue addresses
//!   belong to `QueueSel`'s queue. The vrings themselves are read where the
//!   layout places them, so every queue's indices are shown.
//! - The Zephyr sample's addresses are the driver VM's, whose base inspect cannot
//!   know: `QueuePFN` and `SHMBase` are shown as read, not translated. Its vring
//!   heap holds anything until the driver sets its rings up, so their indices are
//!   checked only once `Status` has `DRIVER_OK`.
//! - The request sequence running ahead of the acknowledgement is normal (a
//!   request in flight); only an acknowledgement ahead of the request (in
//!   wrapping order) is a problem, since the driver never numbers backwards.

use std::fmt;

use ivlink_core::console::{
    ConsoleLayout, NATIVE_HEADER, NATIVE_SETUP, NativeHeader, SideSnapshot,
};
use ivlink_core::directory::SectionInfo;
use ivlink_core::section::{SectionProtocol, setup_state_name};
use ivlink_core::virtio::mmio::MmioBlock;
use ivlink_core::virtio::mmio::registers::{self as reg, BLOCK_SIZE};
use ivlink_core::virtio::virtq::Vring;
use ivlink_core::virtio::{id, status};
use ivlink_core::{RawRegion, Region};
use serde::Serialize;

use super::{SectionReport, settled, state_name};

mod registers;

pub use registers::{ConfigReport, RegistersReport};
use registers::{read_registers, register_problems};

/// A console as read: a native section, or the Zephyr sample's layout.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleReport {
    /// `native` or `hvl-zephyr`.
    pub profile: String,
    /// The native header (absent in the Zephyr sample's layout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<ConsoleHeaderReport>,
    /// The virtio-mmio register block, if it lies inside the section.
    pub registers: Option<RegistersReport>,
    /// Every queue the layout places, in queue order (empty if the layout is
    /// unusable).
    pub queues: Vec<QueueReport>,
}

/// The native header as read.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleHeaderReport {
    /// The setup word, escaped (`VCN1` once set up).
    pub magic: String,
    /// Its meaning: `empty`, `initializing`, `ready`, `abandoned` or `unknown`.
    pub state_name: String,
    /// Ports, as recorded.
    pub ports: u32,
    /// Entries per vring, as recorded.
    pub entries: u16,
    /// Bytes per driver buffer, as recorded.
    pub buf_size: u32,
    /// The driver's line, then the device's.
    pub sides: Vec<ConsoleSideReport>,
}

/// One side's line of the native header.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleSideReport {
    /// `driver` or `device`.
    pub side: String,
    /// How many times the side started (0: never).
    pub generation: u32,
    /// The peer id it last started as, if the word holds one.
    pub peer: Option<u16>,
    /// The driver's request sequence or the device's acknowledged one.
    pub sequence: u32,
    /// The ended-ports word as read.
    pub ended: u32,
    /// Its bits as port numbers.
    pub ended_ports: Vec<u32>,
    /// Bytes the side took from the other side's direction since the last reset.
    pub taken: u64,
}

/// One queue's vring as read.
#[derive(Debug, Clone, Serialize)]
pub struct QueueReport {
    /// Queue index.
    pub index: usize,
    /// `port 0 receiveq`, `control transmitq`, ...
    pub name: String,
    /// `device -> driver` (receiveqs) or `driver -> device` (transmitqs).
    pub direction: String,
    /// Region offset of the vring.
    pub offset: usize,
    /// Entries.
    pub num: u16,
    /// `avail.idx`: buffers the driver made available, ever (mod 2^16).
    pub avail_idx: u16,
    /// `used.idx`: buffers the device returned, ever (mod 2^16).
    pub used_idx: u16,
    /// Buffers the device holds (`avail.idx - used.idx`), if at most `num`.
    pub outstanding: Option<u16>,
    /// `avail.flags` (1: the driver wants no interrupt).
    pub avail_flags: u16,
    /// `used.flags` (1: the device wants no notification).
    pub used_flags: u16,
}

/// Decodes the native console in `info` into `out`.
pub(super) fn decode(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let (report, problems) = settled(|| read_native(region, info));
    out.problems.extend(problems);
    out.console = report;
}

/// Whether the region starts with the Zephyr sample's register block: `"virt"`,
/// Version 1, DeviceID 3.
pub(super) fn is_hvl_zephyr(region: &RawRegion) -> bool {
    let Ok(block) = MmioBlock::new(0) else {
        return false;
    };
    block.check(region.len()).is_ok()
        && block.magic(region) == Ok(reg::MAGIC)
        && block.version(region) == Ok(reg::VERSION_LEGACY)
        && block.device_id(region) == Ok(id::CONSOLE)
}

fn read_native(region: &RawRegion, info: &SectionInfo) -> (Option<ConsoleReport>, Vec<String>) {
    let mut problems = Vec::new();
    let header = match ConsoleLayout::snapshot(region, info.offset, info.size) {
        Ok(h) => h,
        Err(e) => {
            problems.push(format!("console header: {e}"));
            return (None, problems);
        }
    };
    let header_report = header_report(&header, &mut problems);
    let registers = (info.size >= NATIVE_HEADER + BLOCK_SIZE)
        .then(|| read_registers(region, info.offset + NATIVE_HEADER, 2))
        .flatten();
    let mut queues = Vec::new();
    match <ConsoleLayout as SectionProtocol>::open(region, info.offset, info.size) {
        Ok(layout) => queues = read_queues(region, &layout, &mut problems),
        Err(e) => problems.push(e.to_string()),
    }
    if let Some(r) = &registers {
        register_problems(r, 2, &mut problems);
        let device = header.sides[1];
        if r.magic == 0 && device.generation != 0 {
            problems.push(format!(
                "MagicValue is 0 though the device started (generation {})",
                device.generation
            ));
        }
        if r.magic == reg::MAGIC {
            if r.config_generation % 2 == 1 {
                problems.push(format!(
                    "ConfigGeneration {} is odd: the device stopped while rewriting the config space",
                    r.config_generation
                ));
            }
            if r.config.max_nr_ports != header.shape.ports {
                problems.push(format!(
                    "config max_nr_ports {} differs from the header's {} ports",
                    r.config.max_nr_ports, header.shape.ports
                ));
            }
        }
    } else {
        problems.push("the section is too small to hold the register block".to_owned());
    }
    let report = ConsoleReport {
        profile: "native".into(),
        header: Some(header_report),
        registers,
        queues,
    };
    (Some(report), problems)
}

fn header_report(header: &NativeHeader, problems: &mut Vec<String>) -> ConsoleHeaderReport {
    let ports = header.shape.ports;
    let names = ["driver", "device"];
    let mut sides = Vec::new();
    for (name, side) in names.iter().zip(&header.sides) {
        sides.push(side_report(name, side, ports, problems));
    }
    let [driver, device] = header.sides;
    if (device.sequence.wrapping_sub(driver.sequence) as i32) > 0 {
        problems.push(format!(
            "the device acknowledged request {}, ahead of the driver's latest request {}",
            device.sequence, driver.sequence
        ));
    }
    ConsoleHeaderReport {
        magic: header.setup.to_le_bytes().escape_ascii().to_string(),
        state_name: state_name(setup_state_name(&NATIVE_SETUP, header.setup)),
        ports,
        entries: header.shape.num,
        buf_size: header.shape.buf_size,
        sides,
    }
}

fn side_report(
    name: &str,
    side: &SideSnapshot,
    ports: u32,
    problems: &mut Vec<String>,
) -> ConsoleSideReport {
    let peer = side
        .peer_plus_one
        .checked_sub(1)
        .and_then(|p| u16::try_from(p).ok());
    if side.peer_plus_one != 0 && peer.is_none() {
        problems.push(format!(
            "{name} line: peer word {:#x} is not a peer id + 1",
            side.peer_plus_one
        ));
    }
    if side.generation != 0 && side.peer_plus_one == 0 {
        problems.push(format!(
            "{name} line: started (generation {}) but names no peer",
            side.generation
        ));
    }
    if side.generation == 0 && side.peer_plus_one != 0 {
        problems.push(format!("{name} line: names a peer but never started"));
    }
    let valid = if ports >= 32 {
        u32::MAX
    } else {
        (1u32 << ports) - 1
    };
    if side.ended & !valid != 0 {
        problems.push(format!(
            "{name} line: ended ports {:#x} name ports beyond the header's {ports}",
            side.ended
        ));
    }
    ConsoleSideReport {
        side: name.to_owned(),
        generation: side.generation,
        peer,
        sequence: side.sequence,
        ended: side.ended,
        ended_ports: (0..32).filter(|p| side.ended & (1 << p) != 0).collect(),
        taken: side.taken,
    }
}

fn read_hvl_zephyr(region: &RawRegion) -> ConsoleReport {
    ConsoleReport {
        profile: "hvl-zephyr".into(),
        header: None,
        registers: read_registers(region, 0, reg::VERSION_LEGACY),
        queues: Vec::new(),
    }
}

/// Reads the sample's block and vrings and checks them.
pub(super) fn hvl_zephyr(region: &RawRegion) -> (ConsoleReport, Vec<String>) {
    settled(|| {
        let mut problems = Vec::new();
        let mut report = read_hvl_zephyr(region);
        match &report.registers {
            Some(r) => register_problems(r, reg::VERSION_LEGACY, &mut problems),
            None => problems.push("the register block cannot be read".to_owned()),
        }
        let driver_ok = report
            .registers
            .as_ref()
            .is_some_and(|r| r.status & u32::from(status::DRIVER_OK) != 0);
        // The vrings sit at fixed offsets: the address base does not move them.
        match ConsoleLayout::hvl_zephyr(region.len(), 0) {
            Ok(layout) => {
                let mut ring_problems = Vec::new();
                report.queues = read_queues(region, &layout, &mut ring_problems);
                if driver_ok {
                    problems.extend(ring_problems);
                }
            }
            Err(e) => problems.push(format!("vrings not read: {e}")),
        }
        (report, problems)
    })
}

fn read_queues(
    region: &RawRegion,
    layout: &ConsoleLayout,
    problems: &mut Vec<String>,
) -> Vec<QueueReport> {
    let mut queues = Vec::new();
    for (index, ring) in layout.queues().iter().enumerate() {
        let name = queue_name(index);
        match queue_report(region, ring, index, &name) {
            Ok(q) => {
                if q.outstanding.is_none() {
                    problems.push(format!(
                        "queue {index} ({name}): avail idx {} ran more than {} ahead of used idx {}",
                        q.avail_idx, q.num, q.used_idx
                    ));
                }
                queues.push(q);
            }
            Err(e) => problems.push(format!("queue {index} ({name}): {e}")),
        }
    }
    queues
}

/// `port 0 receiveq`, `control transmitq`, ... (see [`ivlink_core::console`]).
fn queue_name(index: usize) -> String {
    let kind = if index % 2 == 0 {
        "receiveq"
    } else {
        "transmitq"
    };
    match index {
        0 | 1 => format!("port 0 {kind}"),
        2 | 3 => format!("control {kind}"),
        _ => format!("port {} {kind}", (index - 2) / 2),
    }
}

fn queue_report(
    region: &RawRegion,
    ring: &Vring,
    index: usize,
    name: &str,
) -> Result<QueueReport, ivlink_core::virtio::virtq::VirtqError> {
    let avail_idx = ring.avail_idx(region)?;
    let used_idx = ring.used_idx(region)?;
    let num = ring.layout().num();
    let held = avail_idx.wrapping_sub(used_idx);
    Ok(QueueReport {
        index,
        name: name.to_owned(),
        direction: if index % 2 == 0 {
            "device -> driver"
        } else {
            "driver -> device"
        }
        .to_owned(),
        offset: ring.base(),
        num,
        avail_idx,
        used_idx,
        outstanding: (held <= num).then_some(held),
        avail_flags: ring.avail_flags(region)?,
        used_flags: ring.used_flags(region)?,
    })
}

/// The console's lines, each starting with `indent`.
pub(super) fn lines(f: &mut fmt::Formatter<'_>, c: &ConsoleReport, indent: &str) -> fmt::Result {
    if let Some(h) = &c.header {
        writeln!(
            f,
            "{indent}console: setup {} ({}), {} port(s), {} entries per queue, buffers of {} B",
            h.magic, h.state_name, h.ports, h.entries, h.buf_size
        )?;
        for s in &h.sides {
            let peer = s.peer.map_or("none".to_owned(), |p| p.to_string());
            let ended = if s.ended_ports.is_empty() {
                "none".to_owned()
            } else {
                s.ended_ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            writeln!(
                f,
                "{indent}{:>6}: generation {}, peer {peer}, sequence {}, ended ports {ended}, taken {} B",
                s.side, s.generation, s.sequence, s.taken
            )?;
        }
    } else {
        writeln!(
            f,
            "{indent}console: virtio-mmio console (the Zephyr hypervisor-less sample's layout)"
        )?;
    }
    if let Some(r) = &c.registers {
        registers::lines(f, r, indent)?;
    }
    for q in &c.queues {
        let held = q.outstanding.map_or("?".to_owned(), |n| n.to_string());
        writeln!(
            f,
            "{indent}queue {:<2} {:<20} ({}) at {:#x}: avail idx {:<6} used idx {:<6} outstanding {held:<4} flags {}/{}",
            q.index,
            q.name,
            q.direction,
            q.offset,
            q.avail_idx,
            q.used_idx,
            q.avail_flags,
            q.used_flags
        )?;
    }
    Ok(())
}
