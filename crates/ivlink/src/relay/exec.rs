//! A program attached to a relay: its standard input is the port's input, its
//! standard output and standard error (merged, in the order written) go to the
//! port.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::local::{Wake, WakeState};

/// How often the exit of a child is looked for where pidfds are not available.
const EXIT_TICK: Duration = Duration::from_millis(50);

/// `/bin/sh -c command`: the command a relay runs for `--exec`.
pub fn shell(command: &str) -> Command {
    let mut shell = Command::new("/bin/sh");
    shell.arg("-c").arg(command);
    shell
}

/// A spawned child with its input and its merged output as descriptors.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) input: OwnedFd,
    pub(crate) output: OwnedFd,
}

/// Spawns `command` with its input from a pipe and both outputs into another.
/// `command` is consumed: it holds the pipe's writing end until dropped, and the
/// output only ends once every writer has gone.
pub(crate) fn spawn(mut command: Command) -> io::Result<Spawned> {
    let (output, writer) = pipe_with(PipeFlags::CLOEXEC)?;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer));
    let mut child = command.spawn()?;
    drop(command);
    let input = child
        .stdin
        .take()
        .map(OwnedFd::from)
        .ok_or_else(|| io::Error::other("the child has no standard input"))?;
    Ok(Spawned {
        child,
        input,
        output,
    })
}

/// Waits for `child` to exit; kills it first once `wake` is raised to Stop.
pub(crate) fn watch(mut child: Child, wake: &Wake) -> io::Result<ExitStatus> {
    let pid = Pid::from_child(&child);
    // Opened before the child is reaped, so it names this child and no other.
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).ok();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if wake.state() == WakeState::Stop {
            // std kills only a child it has not reaped: never another process.
            let _ = child.kill();
            return child.wait();
        }
        let tick = crate::doorbell::to_timespec(EXIT_TICK);
        let mut fds = Vec::with_capacity(2);
        fds.push(PollFd::from_borrowed_fd(wake.fd(), PollFlags::IN));
        if let Some(pidfd) = &pidfd {
            fds.push(PollFd::new(pidfd, PollFlags::IN));
        }
        let timeout = if pidfd.is_some() { None } else { Some(&tick) };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        if !fds[0].revents().is_empty() && wake.state() != WakeState::Stop {
            // Finish is raised only once the child's status is known: wait.
            return child.wait();
        }
    }
}
