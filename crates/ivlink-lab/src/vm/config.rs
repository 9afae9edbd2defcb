//! [`GuestConfig`]: how to boot one guest, and the QEMU arguments and kernel
//! command line it makes.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{BASE_APPEND, DEFAULT_QEMU, INITRD_FILE, VmError, find_qemu, image_kernel};

/// The longest UNIX socket path (`sun_path` is 108 bytes, NUL included).
const MAX_SOCKET_PATH: usize = 107;

/// How to boot one guest. [`GuestConfig::new`] fills in the usual values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// The guest's name: QEMU's `-name`, the guest's host name and shell prompt
    /// (passed as `ivlink.name=` on the kernel command line), and error messages.
    pub name: String,
    /// The kernel: `vmlinux` (uncompressed, PVH entry) or `vmlinuz` of the image.
    pub kernel: PathBuf,
    /// The initramfs (`initramfs.gz` of the image).
    pub initrd: PathBuf,
    /// The ivshmem server's UNIX socket (used when [`doorbell`](Self::doorbell) is
    /// true). It must be listening before [`Guest::boot`](super::Guest::boot).
    pub server_socket: PathBuf,
    /// The `vectors` property of the `ivshmem-doorbell` device (MSI-X vectors).
    pub vectors: u16,
    /// Guest memory in MiB (256 by default).
    pub memory_mib: u32,
    /// QEMU's `-accel` value (`tcg` by default; KVM guests hang on these machines).
    pub accel: String,
    /// The serial console's UNIX socket, created by QEMU (stale files are removed).
    pub console_socket: PathBuf,
    /// Everything the guest prints on its console (truncated at boot). QEMU's own
    /// stdout and stderr go next to it, at this path with `.qemu` appended.
    pub log_path: PathBuf,
    /// The QEMU binary (`qemu-system-x86_64` by default, looked up on `PATH`).
    pub qemu: PathBuf,
    /// More kernel command line, after [`BASE_APPEND`] and `ivlink.name=`.
    pub extra_append: String,
    /// `true`: an `ivshmem-doorbell` device on [`server_socket`](Self::server_socket).
    /// `false`: an `ivshmem-plain` device (no interrupts) on the file in
    /// [`memory_file`](Self::memory_file).
    pub doorbell: bool,
    /// The shared file behind `ivshmem-plain` (a `memory-backend-file` with
    /// `share=on`, sized by the file's length, a power of two). Used only when
    /// [`doorbell`](Self::doorbell) is false.
    pub memory_file: Option<PathBuf>,
    /// More QEMU arguments, appended last (e.g. `["-smp", "2"]`).
    pub extra_qemu_args: Vec<String>,
}

impl GuestConfig {
    /// A doorbell guest named `name` booting `kernel` and `initrd` on the server
    /// at `server_socket` with `vectors` MSI-X vectors: 256 MiB, TCG, QEMU from
    /// [`find_qemu`], no extra arguments. Its console socket and log go next to the
    /// server socket (`<name>.console`, `<name>.log` in the same directory).
    pub fn new(
        name: impl Into<String>,
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        server_socket: impl Into<PathBuf>,
        vectors: u16,
    ) -> GuestConfig {
        let name = name.into();
        let server_socket = server_socket.into();
        let run_dir = server_socket.parent().unwrap_or(Path::new("."));
        GuestConfig {
            kernel: kernel.into(),
            initrd: initrd.into(),
            vectors,
            memory_mib: 256,
            accel: "tcg".to_owned(),
            console_socket: run_dir.join(format!("{name}.console")),
            log_path: run_dir.join(format!("{name}.log")),
            server_socket,
            qemu: find_qemu().unwrap_or_else(|| PathBuf::from(DEFAULT_QEMU)),
            extra_append: String::new(),
            doorbell: true,
            memory_file: None,
            extra_qemu_args: Vec::new(),
            name,
        }
    }

    /// Like [`new`](Self::new), for the image in `image_dir` (see
    /// [`default_image_dir`](super::default_image_dir); the kernel is [`image_kernel`]), with 1 vector and the
    /// console socket and log in `run_dir`.
    pub fn from_image(
        name: impl Into<String>,
        image_dir: &Path,
        server_socket: impl Into<PathBuf>,
        run_dir: &Path,
    ) -> GuestConfig {
        let name = name.into();
        GuestConfig {
            console_socket: run_dir.join(format!("{name}.console")),
            log_path: run_dir.join(format!("{name}.log")),
            ..GuestConfig::new(
                name,
                image_kernel(image_dir),
                image_dir.join(INITRD_FILE),
                server_socket,
                1,
            )
        }
    }

    /// The kernel command line the guest gets.
    pub fn append(&self) -> String {
        let mut append = format!("{BASE_APPEND} ivlink.name={}", cmdline_word(&self.name));
        if !self.extra_append.trim().is_empty() {
            append.push(' ');
            append.push_str(self.extra_append.trim());
        }
        append
    }

    /// Where QEMU's own stdout and stderr go.
    pub fn qemu_output_path(&self) -> PathBuf {
        let mut path = self.log_path.clone().into_os_string();
        path.push(".qemu");
        PathBuf::from(path)
    }

    /// QEMU's arguments for this configuration (after checking the files it needs).
    pub fn qemu_args(&self) -> Result<Vec<String>, VmError> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
        push(&["-name", &self.name, "-accel", &self.accel, "-M", "q35"]);
        push(&["-m", &self.memory_mib.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-no-reboot"]);
        // The IOMMU must come before the ivshmem device (VFIO needs it).
        push(&["-device", "intel-iommu"]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=con,path={},server=on,wait=off,logfile={}",
                qemu_path(&self.console_socket),
                qemu_path(&self.log_path)
            ),
            "-serial",
            "chardev:con",
        ]);
        push(&["-kernel", &self.kernel.to_string_lossy()]);
        push(&["-initrd", &self.initrd.to_string_lossy()]);
        push(&["-append", &self.append()]);
        if self.doorbell {
            push(&[
                "-chardev",
                &format!("socket,path={},id=ivs", qemu_path(&self.server_socket)),
                "-device",
                &format!("ivshmem-doorbell,chardev=ivs,vectors={}", self.vectors),
            ]);
        } else {
            let file = self.memory_file.as_ref().ok_or_else(|| {
                VmError::Config(format!(
                    "guest {}: an ivshmem-plain guest (doorbell = false) needs memory_file",
                    self.name
                ))
            })?;
            let size = file
                .metadata()
                .map_err(|source| VmError::Io {
                    what: format!("guest {}: shared memory file {}", self.name, file.display()),
                    source,
                })?
                .len();
            push(&[
                "-object",
                &format!(
                    "memory-backend-file,id=ivmem,size={size},share=on,mem-path={}",
                    qemu_path(file)
                ),
                "-device",
                "ivshmem-plain,memdev=ivmem",
            ]);
        }
        args.extend(self.extra_qemu_args.iter().cloned());
        Ok(args)
    }

    pub(super) fn check(&self) -> Result<(), VmError> {
        let name = &self.name;
        for (what, path) in [("kernel", &self.kernel), ("initramfs", &self.initrd)] {
            if !path.is_file() {
                return Err(VmError::Config(format!(
                    "guest {name}: {what} {} not found (build the image with `cargo xtask vm-image`)",
                    path.display()
                )));
            }
        }
        let mut sockets = vec![("console socket", &self.console_socket)];
        if self.doorbell {
            sockets.push(("server socket", &self.server_socket));
            // QEMU exits at start if nobody listens there. Only look: connecting
            // would make this check a peer of the server.
            match self.server_socket.metadata() {
                Ok(meta) if meta.file_type().is_socket() => {}
                Ok(_) => {
                    return Err(VmError::Config(format!(
                        "guest {name}: server socket {} is not a socket",
                        self.server_socket.display()
                    )));
                }
                Err(_) => {
                    return Err(VmError::Config(format!(
                        "guest {name}: server socket {} does not exist (start the server first)",
                        self.server_socket.display()
                    )));
                }
            }
        }
        for (what, path) in sockets {
            if path.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(VmError::Config(format!(
                    "guest {name}: {what} path {} is longer than {MAX_SOCKET_PATH} bytes",
                    path.display()
                )));
            }
        }
        if self.vectors == 0 && self.doorbell {
            return Err(VmError::Config(format!(
                "guest {name}: an ivshmem-doorbell device needs at least 1 vector"
            )));
        }
        Ok(())
    }
}

/// `path` for a QEMU option value (commas doubled).
fn qemu_path(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// `word` made safe for the kernel command line.
fn cmdline_word(word: &str) -> String {
    let word: String = word
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if word.is_empty() {
        "guest".to_owned()
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_built_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mem"), vec![0u8; 4096]).unwrap();
        let mut config =
            GuestConfig::from_image("g 1", dir.path(), dir.path().join("s,ock"), dir.path());
        config.extra_append = "loglevel=7".to_owned();
        assert_eq!(
            config.append(),
            "console=ttyS0 intel_iommu=on panic=-1 quiet ivlink.name=g-1 loglevel=7"
        );
        let args = config.qemu_args().unwrap();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg -M q35 -m 256"));
        assert!(joined.contains("s,,ock,id=ivs"));
        let iommu = args.iter().position(|a| a == "intel-iommu").unwrap();
        let ivshmem = args
            .iter()
            .position(|a| a.starts_with("ivshmem-doorbell"))
            .unwrap();
        assert!(iommu < ivshmem);
        assert_eq!(args[ivshmem], "ivshmem-doorbell,chardev=ivs,vectors=1");

        config.doorbell = false;
        assert!(matches!(config.qemu_args(), Err(VmError::Config(_))));
        config.memory_file = Some(dir.path().join("mem"));
        let joined = config.qemu_args().unwrap().join(" ");
        assert!(joined.contains("memory-backend-file,id=ivmem,size=4096,share=on"));
        assert!(joined.contains("ivshmem-plain,memdev=ivmem"));
    }
}
