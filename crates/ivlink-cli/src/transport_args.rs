//! How every peer-side command picks its transport: `--socket` (a host peer of a
//! server, the default), `--file` (a plain shared file, polled) or `--device` (a
//! Linux guest on the ivshmem PCI device).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::grammar::{parse_duration, parse_uint};
use ivlink::Transport;
use ivlink::transport::guest::GuestMode;
use ivlink::transport::host::HostConfig;

/// Transport options shared by every peer-side command.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// Server socket to connect to as a host peer
    #[arg(short = 'S', long, value_name = "PATH", default_value = ivlink::DEFAULT_SOCKET_PATH, conflicts_with = "file")]
    pub socket: PathBuf,

    /// Map a plain shared file instead of connecting to a server (no doorbell: polling)
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// With --file: the peer id this process uses for itself (also spelled --id,
    /// except where --id is a message's id)
    // `--self-id` everywhere, so that the same flag means the same thing in every
    // command; the older `--id` stays as a hidden alias where nothing else owns it.
    #[arg(
        long,
        alias = "id",
        value_name = "ID",
        default_value_t = 0,
        requires = "file",
        value_parser = parse_uint::<u16>
    )]
    pub self_id: u16,

    /// In a guest: use the ivshmem PCI device; `--device` alone (or `--device=auto`)
    /// finds it, `--device=0000:00:03.0` (or `=00:03.0`) names it
    // The value needs `=`, so that `notify --device 0 1` reads 0 as the peer.
    #[arg(
        long,
        value_name = "ADDRESS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "auto",
        conflicts_with_all = ["socket", "file"]
    )]
    pub device: Option<String>,

    /// With --device: vfio (doorbell and interrupts, needs ivshmem-doorbell, an IOMMU
    /// and root), sysfs (resource2, polling) or auto (vfio for ivshmem-doorbell,
    /// sysfs for ivshmem-plain)
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        default_value_t = DeviceMode::Auto,
        requires = "device"
    )]
    pub device_mode: DeviceMode,

    /// Vectors to expect for this peer (the protocol never says; by default setup
    /// ends when the server goes quiet)
    #[arg(long = "expect-vectors", value_name = "N", value_parser = parse_uint::<usize>)]
    pub expect_vectors: Option<usize>,

    /// How long to wait for the server's setup messages (500ms, 5s, ...; a bare number is seconds)
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration)]
    pub setup_timeout: Duration,
}

/// How `--device` reaches the PCI device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceMode {
    /// VFIO for ivshmem-doorbell, sysfs for ivshmem-plain
    Auto,
    /// VFIO: the region, the doorbell and MSI-X interrupts
    Vfio,
    /// sysfs resource2: the region only, polled
    Sysfs,
}

impl From<DeviceMode> for GuestMode {
    fn from(mode: DeviceMode) -> Self {
        match mode {
            DeviceMode::Auto => GuestMode::Auto,
            DeviceMode::Vfio => GuestMode::Vfio,
            DeviceMode::Sysfs => GuestMode::Sysfs,
        }
    }
}

impl TransportArgs {
    /// The transport these options name.
    pub fn transport(&self) -> Transport {
        if let Some(device) = &self.device {
            return Transport::Guest {
                device: (device != "auto").then(|| device.clone()),
                mode: self.device_mode.into(),
            };
        }
        match &self.file {
            Some(path) => Transport::File {
                path: path.clone(),
                id: self.self_id,
            },
            None => Transport::Host(HostConfig {
                socket_path: self.socket.clone(),
                vectors: self.expect_vectors,
                setup_timeout: self.setup_timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        transport: TransportArgs,
        /// A positional, as `notify` has, to check `--device` does not eat it.
        rest: Vec<String>,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ivlink").chain(args.iter().copied()))
    }

    #[test]
    fn device_alone_or_auto_finds_the_device() {
        for args in [&["--device"][..], &["--device=auto"]] {
            let cli = parse(args).unwrap();
            assert_eq!(
                cli.transport.transport(),
                Transport::Guest {
                    device: None,
                    mode: GuestMode::Auto
                },
                "{args:?}"
            );
        }
    }

    #[test]
    fn device_takes_an_address_and_a_mode() {
        let cli = parse(&["--device=00:03.0", "--device-mode", "vfio"]).unwrap();
        assert_eq!(
            cli.transport.transport(),
            Transport::Guest {
                device: Some("00:03.0".into()),
                mode: GuestMode::Vfio
            }
        );
        let cli = parse(&["--device-mode", "sysfs", "--device"]).unwrap();
        assert_eq!(
            cli.transport.transport(),
            Transport::Guest {
                device: None,
                mode: GuestMode::Sysfs
            }
        );
    }

    #[test]
    fn device_leaves_the_next_argument_to_the_command() {
        // `ivlink notify --device 0 1 "from guest"`: 0 is the peer, not an address.
        let cli = parse(&["--device", "0", "1", "from guest"]).unwrap();
        assert_eq!(cli.rest, ["0", "1", "from guest"]);
        assert_eq!(
            cli.transport.transport(),
            Transport::Guest {
                device: None,
                mode: GuestMode::Auto
            }
        );
    }

    #[test]
    fn the_own_id_is_self_id_and_still_id() {
        for flag in ["--self-id", "--id"] {
            let cli = parse(&["--file", "/tmp/f", flag, "3"]).unwrap();
            assert_eq!(
                cli.transport.transport(),
                Transport::File {
                    path: "/tmp/f".into(),
                    id: 3
                },
                "{flag}"
            );
        }
        let refused = parse(&["--file", "/tmp/f", "--self-id", "70000"]).unwrap_err();
        assert!(
            refused.to_string().contains("too large (at most 65535)"),
            "{refused}"
        );
    }

    #[test]
    fn the_setup_timeout_takes_units_and_bare_seconds() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("10", Duration::from_secs(10)),
        ] {
            let cli = parse(&["--setup-timeout", text]).unwrap();
            let Transport::Host(config) = cli.transport.transport() else {
                panic!("not a host transport");
            };
            assert_eq!(config.setup_timeout, expected, "{text}");
        }
        assert!(parse(&["--setup-timeout", "2x"]).is_err());
    }

    #[test]
    fn device_excludes_socket_and_file_and_mode_needs_device() {
        assert!(parse(&["--device", "--socket", "/tmp/s"]).is_err());
        assert!(parse(&["--device", "--file", "/tmp/f"]).is_err());
        assert!(parse(&["--device-mode", "vfio"]).is_err());
        assert!(parse(&["--device-mode", "uio", "--device"]).is_err());
        // Without --device the default socket is still used.
        assert!(matches!(
            parse(&[]).unwrap().transport.transport(),
            Transport::Host(_)
        ));
    }
}
