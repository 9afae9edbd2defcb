//! Virtio consoles over any [`Device`]: opens the layout a profile names, runs the
//! negotiation and the console in the background of every read and write, starts
//! over when the other side restarts, and waits with spin-then-sleep, ringing the
//! other side only when it asked.
//!
//! A [`Console`] is one port of one side. It reads and writes like a socket
//! ([`std::io::Read`], [`std::io::Write`]), or [`split`](Console::split)s into a
//! reading and a writing half for a thread each way (the relay's
//! [`DuplexPort`](crate::relay::DuplexPort)). Both halves share one session: the
//! one that sleeps on the doorbell wakes the other.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ivlink_core::console::DriverSession;
use ivlink_core::console::{ConsoleConfig, ConsoleError, ConsoleLayout, DeviceSession};
use ivlink_core::directory::DirectoryError;
use ivlink_core::{PeerId, Region, Vector};

use crate::device::{Device, DeviceError, WaitFor};
use crate::section::OpenFailure;

pub use ivlink_core::console::{MAX_PORT_NAME, MAX_PORTS, NativeShape, Profile, hvl};

mod engine;
mod notice;

use engine::Engine;
pub use notice::{Notice, QueueInfo, RegisterDump};

/// The driver VM's BAR2 address in the Zephyr sample (its device prints it as
/// "Device Base address"): the default `address_base` of that profile.
pub const HVL_ZEPHYR_ADDRESS_BASE: u64 = 0xafa0_0000;

/// How long one sleep on the doorbell lasts before the session is looked at
/// again: peer departures and status changes ring no doorbell.
const TICK: Duration = Duration::from_millis(50);

/// Which side of the console this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleRole {
    /// The console device: prints what the driver writes.
    Device,
    /// The driver: uses the console.
    Driver,
}

impl ConsoleRole {
    /// "device" or "driver".
    pub fn name(self) -> &'static str {
        match self {
            ConsoleRole::Device => "device",
            ConsoleRole::Driver => "driver",
        }
    }

    pub(crate) fn other(self) -> Self {
        match self {
            ConsoleRole::Device => ConsoleRole::Driver,
            ConsoleRole::Driver => ConsoleRole::Device,
        }
    }
}

/// Why a console operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleFailure {
    /// The console itself (layout, negotiation, corruption).
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// The transport.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The region directory.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The console section did not become usable in time.
    #[error("the console section {0:?} was not set up in time")]
    SetupTimeout(String),
    /// The other side did not come, or come back, in time.
    #[error("the console {role} did not come (or come back) within {waited:?}")]
    Absent {
        /// The side that is away.
        role: &'static str,
        /// How long this side waited.
        waited: Duration,
    },
    /// No port has the name asked for.
    #[error("no port named '{name}' (ports: {})", names_list(names))]
    NoPortNamed {
        /// The name asked for.
        name: String,
        /// The ports' names, port 0 first ("-" for a port without one).
        names: Vec<String>,
    },
    /// Only the driver side does this.
    #[error("only the console driver sends {0}")]
    DriverOnly(&'static str),
    /// Another driver or device is connected to this console.
    #[error("console {section:?} already has a {role} (peer {peer}); stop it first")]
    Taken {
        /// The section.
        section: String,
        /// The side that is taken.
        role: &'static str,
        /// Its peer.
        peer: PeerId,
    },
}

fn names_list(names: &[String]) -> String {
    if names.is_empty() {
        return "none named".to_owned();
    }
    names.join(", ")
}

/// A port by number, or by the name its device gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelector {
    /// Port `n` (0 is the console port).
    Number(u32),
    /// The port the device names so: on the driver, [`Console::open`] waits until
    /// the device has named its ports (and keeps that port across restarts); on
    /// the device, it is one of [`ConsoleOptions::port_names`].
    Name(String),
}

impl Default for PortSelector {
    fn default() -> Self {
        PortSelector::Number(0)
    }
}

impl FromStr for PortSelector {
    type Err = std::convert::Infallible;

    /// Digits are a number, anything else a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse() {
            Ok(n) => PortSelector::Number(n),
            Err(_) => PortSelector::Name(s.to_owned()),
        })
    }
}

impl fmt::Display for PortSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSelector::Number(n) => write!(f, "{n}"),
            PortSelector::Name(name) => f.write_str(name),
        }
    }
}

impl OpenFailure<ConsoleLayout> for ConsoleFailure {
    fn setup_timeout(name: &str) -> Self {
        ConsoleFailure::SetupTimeout(name.to_owned())
    }
}

/// Which console to open and how to behave on it.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The layout.
    pub profile: Profile,
    /// This side.
    pub role: ConsoleRole,
    /// Native: the directory section's name.
    pub section: String,
    /// Native: ports, queue size and buffer size (used by whoever creates it).
    pub shape: NativeShape,
    /// The port this console reads and writes.
    pub port: PortSelector,
    /// Device: the ports' names, port 0 first (multiport sends them to the
    /// driver; fewer names than ports leave the rest unnamed).
    pub port_names: Vec<String>,
    /// The doorbell vector.
    pub vector: Vector,
    /// The peer to ring; `None`: the native header says, or the profile's rule
    /// (hvl-zephyr: the device rings its own id + 1, the driver its own id − 1).
    pub peer: Option<PeerId>,
    /// hvl-zephyr: the region's start as the driver VM addresses it.
    pub address_base: u64,
    /// Device: the console size it announces (`F_SIZE`), columns then rows.
    pub size: (u16, u16),
    /// How long to spin before sleeping on the doorbell.
    pub spin: Duration,
    /// How long to wait for the native section to be set up by another peer.
    pub setup_timeout: Duration,
    /// How long the other side may be away (not started yet, or restarting)
    /// before reads and writes fail (`None`: forever).
    pub absence_timeout: Option<Duration>,
}

impl ConsoleOptions {
    /// Defaults for `profile` and `role`: section "console", one port, vector 0,
    /// 50 µs spin, 80×25, and a minute for the other side to come.
    pub fn new(profile: Profile, role: ConsoleRole) -> Self {
        ConsoleOptions {
            profile,
            role,
            section: "console".to_owned(),
            shape: NativeShape::default(),
            port: PortSelector::Number(0),
            port_names: Vec::new(),
            vector: 0,
            peer: None,
            address_base: HVL_ZEPHYR_ADDRESS_BASE,
            size: (80, 25),
            spin: Duration::from_micros(50),
            setup_timeout: Duration::from_secs(5),
            absence_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// What both halves of a console share.
struct Shared<'d> {
    device: &'d dyn Device,
    engine: Mutex<Engine>,
    /// Bumped whenever the half sleeping on the doorbell wakes.
    woke: Condvar,
    options: ConsoleOptions,
    /// The port read and written, as resolved from `options.port`.
    port: u32,
    observer: Mutex<Option<Observer>>,
}

/// What a console tells about itself while it runs.
pub type Observer = Box<dyn FnMut(&Notice) + Send>;

/// One port of one side of a console.
pub struct Console<'d> {
    shared: Arc<Shared<'d>>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl<'d> Console<'d> {
    /// Opens the console `options` describes (creating the native section on
    /// first use) and starts this side; negotiation runs in every later call.
    pub fn open(device: &'d dyn Device, options: &ConsoleOptions) -> Result<Self, ConsoleFailure> {
        let region = device.region();
        let layout = match options.profile {
            Profile::Native => open_native(device, options)?,
            Profile::HvlZephyr => ConsoleLayout::hvl_zephyr(region.len(), options.address_base)?,
        };
        let port = match &options.port {
            PortSelector::Number(n) => Some(*n),
            PortSelector::Name(name) => match options.role {
                ConsoleRole::Device => Some(own_port_named(options, name)?),
                ConsoleRole::Driver => None,
            },
        };
        if let Some(port) = port
            && port >= layout.ports
        {
            return Err(ConsoleError::NoSuchPort(port).into());
        }
        refuse_a_second(device, &layout, options)?;
        let engine = match options.role {
            ConsoleRole::Driver => {
                Engine::driver(DriverSession::new(region, layout, device.id())?, options)
            }
            ConsoleRole::Device => {
                let config = ConsoleConfig {
                    cols: options.size.0,
                    rows: options.size.1,
                    max_nr_ports: layout.ports,
                    emerg_wr: 0,
                };
                let (mut session, ring) = DeviceSession::new(region, layout, device.id(), config)?;
                name_ports(&mut session, &options.port_names)?;
                let mut engine = Engine::device(session, options);
                engine.ring_later(ring);
                engine
            }
        };
        let mut shared = Shared {
            device,
            engine: Mutex::new(engine),
            woke: Condvar::new(),
            options: options.clone(),
            port: port.unwrap_or(0),
            observer: Mutex::new(None),
        };
        if let (None, PortSelector::Name(name)) = (port, &options.port) {
            // Bounded by the absence timeout: the device names its ports as
            // soon as the driver is up.
            shared.port = shared
                .wait_for(None, |engine, _| engine.port_named(name))
                .map_err(|e| {
                    e.downcast::<ConsoleFailure>().unwrap_or_else(|error| {
                        DeviceError::Io {
                            context: "waiting for the port's name",
                            error,
                        }
                        .into()
                    })
                })?;
        }
        Ok(Console {
            shared: Arc::new(shared),
            read_timeout: None,
            write_timeout: None,
        })
    }

    /// The port this console reads and writes (a name resolved).
    pub fn port(&self) -> u32 {
        self.shared.port
    }

    /// Calls `observer` with every [`Notice`] (negotiation done, the other side
    /// restarted, ...), from whichever thread noticed it.
    pub fn set_observer(&self, observer: Observer) {
        *lock(&self.shared.observer) = Some(observer);
    }

    /// Sets how long a read and a write may block (`None`, the default: until
    /// the absence timeout).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
        self.write_timeout = timeout;
    }

    /// Waits up to `timeout` until the ports carry data.
    pub fn wait_up(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        self.shared
            .wait_for(Some(deadline), |engine, _| Ok(engine.is_up().then_some(())))
    }

    /// Bytes sent that the other side never took because it restarted, so far.
    pub fn lost(&self) -> u64 {
        lock(&self.shared.engine).lost()
    }

    /// Driver: writes `text` through the emergency register (`F_EMERG_WRITE`),
    /// a byte at a time, each once the device took the one before; the device
    /// reports them as [`Notice::Emergency`]. Fails on the device side, and
    /// past `timeout` for a byte the device does not take.
    pub fn emergency_write(&self, text: &[u8], timeout: Duration) -> io::Result<()> {
        for &byte in text {
            let deadline = Instant::now() + timeout;
            self.shared.wait_for(Some(deadline), |engine, device| {
                match engine.emergency_write(device, byte)? {
                    Some(written) => Ok(written.then_some(())),
                    None => Err(ConsoleFailure::DriverOnly("emergency writes")),
                }
            })?;
        }
        Ok(())
    }

    /// Ends this side's output (the other side reads end of file after the data).
    pub fn close(&mut self) -> io::Result<()> {
        self.shared.close()
    }

    /// Splits into a reading and a writing half.
    pub fn split(self) -> (ConsoleReader<'d>, ConsoleWriter<'d>) {
        (
            ConsoleReader {
                shared: self.shared.clone(),
                timeout: self.read_timeout,
            },
            ConsoleWriter {
                shared: self.shared,
                timeout: self.write_timeout,
            },
        )
    }
}

/// The device's own port named `name`.
fn own_port_named(options: &ConsoleOptions, name: &str) -> Result<u32, ConsoleFailure> {
    let found = options.port_names.iter().position(|n| n == name);
    found
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| ConsoleFailure::NoPortNamed {
            name: name.to_owned(),
            names: options.port_names.clone(),
        })
}

/// Gives the device's ports their names, refusing two alike.
fn name_ports(session: &mut DeviceSession, names: &[String]) -> Result<(), ConsoleFailure> {
    if names.len() > session.layout().ports as usize {
        // The section may be older than these options, made by the other side.
        return Err(ConsoleError::Layout("more port names than the console has ports").into());
    }
    for (port, name) in (0u32..).zip(names) {
        if !name.is_empty() && names[..port as usize].contains(name) {
            return Err(ConsoleError::Layout("two ports have the same name").into());
        }
        session.set_port_name(port, name)?;
    }
    Ok(())
}

/// Finds or creates the native section.
fn open_native(
    device: &dyn Device,
    options: &ConsoleOptions,
) -> Result<ConsoleLayout, ConsoleFailure> {
    let (layout, _) = crate::section::open_or_create::<ConsoleLayout, ConsoleFailure>(
        device,
        &options.section,
        &options.shape,
        options.vector,
        options.setup_timeout,
    )?;
    Ok(layout)
}

/// Refuses a second driver (or device) while the first is connected.
fn refuse_a_second(
    device: &dyn Device,
    layout: &ConsoleLayout,
    options: &ConsoleOptions,
) -> Result<(), ConsoleFailure> {
    let side = match options.role {
        ConsoleRole::Driver => ivlink_core::console::SideKind::Driver,
        ConsoleRole::Device => ivlink_core::console::SideKind::Device,
    };
    let Some(words) = layout.side(side) else {
        return Ok(());
    };
    let region = device.region();
    if words.generation(region)? == 0 || !device.knows_peers() {
        return Ok(());
    }
    if let Some(peer) = words.peer(region)?
        && peer != device.id()
        && device.peers().iter().any(|p| p.id == peer)
    {
        return Err(ConsoleFailure::Taken {
            section: options.section.clone(),
            role: options.role.name(),
            peer,
        });
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Maps a console error to the `io::Error` a reader or writer expects.
fn console_io(e: ConsoleFailure) -> io::Error {
    let kind = match &e {
        ConsoleFailure::Device(DeviceError::ServerGone) | ConsoleFailure::Absent { .. } => {
            io::ErrorKind::ConnectionAborted
        }
        ConsoleFailure::Console(ConsoleError::Region(_)) => io::ErrorKind::Other,
        ConsoleFailure::Console(_) => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl Shared<'_> {
    /// Runs `check` under the lock, after serving the session, until it returns
    /// `Some`, sleeping in between; fails past `deadline` or once the other side
    /// has been away longer than the absence timeout.
    fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&mut Engine, &dyn Device) -> Result<Option<T>, ConsoleFailure>,
    ) -> io::Result<T> {
        let device = self.device;
        let spin_until = Instant::now() + self.options.spin;
        loop {
            let mut engine = lock(&self.engine);
            self.serve(&mut engine)?;
            if let Some(done) = check(&mut engine, device).map_err(console_io)? {
                return Ok(done);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "console timed out"));
            }
            if now < spin_until {
                drop(engine);
                std::hint::spin_loop();
                continue;
            }
            engine.check_present(device).map_err(console_io)?;
            self.notice_server_gone()?;
            let slice = deadline.map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            self.sleep(engine, slice)?;
        }
    }

    /// Polls the session until it has nothing more, reports what happened, and
    /// rings the other side if anything asked for it.
    fn serve(&self, engine: &mut Engine) -> io::Result<()> {
        let notices = engine.serve(self.device).map_err(console_io)?;
        if !notices.is_empty()
            && let Some(observer) = lock(&self.observer).as_mut()
        {
            for notice in &notices {
                observer(notice);
            }
        }
        Ok(())
    }

    /// Sleeps up to `slice` on the doorbell, or on the other half's wake-up if it
    /// already sleeps there.
    fn sleep(&self, mut engine: MutexGuard<'_, Engine>, slice: Duration) -> io::Result<()> {
        if engine.sleeper {
            let epoch = engine.epoch;
            let (guard, _) = self
                .woke
                .wait_timeout_while(engine, slice, |e| e.epoch == epoch)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            drop(guard);
            return Ok(());
        }
        let region = self.device.region();
        if engine.arm(region).map_err(console_io)? {
            engine.disarm(region).map_err(console_io)?;
            return Ok(());
        }
        engine.sleeper = true;
        drop(engine);
        let woke = if self.device.has_doorbell() {
            self.device
                .wait(WaitFor::vector(self.options.vector), Some(slice))
        } else {
            self.device.wait(
                WaitFor::NOTHING,
                Some(slice.min(Duration::from_micros(200))),
            )
        };
        let mut engine = lock(&self.engine);
        engine.sleeper = false;
        engine.epoch = engine.epoch.wrapping_add(1);
        engine.disarm(region).map_err(console_io)?;
        drop(engine);
        self.woke.notify_all();
        woke.map_err(|e| console_io(e.into()))?;
        Ok(())
    }

    fn read(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let port = self.port;
        self.wait_for(deadline, |engine, device| {
            let n = engine.read(device, port, buf)?;
            if n > 0 {
                return Ok(Some(n));
            }
            // Ended, and nothing came between the last read and that look.
            if engine.peer_ended(device.region(), port)? && engine.read(device, port, buf)? == 0 {
                return Ok(Some(0));
            }
            Ok(None)
        })
        .map(|n| n.min(buf.len()))
    }

    fn write(&self, data: &[u8], timeout: Option<Duration>) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let port = self.port;
        self.wait_for(deadline, |engine, device| {
            let n = engine.write(device, port, data)?;
            Ok((n > 0).then_some(n))
        })
    }

    fn wait_taken(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        match self.wait_for(Some(deadline), |engine, device| {
            Ok(engine.all_taken(device.region())?.then_some(()))
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn close(&self) -> io::Result<()> {
        let mut engine = lock(&self.engine);
        self.serve(&mut engine)?;
        engine.close(self.device, self.port).map_err(console_io)
    }

    fn check(&self) -> io::Result<()> {
        let mut engine = lock(&self.engine);
        self.serve(&mut engine)?;
        engine.check_present(self.device).map_err(console_io)?;
        self.notice_server_gone()
    }

    /// Fails once the server is gone. Peer events themselves are not needed:
    /// who is there comes from the peer list.
    fn notice_server_gone(&self) -> io::Result<()> {
        while let Some(event) = self
            .device
            .wait(WaitFor::PEER_EVENTS, Some(Duration::ZERO))
            .map_err(|e| console_io(e.into()))?
        {
            if event == crate::device::Event::ServerGone {
                return Err(console_io(DeviceError::ServerGone.into()));
            }
        }
        Ok(())
    }
}

impl io::Read for Console<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read(buf, self.read_timeout)
    }
}

impl io::Write for Console<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.shared.write(data, self.write_timeout)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Every write is published before it returns.
        Ok(())
    }
}

/// The reading half of a [`Console`].
pub struct ConsoleReader<'d> {
    shared: Arc<Shared<'d>>,
    timeout: Option<Duration>,
}

impl io::Read for ConsoleReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read(buf, self.timeout)
    }
}

impl crate::relay::PortRead for ConsoleReader<'_> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }
}

/// The writing half of a [`Console`].
pub struct ConsoleWriter<'d> {
    shared: Arc<Shared<'d>>,
    timeout: Option<Duration>,
}

impl io::Write for ConsoleWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.shared.write(data, self.timeout)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::relay::PortWrite for ConsoleWriter<'_> {
    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    fn wait_taken(&mut self, timeout: Duration) -> io::Result<bool> {
        self.shared.wait_taken(timeout)
    }

    fn close(&mut self) -> io::Result<()> {
        self.shared.close()
    }

    fn check(&mut self) -> io::Result<()> {
        self.shared.check()
    }
}

impl<'d> crate::relay::DuplexPort for Console<'d> {
    type Reader = ConsoleReader<'d>;
    type Writer = ConsoleWriter<'d>;

    fn split(self) -> (ConsoleReader<'d>, ConsoleWriter<'d>) {
        Console::split(self)
    }
}
