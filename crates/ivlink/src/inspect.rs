//! Decoding a live region for people: the directory, every section, each channel's
//! members and rings with their indices, fill level and flags, each mailbox's
//! header, member slots and boxes, each stream's header, liveness words and byte
//! rings, and every inconsistency found. Nothing is trusted; every value is shown
//! as read, and whatever cannot be right becomes a problem line, never a panic.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use ivlink_core::channel::ChannelLayout;
use ivlink_core::directory::{Directory, DirectoryError, EntryState, SectionInfo, SectionKind};
use ivlink_core::mailbox::{MailboxHeader, MailboxLayout};
use ivlink_core::members::SlotState;
use ivlink_core::ring::{RingError, RingLayout, RingSnapshot};
use ivlink_core::stream::{PeerState, Side, StreamHeader, StreamLayout};
use ivlink_core::{RawRegion, Region, raw_message};
use serde::Serialize;

/// One ring of a channel as read.
#[derive(Debug, Clone, Serialize)]
pub struct RingReport {
    /// Sending peer (or slot, if the slot is free).
    pub from: String,
    /// Receiving peer (or slot).
    pub to: String,
    /// Producer index.
    pub head: u64,
    /// Consumer index.
    pub tail: u64,
    /// Bytes waiting, if the indices are consistent.
    pub fill: Option<u64>,
    /// Data area size.
    pub capacity: usize,
    /// Producer and consumer state words.
    pub states: (u32, u32),
    /// Please-notify flags: (producer wants space, consumer wants data).
    pub flags: (bool, bool),
}

/// One section as read.
#[derive(Debug, Clone, Serialize)]
pub struct SectionReport {
    /// Entry index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Creating peer.
    pub owner: u16,
    /// Doorbell vector.
    pub vector: u16,
    /// Offset in the region.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// For channels: members as (slot, peer).
    pub members: Vec<(u32, u16)>,
    /// For channels: rings that carry or carried traffic.
    pub rings: Vec<RingReport>,
    /// For mailboxes: the decoded mailbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxReport>,
    /// For streams: the decoded stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamReport>,
    /// Problems found in this section.
    pub problems: Vec<String>,
}

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

/// A stream section (`STM1`) as read; see [`ivlink_core::stream`].
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// The magic bytes, escaped (`STM1` in a stream).
    pub magic: String,
    /// Setup state word.
    pub state: u32,
    /// Its meaning: `empty`, `initializing`, `ready` or `unknown`.
    pub state_name: String,
    /// Data bytes per direction, as recorded.
    pub capacity: u64,
    /// Side A, then side B.
    pub sides: Vec<SideReport>,
    /// Ring A → B, then B → A (empty if the header is unusable). The state words
    /// of a stream's rings are unused; the liveness words are in `sides`.
    pub rings: Vec<RingReport>,
}

/// One end of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    /// `A` or `B`.
    pub side: String,
    /// The peer recorded for the side.
    pub peer: u16,
    /// The liveness word as read.
    pub liveness: u32,
    /// Its meaning: `never connected`, `connected`, `closed`, `dead` or
    /// `unknown`.
    pub state: String,
}

/// What `ivlink inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    /// Region size.
    pub size: usize,
    /// `ivlink` (a directory), `empty` (no directory, no message), a known foreign
    /// layout: `raw` (Zephyr's doorbell sample: a text string at offset 0) or
    /// `openamp` (OpenAMP's resource table), else `unrecognised`.
    pub layout: String,
    /// The string at offset 0 for raw regions.
    pub raw_message: Option<String>,
    /// The first bytes, escaped, of a region whose layout is unrecognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bytes: Option<String>,
    /// Directory capacity and use.
    pub max_sections: u32,
    /// Entries claimed.
    pub section_count: u32,
    /// Sections.
    pub sections: Vec<SectionReport>,
    /// Everything inconsistent, region-wide.
    pub inconsistencies: Vec<String>,
    /// Every problem found: `inconsistencies` and each section's `problems`.
    pub problem_count: usize,
    /// Whether the region is fine: a known layout with no problem.
    pub ok: bool,
    /// The one-line conclusion, the same in text and JSON.
    pub verdict: String,
}

impl RegionReport {
    fn conclude(&mut self) {
        self.problem_count = self.inconsistencies.len()
            + self
                .sections
                .iter()
                .map(|s| s.problems.len())
                .sum::<usize>();
        let known = self.layout != UNRECOGNISED;
        self.ok = known && self.problem_count == 0;
        self.verdict = match (self.layout.as_str(), self.problem_count) {
            (UNRECOGNISED, _) => {
                "unrecognised: neither an ivlink directory nor a known foreign layout (Zephyr's doorbell text, OpenAMP's resource table)".to_owned()
            }
            ("empty", 0) => "empty: no directory yet".to_owned(),
            ("raw", 0) => "a foreign layout: Zephyr's doorbell sample (a text at offset 0)".to_owned(),
            ("openamp", 0) => "a foreign layout: OpenAMP's resource table".to_owned(),
            (_, 0) => "consistent".to_owned(),
            (_, 1) => "1 inconsistency found".to_owned(),
            (_, n) => format!("{n} inconsistencies found"),
        };
    }
}

/// The layout name of a region nobody here knows.
const UNRECOGNISED: &str = "unrecognised";

/// Longest text at offset 0 taken for Zephyr's doorbell message.
const MAX_RAW_MESSAGE: usize = 4096;

/// Reads `region` and reports what is in it, with one count of every problem
/// and one verdict.
pub fn inspect(region: &RawRegion) -> RegionReport {
    let mut report = read_region(region);
    report.conclude();
    report
}

/// Names a foreign region: Zephyr's doorbell text, OpenAMP's resource table, or
/// unrecognised (with its first bytes, escaped).
fn foreign(region: &RawRegion, report: &mut RegionReport) {
    let mut buf = vec![0u8; MAX_RAW_MESSAGE];
    let len = raw_message::read(region, raw_message::OFFSET, &mut buf).unwrap_or(0);
    let text = std::str::from_utf8(&buf[..len]).ok().filter(|t| {
        // The whole string up to its NUL, and text a person wrote.
        len > 0
            && len < buf.len()
            && t.chars()
                .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
    });
    if let Some(text) = text {
        report.layout = "raw".into();
        report.raw_message = Some(text.to_owned());
    } else if ivlink_core::rpmsg::resource_table::check(region).unwrap_or(false) {
        report.layout = "openamp".into();
    } else {
        report.layout = UNRECOGNISED.into();
        let mut first = [0u8; 16];
        let n = first.len().min(region.len());
        let _ = region.read(0, &mut first[..n]);
        report.first_bytes = Some(first[..n].escape_ascii().to_string());
    }
}

fn read_region(region: &RawRegion) -> RegionReport {
    let mut report = RegionReport {
        size: region.len(),
        layout: String::new(),
        raw_message: None,
        first_bytes: None,
        max_sections: 0,
        section_count: 0,
        sections: Vec::new(),
        inconsistencies: Vec::new(),
        problem_count: 0,
        ok: false,
        verdict: String::new(),
    };
    let directory = match Directory::open(region) {
        Ok(d) => d,
        Err(e @ (DirectoryError::NotCreated | DirectoryError::Foreign { .. })) => {
            // No directory where it goes: the message area may still hold a raw
            // message (`ivlink notify`, Zephyr's doorbell sample) or a foreign layout.
            let mut first = [0u8; 1];
            let unused = region.read(raw_message::OFFSET, &mut first).is_err() || first[0] == 0;
            if unused && e == DirectoryError::NotCreated {
                report.layout = "empty".into();
            } else {
                foreign(region, &mut report);
            }
            return report;
        }
        Err(e) => {
            report.layout = "ivlink (unreadable)".into();
            report.inconsistencies.push(format!("directory: {e}"));
            return report;
        }
    };
    report.layout = "ivlink".into();
    report.max_sections = directory.max_sections();
    report.section_count = directory.section_count().unwrap_or(0);
    for entry in directory.sections() {
        match entry {
            Ok(info) => report.sections.push(section(region, &info)),
            // A withdrawn entry is a leftover the protocols make on purpose (a lost
            // race, a half-built section set up again), not damage.
            Err(DirectoryError::NotReady {
                state: EntryState::Withdrawn,
                ..
            }) => {}
            Err(e) => report.inconsistencies.push(e.to_string()),
        }
    }
    report
        .inconsistencies
        .extend(directory.check().iter().map(ToString::to_string));
    report
}

fn section(region: &RawRegion, info: &SectionInfo) -> SectionReport {
    let mut out = SectionReport {
        index: info.index,
        name: info.name.as_str().to_owned(),
        kind: info.kind.to_string(),
        owner: info.owner,
        vector: info.vector,
        offset: info.offset,
        size: info.size,
        members: Vec::new(),
        rings: Vec::new(),
        mailbox: None,
        stream: None,
        problems: Vec::new(),
    };
    match info.kind {
        SectionKind::Ring => channel(region, info, &mut out),
        SectionKind::Mailbox => mailbox(region, info, &mut out),
        SectionKind::Stream => stream(region, info, &mut out),
        _ => {}
    }
    out
}

/// How often a ring's indices are re-read when they look inconsistent: a live
/// ring's indices move between the two loads, a damaged ring's stay wrong.
const SNAPSHOT_ATTEMPTS: usize = 4;

fn settled_snapshot(ring: &RingLayout, region: &RawRegion) -> Result<RingSnapshot, RingError> {
    let mut snapshot = ring.snapshot(region)?;
    for _ in 1..SNAPSHOT_ATTEMPTS {
        if snapshot.fill().is_some() {
            break;
        }
        snapshot = ring.snapshot(region)?;
    }
    Ok(snapshot)
}

fn ring_report(from: String, to: String, snapshot: &RingSnapshot) -> RingReport {
    RingReport {
        from,
        to,
        head: snapshot.head,
        tail: snapshot.tail,
        fill: snapshot.fill(),
        capacity: snapshot.capacity,
        states: (snapshot.producer_state, snapshot.consumer_state),
        flags: (snapshot.want_space, snapshot.want_data),
    }
}

fn state_name(name: Option<&str>) -> String {
    name.unwrap_or("unknown").to_owned()
}

fn channel(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let layout = match ChannelLayout::open(region, info.offset, info.size) {
        Ok(l) => l,
        Err(e) => {
            out.problems.push(e.to_string());
            return;
        }
    };
    let name_of = |slot: u32| match layout.member(region, slot) {
        Ok(Some(peer)) => format!("peer {peer}"),
        Ok(None) => format!("slot {slot}"),
        Err(e) => format!("slot {slot} ({e})"),
    };
    out.members = layout.members(region).collect();
    for from in 0..layout.max_members() {
        for to in (0..layout.max_members()).filter(|&t| t != from) {
            let snapshot = match layout
                .ring(from, to)
                .and_then(|r| Ok(settled_snapshot(&r, region)?))
            {
                Ok(s) => s,
                Err(e) => {
                    out.problems.push(format!("ring {from}->{to}: {e}"));
                    continue;
                }
            };
            if snapshot.head == 0
                && snapshot.tail == 0
                && snapshot.producer_state == 0
                && snapshot.consumer_state == 0
            {
                continue; // never used
            }
            if snapshot.fill().is_none() {
                out.problems.push(format!(
                    "ring {} -> {}: head {} and tail {} are inconsistent",
                    name_of(from),
                    name_of(to),
                    snapshot.head,
                    snapshot.tail
                ));
            }
            out.rings
                .push(ring_report(name_of(from), name_of(to), &snapshot));
        }
    }
}

fn mailbox(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let header = match MailboxHeader::read(region, info.offset, info.size) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(format!("mailbox header: {e}"));
            return;
        }
    };
    let report = out.mailbox.insert(MailboxReport {
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
    });
    // `open` re-validates every header field against the section; nothing past
    // the header is read unless it holds.
    let layout = match MailboxLayout::open(region, info.offset, info.size) {
        Ok(l) => l,
        Err(e) => {
            out.problems.push(e.to_string());
            return;
        }
    };
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
        report.slots.push(SlotReport {
            slot,
            word,
            state: name.to_owned(),
            peer,
        });
    }
    let name_of = |slot: u32| match states.get(slot as usize) {
        Some(SlotState::Member(peer)) => format!("peer {peer}"),
        _ => format!("slot {slot}"),
    };
    for from in 0..layout.max_members() {
        for to in (0..layout.max_members()).filter(|&t| t != from) {
            let b = match layout.box_snapshot(region, from, to) {
                Ok(b) => b,
                Err(e) => {
                    out.problems.push(format!("box {from}->{to}: {e}"));
                    continue;
                }
            };
            if b.state == 0 && b.id == 0 && b.len == 0 {
                continue; // never used
            }
            let what = format!("box {} -> {}", name_of(from), name_of(to));
            if b.unknown_bits() != 0 {
                out.problems.push(format!(
                    "{what}: unknown state bits {:#x} (state word {:#x})",
                    b.unknown_bits(),
                    b.state
                ));
            } else if !b.is_full() && b.state != 0 {
                out.problems.push(format!(
                    "{what}: state word {:#x} has flags without the busy bit",
                    b.state
                ));
            }
            // Id and length only count while the box is full: a take leaves the
            // last message's values behind.
            if b.is_full() && b.id >= layout.id_count() {
                out.problems.push(format!(
                    "{what}: id {} is out of range (ids 0..{})",
                    b.id,
                    layout.id_count()
                ));
            }
            if b.is_full() && b.len as usize > layout.max_data_size() {
                out.problems.push(format!(
                    "{what}: length {} exceeds the maximum of {} bytes",
                    b.len,
                    layout.max_data_size()
                ));
            }
            let completion = match (b.is_full(), b.wants_completion()) {
                (false, _) => "complete",
                (true, false) => "pending",
                (true, true) => "awaited",
            };
            report.boxes.push(BoxReport {
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

fn stream(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let header = match StreamHeader::read(region, info.offset, info.size) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(format!("stream header: {e}"));
            return;
        }
    };
    let sides = [Side::A, Side::B];
    let label = |side: Side| format!("{side:?} (peer {})", header.peers[side as usize]);
    let mut liveness = header.liveness;
    let mut rings: [Option<RingSnapshot>; 2] = [None, None];
    let mut rings_report = Vec::new();
    match StreamLayout::open(region, info.offset, info.size) {
        Err(e) => out.problems.push(e.to_string()),
        Ok(layout) => {
            for side in sides {
                match settled_snapshot(&layout.ring(side), region) {
                    Ok(snapshot) => {
                        if snapshot.fill().is_none() {
                            out.problems.push(format!(
                                "ring {} -> {}: head {} and tail {} are inconsistent",
                                label(side),
                                label(side.other()),
                                snapshot.head,
                                snapshot.tail
                            ));
                        }
                        rings_report.push(ring_report(label(side), label(side.other()), &snapshot));
                        rings[side as usize] = Some(snapshot);
                    }
                    Err(e) => out.problems.push(format!(
                        "ring {} -> {}: {e}",
                        label(side),
                        label(side.other())
                    )),
                }
            }
            // Liveness again, after the rings: a side whose traffic was seen
            // above is seen attached here.
            for side in sides {
                match layout.state_word(region, side) {
                    Ok(word) => liveness[side as usize] = word,
                    Err(e) => out.problems.push(format!("side {side:?} liveness: {e}")),
                }
            }
        }
    }
    if header.peers[0] == header.peers[1] {
        out.problems.push(format!(
            "both sides are peer {}: a stream needs two peers",
            header.peers[0]
        ));
    }
    let mut side_reports = Vec::new();
    for side in sides {
        let word = liveness[side as usize];
        let state = PeerState::from_u32(word);
        match state {
            None => out.problems.push(format!(
                "side {}: liveness word {word:#x} is not a known state",
                label(side)
            )),
            Some(PeerState::Never) => {
                // A side that never attached has neither sent nor read.
                let sent = rings[side as usize].map_or(0, |r| r.head);
                let read = rings[side.other() as usize].map_or(0, |r| r.tail);
                if sent != 0 || read != 0 {
                    out.problems.push(format!(
                        "side {} never connected, yet it sent {sent} and read {read} bytes",
                        label(side)
                    ));
                }
            }
            Some(_) => {}
        }
        side_reports.push(SideReport {
            side: format!("{side:?}"),
            peer: header.peers[side as usize],
            liveness: word,
            state: state_name(state.map(PeerState::name)),
        });
    }
    out.stream = Some(StreamReport {
        magic: header.magic.escape_ascii().to_string(),
        state: header.state,
        state_name: state_name(header.state_name()),
        capacity: header.capacity,
        sides: side_reports,
        rings: rings_report,
    });
}

impl fmt::Display for RegionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "region: {} bytes, layout {}", self.size, self.layout)?;
        if let Some(message) = &self.raw_message {
            writeln!(f, "  raw message at offset 0: {message:?}")?;
        }
        if let Some(first) = &self.first_bytes {
            writeln!(f, "  first bytes: \"{first}\"")?;
        }
        if self.layout.starts_with("ivlink") {
            writeln!(
                f,
                "directory: {} of {} sections used",
                self.section_count, self.max_sections
            )?;
        }
        for s in &self.sections {
            writeln!(
                f,
                "  [{}] {:<20} {:<8} owner {:<5} vector {:<3} offset {:#010x} size {}",
                s.index, s.name, s.kind, s.owner, s.vector, s.offset, s.size
            )?;
            if let Some(m) = &s.mailbox {
                mailbox_header_line(f, m)?;
            }
            if !s.members.is_empty() {
                let members = s
                    .members
                    .iter()
                    .fold(String::new(), |mut acc, (slot, peer)| {
                        let _ = write!(acc, " {slot}:{peer}");
                        acc
                    });
                writeln!(f, "      members (slot:peer):{members}")?;
            }
            for r in &s.rings {
                ring_line(f, r, true)?;
            }
            if let Some(m) = &s.mailbox {
                mailbox_lines(f, m)?;
            }
            if let Some(st) = &s.stream {
                stream_lines(f, st)?;
            }
            for p in &s.problems {
                writeln!(f, "      PROBLEM: {p}")?;
            }
        }
        // Only an ivlink directory can be inconsistent; the count takes in the
        // PROBLEM lines above, so it agrees with the verdict and the exit code.
        if self.layout.starts_with("ivlink") {
            match self.problem_count {
                0 => writeln!(f, "inconsistencies: none")?,
                n => writeln!(f, "inconsistencies: {n}")?,
            }
            for i in &self.inconsistencies {
                writeln!(f, "  {i}")?;
            }
        }
        writeln!(f, "verdict: {}", self.verdict)
    }
}

/// One ring as a line; `states`: with the producer and consumer state words
/// (a stream's rings do not use them).
fn ring_line(f: &mut fmt::Formatter<'_>, r: &RingReport, states: bool) -> fmt::Result {
    let fill = r.fill.map_or("?".to_owned(), |b| {
        format!("{b} B ({:.0}%)", b as f64 * 100.0 / r.capacity as f64)
    });
    let states = if states {
        format!(" states {}/{}", r.states.0, r.states.1)
    } else {
        String::new()
    };
    writeln!(
        f,
        "      {:>10} -> {:<10} head {:<12} tail {:<12} fill {:<16}{states} want space {} want data {}",
        r.from, r.to, r.head, r.tail, fill, r.flags.0, r.flags.1
    )
}

fn mailbox_header_line(f: &mut fmt::Formatter<'_>, m: &MailboxReport) -> fmt::Result {
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
fn mailbox_lines(f: &mut fmt::Formatter<'_>, m: &MailboxReport) -> fmt::Result {
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

fn stream_lines(f: &mut fmt::Formatter<'_>, st: &StreamReport) -> fmt::Result {
    writeln!(
        f,
        "      stream: magic {}, state {} ({}), capacity {} B per direction",
        st.magic, st.state_name, st.state, st.capacity
    )?;
    for side in &st.sides {
        writeln!(
            f,
            "      side {}: peer {:<5} {} ({})",
            side.side, side.peer, side.state, side.liveness
        )?;
    }
    for r in &st.rings {
        ring_line(f, r, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivlink_core::HeapRegion;
    use ivlink_core::directory::SectionSpec;
    use ivlink_core::mailbox::MailboxShape;
    use ivlink_core::stream::StreamEnd;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering;

    const SHAPE: MailboxShape = MailboxShape {
        max_members: 4,
        max_data: 100,
        id_count: 16,
        vector: 0,
        completion_vector: 1,
    };
    const CAPACITY: usize = 256;

    /// A region with a directory, a mailbox "ipm" and a stream "pipe".
    fn region() -> (HeapRegion, SectionInfo, SectionInfo) {
        let region = HeapRegion::new(1 << 20);
        let directory = Directory::create(&*region, 8).unwrap();
        let add = |name, kind, size| {
            let spec = SectionSpec::new(name, kind, size)
                .with_owner(3)
                .with_vector(1)
                .with_align(4096);
            directory.add(&spec).unwrap()
        };
        let mbx = add("ipm", SectionKind::Mailbox, SHAPE.section_size().unwrap());
        let stm = add(
            "pipe",
            SectionKind::Stream,
            StreamLayout::section_size(CAPACITY).unwrap(),
        );
        MailboxLayout::create(&*region, mbx.offset, mbx.size, SHAPE).unwrap();
        StreamLayout::create(&*region, stm.offset, stm.size, CAPACITY, [3, 5]).unwrap();
        (region, mbx, stm)
    }

    /// Peers 3, 5 and 7 join the mailbox; 5 sends to 3 (taken), 7 sends to 3 and
    /// waits for completion (not taken yet). On the stream, A (3) sends 12 bytes
    /// and closes, B (5) reads 5, answers 4 and sleeps waiting for room.
    fn traffic(region: &HeapRegion, mbx: &SectionInfo, stm: &SectionInfo) {
        let layout = MailboxLayout::open(&**region, mbx.offset, mbx.size).unwrap();
        for peer in [3, 5, 7] {
            layout.join(&**region, peer).unwrap();
        }
        layout.send(&**region, 1, 0, 4, b"hello", true).unwrap();
        let mut buf = [0u8; 100];
        let taken = layout.take(&**region, 0, 0, &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..taken.len], b"hello");
        layout.send(&**region, 2, 0, 9, b"waiting", true).unwrap();
        assert!(layout.arm_completion(&**region, 2, 0).unwrap());

        let layout = StreamLayout::open(&**region, stm.offset, stm.size).unwrap();
        let mut a = StreamEnd::attach(&**region, layout, Side::A).unwrap();
        let mut b = StreamEnd::attach(&**region, layout, Side::B).unwrap();
        assert_eq!(a.write(b"hello stream").unwrap(), 12);
        a.publish().unwrap();
        let mut five = [0u8; 5];
        assert_eq!(b.read(&mut five).unwrap(), 5);
        assert_eq!(&five, b"hello");
        b.release().unwrap();
        assert_eq!(b.write(b"back").unwrap(), 4);
        b.publish().unwrap();
        a.close().unwrap();
        assert!(
            b.prepare_sleep_write(CAPACITY).unwrap(),
            "4 bytes in use: sleeps"
        );
    }

    fn section<'a>(report: &'a RegionReport, name: &str) -> &'a SectionReport {
        report.sections.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn mailbox_and_stream_are_decoded_after_an_exchange() {
        let (region, mbx, stm) = region();
        traffic(&region, &mbx, &stm);
        let report = inspect(&region);
        assert!(report.inconsistencies.is_empty(), "{report}");

        let ipm = section(&report, "ipm");
        assert!(ipm.problems.is_empty(), "{report}");
        assert_eq!(ipm.members, [(0, 3), (1, 5), (2, 7)]);
        let m = ipm.mailbox.as_ref().unwrap();
        assert_eq!(
            (m.magic.as_str(), m.state, m.state_name.as_str()),
            ("MBX1", 2, "ready")
        );
        assert_eq!((m.max_members, m.max_data, m.id_count), (4, 100, 16));
        assert_eq!((m.vector, m.completion_vector), (0, 1));
        assert_eq!(m.slots.len(), 3);
        assert_eq!(
            (m.slots[2].word, m.slots[2].state.as_str(), m.slots[2].peer),
            (8, "member", Some(7))
        );
        assert_eq!(m.boxes.len(), 2, "{report}");
        let done = &m.boxes[0];
        assert_eq!((done.from.as_str(), done.to.as_str()), ("peer 5", "peer 3"));
        assert_eq!(
            (done.busy, done.id, done.len, done.completion.as_str()),
            (false, 4, 5, "complete")
        );
        let waiting = &m.boxes[1];
        assert_eq!(
            (waiting.from_slot, waiting.to_slot, waiting.state),
            (2, 0, 7)
        );
        assert!(waiting.busy && waiting.wants_completion && waiting.rung);
        assert_eq!(
            (waiting.id, waiting.len, waiting.completion.as_str()),
            (9, 7, "awaited")
        );

        let pipe = section(&report, "pipe");
        assert!(pipe.problems.is_empty(), "{report}");
        let s = pipe.stream.as_ref().unwrap();
        assert_eq!(
            (s.magic.as_str(), s.state_name.as_str(), s.capacity),
            ("STM1", "ready", 256)
        );
        let sides: Vec<_> = s
            .sides
            .iter()
            .map(|side| {
                (
                    side.side.as_str(),
                    side.peer,
                    side.liveness,
                    side.state.as_str(),
                )
            })
            .collect();
        assert_eq!(sides, [("A", 3, 2, "closed"), ("B", 5, 1, "connected")]);
        let rings: Vec<_> = s
            .rings
            .iter()
            .map(|r| (r.from.as_str(), r.head, r.tail, r.fill, r.capacity, r.flags))
            .collect();
        assert_eq!(
            rings,
            [
                ("A (peer 3)", 12, 5, Some(7), 256, (false, false)),
                ("B (peer 5)", 4, 0, Some(4), 256, (true, false)),
            ]
        );

        let text = report.to_string();
        for needle in [
            "mailbox: magic MBX1, state ready (2), 4 member slots, max data 100 B, 16 ids, vector 0, completion vector 1",
            "members (slot:peer): 0:3 1:5 2:7",
            "busy  id 9          len 7        completion awaited  rung true  state 0x7",
            "empty id 4          len 5        completion complete rung false state 0x0",
            "stream: magic STM1, state ready (2), capacity 256 B per direction",
            "side A: peer 3     closed (2)",
            "side B: peer 5     connected (1)",
            "fill 4 B (2%)",
            "inconsistencies: none",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["sections"][0]["mailbox"]["boxes"][1]["completion"],
            "awaited"
        );
        assert_eq!(
            json["sections"][1]["stream"]["sides"][1]["state"],
            "connected"
        );
        assert!(json["sections"][0].get("stream").is_none());
    }

    /// Absolute offset of a box's `len` word (the layout documented in
    /// `ivlink_core::mailbox`).
    fn box_len_at(mbx: &SectionInfo, from: usize, to: usize) -> usize {
        let m = SHAPE.max_members as usize;
        let boxes = (64 + 4 * m).next_multiple_of(64);
        let box_size = 64 + (SHAPE.max_data as usize).next_multiple_of(64);
        let column = if to < from { to } else { to - 1 };
        mbx.offset + boxes + (from * (m - 1) + column) * box_size + 8
    }

    #[test]
    fn corrupted_words_become_problems_not_panics() {
        let (region, mbx, stm) = region();
        traffic(&region, &mbx, &stm);
        // The waiting box 7 -> 3 claims more data than a message may hold, and
        // has an unknown state bit; slot 3 holds no peer id.
        let len_at = box_len_at(&mbx, 2, 0);
        region.store_u32(len_at, 5000, Ordering::Relaxed).unwrap();
        region.store_u32(len_at - 4, 77, Ordering::Relaxed).unwrap();
        region
            .store_u32(len_at - 8, 0x17, Ordering::Relaxed)
            .unwrap();
        region
            .store_u32(mbx.offset + 64 + 12, 0x7000_0000, Ordering::Relaxed)
            .unwrap();
        // Side B's liveness word holds garbage; ring A -> B's head runs ahead.
        region
            .store_u32(stm.offset + 256, 0xdead_beef, Ordering::Relaxed)
            .unwrap();
        region
            .store_u64(stm.offset + 384, 1 << 40, Ordering::Relaxed)
            .unwrap();

        let report = inspect(&region);
        let ipm = section(&report, "ipm");
        let problems = ipm.problems.join("\n");
        for needle in [
            "box peer 7 -> peer 3: length 5000 exceeds the maximum of 100 bytes",
            "box peer 7 -> peer 3: id 77 is out of range (ids 0..16)",
            "box peer 7 -> peer 3: unknown state bits 0x10 (state word 0x17)",
            "slot 3 holds 0x70000000, not a peer id",
        ] {
            assert!(problems.contains(needle), "{needle:?} not in:\n{problems}");
        }
        let m = ipm.mailbox.as_ref().unwrap();
        let damaged = m.slots.iter().find(|s| s.slot == 3).unwrap();
        assert_eq!(
            (damaged.word, damaged.state.as_str(), damaged.peer),
            (0x7000_0000, "damaged", None)
        );
        assert!(
            m.boxes.iter().any(|b| b.len == 5000 && b.id == 77),
            "values as read"
        );

        let pipe = section(&report, "pipe");
        let problems = pipe.problems.join("\n");
        for needle in [
            "side B (peer 5): liveness word 0xdeadbeef is not a known state",
            "ring A (peer 3) -> B (peer 5): head 1099511627776 and tail 5 are inconsistent",
        ] {
            assert!(problems.contains(needle), "{needle:?} not in:\n{problems}");
        }
        let s = pipe.stream.as_ref().unwrap();
        assert_eq!(
            (s.sides[1].liveness, s.sides[1].state.as_str()),
            (0xdead_beef, "unknown")
        );
        assert_eq!(s.rings[0].fill, None);
        let text = report.to_string();
        assert!(
            text.contains("PROBLEM: side B (peer 5): liveness word 0xdeadbeef"),
            "{text}"
        );
        assert!(text.contains("fill ?"), "{text}");
    }

    #[test]
    fn damaged_headers_are_shown_as_read() {
        let (region, mbx, stm) = region();
        // A mailbox whose header lies about its size, a stream whose magic is
        // wrong and whose never-connected side A shows traffic.
        region
            .store_u32(mbx.offset + 4, 1000, Ordering::Relaxed)
            .unwrap();
        region.write(stm.offset, b"ST\x00\xff").unwrap();
        let report = inspect(&region);
        let ipm = section(&report, "ipm");
        let m = ipm.mailbox.as_ref().unwrap();
        assert_eq!(m.max_members, 1000);
        assert!(m.slots.is_empty() && m.boxes.is_empty());
        assert_eq!(
            ipm.problems,
            ["not a valid mailbox: member count out of range"]
        );
        let pipe = section(&report, "pipe");
        let s = pipe.stream.as_ref().unwrap();
        assert_eq!(s.magic, "ST\\x00\\xff");
        assert!(s.rings.is_empty());
        assert_eq!(pipe.problems, ["not a valid stream: bad magic"]);
        assert!(
            report
                .to_string()
                .contains("stream: magic ST\\x00\\xff, state ready (2)")
        );

        let (region, _, stm) = self::region();
        region
            .store_u64(stm.offset + 384, 3, Ordering::Relaxed)
            .unwrap();
        let report = inspect(&region);
        assert_eq!(
            section(&report, "pipe").problems,
            ["side A (peer 3) never connected, yet it sent 3 and read 0 bytes"]
        );
    }

    #[test]
    fn foreign_regions_are_named_or_unrecognised() {
        let region = HeapRegion::new(1 << 16);
        ivlink_core::rpmsg::resource_table::write(&*region).unwrap();
        let report = inspect(&region);
        assert_eq!(
            (report.layout.as_str(), report.ok),
            ("openamp", true),
            "{report}"
        );

        let region = HeapRegion::new(1 << 16);
        region.write(0, b"\x01\x02binary\x00").unwrap();
        let report = inspect(&region);
        assert_eq!((report.layout.as_str(), report.ok), ("unrecognised", false));
        assert_eq!(report.raw_message, None);
        let text = report.to_string();
        assert!(text.contains(r#"first bytes: "\x01\x02binary"#), "{text}");
        assert!(text.ends_with("verdict: unrecognised: neither an ivlink directory nor a known foreign layout (Zephyr's doorbell text, OpenAMP's resource table)\n"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a hostile peer writes over the mailbox and the stream, the
        /// report is made and printed without a panic.
        #[test]
        fn hostile_sections_never_panic(
            writes in proptest::collection::vec((any::<bool>(), 0usize..1200, any::<u64>()), 1..32),
        ) {
            let (region, mbx, stm) = region();
            traffic(&region, &mbx, &stm);
            for (in_mailbox, at, value) in writes {
                let base = if in_mailbox { mbx.offset } else { stm.offset };
                let _ = region.write(base + at, &value.to_le_bytes());
            }
            let report = inspect(&region);
            let _ = report.to_string();
            let _ = serde_json::to_string(&report).unwrap();
        }
    }
}
