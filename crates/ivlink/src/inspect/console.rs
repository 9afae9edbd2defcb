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
//!   problem is therefore taken again, up to [`SNAPSHOT_ATTEMPTS`] times, and only
//!   what stays wrong is reported, as the ring decoders do.
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
    CONFIG_SIZE, ConsoleConfig, ConsoleLayout, F_EMERG_WRITE, F_MULTIPORT, F_SIZE, NATIVE_HEADER,
    NATIVE_SETUP, NativeHeader, SideSnapshot,
};
use ivlink_core::directory::SectionInfo;
use ivlink_core::section::{SectionProtocol, setup_state_name};
use ivlink_core::virtio::features::{RING_F_EVENT_IDX, RING_F_INDIRECT_DESC, VERSION_1};
use ivlink_core::virtio::mmio::MmioBlock;
use ivlink_core::virtio::mmio::registers::{self as reg, BLOCK_SIZE};
use ivlink_core::virtio::virtq::Vring;
use ivlink_core::virtio::{id, status};
use ivlink_core::{RawRegion, Region};
use serde::Serialize;

use super::{SNAPSHOT_ATTEMPTS, SectionReport, state_name};

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

/// The virtio-mmio register block as read.
#[derive(Debug, Clone, Serialize)]
pub struct RegistersReport {
    /// Region offset of the block.
    pub offset: usize,
    /// `MagicValue` (`0x74726976`, "virt", once a device published the block).
    pub magic: u32,
    /// `Version`: 1 (legacy) or 2 (modern).
    pub version: u32,
    /// `DeviceID` (3: a console).
    pub device_id: u32,
    /// `VendorID`.
    pub vendor_id: u32,
    /// `VendorID`'s bytes, escaped (`IVLK` from an ivlink device).
    pub vendor: String,
    /// `Status`.
    pub status: u32,
    /// `Status` bits by name (`reset` for 0).
    pub status_bits: Vec<String>,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DeviceFeatures`: the word `DeviceFeaturesSel` selects.
    pub device_features: u32,
    /// Its bits by name.
    pub device_feature_names: Vec<String>,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// `DriverFeatures`: the word `DriverFeaturesSel` selects.
    pub driver_features: u32,
    /// Its bits by name.
    pub driver_feature_names: Vec<String>,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `QueueNumMax` of the selected queue.
    pub queue_num_max: u32,
    /// `QueueNum` of the selected queue.
    pub queue_num: u32,
    /// Legacy: `GuestPageSize`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_page_size: Option<u32>,
    /// Legacy: `QueueAlign`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_align: Option<u32>,
    /// Legacy: `QueuePFN` as read (the driver's address / page size, or the
    /// hypervisor-less acknowledgement `0xaabbaabb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_pfn: Option<u32>,
    /// Modern: `QueueReady`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_ready: Option<u32>,
    /// Modern: `QueueDesc`, `QueueDriver`, `QueueDevice` (the driver's
    /// addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_addresses: Option<[u64; 3]>,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// Its bits by name.
    pub interrupt_bits: Vec<String>,
    /// `ConfigGeneration` (odd while the device rewrites the config space).
    pub config_generation: u32,
    /// `SHMSel`.
    pub shm_sel: u32,
    /// `SHMBase` (the driver's address).
    pub shm_base: u64,
    /// `SHMLen` (all ones: no shared memory region).
    pub shm_len: u64,
    /// The console's config space.
    pub config: ConfigReport,
}

/// The console's config space as read.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    /// `cols`.
    pub cols: u16,
    /// `rows`.
    pub rows: u16,
    /// `max_nr_ports`.
    pub max_nr_ports: u32,
    /// `emerg_wr`.
    pub emerg_wr: u32,
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

/// Takes readings until one has no problem, at most [`SNAPSHOT_ATTEMPTS`].
fn settled<T>(mut read: impl FnMut() -> (T, Vec<String>)) -> (T, Vec<String>) {
    let mut reading = read();
    for _ in 1..SNAPSHOT_ATTEMPTS {
        if reading.1.is_empty() {
            break;
        }
        reading = read();
    }
    reading
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

fn read_registers(region: &RawRegion, offset: usize, expected: u32) -> Option<RegistersReport> {
    let block = MmioBlock::new(offset).ok()?;
    block.check(region.len()).ok()?;
    let get = |r| block.load(region, r).unwrap_or(0);
    let version = get(reg::VERSION);
    // The registers the version has; an unknown one is shown as the layout's.
    let legacy = match version {
        reg::VERSION_LEGACY => true,
        reg::VERSION_MODERN => false,
        _ => expected == reg::VERSION_LEGACY,
    };
    let pair = |low, high| block.load_pair(region, low, high).unwrap_or(0);
    let mut config = [0u8; CONFIG_SIZE];
    let _ = region.read(block.config(0), &mut config);
    let config = ConsoleConfig::from_bytes(&config);
    let vendor_id = get(reg::VENDOR_ID);
    let status = get(reg::STATUS);
    let interrupt_status = get(reg::INTERRUPT_STATUS);
    let device_features_sel = get(reg::DEVICE_FEATURES_SEL);
    let device_features = get(reg::DEVICE_FEATURES);
    let driver_features_sel = get(reg::DRIVER_FEATURES_SEL);
    let driver_features = get(reg::DRIVER_FEATURES);
    Some(RegistersReport {
        offset,
        magic: get(reg::MAGIC_VALUE),
        version,
        device_id: get(reg::DEVICE_ID),
        vendor_id,
        vendor: vendor_id.to_le_bytes().escape_ascii().to_string(),
        status,
        status_bits: status_names(status),
        device_features_sel,
        device_features,
        device_feature_names: feature_names(device_features_sel, device_features),
        driver_features_sel,
        driver_features,
        driver_feature_names: feature_names(driver_features_sel, driver_features),
        queue_sel: get(reg::QUEUE_SEL),
        queue_num_max: get(reg::QUEUE_NUM_MAX),
        queue_num: get(reg::QUEUE_NUM),
        guest_page_size: legacy.then(|| get(reg::GUEST_PAGE_SIZE)),
        queue_align: legacy.then(|| get(reg::QUEUE_ALIGN)),
        queue_pfn: legacy.then(|| get(reg::QUEUE_PFN)),
        queue_ready: (!legacy).then(|| get(reg::QUEUE_READY)),
        queue_addresses: (!legacy).then(|| {
            [
                pair(reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH),
                pair(reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH),
                pair(reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH),
            ]
        }),
        interrupt_status,
        interrupt_bits: interrupt_names(interrupt_status),
        config_generation: get(reg::CONFIG_GENERATION),
        shm_sel: get(reg::SHM_SEL),
        shm_base: pair(reg::SHM_BASE_LOW, reg::SHM_BASE_HIGH),
        shm_len: pair(reg::SHM_LEN_LOW, reg::SHM_LEN_HIGH),
        config: ConfigReport {
            cols: config.cols,
            rows: config.rows,
            max_nr_ports: config.max_nr_ports,
            emerg_wr: config.emerg_wr,
        },
    })
}

/// Status bits, by name, as virtio 1.2 (2.1) and Linux's driver call them.
const STATUS_BITS: [(u8, &str); 6] = [
    (status::ACKNOWLEDGE, "ACKNOWLEDGE"),
    (status::DRIVER, "DRIVER"),
    (status::DRIVER_OK, "DRIVER_OK"),
    (status::FEATURES_OK, "FEATURES_OK"),
    (status::NEEDS_RESET, "DEVICE_NEEDS_RESET"),
    (status::FAILED, "FAILED"),
];

fn known_status_bits() -> u32 {
    STATUS_BITS.iter().map(|&(b, _)| u32::from(b)).sum()
}

fn status_names(value: u32) -> Vec<String> {
    if value == 0 {
        return vec!["reset".to_owned()];
    }
    let mut names: Vec<String> = STATUS_BITS
        .iter()
        .filter(|&&(b, _)| value & u32::from(b) != 0)
        .map(|&(_, n)| n.to_owned())
        .collect();
    let unknown = value & !known_status_bits();
    if unknown != 0 {
        names.push(format!("{unknown:#x}"));
    }
    names
}

const INTERRUPT_BITS: u32 = reg::INTERRUPT_USED_BUFFER | reg::INTERRUPT_CONFIG_CHANGE;

fn interrupt_names(value: u32) -> Vec<String> {
    let mut names = Vec::new();
    if value & reg::INTERRUPT_USED_BUFFER != 0 {
        names.push("USED_BUFFER".to_owned());
    }
    if value & reg::INTERRUPT_CONFIG_CHANGE != 0 {
        names.push("CONFIG_CHANGE".to_owned());
    }
    if value & !INTERRUPT_BITS != 0 {
        names.push(format!("{:#x}", value & !INTERRUPT_BITS));
    }
    names
}

/// The names of the bits of feature word `sel` (bits `32 * sel ..`).
fn feature_names(sel: u32, word: u32) -> Vec<String> {
    const NAMES: [(u32, &str); 6] = [
        (F_SIZE, "SIZE"),
        (F_MULTIPORT, "MULTIPORT"),
        (F_EMERG_WRITE, "EMERG_WRITE"),
        (RING_F_INDIRECT_DESC, "RING_INDIRECT_DESC"),
        (RING_F_EVENT_IDX, "RING_EVENT_IDX"),
        (VERSION_1, "VERSION_1"),
    ];
    let name = |bit: u64| {
        NAMES
            .iter()
            .find(|&&(b, _)| u64::from(b) == bit)
            .map_or_else(|| format!("bit {bit}"), |&(_, n)| n.to_owned())
    };
    (0..32u32)
        .filter(|b| word & (1 << b) != 0)
        .map(|b| name(u64::from(sel) * 32 + u64::from(b)))
        .collect()
}

fn register_problems(r: &RegistersReport, expected: u32, problems: &mut Vec<String>) {
    if r.magic != reg::MAGIC {
        if r.magic != 0 {
            problems.push(format!(
                "MagicValue {:#010x} is neither 0 (no device yet) nor {:#010x} (\"virt\")",
                r.magic,
                reg::MAGIC
            ));
        }
        // Nothing else is meaningful before a device publishes the block.
        return;
    }
    if r.version != expected {
        problems.push(format!(
            "Version {}, the layout has version {expected}",
            r.version
        ));
    }
    if r.device_id != id::CONSOLE {
        problems.push(format!("DeviceID {}, a console is 3", r.device_id));
    }
    if r.status & !known_status_bits() != 0 {
        problems.push(format!("Status {:#x} holds bits no side writes", r.status));
    }
    if r.interrupt_status & !INTERRUPT_BITS != 0 {
        problems.push(format!(
            "InterruptStatus {:#x} holds bits no device sets",
            r.interrupt_status
        ));
    }
    let num_max = r.queue_num_max;
    if num_max != 0 && (!num_max.is_power_of_two() || num_max > 1024) {
        problems.push(format!(
            "QueueNumMax {num_max} is not 0 or a power of two up to 1024"
        ));
    }
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
        registers_lines(f, r, indent)?;
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

fn registers_lines(f: &mut fmt::Formatter<'_>, r: &RegistersReport, indent: &str) -> fmt::Result {
    let names = |n: &[String]| {
        if n.is_empty() {
            String::new()
        } else {
            format!(" ({})", n.join(" "))
        }
    };
    writeln!(
        f,
        "{indent}virtio-mmio block at {:#x}: MagicValue {:#010x}, Version {}, DeviceID {}, VendorID {:#010x} ({})",
        r.offset, r.magic, r.version, r.device_id, r.vendor_id, r.vendor
    )?;
    writeln!(
        f,
        "{indent}  Status {:#04x}{}, InterruptStatus {:#x}{}, ConfigGeneration {}",
        r.status,
        names(&r.status_bits),
        r.interrupt_status,
        names(&r.interrupt_bits),
        r.config_generation
    )?;
    writeln!(
        f,
        "{indent}  DeviceFeatures[{}] {:#010x}{}, DriverFeatures[{}] {:#010x}{}",
        r.device_features_sel,
        r.device_features,
        names(&r.device_feature_names),
        r.driver_features_sel,
        r.driver_features,
        names(&r.driver_feature_names)
    )?;
    let mut queue = format!(
        "{indent}  QueueSel {}, QueueNumMax {}, QueueNum {}",
        r.queue_sel, r.queue_num_max, r.queue_num
    );
    if let (Some(page), Some(align), Some(pfn)) = (r.guest_page_size, r.queue_align, r.queue_pfn) {
        let pfn = match pfn {
            0 => "0x0 (no queue)".to_owned(),
            reg::HVL_PFN_ACK => format!("{pfn:#x} (the device's acknowledgement)"),
            // The driver's own address, untranslated: inspect knows no base.
            _ => format!(
                "{pfn:#x} (driver address {:#x})",
                u64::from(pfn) * u64::from(page)
            ),
        };
        queue += &format!(", GuestPageSize {page}, QueueAlign {align}, QueuePFN {pfn}");
    }
    if let Some(ready) = r.queue_ready {
        queue += &format!(", QueueReady {ready}");
    }
    if let Some([desc, driver, device]) = r.queue_addresses {
        queue += &format!(", desc {desc:#x} driver {driver:#x} device {device:#x}");
    }
    writeln!(f, "{queue}")?;
    writeln!(
        f,
        "{indent}  SHMSel {}, SHMBase {:#x}, SHMLen {:#x}",
        r.shm_sel, r.shm_base, r.shm_len
    )?;
    writeln!(
        f,
        "{indent}  config: cols {}, rows {}, max_nr_ports {}, emerg_wr {:#x}",
        r.config.cols, r.config.rows, r.config.max_nr_ports, r.config.emerg_wr
    )
}
