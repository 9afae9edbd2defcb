//! The report as text: latency, throughput and message-rate tables with their
//! ratios to the baselines, the strategies, and the targets.

use std::io::{self, Write};

use super::report::{LATENCY_RATIOS, Report, format_ns, format_size};

impl Report {
    /// The human-readable report.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        self.write_settings(out)?;
        self.write_latency(out)?;
        self.write_throughput(out)?;
        self.write_ntb_window(out)?;
        self.write_zero_copy(out)?;
        self.write_message_rate(out)?;
        self.write_strategies(out)?;
        self.write_targets(out)
    }

    /// The run's settings.
    fn write_settings(&self, out: &mut dyn Write) -> io::Result<()> {
        let s = &self.settings;
        writeln!(
            out,
            "ivlink bench{}",
            if s.quick {
                " (--quick: small counts, rough figures)"
            } else {
                ""
            }
        )?;
        writeln!(out, "placement: {}", s.placement.describe())?;
        writeln!(
            out,
            "ivlink: embedded ivshmem server on a memfd ({} region, 1 vector), two host peers in two processes",
            format_size(s.region)
        )?;
        writeln!(
            out,
            "rings: ping-pong rings {} each, streaming ring {}; batch {} (publish and release every min(batch, ring/4) messages); ping-pong payload {}",
            format_size(s.latency_ring),
            format_size(s.ring),
            s.batch,
            format_size(s.payload)
        )?;
        Ok(())
    }

    /// One-way latency per mechanism, with its ratio to the baseline.
    fn write_latency(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "\nOne-way latency = RTT/2 of a ping-pong (percentiles of per-iteration round trips)"
        )?;
        writeln!(
            out,
            "{:<17} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  {:<26} strategy",
            "mechanism", "samples", "p50", "p90", "p99", "p99.9", "max", "ratio (p50)"
        )?;
        for r in &self.latency {
            let ratio = LATENCY_RATIOS
                .iter()
                .find(|(a, _)| *a == r.mechanism)
                .and_then(|(a, b)| Some(format!("{:.2}x {b}", self.latency_ratio(a, b)?)))
                .unwrap_or_default();
            let doorbells = if r.doorbells > 0 {
                format!(" [{:.2} doorbells/message]", r.doorbells_per_message())
            } else {
                String::new()
            };
            let p = &r.one_way;
            writeln!(
                out,
                "{:<17} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  {:<26} {}{doorbells}",
                r.mechanism,
                p.count,
                format_ns(p.p50),
                format_ns(p.p90),
                format_ns(p.p99),
                format_ns(p.p999),
                format_ns(p.max),
                ratio,
                r.how
            )?;
        }
        if let Some(v) = self.latency_ratio("unix", "ivlink-busy") {
            writeln!(
                out,
                "(a UNIX socket round trip takes {v:.1}x ivlink's busy-poll one)"
            )?;
        }
        Ok(())
    }

    /// Streaming throughput per message size, with ratios and their geometric means.
    fn write_throughput(&self, out: &mut dyn Write) -> io::Result<()> {
        let s = &self.settings;
        writeln!(
            out,
            "\nStreaming throughput, GB/s (M messages/s), median of {} interleaved round(s); producer copies in, consumer copies out; GB = 10^9 bytes",
            s.rounds
        )?;
        writeln!(
            out,
            "{:<8} {:>17} {:>17} {:>17} {:>17}  {:>10} {:>10} {:>10}  {:>9}",
            "size",
            "ivlink",
            "memcpy-ring",
            "unix",
            "pipe",
            "/memcpy",
            "/unix",
            "/pipe",
            "doorbells"
        )?;
        let cell = |mechanism: &str, size: usize| {
            self.throughput(mechanism, size).map_or("-".into(), |r| {
                format!("{:.2} ({:.2})", r.gb_per_s(), r.messages_per_s() / 1e6)
            })
        };
        for size in self.sizes() {
            let ratio = |b| {
                self.stream_ratio("ivlink", b, size)
                    .map_or("-".into(), |v| format!("{v:.2}x"))
            };
            writeln!(
                out,
                "{:<8} {:>17} {:>17} {:>17} {:>17}  {:>10} {:>10} {:>10}  {:>9}",
                format_size(size),
                cell("ivlink", size),
                cell("memcpy-ring", size),
                cell("unix", size),
                cell("pipe", size),
                ratio("memcpy-ring"),
                ratio("unix"),
                ratio("pipe"),
                self.throughput("ivlink", size).map_or(0, |r| r.doorbells)
            )?;
        }
        let mean = |b| {
            self.stream_summary(b)
                .map_or("-".into(), |s| format!("{:.2}x", s.0))
        };
        writeln!(
            out,
            "{:<80}  {:>10} {:>10} {:>10}",
            "geometric mean",
            mean("memcpy-ring"),
            mean("unix"),
            mean("pipe")
        )?;
        Ok(())
    }

    /// Streaming through an NTB window, against the memcpy ring where it ran
    /// at the same size.
    fn write_ntb_window(&self, out: &mut dyn Write) -> io::Result<()> {
        let sizes = self.ntb_window_sizes();
        if sizes.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "\nNTB window streaming, GB/s (M chunks/s): peer_mw_write into the peer's window, mw_read out"
        )?;
        writeln!(
            out,
            "{:<8} {:>17} {:>17}  {:>10}  {:>9}",
            "chunk", "ntb-window", "memcpy-ring", "/memcpy", "doorbells"
        )?;
        for size in sizes {
            let cell = |mechanism: &str| {
                self.throughput(mechanism, size).map_or("-".into(), |r| {
                    format!("{:.2} ({:.2})", r.gb_per_s(), r.messages_per_s() / 1e6)
                })
            };
            writeln!(
                out,
                "{:<8} {:>17} {:>17}  {:>10}  {:>9}",
                format_size(size),
                cell("ntb-window"),
                cell("memcpy-ring"),
                self.stream_ratio("ntb-window", "memcpy-ring", size)
                    .map_or("-".into(), |v| format!("{v:.2}x")),
                self.throughput("ntb-window", size)
                    .map_or(0, |r| r.doorbells)
            )?;
        }
        Ok(())
    }

    /// Zero-copy grants against copying in and out, where both ran.
    fn write_zero_copy(&self, out: &mut dyn Write) -> io::Result<()> {
        let sizes: Vec<usize> = self
            .sizes()
            .into_iter()
            .filter(|&size| self.throughput("ivlink-grant", size).is_some())
            .collect();
        if sizes.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "\nZero-copy, GB/s: written and read in place through grants, against copies"
        )?;
        writeln!(
            out,
            "{:<8} {:>12} {:>12}  {:>8}",
            "size", "ivlink-grant", "ivlink", "saving"
        )?;
        for size in sizes {
            let cell = |mechanism: &str| {
                self.throughput(mechanism, size)
                    .map_or("-".into(), |r| format!("{:.2}", r.gb_per_s()))
            };
            writeln!(
                out,
                "{:<8} {:>12} {:>12}  {:>8}",
                format_size(size),
                cell("ivlink-grant"),
                cell("ivlink"),
                self.stream_ratio("ivlink-grant", "ivlink", size)
                    .map_or("-".into(), |v| format!("{v:.2}x")),
            )?;
        }
        Ok(())
    }

    /// The 64-byte message rate per strategy.
    fn write_message_rate(&self, out: &mut dyn Write) -> io::Result<()> {
        let s = &self.settings;
        writeln!(out, "\n64-byte message rate")?;
        let rate_rows = [
            (
                "ivlink",
                format!("ivlink, publish per batch of {}", s.batch),
            ),
            ("ivlink-batch1", "ivlink, publish every message".to_owned()),
            (
                "ivlink-eager",
                "ivlink, publish_quiet every message".to_owned(),
            ),
            (
                "memcpy-ring",
                format!("memcpy-ring, publish per batch of {}", s.batch),
            ),
            ("unix", "UNIX socket, a write() per message".to_owned()),
            ("pipe", "pipe, a write() per message".to_owned()),
        ];
        for (mechanism, label) in rate_rows {
            if let Some(r) = self.throughput(mechanism, 64) {
                writeln!(
                    out,
                    "  {label:<40} {:>9.2} M msg/s  ({} doorbells)",
                    r.messages_per_s() / 1e6,
                    r.doorbells
                )?;
            }
        }
        Ok(())
    }

    /// How each mechanism was driven.
    fn write_strategies(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "\nStrategies")?;
        let mut seen = Vec::new();
        for (mechanism, how) in self.throughput.iter().map(|r| (r.mechanism, r.how)) {
            if !seen.contains(&mechanism) {
                seen.push(mechanism);
                writeln!(out, "  {mechanism:<14} {how}")?;
            }
        }
        Ok(())
    }

    /// The targets and whether they were met, and the total time.
    fn write_targets(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "\nTargets (reported, not asserted)")?;
        for t in self.targets() {
            writeln!(
                out,
                "  {:<55} {:<58} {}",
                t.goal,
                t.shown,
                if t.met { "met" } else { "NOT met" }
            )?;
        }
        writeln!(out, "\nTotal time: {:.1} s", self.seconds)
    }
}
