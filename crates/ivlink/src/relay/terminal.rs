//! Raw terminal mode for the time of a relay: keys go to the peer as typed (no
//! line editing, no echo, Ctrl-C and Ctrl-Z as bytes rather than signals), and
//! the terminal's settings come back whatever way the relay ends.
//!
//! Input is fully raw (`cfmakeraw`); output keeps its newline to CR-NL mapping
//! (`OPOST | ONLCR`), since a peer without a terminal of its own (a shell over
//! pipes) sends bare newlines that would otherwise step down the screen, and a
//! peer with one sends CR-NL, which the mapping leaves looking the same.
//!
//! [`RawMode`] restores on drop, so returns, errors and unwinding panics all
//! restore; a relay stopped by a signal returns normally (the signal only makes
//! its stop descriptor readable), so that restores too. Only SIGKILL cannot.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::termios::{OptionalActions, OutputModes, Termios, isatty, tcgetattr, tcsetattr};

/// The key that ends a relay from a terminal in raw mode: Ctrl-] (0x1d), as in
/// telnet and `virsh console`.
pub const ESCAPE: u8 = 0x1d;

/// A terminal in raw mode until this is dropped (or [`restore`](Self::restore)d).
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Saves the settings of the terminal `fd` and puts it in raw mode
    /// (`cfmakeraw`, newlines still shown as CR-NL). Fails if `fd` is not a
    /// terminal.
    pub fn enter(fd: impl AsFd) -> io::Result<RawMode> {
        let fd = fd.as_fd().try_clone_to_owned()?;
        let saved = tcgetattr(&fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        raw.output_modes |= OutputModes::OPOST | OutputModes::ONLCR;
        tcsetattr(&fd, OptionalActions::Now, &raw)?;
        Ok(RawMode { fd, saved })
    }

    /// Puts the saved settings back now.
    pub fn restore(self) -> io::Result<()> {
        let result = self.put_back();
        std::mem::forget(self);
        result
    }

    fn put_back(&self) -> io::Result<()> {
        // Drain: output already written is shown with the settings it was written under.
        Ok(tcsetattr(&self.fd, OptionalActions::Drain, &self.saved)?)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = self.put_back();
    }
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: impl AsFd) -> bool {
    isatty(fd)
}
