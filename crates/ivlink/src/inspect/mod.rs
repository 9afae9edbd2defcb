//! Decoding a live region for people: the directory, every section, each channel's
//! members and rings with their indices, fill level and flags, each mailbox's
//! header, member slots and boxes, each stream's header, liveness words and byte
//! rings, each native RPMsg link's status, vrings and messages in flight, each
//! console's header, virtio-mmio register block and queues, each NTB switch's
//! header and ports (owner, link, doorbell and message registers, scratchpads,
//! window translations), and every inconsistency found. Nothing is trusted; every value is shown as read,
//! and whatever cannot be right becomes a problem line, never a panic.
//!
//! One module per section kind (a table of decoders keyed by each protocol's
//! `SectionProtocol::KIND` lists them), one for foreign layouts.

use std::fmt::{self, Write as _};

use ivlink_core::channel::ChannelLayout;
use ivlink_core::console::ConsoleLayout;
use ivlink_core::directory::{Directory, DirectoryError, EntryState, SectionInfo, SectionKind};
use ivlink_core::mailbox::MailboxLayout;
use ivlink_core::ntb::NtbLayout;
use ivlink_core::ring::{RingError, RingLayout, RingSnapshot};
use ivlink_core::rpmsg::LinkLayout;
use ivlink_core::section::SectionProtocol;
use ivlink_core::stream::StreamLayout;
use ivlink_core::{RawRegion, Region, raw_message};
use serde::Serialize;

mod channel;
mod console;
mod foreign;
mod mailbox;
mod ntb;
mod rpmsg;
mod stream;
#[cfg(test)]
mod tests;

pub use console::{
    ConfigReport, ConsoleHeaderReport, ConsoleReport, ConsoleSideReport, QueueReport,
    RegistersReport,
};
pub use mailbox::{BoxReport, MailboxReport, SlotReport};
pub use ntb::{
    NtbInboundReport, NtbMessageReport, NtbOutboundReport, NtbOwnerReport, NtbPortReport,
    NtbReport, NtbTranslationReport,
};
pub use rpmsg::{EndpointReport, MessageReport, RpmsgReport, VringReport};
pub use stream::{SideReport, StreamReport};

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
    /// For native RPMsg links: the decoded link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpmsg: Option<RpmsgReport>,
    /// For native consoles: the decoded console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleReport>,
    /// For NTB switches: the decoded switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ntb: Option<NtbReport>,
    /// Problems found in this section.
    pub problems: Vec<String>,
}

/// What `ivlink inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    /// Region size.
    pub size: usize,
    /// `ivlink` (a directory), `empty` (no directory, no message), a known foreign
    /// layout: `raw` (Zephyr's doorbell sample: a text string at offset 0) or
    /// `openamp` (OpenAMP's resource table) or `hvl-zephyr` (the Zephyr
    /// hypervisor-less virtio-mmio console sample), else `unrecognised`.
    pub layout: String,
    /// The string at offset 0 for raw regions.
    pub raw_message: Option<String>,
    /// The first bytes, escaped, of a region whose layout is unrecognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bytes: Option<String>,
    /// The console of the `hvl-zephyr` layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleReport>,
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
            (HVL_ZEPHYR, 0) => {
                "a foreign layout: virtio-mmio console (the Zephyr hypervisor-less sample's layout)"
                    .to_owned()
            }
            (_, 0) => "consistent".to_owned(),
            (_, 1) => "1 inconsistency found".to_owned(),
            (_, n) => format!("{n} inconsistencies found"),
        };
    }
}

/// The layout name of a region nobody here knows.
const UNRECOGNISED: &str = "unrecognised";
/// The layout name of a region holding the Zephyr hypervisor-less console
/// sample's register block (the CLI's `--profile hvl-zephyr`).
const HVL_ZEPHYR: &str = "hvl-zephyr";

/// Reads `region` and reports what is in it, with one count of every problem
/// and one verdict.
pub fn inspect(region: &RawRegion) -> RegionReport {
    let mut report = read_region(region);
    report.conclude();
    report
}

fn read_region(region: &RawRegion) -> RegionReport {
    let mut report = RegionReport {
        size: region.len(),
        layout: String::new(),
        raw_message: None,
        first_bytes: None,
        console: None,
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
                foreign::name(region, &mut report);
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
        rpmsg: None,
        console: None,
        ntb: None,
        problems: Vec::new(),
    };
    if let Some((_, decode)) = DECODERS.iter().find(|(kind, _)| *kind == info.kind) {
        decode(region, info, &mut out);
    }
    out
}

/// Fills a section's report from the region: one per protocol module.
type Decode = fn(&RawRegion, &SectionInfo, &mut SectionReport);

/// The decoder of each kind, keyed by its protocol's [`SectionProtocol::KIND`]:
/// adding a protocol adds a line here. Kinds without one are listed undecoded.
const DECODERS: &[(SectionKind, Decode)] = &[
    (<ChannelLayout as SectionProtocol>::KIND, channel::decode),
    (<MailboxLayout as SectionProtocol>::KIND, mailbox::decode),
    (<StreamLayout as SectionProtocol>::KIND, stream::decode),
    (<LinkLayout as SectionProtocol>::KIND, rpmsg::decode),
    (<ConsoleLayout as SectionProtocol>::KIND, console::decode),
    (<NtbLayout as SectionProtocol>::KIND, ntb::decode),
];

/// How often a ring's indices are re-read when they look inconsistent: a live
/// ring's indices move between the two loads, a damaged ring's stay wrong.
pub(super) const SNAPSHOT_ATTEMPTS: usize = 4;

/// Takes readings until one has no problem, at most [`SNAPSHOT_ATTEMPTS`]: a
/// section read while its peers run may be caught between two related writes.
pub(super) fn settled<T>(mut read: impl FnMut() -> (T, Vec<String>)) -> (T, Vec<String>) {
    let mut reading = read();
    for _ in 1..SNAPSHOT_ATTEMPTS {
        if reading.1.is_empty() {
            break;
        }
        reading = read();
    }
    reading
}

pub(super) fn settled_snapshot(
    ring: &RingLayout,
    region: &RawRegion,
) -> Result<RingSnapshot, RingError> {
    let mut snapshot = ring.snapshot(region)?;
    for _ in 1..SNAPSHOT_ATTEMPTS {
        if snapshot.fill().is_some() {
            break;
        }
        snapshot = ring.snapshot(region)?;
    }
    Ok(snapshot)
}

pub(super) fn ring_report(from: String, to: String, snapshot: &RingSnapshot) -> RingReport {
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

pub(super) fn state_name(name: Option<&str>) -> String {
    name.unwrap_or("unknown").to_owned()
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
        if let Some(c) = &self.console {
            console::lines(f, c, "  ")?;
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
                mailbox::header_line(f, m)?;
            }
            if let Some(n) = &s.ntb {
                ntb::header_line(f, n)?;
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
                mailbox::lines(f, m)?;
            }
            if let Some(st) = &s.stream {
                stream::lines(f, st)?;
            }
            if let Some(link) = &s.rpmsg {
                rpmsg::lines(f, link)?;
            }
            if let Some(c) = &s.console {
                console::lines(f, c, "      ")?;
            }
            if let Some(n) = &s.ntb {
                ntb::lines(f, n)?;
            }
            for p in &s.problems {
                writeln!(f, "      PROBLEM: {p}")?;
            }
        }
        // Only an ivlink directory and a foreign console can be inconsistent;
        // the count takes in the PROBLEM lines above, so it agrees with the
        // verdict and the exit code.
        if self.layout.starts_with("ivlink") || self.console.is_some() {
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
pub(super) fn ring_line(f: &mut fmt::Formatter<'_>, r: &RingReport, states: bool) -> fmt::Result {
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
