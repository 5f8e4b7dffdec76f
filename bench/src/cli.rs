//! Command line: `riptide-bench produce|consume|e2e [OPTIONS]`.
//!
//! Flag names follow the issue (`--message-size BYTES`, `--duration S`); the Rust fields carry
//! their units so that the code reads unambiguously.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Parser, Debug)]
#[command(
    name = "riptide-bench",
    version,
    about = "Load generator for Kafka-compatible brokers, with HDR latency histograms",
    // A later flag overrides an earlier one, so scripts can append overrides to workload files.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Produce at a fixed rate or as fast as possible; latency = send (intended) -> ack.
    Produce(RunArgs),
    /// Consume all partitions (assigned, no group) from the earliest or latest offset.
    Consume(RunArgs),
    /// Produce and consume at once; latency = producer timestamp -> consumer receipt.
    E2e(RunArgs),
    /// Create the topic (`--topic`, `--partitions`, `--topic-config`) and time it: until
    /// CreateTopics answers, until every partition has a leader in Metadata, and until every
    /// partition answers ListOffsets (its log is open). Prints the times; `--json` writes them.
    Create(RunArgs),
    /// Print the table of a `bench/run.sh` results directory (figures, baselines, ratios,
    /// goals) and write it as `summary.md` there.
    Summarize(SummarizeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SummarizeArgs {
    /// A results directory holding `w*.json` reports and `fio-*.json` baselines.
    pub dir: PathBuf,
}

impl Command {
    /// The run arguments of a load subcommand; `None` for `summarize`.
    pub fn args(&self) -> Option<&RunArgs> {
        match self {
            Command::Produce(args) | Command::Consume(args) | Command::E2e(args) => Some(args),
            Command::Create(_) | Command::Summarize(_) => None,
        }
    }

    pub fn mode(&self) -> Option<Mode> {
        match self {
            Command::Produce(_) => Some(Mode::Produce),
            Command::Consume(_) => Some(Mode::Consume),
            Command::E2e(_) => Some(Mode::E2e),
            Command::Create(_) | Command::Summarize(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

impl Mode {
    pub fn produces(self) -> bool {
        matches!(self, Mode::Produce | Mode::E2e)
    }
    pub fn consumes(self) -> bool {
        matches!(self, Mode::Consume | Mode::E2e)
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct RunArgs {
    /// Any broker of the cluster, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, default_value = "riptide-bench")]
    pub topic: String,
    /// Partition count for `--create` (an existing topic keeps its own count).
    #[arg(long = "partitions", default_value_t = 1)]
    pub partition_count: i32,
    /// Create the topic with CreateTopics first (an existing topic is used as it is).
    #[arg(long)]
    pub create: bool,
    /// Topic config for `--create`, KEY=VALUE, repeatable (e.g. `flush.messages=1`).
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_configs: Vec<String>,
    /// Producer connections per leader broker.
    #[arg(long = "producers", default_value_t = 1)]
    pub producer_count: usize,
    /// Consumers; each fetches its share of the partitions over its own connection.
    #[arg(long = "consumers", default_value_t = 1)]
    pub consumer_count: usize,
    /// Record value size.
    #[arg(long = "message-size", default_value_t = 100)]
    pub message_size_bytes: usize,
    /// Record keys: `none` (sticky partitioning), `random` (16 hex characters) or a number N
    /// of distinct keys. Keyed records are partitioned by murmur2, as Kafka's Java client does.
    #[arg(long, default_value = "none")]
    pub keys: Keys,
    /// Upper bound of one record batch (one partition's share of a request).
    #[arg(long = "batch-size", default_value_t = 16384)]
    pub batch_size_bytes: usize,
    /// How long a batch may wait for more records before it is sent (fractions allowed).
    /// Without it a batch goes out as soon as a request slot is free.
    #[arg(long = "linger-ms", default_value_t = 0.0)]
    pub linger_ms: f64,
    #[arg(long, default_value = "1")]
    pub acks: Acks,
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Messages per second over all producers; 0 = as fast as possible.
    #[arg(long = "rate", default_value_t = 0.0)]
    pub rate_msgs_per_s: f64,
    /// Measured time, after the warm-up.
    #[arg(long = "duration", default_value_t = 10.0)]
    pub duration_s: f64,
    /// Time run before the measurement starts; excluded from every figure.
    #[arg(long = "warmup", default_value_t = 2.0)]
    pub warmup_s: f64,
    /// CPU list for the load threads (e.g. `1` or `2-3,6`): one event loop pinned per core.
    /// Default: one unpinned thread.
    #[arg(long)]
    pub cores: Option<String>,
    #[arg(long, value_enum, default_value_t = Client::Native)]
    pub client: Client,
    /// Produce requests in flight per connection before it waits for acks.
    #[arg(long = "max-in-flight", default_value_t = 16)]
    pub max_in_flight_requests: usize,
    /// Upper bound of one produce request.
    #[arg(long = "max-request-size", default_value_t = 1024 * 1024)]
    pub max_request_size_bytes: usize,
    /// Fixed-rate mode: batched payload a worker may hold before it stops taking messages
    /// off the schedule (Kafka's `buffer.memory`). Messages it could not take still count,
    /// from their intended time.
    #[arg(long = "buffer-memory", default_value_t = 32 * 1024 * 1024)]
    pub buffer_memory_bytes: usize,
    /// Produce request `timeout_ms` field (how long the broker may wait for acks=all).
    #[arg(long = "request-timeout-ms", default_value_t = 30_000)]
    pub request_timeout_ms: i32,
    /// Where consumers start.
    #[arg(long = "from", value_enum, default_value_t = StartFrom::Earliest)]
    pub start_from: StartFrom,
    /// Consume: stop once every partition is read up to its end offset at the start (cold
    /// reads); `--duration` still bounds the run.
    #[arg(long)]
    pub until_end: bool,
    #[arg(long = "fetch-max-wait-ms", default_value_t = 500)]
    pub fetch_max_wait_ms: i32,
    #[arg(long = "fetch-max-bytes", default_value_t = 16 * 1024 * 1024)]
    pub fetch_max_bytes: i32,
    #[arg(long = "fetch-partition-max-bytes", default_value_t = 4 * 1024 * 1024)]
    pub fetch_partition_max_bytes: i32,
    /// After `--duration`, how long to wait for outstanding acks and records. Messages still
    /// outstanding then count as timed out, with their latency recorded as at least this wait.
    #[arg(long = "drain-timeout", default_value_t = 5.0)]
    pub drain_timeout_s: f64,
    /// Write all figures, the parameters, git revision and host facts as JSON.
    #[arg(long = "json", value_name = "FILE")]
    pub json_path: Option<PathBuf>,
    /// Write HdrHistogram percentile-distribution files (`<metric>.hgrm`) into DIR.
    #[arg(long = "hgrm", value_name = "DIR")]
    pub hgrm_dir: Option<PathBuf>,
    /// Draw the latency percentile curve (log-scale tail) to FILE.png or FILE.svg.
    #[arg(long = "plot", value_name = "FILE")]
    pub plot_path: Option<PathBuf>,
    /// Name of this run in titles and JSON (e.g. a workload id).
    #[arg(long)]
    pub label: Option<String>,
    /// No per-second lines; only the final summary.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keys {
    None,
    Random,
    Distinct(u64),
}

impl FromStr for Keys {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Keys::None),
            "random" => Ok(Keys::Random),
            number => match number.parse::<u64>() {
                Ok(count) if count >= 1 => Ok(Keys::Distinct(count)),
                _ => Err(format!(
                    "expected none, random or a positive number of distinct keys, got {number:?}"
                )),
            },
        }
    }
}

impl Keys {
    /// Bytes of every key: fixed, so that keys can be patched into a template in place.
    pub fn key_size_bytes(self) -> Option<usize> {
        match self {
            Keys::None => None,
            Keys::Random => Some(16),
            Keys::Distinct(count) => Some(decimal_digits(count.saturating_sub(1))),
        }
    }
}

pub fn decimal_digits(mut value: u64) -> usize {
    let mut digits = 1;
    while value >= 10 {
        value /= 10;
        digits += 1;
    }
    digits
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn wire_value(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("expected 0, 1 or all, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Codec id in the low three bits of a batch's attributes.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// The built-in pipelined client (fast path).
    Native,
    /// librdkafka through the `rdkafka` crate (build with `--features rdkafka`).
    Rdkafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// Parses a CPU list such as `1`, `0,2` or `2-5,8`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {text:?}");
        match part.split_once('-') {
            Some((low, high)) => {
                let low: usize = low.trim().parse().map_err(|_| bad())?;
                let high: usize = high.trim().parse().map_err(|_| bad())?;
                if high < low {
                    return Err(bad());
                }
                cores.extend(low..=high);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cores.is_empty() {
        return Err(format!("empty CPU list {text:?}"));
    }
    Ok(cores)
}

impl RunArgs {
    /// Rejects combinations that cannot be measured meaningfully, before connecting anywhere.
    pub fn validate(&self, mode: Mode) -> Result<(), String> {
        if self.partition_count < 1 {
            return Err("--partitions must be at least 1".into());
        }
        if mode.produces() && self.producer_count == 0 {
            return Err("--producers must be at least 1".into());
        }
        if mode.consumes() && self.consumer_count == 0 {
            return Err("--consumers must be at least 1".into());
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 || self.warmup_s < 0.0 {
            return Err("--duration must be > 0 and --warmup >= 0".into());
        }
        if self.rate_msgs_per_s < 0.0 || self.linger_ms < 0.0 {
            return Err("--rate and --linger-ms must be >= 0".into());
        }
        if self.max_in_flight_requests == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        if mode == Mode::E2e && self.message_size_bytes < crate::records::STAMP_SIZE_BYTES {
            return Err(format!(
                "e2e needs --message-size >= {} to carry the producer timestamp",
                crate::records::STAMP_SIZE_BYTES
            ));
        }
        if mode == Mode::E2e && self.acks == Acks::None {
            // Allowed, but say what it means.
            eprintln!("note: acks=0 measures end-to-end latency only; no produce latency");
        }
        for config in &self.topic_configs {
            if !config.contains('=') {
                return Err(format!("--topic-config {config:?} is not KEY=VALUE"));
            }
        }
        if let Some(cores) = &self.cores {
            parse_cpu_list(cores)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_acks_and_cpu_lists() {
        assert_eq!("none".parse::<Keys>(), Ok(Keys::None));
        assert_eq!("random".parse::<Keys>(), Ok(Keys::Random));
        assert_eq!("1000".parse::<Keys>(), Ok(Keys::Distinct(1000)));
        assert!("0".parse::<Keys>().is_err());
        assert_eq!(Keys::Distinct(1000).key_size_bytes(), Some(3));
        assert_eq!(Keys::Distinct(1001).key_size_bytes(), Some(4));
        assert_eq!(Keys::Distinct(1).key_size_bytes(), Some(1));
        assert_eq!("all".parse::<Acks>(), Ok(Acks::All));
        assert_eq!(Acks::All.wire_value(), -1);
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0,2-4"), Ok(vec![0, 2, 3, 4]));
        assert!(parse_cpu_list("4-2").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
