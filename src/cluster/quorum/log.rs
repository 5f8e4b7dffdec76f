//! raft-rs logs through slog; this drain hands its records to `tracing`, with their key-values.

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};
use std::fmt::Write as _;

struct TracingDrain;

struct Fields(String);

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: Key, value: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let message = record.msg();
        let fields = fields.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "riptide::raft", "{message}{fields}")
            }
            slog::Level::Warning => tracing::warn!(target: "riptide::raft", "{message}{fields}"),
            slog::Level::Info => tracing::info!(target: "riptide::raft", "{message}{fields}"),
            slog::Level::Debug => tracing::debug!(target: "riptide::raft", "{message}{fields}"),
            slog::Level::Trace => tracing::trace!(target: "riptide::raft", "{message}{fields}"),
        }
        Ok(())
    }
}

/// The logger to give raft-rs.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
