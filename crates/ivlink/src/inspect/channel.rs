//! Channel sections: members, and every ring that carries or carried traffic.

use ivlink_core::RawRegion;
use ivlink_core::channel::ChannelLayout;
use ivlink_core::directory::SectionInfo;
use ivlink_core::section::SectionProtocol;

use super::{SectionReport, ring_report, settled_snapshot};

/// Decodes the channel in `info` into `out`.
pub(super) fn decode(region: &RawRegion, info: &SectionInfo, out: &mut SectionReport) {
    let layout = match <ChannelLayout as SectionProtocol>::open(region, info.offset, info.size) {
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
