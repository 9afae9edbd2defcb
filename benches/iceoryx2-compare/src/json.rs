//! The comparison as one JSON object (`--json`).

use ivlink_lab::bench::histogram::Percentiles;
use ivlink_lab::bench::{LatencyResult, ThroughputResult};
use serde_json::{Value, json};

use crate::compare::{Comparison, Unit};
use crate::table::ICEORYX2;

fn percentiles(p: &Percentiles) -> Value {
    json!({
        "count": p.count,
        "min": p.min,
        "p50": p.p50,
        "p90": p.p90,
        "p99": p.p99,
        "p999": p.p999,
        "max": p.max,
        "mean": p.mean,
    })
}

fn latency(r: &LatencyResult) -> Value {
    json!({
        "mechanism": r.mechanism,
        "how": r.how,
        "payload": r.payload,
        "one_way_ns": percentiles(&r.one_way),
    })
}

fn throughput(r: &ThroughputResult) -> Value {
    json!({
        "mechanism": r.mechanism,
        "how": r.how,
        "size": r.size,
        "messages": r.messages,
        "bytes": r.bytes,
        "seconds": r.seconds,
        "messages_per_s": r.messages_per_s(),
        "gb_per_s": r.gb_per_s(),
        "rounds": r.rounds,
    })
}

impl Comparison {
    /// Settings, the side-by-side rows and both sides' full figures.
    pub fn to_json(&self) -> anyhow::Result<Value> {
        let s = &self.settings;
        let rows: Vec<Value> = self
            .rows()?
            .iter()
            .map(|row| {
                let (unit, size) = match row.unit {
                    Unit::Nanoseconds => ("ns", None),
                    Unit::MessagesPerSecond { size } => ("msg/s", Some(size)),
                };
                json!({
                    "metric": row.metric,
                    "unit": unit,
                    "size": size,
                    "mode": row.mode.map(|m| m.name()),
                    "ivlink": row.ivlink,
                    "iceoryx2": row.iceoryx2,
                    "ratio": row.ratio(),
                    "ratio_range": row.spread.map(|(lo, hi)| [lo, hi]),
                    "better": if row.unit.lower_is_better() { "lower" } else { "higher" },
                })
            })
            .collect();
        let ivlink_latency: Vec<Value> = self.ivlink.latency.iter().map(latency).collect();
        let ivlink_throughput: Vec<Value> = self.ivlink.throughput.iter().map(throughput).collect();
        let iceoryx2_throughput: Vec<Value> =
            self.iceoryx2.throughput.iter().map(throughput).collect();
        Ok(json!({
            "compared_with": ICEORYX2,
            "settings": {
                "quick": s.quick,
                "payload": s.payload,
                "iterations": s.iterations,
                "duration_s": s.duration.as_secs_f64(),
                "sizes": s.sizes,
                "stream_time_s": s.stream_time.as_secs_f64(),
                "stream_bytes": s.stream_bytes,
                "rounds": self.rounds.len(),
                "queue_depths": self.iceoryx2.queue_depths,
                "placement": self.placement.describe(),
            },
            "rows": rows,
            "ivlink": {
                "latency": ivlink_latency,
                "throughput": ivlink_throughput,
            },
            "iceoryx2": {
                "latency": latency(&self.iceoryx2.latency),
                "throughput": iceoryx2_throughput,
                "leftovers": self.iceoryx2.leftovers,
            },
            "seconds": self.seconds,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::compare::tests::comparison;

    #[test]
    fn the_json_holds_rows_and_both_sides() {
        let json = comparison().to_json().unwrap();
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[0]["mode"], serde_json::Value::Null);
        assert_eq!(rows[3]["mode"], "copy");
        assert_eq!(rows[7]["mode"], "zero-copy");
        assert_eq!(rows[0]["unit"], "ns");
        assert_eq!(rows[0]["better"], "lower");
        assert_eq!(rows[0]["ratio"], 0.25);
        assert_eq!(rows[5]["size"], 4096);
        assert_eq!(json["iceoryx2"]["latency"]["one_way_ns"]["p50"], 400.0);
        assert_eq!(json["ivlink"]["latency"].as_array().unwrap().len(), 2);
        assert!(json["iceoryx2"]["leftovers"].as_array().unwrap().is_empty());
    }
}
