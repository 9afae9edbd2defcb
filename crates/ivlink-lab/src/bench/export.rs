//! The report for machines (one JSON object) and the latency plot (SVG).
//!
//! The JSON is serde's rendering of the views below: they fix the keys and
//! their order, and name the units, apart from how the results are held.

use serde::Serialize;

use super::histogram::Percentiles;
use super::report::{
    LatencyResult, Ratio, Report, Settings, Target, ThroughputResult, format_ns, format_size,
};
use super::svg::{self, Series};

/// The whole report.
#[derive(Serialize)]
struct ReportJson<'a> {
    tool: &'static str,
    version: &'static str,
    settings: SettingsJson,
    latency: Vec<LatencyJson<'a>>,
    throughput: Vec<ThroughputJson<'a>>,
    ratios: Vec<Ratio>,
    targets: Vec<Target>,
    seconds: f64,
}

#[derive(Serialize)]
struct SettingsJson {
    quick: bool,
    placement: PlacementJson,
    ring_bytes: usize,
    latency_ring_bytes: usize,
    batch: usize,
    payload_bytes: usize,
    region_bytes: usize,
    stream_spin_ns: u64,
    rounds: usize,
}

#[derive(Serialize)]
struct PlacementJson {
    leader_cpu: Option<usize>,
    peer_cpu: Option<usize>,
    cpus_available: usize,
    same_cpu: bool,
    description: String,
}

#[derive(Serialize)]
struct LatencyJson<'a> {
    mechanism: &'a str,
    strategy: &'a str,
    payload_bytes: usize,
    samples: usize,
    one_way_ns: OneWayJson,
    doorbells: u64,
    messages: u64,
}

/// The percentiles without their count (that is the latency's `samples`).
#[derive(Serialize)]
struct OneWayJson {
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize)]
struct ThroughputJson<'a> {
    mechanism: &'a str,
    strategy: &'a str,
    size_bytes: usize,
    messages: u64,
    bytes: u64,
    seconds: f64,
    gb_per_s: f64,
    gb_per_s_min: f64,
    gb_per_s_max: f64,
    rounds: usize,
    messages_per_s: f64,
    doorbells: u64,
}

impl From<&Settings> for SettingsJson {
    fn from(s: &Settings) -> Self {
        SettingsJson {
            quick: s.quick,
            placement: PlacementJson {
                leader_cpu: s.placement.leader_cpu,
                peer_cpu: s.placement.peer_cpu,
                cpus_available: s.placement.available,
                same_cpu: s.placement.shared_cpu(),
                description: s.placement.describe(),
            },
            ring_bytes: s.ring,
            latency_ring_bytes: s.latency_ring,
            batch: s.batch,
            payload_bytes: s.payload,
            region_bytes: s.region,
            stream_spin_ns: u64::try_from(s.stream_spin.as_nanos()).unwrap_or(u64::MAX),
            rounds: s.rounds,
        }
    }
}

impl<'a> From<&'a LatencyResult> for LatencyJson<'a> {
    fn from(r: &'a LatencyResult) -> Self {
        let Percentiles {
            count,
            min,
            p50,
            p90,
            p99,
            p999,
            max,
            mean,
        } = r.one_way;
        LatencyJson {
            mechanism: r.mechanism,
            strategy: r.how,
            payload_bytes: r.payload,
            samples: count,
            one_way_ns: OneWayJson {
                min,
                p50,
                p90,
                p99,
                p999,
                max,
                mean,
            },
            doorbells: r.doorbells,
            messages: r.messages,
        }
    }
}

impl<'a> From<&'a ThroughputResult> for ThroughputJson<'a> {
    fn from(r: &'a ThroughputResult) -> Self {
        ThroughputJson {
            mechanism: r.mechanism,
            strategy: r.how,
            size_bytes: r.size,
            messages: r.messages,
            bytes: r.bytes,
            seconds: r.seconds,
            gb_per_s: r.gb_per_s(),
            gb_per_s_min: r.range.0,
            gb_per_s_max: r.range.1,
            rounds: r.rounds,
            messages_per_s: r.messages_per_s(),
            doorbells: r.doorbells,
        }
    }
}

impl Report {
    /// The whole report as one JSON object (one line; numbers that are not
    /// finite become `null`).
    pub fn to_json(&self) -> String {
        let report = ReportJson {
            tool: "ivlink bench",
            version: env!("CARGO_PKG_VERSION"),
            settings: SettingsJson::from(&self.settings),
            latency: self.latency.iter().map(LatencyJson::from).collect(),
            throughput: self.throughput.iter().map(ThroughputJson::from).collect(),
            ratios: self.ratios(),
            targets: self.targets(),
            seconds: self.seconds,
        };
        serde_json::to_string(&report).expect("the report's views serialize to JSON")
    }

    /// The latency plot: one line per mechanism.
    pub fn latency_svg(&self) -> String {
        let series: Vec<Series> = self
            .latency
            .iter()
            .map(|r| Series {
                label: format!("{} (p50 {})", r.mechanism, format_ns(r.one_way.p50)),
                points: r.distribution.clone(),
            })
            .collect();
        let title = format!(
            "ivlink bench: one-way latency (RTT/2 of a ping-pong), {} payload\n{}",
            format_size(self.settings.payload),
            self.settings.placement.describe()
        );
        svg::latency_plot(&title, &series)
    }
}
