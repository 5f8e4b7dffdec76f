//! Structured logging with `tracing`: one line per significant event, fields as key=value.
//!
//! Under systemd, when stderr is the journal stream (`JOURNAL_STREAM` names its device and
//! inode), events go to journald natively: the level becomes the journal PRIORITY and every
//! field its own journal field (`journalctl -u riptide -o verbose` shows them). Otherwise they
//! are formatted as text on stderr.

use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `filter` uses the env-filter syntax (`info`,
/// `riptide=debug`); an invalid filter falls back to `info`.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_syslog_identifier("riptide".to_string());
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init();
                return;
            }
            Err(error) => eprintln!("riptide: cannot log to the journal, using stderr: {error}"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_thread_names(true)
        .try_init();
}

/// True when stderr is the stream systemd connected to the journal (`JOURNAL_STREAM` is
/// `<device>:<inode>` of that stream; a child whose stderr was redirected elsewhere inherits
/// the variable, so the identity is checked).
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(libc::STDERR_FILENO) else {
        return false;
    };
    journal_stream_matches(&value, stat.st_dev, stat.st_ino)
}

fn journal_stream_matches(value: &str, device: u64, inode: u64) -> bool {
    let Some((dev, ino)) = value.trim().split_once(':') else {
        return false;
    };
    dev.parse::<u64>() == Ok(device) && ino.parse::<u64>() == Ok(inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_identity() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(!journal_stream_matches("8:1234", 8, 1235));
        assert!(!journal_stream_matches("garbage", 8, 1234));
    }
}
