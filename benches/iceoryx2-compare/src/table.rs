//! The comparison as text: the side-by-side table, how each side worked, and
//! what was left of iceoryx2's resources.

use std::io::{self, Write};

use ivlink_lab::bench::report::{format_ns, format_size};

use crate::compare::{Comparison, Row, Unit};
use crate::iox;
use crate::ivlink_side;

/// The iceoryx2 release compared with (keep in step with Cargo.toml).
pub const ICEORYX2: &str = "iceoryx2 0.10";

/// A figure in its unit: "152 ns", "85.1 M msg/s" (small messages) or
/// "9.87 GB/s" (1 KiB and up).
pub fn format_figure(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Nanoseconds => format_ns(value),
        Unit::MessagesPerSecond { size } if size >= 1024 => {
            format!("{:.2} GB/s", value * size as f64 / 1e9)
        }
        Unit::MessagesPerSecond { .. } => format!("{:.2} M msg/s", value / 1e6),
    }
}

fn ratio_cell(row: &Row) -> String {
    let better = if row.unit.lower_is_better() {
        "lower is better"
    } else {
        "higher is better"
    };
    match row.spread {
        Some((lo, hi)) => format!("{:.2}x ({lo:.2}-{hi:.2}x) {better}", row.ratio()),
        None => format!("{:.2}x {better}", row.ratio()),
    }
}

impl Comparison {
    /// The human-readable report.
    pub fn write_table(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        let s = &self.settings;
        writeln!(
            out,
            "ivlink vs {ICEORYX2} (ipc publish-subscribe), measured in one run{}",
            if s.quick {
                " (--quick: small counts, rough figures)"
            } else {
                ""
            }
        )?;
        writeln!(out, "placement: {}", self.placement.describe())?;
        writeln!(
            out,
            "{:<52} {:>14} {:>14}  ivlink/iceoryx2{}",
            "metric",
            "ivlink",
            "iceoryx2",
            if self.rounds.len() > 1 {
                " (lowest-highest of single rounds)"
            } else {
                ""
            }
        )?;
        for row in self.rows()? {
            writeln!(
                out,
                "{:<52} {:>14} {:>14}  {}",
                row.metric,
                format_figure(row.unit, row.ivlink),
                format_figure(row.unit, row.iceoryx2),
                ratio_cell(&row)
            )?;
        }
        self.write_notes(out)?;
        Ok(())
    }

    fn write_notes(&self, out: &mut dyn Write) -> io::Result<()> {
        let latency = &self.iceoryx2.latency;
        writeln!(
            out,
            "\nlatency: one way = RTT/2 of a ping-pong, percentiles of {} (iceoryx2) and {} (ivlink) round trips",
            latency.one_way.count,
            ivlink_side::busy_latency(&self.ivlink).map_or(0, |r| r.one_way.count)
        )?;
        writeln!(
            out,
            "throughput: producer writes each message, consumer copies it out; GB = 10^9 bytes\n\
             zero-copy: producer fills each payload in place (ivlink write grant, iceoryx2 loan), \
             consumer checks its first and last 8 bytes in place (ivlink read grant, iceoryx2 received sample)"
        )?;
        writeln!(
            out,
            "every figure: the median of {} round(s), each side measured once per round, taking turns going first",
            self.rounds.len()
        )?;
        writeln!(out, "\nhow")?;
        let ivlink = &self.ivlink.settings;
        writeln!(
            out,
            "  ivlink    `ivlink bench`: rings in an ivshmem region ({}, memfd) from an embedded server, two host peers in two processes; \
             latency: both sides busy-poll; streams: publish per batch of {}, ring {}, consumer spins {} µs then sleeps",
            format_size(ivlink.region),
            ivlink.batch,
            format_size(ivlink.ring),
            ivlink.stream_spin.as_micros()
        )?;
        writeln!(
            out,
            "            zero-copy streams: reserve, fill, commit; peek, check, release (`ivlink-grant`)"
        )?;
        let depths: Vec<String> = self
            .iceoryx2
            .throughput
            .iter()
            .filter(|r| r.mechanism == iox::MECHANISM)
            .zip(&self.iceoryx2.queue_depths)
            .map(|(r, depth)| format!("{depth} at {}", format_size(r.size)))
            .collect();
        writeln!(
            out,
            "  iceoryx2  {}; latency buffer 1; stream buffers {}",
            iox::LATENCY_HOW,
            depths.join(", ")
        )?;
        writeln!(
            out,
            "            zero-copy streams: loan_slice_uninit, fill in place, send; receive, check in place, drop"
        )?;
        if let Some(floor) = self.ivlink.latency(ivlink_side::MEMCPY_BUSY) {
            writeln!(
                out,
                "  floor     plain memcpy ring between the same two processes, busy-poll, one-way p50 {} (same run)",
                format_ns(floor.one_way.p50)
            )?;
        }
        match self.iceoryx2.leftovers.len() {
            0 => writeln!(
                out,
                "\niceoryx2 resources: none left (no service or node of the run remains)"
            )?,
            n => writeln!(
                out,
                "\niceoryx2 resources: {n} of the run still exist: {}",
                self.iceoryx2.leftovers.join(", ")
            )?,
        }
        writeln!(out, "total time: {:.1} s", self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::tests::comparison;

    #[test]
    fn figures_read_naturally() {
        assert_eq!(format_figure(Unit::Nanoseconds, 152.4), "152 ns");
        assert_eq!(
            format_figure(Unit::MessagesPerSecond { size: 64 }, 85.1e6),
            "85.10 M msg/s"
        );
        assert_eq!(
            format_figure(Unit::MessagesPerSecond { size: 4096 }, 1e6),
            "4.10 GB/s"
        );
    }

    #[test]
    fn the_table_has_every_row_with_its_ratio() {
        let mut out = Vec::new();
        comparison().write_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ivlink/iceoryx2"), "{text}");
        assert!(text.contains("0.25x lower is better"), "{text}");
        assert!(text.contains("10.00x higher is better"), "{text}");
        assert!(text.contains("throughput 4 KiB"), "{text}");
        assert!(text.contains("throughput 4 KiB, zero-copy"), "{text}");
        assert!(
            text.contains("stream buffers 4096 at 64 B, 64 at 4 KiB\n"),
            "{text}"
        );
        assert!(text.contains("none left"), "{text}");
        assert!(text.contains("floor"), "{text}");
    }
}
