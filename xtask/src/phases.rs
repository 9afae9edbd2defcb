//! The numbered phases of a long task, each a spinner on standard error while it
//! runs (at a terminal only), and the task's own lines printed above them.

use std::fmt::Display;

use ivlink_lab::progress::{Progress, Step};

/// A task of `total` phases, started one after the other.
#[derive(Debug)]
pub struct Phases {
    progress: Progress,
    total: usize,
    started: usize,
}

impl Phases {
    /// `total` phases, shown when standard error is a terminal.
    pub fn new(total: usize) -> Phases {
        Phases {
            progress: Progress::new(false),
            total,
            started: 0,
        }
    }

    /// Where the phases are drawn (for [`say`]).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The next phase: `[3/8] what (12 s)` until the step is dropped or cleared.
    pub fn start(&mut self, what: impl Display) -> Step {
        self.started += 1;
        self.progress
            .spinner(format!("[{}/{}] {what}", self.started, self.total))
    }
}

/// Prints `line` on standard output, above any spinner of `progress`.
pub fn say(progress: &Progress, line: impl Display) {
    progress.suspend(|| println!("{line}"));
}
