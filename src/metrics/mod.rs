//! Metrics: per-shard counters and histograms, their Prometheus exposition, and the admin HTTP
//! server (`/metrics`, `/v1/status/ready`, `/v1/cluster/health`).
//!
//! Each shard counts into its own thread-local [`ShardMetrics`] (shards are threads): plain
//! `Cell`s, no atomics, no locks on the data path. The hooks below are free functions so the
//! request path, the connection loop and the log can call them without carrying a handle:
//!
//! | hook | called by |
//! | --- | --- |
//! | [`record_request`] | `api::handle_request`, once per request (latency, rejected) |
//! | [`record_error_code`] | handlers, per non-zero Kafka error code they answer |
//! | [`record_throttle`] | Produce and Fetch, per response a client quota throttled |
//! | [`connection_opened`], [`add_bytes_received`], [`add_bytes_sent`] | `net` |
//! | [`record_batch_cache_read`], [`record_fsync`], [`io_started`] | the log |
//!
//! A scrape on shard 0 hops to every shard (`Shard::invoke_on`), where [`snapshot_local`] copies
//! that shard's counters and partition offsets into a [`ShardSnapshot`] (plain data, `Send`);
//! [`exposition::encode`] then renders all snapshots with `prometheus-client`.
//!
//! File I/O counts, bytes and latency come from the shard executor's io_uring statistics; the
//! average I/O queue depth over a scrape interval follows from them by Little's law (sum of
//! the latencies of the I/Os completed in the interval divided by its length).

pub mod exposition;
pub mod histogram;
pub mod server;

use crate::security::quota::QuotaKind;
use crate::shard::Shard;
use histogram::{HistogramSnapshot, LatencyHistogram};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// API keys 0..this are counted (Kafka defines fewer than 100 today).
const API_KEY_SLOTS: usize = 128;

/// Counters of one API on one shard.
#[derive(Debug, Default)]
struct ApiMetrics {
    requests: Cell<u64>,
    /// Requests that broke the protocol (unsupported version, undecodable): the connection
    /// was closed instead of answered.
    rejected: Cell<u64>,
    latency: LatencyHistogram,
}

/// Everything one shard counts. Thread-local: only its own shard thread touches it.
#[derive(Debug)]
struct ShardMetrics {
    apis: Box<[ApiMetrics]>,
    /// (API key, Kafka error code) → responses or partitions answered with it.
    errors: RefCell<BTreeMap<(i16, i16), u64>>,
    connections_open: Cell<u64>,
    /// Of them, connections that finished a TLS handshake (user-space TLS).
    tls_connections_open: Cell<u64>,
    /// Successful SASL re-authentications (KIP-368).
    sasl_reauthentications: Cell<u64>,
    /// Responses a client quota throttled, and their throttle times in ms, by quota type.
    quota_throttled: [Cell<u64>; QuotaKind::COUNT],
    quota_throttle_ms: [Cell<u64>; QuotaKind::COUNT],
    connections_accepted: Cell<u64>,
    /// By [`ConnectionClosed`] reason.
    connections_closed: [Cell<u64>; ConnectionClosed::COUNT],
    bytes_received: Cell<u64>,
    bytes_sent: Cell<u64>,
    incremental_fetches: Cell<u64>,
    batch_cache_hits: Cell<u64>,
    batch_cache_misses: Cell<u64>,
    fsyncs: Cell<u64>,
    fsync_latency: LatencyHistogram,
    io_in_flight: Cell<u64>,
    io: RefCell<IoTotals>,
}

/// Cumulative file I/O of the shard's executor, gathered at each snapshot.
#[derive(Debug, Clone)]
struct IoTotals {
    reads: u64,
    read_bytes: u64,
    writes: u64,
    written_bytes: u64,
    latency_seconds: f64,
    /// Last sample, and the queue depth averaged over the interval that ended there.
    sampled_at: Instant,
    average_queue_depth: f64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: (0..API_KEY_SLOTS).map(|_| ApiMetrics::default()).collect(),
            errors: RefCell::default(),
            connections_open: Cell::default(),
            tls_connections_open: Cell::default(),
            sasl_reauthentications: Cell::default(),
            quota_throttled: Default::default(),
            quota_throttle_ms: Default::default(),
            connections_accepted: Cell::default(),
            connections_closed: Default::default(),
            bytes_received: Cell::default(),
            incremental_fetches: Cell::default(),
            bytes_sent: Cell::default(),
            batch_cache_hits: Cell::default(),
            batch_cache_misses: Cell::default(),
            fsyncs: Cell::default(),
            fsync_latency: LatencyHistogram::default(),
            io_in_flight: Cell::default(),
            io: RefCell::new(IoTotals {
                reads: 0,
                read_bytes: 0,
                writes: 0,
                written_bytes: 0,
                latency_seconds: 0.0,
                sampled_at: Instant::now(),
                average_queue_depth: 0.0,
            }),
        }
    }
}

thread_local! {
    static LOCAL: ShardMetrics = ShardMetrics::default();
}

fn add(cell: &Cell<u64>, value: u64) {
    cell.set(cell.get().wrapping_add(value));
}

/// One request of `api_key` finished after `elapsed`; `rejected` when it closed the connection
/// instead of being answered.
pub fn record_request(api_key: i16, elapsed: Duration, rejected: bool) {
    LOCAL.with(|local| {
        let Some(api) = usize::try_from(api_key)
            .ok()
            .and_then(|key| local.apis.get(key))
        else {
            return;
        };
        add(&api.requests, 1);
        if rejected {
            add(&api.rejected, 1);
        }
        api.latency.record(elapsed);
    });
}

/// A response (or one partition in it) of `api_key` carried Kafka error `error_code`
/// (0 = none is ignored).
pub fn record_error_code(api_key: i16, error_code: i16) {
    if error_code == 0 {
        return;
    }
    LOCAL.with(|local| {
        *local
            .errors
            .borrow_mut()
            .entry((api_key, error_code))
            .or_insert(0) += 1;
    });
}

/// Counts a connection as open until the guard drops.
#[must_use = "the connection counts as open while the guard lives"]
pub struct ConnectionGuard(());

pub fn connection_opened() -> ConnectionGuard {
    LOCAL.with(|local| {
        add(&local.connections_open, 1);
        add(&local.connections_accepted, 1);
    });
    ConnectionGuard(())
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            local
                .connections_open
                .set(local.connections_open.get().saturating_sub(1))
        });
    }
}

/// Counts a connection as a TLS connection (encrypted in user space) until the guard drops.
#[must_use = "the connection counts as a TLS connection while the guard lives"]
pub struct TlsConnectionGuard(());

pub fn tls_connection_opened() -> TlsConnectionGuard {
    LOCAL.with(|local| add(&local.tls_connections_open, 1));
    TlsConnectionGuard(())
}

impl Drop for TlsConnectionGuard {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            local
                .tls_connections_open
                .set(local.tls_connections_open.get().saturating_sub(1))
        });
    }
}

/// Counts a successful SASL re-authentication (KIP-368).
pub fn sasl_reauthenticated() {
    LOCAL.with(|local| add(&local.sasl_reauthentications, 1));
}

/// Counts a response throttled by a client quota, and its throttle time.
pub fn record_throttle(kind: QuotaKind, throttle_ms: u64) {
    LOCAL.with(|local| {
        add(&local.quota_throttled[kind as usize], 1);
        add(&local.quota_throttle_ms[kind as usize], throttle_ms);
    });
}

/// Why the broker closed (or refused) a client connection on a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClosed {
    /// Nothing in flight and no request for `connections_max_idle_ms`.
    Idle,
    /// A frame did not arrive within `request_read_timeout_ms`.
    RequestTimeout,
    /// The client did not read a response within `response_write_timeout_ms`.
    ResponseTimeout,
    /// Refused on accept: the shard serves `max_connections_per_shard`.
    OverLimit,
    /// Refused on accept: the client's address has `max_connections_per_ip` (or its override)
    /// connections open to the broker.
    OverIpLimit,
    /// The TLS handshake failed (untrusted or expired certificate, no common cipher, not TLS)
    /// or did not finish within `request_read_timeout_ms`.
    TlsHandshakeFailed,
}

impl ConnectionClosed {
    pub const COUNT: usize = 6;
    pub const ALL: [ConnectionClosed; Self::COUNT] = [
        ConnectionClosed::Idle,
        ConnectionClosed::RequestTimeout,
        ConnectionClosed::ResponseTimeout,
        ConnectionClosed::OverLimit,
        ConnectionClosed::OverIpLimit,
        ConnectionClosed::TlsHandshakeFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionClosed::Idle => "idle",
            ConnectionClosed::RequestTimeout => "request_timeout",
            ConnectionClosed::ResponseTimeout => "response_timeout",
            ConnectionClosed::OverLimit => "over_limit",
            ConnectionClosed::OverIpLimit => "over_ip_limit",
            ConnectionClosed::TlsHandshakeFailed => "tls_handshake_failed",
        }
    }
}

pub fn connection_closed(reason: ConnectionClosed) {
    LOCAL.with(|local| add(&local.connections_closed[reason as usize], 1));
}

/// Client connections open on the calling shard.
pub fn connections_open_here() -> u64 {
    LOCAL.with(|local| local.connections_open.get())
}

/// Bytes read from clients (frames including their size prefix).
pub fn add_bytes_received(bytes: usize) {
    LOCAL.with(|local| add(&local.bytes_received, bytes as u64));
}

/// A Fetch answered within an incremental fetch session (KIP-227).
pub fn incremental_fetch() {
    LOCAL.with(|local| add(&local.incremental_fetches, 1));
}

/// Bytes written to clients.
pub fn add_bytes_sent(bytes: usize) {
    LOCAL.with(|local| add(&local.bytes_sent, bytes as u64));
}

/// A read served from the in-memory batch cache (`hit`) or from disk.
pub fn record_batch_cache_read(hit: bool) {
    LOCAL.with(|local| {
        add(
            if hit {
                &local.batch_cache_hits
            } else {
                &local.batch_cache_misses
            },
            1,
        )
    });
}

/// One fdatasync completed after `elapsed`.
pub fn record_fsync(elapsed: Duration) {
    LOCAL.with(|local| {
        add(&local.fsyncs, 1);
        local.fsync_latency.record(elapsed);
    });
}

/// Counts one I/O as in flight on this shard's ring until the guard drops.
#[must_use = "the I/O counts as in flight while the guard lives"]
pub struct IoGuard(());

pub fn io_started() -> IoGuard {
    LOCAL.with(|local| add(&local.io_in_flight, 1));
    IoGuard(())
}

impl Drop for IoGuard {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            local
                .io_in_flight
                .set(local.io_in_flight.get().saturating_sub(1))
        });
    }
}

/// One shard's counters and partitions at one moment: plain data that crosses shards.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub apis: Vec<ApiSnapshot>,
    /// (API key, error code, count).
    pub errors: Vec<(i16, i16, u64)>,
    pub connections_open: u64,
    pub tls_connections_open: u64,
    pub sasl_reauthentications_total: u64,
    /// Indexed by [`QuotaKind`] as usize.
    pub quota_throttled_total: [u64; QuotaKind::COUNT],
    pub quota_throttle_ms_total: [u64; QuotaKind::COUNT],
    /// Free bytes of the shard's request memory, shared and small-frame only, and of the
    /// reserves that part-read frames finish in.
    pub request_memory_free_bytes: u64,
    pub small_request_memory_free_bytes: u64,
    pub finishing_request_memory_free_bytes: u64,
    pub small_finishing_request_memory_free_bytes: u64,
    pub connections_accepted_total: u64,
    /// Indexed by [`ConnectionClosed`] as usize.
    pub connections_closed_total: [u64; ConnectionClosed::COUNT],
    pub bytes_received_total: u64,
    pub bytes_sent_total: u64,
    pub incremental_fetches_total: u64,
    /// Incremental fetch sessions the shard holds.
    pub fetch_sessions: u64,
    pub batch_cache_hits_total: u64,
    pub batch_cache_misses_total: u64,
    pub fsyncs_total: u64,
    pub fsync_latency: HistogramSnapshot,
    pub io: IoSnapshot,
    pub partitions: Vec<PartitionSnapshot>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiSnapshot {
    pub api_key: i16,
    pub requests_total: u64,
    pub rejected_total: u64,
    pub latency: HistogramSnapshot,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoSnapshot {
    pub reads_total: u64,
    pub read_bytes_total: u64,
    pub writes_total: u64,
    pub written_bytes_total: u64,
    /// Sum of the latencies of completed file I/Os (its rate is the average queue depth).
    pub latency_seconds_total: f64,
    /// Average file I/Os in flight between the previous snapshot and this one.
    pub average_queue_depth: f64,
    /// I/Os in flight right now, as counted by [`io_started`] guards.
    pub in_flight: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    /// Offset the next append gets.
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub segments: usize,
    /// The log refuses appends after a failed write or fdatasync.
    pub failed: bool,
    /// This node leads the partition.
    pub leader: bool,
    /// Replicas and in-sync replicas, as this node knows them.
    pub replicas: usize,
    pub in_sync_replicas: usize,
}

/// Copies this shard's counters and partition state. Runs on the shard itself (reached with
/// `invoke_on`), since both live in its thread.
pub fn snapshot_local(shard: &Shard) -> ShardSnapshot {
    sample_executor_io();
    let mut partitions = Vec::new();
    shard.partitions.for_each(|partition| {
        partitions.push(PartitionSnapshot {
            topic: partition.topic.name.clone(),
            partition: partition.index,
            log_start_offset: partition.log.log_start_offset(),
            log_end_offset: partition.log.next_offset(),
            high_watermark: partition.high_watermark(),
            size_bytes: partition.log.size_bytes(),
            segments: partition.log.segment_count(),
            failed: partition.log.is_failed(),
            leader: partition.replication.borrow().is_leader(),
            replicas: partition.replication.borrow().replicas.len(),
            in_sync_replicas: partition.replication.borrow().isr.len(),
        })
    });
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let mut snapshot = counters_snapshot();
    snapshot.shard = shard.id;
    snapshot.partitions = partitions;
    let free = shard.request_memory.free_bytes();
    snapshot.request_memory_free_bytes = free.shared;
    snapshot.small_request_memory_free_bytes = free.small;
    snapshot.finishing_request_memory_free_bytes = free.finishing;
    snapshot.small_finishing_request_memory_free_bytes = free.small_finishing;
    snapshot.fetch_sessions = shard.fetch_sessions.borrow().len() as u64;
    snapshot
}

/// This thread's counters (no partitions, shard 0).
fn counters_snapshot() -> ShardSnapshot {
    LOCAL.with(|local| {
        let apis = local
            .apis
            .iter()
            .enumerate()
            .filter(|(_, api)| api.requests.get() > 0)
            .map(|(key, api)| ApiSnapshot {
                api_key: key as i16,
                requests_total: api.requests.get(),
                rejected_total: api.rejected.get(),
                latency: api.latency.snapshot(),
            })
            .collect();
        let io = local.io.borrow();
        ShardSnapshot {
            shard: 0,
            apis,
            errors: local
                .errors
                .borrow()
                .iter()
                .map(|(&(api, code), &count)| (api, code, count))
                .collect(),
            connections_open: local.connections_open.get(),
            tls_connections_open: local.tls_connections_open.get(),
            sasl_reauthentications_total: local.sasl_reauthentications.get(),
            quota_throttled_total: std::array::from_fn(|i| local.quota_throttled[i].get()),
            quota_throttle_ms_total: std::array::from_fn(|i| local.quota_throttle_ms[i].get()),
            // Filled in by `snapshot_local`, which has the shard.
            request_memory_free_bytes: 0,
            small_request_memory_free_bytes: 0,
            finishing_request_memory_free_bytes: 0,
            small_finishing_request_memory_free_bytes: 0,
            connections_accepted_total: local.connections_accepted.get(),
            connections_closed_total: std::array::from_fn(|i| local.connections_closed[i].get()),
            bytes_received_total: local.bytes_received.get(),
            bytes_sent_total: local.bytes_sent.get(),
            incremental_fetches_total: local.incremental_fetches.get(),
            // Filled in by `snapshot_local`, which has the shard.
            fetch_sessions: 0,
            batch_cache_hits_total: local.batch_cache_hits.get(),
            batch_cache_misses_total: local.batch_cache_misses.get(),
            fsyncs_total: local.fsyncs.get(),
            fsync_latency: local.fsync_latency.snapshot(),
            io: IoSnapshot {
                reads_total: io.reads,
                read_bytes_total: io.read_bytes,
                writes_total: io.writes,
                written_bytes_total: io.written_bytes,
                latency_seconds_total: io.latency_seconds,
                average_queue_depth: io.average_queue_depth,
                in_flight: local.io_in_flight.get(),
            },
            partitions: Vec::new(),
        }
    })
}

/// Adds the executor's I/O statistics since the last call to this shard's totals. glommio
/// resets its statistics when read, so this is their only reader.
fn sample_executor_io() {
    let stats = glommio::executor().io_stats().all_rings();
    let (reads, read_bytes) = stats.file_reads();
    let (buffered_reads, buffered_read_bytes) = stats.file_buffered_reads();
    let (writes, written_bytes) = stats.file_writes();
    let (buffered_writes, buffered_written_bytes) = stats.file_buffered_writes();
    let latency = stats.io_latency_us();
    let latency_seconds = latency.sum().unwrap_or(0.0) / 1e6;
    LOCAL.with(|local| {
        let mut io = local.io.borrow_mut();
        io.reads += reads + buffered_reads;
        io.read_bytes += read_bytes + buffered_read_bytes;
        io.writes += writes + buffered_writes;
        io.written_bytes += written_bytes + buffered_written_bytes;
        io.latency_seconds += latency_seconds;
        let now = Instant::now();
        let interval = now.duration_since(io.sampled_at).as_secs_f64();
        if interval > 0.0 {
            io.average_queue_depth = latency_seconds / interval;
        }
        io.sampled_at = now;
    });
}

/// A shard that does not answer a scrape's hop within this is left out (and
/// `/v1/cluster/health` says so) rather than hanging the scrape.
pub const SNAPSHOT_TIMEOUT_MS: u64 = 2_000;

/// Gathers a snapshot from every shard, one explicit hop each (on shard 0 for a scrape). A
/// shard that is shutting down or does not answer within [`SNAPSHOT_TIMEOUT_MS`] is missing.
pub async fn snapshot_all(shard: &std::rc::Rc<Shard>) -> Vec<ShardSnapshot> {
    let hops = (0..shard.count).map(|target| async move {
        let hop =
            std::pin::pin!(shard.invoke_on(target, |owner| async move { snapshot_local(&owner) }));
        let timer = std::pin::pin!(glommio::timer::sleep(Duration::from_millis(
            SNAPSHOT_TIMEOUT_MS
        )));
        match futures::future::select(hop, timer).await {
            futures::future::Either::Left((Ok(snapshot), _)) => Some(snapshot),
            _ => None,
        }
    });
    futures::future::join_all(hops)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_count_into_the_thread_local() {
        // Each test runs on its own thread, so it sees only its own counts.
        record_request(0, Duration::from_micros(120), false);
        record_request(0, Duration::from_millis(3), true);
        record_request(-1, Duration::from_millis(3), true);
        record_request(4000, Duration::from_millis(3), true);
        record_error_code(0, 0);
        record_error_code(0, 3);
        record_error_code(0, 3);
        let guard = connection_opened();
        add_bytes_received(100);
        add_bytes_sent(40);
        record_batch_cache_read(true);
        record_batch_cache_read(false);
        record_fsync(Duration::from_micros(40));
        let io = io_started();
        let snapshot = counters_snapshot();
        assert_eq!(snapshot.apis.len(), 1);
        assert_eq!(snapshot.apis[0].requests_total, 2);
        assert_eq!(snapshot.apis[0].rejected_total, 1);
        assert_eq!(snapshot.apis[0].latency.count(), 2);
        assert_eq!(snapshot.errors, vec![(0, 3, 2)]);
        assert_eq!(snapshot.connections_open, 1);
        assert_eq!(snapshot.bytes_received_total, 100);
        assert_eq!(snapshot.bytes_sent_total, 40);
        assert_eq!(
            (
                snapshot.batch_cache_hits_total,
                snapshot.batch_cache_misses_total
            ),
            (1, 1)
        );
        assert_eq!(snapshot.fsyncs_total, 1);
        assert_eq!(snapshot.io.in_flight, 1);
        drop(guard);
        drop(io);
        let snapshot = counters_snapshot();
        assert_eq!(snapshot.connections_open, 0);
        assert_eq!(snapshot.connections_accepted_total, 1);
        assert_eq!(snapshot.io.in_flight, 0);
    }
}
