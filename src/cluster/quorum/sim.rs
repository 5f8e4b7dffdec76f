//! Deterministic simulation of the controller quorum.
//!
//! Voters run real [`Quorum`]s over [`SimFs`], an in-memory directory that loses (or tears) what
//! was appended but not synced when its node crashes, and talk through a simulated network that
//! delays, drops, duplicates and reorders messages and partitions the voters. Time is logical:
//! each round ticks the nodes, delivers the messages that are due and injects faults, all in an
//! order drawn from one seeded generator. raft-rs draws its randomized election timeout from the
//! thread RNG; the simulator overrides it after every call (this module may reach into the
//! quorum's private fields), and the proposal nonce too, so a seed replays exactly.
//!
//! Safety is checked at every step: one leader per term; every applied entry equals the entry
//! any node applied at that index before (so applied sequences are prefixes of one committed
//! sequence); per incarnation, applies are contiguous and a restore only moves forward and
//! matches the committed state at its index; a proposal reported committed carries its payload.
//! After the chaos the network heals, crashes stop, every node restarts, and within a bound
//! there must be one leader, a committed proposal, and all nodes at the same index and state.
//!
//! `RIPTIDE_SIM_SEEDS=<count>` sets how many seeds [`random_seeds`] runs (default 2000),
//! `RIPTIDE_SIM_SEED=<seed>` runs just one (its failure report prints how).

use super::storage::{self, HARD_STATE_FILE, LOG_FILE, SNAPSHOT_FILE};
use super::{Applied, CommittedEntry, MetaFs, ProposeError, Quorum, QuorumConfig, RaftMessage};
use raft::eraftpb::{Entry, HardState, MessageType, Snapshot};
use raft::StateRole;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const ELECTION_TICK: usize = 10;
const HEARTBEAT_TICK: usize = 2;
/// Events kept for the failure report (`RIPTIDE_SIM_TRACE=<count>` keeps more).
const TRACE_EVENTS: usize = 60;
/// Rounds the healed cluster gets to elect, commit and converge.
const LIVENESS_ROUNDS: u64 = 3_000;
/// Seeds [`random_seeds`] runs unless `RIPTIDE_SIM_SEEDS` says otherwise.
const DEFAULT_SEEDS: u64 = 2_000;

// ---------------------------------------------------------------------------------------------
// Randomness

/// splitmix64: small, fast, and good enough to drive a simulation.
#[derive(Clone, Debug)]
struct Rng(u64);

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix64(seed ^ 0x005E_ED0F_51A1_u64))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && ((self.next_u64() >> 11) as f64) < probability * (1u64 << 53) as f64
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u64) as usize]
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A crashable directory

#[derive(Default)]
struct SimFile {
    bytes: Vec<u8>,
    /// Length of the prefix that survives a crash.
    synced: usize,
}

struct Disk {
    files: BTreeMap<String, SimFile>,
    /// Filesystem calls left before an injected crash interrupts one; `None`: none planned.
    crash_after: Option<u32>,
    /// Interrupt the next sync of the log (a crash between an append and its fsync).
    crash_at_log_sync: bool,
    /// Interrupt the call after the next snapshot write (it rewrites the log, usually).
    crash_after_snapshot: bool,
    /// The injected crash happened: every call fails until [`Disk::power_loss`].
    crashed: bool,
    /// Power loss keeps a strict, non-empty prefix of an unsynced tail (a torn record).
    force_torn: bool,
    /// (calls to let pass, calls to fail then): an error the process survives, say a full disk.
    fail_after: Option<(u32, u32)>,
    /// Calls still to fail in the current burst.
    failing: u32,
    /// Failures injected since [`Disk::take_failures`].
    failures: u64,
    rng: Rng,
}

enum Call {
    Normal,
    /// This call fails and the process lives on (an append may have written part).
    Failed,
    /// This call is the one the crash interrupts.
    Interrupted,
    /// The process is dead already.
    Dead,
}

impl Disk {
    /// The fate of an all-or-nothing change (replace, truncate): whether it applies. A crash
    /// during it leaves the old or the new state, never a mix.
    fn atomic_call(&mut self) -> io::Result<bool> {
        match self.call() {
            Call::Dead => Err(crash_error()),
            Call::Interrupted => Ok(self.rng.chance(0.5)),
            Call::Failed => Err(full_error()),
            Call::Normal => Ok(true),
        }
    }

    /// Ends a call: an error if the node crashed during it.
    fn crash_check(&self) -> io::Result<()> {
        if self.crashed {
            Err(crash_error())
        } else {
            Ok(())
        }
    }

    fn call(&mut self) -> Call {
        if self.crashed {
            return Call::Dead;
        }
        match self.crash_after {
            Some(0) => {
                self.crashed = true;
                return Call::Interrupted;
            }
            Some(n) => self.crash_after = Some(n - 1),
            None => {}
        }
        if self.failing == 0 {
            match self.fail_after {
                Some((0, burst)) => {
                    self.fail_after = None;
                    self.failing = burst;
                }
                Some((calls, burst)) => self.fail_after = Some((calls - 1, burst)),
                None => {}
            }
        }
        if self.failing > 0 {
            self.failing -= 1;
            self.failures += 1;
            return Call::Failed;
        }
        Call::Normal
    }

    fn take_failures(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }

    /// What a power cut leaves: synced bytes stay, an unsynced tail is lost, kept, or torn (a
    /// prefix kept, maybe followed by zeroes or garbage where blocks were allocated but not
    /// written). Replaced and truncated files are durable already.
    fn power_loss(&mut self) {
        let Disk {
            files,
            rng,
            force_torn,
            ..
        } = self;
        for file in files.values_mut() {
            let unsynced = file.bytes.len() - file.synced;
            if unsynced > 0 {
                let keep = if *force_torn && unsynced > 1 {
                    rng.range(1, unsynced as u64 - 1) as usize
                } else {
                    match rng.below(4) {
                        0 => 0,
                        1 => unsynced,
                        _ => rng.below(unsynced as u64 + 1) as usize,
                    }
                };
                file.bytes.truncate(file.synced + keep);
                let room = unsynced - keep;
                if room > 0 && !*force_torn && rng.chance(0.3) {
                    let junk = rng.range(1, room as u64) as usize;
                    let zeroes = rng.chance(0.5);
                    for _ in 0..junk {
                        let byte = if zeroes { 0 } else { rng.next_u64() as u8 };
                        file.bytes.push(byte);
                    }
                }
            }
            file.synced = file.bytes.len();
        }
        self.crash_after = None;
        self.crash_at_log_sync = false;
        self.crash_after_snapshot = false;
        self.crashed = false;
        self.force_torn = false;
        self.fail_after = None;
        self.failing = 0;
        self.failures = 0;
    }
}

/// One node's directory, shared between its [`Quorum`] and the simulator.
#[derive(Clone)]
struct SimFs(Rc<RefCell<Disk>>);

fn crash_error() -> io::Error {
    io::Error::other("simulated crash")
}

fn full_error() -> io::Error {
    io::Error::other("simulated write failure")
}

impl SimFs {
    fn new(rng: Rng) -> SimFs {
        SimFs(Rc::new(RefCell::new(Disk {
            files: BTreeMap::new(),
            crash_after: None,
            crash_at_log_sync: false,
            crash_after_snapshot: false,
            crashed: false,
            force_torn: false,
            fail_after: None,
            failing: 0,
            failures: 0,
            rng,
        })))
    }

    fn crashed(&self) -> bool {
        self.0.borrow().crashed
    }

    fn arm(&self, calls: u32) {
        self.0.borrow_mut().crash_after = Some(calls);
    }

    fn disarm(&self) {
        let mut disk = self.0.borrow_mut();
        disk.crash_after = None;
        disk.crash_at_log_sync = false;
        disk.crash_after_snapshot = false;
        disk.fail_after = None;
        disk.failing = 0;
    }

    fn fail_after(&self, calls: u32, burst: u32) {
        self.0.borrow_mut().fail_after = Some((calls, burst));
    }

    fn take_failures(&self) -> u64 {
        self.0.borrow_mut().take_failures()
    }

    fn power_loss(&self) {
        self.0.borrow_mut().power_loss();
    }

    fn wipe(&self) {
        self.0.borrow_mut().files.clear();
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        self.0
            .borrow()
            .files
            .get(name)
            .map(|file| file.bytes.clone())
            .unwrap_or_default()
    }

    /// The term this directory would restart with.
    fn durable_term(&self) -> u64 {
        let hard_state =
            storage::decode_checked::<HardState>(HARD_STATE_FILE, &self.bytes(HARD_STATE_FILE))
                .map_or(0, |hard_state| hard_state.term);
        let snapshot =
            storage::decode_checked::<Snapshot>(SNAPSHOT_FILE, &self.bytes(SNAPSHOT_FILE))
                .map_or(0, |snapshot| snapshot.get_metadata().term);
        hard_state.max(snapshot)
    }
}

impl MetaFs for SimFs {
    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let disk = self.0.borrow();
        if disk.crashed {
            return Err(crash_error());
        }
        Ok(disk.files.get(name).map(|file| file.bytes.clone()))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.0.borrow_mut();
        match disk.call() {
            Call::Dead => Err(crash_error()),
            Call::Interrupted | Call::Failed => {
                // Part of the write reached the page cache before it failed.
                let keep = disk.rng.below(bytes.len() as u64 + 1) as usize;
                disk.files
                    .entry(name.to_string())
                    .or_default()
                    .bytes
                    .extend_from_slice(&bytes[..keep]);
                Err(if disk.crashed {
                    crash_error()
                } else {
                    full_error()
                })
            }
            Call::Normal => {
                disk.files
                    .entry(name.to_string())
                    .or_default()
                    .bytes
                    .extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let mut disk = self.0.borrow_mut();
        if name == LOG_FILE && disk.crash_at_log_sync && !disk.crashed {
            disk.crashed = true;
            return Err(crash_error());
        }
        match disk.call() {
            Call::Dead | Call::Interrupted => Err(crash_error()),
            Call::Failed => Err(full_error()),
            Call::Normal => {
                let file = disk.files.entry(name.to_string()).or_default();
                file.synced = file.bytes.len();
                Ok(())
            }
        }
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.0.borrow_mut();
        if disk.atomic_call()? {
            disk.files.insert(
                name.to_string(),
                SimFile {
                    bytes: bytes.to_vec(),
                    synced: bytes.len(),
                },
            );
            if name == SNAPSHOT_FILE && disk.crash_after_snapshot && !disk.crashed {
                disk.crash_after_snapshot = false;
                disk.crash_after = Some(0);
            }
        }
        disk.crash_check()
    }

    fn truncate(&mut self, name: &str, length_bytes: u64) -> io::Result<()> {
        let mut disk = self.0.borrow_mut();
        if disk.atomic_call()? {
            let file = disk.files.entry(name.to_string()).or_default();
            file.bytes.truncate(length_bytes as usize);
            file.synced = file.bytes.len();
        }
        disk.crash_check()
    }
}

/// Whether the directory's log holds records past its snapshot that the snapshot or later
/// records superseded (left by a crash between writing a snapshot and rewriting the log): the
/// log folded properly is shorter than when records up to the snapshot are merely skipped.
fn stale_tail(fs: &SimFs) -> bool {
    let (index, term) =
        storage::decode_checked::<Snapshot>(SNAPSHOT_FILE, &fs.bytes(SNAPSHOT_FILE))
            .map_or((0, 0), |s| (s.get_metadata().index, s.get_metadata().term));
    let (records, _) = storage::decode_log(&fs.bytes(LOG_FILE));
    let mut skipping = 0u64;
    for record in &records {
        if record.index > index {
            let next = index + 1 + skipping;
            if record.index > next {
                return false;
            }
            skipping = record.index - index;
        }
    }
    storage::fold_log(records, index, term).is_ok_and(|log| (log.len() as u64) < skipping)
}

// ---------------------------------------------------------------------------------------------
// The state machine: a hash chain over the applied entries

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Machine {
    index: u64,
    /// Non-empty entries applied (the empty ones open a leader's term).
    count: u64,
    hash: u64,
}

impl Machine {
    fn apply(&self, index: u64, data: &[u8]) -> Machine {
        let mut fnv: u64 = 0xCBF2_9CE4_8422_2325;
        for &byte in data {
            fnv = (fnv ^ byte as u64).wrapping_mul(0x0100_0000_01B3);
        }
        Machine {
            index,
            count: self.count + !data.is_empty() as u64,
            hash: mix64(
                self.hash.rotate_left(23) ^ mix64(index ^ fnv.rotate_left(7)) ^ data.len() as u64,
            ),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24);
        for value in [self.index, self.count, self.hash] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Machine> {
        if bytes.len() != 24 {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        Some(Machine {
            index: word(0),
            count: word(1),
            hash: word(2),
        })
    }
}

/// An entry of the one committed sequence, as first applied by some node.
struct Committed {
    term: u64,
    data: Vec<u8>,
    /// The state machine after it.
    machine: Machine,
}

// ---------------------------------------------------------------------------------------------
// The simulated cluster

#[derive(Clone, Debug)]
struct Params {
    voters: usize,
    loss: f64,
    duplication: f64,
    min_delay: u64,
    max_delay: u64,
    /// Per node and round: a node that misses ticks runs a slow clock.
    tick_chance: f64,
    propose_chance: f64,
    /// Per round: one up node crashes, at once or at one of its next filesystem calls.
    crash_chance: f64,
    mid_call_crash_chance: f64,
    /// Per round: one up node's disk fails a few calls a little later (and then works again).
    write_failure_chance: f64,
    max_down_rounds: u64,
    wipe_chance: f64,
    partition_chance: f64,
    max_partition_rounds: u64,
    compact_chance: f64,
    max_entries_before_snapshot: u64,
    max_size_per_msg_bytes: u64,
    max_inflight_msgs: usize,
    chaos_rounds: u64,
}

impl Params {
    fn random(rng: &mut Rng) -> Params {
        let voters = match rng.below(100) {
            0..=11 => 1,
            12..=84 => 3,
            _ => 5,
        };
        let max_delay = rng.pick(&[1, 2, 3, 5, 8]);
        Params {
            voters,
            loss: rng.pick(&[0.0, 0.01, 0.05, 0.15, 0.3]),
            duplication: rng.pick(&[0.0, 0.02, 0.1]),
            min_delay: rng.range(0, 1).min(max_delay),
            max_delay,
            tick_chance: rng.pick(&[1.0, 0.9, 0.7]),
            propose_chance: rng.pick(&[0.1, 0.3, 0.6]),
            crash_chance: rng.pick(&[0.0, 0.005, 0.015, 0.04]),
            mid_call_crash_chance: rng.pick(&[0.3, 0.7]),
            write_failure_chance: rng.pick(&[0.0, 0.01, 0.04]),
            max_down_rounds: rng.pick(&[5, 30, 120]),
            wipe_chance: rng.pick(&[0.0, 0.003, 0.01]),
            partition_chance: rng.pick(&[0.0, 0.01, 0.03]),
            max_partition_rounds: rng.pick(&[20, 80, 250]),
            compact_chance: rng.pick(&[1.0, 0.3]),
            max_entries_before_snapshot: rng.range(5, 20),
            max_size_per_msg_bytes: rng.pick(&[64, 600, 1 << 20]),
            max_inflight_msgs: rng.pick(&[1, 4, 256]),
            chaos_rounds: 400,
        }
    }

    /// No faults: for the targeted tests, which inject their own.
    fn calm(voters: usize, max_entries_before_snapshot: u64) -> Params {
        Params {
            voters,
            loss: 0.0,
            duplication: 0.0,
            min_delay: 1,
            max_delay: 2,
            tick_chance: 1.0,
            propose_chance: 0.0,
            crash_chance: 0.0,
            mid_call_crash_chance: 0.0,
            write_failure_chance: 0.0,
            max_down_rounds: 10,
            wipe_chance: 0.0,
            partition_chance: 0.0,
            max_partition_rounds: 0,
            compact_chance: 1.0,
            max_entries_before_snapshot,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            chaos_rounds: 0,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Stats {
    seeds: u64,
    rounds: u64,
    proposed: u64,
    proposals_committed: u64,
    entries_committed: u64,
    messages_sent: u64,
    messages_delivered: u64,
    crashes: u64,
    mid_call_crashes: u64,
    write_failures: u64,
    torn_tails_truncated: u64,
    /// Restarts whose log had records past the snapshot that the snapshot superseded.
    stale_tails_dropped: u64,
    wipes: u64,
    snapshots_taken: u64,
    snapshots_restored: u64,
    partitions: u64,
    terms_with_leader: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.seeds += other.seeds;
        self.rounds += other.rounds;
        self.proposed += other.proposed;
        self.proposals_committed += other.proposals_committed;
        self.entries_committed += other.entries_committed;
        self.messages_sent += other.messages_sent;
        self.messages_delivered += other.messages_delivered;
        self.crashes += other.crashes;
        self.mid_call_crashes += other.mid_call_crashes;
        self.write_failures += other.write_failures;
        self.torn_tails_truncated += other.torn_tails_truncated;
        self.stale_tails_dropped += other.stale_tails_dropped;
        self.wipes += other.wipes;
        self.snapshots_taken += other.snapshots_taken;
        self.snapshots_restored += other.snapshots_restored;
        self.partitions += other.partitions;
        self.terms_with_leader += other.terms_with_leader;
    }
}

/// Fields are read through `Debug`, in the failure report.
#[allow(dead_code)]
#[derive(Debug)]
enum Ev {
    Tick(i32),
    Deliver {
        from: i32,
        to: i32,
        kind: MessageType,
        term: u64,
        index: u64,
        entries: usize,
        commit: u64,
        reject: bool,
    },
    Propose {
        node: i32,
        proposal: Option<u64>,
    },
    Crash {
        node: i32,
        how: &'static str,
    },
    Arm {
        node: i32,
        at: &'static str,
        calls: u32,
    },
    FailWrites {
        node: i32,
        calls: u32,
        burst: u32,
    },
    Restart {
        node: i32,
        snapshot: u64,
        last: u64,
        truncated_bytes: usize,
    },
    Wipe(i32),
    Partition(Vec<u8>),
    Heal,
    Compact {
        node: i32,
        index: u64,
    },
    Restore {
        node: i32,
        index: u64,
    },
    Leader {
        node: i32,
        term: u64,
    },
    Liveness,
}

struct Packet {
    at: u64,
    from: i32,
    to: i32,
    message: RaftMessage,
}

enum Action {
    Tick(usize),
    Deliver(Packet),
    Propose,
}

struct Node {
    fs: SimFs,
    quorum: Option<Quorum<SimFs>>,
    machine: Machine,
    /// Proposals of this incarnation not seen committed yet: id → payload.
    pending: BTreeMap<u64, Vec<u8>>,
    /// The same by payload serial (the payload's first 8 bytes) → id.
    pending_by_serial: BTreeMap<u64, u64>,
    /// Proposals of this incarnation seen committed: id → index.
    committed: BTreeMap<u64, u64>,
    /// Restart at this round when down.
    down_until: u64,
    /// The (term, role) the election timeout below was drawn for.
    timeout_key: Option<(u64, StateRole)>,
    timeout: usize,
    restores: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    p: Params,
    /// The parameters as drawn (liveness changes some).
    drawn: Params,
    now: u64,
    logger: slog::Logger,
    nodes: Vec<Node>,
    net: Vec<Packet>,
    /// Each node's side while a partition lasts, and the round it heals.
    partition: Option<(Vec<u8>, u64)>,
    committed: Vec<Committed>,
    /// Serials of the payloads in `committed`.
    committed_serials: BTreeSet<u64>,
    leaders: BTreeMap<u64, i32>,
    next_serial: u64,
    trace: VecDeque<(u64, Ev)>,
    trace_events: usize,
    stats: Stats,
}

fn up(node: &Node) -> bool {
    node.quorum.is_some()
}

impl Sim {
    fn new(seed: u64, p: Params) -> Sim {
        let mut rng = Rng::new(seed);
        let nodes = (0..p.voters)
            .map(|_| Node {
                fs: SimFs::new(rng.fork()),
                quorum: None,
                machine: Machine::default(),
                pending: BTreeMap::new(),
                pending_by_serial: BTreeMap::new(),
                committed: BTreeMap::new(),
                down_until: 0,
                timeout_key: None,
                timeout: ELECTION_TICK,
                restores: 0,
            })
            .collect();
        Sim {
            seed,
            rng,
            drawn: p.clone(),
            p,
            now: 0,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            nodes,
            net: Vec::new(),
            partition: None,
            committed: Vec::new(),
            committed_serials: BTreeSet::new(),
            leaders: BTreeMap::new(),
            next_serial: 0,
            trace: VecDeque::new(),
            trace_events: env_u64("RIPTIDE_SIM_TRACE").map_or(TRACE_EVENTS, |n| n as usize),
            stats: Stats {
                seeds: 1,
                ..Stats::default()
            },
        }
    }

    fn random(seed: u64) -> Sim {
        let mut rng = Rng::new(seed ^ 0xA5A5_A5A5);
        let p = Params::random(&mut rng);
        Sim::new(seed, p)
    }

    fn event(&mut self, ev: Ev) {
        if self.trace.len() >= self.trace_events {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, ev));
    }

    fn config(&self, node: usize) -> QuorumConfig {
        QuorumConfig {
            node_id: node as i32,
            voters: (0..self.p.voters as i32).collect(),
            election_tick: ELECTION_TICK,
            heartbeat_tick: HEARTBEAT_TICK,
            max_entries_before_snapshot: self.p.max_entries_before_snapshot,
            max_size_per_msg_bytes: self.p.max_size_per_msg_bytes,
            max_inflight_msgs: self.p.max_inflight_msgs,
        }
    }

    fn quorum(&self, node: usize) -> &Quorum<SimFs> {
        self.nodes[node].quorum.as_ref().expect("node is up")
    }

    fn is_leader(&self, node: usize) -> bool {
        self.nodes[node]
            .quorum
            .as_ref()
            .is_some_and(|q| q.is_leader())
    }

    fn term_of(&self, node: usize) -> u64 {
        let node = &self.nodes[node];
        node.quorum
            .as_ref()
            .map_or_else(|| node.fs.durable_term(), |q| q.term())
    }

    // --- node lifecycle -----------------------------------------------------------------------

    fn start(&mut self) -> Result<(), String> {
        for node in 0..self.nodes.len() {
            self.restart(node)?;
        }
        Ok(())
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        let fs = self.nodes[node].fs.clone();
        let log_before = fs.bytes(LOG_FILE).len();
        if stale_tail(&fs) {
            self.stats.stale_tails_dropped += 1;
        }
        let opened = Quorum::open(self.config(node), fs.clone(), self.logger.clone());
        let (mut quorum, restore) = match opened {
            Ok(opened) => opened,
            Err(error) => return self.failed(node, "open", error),
        };
        quorum.incarnation = self.rng.next_u64();
        let log = fs.bytes(LOG_FILE);
        let (_, valid) = storage::decode_log(&log);
        if valid != log.len() {
            return Err(format!(
                "node {node}: open left a torn log tail ({valid} of {} bytes valid)",
                log.len()
            ));
        }
        let truncated_bytes = log_before - log.len();
        if truncated_bytes > 0 {
            self.stats.torn_tails_truncated += 1;
        }
        let store = quorum.node.store();
        self.event(Ev::Restart {
            node: node as i32,
            snapshot: store.snapshot_index(),
            last: store.last(),
            truncated_bytes,
        });
        let state = &mut self.nodes[node];
        state.quorum = Some(quorum);
        state.machine = Machine::default();
        state.pending.clear();
        state.pending_by_serial.clear();
        state.committed.clear();
        state.timeout_key = None;
        match restore {
            None => {}
            Some(Applied::Restore { index, term, data }) => {
                self.restore(node, index, term, &data, true)?
            }
            Some(Applied::Entry(entry)) => {
                return Err(format!(
                    "node {node}: open returned entry {} to apply",
                    entry.index
                ))
            }
        }
        self.check_log(node)?;
        self.after_call(node)?;
        self.poll(node)
    }

    /// The node's process dies: its quorum and pending proposals go, its disk keeps what a
    /// power cut keeps.
    fn crash(&mut self, node: usize, how: &'static str) {
        let down_for = self.rng.range(0, self.p.max_down_rounds);
        let state = &mut self.nodes[node];
        state.quorum = None;
        state.fs.power_loss();
        state.pending.clear();
        state.pending_by_serial.clear();
        state.committed.clear();
        state.down_until = self.now + down_for;
        self.stats.crashes += 1;
        self.event(Ev::Crash {
            node: node as i32,
            how,
        });
    }

    /// A call failed: fine when an injected crash caused it (the node is down now) or an
    /// injected write failure (the node lives on and retries, as the driver does).
    fn failed(
        &mut self,
        node: usize,
        what: &'static str,
        error: anyhow::Error,
    ) -> Result<(), String> {
        let fs = &self.nodes[node].fs;
        if fs.crashed() {
            self.stats.mid_call_crashes += 1;
            self.crash(node, what);
            Ok(())
        } else if fs.take_failures() > 0 {
            self.stats.write_failures += 1;
            if self.nodes[node].quorum.is_none() {
                // Opening failed: try again next round.
                self.nodes[node].down_until = self.now + 1;
            }
            Ok(())
        } else {
            Err(format!("node {node}: {what} failed: {error:#}"))
        }
    }

    /// Wipes a node's disk, when that stays inside what Raft tolerates: Raft assumes that votes
    /// and acknowledged entries survive, and a leader's progress remembers the wiped node's old
    /// log (its heartbeats would then commit past the new log's end). So: a leader's log is held
    /// by a majority without the node; no election is under way; no other voter is behind the
    /// node's term (every future election is for a term it never voted in); every leader goes
    /// down with it, and its messages in flight are dropped.
    fn try_wipe(&mut self, node: Option<usize>) -> Result<bool, String> {
        let voters = self.nodes.len();
        if voters < 3 {
            return Ok(false);
        }
        let wiped = node.unwrap_or_else(|| self.rng.below(voters as u64) as usize);
        let Some(leader) = (0..voters)
            .filter(|&v| self.is_leader(v))
            .max_by_key(|&v| self.term_of(v))
        else {
            return Ok(false);
        };
        if leader == wiped {
            return Ok(false);
        }
        let electing = self.nodes.iter().any(|n| {
            n.quorum.as_ref().is_some_and(|q| {
                matches!(
                    q.node.raft.state,
                    StateRole::Candidate | StateRole::PreCandidate
                )
            })
        });
        if electing {
            return Ok(false);
        }
        let term = self.term_of(wiped);
        if (0..voters).any(|v| v != wiped && self.term_of(v) < term) {
            return Ok(false);
        }
        let store = self.quorum(leader).node.store();
        let last = store.last();
        let last_term = store.entry_term(last);
        let holders = (0..voters)
            .filter(|&v| {
                v != wiped
                    && self.nodes[v]
                        .quorum
                        .as_ref()
                        .is_some_and(|q| q.node.store().entry_term(last) == last_term)
            })
            .count();
        if holders < voters / 2 + 1 {
            return Ok(false);
        }
        for v in 0..voters {
            if v != wiped && self.is_leader(v) {
                self.crash(v, "leader, with a wipe");
            }
        }
        self.crash(wiped, "wiped");
        self.nodes[wiped].fs.wipe();
        let wiped_id = wiped as i32;
        self.net.retain(|p| p.from != wiped_id && p.to != wiped_id);
        self.stats.wipes += 1;
        self.event(Ev::Wipe(wiped_id));
        Ok(true)
    }

    // --- calls into the quorum ------------------------------------------------------------------

    /// After every call: pin raft's election timeout to our draw and check the leaders.
    fn after_call(&mut self, node: usize) -> Result<(), String> {
        let state = &mut self.nodes[node];
        let Some(quorum) = state.quorum.as_mut() else {
            return Ok(());
        };
        let raft = &mut quorum.node.raft;
        let key = (raft.term, raft.state);
        if state.timeout_key != Some(key) {
            state.timeout_key = Some(key);
            state.timeout = ELECTION_TICK + self.rng.below(ELECTION_TICK as u64) as usize;
        }
        raft.set_randomized_election_timeout(state.timeout);
        let term = raft.term;
        let leading = raft.state == StateRole::Leader;
        let leader = quorum.leader_id();
        if leading != quorum.is_leader() || (leading && leader != Some(node as i32)) {
            return Err(format!(
                "node {node}: is_leader {} but leader id {leader:?}",
                quorum.is_leader()
            ));
        }
        if let Some(leader) = leader {
            self.saw_leader(term, leader, node)?;
        }
        Ok(())
    }

    fn saw_leader(&mut self, term: u64, leader: i32, observer: usize) -> Result<(), String> {
        match self.leaders.get(&term) {
            Some(&known) if known != leader => Err(format!(
                "two leaders in term {term}: {known} and {leader} (seen by node {observer})"
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, leader);
                self.stats.terms_with_leader += 1;
                self.event(Ev::Leader { node: leader, term });
                Ok(())
            }
        }
    }

    fn tick(&mut self, node: usize) -> Result<(), String> {
        let Some(quorum) = self.nodes[node].quorum.as_mut() else {
            return Ok(());
        };
        quorum.tick();
        self.event(Ev::Tick(node as i32));
        self.after_call(node)?;
        self.poll(node)
    }

    fn deliver(&mut self, packet: Packet) -> Result<(), String> {
        let to = packet.to as usize;
        if !up(&self.nodes[to]) || self.cut(packet.from, packet.to) {
            return Ok(());
        }
        let m = &packet.message;
        self.event(Ev::Deliver {
            from: packet.from,
            to: packet.to,
            kind: m.get_msg_type(),
            term: m.term,
            index: if m.get_msg_type() == MessageType::MsgSnapshot {
                m.get_snapshot().get_metadata().index
            } else {
                m.index
            },
            entries: m.entries.len(),
            commit: m.commit,
            reject: m.reject,
        });
        self.stats.messages_delivered += 1;
        let quorum = self.nodes[to].quorum.as_mut().expect("up");
        // Refusals of odd input are fine; the network gives no such input anyway.
        let _ = quorum.step(packet.message);
        self.after_call(to)?;
        self.poll(to)
    }

    fn payload(&mut self) -> (u64, Vec<u8>) {
        self.next_serial += 1;
        let serial = self.next_serial;
        let mut payload = serial.to_le_bytes().to_vec();
        let extra = self.rng.below(40);
        for _ in 0..extra {
            payload.push(self.rng.next_u64() as u8);
        }
        (serial, payload)
    }

    /// Proposes a fresh payload on `node`: the proposal id when it was accepted.
    fn propose_on(&mut self, node: usize) -> Result<Option<u64>, String> {
        let (serial, payload) = self.payload();
        let state = &mut self.nodes[node];
        let Some(quorum) = state.quorum.as_mut() else {
            return Ok(None);
        };
        let outcome = quorum.propose(payload.clone());
        let leading = quorum.is_leader();
        let id = match outcome {
            Ok(id) => {
                state.pending.insert(id.0, payload);
                state.pending_by_serial.insert(serial, id.0);
                self.stats.proposed += 1;
                Some(id.0)
            }
            Err(ProposeError::NotLeader(_)) if leading => {
                return Err(format!("node {node}: NotLeader while leading"))
            }
            Err(_) => None,
        };
        self.event(Ev::Propose {
            node: node as i32,
            proposal: id,
        });
        self.after_call(node)?;
        self.poll(node)?;
        Ok(id)
    }

    /// A few proposals on a node that thinks it leads (now and then on any node).
    fn propose_random(&mut self) -> Result<(), String> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.is_leader(n))
            .collect();
        let node = if leaders.is_empty() || self.rng.chance(0.05) {
            let live: Vec<usize> = (0..self.nodes.len())
                .filter(|&n| up(&self.nodes[n]))
                .collect();
            if live.is_empty() {
                return Ok(());
            }
            self.rng.pick(&live)
        } else {
            self.rng.pick(&leaders)
        };
        for _ in 0..self.rng.range(1, 3) {
            self.propose_on(node)?;
        }
        Ok(())
    }

    fn poll(&mut self, node: usize) -> Result<(), String> {
        let Some(quorum) = self.nodes[node].quorum.as_mut() else {
            return Ok(());
        };
        let output = match quorum.poll() {
            Ok(output) => output,
            Err(error) => return self.failed(node, "poll", error),
        };
        self.after_call(node)?;
        for (to, message) in output.messages {
            if to < 0 || to as usize >= self.nodes.len() || to as usize == node {
                return Err(format!("node {node}: message to node {to}"));
            }
            if message.to != to as u64 + 1 || message.from != node as u64 + 1 {
                return Err(format!(
                    "node {node}: message for raft id {} from {} sent to node {to}",
                    message.to, message.from
                ));
            }
            self.send(node as i32, to, message);
        }
        for applied in output.applied {
            match applied {
                Applied::Entry(entry) => self.apply(node, entry)?,
                Applied::Restore { index, term, data } => {
                    self.restore(node, index, term, &data, false)?
                }
            }
        }
        self.check_log(node)?;
        let state = &self.nodes[node];
        let quorum = state.quorum.as_ref().expect("up");
        if quorum.applied_index != state.machine.index {
            return Err(format!(
                "node {node}: quorum applied index {} but the state machine is at {}",
                quorum.applied_index, state.machine.index
            ));
        }
        if quorum.wants_snapshot() && self.rng.chance(self.p.compact_chance) {
            let machine = state.machine;
            let quorum = self.nodes[node].quorum.as_mut().expect("up");
            if let Err(error) = quorum.compact(machine.index, machine.encode()) {
                return self.failed(node, "compact", error);
            }
            self.stats.snapshots_taken += 1;
            self.event(Ev::Compact {
                node: node as i32,
                index: machine.index,
            });
        }
        Ok(())
    }

    // --- the state machine and its checks ------------------------------------------------------

    /// Raft's invariants on a node's log (durable as it stands after open and each poll): terms
    /// never decrease along it, from the snapshot's on; an entry at a committed index, or of the
    /// term of the committed entry at its index, is that entry.
    fn check_log(&self, node: usize) -> Result<(), String> {
        let Some(quorum) = self.nodes[node].quorum.as_ref() else {
            return Ok(());
        };
        let store = quorum.node.store();
        let commit = quorum.node.raft.raft_log.committed;
        let mut term = store.snapshot.get_metadata().term;
        for entry in store.entries() {
            if entry.term < term {
                return Err(format!(
                    "node {node}: log term drops to {} at index {} (after term {term}; snapshot \
                     at {})",
                    entry.term,
                    entry.index,
                    store.snapshot_index()
                ));
            }
            term = entry.term;
            let Some(known) = self.committed.get(entry.index as usize - 1) else {
                continue;
            };
            let same = entry.term == known.term && entry.data[..] == known.data[..];
            if !same && (entry.index <= commit || entry.term == known.term) {
                return Err(format!(
                    "node {node}: log entry {} (term {}) is not the committed one (term {}); \
                     commit index {commit}",
                    entry.index, entry.term, known.term
                ));
            }
        }
        Ok(())
    }

    fn apply(&mut self, node: usize, entry: CommittedEntry) -> Result<(), String> {
        let state = &mut self.nodes[node];
        if entry.index != state.machine.index + 1 {
            return Err(format!(
                "node {node} applied index {} right after {}",
                entry.index, state.machine.index
            ));
        }
        let next = state.machine.apply(entry.index, &entry.data);
        let position = (entry.index - 1) as usize;
        if let Some(known) = self.committed.get(position) {
            if known.term != entry.term || known.data != entry.data || known.machine != next {
                return Err(format!(
                    "node {node} applied index {} as (term {}, {} bytes) but it was applied as \
                     (term {}, {} bytes) before",
                    entry.index,
                    entry.term,
                    entry.data.len(),
                    known.term,
                    known.data.len()
                ));
            }
        } else {
            assert_eq!(
                position,
                self.committed.len(),
                "applies are contiguous and checked"
            );
            if entry.data.len() >= 8 {
                let serial = u64::from_le_bytes(entry.data[..8].try_into().unwrap());
                if !self.committed_serials.insert(serial) {
                    return Err(format!(
                        "payload {serial} committed twice (again at {})",
                        entry.index
                    ));
                }
            } else if !entry.data.is_empty() {
                return Err(format!(
                    "index {} holds a payload nobody proposed",
                    entry.index
                ));
            }
            self.committed.push(Committed {
                term: entry.term,
                data: entry.data.clone(),
                machine: next,
            });
            self.stats.entries_committed += 1;
        }
        state.machine = next;
        let serial = (entry.data.len() >= 8)
            .then(|| u64::from_le_bytes(entry.data[..8].try_into().unwrap()));
        let ours = serial.and_then(|serial| state.pending_by_serial.get(&serial).copied());
        match (entry.proposal, ours) {
            (None, None) => {}
            (Some(id), Some(expected)) if id.0 == expected => {
                let proposed = state.pending.remove(&id.0).expect("pending by serial too");
                state.pending_by_serial.remove(&serial.unwrap());
                if proposed != entry.data {
                    return Err(format!(
                        "node {node}: proposal {} committed with another payload",
                        id.0
                    ));
                }
                state.committed.insert(id.0, entry.index);
                self.stats.proposals_committed += 1;
            }
            (proposal, ours) => {
                return Err(format!(
                    "node {node}: entry {} names proposal {:?} but this incarnation proposed its \
                     payload as {ours:?}",
                    entry.index,
                    proposal.map(|p| p.0)
                ))
            }
        }
        Ok(())
    }

    fn restore(
        &mut self,
        node: usize,
        index: u64,
        term: u64,
        data: &[u8],
        at_open: bool,
    ) -> Result<(), String> {
        let machine = Machine::decode(data).ok_or_else(|| {
            format!(
                "node {node}: snapshot at {index} holds {} bytes",
                data.len()
            )
        })?;
        if machine.index != index || index == 0 {
            return Err(format!(
                "node {node}: snapshot at {index} holds the state machine at {}",
                machine.index
            ));
        }
        let Some(known) = self.committed.get(index as usize - 1) else {
            return Err(format!(
                "node {node}: snapshot at {index}, past everything applied ({})",
                self.committed.len()
            ));
        };
        if known.machine != machine || known.term != term {
            return Err(format!(
                "node {node}: snapshot at {index} (term {term}) differs from the committed state \
                 (term {})",
                known.term
            ));
        }
        let state = &mut self.nodes[node];
        if !at_open {
            if index <= state.machine.index {
                return Err(format!(
                    "node {node}: restore at {index} does not move past applied {}",
                    state.machine.index
                ));
            }
            state.restores += 1;
            self.stats.snapshots_restored += 1;
            self.event(Ev::Restore {
                node: node as i32,
                index,
            });
        }
        self.nodes[node].machine = machine;
        Ok(())
    }

    // --- the network ---------------------------------------------------------------------------

    fn cut(&self, from: i32, to: i32) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|(sides, _)| sides[from as usize] != sides[to as usize])
    }

    fn send(&mut self, from: i32, to: i32, message: RaftMessage) {
        self.stats.messages_sent += 1;
        if self.cut(from, to) || self.rng.chance(self.p.loss) {
            return;
        }
        if self.rng.chance(self.p.duplication) {
            let at = self.now + self.rng.range(self.p.min_delay, self.p.max_delay);
            self.net.push(Packet {
                at,
                from,
                to,
                message: message.clone(),
            });
        }
        let at = self.now + self.rng.range(self.p.min_delay, self.p.max_delay);
        self.net.push(Packet {
            at,
            from,
            to,
            message,
        });
    }

    // --- rounds --------------------------------------------------------------------------------

    fn faults(&mut self) -> Result<(), String> {
        let voters = self.nodes.len();
        match &self.partition {
            Some((_, until)) if self.now >= *until => {
                self.partition = None;
                self.event(Ev::Heal);
            }
            Some(_) => {}
            None if voters > 1 && self.rng.chance(self.p.partition_chance) => {
                let sides: Vec<u8> = if self.rng.chance(0.5) {
                    let alone = self.rng.below(voters as u64) as usize;
                    (0..voters).map(|n| (n == alone) as u8).collect()
                } else {
                    (0..voters)
                        .map(|_| self.rng.below(if voters > 3 { 3 } else { 2 }) as u8)
                        .collect()
                };
                let until = self.now + self.rng.range(5, self.p.max_partition_rounds);
                self.partition = Some((sides.clone(), until));
                self.stats.partitions += 1;
                self.event(Ev::Partition(sides));
            }
            None => {}
        }
        if self.rng.chance(self.p.crash_chance) {
            let live: Vec<usize> = (0..voters).filter(|&n| up(&self.nodes[n])).collect();
            if !live.is_empty() {
                let node = self.rng.pick(&live);
                if self.rng.chance(self.p.mid_call_crash_chance) {
                    let calls = self.rng.below(8) as u32;
                    let at = match self.rng.below(5) {
                        0 => {
                            self.nodes[node].fs.0.borrow_mut().crash_at_log_sync = true;
                            "at the next log sync"
                        }
                        1 => {
                            self.nodes[node].fs.0.borrow_mut().crash_after_snapshot = true;
                            "right after the next snapshot write"
                        }
                        _ => {
                            self.nodes[node].fs.arm(calls);
                            "after some calls"
                        }
                    };
                    self.event(Ev::Arm {
                        node: node as i32,
                        at,
                        calls,
                    });
                } else {
                    self.crash(node, "power cut");
                }
            }
        }
        if self.rng.chance(self.p.write_failure_chance) {
            let live: Vec<usize> = (0..voters).filter(|&n| up(&self.nodes[n])).collect();
            if !live.is_empty() {
                let node = self.rng.pick(&live);
                let calls = self.rng.below(6) as u32;
                let burst = self.rng.range(1, 4) as u32;
                self.nodes[node].fs.fail_after(calls, burst);
                self.event(Ev::FailWrites {
                    node: node as i32,
                    calls,
                    burst,
                });
            }
        }
        if self.rng.chance(self.p.wipe_chance) {
            self.try_wipe(None)?;
        }
        Ok(())
    }

    /// One round of logical time: faults (in chaos), restarts that are due, then node ticks,
    /// due deliveries and maybe proposals, in random order.
    fn round(&mut self, chaos: bool) -> Result<(), String> {
        self.now += 1;
        self.stats.rounds += 1;
        if chaos {
            self.faults()?;
        }
        for node in 0..self.nodes.len() {
            if !up(&self.nodes[node]) && self.nodes[node].down_until <= self.now {
                self.restart(node)?;
            }
        }
        let mut actions = Vec::new();
        for node in 0..self.nodes.len() {
            if up(&self.nodes[node]) && (!chaos || self.rng.chance(self.p.tick_chance)) {
                actions.push(Action::Tick(node));
            }
        }
        let now = self.now;
        let (due, later): (Vec<Packet>, Vec<Packet>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|p| p.at <= now);
        self.net = later;
        actions.extend(due.into_iter().map(Action::Deliver));
        if chaos && self.rng.chance(self.p.propose_chance) {
            actions.push(Action::Propose);
        }
        self.rng.shuffle(&mut actions);
        for action in actions {
            match action {
                Action::Tick(node) => self.tick(node)?,
                Action::Deliver(packet) => self.deliver(packet)?,
                Action::Propose => self.propose_random()?,
            }
        }
        Ok(())
    }

    /// Runs calm rounds until `done`, for at most `rounds`; whether `done` came.
    fn run_until(&mut self, rounds: u64, done: impl Fn(&Sim) -> bool) -> Result<bool, String> {
        for _ in 0..rounds {
            if done(self) {
                return Ok(true);
            }
            self.round(false)?;
        }
        Ok(done(self))
    }

    /// The node every node follows, when there is exactly one leader and all agree on it.
    fn agreed_leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.is_leader(n))
            .collect();
        let [leader] = leaders[..] else { return None };
        let term = self.quorum(leader).term();
        self.nodes
            .iter()
            .all(|n| {
                n.quorum
                    .as_ref()
                    .is_some_and(|q| q.leader_id() == Some(leader as i32) && q.term() == term)
            })
            .then_some(leader)
    }

    /// All nodes up at the same applied state, which holds everything ever applied.
    fn converged(&self) -> bool {
        let first = self.nodes[0].machine;
        first.index as usize == self.committed.len()
            && self.nodes.iter().all(|n| up(n) && n.machine == first)
    }

    /// Heal everything, then demand a leader, a commit and convergence within a bound.
    fn liveness(&mut self) -> Result<(), String> {
        self.event(Ev::Liveness);
        if self.partition.take().is_some() {
            self.event(Ev::Heal);
        }
        self.p.loss = 0.0;
        self.p.duplication = 0.0;
        for node in &mut self.nodes {
            node.fs.disarm();
            if node.quorum.is_none() {
                node.down_until = self.now;
            }
        }
        let mut target: Option<(usize, u64)> = None;
        for _ in 0..LIVENESS_ROUNDS {
            self.round(false)?;
            let Some(leader) = self.agreed_leader() else {
                continue;
            };
            let committed_at =
                target.and_then(|(node, id)| self.nodes[node].committed.get(&id).copied());
            let Some(index) = committed_at else {
                let waiting = target.is_some_and(|(node, id)| {
                    node == leader && self.nodes[node].pending.contains_key(&id)
                });
                if !waiting {
                    if let Some(id) = self.propose_on(leader)? {
                        target = Some((leader, id));
                    }
                }
                continue;
            };
            if self.converged() && self.nodes[0].machine.index >= index {
                return Ok(());
            }
        }
        Err(format!(
            "liveness: after {LIVENESS_ROUNDS} healed rounds: leader {:?}, proposal {target:?} \
             committed at {:?}, converged {}",
            self.agreed_leader(),
            target.and_then(|(node, id)| self.nodes[node].committed.get(&id).copied()),
            self.converged()
        ))
    }

    fn run(&mut self) -> Result<(), String> {
        self.start()?;
        for _ in 0..self.p.chaos_rounds {
            self.round(true)?;
        }
        self.liveness()
    }

    // --- reports -------------------------------------------------------------------------------

    fn describe(&self) -> String {
        let mut out = format!(
            "round {}, {} entries committed, {} messages in flight, partition {:?}\n",
            self.now,
            self.committed.len(),
            self.net.len(),
            self.partition
        );
        for (id, node) in self.nodes.iter().enumerate() {
            let _ = match &node.quorum {
                None => writeln!(out, "  node {id}: down until {}", node.down_until),
                Some(q) => {
                    let raft = &q.node.raft;
                    let store = q.node.store();
                    let progress = if raft.state == StateRole::Leader {
                        let mut s = String::new();
                        for (&peer, pr) in raft.prs().iter().collect::<BTreeMap<_, _>>() {
                            let _ = write!(
                                s,
                                " [{}: {:?} m{} n{}]",
                                peer - 1,
                                pr.state,
                                pr.matched,
                                pr.next_idx
                            );
                        }
                        s
                    } else {
                        String::new()
                    };
                    writeln!(
                        out,
                        "  node {id}: {:?} term {} leader {:?} commit {} applied {} snapshot {} \
                         last {}{progress}",
                        raft.state,
                        raft.term,
                        q.leader_id(),
                        raft.raft_log.committed,
                        node.machine.index,
                        store.snapshot_index(),
                        store.last()
                    )
                }
            };
        }
        out
    }

    fn format_trace(&self) -> String {
        let mut out = String::new();
        for (round, ev) in &self.trace {
            let _ = writeln!(out, "  @{round} {ev:?}");
        }
        out
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_string()
    }
}

/// Runs `body` on `sim`; a failure (or panic) comes back as a report naming the seed.
fn checked(sim: &mut Sim, body: impl FnOnce(&mut Sim) -> Result<(), String>) -> Result<(), String> {
    let error = match panic::catch_unwind(AssertUnwindSafe(|| body(&mut *sim))) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error,
        Err(payload) => format!("panicked: {}", panic_message(&*payload)),
    };
    let seed = sim.seed;
    Err(format!(
        "seed {seed} failed: {error}\nreproduce: RIPTIDE_SIM_SEED={seed} cargo test --release -p \
         riptide --lib cluster::quorum::sim::random_seeds -- --nocapture\nparams: {:?}\n{}last \
         events:\n{}",
        sim.drawn,
        sim.describe(),
        sim.format_trace()
    ))
}

fn run_seed(seed: u64) -> Result<Stats, String> {
    let mut sim = Sim::random(seed);
    checked(&mut sim, |sim| sim.run())?;
    Ok(sim.stats)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

#[test]
fn random_seeds() {
    let seeds: Vec<u64> = match env_u64("RIPTIDE_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("RIPTIDE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(seeds.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(Stats::default());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                if failures.lock().unwrap().len() >= 3 {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { return };
                match run_seed(seed) {
                    Ok(stats) => totals.lock().unwrap().add(&stats),
                    Err(report) => failures.lock().unwrap().push((seed, report)),
                }
            });
        }
    });
    let totals = totals.into_inner().unwrap();
    eprintln!(
        "quorum simulation: {} seeds in {:.1?} on {threads} threads: {totals:?}",
        totals.seeds,
        started.elapsed()
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    if let Some((_, report)) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|(seed, _)| *seed).collect();
        panic!("failing seeds {seeds:?} (stopped after 3)\n{report}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let digest = |seed: u64| {
        let mut sim = Sim::random(seed);
        let outcome = sim.run();
        let chain = sim.committed.last().map(|c| c.machine);
        format!(
            "{outcome:?} {chain:?} {:?} {}",
            sim.stats,
            sim.format_trace()
        )
    };
    for seed in [3, 17, 12345] {
        assert_eq!(digest(seed), digest(seed), "seed {seed}");
    }
}

// ---------------------------------------------------------------------------------------------
// Targeted scenarios

fn calm(seed: u64, voters: usize, max_entries_before_snapshot: u64) -> Sim {
    let mut sim = Sim::new(seed, Params::calm(voters, max_entries_before_snapshot));
    sim.start().unwrap();
    sim
}

/// Runs `scenario` on `sim`, panicking with the report on failure.
fn scenario(mut sim: Sim, scenario: impl FnOnce(&mut Sim) -> Result<(), String>) {
    if let Err(report) = checked(&mut sim, scenario) {
        panic!("{report}");
    }
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

/// Waits for an agreed leader.
fn settle(sim: &mut Sim) -> Result<usize, String> {
    sim.run_until(500, |sim| sim.agreed_leader().is_some())?;
    sim.agreed_leader().ok_or_else(|| "no leader".to_string())
}

/// Commits `count` proposals on the leader and waits until every up node applied them.
fn commit_some(sim: &mut Sim, count: usize) -> Result<(), String> {
    for _ in 0..count {
        let leader = settle(sim)?;
        sim.propose_on(leader)?;
        sim.round(false)?;
    }
    let done = sim.run_until(500, |sim| {
        let last = sim.committed.len() as u64;
        sim.nodes
            .iter()
            .all(|n| n.quorum.is_none() || n.machine.index == last)
            && sim.nodes.iter().all(|n| n.pending.is_empty())
    })?;
    ensure(done, || "proposals did not commit everywhere".to_string())
}

#[test]
fn a_wiped_follower_catches_up_from_a_snapshot() {
    scenario(calm(1, 3, 5), |sim| {
        commit_some(sim, 30)?;
        let leader = settle(sim)?;
        ensure(sim.quorum(leader).node.store().first() > 10, || {
            "leader did not compact".into()
        })?;
        let wiped = (leader + 1) % 3;
        ensure(sim.try_wipe(Some(wiped))?, || "wipe refused".into())?;
        ensure(sim.nodes[wiped].fs.bytes(LOG_FILE).is_empty(), || {
            "disk not wiped".into()
        })?;
        sim.liveness()?;
        ensure(sim.nodes[wiped].restores > 0, || {
            "the wiped node caught up without a snapshot".into()
        })?;
        commit_some(sim, 3)?;
        ensure(sim.converged(), || "not converged".into())
    });
}

#[test]
fn a_torn_log_tail_is_truncated_and_the_node_rejoins() {
    scenario(calm(2, 3, 10_000), |sim| {
        commit_some(sim, 5)?;
        let leader = settle(sim)?;
        let follower = (leader + 1) % 3;
        {
            let mut disk = sim.nodes[follower].fs.0.borrow_mut();
            disk.crash_at_log_sync = true;
            disk.force_torn = true;
        }
        let before = sim.nodes[follower].fs.bytes(LOG_FILE).len();
        sim.propose_on(leader)?;
        let crashed = sim.run_until(100, |sim| sim.nodes[follower].quorum.is_none())?;
        ensure(crashed, || {
            "the follower did not crash at its log sync".into()
        })?;
        let torn = sim.nodes[follower].fs.bytes(LOG_FILE);
        let (_, valid) = storage::decode_log(&torn);
        ensure(valid >= before && valid < torn.len(), || {
            format!(
                "log not torn: {before} bytes before, {} after, {valid} valid",
                torn.len()
            )
        })?;
        sim.nodes[follower].down_until = sim.now;
        sim.round(false)?;
        ensure(
            sim.nodes[follower].fs.bytes(LOG_FILE).len() == valid,
            || "tail not truncated".into(),
        )?;
        ensure(sim.stats.torn_tails_truncated == 1, || {
            "no truncation counted".into()
        })?;
        commit_some(sim, 5)?;
        sim.liveness()
    });
}

#[test]
fn without_a_majority_nothing_commits_until_a_voter_returns() {
    scenario(calm(3, 3, 8), |sim| {
        commit_some(sim, 3)?;
        let leader = settle(sim)?;
        let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
        for node in [a, b] {
            sim.crash(node, "test");
            sim.nodes[node].down_until = u64::MAX;
        }
        let committed = sim.committed.len();
        let id = sim
            .propose_on(leader)?
            .ok_or_else(|| "the leader refused a proposal at once".to_string())?;
        for _ in 0..300 {
            sim.round(false)?;
            let _ = sim.propose_on(leader)?;
        }
        ensure(sim.committed.len() == committed, || {
            "an entry committed on one voter of three".into()
        })?;
        ensure(!sim.is_leader(leader), || {
            "a lone leader kept leading past check-quorum".into()
        })?;
        sim.nodes[a].down_until = sim.now;
        let done = sim.run_until(1_000, |sim| sim.nodes[leader].committed.contains_key(&id))?;
        ensure(done, || {
            "the proposal did not commit once a majority was back".into()
        })?;
        sim.liveness()
    });
}

/// A crash between writing a snapshot and rewriting the log leaves the old log behind the new
/// snapshot. Reopening must not keep old records past the snapshot that a later record (or the
/// snapshot itself) superseded.
#[test]
fn a_log_left_behind_a_new_snapshot_keeps_no_superseded_tail() {
    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }
    fn snapshot(index: u64, term: u64) -> Vec<u8> {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(
            Machine {
                index,
                count: 0,
                hash: 0,
            }
            .encode()
            .into(),
        );
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot
            .mut_metadata()
            .mut_conf_state()
            .set_voters(vec![1, 2, 3]);
        storage::encode_checked(&snapshot).unwrap()
    }
    /// Log records in the order written (index, term), the snapshot's (index, term), and the
    /// log expected after folding.
    type Case = (Vec<(u64, u64)>, (u64, u64), Vec<(u64, u64)>);
    let cases: [Case; 4] = [
        // Compacted at 15 of its own log after a new leader overwrote 12..: 16, 17 are gone.
        (
            (1..=17)
                .map(|i| (i, 1))
                .chain((12..=15).map(|i| (i, 2)))
                .collect(),
            (15, 2),
            vec![],
        ),
        // Received a snapshot at 15 (term 2) while holding a diverging log of term 1.
        ((1..=20).map(|i| (i, 1)).collect(), (15, 2), vec![]),
        // Compacted at 15 of a log that continues it: the tail stays.
        (
            (1..=20).map(|i| (i, 1)).collect(),
            (15, 1),
            (16..=20).map(|i| (i, 1)).collect(),
        ),
        // The log rewritten after the snapshot.
        (
            (16..=18).map(|i| (i, 3)).collect(),
            (15, 2),
            (16..=18).map(|i| (i, 3)).collect(),
        ),
    ];
    for (records, (index, term), expected) in cases {
        let fs = SimFs::new(Rng::new(0));
        let mut log = Vec::new();
        for &(i, t) in &records {
            storage::encode_log_record(&entry(i, t), &mut log).unwrap();
        }
        let mut writer = fs.clone();
        writer.replace(LOG_FILE, &log).unwrap();
        writer
            .replace(SNAPSHOT_FILE, &snapshot(index, term))
            .unwrap();
        let config = QuorumConfig {
            node_id: 0,
            voters: vec![0, 1, 2],
            election_tick: ELECTION_TICK,
            heartbeat_tick: HEARTBEAT_TICK,
            max_entries_before_snapshot: 10,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 16,
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let (quorum, _) = Quorum::open(config, fs, logger).unwrap();
        let got: Vec<(u64, u64)> = quorum
            .node
            .store()
            .entries()
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(
            got, expected,
            "records {records:?}, snapshot at {index} of term {term}"
        );
    }
}
