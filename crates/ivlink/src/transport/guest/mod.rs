//! A Linux guest as an ivshmem peer, on QEMU's ivshmem PCI device (`1af4:1110`).
//!
//! Two ways in:
//! - **VFIO** (ivshmem-doorbell): the device is bound to `vfio-pci`; BAR2 (the region)
//!   is mmapped from the VFIO device fd; BAR0's registers are read and written with
//!   4-byte `pread`/`pwrite`; each MSI-X vector gets an eventfd that [`Device::wait`]
//!   watches with epoll, as the host transport does. Our id is the IVPosition register;
//!   notifying writes `peer << 16 | vector` to the Doorbell register. This needs an
//!   IOMMU in the guest (`-M q35 -device intel-iommu`, `intel_iommu=on`) and the
//!   modules in [`VFIO_MODULES`], and it must run as root.
//! - **sysfs** (ivshmem-plain, or when asked): `resource2` is mmapped (write-back,
//!   not `resource2_wc`). No interrupts: peers poll, [`Notify::notify`] is
//!   [`NotifyError::Unsupported`].
//!
//! What a guest cannot know: the server's join and leave messages go to QEMU, not to
//! the guest, so [`Device::peers`] is always empty and no peer events arrive; nor
//! does it know how many vectors other peers have, so any vector below 256 is
//! accepted for them and the device silently drops a doorbell for a peer or vector
//! that does not exist.

mod error;
mod sysfs;
mod vfio;

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ivlink_core::{Notify, NotifyError, PeerId, RawRegion, Region, Vector};
use rustix::event::epoll;
use tracing::{debug, warn};

pub use error::{GuestError, VFIO_MODULES};
pub use sysfs::{IVSHMEM_DEVICE, IVSHMEM_VENDOR, parse_address};

use crate::device::{Device, DeviceError, Event, PeerInfo, WaitFor};
use crate::doorbell;
use crate::mapping::MappedRegion;
use sysfs::{PciDevice, Sysfs};
use vfio::{RegionInfo, VfioDevice};

/// BAR0 register: own peer id (read-only; 0 on ivshmem-plain).
pub const REG_IV_POSITION: u64 = 0x08;
/// BAR0 register: write `peer << 16 | vector` to interrupt a peer.
pub const REG_DOORBELL: u64 = 0x0c;
/// Vectors a doorbell write can name: QEMU keeps only the low 8 bits.
pub const DOORBELL_VECTORS: usize = 256;

/// PCI command register offset in configuration space, and its bus-master bit.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 0x2;
const PCI_COMMAND_MASTER: u16 = 0x4;

/// How long `/dev/vfio/<group>` may take to appear after binding (devtmpfs creates
/// it from a uevent).
const GROUP_NODE_WAIT: Duration = Duration::from_secs(2);

/// The Doorbell register value that interrupts `peer` on `vector`, or `None` for a
/// vector the register cannot carry (256 and above).
pub fn doorbell_value(peer: PeerId, vector: Vector) -> Option<u32> {
    (usize::from(vector) < DOORBELL_VECTORS).then(|| (u32::from(peer) << 16) | u32::from(vector))
}

/// How a guest reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestMode {
    /// VFIO for an ivshmem-doorbell (it has MSI-X), sysfs for an ivshmem-plain.
    #[default]
    Auto,
    /// VFIO: region, doorbell and interrupts (ivshmem-doorbell only).
    Vfio,
    /// sysfs `resource2`: the region only, polled.
    Sysfs,
}

impl fmt::Display for GuestMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestMode::Auto => "auto",
            GuestMode::Vfio => "vfio",
            GuestMode::Sysfs => "sysfs",
        })
    }
}

impl FromStr for GuestMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(GuestMode::Auto),
            "vfio" => Ok(GuestMode::Vfio),
            "sysfs" => Ok(GuestMode::Sysfs),
            other => Err(format!(
                "unknown device mode {other:?} (expected auto, vfio or sysfs)"
            )),
        }
    }
}

/// Where the kernel interfaces are: `/sys` and `/dev/vfio` for real.
#[derive(Debug, Clone)]
struct Paths {
    sysfs: Sysfs,
    dev_vfio: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            sysfs: Sysfs::new("/sys"),
            dev_vfio: PathBuf::from("/dev/vfio"),
        }
    }
}

/// A guest's peer on the ivshmem PCI device.
#[derive(Debug)]
pub struct GuestPeer {
    // Unmapped before the device fd behind it is closed.
    region: MappedRegion,
    bdf: String,
    id: PeerId,
    doorbell_device: bool,
    vfio: Option<Vfio>,
}

/// What the VFIO mode holds. Fields drop in order: the device fd first (which
/// disables its interrupts), then the eventfds, the group and the container.
#[derive(Debug)]
struct Vfio {
    device: VfioDevice,
    bar0: RegionInfo,
    vectors: Vec<OwnedFd>,
    epoll: OwnedFd,
    pending: Mutex<VecDeque<Event>>,
    group: vfio::Group,
    _container: vfio::Container,
}

impl GuestPeer {
    /// Opens the ivshmem device at `address` (`"0000:00:03.0"` or `"00:03.0"`), or
    /// the first one found when `None`, in `mode`.
    pub fn open(address: Option<&str>, mode: GuestMode) -> Result<Self, DeviceError> {
        Self::open_in(&Paths::default(), address, mode)
    }

    fn open_in(paths: &Paths, address: Option<&str>, mode: GuestMode) -> Result<Self, DeviceError> {
        let device = paths.sysfs.find(address)?;
        let doorbell_device = device.has_msix();
        let use_vfio = match mode {
            GuestMode::Auto => doorbell_device,
            GuestMode::Vfio if !doorbell_device => {
                return Err(GuestError::PlainDevice { bdf: device.bdf }.into());
            }
            GuestMode::Vfio => true,
            GuestMode::Sysfs => false,
        };
        if use_vfio {
            open_vfio(paths, device)
        } else {
            open_sysfs(device, doorbell_device)
        }
    }

    /// The device's PCI address (`dddd:bb:dd.f`).
    pub fn address(&self) -> &str {
        &self.bdf
    }

    /// The mode in use: [`GuestMode::Vfio`] or [`GuestMode::Sysfs`].
    pub fn mode(&self) -> GuestMode {
        if self.vfio.is_some() {
            GuestMode::Vfio
        } else {
            GuestMode::Sysfs
        }
    }

    /// Whether the device is an ivshmem-doorbell (it has MSI-X), whatever the mode.
    pub fn is_doorbell_device(&self) -> bool {
        self.doorbell_device
    }
}

fn open_sysfs(device: PciDevice, doorbell_device: bool) -> Result<GuestPeer, DeviceError> {
    ensure_memory_decoding(&device);
    let path = device.resource_path(2);
    let fd = rustix::fs::open(
        &path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| DeviceError::Open {
        path: path.display().to_string(),
        error: e.into(),
    })?;
    let region = MappedRegion::map_fd(fd)?;
    let id = if doorbell_device {
        sysfs_iv_position(&device).unwrap_or_else(|reason| {
            warn!(
                "cannot read IVPosition of {} through sysfs ({reason}); using id 0",
                device.bdf
            );
            0
        })
    } else {
        // ivshmem-plain has no server and reads 0.
        0
    };
    debug!(
        bdf = device.bdf,
        id,
        size = region.len(),
        "mapped through sysfs"
    );
    Ok(GuestPeer {
        region,
        bdf: device.bdf,
        id,
        doorbell_device,
        vfio: None,
    })
}

/// Without a driver, nothing guarantees the device decodes memory: firmware usually
/// turns it on, but a driver that let go of the device may have turned it off. Set
/// the bit if we may; a failure only means we rely on whoever set it.
fn ensure_memory_decoding(device: &PciDevice) {
    let path = device.config_path();
    let result = (|| -> std::io::Result<()> {
        let config = File::options().read(true).write(true).open(&path)?;
        let mut command = [0u8; 2];
        config.read_exact_at(&mut command, PCI_COMMAND)?;
        let command = u16::from_le_bytes(command);
        if command & PCI_COMMAND_MEMORY == 0 {
            debug!("enabling memory decoding of {}", device.bdf);
            config.write_all_at(&(command | PCI_COMMAND_MEMORY).to_le_bytes(), PCI_COMMAND)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        debug!("cannot check memory decoding in {}: {e}", path.display());
    }
}

/// Reads IVPosition through a mapping of `resource0` (sysfs mode on a doorbell
/// device). The mapping starts at the page holding BAR0, which need not be page
/// aligned.
fn sysfs_iv_position(device: &PciDevice) -> Result<PeerId, String> {
    let bar0 = *device
        .resources()
        .first()
        .ok_or("no BAR0 in the resource file")?;
    if bar0.size() < REG_IV_POSITION + 4 {
        return Err(format!("BAR0 is {} bytes", bar0.size()));
    }
    let page = rustix::param::page_size() as u64;
    let within = bar0.start % page;
    let file = File::options()
        .read(true)
        .write(true)
        .open(device.resource_path(0))
        .map_err(|e| e.to_string())?;
    let len = (within + bar0.size()).div_ceil(page) * page;
    let map = MappedRegion::map_file_range(&file, 0, len).map_err(|e| e.to_string())?;
    let value = map
        .load_u32(
            (within + REG_IV_POSITION) as usize,
            std::sync::atomic::Ordering::Acquire,
        )
        .map_err(|e| e.to_string())?;
    PeerId::try_from(value).map_err(|_| format!("IVPosition reads {value:#x}"))
}

fn open_vfio(paths: &Paths, device: PciDevice) -> Result<GuestPeer, DeviceError> {
    let bdf = device.bdf.clone();
    let (container, group, group_name, dev) = attach_to_vfio(paths, &device)?;
    let (bar0, bar2) = check_bars(&dev)?;
    let config = dev.region_info(vfio::CONFIG_REGION_INDEX)?;
    let region = MappedRegion::map_file_range(dev.file(), bar2.offset, bar2.size)?;
    enable_bus_mastering(&dev, &config)?;
    let (vectors, epoll) = wire_vectors(&dev)?;
    let id = read_position(&dev, &bar0)?;
    debug!(
        bdf,
        group = group_name,
        id,
        vectors = vectors.len(),
        size = region.len(),
        "opened through VFIO"
    );
    Ok(GuestPeer {
        region,
        bdf,
        id,
        doorbell_device: true,
        vfio: Some(Vfio {
            device: dev,
            bar0,
            vectors,
            epoll,
            pending: Mutex::new(VecDeque::new()),
            group,
            _container: container,
        }),
    })
}

/// Binds the device to vfio-pci and opens its container, group and device.
fn attach_to_vfio(
    paths: &Paths,
    device: &PciDevice,
) -> Result<(vfio::Container, vfio::Group, String, VfioDevice), DeviceError> {
    let bdf = &device.bdf;
    let group_name = device
        .iommu_group()?
        .ok_or_else(|| GuestError::NoIommu { bdf: bdf.clone() })?;
    let container_path = paths.dev_vfio.join("vfio");
    if !container_path.exists() {
        return Err(GuestError::VfioMissing {
            missing: container_path.display().to_string(),
        }
        .into());
    }
    device.bind_to_vfio(&paths.sysfs)?;

    let container = vfio::Container::open(&container_path)?;
    let group_path = paths.dev_vfio.join(&group_name);
    // udev creates the group's node a moment after the bind.
    let deadline = Instant::now() + GROUP_NODE_WAIT;
    let group = loop {
        match vfio::Group::open(&group_path, &group_name, bdf) {
            Err(GuestError::VfioMissing { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other?,
        }
    };
    group.check_viable()?;
    group.set_container(&container)?;
    container.set_type1_iommu()?;
    let dev = group.device(bdf)?;
    Ok((container, group, group_name, dev))
}

/// BAR0 (the registers) and BAR2 (the shared memory), checked to be usable.
fn check_bars(dev: &VfioDevice) -> Result<(RegionInfo, RegionInfo), DeviceError> {
    let bar0 = dev.region_info(vfio::BAR0_REGION_INDEX)?;
    if bar0.size < REG_DOORBELL + 4 {
        return Err(GuestError::Unexpected(format!("BAR0 is {} bytes, not 256", bar0.size)).into());
    }
    let bar2 = dev.region_info(vfio::BAR2_REGION_INDEX)?;
    if bar2.size == 0 {
        return Err(GuestError::Unexpected("BAR2 (the shared memory) is empty".into()).into());
    }
    if !bar2.mappable() {
        return Err(GuestError::Unexpected("VFIO does not allow mapping BAR2".into()).into());
    }
    Ok((bar0, bar2))
}

/// Without bus mastering the device's MSI-X writes are dropped, silently.
fn enable_bus_mastering(dev: &VfioDevice, config: &RegionInfo) -> Result<(), DeviceError> {
    let command = dev
        .read_u16(config, PCI_COMMAND)
        .map_err(|error| GuestError::Vfio {
            op: "reading the PCI command register",
            error,
        })?;
    if command & PCI_COMMAND_MASTER == 0 {
        dev.write_u16(config, PCI_COMMAND, command | PCI_COMMAND_MASTER)
            .map_err(|error| GuestError::Vfio {
                op: "enabling bus mastering",
                error,
            })?;
    }
    Ok(())
}

/// An eventfd per MSI-X vector, handed to VFIO, all watched by one epoll set.
fn wire_vectors(dev: &VfioDevice) -> Result<(Vec<OwnedFd>, OwnedFd), DeviceError> {
    let count = dev.irq_count(vfio::MSIX_IRQ_INDEX)? as usize;
    if count == 0 {
        return Err(GuestError::Unexpected("the device reports no MSI-X vectors".into()).into());
    }
    if count > vfio::MAX_IRQS {
        warn!(
            "the device has {count} MSI-X vectors; using the first {}",
            vfio::MAX_IRQS
        );
    }
    let vectors = (0..count.min(vfio::MAX_IRQS))
        .map(|_| doorbell::new_eventfd().map_err(DeviceError::io("creating a vector eventfd")))
        .collect::<Result<Vec<_>, _>>()?;
    let borrowed: Vec<BorrowedFd<'_>> = vectors.iter().map(AsFd::as_fd).collect();
    dev.set_irq_eventfds(vfio::MSIX_IRQ_INDEX, &borrowed)?;

    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| DeviceError::io("creating an epoll set")(e.into()))?;
    for (vector, fd) in vectors.iter().enumerate() {
        epoll::add(
            &epoll,
            fd.as_fd(),
            epoll::EventData::new_u64(vector as u64),
            epoll::EventFlags::IN,
        )
        .map_err(|e| DeviceError::io("watching a vector")(e.into()))?;
    }
    Ok((vectors, epoll))
}

/// This peer's id, from the IVPosition register.
fn read_position(dev: &VfioDevice, bar0: &RegionInfo) -> Result<PeerId, DeviceError> {
    let position = dev
        .read_u32(bar0, REG_IV_POSITION)
        .map_err(|error| GuestError::Vfio {
            op: "reading IVPosition",
            error,
        })?;
    Ok(PeerId::try_from(position).map_err(|_| {
        GuestError::Unexpected(format!("IVPosition reads {position:#x}, not a peer id"))
    })?)
}

impl Vfio {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // Every mutation is a single push, update or removal: a poisoned lock still
        // holds a consistent queue.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn collect(
        &self,
        pending: &mut VecDeque<Event>,
        ready: &[epoll::Event],
    ) -> Result<(), DeviceError> {
        for event in ready {
            let vector = event.data.u64() as usize;
            let Some(fd) = self.vectors.get(vector) else {
                continue;
            };
            let count = doorbell::drain(fd.as_fd()).map_err(DeviceError::io("reading a vector"))?;
            if count == 0 {
                continue;
            }
            let vector = vector as Vector;
            match pending.iter_mut().find_map(|e| match e {
                Event::Notified { vector: v, count } if *v == vector => Some(count),
                _ => None,
            }) {
                Some(total) => *total += count,
                None => pending.push_back(Event::Notified { vector, count }),
            }
        }
        Ok(())
    }

    fn wait(&self, what: WaitFor, timeout: Option<Duration>) -> Result<Option<Event>, DeviceError> {
        crate::wait::wait_epoll(
            self.epoll.as_fd(),
            timeout,
            || {
                let mut pending = self.lock();
                let index = pending.iter().position(|e| what.matches(e))?;
                pending.remove(index)
            },
            |ready| self.collect(&mut self.lock(), ready),
        )
    }
}

impl Notify for GuestPeer {
    /// Writes `peer << 16 | vector` to the Doorbell register.
    ///
    /// Only our own vector count is known: for ourselves a vector beyond it is
    /// refused; for other peers any vector below 256 is written, and the device
    /// silently drops a doorbell for a peer or vector that does not exist (there is
    /// no status to read back). In sysfs mode there is no doorbell:
    /// [`NotifyError::Unsupported`] (notifications need ivshmem-doorbell and VFIO).
    fn notify(&self, peer: PeerId, vector: Vector) -> Result<(), NotifyError> {
        let vfio = self.vfio.as_ref().ok_or(NotifyError::Unsupported)?;
        if peer == self.id && usize::from(vector) >= vfio.vectors.len() {
            return Err(NotifyError::NoSuchVector {
                peer,
                vector,
                available: vfio.vectors.len(),
            });
        }
        let value = doorbell_value(peer, vector).ok_or(NotifyError::NoSuchVector {
            peer,
            vector,
            available: DOORBELL_VECTORS,
        })?;
        vfio.device
            .write_u32(&vfio.bar0, REG_DOORBELL, value)
            .map_err(|e| NotifyError::Os(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}

impl Device for GuestPeer {
    fn region(&self) -> &RawRegion {
        &self.region
    }

    /// The IVPosition register: the id the server gave this VM (0 on ivshmem-plain).
    fn id(&self) -> PeerId {
        self.id
    }

    /// The MSI-X vectors in VFIO mode; 0 in sysfs mode.
    fn vectors(&self) -> usize {
        self.vfio.as_ref().map_or(0, |v| v.vectors.len())
    }

    /// Always empty: the server's join and leave messages reach QEMU, not the guest,
    /// and nothing in the device says which peers exist. Protocols that need to know
    /// must keep a directory in the region.
    fn peers(&self) -> Vec<PeerInfo> {
        Vec::new()
    }

    /// In VFIO mode, waits for MSI-X interrupts (never for peer events, which a
    /// guest cannot see). In sysfs mode nothing can ring: sleeps for the timeout (a
    /// polling tick) and reports nothing; waiting forever is an error.
    fn wait(&self, what: WaitFor, timeout: Option<Duration>) -> Result<Option<Event>, DeviceError> {
        match &self.vfio {
            Some(vfio) => vfio.wait(what, timeout),
            None => {
                let timeout = timeout.ok_or(DeviceError::NoDoorbell)?;
                std::thread::sleep(timeout);
                Ok(None)
            }
        }
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.vfio.as_ref().map(|v| v.epoll.as_fd())
    }

    fn describe(&self) -> String {
        let kind = if self.doorbell_device {
            "ivshmem-doorbell"
        } else {
            "ivshmem-plain"
        };
        match &self.vfio {
            Some(vfio) => format!(
                "guest peer on {kind} {} via VFIO (group {}, {} MSI-X vector{})",
                self.bdf,
                vfio.group.name(),
                vfio.vectors.len(),
                if vfio.vectors.len() == 1 { "" } else { "s" }
            ),
            None if self.doorbell_device => format!(
                "guest peer on {kind} {} via sysfs resource2 (polling; notifications need \
                 --device-mode vfio)",
                self.bdf
            ),
            None => format!(
                "guest peer on {kind} {} via sysfs resource2 (polling; notifications need \
                 ivshmem-doorbell)",
                self.bdf
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sysfs::tests::{FakeDevice, FakeSysfs};
    use super::*;

    fn paths(fake: &FakeSysfs) -> Paths {
        Paths {
            sysfs: fake.sysfs(),
            dev_vfio: fake.dir.path().join("dev-vfio"),
        }
    }

    fn open_err(fake: &FakeSysfs, address: Option<&str>, mode: GuestMode) -> DeviceError {
        GuestPeer::open_in(&paths(fake), address, mode).unwrap_err()
    }

    #[test]
    fn doorbell_values_put_the_peer_high_and_the_vector_low() {
        assert_eq!(doorbell_value(0, 0), Some(0));
        assert_eq!(doorbell_value(1, 0), Some(0x0001_0000));
        assert_eq!(doorbell_value(3, 2), Some(0x0003_0002));
        assert_eq!(doorbell_value(0xffff, 255), Some(0xffff_00ff));
        assert_eq!(doorbell_value(1, 256), None);
        assert_eq!(doorbell_value(1, u16::MAX), None);
        assert_eq!(
            doorbell_value(2, 1).unwrap().to_le_bytes(),
            [0x01, 0x00, 0x02, 0x00]
        );
    }

    #[test]
    fn modes_parse_and_print() {
        for mode in [GuestMode::Auto, GuestMode::Vfio, GuestMode::Sysfs] {
            assert_eq!(mode.to_string().parse::<GuestMode>(), Ok(mode));
        }
        assert!("uio".parse::<GuestMode>().is_err());
        assert_eq!(GuestMode::default(), GuestMode::Auto);
    }

    #[test]
    fn no_device_is_a_clear_error() {
        let fake = FakeSysfs::new();
        let err = open_err(&fake, None, GuestMode::Auto);
        assert!(
            matches!(GuestError::find_in(&err), Some(GuestError::NoDevice)),
            "{err}"
        );
        assert!(
            err.to_string().contains(
                "no ivshmem PCI device (1af4:1110) found; start QEMU with -device ivshmem-doorbell,"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_doorbell_device_without_an_iommu_asks_for_one() {
        let fake = FakeSysfs::new();
        fake.add(&FakeDevice::ivshmem("0000:00:03.0", true));
        for mode in [GuestMode::Auto, GuestMode::Vfio] {
            let err = open_err(&fake, None, mode);
            assert!(
                matches!(GuestError::find_in(&err), Some(GuestError::NoIommu { .. })),
                "{err}"
            );
            assert!(err.to_string().contains("-device intel-iommu"), "{err}");
        }
    }

    #[test]
    fn missing_vfio_modules_are_named_in_order() {
        let fake = FakeSysfs::new();
        fake.add(&FakeDevice {
            iommu_group: Some("3"),
            ..FakeDevice::ivshmem("0000:00:03.0", true)
        });
        // No /dev/vfio/vfio.
        let err = open_err(&fake, Some("00:03.0"), GuestMode::Vfio);
        assert!(
            matches!(
                GuestError::find_in(&err),
                Some(GuestError::VfioMissing { .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains(VFIO_MODULES), "{err}");
        // /dev/vfio/vfio but no vfio-pci driver.
        let dev_vfio = fake.dir.path().join("dev-vfio");
        std::fs::create_dir_all(&dev_vfio).unwrap();
        std::fs::write(dev_vfio.join("vfio"), "").unwrap();
        let err = open_err(&fake, Some("00:03.0"), GuestMode::Vfio);
        assert!(err.to_string().contains("vfio-pci driver"), "{err}");
        assert!(err.to_string().contains(VFIO_MODULES), "{err}");
    }

    #[test]
    fn vfio_on_a_plain_device_says_notifications_need_doorbell() {
        let fake = FakeSysfs::new();
        fake.add(&FakeDevice::ivshmem("0000:00:04.0", false));
        let err = open_err(&fake, None, GuestMode::Vfio);
        assert!(
            err.to_string()
                .contains("notifications need ivshmem-doorbell"),
            "{err}"
        );
    }

    #[test]
    fn sysfs_mode_maps_resource2_and_has_no_doorbell() {
        let fake = FakeSysfs::new();
        let dir = fake.add(&FakeDevice::ivshmem("0000:00:04.0", false));
        let peer = GuestPeer::open_in(&paths(&fake), None, GuestMode::Auto).unwrap();
        assert_eq!(peer.mode(), GuestMode::Sysfs);
        assert_eq!(peer.address(), "0000:00:04.0");
        assert_eq!(peer.id(), 0);
        assert_eq!(peer.vectors(), 0);
        assert!(peer.peers().is_empty());
        assert!(peer.wait_fd().is_none());
        assert_eq!(peer.notify(1, 0), Err(NotifyError::Unsupported));
        assert!(matches!(
            peer.wait(WaitFor::ANYTHING, None),
            Err(DeviceError::NoDoorbell)
        ));
        assert!(
            peer.describe()
                .contains("notifications need ivshmem-doorbell"),
            "{}",
            peer.describe()
        );
        // The mapping is the file: bytes written show up in it.
        peer.region().write(16, b"plain").unwrap();
        assert_eq!(
            &std::fs::read(dir.join("resource2")).unwrap()[16..21],
            b"plain"
        );
        // The fake config space had memory decoding off: it is switched on.
        assert_eq!(std::fs::read(dir.join("config")).unwrap()[4], 0x2);
    }
}
