//! Both sides' results side by side: one row per figure, with the ratio
//! ivlink / iceoryx2 (below 1 is better for latency, above 1 for throughput)
//! of the median rounds, and the lowest and highest ratio of single rounds.

use ivlink_lab::bench::report::format_size;
use ivlink_lab::bench::{Placement, Report};

use crate::iox::{self, Iceoryx2Results};
use crate::settings::Settings;
use crate::{ivlink_side, merge};

/// What a row's figures are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One-way latency, nanoseconds (lower is better).
    Nanoseconds,
    /// Messages per second of `size`-byte messages (higher is better).
    MessagesPerSecond {
        /// Message size, bytes.
        size: usize,
    },
}

impl Unit {
    /// Whether a lower figure is the better one.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Unit::Nanoseconds)
    }
}

/// How a throughput row's payloads move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The producer copies each message in, the consumer copies it out.
    Copy,
    /// The producer writes each payload in place (ivlink's write grant,
    /// iceoryx2's loan), the consumer checks its first and last 8 bytes in
    /// place (ivlink's read grant, iceoryx2's received sample).
    ZeroCopy,
}

impl Mode {
    /// The name in the JSON rows: "copy" or "zero-copy".
    pub fn name(self) -> &'static str {
        match self {
            Mode::Copy => "copy",
            Mode::ZeroCopy => "zero-copy",
        }
    }
}

/// One figure for both.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// The unit of both figures.
    pub unit: Unit,
    /// How the payloads moved (throughput rows).
    pub mode: Option<Mode>,
    /// ivlink's figure (median round).
    pub ivlink: f64,
    /// iceoryx2's figure (median round).
    pub iceoryx2: f64,
    /// Lowest and highest ratio of single rounds (more than one round).
    pub spread: Option<(f64, f64)>,
}

impl Row {
    /// ivlink's figure over iceoryx2's.
    pub fn ratio(&self) -> f64 {
        self.ivlink / self.iceoryx2
    }
}

/// Both sides measured once.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// `ivlink bench`'s report.
    pub ivlink: Report,
    /// iceoryx2's results.
    pub iceoryx2: Iceoryx2Results,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The run's settings.
    pub settings: Settings,
    /// Where the two processes ran (both sides alike).
    pub placement: Placement,
    /// `ivlink bench`'s figures, the median round of each.
    pub ivlink: Report,
    /// iceoryx2's figures, the median round of each.
    pub iceoryx2: Iceoryx2Results,
    /// Every round as measured.
    pub rounds: Vec<Round>,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
}

impl Comparison {
    /// The comparison of `rounds` (at least one).
    pub fn new(
        settings: Settings,
        placement: Placement,
        rounds: Vec<Round>,
        seconds: f64,
    ) -> Comparison {
        let reports: Vec<Report> = rounds.iter().map(|r| r.ivlink.clone()).collect();
        let results: Vec<Iceoryx2Results> = rounds.iter().map(|r| r.iceoryx2.clone()).collect();
        Comparison {
            ivlink: merge::ivlink_reports(&reports),
            iceoryx2: merge::iceoryx2_results(&results),
            settings,
            placement,
            rounds,
            seconds,
        }
    }

    /// The side-by-side rows: latency percentiles, then throughput per size,
    /// then the 64-byte rate with ivlink publishing every message.
    pub fn rows(&self) -> anyhow::Result<Vec<Row>> {
        let payload = self.settings.payload;
        let mut rows = rows_of(payload, &self.ivlink, &self.iceoryx2)?;
        if self.rounds.len() > 1 {
            let per_round = self
                .rounds
                .iter()
                .map(|r| rows_of(payload, &r.ivlink, &r.iceoryx2))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (i, row) in rows.iter_mut().enumerate() {
                let ratios = per_round.iter().filter_map(|r| r.get(i)).map(Row::ratio);
                row.spread = Some(
                    ratios.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(v), hi.max(v))
                    }),
                );
            }
        }
        Ok(rows)
    }
}

/// The rows of one set of figures.
fn rows_of(
    payload: usize,
    ivlink: &Report,
    iceoryx2: &Iceoryx2Results,
) -> anyhow::Result<Vec<Row>> {
    let ours = &ivlink_side::busy_latency(ivlink)?.one_way;
    let theirs = &iceoryx2.latency.one_way;
    let mut rows: Vec<Row> = [
        ("p50", ours.p50, theirs.p50),
        ("p99", ours.p99, theirs.p99),
        ("p99.9", ours.p999, theirs.p999),
    ]
    .into_iter()
    .map(|(quantile, ivlink, iceoryx2)| Row {
        metric: format!(
            "one-way latency {}, busy-poll, {quantile}",
            format_size(payload)
        ),
        unit: Unit::Nanoseconds,
        mode: None,
        ivlink,
        iceoryx2,
        spread: None,
    })
    .collect();
    for theirs in iceoryx2
        .throughput
        .iter()
        .filter(|r| r.mechanism == iox::MECHANISM)
    {
        let size = theirs.size;
        let ours = ivlink_side::stream(ivlink, size, false)?;
        rows.push(Row {
            metric: format!("throughput {}", format_size(size)),
            unit: Unit::MessagesPerSecond { size },
            mode: Some(Mode::Copy),
            ivlink: ours.messages_per_s(),
            iceoryx2: theirs.messages_per_s(),
            spread: None,
        });
        if let Some(single) = ivlink.throughput(ivlink_side::STREAM_EVERY_MESSAGE, size) {
            rows.push(Row {
                metric: format!(
                    "throughput {}, ivlink publishing every message",
                    format_size(size)
                ),
                unit: Unit::MessagesPerSecond { size },
                mode: Some(Mode::Copy),
                ivlink: single.messages_per_s(),
                iceoryx2: theirs.messages_per_s(),
                spread: None,
            });
        }
    }
    for theirs in iceoryx2
        .throughput
        .iter()
        .filter(|r| r.mechanism == iox::MECHANISM_ZERO_COPY)
    {
        let size = theirs.size;
        let ours = ivlink_side::stream(ivlink, size, true)?;
        rows.push(Row {
            metric: format!("throughput {}, zero-copy", format_size(size)),
            unit: Unit::MessagesPerSecond { size },
            mode: Some(Mode::ZeroCopy),
            ivlink: ours.messages_per_s(),
            iceoryx2: theirs.messages_per_s(),
            spread: None,
        });
    }
    Ok(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ivlink_lab::bench::{LatencyResult, Settings as IvlinkSettings, ThroughputResult};
    use std::time::Duration;

    /// A stream of 1000 messages in `seconds`.
    pub(crate) fn stream(mechanism: &'static str, size: usize, seconds: f64) -> ThroughputResult {
        ThroughputResult {
            mechanism,
            how: "how",
            size,
            messages: 1000,
            bytes: 1000 * size as u64,
            seconds,
            doorbells: 0,
            rounds: 1,
            range: (0.0, 0.0),
        }
    }

    /// A ping-pong whose every one-way time is `one_way` ns.
    pub(crate) fn latency(name: &'static str, one_way: u64) -> LatencyResult {
        LatencyResult::new(name, "how", 64, vec![2 * one_way; 100], 0, 200)
    }

    const PLACEMENT: Placement = Placement {
        leader_cpu: Some(0),
        peer_cpu: Some(1),
        available: 2,
    };

    /// One round: ivlink `ours` ns one way and 1e8 msg/s at 64 B, iceoryx2
    /// 400 ns and 1e7 msg/s.
    fn round(ours: u64) -> Round {
        let ivlink = Report {
            settings: IvlinkSettings {
                quick: true,
                placement: PLACEMENT,
                ring: 1 << 18,
                latency_ring: 1 << 14,
                batch: 16,
                payload: 64,
                region: 1 << 19,
                stream_spin: Duration::from_micros(50),
                rounds: 1,
            },
            latency: vec![
                latency("ivlink-busy", ours),
                latency("memcpy-ring-busy", 90),
            ],
            throughput: vec![
                stream("ivlink", 64, 1e-5),
                stream("ivlink-grant", 64, 0.5e-5),
                stream("ivlink", 4096, 1e-4),
                stream("ivlink-grant", 4096, 0.25e-4),
                stream("ivlink-batch1", 64, 2e-5),
            ],
            seconds: 1.0,
        };
        let iceoryx2 = Iceoryx2Results {
            latency: latency("iceoryx2", 400),
            throughput: vec![
                stream("iceoryx2", 64, 1e-4),
                stream("iceoryx2-zero-copy", 64, 1e-4),
                stream("iceoryx2", 4096, 2e-4),
                stream("iceoryx2-zero-copy", 4096, 1e-4),
            ],
            queue_depths: vec![4096, 64],
            leftovers: Vec::new(),
        };
        Round { ivlink, iceoryx2 }
    }

    /// A made-up run of one round: ivlink 100 ns one way and 1e8 msg/s,
    /// iceoryx2 400 ns and 1e7 msg/s.
    pub(crate) fn comparison() -> Comparison {
        Comparison::new(Settings::defaults(true), PLACEMENT, vec![round(100)], 2.5)
    }

    #[test]
    fn rows_pair_the_same_figure_of_both() {
        let rows = comparison().rows().unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(
            names,
            [
                "one-way latency 64 B, busy-poll, p50",
                "one-way latency 64 B, busy-poll, p99",
                "one-way latency 64 B, busy-poll, p99.9",
                "throughput 64 B",
                "throughput 64 B, ivlink publishing every message",
                "throughput 4 KiB",
                "throughput 64 B, zero-copy",
                "throughput 4 KiB, zero-copy",
            ]
        );
        assert!((rows[0].ratio() - 0.25).abs() < 1e-9);
        assert_eq!(rows[0].mode, None);
        assert_eq!(rows[5].mode, Some(Mode::Copy));
        assert!(
            (rows[6].ratio() - 20.0).abs() < 1e-9,
            "grant 2x ivlink's copy rate"
        );
        assert!((rows[7].ratio() - 4.0).abs() < 1e-9);
        assert_eq!(rows[7].mode, Some(Mode::ZeroCopy));
        assert!(rows[0].unit.lower_is_better());
        assert!((rows[3].ratio() - 10.0).abs() < 1e-9);
        assert!((rows[4].ratio() - 5.0).abs() < 1e-9);
        assert!((rows[5].ratio() - 2.0).abs() < 1e-9);
        assert!(!rows[5].unit.lower_is_better());
        assert!(rows.iter().all(|r| r.spread.is_none()), "one round");
    }

    #[test]
    fn rounds_give_the_median_and_the_spread_of_single_rounds() {
        let rounds = vec![round(100), round(300), round(200)];
        let comparison = Comparison::new(Settings::defaults(false), PLACEMENT, rounds, 9.0);
        assert_eq!(comparison.ivlink.settings.rounds, 3);
        let rows = comparison.rows().unwrap();
        assert!((rows[0].ratio() - 0.5).abs() < 1e-9, "200 ns over 400 ns");
        let (lo, hi) = rows[0].spread.unwrap();
        assert!((lo - 0.25).abs() < 1e-9 && (hi - 0.75).abs() < 1e-9);
        let (lo, hi) = rows[3].spread.unwrap();
        assert!((lo - 10.0).abs() < 1e-9 && (hi - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_size_ivlink_did_not_stream_is_an_error() {
        let mut comparison = comparison();
        comparison.ivlink.throughput.retain(|r| r.size != 4096);
        assert!(comparison.rows().is_err());
        let mut comparison = self::comparison();
        comparison
            .ivlink
            .throughput
            .retain(|r| r.mechanism != "ivlink-grant");
        assert!(comparison.rows().is_err(), "no zero-copy stream");
    }
}
