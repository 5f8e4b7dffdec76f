//! Structured logging with `tracing`: one line per significant event, fields as key=value.
//!
//! Under systemd, when stderr is the journal stream (`JOURNAL_STREAM` names its device and
//! inode), events go to journald natively: the level becomes the journal PRIORITY and every
//! field its own journal field (`journalctl -u riptide -o verbose` shows them). Otherwise they
//! are formatted as text on stderr.
//!
//! Log levels change at runtime per logger, as Kafka's `BROKER_LOGGER` config resource does
//! (`kafka-configs.sh --entity-type broker-loggers`): a logger is a `tracing` target (a module
//! path such as `riptide::cluster`), `root` the level of everything else. Changes are this
//! process's only and last until it exits, as in Kafka.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::prelude::*;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Installs the global subscriber. `filter` uses the env-filter syntax (`info`,
/// `riptide=debug`); an invalid filter falls back to `info`.
pub fn init(filter: &str) {
    let levels = LevelState::parse(filter);
    let (filter, handle) = reload::Layer::new(levels.env_filter());
    let _ = LOG_LEVELS.set(LogLevels {
        handle,
        state: Mutex::new(levels),
    });
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
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_thread_names(true);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .try_init();
}

/// Kafka's name of the logger every other one inherits from.
pub const ROOT_LOGGER: &str = "root";

/// Log levels Kafka accepts for a logger, most severe first.
pub const LOG_LEVELS_VALID: [&str; 7] = ["OFF", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// Loggers listed by [`loggers`] besides `root`: the crate and its top-level modules. Any
/// module path under one of the modules (`riptide::cluster::replication`) can be set too.
const KNOWN_LOGGERS: [&str; 17] = [
    "riptide",
    "riptide::admin_cli",
    "riptide::api",
    "riptide::cli",
    "riptide::client",
    "riptide::cluster",
    "riptide::config",
    "riptide::group",
    "riptide::log",
    "riptide::metrics",
    "riptide::net",
    "riptide::protocol",
    "riptide::security",
    "riptide::service",
    "riptide::shard",
    "riptide::tune",
    "riptide::txn",
];

static LOG_LEVELS: OnceLock<LogLevels> = OnceLock::new();

/// The installed filter and the levels it was built from (admin requests only: never on a
/// data path).
struct LogLevels {
    handle: reload::Handle<EnvFilter, Registry>,
    state: Mutex<LevelState>,
}

/// Levels as Kafka names them (`INFO`), per logger.
#[derive(Debug, Clone, PartialEq)]
struct LevelState {
    root: String,
    /// `target=level` directives of the start-up filter, and levels set since (which replace
    /// them).
    levels: BTreeMap<String, String>,
    /// Start-up directives that are not `target=level` (span and field filters), kept as given.
    other_directives: Vec<String>,
}

impl LevelState {
    fn parse(filter: &str) -> LevelState {
        let mut state = LevelState {
            root: "INFO".to_string(),
            levels: BTreeMap::new(),
            other_directives: Vec::new(),
        };
        for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                None => match kafka_level(directive) {
                    Some(level) => state.root = level.to_string(),
                    None => state.other_directives.push(directive.to_string()),
                },
                Some((target, level)) if is_target(target) => match kafka_level(level) {
                    Some(level) => {
                        state.levels.insert(target.to_string(), level.to_string());
                    }
                    None => state.other_directives.push(directive.to_string()),
                },
                Some(_) => state.other_directives.push(directive.to_string()),
            }
        }
        // One malformed directive would make the whole filter fall back to `info` on every
        // later change: drop it once, here.
        state.other_directives.retain(|directive| {
            directive
                .parse::<tracing_subscriber::filter::Directive>()
                .is_ok()
        });
        state
    }

    fn env_filter(&self) -> EnvFilter {
        let mut directives = vec![filter_level(&self.root).to_string()];
        directives.extend(
            self.levels
                .iter()
                .map(|(target, level)| format!("{target}={}", filter_level(level))),
        );
        directives.extend(self.other_directives.iter().cloned());
        EnvFilter::try_new(directives.join(",")).unwrap_or_else(|_| EnvFilter::new("info"))
    }

    /// The level a logger logs at: its own, else its nearest ancestor's, else root's.
    fn effective(&self, logger: &str) -> &str {
        if logger == ROOT_LOGGER {
            return &self.root;
        }
        let mut name = logger;
        loop {
            if let Some(level) = self.levels.get(name) {
                return level;
            }
            match name.rsplit_once("::") {
                Some((parent, _)) => name = parent,
                None => return &self.root,
            }
        }
    }

    fn set(&mut self, logger: &str, level: &str) {
        if logger == ROOT_LOGGER {
            self.root = level.to_string();
        } else {
            self.levels.insert(logger.to_string(), level.to_string());
        }
    }
}

/// Kafka's spelling of a level name given in any case, if it is one.
fn kafka_level(level: &str) -> Option<&'static str> {
    LOG_LEVELS_VALID
        .into_iter()
        .find(|valid| valid.eq_ignore_ascii_case(level))
}

/// The env-filter level of a Kafka level (tracing has no FATAL).
fn filter_level(kafka_level: &str) -> &'static str {
    match kafka_level {
        "OFF" => "off",
        "FATAL" | "ERROR" => "error",
        "WARN" => "warn",
        "DEBUG" => "debug",
        "TRACE" => "trace",
        _ => "info",
    }
}

fn is_target(name: &str) -> bool {
    !name.is_empty()
        && name.split("::").all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Whether `logger` names a logger of this broker: `root`, a known logger or a module path
/// under one.
pub fn logger_exists(logger: &str) -> bool {
    logger == ROOT_LOGGER
        || (is_target(logger)
            && KNOWN_LOGGERS.iter().any(|known| {
                // Under a module, not under the crate: `riptide::nowhere` names nothing.
                logger == *known
                    || (*known != "riptide"
                        && logger
                            .strip_prefix(known)
                            .is_some_and(|rest| rest.starts_with("::")))
            }))
}

/// Every logger with the level it logs at: `root`, the known loggers and any set since start.
pub fn loggers() -> Vec<(String, String)> {
    let Some(log_levels) = LOG_LEVELS.get() else {
        return Vec::new();
    };
    let state = log_levels
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let mut names: Vec<&str> = vec![ROOT_LOGGER];
    names.extend(KNOWN_LOGGERS);
    names.extend(state.levels.keys().map(String::as_str));
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| (name.to_string(), state.effective(name).to_string()))
        .collect()
}

/// A logger's level change: `Some(level)` sets it, `None` removes its own level (it inherits
/// its ancestor's again).
pub type LevelChange = (String, Option<String>);

/// Checks every change as Kafka does before any takes effect; the message is Kafka's. The
/// error's flag is true for INVALID_CONFIG (a bad logger or level), false for INVALID_REQUEST.
pub fn check_level_changes(changes: &[LevelChange]) -> Result<(), (bool, String)> {
    for (logger, level) in changes {
        match level {
            None if logger == ROOT_LOGGER => {
                return Err((
                    false,
                    "Removing the log level of the root logger is not allowed".to_string(),
                ))
            }
            Some(level) if !LOG_LEVELS_VALID.contains(&level.as_str()) => {
                return Err((
                    true,
                    format!(
                        "Cannot set the log level of {logger} to {level} as it is not a supported \
                         log level. Valid log levels are {}",
                        LOG_LEVELS_VALID.join(", ")
                    ),
                ))
            }
            _ => {}
        }
        if !logger_exists(logger) {
            return Err((true, format!("Logger {logger} does not exist!")));
        }
    }
    Ok(())
}

/// Applies changes checked by [`check_level_changes`] and reloads the filter.
pub fn apply_level_changes(changes: &[LevelChange]) -> Result<(), String> {
    let log_levels = LOG_LEVELS
        .get()
        .ok_or_else(|| "logging is not initialised".to_string())?;
    let mut state = log_levels
        .state
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    for (logger, level) in changes {
        match level.as_deref().and_then(kafka_level) {
            Some(level) => state.set(logger, level),
            None => {
                state.levels.remove(logger);
            }
        }
    }
    log_levels
        .handle
        .reload(state.env_filter())
        .map_err(|error| format!("cannot reload the log filter: {error}"))?;
    drop(state);
    tracing::info!(?changes, "log levels changed");
    Ok(())
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
    fn start_up_filters_read_as_kafka_levels() {
        let state = LevelState::parse("warn,riptide::cluster=debug,raft=TRACE,[span]=info");
        assert_eq!(state.root, "WARN");
        assert_eq!(state.effective("riptide::cluster"), "DEBUG");
        assert_eq!(state.effective("riptide::cluster::replication"), "DEBUG");
        assert_eq!(state.effective("riptide::net"), "WARN");
        assert_eq!(state.effective("raft"), "TRACE");
        assert_eq!(state.other_directives, vec!["[span]=info".to_string()]);
        let filter = state.env_filter().to_string();
        for directive in [
            "warn",
            "riptide::cluster=debug",
            "raft=trace",
            "[span]=info",
        ] {
            assert!(filter.contains(directive), "{directive} in {filter}");
        }
        assert_eq!(LevelState::parse("").root, "INFO");
        let state = LevelState::parse("debug,a=b=c");
        assert!(state.other_directives.is_empty() && state.root == "DEBUG");
    }

    #[test]
    fn set_levels_override_inherited_ones_and_fatal_maps_to_error() {
        let mut state = LevelState::parse("info,riptide::net=debug");
        state.set("riptide::net", "FATAL");
        state.set(ROOT_LOGGER, "TRACE");
        assert_eq!(state.effective("riptide::net::tls"), "FATAL");
        assert_eq!(state.effective("riptide::api"), "TRACE");
        let filter = state.env_filter().to_string();
        assert!(filter.contains("riptide::net=error"), "{filter}");
        assert!(
            filter.starts_with("trace") || filter.contains(",trace"),
            "{filter}"
        );
    }

    #[test]
    fn changes_are_checked_as_kafka_checks_them() {
        let change = |logger: &str, level: Option<&str>| {
            vec![(logger.to_string(), level.map(str::to_string))]
        };
        assert_eq!(
            check_level_changes(&change("riptide::cluster", Some("DEBUG"))),
            Ok(())
        );
        assert!(check_level_changes(&change("riptide::cluster", Some("debug"))).is_err());
        assert_eq!(
            check_level_changes(&change("riptide::cluster::raft", None)),
            Ok(())
        );
        assert_eq!(check_level_changes(&change("root", Some("WARN"))), Ok(()));
        let (invalid_config, message) = check_level_changes(&change("root", None)).unwrap_err();
        assert!(!invalid_config && message.contains("root logger"));
        let (invalid_config, message) =
            check_level_changes(&change("riptide::api", Some("VERBOSE"))).unwrap_err();
        assert!(invalid_config && message.contains("Valid log levels are OFF, FATAL"));
        let (invalid_config, message) =
            check_level_changes(&change("kafka.server.ReplicaManager", Some("INFO"))).unwrap_err();
        assert!(invalid_config && message == "Logger kafka.server.ReplicaManager does not exist!");
        assert!(!logger_exists("riptide::clusterx"));
        assert!(!logger_exists("riptide::nowhere"));
        assert!(logger_exists("riptide"));
        assert!(logger_exists("riptide::cluster::quorum"));
    }

    #[test]
    fn journal_stream_identity() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(!journal_stream_matches("8:1234", 8, 1235));
        assert!(!journal_stream_matches("garbage", 8, 1234));
    }
}
