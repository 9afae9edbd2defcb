//! Mailbox sections: header, member slots and every box that was used.

use std::collections::BTreeMap;
use std::fmt;

use ivlink_core::RawRegion;
use ivlink_core::directory::SectionInfo;
use ivlink_core::mailbox::{BoxSnapshot, MailboxLayout};
use ivlink_core::members::SlotState;
use ivlink_core::section::SectionProtocol;
use serde::Serialize;

use super::{SectionReport, state_name};

/// A mailbox section (`MBX1`) as read; see [`ivlink_core::mailbox`].
#[derive(Debug, Clone, Serialize)]
pub struct MailboxReport {
    /// The magic bytes, escaped (`MBX1` in a mailbox).
    pub magic: String,
    /// Setup state word.
    pub state: u32,
    /// Its meaning: `empty`, `initializing`, `ready` or `unknown`.
    pub state_name: String,
    /// Member slots.
    pub max_members: u32,
    /// Largest message data, in bytes.
    pub max_data: u32,
    /// Number of message ids (ids are `0..id_count`).
    pub id_count: u32,
    /// The doorbell vector messages ring.
    pub vector: u16,
    /// The vector completions ring on a waiting sender.
    pub completion_vector: u16,
    /// Every slot that is not free (empty if the header is unusable).
    pub slots: Vec<SlotReport>,
    /// Every box whose words are not all zero, ordered by sender, then receiver.
    pub boxes: Vec<BoxReport>,
}

/// A member slot that is not free.
#[derive(Debug, Clone, Serialize)]
pub struct SlotReport {
    /// Slot number.
    pub slot: u32,
    /// The slot word as read.
    pub word: u32,
    /// `member`, `joining` (still resetting its boxes) or `damaged`.
    pub state: String,
    /// The peer the word names, unless damaged.
    pub peer: Option<u16>,
}

/// One box `from → to` of a mailbox as read.
#[derive(Debug, Clone, Serialize)]
pub struct BoxReport {
    /// Sending peer (or slot, if the slot is not taken).
    pub from: String,
    /// Receiving peer (or slot).
    pub to: String,
    /// Sender's slot.
    pub from_slot: u32,
    /// Receiver's slot.
    pub to_slot: u32,
    /// The state word as read.
    pub state: u32,
    /// Busy bit: a message waits to be taken.
    pub busy: bool,
    /// The sender asked to be rung on the completion vector.
    pub wants_completion: bool,
    /// A doorbell goes with the message.
    pub rung: bool,
    /// Message id (the last message's once taken).
    pub id: u32,
    /// Data length (the last message's once taken).
    pub len: u32,
    /// `complete` (not busy: taken, or never sent), `pending` (busy) or
    /// `awaited` (busy, and the sender sleeps until it is taken).
    pub completion: String,
}

/// Decodes the mailbox in `info` into `out`.
pub(super) fn decode(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let header = match MailboxLayout::snapshot(region, info.offset, info.size) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(format!("mailbox header: {e}"));
            return;
        }
    };
    let mut report = MailboxReport {
        magic: header.magic.escape_ascii().to_string(),
        state: header.state,
        state_name: state_name(header.state_name()),
        max_members: header.max_members,
        max_data: header.max_data,
        id_count: header.id_count,
        vector: header.vector,
        completion_vector: header.completion_vector,
        slots: Vec::new(),
        boxes: Vec::new(),
    };
    // `open` re-validates every header field against the section; nothing past
    // the header is read unless it holds.
    match <MailboxLayout as SectionProtocol>::open(region, info.offset, info.size) {
        Ok(layout) => {
            let states = slots(region, &layout, &mut report.slots, out);
            boxes(
                region,
                &layout,
                &states,
                &mut report.boxes,
                &mut out.problems,
            );
        }
        Err(e) => out.problems.push(e.to_string()),
    }
    out.mailbox = Some(report);
}

/// Reports every slot that is not free (members also in `out.members`); returns
/// each slot's state.
fn slots(
    region: &RawRegion,
    layout: &MailboxLayout,
    reports: &mut Vec<SlotReport>,
    out: &mut SectionReport,
) -> Vec<SlotState> {
    let mut states = Vec::new();
    let mut holders: BTreeMap<u16, u32> = BTreeMap::new();
    for slot in 0..layout.max_members() {
        let word = match layout.slot_word(region, slot) {
            Ok(w) => w,
            Err(e) => {
                out.problems.push(format!("slot {slot}: {e}"));
                states.push(SlotState::Free);
                continue;
            }
        };
        let state = SlotState::decode(word);
        states.push(state);
        let (name, peer) = match state {
            SlotState::Free => continue,
            SlotState::Member(peer) => {
                out.members.push((slot, peer));
                if let Some(first) = holders.insert(peer, slot) {
                    out.problems
                        .push(format!("peer {peer} holds two slots: {first} and {slot}"));
                }
                ("member", Some(peer))
            }
            SlotState::Joining(peer) => ("joining", Some(peer)),
            SlotState::Damaged(word) => {
                out.problems
                    .push(format!("slot {slot} holds {word:#x}, not a peer id"));
                ("damaged", None)
            }
        };
        reports.push(SlotReport {
            slot,
            word,
            state: name.to_owned(),
            peer,
        });
    }
    states
}

/// Reports every box that was ever used, ordered by sender, then receiver.
fn boxes(
    region: &RawRegion,
    layout: &MailboxLayout,
    states: &[SlotState],
    reports: &mut Vec<BoxReport>,
    problems: &mut Vec<String>,
) {
    let name_of = |slot: u32| match states.get(slot as usize) {
        Some(SlotState::Member(peer)) => format!("peer {peer}"),
        _ => format!("slot {slot}"),
    };
    for from in 0..layout.max_members() {
        for to in (0..layout.max_members()).filter(|&t| t != from) {
            let b = match layout.box_snapshot(region, from, to) {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("box {from}->{to}: {e}"));
                    continue;
                }
            };
            if b.state == 0 && b.id == 0 && b.len == 0 {
                continue; // never used
            }
            let what = format!("box {} -> {}", name_of(from), name_of(to));
            box_problems(layout, &b, &what, problems);
            let completion = match (b.is_full(), b.wants_completion()) {
                (false, _) => "complete",
                (true, false) => "pending",
                (true, true) => "awaited",
            };
            reports.push(BoxReport {
                from: name_of(from),
                to: name_of(to),
                from_slot: from,
                to_slot: to,
                state: b.state,
                busy: b.is_full(),
                wants_completion: b.wants_completion(),
                rung: b.rung(),
                id: b.id,
                len: b.len,
                completion: completion.to_owned(),
            });
        }
    }
}

/// What cannot be right about box `what`.
fn box_problems(layout: &MailboxLayout, b: &BoxSnapshot, what: &str, problems: &mut Vec<String>) {
    if b.unknown_bits() != 0 {
        problems.push(format!(
            "{what}: unknown state bits {:#x} (state word {:#x})",
            b.unknown_bits(),
            b.state
        ));
    } else if !b.is_full() && b.state != 0 {
        problems.push(format!(
            "{what}: state word {:#x} has flags without the busy bit",
            b.state
        ));
    }
    // Id and length only count while the box is full: a take leaves the last
    // message's values behind.
    if b.is_full() && b.id >= layout.id_count() {
        problems.push(format!(
            "{what}: id {} is out of range (ids 0..{})",
            b.id,
            layout.id_count()
        ));
    }
    if b.is_full() && b.len as usize > layout.max_data_size() {
        problems.push(format!(
            "{what}: length {} exceeds the maximum of {} bytes",
            b.len,
            layout.max_data_size()
        ));
    }
}

pub(super) fn header_line(f: &mut fmt::Formatter<'_>, m: &MailboxReport) -> fmt::Result {
    writeln!(
        f,
        "      mailbox: magic {}, state {} ({}), {} member slots, max data {} B, {} ids, vector {}, completion vector {}",
        m.magic,
        m.state_name,
        m.state,
        m.max_members,
        m.max_data,
        m.id_count,
        m.vector,
        m.completion_vector
    )
}

/// The slots that are not plain members (those are on the `members` line), then
/// the boxes.
pub(super) fn lines(f: &mut fmt::Formatter<'_>, m: &MailboxReport) -> fmt::Result {
    for slot in m.slots.iter().filter(|s| s.state != "member") {
        let peer = slot.peer.map_or(String::new(), |p| format!(" (peer {p})"));
        writeln!(
            f,
            "      slot {}: {}{peer}, word {:#x}",
            slot.slot, slot.state, slot.word
        )?;
    }
    for b in &m.boxes {
        writeln!(
            f,
            "      {:>10} -> {:<10} {:<5} id {:<10} len {:<8} completion {:<8} rung {:<5} state {:#x}",
            b.from,
            b.to,
            if b.busy { "busy" } else { "empty" },
            b.id,
            b.len,
            b.completion,
            b.rung,
            b.state
        )?;
    }
    Ok(())
}
