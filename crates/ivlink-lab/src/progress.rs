//! Progress where a person waits (an image build, guests booting, a stress run,
//! a benchmark), drawn on standard error with [`indicatif`].
//!
//! Nothing is drawn unless standard error is a terminal (and `TERM` is set and
//! not `dumb`), nor when the caller asks for quiet (`--json`): logs, pipes and
//! CI see only the command's own output.
//!
//! Lines a command prints while a bar is drawn go through
//! [`Progress::suspend`] or [`Progress::lines`], so the bar never cuts them.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::Duration;

use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressState, ProgressStyle,
};

/// How often a spinner turns and its clock advances.
const TICK: Duration = Duration::from_millis(100);
/// The lines of [`Progress::spinner`], [`Progress::bar`] and [`Progress::timed`].
const SPINNER: &str = "{spinner} {msg} ({secs})";
const BAR: &str = "{spinner} [{bar:24}] {pos}/{len} ({secs}) {wide_msg}";
const TIMED: &str = "{spinner} [{bar:24}] {clock} {wide_msg}";

/// Where a command draws its progress: the terminal on standard error, or nowhere.
/// Every [`Step`] it makes shares that terminal (one line each).
#[derive(Debug, Clone)]
pub struct Progress {
    bars: MultiProgress,
}

impl Progress {
    /// Progress on standard error when it is a terminal and `quiet` is false;
    /// else [hidden](Self::hidden).
    pub fn new(quiet: bool) -> Progress {
        if quiet {
            return Progress::hidden();
        }
        // Hidden by indicatif itself unless standard error is a terminal and
        // `TERM` is set and not `dumb`.
        Progress {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }

    /// Progress that draws nothing (its steps still count and time).
    pub fn hidden() -> Progress {
        Progress {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        }
    }

    /// Whether nothing is drawn.
    pub fn is_hidden(&self) -> bool {
        self.bars.is_hidden()
    }

    /// A spinner with `message` and the seconds since it started:
    /// `⠙ guest1: booting (12 s)`.
    pub fn spinner(&self, message: impl Into<Cow<'static, str>>) -> Step {
        self.add(None, SPINNER, message)
    }

    /// A bar of `len` units: units done out of `len`, the seconds so far and
    /// `message` (what is under way, cut to the terminal's width):
    /// `⠙ [=====>    ] 3/20 (4 s) latency: unix`.
    pub fn bar(&self, len: u64, message: impl Into<Cow<'static, str>>) -> Step {
        self.add(Some(len), BAR, message)
    }

    /// A bar over a run of `total`, its position set with [`Step::set_elapsed`],
    /// then `message` (cut to the terminal's width):
    /// `⠙ [=====>    ] 2.0/5.0 s received 12345`.
    pub fn timed(&self, total: Duration, message: impl Into<Cow<'static, str>>) -> Step {
        self.add(Some(millis(total)), TIMED, message)
    }

    /// Runs `f` with every bar taken off the terminal, then draws them again: for
    /// printing lines while bars are shown.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bars.suspend(f)
    }

    /// `out`, its lines written with the bars [suspended](Self::suspend): whole
    /// lines at a time, the rest when flushed or dropped.
    pub fn lines<'a>(&'a self, out: &'a mut dyn Write) -> Lines<'a> {
        Lines {
            progress: self,
            out,
            pending: Vec::new(),
        }
    }

    /// A step of `len` units (a spinner without), shown once styled: made on a
    /// hidden target, as setting its message would draw it.
    fn add(&self, len: Option<u64>, template: &str, message: impl Into<Cow<'static, str>>) -> Step {
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden())
            .with_style(style(template))
            .with_message(message)
            // A step dropped unfinished (an error on the way) leaves no line behind.
            .with_finish(ProgressFinish::AndClear);
        if !self.is_hidden() {
            // No ticker thread for what nobody sees.
            self.bars.add(bar.clone());
            bar.enable_steady_tick(TICK);
        }
        Step { bar }
    }
}

/// One line of [`Progress`]: a spinner or a bar. Dropped unfinished, it clears
/// its line.
#[derive(Debug, Clone)]
pub struct Step {
    bar: ProgressBar,
}

impl Step {
    /// Advances a bar by `n` units.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets how many units of a bar are done.
    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
    }

    /// Sets how far a [timed](Progress::timed) bar is into its run.
    pub fn set_elapsed(&self, elapsed: Duration) {
        self.bar
            .set_position(millis(elapsed).min(self.bar.length().unwrap_or(u64::MAX)));
    }

    /// Replaces the message (what is under way).
    pub fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.bar.set_message(message);
    }

    /// Time since the step started.
    pub fn elapsed(&self) -> Duration {
        self.bar.elapsed()
    }

    /// Stops the step and puts `message` in its place, for good: a line above
    /// every bar, which later lines printed through [`Progress::suspend`] do not
    /// wipe. Nothing when hidden.
    pub fn finish(&self, message: impl AsRef<str>) {
        self.bar.println(message);
        self.bar.finish_and_clear();
    }

    /// Stops the step and removes its line.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }

    /// Whether the step draws nothing.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Runs `f` with this step's bars taken off the terminal (see
    /// [`Progress::suspend`]): for a child process that writes to the terminal.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }
}

/// A writer whose lines appear above the bars; see [`Progress::lines`].
pub struct Lines<'a> {
    progress: &'a Progress,
    out: &'a mut dyn Write,
    pending: Vec<u8>,
}

impl Lines<'_> {
    fn write_out(&mut self, len: usize) -> io::Result<()> {
        let lines: Vec<u8> = self.pending.drain(..len).collect();
        let out = &mut *self.out;
        self.progress.suspend(|| {
            out.write_all(&lines)?;
            out.flush()
        })
    }
}

impl Write for Lines<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(last) = self.pending.iter().rposition(|&b| b == b'\n') {
            self.write_out(last + 1)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.write_out(self.pending.len())?;
        }
        self.out.flush()
    }
}

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The style of every step: `template` with `{secs}` (whole seconds since the
/// start) and `{clock}` (position/length in milliseconds, as seconds).
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        // The templates are this module's own: a bad one is a bug caught by its tests.
        .expect("a valid progress template")
        .progress_chars("=> ")
        .with_key(
            "secs",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{} s", state.elapsed().as_secs());
            },
        )
        .with_key(
            "clock",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let seconds = |ms: u64| ms as f64 / 1000.0;
                let _ = write!(
                    w,
                    "{:.1}/{:.1} s",
                    seconds(state.pos()),
                    seconds(state.len().unwrap_or(0))
                );
            },
        )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_progress_is_hidden_and_its_steps_too() {
        let progress = Progress::new(true);
        assert!(progress.is_hidden());
        let step = progress.bar(3, "counting");
        assert!(step.is_hidden());
        step.inc(2);
        assert_eq!(step.bar.position(), 2);
        step.finish("done");
        assert!(Progress::hidden().spinner("waiting").is_hidden());
    }

    #[test]
    fn progress_is_hidden_when_standard_error_is_no_terminal() {
        // Test binaries' standard error is captured (a pipe) unless run with
        // --nocapture at a terminal.
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            assert!(Progress::new(false).is_hidden());
        }
    }

    #[test]
    fn every_template_is_valid_and_renders_its_keys() {
        for template in [SPINNER, BAR, TIMED] {
            style(template);
        }
        let step = Progress::hidden().timed(Duration::from_secs(5), "run");
        step.set_elapsed(Duration::from_secs(7));
        assert_eq!(step.bar.position(), 5000, "clamped to the run's length");
    }

    #[test]
    fn lines_come_out_whole_and_in_order() {
        let progress = Progress::hidden();
        let mut out = Vec::new();
        {
            let mut lines = progress.lines(&mut out);
            write!(lines, "one ").unwrap();
            writeln!(lines, "line").unwrap();
            write!(lines, "unfinished").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "one line\nunfinished");
    }
}
