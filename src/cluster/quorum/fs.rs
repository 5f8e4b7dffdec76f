//! The files of the metadata log, behind a small trait so the simulator can crash them.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What the quorum needs of a directory. Names are plain file names inside it.
pub trait MetaFs {
    /// The whole file, or `None` when it does not exist.
    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Appends `bytes` (not yet durable: see [`MetaFs::sync`]).
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended to `name` durable.
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Replaces `name` by `bytes`, atomically and durably: after a crash the file holds either
    /// the old or the new content.
    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Cuts `name` to `length_bytes`, durably.
    fn truncate(&mut self, name: &str, length_bytes: u64) -> io::Result<()>;
}

/// A real directory. Appends go through one open handle per file.
pub struct DirFs {
    dir: PathBuf,
    handles: HashMap<String, File>,
}

impl DirFs {
    pub fn open(dir: &Path) -> io::Result<DirFs> {
        std::fs::create_dir_all(dir)?;
        Ok(DirFs {
            dir: dir.to_path_buf(),
            handles: HashMap::new(),
        })
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.handles.contains_key(name) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))?;
            self.handles.insert(name.to_string(), file);
        }
        Ok(self.handles.get_mut(name).expect("inserted above"))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl MetaFs for DirFs {
    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match File::open(self.dir.join(name)) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(bytes)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        // The open append handle would keep writing to the replaced inode.
        self.handles.remove(name);
        let temporary = self.dir.join(format!("{name}.tmp"));
        {
            let mut file = File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, self.dir.join(name))?;
        self.sync_dir()
    }

    fn truncate(&mut self, name: &str, length_bytes: u64) -> io::Result<()> {
        let file = self.handle(name)?;
        file.set_len(length_bytes)?;
        file.sync_all()
    }
}
