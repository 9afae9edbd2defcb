//! What one run measures, the same for both sides, and ivlink's bench
//! configuration made from it.

use std::time::Duration;

use ivlink_lab::bench::BenchConfig;

/// The settings of one comparison run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Small counts: a few seconds in all, rough figures.
    pub quick: bool,
    /// Ping-pong payload, bytes.
    pub payload: usize,
    /// Round trips recorded at most per latency run.
    pub iterations: u64,
    /// Most time per latency run (once a fifth of the round trips are in).
    pub duration: Duration,
    /// Message sizes of the throughput runs, bytes.
    pub sizes: Vec<usize>,
    /// Most time per throughput run.
    pub stream_time: Duration,
    /// Most payload bytes per throughput run.
    pub stream_bytes: u64,
    /// Rounds of the whole comparison, each side once per round (they take
    /// turns going first); the median round of every figure is reported.
    pub rounds: usize,
    /// iceoryx2 subscriber buffer for the streams (`None`: from the size).
    pub queue_depth: Option<usize>,
    /// Pin the two processes to two CPUs.
    pub pin: bool,
    /// How long a side may wait for the other before the run fails.
    pub timeout: Duration,
}

/// How long a ping-pong runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPongPlan {
    /// Round trips not recorded at the start.
    pub warmup: u64,
    /// Round trips recorded at most.
    pub iterations: u64,
    /// Round trips recorded at least, whatever the time.
    pub min_iterations: u64,
    /// Stop after this long once `min_iterations` are in.
    pub time: Duration,
}

/// How long a stream runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    /// Message size, bytes.
    pub size: usize,
    /// Messages sent at most.
    pub messages: u64,
    /// Stop after this long.
    pub time: Duration,
    /// The subscriber's buffer, samples.
    pub queue_depth: usize,
}

/// In-flight payload of ivlink's streaming ring, which the iceoryx2 queue
/// matches by default.
const RING: usize = 256 << 10;

impl Settings {
    /// The full run's defaults (`quick`: a smoke run of a few seconds).
    pub fn defaults(quick: bool) -> Settings {
        let ivlink = if quick {
            BenchConfig::quick()
        } else {
            BenchConfig::standard()
        };
        Settings {
            quick,
            payload: 64,
            iterations: ivlink.busy_iterations,
            duration: ivlink.latency_time,
            // `ivlink bench`'s streaming sizes, so the two reports line up row
            // for row; a quick run keeps the smallest, a middle and the largest.
            sizes: if quick {
                vec![64, 4 << 10, 64 << 10]
            } else {
                ivlink.sizes.clone()
            },
            stream_time: ivlink.stream_time,
            stream_bytes: ivlink.stream_bytes,
            rounds: ivlink.rounds,
            queue_depth: None,
            pin: true,
            timeout: ivlink.timeout,
        }
    }

    /// `ivlink bench`'s configuration for the same counts and sizes.
    pub fn ivlink_config(&self) -> BenchConfig {
        let base = if self.quick {
            BenchConfig::quick()
        } else {
            BenchConfig::standard()
        };
        BenchConfig {
            sizes: self.sizes.clone(),
            ring: RING,
            payload: self.payload,
            pin: self.pin,
            busy_iterations: self.iterations,
            blocking_iterations: (self.iterations / 10).max(100),
            latency_time: self.duration,
            stream_bytes: self.stream_bytes,
            stream_time: self.stream_time,
            rounds: self.rounds,
            timeout: self.timeout,
            ..base
        }
    }

    /// The busy-poll ping-pong, as `ivlink bench` plans it.
    pub fn ping_pong_plan(&self) -> PingPongPlan {
        PingPongPlan {
            warmup: (self.iterations / 20).max(10),
            iterations: self.iterations,
            min_iterations: (self.iterations / 5).max(1),
            time: self.duration,
        }
    }

    /// The stream of `size`-byte messages.
    pub fn stream_plan(&self, size: usize) -> StreamPlan {
        StreamPlan {
            size,
            messages: (self.stream_bytes / size as u64).max(1),
            time: self.stream_time,
            queue_depth: self
                .queue_depth
                .unwrap_or_else(|| (RING / size).clamp(16, 4096)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ivlink_runs_the_same_counts_and_sizes() {
        let settings = Settings {
            iterations: 1000,
            sizes: vec![64, 128],
            ..Settings::defaults(true)
        };
        let config = settings.ivlink_config();
        assert!(config.quick);
        assert_eq!(config.sizes, vec![64, 128]);
        assert_eq!(config.busy_iterations, 1000);
        assert_eq!(config.latency_time, settings.duration);
        assert_eq!(config.rounds, settings.rounds);
    }

    #[test]
    fn the_default_queue_holds_a_ring_of_payload() {
        let settings = Settings::defaults(false);
        assert_eq!(settings.stream_plan(64).queue_depth, 4096);
        assert_eq!(settings.stream_plan(4096).queue_depth, 64);
        assert_eq!(settings.stream_plan(1 << 20).queue_depth, 16);
        let fixed = Settings {
            queue_depth: Some(8),
            ..settings
        };
        assert_eq!(fixed.stream_plan(64).queue_depth, 8);
    }
}
