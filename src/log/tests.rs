//! Tests of `PartitionLog` on real O_DIRECT files in temporary directories, each inside its own
//! glommio executor.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::segment::{index_file_name, segment_file_name};
use super::{LogConfig, LogError, PartitionLog, ReadOutcome};
use crate::protocol::record_batch::test_support::{build_uncompressed_batch, BatchParams};
use crate::protocol::record_batch::{validate_batches, RecordBatchHeader};

use crate::test_support::run_local as run;

fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("topic-0");
    (root, dir)
}

/// A small-geometry config so tests cross segment, write and cache boundaries quickly.
fn small_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 64 * 1024,
        index_interval_bytes: 4096,
        cache_size_bytes: 32 * 1024,
        max_write_size_bytes: 16 * 1024,
        preallocate_step_bytes: 32 * 1024,
        ..LogConfig::default()
    }
}

/// A batch of `record_count` records whose values encode `tag`, padded to `value_size_bytes`.
fn batch(tag: u64, record_count: usize, value_size_bytes: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..record_count)
        .map(|index| {
            let mut value = vec![(index % 251) as u8; value_size_bytes.max(8)];
            value[..8].copy_from_slice(&tag.to_be_bytes());
            value
        })
        .collect();
    let slices: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    Bytes::from(build_uncompressed_batch(BatchParams::default(), &slices))
}

/// Parses the headers of every batch in a read, checking CRCs and that offsets are
/// contiguous; returns (base_offset, last_offset, leader_epoch, tag) per batch.
fn decode(outcome: &ReadOutcome) -> Vec<(i64, i64, i32, u64)> {
    let mut all = Vec::new();
    for chunk in &outcome.chunks {
        all.extend_from_slice(chunk);
    }
    assert_eq!(all.len(), outcome.size_bytes);
    if all.is_empty() {
        return Vec::new();
    }
    validate_batches(&all, usize::MAX).expect("read returns valid batches");
    let mut batches = Vec::new();
    let mut position = 0;
    while position < all.len() {
        let header = RecordBatchHeader::parse(&all[position..]).unwrap();
        // First record: length varint, attributes, timestamp delta, offset delta, key len
        // (-1), value len, then the value whose first 8 bytes are the tag.
        let records = &all[position + 61..position + header.total_size_bytes()];
        let value_start = find_first_value(records);
        let tag = u64::from_be_bytes(records[value_start..value_start + 8].try_into().unwrap());
        batches.push((
            header.base_offset,
            header.last_offset(),
            header.partition_leader_epoch,
            tag,
        ));
        position += header.total_size_bytes();
    }
    for pair in batches.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0, "offsets contiguous");
    }
    batches
}

/// Offset of the first record's value in an uncompressed records section built by
/// `build_uncompressed_batch` (all varints of small values are one byte, except the value
/// length which may take two).
fn find_first_value(records: &[u8]) -> usize {
    let mut position = 0;
    position += varint_size(&records[position..]); // record length
    position += 1; // attributes
    position += varint_size(&records[position..]); // timestamp delta
    position += varint_size(&records[position..]); // offset delta
    position += varint_size(&records[position..]); // key length (-1)
    position += varint_size(&records[position..]); // value length
    position
}

fn varint_size(bytes: &[u8]) -> usize {
    bytes.iter().position(|b| b & 0x80 == 0).unwrap() + 1
}

async fn read_all(
    log: &PartitionLog,
    from_offset: i64,
    max_bytes: usize,
) -> Vec<(i64, i64, i32, u64)> {
    let mut batches = Vec::new();
    let mut cursor = from_offset;
    let end = log.written_end_offset();
    while cursor < end {
        let outcome = log.read(cursor, max_bytes, i64::MAX).await.unwrap();
        let decoded = decode(&outcome);
        assert!(!decoded.is_empty(), "progress at {cursor}");
        cursor = decoded.last().unwrap().1 + 1;
        batches.extend(decoded);
    }
    batches
}

fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(segment_file_name(base_offset))
}

#[test]
fn append_read_round_trip() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.next_offset(), 0);
        assert_eq!(log.written_end_offset(), 0);

        let first = log.append(batch(1, 3, 10), 3, 7).await.unwrap();
        assert_eq!((first.base_offset, first.last_offset), (0, 2));
        let mut two = batch(2, 2, 10).to_vec();
        two.extend_from_slice(&batch(3, 4, 10));
        let second = log.append(Bytes::from(two), 6, 8).await.unwrap();
        assert_eq!((second.base_offset, second.last_offset), (3, 8));
        assert_eq!(log.next_offset(), 9);
        assert_eq!(log.written_end_offset(), 9);

        let outcome = log.read(0, 1 << 20, i64::MAX).await.unwrap();
        assert_eq!(
            decode(&outcome),
            vec![(0, 2, 7, 1), (3, 4, 8, 2), (5, 8, 8, 3)]
        );
        // From the middle of a batch: whole batches starting with the one containing it.
        let outcome = log.read(4, 1 << 20, i64::MAX).await.unwrap();
        assert_eq!(decode(&outcome), vec![(3, 4, 8, 2), (5, 8, 8, 3)]);
        // At the end: nothing.
        let outcome = log.read(9, 1 << 20, i64::MAX).await.unwrap();
        assert!(outcome.chunks.is_empty());
        assert_eq!(outcome.size_bytes, 0);
        assert!(log.size_bytes() > 0);
        log.close().await.unwrap();
    });
}

#[test]
fn rejects_malformed_appends_without_assigning_offsets() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir, LogConfig::default()).await.unwrap();
        let error = log
            .append(Bytes::from_static(b"short"), 1, 0)
            .await
            .unwrap_err();
        assert!(matches!(error, LogError::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput));
        let error = log.append(batch(1, 2, 10), 3, 0).await.unwrap_err();
        assert!(matches!(error, LogError::Io(_)));
        let mut truncated = batch(1, 2, 10).to_vec();
        truncated.pop();
        assert!(log.append(Bytes::from(truncated), 2, 0).await.is_err());
        assert_eq!(log.next_offset(), 0);
        assert_eq!(
            log.append(batch(1, 2, 10), 2, 0).await.unwrap().base_offset,
            0
        );
        log.close().await.unwrap();
    });
}

#[test]
fn concurrent_appends_keep_call_order_and_group_commit() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir, small_config()).await.unwrap();
        const APPENDS: usize = 300;
        // Offsets are assigned at call time, so the futures may complete in any order.
        let futures: Vec<_> = (0..APPENDS)
            .map(|index| {
                let records = 1 + index % 5;
                log.append(
                    batch(index as u64, records, 50 + index % 300),
                    records as u32,
                    1,
                )
            })
            .collect();
        assert_eq!(log.written_end_offset(), 0);
        let expected_end: i64 = (0..APPENDS).map(|index| 1 + (index % 5) as i64).sum();
        assert_eq!(log.next_offset(), expected_end);
        let outcomes = futures::future::join_all(futures.into_iter().rev()).await;
        let mut outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
        outcomes.reverse();
        let mut next = 0;
        for (index, outcome) in outcomes.iter().enumerate() {
            assert_eq!(outcome.base_offset, next);
            assert_eq!(outcome.last_offset, next + (index % 5) as i64);
            next = outcome.last_offset + 1;
        }
        assert_eq!(log.written_end_offset(), expected_end);
        assert_eq!(log.pending_bytes(), 0);
        // Group commit: the queued appends went out in a few large writes.
        assert!(
            log.write_count() < (APPENDS / 4) as u64,
            "{} writes",
            log.write_count()
        );
        assert!(log.segment_count() > 1, "small segments roll");

        // Spawned tasks appending concurrently, each awaiting its own append.
        let tasks: Vec<_> = (0..50)
            .map(|index| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    log.append(batch(1000 + index, 2, 100), 2, 1).await.unwrap()
                })
            })
            .collect();
        let mut bases: Vec<i64> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|outcome| outcome.base_offset)
            .collect();
        bases.sort_unstable();
        for (index, base) in bases.iter().enumerate() {
            assert_eq!(*base, expected_end + 2 * index as i64);
        }

        let batches = read_all(&log, 0, 10_000).await;
        assert_eq!(batches.len(), APPENDS + 50);
        for (index, batch) in batches.iter().take(APPENDS).enumerate() {
            assert_eq!(batch.0, outcomes[index].base_offset);
            assert_eq!(batch.3, index as u64);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn reads_across_segment_rolls_from_disk_and_cache() {
    for cache_size_bytes in [0u64, 32 * 1024] {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let config = LogConfig {
                cache_size_bytes,
                ..small_config()
            };
            let log = PartitionLog::open(dir.clone(), config).await.unwrap();
            let mut expected = Vec::new();
            for index in 0..200u64 {
                let records = 1 + (index % 3) as usize;
                let outcome = log
                    .append(batch(index, records, 700), records as u32, 2)
                    .await
                    .unwrap();
                expected.push((outcome.base_offset, outcome.last_offset, 2, index));
            }
            assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
            assert!(log.cached_bytes() <= cache_size_bytes);
            // Sealed segments are trimmed to their logical size and have an index file.
            let sealed = segment_path(&dir, 0);
            let sealed_size = std::fs::metadata(&sealed).unwrap().len();
            assert!(sealed_size <= 64 * 1024 && sealed_size > 60 * 1024);
            assert!(dir.join(index_file_name(0)).exists());

            // Whole log, in several read sizes.
            for max_bytes in [1, 5_000, 20_000, 1 << 20] {
                assert_eq!(read_all(&log, 0, max_bytes).await, expected);
            }
            // From every offset: starts with the batch containing it.
            let end = log.written_end_offset();
            for from in 0..end {
                let outcome = log.read(from, 3_000, i64::MAX).await.unwrap();
                let decoded = decode(&outcome);
                let first = decoded[0];
                assert!(first.0 <= from && from <= first.1, "from {from}: {first:?}");
            }
            // The probe was primed: every disk read went direct.
            assert_eq!(super::file_io::fallback_read_count(), 0);
            log.close().await.unwrap();
        });
    }
}

#[test]
fn max_bytes_and_kip_74() {
    for cache_size_bytes in [0u64, 1 << 20] {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let config = LogConfig {
                cache_size_bytes,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(dir, config).await.unwrap();
            let one = batch(0, 1, 1000);
            let size = one.len();
            for index in 0..10 {
                log.append(batch(index, 1, 1000), 1, 0).await.unwrap();
            }
            // Smaller than one batch: still exactly one batch.
            let outcome = log.read(0, 1, i64::MAX).await.unwrap();
            assert_eq!(decode(&outcome).len(), 1);
            assert_eq!(outcome.size_bytes, size);
            let outcome = log.read(0, 0, i64::MAX).await.unwrap();
            assert_eq!(decode(&outcome).len(), 1);
            // 2.5 batches: two.
            let outcome = log.read(3, size * 5 / 2, i64::MAX).await.unwrap();
            assert_eq!(
                decode(&outcome).iter().map(|b| b.0).collect::<Vec<_>>(),
                vec![3, 4]
            );
            // Exactly three batches.
            let outcome = log.read(3, size * 3, i64::MAX).await.unwrap();
            assert_eq!(decode(&outcome).len(), 3);
            assert!(outcome.size_bytes <= size * 3);
            log.close().await.unwrap();
        });
    }
}

#[test]
fn max_offset_exclusive_limits_reads() {
    for cache_size_bytes in [0u64, 1 << 20] {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let config = LogConfig {
                cache_size_bytes,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(dir, config).await.unwrap();
            for index in 0..5 {
                log.append(batch(index, 3, 50), 3, 0).await.unwrap();
            }
            // Batches: [0,2] [3,5] [6,8] [9,11] [12,14].
            let outcome = log.read(0, 1 << 20, 9).await.unwrap();
            assert_eq!(
                decode(&outcome).iter().map(|b| b.0).collect::<Vec<_>>(),
                vec![0, 3, 6]
            );
            // A limit inside a batch excludes that batch.
            let outcome = log.read(0, 1 << 20, 8).await.unwrap();
            assert_eq!(
                decode(&outcome).iter().map(|b| b.0).collect::<Vec<_>>(),
                vec![0, 3]
            );
            // Nothing below the limit from here.
            let outcome = log.read(7, 1 << 20, 8).await.unwrap();
            assert!(outcome.chunks.is_empty());
            let outcome = log.read(12, 1 << 20, 12).await.unwrap();
            assert!(outcome.chunks.is_empty());
            log.close().await.unwrap();
        });
    }
}

#[test]
fn offset_out_of_range() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir, LogConfig::default()).await.unwrap();
        log.append(batch(0, 4, 10), 4, 0).await.unwrap();
        for requested in [-1, 5, 100] {
            match log.read(requested, 1000, i64::MAX).await {
                Err(LogError::OffsetOutOfRange {
                    requested: r,
                    log_start,
                    log_end,
                }) => {
                    assert_eq!((r, log_start, log_end), (requested, 0, 4));
                }
                other => panic!("expected OffsetOutOfRange, got {other:?}"),
            }
        }
        assert!(log.read(4, 1000, i64::MAX).await.unwrap().chunks.is_empty());
        log.close().await.unwrap();
    });
}

#[test]
fn reopen_after_close_keeps_everything() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = small_config();
        let mut expected = Vec::new();
        for round in 0..3u64 {
            let log = PartitionLog::open(dir.clone(), config.clone())
                .await
                .unwrap();
            assert_eq!(
                log.next_offset(),
                expected
                    .last()
                    .map_or(0, |b: &(i64, i64, i32, u64)| b.1 + 1)
            );
            assert_eq!(log.recovery_point_offset(), log.next_offset());
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
            for index in 0..40u64 {
                let tag = round * 1000 + index;
                let outcome = log
                    .append(batch(tag, 2, 900), 2, round as i32)
                    .await
                    .unwrap();
                expected.push((outcome.base_offset, outcome.last_offset, round as i32, tag));
            }
            log.close().await.unwrap();
            // Closed: everything refuses.
            assert!(matches!(
                log.append(batch(0, 1, 1), 1, 0).await,
                Err(LogError::Closed)
            ));
            assert!(matches!(
                log.read(0, 100, i64::MAX).await,
                Err(LogError::Closed)
            ));
            assert!(log.close().await.is_ok());
        }
        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        assert!(log.segment_count() > 2);
        assert_eq!(read_all(&log, 0, 7_000).await, expected);
        log.close().await.unwrap();
    });
}

#[test]
fn large_appends_span_several_writes() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            max_write_size_bytes: 64 * 1024,
            cache_size_bytes: 0,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        log.append(batch(1, 1, 100), 1, 0).await.unwrap();
        let big = batch(2, 20, 10_000);
        assert!(big.len() > 3 * 64 * 1024);
        log.append(big.clone(), 20, 0).await.unwrap();
        log.append(batch(3, 1, 100), 1, 0).await.unwrap();
        let expected = vec![(0, 0, 0, 1), (1, 20, 0, 2), (21, 21, 0, 3)];
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
    });
}

/// What to put after the last good batch to simulate a crash.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// The first bytes of the next batch only.
    PartialBatch,
    /// A whole next batch with one flipped payload byte.
    BadCrc,
    /// Random bytes.
    Garbage,
    /// A valid batch with the wrong base offset.
    WrongOffset,
    /// A zeroed block, then a valid batch with the right offset after it (stale data).
    ValidAfterZeros,
}

#[test]
fn torn_tail_is_truncated_and_log_stays_usable() {
    for damage in [
        Damage::PartialBatch,
        Damage::BadCrc,
        Damage::Garbage,
        Damage::WrongOffset,
        Damage::ValidAfterZeros,
    ] {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let config = LogConfig::default();
            let log = PartitionLog::open(dir.clone(), config.clone())
                .await
                .unwrap();
            let mut expected = Vec::new();
            for index in 0..5u64 {
                let outcome = log.append(batch(index, 2, 333), 2, 0).await.unwrap();
                expected.push((outcome.base_offset, outcome.last_offset, 0, index));
            }
            let good_size = log.size_bytes();
            let end = log.next_offset();
            // Flush only part of the log into the checkpoint: the damage lies after it.
            log.close().await.unwrap();

            let path = segment_path(&dir, 0);
            damage_file(&path, good_size, end, damage);

            let log = PartitionLog::open(dir.clone(), config.clone())
                .await
                .unwrap();
            assert_eq!(log.next_offset(), end, "{damage:?}");
            assert_eq!(log.size_bytes(), good_size);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                good_size,
                "{damage:?}"
            );
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
            for index in 10..13u64 {
                let outcome = log.append(batch(index, 1, 77), 1, 1).await.unwrap();
                expected.push((outcome.base_offset, outcome.last_offset, 1, index));
            }
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
            log.close().await.unwrap();

            let log = PartitionLog::open(dir.clone(), config).await.unwrap();
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected, "{damage:?}");
            log.close().await.unwrap();
        });
    }
}

/// Writes `damage` into the segment at `path` right after its `good_size` bytes.
fn damage_file(path: &Path, good_size: u64, next_offset: i64, damage: Damage) {
    use std::io::{Seek, SeekFrom, Write};
    let mut next = batch(99, 3, 500).to_vec();
    next[..8].copy_from_slice(&next_offset.to_be_bytes());
    let bytes = match damage {
        Damage::PartialBatch => next[..100].to_vec(),
        Damage::BadCrc => {
            let last = next.len() - 1;
            next[last] ^= 0xff;
            next
        }
        Damage::Garbage => (0..3000u32).map(|i| (i * 7919 % 251) as u8 | 1).collect(),
        Damage::WrongOffset => {
            next[..8].copy_from_slice(&(next_offset + 5).to_be_bytes());
            next
        }
        Damage::ValidAfterZeros => {
            let mut bytes = vec![0u8; 8192];
            bytes.extend_from_slice(&next);
            bytes
        }
    };
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(good_size)).unwrap();
    file.write_all(&bytes).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn damage_in_an_unflushed_middle_segment_cuts_later_segments() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            cache_size_bytes: 0,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        for index in 0..100u64 {
            log.append(batch(index, 1, 1500), 1, 0).await.unwrap();
        }
        assert!(log.segment_count() >= 3);
        // No flush and no close: the checkpoint never covered these segments.
        drop(log);
        let mut bases: Vec<i64> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                super::segment::parse_file_name(&name, ".log")
            })
            .collect();
        bases.sort_unstable();
        // Corrupt the second batch of the second segment.
        let second = segment_path(&dir, bases[1]);
        let contents = std::fs::read(&second).unwrap();
        let first_size = RecordBatchHeader::parse(&contents)
            .unwrap()
            .total_size_bytes();
        let mut contents = contents;
        contents[first_size + 100] ^= 0x55;
        std::fs::write(&second, &contents).unwrap();

        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.next_offset(), bases[1] + 1);
        assert!(!segment_path(&dir, bases[2]).exists());
        assert_eq!(read_all(&log, 0, 1 << 20).await.len() as i64, bases[1] + 1);
        let outcome = log.append(batch(500, 1, 10), 1, 3).await.unwrap();
        assert_eq!(outcome.base_offset, bases[1] + 1);
        log.close().await.unwrap();
    });
}

#[test]
fn acknowledged_appends_survive_a_crash_without_flush() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = small_config();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for index in 0..20u64 {
            let outcome = log.append(batch(index, 2, 1500), 2, 0).await.unwrap();
            expected.push((outcome.base_offset, outcome.last_offset, 0, index));
        }
        log.flush().await.unwrap();
        for index in 20..70u64 {
            let outcome = log.append(batch(index, 2, 1500), 2, 0).await.unwrap();
            expected.push((outcome.base_offset, outcome.last_offset, 0, index));
        }
        // "Crash": no flush, no close, the preallocated tail left in place.
        drop(log);
        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        assert_eq!(log.recovery_point_offset(), log.next_offset());
        log.close().await.unwrap();
    });
}

#[test]
fn missing_middle_segment_cuts_the_log_there() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = small_config();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        for index in 0..100u64 {
            log.append(batch(index, 1, 2000), 1, 0).await.unwrap();
        }
        log.close().await.unwrap();
        let mut bases: Vec<i64> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                super::segment::parse_file_name(&name, ".log")
            })
            .collect();
        bases.sort_unstable();
        assert!(bases.len() >= 4);
        std::fs::remove_file(segment_path(&dir, bases[2])).unwrap();

        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.next_offset(), bases[2]);
        assert_eq!(log.recovery_point_offset(), bases[2]);
        assert!(!segment_path(&dir, bases[3]).exists());
        // The segment that became active has no stale index: the one written with the
        // checkpoint after recovery ends at the recovered end.
        let active_index = std::fs::read(dir.join(index_file_name(bases[1]))).unwrap();
        let active_index = super::segment::IndexFile::decode(&active_index).unwrap();
        assert_eq!(active_index.next_offset, bases[2]);
        assert!(dir.join(index_file_name(bases[0])).exists());
        for index in 0..40u64 {
            log.append(batch(1000 + index, 1, 2000), 1, 0)
                .await
                .unwrap();
        }
        let before = read_all(&log, 0, 1 << 20).await;
        assert_eq!(before.len() as i64, bases[2] + 40);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, before);
        log.close().await.unwrap();
    });
}

#[test]
fn checkpointed_segments_reopen_from_index_files() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = small_config();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for index in 0..80u64 {
            let outcome = log.append(batch(index, 1, 2000), 1, 0).await.unwrap();
            expected.push((outcome.base_offset, outcome.last_offset, 0, index));
        }
        log.flush().await.unwrap();
        assert_eq!(log.recovery_point_offset(), 80);
        let segments = log.segment_count();
        log.close().await.unwrap();
        // A damaged index file is ignored and the segment scanned instead.
        std::fs::write(dir.join(index_file_name(0)), b"garbage").unwrap();
        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        assert_eq!(log.segment_count(), segments);
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        for from in [0, 17, 40, 79] {
            let outcome = log.read(from, 1, i64::MAX).await.unwrap();
            assert_eq!(decode(&outcome)[0].0, from);
        }
        log.close().await.unwrap();
        // The rewritten index file is intact again.
        let contents = std::fs::read(dir.join(index_file_name(0))).unwrap();
        assert!(super::segment::IndexFile::decode(&contents).is_some());
    });
}

#[test]
fn wait_for_offset_wakes_on_append_and_is_cancel_safe() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir, LogConfig::default()).await.unwrap();
        // Already satisfied: resolves at once.
        log.append(batch(0, 1, 10), 1, 0).await.unwrap();
        log.wait_for_offset(0).await;

        // Woken by a later append from another task.
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.wait_for_offset(3).await;
                log.written_end_offset()
            })
        };
        glommio::yield_if_needed().await;
        glommio::timer::sleep(Duration::from_millis(5)).await;
        assert_eq!(log.waiters.borrow().len(), 1);
        log.append(batch(1, 2, 10), 2, 0).await.unwrap(); // offsets 1..=2: not enough
        glommio::timer::sleep(Duration::from_millis(5)).await;
        assert_eq!(log.waiters.borrow().len(), 1);
        log.append(batch(2, 1, 10), 1, 0).await.unwrap(); // offset 3
        assert_eq!(waiter.await, 4);
        assert_eq!(log.waiters.borrow().len(), 0);

        // Cancelled by a timeout: deregistered, nothing left behind.
        let result = glommio::timer::timeout(Duration::from_millis(10), async {
            log.wait_for_offset(100).await;
            Ok(())
        })
        .await;
        assert!(result.is_err());
        assert_eq!(log.waiters.borrow().len(), 0);

        // Dropped after a poll.
        {
            let wait = log.wait_for_offset(100);
            futures::pin_mut!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
            assert_eq!(log.waiters.borrow().len(), 1);
        }
        assert_eq!(log.waiters.borrow().len(), 0);

        // Close wakes waiters.
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_for_offset(1000).await })
        };
        glommio::timer::sleep(Duration::from_millis(5)).await;
        log.close().await.unwrap();
        waiter.await;
    });
}

#[test]
fn tailing_reader_sees_every_batch_while_appends_run() {
    for cache_size_bytes in [0u64, 16 * 1024] {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let config = LogConfig {
                cache_size_bytes,
                ..small_config()
            };
            let log = PartitionLog::open(dir, config).await.unwrap();
            const BATCHES: u64 = 300;
            let reader = {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let mut cursor = 0i64;
                    let mut tags = Vec::new();
                    while tags.len() < BATCHES as usize {
                        log.wait_for_offset(cursor).await;
                        let end = log.written_end_offset();
                        let outcome = log.read(cursor, 5_000, end).await.unwrap();
                        for batch in decode(&outcome) {
                            assert_eq!(batch.0, cursor);
                            assert!(batch.1 < end);
                            cursor = batch.1 + 1;
                            tags.push(batch.3);
                        }
                    }
                    tags
                })
            };
            let writers: Vec<_> = (0..4u64)
                .map(|writer| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        for index in 0..BATCHES / 4 {
                            let tag = writer * 1000 + index;
                            let records = 1 + (tag % 3) as usize;
                            log.append(batch(tag, records, 300), records as u32, 0)
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            futures::future::join_all(writers).await;
            let tags = reader.await;
            assert_eq!(tags.len(), BATCHES as usize);
            for writer in 0..4u64 {
                let mine: Vec<u64> = tags
                    .iter()
                    .copied()
                    .filter(|t| t / 1000 == writer)
                    .collect();
                assert_eq!(
                    mine,
                    (0..BATCHES / 4)
                        .map(|i| writer * 1000 + i)
                        .collect::<Vec<_>>()
                );
            }
            log.close().await.unwrap();
        });
    }
}

#[test]
fn appends_resolve_even_if_earlier_futures_are_dropped() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir.clone(), LogConfig::default())
            .await
            .unwrap();
        drop(log.append(batch(0, 1, 10), 1, 0));
        let outcome = log.append(batch(1, 1, 10), 1, 0).await.unwrap();
        assert_eq!(outcome.base_offset, 1);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 2);
        log.close().await.unwrap();
    });
}

#[test]
fn remove_deletes_the_directory() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log: Rc<PartitionLog> = PartitionLog::open(dir.clone(), small_config())
            .await
            .unwrap();
        for index in 0..50 {
            log.append(batch(index, 1, 2000), 1, 0).await.unwrap();
        }
        assert!(dir.exists());
        log.remove().await.unwrap();
        assert!(!dir.exists());
        assert!(matches!(
            log.append(batch(0, 1, 1), 1, 0).await,
            Err(LogError::Closed)
        ));
    });
}

#[test]
fn reads_work_even_if_glommio_misdetects_polling() {
    let (root, dir) = temp_dir();
    run(move || async move {
        // Opening an empty file read-write first makes glommio (on this thread) believe the
        // device supports polled I/O; O_DIRECT reads then fail with EOPNOTSUPP on devices
        // without it, and the log must fall back to buffered reads.
        let empty = root.path().join("empty");
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&empty)
            .await
            .unwrap();
        file.close().await.unwrap();
        let config = LogConfig {
            cache_size_bytes: 0,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        for index in 0..30u64 {
            log.append(batch(index, 2, 1000), 2, 0).await.unwrap();
        }
        assert_eq!(read_all(&log, 0, 5000).await.len(), 30);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(read_all(&log, 0, 5000).await.len(), 30);
        log.close().await.unwrap();
        // Did the misdetection actually break direct reads here (devices that really support
        // polling read fine)? If so the log must have used the fallback.
        let probe = root.path().join("probe");
        std::fs::write(&probe, vec![1u8; 4096]).unwrap();
        let file = glommio::io::DmaFile::open(&probe).await.unwrap();
        let direct_reads_work = file.read_at_aligned(0, 4096).await.is_ok();
        file.close().await.unwrap();
        assert_eq!(
            super::file_io::fallback_read_count() > 0,
            !direct_reads_work
        );
    });
}

#[test]
fn config_validation() {
    assert!(LogConfig::default().validate().is_ok());
    let bad = LogConfig {
        max_write_size_bytes: 5000,
        ..LogConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = LogConfig {
        segment_size_bytes: 0,
        ..LogConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = LogConfig {
        prewrite_ahead_bytes: 5000,
        ..LogConfig::default()
    };
    assert!(bad.validate().is_err());
    for first_step_bytes in [0, 5000] {
        let bad = LogConfig {
            preallocate_first_step_bytes: first_step_bytes,
            ..LogConfig::default()
        };
        assert!(bad.validate().is_err(), "{first_step_bytes}");
    }
    // A first step above the full step is cut to it, not refused.
    let config = LogConfig {
        preallocate_first_step_bytes: 64 * 1024 * 1024,
        ..LogConfig::default()
    };
    assert!(config.validate().is_ok());
    assert_eq!(config.preallocate_step_after(0), 32 * 1024 * 1024);
}

#[test]
fn preallocation_steps_double_from_the_first_step_up_to_the_full_step() {
    const MIB: u64 = 1024 * 1024;
    let config = LogConfig::default();
    assert_eq!(config.preallocate_first_step_bytes, MIB);
    let steps: Vec<u64> = [0, MIB, 2 * MIB, 3 * MIB, 16 * MIB, 32 * MIB, 100 * MIB]
        .iter()
        .map(|&allocated| config.preallocate_step_after(allocated) / MIB)
        .collect();
    assert_eq!(steps, [1, 1, 2, 3, 16, 32, 32]);
    // Allocation sizes of a segment written from empty: 1, 2, 4, ... 32, 64, 96 MiB.
    let mut allocated = 0;
    let mut sizes = Vec::new();
    while allocated < 128 * MIB {
        allocated += config.preallocate_step_after(allocated);
        sizes.push(allocated / MIB);
    }
    assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 64, 96, 128]);
}

#[test]
fn a_partition_that_writes_little_reserves_little() {
    const KIB: u64 = 1024;
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            segment_size_bytes: 1024 * KIB,
            max_write_size_bytes: 64 * KIB as usize,
            preallocate_first_step_bytes: 16 * KIB,
            preallocate_step_bytes: 128 * KIB,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let active = segment_path(&dir, 0);
        // Nothing written: nothing reserved.
        assert_eq!(std::fs::metadata(&active).unwrap().len(), 0);
        // One small batch: the first step, not the full one.
        log.append(batch(0, 1, 500), 1, 0).await.unwrap();
        assert_eq!(std::fs::metadata(&active).unwrap().len(), 16 * KIB);
        // A partition that keeps writing gets steps that double up to the full step, and the
        // allocation stays within about one and a half full steps of what is written.
        let mut expected = vec![(0, 0, 0, 0)];
        let mut previous_len = 16 * KIB;
        let mut lengths = vec![previous_len];
        for tag in 1..=200u64 {
            let o = log.append(batch(tag, 2, 2000), 2, 0).await.unwrap();
            expected.push((o.base_offset, o.last_offset, 0, tag));
            let len = std::fs::metadata(&active).unwrap().len();
            let written = log.size_bytes();
            assert!(len >= written, "{len} < {written}");
            assert!(
                len <= written + 2 * 128 * KIB,
                "{len} for {written} written"
            );
            if len != previous_len {
                lengths.push(len);
                previous_len = len;
            }
        }
        assert!(log.size_bytes() > 300 * KIB);
        // Every size the file took is on the doubling path 16, 32, 64, 128 KiB, then full
        // steps (background steps may complete between two appends, so not every one is seen)...
        let mut path = vec![0];
        while *path.last().unwrap() < config.segment_size_bytes {
            let allocated = *path.last().unwrap();
            path.push(allocated + config.preallocate_step_after(allocated));
        }
        assert_eq!(path[1..5], [16 * KIB, 32 * KIB, 64 * KIB, 128 * KIB]);
        assert!(lengths.iter().all(|len| path.contains(len)), "{lengths:?}");
        // ...and the later ones are full steps.
        let last_steps: Vec<u64> = lengths.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(*last_steps.last().unwrap(), 128 * KIB, "{lengths:?}");
        assert!(
            last_steps.iter().all(|&step| step <= 128 * KIB),
            "{lengths:?}"
        );
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
        // Reopened: the same batches (the preallocated tail is cut by recovery).
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
    });
}

#[test]
fn a_new_segment_starts_again_from_the_first_step() {
    const KIB: u64 = 1024;
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            segment_size_bytes: 256 * KIB,
            max_write_size_bytes: 64 * KIB as usize,
            preallocate_first_step_bytes: 16 * KIB,
            preallocate_step_bytes: 64 * KIB,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        let mut tag = 0u64;
        while log.stats().rolls == 0 {
            log.append(batch(tag, 2, 1500), 2, 0).await.unwrap();
            tag += 1;
        }
        let sealed = segment_path(&dir, 0);
        assert_sealed_segment_is_exact(&sealed);
        // The roll gave the new segment the first step only; the write that followed (one
        // batch) fit in it.
        let active = segment_path(&dir, log.next_offset() - 2);
        assert_eq!(std::fs::metadata(&active).unwrap().len(), 16 * KIB);
        log.close().await.unwrap();
    });
}

// ---- Flush policy, pipelined writes, timestamps, retention, compaction, faults ----

fn timed_batch(tag: u64, record_count: usize, value_size_bytes: usize, timestamp_ms: i64) -> Bytes {
    let values: Vec<Vec<u8>> = (0..record_count)
        .map(|_| {
            let mut value = vec![7u8; value_size_bytes.max(8)];
            value[..8].copy_from_slice(&tag.to_be_bytes());
            value
        })
        .collect();
    let slices: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    Bytes::from(build_uncompressed_batch(
        BatchParams {
            base_timestamp_ms: timestamp_ms,
            ..BatchParams::default()
        },
        &slices,
    ))
}

/// A batch of keyed records (`None` value = tombstone), timestamps `timestamp_ms` + index.
fn keyed_batch(entries: &[(&[u8], Option<&[u8]>)], timestamp_ms: i64) -> Bytes {
    use crate::protocol::record_batch::test_support::{build_batch_raw, write_varint};
    let mut records = Vec::new();
    for (index, (key, value)) in entries.iter().enumerate() {
        let mut body = vec![0u8];
        write_varint(&mut body, index as i64);
        write_varint(&mut body, index as i64);
        write_varint(&mut body, key.len() as i64);
        body.extend_from_slice(key);
        match value {
            Some(value) => {
                write_varint(&mut body, value.len() as i64);
                body.extend_from_slice(value);
            }
            None => write_varint(&mut body, -1),
        }
        write_varint(&mut body, 0);
        write_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    Bytes::from(build_batch_raw(
        BatchParams {
            base_timestamp_ms: timestamp_ms,
            ..BatchParams::default()
        },
        entries.len() as i32,
        &records,
    ))
}

/// (offset, key, value) of a stored record.
type StoredRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every (offset, key, value) stored, decoding records with the protocol crate.
async fn read_records(log: &PartitionLog) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut cursor = log.log_start_offset();
    let end = log.written_end_offset();
    while cursor < end {
        let outcome = log.read(cursor, 1 << 20, i64::MAX).await.unwrap();
        if outcome.size_bytes == 0 {
            break;
        }
        let mut all = BytesMut::new();
        for chunk in &outcome.chunks {
            all.extend_from_slice(chunk);
        }
        let mut all = all.freeze();
        while !all.is_empty() {
            let header = RecordBatchHeader::parse(&all).unwrap();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut all).unwrap();
            for record in set.records {
                out.push((
                    record.offset,
                    record.key.map(|k| k.to_vec()),
                    record.value.map(|v| v.to_vec()),
                ));
            }
            cursor = header.last_offset() + 1;
        }
    }
    out
}

use bytes::BytesMut;

#[test]
fn sync_policy_shares_fdatasyncs_and_acknowledges_durable_appends() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            flush_messages: 1,
            ..small_config()
        };
        assert!(config.is_sync());
        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        let syncs_before = log.stats().syncs;
        // 200 concurrent producers, each waiting for its own fdatasync.
        let tasks: Vec<_> = (0..200u64)
            .map(|index| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let appended = log.append(batch(index, 2, 300), 2, 0).await.unwrap();
                    log.wait_durable(appended.last_offset).await.unwrap();
                    assert!(log.durable_end_offset() > appended.last_offset);
                    appended.last_offset
                })
            })
            .collect();
        let lasts = futures::future::join_all(tasks).await;
        assert_eq!(lasts.iter().max(), Some(&399));
        assert_eq!(log.durable_end_offset(), 400);
        let syncs = log.stats().syncs - syncs_before;
        assert!(
            (1..100).contains(&syncs),
            "{syncs} fdatasyncs for 200 appends"
        );
        // The durable end never passes the written end.
        assert!(log.durable_end_offset() <= log.written_end_offset());
        log.close().await.unwrap();
    });
}

#[test]
fn flush_messages_and_flush_interval_trigger_syncs() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            flush_messages: 10,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        for index in 0..4u64 {
            log.append(batch(index, 2, 100), 2, 0).await.unwrap();
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(log.durable_end_offset(), 0, "8 records < flush_messages");
        log.append(batch(4, 2, 100), 2, 0).await.unwrap();
        // 10 records: a sync starts without anyone waiting for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.durable_end_offset() < 10 {
            assert!(std::time::Instant::now() < deadline);
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        // flush.ms: the maintenance tick syncs once the oldest unsynced write is old enough.
        log.set_config(LogConfig {
            flush_interval_ms: 30,
            ..config
        })
        .unwrap();
        log.append(batch(5, 1, 100), 1, 0).await.unwrap();
        log.sync_if_due(std::time::Instant::now());
        glommio::timer::sleep(Duration::from_millis(10)).await;
        assert_eq!(log.durable_end_offset(), 10, "not due yet");
        glommio::timer::sleep(Duration::from_millis(40)).await;
        log.sync_if_due(std::time::Instant::now());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.durable_end_offset() < 11 {
            assert!(std::time::Instant::now() < deadline);
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        log.close().await.unwrap();
    });
}

#[test]
fn pipelined_writes_keep_order_and_survive_reopen() {
    for in_flight in [1usize, 2, 8] {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let config = LogConfig {
                max_writes_in_flight: in_flight,
                segment_size_bytes: 1024 * 1024,
                max_write_size_bytes: 16 * 1024,
                cache_size_bytes: 0,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(dir.clone(), config.clone())
                .await
                .unwrap();
            // A backlog of odd-sized appends much larger than one write.
            let futures: Vec<_> = (0..400u64)
                .map(|index| {
                    let records = 1 + (index % 4) as usize;
                    log.append(
                        batch(index, records, 500 + (index as usize * 37) % 3000),
                        records as u32,
                        0,
                    )
                })
                .collect();
            let outcomes: Vec<_> = futures::future::join_all(futures)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let expected: Vec<_> = outcomes
                .iter()
                .enumerate()
                .map(|(index, o)| (o.base_offset, o.last_offset, 0, index as u64))
                .collect();
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
            log.close().await.unwrap();
            let log = PartitionLog::open(dir, config).await.unwrap();
            assert_eq!(read_all(&log, 0, 100_000).await, expected);
            log.close().await.unwrap();
        });
    }
}

#[test]
fn timestamp_lookups_match_a_full_scan() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            index_interval_bytes: 1024,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        // Mostly increasing timestamps with some out-of-order ones, over several segments.
        let mut seed = 7u64;
        let mut stored = Vec::new(); // (base, last, record timestamps)
        for index in 0..300u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = ((seed >> 33) % 50) as i64 - 25;
            let timestamp = 1_000_000 + index as i64 * 10 + jitter;
            let records = 1 + (index % 3) as usize;
            let appended = log
                .append(
                    timed_batch(index, records, 400, timestamp),
                    records as u32,
                    0,
                )
                .await
                .unwrap();
            // build_uncompressed_batch gives record i the timestamp base + i.
            let timestamps: Vec<i64> = (0..records as i64).map(|i| timestamp + i).collect();
            stored.push((appended.base_offset, appended.last_offset, timestamps));
        }
        assert!(log.segment_count() >= 3);
        let end = log.written_end_offset();
        let brute = |target: i64| {
            stored.iter().find_map(|(base, _, timestamps)| {
                if timestamps.iter().max().unwrap() < &target {
                    return None;
                }
                let (i, ts) = timestamps
                    .iter()
                    .enumerate()
                    .find(|(_, ts)| **ts >= target)?;
                Some((base + i as i64, *ts))
            })
        };
        for target in (999_000..1_004_000).step_by(37) {
            let hit = log.offset_for_timestamp(target, end).await.unwrap();
            assert_eq!(
                hit.map(|h| (h.offset, h.timestamp_ms)),
                brute(target),
                "target {target}"
            );
        }
        // Max timestamp: the first record holding the largest timestamp.
        let max = stored
            .iter()
            .flat_map(|s| s.2.iter())
            .max()
            .copied()
            .unwrap();
        let expected_max = brute(max).unwrap();
        let hit = log.offset_of_max_timestamp(end).await.unwrap().unwrap();
        assert_eq!((hit.offset, hit.timestamp_ms), expected_max);
        // Nothing is visible past the high watermark.
        assert_eq!(
            log.offset_for_timestamp(max, expected_max.0).await.unwrap(),
            None
        );
        // The same answers after a reopen from index files, and after rebuilding them.
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        for target in (999_000..1_004_000).step_by(301) {
            let hit = log.offset_for_timestamp(target, end).await.unwrap();
            assert_eq!(hit.map(|h| (h.offset, h.timestamp_ms)), brute(target));
        }
        log.close().await.unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "index") {
                std::fs::write(&path, b"corrupt").unwrap();
            }
        }
        std::fs::remove_file(dir.join("recovery-checkpoint")).unwrap();
        let log = PartitionLog::open(dir, config).await.unwrap();
        for target in (999_000..1_004_000).step_by(301) {
            let hit = log.offset_for_timestamp(target, end).await.unwrap();
            assert_eq!(hit.map(|h| (h.offset, h.timestamp_ms)), brute(target));
        }
        let hit = log.offset_of_max_timestamp(end).await.unwrap().unwrap();
        assert_eq!((hit.offset, hit.timestamp_ms), expected_max);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_time_size_and_delete_records() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            retention_ms: None,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let now = super::now_ms();
        // Old data (a day ago), then fresh data.
        for index in 0..60u64 {
            let timestamp = if index < 40 { now - 86_400_000 } else { now };
            log.append(timed_batch(index, 1, 3000, timestamp), 1, 0)
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        assert!(segments >= 3);
        // No retention configured: nothing goes.
        let outcome = log.enforce_retention(super::now_ms()).await.unwrap();
        assert_eq!(outcome.segments_deleted, 0);
        // Time retention of an hour: the old segments go, the log start moves to a segment
        // boundary, and reads below it are out of range.
        log.set_config(LogConfig {
            retention_ms: Some(3_600_000),
            ..config.clone()
        })
        .unwrap();
        let outcome = log.enforce_retention(super::now_ms()).await.unwrap();
        assert!(outcome.segments_deleted >= 1, "{outcome:?}");
        let start = log.log_start_offset();
        assert!(start > 0 && start <= 40, "{start}");
        assert!(matches!(
            log.read(0, 100, i64::MAX).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            read_all(&log, start, 1 << 20).await.len() as i64,
            60 - start
        );
        assert!(!segment_path(&dir, 0).exists());

        // DeleteRecords inside a segment: log start moves exactly there, persisted.
        let low = log
            .delete_records_before(45, log.written_end_offset())
            .await
            .unwrap();
        assert_eq!(low, 45);
        assert!(matches!(
            log.delete_records_before(61, 60).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.delete_records_before(10, 60).await.unwrap(), 45);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), 45);
        assert_eq!(read_all(&log, 45, 1 << 20).await.len(), 15);

        // Size retention: keep at least 10 KB; the active segment always stays.
        log.set_config(LogConfig {
            retention_bytes: Some(10_000),
            ..config.clone()
        })
        .unwrap();
        log.enforce_retention(super::now_ms()).await.unwrap();
        assert!(log.size_bytes() >= 10_000);
        assert!(log.segment_count() <= 2);

        // Everything below the log start: the active segment rolls, then goes; appends go on
        // at the same offsets.
        log.delete_records_before(-1, 60).await.unwrap();
        let outcome = log.enforce_retention(super::now_ms()).await.unwrap();
        assert!(outcome.roll_requested);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let outcome = log.enforce_retention(super::now_ms()).await.unwrap();
            if log.segment_count() == 1 && log.size_bytes() == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{outcome:?}");
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(log.log_start_offset(), 60);
        let appended = log.append(batch(99, 1, 10), 1, 0).await.unwrap();
        assert_eq!(appended.base_offset, 60);
        log.close().await.unwrap();
        // A crash that loses every segment file still cannot reuse offsets.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log" || e == "index") {
                std::fs::remove_file(path).unwrap();
            }
        }
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(log.next_offset(), 60);
        log.close().await.unwrap();
    });
}

#[test]
fn compaction_keeps_latest_per_key_and_survives_reopen() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            cleanup_compact: true,
            cleanup_delete: false,
            retention_ms: None,
            cache_size_bytes: 1 << 20, // compaction must evict what the cache holds
            delete_retention_ms: 0,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let old = super::now_ms() - 1000;
        let value = vec![b'v'; 1500];
        let mut latest: std::collections::BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> =
            std::collections::BTreeMap::new();
        for round in 0..8u8 {
            for key in 0..10u8 {
                let key_bytes = vec![b'k', key];
                let mut own_value = value.clone();
                own_value[0] = round;
                let tombstone = round == 7 && key % 3 == 0;
                let entry_value = if tombstone {
                    None
                } else {
                    Some(own_value.as_slice())
                };
                let appended = log
                    .append(keyed_batch(&[(&key_bytes, entry_value)], old), 1, 0)
                    .await
                    .unwrap();
                latest.insert(
                    key_bytes,
                    (appended.base_offset, entry_value.map(<[u8]>::to_vec)),
                );
            }
        }
        // Something after, so the last keyed segment is sealed.
        for filler in 0..40u8 {
            log.append(keyed_batch(&[(&[b'f', filler], Some(&value))], old), 1, 0)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        let size_before = log.size_bytes();
        let limits = super::CompactionLimits {
            slice_bytes: 8 * 1024,
            max_keys: 1000,
        };
        let outcome = log
            .compact(super::now_ms(), &limits, &Default::default())
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.records_removed >= 60, "{outcome:?}");
        assert!(log.size_bytes() < size_before);
        type Latest = std::collections::BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)>;
        let check = |records: Vec<StoredRecord>, latest: &Latest| {
            let keyed: Vec<_> = records
                .iter()
                .filter(|r| r.1.as_ref().is_some_and(|k| k[0] == b'k'))
                .map(|r| (r.1.clone().unwrap(), (r.0, r.2.clone())))
                .collect();
            let want: Vec<_> = latest
                .iter()
                .filter(|(_, (_, value))| value.is_some()) // expired tombstones removed
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut sorted = keyed.clone();
            sorted.sort_by_key(|(_, (offset, _))| *offset);
            assert_eq!(keyed, sorted, "offset order");
            let mut keyed = keyed;
            keyed.sort();
            assert_eq!(keyed, want);
            // Offsets strictly increase across everything.
            assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
        };
        check(read_records(&log).await, &latest);
        // Nothing new: a second pass does nothing.
        assert!(log
            .compact(super::now_ms(), &limits, &Default::default())
            .await
            .unwrap()
            .is_none());
        // Appends continue after compaction; reopen (recovery of compacted segments, with and
        // without their index files and the checkpoint) keeps the same content.
        let next = log.next_offset();
        log.append(
            keyed_batch(&[(b"k\x0a", Some(b"new"))], super::now_ms()),
            1,
            0,
        )
        .await
        .unwrap();
        latest.insert(b"k\x0a".to_vec(), (next, Some(b"new".to_vec())));
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        check(read_records(&log).await, &latest);
        log.close().await.unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "index") {
                std::fs::remove_file(path).unwrap();
            }
        }
        std::fs::remove_file(dir.join("recovery-checkpoint")).unwrap();
        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        check(read_records(&log).await, &latest);
        assert_eq!(log.next_offset(), next + 1);
        log.close().await.unwrap();
    });
}

#[test]
fn write_failures_fail_appends_then_resume_without_losing_anything() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = small_config();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for index in 0..10u64 {
            let o = log.append(batch(index, 1, 700), 1, 0).await.unwrap();
            expected.push((o.base_offset, o.last_offset, 0, index));
        }
        super::file_io::inject_write_failures(1);
        let error = log.append(batch(100, 1, 700), 1, 0).await.unwrap_err();
        assert!(matches!(error, LogError::Io(_)), "{error:?}");
        assert!(log.is_failed());
        // Refused while failed, but the written data is still served.
        assert!(log.append(batch(101, 1, 700), 1, 0).await.is_err());
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        // The disk is back: resume continues at the written end.
        assert!(log.try_resume().await.unwrap());
        assert!(!log.is_failed());
        for index in 20..30u64 {
            let o = log.append(batch(index, 1, 700), 1, 0).await.unwrap();
            expected.push((o.base_offset, o.last_offset, 0, index));
        }
        assert_eq!(expected[10].0, 10, "offsets continue without a gap");
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
    });
}

/// Property: random torn tails (cuts, garbage, flipped bytes past the last checkpoint) always
/// recover to a prefix that contains everything checkpointed, and the log stays writable.
#[test]
fn random_torn_tails_recover_to_a_valid_prefix() {
    let mut seed = 0xdead_beef_cafe_f00du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..25 {
        let (_root, dir) = temp_dir();
        let cut_choice = next();
        let noise = next();
        run(move || async move {
            let config = small_config();
            let log = PartitionLog::open(dir.clone(), config.clone())
                .await
                .unwrap();
            let mut expected = Vec::new();
            for index in 0..30u64 {
                let o = log
                    .append(batch(index, 2, 300 + (index as usize * 91) % 2000), 2, 0)
                    .await
                    .unwrap();
                expected.push((o.base_offset, o.last_offset, 0, index));
            }
            log.flush().await.unwrap();
            let durable = log.recovery_point_offset();
            for index in 30..60u64 {
                let o = log
                    .append(batch(index, 2, 300 + (index as usize * 53) % 2000), 2, 0)
                    .await
                    .unwrap();
                expected.push((o.base_offset, o.last_offset, 0, index));
            }
            drop(log); // crash
                       // Damage the last segment somewhere after its start.
            let mut bases: Vec<i64> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| {
                    super::segment::parse_file_name(
                        &e.unwrap().file_name().into_string().unwrap(),
                        ".log",
                    )
                })
                .collect();
            bases.sort_unstable();
            let last = segment_path(&dir, *bases.last().unwrap());
            let mut contents = std::fs::read(&last).unwrap();
            let used = contents.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            if used > 0 {
                let at = (cut_choice as usize) % used;
                match noise % 3 {
                    0 => contents.truncate(at),
                    1 => contents[at] ^= 0x40,
                    _ => {
                        for (i, byte) in contents[at..].iter_mut().enumerate().take(500) {
                            *byte = (noise >> (i % 56)) as u8 | 1;
                        }
                    }
                }
                std::fs::write(&last, &contents).unwrap();
            }
            let log = PartitionLog::open(dir.clone(), config.clone())
                .await
                .unwrap();
            let recovered = read_all(&log, 0, 1 << 20).await;
            assert!(recovered.len() <= expected.len());
            assert_eq!(
                recovered[..],
                expected[..recovered.len()],
                "round {round}: a prefix"
            );
            let end = log.next_offset();
            assert!(
                end >= durable.min(bases.last().copied().unwrap()),
                "round {round}"
            );
            let o = log.append(batch(999, 1, 10), 1, 0).await.unwrap();
            assert_eq!(o.base_offset, end);
            log.close().await.unwrap();
            let log = PartitionLog::open(dir, config).await.unwrap();
            assert_eq!(log.next_offset(), end + 1);
            log.close().await.unwrap();
        });
    }
}

/// The bytes of a zero-copy read, with file regions read back through the page cache.
fn zero_copy_bytes(read: &super::ZeroCopyRead) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut all = Vec::new();
    for chunk in &read.chunks {
        match chunk {
            super::ReadChunk::Memory(bytes) => all.extend_from_slice(bytes),
            super::ReadChunk::File(region) => {
                let mut buffer = vec![0u8; region.size_bytes];
                region
                    .file
                    .read_exact_at(&mut buffer, region.position_bytes)
                    .unwrap();
                all.extend_from_slice(&buffer);
            }
        }
    }
    assert_eq!(all.len(), read.size_bytes);
    all
}

#[test]
fn zero_copy_reads_match_copying_reads() {
    for cache_size_bytes in [0u64, 16 * 1024] {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let config = LogConfig {
                cache_size_bytes,
                index_interval_bytes: 2048,
                ..small_config()
            };
            let log = PartitionLog::open(dir.clone(), config).await.unwrap();
            for index in 0..150u64 {
                let records = 1 + (index % 3) as usize;
                log.append(
                    batch(index, records, 200 + (index as usize * 71) % 1500),
                    records as u32,
                    0,
                )
                .await
                .unwrap();
            }
            let end = log.written_end_offset();
            let mut files = 0;
            for from in (0..end).step_by(7) {
                for max_bytes in [1usize, 3000, 10_000, 100_000] {
                    for visible_end in [end, end - 5] {
                        let copied = log.read(from, max_bytes, visible_end).await.unwrap();
                        let mut expected = Vec::new();
                        for chunk in &copied.chunks {
                            expected.extend_from_slice(chunk);
                        }
                        let zero = log
                            .read_zero_copy(from, max_bytes, visible_end)
                            .await
                            .unwrap();
                        files += zero
                            .chunks
                            .iter()
                            .filter(|c| matches!(c, super::ReadChunk::File(_)))
                            .count();
                        let got = zero_copy_bytes(&zero);
                        // Same batches, except that zero-copy may stop earlier at an index
                        // boundary (never later, never past the visible end).
                        assert!(got.len() <= expected.len(), "from {from} max {max_bytes}");
                        assert_eq!(
                            got[..],
                            expected[..got.len()],
                            "from {from} max {max_bytes}"
                        );
                        if !expected.is_empty() {
                            assert!(!got.is_empty(), "progress from {from}");
                            let outcome = ReadOutcome {
                                chunks: vec![Bytes::from(got)],
                                size_bytes: zero.size_bytes,
                            };
                            let batches = decode(&outcome);
                            assert!(batches[0].0 <= from && from <= batches[0].1);
                            assert!(batches.last().unwrap().1 < visible_end);
                            assert_eq!(zero.next_offset, batches.last().unwrap().1 + 1);
                        }
                    }
                }
            }
            assert!(files > 0, "cold reads used file regions");
            log.close().await.unwrap();
        });
    }
}

#[test]
fn file_regions_splice_to_a_socket() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = LogConfig {
            cache_size_bytes: 0,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), config).await.unwrap();
        for index in 0..100u64 {
            log.append(batch(index, 2, 1500), 2, 0).await.unwrap();
        }
        let read = log.read_zero_copy(0, 1 << 20, i64::MAX).await.unwrap();
        let expected = zero_copy_bytes(&read);
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut theirs = theirs;
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        {
            use std::os::fd::AsRawFd;
            for chunk in &read.chunks {
                match chunk {
                    super::ReadChunk::File(region) => {
                        super::send_file_region(region, ours.as_raw_fd())
                            .await
                            .unwrap()
                    }
                    super::ReadChunk::Memory(bytes) => {
                        use std::io::Write;
                        (&ours).write_all(bytes).unwrap();
                    }
                }
            }
        }
        drop(ours);
        assert_eq!(reader.join().unwrap(), expected);
        log.close().await.unwrap();
    });
}

#[test]
fn offset_before_end_bounds_a_tail_scan() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir.clone(), small_config())
            .await
            .unwrap();
        assert_eq!(log.offset_before_end(1 << 20), 0, "empty log");
        let mut positions = Vec::new(); // (base offset, bytes before it)
        let mut total_bytes = 0u64;
        for index in 0..200u64 {
            let data = batch(index, 1, 700);
            let size_bytes = data.len() as u64;
            let outcome = log.append(data, 1, 0).await.unwrap();
            positions.push((outcome.base_offset, total_bytes));
            total_bytes += size_bytes;
        }
        assert!(log.segment_count() >= 3);
        let end = log.written_end_offset();
        for tail_bytes in [0u64, 1, 3_000, 20_000, 70_000, 100_000] {
            let start = log.offset_before_end(tail_bytes);
            let (_, bytes_before) = positions
                .iter()
                .find(|(offset, _)| *offset == start)
                .copied()
                .expect("the start is a batch boundary");
            let covered_bytes = total_bytes - bytes_before;
            // Covers the tail asked for, and at most one index interval (4096) or one
            // segment start more.
            assert!(
                covered_bytes >= tail_bytes.min(total_bytes),
                "{tail_bytes}: {covered_bytes}"
            );
            assert!(start <= end);
            assert!(
                covered_bytes <= tail_bytes + 4096 + 64 * 1024,
                "{tail_bytes}: {covered_bytes}"
            );
        }
        assert_eq!(
            log.offset_before_end(u64::MAX / 2),
            0,
            "a tail larger than the log"
        );
        log.close().await.unwrap();
    });
}

// ---- Replica operations (replica.rs) ----

/// Every batch of the log, as stored (for byte comparisons between replicas).
async fn raw_batches(log: &PartitionLog) -> Vec<u8> {
    let mut all = Vec::new();
    let mut cursor = log.log_start_offset();
    while cursor < log.written_end_offset() {
        let outcome = log.read(cursor, 1 << 20, i64::MAX).await.unwrap();
        let decoded = decode(&outcome);
        cursor = decoded.last().unwrap().1 + 1;
        for chunk in &outcome.chunks {
            all.extend_from_slice(chunk);
        }
    }
    all
}

/// A leader log with `batches` batches of 5 records; the epoch rises at the given batch
/// indexes (starting at 1).
async fn leader_log(dir: PathBuf, batches: u64, epoch_changes: &[u64]) -> Rc<PartitionLog> {
    let log = PartitionLog::open(dir, small_config()).await.unwrap();
    let mut epoch = 1;
    for index in 0..batches {
        if epoch_changes.contains(&index) {
            epoch += 1;
        }
        log.append(batch(index, 5, 700), 5, epoch).await.unwrap();
    }
    log
}

#[test]
fn replica_appends_keep_the_leaders_offsets_epochs_and_bytes() {
    let (_root, dir) = temp_dir();
    let (_root2, replica_dir) = temp_dir();
    run(move || async move {
        let leader = leader_log(dir, 40, &[10, 30]).await;
        let replica = PartitionLog::open(replica_dir, small_config())
            .await
            .unwrap();
        let mut cursor = 0;
        while cursor < leader.written_end_offset() {
            let outcome = leader.read(cursor, 8 * 1024, i64::MAX).await.unwrap();
            cursor = decode(&outcome).last().unwrap().1 + 1;
            let mut data = Vec::new();
            outcome
                .chunks
                .iter()
                .for_each(|c| data.extend_from_slice(c));
            replica.append_replica(Bytes::from(data)).await.unwrap();
        }
        assert_eq!(replica.written_end_offset(), 200);
        assert_eq!(raw_batches(&replica).await, raw_batches(&leader).await);
        assert_eq!(replica.latest_epoch(), Some(3));
        assert_eq!(replica.end_offset_for_epoch(1), (1, 50));
        assert_eq!(replica.end_offset_for_epoch(2), (2, 150));
        assert_eq!(replica.end_offset_for_epoch(3), (3, 200));
        assert_eq!(replica.end_offset_for_epoch(4), (-1, -1));
        assert_eq!(leader.end_offset_for_epoch(2), (2, 150));

        // A batch that does not continue the log, or with a broken CRC, is refused.
        let stray = leader.read(100, 1, i64::MAX).await.unwrap();
        let stray: Vec<u8> = stray.chunks.concat();
        assert!(replica
            .append_replica(Bytes::from(stray.clone()))
            .await
            .is_err());
        let mut tail = leader.read(195, 1, i64::MAX).await.unwrap().chunks.concat();
        let (_root3, fresh_dir) = temp_dir();
        let fresh = PartitionLog::open(fresh_dir, small_config()).await.unwrap();
        assert!(fresh
            .append_replica(Bytes::from(tail.clone()))
            .await
            .is_err());
        fresh.reset_to(195).await.unwrap();
        let last = tail.len() - 1;
        tail[last] ^= 0xff;
        assert!(fresh.append_replica(Bytes::from(tail)).await.is_err());
        assert_eq!(fresh.written_end_offset(), 195);
        fresh.close().await.unwrap();
        replica.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn truncation_cuts_across_segments_and_survives_reopen() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = leader_log(dir.clone(), 60, &[10, 30]).await;
        assert!(log.segment_count() > 3, "the test needs several segments");
        let before = read_all(&log, 0, 1 << 20).await;
        // 93 lies inside the batch [90, 94]: that batch goes too.
        let end = log.truncate_to(93).await.unwrap();
        assert_eq!(end, 90);
        assert_eq!(log.written_end_offset(), 90);
        assert_eq!(log.next_offset(), 90);
        assert_eq!(read_all(&log, 0, 1 << 20).await, before[..18].to_vec());
        let segment_files = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count();
        assert_eq!(segment_files, log.segment_count());
        // Epoch 2 started at 50 and is now the latest; epoch 3 is gone.
        assert_eq!(log.latest_epoch(), Some(2));
        assert_eq!(log.end_offset_for_epoch(2), (2, 90));
        // Appends continue at the cut, with a newer epoch.
        let next = log.append(batch(900, 5, 700), 5, 4).await.unwrap();
        assert_eq!(next.base_offset, 90);
        log.close().await.unwrap();

        let log = PartitionLog::open(dir, small_config()).await.unwrap();
        assert_eq!(log.written_end_offset(), 95);
        let after = read_all(&log, 0, 1 << 20).await;
        assert_eq!(after[..18], before[..18]);
        assert_eq!(after[18], (90, 94, 4, 900));
        assert_eq!(log.end_offset_for_epoch(2), (2, 90));
        assert_eq!(log.end_offset_for_epoch(3), (2, 90));
        assert_eq!(log.end_offset_for_epoch(4), (4, 95));
        // Truncating at or past the end changes nothing; at the start empties the log there.
        assert_eq!(log.truncate_to(500).await.unwrap(), 95);
        assert_eq!(log.truncate_to(0).await.unwrap(), 0);
        assert_eq!(log.written_end_offset(), 0);
        log.close().await.unwrap();
    });
}

#[test]
fn reset_restarts_empty_at_the_leaders_log_start() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = leader_log(dir.clone(), 20, &[]).await;
        log.reset_to(1000).await.unwrap();
        assert_eq!(log.log_start_offset(), 1000);
        assert_eq!(log.written_end_offset(), 1000);
        assert_eq!(log.high_watermark(), 1000);
        assert_eq!(log.latest_epoch(), None);
        let appended = log.append(batch(7, 5, 100), 5, 9).await.unwrap();
        assert_eq!(appended.base_offset, 1000);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, small_config()).await.unwrap();
        assert_eq!(log.log_start_offset(), 1000);
        assert_eq!(log.written_end_offset(), 1005);
        assert_eq!(log.end_offset_for_epoch(9), (9, 1005));
        log.close().await.unwrap();
    });
}

#[test]
fn high_watermark_follows_the_limit_and_survives_reopen() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = PartitionLog::open(dir.clone(), small_config())
            .await
            .unwrap();
        log.append(batch(1, 5, 100), 5, 1).await.unwrap();
        // A lone replica: committed once written.
        assert_eq!(log.high_watermark(), 5);
        log.set_high_watermark_limit(7);
        log.append(batch(2, 5, 100), 5, 1).await.unwrap();
        assert_eq!(log.high_watermark(), 7);
        let waiting = log.wait_for_high_watermark(8);
        let woken = glommio::spawn_local(waiting);
        glommio::yield_if_needed().await;
        log.set_high_watermark_limit(9);
        woken.await;
        assert_eq!(log.high_watermark(), 9);
        // Never backwards through the limit; truncation does lower it.
        log.set_high_watermark_limit(2);
        assert_eq!(log.high_watermark(), 9);
        log.truncate_to(5).await.unwrap();
        assert_eq!(log.high_watermark(), 5);
        log.set_high_watermark_limit(i64::MAX);
        log.append(batch(3, 5, 100), 5, 1).await.unwrap();
        assert_eq!(log.high_watermark(), 10);
        log.set_high_watermark_limit(12);
        log.append(batch(4, 5, 100), 5, 1).await.unwrap();
        log.close().await.unwrap();
        // Reopened: the checkpointed high watermark, not the log end.
        let log = PartitionLog::open(dir, small_config()).await.unwrap();
        assert_eq!(log.written_end_offset(), 15);
        assert_eq!(log.high_watermark(), 12);
        log.set_high_watermark_limit(i64::MAX);
        assert_eq!(log.high_watermark(), 15);
        log.close().await.unwrap();
    });
}

#[test]
fn leader_epochs_are_rebuilt_when_their_file_is_missing_or_stale() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let log = leader_log(dir.clone(), 30, &[5, 20]).await;
        log.close().await.unwrap();
        let file = dir.join("leader-epoch-checkpoint");
        assert!(file.exists());
        std::fs::remove_file(&file).unwrap();
        let log = PartitionLog::open(dir.clone(), small_config())
            .await
            .unwrap();
        assert_eq!(log.end_offset_for_epoch(1), (1, 25));
        assert_eq!(log.end_offset_for_epoch(2), (2, 100));
        assert_eq!(log.end_offset_for_epoch(3), (3, 150));
        log.close().await.unwrap();
        // A file written before the last epoch started (a crash before its rewrite).
        std::fs::write(
            &file,
            super::leader_epochs::tests_support::encode(&[(1, 0), (2, 25)]),
        )
        .unwrap();
        let log = PartitionLog::open(dir, small_config()).await.unwrap();
        assert_eq!(log.latest_epoch(), Some(3));
        assert_eq!(log.end_offset_for_epoch(2), (2, 100));
        log.close().await.unwrap();
    });
}

// ---- Zero-fill ahead of the writer (sync policy) ----

/// Walks the batches of a sealed segment file: they must end exactly at the file's end (a
/// zero-fill must never leave zeros past a sealed segment, nor overwrite its data).
fn assert_sealed_segment_is_exact(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let mut position = 0;
    while position < data.len() {
        let header = RecordBatchHeader::parse(&data[position..])
            .unwrap_or_else(|error| panic!("{}: no batch at {position}: {error}", path.display()));
        assert!(header.total_size_bytes() > 0);
        position += header.total_size_bytes();
    }
    assert_eq!(position, data.len(), "{}", path.display());
    validate_batches(&data, usize::MAX).expect("sealed segment holds valid batches");
}

/// Small geometry: the writer keeps catching up with the zero-fill (8 KiB appends, 16 KiB
/// writes, rounds of 16-32 KiB), and segments roll every 64 KiB, so zero-fills race with
/// data writes and with rolls.
fn prewrite_config() -> LogConfig {
    LogConfig {
        flush_messages: 1,
        cache_size_bytes: 0,
        preallocate_step_bytes: 48 * 1024,
        prewrite_ahead_bytes: 32 * 1024,
        segment_size_bytes: 96 * 1024,
        ..small_config()
    }
}

#[test]
fn sync_policy_zero_fills_ahead_without_touching_data() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = prewrite_config();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        // Waves of concurrent acks-after-fdatasync appends, as producers under the sync
        // policy send them.
        for wave in 0..20u64 {
            let tasks: Vec<_> = (0..6u64)
                .map(|index| {
                    let log = log.clone();
                    let tag = wave * 100 + index;
                    glommio::spawn_local(async move {
                        let records = 1 + (tag % 3) as usize;
                        let size_bytes = 900 + (tag as usize * 131) % 2500;
                        let o = log
                            .append(batch(tag, records, size_bytes), records as u32, 0)
                            .await
                            .unwrap();
                        log.wait_durable(o.last_offset).await.unwrap();
                        (o.base_offset, o.last_offset, 0, tag)
                    })
                })
                .collect();
            expected.extend(futures::future::join_all(tasks).await);
        }
        expected.sort();
        let stats = log.stats();
        assert!(stats.prewritten_bytes > 0, "no zero-fill ran: {stats:?}");
        assert!(stats.rolls >= 3, "{stats:?}");
        assert_eq!(log.durable_end_offset(), log.written_end_offset());
        // Read back from disk (no cache), then after a reopen (recovery scans the tail).
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
        let mut sealed: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        sealed.sort();
        sealed.pop(); // The active segment ends with its preallocated (zeroed) region.
        assert!(sealed.len() >= 3);
        sealed
            .iter()
            .for_each(|path| assert_sealed_segment_is_exact(path));
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
    });
}

#[test]
fn zero_fill_only_under_the_sync_policy_and_when_enabled() {
    let cases = [
        (
            "default flush policy",
            LogConfig {
                flush_messages: u64::MAX,
                ..prewrite_config()
            },
        ),
        (
            "prewrite_ahead_bytes 0",
            LogConfig {
                prewrite_ahead_bytes: 0,
                ..prewrite_config()
            },
        ),
    ];
    for (name, config) in cases {
        let (_root, dir) = temp_dir();
        run(move || async move {
            let log = PartitionLog::open(dir.clone(), config).await.unwrap();
            let mut expected = Vec::new();
            for tag in 0..40u64 {
                let o = log.append(batch(tag, 1, 3000), 1, 0).await.unwrap();
                log.sync().await.unwrap();
                expected.push((o.base_offset, o.last_offset, 0, tag));
            }
            assert!(log.stats().rolls >= 1);
            assert_eq!(log.stats().prewritten_bytes, 0, "{name}");
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
            log.close().await.unwrap();
        });
    }
}

#[test]
fn zero_fill_survives_a_crash_and_resumes_on_the_recovered_segment() {
    let (_root, dir) = temp_dir();
    run(move || async move {
        let config = prewrite_config();
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for tag in 0..30u64 {
            let o = log.append(batch(tag, 1, 1500), 1, 0).await.unwrap();
            log.wait_durable(o.last_offset).await.unwrap();
            expected.push((o.base_offset, o.last_offset, 0, tag));
        }
        assert!(log.stats().prewritten_bytes > 0);
        // No close: the files are left as a crash leaves them (zeros past the data). A crash
        // also stops the zero-fill; here it must finish before the next open writes.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.state.borrow().prewriting.is_some() {
            assert!(std::time::Instant::now() < deadline);
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        drop(log);
        let log = PartitionLog::open(dir.clone(), config.clone())
            .await
            .unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        for tag in 30..60u64 {
            let o = log.append(batch(tag, 1, 1500), 1, 0).await.unwrap();
            log.wait_durable(o.last_offset).await.unwrap();
            expected.push((o.base_offset, o.last_offset, 0, tag));
        }
        assert!(
            log.stats().prewritten_bytes > 0,
            "zero-fill resumes after recovery"
        );
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, config).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.unwrap();
    });
}
