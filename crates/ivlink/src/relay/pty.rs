//! A pseudo-terminal pair for a relay: the relay works the master; another
//! program (screen, picocom, agetty, a test) opens the slave by its path.
//!
//! The pty keeps a slave descriptor of its own open for its whole life: when the
//! last slave descriptor closes, reads of the master fail with EIO, so without it
//! every program that opens and closes the path would end the relay. Bytes from
//! the port wait in the pty while nobody has it open (up to the kernel's buffer,
//! then the port's own ring holds the rest: nothing is dropped).
//!
//! A hangup still closes the pair's far side: when the session leader of a login
//! on the slave exits (agetty, login, a shell), the kernel hangs up every slave
//! descriptor, ours included, and the master reads EIO until the slave is opened
//! again. The relay then opens the path anew ([`reopen_slave`]) and carries on.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, open};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

/// A pseudo-terminal pair in raw mode.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    path: PathBuf,
}

impl Pty {
    /// Opens a new pair (`posix_openpt`, `grantpt`, `unlockpt`, `ptsname`),
    /// opens its slave and puts it in raw mode, so bytes pass unchanged until a
    /// program that opens it sets modes of its own.
    pub fn open() -> io::Result<Pty> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let path = PathBuf::from(OsString::from_vec(name.into_bytes()));
        let slave = reopen_slave(&path)?;
        let mut termios = tcgetattr(&slave)?;
        termios.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &termios)?;
        Ok(Pty {
            master,
            slave,
            path,
        })
    }

    /// The slave's path (`/dev/pts/N`), for other programs to open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master side, which the relay reads and writes.
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// The slave descriptor this pair keeps open.
    pub fn slave(&self) -> BorrowedFd<'_> {
        self.slave.as_fd()
    }

    /// The master, the slave descriptor held open, and the slave's path.
    pub(crate) fn into_parts(self) -> (OwnedFd, OwnedFd, PathBuf) {
        (self.master, self.slave, self.path)
    }
}

/// Opens the slave at `path` again (after a hangup made the master read EIO).
pub(crate) fn reopen_slave(path: &Path) -> io::Result<OwnedFd> {
    Ok(open(
        path,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}
