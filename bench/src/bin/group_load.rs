//! `group_load`: consumer-group coordinator load (issue 5, item 7).
//!
//! Runs G classic groups of M members each (real JoinGroup with KIP-394, SyncGroup, Heartbeat)
//! and has every member commit its partition's offset every `--commit-interval-ms`, spread evenly
//! over the interval. Members share `--connections` pipelined connections; Kafka answers in
//! request order, so each connection has one writer thread and one reader thread matching
//! responses to a FIFO of sends. Commit latency is measured from the *intended* send time (a
//! lagging sender cannot hide broker delay) into an HdrHistogram. With `--broker-pid`, the
//! broker's CPU time (whole process and its `shard-*` threads) over the measured window is read
//! from /proc.
//!
//! Example (broker on one core):
//!   riptide serve --cores 1 --group-initial-rebalance-delay-ms 1000 ...
//!   group_load --bootstrap 127.0.0.1:9092 --groups 1000 --members 2 --broker-pid <pid>

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ResponseHeader, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use riptide_bench::kafka::{connect, encode_request, topic_name, AdminClient};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const JOIN_VERSION: i16 = 5;
const SYNC_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const COMMIT_VERSION: i16 = 7;
const FETCH_VERSION: i16 = 5;

#[derive(Parser, Debug, Clone)]
#[command(about = "Consumer-group coordinator load: G groups x M members committing offsets")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value_t = 1000)]
    groups: usize,
    #[arg(long, default_value_t = 2)]
    members: usize,
    /// Each member commits once per interval.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
    #[arg(long, default_value_t = 3000)]
    heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = 30000)]
    session_timeout_ms: i32,
    /// Load before measuring starts.
    #[arg(long, default_value_t = 5)]
    warmup_s: u64,
    /// Measured window.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value = "group-load")]
    topic: String,
    /// Broker process id, to report its CPU time over the measured window.
    #[arg(long)]
    broker_pid: Option<u32>,
}

struct Member {
    group: String,
    index: usize,
    member_id: String,
    generation: i32,
    leader: bool,
    peers: Vec<String>,
    offset: i64,
}

fn frame_read(reader: &mut impl Read) -> Result<Bytes> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if !(4..=64 * 1024 * 1024).contains(&size) {
        bail!("bad frame size {size}");
    }
    let mut frame = vec![0u8; size as usize];
    reader.read_exact(&mut frame)?;
    Ok(Bytes::from(frame))
}

fn decode<T: Decodable>(mut frame: Bytes, key: ApiKey, version: i16) -> Result<T> {
    ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
    T::decode(&mut frame, version).with_context(|| format!("decoding {key:?}"))
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn subscription(topic: &str) -> Bytes {
    // ConsumerProtocolSubscription v0: topics [topic], null user data.
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

fn assignment(topic: &str, partition: i32) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

fn join_request(args: &Args, member: &Member) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(str_bytes(&member.group)))
        .with_session_timeout_ms(args.session_timeout_ms)
        .with_rebalance_timeout_ms(60_000)
        .with_member_id(str_bytes(&member.member_id))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(str_bytes("range"))
            .with_metadata(subscription(&args.topic))])
}

/// Sends one request per member, then reads the answers in order.
fn round<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    correlation: &mut i32,
    key: ApiKey,
    version: i16,
    requests: Vec<Req>,
) -> Result<Vec<Resp>> {
    let count = requests.len();
    let mut out = Vec::new();
    for request in requests {
        *correlation += 1;
        out.extend_from_slice(&encode_request(key, version, *correlation, &request)?);
    }
    stream.write_all(&out)?;
    (0..count)
        .map(|_| decode(frame_read(reader)?, key, version))
        .collect()
}

/// Joins every member of this connection (two JoinGroup rounds for KIP-394) and syncs.
fn setup(
    args: &Args,
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    members: &mut [Member],
    joined: &Barrier,
) -> Result<i32> {
    let mut correlation = 0;
    let first: Vec<JoinGroupResponse> = round(
        stream,
        reader,
        &mut correlation,
        ApiKey::JoinGroup,
        JOIN_VERSION,
        members.iter().map(|m| join_request(args, m)).collect(),
    )?;
    for (member, response) in members.iter_mut().zip(first) {
        if response.error_code != 79 {
            bail!(
                "first JoinGroup: expected MEMBER_ID_REQUIRED, got {}",
                response.error_code
            );
        }
        member.member_id = response.member_id.to_string();
    }
    // Every connection has its ids before anyone joins for real: the group's members all arrive
    // within the broker's initial rebalance delay and form one generation.
    joined.wait();
    let second: Vec<JoinGroupResponse> = round(
        stream,
        reader,
        &mut correlation,
        ApiKey::JoinGroup,
        JOIN_VERSION,
        members.iter().map(|m| join_request(args, m)).collect(),
    )?;
    for (member, response) in members.iter_mut().zip(second) {
        if response.error_code != 0 {
            bail!(
                "JoinGroup of {}: error {}",
                member.group,
                response.error_code
            );
        }
        member.generation = response.generation_id;
        member.leader = response.leader == response.member_id;
        member.peers = response
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect();
    }
    let syncs = members
        .iter()
        .map(|m| {
            let assignments = if m.leader {
                m.peers
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(str_bytes(id))
                            .with_assignment(assignment(&args.topic, i as i32))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            SyncGroupRequest::default()
                .with_group_id(GroupId(str_bytes(&m.group)))
                .with_generation_id(m.generation)
                .with_member_id(str_bytes(&m.member_id))
                .with_assignments(assignments)
        })
        .collect();
    let synced: Vec<SyncGroupResponse> = round(
        stream,
        reader,
        &mut correlation,
        ApiKey::SyncGroup,
        SYNC_VERSION,
        syncs,
    )?;
    for (member, response) in members.iter().zip(synced) {
        if response.error_code != 0 {
            bail!(
                "SyncGroup of {}: error {}",
                member.group,
                response.error_code
            );
        }
    }
    Ok(correlation)
}

#[derive(Clone, Copy)]
enum Sent {
    Commit(Instant),
    Heartbeat,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    heartbeat_errors: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
}

fn run_connection(
    args: Args,
    mut members: Vec<Member>,
    shared: Arc<Shared>,
    joined: Arc<Barrier>,
    ready: Arc<Barrier>,
) -> Result<Vec<Member>> {
    let mut stream = connect(&args.bootstrap, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
    let mut correlation = setup(&args, &mut stream, &mut reader, &mut members, &joined)?;
    ready.wait();

    let sent: Arc<Mutex<VecDeque<Sent>>> = Arc::new(Mutex::new(VecDeque::new()));
    let reader_thread = {
        let sent = sent.clone();
        let shared = shared.clone();
        std::thread::spawn(move || -> Result<()> {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            loop {
                let frame = match frame_read(&mut reader) {
                    Ok(frame) => frame,
                    Err(_) if shared.stop.load(Ordering::Relaxed) => break,
                    Err(error) => return Err(error),
                };
                let now = Instant::now();
                let kind = sent
                    .lock()
                    .unwrap()
                    .pop_front()
                    .ok_or_else(|| anyhow!("unexpected response"))?;
                match kind {
                    Sent::Commit(intended) => {
                        let response: OffsetCommitResponse =
                            decode(frame, ApiKey::OffsetCommit, COMMIT_VERSION)?;
                        let failed = response
                            .topics
                            .iter()
                            .flat_map(|t| &t.partitions)
                            .find(|p| p.error_code != 0);
                        if let Some(partition) = failed {
                            shared.commit_errors.fetch_add(1, Ordering::Relaxed);
                            shared
                                .first_error
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("commit error {}", partition.error_code));
                        }
                        if shared.measuring.load(Ordering::Relaxed) {
                            local.saturating_record(
                                now.saturating_duration_since(intended).as_micros() as u64,
                            );
                            shared.commits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Sent::Heartbeat => {
                        let response: HeartbeatResponse =
                            decode(frame, ApiKey::Heartbeat, HEARTBEAT_VERSION)?;
                        if response.error_code != 0 {
                            shared.heartbeat_errors.fetch_add(1, Ordering::Relaxed);
                            shared
                                .first_error
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("heartbeat error {}", response.error_code));
                        }
                    }
                }
                if shared.stop.load(Ordering::Relaxed) && sent.lock().unwrap().is_empty() {
                    break;
                }
            }
            shared
                .histogram
                .lock()
                .unwrap()
                .add(&local)
                .expect("same bounds");
            Ok(())
        })
    };

    // Each member commits every interval, at its own phase; heartbeats every heartbeat interval.
    let interval = Duration::from_millis(args.commit_interval_ms);
    let heartbeat = Duration::from_millis(args.heartbeat_interval_ms);
    let start = Instant::now();
    let count = members.len().max(1) as u32;
    let mut next_commit: Vec<Instant> = (0..members.len())
        .map(|i| start + interval * i as u32 / count)
        .collect();
    let mut next_heartbeat: Vec<Instant> = (0..members.len())
        .map(|i| start + heartbeat * i as u32 / count)
        .collect();
    let mut buffer = Vec::with_capacity(64 * 1024);
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        buffer.clear();
        let mut kinds = Vec::new();
        for (i, member) in members.iter_mut().enumerate() {
            if next_commit[i] <= now {
                member.offset += 1;
                correlation += 1;
                let request = OffsetCommitRequest::default()
                    .with_group_id(GroupId(str_bytes(&member.group)))
                    .with_generation_id_or_member_epoch(member.generation)
                    .with_member_id(str_bytes(&member.member_id))
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(topic_name(&args.topic))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(member.index as i32)
                            .with_committed_offset(member.offset)])]);
                buffer.extend_from_slice(&encode_request(
                    ApiKey::OffsetCommit,
                    COMMIT_VERSION,
                    correlation,
                    &request,
                )?);
                kinds.push(Sent::Commit(next_commit[i]));
                next_commit[i] += interval;
            }
            if next_heartbeat[i] <= now {
                correlation += 1;
                let request = HeartbeatRequest::default()
                    .with_group_id(GroupId(str_bytes(&member.group)))
                    .with_generation_id(member.generation)
                    .with_member_id(str_bytes(&member.member_id));
                buffer.extend_from_slice(&encode_request(
                    ApiKey::Heartbeat,
                    HEARTBEAT_VERSION,
                    correlation,
                    &request,
                )?);
                kinds.push(Sent::Heartbeat);
                next_heartbeat[i] += heartbeat;
            }
        }
        if !buffer.is_empty() {
            sent.lock().unwrap().extend(kinds);
            stream.write_all(&buffer)?;
        }
        let next = next_commit
            .iter()
            .chain(next_heartbeat.iter())
            .min()
            .copied()
            .unwrap_or(now + interval);
        let wait = next.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    // One last request so the reader, maybe blocked reading, sees a response, then the stop.
    if let Some(member) = members.first() {
        correlation += 1;
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(&member.group)))
            .with_generation_id(member.generation)
            .with_member_id(str_bytes(&member.member_id));
        sent.lock().unwrap().push_back(Sent::Heartbeat);
        stream.write_all(&encode_request(
            ApiKey::Heartbeat,
            HEARTBEAT_VERSION,
            correlation,
            &request,
        )?)?;
    }
    reader_thread
        .join()
        .map_err(|_| anyhow!("reader panicked"))??;
    Ok(members)
}

/// Nanoseconds the `shard-*` threads of `pid` were runnable but waiting for a CPU (the second
/// field of /proc/<pid>/task/<tid>/schedstat): time taken by other work on the broker's core.
fn shard_run_delay_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("shard-") {
            let stat = std::fs::read_to_string(path.join("schedstat"))?;
            total += stat
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// (process CPU ticks, shard-thread CPU ticks) of `pid` from /proc.
fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    fn ticks(stat: &str) -> Option<u64> {
        // Fields after the parenthesised command: utime is the 14th field overall, stime 15th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }
    let process = ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
        .ok_or_else(|| anyhow!("bad stat"))?;
    let mut shards = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("shard-") {
            shards += ticks(&std::fs::read_to_string(path.join("stat"))?).unwrap_or(0);
        }
    }
    Ok((process, shards))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut admin = AdminClient::connect(&args.bootstrap)?;
    admin.create_topic(&args.topic, args.members as i32, &[])?;
    admin.wait_for_topic(&args.topic, Duration::from_secs(30))?;

    let mut per_connection: Vec<Vec<Member>> = (0..args.connections).map(|_| Vec::new()).collect();
    for g in 0..args.groups {
        for i in 0..args.members {
            let m = g * args.members + i;
            per_connection[m % args.connections].push(Member {
                group: format!("load-group-{g}"),
                index: i,
                member_id: String::new(),
                generation: -1,
                leader: false,
                peers: Vec::new(),
                offset: 0,
            });
        }
    }
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        commits: AtomicU64::new(0),
        commit_errors: AtomicU64::new(0),
        heartbeat_errors: AtomicU64::new(0),
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
        first_error: Mutex::new(None),
    });
    let joined = Arc::new(Barrier::new(args.connections));
    let ready = Arc::new(Barrier::new(args.connections + 1));
    let setup_started = Instant::now();
    let threads: Vec<_> = per_connection
        .into_iter()
        .map(|members| {
            let (args, shared, joined, ready) =
                (args.clone(), shared.clone(), joined.clone(), ready.clone());
            std::thread::spawn(move || run_connection(args, members, shared, joined, ready))
        })
        .collect();
    ready.wait();
    eprintln!(
        "{} groups x {} members joined and synced in {:.1} s; warming up {} s",
        args.groups,
        args.members,
        setup_started.elapsed().as_secs_f64(),
        args.warmup_s
    );
    std::thread::sleep(Duration::from_secs(args.warmup_s));
    let cpu_before = args.broker_pid.map(cpu_ticks).transpose()?;
    let delay_before = args.broker_pid.map(shard_run_delay_ns).transpose()?;
    let window_started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.duration_s));
    shared.measuring.store(false, Ordering::Relaxed);
    let window = window_started.elapsed().as_secs_f64();
    let cpu_after = args.broker_pid.map(cpu_ticks).transpose()?;
    let delay_after = args.broker_pid.map(shard_run_delay_ns).transpose()?;
    shared.stop.store(true, Ordering::Relaxed);
    let mut finished = Vec::new();
    for thread in threads {
        finished.extend(
            thread
                .join()
                .map_err(|_| anyhow!("connection thread panicked"))??,
        );
    }

    // Spot-check: the last commit of a few groups reads back.
    let mut checked = 0;
    for member in finished.iter().step_by((finished.len() / 20).max(1)) {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(str_bytes(&member.group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(&args.topic))
                .with_partition_indexes(vec![member.index as i32])]));
        let response: OffsetFetchResponse =
            admin.request(ApiKey::OffsetFetch, FETCH_VERSION, &request)?;
        let offset = response.topics[0].partitions[0].committed_offset;
        if offset != member.offset {
            bail!(
                "{}/{}: committed {offset}, last commit {}",
                member.group,
                member.index,
                member.offset
            );
        }
        checked += 1;
    }

    let histogram = shared.histogram.lock().unwrap();
    let commits = shared.commits.load(Ordering::Relaxed);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let mut report = BTreeMap::new();
    report.insert("groups", args.groups as f64);
    report.insert("members", (args.groups * args.members) as f64);
    report.insert("commits_per_s", commits as f64 / window);
    report.insert("commit_p50_ms", ms(0.50));
    report.insert("commit_p99_ms", ms(0.99));
    report.insert("commit_p999_ms", ms(0.999));
    report.insert("commit_max_ms", histogram.max() as f64 / 1000.0);
    report.insert(
        "commit_errors",
        shared.commit_errors.load(Ordering::Relaxed) as f64,
    );
    report.insert(
        "heartbeat_errors",
        shared.heartbeat_errors.load(Ordering::Relaxed) as f64,
    );
    report.insert("offsets_checked", checked as f64);
    if let (Some((p0, s0)), Some((p1, s1))) = (cpu_before, cpu_after) {
        // Clock ticks are 1/100 s on Linux (USER_HZ).
        report.insert("broker_cpu_percent", (p1 - p0) as f64 / window);
        report.insert("shard_threads_cpu_percent", (s1 - s0) as f64 / window);
    }
    if let (Some(d0), Some(d1)) = (delay_before, delay_after) {
        report.insert(
            "shard_run_queue_wait_percent",
            (d1 - d0) as f64 / 1e9 / window * 100.0,
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(error) = shared.first_error.lock().unwrap().as_ref() {
        eprintln!("first error seen: {error}");
    }
    Ok(())
}
