//! `cargo xtask vm-image`: the test guest image, from Debian's packages only.
//!
//! - kernel: `linux-image-<release>` (the one `linux-image-amd64` depends on),
//!   fetched with `apt-get download` into `<out>/.work` and unpacked with `dpkg -x`;
//! - the VFIO and FUSE modules of [`MODULES`], in load order (built-in ones are skipped);
//! - busybox from `busybox-static` (fetched the same way: nothing is installed);
//! - `ivlink`, linked statically (`target/x86_64-unknown-linux-gnu`);
//! - `/init` from `xtask/guest/init`.
//!
//! The archive is written here (newc cpio) and compressed with `gzip`.
//!
//! Outputs: `vmlinuz` (Debian's bzImage), `vmlinux` (the same kernel uncompressed:
//! QEMU boots its PVH entry directly, which saves the ~3 s the kernel takes to
//! decompress itself under TCG), `initramfs.gz` and `manifest.txt`.
//!
//! Cache: `manifest.txt` starts with the inputs (package versions, the hash of the
//! init script and of the static `ivlink`, the module list, the image format). When
//! they match the existing image, nothing is rebuilt (and nothing is downloaded);
//! the kernel files are rewritten only when the kernel package changes. `.work`
//! keeps the downloaded packages and the unpacked trees (pruned to what is used)
//! for the next rebuild.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ivlink_lab::vm::{INITRD_FILE, KERNEL_FILE, VMLINUX_FILE};

use crate::cpio::Archive;
use crate::phases::{Phases, say};
use ivlink_lab::progress::Progress;

/// Kernel modules, in load order: VFIO with an emulated IOMMU, and FUSE for
/// `ivlink ntb tool --mount`.
pub const MODULES: &[&str] = &[
    "irqbypass",
    "vfio",
    "vfio_iommu_type1",
    "vfio_virqfd",
    "vfio-pci-core",
    "vfio-pci",
    "fuse",
];

/// The guest's `/init`.
const INIT_SCRIPT: &str = include_str!("../guest/init");
/// Bump when the image's layout changes without any input changing.
const FORMAT: u32 = 2;
const MANIFEST_FILE: &str = "manifest.txt";
const KERNEL_META: &str = "linux-image-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The phases of a build shown at a terminal: the package look-ups, fetching and
/// unpacking both packages, the modules, the initramfs and the kernel files (the
/// static `ivlink` shows cargo's own progress).
const PHASES: usize = 8;

/// What `build` made or found.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel as Debian ships it (a bzImage).
    pub kernel: PathBuf,
    /// The same kernel uncompressed (an ELF QEMU boots through its PVH entry, about
    /// 3 s faster under TCG), when it could be extracted.
    pub vmlinux: Option<PathBuf>,
    /// The initramfs.
    pub initrd: PathBuf,
}

/// Builds the image into `out` unless it is up to date.
pub fn build(root: &Path, out: &Path) -> Result<Image> {
    let started = Instant::now();
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let work = out.join(".work");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let mut phases = Phases::new(PHASES);
    let mut apt = Apt::new(phases.progress());
    let inputs = Inputs::gather(root, &mut apt, &mut phases)?;
    let mut outputs = Outputs::existing(out);
    if outputs.current(&inputs.text) {
        outputs.report_reused();
        return Ok(outputs.image);
    }
    outputs.report_changes(out, &inputs.text);

    let kernel = fetch_kernel(&mut apt, &work, &inputs, &mut phases)?;
    let busybox = fetch_busybox(&mut apt, &work, &inputs.busybox_version, &mut phases)?;
    let phase = phases.start("writing the initramfs (cpio, gzip -9)");
    let contents = guest_archive(&inputs, &busybox, &kernel.modules, phases.progress());
    let mut cpio = Vec::new();
    contents.archive.write_to(&mut cpio)?;
    // Write the outputs next to their final names, then rename.
    let initrd_tmp = out.join(format!("{INITRD_FILE}.tmp"));
    gzip(&cpio, &initrd_tmp)?;
    phase.clear();
    let phase = phases.start("installing the kernel (extracting vmlinux)");
    outputs.install_kernel(out, &inputs, &kernel.vmlinuz, phases.progress())?;
    phase.clear();
    fs::rename(&initrd_tmp, &outputs.image.initrd)?;
    outputs.write_manifest(&inputs, &kernel.release, &busybox, &contents, cpio.len())?;
    for name in &contents.builtin {
        println!("module {name}: built into the kernel, skipped");
    }
    let image = &outputs.image;
    println!(
        "image rebuilt in {:.1} s: {} ({}), {}{} ({}, {} entries, {} uncompressed), {}",
        started.elapsed().as_secs_f64(),
        image.kernel.display(),
        size_of(&image.kernel),
        vmlinux_note(image),
        image.initrd.display(),
        size_of(&image.initrd),
        contents.archive.len(),
        human(cpio.len() as u64),
        outputs.manifest_path.display()
    );
    Ok(outputs.image)
}

/// What decides whether the image is rebuilt, and the static `ivlink` it holds.
struct Inputs {
    kernel_pkg: String,
    kernel_version: String,
    busybox_version: String,
    ivlink_bin: PathBuf,
    ivlink: Vec<u8>,
    /// The `[inputs]` section of the manifest.
    text: String,
}

impl Inputs {
    /// Looks up the package versions and builds the static `ivlink`.
    fn gather(root: &Path, apt: &mut Apt, phases: &mut Phases) -> Result<Self> {
        let phase = phases.start("looking up the packages (apt-cache)");
        let kernel_pkg = apt.kernel_package()?;
        let kernel_version = apt.version(&kernel_pkg)?;
        let busybox_version = apt.version(BUSYBOX_PACKAGE)?;
        phase.clear();
        println!("kernel package: {kernel_pkg} {kernel_version}");
        println!("busybox package: {BUSYBOX_PACKAGE} {busybox_version}");

        let ivlink_bin = build_static_ivlink(root)?;
        let ivlink =
            fs::read(&ivlink_bin).with_context(|| format!("reading {}", ivlink_bin.display()))?;
        ensure!(
            !has_interpreter(&ivlink),
            "{} is dynamically linked (has an ELF interpreter); the guest has no libc",
            ivlink_bin.display()
        );
        let text = format!(
            "format: {FORMAT}\n\
             kernel-package: {kernel_pkg} {kernel_version}\n\
             busybox-package: {BUSYBOX_PACKAGE} {busybox_version}\n\
             modules: {}\n\
             init-fnv1a64: {:016x}\n\
             ivlink-fnv1a64: {:016x}\n",
            MODULES.join(" "),
            fnv1a64(INIT_SCRIPT.as_bytes()),
            fnv1a64(&ivlink),
        );
        Ok(Inputs {
            kernel_pkg,
            kernel_version,
            busybox_version,
            ivlink_bin,
            ivlink,
            text,
        })
    }
}

/// The image files in `out` and the manifest they were built from.
struct Outputs {
    image: Image,
    vmlinux_path: PathBuf,
    manifest_path: PathBuf,
    old_manifest: String,
    /// The kernel files are complete: vmlinux is there or was never made.
    kernel_files_ok: bool,
}

impl Outputs {
    fn existing(out: &Path) -> Self {
        let mut image = Image {
            kernel: out.join(KERNEL_FILE),
            vmlinux: None,
            initrd: out.join(INITRD_FILE),
        };
        let vmlinux_path = out.join(VMLINUX_FILE);
        let manifest_path = out.join(MANIFEST_FILE);
        let old_manifest = fs::read_to_string(&manifest_path).unwrap_or_default();
        let kernel_files_ok = image.kernel.is_file()
            && (vmlinux_path.is_file() || old_manifest.contains(&format!("{VMLINUX_FILE}: none")));
        if vmlinux_path.is_file() {
            image.vmlinux = Some(vmlinux_path.clone());
        }
        Outputs {
            image,
            vmlinux_path,
            manifest_path,
            old_manifest,
            kernel_files_ok,
        }
    }

    /// Whether every file is there and was built from `inputs`.
    fn current(&self, inputs: &str) -> bool {
        self.kernel_files_ok
            && self.image.initrd.is_file()
            && manifest_inputs(&self.old_manifest) == inputs
    }

    fn report_reused(&self) {
        let image = &self.image;
        println!(
            "image up to date, reused: {} ({}), {}{} ({})",
            image.kernel.display(),
            size_of(&image.kernel),
            vmlinux_note(image),
            image.initrd.display(),
            size_of(&image.initrd)
        );
    }

    fn report_changes(&self, out: &Path, inputs: &str) {
        if self.old_manifest.is_empty() {
            println!("no image yet in {}: building", out.display());
        } else {
            for line in changed_lines(&manifest_inputs(&self.old_manifest), inputs) {
                println!("input changed: {line}");
            }
        }
    }

    /// Copies the kernel in (and extracts vmlinux) unless the kernel package and
    /// the image format are those of the existing files.
    fn install_kernel(
        &mut self,
        out: &Path,
        inputs: &Inputs,
        vmlinuz: &Path,
        progress: &Progress,
    ) -> Result<()> {
        let kernel_line = format!(
            "kernel-package: {} {}\n",
            inputs.kernel_pkg, inputs.kernel_version
        );
        let format_line = format!("format: {FORMAT}\n");
        let old_inputs = manifest_inputs(&self.old_manifest);
        if self.kernel_files_ok
            && old_inputs.contains(&kernel_line)
            && old_inputs.contains(&format_line)
        {
            say(
                progress,
                format_args!("kernel unchanged, reused {}", self.image.kernel.display()),
            );
            return Ok(());
        }
        let kernel_tmp = out.join(format!("{KERNEL_FILE}.tmp"));
        fs::copy(vmlinuz, &kernel_tmp).with_context(|| {
            format!("copying {} to {}", vmlinuz.display(), kernel_tmp.display())
        })?;
        fs::rename(&kernel_tmp, &self.image.kernel)?;
        let _ = fs::remove_file(&self.vmlinux_path);
        self.image.vmlinux = None;
        let vmlinux_tmp = out.join(format!("{VMLINUX_FILE}.tmp"));
        match extract_vmlinux(vmlinuz, &vmlinux_tmp)? {
            Ok(()) => {
                fs::rename(&vmlinux_tmp, &self.vmlinux_path)?;
                self.image.vmlinux = Some(self.vmlinux_path.clone());
                say(
                    progress,
                    format_args!(
                        "extracted {} ({}): the uncompressed kernel, booted through its PVH entry",
                        self.vmlinux_path.display(),
                        size_of(&self.vmlinux_path)
                    ),
                );
            }
            Err(why) => {
                let _ = fs::remove_file(&vmlinux_tmp);
                say(
                    progress,
                    format_args!("no {VMLINUX_FILE} (guests boot {KERNEL_FILE}): {why}"),
                );
            }
        }
        Ok(())
    }

    fn write_manifest(
        &self,
        inputs: &Inputs,
        release: &str,
        busybox: &Busybox,
        contents: &Contents,
        cpio_len: usize,
    ) -> Result<()> {
        let image = &self.image;
        let manifest = format!(
            "# ivlink test guest image, built by `cargo xtask vm-image`.\n\
             # The [inputs] decide whether the image is rebuilt.\n\
             [inputs]\n{}\
             [image]\n\
             kernel-release: {release}\n\
             modules-loaded: {}\n\
             modules-builtin: {}\n\
             busybox-applets: {}\n\
             archive-entries: {}\n\
             cpio-bytes: {cpio_len}\n\
             {KERNEL_FILE}-bytes: {}\n\
             {VMLINUX_FILE}: {}\n\
             {INITRD_FILE}-bytes: {}\n\
             ivlink-bytes: {}\n\
             ivlink-binary: {}\n",
            inputs.text,
            contents.loaded.join(" "),
            if contents.builtin.is_empty() {
                "(none)".to_owned()
            } else {
                contents.builtin.join(" ")
            },
            busybox.applets.len(),
            contents.archive.len(),
            fs::metadata(&image.kernel)?.len(),
            match &image.vmlinux {
                Some(path) => format!("{} bytes", fs::metadata(path)?.len()),
                None => "none".to_owned(),
            },
            fs::metadata(&image.initrd)?.len(),
            inputs.ivlink.len(),
            inputs.ivlink_bin.display(),
        );
        fs::write(&self.manifest_path, manifest)
            .with_context(|| format!("writing {}", self.manifest_path.display()))
    }
}

/// `vmlinux (size), ` when there is one, for the summary lines.
fn vmlinux_note(image: &Image) -> String {
    match &image.vmlinux {
        Some(path) => format!("{} ({}), ", path.display(), size_of(path)),
        None => String::new(),
    }
}

/// The kernel package, unpacked and pruned to the kernel and [`MODULES`].
struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    modules: Vec<Module>,
}

fn fetch_kernel(
    apt: &mut Apt,
    work: &Path,
    inputs: &Inputs,
    phases: &mut Phases,
) -> Result<Kernel> {
    let (package, version) = (&inputs.kernel_pkg, &inputs.kernel_version);
    let phase = phases.start(format_args!("fetching {package} {version}"));
    let deb = apt.fetch(work, package, version)?;
    phase.clear();
    let phase = phases.start(format_args!("unpacking {package}"));
    let tree = unpack(
        work,
        "kernel",
        version,
        &deb,
        &MODULES.join(" "),
        &apt.progress,
    )?;
    phase.clear();
    let phase = phases.start("collecting the modules");
    let (release, vmlinuz) = find_kernel(&tree)?;
    let modules_dir = tree.join("lib/modules").join(&release);
    let modules = collect_modules(&modules_dir)?;
    prune_kernel_tree(&tree, &modules_dir, &modules, &apt.progress)?;
    phase.clear();
    Ok(Kernel {
        release,
        vmlinuz,
        modules,
    })
}

/// The static busybox and the applets it has.
struct Busybox {
    binary: Vec<u8>,
    applets: Vec<String>,
}

fn fetch_busybox(
    apt: &mut Apt,
    work: &Path,
    version: &str,
    phases: &mut Phases,
) -> Result<Busybox> {
    let phase = phases.start(format_args!("fetching {BUSYBOX_PACKAGE} {version}"));
    let deb = apt.fetch(work, BUSYBOX_PACKAGE, version)?;
    phase.clear();
    let _phase = phases.start(format_args!("unpacking {BUSYBOX_PACKAGE}"));
    let tree = unpack(work, "busybox", version, &deb, "", &apt.progress)?;
    let path = tree.join("bin/busybox");
    let binary = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let applets = busybox_applets(&path)?;
    Ok(Busybox { binary, applets })
}

/// The initramfs before it is written, and which modules it loads.
struct Contents {
    archive: Archive,
    loaded: Vec<&'static str>,
    builtin: Vec<&'static str>,
}

fn guest_archive(
    inputs: &Inputs,
    busybox: &Busybox,
    modules: &[Module],
    progress: &Progress,
) -> Contents {
    let mut archive = Archive::new();
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "mnt",
        "var",
        "etc/ivlink",
        "lib/modules",
    ] {
        archive.dir(dir);
    }
    archive.char_dev("dev/console", 0o600, 5, 1);
    archive.char_dev("dev/null", 0o666, 1, 3);
    archive.file("init", 0o755, INIT_SCRIPT.as_bytes().to_vec());
    archive.file("bin/busybox", 0o755, busybox.binary.clone());
    for applet in &busybox.applets {
        if !archive.contains(applet) {
            archive.symlink(applet, "/bin/busybox");
        }
    }
    archive.file("bin/ivlink", 0o755, inputs.ivlink.clone());
    let mut loaded = Vec::new();
    let mut builtin = Vec::new();
    for module in modules {
        match &module.found {
            Found::Builtin => builtin.push(module.name),
            Found::File(path) => {
                archive.file(
                    &format!("lib/modules/{}.ko", module.name),
                    0o644,
                    module.bytes.clone(),
                );
                loaded.push(module.name);
                say(
                    progress,
                    format_args!("module {}: {}", module.name, path.display()),
                );
            }
        }
    }
    archive.file(
        "etc/ivlink/modules",
        0o644,
        loaded
            .iter()
            .map(|m| format!("{m}\n"))
            .collect::<String>()
            .into_bytes(),
    );
    archive.file("etc/ivlink/image", 0o644, inputs.text.clone().into_bytes());
    archive.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
    );
    archive.file("etc/group", 0o644, b"root:x:0:\n".to_vec());
    Contents {
        archive,
        loaded,
        builtin,
    }
}

/// Debian package look-ups and downloads.
#[derive(Debug)]
struct Apt {
    updated: bool,
    /// Where the build's phases are drawn: its lines go above them.
    progress: Progress,
}

impl Apt {
    fn new(progress: &Progress) -> Apt {
        Apt {
            updated: false,
            progress: progress.clone(),
        }
    }

    /// The versioned kernel package `linux-image-amd64` depends on.
    fn kernel_package(&mut self) -> Result<String> {
        loop {
            let text = command_output(Command::new("apt-cache").args(["depends", KERNEL_META]))
                .unwrap_or_default();
            let found = text.lines().find_map(|line| {
                let name = line.trim().strip_prefix("Depends:")?.trim();
                (name.starts_with("linux-image-")
                    && name.ends_with("-amd64")
                    && name != KERNEL_META)
                    .then(|| name.to_owned())
            });
            if let Some(name) = found {
                return Ok(name);
            }
            self.update(&format!("apt-cache knows no kernel behind {KERNEL_META}"))?;
        }
    }

    /// The candidate version of `package`.
    fn version(&mut self, package: &str) -> Result<String> {
        loop {
            let text = command_output(Command::new("apt-cache").args([
                "show",
                "--no-all-versions",
                package,
            ]))
            .unwrap_or_default();
            let found = text
                .lines()
                .find_map(|line| line.strip_prefix("Version:").map(|v| v.trim().to_owned()));
            if let Some(version) = found {
                return Ok(version);
            }
            self.update(&format!("apt-cache knows no package {package}"))?;
        }
    }

    /// Runs `apt-get update` once; a second need is an error.
    fn update(&mut self, why: &str) -> Result<()> {
        ensure!(!self.updated, "{why}, even after apt-get update");
        say(
            &self.progress,
            format_args!("{why}: running apt-get update"),
        );
        self.updated = true;
        run_captured(Command::new("apt-get").args(["update", "-qq"]))
            .context("apt-get update (it needs root)")
    }

    /// `package`'s .deb of `version` in `work/debs`, downloaded unless there.
    /// Other versions of the package are removed.
    fn fetch(&mut self, work: &Path, package: &str, version: &str) -> Result<PathBuf> {
        let dir = work.join("debs");
        fs::create_dir_all(&dir)?;
        let prefix = format!("{package}_");
        let wanted = format!("{package}_{}_", version.replace(':', "%3a"));
        let find = || -> Result<Option<PathBuf>> {
            let mut found = None;
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if !name.ends_with(".deb") || !name.starts_with(&prefix) {
                    continue;
                }
                if name.starts_with(&wanted) {
                    found = Some(path);
                } else if name[prefix.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
                {
                    // Another version of this package: no longer needed.
                    fs::remove_file(&path)?;
                }
            }
            Ok(found)
        };
        if let Some(deb) = find()? {
            say(&self.progress, format_args!("reused {}", deb.display()));
            return Ok(deb);
        }
        let mut command = Command::new("apt-get");
        command.current_dir(&dir).args(["download", "-q"]);
        if running_as_root() {
            // The download directory is not _apt's: say so instead of a warning.
            command.args(["-o", "APT::Sandbox::User=root"]);
        }
        command.arg(format!("{package}={version}"));
        let started = Instant::now();
        run_captured(&mut command)
            .with_context(|| format!("apt-get download {package}={version}"))?;
        let deb = find()?.with_context(|| {
            format!(
                "apt-get download {package} left no {wanted}*.deb in {}",
                dir.display()
            )
        })?;
        say(
            &self.progress,
            format_args!(
                "downloaded {} ({}) in {:.1} s",
                deb.display(),
                size_of(&deb),
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(deb)
    }
}

/// `deb` unpacked (`dpkg -x`) into `work/<what>-<version>`, reused when there with
/// the same `stamp_text`.
fn unpack(
    work: &Path,
    what: &str,
    version: &str,
    deb: &Path,
    stamp_text: &str,
    progress: &Progress,
) -> Result<PathBuf> {
    let dir = work.join(format!("{what}-{}", version.replace(':', "_")));
    let stamp = dir.join(".unpacked");
    if fs::read_to_string(&stamp).is_ok_and(|text| text == stamp_text) {
        say(progress, format_args!("reused {}", dir.display()));
        return Ok(dir);
    }
    let started = Instant::now();
    // Older unpacked versions go.
    for entry in fs::read_dir(work)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() && name.starts_with(&format!("{what}-")) {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    run_captured(Command::new("dpkg").arg("-x").arg(deb).arg(&dir))
        .with_context(|| format!("dpkg -x {}", deb.display()))?;
    fs::write(&stamp, stamp_text)?;
    say(
        progress,
        format_args!(
            "unpacked {} into {} in {:.1} s",
            deb.display(),
            dir.display(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(dir)
}

/// The kernel release (the one directory under `lib/modules`) and `boot/vmlinuz-*`.
fn find_kernel(tree: &Path) -> Result<(String, PathBuf)> {
    let mut releases = Vec::new();
    for entry in
        fs::read_dir(tree.join("lib/modules")).context("the kernel package has no lib/modules")?
    {
        releases.push(entry?.file_name().to_string_lossy().into_owned());
    }
    ensure!(
        releases.len() == 1,
        "expected one kernel release under lib/modules, found {releases:?}"
    );
    let release = releases.remove(0);
    let vmlinuz = tree.join("boot").join(format!("vmlinuz-{release}"));
    ensure!(vmlinuz.is_file(), "{} is missing", vmlinuz.display());
    Ok((release, vmlinuz))
}

/// Where a module is.
#[derive(Debug)]
enum Found {
    /// A module file (possibly compressed).
    File(PathBuf),
    /// Built into the kernel (listed in `modules.builtin`).
    Builtin,
}

/// One module of [`MODULES`].
#[derive(Debug)]
struct Module {
    name: &'static str,
    found: Found,
    /// The uncompressed `.ko` (empty when built in).
    bytes: Vec<u8>,
}

/// Finds, decompresses and checks the order of [`MODULES`] under `modules_dir`
/// (`lib/modules/<release>`).
fn collect_modules(modules_dir: &Path) -> Result<Vec<Module>> {
    let mut files = BTreeMap::new();
    walk(&modules_dir.join("kernel"), &mut |path| {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(stem) = module_stem(&name) {
            files.insert(normalize(stem), path.to_path_buf());
        }
    })?;
    let builtin: BTreeSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let file = line.rsplit('/').next()?;
            module_stem(file).map(normalize)
        })
        .collect();

    let mut modules = Vec::new();
    let mut available: BTreeSet<String> = builtin.clone();
    for &name in MODULES {
        let key = normalize(name);
        let module = if let Some(path) = files.get(&key) {
            let bytes = decompress(path)?;
            for dependency in module_depends(&bytes) {
                ensure!(
                    available.contains(&normalize(&dependency)),
                    "module {name} depends on {dependency}, which is neither built in nor \
                     loaded before it (fix the order in MODULES)"
                );
            }
            Module {
                name,
                found: Found::File(path.clone()),
                bytes,
            }
        } else if builtin.contains(&key) {
            Module {
                name,
                found: Found::Builtin,
                bytes: Vec::new(),
            }
        } else {
            bail!(
                "module {name} is neither under {} nor in modules.builtin",
                modules_dir.join("kernel").display()
            );
        };
        available.insert(key);
        modules.push(module);
    }
    Ok(modules)
}

/// Removes what the image does not use from the unpacked kernel package (about
/// 400 MiB of other modules), so the scratch directory stays small. A later change
/// of [`MODULES`] unpacks the package again (its stamp names the modules).
fn prune_kernel_tree(
    tree: &Path,
    modules_dir: &Path,
    modules: &[Module],
    progress: &Progress,
) -> Result<()> {
    let keep: BTreeSet<&Path> = modules
        .iter()
        .filter_map(|m| match &m.found {
            Found::File(path) => Some(path.as_path()),
            Found::Builtin => None,
        })
        .collect();
    let mut removed = 0u64;
    let mut doomed = Vec::new();
    walk(&modules_dir.join("kernel"), &mut |path| {
        if !keep.contains(path) {
            doomed.push(path.to_path_buf());
        }
    })?;
    for path in doomed {
        removed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let docs = tree.join("usr");
    if docs.is_dir() {
        fs::remove_dir_all(&docs).with_context(|| format!("removing {}", docs.display()))?;
    }
    if removed > 0 {
        say(
            progress,
            format_args!(
                "pruned {} of unused modules from {}",
                human(removed),
                tree.display()
            ),
        );
    }
    Ok(())
}

/// `name` without `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`, if it is a module file.
fn module_stem(name: &str) -> Option<&str> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
}

/// Module names treat `-` and `_` alike.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module file's contents, uncompressed.
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let output = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {tool} to decompress {}", path.display()))?;
    ensure!(
        output.status.success(),
        "{tool} -dc {} failed",
        path.display()
    );
    Ok(output.stdout)
}

/// The `depends=` field of a module's `.modinfo`.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let value = &ko[at + key.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect()
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, visit)?;
        } else {
            visit(&path);
        }
    }
    Ok(())
}

/// Busybox's applets as paths relative to `/` (`busybox --list-full`).
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let text = command_output(Command::new(busybox).arg("--list-full"))
        .with_context(|| format!("{} --list-full", busybox.display()))?;
    let applets: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .filter(|l| !l.is_empty() && l != "bin/busybox")
        .collect();
    ensure!(
        ["bin/sh", "sbin/insmod", "bin/mount"]
            .iter()
            .all(|a| applets.iter().any(|x| x == a)),
        "busybox lacks sh, insmod or mount"
    );
    Ok(applets)
}

/// Builds `ivlink` linked statically for the guest; returns the binary.
fn build_static_ivlink(root: &Path) -> Result<PathBuf> {
    // The workspace's own target dir: with `--target` the static build's crates
    // go under the triple's directory, and the build scripts and proc macros
    // (which RUSTFLAGS do not reach) are the release build's, reused.
    let target_dir = root.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!(
        "building the static ivlink (cargo, incremental, {})",
        target_dir.display()
    );
    let started = Instant::now();
    run(Command::new(cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .args(["build", "--release", "--target", GUEST_TARGET])
        .args(["-p", "ivlink-cli", "--bin", "ivlink", "--target-dir"])
        .arg(&target_dir))
    .context("building the static ivlink")?;
    let bin = target_dir.join(GUEST_TARGET).join("release").join("ivlink");
    ensure!(bin.is_file(), "cargo left no {}", bin.display());
    println!(
        "static ivlink ready in {:.1} s: {} ({})",
        started.elapsed().as_secs_f64(),
        bin.display(),
        size_of(&bin)
    );
    Ok(bin)
}

/// Whether an ELF64 little-endian file has a `PT_INTERP` program header (is
/// dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    // Not an ELF64 file we can read: treat as unusable.
    program_headers(elf).is_none_or(|headers| headers.iter().any(|h| h.0 == PT_INTERP))
}

/// Writes the ELF kernel inside the bzImage `vmlinuz` to `out` when it is
/// xz-compressed and has a PVH entry note (QEMU then boots it directly, without the
/// slow decompression under TCG). `Ok(Err(why))` when it cannot be used.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<Result<(), String>> {
    let bz = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let Some(at) = bz.windows(6).position(|w| w == b"\xfd7zXZ\0") else {
        return Ok(Err("the kernel is not xz-compressed".to_owned()));
    };
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("running xz")?;
    let mut stdin = child.stdin.take().context("xz's stdin")?;
    let written = stdin.write_all(&bz[at..]);
    drop(stdin);
    let status = child.wait()?;
    // xz stops reading after the stream, so the rest of the bzImage may meet a
    // closed pipe: only xz's verdict counts.
    if !status.success() {
        return Ok(Err(format!(
            "xz could not decompress the payload ({status})"
        )));
    }
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing to xz");
    }
    let elf = fs::read(out)?;
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return Ok(Err("the payload is not an ELF64 file".to_owned()));
    }
    if !has_pvh_note(&elf) {
        return Ok(Err("the kernel has no PVH entry (CONFIG_PVH)".to_owned()));
    }
    Ok(Ok(()))
}

/// Whether an ELF64 file has the Xen `PHYS32_ENTRY` note QEMU boots through (PVH).
fn has_pvh_note(elf: &[u8]) -> bool {
    const PT_NOTE: u32 = 4;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let Some(headers) = program_headers(elf) else {
        return false;
    };
    headers
        .iter()
        .filter(|h| h.0 == PT_NOTE)
        .any(|&(_, offset, size)| {
            let Some(mut notes) = elf.get(offset..offset.saturating_add(size)) else {
                return false;
            };
            // Each note: namesz, descsz, type, then name and desc padded to 4 bytes.
            while notes.len() >= 12 {
                let word = |i: usize| u32::from_le_bytes(notes[i..i + 4].try_into().unwrap());
                let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
                let name_end = 12 + namesz.div_ceil(4) * 4;
                if notes.get(12..12 + namesz) == Some(b"Xen\0") && kind == XEN_ELFNOTE_PHYS32_ENTRY
                {
                    return true;
                }
                let next = name_end + descsz.div_ceil(4) * 4;
                if next > notes.len() || next == 0 {
                    break;
                }
                notes = &notes[next..];
            }
            false
        })
}

/// The (type, file offset, file size) of each program header of an ELF64
/// little-endian file.
fn program_headers(elf: &[u8]) -> Option<Vec<(u32, usize, usize)>> {
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return None;
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    (0..phnum)
        .map(|i| {
            let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
            Some((
                u32_at(at)?,
                usize::try_from(u64_at(at + 8)?).ok()?,
                usize::try_from(u64_at(at + 32)?).ok()?,
            ))
        })
        .collect()
}

/// Compresses `data` into `path` with `gzip -9 -n`.
pub(crate) fn gzip(data: &[u8], path: &Path) -> Result<()> {
    let out = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let written = stdin.write_all(data);
    drop(stdin);
    let status = child.wait()?;
    written.context("writing to gzip")?;
    ensure!(status.success(), "gzip failed: {status}");
    Ok(())
}

/// The `[inputs]` section of a manifest.
fn manifest_inputs(manifest: &str) -> String {
    manifest
        .lines()
        .skip_while(|l| *l != "[inputs]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Lines of `new` that `old` lacks.
fn changed_lines<'a>(old: &str, new: &'a str) -> Vec<&'a str> {
    let old: BTreeSet<&str> = old.lines().collect();
    new.lines().filter(|l| !old.contains(l)).collect()
}

/// 64-bit FNV-1a: a content fingerprint for the cache (not a security hash).
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a command with inherited output; an error unless it succeeds.
fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    ensure!(
        status.success(),
        "{:?} failed: {status}",
        command.get_program()
    );
    Ok(())
}

/// Runs a command with its output kept (it would cut through the spinners): an
/// error with that output unless it succeeds.
fn run_captured(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    ensure!(
        output.status.success(),
        "{:?} failed: {}\n{}{}",
        command.get_program(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A command's stdout; an error unless it succeeds.
fn command_output(command: &mut Command) -> Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    ensure!(
        output.status.success(),
        "{:?} failed: {}",
        command.get_program(),
        output.status
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn size_of(path: &Path) -> String {
    fs::metadata(path)
        .map(|m| human(m.len()))
        .unwrap_or_else(|_| "?".to_owned())
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_inputs_are_the_inputs_section() {
        let manifest = "# x\n[inputs]\na: 1\nb: 2\n[image]\nc: 3\n";
        assert_eq!(manifest_inputs(manifest), "a: 1\nb: 2\n");
        assert_eq!(manifest_inputs(""), "");
        assert_eq!(changed_lines("a: 1\nb: 2\n", "a: 1\nb: 3\n"), vec!["b: 3"]);
    }

    #[test]
    fn module_names_and_depends() {
        assert_eq!(module_stem("vfio-pci.ko.xz"), Some("vfio-pci"));
        assert_eq!(module_stem("vfio.ko"), Some("vfio"));
        assert_eq!(module_stem("README"), None);
        assert_eq!(normalize("vfio-pci-core"), "vfio_pci_core");
        let ko = b"\x7fELF...\0license=GPL\0depends=vfio,irqbypass\0name=x\0";
        assert_eq!(module_depends(ko), vec!["vfio", "irqbypass"]);
        assert!(module_depends(b"depends=\0").is_empty());
    }

    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn this_test_binary_is_recognized_as_dynamic_or_static() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        // Host test binaries are dynamically linked.
        assert!(has_interpreter(&me));
        assert!(has_interpreter(b"not an elf"));
    }
}
