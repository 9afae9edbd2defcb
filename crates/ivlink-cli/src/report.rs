//! How commands print their reports: text for people, or `--json` for machines.
//!
//! With `--json`, standard output carries JSON only: one pretty object for a
//! report printed once at the end, or one compact object per line for commands
//! that report as things happen (JSON lines). Progress, notes and logs go to
//! standard error either way. Values are spelled as on the command line
//! ([`cli_name`]), so a report can be fed back as arguments.

use std::io::Write;

use serde::Serialize;

/// Prints `value` as one pretty JSON object on standard output.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

/// The spelling of `value` on the command line (`native`, `hvl-zephyr`, ...).
pub fn cli_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// Where a command's running report goes: text lines, or JSON lines, on
/// standard output; each line flushed as it is written, so a pipe sees it at once.
#[derive(Debug, Clone, Copy)]
pub struct Lines {
    json: bool,
}

impl Lines {
    /// Text lines, or JSON lines when `json`.
    pub fn new(json: bool) -> Self {
        Lines { json }
    }

    /// Whether lines are JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `text`, or `json` as one line.
    pub fn line(
        &self,
        text: impl std::fmt::Display,
        json: serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{json}")?;
        } else {
            writeln!(stdout, "{text}")?;
        }
        stdout.flush()?;
        Ok(())
    }

    /// Prints `text` only in text mode (a line with nothing for machines).
    pub fn text(&self, text: impl std::fmt::Display) -> anyhow::Result<()> {
        if !self.json {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{text}")?;
            stdout.flush()?;
        }
        Ok(())
    }

    /// Where prose goes: standard output for text, standard error with JSON
    /// (so standard output stays JSON only).
    pub fn prose(&self) -> Box<dyn Write> {
        if self.json {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    }
}

/// The exit status of a command whose reader went away (`ivlink dump | head -1`):
/// what a shell reports for a program ended by SIGPIPE, 128 + 13.
pub const STDOUT_CLOSED: u8 = 141;

/// Whether `err` comes from writing to standard output after its reader went
/// away. A broken pipe elsewhere (a stream whose peer died) is a real error.
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    let broken_pipe = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    broken_pipe && stdout_has_no_reader()
}

/// Whether standard output is a pipe or socket whose other end is closed.
fn stdout_has_no_reader() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&now)).is_ok()
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

/// Makes `println!` into a closed pipe end the process quietly with
/// [`STDOUT_CLOSED`], as SIGPIPE would (Rust ignores SIGPIPE, so the write
/// fails and `println!` panics instead).
pub fn exit_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(STDOUT_CLOSED.into());
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, clap::ValueEnum)]
    enum Shape {
        Native,
        HvlZephyr,
    }

    #[test]
    fn values_are_spelled_as_on_the_command_line() {
        assert_eq!(cli_name(&Shape::Native), "native");
        assert_eq!(cli_name(&Shape::HvlZephyr), "hvl-zephyr");
    }
}
