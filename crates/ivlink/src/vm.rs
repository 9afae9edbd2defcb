//! Small Linux test guests under QEMU, each an ivshmem peer, driven through their
//! serial console.
//!
//! A [`Guest`] is one QEMU process booting the image that `cargo xtask vm-image`
//! builds (a Debian kernel, the VFIO modules, busybox and a static `ivlink`; see
//! [`default_image_dir`]). The guest's `/init` prints [`READY_MARKER`] once the
//! modules are loaded, then keeps an interactive shell on the serial console.
//!
//! The serial console is a QEMU socket chardev: a UNIX socket server at
//! [`GuestConfig::console_socket`] that takes one client at a time, with everything the
//! guest prints also written to [`GuestConfig::log_path`], whether or not a client is
//! attached. The harness is that client: it types commands and reads their output
//! over the socket (the exact byte stream). [`Guest::detach_console`] frees the
//! socket for a person (`socat -,raw,echo=0 UNIX-CONNECT:<socket>`); what the guest
//! prints meanwhile is only in the log.
//!
//! The log is for people and error messages, not for parsing: QEMU 7.2 writes a
//! byte to it twice when the socket is momentarily full (it logs the failed
//! attempt and the retry), which happens under load.
//!
//! Every wait is bounded. A timeout, or QEMU exiting when it should not, is a
//! [`VmError`] whose message ends with the last lines of the serial log (and QEMU's
//! own output when it exited). Dropping a [`Guest`] kills its QEMU by pid and reaps it.
//!
//! Guests use software emulation (`-accel tcg`) unless told otherwise: on this
//! project's machines a KVM guest hangs in early boot.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use thiserror::Error;

/// The line the guest's `/init` prints when the modules are loaded and the console
/// shell is about to start.
pub const READY_MARKER: &str = "ivlink-guest: ready";
/// The QEMU binary looked for on `PATH`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";
/// The environment variable that names a QEMU binary to use instead of the one on
/// `PATH` (see [`find_qemu`]).
pub const QEMU_ENV: &str = "IVLINK_QEMU";
/// The kernel's file name in an image directory (the compressed bzImage Debian
/// ships).
pub const KERNEL_FILE: &str = "vmlinuz";
/// The uncompressed kernel's file name in an image directory: an ELF that QEMU
/// boots through its PVH entry, which skips the kernel's own decompression (about
/// 3 s under TCG). [`image_kernel`] prefers it.
pub const VMLINUX_FILE: &str = "vmlinux";
/// The initramfs's file name in an image directory.
pub const INITRD_FILE: &str = "initramfs.gz";
/// Lines of the serial log that errors quote.
pub const ERROR_LOG_LINES: usize = 30;
/// The kernel command line every guest gets (before `ivlink.name=` and
/// [`GuestConfig::extra_append`]).
pub const BASE_APPEND: &str = "console=ttyS0 intel_iommu=on panic=-1 quiet";

/// How long QEMU may take to create the console socket.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Guest::start`] waits for the shell to take the command.
const START_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest command [`Guest::run`] types as it is; longer ones are staged in a
/// file (busybox's line editor stops at 1024 characters, markers included).
const MAX_TYPED_COMMAND: usize = 800;
/// Base64 characters per staging line.
const BASE64_PIECE: usize = 760;
/// What the guest's `/init` prints when the console shell has exited.
const SHELL_EXIT_MARKER: &str = "ivlink-guest: shell exited";
/// How often waits look at the QEMU process (new output wakes them at once).
const POLL: Duration = Duration::from_millis(20);
/// The longest UNIX socket path (`sun_path` is 108 bytes, NUL included).
const MAX_SOCKET_PATH: usize = 107;

/// Why a guest could not be booted or driven.
#[derive(Debug, Error)]
pub enum VmError {
    /// The configuration cannot work (missing image, missing server socket, ...).
    #[error("{0}")]
    Config(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// QEMU exited when it should not have.
    #[error(
        "guest {name}: QEMU exited ({status}) {context}\n\
         --- QEMU output ---\n{qemu_output}\n--- serial log (last lines) ---\n{log_tail}"
    )]
    Exited {
        /// The guest's name.
        name: String,
        /// How QEMU exited.
        status: String,
        /// What the harness was doing.
        context: String,
        /// The end of QEMU's stdout/stderr.
        qemu_output: String,
        /// The end of the serial log.
        log_tail: String,
    },
    /// A wait ran out of time.
    #[error(
        "guest {name}: timed out after {after:?} waiting for {what}\n\
         --- serial log (last lines) ---\n{log_tail}"
    )]
    Timeout {
        /// The guest's name.
        name: String,
        /// What was awaited.
        what: String,
        /// The time allowed.
        after: Duration,
        /// The end of the serial log.
        log_tail: String,
    },
    /// The console connection failed.
    #[error("guest {name}: console {path}: {source}")]
    Console {
        /// The guest's name.
        name: String,
        /// The console socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The console shell exited (the command ran `exit`) before the command's end
    /// marker; `/init` has started a new shell.
    #[error("guest {name}: the console shell exited during `{command}`")]
    ShellExited {
        /// The guest's name.
        name: String,
        /// The command (abbreviated).
        command: String,
    },
    /// A command's end marker had no readable exit status.
    #[error("guest {name}: bad exit status line '{line}'")]
    BadStatus {
        /// The guest's name.
        name: String,
        /// The marker line as printed.
        line: String,
    },
}

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
    /// true). It must be listening before [`Guest::boot`].
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
    /// [`default_image_dir`]; the kernel is [`image_kernel`]), with 1 vector and the
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

    fn check(&self) -> Result<(), VmError> {
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

/// What a command typed by [`Guest::run`] printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Its output (stdout and stderr as the console shows them), lines joined
    /// with `\n`, carriage returns removed, no trailing newline.
    pub output: String,
    /// Its exit status (`$?`).
    pub status: i32,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// What the harness has read from the console: the bytes, and a signal when more
/// arrive.
#[derive(Debug, Default)]
struct Transcript {
    bytes: Mutex<Vec<u8>>,
    grew: Condvar,
}

impl Transcript {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The harness's connection to the console socket, with a thread that appends what
/// the guest prints to the transcript (promptly, so QEMU never waits for it).
#[derive(Debug)]
struct Console {
    stream: UnixStream,
    reader: Option<JoinHandle<()>>,
}

impl Console {
    fn connect(path: &Path, transcript: Arc<Transcript>) -> io::Result<Console> {
        let stream = UnixStream::connect(path)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = stream.try_clone()?;
        let reader = thread::Builder::new()
            .name("ivlink-vm-console".to_owned())
            .spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    transcript.lock().extend_from_slice(&buf[..n]);
                    transcript.grew.notify_all();
                }
            })?;
        Ok(Console {
            stream,
            reader: Some(reader),
        })
    }

    /// Hangs up (what is unread is dropped).
    fn close(mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.join();
    }

    /// Waits for the reader to reach the end of the stream (QEMU has exited).
    fn join(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// One running QEMU guest. See the [module docs](self).
#[derive(Debug)]
pub struct Guest {
    config: GuestConfig,
    child: Child,
    pid: u32,
    exit: Option<ExitStatus>,
    console: Option<Console>,
    /// Everything read from the console connection(s).
    transcript: Arc<Transcript>,
    /// Where the next search of the transcript starts.
    cursor: usize,
    /// Numbers the markers of typed commands.
    seq: u64,
    started: Instant,
    ready_after: Option<Duration>,
}

impl Guest {
    /// Starts QEMU for `config` and connects to its console. Checks first that the
    /// image exists and (for a doorbell guest) that the server socket exists.
    ///
    /// The command is `-accel <accel> -M q35 -m <memory_mib> -nodefaults
    /// -display none -no-reboot -device intel-iommu`, the console chardev (socket
    /// server with `logfile`) as `-serial`, `-kernel -initrd -append`, then the
    /// `ivshmem-doorbell` (or `ivshmem-plain`) device and
    /// [`extra_qemu_args`](GuestConfig::extra_qemu_args).
    pub fn boot(config: GuestConfig) -> Result<Guest, VmError> {
        config.check()?;
        let args = config.qemu_args()?;
        for stale in [&config.console_socket, &config.log_path] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(VmError::Io {
                        what: format!("guest {}: removing {}", config.name, stale.display()),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        let io_err = |what: String| move |source| VmError::Io { what, source };
        let output_path = config.qemu_output_path();
        let output = File::create(&output_path)
            .map_err(io_err(format!("creating {}", output_path.display())))?;
        let output2 = output
            .try_clone()
            .map_err(io_err("duplicating a file descriptor".to_owned()))?;
        let child = Command::new(&config.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output2)
            .spawn()
            .map_err(io_err(format!(
                "guest {}: starting {}",
                config.name,
                config.qemu.display()
            )))?;
        tracing::debug!(guest = %config.name, pid = child.id(), ?args, "QEMU started");
        let mut guest = Guest {
            pid: child.id(),
            child,
            exit: None,
            console: None,
            transcript: Arc::default(),
            cursor: 0,
            seq: 0,
            started: Instant::now(),
            ready_after: None,
            config,
        };
        guest.attach_console()?;
        Ok(guest)
    }

    /// Waits until the guest prints [`READY_MARKER`] (modules loaded, shell about
    /// to start). Records the time from boot (see [`ready_after`](Self::ready_after)).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), VmError> {
        if self.ready_after.is_some() {
            return Ok(());
        }
        // The marker normally comes over the console connection; the log also has
        // it if it was printed before the harness connected.
        let log_path = self.config.log_path.clone();
        let end = self.wait_until(
            &format!("the ready marker '{READY_MARKER}'"),
            timeout,
            |text| {
                if let Some((_, end)) = find_line(text, 0, |line| line.contains(READY_MARKER)) {
                    return Some(end);
                }
                let log = std::fs::read(&log_path).ok()?;
                find_line(&log, 0, |line| line.contains(READY_MARKER)).map(|_| text.len())
            },
        )?;
        self.ready_after = Some(self.started.elapsed());
        self.cursor = self.cursor.max(end);
        Ok(())
    }

    /// Types `command` (one shell command line) into the console and waits until it
    /// has finished: returns what it printed and its exit status.
    ///
    /// The typed line is `echo <begin>; <command>; echo <end> $?` where the markers are
    /// unique and typed split by `""`, so the terminal's echo of the line never looks
    /// like them. The command runs in the console shell (a `cd` or `export` stays);
    /// it may span lines. A command longer than 800 bytes is first written to a file
    /// in the guest (in base64 pieces: the shell's line editor takes about 1000
    /// characters) and sourced from there. The command must not read standard input
    /// (it would eat what is typed next). If it ends with `&` it runs in the
    /// background and its status is that of starting it. If it makes the console
    /// shell exit (`exit`), the result is [`VmError::ShellExited`] (a new shell
    /// starts). Kernel messages printed meanwhile would be in the output, but the
    /// guest boots with `quiet`, which keeps all below error level off the console.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<CommandOutput, VmError> {
        let deadline = Instant::now() + timeout;
        let shown = abbreviate(command);
        let what = format!("the end of command `{shown}`");
        let command = command.trim();
        let command = if command.is_empty() { ":" } else { command };
        let command = self.stage_long_command(command, deadline)?;
        let separator = if command.ends_with('&') { " " } else { "; " };
        self.seq += 1;
        let n = self.seq;
        let begin = format!("__IVLINK_B{n}__");
        let end = format!("__IVLINK_E{n}__");
        let from = self.transcript.lock().len();
        self.type_text(&format!(
            "echo __IVLINK_B\"\"{n}__; {command}{separator}echo __IVLINK_E\"\"{n}__ $?\n"
        ))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, out_start) = self.wait_until(&what, left, |text| {
            find_line(text, from, |line| line.contains(&begin))
        })?;
        let left = deadline.saturating_duration_since(Instant::now());
        let ended = self.wait_until(&what, left, |text| {
            let Some((start, after)) = find_line(text, out_start, |line| line.contains(&end))
            else {
                // `exit` ends the console shell: no end marker will come.
                return find_line(text, out_start, |line| line.contains(SHELL_EXIT_MARKER))
                    .map(|_| None);
            };
            let line = &text[start..after];
            let at = find_bytes(line, end.as_bytes())?;
            Some(Some((start + at, after)))
        })?;
        let Some((end_pos, after)) = ended else {
            self.cursor = self.transcript.lock().len();
            return Err(VmError::ShellExited {
                name: self.config.name.clone(),
                command: shown,
            });
        };
        let (output, status_line) = {
            let text = self.transcript.lock();
            (
                clean_text(&text[out_start..end_pos]),
                clean_text(&text[end_pos..after]),
            )
        };
        self.cursor = after;
        let status = status_line
            .trim()
            .strip_prefix(end.as_str())
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| VmError::BadStatus {
                name: self.config.name.clone(),
                line: status_line.trim().to_owned(),
            })?;
        Ok(CommandOutput {
            output: output.trim_end_matches('\n').to_owned(),
            status,
        })
    }

    /// Types `command` without waiting for it to finish (a listener, say): waits
    /// only (at most 30 s) until the shell has taken the line, then returns. Later
    /// [`wait_for`](Self::wait_for) calls see only what was printed after that.
    /// Typed as `echo <marker>; <command>`; end it with `&` to keep the shell free
    /// for [`run`](Self::run).
    pub fn start(&mut self, command: &str) -> Result<(), VmError> {
        let what = format!("the shell to start `{}`", abbreviate(command));
        let command =
            self.stage_long_command(command.trim(), Instant::now() + START_ACK_TIMEOUT)?;
        self.seq += 1;
        let n = self.seq;
        let marker = format!("__IVLINK_S{n}__");
        let from = self.transcript.lock().len();
        self.type_text(&format!("echo __IVLINK_S\"\"{n}__; {command}\n"))?;
        let (_, after) = self.wait_until(&what, START_ACK_TIMEOUT, |text| {
            find_line(text, from, |line| line.contains(&marker))
        })?;
        self.cursor = after;
        Ok(())
    }

    /// Waits for a line containing `needle` in what the guest printed since the
    /// last [`run`](Self::run), [`start`](Self::start) or `wait_for` (or since
    /// ready), and returns that line (without its line end). The next search starts
    /// after it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, VmError> {
        self.wait_for_since(self.cursor, needle, timeout)
    }

    /// Like [`wait_for`](Self::wait_for), but searching from `position` (see
    /// [`position`](Self::position)).
    pub fn wait_for_since(
        &mut self,
        position: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, VmError> {
        self.attach_console()?;
        let (start, after) =
            self.wait_until(&format!("a line with '{needle}'"), timeout, |text| {
                find_line(text, position, |line| line.contains(needle))
            })?;
        self.cursor = self.cursor.max(after);
        let line = clean_text(&self.transcript.lock()[start..after]);
        Ok(line.trim_end_matches('\n').to_owned())
    }

    /// The current end of what the harness has read from the console: a position
    /// for [`wait_for_since`](Self::wait_for_since) and
    /// [`output_since`](Self::output_since).
    pub fn position(&self) -> usize {
        self.transcript.lock().len()
    }

    /// What the guest printed on the console from `position` on (carriage returns
    /// and escape sequences removed).
    pub fn output_since(&self, position: usize) -> String {
        let text = self.transcript.lock();
        clean_text(&text[position.min(text.len())..])
    }

    /// Types `poweroff -f` and waits for QEMU to exit. On timeout QEMU is killed
    /// and this is an error. Nothing to do if QEMU has exited already.
    pub fn poweroff(&mut self, timeout: Duration) -> Result<(), VmError> {
        if self.try_exit()?.is_some() {
            return Ok(());
        }
        // If typing fails, QEMU may just have exited; the wait below tells.
        let typed = self.type_text("poweroff -f\n");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                self.close_console();
                tracing::debug!(guest = %self.config.name, %status, "QEMU exited");
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                let mut what = "QEMU to exit after `poweroff -f`".to_owned();
                if let Err(e) = typed {
                    let _ = write!(what, " (typing it failed: {e})");
                }
                return Err(self.timeout_error(what, timeout));
            }
            thread::sleep(POLL);
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration the guest was booted with.
    pub fn config(&self) -> &GuestConfig {
        &self.config
    }

    /// The time from starting QEMU to the ready marker, once
    /// [`wait_ready`](Self::wait_ready) has seen it.
    pub fn ready_after(&self) -> Option<Duration> {
        self.ready_after
    }

    /// The last `lines` lines of the serial log (read afresh from the file;
    /// carriage returns and escape sequences removed).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read(&self.config.log_path).unwrap_or_default(),
            lines,
        )
    }

    /// The console's UNIX socket (one client at a time).
    pub fn console_socket(&self) -> &Path {
        &self.config.console_socket
    }

    /// The serial log.
    pub fn log_path(&self) -> &Path {
        &self.config.log_path
    }

    /// Drops the harness's console connection so a person can attach to
    /// [`console_socket`](Self::console_socket) (QEMU serves one client at a time).
    /// What the guest prints while the harness is detached goes to the log only.
    /// [`run`](Self::run), [`start`](Self::start), [`wait_for`](Self::wait_for) and
    /// [`poweroff`](Self::poweroff) reconnect by themselves (QEMU serves the new
    /// connection once the other client has gone).
    pub fn detach_console(&mut self) {
        self.close_console();
    }

    /// Connects the harness to the console socket again (waits up to 20 s for it).
    pub fn attach_console(&mut self) -> Result<(), VmError> {
        if self.console.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + CONSOLE_TIMEOUT;
        loop {
            if self.config.console_socket.exists() {
                match Console::connect(&self.config.console_socket, Arc::clone(&self.transcript)) {
                    Ok(console) => {
                        self.console = Some(console);
                        return Ok(());
                    }
                    Err(e) if Instant::now() >= deadline => {
                        return Err(VmError::Console {
                            name: self.config.name.clone(),
                            path: self.config.console_socket.clone(),
                            source: e,
                        });
                    }
                    Err(_) => {}
                }
            }
            if let Some(status) = self.try_exit()? {
                return Err(self.exited_error(status, "while connecting to the console"));
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(
                    format!(
                        "QEMU to create the console socket {}",
                        self.config.console_socket.display()
                    ),
                    CONSOLE_TIMEOUT,
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// `command` itself if it is short enough to type as one line; else a command
    /// that sources it from a file in the guest, written there first in base64
    /// pieces (the console shell's line editor takes about 1000 characters).
    fn stage_long_command(&mut self, command: &str, deadline: Instant) -> Result<String, VmError> {
        if command.len() <= MAX_TYPED_COMMAND {
            return Ok(command.to_owned());
        }
        self.seq += 1;
        let file = format!("/tmp/.ivlink-command-{}", self.seq);
        let encoded = base64(command.as_bytes());
        for (i, piece) in encoded.as_bytes().chunks(BASE64_PIECE).enumerate() {
            let redirect = if i == 0 { ">" } else { ">>" };
            let piece = String::from_utf8_lossy(piece);
            let left = deadline.saturating_duration_since(Instant::now());
            let out = self.run(&format!("echo {piece} {redirect} {file}.b64"), left)?;
            if !out.success() {
                return Err(VmError::Config(format!(
                    "guest {}: staging a long command failed: {}",
                    self.config.name, out.output
                )));
            }
        }
        Ok(format!(
            "base64 -d {file}.b64 > {file}; rm -f {file}.b64; . {file}"
        ))
    }

    /// Writes `text` to the console (connecting first if detached).
    fn type_text(&mut self, text: &str) -> Result<(), VmError> {
        if let Some(status) = self.try_exit()? {
            return Err(self.exited_error(status, "before typing into the console"));
        }
        self.attach_console()?;
        let console = self.console.as_mut().expect("attached");
        let result = console
            .stream
            .write_all(text.as_bytes())
            .and_then(|()| console.stream.flush());
        result.map_err(|source| {
            self.close_console();
            VmError::Console {
                name: self.config.name.clone(),
                path: self.config.console_socket.clone(),
                source,
            }
        })
    }

    fn close_console(&mut self) {
        if let Some(console) = self.console.take() {
            console.close();
        }
    }

    /// Polls `check` on the transcript until it gives a value, QEMU exits or the
    /// time is up.
    fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let text = self.transcript.lock();
                if let Some(value) = check(&text) {
                    return Ok(value);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                // Wake up for new output, or to look at the process now and then.
                let _ = self.transcript.grew.wait_timeout(text, left.min(POLL));
            }
            if let Some(status) = self.try_exit()? {
                // Read what QEMU sent before it went.
                if let Some(console) = &mut self.console {
                    console.join();
                }
                if let Some(value) = check(&self.transcript.lock()) {
                    return Ok(value);
                }
                return Err(self.exited_error(status, &format!("while waiting for {what}")));
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(what.to_owned(), timeout));
            }
        }
    }

    /// QEMU's exit status, if it has exited.
    fn try_exit(&mut self) -> Result<Option<ExitStatus>, VmError> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(|source| VmError::Io {
                what: format!(
                    "guest {}: waiting for QEMU (pid {})",
                    self.config.name, self.pid
                ),
                source,
            })?;
        }
        Ok(self.exit)
    }

    /// Kills QEMU by its pid and reaps it.
    fn kill(&mut self) {
        if self.exit.is_none() {
            // Child::kill signals this child's pid (SIGKILL), never a name.
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        self.close_console();
    }

    fn timeout_error(&self, what: String, after: Duration) -> VmError {
        VmError::Timeout {
            name: self.config.name.clone(),
            what,
            after,
            log_tail: self.log_tail(ERROR_LOG_LINES),
        }
    }

    fn exited_error(&self, status: ExitStatus, context: &str) -> VmError {
        let output = std::fs::read(self.config.qemu_output_path()).unwrap_or_default();
        let qemu_output = tail(&output, ERROR_LOG_LINES);
        VmError::Exited {
            name: self.config.name.clone(),
            status: status.to_string(),
            context: context.to_owned(),
            qemu_output: if qemu_output.trim().is_empty() {
                "(nothing)".to_owned()
            } else {
                qemu_output
            },
            log_tail: self.log_tail(ERROR_LOG_LINES),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config.console_socket);
    }
}

/// `qemu-system-x86_64` to use: the file named by `IVLINK_QEMU` if set, else the
/// first executable one on `PATH`.
pub fn find_qemu() -> Option<PathBuf> {
    let executable = |file: &Path| {
        file.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(path) = std::env::var_os(QEMU_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return executable(&path).then_some(path);
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(DEFAULT_QEMU))
        .find(|file| executable(file))
}

/// Where `cargo xtask vm-image` puts the image of a workspace: `target/vm-image`.
pub fn default_image_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join("target").join("vm-image")
}

/// The kernel to boot from `image_dir`: [`VMLINUX_FILE`] if it is there (faster),
/// else [`KERNEL_FILE`].
pub fn image_kernel(image_dir: &Path) -> PathBuf {
    let vmlinux = image_dir.join(VMLINUX_FILE);
    if vmlinux.is_file() {
        vmlinux
    } else {
        image_dir.join(KERNEL_FILE)
    }
}

/// Whether `image_dir` holds a kernel and an initramfs.
pub fn image_exists(image_dir: &Path) -> bool {
    image_dir.join(KERNEL_FILE).is_file() && image_dir.join(INITRD_FILE).is_file()
}

/// The first complete line at or after `from` for which `pred` holds (tested on
/// the line without `\r`), as (start, end after its `\n`).
fn find_line(text: &[u8], from: usize, pred: impl Fn(&str) -> bool) -> Option<(usize, usize)> {
    let mut start = from.min(text.len());
    while let Some(nl) = text[start..].iter().position(|&b| b == b'\n') {
        let end = start + nl + 1;
        let line = String::from_utf8_lossy(&text[start..end]);
        if pred(line.trim_end_matches(['\r', '\n'])) {
            return Some((start, end));
        }
        start = end;
    }
    None
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Console bytes as text: lossy UTF-8, no `\r`, no escape sequences, no other
/// control characters except tab and newline.
fn clean_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `lines` lines of console output, cleaned.
fn tail(bytes: &[u8], lines: usize) -> String {
    let text = clean_text(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `command` cut to fit an error message.
fn abbreviate(command: &str) -> String {
    const MAX: usize = 100;
    let command = command.trim();
    match command.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &command[..at]),
        None => command.to_owned(),
    }
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
    fn markers_are_found_in_output_not_in_the_echo() {
        let log = b"~ # echo __IVLINK_B\"\"1__; ls; echo __IVLINK_E\"\"1__ $?\r\n\
                    __IVLINK_B1__\r\nbin  dev\r\n__IVLINK_E1__ 0\r\n~ # ";
        let (_, after) = find_line(log, 0, |l| l.contains("__IVLINK_B1__")).unwrap();
        assert_eq!(&log[after..after + 3], b"bin");
        let (start, _) = find_line(log, after, |l| l.contains("__IVLINK_E1__")).unwrap();
        assert_eq!(clean_text(&log[after..start]), "bin  dev\n");
        assert!(find_line(log, 0, |l| l.contains("__IVLINK_B2__")).is_none());
    }

    #[test]
    fn base64_matches_the_reference() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\n"), "Zm9vYmFyCg==");
        assert_eq!(abbreviate(&"x".repeat(200)).len(), 103);
    }

    #[test]
    fn guests_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Guest>();
        assert_send::<GuestConfig>();
    }

    #[test]
    fn partial_lines_do_not_match() {
        assert!(find_line(b"abc", 0, |l| l.contains("abc")).is_none());
        assert_eq!(
            find_line(b"x\nabc\n", 1, |l| l.contains("abc")),
            Some((2, 6))
        );
    }

    #[test]
    fn escape_sequences_and_carriage_returns_are_removed() {
        assert_eq!(clean_text(b"a\x1b[6nb\r\nc\x1b7d\x07"), "ab\ncd");
        assert_eq!(tail(b"1\r\n2\r\n3\r\n", 2), "2\n3");
    }

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

    #[test]
    fn boot_refuses_a_missing_server_socket() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KERNEL_FILE), b"k").unwrap();
        std::fs::write(dir.path().join(INITRD_FILE), b"i").unwrap();
        let config = GuestConfig::new(
            "g",
            dir.path().join(KERNEL_FILE),
            dir.path().join(INITRD_FILE),
            dir.path().join("nosock"),
            2,
        );
        assert_eq!(config.console_socket, dir.path().join("g.console"));
        let err = Guest::boot(config).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
