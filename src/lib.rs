//! Riptide: a Kafka-compatible streaming broker built thread-per-core.
//!
//! Layers, bottom up: [`log`] stores record batches per partition; [`shard`] runs one pinned
//! executor per core and carries work between them; [`cluster`] holds the metadata image
//! (topics, partitions, placement); [`protocol`] frames and validates Kafka requests; [`api`]
//! has one handler per Kafka API; [`net`] owns listeners and connections; [`cli`] ties it up.

pub mod admin_cli;
pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod group;
pub mod log;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod security;
pub mod service;
pub mod shard;
#[cfg(test)]
mod test_support;
pub mod tune;
pub mod txn;
