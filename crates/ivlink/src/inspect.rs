//! Decoding a live region for people: the directory, every section, each channel's
//! members and rings with their indices, fill level and flags, and every
//! inconsistency found. Nothing is trusted; every value is shown as read.

use std::fmt::{self, Write as _};

use ivlink_core::channel::ChannelLayout;
use ivlink_core::directory::{Directory, DirectoryError, SectionInfo, SectionKind};
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
    /// Problems found in this section.
    pub problems: Vec<String>,
}

/// What `ivlink inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    /// Region size.
    pub size: usize,
    /// `ivlink` (a directory), `empty` (all zero at offset 0), or `raw` (foreign
    /// content such as Zephyr's doorbell string).
    pub layout: String,
    /// The string at offset 0 for raw regions.
    pub raw_message: Option<String>,
    /// Directory capacity and use.
    pub max_sections: u32,
    /// Entries claimed.
    pub section_count: u32,
    /// Sections.
    pub sections: Vec<SectionReport>,
    /// Everything inconsistent, region-wide.
    pub inconsistencies: Vec<String>,
}

/// Reads `region` and reports what is in it.
pub fn inspect(region: &RawRegion) -> RegionReport {
    let mut report = RegionReport {
        size: region.len(),
        layout: String::new(),
        raw_message: None,
        max_sections: 0,
        section_count: 0,
        sections: Vec::new(),
        inconsistencies: Vec::new(),
    };
    let directory = match Directory::open(region) {
        Ok(d) => d,
        Err(DirectoryError::NotCreated) => {
            report.layout = "empty".into();
            return report;
        }
        Err(DirectoryError::Foreign { .. }) => {
            report.layout = "raw".into();
            let mut buf = vec![0u8; 256];
            let len = raw_message::read(region, raw_message::OFFSET, &mut buf).unwrap_or(0);
            report.raw_message = Some(String::from_utf8_lossy(&buf[..len]).into_owned());
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
        problems: Vec::new(),
    };
    if info.kind != SectionKind::Ring {
        return out;
    }
    let layout = match ChannelLayout::open(region, info.offset, info.size) {
        Ok(l) => l,
        Err(e) => {
            out.problems.push(e.to_string());
            return out;
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
            let snapshot = match layout.ring(from, to).and_then(|r| Ok(r.snapshot(region)?)) {
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
            out.rings.push(RingReport {
                from: name_of(from),
                to: name_of(to),
                head: snapshot.head,
                tail: snapshot.tail,
                fill: snapshot.fill(),
                capacity: snapshot.capacity,
                states: (snapshot.producer_state, snapshot.consumer_state),
                flags: (snapshot.want_space, snapshot.want_data),
            });
        }
    }
    out
}

impl fmt::Display for RegionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "region: {} bytes, layout {}", self.size, self.layout)?;
        if let Some(message) = &self.raw_message {
            writeln!(f, "  raw message at offset 0: {message:?}")?;
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
                let fill = r.fill.map_or("?".to_owned(), |b| {
                    format!("{b} B ({:.0}%)", b as f64 * 100.0 / r.capacity as f64)
                });
                writeln!(
                    f,
                    "      {:>10} -> {:<10} head {:<12} tail {:<12} fill {:<16} states {}/{} want space {} want data {}",
                    r.from,
                    r.to,
                    r.head,
                    r.tail,
                    fill,
                    r.states.0,
                    r.states.1,
                    r.flags.0,
                    r.flags.1
                )?;
            }
            for p in &s.problems {
                writeln!(f, "      PROBLEM: {p}")?;
            }
        }
        if self.inconsistencies.is_empty() {
            writeln!(f, "inconsistencies: none")
        } else {
            writeln!(f, "inconsistencies:")?;
            for i in &self.inconsistencies {
                writeln!(f, "  {i}")?;
            }
            Ok(())
        }
    }
}
