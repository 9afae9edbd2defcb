//! Rounds into one figure per measurement: the median round of each (by
//! median latency, or by throughput), as `ivlink bench` does for its streams.

use ivlink_lab::bench::{LatencyResult, Report, ThroughputResult};

use crate::iox::Iceoryx2Results;

/// The round with the median one-way p50. `runs` must not be empty.
pub fn median_latency(mut runs: Vec<LatencyResult>) -> LatencyResult {
    runs.sort_by(|a, b| a.one_way.p50.total_cmp(&b.one_way.p50));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// The median round of every stream of `runs` (matched by mechanism and
/// size, in the first round's order), with the spread of all of them.
fn median_streams<'a>(
    first: &[ThroughputResult],
    rounds: impl Iterator<Item = &'a [ThroughputResult]> + Clone,
) -> Vec<ThroughputResult> {
    first
        .iter()
        .map(|stream| {
            let runs: Vec<ThroughputResult> = rounds
                .clone()
                .filter_map(|round| {
                    round
                        .iter()
                        .find(|r| r.mechanism == stream.mechanism && r.size == stream.size)
                        .cloned()
                })
                .collect();
            ThroughputResult::median(runs)
        })
        .collect()
}

/// One `ivlink bench` report from several: the median round of every
/// latency and stream. `reports` must not be empty.
pub fn ivlink_reports(reports: &[Report]) -> Report {
    let first = &reports[0];
    let latency = first
        .latency
        .iter()
        .map(|r| {
            median_latency(
                reports
                    .iter()
                    .filter_map(|report| report.latency(r.mechanism).cloned())
                    .collect(),
            )
        })
        .collect();
    let throughput = median_streams(
        &first.throughput,
        reports.iter().map(|r| r.throughput.as_slice()),
    );
    let mut settings = first.settings.clone();
    settings.rounds = reports.len();
    Report {
        settings,
        latency,
        throughput,
        seconds: reports.iter().map(|r| r.seconds).sum(),
    }
}

/// One set of iceoryx2 results from several rounds: the median round of
/// every measurement, and every leftover. `results` must not be empty.
pub fn iceoryx2_results(results: &[Iceoryx2Results]) -> Iceoryx2Results {
    let first = &results[0];
    Iceoryx2Results {
        latency: median_latency(results.iter().map(|r| r.latency.clone()).collect()),
        throughput: median_streams(
            &first.throughput,
            results.iter().map(|r| r.throughput.as_slice()),
        ),
        queue_depths: first.queue_depths.clone(),
        leftovers: results.iter().flat_map(|r| r.leftovers.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::tests::{latency, stream};

    #[test]
    fn the_median_round_is_taken_whole() {
        let median = median_latency(vec![
            latency("x", 300),
            latency("x", 100),
            latency("x", 200),
        ]);
        assert_eq!(median.one_way.p50, 200.0);
        assert_eq!(median_latency(vec![latency("x", 7)]).one_way.p50, 7.0);
    }

    #[test]
    fn iceoryx2_rounds_merge_per_size_and_keep_every_leftover() {
        let round = |seconds: f64, leftover: Option<&str>| Iceoryx2Results {
            latency: latency("iceoryx2", (seconds * 1e6) as u64),
            throughput: vec![
                stream("iceoryx2", 64, seconds),
                stream("iceoryx2", 4096, 1.0),
            ],
            queue_depths: vec![4096, 64],
            leftovers: leftover.into_iter().map(String::from).collect(),
        };
        let merged = iceoryx2_results(&[
            round(3e-4, None),
            round(1e-4, Some("node a")),
            round(2e-4, None),
        ]);
        assert_eq!(merged.latency.one_way.p50, 200.0);
        assert_eq!(merged.throughput.len(), 2);
        assert_eq!(merged.throughput[0].seconds, 2e-4);
        assert_eq!(merged.throughput[0].rounds, 3);
        assert_eq!(merged.leftovers, ["node a"]);
        assert_eq!(merged.queue_depths, [4096, 64]);
    }
}
