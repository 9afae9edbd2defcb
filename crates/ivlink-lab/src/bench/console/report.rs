//! The console bench's results, their ratios to the UNIX socket, and the
//! issue's targets, as a table or one JSON object.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use super::exchange::Measured;
use crate::bench::Placement;
use crate::bench::histogram::{Histogram, Percentiles};
use crate::bench::report::{Ratio, Target, format_ns, format_size};

/// Bulk throughput the console should reach, bytes per second.
const BULK_FLOOR: f64 = 1e9;
/// How many times the UNIX socket's throughput the console should reach.
const BULK_OVER_UNIX: f64 = 1.5;
/// Keystroke round-trip median the console should stay under, nanoseconds.
const KEYSTROKE_CEILING_NS: f64 = 20_000.0;

/// One mechanism's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct MechanismResult {
    /// "console", "unix" or "pty".
    pub mechanism: &'static str,
    /// What it is.
    pub how: &'static str,
    /// Bulk bytes moved each way.
    pub bytes: u64,
    /// Bulk bytes per second, driver to device.
    pub to_device: f64,
    /// Bulk bytes per second, device to driver.
    pub to_driver: f64,
    /// Keystroke round trips, nanoseconds.
    pub round_trip: Percentiles,
}

impl MechanismResult {
    /// Summarises what the driver measured over `bytes` each way.
    pub fn new(
        mechanism: &'static str,
        how: &'static str,
        bytes: u64,
        measured: Measured,
    ) -> MechanismResult {
        let rate = |seconds: f64| bytes as f64 / seconds.max(1e-9);
        let zero = Percentiles {
            count: 0,
            min: 0.0,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
            mean: 0.0,
        };
        MechanismResult {
            mechanism,
            how,
            bytes,
            to_device: rate(measured.to_device_seconds),
            to_driver: rate(measured.to_driver_seconds),
            round_trip: Histogram::new(measured.round_trips_ns)
                .percentiles()
                .unwrap_or(zero),
        }
    }

    /// The slower direction's bytes per second.
    pub fn bulk(&self) -> f64 {
        self.to_device.min(self.to_driver)
    }
}

/// Everything one `ivlink console bench` run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleReport {
    /// Small counts.
    pub quick: bool,
    /// Which CPUs the two processes ran on.
    pub placement: Placement,
    /// Bulk bytes each way asked for (the pty moves at most
    /// [`PTY_BYTES`](super::PTY_BYTES)).
    pub bytes: u64,
    /// Bytes per bulk write.
    pub chunk: usize,
    /// Measured round trips per mechanism.
    pub round_trips: u64,
    /// Console entries per queue.
    pub buffers: u16,
    /// Console bytes per buffer.
    pub buffer_size: u32,
    /// Console spin before sleeping.
    pub spin: Duration,
    /// ivshmem region size, bytes.
    pub region: usize,
    /// Console, UNIX socket, pty, in that order.
    pub results: Vec<MechanismResult>,
    /// Wall time of the run.
    pub seconds: f64,
}

impl ConsoleReport {
    /// The result of `mechanism`.
    pub fn result(&self, mechanism: &str) -> Option<&MechanismResult> {
        self.results.iter().find(|r| r.mechanism == mechanism)
    }

    /// The console against each baseline: throughput each way (higher is
    /// better for the console when above 1) and the baseline's round-trip
    /// median over the console's (likewise).
    pub fn ratios(&self) -> Vec<Ratio> {
        let Some(console) = self.result("console") else {
            return Vec::new();
        };
        let mut ratios = Vec::new();
        for base in self.results.iter().filter(|r| r.mechanism != "console") {
            let name = format!("console/{}", base.mechanism);
            let q = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            ratios.push(Ratio {
                name: name.clone(),
                metric: "to-device throughput",
                size: Some(self.chunk),
                value: q(console.to_device, base.to_device),
            });
            ratios.push(Ratio {
                name: name.clone(),
                metric: "to-driver throughput",
                size: Some(self.chunk),
                value: q(console.to_driver, base.to_driver),
            });
            ratios.push(Ratio {
                name: format!("{}/console", base.mechanism),
                metric: "keystroke round-trip median",
                size: Some(1),
                value: q(base.round_trip.p50, console.round_trip.p50),
            });
        }
        ratios
    }

    /// The targets with what this run measured.
    pub fn targets(&self) -> Vec<Target> {
        let console = self.result("console");
        let unix = self.result("unix");
        let bulk = console.map(MechanismResult::bulk);
        let over_unix = console
            .zip(unix)
            .map(|(c, u)| (c.to_device / u.to_device).min(c.to_driver / u.to_driver));
        let median = console.map(|c| c.round_trip.p50);
        vec![
            Target {
                name: "console-bulk",
                goal: "bulk throughput between host peers >= 1 GB/s (both ways)",
                measured: bulk,
                shown: bulk.map_or("not measured".into(), format_rate),
                met: bulk.is_some_and(|b| b >= BULK_FLOOR),
            },
            Target {
                name: "console-bulk-vs-unix",
                goal: "bulk throughput >= 1.5x a UNIX socket in the same run (both ways)",
                measured: over_unix,
                shown: over_unix.map_or("not measured".into(), |r| format!("{r:.2}x")),
                met: over_unix.is_some_and(|r| r >= BULK_OVER_UNIX),
            },
            Target {
                name: "console-keystroke",
                goal: "keystroke round trip median <= 20 µs",
                measured: median,
                shown: median.map_or("not measured".into(), format_ns),
                met: median.is_some_and(|m| m > 0.0 && m <= KEYSTROKE_CEILING_NS),
            },
        ]
    }

    /// The report as a human reads it.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "ivlink console bench{}: {} each way in {} writes, {} keystroke round trips",
            if self.quick { " (quick)" } else { "" },
            format_size(usize::try_from(self.bytes).unwrap_or(usize::MAX)),
            format_size(self.chunk),
            self.round_trips
        )?;
        writeln!(out, "  {}", self.placement.describe())?;
        writeln!(
            out,
            "  console: {} buffers of {} per queue, spin {} µs, region {}",
            self.buffers,
            format_size(self.buffer_size as usize),
            self.spin.as_micros(),
            format_size(self.region)
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<9} {:>9} {:>12} {:>12} {:>11} {:>11}",
            "", "bulk", "to device", "to driver", "RTT median", "RTT p99"
        )?;
        for r in &self.results {
            writeln!(
                out,
                "{:<9} {:>9} {:>12} {:>12} {:>11} {:>11}",
                r.mechanism,
                format_size(usize::try_from(r.bytes).unwrap_or(usize::MAX)),
                format_rate(r.to_device),
                format_rate(r.to_driver),
                format_ns(r.round_trip.p50),
                format_ns(r.round_trip.p99)
            )?;
        }
        writeln!(out)?;
        for ratio in self.ratios() {
            writeln!(
                out,
                "{:<14} {:<28} {:.2}x",
                ratio.name, ratio.metric, ratio.value
            )?;
        }
        writeln!(out)?;
        writeln!(out, "Targets (reported, not asserted):")?;
        for t in self.targets() {
            writeln!(
                out,
                "  [{}] {}: {}",
                if t.met { "met" } else { "not met" },
                t.goal,
                t.shown
            )?;
        }
        writeln!(out, "({:.1} s)", self.seconds)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        let view = ReportJson {
            tool: "ivlink console bench",
            version: env!("CARGO_PKG_VERSION"),
            settings: SettingsJson {
                quick: self.quick,
                leader_cpu: self.placement.leader_cpu,
                peer_cpu: self.placement.peer_cpu,
                cpus_available: self.placement.available,
                bytes: self.bytes,
                write_bytes: self.chunk,
                round_trips: self.round_trips,
                buffers: self.buffers,
                buffer_size: self.buffer_size,
                spin_ns: u64::try_from(self.spin.as_nanos()).unwrap_or(u64::MAX),
                region_bytes: self.region,
            },
            results: self
                .results
                .iter()
                .map(|r| ResultJson {
                    mechanism: r.mechanism,
                    how: r.how,
                    bytes: r.bytes,
                    to_device_bytes_per_second: r.to_device,
                    to_driver_bytes_per_second: r.to_driver,
                    round_trip_ns: RoundTripJson {
                        samples: r.round_trip.count,
                        min: r.round_trip.min,
                        p50: r.round_trip.p50,
                        p90: r.round_trip.p90,
                        p99: r.round_trip.p99,
                        max: r.round_trip.max,
                        mean: r.round_trip.mean,
                    },
                })
                .collect(),
            ratios: self.ratios(),
            targets: self.targets(),
            seconds: self.seconds,
        };
        serde_json::to_string(&view).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Bytes per second in decimal units, as the targets are written.
pub fn format_rate(bytes_per_second: f64) -> String {
    match bytes_per_second {
        r if r >= 1e9 => format!("{:.2} GB/s", r / 1e9),
        r if r >= 1e6 => format!("{:.0} MB/s", r / 1e6),
        r => format!("{:.0} kB/s", r / 1e3),
    }
}

#[derive(Serialize)]
struct ReportJson<'a> {
    tool: &'static str,
    version: &'static str,
    settings: SettingsJson,
    results: Vec<ResultJson<'a>>,
    ratios: Vec<Ratio>,
    targets: Vec<Target>,
    seconds: f64,
}

#[derive(Serialize)]
struct SettingsJson {
    quick: bool,
    leader_cpu: Option<usize>,
    peer_cpu: Option<usize>,
    cpus_available: usize,
    bytes: u64,
    write_bytes: usize,
    round_trips: u64,
    buffers: u16,
    buffer_size: u32,
    spin_ns: u64,
    region_bytes: usize,
}

#[derive(Serialize)]
struct ResultJson<'a> {
    mechanism: &'a str,
    how: &'a str,
    bytes: u64,
    to_device_bytes_per_second: f64,
    to_driver_bytes_per_second: f64,
    round_trip_ns: RoundTripJson,
}

#[derive(Serialize)]
struct RoundTripJson {
    samples: usize,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(mechanism: &'static str, seconds: f64, rtt_ns: u64) -> MechanismResult {
        MechanismResult::new(
            mechanism,
            "how",
            1 << 30,
            Measured {
                to_device_seconds: seconds,
                to_driver_seconds: seconds * 2.0,
                round_trips_ns: vec![rtt_ns; 100],
            },
        )
    }

    fn report(console_seconds: f64, console_rtt: u64) -> ConsoleReport {
        ConsoleReport {
            quick: true,
            placement: Placement {
                leader_cpu: Some(0),
                peer_cpu: Some(1),
                available: 2,
            },
            bytes: 1 << 30,
            chunk: 65_536,
            round_trips: 100,
            buffers: 64,
            buffer_size: 16_384,
            spin: Duration::from_micros(50),
            region: 16 << 20,
            results: vec![
                result("console", console_seconds, console_rtt),
                result("unix", 1.0, 10_000),
                result("pty", 2.0, 30_000),
            ],
            seconds: 3.0,
        }
    }

    #[test]
    fn targets_follow_the_figures() {
        // 1 GiB in 0.25 s (to the driver 0.5 s): 2.1 GB/s, 2x the socket.
        let fast = report(0.25, 8_000);
        assert!(fast.targets().iter().all(|t| t.met), "{:?}", fast.targets());
        let ratio = &fast.ratios()[0];
        assert_eq!((ratio.name.as_str(), ratio.value), ("console/unix", 4.0));
        // 1 GiB in 2 s one way, 4 s the other: 0.27 GB/s, slower than the socket.
        let slow = report(2.0, 25_000);
        assert!(
            slow.targets().iter().all(|t| !t.met),
            "{:?}",
            slow.targets()
        );
    }

    #[test]
    fn the_json_has_every_mechanism_and_target() {
        let json: serde_json::Value = serde_json::from_str(&report(0.5, 9_000).to_json()).unwrap();
        let results = json["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0]["mechanism"], "console");
        assert!(results[0]["to_device_bytes_per_second"].as_f64().unwrap() > 2e9);
        assert_eq!(results[2]["round_trip_ns"]["p50"], 30_000.0);
        assert_eq!(json["targets"].as_array().unwrap().len(), 3);
        assert_eq!(json["settings"]["buffers"], 64);
        let mut table = Vec::new();
        report(0.5, 9_000).write_table(&mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("console/unix"), "{table}");
        assert!(table.contains("[met] keystroke"), "{table}");
    }
}
