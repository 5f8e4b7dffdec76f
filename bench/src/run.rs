//! One benchmark run: metadata and topic set-up, connection plan, worker threads, per-second
//! progress, and the final report with its files.

use crate::cli::{Acks, Client, Command, Keys, Mode, RunArgs, StartFrom};
use crate::clock::{now_ns, s_to_ns, wall_s, NS_PER_S};
use crate::engine::{EngineConfig, Interval, Stats, Worker, WorkerSetup};
use crate::hist::Window;
use crate::host::{git_revision, host_facts};
use crate::kafka::{
    self, AdminClient, FetchCursor, FetchSettings, TopicLayout, FETCH_VERSION_MAX,
    FETCH_VERSION_MIN, PRODUCE_VERSION_MAX, PRODUCE_VERSION_MIN,
};
use crate::records::BatchTemplate;
use crate::report::{
    self, format_progress, mb, ConsumeResult, E2eResult, Parameters, ProduceResult, Report,
    TimelinePoint,
};
use anyhow::{bail, Context, Result};
use kafka_protocol::messages::ApiKey;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Set by SIGINT/SIGTERM: workers stop generating and drain.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Everything a run measured, before it becomes a [`Report`].
pub struct Outcome {
    pub stats: Stats,
    pub timeline: Vec<TimelinePoint>,
    pub layout_partitions: usize,
    pub records_per_batch: usize,
    pub produce_version: Option<i16>,
    pub fetch_version: Option<i16>,
    pub window: Window,
}

/// Runs a load subcommand and writes its outputs (summary, JSON, hgrm, plot).
pub fn execute(command: &Command, argv: Vec<String>) -> Result<Report> {
    let (Some(mode), Some(args)) = (command.mode(), command.args()) else {
        bail!("not a load subcommand");
    };
    args.validate(mode).map_err(anyhow::Error::msg)?;
    install_signal_handlers();
    let started_at_unix_s = wall_s();
    let outcome = match args.client {
        Client::Native => run_native(mode, args)?,
        Client::Rdkafka => run_rdkafka(mode, args)?,
    };
    let report = build_report(mode, args, argv, started_at_unix_s, &outcome);
    println!("{}", report::format_summary(&report));
    write_outputs(args, &report, &outcome.stats)?;
    Ok(report)
}

#[cfg(feature = "rdkafka")]
fn run_rdkafka(mode: Mode, args: &RunArgs) -> Result<Outcome> {
    crate::rdk::run(mode, args)
}

#[cfg(not(feature = "rdkafka"))]
fn run_rdkafka(_: Mode, _: &RunArgs) -> Result<Outcome> {
    bail!(
        "this riptide-bench was built without librdkafka; rebuild with \
         `cargo build --release -p riptide-bench --features rdkafka` (needs librdkafka-dev)"
    )
}

/// Creates or looks up the topic and returns its layout (partitions must be 0..N).
pub fn prepare_topic(admin: &mut AdminClient, args: &RunArgs) -> Result<TopicLayout> {
    if args.create {
        let configs: Vec<(String, String)> = args
            .topic_configs
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let created = admin.create_topic(&args.topic, args.partition_count, &configs)?;
        if !created {
            eprintln!(
                "riptide-bench: topic {} exists; using it as it is (its partition count and configs)",
                args.topic
            );
        }
    } else {
        // Kafka clients rely on Metadata to auto-create topics; do the same.
        let _ = admin.metadata(&args.topic, true);
    }
    let layout = admin.wait_for_topic(&args.topic, topic_ready_timeout(args.partition_count))?;
    for (slot, (index, _)) in layout.partitions.iter().enumerate() {
        if *index != slot as i32 {
            bail!(
                "topic {} has non-contiguous partitions: {:?}",
                args.topic,
                layout.partitions
            );
        }
    }
    if args.create && layout.partitions.len() != args.partition_count as usize {
        eprintln!(
            "riptide-bench: topic {} has {} partitions (asked for {})",
            args.topic,
            layout.partitions.len(),
            args.partition_count
        );
    }
    Ok(layout)
}

/// How long a new topic may take until every partition has a leader: 15 s, plus 20 ms per
/// partition (a broker opens each partition's log directory and files).
fn topic_ready_timeout(partition_count: i32) -> Duration {
    Duration::from_secs(15) + Duration::from_millis(20) * partition_count.max(0) as u32
}

/// What `riptide-bench create` measured, in seconds from sending CreateTopics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreateTimes {
    pub topic: String,
    pub partitions: usize,
    /// CreateTopics answered.
    pub answered_s: f64,
    /// Every partition has a leader in Metadata.
    pub leaders_s: f64,
    /// Every partition answers ListOffsets without an error (its log is open).
    pub ready_s: f64,
}

/// `riptide-bench create`: creates the topic and waits until every partition is ready (see
/// [`CreateTimes`]); prints the times and writes them to `--json` if given.
pub fn create_timed(args: &RunArgs) -> Result<CreateTimes> {
    if args.partition_count < 1 {
        bail!("--partitions must be at least 1");
    }
    let mut admin = AdminClient::connect(&args.bootstrap)
        .with_context(|| format!("connecting to {}", args.bootstrap))?;
    let configs: Vec<(String, String)> = args
        .topic_configs
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let timeout = topic_ready_timeout(args.partition_count);
    let started = std::time::Instant::now();
    if !admin.create_topic(&args.topic, args.partition_count, &configs)? {
        bail!("topic {} exists already: nothing to time", args.topic);
    }
    let answered_s = started.elapsed().as_secs_f64();
    let layout = admin.wait_for_topic(&args.topic, timeout)?;
    let leaders_s = started.elapsed().as_secs_f64();
    let partitions: Vec<i32> = layout.partitions.iter().map(|(p, _)| *p).collect();
    loop {
        match admin.list_offsets(&args.topic, &partitions, -1) {
            Ok(offsets) if offsets.len() == partitions.len() => break,
            Ok(_) | Err(_) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(offsets) => bail!(
                "only {} of {} partitions answer ListOffsets",
                offsets.len(),
                partitions.len()
            ),
            Err(error) => return Err(error),
        }
    }
    let times = CreateTimes {
        topic: args.topic.clone(),
        partitions: partitions.len(),
        answered_s,
        leaders_s,
        ready_s: started.elapsed().as_secs_f64(),
    };
    println!(
        "created {} with {} partitions: CreateTopics answered in {:.3} s, all leaders in {:.3} s, \
         all partitions ready (ListOffsets) in {:.3} s",
        times.topic, times.partitions, times.answered_s, times.leaders_s, times.ready_s
    );
    if let Some(path) = &args.json_path {
        std::fs::write(path, serde_json::to_string_pretty(&times)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(times)
}

/// Consumer start offsets (and end offsets with `--until-end`) per partition.
pub fn consumer_offsets(
    admin: &mut AdminClient,
    mode: Mode,
    args: &RunArgs,
    layout: &TopicLayout,
) -> Result<BTreeMap<i32, (i64, Option<i64>)>> {
    let partitions: Vec<i32> = layout.partitions.iter().map(|(p, _)| *p).collect();
    let latest = admin.list_offsets(&args.topic, &partitions, -1)?;
    let start = if mode == Mode::E2e || args.start_from == StartFrom::Latest {
        latest.clone()
    } else {
        admin.list_offsets(&args.topic, &partitions, -2)?
    };
    Ok(partitions
        .iter()
        .map(|p| {
            let end = (args.until_end && mode == Mode::Consume).then(|| latest[p]);
            (*p, (start[p], end))
        })
        .collect())
}

fn run_native(mode: Mode, args: &RunArgs) -> Result<Outcome> {
    let mut admin = AdminClient::connect(&args.bootstrap)
        .with_context(|| format!("connecting to {}", args.bootstrap))?;
    let layout = prepare_topic(&mut admin, args)?;
    let produce_version = mode
        .produces()
        .then(|| {
            admin
                .versions
                .pick(ApiKey::Produce, PRODUCE_VERSION_MIN, PRODUCE_VERSION_MAX)
        })
        .transpose()?;
    let fetch_version = mode
        .consumes()
        .then(|| {
            admin
                .versions
                .pick(ApiKey::Fetch, FETCH_VERSION_MIN, FETCH_VERSION_MAX)
        })
        .transpose()?;
    let offsets = if mode.consumes() {
        consumer_offsets(&mut admin, mode, args, &layout)?
    } else {
        BTreeMap::new()
    };

    // Threads: one per listed core, or one unpinned.
    let cores: Vec<Option<usize>> = match &args.cores {
        Some(list) => crate::cli::parse_cpu_list(list)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None],
    };
    let worker_count = cores.len();
    let mut setups: Vec<WorkerSetup> = cores
        .iter()
        .enumerate()
        .map(|(index, core)| WorkerSetup {
            index,
            core: *core,
            producers: Vec::new(),
            consumers: Vec::new(),
            rate_msgs_per_s: 0.0,
            seed: 0x5eed_0000 + index as u64 * 0x9e37_79b9,
        })
        .collect();
    let broker_address = |node: i32| -> Result<String> {
        layout
            .brokers
            .get(&node)
            .cloned()
            .with_context(|| format!("leader {node} not among the brokers"))
    };
    // Producers: `--producers` connections to every leader broker, spread over the workers.
    let mut leaders: Vec<i32> = layout.partitions.iter().map(|(_, l)| *l).collect();
    leaders.sort_unstable();
    leaders.dedup();
    let mut producer_total = 0usize;
    if mode.produces() {
        for connection in 0..args.producer_count {
            for &leader in &leaders {
                let stream = kafka::connect(&broker_address(leader)?, Duration::from_secs(10))?;
                setups[producer_total % worker_count]
                    .producers
                    .push((stream, leader));
                producer_total += 1;
                let _ = connection;
            }
        }
        for setup in &mut setups {
            setup.rate_msgs_per_s =
                args.rate_msgs_per_s * setup.producers.len() as f64 / producer_total.max(1) as f64;
        }
    }
    // Consumers: consumer c reads partitions p with p % C == c, one connection per leader.
    if mode.consumes() {
        let mut consumer_connections = 0usize;
        for consumer in 0..args.consumer_count {
            let mut by_leader: BTreeMap<i32, Vec<FetchCursor>> = BTreeMap::new();
            for (partition, leader) in &layout.partitions {
                if *partition as usize % args.consumer_count != consumer {
                    continue;
                }
                let (start, end) = offsets[partition];
                by_leader.entry(*leader).or_default().push(FetchCursor {
                    partition: *partition,
                    next_offset: start,
                    end_offset: end,
                    high_watermark: start,
                });
            }
            for (leader, cursors) in by_leader {
                let stream = kafka::connect(&broker_address(leader)?, Duration::from_secs(10))?;
                // Start consumers on the last worker, producers on the first.
                let worker = (worker_count - 1 + consumer_connections) % worker_count;
                setups[worker].consumers.push((stream, cursors));
                consumer_connections += 1;
            }
        }
    }

    let template = BatchTemplate::new(
        args.batch_size_bytes,
        args.message_size_bytes,
        args.keys,
        args.compression,
        0x00c0_ffee,
    );
    let records_per_batch = template.max_records();
    let start_ns = now_ns() + 50_000_000;
    let warmup_end_ns = start_ns + s_to_ns(args.warmup_s);
    let window = Window {
        start_ns,
        warmup_end_ns,
        end_ns: warmup_end_ns + s_to_ns(args.duration_s),
    };
    let producing_workers = setups.iter().filter(|s| !s.producers.is_empty()).count();
    let config = Arc::new(EngineConfig {
        mode,
        topic: args.topic.clone(),
        partitions: layout.partitions.clone(),
        acks: args.acks.wire_value(),
        produce_version: produce_version.unwrap_or(PRODUCE_VERSION_MAX),
        fetch_version: fetch_version.unwrap_or(FETCH_VERSION_MAX),
        request_timeout_ms: args.request_timeout_ms,
        template,
        keys: args.keys,
        linger_ns: (args.linger_ms * 1e6) as u64,
        max_in_flight: args.max_in_flight_requests,
        max_request_bytes: args.max_request_size_bytes,
        buffer_memory_bytes: args.buffer_memory_bytes,
        stamp: mode == Mode::E2e,
        fetch: FetchSettings {
            max_wait_ms: args.fetch_max_wait_ms,
            max_bytes: args.fetch_max_bytes,
            partition_max_bytes: args.fetch_partition_max_bytes,
        },
        window,
        drain_ns: s_to_ns(args.drain_timeout_s),
        producers_active: AtomicUsize::new(producing_workers),
        interrupted: &INTERRUPTED,
    });

    let (sender, receiver) = mpsc::channel::<Interval>();
    let mut handles = Vec::new();
    for setup in setups {
        let worker = Worker::new(Arc::clone(&config), setup, sender.clone())?;
        handles.push(
            std::thread::Builder::new()
                .name("bench-worker".to_string())
                .spawn(move || worker.run())?,
        );
    }
    drop(sender);
    let timeline = collect_timeline(receiver, worker_count, args, mode, window);
    let mut stats = Stats::default();
    for handle in handles {
        let worker_stats = handle
            .join()
            .map_err(|_| anyhow::anyhow!("worker thread panicked"))??;
        stats.add(&worker_stats);
    }
    Ok(Outcome {
        stats,
        timeline,
        layout_partitions: layout.partitions.len(),
        records_per_batch,
        produce_version,
        fetch_version,
        window,
    })
}

/// Merges the workers' per-second intervals, printing each second once every worker has
/// reported it (or moved past it).
pub fn collect_timeline(
    receiver: mpsc::Receiver<Interval>,
    worker_count: usize,
    args: &RunArgs,
    mode: Mode,
    window: Window,
) -> Vec<TimelinePoint> {
    let total_s = ((window.end_ns - window.start_ns) as f64 / NS_PER_S as f64).ceil() as u64;
    let warmup_s = (window.warmup_end_ns - window.start_ns) as f64 / NS_PER_S as f64;
    let mut pending: BTreeMap<u64, Interval> = BTreeMap::new();
    let mut latest_by_worker = vec![0u64; worker_count];
    let mut timeline = Vec::new();
    let emit = |second: u64, interval: &Interval, timeline: &mut Vec<TimelinePoint>| {
        let point = timeline_point(second, interval, warmup_s);
        if !args.quiet {
            eprintln!(
                "{}",
                format_progress(
                    &point,
                    total_s,
                    mode.produces(),
                    mode.consumes(),
                    mode == Mode::E2e
                )
            );
        }
        timeline.push(point);
    };
    for interval in receiver {
        latest_by_worker[interval.worker] = latest_by_worker[interval.worker].max(interval.second);
        pending.entry(interval.second).or_default().add(&interval);
        let complete = *latest_by_worker.iter().min().unwrap_or(&0);
        while let Some((&second, _)) = pending.first_key_value() {
            if second > complete {
                break;
            }
            let interval = pending.remove(&second).expect("present");
            emit(second, &interval, &mut timeline);
        }
    }
    for (second, interval) in std::mem::take(&mut pending) {
        emit(second, &interval, &mut timeline);
    }
    timeline
}

fn timeline_point(second: u64, interval: &Interval, warmup_s: f64) -> TimelinePoint {
    let produce = interval.produce.summary();
    let e2e = interval.e2e.summary();
    TimelinePoint {
        second,
        warmup: (second as f64) <= warmup_s + 1e-9 && warmup_s > 0.0,
        produce_msgs_per_s: interval.acked_msgs as f64,
        produce_mb_per_s: mb(interval.acked_bytes as f64),
        produce_p50_ms: produce.p50_ms,
        produce_p99_ms: produce.p99_ms,
        produce_p99_9_ms: produce.p99_9_ms,
        produce_max_ms: produce.max_ms,
        consume_msgs_per_s: interval.consumed_msgs as f64,
        consume_mb_per_s: mb(interval.consumed_bytes as f64),
        e2e_p50_ms: e2e.p50_ms,
        e2e_p99_ms: e2e.p99_ms,
        e2e_p99_9_ms: e2e.p99_9_ms,
        e2e_max_ms: e2e.max_ms,
        errors: interval.errors,
    }
}

pub fn build_report(
    mode: Mode,
    args: &RunArgs,
    argv: Vec<String>,
    started_at_unix_s: f64,
    outcome: &Outcome,
) -> Report {
    let c = &outcome.stats.counters;
    let window = outcome.window;
    let mut measured_s = window.measured_s();
    if mode == Mode::Consume && args.until_end {
        // The run ended when the data did: at the last record received, or when the
        // consumers found nothing (more) to read.
        let end_ns = if c.last_consume_ns > window.warmup_end_ns {
            c.last_consume_ns
        } else {
            c.finished_ns
        };
        measured_s = measured_s.min(end_ns.saturating_sub(window.warmup_end_ns) as f64 / 1e9);
    }
    let measured_s = measured_s.max(1e-9);
    let produce = mode.produces().then(|| {
        let throughput = c.produced_msgs as f64 / measured_s;
        let target = (args.rate_msgs_per_s > 0.0).then_some(args.rate_msgs_per_s);
        ProduceResult {
            msgs: c.produced_msgs,
            bytes: c.produced_bytes,
            errors: c.produce_errors,
            timed_out_msgs: c.timed_out_msgs,
            unsent_msgs: c.unsent_msgs,
            requests: c.produce_requests,
            throughput_msgs_per_s: throughput,
            throughput_mb_per_s: mb(c.produced_bytes as f64) / measured_s,
            target_rate_msgs_per_s: target,
            achieved_rate_msgs_per_s: c.sent_msgs as f64 / measured_s,
            rate_shortfall_pct: target.map(|t| ((1.0 - throughput / t) * 100.0).max(0.0)),
            max_schedule_lag_ms: c.max_schedule_lag_ns as f64 / 1e6,
            latency: (args.acks != Acks::None).then(|| outcome.stats.produce.summary()),
            latency_origin: if args.rate_msgs_per_s > 0.0 {
                "each message's intended send time (coordinated-omission corrected)"
            } else {
                "batch creation (max-rate mode: no schedule)"
            }
            .to_string(),
        }
    });
    let consume = mode.consumes().then(|| ConsumeResult {
        msgs: c.consumed_msgs,
        bytes: c.consumed_bytes,
        errors: c.consume_errors,
        fetches: c.fetches,
        throughput_msgs_per_s: c.consumed_msgs as f64 / measured_s,
        throughput_mb_per_s: mb(c.consumed_bytes as f64) / measured_s,
        fetch_latency: outcome.stats.fetch.summary(),
    });
    let e2e = (mode == Mode::E2e).then(|| E2eResult {
        latency: outcome.stats.e2e.summary(),
        missing_msgs: c.produced_msgs.saturating_sub(c.e2e_msgs),
    });
    Report {
        schema_version: report::SCHEMA_VERSION,
        tool: format!("riptide-bench {}", env!("CARGO_PKG_VERSION")),
        label: args.label.clone(),
        command: mode.name().to_string(),
        argv,
        parameters: Parameters {
            client: format!("{:?}", args.client).to_lowercase(),
            bootstrap: args.bootstrap.clone(),
            topic: args.topic.clone(),
            partitions: outcome.layout_partitions,
            producers: args.producer_count,
            consumers: args.consumer_count,
            message_size_bytes: args.message_size_bytes,
            keys: match args.keys {
                Keys::None => "none".to_string(),
                Keys::Random => "random".to_string(),
                Keys::Distinct(n) => n.to_string(),
            },
            batch_size_bytes: args.batch_size_bytes,
            records_per_batch: outcome.records_per_batch,
            linger_ms: args.linger_ms,
            acks: match args.acks {
                Acks::None => "0",
                Acks::Leader => "1",
                Acks::All => "all",
            }
            .to_string(),
            compression: format!("{:?}", args.compression).to_lowercase(),
            rate_msgs_per_s: args.rate_msgs_per_s,
            duration_s: args.duration_s,
            warmup_s: args.warmup_s,
            cores: args.cores.clone(),
            max_in_flight_requests: args.max_in_flight_requests,
            max_request_size_bytes: args.max_request_size_bytes,
            produce_api_version: outcome.produce_version,
            fetch_api_version: outcome.fetch_version,
            topic_configs: args.topic_configs.clone(),
        },
        git_revision: git_revision(),
        host: host_facts(),
        started_at_unix_s,
        measured_duration_s: measured_s,
        produce,
        consume,
        e2e,
        timeline: outcome.timeline.clone(),
    }
}

fn write_outputs(args: &RunArgs, report: &Report, stats: &Stats) -> Result<()> {
    if let Some(path) = &args.json_path {
        report::write_json(report, path)?;
        eprintln!("wrote {}", path.display());
    }
    let mut series = Vec::new();
    if report.produce.as_ref().is_some_and(|p| p.latency.is_some()) {
        series.push(("produce", &stats.produce));
    }
    if report.e2e.is_some() {
        series.push(("e2e", &stats.e2e));
    }
    if report.consume.is_some() {
        series.push(("fetch", &stats.fetch));
    }
    if let Some(directory) = &args.hgrm_dir {
        std::fs::create_dir_all(directory)?;
        for (name, histogram) in &series {
            let path = directory.join(format!("{name}.hgrm"));
            report::write_hgrm_file(histogram, &path)?;
            eprintln!("wrote {}", path.display());
        }
    }
    if let Some(path) = &args.plot_path {
        // The fetch round trip is a different quantity; plot it only when it is all there is.
        let plotted: Vec<(&str, &crate::hist::LatencyHistogram)> = if series.len() > 1 {
            series
                .iter()
                .filter(|(n, _)| *n != "fetch")
                .cloned()
                .collect()
        } else {
            series.clone()
        };
        let title = format!(
            "{} latency by percentile — {}",
            report
                .label
                .clone()
                .unwrap_or_else(|| report.command.clone()),
            report.git_revision
        );
        match crate::plot::plot_percentiles(path, &title, &plotted) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(error) => eprintln!("riptide-bench: no plot: {error:#}"),
        }
    }
    Ok(())
}
