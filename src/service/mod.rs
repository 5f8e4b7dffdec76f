//! Running as a service: the systemd notification protocol (readiness, stopping, watchdog),
//! shard liveness that feeds the watchdog, and logging to the journal.
//!
//! Everything here is a no-op when the broker is not started by systemd (no `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC` or `JOURNAL_STREAM` in the environment), so a broker run by hand or by a test
//! behaves the same.
//!
//! The main thread, which otherwise only waits for SIGTERM/SIGINT, waits in slices
//! ([`wait_for_termination`]) and between slices looks at every shard's heartbeat
//! ([`Liveness`]): each shard stamps its heartbeat from a timer on its own executor, so a shard
//! whose executor is stuck (a blocking call, a busy loop, a dead thread) stops stamping. Only
//! when every shard has stamped recently does the main thread send `WATCHDOG=1`; if one stalls
//! longer than the watchdog interval, systemd sees no ping and restarts the service
//! (`WatchdogSec=` and `Restart=on-failure` in `scripts/riptide.service`).

pub mod liveness;
pub mod logging;
pub mod notify;

pub use liveness::Liveness;

use nix::sys::signal::{SigSet, Signal};
use std::time::Duration;

/// Longest slice the main thread sleeps between liveness checks when systemd asks for no
/// watchdog (stall warnings still go to the log).
const LIVENESS_CHECK_INTERVAL_MS: u64 = 1_000;
/// A shard that has not stamped its heartbeat for this long is reported in the log as stalled
/// (without a watchdog it is only a warning).
pub const STALL_WARNING_AFTER_MS: u64 = 2_000;
/// Shards stamp their heartbeat every 50 ms (their stop-flag poll); a window shorter than a few
/// periods would call a healthy shard stalled.
const MIN_ALIVE_WINDOW_MS: u64 = 200;

/// Tells systemd the broker is serving (`READY=1`) and what it serves (`STATUS=`).
pub fn notify_ready(status: &str) {
    send(&format!(
        "READY=1\nSTATUS={status}\nMAINPID={}",
        std::process::id()
    ));
}

/// Tells systemd the broker is shutting down (`STOPPING=1`).
pub fn notify_stopping() {
    send("STOPPING=1\nSTATUS=draining connections and flushing logs");
}

fn send(state: &str) {
    if let Err(error) = notify::notify(state) {
        tracing::warn!(
            "cannot notify systemd ({}): {error}",
            state.lines().next().unwrap_or("")
        );
    }
}

/// Waits for SIGTERM or SIGINT (blocked in every thread, see `shard`), checking shard liveness
/// between waits and pinging the systemd watchdog while every shard is alive. SIGHUP (also
/// blocked) asks the shards to reload their TLS certificates.
pub fn wait_for_termination(signals: &SigSet, liveness: &Liveness) -> Signal {
    let watchdog = notify::watchdog_interval();
    if let Some(interval) = watchdog {
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog enabled"
        );
    }
    // systemd recommends pinging at half the interval; a shard counts as alive if it stamped
    // within that half too, so a stall is noticed within one interval.
    let slice = watchdog
        .map(|interval| interval / 2)
        .unwrap_or(Duration::from_millis(LIVENESS_CHECK_INTERVAL_MS))
        .clamp(
            Duration::from_millis(10),
            Duration::from_millis(LIVENESS_CHECK_INTERVAL_MS),
        );
    let alive_within = match watchdog {
        Some(interval) => (interval / 2).max(Duration::from_millis(MIN_ALIVE_WINDOW_MS)),
        None => Duration::from_millis(STALL_WARNING_AFTER_MS),
    };
    let mut stalled_reported = vec![false; liveness.shard_count()];
    loop {
        match timed_wait(signals, slice) {
            Some(Signal::SIGHUP) => {
                tracing::info!("SIGHUP: reloading TLS certificates");
                crate::security::tls::request_reload();
            }
            Some(signal) => return signal,
            None => {}
        }
        let ages = liveness.heartbeat_ages();
        let alive_now = shards_alive(&ages, alive_within);
        let all_alive = alive_now.iter().all(|alive| *alive);
        for (shard, (age, alive)) in ages.into_iter().zip(alive_now).enumerate() {
            if !alive && !stalled_reported[shard] {
                tracing::warn!(
                    shard,
                    last_heartbeat_ms_ago = age.map(|age| age.as_millis() as u64),
                    watchdog = watchdog.is_some(),
                    "shard has stalled: its executor has not run its timers"
                );
                stalled_reported[shard] = true;
            } else if alive && stalled_reported[shard] {
                tracing::info!(shard, "shard is running again");
                stalled_reported[shard] = false;
            }
        }
        if all_alive && watchdog.is_some() {
            send("WATCHDOG=1");
        }
    }
}

/// Which shards stamped their heartbeat within `within` (a shard that never did is not alive).
pub fn shards_alive(ages: &[Option<Duration>], within: Duration) -> Vec<bool> {
    ages.iter()
        .map(|age| age.is_some_and(|age| age <= within))
        .collect()
}

/// `sigtimedwait` for the blocked termination signals; `None` when the time ran out.
fn timed_wait(signals: &SigSet, timeout: Duration) -> Option<Signal> {
    let timespec = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: both pointers are valid for the call; the info pointer may be null.
    let number = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &timespec) };
    if number < 0 {
        return None; // EAGAIN (timeout) or EINTR: the caller loops.
    }
    Signal::try_from(number).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_or_silent_shard_withholds_the_watchdog_ping() {
        let within = Duration::from_millis(200);
        let fresh = Some(Duration::from_millis(20));
        assert_eq!(shards_alive(&[fresh, fresh], within), vec![true, true]);
        assert_eq!(
            shards_alive(&[fresh, Some(Duration::from_secs(3))], within),
            vec![true, false]
        );
        assert_eq!(shards_alive(&[fresh, None], within), vec![true, false]);
    }

    #[test]
    fn the_default_config_file_parses_and_documents_the_defaults() {
        let text = include_str!("../../scripts/riptide.toml");
        let config = crate::config::BrokerConfig::from_toml_str(text).unwrap();
        assert_eq!(
            config.data_dir,
            std::path::PathBuf::from("/var/lib/riptide/data")
        );
        assert_eq!(config.admin_listen, "127.0.0.1:9644");
        config.validate().unwrap();
        // Every commented `# key = value` line is the built-in default of that key.
        let mut documented = 0;
        for line in text.lines() {
            let Some(setting) = line.strip_prefix("# ") else {
                continue;
            };
            let Some((key, _)) = setting.split_once(" = ") else {
                continue;
            };
            if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') || key == "advertise" {
                continue;
            }
            let parsed = crate::config::BrokerConfig::from_toml_str(setting)
                .unwrap_or_else(|e| panic!("{setting}: {e}"));
            assert_eq!(
                parsed,
                crate::config::BrokerConfig::default(),
                "{setting} is not the default"
            );
            documented += 1;
        }
        assert!(documented >= 10, "only {documented} defaults documented");
    }
}
