//! `ivlink completions SHELL`: a completion script generated from the command
//! line's own definitions, so it never falls behind them.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

/// Options of `ivlink completions`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Install, e.g.: ivlink completions bash > /etc/bash_completion.d/ivlink \
    (zsh: a file _ivlink in $fpath; fish: ~/.config/fish/completions/ivlink.fish)"
)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: Shell,
}

impl CompletionsArgs {
    /// Writes the script to standard output (a reader that stops early, such
    /// as `head`, is not an error).
    pub fn run(&self) -> anyhow::Result<()> {
        let script = script(self.shell);
        match std::io::stdout().lock().write_all(&script) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        }
    }
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ivlink", &mut script);
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(script(shell)).unwrap();
            for command in ["server", "inspect", "pingpong", "completions"] {
                assert!(script.contains(command), "{shell}: no {command}");
            }
        }
    }
}
