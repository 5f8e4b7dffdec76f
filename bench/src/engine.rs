//! The native client: one epoll event loop per load core driving producer and consumer
//! connections on non-blocking sockets.
//!
//! Producer side, per worker: messages are *generated* as counters into per-partition open
//! batches (sticky partitioning without keys, murmur2 with keys); a batch that fills moves to
//! the ready queue. A connection with a free request slot takes ready batches, plus open batches
//! whose linger expired (at most one per partition), and materializes them from the template
//! straight into its request buffer. So without linger, batching happens naturally while every
//! slot is busy, as in Kafka's producer. Nothing is allocated per message; batch structs,
//! request buffers and in-flight records are recycled.
//!
//! Every resource is bounded: open batches by the partition count, the ready queue by
//! `ready_cap`, requests by `max_in_flight` per connection and `max_request_bytes`, response
//! frames by [`kafka::MAX_RESPONSE_FRAME_BYTES`]. When everything is full, generation stops and
//! (in fixed-rate mode) the schedule runs ahead, so the delay lands in the latencies.

use crate::cli::{Keys, Mode};
use crate::clock::{now_ns, wall_ms, NS_PER_S};
use crate::hist::{LatencyHistogram, Schedule, Window};
use crate::kafka::{self, FetchCursor, FetchSettings};
use crate::records::{format_key, partition_for_key, walk_batches, BatchTemplate, XorShift};
use anyhow::{bail, Result};
use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Settings shared by every worker of a run.
pub struct EngineConfig {
    pub mode: Mode,
    pub topic: String,
    /// `(partition index, leader node id)` by slot; slot = position in this list.
    pub partitions: Vec<(i32, i32)>,
    pub acks: i16,
    pub produce_version: i16,
    pub fetch_version: i16,
    pub request_timeout_ms: i32,
    pub template: BatchTemplate,
    pub keys: Keys,
    pub linger_ns: u64,
    pub max_in_flight: usize,
    pub max_request_bytes: usize,
    /// Bound on batched-but-unsent payload per worker in fixed-rate mode.
    pub buffer_memory_bytes: usize,
    /// Write producer timestamps into values (end-to-end runs).
    pub stamp: bool,
    pub fetch: FetchSettings,
    pub window: Window,
    pub drain_ns: u64,
    /// Workers whose producers are still sending; consumers in e2e runs stop after it is 0.
    pub producers_active: AtomicUsize,
    /// Set on Ctrl-C: end the run now (then drain).
    pub interrupted: &'static AtomicBool,
}

/// One worker's connections and share of the load.
pub struct WorkerSetup {
    pub index: usize,
    pub core: Option<usize>,
    /// Producer connections and the node id of the broker at the other end.
    pub producers: Vec<(TcpStream, i32)>,
    pub consumers: Vec<(TcpStream, Vec<FetchCursor>)>,
    /// This worker's share of `--rate`; 0 = as fast as possible.
    pub rate_msgs_per_s: f64,
    pub seed: u64,
}

/// Counters of one worker, or of the run after merging.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Acknowledged messages (written ones with acks=0) intended/created in the window.
    pub produced_msgs: u64,
    pub produced_bytes: u64,
    /// Messages of the window in batches the broker rejected.
    pub produce_errors: u64,
    /// Messages of the window handed to a request.
    pub sent_msgs: u64,
    /// Messages of the window still unacknowledged at the end of the drain.
    pub timed_out_msgs: u64,
    /// Of those, messages that were never even sent (client backlog at the end).
    pub unsent_msgs: u64,
    pub produce_requests: u64,
    /// Largest delay behind the fixed-rate schedule seen while generating.
    pub max_schedule_lag_ns: u64,
    /// Records received in the window.
    pub consumed_msgs: u64,
    pub consumed_bytes: u64,
    /// Partition errors in fetch responses.
    pub consume_errors: u64,
    pub fetches: u64,
    /// Stamped records received whose stamp lies in the window (e2e samples).
    pub e2e_msgs: u64,
    /// Last time a consumer received data in the window (for `--until-end` runs).
    pub last_consume_ns: u64,
    /// Connections lost during the run.
    pub connection_errors: u64,
    /// When the worker's event loop ended (the latest over workers once merged).
    pub finished_ns: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.produced_msgs += other.produced_msgs;
        self.produced_bytes += other.produced_bytes;
        self.produce_errors += other.produce_errors;
        self.sent_msgs += other.sent_msgs;
        self.timed_out_msgs += other.timed_out_msgs;
        self.unsent_msgs += other.unsent_msgs;
        self.produce_requests += other.produce_requests;
        self.max_schedule_lag_ns = self.max_schedule_lag_ns.max(other.max_schedule_lag_ns);
        self.consumed_msgs += other.consumed_msgs;
        self.consumed_bytes += other.consumed_bytes;
        self.consume_errors += other.consume_errors;
        self.fetches += other.fetches;
        self.e2e_msgs += other.e2e_msgs;
        self.last_consume_ns = self.last_consume_ns.max(other.last_consume_ns);
        self.connection_errors += other.connection_errors;
        self.finished_ns = self.finished_ns.max(other.finished_ns);
    }
}

/// Histograms and counters over the measurement window.
#[derive(Clone, Default)]
pub struct Stats {
    /// Send (intended, in fixed-rate mode) -> ack.
    pub produce: LatencyHistogram,
    /// Producer stamp -> consumer receipt.
    pub e2e: LatencyHistogram,
    /// Fetch request -> response.
    pub fetch: LatencyHistogram,
    pub counters: Counters,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.produce.add(&other.produce);
        self.e2e.add(&other.e2e);
        self.fetch.add(&other.fetch);
        self.counters.add(&other.counters);
    }
}

/// One second of one worker, for the progress lines and the JSON timeline. Unlike [`Stats`]
/// it covers everything that happened in that second, warm-up included.
#[derive(Clone, Default)]
pub struct Interval {
    pub worker: usize,
    /// Seconds since the start of the run (1 = the first second).
    pub second: u64,
    pub produce: LatencyHistogram,
    pub e2e: LatencyHistogram,
    pub acked_msgs: u64,
    pub acked_bytes: u64,
    pub consumed_msgs: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
}

impl Interval {
    pub fn add(&mut self, other: &Interval) {
        self.produce.add(&other.produce);
        self.e2e.add(&other.e2e);
        self.acked_msgs += other.acked_msgs;
        self.acked_bytes += other.acked_bytes;
        self.consumed_msgs += other.consumed_msgs;
        self.consumed_bytes += other.consumed_bytes;
        self.errors += other.errors;
    }
}

/// A batch being filled or in flight. Records are counters until a request materializes them.
struct Batch {
    slot: usize,
    records: u32,
    /// Intended time of the first record (fixed rate) or creation time (max rate).
    first_ns: u64,
    /// Serial number, to recognise stale entries in `open_order`.
    serial: u64,
    /// Per-record intended times (fixed rate only).
    times: Vec<u64>,
    /// Per-record key ids (keyed only).
    key_ids: Vec<u64>,
}

struct InFlight {
    correlation_id: i32,
    batches: Vec<Batch>,
}

struct ProducerConn {
    stream: TcpStream,
    fd: RawFd,
    broker: i32,
    /// The request being written; empty when the connection may start a new one.
    write_buf: Vec<u8>,
    written_bytes: usize,
    read_buf: Vec<u8>,
    in_flight: VecDeque<InFlight>,
    next_correlation_id: i32,
    polling_writable: bool,
    dead: bool,
}

struct ConsumerConn {
    stream: TcpStream,
    fd: RawFd,
    cursors: Vec<FetchCursor>,
    write_buf: BytesMut,
    written_bytes: usize,
    read_buf: BytesMut,
    /// Correlation id and send time of the outstanding fetch.
    in_flight: Option<(i32, u64)>,
    next_correlation_id: i32,
    polling_writable: bool,
    done: bool,
    dead: bool,
}

/// The generator and accumulator of one worker.
struct Producer {
    schedule: Option<Schedule>,
    /// Open batch per partition slot.
    open: Vec<Option<Batch>>,
    /// Slots of open batches in opening order, with the batch serial (stale entries skipped).
    open_order: VecDeque<(usize, u64)>,
    ready: VecDeque<Batch>,
    ready_cap: usize,
    spare_batches: Vec<Batch>,
    spare_in_flight: Vec<InFlight>,
    sticky_slot: usize,
    next_serial: u64,
    rng: XorShift,
    /// Per slot: serial of the request that already holds a batch of it.
    taken_by_request: Vec<u64>,
    request_serial: u64,
    scratch: Vec<u8>,
    per_record_times: bool,
    max_records: u32,
    message_bytes: u64,
    finished: bool,
}

const TOKEN_CONSUMER_BASE: u64 = 1 << 32;
const READ_CHUNK_BYTES: usize = 256 * 1024;

pub struct Worker {
    config: Arc<EngineConfig>,
    setup_index: usize,
    core: Option<usize>,
    producer: Producer,
    producers: Vec<ProducerConn>,
    consumers: Vec<ConsumerConn>,
    stats: Stats,
    interval: Interval,
    intervals: Sender<Interval>,
    epoll_fd: RawFd,
    draining: bool,
    drain_deadline_ns: u64,
    producer_done_reported: bool,
    error_partitions: Vec<i32>,
}

impl Worker {
    pub fn new(
        config: Arc<EngineConfig>,
        setup: WorkerSetup,
        intervals: Sender<Interval>,
    ) -> Result<Worker> {
        let slot_count = config.partitions.len();
        let max_records = config.template.max_records() as u32;
        let typical_request_batches = (config.max_request_bytes
            / config
                .template
                .batch_size_bytes(max_records as usize)
                .max(1))
        .clamp(1, slot_count);
        let per_record_times = setup.rate_msgs_per_s > 0.0;
        let producer = Producer {
            schedule: (setup.rate_msgs_per_s > 0.0)
                .then(|| Schedule::new(config.window.start_ns, setup.rate_msgs_per_s)),
            open: (0..slot_count).map(|_| None).collect(),
            open_order: VecDeque::with_capacity(slot_count),
            ready: VecDeque::new(),
            ready_cap: if per_record_times {
                // Fixed rate: like Kafka's `buffer.memory`, room to ride out a broker stall
                // before the schedule has to run ahead of the sender.
                (config.buffer_memory_bytes
                    / config
                        .template
                        .batch_size_bytes(max_records as usize)
                        .max(1))
                .max(4)
            } else {
                // Max rate: two requests' worth per connection, enough to keep every slot
                // busy and short enough that a batch's creation time stays near its send time.
                (2 * setup.producers.len().max(1) * typical_request_batches).max(4)
            },
            spare_batches: Vec::new(),
            spare_in_flight: Vec::new(),
            sticky_slot: (setup.index * 7919) % slot_count.max(1),
            next_serial: 1,
            rng: XorShift::new(setup.seed),
            taken_by_request: vec![0; slot_count],
            request_serial: 0,
            scratch: Vec::new(),
            per_record_times,
            max_records,
            message_bytes: (config.template.value_size_bytes()
                + config.keys.key_size_bytes().unwrap_or(0)) as u64,
            finished: setup.producers.is_empty(),
        };
        // SAFETY: plain syscall; the fd is closed in Drop.
        let epoll_fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll_fd < 0 {
            bail!("epoll_create1: {}", io::Error::last_os_error());
        }
        let mut worker = Worker {
            setup_index: setup.index,
            core: setup.core,
            producer,
            producers: Vec::new(),
            consumers: Vec::new(),
            stats: Stats::default(),
            interval: Interval {
                worker: setup.index,
                ..Interval::default()
            },
            intervals,
            epoll_fd,
            draining: false,
            drain_deadline_ns: u64::MAX,
            producer_done_reported: false,
            error_partitions: Vec::new(),
            config,
        };
        for (index, (stream, broker)) in setup.producers.into_iter().enumerate() {
            stream.set_nonblocking(true)?;
            let fd = stream.as_raw_fd();
            worker.epoll_add(fd, index as u64)?;
            worker.producers.push(ProducerConn {
                stream,
                fd,
                broker,
                write_buf: Vec::with_capacity(worker.config.max_request_bytes + 4096),
                written_bytes: 0,
                read_buf: Vec::with_capacity(64 * 1024),
                in_flight: VecDeque::with_capacity(worker.config.max_in_flight),
                next_correlation_id: 1,
                polling_writable: false,
                dead: false,
            });
        }
        for (index, (stream, cursors)) in setup.consumers.into_iter().enumerate() {
            stream.set_nonblocking(true)?;
            let fd = stream.as_raw_fd();
            worker.epoll_add(fd, TOKEN_CONSUMER_BASE + index as u64)?;
            worker.consumers.push(ConsumerConn {
                stream,
                fd,
                cursors,
                write_buf: BytesMut::new(),
                written_bytes: 0,
                read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
                in_flight: None,
                next_correlation_id: 1,
                polling_writable: false,
                done: false,
                dead: false,
            });
        }
        Ok(worker)
    }

    fn epoll_add(&self, fd: RawFd, token: u64) -> Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd, socket fd and event struct.
        if unsafe { libc::epoll_ctl(self.epoll_fd, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            bail!("epoll_ctl add: {}", io::Error::last_os_error());
        }
        Ok(())
    }

    fn epoll_set_writable(epoll_fd: RawFd, fd: RawFd, token: u64, writable: bool) {
        let mut events = libc::EPOLLIN as u32;
        if writable {
            events |= libc::EPOLLOUT as u32;
        }
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: as above; failure only means the fd is gone, which reads will report.
        unsafe { libc::epoll_ctl(epoll_fd, libc::EPOLL_CTL_MOD, fd, &mut event) };
    }

    /// Runs the event loop to the end of the drain and returns the window's statistics.
    pub fn run(mut self) -> Result<Stats> {
        if let Some(core) = self.core {
            pin_to_core(core)?;
        }
        // Sub-microsecond timer slack, so fixed-rate wake-ups are on time.
        // SAFETY: prctl with an integer argument.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        let window = self.config.window;
        let start = window.start_ns;
        while now_ns() < start {
            std::thread::sleep(std::time::Duration::from_nanos(
                start.saturating_sub(now_ns()).min(1_000_000),
            ));
        }
        let mut next_tick_ns = start + NS_PER_S;
        let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let now = now_ns();
            if !self.draining
                && (now >= window.end_ns || self.config.interrupted.load(Ordering::Relaxed))
            {
                // Messages are taken off the schedule lazily (when a request slot frees up);
                // take the window's last ones before the schedule closes.
                if self.producer.schedule.is_some() {
                    self.generate(now.min(window.end_ns.saturating_sub(1)));
                }
                self.begin_drain(now);
            }
            let mut progressed = false;
            if !self.draining {
                progressed |= self.generate(now);
            }
            progressed |= self.send_produce_requests(now);
            self.send_fetches(now);
            while now >= next_tick_ns {
                self.emit_interval((next_tick_ns - start) / NS_PER_S);
                next_tick_ns += NS_PER_S;
            }
            if !self.draining
                && self.producers.is_empty()
                && !self.consumers.is_empty()
                && self.consumers.iter().all(|c| c.done || c.dead)
            {
                // Consumers read everything they were asked to (`--until-end`).
                self.begin_drain(now);
            }
            if self.draining {
                self.check_producers_done();
                let consumers_done = self.consumers.iter().all(|c| c.done || c.dead);
                if (self.producer.finished && consumers_done) || now >= self.drain_deadline_ns {
                    break;
                }
            }
            let timeout_ns = if progressed && self.any_producer_free() {
                0
            } else {
                self.next_wakeup_ns(now, next_tick_ns).saturating_sub(now)
            };
            let ready = epoll_wait_ns(self.epoll_fd, &mut events, timeout_ns)?;
            for event in &events[..ready] {
                let token = event.u64;
                let flags = event.events;
                if token >= TOKEN_CONSUMER_BASE {
                    self.on_consumer_event((token - TOKEN_CONSUMER_BASE) as usize, flags);
                } else {
                    self.on_producer_event(token as usize, flags);
                }
            }
        }
        let finished_ns = now_ns();
        self.finish(finished_ns);
        self.stats.counters.finished_ns = finished_ns;
        Ok(std::mem::take(&mut self.stats))
    }

    fn begin_drain(&mut self, now: u64) {
        self.draining = true;
        self.drain_deadline_ns = now + self.config.drain_ns;
        // Messages the schedule wanted in the window but the client never took.
        if let Some(schedule) = &self.producer.schedule {
            let due = schedule.due_by(self.config.window.end_ns.saturating_sub(1));
            let mut index = schedule.taken();
            while index < due {
                let intended = schedule.intended_ns(index);
                if self.config.window.measures(intended) {
                    self.stats.counters.unsent_msgs += 1;
                    self.stats.counters.timed_out_msgs += 1;
                    // A lower bound: it has waited at least this long and was never sent.
                    self.stats.produce.record_ns(now.saturating_sub(intended));
                }
                index += 1;
            }
        }
    }

    fn check_producers_done(&mut self) {
        let p = &self.producer;
        let idle = p.ready.is_empty()
            && p.open_order.is_empty()
            && self
                .producers
                .iter()
                .all(|c| c.dead || (c.in_flight.is_empty() && c.write_buf.is_empty()));
        if idle {
            self.producer.finished = true;
        }
        if self.producer.finished && !self.producer_done_reported && !self.producers.is_empty() {
            self.producer_done_reported = true;
            self.config.producers_active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn any_producer_free(&self) -> bool {
        self.producers.iter().any(|c| self.producer_free(c))
    }

    fn producer_free(&self, conn: &ProducerConn) -> bool {
        !conn.dead
            && conn.write_buf.is_empty()
            && (self.config.acks == 0 || conn.in_flight.len() < self.config.max_in_flight)
    }

    /// The earliest instant something has to happen without a socket event.
    fn next_wakeup_ns(&self, now: u64, next_tick_ns: u64) -> u64 {
        let mut wake = next_tick_ns;
        if self.draining {
            wake = wake.min(self.drain_deadline_ns);
        } else {
            wake = wake.min(self.config.window.end_ns);
        }
        if self.producers.is_empty() || !self.any_producer_free() {
            return wake;
        }
        let linger = self.config.linger_ns;
        // An open batch that becomes sendable when its linger expires.
        if let Some(&(slot, serial)) = self.producer.open_order.front() {
            if let Some(batch) = &self.producer.open[slot] {
                if batch.serial == serial {
                    wake = wake.min(batch.first_ns + linger);
                }
            }
        }
        if !self.draining {
            match &self.producer.schedule {
                // The next message opens a batch that is sendable after the linger.
                Some(schedule) if self.producer.ready.len() < self.producer.ready_cap => {
                    let next = schedule.next_intended_ns();
                    let opens_batch = self.producer.open_order.is_empty();
                    wake = wake.min(if opens_batch { next + linger } else { next });
                }
                Some(_) => {}
                None => {
                    if self.producer.ready.len() < self.producer.ready_cap {
                        wake = now;
                    }
                }
            }
        }
        wake.max(now)
    }

    // -----------------------------------------------------------------------------------------
    // Generation

    /// Takes due (fixed rate) or needed (max rate) messages into batches. Returns true if any.
    fn generate(&mut self, now: u64) -> bool {
        if self.producers.is_empty() {
            return false;
        }
        let mut generated = false;
        if let Some(mut schedule) = self.producer.schedule.take() {
            let lag = schedule.lag_ns(now);
            if lag > self.stats.counters.max_schedule_lag_ns && schedule.next_intended_ns() <= now {
                self.stats.counters.max_schedule_lag_ns = lag;
            }
            while self.producer.ready.len() < self.producer.ready_cap {
                match schedule.take_due(now) {
                    Some(intended) => {
                        self.append_message(intended);
                        generated = true;
                    }
                    None => break,
                }
            }
            self.producer.schedule = Some(schedule);
        } else {
            while self.producer.ready.len() < self.producer.ready_cap {
                if self.config.keys == Keys::None {
                    self.append_full_batch(now);
                } else {
                    for _ in 0..self.producer.max_records {
                        self.append_message(now);
                    }
                }
                generated = true;
            }
        }
        generated
    }

    fn new_batch(&mut self, slot: usize, first_ns: u64) -> Batch {
        let p = &mut self.producer;
        let mut batch = p.spare_batches.pop().unwrap_or_else(|| Batch {
            slot: 0,
            records: 0,
            first_ns: 0,
            serial: 0,
            times: Vec::new(),
            key_ids: Vec::new(),
        });
        batch.slot = slot;
        batch.records = 0;
        batch.first_ns = first_ns;
        batch.serial = p.next_serial;
        p.next_serial += 1;
        batch.times.clear();
        batch.key_ids.clear();
        batch
    }

    /// Max rate without keys: a whole batch of the sticky partition at once.
    fn append_full_batch(&mut self, now: u64) {
        let slot = self.producer.sticky_slot;
        let mut batch = match self.producer.open[slot].take() {
            Some(batch) => batch,
            None => self.new_batch(slot, now),
        };
        batch.records = self.producer.max_records;
        self.producer.ready.push_back(batch);
        self.producer.sticky_slot = (slot + 1) % self.producer.open.len();
    }

    fn append_message(&mut self, time_ns: u64) {
        let keys = self.config.keys;
        let (slot, key_id) = match keys {
            Keys::None => (self.producer.sticky_slot, 0),
            Keys::Random | Keys::Distinct(_) => {
                let id = match keys {
                    Keys::Distinct(count) => self.producer.rng.below(count),
                    _ => self.producer.rng.next_u64(),
                };
                let mut key = [0u8; 32];
                let size = keys.key_size_bytes().unwrap_or(0).min(key.len());
                format_key(keys, id, &mut key[..size]);
                let partition =
                    partition_for_key(&key[..size], self.config.partitions.len() as u32);
                (partition as usize, id)
            }
        };
        if self.producer.open[slot].is_none() {
            let batch = self.new_batch(slot, time_ns);
            self.producer.open_order.push_back((slot, batch.serial));
            self.producer.open[slot] = Some(batch);
        }
        let per_record_times = self.producer.per_record_times;
        let max_records = self.producer.max_records;
        let batch = self.producer.open[slot].as_mut().expect("opened above");
        batch.records += 1;
        if per_record_times {
            batch.times.push(time_ns);
        }
        if keys != Keys::None {
            batch.key_ids.push(key_id);
        }
        if batch.records >= max_records {
            let batch = self.producer.open[slot].take().expect("present");
            self.producer.ready.push_back(batch);
            if keys == Keys::None {
                self.producer.sticky_slot = (slot + 1) % self.producer.open.len();
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Produce requests

    /// Fills every free connection with requests. Returns true if any request was started.
    fn send_produce_requests(&mut self, now: u64) -> bool {
        let mut sent = false;
        for index in 0..self.producers.len() {
            while self.producer_free(&self.producers[index]) {
                if !self.build_request(index, now) {
                    break;
                }
                sent = true;
                self.flush_producer(index);
            }
        }
        sent
    }

    /// Builds one request for connection `index` from ready batches and expired open ones.
    fn build_request(&mut self, index: usize, now: u64) -> bool {
        let config = Arc::clone(&self.config);
        let broker = self.producers[index].broker;
        let p = &mut self.producer;
        p.request_serial += 1;
        let serial = p.request_serial;
        let mut in_flight = p.spare_in_flight.pop().unwrap_or_else(|| InFlight {
            correlation_id: 0,
            batches: Vec::new(),
        });
        in_flight.batches.clear();
        let mut budget_bytes = config.max_request_bytes.saturating_sub(256);
        // Ready (full) batches first, in order.
        let mut position = 0;
        while position < p.ready.len() {
            let batch = &p.ready[position];
            let size = config.template.batch_size_bytes(batch.records as usize) + 12;
            let eligible = config.partitions[batch.slot].1 == broker
                && p.taken_by_request[batch.slot] != serial
                && (in_flight.batches.is_empty() || size <= budget_bytes);
            if eligible {
                budget_bytes = budget_bytes.saturating_sub(size);
                p.taken_by_request[batch.slot] = serial;
                let batch = p.ready.remove(position).expect("in range");
                in_flight.batches.push(batch);
                if budget_bytes == 0 {
                    break;
                }
            } else {
                position += 1;
            }
        }
        // Then open batches whose linger has expired (all of them when draining).
        let mut position = 0;
        while position < p.open_order.len() {
            let (slot, batch_serial) = p.open_order[position];
            let current = p.open[slot]
                .as_ref()
                .map(|b| (b.serial, b.first_ns, b.records));
            match current {
                Some((s, first_ns, records)) if s == batch_serial => {
                    if !self.draining && first_ns + config.linger_ns > now {
                        break; // later entries opened later still
                    }
                    let size = config.template.batch_size_bytes(records as usize) + 12;
                    let eligible = config.partitions[slot].1 == broker
                        && p.taken_by_request[slot] != serial
                        && (in_flight.batches.is_empty() || size <= budget_bytes);
                    if eligible {
                        budget_bytes = budget_bytes.saturating_sub(size);
                        p.taken_by_request[slot] = serial;
                        let batch = p.open[slot].take().expect("present");
                        p.open_order.remove(position);
                        in_flight.batches.push(batch);
                        if config.keys == Keys::None && slot == p.sticky_slot {
                            // Sticky partitioning moves on once a batch is sent, as Kafka's does.
                            p.sticky_slot = (slot + 1) % p.open.len();
                        }
                    } else {
                        position += 1;
                    }
                }
                _ => {
                    p.open_order.remove(position); // stale: the batch filled up and moved on
                }
            }
        }
        if in_flight.batches.is_empty() {
            p.spare_in_flight.push(in_flight);
            return false;
        }
        // Materialize.
        let conn = &mut self.producers[index];
        let correlation_id = conn.next_correlation_id;
        conn.next_correlation_id = conn.next_correlation_id.wrapping_add(1);
        in_flight.correlation_id = correlation_id;
        let out = &mut conn.write_buf;
        out.clear();
        let marks = kafka::start_produce_request(
            out,
            config.produce_version,
            correlation_id,
            config.acks,
            config.request_timeout_ms,
            &config.topic,
        );
        let base_timestamp_ms = wall_ms();
        let mut sent_in_window = 0u64;
        for batch in &in_flight.batches {
            let at = kafka::start_partition(out, config.partitions[batch.slot].0);
            let times = &batch.times;
            let first_ns = batch.first_ns;
            let per_record = |i: usize| times[i];
            let shared = |_: usize| first_ns;
            let stamp: Option<&dyn Fn(usize) -> u64> = if !config.stamp {
                None
            } else if times.is_empty() {
                Some(&shared as &dyn Fn(usize) -> u64)
            } else {
                Some(&per_record as &dyn Fn(usize) -> u64)
            };
            let key_ids = &batch.key_ids;
            let key_of = |i: usize| key_ids[i];
            let key: Option<&dyn Fn(usize) -> u64> =
                (config.keys != Keys::None).then_some(&key_of as &dyn Fn(usize) -> u64);
            if let Err(error) = config.template.write_batch(
                out,
                batch.records as usize,
                base_timestamp_ms,
                stamp,
                key,
                config.keys,
                &mut p.scratch,
            ) {
                eprintln!("riptide-bench: cannot encode batch: {error:#}");
            }
            kafka::finish_partition(out, at);
            sent_in_window += count_in_window(batch, &config.window);
        }
        kafka::finish_produce_request(out, marks, in_flight.batches.len() as i32);
        conn.written_bytes = 0;
        conn.in_flight.push_back(in_flight);
        self.stats.counters.sent_msgs += sent_in_window;
        self.stats.counters.produce_requests += 1;
        true
    }

    /// Writes as much of the pending request as the socket takes.
    fn flush_producer(&mut self, index: usize) {
        let conn = &mut self.producers[index];
        while conn.written_bytes < conn.write_buf.len() {
            let rest = &conn.write_buf[conn.written_bytes..];
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::write(conn.fd, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                conn.written_bytes += n as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock => {
                    if !conn.polling_writable {
                        conn.polling_writable = true;
                        Self::epoll_set_writable(self.epoll_fd, conn.fd, index as u64, true);
                    }
                    return;
                }
                io::ErrorKind::Interrupted => continue,
                _ => {
                    self.producer_failed(index, &format!("write: {error}"));
                    return;
                }
            }
        }
        conn.write_buf.clear();
        conn.written_bytes = 0;
        if conn.polling_writable {
            conn.polling_writable = false;
            Self::epoll_set_writable(self.epoll_fd, conn.fd, index as u64, false);
        }
        if self.config.acks == 0 {
            // No response will come: the request is done once written.
            if let Some(in_flight) = self.producers[index].in_flight.pop_front() {
                self.complete_request(in_flight, now_ns(), None);
            }
        }
    }

    fn on_producer_event(&mut self, index: usize, flags: u32) {
        if self.producers[index].dead {
            return;
        }
        if flags & libc::EPOLLOUT as u32 != 0 {
            self.flush_producer(index);
        }
        if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            self.read_producer(index);
        }
    }

    fn read_producer(&mut self, index: usize) {
        loop {
            let conn = &mut self.producers[index];
            let length = conn.read_buf.len();
            conn.read_buf.reserve(64 * 1024);
            let spare = conn.read_buf.capacity() - length;
            // SAFETY: reading into the vector's spare capacity, then extending its length.
            let n = unsafe {
                libc::read(
                    conn.fd,
                    conn.read_buf.as_mut_ptr().add(length).cast(),
                    spare,
                )
            };
            if n > 0 {
                unsafe { conn.read_buf.set_len(length + n as usize) };
                let received_ns = now_ns();
                if let Err(error) = self.parse_produce_responses(index, received_ns) {
                    self.producer_failed(index, &format!("{error:#}"));
                    return;
                }
                continue;
            }
            if n == 0 {
                self.producer_failed(index, "connection closed by broker");
                return;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock => return,
                io::ErrorKind::Interrupted => continue,
                _ => {
                    self.producer_failed(index, &format!("read: {error}"));
                    return;
                }
            }
        }
    }

    fn parse_produce_responses(&mut self, index: usize, received_ns: u64) -> Result<()> {
        let version = self.config.produce_version;
        let mut consumed = 0usize;
        loop {
            let conn = &mut self.producers[index];
            let buffer = &conn.read_buf[consumed..];
            if buffer.len() < 4 {
                break;
            }
            let size = i32::from_be_bytes(buffer[..4].try_into().unwrap());
            if size < 4 || size as usize > kafka::MAX_RESPONSE_FRAME_BYTES {
                bail!("bad produce response frame size {size}");
            }
            if buffer.len() < 4 + size as usize {
                break;
            }
            let frame = &buffer[4..4 + size as usize];
            let correlation_id = i32::from_be_bytes(frame[..4].try_into().unwrap());
            let in_flight = match conn.in_flight.pop_front() {
                Some(in_flight) if in_flight.correlation_id == correlation_id => in_flight,
                other => bail!(
                    "produce response for correlation id {correlation_id}, expected {:?}",
                    other.map(|f| f.correlation_id)
                ),
            };
            self.error_partitions.clear();
            let errors = &mut self.error_partitions;
            kafka::parse_produce_response(&frame[4..], version, |partition, error_code| {
                if error_code != 0 {
                    errors.push(partition);
                    note_error_code(error_code);
                }
            })?;
            consumed += 4 + size as usize;
            let errors = std::mem::take(&mut self.error_partitions);
            self.complete_request(in_flight, received_ns, Some(&errors));
            self.error_partitions = errors;
        }
        if consumed > 0 {
            self.producers[index].read_buf.drain(..consumed);
        }
        Ok(())
    }

    /// Accounts an acknowledged (or, with acks=0, written) request and recycles its batches.
    fn complete_request(
        &mut self,
        mut in_flight: InFlight,
        ack_ns: u64,
        error_partitions: Option<&[i32]>,
    ) {
        let window = self.config.window;
        let measure_latency = self.config.acks != 0;
        let message_bytes = self.producer.message_bytes;
        for batch in in_flight.batches.drain(..) {
            let partition = self.config.partitions[batch.slot].0;
            let failed = error_partitions.is_some_and(|errors| errors.contains(&partition));
            if failed {
                self.stats.counters.produce_errors += count_in_window(&batch, &window);
                self.interval.errors += u64::from(batch.records);
            } else {
                self.interval.acked_msgs += u64::from(batch.records);
                self.interval.acked_bytes += u64::from(batch.records) * message_bytes;
                if batch.times.is_empty() {
                    let latency = ack_ns.saturating_sub(batch.first_ns);
                    let records = u64::from(batch.records);
                    if measure_latency {
                        self.interval.produce.record_n_ns(latency, records);
                    }
                    if window.measures(batch.first_ns) {
                        self.stats.counters.produced_msgs += records;
                        self.stats.counters.produced_bytes += records * message_bytes;
                        if measure_latency {
                            self.stats.produce.record_n_ns(latency, records);
                        }
                    }
                } else {
                    for &intended in &batch.times {
                        let latency = ack_ns.saturating_sub(intended);
                        if measure_latency {
                            self.interval.produce.record_ns(latency);
                        }
                        if window.measures(intended) {
                            self.stats.counters.produced_msgs += 1;
                            self.stats.counters.produced_bytes += message_bytes;
                            if measure_latency {
                                self.stats.produce.record_ns(latency);
                            }
                        }
                    }
                }
            }
            self.producer.spare_batches.push(batch);
        }
        self.producer.spare_in_flight.push(in_flight);
    }

    fn producer_failed(&mut self, index: usize, reason: &str) {
        let conn = &mut self.producers[index];
        if conn.dead {
            return;
        }
        conn.dead = true;
        eprintln!(
            "riptide-bench: producer connection {index} (broker {}) failed: {reason}",
            conn.broker
        );
        self.stats.counters.connection_errors += 1;
        // SAFETY: removing a registered fd.
        unsafe {
            libc::epoll_ctl(
                self.epoll_fd,
                libc::EPOLL_CTL_DEL,
                conn.fd,
                std::ptr::null_mut(),
            )
        };
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        let lost: Vec<InFlight> = conn.in_flight.drain(..).collect();
        conn.write_buf.clear();
        let window = self.config.window;
        for mut in_flight in lost {
            for batch in in_flight.batches.drain(..) {
                self.stats.counters.produce_errors += count_in_window(&batch, &window);
                self.producer.spare_batches.push(batch);
            }
            self.producer.spare_in_flight.push(in_flight);
        }
        if self.producers.iter().all(|c| c.dead) {
            // Nothing left to send with: stop generating.
            self.producer.schedule = None;
            self.producer.ready.clear();
            self.producer.open_order.clear();
            self.producer.open.iter_mut().for_each(|b| *b = None);
            self.producer.finished = true;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Fetches

    fn send_fetches(&mut self, now: u64) {
        for index in 0..self.consumers.len() {
            let conn = &mut self.consumers[index];
            if conn.dead || conn.done || conn.in_flight.is_some() || !conn.write_buf.is_empty() {
                continue;
            }
            if self.draining && self.consumer_finished(index) {
                self.consumers[index].done = true;
                continue;
            }
            let conn = &mut self.consumers[index];
            if conn.cursors.iter().all(FetchCursor::finished) {
                conn.done = true;
                continue;
            }
            let correlation_id = conn.next_correlation_id;
            conn.next_correlation_id = conn.next_correlation_id.wrapping_add(1);
            match kafka::encode_fetch_request(
                self.config.fetch_version,
                correlation_id,
                &self.config.topic,
                &conn.cursors,
                &self.config.fetch,
            ) {
                Ok(frame) => {
                    conn.write_buf = frame;
                    conn.written_bytes = 0;
                    conn.in_flight = Some((correlation_id, now));
                    self.stats.counters.fetches += 1;
                    self.flush_consumer(index);
                }
                Err(error) => self.consumer_failed(index, &format!("encode fetch: {error:#}")),
            }
        }
    }

    /// In e2e runs a consumer stops once the producers are done and it has caught up.
    fn consumer_finished(&self, index: usize) -> bool {
        let conn = &self.consumers[index];
        match self.config.mode {
            Mode::E2e => {
                self.config.producers_active.load(Ordering::SeqCst) == 0
                    && conn
                        .cursors
                        .iter()
                        .all(|c| c.finished() || c.next_offset >= c.high_watermark)
            }
            _ => true,
        }
    }

    fn flush_consumer(&mut self, index: usize) {
        let conn = &mut self.consumers[index];
        while conn.written_bytes < conn.write_buf.len() {
            let rest = &conn.write_buf[conn.written_bytes..];
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::write(conn.fd, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                conn.written_bytes += n as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock => {
                    if !conn.polling_writable {
                        conn.polling_writable = true;
                        Self::epoll_set_writable(
                            self.epoll_fd,
                            conn.fd,
                            TOKEN_CONSUMER_BASE + index as u64,
                            true,
                        );
                    }
                    return;
                }
                io::ErrorKind::Interrupted => continue,
                _ => {
                    self.consumer_failed(index, &format!("write: {error}"));
                    return;
                }
            }
        }
        conn.write_buf.clear();
        conn.written_bytes = 0;
        if conn.polling_writable {
            conn.polling_writable = false;
            Self::epoll_set_writable(
                self.epoll_fd,
                conn.fd,
                TOKEN_CONSUMER_BASE + index as u64,
                false,
            );
        }
    }

    fn on_consumer_event(&mut self, index: usize, flags: u32) {
        if self.consumers[index].dead {
            return;
        }
        if flags & libc::EPOLLOUT as u32 != 0 {
            self.flush_consumer(index);
        }
        if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            self.read_consumer(index);
        }
    }

    fn read_consumer(&mut self, index: usize) {
        loop {
            let conn = &mut self.consumers[index];
            // Size the buffer for the frame being read, so big fetches take few reads.
            let want = match conn.read_buf.len() {
                length if length >= 4 => {
                    let size = i32::from_be_bytes(conn.read_buf[..4].try_into().unwrap());
                    (size.max(0) as usize + 4).saturating_sub(length)
                }
                _ => 0,
            }
            .clamp(READ_CHUNK_BYTES, 64 * 1024 * 1024);
            conn.read_buf.reserve(want);
            let length = conn.read_buf.len();
            let spare = conn.read_buf.capacity() - length;
            // SAFETY: reading into spare capacity, then extending the length.
            let n = unsafe {
                libc::read(
                    conn.fd,
                    conn.read_buf.as_mut_ptr().add(length).cast(),
                    spare,
                )
            };
            if n > 0 {
                unsafe { conn.read_buf.set_len(length + n as usize) };
                let received_ns = now_ns();
                if let Err(error) = self.parse_fetch_responses(index, received_ns) {
                    self.consumer_failed(index, &format!("{error:#}"));
                    return;
                }
                continue;
            }
            if n == 0 {
                self.consumer_failed(index, "connection closed by broker");
                return;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock => return,
                io::ErrorKind::Interrupted => continue,
                _ => {
                    self.consumer_failed(index, &format!("read: {error}"));
                    return;
                }
            }
        }
    }

    fn parse_fetch_responses(&mut self, index: usize, received_ns: u64) -> Result<()> {
        loop {
            let conn = &mut self.consumers[index];
            if conn.read_buf.len() < 4 {
                return Ok(());
            }
            let size = i32::from_be_bytes(conn.read_buf[..4].try_into().unwrap());
            if size < 4 || size as usize > kafka::MAX_RESPONSE_FRAME_BYTES {
                bail!("bad fetch response frame size {size}");
            }
            if conn.read_buf.len() < 4 + size as usize {
                return Ok(());
            }
            let mut frame = conn.read_buf.split_to(4 + size as usize).freeze();
            frame.advance(4);
            let (correlation_id, response) =
                kafka::decode_fetch_response(&mut frame, self.config.fetch_version)?;
            let sent_ns = match conn.in_flight.take() {
                Some((expected, sent_ns)) if expected == correlation_id => sent_ns,
                other => bail!(
                    "fetch response for correlation id {correlation_id}, expected {:?}",
                    other.map(|(id, _)| id)
                ),
            };
            let window = self.config.window;
            let in_window = window.measures(received_ns);
            self.stats
                .fetch
                .record_ns(received_ns.saturating_sub(sent_ns));
            if response.error_code != 0 {
                self.stats.counters.consume_errors += 1;
                note_error_code(response.error_code);
            }
            let stamp = self.config.stamp;
            let mut e2e_samples = 0u64;
            let stats = &mut self.stats;
            let interval = &mut self.interval;
            let mut on_stamp = |stamp_ns: u64| {
                let latency = received_ns.saturating_sub(stamp_ns);
                interval.e2e.record_ns(latency);
                if window.measures(stamp_ns) {
                    stats.e2e.record_ns(latency);
                    e2e_samples += 1;
                }
            };
            for topic in &response.responses {
                for data in &topic.partitions {
                    let Some(cursor) = conn
                        .cursors
                        .iter_mut()
                        .find(|c| c.partition == data.partition_index)
                    else {
                        continue;
                    };
                    if data.error_code != 0 {
                        stats.counters.consume_errors += 1;
                        interval.errors += 1;
                        note_error_code(data.error_code);
                        if data.error_code == 1 {
                            // OFFSET_OUT_OF_RANGE: nothing more to read from here.
                            cursor.end_offset = Some(cursor.next_offset);
                        }
                        continue;
                    }
                    cursor.high_watermark = data.high_watermark;
                    let Some(records) = &data.records else {
                        continue;
                    };
                    let summary =
                        walk_batches(records, if stamp { Some(&mut on_stamp) } else { None })?;
                    if let Some(next) = summary.next_offset {
                        cursor.next_offset = cursor.next_offset.max(next);
                    }
                    interval.consumed_msgs += summary.records;
                    interval.consumed_bytes += summary.bytes;
                    if in_window {
                        stats.counters.consumed_msgs += summary.records;
                        stats.counters.consumed_bytes += summary.bytes;
                        if summary.records > 0 {
                            stats.counters.last_consume_ns = received_ns;
                        }
                    }
                }
            }
            self.stats.counters.e2e_msgs += e2e_samples;
        }
    }

    fn consumer_failed(&mut self, index: usize, reason: &str) {
        let conn = &mut self.consumers[index];
        if conn.dead {
            return;
        }
        conn.dead = true;
        eprintln!("riptide-bench: consumer connection {index} failed: {reason}");
        self.stats.counters.connection_errors += 1;
        // SAFETY: removing a registered fd.
        unsafe {
            libc::epoll_ctl(
                self.epoll_fd,
                libc::EPOLL_CTL_DEL,
                conn.fd,
                std::ptr::null_mut(),
            )
        };
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }

    // -----------------------------------------------------------------------------------------
    // Bookkeeping

    /// Sends the interval that ends at second `second` of the run and starts a new one.
    fn emit_interval(&mut self, second: u64) {
        let mut interval = std::mem::replace(
            &mut self.interval,
            Interval {
                worker: self.setup_index,
                ..Interval::default()
            },
        );
        interval.second = second;
        let _ = self.intervals.send(interval);
    }

    /// Ends the run: whatever is still outstanding timed out. Its latency is recorded as the
    /// time it has waited so far, a lower bound, so that a broker that stops answering at the
    /// end cannot improve the percentiles.
    fn finish(&mut self, now: u64) {
        let window = self.config.window;
        let mut outstanding: Vec<Batch> = Vec::new();
        for conn in &mut self.producers {
            for mut in_flight in conn.in_flight.drain(..) {
                outstanding.append(&mut in_flight.batches);
            }
        }
        outstanding.extend(self.producer.ready.drain(..));
        outstanding.extend(self.producer.open.iter_mut().filter_map(Option::take));
        for batch in outstanding {
            if batch.times.is_empty() {
                if window.measures(batch.first_ns) {
                    let records = u64::from(batch.records);
                    self.stats.counters.timed_out_msgs += records;
                    if self.config.acks != 0 {
                        self.stats
                            .produce
                            .record_n_ns(now.saturating_sub(batch.first_ns), records);
                    }
                }
            } else {
                for &intended in &batch.times {
                    if window.measures(intended) {
                        self.stats.counters.timed_out_msgs += 1;
                        if self.config.acks != 0 {
                            self.stats.produce.record_ns(now.saturating_sub(intended));
                        }
                    }
                }
            }
        }
        if !self.producer_done_reported && !self.producers.is_empty() {
            self.producer_done_reported = true;
            self.config.producers_active.fetch_sub(1, Ordering::SeqCst);
        }
        // A last partial interval, so the tail of the run is not lost.
        let second = now
            .saturating_sub(window.start_ns)
            .div_ceil(NS_PER_S)
            .max(1);
        self.emit_interval(second);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: closing our own epoll fd once.
        unsafe { libc::close(self.epoll_fd) };
    }
}

fn count_in_window(batch: &Batch, window: &Window) -> u64 {
    if batch.times.is_empty() {
        if window.measures(batch.first_ns) {
            u64::from(batch.records)
        } else {
            0
        }
    } else {
        batch.times.iter().filter(|&&t| window.measures(t)).count() as u64
    }
}

/// Prints the first occurrence of each error code, so a run full of errors says why once.
fn note_error_code(code: i16) {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<i16>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&code) {
        seen.push(code);
        eprintln!(
            "riptide-bench: broker returned error {code} ({})",
            kafka::error_name(code)
        );
    }
}

pub fn pin_to_core(core: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("cannot pin to core {core}: {}", io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `epoll_pwait2` with a nanosecond timeout (the plain `epoll_wait` rounds to milliseconds,
/// far too coarse for a 5 us schedule); falls back to `epoll_wait` on old kernels.
fn epoll_wait_ns(
    epoll_fd: RawFd,
    events: &mut [libc::epoll_event],
    timeout_ns: u64,
) -> Result<usize> {
    static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
    loop {
        let n = if !NO_PWAIT2.load(Ordering::Relaxed) {
            let timeout = libc::timespec {
                tv_sec: (timeout_ns / NS_PER_S) as libc::time_t,
                tv_nsec: (timeout_ns % NS_PER_S) as libc::c_long,
            };
            // SAFETY: valid fd, event buffer and timespec; null sigmask.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    epoll_fd,
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    &timeout as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                NO_PWAIT2.store(true, Ordering::Relaxed);
                continue;
            }
            n as i64
        } else {
            let timeout_ms = timeout_ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
            // SAFETY: valid fd and buffer.
            let n = unsafe {
                libc::epoll_wait(
                    epoll_fd,
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    timeout_ms,
                )
            };
            n as i64
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            bail!("epoll wait: {error}");
        }
    }
}
