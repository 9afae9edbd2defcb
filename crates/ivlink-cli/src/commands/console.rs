//! `ivlink console`: a virtio console between peers without a hypervisor: the
//! device side prints what the driver writes, the driver side is a serial port
//! on standard input and output (or a pty, or a command).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ivlink::console::{
    Console, ConsoleOptions, ConsoleRole, HVL_ZEPHYR_ADDRESS_BASE, MAX_PORT_NAME, MAX_PORTS,
    NativeShape, Notice, PortSelector, Profile,
};
use ivlink::relay::{PortRead, PortWrite};

use crate::grammar::{
    parse_duration, parse_duration_was_ms, parse_duration_was_us, parse_size_as, parse_uint,
};
use crate::relay_args::{RELAY_HELP, RelayArgs};
use crate::transport_args::TransportArgs;

/// `ivlink console` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ConsoleCommand {
    /// The console device: prints the driver's setup and what it writes; standard
    /// input goes to the driver
    #[command(after_help = RELAY_HELP)]
    Device(DeviceArgs),
    /// The console driver: the port on standard input and output
    #[command(after_help = RELAY_HELP)]
    Driver(DriverArgs),
    /// Throughput and keystroke latency of a console between two processes,
    /// against a UNIX socket and a pty pair measured in the same run
    Bench(super::console_bench::ConsoleBenchArgs),
    /// The peer process of `ivlink console bench`
    #[command(hide = true)]
    BenchPeer(super::bench::BenchPeerArgs),
}

impl ConsoleCommand {
    /// Runs the subcommand.
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            ConsoleCommand::Device(args) => args.run(),
            ConsoleCommand::Driver(args) => args.run(),
            ConsoleCommand::Bench(args) => args.run(),
            ConsoleCommand::BenchPeer(args) => {
                ivlink_lab::bench::console::run_peer(&args.job)?;
                Ok(())
            }
        }
    }
}

/// The layouts on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// ivlink's own, in the region directory: any start order, either side may restart
    Native,
    /// The Zephyr hypervisor-less virtio-mmio serial sample: block at 0, legacy, 4-entry rings
    HvlZephyr,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Native => Profile::Native,
            ProfileArg::HvlZephyr => Profile::HvlZephyr,
        }
    }
}

/// Options both sides share.
#[derive(Debug, Clone, Args)]
pub struct SideArgs {
    /// Layout of the region
    #[arg(long, value_enum, default_value_t = ProfileArg::Native)]
    pub profile: ProfileArg,

    /// native: the section's name in the region directory
    #[arg(long, value_name = "NAME", default_value = "console")]
    pub section: String,

    /// The port to use, by number or by the name the device gives it (multiport
    /// consoles have several)
    #[arg(long, value_name = "N|NAME", default_value = "0")]
    pub port: PortSelector,

    /// native, if creating: ports (more than 1 negotiates multiport)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_uint::<u32>)]
    pub ports: u32,

    /// native, if creating: entries per queue (a power of two up to 64)
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = parse_uint::<u16>)]
    pub buffers: u16,

    /// native, if creating: bytes per driver buffer (a multiple of 64: 4096, 4K, ...)
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = parse_size_as::<u32>)]
    pub buffer_size: u32,

    /// The doorbell vector
    #[arg(long, value_name = "V", default_value_t = 0, value_parser = parse_uint::<u16>)]
    pub vector: u16,

    /// Peer to ring (default: the native header says; hvl-zephyr: the device rings
    /// its own id + 1, the driver its own id - 1)
    #[arg(long, value_name = "ID", value_parser = parse_uint::<u16>)]
    pub peer: Option<u16>,

    /// hvl-zephyr: the region's start as the driver VM addresses it (the sample's
    /// device prints it as "Device Base address")
    #[arg(long, value_name = "ADDR", value_parser = super::rpmsg::parse_address,
          default_value_t = HVL_ZEPHYR_ADDRESS_BASE)]
    pub address_base: u64,

    /// How long to spin before sleeping on the doorbell (50us, 1ms, ...)
    #[arg(long, value_name = "TIME", default_value = "50us", value_parser = parse_duration_was_us)]
    pub spin: Duration,

    /// How long the other side may be away (not started, or restarting) before
    /// giving up (30s, 5m, ...; a bare number is seconds); 0 waits forever
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Where the port goes
    #[command(flatten)]
    pub relay: RelayArgs,

    /// How to reach the region
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl SideArgs {
    fn options(&self, role: ConsoleRole) -> ConsoleOptions {
        ConsoleOptions {
            section: self.section.clone(),
            shape: NativeShape {
                ports: self.ports,
                num: self.buffers,
                buf_size: self.buffer_size,
            },
            port: self.port.clone(),
            vector: self.vector,
            peer: self.peer,
            address_base: self.address_base,
            spin: self.spin,
            absence_timeout: (!self.timeout.is_zero()).then_some(self.timeout),
            ..ConsoleOptions::new(self.profile.into(), role)
        }
    }
}

/// Options of `ivlink console device`.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// The console size announced to the driver, COLSxROWS
    #[arg(long, value_name = "COLSxROWS", value_parser = parse_size, default_value = "80x25")]
    pub size: (u16, u16),

    /// The ports' names, port 0 first, sent to the driver (multiport), which may
    /// then choose a port by name: `--port-names console,log`
    #[arg(long, value_name = "NAME,...", value_parser = parse_port_names)]
    pub port_names: Option<PortNames>,

    /// The console
    #[command(flatten)]
    pub side: SideArgs,
}

/// The names of `--port-names`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNames(Vec<String>);

fn parse_port_names(s: &str) -> Result<PortNames, String> {
    let names: Vec<String> = s.split(',').map(str::to_owned).collect();
    if names.len() > MAX_PORTS {
        return Err(format!("at most {MAX_PORTS} names"));
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.len() > MAX_PORT_NAME {
            return Err(format!("'{name}': a name is 1 to {MAX_PORT_NAME} bytes"));
        }
        if name.parse::<u32>().is_ok() {
            return Err(format!(
                "'{name}': a name is not a number (--port takes both)"
            ));
        }
        if names[..i].contains(name) {
            return Err(format!("'{name}' names two ports"));
        }
    }
    Ok(PortNames(names))
}

fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("'{s}' is not a size such as 80x25");
    let (cols, rows) = s.split_once('x').ok_or_else(bad)?;
    Ok((
        cols.parse().map_err(|_| bad())?,
        rows.parse().map_err(|_| bad())?,
    ))
}

impl DeviceArgs {
    /// Serves the console until both directions have ended.
    pub fn run(&self) -> anyhow::Result<()> {
        let relay = self.side.relay.prepare("console")?;
        let device = self.side.transport.transport().open()?;
        let names = self.port_names.as_ref().map_or(&[][..], |n| &n.0[..]);
        if names.len() > self.side.ports as usize {
            anyhow::bail!(
                "--port-names gives {} names to {} ports (--ports)",
                names.len(),
                self.side.ports
            );
        }
        let options = ConsoleOptions {
            size: self.size,
            port_names: names.to_vec(),
            ..self.side.options(ConsoleRole::Device)
        };
        let console = Console::open(&*device, &options).context("opening the console")?;
        console.set_observer(Box::new(print_notice));
        relay.run(console)
    }
}

/// Tells on standard error what the console does.
fn print_notice(notice: &Notice) {
    match notice {
        // Emergency output is the driver's text, as it comes.
        Notice::Emergency(byte) => {
            let mut err = std::io::stderr();
            let _ = err.write_all(&[*byte]).and_then(|()| err.flush());
        }
        notice => eprintln!("{notice}"),
    }
}

/// Options of `ivlink console driver`.
#[derive(Debug, Clone, Args)]
pub struct DriverArgs {
    /// Write the Zephyr sample's "Hello World" lines instead of standard input
    #[arg(long, conflicts_with_all = ["pty", "exec"])]
    pub demo: bool,

    /// --demo: time between lines (1640ms, 2s, ...)
    #[arg(long, value_name = "TIME", default_value = "1640ms", requires = "demo",
          value_parser = parse_duration_was_ms)]
    pub interval: Duration,

    /// --demo: lines to write before ending (0: until stopped)
    #[arg(long, value_name = "N", default_value_t = 0, requires = "demo",
          value_parser = parse_uint::<u64>)]
    pub count: u64,

    /// Write TEXT through the emergency register (F_EMERG_WRITE) first; the
    /// device prints it on standard error
    #[arg(long, value_name = "TEXT")]
    pub emergency: Option<String>,

    /// The console
    #[command(flatten)]
    pub side: SideArgs,
}

impl DriverArgs {
    /// Runs the driver until both directions have ended.
    pub fn run(&self) -> anyhow::Result<()> {
        if self.demo {
            return self.run_demo();
        }
        let relay = self.side.relay.prepare("console")?;
        let device = self.side.transport.transport().open()?;
        let console = Console::open(&*device, &self.side.options(ConsoleRole::Driver))
            .context("opening the console")?;
        console.set_observer(Box::new(print_notice));
        if let Some(text) = &self.emergency {
            let timeout = self.side.timeout.max(Duration::from_secs(1));
            console
                .emergency_write(text.as_bytes(), timeout)
                .context("writing through the emergency register")?;
        }
        relay.run(console)
    }

    /// The sample's demo: a line every `interval`, what the device sends to
    /// standard output.
    fn run_demo(&self) -> anyhow::Result<()> {
        let device = self.side.transport.transport().open()?;
        let console = Console::open(&*device, &self.side.options(ConsoleRole::Driver))
            .context("opening the console")?;
        console.set_observer(Box::new(print_notice));
        let (mut rx, mut tx) = console.split();
        let host = hostname();
        let started = Instant::now();
        let interval = self.interval;
        std::thread::scope(|scope| -> anyhow::Result<()> {
            scope.spawn(move || {
                rx.set_read_timeout(None);
                let mut buf = [0u8; 4096];
                let mut out = std::io::stdout();
                while let Ok(n) = rx.read(&mut buf) {
                    if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            });
            let mut sent = 0u64;
            while self.count == 0 || sent < self.count {
                if sent > 0 {
                    std::thread::sleep(interval);
                }
                let line = demo_line(started.elapsed().as_millis(), &host);
                tx.write_all(line.as_bytes())
                    .context("writing to the console")?;
                sent += 1;
            }
            let patience = self.side.timeout.max(Duration::from_secs(1));
            if !tx.wait_taken(patience)? {
                anyhow::bail!("the device did not take every line within {patience:?}");
            }
            tx.close().context("closing the console")?;
            // Done once the device ends its output too, like any relay.
            Ok(())
        })
    }
}

/// The seed's line: `[<ms>]: Hello World I'm <host> sending data over Virtio-MMIO Serial Port`.
pub fn demo_line(ms: u128, host: &str) -> String {
    format!("[{ms}]: Hello World I'm {host} sending data over Virtio-MMIO Serial Port\n")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "ivlink".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_lines_read_as_the_sample_writes_them() {
        assert_eq!(parse_size("132x43"), Ok((132, 43)));
        assert!(parse_size("80").is_err());
        assert!(parse_size("80x-1").is_err());
        assert_eq!(
            parse_port_names("console,log"),
            Ok(PortNames(vec!["console".into(), "log".into()]))
        );
        for bad in ["a,,b", "a,a", "7", &"x".repeat(57), "a,b,c,d,e,f,g,h,i"] {
            assert!(parse_port_names(bad).is_err(), "{bad}");
        }
        assert_eq!(
            demo_line(8010, "qemu_cortex_a53"),
            "[8010]: Hello World I'm qemu_cortex_a53 sending data over Virtio-MMIO Serial Port\n"
        );
    }
}
