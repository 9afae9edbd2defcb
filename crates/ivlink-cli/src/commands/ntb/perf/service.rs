//! ntb_perf's service: the command channel over message registers and the
//! window setup it drives, the same on every port. On link up each port
//! sends `PERF_CMD_SSIZE` (the size it wants to write); the peer opens an
//! inbound window of that size for it and answers `PERF_CMD_SXLAT` (where
//! the window is); the first points its outbound window there. On link down
//! (and on exit) `PERF_CMD_CLEAR` closes both, locally, as in the kernel.

use std::collections::VecDeque;
use std::time::Duration;

use ivlink::ntb::{Events, MsgWrite, Ntb, NtbError, Window};

/// "Here is the size I want to write" (`PERF_CMD_SSIZE`).
pub const CMD_SSIZE: u32 = 0;
/// "Your window is at this address" (`PERF_CMD_SXLAT`).
pub const CMD_SXLAT: u32 = 2;
/// ivlink's own: "answer every ring of your doorbell bit by ringing bit N"
/// (`u64::MAX`: stop), for the doorbell latency run.
pub const CMD_ECHO: u32 = 16;
/// Echo off.
pub const ECHO_OFF: u64 = u64::MAX;

/// The registers: command, low and high 32 bits of the data (`PERF_MSG_*`).
const MSG_CMD: u32 = 0;
const MSG_LDATA: u32 = 1;
const MSG_HDATA: u32 = 2;
/// How often a refused command is tried again, and how long apart (ntb_perf's
/// `MSG_TRIES` and `MSG_UDELAY_*`).
const MSG_TRIES: u32 = 1000;
const MSG_RETRY: Duration = Duration::from_millis(1);
/// Translations are page-granular.
const PAGE: usize = 4096;

/// A command received from a peer.
#[derive(Debug, Clone, Copy)]
struct Command {
    from: u32,
    cmd: u32,
    data: u64,
}

/// What this port knows of one peer (`struct perf_peer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerState {
    /// The link is up.
    pub link: bool,
    /// The size asked for with `PERF_CMD_SSIZE`, once sent.
    pub asked: Option<usize>,
    /// The inbound window opened for the peer: index and range.
    pub inbound: Option<(u32, Window)>,
    /// The outbound window pointed at the peer's memory: index and size.
    pub outbound: Option<(u32, usize)>,
}

/// ntb_perf's context on one port (`struct perf_ctx`).
pub struct Service<'a, 'd> {
    ntb: &'a Ntb<'d>,
    peers: Vec<PeerState>,
    /// `BIT(local port)`, rung by a measurer timing the doorbell.
    in_db: u64,
    /// While echoing: the peer asking, and the doorbell bit answered with.
    echo: Option<(u32, u64)>,
    /// Commands taken off the registers while sending one.
    queue: VecDeque<Command>,
    /// Whether to say on standard error what the handshake does.
    verbose: bool,
}

impl<'a, 'd> Service<'a, 'd> {
    /// `perf_enable_service`: doorbells masked, every message event masked
    /// but the command register's, the link enabled.
    pub fn start(ntb: &'a Ntb<'d>, verbose: bool) -> anyhow::Result<Self> {
        if ntb.msg_count() < 3 {
            anyhow::bail!(
                "the switch has {} message registers; ntb perf needs 3",
                ntb.msg_count()
            );
        }
        if ntb.mw_count() == 0 {
            anyhow::bail!("the switch has no memory windows");
        }
        let port = ntb.port_number();
        if port >= 64 {
            anyhow::bail!("port {port} has no doorbell bit");
        }
        ntb.db_set_mask(ntb.db_valid_mask())?;
        ntb.msg_set_mask(ntb.msg_inbits() | ntb.msg_outbits())?;
        ntb.msg_clear_mask(cmd_inbit(ntb))?;
        ntb.link_enable()?;
        let peers = vec![PeerState::default(); ntb.peer_port_count() as usize];
        Ok(Service {
            ntb,
            peers,
            in_db: 1 << port,
            echo: None,
            queue: VecDeque::new(),
            verbose,
        })
    }

    /// What this port knows of peer `pidx`.
    pub fn peer(&self, pidx: u32) -> Option<PeerState> {
        self.peers.get(pidx as usize).copied()
    }

    /// The first peer whose link is up.
    pub fn first_linked(&self) -> Option<u32> {
        self.peers.iter().position(|p| p.link).map(|p| p as u32)
    }

    /// Handles what `events` says happened (and anything the registers hold).
    pub fn poll(&mut self, events: Events) -> anyhow::Result<()> {
        if events.contains(Events::LINK) {
            self.link_event()?;
        }
        self.receive()?;
        while let Some(command) = self.queue.pop_front() {
            self.execute(command)?;
        }
        if let Some((_, echo)) = self.echo {
            if self.ntb.db_read()? & self.in_db != 0 {
                self.ntb.db_clear(self.in_db)?;
                ignore_link_down(self.ntb.peer_db_set(echo))?;
            }
        }
        Ok(())
    }

    /// `perf_link_event`: `PERF_CMD_SSIZE` to every peer whose link came up,
    /// `PERF_CMD_CLEAR` for every one whose link went down.
    fn link_event(&mut self) -> anyhow::Result<()> {
        let link = self.ntb.link_is_up()?;
        for pidx in 0..self.peers.len() as u32 {
            let up = link & (1 << pidx) != 0;
            if up == self.peers[pidx as usize].link {
                continue;
            }
            self.peers[pidx as usize].link = up;
            if up {
                self.say(&format!(
                    "link up: port {}",
                    self.ntb.peer_port_number(pidx)?
                ));
                let size = self.ntb.mw_buffer(self.widx(pidx))?.len;
                if ignore_link_down(self.send(pidx, CMD_SSIZE, size as u64))? == Some(true) {
                    self.peers[pidx as usize].asked = Some(size);
                }
            } else {
                self.say(&format!(
                    "link down: port {}",
                    self.ntb.peer_port_number(pidx)?
                ));
                self.clear(pidx)?;
            }
        }
        Ok(())
    }

    /// The window index used with peer `pidx`, both ways: its peer index, as
    /// ntb_perf gives every peer a window of its own.
    fn widx(&self, pidx: u32) -> u32 {
        if pidx < self.ntb.mw_count() { pidx } else { 0 }
    }

    /// Sends `cmd` with `data` to peer `pidx` (`perf_msg_cmd_send`): the data
    /// registers first, the command last (its arrival is what interrupts the
    /// peer); a full register is tried again after a short sleep. `false`:
    /// the peer never freed its registers.
    pub fn send(&mut self, pidx: u32, cmd: u32, data: u64) -> Result<bool, NtbError> {
        let outbits = self.ntb.msg_outbits();
        for _ in 0..MSG_TRIES {
            self.ntb.msg_clear_sts(outbits)?;
            let delivered = [
                (MSG_LDATA, data as u32),
                (MSG_HDATA, (data >> 32) as u32),
                (MSG_CMD, cmd),
            ]
            .into_iter()
            .try_fold(true, |ok, (midx, value)| {
                if !ok {
                    return Ok(false);
                }
                Ok::<_, NtbError>(matches!(
                    self.ntb.peer_msg_write(pidx, midx, value)?,
                    MsgWrite::Delivered(_)
                ))
            })?;
            if delivered {
                return Ok(true);
            }
            // The peer may be sending to this port at the same time: free
            // this port's registers so that neither waits on the other.
            self.receive()?;
            std::thread::sleep(MSG_RETRY);
        }
        tracing::warn!(
            pidx,
            cmd,
            "an NTB perf peer never read its message registers"
        );
        Ok(false)
    }

    /// Takes every waiting command off the registers (`perf_msg_cmd_recv`).
    fn receive(&mut self) -> Result<(), NtbError> {
        let ntb = self.ntb;
        while ntb.msg_read_sts()? & cmd_inbit(ntb) != 0 {
            let cmd = ntb.msg_read(MSG_CMD)?;
            let low = ntb.msg_read(MSG_LDATA)?;
            let high = ntb.msg_read(MSG_HDATA)?;
            ntb.msg_clear_sts(ntb.msg_inbits())?;
            match cmd.from {
                Some(from) if low.from == Some(from) && high.from == Some(from) => {
                    self.queue.push_back(Command {
                        from,
                        cmd: cmd.data,
                        data: u64::from(high.data) << 32 | u64::from(low.data),
                    });
                }
                // Registers written by different peers: not one command.
                _ => tracing::debug!(?cmd, ?low, ?high, "a torn NTB perf command dropped"),
            }
        }
        Ok(())
    }

    /// `perf_msg_recv` and the work it schedules.
    fn execute(&mut self, command: Command) -> anyhow::Result<()> {
        let Command { from, cmd, data } = command;
        if from as usize >= self.peers.len() {
            return Ok(());
        }
        match cmd {
            CMD_SSIZE => self.open_inbound(from, data),
            CMD_SXLAT => self.open_outbound(from, data),
            CMD_ECHO if data == ECHO_OFF => {
                self.echo = None;
                Ok(self.ntb.db_set_mask(self.in_db)?)
            }
            CMD_ECHO if data < 64 => {
                // The first ring may be here already: it is not cleared.
                self.echo = Some((from, 1 << data));
                Ok(self.ntb.db_clear_mask(self.in_db)?)
            }
            _ => {
                tracing::debug!(from, cmd, data, "an unknown NTB perf command ignored");
                Ok(())
            }
        }
    }

    /// `perf_setup_inbuf`: an inbound window of the size asked for (at most
    /// this port's window), translated for the peer, and its address sent back.
    fn open_inbound(&mut self, pidx: u32, asked: u64) -> anyhow::Result<()> {
        let widx = self.widx(pidx);
        let buffer = self.ntb.mw_buffer(widx)?;
        let size = usize::try_from(asked).unwrap_or(usize::MAX).min(buffer.len) / PAGE * PAGE;
        if size == 0 {
            tracing::debug!(pidx, asked, "an NTB perf window of no size refused");
            return Ok(());
        }
        self.ntb
            .mw_set_trans(pidx, widx, buffer.offset as u64, size as u64)?;
        let window = Window {
            offset: buffer.offset,
            len: size,
        };
        self.peers[pidx as usize].inbound = Some((widx, window));
        self.say(&format!(
            "inbound window {widx} for port {}: {size} bytes at {:#x}",
            self.ntb.peer_port_number(pidx)?,
            buffer.offset
        ));
        ignore_link_down(self.send(pidx, CMD_SXLAT, buffer.offset as u64))?;
        Ok(())
    }

    /// `perf_setup_outbuf`: the outbound window pointed at the peer's window.
    fn open_outbound(&mut self, pidx: u32, addr: u64) -> anyhow::Result<()> {
        let Some(size) = self.peers[pidx as usize].asked else {
            tracing::debug!(pidx, "an NTB perf address nobody asked for ignored");
            return Ok(());
        };
        let widx = self.widx(pidx);
        match self.ntb.peer_mw_set_trans(pidx, widx, addr, size as u64) {
            Ok(()) => {
                self.peers[pidx as usize].outbound = Some((widx, size));
                self.say(&format!(
                    "outbound window {widx} to port {}: {size} bytes at {addr:#x}",
                    self.ntb.peer_port_number(pidx)?
                ));
            }
            // The peer's word is not to be trusted blindly: a bad address is
            // refused by the switch, and the window stays closed.
            Err(e) => tracing::warn!(pidx, addr, %e, "NTB perf window not opened"),
        }
        Ok(())
    }

    /// `PERF_CMD_CLEAR`: both windows with peer `pidx` closed.
    fn clear(&mut self, pidx: u32) -> anyhow::Result<()> {
        let peer = std::mem::take(&mut self.peers[pidx as usize]);
        if let Some((widx, _)) = peer.inbound {
            self.ntb.mw_clear_trans(pidx, widx)?;
        }
        if let Some((widx, _)) = peer.outbound {
            self.ntb.peer_mw_clear_trans(pidx, widx)?;
        }
        self.peers[pidx as usize].link = peer.link;
        if self.echo.is_some_and(|(asking, _)| asking == pidx) {
            self.echo = None;
            self.ntb.db_set_mask(self.in_db)?;
        }
        Ok(())
    }

    /// `perf_disable_service`: every window closed, the link disabled.
    pub fn stop(mut self) -> anyhow::Result<()> {
        for pidx in 0..self.peers.len() as u32 {
            self.clear(pidx)?;
        }
        self.ntb.db_set_mask(self.in_db)?;
        self.ntb.link_disable()?;
        Ok(())
    }

    fn say(&self, text: &str) {
        if self.verbose {
            eprintln!("perf: {text}");
        }
    }
}

/// The inbound status bit of the command register: the one event unmasked.
fn cmd_inbit(ntb: &Ntb<'_>) -> u32 {
    let inbits = ntb.msg_inbits();
    inbits & inbits.wrapping_neg()
}

/// `Ok(None)` for a link that went down meanwhile: its link event follows.
fn ignore_link_down<T>(result: Result<T, NtbError>) -> Result<Option<T>, NtbError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(NtbError::NotConnected { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
