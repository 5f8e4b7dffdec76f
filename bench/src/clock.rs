//! Clocks. Latency math uses `CLOCK_MONOTONIC` nanoseconds: it is host-wide (so a producer
//! stamp can be compared with a consumer receipt in another thread or process on the same host)
//! and never jumps. Record batch timestamps use wall-clock milliseconds, as Kafka expects.

/// Nanoseconds on `CLOCK_MONOTONIC`.
#[inline]
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Milliseconds since the Unix epoch (`CLOCK_REALTIME`).
#[inline]
pub fn wall_ms() -> i64 {
    (clock_ns(libc::CLOCK_REALTIME) / 1_000_000) as i64
}

/// Seconds since the Unix epoch, for reports.
pub fn wall_s() -> f64 {
    clock_ns(libc::CLOCK_REALTIME) as f64 / 1e9
}

#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub const NS_PER_S: u64 = 1_000_000_000;
pub const NS_PER_MS: f64 = 1_000_000.0;

/// Seconds (possibly fractional) to nanoseconds.
pub fn s_to_ns(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1e9).round() as u64
}
