//! Per-iteration samples and their percentiles.
//!
//! Percentiles use the nearest-rank method: the p-th percentile is the smallest
//! sample such that at least p % of the samples are at or below it, so every
//! reported figure is a time that was actually measured.

/// Summary of a set of samples (nanoseconds, or whatever unit was recorded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean (inflated by preemption outliers; prefer the median).
    pub mean: f64,
}

impl Percentiles {
    /// Every figure multiplied by `factor` (e.g. 0.5: round trip to one way).
    pub fn scaled(&self, factor: f64) -> Percentiles {
        Percentiles {
            count: self.count,
            min: self.min * factor,
            p50: self.p50 * factor,
            p90: self.p90 * factor,
            p99: self.p99 * factor,
            p999: self.p999 * factor,
            max: self.max * factor,
            mean: self.mean * factor,
        }
    }
}

/// Samples, sorted once, queried for quantiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    sorted: Vec<u64>,
}

impl Histogram {
    /// Takes the samples (in any order).
    pub fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Histogram { sorted: samples }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The `q`-quantile (`q` in 0..=1, clamped) by nearest rank; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = (q * n as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, n) - 1])
    }

    /// Median, p90, p99, p99.9, extremes and mean; `None` if empty.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let at = |q| self.quantile(q).map(|v| v as f64);
        let sum: u128 = self.sorted.iter().map(|&v| u128::from(v)).sum();
        Some(Percentiles {
            count: self.len(),
            min: at(0.0)?,
            p50: at(0.5)?,
            p90: at(0.9)?,
            p99: at(0.99)?,
            p999: at(0.999)?,
            max: at(1.0)?,
            mean: sum as f64 / self.len() as f64,
        })
    }

    /// `(quantile, value)` points for a percentile plot, spaced evenly in
    /// "nines" (0 %, 90 %, 99 %, 99.9 %...) up to what the sample count
    /// resolves, and ending at the maximum, placed at quantile `1 - 1/n` as
    /// percentile plots do (n samples resolve log10(n) nines).
    pub fn distribution(&self, points: usize) -> Vec<(f64, u64)> {
        let n = self.len();
        if n == 0 {
            return Vec::new();
        }
        // The deepest quantile this many samples can tell apart from the max.
        let nines = (n as f64).log10().max(0.0);
        let steps = points.max(2) - 1;
        let mut out: Vec<(f64, u64)> = (0..steps)
            .map(|i| {
                let x = nines * i as f64 / steps as f64;
                let q = 1.0 - 10f64.powf(-x);
                (q, self.quantile(q).unwrap_or_default())
            })
            .collect();
        out.push((1.0 - 1.0 / n as f64, self.sorted[n - 1]));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_thousand() {
        let h = Histogram::new((1..=1000).rev().collect());
        let p = h.percentiles().unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, 1.0);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p90, 900.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(p.mean, 500.5);
    }

    #[test]
    fn small_sets_report_samples_that_exist() {
        let h = Histogram::new(vec![30, 10, 20, 40]);
        assert_eq!(h.quantile(0.0), Some(10));
        assert_eq!(h.quantile(0.25), Some(10));
        assert_eq!(h.quantile(0.5), Some(20));
        assert_eq!(h.quantile(0.51), Some(30));
        assert_eq!(h.quantile(1.0), Some(40));
        assert_eq!(h.quantile(7.0), Some(40), "clamped");
        assert_eq!(h.quantile(f64::NAN), Some(10));
        let one = Histogram::new(vec![5]);
        let p = one.percentiles().unwrap();
        assert_eq!((p.p50, p.p999, p.max), (5.0, 5.0, 5.0));
    }

    #[test]
    fn an_outlier_moves_the_max_and_mean_not_the_median() {
        let mut samples = vec![100u64; 999];
        samples.push(10_000_000);
        let p = Histogram::new(samples).percentiles().unwrap();
        assert_eq!(p.p50, 100.0);
        assert_eq!(p.p99, 100.0);
        assert_eq!(p.max, 10_000_000.0);
        assert!(p.mean > 10_000.0);
        let half = p.scaled(0.5);
        assert_eq!((half.p50, half.max, half.count), (50.0, 5_000_000.0, 1000));
    }

    #[test]
    fn empty_sets_have_no_percentiles() {
        let h = Histogram::new(Vec::new());
        assert!(h.is_empty());
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.percentiles(), None);
        assert!(h.distribution(10).is_empty());
    }

    #[test]
    fn the_distribution_rises_and_ends_at_the_max() {
        let h = Histogram::new((1..=10_000).collect());
        let d = h.distribution(41);
        assert_eq!(d.len(), 41);
        assert_eq!(d[0], (0.0, 1));
        assert_eq!(*d.last().unwrap(), (0.9999, 10_000));
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let one = Histogram::new(vec![7]).distribution(5);
        assert!(one.iter().all(|&(q, v)| q == 0.0 && v == 7), "{one:?}");
        // Four nines resolved by 10 000 samples: the point before the max is deep.
        assert!(d[39].0 > 0.999);
    }
}
