//! NTB switch sections (`NTB1`): the header, then every port's owner and link,
//! its doorbell and message registers, scratchpads and window translations.
//!
//! # Decisions
//!
//! - Every register is read through the switch's own accessors, which validate
//!   what they read. Whatever one refuses (an owner word that names no peer, a
//!   message from no port, a translation outside its window) is a problem line,
//!   and the value is left out or shown as unknown, never guessed.
//! - A port that shows a problem is read again, up to
//!   [`SNAPSHOT_ATTEMPTS`](super::SNAPSHOT_ATTEMPTS) times: an owner rewriting a
//!   translation record can be caught between its writes.
//! - Links are shown as if every owner were connected: inspect cannot ask the
//!   server who is, so `link_up` is what both ports' registers say.
//! - An outbound window whose range the peer no longer grants is shown as
//!   refused, not counted as a problem: a peer closing its inbound window before
//!   this port clears its outbound one is ordinary teardown, and the accessor
//!   refuses that range to every user anyway.

use std::fmt;

use ivlink_core::RawRegion;
use ivlink_core::directory::SectionInfo;
use ivlink_core::ntb::{NtbHeader, NtbLayout, NtbLayoutError, SETUP, Translation};
use ivlink_core::section::setup_state_name;
use serde::Serialize;

use super::{SectionReport, settled, state_name};

/// An NTB switch section (`NTB1`) as read; see [`ivlink_core::ntb`].
#[derive(Debug, Clone, Serialize)]
pub struct NtbReport {
    /// The magic bytes, escaped (`NTB1` in a switch).
    pub magic: String,
    /// Setup state word.
    pub state: u32,
    /// Its meaning: `empty`, `initializing`, `ready`, `abandoned` or `unknown`.
    pub state_name: String,
    /// Ports, as recorded.
    pub port_count: u32,
    /// Scratchpads per port, as recorded.
    pub spad_count: u32,
    /// Message registers per port, as recorded.
    pub msg_count: u32,
    /// Memory windows per port, as recorded.
    pub mw_count: u32,
    /// Bytes per window, as recorded.
    pub mw_size: u64,
    /// The doorbell vector every event rings (the word as read).
    pub vector: u32,
    /// Every port in port order (empty if the header is unusable).
    pub ports: Vec<NtbPortReport>,
}

/// One port of a switch as read. `None` marks a value whose read failed (a
/// problem line says why).
#[derive(Debug, Clone, Serialize)]
pub struct NtbPortReport {
    /// Port number.
    pub port: u32,
    /// Its owner; `None` while free (or being reset by a claimer), or if the
    /// owner word names no peer.
    pub owner: Option<NtbOwnerReport>,
    /// Whether the port is owned and enabled its link.
    pub link_enabled: Option<bool>,
    /// The ports this one sees its link up with (both owned and enabled).
    pub link_up: Vec<u32>,
    /// The inbound doorbell register.
    pub db: Option<u64>,
    /// The doorbell mask.
    pub db_mask: Option<u64>,
    /// Message status: bit `m` = the last write to register `m` was refused, bit
    /// `16 + m` = a message waits in inbound register `m`.
    pub msg_sts: Option<u32>,
    /// Message status mask.
    pub msg_mask: Option<u32>,
    /// Every readable inbound message register, in register order.
    pub messages: Vec<NtbMessageReport>,
    /// Every scratchpad, in order.
    pub spads: Vec<Option<u32>>,
    /// Every inbound window, in window order.
    pub inbound: Vec<NtbInboundReport>,
    /// Every outbound window, in window order.
    pub outbound: Vec<NtbOutboundReport>,
}

/// A port's owner as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct NtbOwnerReport {
    /// The owning peer.
    pub peer: u16,
    /// The owning process's nonce.
    pub session: u32,
    /// How many times the port was claimed.
    pub generation: u32,
}

/// One inbound message register as read.
#[derive(Debug, Clone, Serialize)]
pub struct NtbMessageReport {
    /// Register index.
    pub register: u32,
    /// The data (the last message's once cleared).
    pub data: u32,
    /// The port that wrote it; `None`: never written since the port was reset.
    pub from: Option<u32>,
    /// The message waits: the owner has not cleared its status bit.
    pub full: bool,
}

/// A range of the region a window translation covers.
#[derive(Debug, Clone, Serialize)]
pub struct NtbTranslationReport {
    /// The port it is for (inbound: the peer let in; outbound: the peer reached).
    pub port: u32,
    /// Region offset of the first byte.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

/// One inbound window of a port.
#[derive(Debug, Clone, Serialize)]
pub struct NtbInboundReport {
    /// Window index.
    pub window: u32,
    /// Region offset of the whole window.
    pub buffer_offset: usize,
    /// Bytes of the whole window.
    pub buffer_len: usize,
    /// The part translated for a peer, if any.
    pub translation: Option<NtbTranslationReport>,
}

/// One outbound window of a port: not set when both fields are `None`.
#[derive(Debug, Clone, Serialize)]
pub struct NtbOutboundReport {
    /// Window index.
    pub window: u32,
    /// Where it reaches now, as the peer's grant allows.
    pub reaches: Option<NtbTranslationReport>,
    /// Why it reaches nowhere although it is set (the peer no longer grants it).
    pub refused: Option<String>,
}

/// Decodes the switch in `info` into `out`.
pub(super) fn decode(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let header = match NtbHeader::read(region, info.offset, info.size) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(format!("ntb header: {e}"));
            return;
        }
    };
    let mut report = header_report(&header);
    // `open` re-validates every header field against the section; nothing past
    // the header is read unless it holds.
    match NtbLayout::open(region, info.offset, info.size) {
        Ok(layout) => {
            for port in 0..layout.shape().ports {
                let (port_report, problems) = settled(|| read_port(region, &layout, port));
                report.ports.push(port_report);
                out.problems.extend(problems);
            }
        }
        Err(e) => out.problems.push(e.to_string()),
    }
    out.ntb = Some(report);
}

fn header_report(header: &NtbHeader) -> NtbReport {
    NtbReport {
        magic: header.magic.escape_ascii().to_string(),
        state: header.state,
        state_name: state_name(setup_state_name(&SETUP, header.state)),
        port_count: header.ports,
        spad_count: header.spad_count,
        msg_count: header.msg_count,
        mw_count: header.mw_count,
        mw_size: header.mw_size,
        vector: header.vector,
        ports: Vec::new(),
    }
}

/// Reads one port, with every problem found in it.
fn read_port(region: &RawRegion, layout: &NtbLayout, port: u32) -> (NtbPortReport, Vec<String>) {
    let mut problems = PortProblems {
        port,
        found: Vec::new(),
    };
    let owner = problems
        .value("owner", layout.owner(region, port))
        .flatten();
    let link_enabled = problems.value("link", layout.link_enabled(region, port));
    let link_up = problems
        .value("link up", link_up(region, layout, port))
        .unwrap_or_default();
    let db = problems.value("doorbell", layout.db_read(region, port));
    let db_mask = problems.value("doorbell mask", layout.db_read_mask(region, port));
    let msg_sts = problems.value("message status", layout.msg_read_sts(region, port));
    let msg_mask = problems.value("message mask", layout.msg_read_mask(region, port));
    let shape = layout.shape();
    let messages = (0..shape.msg_count)
        .filter_map(|midx| {
            let m = problems.value(
                &format!("message register {midx}"),
                layout.msg_read(region, port, midx),
            )?;
            Some(NtbMessageReport {
                register: midx,
                data: m.data,
                from: m.from,
                full: m.full,
            })
        })
        .collect();
    let spads = (0..shape.spad_count)
        .map(|sidx| {
            problems.value(
                &format!("scratchpad {sidx}"),
                layout.spad_read(region, port, sidx),
            )
        })
        .collect();
    let mut inbound = Vec::new();
    let mut outbound = Vec::new();
    for widx in 0..shape.mw_count {
        let what = format!("inbound window {widx}");
        if let Some(buffer) = problems.value(&what, layout.mw_buffer(port, widx)) {
            let translation = problems
                .value(&what, layout.mw_trans(region, port, widx))
                .flatten();
            inbound.push(NtbInboundReport {
                window: widx,
                buffer_offset: buffer.offset,
                buffer_len: buffer.len,
                translation: translation.map(translation_report),
            });
        }
        let (reaches, refused) = match layout.peer_mw_get_addr(region, port, widx) {
            Ok(t) => (t.map(translation_report), None),
            Err(e @ NtbLayoutError::NotGranted) => (None, Some(e.to_string())),
            Err(e) => {
                problems.value::<()>(&format!("outbound window {widx}"), Err(e));
                (None, None)
            }
        };
        outbound.push(NtbOutboundReport {
            window: widx,
            reaches,
            refused,
        });
    }
    for i in inbound
        .iter()
        .filter(|i| i.translation.as_ref().is_some_and(|t| t.port == port))
    {
        problems.found.push(format!(
            "port {port} inbound window {}: translated for the port itself",
            i.window
        ));
    }
    let report = NtbPortReport {
        port,
        owner: owner.map(|o| NtbOwnerReport {
            peer: o.peer,
            session: o.session,
            generation: o.generation,
        }),
        link_enabled,
        link_up,
        db,
        db_mask,
        msg_sts,
        msg_mask,
        messages,
        spads,
        inbound,
        outbound,
    };
    (report, problems.found)
}

/// The problems found in one port, each named after it.
struct PortProblems {
    port: u32,
    found: Vec<String>,
}

impl PortProblems {
    /// The value read, or `None` with a problem line naming `what`.
    fn value<T>(&mut self, what: &str, result: Result<T, NtbLayoutError>) -> Option<T> {
        result
            .map_err(|e| self.found.push(format!("port {} {what}: {e}", self.port)))
            .ok()
    }
}

/// The ports `port` sees its link up with, every owner taken as connected.
fn link_up(region: &RawRegion, layout: &NtbLayout, port: u32) -> Result<Vec<u32>, NtbLayoutError> {
    let up = layout.link_is_up(region, port, |_| false)?;
    (0..layout.shape().ports - 1)
        .filter(|pidx| up & (1 << pidx) != 0)
        .map(|pidx| layout.peer_port(port, pidx))
        .collect()
}

fn translation_report(t: Translation) -> NtbTranslationReport {
    NtbTranslationReport {
        port: t.port,
        offset: t.window.offset,
        len: t.window.len,
    }
}

pub(super) fn header_line(f: &mut fmt::Formatter<'_>, n: &NtbReport) -> fmt::Result {
    writeln!(
        f,
        "      ntb: magic {}, state {} ({}), {} ports, {} scratchpads, {} message registers, {} windows of {} B, vector {}",
        n.magic,
        n.state_name,
        n.state,
        n.port_count,
        n.spad_count,
        n.msg_count,
        n.mw_count,
        n.mw_size,
        n.vector
    )
}

/// Per port: its owner and link, then its registers; messages, scratchpads and
/// windows only where something is in them.
pub(super) fn lines(f: &mut fmt::Formatter<'_>, n: &NtbReport) -> fmt::Result {
    for p in &n.ports {
        let owner = p.owner.as_ref().map_or("free".to_owned(), |o| {
            format!(
                "peer {} (session {:#010x}, generation {})",
                o.peer, o.session, o.generation
            )
        });
        let link = match p.link_enabled {
            Some(true) => "enabled",
            Some(false) => "disabled",
            None => "?",
        };
        let up = if p.link_up.is_empty() {
            "no link up".to_owned()
        } else {
            format!(
                "up with {}",
                list(p.link_up.iter().map(|q| format!("port {q}")))
            )
        };
        writeln!(f, "      port {}: {owner}, link {link}, {up}", p.port)?;
        writeln!(
            f,
            "        doorbell {} mask {}, message status {} mask {}",
            hex(p.db, 16),
            hex(p.db_mask, 16),
            hex(p.msg_sts, 8),
            hex(p.msg_mask, 8)
        )?;
        if !p.messages.is_empty() {
            let messages = p.messages.iter().map(|m| match m.from {
                None if m.data == 0 && !m.full => format!("{}: empty", m.register),
                from => format!(
                    "{}: {:#010x} from {}{}",
                    m.register,
                    m.data,
                    from.map_or("no port".to_owned(), |q| format!("port {q}")),
                    if m.full { " (full)" } else { " (cleared)" }
                ),
            });
            writeln!(f, "        messages: {}", list(messages))?;
        }
        let spads: Vec<_> = p
            .spads
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != Some(0))
            .map(|(i, v)| format!("{i}: {}", hex(*v, 8)))
            .collect();
        if !spads.is_empty() {
            writeln!(f, "        scratchpads: {}", list(spads.into_iter()))?;
        }
        for i in &p.inbound {
            if let Some(t) = &i.translation {
                writeln!(
                    f,
                    "        inbound window {} at {:#x}, {} B: granted to port {} at {:#x}, {} B",
                    i.window, i.buffer_offset, i.buffer_len, t.port, t.offset, t.len
                )?;
            }
        }
        for o in &p.outbound {
            match (&o.reaches, &o.refused) {
                (Some(t), _) => writeln!(
                    f,
                    "        outbound window {}: port {} at {:#x}, {} B",
                    o.window, t.port, t.offset, t.len
                )?,
                (None, Some(why)) => {
                    writeln!(f, "        outbound window {}: refused: {why}", o.window)?;
                }
                (None, None) => {}
            }
        }
    }
    Ok(())
}

/// `value` in hex with `digits` digits, or `?` if unread.
fn hex<T: fmt::LowerHex>(value: Option<T>, digits: usize) -> String {
    value.map_or("?".to_owned(), |v| {
        format!("{v:#0width$x}", width = digits + 2)
    })
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
