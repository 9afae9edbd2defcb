//! `cargo xtask deb`: the Debian package, built with Debian's own `dpkg-deb`
//! from a staged tree: the three binaries, their man pages, shell completions,
//! the systemd units (one server, and a template for several), the service
//! user (sysusers.d) and the options files as conffiles.
//!
//! The package's `Depends` is the C library version the binaries need, read
//! from their symbol versions, so it is right for the machine that built them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::image::gzip;

/// The package's name.
pub const PACKAGE: &str = "ivlink";
/// The binaries it installs into `/usr/bin`.
const BINARIES: &[&str] = &["ivlink", "ivshmem-server", "ivshmem-client"];
/// Options files, installed as conffiles: (source under `packaging/`, target).
const CONFFILES: &[(&str, &str)] = &[
    ("default/ivshmem-server", "etc/default/ivshmem-server"),
    ("ivlink/example.conf", "etc/ivlink/example.conf"),
];
/// Completion scripts: (shell, where that shell's vendor completions go).
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/ivlink"),
    ("zsh", "usr/share/zsh/vendor-completions/_ivlink"),
    ("fish", "usr/share/fish/vendor_completions.d/ivlink.fish"),
];

/// Builds the release binaries and the package into `out`; returns its path.
pub fn build(root: &Path, out: &Path) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "-p", "ivlink-cli"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build --release failed: {status}");
    let release = root.join("target").join("release");
    let stage = out.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let tree = Tree { root: &stage };

    for binary in BINARIES {
        tree.copy(&release.join(binary), &format!("usr/bin/{binary}"), 0o755)?;
    }
    let man = tempfile::tempdir()?;
    for page in crate::man::generate(root, man.path())? {
        let name = page.file_name().context("a man page without a name")?;
        let target = tree.path(&format!("usr/share/man/man1/{}.gz", name.to_string_lossy()))?;
        gzip(&fs::read(&page)?, &target)?;
    }
    for (shell, target) in COMPLETIONS {
        let script = Command::new(release.join("ivlink"))
            .args(["completions", shell])
            .output()
            .context("running ivlink completions")?;
        ensure!(script.status.success(), "ivlink completions {shell} failed");
        tree.write(target, &script.stdout, 0o644)?;
    }
    let packaging = root.join("packaging");
    for unit in fs::read_dir(packaging.join("systemd"))? {
        let unit = unit?.path();
        let name = unit.file_name().context("a unit without a name")?;
        tree.copy(
            &unit,
            &format!("lib/systemd/system/{}", name.to_string_lossy()),
            0o644,
        )?;
    }
    tree.copy(
        &packaging.join("sysusers.d/ivshmem-server.conf"),
        "usr/lib/sysusers.d/ivshmem-server.conf",
        0o644,
    )?;
    for (source, target) in CONFFILES {
        tree.copy(&packaging.join(source), target, 0o644)?;
    }
    tree.write(
        &format!("usr/share/doc/{PACKAGE}/copyright"),
        COPYRIGHT.as_bytes(),
        0o644,
    )?;

    let version = env!("CARGO_PKG_VERSION");
    let arch = command_text(Command::new("dpkg").arg("--print-architecture"))?;
    let glibc = needed_glibc(&release.join("ivlink"))?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: ivlink maintainers <ivlink@users.noreply.invalid>\n\
         Depends: libc6 (>= {glibc})\n\
         Recommends: systemd\n\
         Suggests: qemu-system-x86\n\
         Section: utils\n\
         Priority: optional\n\
         Installed-Size: {}\n\
         Description: ivshmem server, peers and tools for QEMU shared memory\n \
         A drop-in, production-grade ivshmem-server and ivshmem-client for QEMU's\n \
         ivshmem-doorbell device, and the ivlink command: peers of the region,\n \
         channels, mailboxes, streams, RPMsg, a virtio console and an NTB switch\n \
         in shared memory, their tests and benchmarks. systemd units run the\n \
         server as a hardened, socket-activated service.\n",
        tree.size_kib()?
    );
    tree.write("DEBIAN/control", control.as_bytes(), 0o644)?;
    let conffiles: String = CONFFILES.iter().map(|(_, t)| format!("/{t}\n")).collect();
    tree.write("DEBIAN/conffiles", conffiles.as_bytes(), 0o644)?;
    tree.write("DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    tree.write("DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    tree.write("DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .status()
        .context("running dpkg-deb")?;
    ensure!(status.success(), "dpkg-deb --build failed: {status}");
    Ok(deb)
}

/// The staged tree of the package.
struct Tree<'a> {
    root: &'a Path,
}

impl Tree<'_> {
    /// Where `target` goes, its directory created.
    fn path(&self, target: &str) -> Result<PathBuf> {
        let path = self.root.join(target);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(path)
    }

    fn copy(&self, source: &Path, target: &str, mode: u32) -> Result<()> {
        let data = fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        self.write(target, &data, mode)
    }

    fn write(&self, target: &str, data: &[u8], mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(target)?;
        fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// The installed size in KiB, as `Installed-Size` wants it.
    fn size_kib(&self) -> Result<u64> {
        fn walk(dir: &Path) -> Result<u64> {
            let mut total = 0;
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                total += if meta.is_dir() {
                    walk(&entry.path())?
                } else {
                    meta.len()
                };
            }
            Ok(total)
        }
        Ok(walk(self.root)?.div_ceil(1024))
    }
}

/// The newest `GLIBC_x.y` symbol version `binary` refers to.
fn needed_glibc(binary: &Path) -> Result<String> {
    let bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let marker = b"GLIBC_";
    let newest = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .filter_map(|(at, _)| {
            let rest = &bytes[at + marker.len()..];
            let end = rest
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b'.'))?;
            let text = std::str::from_utf8(&rest[..end]).ok()?;
            let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .context("the binary names no GLIBC version")?;
    Ok(format!("{}.{}", newest.0, newest.1))
}

fn command_text(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    ensure!(
        output.status.success(),
        "{:?} failed",
        command.get_program()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ivlink

Files: *
Copyright: ivlink maintainers
License: MIT or Apache-2.0
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
";

/// Creates the service user, and tells a running systemd about the units.
const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers ivshmem-server.conf || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
fi
";

/// Stops the server and its socket before their files go.
const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then
    systemctl --system stop ivshmem-server.socket ivshmem-server.service >/dev/null 2>&1 || true
fi
";

/// Forgets the removed units.
const POSTRM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_version_is_found_among_the_symbol_versions() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("bin");
        fs::write(
            &binary,
            b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.9\0GLIBC_PRIVATE\0",
        )
        .unwrap();
        assert_eq!(needed_glibc(&binary).unwrap(), "2.34");
        fs::write(&binary, b"static").unwrap();
        assert!(needed_glibc(&binary).is_err());
    }
}
