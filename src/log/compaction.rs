//! Log compaction (`cleanup.policy=compact`): keep the latest record per key.
//!
//! One pass:
//! 1. The cleanable range is the prefix of sealed segments that are durable (below the durable
//!    end) and older than `min.compaction.lag.ms`. Its part past the cleaner offset is dirty.
//! 2. The dirty part is scanned into a map key hash → latest offset (128-bit SipHash of the
//!    key, so a collision that would drop a live record is out of reach), bounded by
//!    `max_keys`; where it fills, the pass ends (`map_end`, a batch boundary).
//! 3. The cleaner offset is set to `map_end` (durably: recovery relaxes its checks for
//!    segments starting below it), then every segment starting below `map_end` is rewritten
//!    into `<base>.log.cleaned`: a record is dropped if the map holds a later offset for its
//!    key, and a tombstone (null value) that is the latest for its key is dropped once its
//!    batch is older than `delete.retention.ms`. Kept batches keep their base offset, last
//!    offset delta, timestamps and producer fields, so offsets are preserved; a batch losing
//!    some records is rebuilt (records copied verbatim, recompressed with the batch's codec),
//!    one losing all is dropped. Transactions, as Kafka's cleaner treats them (the caller
//!    passes the partition's [`TransactionView`]): nothing at or past the first unstable
//!    offset is cleaned; batches of aborted transactions never enter the key map (an aborted
//!    write must not supersede a committed one) and are dropped; an ABORT marker is kept while
//!    its aborted-index entry lives (the pass that drops a transaction's data reports it in
//!    [`CompactionOutcome::aborted_cleaned_below`] so the caller retires the entry; consumers
//!    that already read the data still meet the marker); a COMMIT marker is kept while data of
//!    its transaction remains; markers that protect nothing go once older than
//!    `delete.retention.ms`, like tombstones.
//! 4. The rewritten file is synced, the old index removed, the file renamed over the old
//!    segment, its index written, the directory synced; then the in-memory segment swaps
//!    files. Readers holding the old file finish reading it.
//!
//! All of it runs in slices of at most `slice_bytes` of batches, with a timer yield between
//! slices, so the shard's reactor runs and produce/fetch latency stays flat. A pass starts only
//! when the dirty segments are at least `min.cleanable.dirty.ratio` of the cleanable bytes, or
//! dirty data has waited `max.compaction.lag.ms`, as in Kafka. Records without
//! a key are kept (produce refuses them on compacted topics; older data may still hold some).
//! Tombstones expire only in passes that have new dirty data to clean.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::compression::Compressor;

use super::checkpoint::OffsetFile;
use super::file_io::{
    align_down, align_up, io_error, open_segment_file, preallocate, remove_files, sync_directory,
    write_file_atomic, WindowReader,
};
use super::partition::{close_files, PartitionLog};
use super::recovery::CLEANED_SUFFIX;
use super::segment::{index_file_name, recompute_prefix_max, segment_file_name, SparseIndex};
use super::{LogError, BLOCK_SIZE_BYTES};
use crate::protocol::record_batch::{
    control_marker_type, RecordBatchHeader, BATCH_LENGTH_OVERHEAD_BYTES, COMPRESSION_GZIP,
    COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_SNAPPY, COMPRESSION_ZSTD,
    RECORD_BATCH_HEADER_SIZE_BYTES,
};
use crate::protocol::records::{parse_records, records_section};

/// Bounds of one compaction pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionLimits {
    /// Batch bytes read and filtered between two yields to the shard.
    pub slice_bytes: u64,
    /// Distinct keys one pass tracks (about 40 bytes of memory each).
    pub max_keys: usize,
}

impl Default for CompactionLimits {
    fn default() -> Self {
        CompactionLimits {
            slice_bytes: 256 * 1024,
            max_keys: 500_000,
        }
    }
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub segments_rewritten: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// The new cleaner offset: everything below it is compacted.
    pub cleaned_up_to: i64,
    /// Aborted transactions whose marker is below this offset have no data left: their
    /// aborted-index entries can go (their markers then go in a later pass).
    pub aborted_cleaned_below: i64,
    /// Transaction markers removed.
    pub markers_removed: u64,
}

/// One aborted transaction of the partition: records of `producer_id` from `first_offset` up
/// to its ABORT marker at `marker_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedRange {
    pub producer_id: i64,
    pub first_offset: i64,
    pub marker_offset: i64,
}

/// What compaction must know of the partition's transactions (from its producer state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionView {
    /// First offset of the earliest open transaction: nothing at or past it is cleaned.
    pub first_unstable_offset: Option<i64>,
    /// The partition's aborted-transaction index (any order).
    pub aborted: Vec<AbortedRange>,
}

/// Transactions as one pass walks the log in offset order.
#[derive(Debug, Default)]
struct TxnPass {
    /// Live aborted-index entries by producer: (first offset, marker offset).
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// Producers whose transactional data was read since their last marker: their COMMIT
    /// marker still ends a transaction that has records.
    committed_data_pending: std::collections::HashSet<i64>,
    markers_removed: u64,
}

impl TxnPass {
    fn new(view: &TransactionView) -> TxnPass {
        let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for range in &view.aborted {
            assert!(range.first_offset <= range.marker_offset);
            aborted
                .entry(range.producer_id)
                .or_default()
                .push((range.first_offset, range.marker_offset));
        }
        TxnPass {
            aborted,
            ..TxnPass::default()
        }
    }

    /// The batch is data of an aborted transaction (never visible to read_committed).
    fn is_aborted_data(&self, header: &RecordBatchHeader) -> bool {
        if !header.is_transactional() || header.is_control() {
            return false;
        }
        self.aborted.get(&header.producer_id).is_some_and(|ranges| {
            ranges.iter().any(|&(first_offset, marker_offset)| {
                first_offset <= header.base_offset && header.base_offset < marker_offset
            })
        })
    }

    /// Whether a control batch must stay: an ABORT marker whose aborted-index entry lives, a
    /// COMMIT marker whose transaction still has records, or one not yet past the delete
    /// horizon. Other control records are kept.
    fn keep_marker(&mut self, batch: &[u8], header: &RecordBatchHeader, horizon_ms: i64) -> bool {
        let Some(commit) = control_marker_type(batch, header) else {
            return true;
        };
        let protects_data = if commit {
            self.committed_data_pending.remove(&header.producer_id)
        } else {
            self.aborted
                .get(&header.producer_id)
                .is_some_and(|ranges| ranges.iter().any(|&(_, m)| m == header.base_offset))
        };
        let keep = protects_data || header.max_timestamp_ms >= horizon_ms;
        if !keep {
            self.markers_removed += 1;
        }
        keep
    }

    /// Notes a data batch read by the rewrite (before filtering, as Kafka's cleaner does).
    fn on_data_batch(&mut self, header: &RecordBatchHeader) {
        if header.is_transactional() && !self.is_aborted_data(header) {
            self.committed_data_pending.insert(header.producer_id);
        }
    }
}

/// How long compaction sleeps between slices: long enough that the executor polls its
/// reactor (network and disk completions) before the next slice.
const SLICE_PAUSE: Duration = Duration::from_micros(50);

/// Read window of compaction scans (with read-ahead: two in flight).
const SCAN_WINDOW_BYTES: u64 = 4 * 1024 * 1024;

/// Output is written in chunks of this size.
const OUTPUT_CHUNK_BYTES: usize = 1024 * 1024;

const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const BATCH_LENGTH_OFFSET: usize = 8;
const RECORD_COUNT_OFFSET: usize = 57;

type KeyHash = u128;
type KeyMap = HashMap<KeyHash, i64>;

/// The batch's stored CRC-32C matches its content (the only check a compacted batch can
/// pass: it may hold fewer records than its offset range).
pub(crate) fn crc_is_valid(batch: &[u8]) -> bool {
    if batch.len() < RECORD_BATCH_HEADER_SIZE_BYTES {
        return false;
    }
    let stored = u32::from_be_bytes([
        batch[CRC_OFFSET],
        batch[CRC_OFFSET + 1],
        batch[CRC_OFFSET + 2],
        batch[CRC_OFFSET + 3],
    ]);
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]) == stored
}

fn key_hash(key: &[u8]) -> KeyHash {
    // Two independent SipHash-1-3 runs: deterministic within the process, 128 bits.
    let mut first = std::hash::DefaultHasher::new();
    key.hash(&mut first);
    let mut second = std::hash::DefaultHasher::new();
    0x9e37_79b9_7f4a_7c15u64.hash(&mut second);
    key.hash(&mut second);
    (u128::from(first.finish()) << 64) | u128::from(second.finish())
}

fn compress_records(codec: u8, records: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(records.len() / 2 + 64);
    let fill = |buf: &mut bytes::BytesMut| {
        buf.extend_from_slice(records);
        Ok(())
    };
    let result = match codec {
        COMPRESSION_NONE => return Ok(records.to_vec()),
        COMPRESSION_GZIP => kafka_protocol::compression::Gzip::compress(&mut out, fill),
        COMPRESSION_SNAPPY => kafka_protocol::compression::Snappy::compress(&mut out, fill),
        COMPRESSION_LZ4 => kafka_protocol::compression::Lz4::compress(&mut out, fill),
        COMPRESSION_ZSTD => kafka_protocol::compression::Zstd::compress(&mut out, fill),
        other => return Err(format!("unknown compression codec {other}")),
    };
    result
        .map(|()| out)
        .map_err(|error| format!("compression failed: {error}"))
}

/// Adds the keys of one batch to the map (later offsets win).
fn map_batch(batch: &[u8], header: &RecordBatchHeader, map: &mut KeyMap) -> Result<(), String> {
    if header.is_control() {
        return Ok(());
    }
    let section = records_section(batch, header.compression_codec())?;
    for record in parse_records(&section)? {
        if let Some(key) = record.key {
            map.insert(key_hash(key), header.base_offset + record.offset_delta);
        }
    }
    Ok(())
}

/// What to do with one batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BatchFate {
    Keep,
    Drop,
    /// The batch rebuilt with the records kept.
    Rebuild(Vec<u8>),
}

/// Decides one batch's fate, transactions first: aborted data and markers that protect
/// nothing (past the horizon) go, other control batches stay, data goes through
/// [`filter_batch`].
fn filter_batch_in_pass(
    batch: &[u8],
    pass: &PassContext<'_>,
    txns: &mut TxnPass,
) -> Result<(BatchFate, u64), String> {
    let header = RecordBatchHeader::parse(batch).map_err(|error| error.to_string())?;
    if header.is_control() {
        let fate = if txns.keep_marker(batch, &header, pass.tombstone_horizon_ms) {
            BatchFate::Keep
        } else {
            BatchFate::Drop
        };
        return Ok((fate, 0));
    }
    if txns.is_aborted_data(&header) {
        return Ok((BatchFate::Drop, header.record_count.max(0) as u64));
    }
    txns.on_data_batch(&header);
    filter_batch(
        batch,
        pass.map,
        pass.map_end_offset,
        pass.tombstone_horizon_ms,
    )
}

/// Decides one batch's fate against the key map. Returns the fate and the records removed.
pub(crate) fn filter_batch(
    batch: &[u8],
    map: &KeyMap,
    map_end_offset: i64,
    tombstone_horizon_ms: i64,
) -> Result<(BatchFate, u64), String> {
    let header = RecordBatchHeader::parse(batch).map_err(|error| error.to_string())?;
    assert_eq!(header.total_size_bytes(), batch.len());
    if header.is_control() {
        return Ok((BatchFate::Keep, 0));
    }
    let codec = header.compression_codec();
    let section = records_section(batch, codec)?;
    let records = parse_records(&section)?;
    let tombstones_expire = header.max_timestamp_ms < tombstone_horizon_ms;
    let keep: Vec<bool> = records
        .iter()
        .map(|record| {
            let offset = header.base_offset + record.offset_delta;
            let Some(key) = record.key else {
                return true;
            };
            let superseded = map
                .get(&key_hash(key))
                .is_some_and(|&latest| latest > offset);
            let expired_tombstone =
                record.value_is_null && offset < map_end_offset && tombstones_expire;
            !superseded && !expired_tombstone
        })
        .collect();
    let kept = keep.iter().filter(|&&k| k).count();
    let removed = (records.len() - kept) as u64;
    if kept == records.len() {
        return Ok((BatchFate::Keep, 0));
    }
    if kept == 0 {
        return Ok((BatchFate::Drop, removed));
    }
    let mut section_out = Vec::with_capacity(section.len());
    for (record, keep) in records.iter().zip(&keep) {
        if *keep {
            section_out.extend_from_slice(record.raw);
        }
    }
    let section_out = compress_records(codec, &section_out)?;
    let mut rebuilt = Vec::with_capacity(RECORD_BATCH_HEADER_SIZE_BYTES + section_out.len());
    rebuilt.extend_from_slice(&batch[..RECORD_BATCH_HEADER_SIZE_BYTES]);
    rebuilt.extend_from_slice(&section_out);
    let batch_length = (rebuilt.len() - BATCH_LENGTH_OVERHEAD_BYTES) as i32;
    rebuilt[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
        .copy_from_slice(&batch_length.to_be_bytes());
    rebuilt[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]
        .copy_from_slice(&(kept as i32).to_be_bytes());
    let crc = crc32c::crc32c(&rebuilt[ATTRIBUTES_OFFSET..]);
    rebuilt[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok((BatchFate::Rebuild(rebuilt), removed))
}

/// What every segment rewrite of one pass shares.
struct PassContext<'a> {
    map: &'a KeyMap,
    map_end_offset: i64,
    tombstone_horizon_ms: i64,
    limits: &'a CompactionLimits,
    index_interval_bytes: u64,
}

/// A sealed segment as the pass sees it.
#[derive(Clone)]
struct SegmentRef {
    base_offset: i64,
    file: Rc<glommio::io::DmaFile>,
    size_bytes: u64,
    next_offset: i64,
    max_timestamp_ms: i64,
}

/// What the cleaning trigger needs of a segment.
#[derive(Debug, Clone, Copy)]
struct SegmentSpan {
    size_bytes: u64,
    next_offset: i64,
    max_timestamp_ms: i64,
}

/// Kafka's trigger: the dirty share of the cleanable bytes reached `min.cleanable.dirty.ratio`,
/// or the oldest dirty segment waited longer than `max.compaction.lag.ms`. A segment holding
/// `dirty_start` counts as dirty (passes clean whole segments).
fn worth_cleaning(
    segments: &[SegmentSpan],
    dirty_start: i64,
    now_ms: i64,
    config: &super::LogConfig,
) -> bool {
    let is_dirty = |segment: &&SegmentSpan| segment.next_offset > dirty_start;
    let total_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let dirty_bytes: u64 = segments.iter().filter(is_dirty).map(|s| s.size_bytes).sum();
    if total_bytes == 0 {
        return false;
    }
    let ratio_ppm = dirty_bytes.saturating_mul(1_000_000) / total_bytes;
    if ratio_ppm >= u64::from(config.min_cleanable_dirty_ratio_ppm) {
        return true;
    }
    let overdue_before_ms =
        now_ms.saturating_sub(i64::try_from(config.max_compaction_lag_ms).unwrap_or(i64::MAX));
    segments
        .iter()
        .find(is_dirty)
        .is_some_and(|segment| segment.max_timestamp_ms < overdue_before_ms)
}

async fn pause() {
    glommio::timer::sleep(SLICE_PAUSE).await;
}

impl PartitionLog {
    /// Runs one compaction pass if the topic is compacted and there is dirty data old enough
    /// to clean; `Ok(None)` if there was nothing to do (or another maintenance task runs).
    pub async fn compact(
        &self,
        now_ms: i64,
        limits: &CompactionLimits,
        transactions: &TransactionView,
    ) -> Result<Option<CompactionOutcome>, LogError> {
        assert!(limits.slice_bytes > 0 && limits.max_keys > 0);
        let config = self.config();
        if !config.cleanup_compact {
            return Ok(None);
        }
        let Ok(_permit) = self.maintenance_lock.try_acquire_permit(1) else {
            return Ok(None);
        };
        let lag_horizon_ms = now_ms.saturating_sub(config.min_compaction_lag_ms as i64);
        let (segments, dirty_start) = {
            let state = self.state.borrow();
            state.check_readable()?;
            let sealed = &state.segments[..state.segments.len() - 1];
            let mut cleanable: Vec<SegmentRef> = Vec::new();
            let stable_end_offset = transactions.first_unstable_offset.unwrap_or(i64::MAX);
            for segment in sealed {
                if segment.next_offset > state.durable_end_offset
                    || segment.next_offset > stable_end_offset
                    || segment.retention_timestamp_ms() > lag_horizon_ms
                {
                    break;
                }
                cleanable.push(SegmentRef {
                    base_offset: segment.base_offset,
                    file: segment.file.clone(),
                    size_bytes: segment.size_bytes,
                    next_offset: segment.next_offset,
                    max_timestamp_ms: segment.retention_timestamp_ms(),
                });
            }
            let dirty_start = state
                .cleaner_offset
                .max(state.log_start_offset)
                .max(state.segments[0].base_offset);
            (cleanable, dirty_start)
        };
        let cleanable_end = segments.last().map_or(dirty_start, |s| s.next_offset);
        if cleanable_end <= dirty_start {
            return Ok(None);
        }
        let spans: Vec<SegmentSpan> = segments
            .iter()
            .map(|s| SegmentSpan {
                size_bytes: s.size_bytes,
                next_offset: s.next_offset,
                max_timestamp_ms: s.max_timestamp_ms,
            })
            .collect();
        if !worth_cleaning(&spans, dirty_start, now_ms, &config) {
            return Ok(None);
        }

        // Build the key map over the dirty range (committed and non-transactional data only).
        let mut txns = TxnPass::new(transactions);
        let mut map = KeyMap::new();
        let mut map_end_offset = dirty_start;
        let mut sliced_bytes = 0u64;
        'segments: for segment in segments.iter().filter(|s| s.next_offset > dirty_start) {
            let mut reader = WindowReader::with_readahead(
                segment.file.clone(),
                segment.size_bytes,
                SCAN_WINDOW_BYTES,
            );
            let mut position = 0u64;
            while position < segment.size_bytes {
                let header = read_header(&mut reader, position, segment.size_bytes).await?;
                let size_bytes = header.total_size_bytes();
                if header.last_offset() >= dirty_start {
                    if map.len() + header.record_count.max(0) as usize > limits.max_keys {
                        break 'segments;
                    }
                    if !txns.is_aborted_data(&header) {
                        let batch = reader.bytes(position, size_bytes).await?;
                        map_batch(batch, &header, &mut map).map_err(|error| {
                            LogError::Corrupt(format!(
                                "compaction of {}: {error}",
                                header.base_offset
                            ))
                        })?;
                    }
                    map_end_offset = header.last_offset() + 1;
                }
                position += size_bytes as u64;
                sliced_bytes += size_bytes as u64;
                if sliced_bytes >= limits.slice_bytes {
                    sliced_bytes = 0;
                    pause().await;
                }
            }
            map_end_offset = map_end_offset.max(segment.next_offset);
        }
        if map_end_offset <= dirty_start {
            tracing::warn!(dir = %self.dir.display(), max_keys = limits.max_keys,
                "compaction key map too small for one batch; raise compaction_max_keys");
            return Ok(None);
        }

        // Recovery must accept gaps below the new cleaner offset before any rewritten
        // segment can appear on disk.
        OffsetFile::Cleaner.write(&self.dir, map_end_offset).await?;
        self.state.borrow_mut().cleaner_offset = map_end_offset;

        let tombstone_horizon_ms = now_ms.saturating_sub(config.delete_retention_ms as i64);
        let mut outcome = CompactionOutcome {
            cleaned_up_to: map_end_offset,
            ..CompactionOutcome::default()
        };
        let first_base_offset = segments.first().map_or(0, |s| s.base_offset);
        let pass = PassContext {
            map: &map,
            map_end_offset,
            tombstone_horizon_ms,
            limits,
            index_interval_bytes: config.index_interval_bytes,
        };
        for segment in segments.iter().filter(|s| s.base_offset < map_end_offset) {
            let removable = segment.base_offset != first_base_offset;
            let rewritten = self
                .rewrite_segment(segment, removable, &pass, &mut txns)
                .await?;
            // Every aborted batch below here is gone (all segments from the first were read).
            outcome.aborted_cleaned_below = segment.next_offset;
            if let Some((size_after, removed)) = rewritten {
                outcome.segments_rewritten += 1;
                outcome.bytes_before += segment.size_bytes;
                outcome.bytes_after += size_after;
                outcome.records_removed += removed;
            }
        }
        outcome.markers_removed = txns.markers_removed;
        // Cached appends of the cleaned range would keep serving superseded records.
        self.cache.borrow_mut().evict_before(map_end_offset);
        {
            let mut state = self.state.borrow_mut();
            state.stats.compactions += 1;
            state.stats.compaction_bytes_removed += outcome.bytes_before - outcome.bytes_after;
        }
        tracing::info!(dir = %self.dir.display(), segments = outcome.segments_rewritten,
            bytes_before = outcome.bytes_before, bytes_after = outcome.bytes_after,
            records_removed = outcome.records_removed, cleaned_up_to = map_end_offset,
            markers_removed = outcome.markers_removed, "compacted");
        Ok(Some(outcome))
    }

    /// Rewrites one segment without the records the map supersedes; swaps it in if anything
    /// changed. Returns (new size, records removed), or `None` if it was left as it was.
    async fn rewrite_segment(
        &self,
        segment: &SegmentRef,
        removable: bool,
        pass: &PassContext<'_>,
        txns: &mut TxnPass,
    ) -> Result<Option<(u64, u64)>, LogError> {
        let limits = pass.limits;
        let index_interval_bytes = pass.index_interval_bytes;
        let cleaned_name = format!("{}{CLEANED_SUFFIX}", segment_file_name(segment.base_offset));
        let cleaned_path = self.dir.join(&cleaned_name);
        let output = open_segment_file(&cleaned_path, true).await?;
        output.truncate(0).await.map_err(io_error)?;
        let _ = preallocate(&output, align_up(segment.size_bytes.max(BLOCK_SIZE_BYTES))).await;
        let mut reader = WindowReader::with_readahead(
            segment.file.clone(),
            segment.size_bytes,
            SCAN_WINDOW_BYTES,
        );
        let mut index = SparseIndex::default();
        let mut staged: Vec<u8> = Vec::with_capacity(OUTPUT_CHUNK_BYTES + 64 * 1024);
        let mut written_bytes = 0u64; // flushed to `output` (block-aligned)
        let mut output_size_bytes = 0u64;
        let mut removed_records = 0u64;
        let mut changed = false;
        let mut position = 0u64;
        let mut sliced_bytes = 0u64;
        let result: Result<(), LogError> = async {
            while position < segment.size_bytes {
                let header = read_header(&mut reader, position, segment.size_bytes).await?;
                let size_bytes = header.total_size_bytes();
                let batch = reader.bytes(position, size_bytes).await?;
                let (fate, removed) = filter_batch_in_pass(batch, pass, txns)
                    .map_err(|error| LogError::Corrupt(format!("compaction: {error}")))?;
                removed_records += removed;
                let kept: Option<&[u8]> = match &fate {
                    BatchFate::Keep => Some(batch),
                    BatchFate::Rebuild(rebuilt) => Some(rebuilt),
                    BatchFate::Drop => None,
                };
                changed |= fate != BatchFate::Keep;
                if let Some(kept) = kept {
                    let kept_header =
                        RecordBatchHeader::parse(kept).expect("kept batches are well formed");
                    index.on_batch(&kept_header, output_size_bytes, index_interval_bytes);
                    staged.extend_from_slice(kept);
                    output_size_bytes += kept.len() as u64;
                }
                if staged.len() >= OUTPUT_CHUNK_BYTES {
                    let aligned = align_down(staged.len() as u64) as usize;
                    write_staged(&output, &staged[..aligned], written_bytes).await?;
                    written_bytes += aligned as u64;
                    staged.drain(..aligned);
                }
                position += size_bytes as u64;
                sliced_bytes += size_bytes as u64;
                if sliced_bytes >= limits.slice_bytes {
                    sliced_bytes = 0;
                    pause().await;
                }
            }
            if !changed {
                return Ok(());
            }
            if !staged.is_empty() {
                let padded = align_up(staged.len() as u64) as usize;
                staged.resize(padded, 0);
                write_staged(&output, &staged, written_bytes).await?;
            }
            output.truncate(output_size_bytes).await.map_err(io_error)?;
            output.fdatasync().await.map_err(io_error)?;
            Ok(())
        }
        .await;
        let _ = output.close().await;
        if let Err(error) = result {
            let _ = remove_files(vec![cleaned_path]).await;
            return Err(error);
        }
        if !changed {
            remove_files(vec![cleaned_path]).await?;
            return Ok(None);
        }

        // Swap: no index may describe the wrong file at any point a crash could observe.
        let segment_path = self.dir.join(segment_file_name(segment.base_offset));
        let index_name = index_file_name(segment.base_offset);
        remove_files(vec![self.dir.join(&index_name)]).await?;
        sync_directory(&self.dir).await?;
        if output_size_bytes == 0 && removable {
            // Nothing left: the previous segment's coverage absorbs this one (recovery
            // extends a compacted segment up to the next file's base offset).
            return self
                .remove_empty_segment(segment, cleaned_path, segment_path)
                .await
                .map(|()| Some((0, removed_records)));
        }
        let (from, to) = (cleaned_path.clone(), segment_path.clone());
        super::file_io::blocking(move || std::fs::rename(from, to))
            .await
            .map_err(LogError::Io)?;
        let new_file = Rc::new(open_segment_file(&segment_path, false).await?);
        let swapped = self.swap_segment_file(segment, new_file, output_size_bytes, index);
        let Ok((old_file, index_file)) = swapped else {
            // The segment went away meanwhile (cannot happen under the maintenance lock).
            if let Err(new_file) = swapped {
                close_files(vec![new_file]).await;
            }
            return Ok(None);
        };
        if let Err(error) =
            write_file_atomic(&self.dir, &index_name, index_file.encode(), false).await
        {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write segment index");
        }
        sync_directory(&self.dir).await?;
        close_files(vec![old_file]).await;
        Ok(Some((output_size_bytes, removed_records)))
    }

    /// Puts the rewritten file in place of the segment's; returns the old file and the new
    /// index, or the new file back if the segment is gone.
    fn swap_segment_file(
        &self,
        segment: &SegmentRef,
        new_file: Rc<glommio::io::DmaFile>,
        output_size_bytes: u64,
        index: SparseIndex,
    ) -> Result<(Rc<glommio::io::DmaFile>, super::segment::IndexFile), Rc<glommio::io::DmaFile>>
    {
        {
            let mut state = self.state.borrow_mut();
            let Some(live) = state
                .segments
                .iter_mut()
                .find(|s| s.base_offset == segment.base_offset)
            else {
                return Err(new_file);
            };
            assert_eq!(live.next_offset, segment.next_offset);
            let old_file = std::mem::replace(&mut live.file, new_file);
            live.size_bytes = output_size_bytes;
            live.allocated_size_bytes = output_size_bytes;
            live.prewritten_size_bytes = 0;
            live.index = index;
            live.compacted = true;
            live.dirty = false;
            live.read_file = None;
            let index_file = live.index_file();
            state.size_bytes = state.size_bytes - segment.size_bytes + output_size_bytes;
            recompute_prefix_max(&mut state.segments);
            Ok((old_file, index_file))
        }
    }
}

impl PartitionLog {
    /// Drops a segment that compaction emptied (never the first one).
    async fn remove_empty_segment(
        &self,
        segment: &SegmentRef,
        cleaned_path: std::path::PathBuf,
        segment_path: std::path::PathBuf,
    ) -> Result<(), LogError> {
        let removed = {
            let mut state = self.state.borrow_mut();
            let Some(position) = state
                .segments
                .iter()
                .position(|s| s.base_offset == segment.base_offset)
            else {
                return Ok(());
            };
            assert!(position > 0 && position + 1 < state.segments.len());
            let removed = state.segments.remove(position);
            state.segments[position - 1].next_offset = removed.next_offset;
            state.segments[position - 1].compacted = true;
            state.size_bytes -= removed.size_bytes;
            state.directory_dirty = true;
            recompute_prefix_max(&mut state.segments);
            removed
        };
        close_files(vec![removed.file]).await;
        remove_files(vec![segment_path, cleaned_path]).await?;
        sync_directory(&self.dir).await?;
        Ok(())
    }
}

async fn read_header(
    reader: &mut WindowReader,
    position: u64,
    end_bytes: u64,
) -> Result<RecordBatchHeader, LogError> {
    if end_bytes - position < RECORD_BATCH_HEADER_SIZE_BYTES as u64 {
        return Err(LogError::Corrupt(format!(
            "partial batch header at position {position}"
        )));
    }
    let bytes = reader
        .bytes(position, RECORD_BATCH_HEADER_SIZE_BYTES)
        .await?;
    let header = RecordBatchHeader::parse(bytes)
        .map_err(|error| LogError::Corrupt(format!("batch at position {position}: {error}")))?;
    if position + header.total_size_bytes() as u64 > end_bytes {
        return Err(LogError::Corrupt(format!(
            "batch at position {position} overruns the segment"
        )));
    }
    Ok(header)
}

/// Writes block-aligned `bytes` at the aligned `position_bytes` of `file`.
async fn write_staged(
    file: &glommio::io::DmaFile,
    bytes: &[u8],
    position_bytes: u64,
) -> Result<(), LogError> {
    assert!(position_bytes.is_multiple_of(BLOCK_SIZE_BYTES));
    assert!((bytes.len() as u64).is_multiple_of(BLOCK_SIZE_BYTES));
    let mut buffer = file.alloc_dma_buffer(bytes.len());
    buffer.as_bytes_mut().copy_from_slice(bytes);
    let written = super::file_io::write_at(file, buffer, position_bytes).await?;
    if written != bytes.len() {
        return Err(LogError::Io(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short compaction write",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::test_support::{build_batch_raw, write_varint, BatchParams};
    use crate::protocol::record_batch::validate_batch;

    /// (key, value) of a test record; `None` is null.
    type Entry<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// An uncompressed records section of (key, value) records; offset delta = index.
    fn records(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, (key, value)) in entries.iter().enumerate() {
            let mut body = vec![0u8];
            write_varint(&mut body, index as i64);
            write_varint(&mut body, index as i64);
            match key {
                Some(key) => {
                    write_varint(&mut body, key.len() as i64);
                    body.extend_from_slice(key);
                }
                None => write_varint(&mut body, -1),
            }
            match value {
                Some(value) => {
                    write_varint(&mut body, value.len() as i64);
                    body.extend_from_slice(value);
                }
                None => write_varint(&mut body, -1),
            }
            write_varint(&mut body, 0);
            write_varint(&mut out, body.len() as i64);
            out.extend_from_slice(&body);
        }
        out
    }

    fn batch(base_offset: i64, codec: u8, entries: &[Entry<'_>]) -> Vec<u8> {
        let section = compress_records(codec, &records(entries)).unwrap();
        build_batch_raw(
            BatchParams {
                base_offset,
                attributes: i16::from(codec),
                ..BatchParams::default()
            },
            entries.len() as i32,
            &section,
        )
    }

    fn keys_of(batch: &[u8]) -> Vec<(i64, Option<Vec<u8>>, bool)> {
        let header = RecordBatchHeader::parse(batch).unwrap();
        let section = records_section(batch, header.compression_codec()).unwrap();
        parse_records(&section)
            .unwrap()
            .iter()
            .map(|r| {
                (
                    header.base_offset + r.offset_delta,
                    r.key.map(<[u8]>::to_vec),
                    r.value_is_null,
                )
            })
            .collect()
    }

    #[test]
    fn keeps_latest_per_key_and_preserves_offsets_for_every_codec() {
        for codec in [
            COMPRESSION_NONE,
            COMPRESSION_GZIP,
            COMPRESSION_SNAPPY,
            COMPRESSION_LZ4,
            COMPRESSION_ZSTD,
        ] {
            let first = batch(
                10,
                codec,
                &[
                    (Some(b"a"), Some(b"1")),
                    (Some(b"b"), Some(b"1")),
                    (None, Some(b"keyless")),
                    (Some(b"a"), Some(b"2")),
                ],
            );
            let second = batch(14, codec, &[(Some(b"b"), Some(b"2")), (Some(b"c"), None)]);
            let mut map = KeyMap::new();
            for batch in [&first, &second] {
                let header = RecordBatchHeader::parse(batch).unwrap();
                map_batch(batch, &header, &mut map).unwrap();
            }
            assert_eq!(map.len(), 3);
            // Not yet expired tombstone: kept.
            let (fate, removed) = filter_batch(&first, &map, 16, i64::MIN).unwrap();
            assert_eq!(removed, 2);
            let BatchFate::Rebuild(rebuilt) = fate else {
                panic!("codec {codec}: expected a rebuilt batch");
            };
            assert!(crc_is_valid(&rebuilt));
            let header = RecordBatchHeader::parse(&rebuilt).unwrap();
            assert_eq!(header.base_offset, 10);
            assert_eq!(header.last_offset(), 13, "offsets preserved");
            assert_eq!(header.record_count, 2);
            assert_eq!(header.total_size_bytes(), rebuilt.len());
            assert_eq!(
                keys_of(&rebuilt),
                vec![(12, None, false), (13, Some(b"a".to_vec()), false)]
            );
            // A strict validator rejects it (fewer records than offsets): recovery must relax.
            assert!(validate_batch(&rebuilt, usize::MAX).is_err());
            assert_eq!(
                filter_batch(&second, &map, 16, i64::MIN).unwrap(),
                (BatchFate::Keep, 0)
            );
            // Expired tombstone: removed; the live record of the batch stays.
            let (fate, removed) = filter_batch(&second, &map, 16, i64::MAX).unwrap();
            assert_eq!(removed, 1);
            let BatchFate::Rebuild(rebuilt) = fate else {
                panic!("expected a rebuilt batch");
            };
            assert_eq!(keys_of(&rebuilt), vec![(14, Some(b"b".to_vec()), false)]);
            // A tombstone past the map end is not expired by this pass.
            let (fate, _) = filter_batch(&second, &map, 15, i64::MAX).unwrap();
            assert_eq!(fate, BatchFate::Keep);
            // All records superseded: dropped.
            let old = batch(
                0,
                codec,
                &[(Some(b"a"), Some(b"0")), (Some(b"c"), Some(b"0"))],
            );
            assert_eq!(
                filter_batch(&old, &map, 16, i64::MIN).unwrap(),
                (BatchFate::Drop, 2)
            );
        }
    }

    const ATTR_TRANSACTIONAL: i16 = 0x10;
    const ATTR_CONTROL: i16 = 0x20;

    fn txn_batch(base_offset: i64, producer_id: i64, entries: &[Entry<'_>]) -> Vec<u8> {
        build_batch_raw(
            BatchParams {
                base_offset,
                attributes: ATTR_TRANSACTIONAL,
                producer_id,
                producer_epoch: 0,
                base_sequence: 0,
                ..BatchParams::default()
            },
            entries.len() as i32,
            &records(entries),
        )
    }

    fn marker(base_offset: i64, producer_id: i64, commit: bool, timestamp_ms: i64) -> Vec<u8> {
        let key = [0u8, 0, 0, u8::from(commit)];
        let value = [0u8, 0, 0, 0, 0, 0];
        build_batch_raw(
            BatchParams {
                base_offset,
                attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
                base_timestamp_ms: timestamp_ms,
                producer_id,
                producer_epoch: 0,
                ..BatchParams::default()
            },
            1,
            &records(&[(Some(&key), Some(&value))]),
        )
    }

    /// One pass over `log` as `compact` makes it: the map without aborted data, then every
    /// batch's fate. Returns the offsets kept and the markers removed.
    fn pass_over(log: &[Vec<u8>], view: &TransactionView, horizon_ms: i64) -> (Vec<i64>, u64) {
        let mut txns = TxnPass::new(view);
        let mut map = KeyMap::new();
        for batch in log {
            let header = RecordBatchHeader::parse(batch).unwrap();
            if !txns.is_aborted_data(&header) {
                map_batch(batch, &header, &mut map).unwrap();
            }
        }
        let limits = CompactionLimits::default();
        let pass = PassContext {
            map: &map,
            map_end_offset: i64::MAX,
            tombstone_horizon_ms: horizon_ms,
            limits: &limits,
            index_interval_bytes: 4096,
        };
        let mut kept = Vec::new();
        for batch in log {
            let offset = RecordBatchHeader::parse(batch).unwrap().base_offset;
            match filter_batch_in_pass(batch, &pass, &mut txns).unwrap().0 {
                BatchFate::Keep => kept.push(offset),
                BatchFate::Drop => {}
                BatchFate::Rebuild(_) => panic!("no batch here loses part of its records"),
            }
        }
        (kept, txns.markers_removed)
    }

    #[test]
    fn aborted_data_goes_and_markers_stay_while_they_protect_data() {
        let old_ms = 1_000;
        let recent_ms = 9_000;
        let horizon_ms = 5_000;
        let log = vec![
            txn_batch(0, 7, &[(Some(b"a"), Some(b"committed"))]),
            marker(1, 7, true, old_ms),
            txn_batch(2, 8, &[(Some(b"a"), Some(b"aborted"))]),
            marker(3, 8, false, old_ms),
            batch(4, COMPRESSION_NONE, &[(Some(b"b"), Some(b"plain"))]),
            marker(5, 9, true, old_ms), // a commit with no data here, past the horizon
            marker(6, 9, true, recent_ms), // the same, not yet past it
        ];
        let view = TransactionView {
            first_unstable_offset: None,
            aborted: vec![AbortedRange {
                producer_id: 8,
                first_offset: 2,
                marker_offset: 3,
            }],
        };
        // The aborted write of "a" supersedes nothing: the committed one at 0 stays.
        let (kept, markers_removed) = pass_over(&log, &view, horizon_ms);
        assert_eq!(kept, vec![0, 1, 3, 4, 6]);
        assert_eq!(markers_removed, 1);

        // Next pass: the caller retired the aborted entry, so its marker goes too; the commit
        // marker of data still present stays.
        let survivors: Vec<Vec<u8>> = log
            .iter()
            .filter(|b| kept.contains(&RecordBatchHeader::parse(b).unwrap().base_offset))
            .cloned()
            .collect();
        let (kept, markers_removed) =
            pass_over(&survivors, &TransactionView::default(), horizon_ms);
        assert_eq!(kept, vec![0, 1, 4, 6]);
        assert_eq!(markers_removed, 1);

        // Before the horizon every marker stays.
        let (kept, _) = pass_over(&log, &view, 0);
        assert_eq!(kept, vec![0, 1, 3, 4, 5, 6]);
    }

    #[test]
    fn cleaning_starts_at_the_dirty_ratio_or_the_max_lag() {
        let span = |next_offset, max_timestamp_ms| SegmentSpan {
            size_bytes: 100,
            next_offset,
            max_timestamp_ms,
        };
        // Four segments, cleaned up to offset 30: one of four is dirty (25%).
        let segments = [
            span(10, 1_000),
            span(20, 2_000),
            span(30, 3_000),
            span(40, 4_000),
        ];
        let mut config = super::super::LogConfig::default();
        assert!(!worth_cleaning(&segments, 30, 10_000, &config), "below 0.5");
        assert!(
            worth_cleaning(&segments, 20, 10_000, &config),
            "two of four dirty"
        );
        config.min_cleanable_dirty_ratio_ppm = 250_000;
        assert!(worth_cleaning(&segments, 30, 10_000, &config));
        config.min_cleanable_dirty_ratio_ppm = 900_000;
        config.max_compaction_lag_ms = 5_000;
        assert!(
            worth_cleaning(&segments, 30, 10_000, &config),
            "dirty since 4000: overdue"
        );
        assert!(
            !worth_cleaning(&segments, 30, 8_000, &config),
            "not yet overdue"
        );
        assert!(!worth_cleaning(&[], 0, 10_000, &config));
    }

    #[test]
    fn control_batches_are_kept() {
        let mut control = batch(0, COMPRESSION_NONE, &[(Some(b"\0\0\0\0"), Some(b"x"))]);
        control[21..23].copy_from_slice(&0x0020i16.to_be_bytes());
        crate::protocol::record_batch::test_support::rewrite_crc(&mut control);
        let mut map = KeyMap::new();
        map.insert(key_hash(b"\0\0\0\0"), 100);
        assert_eq!(
            filter_batch(&control, &map, 200, i64::MAX).unwrap(),
            (BatchFate::Keep, 0)
        );
    }

    /// Property: compaction of a random key stream keeps exactly the last record per key
    /// (tombstones expired), at their original offsets.
    #[test]
    fn random_streams_compact_to_the_latest_values() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..30 {
            let key_count = 1 + next() % 20;
            let mut batches = Vec::new();
            let mut expected: HashMap<Vec<u8>, (i64, bool)> = HashMap::new();
            let mut offset = 0i64;
            for _ in 0..(1 + next() % 20) {
                let count = 1 + next() % 8;
                let mut owned = Vec::new();
                for _ in 0..count {
                    let key = format!("k{}", next() % key_count).into_bytes();
                    let tombstone = next() % 5 == 0;
                    owned.push((key, tombstone));
                }
                let entries: Vec<Entry<'_>> = owned
                    .iter()
                    .map(|(k, t)| (Some(k.as_slice()), if *t { None } else { Some(&b"v"[..]) }))
                    .collect();
                for (index, (key, tombstone)) in owned.iter().enumerate() {
                    expected.insert(key.clone(), (offset + index as i64, *tombstone));
                }
                let codec = [COMPRESSION_NONE, COMPRESSION_LZ4][(next() % 2) as usize];
                batches.push(batch(offset, codec, &entries));
                offset += count as i64;
            }
            let mut map = KeyMap::new();
            for batch in &batches {
                map_batch(batch, &RecordBatchHeader::parse(batch).unwrap(), &mut map).unwrap();
            }
            let mut survivors = Vec::new();
            for batch in &batches {
                let kept = match filter_batch(batch, &map, offset, i64::MAX).unwrap().0 {
                    BatchFate::Keep => batch.clone(),
                    BatchFate::Rebuild(rebuilt) => rebuilt,
                    BatchFate::Drop => continue,
                };
                assert!(crc_is_valid(&kept));
                survivors.extend(keys_of(&kept));
            }
            let mut want: Vec<(i64, Option<Vec<u8>>, bool)> = expected
                .into_iter()
                .filter(|(_, (_, tombstone))| !tombstone)
                .map(|(key, (offset, _))| (offset, Some(key), false))
                .collect();
            want.sort();
            assert_eq!(survivors, want);
        }
    }
}
