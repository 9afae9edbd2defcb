//! Regions without an ivlink directory: Zephyr's doorbell text, OpenAMP's
//! resource table, the Zephyr hypervisor-less console sample's register block,
//! or unrecognised.

use ivlink_core::{RawRegion, Region, raw_message};

use super::{HVL_ZEPHYR, RegionReport, UNRECOGNISED, console};

/// Longest text at offset 0 taken for Zephyr's doorbell message.
const MAX_RAW_MESSAGE: usize = 4096;

/// Names a foreign region: Zephyr's doorbell text, OpenAMP's resource table, the
/// Zephyr hypervisor-less console (decoded), or unrecognised (with its first
/// bytes, escaped).
pub(super) fn name(region: &RawRegion, report: &mut RegionReport) {
    // "virt" then Version 1 is no text a person wrote: look for the block first.
    if console::is_hvl_zephyr(region) {
        let (decoded, problems) = console::hvl_zephyr(region);
        report.layout = HVL_ZEPHYR.into();
        report.console = Some(decoded);
        report.inconsistencies.extend(problems);
        return;
    }
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
