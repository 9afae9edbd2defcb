//! Printing the scaling figures: text tables and one JSON object each.

use std::io::{self, Write};

use super::{ConnectReport, PairsReport};
use crate::bench::report::format_size;

impl PairsReport {
    /// One JSON object on one line (keys in docs/json.md).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Whether any row ran more threads than CPUs.
    pub fn oversubscribed(&self) -> Option<usize> {
        self.rows
            .iter()
            .filter(|r| r.oversubscribed)
            .map(|r| r.threads)
            .max()
    }

    /// The text report.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "ivlink bench --pairs: N independent pairs at once, each on its own ring of {} bytes, two threads per pair; {} CPUs{}; median of {} round(s) of up to {:.0} ms",
            self.ring_bytes,
            self.cpus,
            if self.pinned {
                ", threads pinned round robin (each pair across two CPUs)"
            } else {
                ", threads not pinned"
            },
            self.rounds,
            self.run_seconds * 1e3
        )?;
        if self.oversubscribed().is_some() {
            for n in self
                .rows
                .iter()
                .filter(|r| r.oversubscribed && r.mechanism == "ivlink")
                .map(|r| r.pairs)
                .collect::<std::collections::BTreeSet<_>>()
            {
                writeln!(
                    out,
                    "oversubscribed: {} threads on {} cores at {n} pairs (spinning ends yield the CPU)",
                    2 * n,
                    self.cpus
                )?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<12} {:>6} {:>5} {:>14} {:>10} {:>17} {:>10} {:>8} {:>10}",
            "mechanism",
            "size",
            "pairs",
            "total M msg/s",
            "total GB/s",
            "per pair M msg/s",
            "efficiency",
            "at most",
            "doorbells"
        )?;
        for row in &self.rows {
            let per_pair: Vec<f64> = row
                .per_pair
                .iter()
                .map(|p| p.messages_per_s / 1e6)
                .collect();
            let (min, max) = per_pair
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
            let spread = if per_pair.len() > 1 {
                format!("{min:.2}..{max:.2}")
            } else {
                format!("{max:.2}")
            };
            writeln!(
                out,
                "{:<12} {:>6} {:>5} {:>14.2} {:>10.2} {:>17} {:>9.0}% {:>7.0}% {:>10}{}",
                row.mechanism,
                format_size(row.size_bytes),
                row.pairs,
                row.messages_per_s / 1e6,
                row.gb_per_s,
                spread,
                row.efficiency * 100.0,
                row.cpu_bound_efficiency * 100.0,
                row.doorbells,
                if row.oversubscribed {
                    "  (oversubscribed)"
                } else {
                    ""
                }
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "efficiency = total / (pairs × the single pair's rate), per mechanism and size; at most = CPUs / threads, its ceiling if one pair keeps two CPUs busy; {:.1} s in all",
            self.seconds
        )
    }
}

impl ConnectReport {
    /// One JSON object on one line (keys in docs/json.md).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The text report.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "ivlink bench --server-peers: the server's connect cost, {} vector(s) per peer, peers connecting one after another over its UNIX socket",
            self.vectors
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "{:>7} {:>12} {:>14} {:>15} {:>12} {:>12}",
            "peers", "seconds", "µs per peer", "last peer µs", "messages", "fd messages"
        )?;
        for row in &self.rows {
            writeln!(
                out,
                "{:>7} {:>12.4} {:>14.1} {:>15.1} {:>12} {:>12}",
                row.peers,
                row.seconds,
                row.per_peer_us,
                row.last_peer_us,
                row.messages,
                row.fd_messages
            )?;
        }
        writeln!(out)?;
        writeln!(out, "curve: {}", self.curve)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConnectRow, PairFigures, PairsRow, curve};
    use super::*;

    fn row(mechanism: &'static str, pairs: usize, oversubscribed: bool) -> PairsRow {
        PairsRow {
            mechanism,
            size_bytes: 4096,
            pairs,
            threads: 2 * pairs,
            oversubscribed,
            messages: 10,
            bytes: 40960,
            seconds: 1.0,
            messages_per_s: 10.0,
            gb_per_s: 4.096e-5,
            per_pair: vec![
                PairFigures {
                    messages_per_s: 10.0 / pairs as f64,
                    gb_per_s: 1e-5,
                };
                pairs
            ],
            doorbells: 0,
            efficiency: 1.0 / pairs as f64,
            cpu_bound_efficiency: 1.0,
        }
    }

    #[test]
    fn an_oversubscribed_run_says_so() {
        let report = PairsReport {
            tool: "ivlink bench --pairs",
            version: "0",
            cpus: 2,
            pinned: true,
            ring_bytes: 1 << 18,
            batch: 16,
            rounds: 1,
            run_seconds: 0.04,
            rows: vec![
                row("ivlink", 1, false),
                row("ivlink", 2, true),
                row("memcpy-ring", 2, true),
            ],
            seconds: 1.0,
        };
        let mut text = Vec::new();
        report.write_table(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("oversubscribed: 4 threads on 2 cores"),
            "{text}"
        );
        assert!(text.contains("4 KiB"), "{text}");
        assert!(text.contains("50%"), "{text}");
        // Every column of a row has its heading.
        let heading = text.lines().find(|l| l.starts_with("mechanism")).unwrap();
        for column in ["efficiency", "at most", "doorbells"] {
            assert!(heading.contains(column), "{heading}");
        }
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["rows"][1]["oversubscribed"], true);
        assert_eq!(json["rows"][2]["per_pair"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn the_connect_table_states_the_curve() {
        let report = ConnectReport {
            tool: "ivlink bench --server-peers",
            version: "0",
            vectors: 1,
            curve: curve(1),
            rows: vec![ConnectRow {
                peers: 2,
                vectors: 1,
                seconds: 0.001,
                per_peer_us: 500.0,
                last_peer_us: 600.0,
                messages: 10,
                fd_messages: 6,
                expected_fd_messages: 6,
            }],
            seconds: 0.01,
        };
        let mut text = Vec::new();
        report.write_table(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("quadratic"), "{text}");
    }
}
