//! Renders shard snapshots in the Prometheus / OpenMetrics text format with `prometheus-client`.
//!
//! Every metric is prefixed `riptide_` and labelled with its `shard`; partition metrics also
//! carry `topic` and `partition`. Counters end in `_total`; latencies are histograms in
//! seconds. The output ends with `# EOF` (OpenMetrics), which Prometheus accepts with the
//! content type [`CONTENT_TYPE`].

use super::histogram::HistogramSnapshot;
use super::{PartitionSnapshot, ShardSnapshot};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::ApiKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::time::Duration;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Process-wide values that come from the main thread rather than a shard.
#[derive(Debug, Clone, Default)]
pub struct ProcessSnapshot {
    /// Time since each shard's last heartbeat (`None` = never).
    pub heartbeat_ages: Vec<Option<Duration>>,
    pub ready: bool,
    pub uptime: Duration,
    pub quorum: QuorumSnapshot,
}

/// The controller quorum and metadata log as this node sees them.
#[derive(Debug, Clone, Default)]
pub struct QuorumSnapshot {
    pub is_voter: bool,
    pub is_active_controller: bool,
    pub term: u64,
    pub commit_index: u64,
    pub applied_offset: u64,
    pub snapshot_index: u64,
    pub leader_changes: u64,
    pub elections_started: u64,
    pub proposals_committed: u64,
    pub proposals_failed: u64,
    pub brokers_registered: u64,
    pub brokers_fenced: u64,
}

/// The whole `/metrics` body.
pub fn encode(shards: &[ShardSnapshot], process: &ProcessSnapshot) -> String {
    let mut registry = Registry::with_prefix("riptide");
    registry.register_collector(Box::new(SnapshotCollector {
        shards: shards.to_vec(),
        process: process.clone(),
    }));
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)
        .expect("writing to a String does not fail");
    body
}

/// Kafka's name for an API key (`Produce`), or the number for keys this codec does not know.
pub fn api_name(api_key: i16) -> String {
    match ApiKey::try_from(api_key) {
        Ok(key) => format!("{key:?}"),
        Err(_) => api_key.to_string(),
    }
}

/// Kafka's name for an error code, as the Java client spells it (`UNKNOWN_TOPIC_OR_PARTITION`).
pub fn error_name(code: i16) -> String {
    match code.err() {
        None => "NONE".to_string(),
        Some(error) => {
            let camel = format!("{error:?}");
            let mut snake = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                if c.is_ascii_alphanumeric() {
                    snake.push(c.to_ascii_uppercase());
                }
            }
            snake
        }
    }
}

#[derive(Debug)]
struct SnapshotCollector {
    shards: Vec<ShardSnapshot>,
    process: ProcessSnapshot,
}

type Labels = Vec<(&'static str, String)>;

fn shard_labels(shard: &ShardSnapshot) -> Labels {
    vec![("shard", shard.shard.to_string())]
}

fn partition_labels(shard: &ShardSnapshot, partition: &PartitionSnapshot) -> Labels {
    vec![
        ("shard", shard.shard.to_string()),
        ("topic", partition.topic.clone()),
        ("partition", partition.partition.to_string()),
    ]
}

/// One metric family: a descriptor, then one sample per label set.
fn family<'a, I>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: I,
) -> Result<(), std::fmt::Error>
where
    I: IntoIterator<Item = (Labels, Sample<'a>)>,
{
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, sample) in samples {
        if labels.is_empty() {
            sample.encode(&mut metric)?;
        } else {
            let mut sample_encoder = metric.encode_family(&labels)?;
            sample.encode(&mut sample_encoder)?;
        }
    }
    Ok(())
}

enum Sample<'a> {
    Counter(u64),
    CounterF64(f64),
    Gauge(i64),
    GaugeF64(f64),
    Histogram(&'a HistogramSnapshot),
}

impl Sample<'_> {
    fn encode(&self, encoder: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        let no_exemplar = None::<&prometheus_client::metrics::exemplar::Exemplar<Labels, f64>>;
        match self {
            Sample::Counter(value) => encoder.encode_counter(value, no_exemplar),
            Sample::CounterF64(value) => encoder.encode_counter(value, no_exemplar),
            Sample::Gauge(value) => encoder.encode_gauge(value),
            Sample::GaugeF64(value) => encoder.encode_gauge(value),
            Sample::Histogram(histogram) => encoder.encode_histogram::<Labels>(
                histogram.sum_seconds,
                histogram.count(),
                &histogram.buckets_seconds(),
                None,
            ),
        }
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge, Histogram};
        let shards = &self.shards;
        let e = &mut encoder;

        // Process.
        family(
            e,
            "shards",
            "Shards (pinned executors) in this broker.",
            Gauge,
            [(
                Labels::new(),
                Sample::Gauge(self.process.heartbeat_ages.len() as i64),
            )],
        )?;
        family(
            e,
            "ready",
            "1 once every shard listens, 0 while starting or draining.",
            Gauge,
            [(Labels::new(), Sample::Gauge(i64::from(self.process.ready)))],
        )?;
        let quorum = &self.process.quorum;
        let gauges: [(&str, &str, i64); 8] = [
            (
                "controller_is_voter",
                "1 on a controller voter.",
                i64::from(quorum.is_voter),
            ),
            (
                "controller_is_active",
                "1 on the active controller (quorum leader with a current image).",
                i64::from(quorum.is_active_controller),
            ),
            (
                "metadata_log_term",
                "Raft term of the controller quorum as this voter knows it.",
                quorum.term as i64,
            ),
            (
                "metadata_log_commit_index",
                "Highest committed offset of the metadata log (voters).",
                quorum.commit_index as i64,
            ),
            (
                "metadata_applied_offset",
                "Offset of the metadata log this node's image has applied.",
                quorum.applied_offset as i64,
            ),
            (
                "metadata_apply_lag",
                "Committed metadata log entries not yet applied here (voters).",
                quorum.commit_index.saturating_sub(quorum.applied_offset) as i64,
            ),
            (
                "metadata_log_snapshot_index",
                "Offset of the newest metadata log snapshot.",
                quorum.snapshot_index as i64,
            ),
            (
                "cluster_brokers_fenced",
                "Registered brokers that are fenced.",
                quorum.brokers_fenced as i64,
            ),
        ];
        for (name, help, value) in gauges {
            family(
                e,
                name,
                help,
                Gauge,
                [(Labels::new(), Sample::Gauge(value))],
            )?;
        }
        family(
            e,
            "cluster_brokers_registered",
            "Brokers registered in the metadata image.",
            Gauge,
            [(
                Labels::new(),
                Sample::Gauge(quorum.brokers_registered as i64),
            )],
        )?;
        let counters: [(&str, &str, u64); 4] = [
            (
                "metadata_log_leader_changes",
                "Leader or term changes this voter observed.",
                quorum.leader_changes,
            ),
            (
                "metadata_log_elections",
                "Elections this voter started (pre-vote or vote).",
                quorum.elections_started,
            ),
            (
                "metadata_proposals_committed",
                "Metadata changes this node proposed that committed.",
                quorum.proposals_committed,
            ),
            (
                "metadata_proposals_failed",
                "Metadata changes this node proposed that failed (leadership lost, timeout).",
                quorum.proposals_failed,
            ),
        ];
        for (name, help, value) in counters {
            family(
                e,
                name,
                help,
                Counter,
                [(Labels::new(), Sample::Counter(value))],
            )?;
        }
        family(
            e,
            "uptime_seconds",
            "Seconds since the broker became ready.",
            Gauge,
            [(
                Labels::new(),
                Sample::GaugeF64(self.process.uptime.as_secs_f64()),
            )],
        )?;
        family(
            e,
            "shard_heartbeat_age_seconds",
            "Seconds since the shard's executor last ran its heartbeat timer (-1: never).",
            Gauge,
            self.process
                .heartbeat_ages
                .iter()
                .enumerate()
                .map(|(shard, age)| {
                    (
                        vec![("shard", shard.to_string())],
                        Sample::GaugeF64(age.map_or(-1.0, |age| age.as_secs_f64())),
                    )
                }),
        )?;

        // Requests.
        let per_api = |pick: fn(&super::ApiSnapshot) -> Sample| {
            shards.iter().flat_map(move |shard| {
                shard.apis.iter().map(move |api| {
                    let mut labels = shard_labels(shard);
                    labels.push(("api", api_name(api.api_key)));
                    (labels, pick(api))
                })
            })
        };
        family(
            e,
            "requests",
            "Requests handled, by API.",
            Counter,
            per_api(|api| Sample::Counter(api.requests_total)),
        )?;
        family(
            e,
            "requests_rejected",
            "Requests that broke the protocol (the connection was closed), by API.",
            Counter,
            per_api(|api| Sample::Counter(api.rejected_total)),
        )?;
        family(
            e,
            "request_latency_seconds",
            "Time from a decoded request frame to its encoded response, by API.",
            Histogram,
            per_api(|api| Sample::Histogram(&api.latency)),
        )?;
        family(
            e,
            "request_errors",
            "Kafka error codes answered, by API and error.",
            Counter,
            shards.iter().flat_map(|shard| {
                shard.errors.iter().map(move |&(api, code, count)| {
                    let mut labels = shard_labels(shard);
                    labels.push(("api", api_name(api)));
                    labels.push(("error", error_name(code)));
                    labels.push(("code", code.to_string()));
                    (labels, Sample::Counter(count))
                })
            }),
        )?;

        // Network.
        let per_shard = |pick: fn(&ShardSnapshot) -> Sample| {
            shards
                .iter()
                .map(move |shard| (shard_labels(shard), pick(shard)))
        };
        family(
            e,
            "connections",
            "Client connections open.",
            Gauge,
            per_shard(|s| Sample::Gauge(s.connections_open as i64)),
        )?;
        family(
            e,
            "tls_connections",
            "Client connections open over TLS, by where records are encrypted (user space; \
             the kernel's TLS offload is not used).",
            Gauge,
            shards.iter().map(|shard| {
                let mut labels = shard_labels(shard);
                labels.push(("mode", "user".to_string()));
                (labels, Sample::Gauge(shard.tls_connections_open as i64))
            }),
        )?;
        family(
            e,
            "request_memory_free_bytes",
            "Free request memory of the shard: shared (max_request_memory_per_shard_bytes), \
             kept for small frames (small_request_memory_per_shard_bytes), and the reserves \
             part-read frames finish in when the pools are full (one largest frame each).",
            Gauge,
            shards.iter().flat_map(|shard| {
                [
                    ("shared", shard.request_memory_free_bytes),
                    ("small", shard.small_request_memory_free_bytes),
                    ("finishing", shard.finishing_request_memory_free_bytes),
                    (
                        "small_finishing",
                        shard.small_finishing_request_memory_free_bytes,
                    ),
                ]
                .into_iter()
                .map(move |(pool, free)| {
                    let mut labels = shard_labels(shard);
                    labels.push(("pool", pool.to_string()));
                    (labels, Sample::Gauge(free as i64))
                })
            }),
        )?;
        family(
            e,
            "sasl_reauthentications",
            "SASL re-authentications on open connections (KIP-368, connections_max_reauth_ms).",
            Counter,
            per_shard(|s| Sample::Counter(s.sasl_reauthentications_total)),
        )?;
        let per_quota = |pick: fn(&ShardSnapshot, usize) -> u64| {
            shards.iter().flat_map(move |shard| {
                crate::security::quota::QuotaKind::ALL
                    .iter()
                    .map(move |&kind| {
                        let mut labels = shard_labels(shard);
                        labels.push(("quota", kind.label().to_string()));
                        (labels, Sample::Counter(pick(shard, kind as usize)))
                    })
            })
        };
        family(
            e,
            "quota_throttled_responses",
            "Responses throttled by a client quota, by quota type (produce: producer_byte_rate, \
             fetch: consumer_byte_rate, request: request_percentage).",
            Counter,
            per_quota(|s, kind| s.quota_throttled_total[kind]),
        )?;
        family(
            e,
            "quota_throttle_ms",
            "Throttle time handed out by client quotas, milliseconds, by quota type.",
            Counter,
            per_quota(|s, kind| s.quota_throttle_ms_total[kind]),
        )?;
        family(
            e,
            "connections_accepted",
            "Client connections accepted.",
            Counter,
            per_shard(|s| Sample::Counter(s.connections_accepted_total)),
        )?;
        family(
            e,
            "connections_closed",
            "Client connections closed or refused by the broker on a limit, by reason.",
            Counter,
            shards.iter().flat_map(|shard| {
                super::ConnectionClosed::ALL.iter().map(move |&reason| {
                    let mut labels = shard_labels(shard);
                    labels.push(("reason", reason.label().to_string()));
                    (
                        labels,
                        Sample::Counter(shard.connections_closed_total[reason as usize]),
                    )
                })
            }),
        )?;
        family(
            e,
            "bytes_received",
            "Bytes of request frames read from clients.",
            Counter,
            per_shard(|s| Sample::Counter(s.bytes_received_total)),
        )?;
        family(
            e,
            "bytes_sent",
            "Bytes of responses written to clients.",
            Counter,
            per_shard(|s| Sample::Counter(s.bytes_sent_total)),
        )?;
        family(
            e,
            "fetch_sessions",
            "Incremental fetch sessions (KIP-227) the shard holds.",
            Gauge,
            per_shard(|s| Sample::Gauge(s.fetch_sessions as i64)),
        )?;
        family(
            e,
            "incremental_fetches",
            "Fetch requests answered within an incremental fetch session.",
            Counter,
            per_shard(|s| Sample::Counter(s.incremental_fetches_total)),
        )?;

        // Storage.
        family(
            e,
            "batch_cache_hits",
            "Reads served from the in-memory batch cache.",
            Counter,
            per_shard(|s| Sample::Counter(s.batch_cache_hits_total)),
        )?;
        family(
            e,
            "batch_cache_misses",
            "Reads that went to disk.",
            Counter,
            per_shard(|s| Sample::Counter(s.batch_cache_misses_total)),
        )?;
        family(
            e,
            "fsyncs",
            "fdatasync calls completed.",
            Counter,
            per_shard(|s| Sample::Counter(s.fsyncs_total)),
        )?;
        family(
            e,
            "fsync_latency_seconds",
            "fdatasync latency.",
            Histogram,
            per_shard(|s| Sample::Histogram(&s.fsync_latency)),
        )?;
        family(
            e,
            "io_reads",
            "File reads completed on the shard's io_uring.",
            Counter,
            per_shard(|s| Sample::Counter(s.io.reads_total)),
        )?;
        family(
            e,
            "io_read_bytes",
            "Bytes read from files.",
            Counter,
            per_shard(|s| Sample::Counter(s.io.read_bytes_total)),
        )?;
        family(
            e,
            "io_writes",
            "File writes completed on the shard's io_uring.",
            Counter,
            per_shard(|s| Sample::Counter(s.io.writes_total)),
        )?;
        family(
            e,
            "io_written_bytes",
            "Bytes written to files.",
            Counter,
            per_shard(|s| Sample::Counter(s.io.written_bytes_total)),
        )?;
        family(
            e,
            "io_latency_seconds",
            "Sum of completed file I/O latencies; its rate is the average io_uring queue depth.",
            Counter,
            per_shard(|s| Sample::CounterF64(s.io.latency_seconds_total)),
        )?;
        family(
            e,
            "io_queue_depth",
            "Average file I/Os in flight on the shard's io_uring since the previous scrape.",
            Gauge,
            per_shard(|s| Sample::GaugeF64(s.io.average_queue_depth)),
        )?;
        family(
            e,
            "io_in_flight",
            "File I/Os in flight now, as counted by the log.",
            Gauge,
            per_shard(|s| Sample::Gauge(s.io.in_flight as i64)),
        )?;

        // Partitions.
        let per_partition = |pick: fn(&PartitionSnapshot) -> Sample| {
            shards.iter().flat_map(move |shard| {
                shard
                    .partitions
                    .iter()
                    .map(move |partition| (partition_labels(shard, partition), pick(partition)))
            })
        };
        family(
            e,
            "partition_log_start_offset",
            "First offset still in the log.",
            Gauge,
            per_partition(|p| Sample::Gauge(p.log_start_offset)),
        )?;
        family(
            e,
            "partition_log_end_offset",
            "Offset the next append gets.",
            Gauge,
            per_partition(|p| Sample::Gauge(p.log_end_offset)),
        )?;
        family(
            e,
            "partition_high_watermark",
            "Offsets below it are visible to consumers.",
            Gauge,
            per_partition(|p| Sample::Gauge(p.high_watermark)),
        )?;
        family(
            e,
            "partition_leader",
            "1 where this node leads the partition.",
            Gauge,
            per_partition(|p| Sample::Gauge(i64::from(p.leader))),
        )?;
        family(
            e,
            "partition_replicas",
            "Replicas of the partition.",
            Gauge,
            per_partition(|p| Sample::Gauge(p.replicas as i64)),
        )?;
        family(
            e,
            "partition_in_sync_replicas",
            "In-sync replicas (ISR) of the partition; below `partition_replicas` on the leader: under-replicated.",
            Gauge,
            per_partition(|p| Sample::Gauge(p.in_sync_replicas as i64)),
        )?;
        family(
            e,
            "partition_size_bytes",
            "Bytes of record batches in the log's segments.",
            Gauge,
            per_partition(|p| Sample::Gauge(p.size_bytes as i64)),
        )?;
        family(
            e,
            "partition_segments",
            "Segment files of the log.",
            Gauge,
            per_partition(|p| Sample::Gauge(p.segments as i64)),
        )?;
        family(
            e,
            "partition_failed",
            "1 when the log refuses appends after a failed write or fdatasync.",
            Gauge,
            per_partition(|p| Sample::Gauge(i64::from(p.failed))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ApiSnapshot, IoSnapshot};
    use super::*;

    fn sample() -> Vec<ShardSnapshot> {
        let mut latency = HistogramSnapshot {
            counts: vec![0; super::super::histogram::LATENCY_BUCKET_BOUNDS_US.len() + 1],
            sum_seconds: 0.0003,
        };
        latency.counts[2] = 3;
        vec![
            ShardSnapshot {
                shard: 0,
                apis: vec![ApiSnapshot {
                    api_key: 0,
                    requests_total: 3,
                    rejected_total: 0,
                    latency: latency.clone(),
                }],
                errors: vec![(0, 3, 2)],
                connections_open: 2,
                io: IoSnapshot {
                    average_queue_depth: 1.5,
                    ..IoSnapshot::default()
                },
                partitions: vec![PartitionSnapshot {
                    topic: "orders \"eu\"".into(),
                    partition: 1,
                    log_end_offset: 42,
                    high_watermark: 42,
                    size_bytes: 4096,
                    ..PartitionSnapshot::default()
                }],
                fsync_latency: latency,
                ..ShardSnapshot::default()
            },
            ShardSnapshot {
                shard: 1,
                ..ShardSnapshot::default()
            },
        ]
    }

    #[test]
    fn exposition_has_every_family_once_and_ends_with_eof() {
        let body = encode(
            &sample(),
            &ProcessSnapshot {
                heartbeat_ages: vec![Some(Duration::from_millis(20)), None],
                ready: true,
                uptime: Duration::from_secs(5),
                quorum: QuorumSnapshot::default(),
            },
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        for line in [
            "riptide_requests_total{shard=\"0\",api=\"Produce\"} 3",
            "riptide_request_latency_seconds_bucket{le=\"0.00025\",shard=\"0\",api=\"Produce\"} 3",
            "riptide_request_latency_seconds_count{shard=\"0\",api=\"Produce\"} 3",
            "riptide_request_errors_total{shard=\"0\",api=\"Produce\",error=\"UNKNOWN_TOPIC_OR_PARTITION\",code=\"3\"} 2",
            "riptide_connections{shard=\"0\"} 2",
            "riptide_connections{shard=\"1\"} 0",
            "riptide_io_queue_depth{shard=\"0\"} 1.5",
            "riptide_partition_log_end_offset{shard=\"0\",topic=\"orders \\\"eu\\\"\",partition=\"1\"} 42",
            "riptide_shard_heartbeat_age_seconds{shard=\"1\"} -1.0",
            "riptide_request_latency_seconds_bucket{le=\"+Inf\",shard=\"0\",api=\"Produce\"} 3",
            "riptide_ready 1",
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
        }
        let type_lines: Vec<&str> = body.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut unique = type_lines.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), type_lines.len(), "a family appears twice");
    }

    #[test]
    fn error_names_follow_kafka() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(api_name(18), "ApiVersions");
        assert_eq!(api_name(999), "999");
    }
}
