#![allow(dead_code, unused_variables)]
pub use raft::eraftpb::Message as RaftMessage;
pub struct QuorumConfig { pub node_id: i32, pub voters: Vec<i32>, pub election_tick: usize, pub heartbeat_tick: usize, pub max_entries_before_snapshot: u64, pub max_size_per_msg_bytes: u64, pub max_inflight_msgs: usize }
pub trait MetaFs {}
pub struct DirFs;
impl MetaFs for DirFs {}
impl DirFs { pub fn open(dir: &std::path::Path) -> std::io::Result<DirFs> { todo!() } }
pub struct CommittedEntry { pub index: u64, pub term: u64, pub data: Vec<u8>, pub proposal: Option<ProposalId> }
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId(pub u64);
pub enum Applied { Entry(CommittedEntry), Restore { index: u64, term: u64, data: Vec<u8> } }
#[derive(Default)]
pub struct QuorumOutput { pub messages: Vec<(i32, RaftMessage)>, pub applied: Vec<Applied>, pub leader_changed: bool }
#[derive(Debug, thiserror::Error)]
pub enum ProposeError { #[error("not the leader (leader hint {0:?})")] NotLeader(Option<i32>), #[error("proposal dropped: {0}")] Dropped(String) }
pub struct VoterStatus { pub node_id: i32, pub matched_index: u64, pub is_leader: bool, pub recently_active: bool }
pub struct QuorumStatus { pub node_id: i32, pub term: u64, pub leader_id: Option<i32>, pub commit_index: u64, pub applied_index: u64, pub last_index: u64, pub snapshot_index: u64, pub voters: Vec<VoterStatus>, pub elections_started: u64, pub leader_elected_count: u64 }
pub struct FetchError;
pub struct Quorum<F: MetaFs> { f: F }
impl<F: MetaFs> Quorum<F> {
    pub fn open(config: QuorumConfig, fs: F, logger: slog::Logger) -> anyhow::Result<(Quorum<F>, Option<Applied>)> { todo!() }
    pub fn tick(&mut self) {}
    pub fn step(&mut self, message: RaftMessage) -> anyhow::Result<()> { todo!() }
    pub fn propose(&mut self, data: Vec<u8>) -> Result<ProposalId, ProposeError> { todo!() }
    pub fn poll(&mut self) -> anyhow::Result<QuorumOutput> { todo!() }
    pub fn wants_snapshot(&self) -> bool { todo!() }
    pub fn compact(&mut self, applied_index: u64, state_machine_data: Vec<u8>) -> anyhow::Result<()> { todo!() }
    pub fn status(&self) -> QuorumStatus { todo!() }
    pub fn is_leader(&self) -> bool { todo!() }
    pub fn leader_id(&self) -> Option<i32> { todo!() }
    pub fn term(&self) -> u64 { todo!() }
    pub fn campaign(&mut self) -> anyhow::Result<()> { todo!() }
    pub fn committed_entries_after(&self, after_index: u64, max_bytes: u64) -> Result<Vec<CommittedEntry>, FetchError> { todo!() }
    pub fn latest_snapshot(&self) -> Option<(u64, u64, Vec<u8>)> { todo!() }
}
pub fn logger() -> slog::Logger { todo!() }
