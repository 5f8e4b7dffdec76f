//! `metadata`: metadata at scale — a 3-voter cluster against a single-node broker, same run.
//!
//! On each deployment (fresh data directories, free ports, `--cores 1` per node):
//!
//! 1. start it and wait until it has formed (one active controller, every broker unfenced);
//! 2. create `--partitions` partitions as topics of `--partitions-per-topic`, several topics per
//!    CreateTopics request, through one node (in the cluster, one that is not the active
//!    controller, so every request is forwarded as a client's would be);
//! 3. wait until every node's `/v1/cluster/health` shows the same `image_digest` and
//!    `applied_offset`, every topic, and no leaderless partition (convergence);
//! 4. send `--metadata-requests` full Metadata requests (all topics) to every node, one at a
//!    time, into an HDR histogram; check each response (every partition, a live leader, no
//!    error) and that all nodes name the same leaders; count leaders per node;
//! 5. sample the health endpoint, VmRSS/VmHWM of every process, and the size of
//!    `<data_dir>/__cluster_metadata`;
//! 6. restart one node (SIGTERM, start again; in the cluster one that is not the active
//!    controller) and time until its health reports the full image and it answers Metadata
//!    with every partition led;
//! 7. stop every node (SIGTERM) and time it.
//!
//! Then prints cluster and single-node figures side by side with ratios, and writes
//! `<dir>/metadata-bench.json`. Node logs stay in `<dir>/<cluster|single>/node-<id>.log`; data
//! directories are removed unless `--keep-data`.
//!
//! ```text
//! cargo build --release --bins && cargo build --release -p riptide-bench
//! target/release/metadata [--partitions 10000] [--partitions-per-topic 100]
//!     [--metadata-requests 200] [--quick] [--dir target/metadata-bench]
//! ```
//!
//! Every broker started here is stopped when the bench ends, also on error or panic (a drop
//! guard), and gets SIGTERM from the kernel if the bench itself dies (`PR_SET_PDEATHSIG`).

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    MetadataRequest, MetadataResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use riptide_bench::hist::{LatencyHistogram, LatencySummary};
use riptide_bench::kafka::{
    connect, encode_request, error_name, topic_name, ApiVersions, MAX_RESPONSE_FRAME_BYTES,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOPIC_PREFIX: &str = "mdbench-";
/// Metadata requests per node before the measured ones (connection, caches).
const METADATA_WARMUP: usize = 5;
/// Health samples per node at rest, after the Metadata phase.
const HEALTH_SAMPLES: usize = 20;
/// Idle window after the Metadata phase over which each broker's CPU use is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(60);
/// Retriable CreateTopics errors: retried after a pause, up to `CREATE_ATTEMPTS` times.
const RETRIABLE: &[i16] = &[5, 7, 41]; // LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT, NOT_CONTROLLER
const CREATE_ATTEMPTS: usize = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Metadata at scale: 3-voter cluster vs single-node broker (create, \
                   converge, Metadata latency, leader spread, RSS, metadata log, restart)"
)]
struct Args {
    /// Working directory: node data (removed at the end), node logs, the JSON result.
    #[arg(long, default_value = "target/metadata-bench")]
    dir: PathBuf,
    /// Partitions to create on each deployment.
    #[arg(long, default_value_t = 10_000)]
    partitions: usize,
    #[arg(long, default_value_t = 100)]
    partitions_per_topic: usize,
    /// Topics per CreateTopics request.
    #[arg(long, default_value_t = 10)]
    topics_per_request: usize,
    /// Full Metadata requests (all topics) per node.
    #[arg(long, default_value_t = 200)]
    metadata_requests: usize,
    /// 1,000 partitions instead of `--partitions`.
    #[arg(long)]
    quick: bool,
    /// Nodes of the cluster (all voters; the quorum allows 1..=7).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// `spread`: node i runs on CPU (i mod allowed CPUs), the single node on the first;
    /// `none`: inherit this process's CPU set (every `--cores 1` broker then pins its shard to
    /// the same, first CPU).
    #[arg(long, value_enum, default_value = "spread")]
    pin: Pin,
    /// Which deployments to run.
    #[arg(long, value_enum, default_value = "both")]
    only: Only,
    /// Broker binary [default: target/release/riptide of this workspace].
    #[arg(long, env = "RIPTIDE_BIN")]
    riptide_bin: Option<PathBuf>,
    /// Keep the node data directories.
    #[arg(long)]
    keep_data: bool,
    /// Limit of each wait (formation, convergence, restart), seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Pin {
    Spread,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Both,
    Cluster,
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Cluster,
    Single,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Single => "single",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Broker processes.

struct Node {
    id: i32,
    kafka: String,
    admin: String,
    args: Vec<String>,
    data_dir: PathBuf,
    log: PathBuf,
    cpu: Option<usize>,
    child: Option<Child>,
}

/// The brokers of one deployment. Dropping it stops every one still running.
struct Fleet {
    bin: PathBuf,
    nodes: Vec<Node>,
}

impl Fleet {
    fn start(&mut self, index: usize) -> Result<()> {
        let node = &mut self.nodes[index];
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        writeln!(
            log,
            "===== metadata bench: {} {}",
            self.bin.display(),
            node.args.join(" ")
        )?;
        let mut command = Command::new(&self.bin);
        command
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let cpu = node.cpu;
        // SAFETY: only async-signal-safe calls (prctl, sched_setaffinity) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(cpu) = cpu {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(|c| c.id())
    }

    /// Fails (with the end of its log) if a node that should run has exited.
    fn check_alive(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    node.child = None;
                    bail!(
                        "node {} exited ({status}); end of {}:\n{}",
                        node.id,
                        node.log.display(),
                        log_tail(&node.log, 15)
                    );
                }
            }
        }
        Ok(())
    }

    /// SIGTERM and wait; SIGKILL after `grace`. Returns the time to exit and whether it was
    /// killed.
    fn stop(&mut self, index: usize, grace: Duration) -> Result<(Duration, bool)> {
        let node = &mut self.nodes[index];
        let Some(mut child) = node.child.take() else {
            bail!("node {} is not running", node.id);
        };
        let started = Instant::now();
        signal(&child, libc::SIGTERM);
        loop {
            if child.try_wait()?.is_some() {
                return Ok((started.elapsed(), false));
            }
            if started.elapsed() > grace {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((started.elapsed(), true));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                signal(child, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if let Ok(None) = child.try_wait() {
                    eprintln!(
                        "metadata: node {} ignored SIGTERM for 30 s: SIGKILL",
                        node.id
                    );
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
        }
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Distinct local ports, all bound at once so none repeats, then released for the brokers.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity into a zeroed set of the right size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

fn build_fleet(kind: Kind, args: &Args, bin: &Path, base: &Path) -> Result<Fleet> {
    let count = match kind {
        Kind::Cluster => args.nodes,
        Kind::Single => 1,
    };
    let ports = free_ports(count * 3)?;
    let cpus = allowed_cpus();
    let address = |port: u16| format!("127.0.0.1:{port}");
    let voters = (0..count)
        .map(|i| format!("{}@{}", i + 1, address(ports[3 * i + 2])))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for i in 0..count {
        let (kafka, admin, controller) = (
            address(ports[3 * i]),
            address(ports[3 * i + 1]),
            address(ports[3 * i + 2]),
        );
        let id = match kind {
            Kind::Cluster => i as i32 + 1,
            Kind::Single => 0,
        };
        let data_dir = base.join(format!("node-{id}"));
        let mut node_args: Vec<String> = [
            "serve",
            "--listen",
            &kafka,
            "--admin-listen",
            &admin,
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--cores",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if kind == Kind::Cluster {
            for arg in [
                "--node-id",
                &id.to_string(),
                "--process-roles",
                "broker,controller",
                "--controller-quorum-voters",
                &voters,
                "--controller-listen",
                &controller,
            ] {
                node_args.push(arg.to_string());
            }
        }
        nodes.push(Node {
            id,
            kafka,
            admin,
            args: node_args,
            data_dir,
            log: base.join(format!("node-{id}.log")),
            cpu: (args.pin == Pin::Spread).then(|| cpus[i % cpus.len()]),
            child: None,
        });
    }
    Ok(Fleet {
        bin: bin.to_path_buf(),
        nodes,
    })
}

// ---------------------------------------------------------------------------------------------
// Kafka and HTTP clients.

/// One blocking Kafka connection that times each round trip.
struct Conn {
    stream: TcpStream,
    correlation_id: i32,
    versions: ApiVersions,
}

impl Conn {
    fn open(address: &str) -> Result<Conn> {
        let stream = connect(address, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let mut conn = Conn {
            stream,
            correlation_id: 0,
            versions: ApiVersions::default(),
        };
        let (response, _, _): (ApiVersionsResponse, _, _) =
            conn.request(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default())?;
        if response.error_code != 0 {
            bail!("ApiVersions: error {}", response.error_code);
        }
        for api in response.api_keys {
            conn.versions
                .0
                .insert(api.api_key, (api.min_version, api.max_version));
        }
        Ok(conn)
    }

    /// Sends a request and reads its response frame; the duration covers write to last byte.
    fn round_trip<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<(Bytes, Duration)> {
        self.correlation_id += 1;
        let frame = encode_request(key, version, self.correlation_id, body)?;
        let started = Instant::now();
        self.stream.write_all(&frame)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > MAX_RESPONSE_FRAME_BYTES {
            bail!("bad response frame size {size}");
        }
        let mut response = vec![0u8; size as usize];
        self.stream.read_exact(&mut response)?;
        let elapsed = started.elapsed();
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, key.response_header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!(
                "correlation id {} answers request {}",
                header.correlation_id,
                self.correlation_id
            );
        }
        Ok((response, elapsed))
    }

    /// Request, decoded response, round-trip time and response frame size.
    fn request<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<(Resp, Duration, usize)> {
        let (mut frame, elapsed) = self.round_trip(key, version, body)?;
        let size = frame.len();
        let response = Resp::decode(&mut frame, version)
            .with_context(|| format!("decoding {key:?} v{version}"))?;
        Ok((response, elapsed, size))
    }
}

/// `GET path` on an admin listener: parsed JSON body and the time it took.
fn http_get_json(address: &str, path: &str) -> Result<(Value, Duration)> {
    let started = Instant::now();
    let mut stream = connect(address, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let elapsed = started.elapsed();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head in the response of {address}{path}"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    if status != 200 {
        bail!("GET {address}{path}: HTTP {status}");
    }
    let body = serde_json::from_slice(&response[split + 4..])
        .with_context(|| format!("GET {address}{path}: body is not JSON"))?;
    Ok((body, elapsed))
}

/// The fields of `/v1/cluster/health` the bench reads.
#[derive(Debug, Clone)]
struct Health {
    active_controller: Option<i64>,
    is_active: bool,
    applied_offset: u64,
    commit_index: u64,
    snapshot_index: u64,
    digest: String,
    brokers: usize,
    fenced: usize,
    leaderless: usize,
    topics: u64,
    local_partitions: u64,
}

fn health(address: &str) -> Result<(Health, Duration)> {
    let (json, elapsed) = http_get_json(address, "/v1/cluster/health")?;
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let brokers = json["metadata"]["brokers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let health = Health {
        active_controller: json["controller"]["active_controller_id"].as_i64(),
        is_active: json["controller"]["is_active"].as_bool().unwrap_or(false),
        applied_offset: u(&json["metadata"]["applied_offset"]),
        commit_index: u(&json["controller"]["commit_index"]),
        snapshot_index: u(&json["controller"]["snapshot_index"]),
        digest: json["metadata"]["image_digest"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        brokers: brokers.len(),
        fenced: brokers
            .iter()
            .filter(|b| b["fenced"].as_bool().unwrap_or(true))
            .count(),
        leaderless: json["leaderless_partitions"]
            .as_array()
            .map_or(usize::MAX, |a| a.len()),
        topics: u(&json["topics"]),
        local_partitions: u(&json["partitions"]),
    };
    Ok((health, elapsed))
}

fn health_all(fleet: &Fleet, histogram: &mut LatencyHistogram) -> Result<Vec<Health>> {
    fleet
        .nodes
        .iter()
        .map(|node| {
            let (h, elapsed) = health(&node.admin)?;
            histogram.record_ns(elapsed.as_nanos() as u64);
            Ok(h)
        })
        .collect()
}

/// Every node applied the same image: all topics, no leaderless partition, every broker
/// unfenced, one digest and one applied offset.
fn converged(healths: &[Health], nodes: usize, topics: u64) -> bool {
    healths.iter().all(|h| {
        h.topics == topics
            && h.leaderless == 0
            && h.brokers == nodes
            && h.fenced == 0
            && h.digest == healths[0].digest
            && h.applied_offset == healths[0].applied_offset
    })
}

// ---------------------------------------------------------------------------------------------
// Figures.

#[derive(Debug, Default, Serialize)]
struct NodeFigures {
    node_id: i32,
    kafka: String,
    admin: String,
    cpu: Option<usize>,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// CPU seconds (user + system) from the first CreateTopics request to convergence.
    create_cpu_s: f64,
    /// CPU use with no client load at all (one core = 100%), over `IDLE_WINDOW`.
    idle_cpu_pct: f64,
    hwm_after_kib: u64,
    /// VmRSS of the restarted node once it served Metadata again (0 for the others).
    rss_after_restart_kib: u64,
    /// Partition logs this node's shards hold (health `partitions`).
    local_partitions: u64,
    partitions_led: usize,
    metadata: LatencySummary,
    metadata_response_bytes: usize,
    health: LatencySummary,
    /// Apparent bytes, allocated bytes and files of `<data_dir>/__cluster_metadata`, after
    /// convergence and at the end (after the restart).
    metadata_log_bytes: u64,
    metadata_log_allocated_bytes: u64,
    metadata_log_files: u64,
    metadata_log_bytes_end: u64,
    data_dir_allocated_bytes: u64,
    snapshot_index: u64,
    commit_index: u64,
    shutdown_s: f64,
    shutdown_killed: bool,
    log_warnings: usize,
    log_errors: usize,
    log_samples: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct CreateFigures {
    via_node: i32,
    topics: usize,
    partitions: usize,
    requests: usize,
    total_s: f64,
    partitions_per_s: f64,
    request: LatencySummary,
    /// Every CreateTopics round trip in order (retries included), ms.
    request_ms: Vec<f64>,
    /// Topic results that were retried, by error name.
    retried: BTreeMap<String, usize>,
    /// TOPIC_ALREADY_EXISTS on a retry (an earlier attempt created it after all).
    existed_on_retry: usize,
}

#[derive(Debug, Default, Serialize)]
struct ConvergeFigures {
    /// From the last CreateTopics response.
    after_create_s: f64,
    /// From the first CreateTopics request.
    since_create_start_s: f64,
    polls: usize,
    /// Largest spread of applied offsets over the nodes seen while waiting.
    max_applied_offset_spread: u64,
    applied_offset: u64,
    image_digest: String,
    /// Image size in bytes (the digest's suffix: the serialised image).
    image_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
struct RestartFigures {
    node_id: i32,
    was_active_controller: bool,
    shutdown_s: f64,
    shutdown_killed: bool,
    /// From the start of the new process.
    health_up_s: f64,
    full_image_s: f64,
    metadata_ok_s: f64,
    /// Metadata request time of that first full check.
    first_metadata_ms: f64,
}

#[derive(Debug, Default, Serialize)]
struct Figures {
    kind: Option<Kind>,
    nodes: Vec<NodeFigures>,
    active_controller: Option<i64>,
    formed_s: f64,
    metadata_version: i16,
    create_version: i16,
    create: CreateFigures,
    converge: ConvergeFigures,
    /// All nodes' Metadata requests in one histogram.
    metadata_all: LatencySummary,
    /// Partition leaders per node id (bench topics).
    leader_spread: BTreeMap<i32, usize>,
    /// Largest leader count over the mean (1.0 = perfectly even).
    leader_imbalance: f64,
    /// Topics whose own partitions' leaders differ by more than one between nodes.
    uneven_topics: usize,
    leaders_agree: bool,
    restart: RestartFigures,
    /// Things that looked wrong, in words.
    anomalies: Vec<String>,
    /// Removed at the end of the whole run, not between deployments (see `remove_data`).
    #[serde(skip)]
    data_dirs: Vec<PathBuf>,
}

/// User + system CPU seconds of a process so far (/proc/<pid>/stat).
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields 14 and 15 (utime, stime), counted from 3 (state) after the command name.
    (ticks(11) + ticks(12)) as f64 / hz
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

/// (apparent bytes, allocated bytes, files) under `path`.
fn disk_usage(path: &Path) -> (u64, u64, u64) {
    let mut total = (0, 0, 0);
    let Ok(entries) = std::fs::read_dir(path) else {
        return total;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (a, b, c) = disk_usage(&entry.path());
            total = (total.0 + a, total.1 + b + meta.blocks() * 512, total.2 + c);
        } else {
            total = (
                total.0 + meta.len(),
                total.1 + meta.blocks() * 512,
                total.2 + 1,
            );
        }
    }
    total
}

/// WARN and ERROR lines of a node log: counts and a few distinct messages (timestamps cut).
fn scan_log(path: &Path) -> (usize, usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut warnings, mut errors) = (0, 0);
    let mut samples: Vec<String> = Vec::new();
    for line in text.lines() {
        let level = if line.contains(" WARN ") {
            warnings += 1;
            "WARN"
        } else if line.contains(" ERROR ") {
            errors += 1;
            "ERROR"
        } else {
            continue;
        };
        let message = line.split_once(level).map_or(line, |(_, rest)| rest).trim();
        // Group by the message without the fields that vary (dir=…, offset=…).
        let key: String = message.chars().take(90).collect();
        if samples.len() < 8 && !samples.iter().any(|s| s.contains(&key)) {
            samples.push(format!(
                "{level} {}",
                message.chars().take(300).collect::<String>()
            ));
        }
    }
    (warnings, errors, samples)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// One deployment.

fn wait_until<T>(
    what: &str,
    timeout: Duration,
    fleet: &mut Fleet,
    mut probe: impl FnMut(&mut Fleet) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        fleet.check_alive()?;
        if let Some(value) = probe(fleet) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", timeout.as_secs());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn topic_names(args: &Args) -> Vec<String> {
    let topics = args.partitions.div_ceil(args.partitions_per_topic);
    (0..topics)
        .map(|i| format!("{TOPIC_PREFIX}{i:05}"))
        .collect()
}

fn partitions_of(args: &Args, topic_index: usize) -> usize {
    let topics = args.partitions.div_ceil(args.partitions_per_topic);
    if topic_index + 1 < topics {
        args.partitions_per_topic
    } else {
        args.partitions - args.partitions_per_topic * (topics - 1)
    }
}

/// Creates every topic through `conn`, retrying retriable per-topic errors.
fn create_all(
    args: &Args,
    conn: &mut Conn,
    version: i16,
    figures: &mut CreateFigures,
) -> Result<()> {
    let names = topic_names(args);
    let mut histogram = LatencyHistogram::new();
    let started = Instant::now();
    let batches: Vec<Vec<usize>> = (0..names.len())
        .collect::<Vec<_>>()
        .chunks(args.topics_per_request.max(1))
        .map(|c| c.to_vec())
        .collect();
    for batch in batches {
        let mut pending = batch;
        for attempt in 1..=CREATE_ATTEMPTS {
            let request = CreateTopicsRequest::default()
                .with_topics(
                    pending
                        .iter()
                        .map(|&i| {
                            CreatableTopic::default()
                                .with_name(topic_name(&names[i]))
                                .with_num_partitions(partitions_of(args, i) as i32)
                                .with_replication_factor(-1)
                        })
                        .collect(),
                )
                .with_timeout_ms(60_000);
            let (response, elapsed, _): (CreateTopicsResponse, _, _) = conn
                .request(ApiKey::CreateTopics, version, &request)
                .context("CreateTopics")?;
            histogram.record_ns(elapsed.as_nanos() as u64);
            figures.request_ms.push(elapsed.as_secs_f64() * 1e3);
            figures.requests += 1;
            let mut retry = Vec::new();
            for &i in &pending {
                let result = response
                    .topics
                    .iter()
                    .find(|t| t.name.0.as_str() == names[i])
                    .ok_or_else(|| anyhow!("CreateTopics response lacks {}", names[i]))?;
                match result.error_code {
                    0 => {}
                    TOPIC_ALREADY_EXISTS if attempt > 1 => figures.existed_on_retry += 1,
                    code if RETRIABLE.contains(&code) && attempt < CREATE_ATTEMPTS => {
                        *figures
                            .retried
                            .entry(error_name(code).to_string())
                            .or_default() += 1;
                        retry.push(i);
                    }
                    code => bail!(
                        "CreateTopics {}: error {code} ({}) {}",
                        names[i],
                        error_name(code),
                        result.error_message.as_ref().map_or("", |m| m.as_str())
                    ),
                }
            }
            if retry.is_empty() {
                break;
            }
            pending = retry;
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let total = started.elapsed();
    figures.topics = names.len();
    figures.partitions = args.partitions;
    figures.total_s = secs(total);
    figures.partitions_per_s = args.partitions as f64 / secs(total);
    figures.request = histogram.summary();
    Ok(())
}

/// Checks a full Metadata response: every bench topic and partition, a live leader each, no
/// error. Returns `(topic, partition, leader)` of the bench topics, sorted.
fn check_metadata(args: &Args, response: &MetadataResponse) -> Result<Vec<(String, i32, i32)>> {
    let live: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
    let mut leaders = Vec::with_capacity(args.partitions);
    let mut topics = 0;
    for topic in &response.topics {
        let Some(name) = topic.name.as_ref().map(|n| n.0.as_str()) else {
            continue;
        };
        if !name.starts_with(TOPIC_PREFIX) {
            continue;
        }
        topics += 1;
        if topic.error_code != 0 {
            bail!(
                "Metadata: topic {name} error {}",
                error_name(topic.error_code)
            );
        }
        for p in &topic.partitions {
            if p.error_code != 0 || !live.contains(&p.leader_id.0) {
                bail!(
                    "Metadata: {name}-{} leader {} error {} ({})",
                    p.partition_index,
                    p.leader_id.0,
                    p.error_code,
                    error_name(p.error_code)
                );
            }
            leaders.push((name.to_string(), p.partition_index, p.leader_id.0));
        }
    }
    let expected_topics = topic_names(args).len();
    if topics != expected_topics || leaders.len() != args.partitions {
        bail!(
            "Metadata: {topics} of {expected_topics} topics, {} of {} partitions",
            leaders.len(),
            args.partitions
        );
    }
    leaders.sort_unstable();
    Ok(leaders)
}

fn full_metadata_request() -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(None)
        .with_allow_auto_topic_creation(false)
        .with_include_topic_authorized_operations(false)
}

fn run_deployment(kind: Kind, args: &Args, bin: &Path) -> Result<Figures> {
    let base = args.dir.join(kind.name());
    if base.exists() {
        std::fs::remove_dir_all(&base).with_context(|| format!("removing {}", base.display()))?;
    }
    std::fs::create_dir_all(&base)?;
    let mut fleet = build_fleet(kind, args, bin, &base)?;
    let node_count = fleet.nodes.len();
    let timeout = Duration::from_secs(args.timeout_s);
    let mut figures = Figures {
        kind: Some(kind),
        ..Default::default()
    };
    let mut anomalies = Vec::new();
    eprintln!(
        "== {}: {node_count} node(s), logs in {}",
        kind.name(),
        base.display()
    );

    // 1. Start and form.
    let started = Instant::now();
    for i in 0..node_count {
        fleet.start(i)?;
    }
    let mut scratch = LatencyHistogram::new();
    let formed = wait_until("cluster formation", timeout, &mut fleet, |fleet| {
        let healths = health_all(fleet, &mut scratch).ok()?;
        let leader = healths[0].active_controller?;
        let agreed = healths.iter().all(|h| {
            h.active_controller == Some(leader) && h.brokers == node_count && h.fenced == 0
        });
        let kafka_up = fleet.nodes.iter().all(|n| Conn::open(&n.kafka).is_ok());
        (agreed && kafka_up).then_some(healths)
    })?;
    figures.formed_s = secs(started.elapsed());
    figures.active_controller = formed[0].active_controller;
    let base_topics = formed[0].topics;
    let expected_topics = base_topics + topic_names(args).len() as u64;
    eprintln!(
        "   formed in {:.2} s, active controller {:?}",
        figures.formed_s, figures.active_controller
    );
    for (i, node) in fleet.nodes.iter().enumerate() {
        let pid = fleet.pid(i).unwrap_or(0);
        figures.nodes.push(NodeFigures {
            node_id: node.id,
            kafka: node.kafka.clone(),
            admin: node.admin.clone(),
            cpu: node.cpu,
            rss_before_kib: proc_status_kib(pid, "VmRSS"),
            ..Default::default()
        });
    }

    // 2. Create, through a node that is not the active controller where there is one.
    let create_index = formed.iter().position(|h| !h.is_active).unwrap_or(0);
    let mut conn = Conn::open(&fleet.nodes[create_index].kafka)?;
    let create_version = conn.versions.pick(ApiKey::CreateTopics, 2, 7)?;
    figures.create_version = create_version;
    figures.create.via_node = fleet.nodes[create_index].id;
    eprintln!(
        "   creating {} partitions ({} topics, {} per request) via node {}",
        args.partitions,
        topic_names(args).len(),
        args.topics_per_request,
        figures.create.via_node
    );
    let cpu_before: Vec<f64> = (0..node_count)
        .map(|i| proc_cpu_s(fleet.pid(i).unwrap_or(0)))
        .collect();
    let create_started = Instant::now();
    create_all(args, &mut conn, create_version, &mut figures.create)?;
    let create_done = Instant::now();
    drop(conn);
    eprintln!(
        "   created in {:.2} s ({:.0} partitions/s; request p50 {:.1} ms max {:.1} ms)",
        figures.create.total_s,
        figures.create.partitions_per_s,
        figures.create.request.p50_ms,
        figures.create.request.max_ms
    );
    if !figures.create.retried.is_empty() {
        anomalies.push(format!(
            "CreateTopics: retried topic results {:?}, {} already existed on retry",
            figures.create.retried, figures.create.existed_on_retry
        ));
    }

    // 3. Converge.
    let mut polls = 0;
    let mut spread = 0u64;
    let mut health_during = LatencyHistogram::new();
    let final_healths = wait_until("convergence", timeout, &mut fleet, |fleet| {
        polls += 1;
        let healths = health_all(fleet, &mut health_during).ok()?;
        let max = healths.iter().map(|h| h.applied_offset).max().unwrap_or(0);
        let min = healths.iter().map(|h| h.applied_offset).min().unwrap_or(0);
        spread = spread.max(max - min);
        converged(&healths, node_count, expected_topics).then_some(healths)
    })?;
    let converged_at = Instant::now();
    figures.converge = ConvergeFigures {
        after_create_s: secs(converged_at - create_done),
        since_create_start_s: secs(converged_at - create_started),
        polls,
        max_applied_offset_spread: spread,
        applied_offset: final_healths[0].applied_offset,
        image_digest: final_healths[0].digest.clone(),
        image_bytes: final_healths[0]
            .digest
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    };
    eprintln!(
        "   converged {:.2} s after the last create (applied offset {}, image {} bytes)",
        figures.converge.after_create_s,
        figures.converge.applied_offset,
        figures.converge.image_bytes
    );
    for (i, (node, h)) in figures.nodes.iter_mut().zip(&final_healths).enumerate() {
        node.create_cpu_s = proc_cpu_s(fleet.pid(i).unwrap_or(0)) - cpu_before[i];
        node.local_partitions = h.local_partitions;
        node.snapshot_index = h.snapshot_index;
        node.commit_index = h.commit_index;
    }
    let local_total: u64 = final_healths.iter().map(|h| h.local_partitions).sum();
    if local_total != args.partitions as u64 {
        anomalies.push(format!(
            "partition logs held over all nodes: {local_total}, expected {}",
            args.partitions
        ));
    }

    // 4. Metadata latency, validation, leader spread.
    let mut all = LatencyHistogram::new();
    let mut reference: Option<Vec<(String, i32, i32)>> = None;
    figures.leaders_agree = true;
    for (i, node) in fleet.nodes.iter().enumerate() {
        let mut conn = Conn::open(&node.kafka)?;
        let version = conn.versions.pick(ApiKey::Metadata, 1, 12)?;
        figures.metadata_version = version;
        let request = full_metadata_request();
        let mut histogram = LatencyHistogram::new();
        let mut bytes = 0;
        for n in 0..METADATA_WARMUP + args.metadata_requests {
            let (response, elapsed, size): (MetadataResponse, _, _) = conn
                .request(ApiKey::Metadata, version, &request)
                .with_context(|| format!("Metadata from node {}", node.id))?;
            let leaders =
                check_metadata(args, &response).with_context(|| format!("node {}", node.id))?;
            bytes = size;
            if n < METADATA_WARMUP {
                if n == 0 {
                    match &reference {
                        None => reference = Some(leaders),
                        Some(first) if *first != leaders => {
                            figures.leaders_agree = false;
                            anomalies.push(format!(
                                "node {} names other partition leaders than node {}",
                                node.id, fleet.nodes[0].id
                            ));
                        }
                        Some(_) => {}
                    }
                }
                continue;
            }
            histogram.record_ns(elapsed.as_nanos() as u64);
        }
        all.add(&histogram);
        let summary = histogram.summary();
        eprintln!(
            "   node {}: Metadata {} bytes p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            node.id, bytes, summary.p50_ms, summary.p99_ms, summary.max_ms
        );
        figures.nodes[i].metadata = summary;
        figures.nodes[i].metadata_response_bytes = bytes;
    }
    figures.metadata_all = all.summary();
    let leaders = reference.unwrap_or_default();
    let mut per_topic: BTreeMap<&str, BTreeMap<i32, usize>> = BTreeMap::new();
    for (topic, _, leader) in &leaders {
        *figures.leader_spread.entry(*leader).or_default() += 1;
        *per_topic
            .entry(topic.as_str())
            .or_default()
            .entry(*leader)
            .or_default() += 1;
    }
    for node in &fleet.nodes {
        figures.leader_spread.entry(node.id).or_default();
    }
    for (node, figures_node) in fleet.nodes.iter().zip(figures.nodes.iter_mut()) {
        figures_node.partitions_led = figures.leader_spread[&node.id];
    }
    let mean = args.partitions as f64 / node_count as f64;
    let max = figures.leader_spread.values().copied().max().unwrap_or(0);
    figures.leader_imbalance = max as f64 / mean;
    figures.uneven_topics = per_topic
        .values()
        .filter(|counts| {
            let least = if counts.len() < node_count.min(args.partitions_per_topic) {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            counts.values().copied().max().unwrap_or(0) > least + 1
        })
        .count();
    if figures.leader_imbalance > 1.05 {
        anomalies.push(format!(
            "leaders unbalanced: {:?} (max {:.2}x the mean)",
            figures.leader_spread, figures.leader_imbalance
        ));
    }
    if figures.uneven_topics > 0 {
        anomalies.push(format!(
            "{} topics have their partitions' leaders spread unevenly (by more than one)",
            figures.uneven_topics
        ));
    }
    for (node, h) in fleet.nodes.iter().zip(&final_healths) {
        let led = figures.leader_spread[&node.id] as u64;
        if h.local_partitions != led {
            anomalies.push(format!(
                "node {} holds {} partition logs but leads {led} partitions",
                node.id, h.local_partitions
            ));
        }
    }

    // 5. Health at rest, memory, metadata log size.
    for (i, node) in fleet.nodes.iter().enumerate() {
        let mut histogram = LatencyHistogram::new();
        for _ in 0..HEALTH_SAMPLES {
            let (_, elapsed) = health(&node.admin)?;
            histogram.record_ns(elapsed.as_nanos() as u64);
        }
        let pid = fleet.pid(i).unwrap_or(0);
        let f = &mut figures.nodes[i];
        f.health = histogram.summary();
        f.rss_after_kib = proc_status_kib(pid, "VmRSS");
        f.hwm_after_kib = proc_status_kib(pid, "VmHWM");
        let (bytes, allocated, files) = disk_usage(&node.data_dir.join("__cluster_metadata"));
        f.metadata_log_bytes = bytes;
        f.metadata_log_allocated_bytes = allocated;
        f.metadata_log_files = files;
        f.data_dir_allocated_bytes = disk_usage(&node.data_dir).1;
    }

    let idle_before: Vec<f64> = (0..node_count)
        .map(|i| proc_cpu_s(fleet.pid(i).unwrap_or(0)))
        .collect();
    let idle_started = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let idle_elapsed = secs(idle_started.elapsed());
    for (i, cpu_before_s) in idle_before.iter().enumerate() {
        figures.nodes[i].idle_cpu_pct =
            (proc_cpu_s(fleet.pid(i).unwrap_or(0)) - cpu_before_s) / idle_elapsed * 100.0;
    }

    // 6. Restart one node: in the cluster the last that is not the active controller.
    let restart_index = match kind {
        Kind::Single => 0,
        Kind::Cluster => {
            let healths = health_all(&fleet, &mut scratch)?;
            (0..node_count)
                .rev()
                .find(|&i| !healths[i].is_active)
                .unwrap_or(node_count - 1)
        }
    };
    {
        let healths = health_all(&fleet, &mut scratch)?;
        figures.restart.was_active_controller = healths[restart_index].is_active;
    }
    figures.restart.node_id = fleet.nodes[restart_index].id;
    let (shutdown, killed) = fleet.stop(restart_index, STOP_GRACE)?;
    figures.restart.shutdown_s = secs(shutdown);
    figures.restart.shutdown_killed = killed;
    let restart_started = Instant::now();
    fleet.start(restart_index)?;
    let admin = fleet.nodes[restart_index].admin.clone();
    wait_until(
        "restarted node's health endpoint",
        timeout,
        &mut fleet,
        |_| health(&admin).ok(),
    )?;
    figures.restart.health_up_s = secs(restart_started.elapsed());
    wait_until(
        "restarted node's full image",
        timeout,
        &mut fleet,
        |fleet| {
            let healths = health_all(fleet, &mut scratch).ok()?;
            converged(&healths, node_count, expected_topics).then_some(())
        },
    )?;
    figures.restart.full_image_s = secs(restart_started.elapsed());
    let kafka = fleet.nodes[restart_index].kafka.clone();
    let first_metadata = wait_until("restarted node's Metadata", timeout, &mut fleet, |_| {
        let mut conn = Conn::open(&kafka).ok()?;
        let version = conn.versions.pick(ApiKey::Metadata, 1, 12).ok()?;
        let (response, elapsed, _): (MetadataResponse, _, _) = conn
            .request(ApiKey::Metadata, version, &full_metadata_request())
            .ok()?;
        check_metadata(args, &response).ok().map(|_| elapsed)
    })?;
    figures.restart.metadata_ok_s = secs(restart_started.elapsed());
    figures.restart.first_metadata_ms = first_metadata.as_secs_f64() * 1e3;
    figures.nodes[restart_index].rss_after_restart_kib =
        proc_status_kib(fleet.pid(restart_index).unwrap_or(0), "VmRSS");
    eprintln!(
        "   restart of node {}: shutdown {:.2} s, health up {:.2} s, full image {:.2} s, \
         Metadata ok {:.2} s",
        figures.restart.node_id,
        figures.restart.shutdown_s,
        figures.restart.health_up_s,
        figures.restart.full_image_s,
        figures.restart.metadata_ok_s
    );
    if killed {
        anomalies.push(format!(
            "node {} needed SIGKILL after {} s of SIGTERM",
            figures.restart.node_id,
            STOP_GRACE.as_secs()
        ));
    }

    // 7. Stop every node.
    for i in 0..node_count {
        let (elapsed, killed) = fleet.stop(i, STOP_GRACE)?;
        let node = &fleet.nodes[i];
        let f = &mut figures.nodes[i];
        f.shutdown_s = secs(elapsed);
        f.shutdown_killed = killed;
        f.metadata_log_bytes_end = disk_usage(&node.data_dir.join("__cluster_metadata")).0;
        let (warnings, errors, samples) = scan_log(&node.log);
        f.log_warnings = warnings;
        f.log_errors = errors;
        f.log_samples = samples;
        if warnings + errors > 0 {
            anomalies.push(format!(
                "node {}: {warnings} WARN and {errors} ERROR log lines, e.g. {:?}",
                node.id,
                f.log_samples.first().map_or("", |s| s.as_str())
            ));
        }
    }
    figures.data_dirs = fleet.nodes.iter().map(|n| n.data_dir.clone()).collect();
    figures.anomalies = anomalies;
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// Report.

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_table(cluster: Option<&Figures>, single: Option<&Figures>) {
    let empty = Figures::default();
    let c = cluster.unwrap_or(&empty);
    let s = single.unwrap_or(&empty);
    let max_of = |f: &Figures, get: &dyn Fn(&NodeFigures) -> f64| {
        f.nodes.iter().map(get).fold(0.0, f64::max)
    };
    type Row = (String, f64, f64, &'static str);
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |name: &str, cv: f64, sv: f64, unit: &'static str| {
        rows.push((name.to_string(), cv, sv, unit))
    };
    row("create: total", c.create.total_s, s.create.total_s, "s");
    row(
        "create: partitions/s",
        c.create.partitions_per_s,
        s.create.partitions_per_s,
        "/s",
    );
    row(
        "create: request p50",
        c.create.request.p50_ms,
        s.create.request.p50_ms,
        "ms",
    );
    row(
        "create: request max",
        c.create.request.max_ms,
        s.create.request.max_ms,
        "ms",
    );
    row(
        "create: broker CPU, sum of nodes",
        c.nodes.iter().map(|n| n.create_cpu_s).sum(),
        s.nodes.iter().map(|n| n.create_cpu_s).sum(),
        "s",
    );
    row(
        "idle CPU, sum of nodes",
        c.nodes.iter().map(|n| n.idle_cpu_pct).sum(),
        s.nodes.iter().map(|n| n.idle_cpu_pct).sum(),
        "%",
    );
    row(
        "converged after last create",
        c.converge.after_create_s,
        s.converge.after_create_s,
        "s",
    );
    row(
        "metadata image (serialised)",
        c.converge.image_bytes as f64 / 1e6,
        s.converge.image_bytes as f64 / 1e6,
        "MB",
    );
    row(
        "Metadata response",
        max_of(c, &|n| n.metadata_response_bytes as f64) / 1e6,
        max_of(s, &|n| n.metadata_response_bytes as f64) / 1e6,
        "MB",
    );
    row(
        "Metadata p50 (all nodes)",
        c.metadata_all.p50_ms,
        s.metadata_all.p50_ms,
        "ms",
    );
    row(
        "Metadata p99 (all nodes)",
        c.metadata_all.p99_ms,
        s.metadata_all.p99_ms,
        "ms",
    );
    row(
        "Metadata max (all nodes)",
        c.metadata_all.max_ms,
        s.metadata_all.max_ms,
        "ms",
    );
    row(
        "health endpoint p50 (max node)",
        max_of(c, &|n| n.health.p50_ms),
        max_of(s, &|n| n.health.p50_ms),
        "ms",
    );
    row(
        "leader imbalance (max/mean)",
        c.leader_imbalance,
        s.leader_imbalance,
        "x",
    );
    row(
        "RSS before (max node)",
        max_of(c, &|n| mib(n.rss_before_kib)),
        max_of(s, &|n| mib(n.rss_before_kib)),
        "MiB",
    );
    row(
        "RSS after (max node)",
        max_of(c, &|n| mib(n.rss_after_kib)),
        max_of(s, &|n| mib(n.rss_after_kib)),
        "MiB",
    );
    row(
        "RSS after, sum of nodes",
        c.nodes.iter().map(|n| mib(n.rss_after_kib)).sum(),
        s.nodes.iter().map(|n| mib(n.rss_after_kib)).sum(),
        "MiB",
    );
    row(
        "RSS of restarted node",
        max_of(c, &|n| mib(n.rss_after_restart_kib)),
        max_of(s, &|n| mib(n.rss_after_restart_kib)),
        "MiB",
    );
    row(
        "__cluster_metadata (max node)",
        max_of(c, &|n| n.metadata_log_bytes as f64) / 1e6,
        max_of(s, &|n| n.metadata_log_bytes as f64) / 1e6,
        "MB",
    );
    row(
        "restart: shutdown",
        c.restart.shutdown_s,
        s.restart.shutdown_s,
        "s",
    );
    row(
        "restart: full image",
        c.restart.full_image_s,
        s.restart.full_image_s,
        "s",
    );
    row(
        "restart: Metadata ok",
        c.restart.metadata_ok_s,
        s.restart.metadata_ok_s,
        "s",
    );
    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>9}",
        "metric",
        format!("cluster({})", c.nodes.len()),
        "single",
        "ratio"
    );
    println!("{}", "-".repeat(68));
    for (name, cv, sv, unit) in rows {
        let ratio = if sv > 0.0 && cv > 0.0 {
            format!("{:.2}x", cv / sv)
        } else {
            "-".to_string()
        };
        let fmt = |v: f64| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        println!(
            "{:<32} {:>12} {:>12} {:>9}",
            format!("{name} [{unit}]"),
            fmt(cv),
            fmt(sv),
            ratio
        );
    }
    for f in [cluster, single].into_iter().flatten() {
        println!();
        println!(
            "{}: active controller {:?}, created via node {}, CreateTopics v{}, Metadata v{}, \
             restarted node {}{}",
            f.kind.map_or("?", |k| k.name()),
            f.active_controller,
            f.create.via_node,
            f.create_version,
            f.metadata_version,
            f.restart.node_id,
            if f.restart.was_active_controller {
                " (active controller)"
            } else {
                ""
            }
        );
        println!(
            "  {:>4} {:>4} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
            "node",
            "cpu",
            "leaders",
            "md p50",
            "md p99",
            "md max",
            "rss0 MiB",
            "rss MiB",
            "hwm MiB",
            "mdlog MB",
            "warn"
        );
        for n in &f.nodes {
            println!(
                "  {:>4} {:>4} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>9.2} {:>7}",
                n.node_id,
                n.cpu.map_or("-".to_string(), |c| c.to_string()),
                n.partitions_led,
                n.metadata.p50_ms,
                n.metadata.p99_ms,
                n.metadata.max_ms,
                mib(n.rss_before_kib),
                mib(n.rss_after_kib),
                mib(n.hwm_after_kib),
                n.metadata_log_bytes as f64 / 1e6,
                n.log_warnings + n.log_errors
            );
        }
        for anomaly in &f.anomalies {
            println!("  ! {anomaly}");
        }
    }
}

/// Removes the node data directories once every deployment is done, then syncs. Not between
/// deployments: ext4 does not reuse recently deleted inodes while their inode table blocks are
/// dirty, and each inode allocation then scans past them (`find_inode_bit` ->
/// `recently_deleted`), which made the second deployment's partition creation several times
/// slower right after the first one's 10,000 directories were removed.
fn remove_data<'a>(deployments: impl Iterator<Item = &'a Figures>) {
    for figures in deployments {
        for dir in &figures.data_dirs {
            if let Err(error) = std::fs::remove_dir_all(dir) {
                eprintln!("metadata: cannot remove {}: {error}", dir.display());
            }
        }
    }
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
}

fn run(mut args: Args) -> Result<()> {
    if args.quick {
        args.partitions = 1000;
    }
    if args.partitions == 0 || args.partitions_per_topic == 0 {
        bail!("--partitions and --partitions-per-topic must be positive");
    }
    if !(1..=7).contains(&args.nodes) {
        bail!("--nodes must be 1..=7 (all are voters)");
    }
    let bin = args
        .riptide_bin
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/riptide"));
    if !bin.is_file() {
        bail!(
            "{} not found: cargo build --release --bins (or --riptide-bin)",
            bin.display()
        );
    }
    std::fs::create_dir_all(&args.dir)?;
    // A private copy: a concurrent cargo build may replace the binary between deployments.
    let source = bin.canonicalize().unwrap_or(bin.clone());
    let source_meta = std::fs::metadata(&source)?;
    let built = source_meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let bin = args.dir.join("riptide-under-test");
    std::fs::copy(&source, &bin)
        .with_context(|| format!("copying {} to {}", source.display(), bin.display()))?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut cluster = None;
    let mut single = None;
    if args.only != Only::Single {
        cluster = Some(run_deployment(Kind::Cluster, &args, &bin).context("cluster")?);
    }
    if args.only != Only::Cluster {
        single = Some(run_deployment(Kind::Single, &args, &bin).context("single node")?);
    }
    if !args.keep_data {
        remove_data(cluster.iter().chain(single.iter()));
    }
    print_table(cluster.as_ref(), single.as_ref());
    let ratio = |c: f64, s: f64| if s > 0.0 { c / s } else { 0.0 };
    let ratios = match (&cluster, &single) {
        (Some(c), Some(s)) => serde_json::json!({
            "create_total": ratio(c.create.total_s, s.create.total_s),
            "partitions_per_s": ratio(c.create.partitions_per_s, s.create.partitions_per_s),
            "metadata_p50": ratio(c.metadata_all.p50_ms, s.metadata_all.p50_ms),
            "metadata_p99": ratio(c.metadata_all.p99_ms, s.metadata_all.p99_ms),
            "metadata_max": ratio(c.metadata_all.max_ms, s.metadata_all.max_ms),
            "restart_full_image": ratio(c.restart.full_image_s, s.restart.full_image_s),
        }),
        _ => Value::Null,
    };
    let document = serde_json::json!({
        "bench": "metadata",
        "schema_version": 1,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "git_revision": riptide_bench::host::git_revision(),
        "host": riptide_bench::host::host_facts(),
        "broker_binary": source,
        "broker_binary_mtime_unix_s": built,
        "broker_binary_bytes": source_meta.len(),
        "loadavg_before": load_before.trim(),
        "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "parameters": {
            "partitions": args.partitions,
            "partitions_per_topic": args.partitions_per_topic,
            "topics_per_request": args.topics_per_request,
            "metadata_requests": args.metadata_requests,
            "nodes": args.nodes,
            "pin": args.pin,
        },
        "cluster": cluster,
        "single": single,
        "ratios_cluster_over_single": ratios,
    });
    let path = args.dir.join("metadata-bench.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&document)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nJSON: {}", path.display());
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(error) = run(args) {
        eprintln!("metadata: {error:#}");
        std::process::exit(1);
    }
}
