//! Latency histograms and the fixed-rate schedule that makes them honest.
//!
//! Coordinated omission: a closed-loop load generator that waits for the broker before sending
//! the next message stops *sending* while the broker stalls, so the stall shows up in one sample
//! instead of in every message that should have been sent during it. In fixed-rate mode we
//! therefore fix each message's intended send time up front (`start + index / rate`) and measure
//! every latency from it: a message that is sent late because the client was blocked carries
//! that delay in its latency. [`Schedule`] is that clock; [`LatencyHistogram`] records
//! nanoseconds and reports milliseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histograms hold; longer ones saturate here (and show as this max).
pub const HIGHEST_TRACKABLE_NS: u64 = 3_600 * 1_000_000_000;
/// Three significant digits: 0.1% value error, ~200 KiB per histogram.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A nanosecond latency histogram.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        LatencyHistogram {
            histogram: Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_NS, SIGNIFICANT_DIGITS)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Records one latency; zero counts as 1 ns, beyond the range saturates.
    #[inline]
    pub fn record_ns(&mut self, latency_ns: u64) {
        self.histogram.saturating_record(latency_ns.max(1));
    }

    /// Records `count` messages that share one latency (a batch created at one instant).
    #[inline]
    pub fn record_n_ns(&mut self, latency_ns: u64, count: u64) {
        self.histogram.saturating_record_n(latency_ns.max(1), count);
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share their bounds");
    }

    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn inner(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Value at a percentile (0..=100), in milliseconds.
    pub fn percentile_ms(&self, percentile: f64) -> f64 {
        ns_to_ms(self.histogram.value_at_percentile(percentile))
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_ms: ns_to_ms(h.min()),
            p50_ms: self.percentile_ms(50.0),
            p90_ms: self.percentile_ms(90.0),
            p99_ms: self.percentile_ms(99.0),
            p99_9_ms: self.percentile_ms(99.9),
            p99_99_ms: self.percentile_ms(99.99),
            max_ms: ns_to_ms(h.max()),
            mean_ms: h.mean() / 1e6,
            stddev_ms: h.stdev() / 1e6,
        }
    }
}

pub fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The percentiles every report shows, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
}

/// Intended send times of a fixed-rate stream: message `i` is due at `start + i / rate`.
///
/// Computed from the index rather than accumulated, so rounding never drifts and a late
/// sender cannot move the schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    interval_ns: f64,
    next_index: u64,
}

impl Schedule {
    pub fn new(start_ns: u64, rate_msgs_per_s: f64) -> Schedule {
        assert!(rate_msgs_per_s > 0.0, "a schedule needs a positive rate");
        Schedule {
            start_ns,
            interval_ns: 1e9 / rate_msgs_per_s,
            next_index: 0,
        }
    }

    #[inline]
    pub fn intended_ns(&self, index: u64) -> u64 {
        self.start_ns + (index as f64 * self.interval_ns) as u64
    }

    /// Intended time of the next message not yet taken.
    #[inline]
    pub fn next_intended_ns(&self) -> u64 {
        self.intended_ns(self.next_index)
    }

    /// Takes the next message if it is due at `now_ns`; returns its intended time.
    #[inline]
    pub fn take_due(&mut self, now_ns: u64) -> Option<u64> {
        let intended = self.next_intended_ns();
        if intended <= now_ns {
            self.next_index += 1;
            Some(intended)
        } else {
            None
        }
    }

    /// Messages taken so far.
    pub fn taken(&self) -> u64 {
        self.next_index
    }

    /// Messages due by `now_ns` (taken or not).
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        ((now_ns - self.start_ns) as f64 / self.interval_ns).floor() as u64 + 1
    }

    /// How far behind schedule the sender is at `now_ns` (0 when on time).
    pub fn lag_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.next_intended_ns())
    }
}

/// The measurement window: messages whose intended (or creation) time falls in
/// `[warmup_end_ns, end_ns)` count; the rest are warm-up or drain.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub warmup_end_ns: u64,
    pub end_ns: u64,
}

impl Window {
    #[inline]
    pub fn measures(&self, time_ns: u64) -> bool {
        time_ns >= self.warmup_end_ns && time_ns < self.end_ns
    }

    pub fn measured_s(&self) -> f64 {
        (self.end_ns - self.warmup_end_ns) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= expected.abs() * relative + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        // 1..=10_000 microseconds, one each.
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record_ns(us * 1_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert!(close(s.p50_ms, 5.0, 0.001), "{s:?}");
        assert!(close(s.p90_ms, 9.0, 0.001), "{s:?}");
        assert!(close(s.p99_ms, 9.9, 0.001), "{s:?}");
        assert!(close(s.p99_9_ms, 9.99, 0.001), "{s:?}");
        assert!(close(s.max_ms, 10.0, 0.001), "{s:?}");
        assert!(close(s.min_ms, 0.001, 0.001), "{s:?}");
        assert!(close(s.mean_ms, 5.0005, 0.001), "{s:?}");
    }

    #[test]
    fn record_n_equals_repeated_records_and_add_merges() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for _ in 0..100 {
            a.record_ns(2_000_000);
        }
        b.record_n_ns(2_000_000, 100);
        assert_eq!(a.summary(), b.summary());
        a.add(&b);
        assert_eq!(a.count(), 200);
        // Zero and huge values neither panic nor vanish.
        a.record_ns(0);
        a.record_ns(u64::MAX);
        assert_eq!(a.count(), 202);
        assert!(a.summary().max_ms >= ns_to_ms(HIGHEST_TRACKABLE_NS) * 0.999);
    }

    #[test]
    fn schedule_is_exact_and_does_not_drift() {
        let mut schedule = Schedule::new(1_000, 200_000.0); // every 5 us
        assert_eq!(schedule.intended_ns(0), 1_000);
        assert_eq!(schedule.intended_ns(1), 6_000);
        assert_eq!(schedule.intended_ns(200_000), 1_000 + 1_000_000_000);
        assert_eq!(schedule.take_due(999), None);
        assert_eq!(schedule.take_due(1_000), Some(1_000));
        assert_eq!(schedule.take_due(5_999), None);
        // A sender that wakes late takes every overdue message, each with its own time.
        let mut taken = Vec::new();
        while let Some(t) = schedule.take_due(21_000) {
            taken.push(t);
        }
        assert_eq!(taken, vec![6_000, 11_000, 16_000, 21_000]);
        assert_eq!(schedule.taken(), 5);
        assert_eq!(schedule.due_by(21_000), 5);
        assert_eq!(schedule.lag_ns(21_000), 0);
        assert_eq!(schedule.lag_ns(31_000), 5_000);
    }

    /// The classic closed-loop trap: a broker that answers in 1 us stalls for 1 s, at
    /// 1,000 msg/s for 10 s, one message in flight. Measured from the intended time, the 1,000
    /// messages due during the stall wait between ~1 s and ~2 ms (p99 ~900 ms). Measured from
    /// the actual send, one message sees the stall and p99 stays at 1 us.
    #[test]
    fn coordinated_omission_is_corrected_from_intended_times() {
        const SERVICE_NS: u64 = 1_000;
        const STALL_START_NS: u64 = 5_000_000_000;
        const STALL_NS: u64 = 1_000_000_000;
        let mut schedule = Schedule::new(0, 1_000.0);
        let mut corrected = LatencyHistogram::new();
        let mut naive = LatencyHistogram::new();
        // The client sends a message when it is both due and the previous ack has arrived.
        let mut client_free_at_ns = 0u64;
        while schedule.taken() < 10_000 {
            let intended = schedule.intended_ns(schedule.taken());
            let send = intended.max(client_free_at_ns);
            assert_eq!(schedule.take_due(send), Some(intended));
            let service_start = if (STALL_START_NS..STALL_START_NS + STALL_NS).contains(&send) {
                STALL_START_NS + STALL_NS
            } else {
                send
            };
            let ack = service_start + SERVICE_NS;
            client_free_at_ns = ack;
            corrected.record_ns(ack - intended);
            naive.record_ns(ack - send);
        }
        let c = corrected.summary();
        let n = naive.summary();
        assert_eq!(c.count, 10_000);
        // Naive: one slow message; the percentiles look perfect.
        assert!(close(n.p99_ms, 0.001, 0.001), "{n:?}");
        assert!(close(n.p99_9_ms, 0.001, 0.001), "{n:?}");
        assert!(close(n.max_ms, 1000.001, 0.001), "{n:?}");
        // Corrected: message 5000+k (k < 1000) is acked at 6 s + (k+1) us, intended at
        // 5 s + k ms, so its latency is 1 s - k * 0.999 ms + 1 us. p99 is about the 100th
        // largest value (k ~ 100), p99.9 the 10th (k ~ 10); histogram buckets are 0.5 ms wide
        // there. Message 6000 (due just as the backlog clears) waits 1.001 ms and is the p90.
        assert!(close(c.max_ms, 1000.001, 0.001), "{c:?}");
        assert!(close(c.p99_ms, 900.1, 0.002), "{c:?}");
        assert!(close(c.p99_9_ms, 990.5, 0.002), "{c:?}");
        assert!(close(c.p90_ms, 1.001, 0.001), "{c:?}");
        let above_1ms = corrected.count() - count_at_or_below(&corrected, 1_000_000);
        assert!((1_000..=1_001).contains(&above_1ms), "{above_1ms}");
        // Mean: (sum over k of the stall latencies ~ 501.0 s + 9,000 x 1 us) / 10,000.
        assert!(close(c.mean_ms, 50.1, 0.002), "{c:?}");
    }

    fn count_at_or_below(h: &LatencyHistogram, value_ns: u64) -> u64 {
        let inner = h.inner();
        inner.count_between(0, inner.highest_equivalent(value_ns))
    }

    #[test]
    fn window_excludes_warmup_and_drain() {
        let window = Window {
            start_ns: 0,
            warmup_end_ns: 2_000,
            end_ns: 12_000,
        };
        assert!(!window.measures(1_999));
        assert!(window.measures(2_000));
        assert!(window.measures(11_999));
        assert!(!window.measures(12_000));
        assert!(close(window.measured_s(), 1e-5, 1e-9));
    }
}
