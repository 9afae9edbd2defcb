//! A console's virtio-mmio register block as read: every register, `Status`,
//! `InterruptStatus` and the feature words by bit name, the console's config
//! space, and the checks a published block must pass.

use std::fmt;

use ivlink_core::RawRegion;
use ivlink_core::Region;
use ivlink_core::console::{CONFIG_SIZE, ConsoleConfig, F_EMERG_WRITE, F_MULTIPORT, F_SIZE};
use ivlink_core::virtio::features::{RING_F_EVENT_IDX, RING_F_INDIRECT_DESC, VERSION_1};
use ivlink_core::virtio::mmio::MmioBlock;
use ivlink_core::virtio::mmio::registers as reg;
use ivlink_core::virtio::{id, status};
use serde::Serialize;

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

pub(super) fn read_registers(
    region: &RawRegion,
    offset: usize,
    expected: u32,
) -> Option<RegistersReport> {
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

pub(super) fn register_problems(r: &RegistersReport, expected: u32, problems: &mut Vec<String>) {
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

pub(super) fn lines(f: &mut fmt::Formatter<'_>, r: &RegistersReport, indent: &str) -> fmt::Result {
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
