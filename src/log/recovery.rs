//! Recovery on open: find the segments, trust what the checkpoint vouches for, validate the
//! rest batch by batch, and cut the log at the first torn or invalid batch.
//!
//! - Segments wholly before the checkpoint's segment are durable: their persisted index is used
//!   if it is intact, otherwise their batch headers are walked to rebuild it (no CRC).
//! - In the checkpoint's segment, batches ending before the last block boundary at or below the
//!   checkpoint position are trusted the same way (the block holding the position is rewritten
//!   by later appends, so it is validated).
//! - Everything after: length, CRC-32C, record count, and a base offset equal to the expected
//!   next offset.
//!
//! Segments wholly below the cleaner offset were rewritten by compaction: there, batches may
//! skip offsets and hold fewer records than offsets (still CRC-checked when validated).
//!
//! At the first batch that fails, the log ends: that segment is truncated there and later
//! segments are deleted. The log start is the first segment's base offset, or the persisted
//! `log-start-offset` if that is larger (DeleteRecords); if it lies past the recovered end
//! (the data behind it was lost), the log restarts empty at it, so offsets are never reused. The last segment is always truncated to its logical end and synced,
//! so bytes past it (a torn write, stale data after a zeroed block, preallocated space) can
//! never be read back as batches after new appends land in front of them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use glommio::io::DmaFile;

use super::checkpoint::{read_checkpoint, OffsetFile, RecoveryCheckpoint, CHECKPOINT_FILE_NAME};
use super::file_io::{
    align_down, blocking, io_error, open_segment_file, prime_iopoll_probe, read_aligned,
    read_file_optional, remove_files, sync_directory, write_file_atomic, WindowReader,
};
use super::segment::{
    index_file_name, parse_file_name, recompute_prefix_max, segment_file_name, IndexFile, Segment,
    SparseIndex, INDEX_SUFFIX, SEGMENT_SUFFIX,
};
use super::{now_ms, LogConfig, LogError, BLOCK_SIZE_BYTES};
use crate::protocol::record_batch::{
    validate_batch, RecordBatchHeader, RECORD_BATCH_HEADER_SIZE_BYTES,
};

/// Read window while scanning segments.
const SCAN_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

const TEMPORARY_SUFFIX: &str = ".tmp";
/// Suffix of a compacted segment being written; a leftover is an interrupted compaction.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

pub(crate) struct RecoveredLog {
    /// At least one; the last is active.
    pub(crate) segments: Vec<Segment>,
    /// The active segment's bytes from its last block boundary to its end.
    pub(crate) tail_block: Vec<u8>,
    /// The checkpoint found, if it is still consistent with what was recovered.
    pub(crate) checkpoint: Option<RecoveryCheckpoint>,
    /// Recovery found data past the checkpoint or changed files: write a new checkpoint.
    pub(crate) needs_flush: bool,
    pub(crate) directory_dirty: bool,
    pub(crate) log_start_offset: i64,
    pub(crate) cleaner_offset: i64,
}

struct DirectoryListing {
    segment_bases: Vec<i64>,
    index_bases: HashSet<i64>,
}

/// How a segment scan ended.
enum ScanEnd {
    /// Reached the end of the file.
    EndOfFile,
    /// Reached zeros: preallocated space never written.
    Zeros,
    /// A torn or invalid batch: the log ends here.
    Invalid(String),
}

struct ScanResult {
    size_bytes: u64,
    next_offset: i64,
    index: SparseIndex,
    end: ScanEnd,
    validated_bytes: u64,
    /// The segment's data is compacted (from its index file).
    compacted: bool,
}

pub(crate) async fn recover(dir: &Path, config: &LogConfig) -> Result<RecoveredLog, LogError> {
    let started = Instant::now();
    let listing = list_directory(dir.to_path_buf()).await?;
    prime_iopoll_probe(dir).await?;
    let mut checkpoint = read_checkpoint(dir).await?;
    let persisted_log_start = OffsetFile::LogStart.read(dir).await?.unwrap_or(0);
    let cleaner_offset = OffsetFile::Cleaner.read(dir).await?.unwrap_or(0);
    if let Some(found) = checkpoint {
        if !listing.segment_bases.contains(&found.segment_base_offset) {
            tracing::warn!(
                dir = %dir.display(),
                segment = found.segment_base_offset,
                "recovery checkpoint names a missing segment; validating everything"
            );
            checkpoint = None;
        }
    }

    if listing.segment_bases.is_empty() {
        if let Some(found) = checkpoint {
            tracing::warn!(dir = %dir.display(), offset = found.offset,
                "no segments but a recovery checkpoint: starting an empty log");
        }
        // Never restart below a persisted log start: those offsets were handed out.
        return start_empty(dir, persisted_log_start, cleaner_offset).await;
    }

    let mut segments: Vec<Segment> = Vec::with_capacity(listing.segment_bases.len());
    let mut cut: Option<String> = None;
    let mut removed_paths: Vec<PathBuf> = Vec::new();
    let mut validated_bytes = 0u64;
    let mut trusted_bytes = 0u64;
    // Sealed segments whose index was rebuilt by scanning (their index file gets rewritten).
    let mut scanned: Vec<i64> = Vec::new();
    // Whether the last segment pushed had its file truncated.
    let mut truncated_last = false;

    for (position, &base_offset) in listing.segment_bases.iter().enumerate() {
        let path = dir.join(segment_file_name(base_offset));
        if cut.is_some() {
            removed_paths.push(path);
            removed_paths.push(dir.join(index_file_name(base_offset)));
            continue;
        }
        // This segment's coverage ends where the next file starts.
        let next_base_offset = listing.segment_bases.get(position + 1).copied();
        // Compaction only rewrites sealed segments starting below the cleaner offset.
        let relaxed = next_base_offset.is_some() && base_offset < cleaner_offset;
        if let Some(previous) = segments.last_mut() {
            if previous.compacted && previous.next_offset < base_offset {
                // Compaction removed the batches at the end of the previous segment.
                previous.next_offset = base_offset;
            }
            if previous.next_offset != base_offset {
                let reason = format!(
                    "segment {base_offset} does not start at the expected offset {}",
                    previous.next_offset
                );
                tracing::warn!(dir = %dir.display(), %reason, "truncating the log here");
                cut = Some(reason);
                removed_paths.push(path);
                removed_paths.push(dir.join(index_file_name(base_offset)));
                continue;
            }
        }
        let file = Rc::new(open_segment_file(&path, false).await?);
        let file_size_bytes = file.file_size().await.map_err(io_error)?;
        let trusted_until_bytes = match checkpoint {
            Some(found) if found.segment_base_offset > base_offset => u64::MAX,
            Some(found) if found.segment_base_offset == base_offset => {
                align_down(found.position_bytes)
            }
            _ => 0,
        };
        // Where the index files let us skip scanning: a sealed segment wholly behind the
        // checkpoint needs no scan; the checkpoint's own segment, if its index (written at
        // close) ends exactly at the checkpoint, is scanned only from there.
        let index_file = if listing.index_bases.contains(&base_offset) {
            load_index_file(dir, base_offset, file_size_bytes).await?
        } else {
            None
        };
        let mut loaded_from_index = false;
        let mut start = ScanStart {
            position_bytes: 0,
            expected_offset: base_offset,
            index: SparseIndex::default(),
            relaxed: false,
        };
        match (index_file, checkpoint) {
            (Some(index_file), _)
                if trusted_until_bytes == u64::MAX
                    && next_base_offset.is_none_or(|next| next == index_file.next_offset) =>
            {
                loaded_from_index = true;
                start = ScanStart::from_index_file(index_file);
            }
            (Some(index_file), Some(found))
                if found.segment_base_offset == base_offset
                    && index_file.size_bytes == found.position_bytes
                    && index_file.next_offset == found.offset =>
            {
                start = ScanStart::from_index_file(index_file);
            }
            _ => {}
        }
        if relaxed {
            start.relaxed = true;
        }
        let scan = if loaded_from_index {
            ScanResult {
                size_bytes: start.position_bytes,
                next_offset: start.expected_offset,
                compacted: start.relaxed,
                index: start.index,
                end: ScanEnd::EndOfFile,
                validated_bytes: 0,
            }
        } else {
            scan_segment(
                file.clone(),
                start,
                file_size_bytes,
                trusted_until_bytes,
                config,
            )
            .await?
        };
        validated_bytes += scan.validated_bytes;
        trusted_bytes += scan.size_bytes.saturating_sub(scan.validated_bytes);

        match &scan.end {
            ScanEnd::Invalid(reason) => {
                tracing::warn!(
                    dir = %dir.display(),
                    segment = base_offset,
                    position = scan.size_bytes,
                    next_offset = scan.next_offset,
                    %reason,
                    "torn or invalid batch: truncating the log here"
                );
                cut = Some(reason.clone());
            }
            ScanEnd::Zeros | ScanEnd::EndOfFile => {}
        }
        if file_size_bytes > scan.size_bytes {
            // Drop the unused or invalid tail, so nothing past the logical end survives.
            file.truncate(scan.size_bytes).await.map_err(io_error)?;
            truncated_last = true;
        } else {
            truncated_last = false;
        }
        if !loaded_from_index {
            scanned.push(base_offset);
        }
        let mut segment = Segment::new_empty(base_offset, file, now_ms());
        segment.size_bytes = scan.size_bytes;
        segment.next_offset = scan.next_offset;
        segment.allocated_size_bytes = scan.size_bytes;
        segment.index = scan.index;
        segment.compacted = relaxed || scan.compacted;
        segments.push(segment);
    }
    assert!(!segments.is_empty());
    recompute_prefix_max(&mut segments);

    // The last segment kept (the last file, or the one recovery cut) becomes active. Its index
    // is rebuilt by every recovery, so a stale index file must not outlive it; and if its file
    // was truncated, that must be durable before new appends land where the old bytes were.
    let active_base_offset = segments.last().expect("at least one segment").base_offset;
    removed_paths.push(dir.join(index_file_name(active_base_offset)));
    segments.last_mut().expect("at least one segment").dirty = truncated_last;
    let index_files_to_write: Vec<IndexFile> = segments
        .iter()
        .filter(|segment| {
            segment.base_offset != active_base_offset && scanned.contains(&segment.base_offset)
        })
        .map(Segment::index_file)
        .collect();

    let mut directory_dirty = false;
    if !removed_paths.is_empty() {
        let removed_segments = removed_paths
            .iter()
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .count();
        if removed_segments > 0 {
            tracing::warn!(dir = %dir.display(), removed_segments,
                "deleted segments after the truncation point");
        }
        directory_dirty = remove_files(removed_paths).await? > 0;
    }
    for index_file in index_files_to_write {
        let name = index_file_name(index_file.base_offset);
        if let Err(error) = write_file_atomic(dir, &name, index_file.encode(), false).await {
            tracing::warn!(dir = %dir.display(), %error, "could not write segment index");
        }
    }

    let active = segments.last().expect("at least one segment");
    let end_offset = active.next_offset;
    let tail_block = read_tail_block(&active.file, active.size_bytes).await?;
    if active.dirty {
        // The truncation must be durable before new appends land where the old bytes were.
        active.file.fdatasync().await.map_err(io_error)?;
    }
    if directory_dirty {
        sync_directory(dir).await?;
        directory_dirty = false;
    }

    let log_start_offset = persisted_log_start.max(segments[0].base_offset);
    if log_start_offset > end_offset {
        tracing::warn!(dir = %dir.display(), log_start_offset, end_offset,
            "log start lies past the recovered end: restarting the log empty at the log start");
        let files: Vec<Rc<DmaFile>> = segments.drain(..).map(|s| s.file).collect();
        super::partition::close_files(files).await;
        let paths = listing
            .segment_bases
            .iter()
            .flat_map(|base| {
                [
                    dir.join(segment_file_name(*base)),
                    dir.join(index_file_name(*base)),
                ]
            })
            .collect();
        remove_files(paths).await?;
        return start_empty(dir, log_start_offset, cleaner_offset).await;
    }

    let mut needs_flush = cut.is_some();
    if let Some(found) = checkpoint {
        if found.offset > end_offset {
            tracing::error!(
                dir = %dir.display(),
                checkpoint_offset = found.offset,
                end_offset,
                "log ends before its recovery checkpoint: durable data was lost"
            );
            checkpoint = None;
            needs_flush = true;
        } else if found.offset != end_offset {
            needs_flush = true;
        }
    } else {
        needs_flush = true;
    }

    tracing::info!(
        dir = %dir.display(),
        segments = segments.len(),
        log_start_offset = segments[0].base_offset,
        end_offset,
        trusted_bytes,
        validated_bytes,
        truncated = cut.is_some(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered partition log"
    );
    Ok(RecoveredLog {
        segments,
        tail_block,
        checkpoint,
        needs_flush,
        directory_dirty,
        log_start_offset,
        cleaner_offset,
    })
}

/// A log with one empty segment at `base_offset` (a new partition, or one whose data lies
/// wholly below its persisted log start).
async fn start_empty(
    dir: &Path,
    base_offset: i64,
    cleaner_offset: i64,
) -> Result<RecoveredLog, LogError> {
    let path = dir.join(segment_file_name(base_offset));
    let file = open_segment_file(&path, true).await?;
    file.truncate(0).await.map_err(io_error)?;
    sync_directory(dir).await?;
    tracing::info!(dir = %dir.display(), base_offset, "created empty partition log");
    let mut segment = Segment::new_empty(base_offset, Rc::new(file), now_ms());
    segment.dirty = true;
    Ok(RecoveredLog {
        segments: vec![segment],
        tail_block: Vec::new(),
        checkpoint: None,
        needs_flush: true,
        directory_dirty: false,
        log_start_offset: base_offset,
        cleaner_offset,
    })
}

/// Creates the directory if needed, lists segments and indexes, and removes leftovers of
/// interrupted atomic writes.
async fn list_directory(dir: PathBuf) -> Result<DirectoryListing, LogError> {
    blocking(move || -> std::io::Result<DirectoryListing> {
        std::fs::create_dir_all(&dir)?;
        let mut segment_bases = Vec::new();
        let mut index_bases = HashSet::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if let Some(base_offset) = parse_file_name(name, SEGMENT_SUFFIX) {
                segment_bases.push(base_offset);
            } else if let Some(base_offset) = parse_file_name(name, INDEX_SUFFIX) {
                index_bases.insert(base_offset);
            } else if name.ends_with(TEMPORARY_SUFFIX) || name.ends_with(CLEANED_SUFFIX) {
                std::fs::remove_file(entry.path())?;
            } else if name != CHECKPOINT_FILE_NAME
                && name != OffsetFile::LogStart.file_name()
                && name != OffsetFile::Cleaner.file_name()
                && name != OffsetFile::HighWatermark.file_name()
                && name != super::leader_epochs::LEADER_EPOCH_FILE_NAME
            {
                tracing::warn!(dir = %dir.display(), name, "ignoring unknown file in log dir");
            }
        }
        segment_bases.sort_unstable();
        Ok(DirectoryListing {
            segment_bases,
            index_bases,
        })
    })
    .await
    .map_err(LogError::Io)
}

/// Loads a segment's persisted index if it is intact, names this segment, and fits the file.
async fn load_index_file(
    dir: &Path,
    base_offset: i64,
    file_size_bytes: u64,
) -> Result<Option<IndexFile>, LogError> {
    let Some(contents) = read_file_optional(dir.join(index_file_name(base_offset))).await? else {
        return Ok(None);
    };
    match IndexFile::decode(&contents) {
        Some(index_file)
            if index_file.base_offset == base_offset
                && index_file.size_bytes <= file_size_bytes =>
        {
            Ok(Some(index_file))
        }
        _ => {
            tracing::warn!(dir = %dir.display(), segment = base_offset, "ignoring damaged index");
            Ok(None)
        }
    }
}

/// Where a segment scan begins: at 0, or after the batches a persisted index covers.
struct ScanStart {
    position_bytes: u64,
    expected_offset: i64,
    index: SparseIndex,
    /// Compacted data: offset gaps and batches with fewer records than offsets are valid.
    relaxed: bool,
}

impl ScanStart {
    fn from_index_file(index_file: IndexFile) -> Self {
        let bytes_since_entry = index_file.size_bytes
            - index_file
                .entries
                .last()
                .map_or(0, |entry| entry.position_bytes);
        ScanStart {
            position_bytes: index_file.size_bytes,
            expected_offset: index_file.next_offset,
            relaxed: index_file.compacted,
            index: SparseIndex::from_parts(
                index_file.entries,
                bytes_since_entry,
                index_file.max_timestamp_ms,
                index_file.offset_of_max_timestamp,
            ),
        }
    }
}

/// Walks the batches of one segment from `start`. Batches ending at or before
/// `trusted_until_bytes` are checked by header only; later ones fully.
async fn scan_segment(
    file: Rc<DmaFile>,
    start: ScanStart,
    file_size_bytes: u64,
    trusted_until_bytes: u64,
    config: &LogConfig,
) -> Result<ScanResult, LogError> {
    assert!(start.position_bytes <= file_size_bytes);
    let mut reader = WindowReader::with_readahead(file, file_size_bytes, SCAN_WINDOW_BYTES);
    let mut position = start.position_bytes;
    let mut expected_offset = start.expected_offset;
    let mut index = start.index;
    let relaxed = start.relaxed;
    let mut validated_bytes = 0u64;
    let end = loop {
        let remaining_bytes = file_size_bytes - position;
        if remaining_bytes == 0 {
            break ScanEnd::EndOfFile;
        }
        let head_size_bytes = remaining_bytes.min(RECORD_BATCH_HEADER_SIZE_BYTES as u64) as usize;
        let head = reader.bytes(position, head_size_bytes).await?;
        if head.iter().all(|&byte| byte == 0) {
            break ScanEnd::Zeros;
        }
        if head_size_bytes < RECORD_BATCH_HEADER_SIZE_BYTES {
            break ScanEnd::Invalid("partial batch header at the end of the file".into());
        }
        let header = match RecordBatchHeader::parse(head) {
            Ok(header) => header,
            Err(error) => break ScanEnd::Invalid(format!("bad batch header: {error}")),
        };
        let offset_ok = if relaxed {
            header.base_offset >= expected_offset
        } else {
            header.base_offset == expected_offset
        };
        if !offset_ok {
            break ScanEnd::Invalid(format!(
                "batch base offset {} where {expected_offset} was expected",
                header.base_offset
            ));
        }
        let count_ok = if relaxed {
            header.record_count >= 1 && i64::from(header.record_count) <= header.offset_count()
        } else {
            header.record_count >= 1 && i64::from(header.record_count) == header.offset_count()
        };
        if !count_ok {
            break ScanEnd::Invalid(format!(
                "record count {} with last offset delta {}",
                header.record_count, header.last_offset_delta
            ));
        }
        let size_bytes = header.total_size_bytes() as u64;
        if size_bytes > remaining_bytes {
            break ScanEnd::Invalid(format!("batch of {size_bytes} bytes overruns the file end"));
        }
        if position + size_bytes > trusted_until_bytes {
            let batch = reader.bytes(position, size_bytes as usize).await?;
            let valid = if relaxed {
                super::compaction::crc_is_valid(batch)
                    .then_some(())
                    .ok_or_else(|| "CRC mismatch".to_string())
            } else {
                validate_batch(batch, usize::MAX)
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            };
            if let Err(error) = valid {
                break ScanEnd::Invalid(format!("invalid batch: {error}"));
            }
            validated_bytes += size_bytes;
        }
        index.on_batch(&header, position, config.index_interval_bytes);
        expected_offset = header.last_offset().saturating_add(1);
        position += size_bytes;
    };
    Ok(ScanResult {
        size_bytes: position,
        next_offset: expected_offset,
        index,
        end,
        validated_bytes,
        compacted: relaxed,
    })
}

/// Reads the active segment's partial last block, which the next write rewrites.
async fn read_tail_block(file: &DmaFile, size_bytes: u64) -> Result<Vec<u8>, LogError> {
    let tail_size_bytes = (size_bytes % BLOCK_SIZE_BYTES) as usize;
    if tail_size_bytes == 0 {
        return Ok(Vec::new());
    }
    let block = read_aligned(file, align_down(size_bytes), BLOCK_SIZE_BYTES as usize).await?;
    if block.len() < tail_size_bytes {
        return Err(LogError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short read of the tail block",
        )));
    }
    Ok(block[..tail_size_bytes].to_vec())
}
