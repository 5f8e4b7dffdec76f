//! `--client rdkafka`: the same workloads through librdkafka, to cross-check the native
//! client's figures against the client most users run. Topic set-up, offsets, histograms and
//! reports are shared with the native path; only sending and receiving differ.
//!
//! librdkafka copies each payload and allocates per message; it tops out near 1M msg/s of
//! 100 B per core here, so use it to check figures below that, not to find a broker's ceiling.
//! Fetch latency is not observable through its API and stays empty.

use crate::cli::{Acks, Keys, Mode, RunArgs};
use crate::clock::{now_ns, s_to_ns, NS_PER_S};
use crate::engine::{pin_to_core, Interval, Stats};
use crate::hist::{Schedule, Window};
use crate::kafka::AdminClient;
use crate::records::{format_key, XorShift, STAMP_MAGIC, STAMP_SIZE_BYTES};
use crate::run::{collect_timeline, consumer_offsets, prepare_topic, Outcome, INTERRUPTED};
use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Shared {
    window: Window,
    message_bytes: u64,
    measure_latency: bool,
    producers_active: AtomicUsize,
}

/// Per-producer-thread state, reached from the delivery callback (which runs inside `poll`
/// on the same thread, so the lock is never contended).
struct Recorder {
    stats: Stats,
    interval: Interval,
    outstanding: u64,
}

struct DeliveryContext {
    shared: Arc<Shared>,
    recorder: Mutex<Recorder>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// The message's intended send time (fixed rate) or creation time, in ns.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, origin_ns: usize) {
        let ack_ns = now_ns();
        let origin_ns = origin_ns as u64;
        let window = self.shared.window;
        let mut r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        r.outstanding = r.outstanding.saturating_sub(1);
        match result {
            Ok(_) => {
                let latency = ack_ns.saturating_sub(origin_ns);
                r.interval.acked_msgs += 1;
                r.interval.acked_bytes += self.shared.message_bytes;
                if self.shared.measure_latency {
                    r.interval.produce.record_ns(latency);
                }
                if window.measures(origin_ns) {
                    r.stats.counters.produced_msgs += 1;
                    r.stats.counters.produced_bytes += self.shared.message_bytes;
                    if self.shared.measure_latency {
                        r.stats.produce.record_ns(latency);
                    }
                }
            }
            Err(_) => {
                r.interval.errors += 1;
                if window.measures(origin_ns) {
                    r.stats.counters.produce_errors += 1;
                }
            }
        }
    }
}

pub fn run(mode: Mode, args: &RunArgs) -> Result<Outcome> {
    let mut admin = AdminClient::connect(&args.bootstrap)
        .with_context(|| format!("connecting to {}", args.bootstrap))?;
    let layout = prepare_topic(&mut admin, args)?;
    let offsets = if mode.consumes() {
        consumer_offsets(&mut admin, mode, args, &layout)?
    } else {
        Default::default()
    };
    let cores: Vec<Option<usize>> = match &args.cores {
        Some(list) => crate::cli::parse_cpu_list(list)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None],
    };
    let start_ns = now_ns() + 500_000_000; // librdkafka connects lazily; give it a moment
    let warmup_end_ns = start_ns + s_to_ns(args.warmup_s);
    let window = Window {
        start_ns,
        warmup_end_ns,
        end_ns: warmup_end_ns + s_to_ns(args.duration_s),
    };
    let producer_threads = if mode.produces() {
        args.producer_count
    } else {
        0
    };
    let consumer_threads = if mode.consumes() {
        args.consumer_count
    } else {
        0
    };
    let shared = Arc::new(Shared {
        window,
        message_bytes: (args.message_size_bytes + args.keys.key_size_bytes().unwrap_or(0)) as u64,
        measure_latency: args.acks != Acks::None,
        producers_active: AtomicUsize::new(producer_threads),
    });
    let (sender, receiver) = mpsc::channel::<Interval>();
    let mut handles = Vec::new();
    let mut worker = 0usize;
    for index in 0..producer_threads {
        let (args, shared, sender) = (args.clone(), Arc::clone(&shared), sender.clone());
        let core = cores[worker % cores.len()];
        let rate = args.rate_msgs_per_s / producer_threads as f64;
        let id = worker;
        handles.push(std::thread::spawn(move || {
            produce_thread(id, index, core, &args, mode, rate, shared, sender)
        }));
        worker += 1;
    }
    let partitions: Vec<i32> = layout.partitions.iter().map(|(p, _)| *p).collect();
    for index in 0..consumer_threads {
        let mine: Vec<(i32, i64, Option<i64>)> = partitions
            .iter()
            .filter(|p| **p as usize % consumer_threads == index)
            .map(|p| (*p, offsets[p].0, offsets[p].1))
            .collect();
        let (args, shared, sender) = (args.clone(), Arc::clone(&shared), sender.clone());
        let core = cores[worker % cores.len()];
        let id = worker;
        handles.push(std::thread::spawn(move || {
            consume_thread(id, core, &args, mode, mine, shared, sender)
        }));
        worker += 1;
    }
    drop(sender);
    let timeline = collect_timeline(receiver, worker, args, mode, window);
    let mut stats = Stats::default();
    for handle in handles {
        let part = handle
            .join()
            .map_err(|_| anyhow::anyhow!("rdkafka thread panicked"))??;
        stats.add(&part);
    }
    Ok(Outcome {
        stats,
        timeline,
        layout_partitions: layout.partitions.len(),
        records_per_batch: 0,
        produce_version: None,
        fetch_version: None,
        window,
    })
}

fn base_config(args: &RunArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("client.id", "riptide-bench-rdkafka")
        .set("broker.address.family", "v4");
    config
}

#[allow(clippy::too_many_arguments)]
fn produce_thread(
    id: usize,
    index: usize,
    core: Option<usize>,
    args: &RunArgs,
    mode: Mode,
    rate_msgs_per_s: f64,
    shared: Arc<Shared>,
    intervals: Sender<Interval>,
) -> Result<Stats> {
    if let Some(core) = core {
        pin_to_core(core)?;
    }
    let acks = match args.acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    };
    let context = DeliveryContext {
        shared: Arc::clone(&shared),
        recorder: Mutex::new(Recorder {
            stats: Stats::default(),
            interval: Interval {
                worker: id,
                ..Interval::default()
            },
            outstanding: 0,
        }),
    };
    let producer: BaseProducer<DeliveryContext> = base_config(args)
        .set("acks", acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size_bytes.to_string())
        .set(
            "compression.type",
            format!("{:?}", args.compression).to_lowercase(),
        )
        .set(
            "max.in.flight.requests.per.connection",
            args.max_in_flight_requests.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (args.buffer_memory_bytes / 1024).max(1).to_string(),
        )
        .set("queue.buffering.max.messages", "10000000")
        .set("enable.idempotence", "false")
        .set("message.max.bytes", args.max_request_size_bytes.to_string())
        .create_with_context(context)
        .context("creating the librdkafka producer")?;
    let window = shared.window;
    let stamp = mode == Mode::E2e;
    let mut rng = XorShift::new(0xabcdef + index as u64);
    let mut payload: Vec<u8> = (0..args.message_size_bytes)
        .map(|_| b'A' + (rng.next_u64() % 26) as u8)
        .collect();
    let key_size = args.keys.key_size_bytes().unwrap_or(0);
    let mut key = vec![0u8; key_size];
    while now_ns() < window.start_ns {
        producer.poll(Duration::from_millis(1));
    }
    let mut schedule =
        (rate_msgs_per_s > 0.0).then(|| Schedule::new(window.start_ns, rate_msgs_per_s));
    let mut next_tick_ns = window.start_ns + NS_PER_S;
    let mut sent_since_poll = 0u32;
    loop {
        let now = now_ns();
        while now >= next_tick_ns {
            let second = (next_tick_ns - window.start_ns) / NS_PER_S;
            emit(&producer.context().recorder, &intervals, id, second);
            next_tick_ns += NS_PER_S;
        }
        if now >= window.end_ns || INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        let origin_ns = match &mut schedule {
            Some(schedule) => match schedule.take_due(now) {
                Some(intended) => {
                    let lag = now - intended;
                    let mut r = producer.context().recorder.lock().unwrap();
                    r.stats.counters.max_schedule_lag_ns =
                        r.stats.counters.max_schedule_lag_ns.max(lag);
                    intended
                }
                None => {
                    let wait_ns = schedule
                        .next_intended_ns()
                        .saturating_sub(now)
                        .min(1_000_000);
                    producer.poll(Duration::ZERO);
                    if wait_ns > 20_000 {
                        std::thread::sleep(Duration::from_nanos(wait_ns / 2));
                    }
                    continue;
                }
            },
            None => now,
        };
        if stamp {
            payload[..8].copy_from_slice(&STAMP_MAGIC);
            payload[8..STAMP_SIZE_BYTES].copy_from_slice(&origin_ns.to_be_bytes());
        }
        if args.keys != Keys::None {
            let id = match args.keys {
                Keys::Distinct(count) => rng.below(count),
                _ => rng.next_u64(),
            };
            format_key(args.keys, id, &mut key);
        }
        let mut record =
            BaseRecord::with_opaque_to(&args.topic, origin_ns as usize).payload(&payload[..]);
        if args.keys != Keys::None {
            record = record.key(&key[..]);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    let mut r = producer.context().recorder.lock().unwrap();
                    r.stats.counters.produce_errors += u64::from(window.measures(origin_ns));
                    drop(r);
                    eprintln!("riptide-bench: rdkafka send failed: {error}");
                    break;
                }
            }
        }
        {
            let mut r = producer.context().recorder.lock().unwrap();
            r.outstanding += 1;
            r.stats.counters.sent_msgs += u64::from(window.measures(origin_ns));
        }
        sent_since_poll += 1;
        if sent_since_poll >= 256 {
            producer.poll(Duration::ZERO);
            sent_since_poll = 0;
        }
    }
    // Messages the schedule wanted but that were never sent.
    let end_now = now_ns();
    if let Some(schedule) = &schedule {
        let due = schedule.due_by(window.end_ns.saturating_sub(1));
        let mut r = producer.context().recorder.lock().unwrap();
        for index in schedule.taken()..due {
            let intended = schedule.intended_ns(index);
            if window.measures(intended) {
                r.stats.counters.unsent_msgs += 1;
                r.stats.counters.timed_out_msgs += 1;
                if shared.measure_latency {
                    r.stats.produce.record_ns(end_now.saturating_sub(intended));
                }
            }
        }
    }
    let drain_deadline = end_now + s_to_ns(args.drain_timeout_s);
    while producer.in_flight_count() > 0 && now_ns() < drain_deadline {
        producer.poll(Duration::from_millis(10));
        let now = now_ns();
        while now >= next_tick_ns {
            let second = (next_tick_ns - window.start_ns) / NS_PER_S;
            emit(&producer.context().recorder, &intervals, id, second);
            next_tick_ns += NS_PER_S;
        }
    }
    let left = producer.in_flight_count().max(0) as u64;
    shared.producers_active.fetch_sub(1, Ordering::SeqCst);
    let second = now_ns()
        .saturating_sub(window.start_ns)
        .div_ceil(NS_PER_S)
        .max(1);
    emit(&producer.context().recorder, &intervals, id, second);
    let mut r = producer.context().recorder.lock().unwrap();
    // Outstanding messages' origins are inside librdkafka; count them without latencies.
    r.stats.counters.timed_out_msgs += left;
    Ok(std::mem::take(&mut r.stats))
}

fn emit(recorder: &Mutex<Recorder>, intervals: &Sender<Interval>, id: usize, second: u64) {
    let mut r = recorder.lock().unwrap_or_else(|e| e.into_inner());
    let mut interval = std::mem::replace(
        &mut r.interval,
        Interval {
            worker: id,
            ..Interval::default()
        },
    );
    interval.second = second;
    let _ = intervals.send(interval);
}

fn consume_thread(
    id: usize,
    core: Option<usize>,
    args: &RunArgs,
    mode: Mode,
    partitions: Vec<(i32, i64, Option<i64>)>,
    shared: Arc<Shared>,
    intervals: Sender<Interval>,
) -> Result<Stats> {
    if let Some(core) = core {
        pin_to_core(core)?;
    }
    // librdkafka refuses assign() without a group id; nothing joins or commits with it.
    let consumer: BaseConsumer = base_config(args)
        .set("group.id", format!("riptide-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", args.fetch_max_wait_ms.to_string())
        .set("fetch.max.bytes", args.fetch_max_bytes.to_string())
        .set(
            "max.partition.fetch.bytes",
            args.fetch_partition_max_bytes.to_string(),
        )
        .set("fetch.min.bytes", "1")
        .create()
        .context("creating the librdkafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for (partition, start, _) in &partitions {
        assignment.add_partition_offset(&args.topic, *partition, Offset::Offset(*start))?;
    }
    consumer.assign(&assignment)?;
    let window = shared.window;
    let mut stats = Stats::default();
    let mut interval = Interval {
        worker: id,
        ..Interval::default()
    };
    let mut next_offsets: Vec<(i32, i64, Option<i64>)> = partitions.clone();
    let mut next_tick_ns = window.start_ns + NS_PER_S;
    let mut drain_deadline = u64::MAX;
    loop {
        let now = now_ns();
        while now >= next_tick_ns {
            interval.second = (next_tick_ns - window.start_ns) / NS_PER_S;
            let _ = intervals.send(std::mem::replace(
                &mut interval,
                Interval {
                    worker: id,
                    ..Interval::default()
                },
            ));
            next_tick_ns += NS_PER_S;
        }
        let all_read = next_offsets
            .iter()
            .all(|(_, next, end)| end.is_some_and(|end| *next >= end));
        if all_read && !next_offsets.is_empty() {
            break;
        }
        let ending = now >= window.end_ns || INTERRUPTED.load(Ordering::Relaxed);
        if ending && drain_deadline == u64::MAX {
            drain_deadline = now + s_to_ns(args.drain_timeout_s);
        }
        // Consume ends with the window; e2e keeps reading what the producers still deliver.
        if ending && (mode != Mode::E2e || now >= drain_deadline) {
            break;
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => {
                if drain_deadline != u64::MAX && shared.producers_active.load(Ordering::SeqCst) == 0
                {
                    break; // producers done and nothing more arrived
                }
            }
            Some(Err(error)) => {
                stats.counters.consume_errors += 1;
                interval.errors += 1;
                eprintln!("riptide-bench: rdkafka consume error: {error}");
            }
            Some(Ok(message)) => {
                let received_ns = now_ns();
                let bytes =
                    message.payload_len() as u64 + message.key().map_or(0, |k| k.len()) as u64;
                interval.consumed_msgs += 1;
                interval.consumed_bytes += bytes;
                if window.measures(received_ns) {
                    stats.counters.consumed_msgs += 1;
                    stats.counters.consumed_bytes += bytes;
                    stats.counters.last_consume_ns = received_ns;
                }
                if let Some(entry) = next_offsets.iter_mut().find(|e| e.0 == message.partition()) {
                    entry.1 = message.offset() + 1;
                }
                if mode == Mode::E2e {
                    if let Some(value) = message.payload() {
                        if value.len() >= STAMP_SIZE_BYTES && value[..8] == STAMP_MAGIC {
                            let stamp = u64::from_be_bytes(value[8..16].try_into().unwrap());
                            let latency = received_ns.saturating_sub(stamp);
                            interval.e2e.record_ns(latency);
                            if window.measures(stamp) {
                                stats.e2e.record_ns(latency);
                                stats.counters.e2e_msgs += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    let finished_ns = now_ns();
    interval.second = finished_ns
        .saturating_sub(window.start_ns)
        .div_ceil(NS_PER_S)
        .max(1);
    let _ = intervals.send(interval);
    stats.counters.finished_ns = finished_ns;
    Ok(stats)
}
