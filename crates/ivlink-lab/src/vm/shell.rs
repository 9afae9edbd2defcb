//! Driving a guest's console shell: typing commands, waiting for their end
//! markers and for lines the guest prints.

use std::time::{Duration, Instant};

use super::console::{clean_text, find_bytes, find_line};
use super::{Guest, VmError};

/// How long [`Guest::start`] waits for the shell to take the command.
const START_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest command [`Guest::run`] types as it is; longer ones are staged in a
/// file (busybox's line editor stops at 1024 characters, markers included).
const MAX_TYPED_COMMAND: usize = 800;
/// Base64 characters per staging line.
const BASE64_PIECE: usize = 760;
/// What the guest's `/init` prints when the console shell has exited.
const SHELL_EXIT_MARKER: &str = "ivlink-guest: shell exited";

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

impl Guest {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_reference() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\n"), "Zm9vYmFyCg==");
        assert_eq!(abbreviate(&"x".repeat(200)).len(), 103);
    }
}
