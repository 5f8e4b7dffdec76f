//! Small state files that layers above the log keep in a partition's directory (producer-state
//! snapshots): written whole and atomically, listed by name prefix, removed with the partition.

use super::file_io::{blocking, read_file_optional, remove_files, write_file_atomic};
use super::{LogError, PartitionLog};

impl PartitionLog {
    /// Replaces the state file `name` atomically and durably.
    pub async fn write_state_file(&self, name: &str, contents: Vec<u8>) -> Result<(), LogError> {
        assert!(
            !name.contains('/'),
            "state files live in the partition directory"
        );
        write_file_atomic(self.dir(), name, contents, true).await
    }

    /// The state file `name`, or `None` if there is none.
    pub async fn read_state_file(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        read_file_optional(self.dir().join(name)).await
    }

    /// Names of the state files starting with `prefix` (temporary files excluded), sorted.
    pub async fn list_state_files(&self, prefix: &str) -> Result<Vec<String>, LogError> {
        let dir = self.dir().to_path_buf();
        let prefix = prefix.to_string();
        blocking(move || -> std::io::Result<Vec<String>> {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && !name.ends_with(".tmp") {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
        .await
        .map_err(LogError::Io)
    }

    /// Removes the named state files (those already gone are ignored).
    pub async fn remove_state_files(&self, names: Vec<String>) -> Result<usize, LogError> {
        let paths = names.iter().map(|name| self.dir().join(name)).collect();
        remove_files(paths).await
    }
}
