//! The results, their ratios to the baselines measured in the same run, and
//! the targets with their measured values. Printing lives in `table` (text)
//! and `export` (JSON, SVG).

use std::time::Duration;

use serde::Serialize;

use super::Placement;
use super::histogram::{Histogram, Percentiles};

/// How the run was set up (reported with every figure).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Small iteration counts.
    pub quick: bool,
    /// Which CPUs the two processes ran on.
    pub placement: Placement,
    /// Streaming ring data area, bytes.
    pub ring: usize,
    /// Data area of each ping-pong ring, bytes.
    pub latency_ring: usize,
    /// Messages per publication and release (at most a quarter of the ring).
    pub batch: usize,
    /// Ping-pong payload, bytes.
    pub payload: usize,
    /// ivshmem region size, bytes.
    pub region: usize,
    /// How long the ivlink stream consumer spins before sleeping.
    pub stream_spin: Duration,
    /// Rounds of every stream (the median is reported).
    pub rounds: usize,
}

/// One mechanism's ping-pong latency.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyResult {
    /// Short name ("ivlink-busy").
    pub mechanism: &'static str,
    /// How it waits and notifies.
    pub how: &'static str,
    /// Payload per message, bytes.
    pub payload: usize,
    /// One-way latency (RTT / 2) percentiles, nanoseconds.
    pub one_way: Percentiles,
    /// `(quantile, one-way ns)` points for the plot.
    pub distribution: Vec<(f64, f64)>,
    /// Doorbells rung by both sides.
    pub doorbells: u64,
    /// Messages sent by both sides.
    pub messages: u64,
}

impl LatencyResult {
    /// Summarises per-iteration round-trip samples (ns).
    pub fn new(
        mechanism: &'static str,
        how: &'static str,
        payload: usize,
        rtt_samples: Vec<u64>,
        doorbells: u64,
        messages: u64,
    ) -> LatencyResult {
        let histogram = Histogram::new(rtt_samples);
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
        LatencyResult {
            mechanism,
            how,
            payload,
            one_way: histogram.percentiles().unwrap_or(zero).scaled(0.5),
            distribution: histogram
                .distribution(60)
                .into_iter()
                .map(|(q, rtt)| (q, rtt as f64 / 2.0))
                .collect(),
            doorbells,
            messages,
        }
    }

    /// Doorbells per message sent.
    pub fn doorbells_per_message(&self) -> f64 {
        self.doorbells as f64 / self.messages.max(1) as f64
    }
}

/// One mechanism's streaming throughput at one message size.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputResult {
    /// Short name ("ivlink").
    pub mechanism: &'static str,
    /// How it batches and waits.
    pub how: &'static str,
    /// Message size, bytes.
    pub size: usize,
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// From the first message sent to the peer's report of the last received.
    pub seconds: f64,
    /// Doorbells rung by both sides.
    pub doorbells: u64,
    /// Rounds run; the figures are the median round's.
    pub rounds: usize,
    /// Lowest and highest GB/s over the rounds.
    pub range: (f64, f64),
}

impl ThroughputResult {
    /// The median round (by GB/s) of runs of one stream, with the spread of
    /// all of them. `runs` must not be empty.
    pub fn median(mut runs: Vec<ThroughputResult>) -> ThroughputResult {
        runs.sort_by(|a, b| a.gb_per_s().total_cmp(&b.gb_per_s()));
        let range = (runs[0].gb_per_s(), runs[runs.len() - 1].gb_per_s());
        let rounds = runs.len();
        let mut median = runs.swap_remove(rounds / 2);
        median.rounds = rounds;
        median.range = range;
        median
    }

    /// Payload gigabytes (10^9 bytes) per second.
    pub fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }

    /// Messages per second.
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
}

/// A result relative to a baseline measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// `"a/b"`: a's figure divided by b's.
    pub name: String,
    /// What was divided.
    pub metric: &'static str,
    /// Message size, for per-size throughput ratios.
    #[serde(rename = "size_bytes")]
    pub size: Option<usize>,
    /// The quotient.
    pub value: f64,
}

/// A target from the issue, with its measured value (reported, never asserted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// Short key.
    pub name: &'static str,
    /// The target in words.
    pub goal: &'static str,
    /// The measured value (`None`: not measured in this run).
    pub measured: Option<f64>,
    /// The measured value in words.
    pub shown: String,
    /// Whether the target was met.
    pub met: bool,
}

/// Everything one `ivlink bench` run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The setup.
    pub settings: Settings,
    /// Ping-pong latencies.
    pub latency: Vec<LatencyResult>,
    /// Streaming throughputs.
    pub throughput: Vec<ThroughputResult>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

pub(super) const LATENCY_RATIOS: [(&str, &str); 7] = [
    ("ivlink-busy", "memcpy-ring-busy"),
    ("ivlink-sleep", "eventfd"),
    ("ntb-busy", "memcpy-ring-busy"),
    ("ntb-sleep", "eventfd"),
    ("unix", "eventfd"),
    ("pipe", "eventfd"),
    ("unix", "ivlink-busy"),
];
const STREAM_BASELINES: [&str; 3] = ["memcpy-ring", "unix", "pipe"];

impl Report {
    /// The latency of `mechanism`.
    pub fn latency(&self, mechanism: &str) -> Option<&LatencyResult> {
        self.latency.iter().find(|r| r.mechanism == mechanism)
    }

    /// The throughput of `mechanism` at `size`.
    pub fn throughput(&self, mechanism: &str, size: usize) -> Option<&ThroughputResult> {
        self.throughput
            .iter()
            .find(|r| r.mechanism == mechanism && r.size == size)
    }

    /// Sizes streamed by ivlink, in run order.
    pub(super) fn sizes(&self) -> Vec<usize> {
        self.throughput
            .iter()
            .filter(|r| r.mechanism == "ivlink")
            .map(|r| r.size)
            .collect()
    }

    /// Chunk sizes streamed through the NTB window, in run order.
    pub(super) fn ntb_window_sizes(&self) -> Vec<usize> {
        self.throughput
            .iter()
            .filter(|r| r.mechanism == "ntb-window")
            .map(|r| r.size)
            .collect()
    }

    pub(super) fn latency_ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.latency(a)?.one_way.p50 / self.latency(b)?.one_way.p50)
    }

    pub(super) fn stream_ratio(&self, a: &str, b: &str, size: usize) -> Option<f64> {
        Some(self.throughput(a, size)?.gb_per_s() / self.throughput(b, size)?.gb_per_s())
    }

    /// ivlink's streaming throughput over `baseline`'s: geometric mean over the
    /// sizes, and the worst size.
    pub(super) fn stream_summary(&self, baseline: &str) -> Option<(f64, f64, usize)> {
        let ratios: Vec<(f64, usize)> = self
            .sizes()
            .into_iter()
            .filter_map(|s| Some((self.stream_ratio("ivlink", baseline, s)?, s)))
            .collect();
        if ratios.is_empty() {
            return None;
        }
        let mean = (ratios.iter().map(|r| r.0.ln()).sum::<f64>() / ratios.len() as f64).exp();
        let worst = ratios
            .iter()
            .copied()
            .fold((f64::INFINITY, 0), |w, r| if r.0 < w.0 { r } else { w });
        Some((mean, worst.0, worst.1))
    }

    /// Every ratio to a baseline.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        for (a, b) in LATENCY_RATIOS {
            if let Some(value) = self.latency_ratio(a, b) {
                out.push(Ratio {
                    name: format!("{a}/{b}"),
                    metric: "one-way latency p50",
                    size: None,
                    value,
                });
            }
        }
        for baseline in STREAM_BASELINES {
            for size in self.sizes() {
                if let Some(value) = self.stream_ratio("ivlink", baseline, size) {
                    out.push(Ratio {
                        name: format!("ivlink/{baseline}"),
                        metric: "throughput",
                        size: Some(size),
                        value,
                    });
                }
            }
            if let Some((mean, _, _)) = self.stream_summary(baseline) {
                out.push(Ratio {
                    name: format!("ivlink/{baseline}"),
                    metric: "throughput, geometric mean over sizes",
                    size: None,
                    value: mean,
                });
            }
        }
        // The zero-copy saving: grants over copies, per size measured.
        for size in self.sizes() {
            if let Some(value) = self.stream_ratio("ivlink-grant", "ivlink", size) {
                out.push(Ratio {
                    name: "ivlink-grant/ivlink".into(),
                    metric: "throughput",
                    size: Some(size),
                    value,
                });
            }
        }
        for size in self.ntb_window_sizes() {
            if let Some(value) = self.stream_ratio("ntb-window", "memcpy-ring", size) {
                out.push(Ratio {
                    name: "ntb-window/memcpy-ring".into(),
                    metric: "throughput",
                    size: Some(size),
                    value,
                });
            }
        }
        if let (Some(batched), Some(single)) = (
            self.throughput("ivlink", 64),
            self.throughput("ivlink-batch1", 64),
        ) {
            out.push(Ratio {
                name: "ivlink/ivlink-batch1".into(),
                metric: "64-byte message rate",
                size: Some(64),
                value: batched.messages_per_s() / single.messages_per_s(),
            });
        }
        out
    }

    /// `mechanism`'s median wake over the raw eventfd's, at most 1.1x.
    fn wake_target(&self, name: &'static str, goal: &'static str, mechanism: &str) -> Target {
        let ratio = self.latency_ratio(mechanism, "eventfd");
        Target {
            name,
            goal,
            measured: ratio,
            shown: ratio.map_or("not measured".into(), |v| {
                let ns = |m| self.latency(m).map_or(0.0, |r| r.one_way.p50);
                format!(
                    "{v:.2}x ({} vs {})",
                    format_ns(ns(mechanism)),
                    format_ns(ns("eventfd"))
                )
            }),
            met: ratio.is_some_and(|v| v <= 1.1),
        }
    }

    /// The issue's targets with what was measured.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let busy = self.latency("ivlink-busy").map(|r| r.one_way.p50);
        out.push(Target {
            name: "busy-poll-latency",
            goal: "busy-poll one-way median <= 200 ns",
            measured: busy,
            shown: busy.map_or("not measured".into(), format_ns),
            met: busy.is_some_and(|v| v <= 200.0),
        });
        out.push(self.wake_target(
            "sleeping-vs-eventfd",
            "sleeping receiver <= 1.1x a raw eventfd wake (median)",
            "ivlink-sleep",
        ));
        out.push(self.wake_target(
            "ntb-doorbell-vs-eventfd",
            "NTB doorbell to db_event wake <= 1.1x eventfd (median)",
            "ntb-sleep",
        ));
        let rate = self.throughput("ivlink", 64).map(|r| r.messages_per_s());
        out.push(Target {
            name: "64-byte-rate",
            goal: "64 B messages >= 100 M msg/s",
            measured: rate,
            shown: rate.map_or("not measured (no 64 B size)".into(), |v| {
                format!("{:.1} M msg/s", v / 1e6)
            }),
            met: rate.is_some_and(|v| v >= 100e6),
        });
        let memcpy_rate = self
            .throughput("memcpy-ring", 64)
            .map(|r| r.messages_per_s());
        let rate_ratio = rate
            .zip(memcpy_rate)
            .map(|(ivlink, memcpy)| ivlink / memcpy);
        out.push(Target {
            name: "64-byte-rate-vs-memcpy-ring",
            goal: "64 B rate >= 0.9x the memcpy ring's",
            measured: rate_ratio,
            shown: rate_ratio.map_or("not measured (no 64 B size)".into(), |v| {
                format!(
                    "{v:.2}x ({:.1} vs {:.1} M msg/s)",
                    rate.unwrap_or(0.0) / 1e6,
                    memcpy_rate.unwrap_or(0.0) / 1e6
                )
            }),
            met: rate_ratio.is_some_and(|v| v >= 0.9),
        });
        let worst = self.stream_summary("memcpy-ring");
        out.push(Target {
            name: "stream-every-size-vs-memcpy-ring",
            goal: "streaming >= 0.9x the memcpy ring at every size",
            measured: worst.map(|s| s.1),
            shown: worst.map_or("not measured".into(), |(_, worst, size)| {
                format!("worst {worst:.2}x, at {}", format_size(size))
            }),
            met: worst.is_some_and(|s| s.1 >= 0.9),
        });
        for (name, goal, baseline, floor) in [
            (
                "stream-vs-memcpy-ring",
                "streaming >= 0.9x the memcpy ring",
                "memcpy-ring",
                0.9,
            ),
            (
                "stream-vs-unix",
                "streaming >= 5x the UNIX socket",
                "unix",
                5.0,
            ),
        ] {
            let summary = self.stream_summary(baseline);
            out.push(Target {
                name,
                goal,
                measured: summary.map(|s| s.0),
                shown: summary.map_or("not measured".into(), |(mean, worst, size)| {
                    format!(
                        "{mean:.2}x geometric mean over sizes (worst {worst:.2}x at {})",
                        format_size(size)
                    )
                }),
                met: summary.is_some_and(|s| s.0 >= floor),
            });
        }
        out
    }
}

/// "152 ns", "1.23 µs", "33.4 µs", "2.10 ms".
pub fn format_ns(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{:.2} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e5 => format!("{:.0} µs", ns / 1e3),
        ns if ns >= 1e4 => format!("{:.1} µs", ns / 1e3),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}

/// "64 B", "4 KiB", "1 MiB".
pub fn format_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let latency =
            |name, ns: u64| LatencyResult::new(name, "how", 64, vec![ns * 2; 100], 0, 200);
        let stream = |mechanism, size: usize, seconds| ThroughputResult {
            mechanism,
            how: "how",
            size,
            messages: 1000,
            bytes: 1000 * size as u64,
            seconds,
            doorbells: 0,
            rounds: 1,
            range: (0.0, 0.0),
        };
        let mut throughput = Vec::new();
        for size in [64, 4096] {
            throughput.push(stream("ivlink", size, 1e-5));
            throughput.push(stream("memcpy-ring", size, 0.85e-5));
            throughput.push(stream("unix", size, 1e-4));
            throughput.push(stream("pipe", size, 0.8e-4));
        }
        throughput.push(stream("ivlink-batch1", 64, 2e-5));
        throughput.push(stream("ivlink-grant", 4096, 0.8e-5));
        throughput.push(stream("ntb-window", 4096, 1.7e-5));
        throughput.push(stream("ntb-window", 1 << 19, 1e-2));
        Report {
            settings: Settings {
                quick: true,
                placement: Placement {
                    leader_cpu: Some(0),
                    peer_cpu: Some(1),
                    available: 2,
                },
                ring: 1 << 18,
                latency_ring: 1 << 14,
                batch: 16,
                payload: 64,
                region: 1 << 19,
                stream_spin: Duration::from_micros(50),
                rounds: 1,
            },
            latency: vec![
                latency("ivlink-busy", 150),
                latency("memcpy-ring-busy", 120),
                latency("ivlink-sleep", 32_000),
                latency("ntb-busy", 180),
                latency("ntb-sleep", 36_000),
                latency("eventfd", 30_000),
                latency("unix", 35_000),
                latency("pipe", 32_000),
            ],
            throughput,
            seconds: 1.5,
        }
    }

    #[test]
    fn ratios_compare_with_the_baselines_of_the_same_run() {
        let ratios = report().ratios();
        let get = |name: &str, size| {
            ratios
                .iter()
                .find(|r| r.name == name && r.size == size)
                .unwrap_or_else(|| panic!("{name} {size:?}"))
                .value
        };
        assert!((get("ivlink-busy/memcpy-ring-busy", None) - 1.25).abs() < 1e-9);
        assert!((get("ivlink-sleep/eventfd", None) - 32.0 / 30.0).abs() < 1e-9);
        assert!((get("ntb-sleep/eventfd", None) - 1.2).abs() < 1e-9);
        assert!((get("ntb-busy/memcpy-ring-busy", None) - 1.5).abs() < 1e-9);
        assert!((get("ivlink/memcpy-ring", Some(4096)) - 0.85).abs() < 1e-9);
        assert!((get("ivlink/unix", Some(64)) - 10.0).abs() < 1e-9);
        assert!(
            (get("ivlink/unix", None) - 10.0).abs() < 1e-9,
            "geometric mean"
        );
        assert!((get("ivlink/ivlink-batch1", Some(64)) - 2.0).abs() < 1e-9);
        assert!((get("ntb-window/memcpy-ring", Some(4096)) - 0.5).abs() < 1e-9);
        assert!(
            (get("ivlink-grant/ivlink", Some(4096)) - 1.25).abs() < 1e-9,
            "the zero-copy saving"
        );
        assert!(
            !ratios
                .iter()
                .any(|r| r.name == "ivlink-grant/ivlink" && r.size == Some(64)),
            "no grant row at 64 B"
        );
        assert!(
            !ratios
                .iter()
                .any(|r| r.name == "ntb-window/memcpy-ring" && r.size == Some(1 << 19)),
            "no memcpy ring at 512 KiB to compare with"
        );
    }

    #[test]
    fn targets_report_values_and_verdicts() {
        let targets = report().targets();
        let get = |name| targets.iter().find(|t| t.name == name).unwrap();
        assert!(get("busy-poll-latency").met);
        assert_eq!(get("busy-poll-latency").shown, "150 ns");
        assert!(get("sleeping-vs-eventfd").met);
        assert_eq!(
            get("sleeping-vs-eventfd").shown,
            "1.07x (32.0 µs vs 30.0 µs)"
        );
        let ntb = get("ntb-doorbell-vs-eventfd");
        assert!(!ntb.met, "1.2x is above 1.1x");
        assert_eq!(ntb.shown, "1.20x (36.0 µs vs 30.0 µs)");
        let rate = get("64-byte-rate");
        assert!((rate.measured.unwrap() / 1e8 - 1.0).abs() < 1e-9);
        assert_eq!(rate.shown, "100.0 M msg/s");
        let rate_ratio = get("64-byte-rate-vs-memcpy-ring");
        assert!(
            rate_ratio.shown.ends_with("M msg/s)"),
            "{}",
            rate_ratio.shown
        );
        assert_eq!(
            rate_ratio.met,
            rate_ratio.measured.unwrap() >= 0.9,
            "{}",
            rate_ratio.shown
        );
        let every = get("stream-every-size-vs-memcpy-ring");
        assert!(!every.met, "the worst size is below the mean's 0.85x");
        assert!(every.measured.unwrap() <= 0.85);
        assert!(every.shown.starts_with("worst "), "{}", every.shown);
        assert!(get("stream-vs-unix").met);
        let memcpy = get("stream-vs-memcpy-ring");
        assert!(!memcpy.met, "0.85x is below 0.9x");
        assert!(
            memcpy.shown.starts_with("0.85x geometric mean"),
            "{}",
            memcpy.shown
        );
    }

    #[test]
    fn the_table_and_json_name_every_mechanism() {
        let report = report();
        let mut table = Vec::new();
        report.write_table(&mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        for name in [
            "ivlink-busy",
            "memcpy-ring-busy",
            "ivlink-sleep",
            "ntb-busy",
            "ntb-sleep",
            "eventfd",
            "unix",
            "pipe",
        ] {
            assert!(table.contains(name), "{name}");
        }
        assert!(table.contains("1.25x memcpy-ring-busy"));
        assert!(table.contains("1.20x eventfd"));
        assert!(table.contains("NTB doorbell to db_event wake"));
        assert!(table.contains("NTB window streaming"));
        assert!(
            table.contains("0.50x"),
            "ntb-window over memcpy-ring at 4 KiB"
        );
        assert!(table.contains("Targets (reported, not asserted)"));
        let json = report.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert!(json.contains(r#""mechanism":"ivlink-sleep""#));
        assert!(json.contains(r#""name":"ivlink/unix""#));
        assert_eq!(report.latency_svg().matches("<polyline").count(), 8);
    }

    /// Every key of the JSON, in the order of first appearance: what scripts
    /// reading `ivlink bench --json` rely on.
    #[test]
    fn the_json_keeps_its_keys_and_their_order() {
        let json = report().to_json();
        let mut keys: Vec<&str> = Vec::new();
        for piece in json.split('"').collect::<Vec<_>>().windows(2) {
            let (key, after) = (piece[0], piece[1]);
            if after.starts_with(':') && !keys.contains(&key) {
                keys.push(key);
            }
        }
        let expected = [
            "tool",
            "version",
            "settings",
            "quick",
            "placement",
            "leader_cpu",
            "peer_cpu",
            "cpus_available",
            "same_cpu",
            "description",
            "ring_bytes",
            "latency_ring_bytes",
            "batch",
            "payload_bytes",
            "region_bytes",
            "stream_spin_ns",
            "rounds",
            "latency",
            "mechanism",
            "strategy",
            "samples",
            "one_way_ns",
            "min",
            "p50",
            "p90",
            "p99",
            "p999",
            "max",
            "mean",
            "doorbells",
            "messages",
            "throughput",
            "size_bytes",
            "bytes",
            "seconds",
            "gb_per_s",
            "gb_per_s_min",
            "gb_per_s_max",
            "messages_per_s",
            "ratios",
            "name",
            "metric",
            "value",
            "targets",
            "goal",
            "measured",
            "shown",
            "met",
        ];
        assert_eq!(keys, expected);

        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["settings"]["stream_spin_ns"], 50_000);
        assert_eq!(value["latency"][0]["one_way_ns"]["p50"], 150.0);
        assert!(value["ratios"][0]["size_bytes"].is_null());
    }

    #[test]
    fn numbers_that_are_not_finite_become_null() {
        let mut report = report();
        report.seconds = f64::NAN;
        report.throughput[0].range = (f64::INFINITY, f64::NEG_INFINITY);
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert!(value["seconds"].is_null());
        assert!(value["throughput"][0]["gb_per_s_min"].is_null());
        assert!(value["throughput"][0]["gb_per_s_max"].is_null());
    }

    #[test]
    fn the_median_round_is_reported_with_the_spread() {
        let run = |seconds| ThroughputResult {
            mechanism: "ivlink",
            how: "how",
            size: 1000,
            messages: 1000,
            bytes: 1_000_000,
            seconds,
            doorbells: 0,
            rounds: 1,
            range: (0.0, 0.0),
        };
        let median = ThroughputResult::median(vec![run(1e-3), run(4e-3), run(2e-3)]);
        assert_eq!(median.seconds, 2e-3);
        assert_eq!(median.rounds, 3);
        assert_eq!(median.range, (0.25, 1.0));
        assert_eq!(ThroughputResult::median(vec![run(1e-3)]).rounds, 1);
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(format_ns(152.4), "152 ns");
        assert_eq!(format_ns(1234.0), "1.23 µs");
        assert_eq!(format_ns(33_400.0), "33.4 µs");
        assert_eq!(format_ns(2_100_000.0), "2.10 ms");
        assert_eq!(format_size(64), "64 B");
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(1000), "1000 B");
    }
}
