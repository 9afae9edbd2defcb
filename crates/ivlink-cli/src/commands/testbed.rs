//! `ivlink testbed`: a server and peer processes on private paths, exchanging
//! notifications and messages both ways; exits 0 only if everything arrived.
//! With `--console`, the seed's virtio console instead: a device process (or
//! guest) printing the demo lines a driver process (or guest) writes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ivlink_lab::testbed::console::{self as console_bed, ConsoleTestbedConfig};
use ivlink_lab::testbed::guests::{self, ConsoleDemo, GuestTestbedConfig};
use ivlink_lab::testbed::{self, PeerPlan, PeerResult, TestbedConfig};
use serde::Serialize;

use crate::grammar::{
    format_duration, parse_duration, parse_duration_was_ms, parse_size, parse_uint,
};
use crate::report::{Lines, print_json};
use crate::transport_args::TransportArgs;

/// Options of `ivlink testbed`.
#[derive(Debug, Clone, Args)]
pub struct TestbedArgs {
    /// Peer processes to start
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = parse_uint::<usize>)]
    pub peers: usize,

    /// Vectors per peer (Zephyr's default is 2)
    #[arg(short = 'n', long, value_name = "N", default_value_t = 2, value_parser = parse_uint::<u16>)]
    pub vectors: u16,

    /// Shared memory size
    #[arg(short = 'l', long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    pub size: u64,

    /// Laps of messages around the peers, per vector
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_uint::<u32>)]
    pub rounds: u32,

    /// How long any one step may take (at least 100ms; a bare number is seconds)
    #[arg(long, value_name = "TIME", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Run the seed's virtio console demo instead: a console device printing the
    /// driver's "Hello World" lines (--rounds of them)
    #[arg(long)]
    pub console: bool,

    /// With --console: time between two demo lines (20ms, 1s, ...)
    #[arg(long, value_name = "TIME", default_value = "20ms", requires = "console",
          value_parser = parse_duration_was_ms)]
    pub interval: Duration,

    /// Boot N QEMU guests as the peers instead of host processes
    #[arg(long, value_name = "N", value_parser = parse_uint::<usize>)]
    pub guests: Option<usize>,

    /// With --guests: the guest image directory (from `cargo xtask vm-image`)
    /// [default: target/vm-image here, else in the checkout ivlink was built from]
    #[arg(long, value_name = "DIR", env = "IVLINK_VM_IMAGE")]
    pub image: Option<PathBuf>,

    /// With --guests: the guest kernel [default: from --image]
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// With --guests: the guest initramfs [default: from --image]
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// With --guests: QEMU accelerator (KVM guests hang on some hosts)
    #[arg(long, default_value = "tcg")]
    pub accel: String,

    /// With --guests: how long a guest may take to boot (at least 1s)
    #[arg(long, value_name = "TIME", default_value = "120s", value_parser = parse_duration)]
    pub boot_timeout: Duration,

    /// With --guests: where the server socket, consoles and logs go [default: a new temporary directory]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// With --guests: after the exchange, keep the guests running until Ctrl-C
    #[arg(long)]
    pub keep_running: bool,

    /// Print one JSON object at the end, also on failure (the running lines go
    /// to standard error)
    #[arg(long)]
    pub json: bool,
}

/// Which test bed ran.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Peer processes on this host (the default).
    Host,
    /// The console demo between two processes on this host (`--console`).
    Console,
    /// QEMU guests as the peers (`--guests`, with or without `--console`).
    Guests,
}

/// `ivlink testbed --json` once the test bed passed.
#[derive(Debug, Serialize)]
struct Passed {
    ok: bool,
    mode: Mode,
    /// Host processes taking part (host and console modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<usize>,
    /// Guests booted (guests mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    guests: Option<usize>,
    console: bool,
    vectors: u16,
    /// Bytes of shared memory the server made.
    size: u64,
    rounds: u32,
    /// The console demo's pause between two lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
    /// Messages (console: demo lines) delivered and checked.
    messages: u64,
    seconds: f64,
    /// What each peer reported (none for the console demo).
    results: Vec<PeerResult>,
}

/// `ivlink testbed --json` when the test bed failed.
#[derive(Debug, Serialize)]
struct Failed {
    ok: bool,
    mode: Mode,
    /// The error line, as on standard error.
    error: String,
}

impl TestbedArgs {
    /// Runs the test bed and prints what happened: the running lines, then the
    /// verdict; with `--json` the lines go to standard error and one object
    /// (passed or failed) to standard output.
    pub fn run(&self) -> anyhow::Result<()> {
        let lines = Lines::new(self.json);
        let started = Instant::now();
        let passed = self.run_mode(&mut *lines.prose()).map(|passed| Passed {
            seconds: started.elapsed().as_secs_f64(),
            ..passed
        });
        if self.json {
            match &passed {
                Ok(passed) => print_json(passed)?,
                // The error still ends the command (and is said on standard
                // error); a failed write here must not hide it.
                Err(error) => {
                    let _ = print_json(&Failed {
                        ok: false,
                        mode: self.mode(),
                        error: format!("{error:#}"),
                    });
                }
            }
        }
        passed.map(drop)
    }

    fn mode(&self) -> Mode {
        match (self.guests, self.console) {
            (Some(_), _) => Mode::Guests,
            (None, true) => Mode::Console,
            (None, false) => Mode::Host,
        }
    }

    /// The report so far, from the options (the rest is filled in by the run).
    fn report(&self) -> Passed {
        Passed {
            ok: true,
            mode: self.mode(),
            peers: None,
            guests: self.guests,
            console: self.console,
            vectors: self.vectors,
            size: self.size,
            rounds: self.rounds,
            interval_ms: self
                .console
                .then(|| u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX)),
            messages: 0,
            seconds: 0.0,
            results: Vec::new(),
        }
    }

    /// Runs the test bed the options ask for, its lines to `out`.
    fn run_mode(&self, out: &mut dyn Write) -> anyhow::Result<Passed> {
        if let Some(guests) = self.guests {
            return self.run_guests(guests, out);
        }
        if self.console {
            return self.run_console(out);
        }
        self.run_host(out)
    }

    /// Peer processes of this executable on this host.
    fn run_host(&self, out: &mut dyn Write) -> anyhow::Result<Passed> {
        let config = TestbedConfig {
            peers: self.peers,
            vectors: self.vectors,
            size: self.size,
            rounds: self.rounds,
            timeout: self.step_timeout(),
        };
        let exe = std::env::current_exe().context("cannot find the ivlink executable")?;
        let peers = self.peers;
        let rounds = self.rounds;
        let timeout = format_duration(config.timeout);
        let nonce = testbed::run_nonce();
        let command = move |socket: &Path| {
            let mut command = Command::new(&exe);
            command
                .arg("testbed-peer")
                .arg("--socket")
                .arg(socket)
                .arg("--peers")
                .arg(peers.to_string())
                .arg("--rounds")
                .arg(rounds.to_string())
                .arg("--timeout")
                .arg(&timeout)
                .arg("--nonce")
                .arg(nonce.to_string());
            command
        };
        let summary = testbed::run(&config, &command, out)?;
        writeln!(
            out,
            "testbed: OK: {} peers exchanged {} messages on {} vector(s), each delivered intact, in both directions",
            summary.peers, summary.messages, config.vectors
        )?;
        Ok(Passed {
            peers: Some(summary.peers),
            size: summary.size,
            messages: summary.messages,
            results: summary.results,
            ..self.report()
        })
    }

    /// `--timeout`, at least 100ms.
    fn step_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_millis(100))
    }

    /// The console demo between two host processes of this executable.
    fn run_console(&self, out: &mut dyn Write) -> anyhow::Result<Passed> {
        let lines = self.demo_lines()?;
        let config = ConsoleTestbedConfig {
            size: self.size,
            vectors: self.vectors,
            lines,
            interval: self.interval,
            timeout: self.step_timeout(),
        };
        let exe = std::env::current_exe().context("cannot find the ivlink executable")?;
        let timeout = format_duration(config.timeout);
        let side = |role: &'static str| {
            let exe = exe.clone();
            let timeout = timeout.clone();
            move |socket: &Path| {
                let mut command = Command::new(&exe);
                command
                    .args(["console", role, "-S"])
                    .arg(socket)
                    .args(["--timeout", &timeout]);
                command
            }
        };
        let device = side("device");
        let driver = {
            let side = side("driver");
            let interval = format_duration(self.interval);
            move |socket: &Path| {
                let mut command = side(socket);
                command.args([
                    "--demo",
                    "--count",
                    &lines.to_string(),
                    "--interval",
                    &interval,
                ]);
                command
            }
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "ivlink".to_owned());
        let summary = console_bed::run_console(&config, &device, &driver, &host, out)?;
        writeln!(
            out,
            "testbed: OK: the console device printed the register dump up to DRIVER_OK and the driver's {} demo lines, in order",
            summary.lines
        )?;
        Ok(Passed {
            peers: Some(2),
            size: summary.size,
            messages: summary.lines as u64,
            ..self.report()
        })
    }

    /// With --console: the demo lines to send (--rounds, at least 1).
    fn demo_lines(&self) -> anyhow::Result<u32> {
        if self.rounds == 0 {
            anyhow::bail!("--console needs --rounds of 1 or more (the demo lines to send)");
        }
        Ok(self.rounds)
    }

    /// The guest image directory: `--image` (or `IVLINK_VM_IMAGE`), else
    /// `target/vm-image` of the current directory if it holds an image, else
    /// that of the checkout this binary was built from.
    fn image_dir(&self) -> PathBuf {
        if let Some(dir) = &self.image {
            return dir.clone();
        }
        let here = PathBuf::from("target/vm-image");
        if ivlink_lab::vm::image_exists(&here) {
            return here;
        }
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/vm-image");
        std::fs::canonicalize(&built_from).unwrap_or(built_from)
    }

    fn run_guests(&self, guests: usize, out: &mut dyn Write) -> anyhow::Result<Passed> {
        let image = self.image_dir();
        let kernel = self
            .kernel
            .clone()
            .unwrap_or_else(|| ivlink_lab::vm::image_kernel(&image));
        let initrd = self
            .initrd
            .clone()
            .unwrap_or_else(|| image.join(ivlink_lab::vm::INITRD_FILE));
        for (what, path) in [("kernel", &kernel), ("initramfs", &initrd)] {
            if !path.is_file() {
                anyhow::bail!(
                    "no guest {what} at {}: build the image with `cargo xtask vm-image` in the checkout, \
                     then pass --image DIR or set IVLINK_VM_IMAGE=DIR (or --kernel and --initrd)",
                    path.display()
                );
            }
        }
        let temporary;
        let work_dir = match &self.work_dir {
            Some(dir) => dir.clone(),
            None => {
                temporary = tempfile::Builder::new()
                    .prefix("ivlink-testbed.")
                    .tempdir()?;
                temporary.path().to_path_buf()
            }
        };
        let config = GuestTestbedConfig {
            guests,
            vectors: self.vectors,
            size: self.size,
            rounds: self.rounds,
            timeout: self.step_timeout(),
            boot_timeout: self.boot_timeout.max(Duration::from_secs(1)),
            kernel,
            initrd,
            accel: self.accel.clone(),
            work_dir,
            keep_running: self.keep_running,
            console: if self.console {
                Some(ConsoleDemo {
                    lines: self.demo_lines()?,
                    interval: self.interval,
                })
            } else {
                None
            },
        };
        let stop = super::stop_flag()?;
        let progress = ivlink_lab::progress::Progress::new(self.json);
        let summary = guests::run_guests(&config, out, &stop, &progress)?;
        if self.console {
            writeln!(
                out,
                "testbed: OK: the console device in guest0 printed the register dump up to DRIVER_OK and the {} demo lines of the driver in guest1, in order, through ivshmem doorbells",
                summary.messages
            )?;
        } else {
            writeln!(
                out,
                "testbed: OK: {} guests exchanged {} messages on {} vector(s) through ivshmem doorbells, each delivered intact",
                summary.peers, summary.messages, config.vectors
            )?;
        }
        Ok(Passed {
            guests: Some(summary.peers),
            size: summary.size,
            messages: summary.messages,
            results: summary.results,
            ..self.report()
        })
    }
}

/// Options of the hidden `ivlink testbed-peer`, one peer of the test bed.
#[derive(Debug, Clone, Args)]
pub struct TestbedPeerArgs {
    /// Peers taking part, this one included
    #[arg(long, default_value_t = 2, value_parser = parse_uint::<usize>)]
    pub peers: usize,

    /// Laps per vector
    #[arg(long, default_value_t = 1, value_parser = parse_uint::<u32>)]
    pub rounds: u32,

    /// How long any one step may take (at least 100ms)
    #[arg(long, value_name = "TIME", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Ids taking part, comma-separated (needed where peers cannot be discovered, as in a guest)
    #[arg(long, value_name = "IDS", value_delimiter = ',', value_parser = parse_uint::<u16>)]
    pub ring: Option<Vec<u16>>,

    /// Value unique to this run, marking the peers ready
    #[arg(long, default_value_t = 1, value_parser = parse_uint::<u64>)]
    pub nonce: u64,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl TestbedPeerArgs {
    /// Runs one peer's part.
    pub fn run(&self) -> anyhow::Result<()> {
        let device = self.transport.transport().open()?;
        let plan = PeerPlan {
            peers: self.peers,
            rounds: self.rounds,
            timeout: self.timeout.max(Duration::from_millis(100)),
            ring: self.ring.clone(),
            nonce: self.nonce,
        };
        testbed::run_peer(&*device, &plan, &mut std::io::stdout().lock())?;
        Ok(())
    }
}
