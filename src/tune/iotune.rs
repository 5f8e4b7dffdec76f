//! `riptide iotune`: measures the data directory's disk with the broker's own I/O pattern
//! (O_DIRECT writes on io_uring, fdatasync) and writes `<data_dir>/io-config.toml`, which the
//! broker can read to size its write concurrency.
//!
//! Measurements, on a temporary file in the data directory (removed afterwards):
//! 1. the file is preallocated and written once, so later writes overwrite written blocks
//!    (the steady state of pre-written segments);
//! 2. sequential write bandwidth for 64 KiB and 1 MiB writes at queue depths 1, 4, 16, 32;
//! 3. 4 KiB write latency at queue depth 1;
//! 4. fdatasync after a 4 KiB overwrite, and after a 4 KiB write into fresh (fallocated,
//!    never written) blocks, which costs a journal commit on ext4/xfs.
//!
//! ## `io-config.toml` (format version 1)
//!
//! ```toml
//! format_version = 1                 # bumped on incompatible changes
//! measured_at_unix_secs = 1700000000
//! riptide_version = "0.1.0"
//! data_dir = "/var/lib/riptide/data"
//! filesystem = "ext4"
//! file_size_bytes = 268435456        # size of the test file
//!
//! [recommended]
//! write_queue_depth = 16             # smallest queue depth within 90% of the best bandwidth
//! max_write_size_bytes = 1048576     # block size of the best bandwidth
//!
//! [write]                            # best sequential O_DIRECT write run
//! block_size_bytes = 1048576
//! queue_depth = 16
//! bandwidth_bytes_per_sec = 1500000000
//!
//! [[write.runs]]                     # every run (block size × queue depth)
//! block_size_bytes = 65536
//! queue_depth = 1
//! bandwidth_bytes_per_sec = 350000000
//! p50_latency_us = 180
//! p99_latency_us = 420
//!
//! [latency]                          # 4 KiB writes, queue depth 1
//! block_size_bytes = 4096
//! p50_us = 60
//! p99_us = 200
//! iops = 15000
//!
//! [fdatasync]
//! overwrite_p50_us = 40              # after overwriting written blocks
//! overwrite_p99_us = 90
//! fresh_p50_us = 3750                # after writing fresh fallocated blocks
//! fresh_p99_us = 6000
//! samples = 200
//! ```
//!
//! Readers should ignore unknown keys and check `format_version`; [`IoConfig::load`] does.

use crate::admin_cli::output::{Format, Table};
use clap::Args;
use io_uring::{opcode, types, IoUring};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const IO_CONFIG_FILE: &str = "io-config.toml";
pub const FORMAT_VERSION: u32 = 1;

const BLOCK_SIZES_BYTES: [usize; 2] = [64 * 1024, 1024 * 1024];
const QUEUE_DEPTHS: [usize; 4] = [1, 4, 16, 32];
const LATENCY_BLOCK_BYTES: usize = 4096;
const ALIGNMENT_BYTES: usize = 4096;
/// A queue depth "saturates" the disk at this share of the best bandwidth.
const SATURATION_SHARE: f64 = 0.9;
const MAX_FSYNC_SAMPLES: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoConfig {
    pub format_version: u32,
    pub measured_at_unix_secs: u64,
    pub riptide_version: String,
    pub data_dir: String,
    pub filesystem: String,
    pub file_size_bytes: u64,
    pub recommended: Recommended,
    pub write: WriteSummary,
    pub latency: LatencySummary,
    pub fdatasync: FsyncSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommended {
    pub write_queue_depth: u32,
    pub max_write_size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteSummary {
    pub block_size_bytes: u64,
    pub queue_depth: u32,
    pub bandwidth_bytes_per_sec: u64,
    pub runs: Vec<WriteRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRun {
    pub block_size_bytes: u64,
    pub queue_depth: u32,
    pub bandwidth_bytes_per_sec: u64,
    pub p50_latency_us: u64,
    pub p99_latency_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub block_size_bytes: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub iops: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsyncSummary {
    pub overwrite_p50_us: u64,
    pub overwrite_p99_us: u64,
    pub fresh_p50_us: u64,
    pub fresh_p99_us: u64,
    pub samples: u32,
}

impl IoConfig {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(IO_CONFIG_FILE)
    }

    /// Reads `<data_dir>/io-config.toml`; `Ok(None)` if there is none.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<IoConfig>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => anyhow::bail!("cannot read {}: {error}", path.display()),
        };
        let value: toml::Value = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid {}: {e}", path.display()))?;
        let version = value
            .get("format_version")
            .and_then(toml::Value::as_integer);
        anyhow::ensure!(
            version == Some(i64::from(FORMAT_VERSION)),
            "{}: format_version {version:?} is not {FORMAT_VERSION}: run `riptide iotune` again",
            path.display()
        );
        Ok(Some(value.try_into().map_err(|e| {
            anyhow::anyhow!("invalid {}: {e}", path.display())
        })?))
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# Written by `riptide iotune`; the broker reads it to size its write concurrency.\n# Format: see `riptide iotune --help` and src/tune/iotune.rs.\n{}",
            toml::to_string(self).expect("plain data serializes")
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct IotuneArgs {
    /// Data directory to measure [default: from --config, else ./riptide-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Broker config file (for data_dir).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to write the result [default: DATA_DIR/io-config.toml].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Size of the test file (bounded by free space).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub file_size_bytes: u64,
    /// Duration of each of the 10 measurements.
    #[arg(long, default_value_t = 1_000)]
    pub duration_ms: u64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `riptide iotune`; returns the exit code.
pub fn run(args: IotuneArgs) -> i32 {
    match run_inner(&args) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("riptide iotune: {error:#}");
            1
        }
    }
}

fn run_inner(args: &IotuneArgs) -> anyhow::Result<()> {
    let data_dir = match (&args.data_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => crate::config::BrokerConfig::from_toml_file(config)?.data_dir,
        (None, None) => crate::config::BrokerConfig::default().data_dir,
    };
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let free = nix::sys::statvfs::statvfs(&data_dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(u64::MAX);
    let max_block = *BLOCK_SIZES_BYTES.iter().max().unwrap() as u64;
    let file_size = (args.file_size_bytes.min(free / 2) / max_block * max_block).max(max_block);
    anyhow::ensure!(
        free / 2 >= max_block,
        "not enough free space in {}",
        data_dir.display()
    );
    let duration = Duration::from_millis(args.duration_ms.max(10));
    if args.format == Format::Table {
        eprintln!(
            "measuring {} with a {} file, {} ms per measurement…",
            data_dir.display(),
            file_size,
            duration.as_millis()
        );
    }
    let config = measure(&data_dir, file_size, duration)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| IoConfig::path(&data_dir));
    let temporary = output.with_extension("toml.tmp");
    std::fs::write(&temporary, config.to_toml())
        .and_then(|()| std::fs::rename(&temporary, &output))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&config)?),
        Format::Table => {
            let mut runs = Table::new(vec!["BLOCK", "QUEUE-DEPTH", "BANDWIDTH", "P50", "P99"])
                .titled("O_DIRECT SEQUENTIAL WRITES");
            for run in &config.write.runs {
                runs.row(vec![
                    super::datadir::human_bytes(run.block_size_bytes),
                    run.queue_depth.to_string(),
                    format!(
                        "{}/s",
                        super::datadir::human_bytes(run.bandwidth_bytes_per_sec)
                    ),
                    format!("{} us", run.p50_latency_us),
                    format!("{} us", run.p99_latency_us),
                ]);
            }
            let mut summary = Table::new(vec!["MEASURE", "P50", "P99"]).titled("LATENCY");
            summary.row(vec![
                "4 KiB write, QD1".into(),
                format!("{} us", config.latency.p50_us),
                format!("{} us", config.latency.p99_us),
            ]);
            summary.row(vec![
                "fdatasync after overwrite".into(),
                format!("{} us", config.fdatasync.overwrite_p50_us),
                format!("{} us", config.fdatasync.overwrite_p99_us),
            ]);
            summary.row(vec![
                "fdatasync after fresh blocks".into(),
                format!("{} us", config.fdatasync.fresh_p50_us),
                format!("{} us", config.fdatasync.fresh_p99_us),
            ]);
            print!("{}\n{}", runs.render(), summary.render());
            println!(
                "\nrecommended: write_queue_depth = {}, max_write_size_bytes = {}\nwritten to {}",
                config.recommended.write_queue_depth,
                config.recommended.max_write_size_bytes,
                output.display()
            );
        }
    }
    Ok(())
}

/// Runs every measurement in `data_dir` (temporary files, removed afterwards).
pub fn measure(data_dir: &Path, file_size: u64, duration: Duration) -> anyhow::Result<IoConfig> {
    let filesystem = nix::sys::statfs::statfs(data_dir)
        .map(|s| super::datadir::filesystem_name(s.filesystem_type().0).to_string())
        .unwrap_or_else(|_| "unknown".into());
    let path = data_dir.join(format!(".riptide-iotune-{}.tmp", std::process::id()));
    let fresh_path = data_dir.join(format!(".riptide-iotune-fresh-{}.tmp", std::process::id()));
    let result = (|| {
        let file = open_direct(&path)?;
        preallocate(&file, file_size)?;
        let mut ring = IoUring::new(64)?;
        // Written once: later runs overwrite written blocks.
        write_run(&mut ring, &file, file_size, BLOCK_SIZES_BYTES[1], 16, None)?;
        let mut runs = Vec::new();
        for &block in &BLOCK_SIZES_BYTES {
            for &depth in &QUEUE_DEPTHS {
                let (bandwidth, mut latencies) =
                    write_run(&mut ring, &file, file_size, block, depth, Some(duration))?;
                runs.push(WriteRun {
                    block_size_bytes: block as u64,
                    queue_depth: depth as u32,
                    bandwidth_bytes_per_sec: bandwidth,
                    p50_latency_us: percentile_us(&mut latencies, 0.50),
                    p99_latency_us: percentile_us(&mut latencies, 0.99),
                });
            }
        }
        let (_, mut latencies) = write_run(
            &mut ring,
            &file,
            file_size,
            LATENCY_BLOCK_BYTES,
            1,
            Some(duration),
        )?;
        let iops = (latencies.len() as f64 / duration.as_secs_f64()) as u64;
        let latency = LatencySummary {
            block_size_bytes: LATENCY_BLOCK_BYTES as u64,
            p50_us: percentile_us(&mut latencies, 0.50),
            p99_us: percentile_us(&mut latencies, 0.99),
            iops,
        };
        let mut overwrite = fsync_run(&mut ring, &file, file_size, duration)?;
        let fresh_file = open_direct(&fresh_path)?;
        let fresh_size = (MAX_FSYNC_SAMPLES * LATENCY_BLOCK_BYTES) as u64;
        preallocate(&fresh_file, fresh_size)?;
        let mut fresh = fsync_run(&mut ring, &fresh_file, fresh_size, duration)?;
        let samples = overwrite.len().min(fresh.len()) as u32;
        let fdatasync = FsyncSummary {
            overwrite_p50_us: percentile_us(&mut overwrite, 0.50),
            overwrite_p99_us: percentile_us(&mut overwrite, 0.99),
            fresh_p50_us: percentile_us(&mut fresh, 0.50),
            fresh_p99_us: percentile_us(&mut fresh, 0.99),
            samples,
        };
        Ok::<_, anyhow::Error>((runs, latency, fdatasync))
    })();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&fresh_path);
    let (runs, latency, fdatasync) = result?;
    let (recommended, write) = summarize(runs);
    Ok(IoConfig {
        format_version: FORMAT_VERSION,
        measured_at_unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        riptide_version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: data_dir.display().to_string(),
        filesystem,
        file_size_bytes: file_size,
        recommended,
        write,
        latency,
        fdatasync,
    })
}

/// The best run, and the smallest queue depth within [`SATURATION_SHARE`] of it at that
/// block size.
fn summarize(runs: Vec<WriteRun>) -> (Recommended, WriteSummary) {
    let best = runs
        .iter()
        .max_by_key(|r| r.bandwidth_bytes_per_sec)
        .cloned()
        .expect("at least one run");
    let saturating = runs
        .iter()
        .filter(|r| r.block_size_bytes == best.block_size_bytes)
        .filter(|r| {
            r.bandwidth_bytes_per_sec as f64
                >= best.bandwidth_bytes_per_sec as f64 * SATURATION_SHARE
        })
        .map(|r| r.queue_depth)
        .min()
        .unwrap_or(best.queue_depth);
    (
        Recommended {
            write_queue_depth: saturating,
            max_write_size_bytes: best.block_size_bytes,
        },
        WriteSummary {
            block_size_bytes: best.block_size_bytes,
            queue_depth: best.queue_depth,
            bandwidth_bytes_per_sec: best.bandwidth_bytes_per_sec,
            runs,
        },
    )
}

fn open_direct(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {} with O_DIRECT: {e}", path.display()))
}

fn preallocate(file: &std::fs::File, size: u64) -> anyhow::Result<()> {
    nix::fcntl::fallocate(
        file.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        size as i64,
    )
    .or_else(|_| {
        file.set_len(size)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    })
    .map_err(|e| anyhow::anyhow!("cannot preallocate the test file: {e}"))
}

/// A buffer aligned for O_DIRECT, filled with non-repeating bytes.
struct AlignedBuffer {
    pointer: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuffer {
    fn new(size: usize, seed: u64) -> AlignedBuffer {
        let layout =
            std::alloc::Layout::from_size_align(size, ALIGNMENT_BYTES).expect("valid layout");
        // SAFETY: non-zero size.
        let pointer = unsafe { std::alloc::alloc(layout) };
        assert!(!pointer.is_null(), "out of memory");
        let mut state = seed | 1;
        for i in 0..size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // SAFETY: i < size.
            unsafe { *pointer.add(i) = state as u8 };
        }
        AlignedBuffer { pointer, layout }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.pointer, self.layout) }
    }
}

/// Sequential O_DIRECT writes of `block` bytes with `depth` in flight, wrapping around the
/// file; for `duration`, or one pass over the file when `None`. Returns bytes per second and
/// each write's latency.
fn write_run(
    ring: &mut IoUring,
    file: &std::fs::File,
    file_size: u64,
    block: usize,
    depth: usize,
    duration: Option<Duration>,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let buffers: Vec<AlignedBuffer> = (0..depth)
        .map(|i| AlignedBuffer::new(block, i as u64 + 7))
        .collect();
    let fd = types::Fd(file.as_raw_fd());
    let blocks_in_file = (file_size / block as u64).max(1);
    let total_blocks = match duration {
        Some(_) => u64::MAX,
        None => blocks_in_file,
    };
    let started = Instant::now();
    let mut submitted_at = vec![started; depth];
    let mut next_block = 0u64;
    let mut in_flight = 0usize;
    let mut completed_bytes = 0u64;
    let mut latencies = Vec::new();
    let submit = |ring: &mut IoUring, slot: usize, index: u64| -> anyhow::Result<()> {
        let offset = (index % blocks_in_file) * block as u64;
        let entry = opcode::Write::new(fd, buffers[slot].pointer, block as u32)
            .offset(offset)
            .build()
            .user_data(slot as u64);
        // SAFETY: the buffer outlives the operation (we wait for every completion below).
        unsafe { ring.submission().push(&entry) }
            .map_err(|_| anyhow::anyhow!("submission queue full"))?;
        Ok(())
    };
    for (slot, at) in submitted_at
        .iter_mut()
        .enumerate()
        .take(total_blocks as usize)
    {
        *at = Instant::now();
        submit(ring, slot, next_block)?;
        next_block += 1;
        in_flight += 1;
    }
    while in_flight > 0 {
        ring.submit_and_wait(1)?;
        let completions: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, result) in completions {
            let slot = slot as usize;
            in_flight -= 1;
            anyhow::ensure!(
                result >= 0,
                "O_DIRECT write failed: {}",
                std::io::Error::from_raw_os_error(-result)
            );
            anyhow::ensure!(
                result as usize == block,
                "short O_DIRECT write ({result} of {block} bytes)"
            );
            latencies.push(submitted_at[slot].elapsed());
            completed_bytes += block as u64;
            let more = match duration {
                Some(duration) => started.elapsed() < duration,
                None => next_block < total_blocks,
            };
            if more {
                submitted_at[slot] = Instant::now();
                submit(ring, slot, next_block)?;
                next_block += 1;
                in_flight += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Ok(((completed_bytes as f64 / elapsed) as u64, latencies))
}

/// Writes 4 KiB then fdatasyncs, at successive offsets, for `duration` (at most
/// [`MAX_FSYNC_SAMPLES`] times and once per block of the file); returns fdatasync latencies.
fn fsync_run(
    ring: &mut IoUring,
    file: &std::fs::File,
    file_size: u64,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let buffer = AlignedBuffer::new(LATENCY_BLOCK_BYTES, 99);
    let fd = types::Fd(file.as_raw_fd());
    let blocks = (file_size / LATENCY_BLOCK_BYTES as u64).max(1);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut index = 0u64;
    while latencies.is_empty()
        || (started.elapsed() < duration && latencies.len() < MAX_FSYNC_SAMPLES && index < blocks)
    {
        let write = opcode::Write::new(fd, buffer.pointer, LATENCY_BLOCK_BYTES as u32)
            .offset((index % blocks) * LATENCY_BLOCK_BYTES as u64)
            .build()
            .user_data(1);
        // SAFETY: the buffer lives until the completion is reaped below.
        unsafe { ring.submission().push(&write) }
            .map_err(|_| anyhow::anyhow!("submission queue full"))?;
        ring.submit_and_wait(1)?;
        let result = ring.completion().next().map_or(-libc::EIO, |c| c.result());
        anyhow::ensure!(
            result >= 0,
            "O_DIRECT write failed: {}",
            std::io::Error::from_raw_os_error(-result)
        );
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(2);
        let sync_started = Instant::now();
        // SAFETY: no buffer involved.
        unsafe { ring.submission().push(&sync) }
            .map_err(|_| anyhow::anyhow!("submission queue full"))?;
        ring.submit_and_wait(1)?;
        let result = ring.completion().next().map_or(-libc::EIO, |c| c.result());
        anyhow::ensure!(
            result >= 0,
            "fdatasync failed: {}",
            std::io::Error::from_raw_os_error(-result)
        );
        latencies.push(sync_started.elapsed());
        index += 1;
    }
    Ok(latencies)
}

fn percentile_us(values: &mut [Duration], quantile: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let index = ((values.len() - 1) as f64 * quantile).round() as usize;
    values[index].as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_real_directory_and_round_trips_the_file() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let config = measure(dir.path(), 4 * 1024 * 1024, Duration::from_millis(20)).unwrap();
        assert_eq!(
            config.write.runs.len(),
            BLOCK_SIZES_BYTES.len() * QUEUE_DEPTHS.len()
        );
        assert!(config.write.bandwidth_bytes_per_sec > 0);
        assert!(QUEUE_DEPTHS.contains(&(config.recommended.write_queue_depth as usize)));
        assert!(config.fdatasync.samples >= 1);
        std::fs::write(IoConfig::path(dir.path()), config.to_toml()).unwrap();
        assert_eq!(IoConfig::load(dir.path()).unwrap(), Some(config));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(IO_CONFIG_FILE)]);
        std::fs::write(IoConfig::path(dir.path()), "format_version = 99\n").unwrap();
        assert!(IoConfig::load(dir.path()).is_err());
        assert_eq!(IoConfig::load(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn saturation_is_the_smallest_depth_near_the_best() {
        let run = |block: u64, depth: u32, bandwidth: u64| WriteRun {
            block_size_bytes: block,
            queue_depth: depth,
            bandwidth_bytes_per_sec: bandwidth,
            p50_latency_us: 0,
            p99_latency_us: 0,
        };
        let (recommended, write) = summarize(vec![
            run(65536, 1, 100),
            run(1048576, 1, 500),
            run(1048576, 4, 950),
            run(1048576, 16, 1000),
        ]);
        assert_eq!(write.queue_depth, 16);
        assert_eq!(recommended.write_queue_depth, 4);
        assert_eq!(recommended.max_write_size_bytes, 1048576);
    }
}
