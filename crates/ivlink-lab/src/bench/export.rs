//! The report for machines (one JSON object) and the latency plot (SVG).

use super::json::Json;
use super::report::{Report, format_ns, format_size};
use super::svg::{self, Series};

impl Report {
    /// The whole report as one JSON object.
    pub fn to_json(&self) -> String {
        let s = &self.settings;
        let cpu = |c: Option<usize>| c.map_or(Json::Null, |c| Json::Int(c as u64));
        let settings = Json::Obj(vec![
            ("quick", Json::Bool(s.quick)),
            (
                "placement",
                Json::Obj(vec![
                    ("leader_cpu", cpu(s.placement.leader_cpu)),
                    ("peer_cpu", cpu(s.placement.peer_cpu)),
                    ("cpus_available", Json::Int(s.placement.available as u64)),
                    ("same_cpu", Json::Bool(s.placement.shared_cpu())),
                    ("description", Json::str(s.placement.describe())),
                ]),
            ),
            ("ring_bytes", Json::Int(s.ring as u64)),
            ("latency_ring_bytes", Json::Int(s.latency_ring as u64)),
            ("batch", Json::Int(s.batch as u64)),
            ("payload_bytes", Json::Int(s.payload as u64)),
            ("region_bytes", Json::Int(s.region as u64)),
            ("stream_spin_ns", Json::Int(s.stream_spin.as_nanos() as u64)),
            ("rounds", Json::Int(s.rounds as u64)),
        ]);
        let latency = self
            .latency
            .iter()
            .map(|r| {
                let p = &r.one_way;
                Json::Obj(vec![
                    ("mechanism", Json::str(r.mechanism)),
                    ("strategy", Json::str(r.how)),
                    ("payload_bytes", Json::Int(r.payload as u64)),
                    ("samples", Json::Int(p.count as u64)),
                    (
                        "one_way_ns",
                        Json::Obj(vec![
                            ("min", Json::Num(p.min)),
                            ("p50", Json::Num(p.p50)),
                            ("p90", Json::Num(p.p90)),
                            ("p99", Json::Num(p.p99)),
                            ("p999", Json::Num(p.p999)),
                            ("max", Json::Num(p.max)),
                            ("mean", Json::Num(p.mean)),
                        ]),
                    ),
                    ("doorbells", Json::Int(r.doorbells)),
                    ("messages", Json::Int(r.messages)),
                ])
            })
            .collect();
        let throughput = self
            .throughput
            .iter()
            .map(|r| {
                Json::Obj(vec![
                    ("mechanism", Json::str(r.mechanism)),
                    ("strategy", Json::str(r.how)),
                    ("size_bytes", Json::Int(r.size as u64)),
                    ("messages", Json::Int(r.messages)),
                    ("bytes", Json::Int(r.bytes)),
                    ("seconds", Json::Num(r.seconds)),
                    ("gb_per_s", Json::Num(r.gb_per_s())),
                    ("gb_per_s_min", Json::Num(r.range.0)),
                    ("gb_per_s_max", Json::Num(r.range.1)),
                    ("rounds", Json::Int(r.rounds as u64)),
                    ("messages_per_s", Json::Num(r.messages_per_s())),
                    ("doorbells", Json::Int(r.doorbells)),
                ])
            })
            .collect();
        let ratios = self
            .ratios()
            .into_iter()
            .map(|r| {
                Json::Obj(vec![
                    ("name", Json::Str(r.name)),
                    ("metric", Json::str(r.metric)),
                    (
                        "size_bytes",
                        r.size.map_or(Json::Null, |s| Json::Int(s as u64)),
                    ),
                    ("value", Json::Num(r.value)),
                ])
            })
            .collect();
        let targets = self
            .targets()
            .into_iter()
            .map(|t| {
                Json::Obj(vec![
                    ("name", Json::str(t.name)),
                    ("goal", Json::str(t.goal)),
                    ("measured", t.measured.map_or(Json::Null, Json::Num)),
                    ("shown", Json::Str(t.shown)),
                    ("met", Json::Bool(t.met)),
                ])
            })
            .collect();
        Json::Obj(vec![
            ("tool", Json::str("ivlink bench")),
            ("version", Json::str(env!("CARGO_PKG_VERSION"))),
            ("settings", settings),
            ("latency", Json::Arr(latency)),
            ("throughput", Json::Arr(throughput)),
            ("ratios", Json::Arr(ratios)),
            ("targets", Json::Arr(targets)),
            ("seconds", Json::Num(self.seconds)),
        ])
        .render()
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
