//! Data directory checks: filesystem type, O_DIRECT support, free space. Report only (they
//! change nothing but a probe file that is removed at once).

use super::profile::DataDirSection;
use super::{Finding, Status};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Name of a filesystem magic number from statfs(2).
pub fn filesystem_name(magic: i64) -> &'static str {
    match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x0102_1994 => "tmpfs",
        0x858_458f6 => "ramfs",
        0x794c_7630 => "overlay",
        0x9123_683E => "btrfs",
        0x2fc1_2fc1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        _ => "unknown",
    }
}

/// The nearest existing ancestor of `dir` (the data directory may not exist yet).
fn existing(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

pub fn check(dir: &Path, profile: &DataDirSection) -> Vec<Finding> {
    let probe_dir = existing(dir);
    let note = (probe_dir != dir).then(|| {
        format!(
            "{} does not exist yet: checked {}",
            dir.display(),
            probe_dir.display()
        )
    });
    let setting = |name: &str| format!("{} {name}", dir.display());
    let mut findings = Vec::new();

    let fs = nix::sys::statfs::statfs(probe_dir).map(|s| filesystem_name(s.filesystem_type().0));
    let (current, status) = match fs {
        Ok(name) if profile.filesystems.iter().any(|f| f == name) => {
            (Some(name.to_string()), Status::Ok)
        }
        Ok(name @ ("btrfs" | "zfs" | "f2fs")) => (Some(name.to_string()), Status::Warn),
        Ok(name) => (Some(name.to_string()), Status::Fail),
        Err(error) => (Some(format!("error: {error}")), Status::Fail),
    };
    findings.push(Finding {
        tuner: "data_dir",
        setting: setting("filesystem"),
        current,
        recommended: profile.filesystems.join(" or "),
        status,
        why: "segments are written with O_DIRECT and preallocated: xfs and ext4 do both well; tmpfs/overlay/nfs do not".into(),
        note: note.clone(),
        changes: Vec::new(),
    });

    let (current, status) = match probe_o_direct(probe_dir) {
        Ok(()) => ("supported".to_string(), Status::Ok),
        Err(error) => (format!("not supported: {error}"), Status::Fail),
    };
    findings.push(Finding {
        tuner: "data_dir",
        setting: setting("O_DIRECT"),
        current: Some(current),
        recommended: "supported".into(),
        status,
        why: "the log writes around the page cache with O_DIRECT; the broker cannot store data without it".into(),
        note: note.clone(),
        changes: Vec::new(),
    });

    let (current, status) = match nix::sys::statvfs::statvfs(probe_dir) {
        Ok(stat) => {
            let free = stat.blocks_available() * stat.fragment_size();
            let total = (stat.blocks() * stat.fragment_size()).max(1);
            let percent = free * 100 / total;
            let ok = free >= profile.min_free_bytes && percent >= profile.min_free_percent;
            (
                format!("{} free ({percent}%)", human_bytes(free)),
                if ok { Status::Ok } else { Status::Fail },
            )
        }
        Err(error) => (format!("error: {error}"), Status::Fail),
    };
    findings.push(Finding {
        tuner: "data_dir",
        setting: setting("free space"),
        current: Some(current),
        recommended: format!(
            "at least {} and {}%",
            human_bytes(profile.min_free_bytes),
            profile.min_free_percent
        ),
        status,
        why: "a full disk stops every partition's appends: leave room for retention to catch up"
            .into(),
        note,
        changes: Vec::new(),
    });
    findings
}

/// Writes, syncs and removes one aligned block with O_DIRECT.
fn probe_o_direct(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".riptide-tune-probe-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        let block = AlignedBlock::new();
        file.write_all(block.as_slice())?;
        file.sync_data()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// One 4 KiB zeroed block aligned to 4 KiB (O_DIRECT needs aligned buffers).
struct AlignedBlock(*mut u8);

const BLOCK_BYTES: usize = 4096;

impl AlignedBlock {
    fn new() -> AlignedBlock {
        let layout = std::alloc::Layout::from_size_align(BLOCK_BYTES, BLOCK_BYTES).unwrap();
        // SAFETY: the layout is non-zero sized.
        let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!pointer.is_null(), "out of memory");
        AlignedBlock(pointer)
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the allocation is BLOCK_BYTES long and initialised.
        unsafe { std::slice::from_raw_parts(self.0, BLOCK_BYTES) }
    }
}

impl Drop for AlignedBlock {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(BLOCK_BYTES, BLOCK_BYTES).unwrap();
        // SAFETY: allocated in `new` with the same layout.
        unsafe { std::alloc::dealloc(self.0, layout) }
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_is_checked() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let profile = DataDirSection {
            filesystems: vec!["xfs".into(), "ext4".into()],
            min_free_bytes: 0,
            min_free_percent: 0,
        };
        let findings = check(&dir.path().join("not-yet"), &profile);
        assert_eq!(findings.len(), 3);
        assert!(findings.iter().all(|f| f.note.is_some()));
        assert_eq!(findings[2].status, Status::Ok, "{:?}", findings[2]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe file removed"
        );
        assert_eq!(human_bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
        assert_eq!(filesystem_name(0xEF53), "ext4");
    }
}
