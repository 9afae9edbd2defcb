//! Stream sections: header, both sides' liveness and both byte rings.

use std::fmt;

use ivlink_core::RawRegion;
use ivlink_core::directory::SectionInfo;
use ivlink_core::ring::RingSnapshot;
use ivlink_core::section::SectionProtocol;
use ivlink_core::stream::{PeerState, Side, StreamLayout};
use serde::Serialize;

use super::{RingReport, SectionReport, ring_line, ring_report, settled_snapshot, state_name};

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

/// A side as the report names it: `A` or `B`.
fn side_name(side: Side) -> &'static str {
    match side {
        Side::A => "A",
        Side::B => "B",
    }
}

/// Decodes the stream in `info` into `out`.
pub(super) fn decode(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let header = match StreamLayout::snapshot(region, info.offset, info.size) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(format!("stream header: {e}"));
            return;
        }
    };
    let sides = [Side::A, Side::B];
    let label = |side: Side| format!("{} (peer {})", side_name(side), header.peers[side as usize]);
    let mut liveness = header.liveness;
    let mut rings: [Option<RingSnapshot>; 2] = [None, None];
    let mut rings_report = Vec::new();
    match <StreamLayout as SectionProtocol>::open(region, info.offset, info.size) {
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
                    Err(e) => out
                        .problems
                        .push(format!("side {} liveness: {e}", side_name(side))),
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
            side: side_name(side).to_owned(),
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

pub(super) fn lines(f: &mut fmt::Formatter<'_>, st: &StreamReport) -> fmt::Result {
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
