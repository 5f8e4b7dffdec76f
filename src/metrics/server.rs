//! The admin HTTP listener on shard 0 (`admin_listen`, default `127.0.0.1:9644`):
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /metrics` | every shard's counters and partitions, OpenMetrics text |
//! | `GET /v1/status/ready` | 200 `{"status":"ready"}` once every shard listens, else 503 |
//! | `GET /v1/cluster/health` | JSON: `is_healthy`, nodes, shard heartbeats, failed partitions |
//!
//! HTTP/1.1 with one request per connection (`Connection: close`), request heads bounded by
//! [`MAX_REQUEST_HEAD_BYTES`] and [`REQUEST_TIMEOUT_MS`], at most [`MAX_ADMIN_CONNECTIONS`] at
//! once. It binds without SO_REUSEPORT, so a second broker on the same admin port fails to
//! start instead of silently sharing it. Gathering hops to each shard with `invoke_on`.

use super::exposition::{self, ProcessSnapshot};
use crate::service::Liveness;
use crate::shard::Shard;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt;
use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
pub const MAX_ADMIN_CONNECTIONS: usize = 32;
/// Leaderless partitions `/v1/cluster/health` lists (the count is unbounded, the list is not).
const LEADERLESS_PARTITIONS_LISTED: usize = 100;
/// A shard whose heartbeat is older than this makes `/v1/cluster/health` unhealthy.
const SHARD_ALIVE_WITHIN_MS: u64 = crate::service::STALL_WARNING_AFTER_MS;

/// Binds the admin address (call on shard 0 before announcing readiness, so a taken port
/// fails start-up).
pub fn bind(address: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on admin_listen {address}: {e} (set --admin-listen HOST:PORT, or \
             admin_listen = \"\" to run without the admin endpoint)"
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves admin requests until shutdown begins. Runs on shard 0.
pub async fn serve(shard: Rc<Shard>, listener: std::net::TcpListener, liveness: Arc<Liveness>) {
    let address = listener.local_addr().ok();
    // SAFETY: the fd is a bound, listening, non-blocking TCP socket we own.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    tracing::info!(address = ?address, "admin endpoint listening (/metrics, /v1/status/ready, /v1/cluster/health)");
    let started = Instant::now();
    let open = Rc::new(Cell::new(0usize));
    let mut stopped = shard.stopped().fuse();
    loop {
        let accepted = futures::select! {
            _ = stopped => break,
            accepted = listener.accept().fuse() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!("admin accept failed: {error}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= MAX_ADMIN_CONNECTIONS {
            tracing::warn!(
                limit = MAX_ADMIN_CONNECTIONS,
                "admin endpoint busy: connection refused"
            );
            continue;
        }
        open.set(open.get() + 1);
        let (shard, liveness, open) = (shard.clone(), liveness.clone(), open.clone());
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            if let Err(error) = serve_connection(&shard, stream, &liveness, started).await {
                tracing::debug!(?peer, "admin connection: {error}");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn serve_connection(
    shard: &Rc<Shard>,
    mut stream: glommio::net::TcpStream,
    liveness: &Liveness,
    started: Instant,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))?;
    stream.set_write_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
        if head.len() > MAX_REQUEST_HEAD_BYTES {
            let response = Response::text(431, "request head too large\n");
            return stream.write_all(&response.to_bytes(false)).await;
        }
    }
    let response = match parse_request_line(&head) {
        Some((method @ ("GET" | "HEAD"), path)) => {
            let response = route(shard, path, liveness, started).await;
            return stream.write_all(&response.to_bytes(method == "HEAD")).await;
        }
        Some(_) => Response::text(405, "only GET and HEAD\n"),
        None => Response::text(400, "malformed request\n"),
    };
    stream.write_all(&response.to_bytes(false)).await
}

/// `(method, path without query)` of the first line of an HTTP request head.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

async fn route(shard: &Rc<Shard>, path: &str, liveness: &Liveness, started: Instant) -> Response {
    match path {
        "/metrics" => {
            let shards = super::snapshot_all(shard).await;
            let process = ProcessSnapshot {
                heartbeat_ages: liveness.heartbeat_ages(),
                ready: liveness.is_ready(),
                uptime: started.elapsed(),
                quorum: quorum_snapshot(shard),
            };
            Response {
                status: 200,
                content_type: exposition::CONTENT_TYPE,
                body: exposition::encode(&shards, &process).into_bytes(),
            }
        }
        "/v1/status/ready" => {
            let ready = liveness.is_ready() && !shard.is_stopping();
            let status = if ready {
                "ready"
            } else if shard.is_stopping() {
                "stopping"
            } else {
                "starting"
            };
            Response::json(
                if ready { 200 } else { 503 },
                &serde_json::json!({ "status": status }),
            )
        }
        "/v1/cluster/health" => {
            let shards = super::snapshot_all(shard).await;
            Response::json(200, &health_report(shard, &shards, liveness))
        }
        _ => Response::text(
            404,
            "not found: try /metrics, /v1/status/ready, /v1/cluster/health\n",
        ),
    }
}

fn quorum_snapshot(shard: &Shard) -> exposition::QuorumSnapshot {
    let image = shard.metadata();
    let mut snapshot = exposition::QuorumSnapshot {
        applied_offset: image.version,
        brokers_registered: image.brokers.len() as u64,
        brokers_fenced: image.brokers.values().filter(|b| b.fenced).count() as u64,
        ..Default::default()
    };
    if let Some(node) = shard.metadata_node.get() {
        snapshot.is_voter = node.is_voter();
        snapshot.is_active_controller = node.is_active();
        snapshot.leader_changes = node.counters.leader_changes.get();
        snapshot.proposals_committed = node.counters.proposals_committed.get();
        snapshot.proposals_failed = node.counters.proposals_failed.get();
        if let Some(status) = node.quorum_status() {
            snapshot.term = status.term;
            snapshot.commit_index = status.commit_index;
            snapshot.snapshot_index = status.snapshot_index;
            snapshot.elections_started = status.elections_started;
        }
    }
    snapshot
}

fn health_report(
    shard: &Shard,
    snapshots: &[super::ShardSnapshot],
    liveness: &Liveness,
) -> serde_json::Value {
    let node_id = shard.config.node_id;
    let mut reasons = Vec::new();
    if !liveness.is_ready() {
        reasons.push("broker is not ready".to_string());
    }
    let alive_within = Duration::from_millis(SHARD_ALIVE_WITHIN_MS);
    let shards: Vec<serde_json::Value> = liveness
        .heartbeat_ages()
        .iter()
        .enumerate()
        .map(|(id, age)| {
            let alive = age.is_some_and(|age| age <= alive_within);
            if !alive {
                reasons.push(format!("shard {id} has stalled"));
            }
            serde_json::json!({
                "shard": id,
                "alive": alive,
                "heartbeat_age_ms": age.map(|age| age.as_millis() as u64),
            })
        })
        .collect();
    if snapshots.len() != shard.count {
        reasons.push(format!(
            "{} of {} shards answered",
            snapshots.len(),
            shard.count
        ));
    }
    let failed: Vec<serde_json::Value> = snapshots
        .iter()
        .flat_map(|s| s.partitions.iter())
        .filter(|p| p.failed)
        .map(|p| serde_json::json!({ "topic": p.topic, "partition": p.partition }))
        .collect();
    if !failed.is_empty() {
        reasons.push(format!("{} partition logs failed", failed.len()));
    }
    let partitions: usize = snapshots.iter().map(|s| s.partitions.len()).sum();
    let image = shard.metadata();
    let node = shard.metadata_node.get();
    let active_controller_id = node.and_then(|node| node.leader_id());
    if active_controller_id.is_none() {
        reasons.push("no active controller".to_string());
    }
    let status = node.and_then(|node| node.quorum_status());
    let all_nodes: Vec<i32> = image.brokers.keys().copied().collect();
    let nodes_down: Vec<i32> = image
        .brokers
        .values()
        .filter(|broker| broker.fenced)
        .map(|broker| broker.node_id)
        .collect();
    let leaderless: Vec<serde_json::Value> = image
        .topics
        .values()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| !image.is_live(p.leader))
                .map(|(index, _)| serde_json::json!({ "topic": topic.name, "partition": index }))
                .collect::<Vec<_>>()
        })
        .take(LEADERLESS_PARTITIONS_LISTED)
        .collect();
    serde_json::json!({
        "is_healthy": reasons.is_empty(),
        "unhealthy_reasons": reasons,
        "node_id": node_id,
        "controller_id": active_controller_id,
        "all_nodes": all_nodes,
        "nodes_down": nodes_down,
        "leaderless_partitions": leaderless,
        "failed_partitions": failed,
        "topics": image.topics.len(),
        "partitions": partitions,
        "shards": shards,
        "controller": {
            "active_controller_id": active_controller_id,
            "is_voter": node.is_some_and(|node| node.is_voter()),
            "is_active": node.is_some_and(|node| node.is_active()),
            "term": status.as_ref().map_or(0, |s| s.term),
            "commit_index": status.as_ref().map_or(0, |s| s.commit_index),
            "applied_index": status.as_ref().map_or(0, |s| s.applied_index),
            "snapshot_index": status.as_ref().map_or(0, |s| s.snapshot_index),
        },
        "metadata": {
            "cluster_id": image.cluster_id,
            "applied_offset": image.version,
            "image_digest": image.digest(),
            "brokers": image.brokers.values().map(|broker| serde_json::json!({
                "node_id": broker.node_id,
                "fenced": broker.fenced,
                "host": broker.host,
                "port": broker.port,
                "rack": broker.rack,
                "broker_epoch": broker.broker_epoch,
            })).collect::<Vec<_>>(),
        },
    })
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut bytes = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET / SPDY/3\r\n\r\n"), None);
    }

    #[test]
    fn responses_carry_length_and_close() {
        let bytes = Response::text(404, "nope\n").to_bytes(false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nnope\n"));
        let head = String::from_utf8(Response::text(200, "body").to_bytes(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }
}
