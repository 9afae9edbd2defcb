//! `ivlink-iceoryx2-compare`: ivlink against iceoryx2 publish-subscribe,
//! measured in one run on this machine.
//!
//! ivlink's figures come from `ivlink bench` itself (its public API); the
//! iceoryx2 figures from the same ping-pong and stream loops over iceoryx2's
//! `ipc` service type, with the same two CPUs, counts and summaries. The
//! executable is also both sides' peer process (hidden subcommands).

mod cli;
mod compare;
mod iox;
mod ivlink_side;
mod json;
mod merge;
mod run;
mod settings;
mod table;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use iceoryx2::prelude::{LogLevel, set_log_level_from_env_or};
use ivlink_lab::bench::Placement;

use cli::{Cli, Options, Role};

fn main() -> ExitCode {
    // iceoryx2 logs to standard error; warnings and worse unless IOX2_LOG_LEVEL says.
    set_log_level_from_env_or(LogLevel::Warn);
    let cli = Cli::parse();
    let result = match &cli.role {
        Some(Role::IvlinkPeer { job }) => ivlink_side::run_peer(job),
        Some(Role::Iceoryx2Peer(args)) => iox::run_peer(args),
        None => compare(&cli.options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ivlink-iceoryx2-compare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Measures both, prints the comparison, and fails if iceoryx2 left any of
/// the run's services behind.
fn compare(options: &Options) -> anyhow::Result<()> {
    let settings = options.settings();
    let placement = Placement::choose(settings.pin)?;
    let show_progress = std::io::stderr().is_terminal();
    let mut progress = |line: &str| {
        if show_progress {
            eprintln!("compare: {line}");
        }
    };
    let comparison = run::run(&settings, &placement, &mut progress)?;
    let mut out = std::io::stdout().lock();
    if options.json {
        writeln!(out, "{}", comparison.to_json()?)?;
    } else {
        comparison.write_table(&mut out)?;
    }
    out.flush()?;
    let leftovers = &comparison.iceoryx2.leftovers;
    if !leftovers.is_empty() {
        bail!(
            "iceoryx2 left {} service(s) or node(s) of this run behind (under {}/)",
            leftovers.len(),
            iox::SERVICE_ROOT
        );
    }
    Ok(())
}
