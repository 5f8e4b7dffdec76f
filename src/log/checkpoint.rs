//! The recovery checkpoint: the offset below which the log is known durable, and where that
//! offset lies on disk. Recovery trusts batches before it (headers only) and validates the rest.
//!
//! Format: one text line, `riptide-recovery-checkpoint v1 <offset> <segment_base_offset>
//! <position_bytes> <crc32c-hex>\n`, the CRC covering everything before it. Text keeps it
//! readable by operators; the CRC catches a torn or hand-edited file.
//!
//! Two more single-offset files use the same line format ([`OffsetFile`]):
//! - `log-start-offset`: the log start set by DeleteRecords (or retention) when it lies past the
//!   first segment's base offset; written durably before the change is acknowledged.
//! - `cleaner-offset`: compaction has rewritten segments below this offset; recovery accepts
//!   offset gaps and batches with fewer records than offsets only there.

use std::path::Path;

use super::file_io::{read_file_optional, write_file_atomic};
use super::LogError;

pub(crate) const CHECKPOINT_FILE_NAME: &str = "recovery-checkpoint";

const CHECKPOINT_TAG: &str = "riptide-recovery-checkpoint v1";

/// Bound on the file size we are willing to parse.
const CHECKPOINT_SIZE_MAX_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryCheckpoint {
    /// Every offset below this one is durable.
    pub(crate) offset: i64,
    /// The segment holding `offset` (the active segment when the checkpoint was taken).
    pub(crate) segment_base_offset: i64,
    /// Byte position of `offset` in that segment: the end of the durable batches.
    pub(crate) position_bytes: u64,
}

impl RecoveryCheckpoint {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let body = format!(
            "{CHECKPOINT_TAG} {} {} {}",
            self.offset, self.segment_base_offset, self.position_bytes
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body} {crc:08x}\n").into_bytes()
    }

    /// Parses a checkpoint file; `None` if it is malformed in any way.
    pub(crate) fn decode(contents: &[u8]) -> Option<Self> {
        if contents.len() > CHECKPOINT_SIZE_MAX_BYTES {
            return None;
        }
        let text = std::str::from_utf8(contents).ok()?;
        let text = text.strip_suffix('\n')?;
        let (body, crc_hex) = text.rsplit_once(' ')?;
        let crc = u32::from_str_radix(crc_hex, 16).ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let fields = body.strip_prefix(CHECKPOINT_TAG)?.strip_prefix(' ')?;
        let mut parts = fields.split(' ');
        let checkpoint = RecoveryCheckpoint {
            offset: parts.next()?.parse().ok()?,
            segment_base_offset: parts.next()?.parse().ok()?,
            position_bytes: parts.next()?.parse().ok()?,
        };
        if parts.next().is_some()
            || checkpoint.offset < checkpoint.segment_base_offset
            || checkpoint.segment_base_offset < 0
        {
            return None;
        }
        Some(checkpoint)
    }
}

pub(crate) async fn write_checkpoint(
    dir: &Path,
    checkpoint: RecoveryCheckpoint,
) -> Result<(), LogError> {
    write_file_atomic(dir, CHECKPOINT_FILE_NAME, checkpoint.encode(), true).await
}

/// Reads the checkpoint; `Ok(None)` if it is absent or unreadable (then recovery validates
/// everything, which is slower but safe).
pub(crate) async fn read_checkpoint(dir: &Path) -> Result<Option<RecoveryCheckpoint>, LogError> {
    let Some(contents) = read_file_optional(dir.join(CHECKPOINT_FILE_NAME)).await? else {
        return Ok(None);
    };
    let checkpoint = RecoveryCheckpoint::decode(&contents);
    if checkpoint.is_none() {
        tracing::warn!(dir = %dir.display(), "ignoring malformed recovery checkpoint");
    }
    Ok(checkpoint)
}

/// A durable single-offset file (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetFile {
    LogStart,
    Cleaner,
    /// The high watermark at the last checkpoint: where consumers' view resumes after a
    /// restart, before replication has re-established it.
    HighWatermark,
}

impl OffsetFile {
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            OffsetFile::LogStart => "log-start-offset",
            OffsetFile::Cleaner => "cleaner-offset",
            OffsetFile::HighWatermark => "high-watermark",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            OffsetFile::LogStart => "riptide-log-start-offset v1",
            OffsetFile::Cleaner => "riptide-cleaner-offset v1",
            OffsetFile::HighWatermark => "riptide-high-watermark v1",
        }
    }

    pub(crate) fn encode(self, offset: i64) -> Vec<u8> {
        assert!(offset >= 0);
        let body = format!("{} {offset}", self.tag());
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body} {crc:08x}\n").into_bytes()
    }

    pub(crate) fn decode(self, contents: &[u8]) -> Option<i64> {
        if contents.len() > CHECKPOINT_SIZE_MAX_BYTES {
            return None;
        }
        let text = std::str::from_utf8(contents).ok()?.strip_suffix('\n')?;
        let (body, crc_hex) = text.rsplit_once(' ')?;
        if crc32c::crc32c(body.as_bytes()) != u32::from_str_radix(crc_hex, 16).ok()? {
            return None;
        }
        let offset: i64 = body
            .strip_prefix(self.tag())?
            .strip_prefix(' ')?
            .parse()
            .ok()?;
        (offset >= 0).then_some(offset)
    }

    /// Writes the file atomically and durably (data, rename and directory synced).
    pub(crate) async fn write(self, dir: &Path, offset: i64) -> Result<(), LogError> {
        write_file_atomic(dir, self.file_name(), self.encode(offset), true).await
    }

    /// Reads the file; `None` if absent or malformed (a malformed one is logged).
    pub(crate) async fn read(self, dir: &Path) -> Result<Option<i64>, LogError> {
        let Some(contents) = read_file_optional(dir.join(self.file_name())).await? else {
            return Ok(None);
        };
        let offset = self.decode(&contents);
        if offset.is_none() {
            tracing::warn!(dir = %dir.display(), file = self.file_name(), "ignoring malformed file");
        }
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_files_round_trip_and_reject_damage() {
        for kind in [
            OffsetFile::LogStart,
            OffsetFile::Cleaner,
            OffsetFile::HighWatermark,
        ] {
            let encoded = kind.encode(987_654_321);
            assert_eq!(kind.decode(&encoded), Some(987_654_321));
            for index in 0..encoded.len() {
                let mut damaged = encoded.clone();
                damaged[index] ^= 0x04;
                assert_eq!(kind.decode(&damaged), None, "byte {index}");
            }
        }
        // One kind's file is not mistaken for the other's.
        assert_eq!(
            OffsetFile::Cleaner.decode(&OffsetFile::LogStart.encode(5)),
            None
        );
    }

    #[test]
    fn round_trip_and_rejects_damage() {
        let checkpoint = RecoveryCheckpoint {
            offset: 12345,
            segment_base_offset: 10000,
            position_bytes: 987654,
        };
        let encoded = checkpoint.encode();
        assert_eq!(RecoveryCheckpoint::decode(&encoded), Some(checkpoint));
        for index in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[index] ^= 0x04;
            assert_eq!(RecoveryCheckpoint::decode(&damaged), None, "byte {index}");
        }
        for cut in 0..encoded.len() {
            assert_eq!(RecoveryCheckpoint::decode(&encoded[..cut]), None);
        }
    }
}
