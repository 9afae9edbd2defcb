//! The `ivlink` command line: every command's arguments (also what completions and
//! man pages are generated from) and the dispatch to each command.

use std::process::ExitCode;

use crate::commands::{
    bench, channel, dump::DumpArgs, format::FormatArgs, inspect::InspectArgs, listen::ListenArgs,
    mailbox, notify::NotifyArgs, stress, testbed,
};
use crate::logging::{self, LogFormat, LogTarget};
use crate::server_cmd::ServerArgs;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Shared memory and doorbells between QEMU VMs and processes, over ivshmem.
#[derive(Debug, Parser)]
#[command(name = "ivlink", version, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `ivlink` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an ivshmem server (QEMU-compatible; `ivshmem-server` takes QEMU's short flags)
    Server(Box<ServerArgs>),
    /// Interactive client: QEMU's ivshmem-client commands (dump, int, help)
    Client(ClientArgs),
    /// Show the shared memory, this peer's id, its vectors and the known peers
    Dump(DumpArgs),
    /// Write a message into the region and ring a peer's vector
    Notify(NotifyArgs),
    /// Print each notification and the message in the region
    Listen(ListenArgs),
    /// Start a server and peers on private paths, exchange messages, check them
    Testbed(testbed::TestbedArgs),
    /// One peer of the test bed (started by `ivlink testbed`)
    #[command(hide = true)]
    TestbedPeer(testbed::TestbedPeerArgs),
    /// Named channel: send messages to a peer, receive from every peer
    #[command(subcommand)]
    Channel(channel::ChannelCommand),
    /// `ivlink channel send`, as spelled before channels had their own command
    #[command(hide = true)]
    Send(channel::SendArgs),
    /// `ivlink channel recv`, as spelled before channels had their own command
    #[command(hide = true)]
    Recv(channel::RecvArgs),
    /// Zephyr-IPM-like mailbox: send an id and data to a peer, listen, info
    #[command(subcommand, visible_alias = "ipm")]
    Mailbox(mailbox::MailboxCommand),
    /// Give the region an empty ivlink directory (forgets every section; takes over foreign contents)
    Format(FormatArgs),
    /// Decode a live region: directory, sections, channels, ring indices, mailboxes, streams, inconsistencies
    Inspect(InspectArgs),
    /// Peers flood each other through a channel; every message checked (lost, corrupted, reordered)
    Stress(stress::StressArgs),
    /// One peer of a stress run (started by `ivlink stress`)
    #[command(hide = true)]
    StressPeer(stress::StressPeerArgs),
    /// Measure ivlink between two processes against pipes, sockets, eventfd and a plain ring; --pairs and --server-peers: how cost grows with peers
    Bench(bench::BenchArgs),
    /// The peer process of a measurement (started by `ivlink bench`)
    #[command(hide = true)]
    BenchPeer(bench::BenchPeerArgs),
    /// Like nc: copy stdin to a byte stream to a peer and the stream to stdout
    Stream(crate::commands::stream_cmd::StreamArgs),
    /// RPMsg (OpenAMP-compatible): echo on the remote side, send or bench on the host side
    #[command(subcommand)]
    Rpmsg(crate::commands::rpmsg::RpmsgCommand),
    /// Virtio console without a hypervisor (virtio-mmio in the region): device or driver side
    #[command(subcommand, after_help = CONSOLE_HELP)]
    Console(crate::commands::console::ConsoleCommand),
    /// NTB switch on the region: the kernel's ntb_tool, ntb_pingpong and ntb_perf
    #[command(subcommand)]
    Ntb(crate::commands::ntb::NtbCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(crate::commands::completions::CompletionsArgs),
}

/// How `ivlink console` picks a port of several.
const CONSOLE_HELP: &str = "Several ports: `device --ports 3 --port-names console,log,data` names them, \
and either side picks one with `--port log` (or by number, `--port 1`).";

/// Options of `ivlink client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Server socket
    #[arg(short = 'S', long, value_name = "PATH", default_value = ivlink::DEFAULT_SOCKET_PATH)]
    pub socket: std::path::PathBuf,
    /// Print protocol details
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// The `ivlink` command as parsed: [`Cli`], with values such as `-1` handed to
/// the option's parser (which says what is wrong with them) rather than taken
/// for an unknown flag.
pub fn command() -> clap::Command {
    crate::grammar::negative_numbers_as_values(Cli::command())
}

/// Parses the command line and runs the command: `ivlink`'s `main`.
pub fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    crate::report::exit_quietly_when_stdout_closes();
    if !matches!(cli.command, Command::Server(_)) {
        let _ = logging::init(
            tracing::Level::WARN,
            LogFormat::Text,
            LogTarget::Stderr,
            None,
        );
    }
    let result = match &cli.command {
        Command::Server(args) => args.run(),
        Command::Client(args) => crate::client::run_interactive(&args.socket, args.verbose),
        Command::Dump(args) => args.run(),
        Command::Notify(args) => args.run(),
        Command::Listen(args) => args.run(),
        Command::Testbed(args) => args.run(),
        Command::TestbedPeer(args) => args.run(),
        Command::Channel(command) => command.run(),
        Command::Send(args) => args.run(),
        Command::Recv(args) => args.run(),
        Command::Mailbox(command) => command.run(),
        Command::Format(args) => args.run(),
        Command::Inspect(args) => args.run(),
        Command::Stress(args) => args.run(),
        Command::StressPeer(args) => args.run(),
        Command::Bench(args) => args.run(),
        Command::BenchPeer(args) => args.run(),
        Command::Stream(args) => args.run(),
        Command::Rpmsg(command) => command.run(),
        Command::Ntb(command) => command.run(),
        Command::Completions(args) => args.run(),
        Command::Console(command) => command.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if crate::report::is_stdout_closed(&err) => {
            ExitCode::from(crate::report::STDOUT_CLOSED)
        }
        Err(err) => match err.downcast_ref::<crate::relay_args::ExitWith>() {
            Some(exit) => {
                if let Some(message) = &exit.message {
                    eprintln!("ivlink: {message}");
                }
                ExitCode::from(exit.code)
            }
            None => {
                eprintln!("ivlink: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = command()
            .try_get_matches_from(std::iter::once("ivlink").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn every_command_is_well_formed() {
        // Catches, among others, two options of one command on the same flag
        // (`mailbox send --id` against the transport's `--id` alias).
        command().debug_assert();
    }

    #[test]
    fn negative_values_reach_the_parsers() {
        let refused = parse(&["listen", "--timeout", "-1"]).unwrap_err();
        assert!(refused.to_string().contains("negative"), "{refused}");
        let refused = parse(&["notify", "-1", "0"]).unwrap_err();
        assert!(refused.to_string().contains("negative"), "{refused}");
    }

    #[test]
    fn options_take_the_shared_grammar() {
        let Command::Ntb(crate::commands::ntb::NtbCommand::Pingpong(pingpong)) =
            parse(&["ntb", "pingpong", "--delay-ms", "50"])
                .unwrap()
                .command
        else {
            panic!("not ntb pingpong");
        };
        assert_eq!(pingpong.delay_ms, Some(50));
        assert!(parse(&["ntb", "pingpong", "--delay", "50ms", "--delay-ms", "50"]).is_err());
        let Command::Rpmsg(crate::commands::rpmsg::RpmsgCommand::Send(send)) =
            parse(&["rpmsg", "send", "hi", "--wait", "inf", "--timeout", "250ms"])
                .unwrap()
                .command
        else {
            panic!("not rpmsg send");
        };
        assert_eq!(send.wait, crate::grammar::FOREVER);
        assert_eq!(send.timeout, std::time::Duration::from_millis(250));
        let Command::Mailbox(mailbox::MailboxCommand::Send(send)) =
            parse(&["ipm", "send", "0", "--id", "7", "--max-data", "4K"])
                .unwrap()
                .command
        else {
            panic!("not mailbox send");
        };
        assert_eq!((send.message_id, send.mailbox.max_data), (7, 4096));
    }
}
