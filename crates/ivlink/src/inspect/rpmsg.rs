//! Native RPMsg sections (`RPM1`): the header's generation and virtio status, who
//! attached, both vrings' indices and buffers in flight, and the messages the host
//! posted that the remote has not returned yet, name-service announcements (the
//! endpoints) decoded.

use std::fmt;

use ivlink_core::RawRegion;
use ivlink_core::Region;
use ivlink_core::directory::SectionInfo;
use ivlink_core::rpmsg::wire::{HEADER_SIZE, Header, NS_ADDR, NS_CREATE, NS_DESTROY, NsMessage};
use ivlink_core::rpmsg::{LinkLayout, NativeHeader, Role};
use ivlink_core::section::{SectionProtocol, setup_state_name};
use ivlink_core::virtio::status;
use ivlink_core::virtio::virtq::{VirtqError, Vring};
use serde::Serialize;

use super::{SectionReport, state_name};

/// A native RPMsg section as read; see [`ivlink_core::rpmsg`].
#[derive(Debug, Clone, Serialize)]
pub struct RpmsgReport {
    /// The magic bytes, escaped (`RPM1` once set up).
    pub magic: String,
    /// The setup word's meaning: `initializing`, `ready`, `abandoned` or
    /// `unknown`.
    pub state_name: String,
    /// The host's start count.
    pub generation: u32,
    /// The virtio status byte.
    pub status: u8,
    /// The host has set up the rings (`DRIVER_OK`).
    pub driver_ok: bool,
    /// A side asked for a reset (`NEEDS_RESET`).
    pub needs_reset: bool,
    /// The generation the remote attached to, if it ever did.
    pub attached: Option<u32>,
    /// `up` (the remote attached to this generation), `waiting for the remote`,
    /// `host starting`, `reset requested` or `not set up`.
    pub link: String,
    /// The host's peer id, if written.
    pub host_peer: Option<u16>,
    /// The remote's peer id, if written.
    pub remote_peer: Option<u16>,
    /// Entries per vring, as recorded.
    pub num: u32,
    /// Bytes per buffer, header included, as recorded.
    pub buf_size: u32,
    /// Vring 0 (remote → host), then vring 1 (host → remote); empty if the header
    /// is unusable.
    pub vrings: Vec<VringReport>,
    /// Messages on vring 1 the host posted and the remote has not returned yet.
    pub in_flight: Vec<MessageReport>,
}

/// One vring as read.
#[derive(Debug, Clone, Serialize)]
pub struct VringReport {
    /// `remote -> host` (vring 0) or `host -> remote` (vring 1).
    pub direction: String,
    /// `avail.idx`: buffers the host made available, ever (mod 2^16).
    pub avail_idx: u16,
    /// `used.idx`: buffers the remote returned, ever (mod 2^16).
    pub used_idx: u16,
    /// Buffers the remote holds (`avail.idx - used.idx`), if at most the ring
    /// size: on vring 0 empty buffers it may fill, on vring 1 messages for it.
    pub in_flight: Option<u16>,
    /// `avail.flags` (1: the host wants no doorbell).
    pub avail_flags: u16,
    /// `used.flags` (1: the remote wants no doorbell).
    pub used_flags: u16,
}

/// A message in flight, from its buffer's RPMsg header.
#[derive(Debug, Clone, Serialize)]
pub struct MessageReport {
    /// The descriptor that carries it.
    pub descriptor: u16,
    /// Sender's endpoint address.
    pub src: u32,
    /// Receiver's endpoint address (0x35: the name service).
    pub dst: u32,
    /// Payload bytes.
    pub len: u16,
    /// For a name-service message: the endpoint it announces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announces: Option<EndpointReport>,
}

/// An endpoint a name-service message announces.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// Its name, escaped.
    pub name: String,
    /// Its address.
    pub addr: u32,
    /// `create`, `destroy`, or the flags word as read.
    pub action: String,
}

const DIRECTIONS: [&str; 2] = ["remote -> host", "host -> remote"];

/// Decodes the native link in `info` into `out`.
pub(super) fn decode(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let header = match LinkLayout::snapshot(region, info.offset, info.size) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(format!("rpmsg header: {e}"));
            return;
        }
    };
    let mut report = header_report(&header);
    // `open` checks the recorded shape against the section; no vring is read
    // unless it holds.
    match <LinkLayout as SectionProtocol>::open(region, info.offset, info.size) {
        Ok(layout) => {
            for (index, ring) in layout.vrings.iter().enumerate() {
                match vring_report(region, ring, index) {
                    Ok(vring) => report.vrings.push(vring),
                    Err(e) => out
                        .problems
                        .push(format!("vring {index} ({}): {e}", DIRECTIONS[index])),
                }
            }
            vring_problems(&report, &mut out.problems);
            if let Some(sent) = report.vrings.get(1).filter(|v| v.in_flight.is_some()) {
                let ring = &layout.vrings[1];
                report.in_flight = in_flight(region, &layout, ring, sent, &mut out.problems);
            }
        }
        Err(e) => out.problems.push(e.to_string()),
    }
    if let Some(attached) = report.attached.filter(|&a| a > report.generation) {
        out.problems.push(format!(
            "the remote attached to generation {attached}, ahead of the host's {}",
            report.generation
        ));
    }
    out.rpmsg = Some(report);
}

fn header_report(header: &NativeHeader) -> RpmsgReport {
    let control = header.control;
    let attached = header.attached_generation();
    let setup = LinkLayout::SETUP;
    let ready = header.setup == setup.ready;
    let link = if !ready {
        "not set up"
    } else if control.status & status::NEEDS_RESET != 0 {
        "reset requested"
    } else if control.status & status::DRIVER_OK == 0 {
        "host starting"
    } else if attached == Some(control.generation) {
        "up"
    } else {
        "waiting for the remote"
    };
    RpmsgReport {
        magic: header.magic.escape_ascii().to_string(),
        state_name: state_name(setup_state_name(&setup, header.setup)),
        generation: control.generation,
        status: control.status,
        driver_ok: control.status & status::DRIVER_OK != 0,
        needs_reset: control.status & status::NEEDS_RESET != 0,
        attached,
        link: link.to_owned(),
        host_peer: header.peer(Role::Host),
        remote_peer: header.peer(Role::Remote),
        num: header.num,
        buf_size: header.buf_size,
        vrings: Vec::new(),
        in_flight: Vec::new(),
    }
}

fn vring_report(region: &RawRegion, ring: &Vring, index: usize) -> Result<VringReport, VirtqError> {
    let avail_idx = ring.avail_idx(region)?;
    let used_idx = ring.used_idx(region)?;
    let held = avail_idx.wrapping_sub(used_idx);
    Ok(VringReport {
        direction: DIRECTIONS[index].to_owned(),
        avail_idx,
        used_idx,
        in_flight: (held <= ring.layout().num()).then_some(held),
        avail_flags: ring.avail_flags(region)?,
        used_flags: ring.used_flags(region)?,
    })
}

fn vring_problems(report: &RpmsgReport, problems: &mut Vec<String>) {
    for (index, vring) in report.vrings.iter().enumerate() {
        if vring.in_flight.is_none() {
            problems.push(format!(
                "vring {index} ({}): avail idx {} and used idx {} are inconsistent (more than {} buffers in flight)",
                vring.direction, vring.avail_idx, vring.used_idx, report.num
            ));
        }
    }
}

/// The messages between `used.idx` and `avail.idx` of vring 1, oldest first.
fn in_flight(
    region: &RawRegion,
    layout: &LinkLayout,
    ring: &Vring,
    sent: &VringReport,
    problems: &mut Vec<String>,
) -> Vec<MessageReport> {
    let count = sent.in_flight.unwrap_or(0);
    let mut messages = Vec::new();
    for k in 0..count {
        let idx = sent.used_idx.wrapping_add(k);
        match message(region, layout, ring, idx) {
            Ok(m) => messages.push(m),
            Err(what) => problems.push(format!("vring 1 (host -> remote) entry {idx}: {what}")),
        }
    }
    messages
}

/// Reads the message behind avail entry `idx`: its descriptor, then the RPMsg
/// header in the buffer, then a name-service payload.
fn message(
    region: &RawRegion,
    layout: &LinkLayout,
    ring: &Vring,
    idx: u16,
) -> Result<MessageReport, String> {
    let descriptor = ring.avail_head(region, idx).map_err(|e| e.to_string())?;
    let desc = ring
        .descriptor(region, descriptor)
        .map_err(|e| e.to_string())?;
    let offset = desc
        .addr
        .checked_sub(layout.address_base)
        .and_then(|o| usize::try_from(o).ok())
        .filter(|&o| {
            o >= layout.pool
                && o.checked_add(desc.len as usize)
                    .is_some_and(|end| end <= layout.pool + layout.pool_len)
        })
        .ok_or_else(|| format!("descriptor {descriptor} points outside the buffer pool"))?;
    let mut raw = [0u8; HEADER_SIZE];
    region.read(offset, &mut raw).map_err(|e| e.to_string())?;
    let header = Header::from_bytes(&raw);
    if HEADER_SIZE + usize::from(header.len) > desc.len as usize {
        return Err(format!(
            "a message of {} bytes does not fit its {}-byte buffer",
            header.len, desc.len
        ));
    }
    Ok(MessageReport {
        descriptor,
        src: header.src,
        dst: header.dst,
        len: header.len,
        announces: announcement(region, offset, &header),
    })
}

fn announcement(region: &RawRegion, offset: usize, header: &Header) -> Option<EndpointReport> {
    if header.dst != NS_ADDR {
        return None;
    }
    let mut payload = vec![0u8; usize::from(header.len)];
    region.read(offset + HEADER_SIZE, &mut payload).ok()?;
    let ns = NsMessage::parse(&payload)?;
    let action = match ns.flags {
        NS_CREATE => "create".to_owned(),
        NS_DESTROY => "destroy".to_owned(),
        other => format!("flags {other:#x}"),
    };
    Some(EndpointReport {
        name: ns.name.to_string(),
        addr: ns.addr,
        action,
    })
}

pub(super) fn lines(f: &mut fmt::Formatter<'_>, r: &RpmsgReport) -> fmt::Result {
    let peer = |p: Option<u16>| p.map_or("?".to_owned(), |p| p.to_string());
    let attached = r.attached.map_or("never".to_owned(), |g| g.to_string());
    writeln!(
        f,
        "      rpmsg: magic {}, state {}, generation {}, status {:#04x}, attached {attached}, link {}",
        r.magic, r.state_name, r.generation, r.status, r.link
    )?;
    writeln!(
        f,
        "      host peer {}, remote peer {}, {} buffers of {} B each way",
        peer(r.host_peer),
        peer(r.remote_peer),
        r.num,
        r.buf_size
    )?;
    for v in &r.vrings {
        let held = v.in_flight.map_or("?".to_owned(), |n| n.to_string());
        writeln!(
            f,
            "      {:>14}: avail idx {:<6} used idx {:<6} in flight {held:<5} flags {}/{}",
            v.direction, v.avail_idx, v.used_idx, v.avail_flags, v.used_flags
        )?;
    }
    for m in &r.in_flight {
        let ns = m.announces.as_ref().map_or(String::new(), |e| {
            format!(" announces {} '{}' at {:#x}", e.action, e.name, e.addr)
        });
        writeln!(
            f,
            "      in flight: descriptor {:<4} src {:#x} dst {:#x} len {}{ns}",
            m.descriptor, m.src, m.dst, m.len
        )?;
    }
    Ok(())
}
