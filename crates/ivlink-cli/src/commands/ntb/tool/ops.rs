//! What reading and writing each ntb_tool file does on a port: the NTB calls
//! behind [`File`]s, with the errno the kernel's file would give.
//!
//! A message to a peer whose inbound register is still full succeeds, as
//! ntb_tool's `peerN/msgM` does on IDT hardware (`peer_msg_write` returns 0
//! and "the client driver shall check the status register"): the refusal
//! shows as this port's outbound bit in `msg_sts`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ivlink::ntb::{Events, Ntb, NtbError};
use rustix::io::Errno;

use super::files::{
    self, BitsCommand, Counts, Dir, File, InboundInfo, OutboundInfo, PeerFile, WindowKind,
};

/// How often a blocking write looks at the stop flag.
const STOP_TICK: Duration = Duration::from_millis(200);

/// The errno of an NTB failure.
pub fn errno(error: NtbError) -> Errno {
    Errno::from_raw_os_error(error.errno())
}

/// The file tree's counts for `ntb`.
pub fn counts(ntb: &Ntb<'_>) -> Counts {
    Counts {
        peers: ntb.peer_port_count(),
        spads: ntb.spad_count(),
        msgs: ntb.msg_count(),
        mws: ntb.mw_count(),
    }
}

/// Whether `file` exists now: a window's bytes file only while its window is
/// set up for that peer.
pub fn exists(ntb: &Ntb<'_>, file: &File) -> bool {
    match file.needs_window() {
        None => true,
        Some((pidx, kind, widx)) => window_of(ntb, kind, widx).is_some_and(|(p, _)| p == pidx),
    }
}

/// The files of `dir` that exist now.
pub fn listing(ntb: &Ntb<'_>, dir: Dir) -> Vec<File> {
    dir.files(&counts(ntb))
        .into_iter()
        .filter(|f| exists(ntb, f))
        .collect()
}

/// The file at `path` if it exists now (else `ENOENT`).
pub fn lookup(ntb: &Ntb<'_>, path: &str) -> Result<File, Errno> {
    File::parse(path, &counts(ntb))
        .filter(|f| exists(ntb, f))
        .ok_or(Errno::NOENT)
}

/// The window `widx` of `kind` and the peer it is set for.
fn window_of(ntb: &Ntb<'_>, kind: WindowKind, widx: u32) -> Option<(u32, ivlink::ntb::Window)> {
    match kind {
        WindowKind::Inbound => ntb.mw_trans(widx).ok().flatten(),
        WindowKind::Outbound => ntb.peer_mw_get_addr(widx).ok().flatten(),
    }
}

/// Reads `size` bytes at `offset` of `file`: a value file's text from that
/// offset, or a window's bytes.
pub fn read(ntb: &Ntb<'_>, file: &File, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
    if let Some((_, kind, widx)) = file.needs_window() {
        return read_window(ntb, kind, widx, offset, size);
    }
    let text = read_text(ntb, file)?;
    let bytes = text.as_bytes();
    let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
    let end = start.saturating_add(size).min(bytes.len());
    Ok(bytes[start..end].to_vec())
}

/// A value file's whole text.
pub fn read_text(ntb: &Ntb<'_>, file: &File) -> Result<String, Errno> {
    let text = match *file {
        File::Port => files::decimal_line(ntb.port_number().into()),
        File::Db => files::hex_line(ntb.db_read().map_err(errno)?),
        File::DbValidMask => files::hex_line(ntb.db_valid_mask()),
        File::DbMask => files::hex_line(ntb.db_read_mask().map_err(errno)?),
        File::PeerDb => files::hex_line(ntb.peer_db_read().map_err(errno)?),
        File::PeerDbMask => files::hex_line(ntb.peer_db_read_mask().map_err(errno)?),
        File::Spad(sidx) => files::hex_line(ntb.spad_read(sidx).map_err(errno)?.into()),
        File::Msg(midx) => {
            let message = ntb.msg_read(midx).map_err(errno)?;
            files::message_line(message.data, message.from)
        }
        File::MsgSts => files::hex_line(ntb.msg_read_sts().map_err(errno)?.into()),
        File::MsgInbits => files::hex_line(ntb.msg_inbits().into()),
        File::MsgOutbits => files::hex_line(ntb.msg_outbits().into()),
        File::Peer(pidx, PeerFile::Port) => {
            files::decimal_line(ntb.peer_port_number(pidx).map_err(errno)?.into())
        }
        File::Peer(pidx, PeerFile::Link) => {
            files::bool_line(ntb.peer_link_is_up(pidx).map_err(errno)?)
        }
        File::Peer(pidx, PeerFile::Spad(sidx)) => {
            files::hex_line(ntb.peer_spad_read(pidx, sidx).map_err(errno)?.into())
        }
        File::Peer(pidx, PeerFile::MwTrans(widx)) => {
            let align = ntb.mw_get_align(pidx, widx).map_err(errno)?;
            let window = ntb
                .mw_trans(widx)
                .map_err(errno)?
                .filter(|(p, _)| *p == pidx)
                .map(|(_, w)| w);
            files::inbound_info(&InboundInfo {
                widx,
                peer_port: ntb.peer_port_number(pidx).map_err(errno)?,
                pidx,
                addr: window.map_or(0, |w| w.offset as u64),
                size: window.map_or(0, |w| w.len as u64),
                addr_align: align.addr_align,
                size_align: align.size_align,
                size_max: align.size_max,
            })
        }
        File::Peer(_, PeerFile::PeerMwTrans(widx)) => {
            let set = ntb.peer_mw_get_addr(widx).map_err(errno)?;
            let attached = match set {
                Some((pidx, _)) => Some((ntb.peer_port_number(pidx).map_err(errno)?, pidx)),
                None => None,
            };
            files::outbound_info(&OutboundInfo {
                widx,
                attached,
                addr: set.map_or(0, |(_, w)| w.offset as u64),
                aperture: ntb.layout().shape().mw_size,
                size: set.map_or(0, |(_, w)| w.len as u64),
            })
        }
        // No read op: debugfs opens the file, the read fails.
        File::Link
        | File::DbEvent
        | File::MsgMask
        | File::MsgEvent
        | File::Peer(
            _,
            PeerFile::LinkEvent | PeerFile::Msg(_) | PeerFile::Mw(_) | PeerFile::PeerMw(_),
        ) => return Err(Errno::INVAL),
    };
    Ok(text)
}

fn read_window(
    ntb: &Ntb<'_>,
    kind: WindowKind,
    widx: u32,
    offset: u64,
    size: usize,
) -> Result<Vec<u8>, Errno> {
    let (_, window) = window_of(ntb, kind, widx).ok_or(match kind {
        WindowKind::Inbound => Errno::NXIO,
        WindowKind::Outbound => Errno::IO,
    })?;
    let Some(at) = usize::try_from(offset).ok().filter(|&at| at < window.len) else {
        return Ok(Vec::new());
    };
    let mut buf = vec![0; size.min(window.len - at)];
    match kind {
        WindowKind::Inbound => ntb.mw_read(widx, at, &mut buf),
        WindowKind::Outbound => ntb.peer_mw_read(widx, at, &mut buf),
    }
    .map_err(errno)?;
    Ok(buf)
}

fn write_window(
    ntb: &Ntb<'_>,
    kind: WindowKind,
    widx: u32,
    offset: u64,
    data: &[u8],
) -> Result<usize, Errno> {
    let (_, window) = window_of(ntb, kind, widx).ok_or(match kind {
        WindowKind::Inbound => Errno::NXIO,
        WindowKind::Outbound => Errno::IO,
    })?;
    let Some(at) = usize::try_from(offset).ok().filter(|&at| at < window.len) else {
        return Ok(0);
    };
    let data = &data[..data.len().min(window.len - at)];
    match kind {
        WindowKind::Inbound => ntb.mw_write(widx, at, data),
        WindowKind::Outbound => ntb.peer_mw_write(widx, at, data),
    }
    .map_err(errno)?;
    Ok(data.len())
}

/// Writes `data` at `offset` of `file`: runs the file's command (one per
/// write) or copies into a window. Blocking files wait until their condition
/// holds or `stop` is raised (`EINTR`). Returns the bytes taken.
pub fn write(
    ntb: &Ntb<'_>,
    file: &File,
    offset: u64,
    data: &[u8],
    stop: &AtomicBool,
) -> Result<usize, Errno> {
    if let Some((_, kind, widx)) = file.needs_window() {
        return write_window(ntb, kind, widx, offset, data);
    }
    if file.takes_bits() && offset != 0 {
        // ntb_tool's buffer copy takes nothing at a later offset.
        return Ok(data.len());
    }
    run_command(ntb, file, data, stop)?;
    Ok(data.len())
}

fn run_command(ntb: &Ntb<'_>, file: &File, data: &[u8], stop: &AtomicBool) -> Result<(), Errno> {
    match *file {
        File::Link => if files::parse_bool(data)? {
            ntb.link_enable()
        } else {
            ntb.link_disable()
        }
        .map_err(errno),
        File::Db => bits(data, |b| ntb.db_set(b), |b| ntb.db_clear(b)),
        File::DbMask => bits(data, |b| ntb.db_set_mask(b), |b| ntb.db_clear_mask(b)),
        File::PeerDb => bits(data, |b| ntb.peer_db_set(b), |b| ntb.peer_db_clear(b)),
        File::PeerDbMask => bits(
            data,
            |b| ntb.peer_db_set_mask(b),
            |b| ntb.peer_db_clear_mask(b),
        ),
        File::MsgSts => match files::parse_bits(data)? {
            BitsCommand::Set(_) => Err(Errno::INVAL),
            BitsCommand::Clear(b) => ntb.msg_clear_sts(b as u32).map_err(errno),
        },
        File::MsgMask => bits(
            data,
            |b| ntb.msg_set_mask(b as u32),
            |b| ntb.msg_clear_mask(b as u32),
        ),
        File::Spad(sidx) => ntb.spad_write(sidx, files::parse_u32(data)?).map_err(errno),
        File::Peer(pidx, PeerFile::Spad(sidx)) => ntb
            .peer_spad_write(pidx, sidx, files::parse_u32(data)?)
            .map_err(errno),
        File::Peer(pidx, PeerFile::Msg(midx)) => {
            // A full register refuses the message and sets the outbound status
            // bit; like IDT's driver, the write itself succeeds.
            ntb.peer_msg_write(pidx, midx, files::parse_u32(data)?)
                .map_err(errno)
                .map(drop)
        }
        File::Peer(pidx, PeerFile::MwTrans(widx)) => set_inbound(ntb, pidx, widx, data),
        File::Peer(pidx, PeerFile::PeerMwTrans(widx)) => set_outbound(ntb, pidx, widx, data),
        File::DbEvent => {
            let value = files::parse_u64(data)?;
            wait_for(ntb, Events::DB, stop, |ntb| Ok(ntb.db_read()? == value))
        }
        File::MsgEvent => {
            let value = files::parse_u64(data)?;
            wait_for(ntb, Events::MSG, stop, |ntb| {
                Ok(u64::from(ntb.msg_read_sts()?) == value)
            })
        }
        File::Peer(pidx, PeerFile::LinkEvent) => {
            let up = files::parse_bool(data)?;
            wait_for(ntb, Events::LINK, stop, |ntb| {
                Ok(ntb.peer_link_is_up(pidx)? == up)
            })
        }
        // No write op.
        File::Port
        | File::DbValidMask
        | File::Msg(_)
        | File::MsgInbits
        | File::MsgOutbits
        | File::Peer(_, PeerFile::Port | PeerFile::Link | PeerFile::Mw(_) | PeerFile::PeerMw(_)) => {
            Err(Errno::INVAL)
        }
    }
}

/// Runs an `s`/`c` command with the file's set and clear ops.
fn bits(
    data: &[u8],
    set: impl FnOnce(u64) -> Result<(), NtbError>,
    clear: impl FnOnce(u64) -> Result<(), NtbError>,
) -> Result<(), Errno> {
    match files::parse_bits(data)? {
        BitsCommand::Set(b) => set(b),
        BitsCommand::Clear(b) => clear(b),
    }
    .map_err(errno)
}

/// `mw_transM`: a size; the old translation goes, and a size above 0 gets a
/// new one of `min(size, size_max)` rounded up to the alignments, over this
/// port's window buffer. The window is one per port: while it is translated
/// for another peer, `EBUSY`.
fn set_inbound(ntb: &Ntb<'_>, pidx: u32, widx: u32, data: &[u8]) -> Result<(), Errno> {
    let size = u64::from(files::parse_u32(data)?);
    ntb.peer_port_number(pidx).map_err(errno)?;
    match ntb.mw_trans(widx).map_err(errno)? {
        Some((holder, _)) if holder == pidx => ntb.mw_clear_trans(pidx, widx).map_err(errno)?,
        Some(_) if size > 0 => return Err(Errno::BUSY),
        _ => {}
    }
    if size == 0 {
        return Ok(());
    }
    let align = ntb.mw_get_align(pidx, widx).map_err(errno)?;
    let size = round_up(
        round_up(size.min(align.size_max), align.addr_align),
        align.size_align,
    );
    let buffer = ntb.mw_buffer(widx).map_err(errno)?;
    ntb.mw_set_trans(pidx, widx, buffer.offset as u64, size)
        .map_err(errno)
}

/// `peer_mw_transM`: `addr:size`; the old translation goes, and a size above
/// 0 sets a new one.
fn set_outbound(ntb: &Ntb<'_>, pidx: u32, widx: u32, data: &[u8]) -> Result<(), Errno> {
    let (addr, size) = files::parse_addr_size(data)?;
    ntb.peer_port_number(pidx).map_err(errno)?;
    if let Some((holder, _)) = ntb.peer_mw_get_addr(widx).map_err(errno)? {
        ntb.peer_mw_clear_trans(holder, widx).map_err(errno)?;
    }
    if size == 0 {
        return Ok(());
    }
    ntb.peer_mw_set_trans(pidx, widx, addr, size).map_err(errno)
}

fn round_up(value: u64, align: u64) -> u64 {
    if align <= 1 {
        value
    } else {
        value.div_ceil(align).saturating_mul(align)
    }
}

/// Blocks until `holds`, re-checked after each event of `kind` (as the
/// kernel's wait queue is woken only by that event), or until `stop`
/// (`EINTR`, what an interrupted write gives userspace for `-ERESTART`).
fn wait_for(
    ntb: &Ntb<'_>,
    kind: Events,
    stop: &AtomicBool,
    mut holds: impl FnMut(&Ntb<'_>) -> Result<bool, NtbError>,
) -> Result<(), Errno> {
    let mut seen = ntb.events();
    if holds(ntb).map_err(errno)? {
        return Ok(());
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(Errno::INTR);
        }
        let events = ntb.wait_events(&mut seen, Some(STOP_TICK)).map_err(errno)?;
        if events.contains(kind) && holds(ntb).map_err(errno)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::round_up;

    #[test]
    fn sizes_round_up_to_the_alignment() {
        assert_eq!(round_up(1, 4096), 4096);
        assert_eq!(round_up(4096, 4096), 4096);
        assert_eq!(round_up(4097, 4096), 8192);
        assert_eq!(round_up(5, 1), 5);
        assert_eq!(round_up(5, 0), 5);
    }
}
