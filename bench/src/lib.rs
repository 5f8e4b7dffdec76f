//! `riptide-bench`: a load generator for Kafka-compatible brokers.
//!
//! The native client speaks the Kafka protocol itself so that one core can drive millions of
//! small messages per second: record batches are cut from pre-encoded templates, requests are
//! pipelined on non-blocking sockets driven by one epoll loop per core, and nothing is allocated
//! per message. Latencies go into HdrHistograms; in fixed-rate mode every message's latency is
//! measured from its *intended* send time, so a stalled broker cannot hide behind a stalled
//! sender (coordinated omission).
//!
//! Layers: [`clock`] and [`hist`] (time and measurement), [`records`] and [`kafka`] (wire
//! formats), [`engine`] (the event loop), [`run`] (orchestration), [`report`] and [`plot`]
//! (output), [`host`] (facts about the machine).

pub mod cli;
pub mod clock;
pub mod engine;
pub mod hist;
pub mod host;
pub mod kafka;
pub mod plot;
#[cfg(feature = "rdkafka")]
pub mod rdk;
pub mod records;
pub mod report;
pub mod run;
pub mod summary;
