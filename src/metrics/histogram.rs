//! A fixed-bucket latency histogram for one shard: plain `Cell`s, no atomics (only its own
//! shard writes it; a snapshot crosses to the scraping shard by value).

use std::cell::Cell;
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (the last bucket, +Inf, is implicit).
/// 50 µs to 10 s: an in-memory request, a disk write, an fdatasync, a long-poll fetch.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [Cell<u64>; BUCKETS],
    sum_us: Cell<u64>,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKET_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKETS - 1);
        let count = &self.counts[bucket];
        count.set(count.get() + 1);
        self.sum_us.set(self.sum_us.get().saturating_add(us));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.iter().map(Cell::get).collect(),
            sum_seconds: self.sum_us.get() as f64 / 1e6,
        }
    }
}

/// Values of a histogram at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Per bucket, in the order of [`LATENCY_BUCKET_BOUNDS_US`] then +Inf (not cumulative).
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, count)` per bucket, the last one `+Inf`.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKET_BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_their_bucket() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(10));
        histogram.record(Duration::from_micros(50));
        histogram.record(Duration::from_micros(51));
        histogram.record(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.counts[0], 2);
        assert_eq!(snapshot.counts[1], 1);
        assert_eq!(*snapshot.counts.last().unwrap(), 1);
        assert!((snapshot.sum_seconds - 60.000111).abs() < 1e-9);
        let buckets = snapshot.buckets_seconds();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets[0], (0.00005, 2));
        assert_eq!(buckets.last().unwrap().0, f64::INFINITY);
    }
}
