//! Finding the ivshmem PCI device in sysfs, reading what it has, and handing it to
//! vfio-pci. Every path is under a root that is `/sys` for real and a directory
//! tree in tests.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use super::error::GuestError;

/// The PCI vendor id of ivshmem devices (Red Hat / Qumranet).
pub const IVSHMEM_VENDOR: u16 = 0x1af4;
/// The PCI device id of ivshmem devices.
pub const IVSHMEM_DEVICE: u16 = 0x1110;

/// Normalizes a PCI address to the kernel's `dddd:bb:dd.f` form, lower case:
/// `"00:03.0"` becomes `"0000:00:03.0"`.
pub fn parse_address(text: &str) -> Result<String, GuestError> {
    let bad = || GuestError::BadAddress(text.to_owned());
    let hex = |s: &str, max_digits: usize| -> Result<u32, GuestError> {
        if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(s, 16).map_err(|_| bad())
    };
    let trimmed = text.trim();
    let (rest, function) = trimmed.rsplit_once('.').ok_or_else(bad)?;
    let function = hex(function, 1)?;
    let mut parts = rest.rsplitn(3, ':');
    let slot = hex(parts.next().ok_or_else(bad)?, 2)?;
    let bus = hex(parts.next().ok_or_else(bad)?, 2)?;
    let domain = match parts.next() {
        Some(domain) => hex(domain, 8)?,
        None => 0,
    };
    if slot > 0x1f || function > 7 {
        return Err(bad());
    }
    Ok(format!("{domain:04x}:{bus:02x}:{slot:02x}.{function}"))
}

/// Sysfs, from its root (`/sys`).
#[derive(Debug, Clone)]
pub(crate) struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// `/sys/bus/pci/devices`: one entry per PCI address.
    pub(crate) fn devices_dir(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    /// `/sys/bus/pci/drivers/vfio-pci`: present once the vfio-pci module is loaded.
    pub(crate) fn vfio_pci_driver_dir(&self) -> PathBuf {
        self.root.join("bus/pci/drivers/vfio-pci")
    }

    /// `/sys/bus/pci/drivers_probe`: writing an address binds a driver to it.
    pub(crate) fn drivers_probe(&self) -> PathBuf {
        self.root.join("bus/pci/drivers_probe")
    }

    /// The ivshmem device at `address`, or the first one (lowest address) when `None`.
    pub(crate) fn find(&self, address: Option<&str>) -> Result<PciDevice, GuestError> {
        let devices = self.devices_dir();
        if let Some(address) = address {
            let bdf = parse_address(address)?;
            let dir = devices.join(&bdf);
            if !dir.exists() {
                return Err(GuestError::NoSuchDevice {
                    bdf,
                    path: dir.display().to_string(),
                });
            }
            let device = PciDevice { bdf, dir };
            let (vendor, id) = device.ids()?;
            if (vendor, id) != (IVSHMEM_VENDOR, IVSHMEM_DEVICE) {
                return Err(GuestError::NotIvshmem {
                    bdf: device.bdf,
                    vendor,
                    device: id,
                });
            }
            return Ok(device);
        }
        let entries = match fs::read_dir(&devices) {
            Ok(entries) => entries,
            // No PCI bus at all (or sysfs not mounted): no device either way.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(GuestError::NoDevice),
            Err(e) => return Err(GuestError::sysfs(&devices, e)),
        };
        let mut found: Vec<PciDevice> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let bdf = entry.file_name().into_string().ok()?;
                let device = PciDevice {
                    bdf,
                    dir: entry.path(),
                };
                // Unreadable entries are not ours to judge: skip them.
                (device.ids().ok()? == (IVSHMEM_VENDOR, IVSHMEM_DEVICE)).then_some(device)
            })
            .collect();
        found.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        if found.len() > 1 {
            let all: Vec<&str> = found.iter().map(|d| d.bdf.as_str()).collect();
            info!(
                "{} ivshmem devices ({}); using {} (pass --device ADDRESS to choose)",
                found.len(),
                all.join(", "),
                all[0]
            );
        }
        found.into_iter().next().ok_or(GuestError::NoDevice)
    }
}

/// One line of a device's `resource` file: a BAR's bus addresses and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resource {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// The kernel's `IORESOURCE_*` flags.
    pub flags: u64,
}

impl Resource {
    /// Size in bytes; 0 for a BAR the device does not implement.
    pub(crate) fn size(&self) -> u64 {
        if self.start == 0 && self.end == 0 {
            0
        } else {
            self.end.wrapping_sub(self.start).wrapping_add(1)
        }
    }
}

/// Parses a `resource` file: one `0xSTART 0xEND 0xFLAGS` line per BAR (then the ROM
/// and bridge windows). Malformed lines read as empty BARs.
pub(crate) fn parse_resources(text: &str) -> Vec<Resource> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    text.lines()
        .map(|line| {
            let mut fields = line.split_whitespace().map(hex);
            match (fields.next(), fields.next(), fields.next()) {
                (Some(Some(start)), Some(Some(end)), Some(Some(flags))) => {
                    Resource { start, end, flags }
                }
                _ => Resource {
                    start: 0,
                    end: 0,
                    flags: 0,
                },
            }
        })
        .collect()
}

/// Parses a sysfs id file such as `vendor` (`"0x1af4\n"`).
pub(crate) fn parse_id(text: &str) -> Option<u16> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    u16::from_str_radix(digits, 16).ok()
}

/// A PCI device's sysfs directory.
#[derive(Debug, Clone)]
pub(crate) struct PciDevice {
    /// Its address, `dddd:bb:dd.f`.
    pub bdf: String,
    /// `/sys/bus/pci/devices/<bdf>`.
    pub dir: PathBuf,
}

impl PciDevice {
    fn read(&self, name: &str) -> Result<String, GuestError> {
        let path = self.dir.join(name);
        fs::read_to_string(&path).map_err(|e| GuestError::sysfs(&path, e))
    }

    /// Vendor and device ids.
    pub(crate) fn ids(&self) -> Result<(u16, u16), GuestError> {
        let id = |name: &str| -> Result<u16, GuestError> {
            let text = self.read(name)?;
            parse_id(&text).ok_or_else(|| {
                GuestError::Unexpected(format!(
                    "{} holds {:?}, not a PCI id",
                    self.dir.join(name).display(),
                    text.trim()
                ))
            })
        };
        Ok((id("vendor")?, id("device")?))
    }

    /// The device's BARs, from its `resource` file (empty if unreadable).
    pub(crate) fn resources(&self) -> Vec<Resource> {
        self.read("resource")
            .map(|text| parse_resources(&text))
            .unwrap_or_default()
    }

    /// Whether this is an `ivshmem-doorbell` (it has BAR1, the MSI-X BAR) rather
    /// than an `ivshmem-plain`.
    pub(crate) fn has_msix(&self) -> bool {
        let bar1 = self.resources().get(1).is_some_and(|r| r.size() > 0);
        bar1 || self.resource_path(1).exists()
    }

    /// `resource<bar>`: the BAR as a file to mmap.
    pub(crate) fn resource_path(&self, bar: u8) -> PathBuf {
        self.dir.join(format!("resource{bar}"))
    }

    /// `config`: the configuration space.
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// The name of the IOMMU group, or `None` when the guest has no IOMMU.
    pub(crate) fn iommu_group(&self) -> Result<Option<String>, GuestError> {
        let link = self.dir.join("iommu_group");
        match fs::read_link(&link) {
            Ok(target) => Ok(target
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(GuestError::sysfs(&link, e)),
        }
    }

    /// The bound driver's name, if any.
    pub(crate) fn driver(&self) -> Option<String> {
        let target = fs::read_link(self.dir.join("driver")).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// Binds the device to vfio-pci: unbinds its current driver, sets
    /// `driver_override` and asks the kernel to probe it. Nothing to do if vfio-pci
    /// has it already.
    pub(crate) fn bind_to_vfio(&self, sysfs: &Sysfs) -> Result<(), GuestError> {
        let current = self.driver();
        if current.as_deref() == Some("vfio-pci") {
            return Ok(());
        }
        let vfio_pci = sysfs.vfio_pci_driver_dir();
        if !vfio_pci.is_dir() {
            return Err(GuestError::VfioMissing {
                missing: format!("the vfio-pci driver ({})", vfio_pci.display()),
            });
        }
        if let Some(driver) = &current {
            debug!("unbinding {} from {driver}", self.bdf);
            write_sysfs(&self.dir.join("driver/unbind"), &self.bdf)?;
        }
        write_sysfs(&self.dir.join("driver_override"), "vfio-pci")?;
        write_sysfs(&sysfs.drivers_probe(), &self.bdf)?;
        match self.driver() {
            Some(driver) if driver == "vfio-pci" => {
                debug!("bound {} to vfio-pci", self.bdf);
                Ok(())
            }
            other => Err(GuestError::Bind {
                bdf: self.bdf.clone(),
                reason: format!(
                    "after probing, its driver is {} (the kernel log says why)",
                    other.as_deref().unwrap_or("none")
                ),
            }),
        }
    }
}

/// Writes `value` to an existing sysfs attribute in one write.
fn write_sysfs(path: &Path, value: &str) -> Result<(), GuestError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| GuestError::sysfs(path, e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| GuestError::sysfs(path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a fake `/sys` with PCI devices, as the kernel lays it out.
    pub(crate) struct FakeSysfs {
        pub dir: tempfile::TempDir,
    }

    /// What a fake device has.
    pub(crate) struct FakeDevice<'a> {
        pub bdf: &'a str,
        pub vendor: &'a str,
        pub device: &'a str,
        pub msix: bool,
        pub iommu_group: Option<&'a str>,
        pub driver: Option<&'a str>,
    }

    impl FakeDevice<'_> {
        pub(crate) fn ivshmem(bdf: &str, msix: bool) -> FakeDevice<'_> {
            FakeDevice {
                bdf,
                vendor: "0x1af4\n",
                device: "0x1110\n",
                msix,
                iommu_group: None,
                driver: None,
            }
        }
    }

    impl FakeSysfs {
        pub(crate) fn new() -> FakeSysfs {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("bus/pci/devices")).unwrap();
            fs::create_dir_all(dir.path().join("bus/pci/drivers")).unwrap();
            fs::write(dir.path().join("bus/pci/drivers_probe"), "").unwrap();
            FakeSysfs { dir }
        }

        pub(crate) fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.dir.path())
        }

        pub(crate) fn add(&self, d: &FakeDevice<'_>) -> PathBuf {
            let root = self.dir.path();
            // Real entries are symlinks into /sys/devices.
            let real = root.join("devices/pci0000:00").join(d.bdf);
            fs::create_dir_all(&real).unwrap();
            std::os::unix::fs::symlink(&real, root.join("bus/pci/devices").join(d.bdf)).unwrap();
            fs::write(real.join("vendor"), d.vendor).unwrap();
            fs::write(real.join("device"), d.device).unwrap();
            fs::write(real.join("driver_override"), "(null)\n").unwrap();
            fs::write(real.join("config"), [0u8; 256]).unwrap();
            let empty = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
            let mut resource =
                String::from("0x00000000fea1c000 0x00000000fea1c0ff 0x0000000000040200\n");
            if d.msix {
                resource.push_str("0x00000000fea1d000 0x00000000fea1dfff 0x0000000000040200\n");
                fs::write(real.join("resource1"), "").unwrap();
            } else {
                resource.push_str(empty);
            }
            resource.push_str("0x0000000800000000 0x00000008003fffff 0x000000000014220c\n");
            for _ in 3..13 {
                resource.push_str(empty);
            }
            fs::write(real.join("resource"), resource).unwrap();
            fs::write(real.join("resource0"), [0u8; 256]).unwrap();
            fs::write(real.join("resource2"), vec![0u8; 4096]).unwrap();
            if let Some(group) = d.iommu_group {
                let group_dir = root.join("kernel/iommu_groups").join(group);
                fs::create_dir_all(&group_dir).unwrap();
                std::os::unix::fs::symlink(&group_dir, real.join("iommu_group")).unwrap();
            }
            if let Some(driver) = d.driver {
                let driver_dir = root.join("bus/pci/drivers").join(driver);
                fs::create_dir_all(&driver_dir).unwrap();
                fs::write(driver_dir.join("unbind"), "").unwrap();
                std::os::unix::fs::symlink(&driver_dir, real.join("driver")).unwrap();
            }
            real
        }
    }

    #[test]
    fn addresses_are_normalized_or_refused() {
        assert_eq!(parse_address("0000:00:03.0").unwrap(), "0000:00:03.0");
        assert_eq!(parse_address("00:03.0").unwrap(), "0000:00:03.0");
        assert_eq!(parse_address(" 0000:1A:1f.7\n").unwrap(), "0000:1a:1f.7");
        assert_eq!(parse_address("1:2:3.4").unwrap(), "0001:02:03.4");
        assert_eq!(parse_address("10000:00:00.0").unwrap(), "10000:00:00.0");
        for bad in [
            "",
            "auto",
            "00:03",
            "00:03.8",
            "00:20.0",
            "000:03.0",
            "0:0:0:0.0",
            "xx:03.0",
            "00:03.0.1",
            "00:-3.0",
        ] {
            let err = parse_address(bad).unwrap_err();
            assert!(matches!(err, GuestError::BadAddress(_)), "{bad}: {err}");
        }
        assert!(
            parse_address("00:03")
                .unwrap_err()
                .to_string()
                .contains("0000:00:03.0")
        );
    }

    #[test]
    fn ids_and_resources_parse() {
        assert_eq!(parse_id("0x1af4\n"), Some(0x1af4));
        assert_eq!(parse_id("1af4"), None);
        assert_eq!(parse_id("0xzz"), None);
        let r = parse_resources(
            "0x00000000fea1c000 0x00000000fea1c0ff 0x0000000000040200\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x0000000800000000 0x00000008003fffff 0x000000000014220c\n\
             garbage\n",
        );
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].size(), 256);
        assert_eq!(r[1].size(), 0);
        assert_eq!(r[2].size(), 4 << 20);
        assert_eq!(r[2].start, 0x8_0000_0000);
        assert_eq!(r[3].size(), 0);
    }

    #[test]
    fn discovery_finds_the_lowest_ivshmem_device_and_skips_others() {
        let fake = FakeSysfs::new();
        fake.add(&FakeDevice {
            vendor: "0x8086\n",
            device: "0x29c0\n",
            ..FakeDevice::ivshmem("0000:00:00.0", false)
        });
        fake.add(&FakeDevice::ivshmem("0000:00:05.0", false));
        fake.add(&FakeDevice::ivshmem("0000:00:03.0", true));
        let sysfs = fake.sysfs();
        let found = sysfs.find(None).unwrap();
        assert_eq!(found.bdf, "0000:00:03.0");
        assert!(found.has_msix());
        let plain = sysfs.find(Some("00:05.0")).unwrap();
        assert_eq!(plain.bdf, "0000:00:05.0");
        assert!(!plain.has_msix());
        assert_eq!(plain.resources()[2].size(), 4 << 20);
    }

    #[test]
    fn discovery_errors_say_what_is_wrong() {
        let fake = FakeSysfs::new();
        let sysfs = fake.sysfs();
        assert!(matches!(sysfs.find(None), Err(GuestError::NoDevice)));
        fake.add(&FakeDevice {
            vendor: "0x8086\n",
            device: "0x29c0\n",
            ..FakeDevice::ivshmem("0000:00:00.0", false)
        });
        assert!(matches!(sysfs.find(None), Err(GuestError::NoDevice)));
        let err = sysfs.find(Some("00:00.0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PCI device 0000:00:00.0 is 8086:29c0, not an ivshmem device (1af4:1110)"
        );
        let err = sysfs.find(Some("00:07.0")).unwrap_err();
        assert!(
            matches!(&err, GuestError::NoSuchDevice { bdf, .. } if bdf == "0000:00:07.0"),
            "{err}"
        );
        assert!(matches!(
            sysfs.find(Some("nonsense")),
            Err(GuestError::BadAddress(_))
        ));
        // No sysfs at all reads as no device.
        let nothing = Sysfs::new(fake.dir.path().join("missing"));
        assert!(matches!(nothing.find(None), Err(GuestError::NoDevice)));
    }

    #[test]
    fn iommu_group_and_driver_come_from_symlinks() {
        let fake = FakeSysfs::new();
        fake.add(&FakeDevice {
            iommu_group: Some("5"),
            driver: Some("vfio-pci"),
            ..FakeDevice::ivshmem("0000:00:03.0", true)
        });
        fake.add(&FakeDevice::ivshmem("0000:00:04.0", true));
        let sysfs = fake.sysfs();
        let with = sysfs.find(Some("0000:00:03.0")).unwrap();
        assert_eq!(with.iommu_group().unwrap().as_deref(), Some("5"));
        assert_eq!(with.driver().as_deref(), Some("vfio-pci"));
        // Already bound: nothing is written.
        with.bind_to_vfio(&sysfs).unwrap();
        let without = sysfs.find(Some("0000:00:04.0")).unwrap();
        assert_eq!(without.iommu_group().unwrap(), None);
        assert_eq!(without.driver(), None);
    }

    #[test]
    fn binding_writes_override_and_probe_and_checks_the_result() {
        let fake = FakeSysfs::new();
        let dir = fake.add(&FakeDevice {
            iommu_group: Some("5"),
            driver: Some("some-driver"),
            ..FakeDevice::ivshmem("0000:00:03.0", true)
        });
        let sysfs = fake.sysfs();
        let device = sysfs.find(None).unwrap();
        // Without the vfio-pci driver, the modules are named.
        let err = device.bind_to_vfio(&sysfs).unwrap_err();
        assert!(matches!(err, GuestError::VfioMissing { .. }), "{err}");
        assert!(
            err.to_string().contains(super::super::VFIO_MODULES),
            "{err}"
        );

        fs::create_dir_all(sysfs.vfio_pci_driver_dir()).unwrap();
        // A fake kernel never binds: the steps are taken, then the failure is named.
        let err = device.bind_to_vfio(&sysfs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot bind PCI device 0000:00:03.0 to vfio-pci: after probing, its driver is \
             some-driver (the kernel log says why)"
        );
        let unbind = fake.dir.path().join("bus/pci/drivers/some-driver/unbind");
        assert_eq!(fs::read_to_string(unbind).unwrap(), "0000:00:03.0");
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        assert_eq!(
            fs::read_to_string(sysfs.drivers_probe()).unwrap(),
            "0000:00:03.0"
        );
    }
}
