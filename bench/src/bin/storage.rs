//! Storage engine benchmarks, each against a baseline measured in the same run, on the same
//! file system:
//!
//! - `append`: `PartitionLog` appends of 1 MiB and 16 KiB batches (16 concurrent appenders,
//!   as from 16 in-flight produce requests) vs `fio` sequential O_DIRECT writes of the same
//!   sizes (io_uring, queue depth = the log's writes in flight).
//! - `sync`: append latency under the sync flush policy (write + the fdatasync covering it), one
//!   appender and 16 (group commit), vs a raw O_DIRECT 4 KiB pwrite + fdatasync loop into
//!   fresh (fallocated) blocks and into pre-written blocks.
//! - `fetch`: cold data (page cache evicted) sent to a TCP socket over loopback: the zero-copy
//!   path (`read_zero_copy` + splice) and the copying path (`read` + write) vs raw `sendfile` of
//!   the same segment files; throughput and CPU seconds (user + sys, this process) per GB sent.
//!   The receiver is a separate process, so its copies are not counted.
//! - `recovery`: restart time after a crash (no close) with N GiB written and a checkpoint
//!   every 5 s (the broker default), vs the same restart without checkpoint and index files
//!   (every byte validated); then timestamp and offset lookup latency over that log.
//!
//! ```text
//! cargo run --release -p riptide-bench --bin storage -- [all|append|sync|fetch|recovery]
//!     [--dir PATH] [--recovery-gib N] [--quick]
//! ```
//! `--dir` must be on the file system to measure (not tmpfs: O_DIRECT); default
//! `target/storage-bench`. Everything written there is removed at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use riptide::log::{LogConfig, PartitionLog, ReadChunk};
use riptide::protocol::record_batch::test_support::{build_uncompressed_batch, BatchParams};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

struct Options {
    command: String,
    dir: PathBuf,
    recovery_gib: u64,
    quick: bool,
}

fn parse_options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        command: "all".into(),
        dir: PathBuf::from("target/storage-bench"),
        recovery_gib: 10,
        quick: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => options.dir = PathBuf::from(args.next().expect("--dir PATH")),
            "--recovery-gib" => {
                options.recovery_gib = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--recovery-gib N")
            }
            "--quick" => options.quick = true,
            "sink" => {
                sink();
                std::process::exit(0);
            }
            "glommio-raw" => {
                let depth: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(4);
                glommio_raw(depth);
                std::process::exit(0);
            }
            command => options.command = command.to_string(),
        }
    }
    options
}

fn main() {
    if std::env::var("STORAGE_BENCH_MMAP_THRESHOLD_MIB").is_ok() {
        let mib: i32 = std::env::var("STORAGE_BENCH_MMAP_THRESHOLD_MIB")
            .unwrap()
            .parse()
            .unwrap();
        // SAFETY: mallopt before any thread starts.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, mib * 1024 * 1024) };
    }
    let options = parse_options();
    std::fs::create_dir_all(&options.dir).expect("bench dir");
    let dir = options.dir.canonicalize().expect("bench dir");
    println!("# Storage benchmarks in {}", dir.display());
    println!();
    let all = options.command == "all";
    if all || options.command == "append" {
        bench_append(&dir, options.quick);
    }
    if all || options.command == "sync" {
        bench_sync(&dir, options.quick);
    }
    if all || options.command == "fetch" {
        bench_fetch(&dir, options.quick);
    }
    if all || options.command == "recovery" {
        let gib = if options.quick {
            1
        } else {
            options.recovery_gib
        };
        bench_recovery(&dir, gib);
    }
}

/// Runs `work` on a fresh glommio executor (as a shard does) and returns its result.
fn on_executor<T, F, Fut>(work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("bench-shard")
        .spawn(work)
        .expect("executor starts")
        .join()
        .expect("benchmark body does not panic")
}

/// One uncompressed batch of about `size_bytes` (one record), with `timestamp_ms`.
fn batch_of(size_bytes: usize, timestamp_ms: i64) -> Bytes {
    let value = vec![0x5au8; size_bytes.saturating_sub(61 + 12).max(1)];
    Bytes::from(build_uncompressed_batch(
        BatchParams {
            base_timestamp_ms: timestamp_ms,
            ..BatchParams::default()
        },
        &[&value],
    ))
}

fn fresh_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

// ---- append ----

fn bench_append(dir: &Path, quick: bool) {
    println!("## Append throughput (16 MiB of appends outstanding, 4 writes in flight)");
    println!();
    println!("| batch | riptide log | fio O_DIRECT write, iodepth 4 | ratio |");
    println!("| --- | --- | --- | --- |");
    for (batch_bytes, total) in [(MIB as usize, 4 * GIB), (16 * 1024, GIB)] {
        let total = if quick { total / 8 } else { total };
        // Appenders with 16 MiB outstanding in all (at least 16), as many producers with
        // requests in flight would have: group commit needs something to coalesce.
        let appenders = (16 * MIB as usize / batch_bytes).max(16);
        // Interleaved rounds, medians: the disk is shared and its speed drifts, and each run
        // deletes its file (with `discard`, the next run pays for it), so neither side always
        // goes first.
        let rounds = if quick { 2 } else { 3 };
        let mut baselines = Vec::new();
        let mut runs = Vec::new();
        for round in 0..rounds {
            if round % 2 == 0 {
                runs.push(log_append(dir, batch_bytes, total, appenders));
                baselines.extend(fio_write(dir, batch_bytes, total, 4));
            } else {
                baselines.extend(fio_write(dir, batch_bytes, total, 4));
                runs.push(log_append(dir, batch_bytes, total, appenders));
            }
        }
        baselines.sort_by(f64::total_cmp);
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let baseline = baselines.get(baselines.len() / 2).copied();
        let (ours, writes, bytes, busy) = runs[runs.len() / 2];
        let label = if batch_bytes >= MIB as usize {
            format!("{} MiB", batch_bytes as u64 / MIB)
        } else {
            format!("{} KiB", batch_bytes / 1024)
        };
        println!(
            "| {label} | {ours:.2} GB/s ({:.0} KiB/write, shard thread {:.0}% busy) | {} | {} |",
            bytes as f64 / writes.max(1) as f64 / 1024.0,
            busy * 100.0,
            baseline.map_or("n/a".into(), |b| format!("{b:.2} GB/s")),
            baseline.map_or("n/a".into(), |b| format!("{:.0}%", 100.0 * ours / b)),
        );
    }
    println!();
}

/// GB/s, writes issued, bytes written, share of the shard thread's time spent on CPU.
fn log_append(
    dir: &Path,
    batch_bytes: usize,
    total: u64,
    appenders: usize,
) -> (f64, u64, u64, f64) {
    let dir = fresh_dir(dir, &format!("append-{batch_bytes}"));
    let cleanup = dir.clone();
    let result = on_executor(move || async move {
        let mut config = LogConfig::default();
        if let Some(mib) = std::env::var("STORAGE_BENCH_PREALLOC_MIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            config.preallocate_step_bytes = mib * MIB;
        }
        if let Some(n) = std::env::var("STORAGE_BENCH_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config.max_writes_in_flight = n;
        }
        if let Some(kib) = std::env::var("STORAGE_BENCH_WRITE_KIB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config.max_write_size_bytes = kib * 1024;
        }
        if let Some(mib) = std::env::var("STORAGE_BENCH_SEGMENT_MIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            config.segment_size_bytes = mib * MIB;
        }
        let log = PartitionLog::open(dir, config).await.unwrap();
        let batch = batch_of(batch_bytes, 1_700_000_000_000);
        let per_appender = (total / batch.len() as u64 / appenders as u64).max(1);
        let thread_cpu_before = thread_cpu_time();
        let started = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let log = log.clone();
                let batch = batch.clone();
                glommio::spawn_local(async move {
                    for _ in 0..per_appender {
                        log.append(batch.clone(), 1, 0).await.unwrap();
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks).await;
        let elapsed = started.elapsed();
        let busy = (thread_cpu_time() - thread_cpu_before).as_secs_f64() / elapsed.as_secs_f64();
        let bytes = per_appender * appenders as u64 * batch.len() as u64;
        let stats = log.stats();
        if std::env::var("STORAGE_BENCH_DEBUG").is_ok() {
            eprintln!(
                "writes {} avg write latency {} µs, elapsed {:?}",
                stats.writes,
                stats.write_micros_total / stats.writes.max(1),
                elapsed
            );
        }
        log.close().await.unwrap();
        (
            bytes as f64 / elapsed.as_secs_f64() / 1e9,
            stats.writes,
            stats.written_bytes,
            busy,
        )
    });
    let _ = std::fs::remove_dir_all(cleanup);
    result
}

/// fio sequential O_DIRECT writes; GB/s, or None if fio is missing or fails.
fn fio_write(dir: &Path, block_bytes: usize, total: u64, iodepth: usize) -> Option<f64> {
    let file = dir.join(format!("fio-{block_bytes}.dat"));
    let _ = std::fs::remove_file(&file);
    let output = Command::new("fio")
        .args([
            "--name=write",
            &format!("--filename={}", file.display()),
            "--rw=write",
            &format!("--bs={block_bytes}"),
            &format!("--size={total}"),
            "--direct=1",
            "--ioengine=io_uring",
            &format!("--iodepth={iodepth}"),
            "--output-format=json",
        ])
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&file);
    if !output.status.success() {
        eprintln!("fio failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let bytes_per_second = json["jobs"][0]["write"]["bw_bytes"].as_f64()?;
    Some(bytes_per_second / 1e9)
}

// ---- sync latency ----

fn bench_sync(dir: &Path, quick: bool) {
    let count = if quick { 500 } else { 3000 };
    println!("## Append latency under the sync flush policy (1000-byte batches)");
    println!();
    println!("| what | p50 | p99 | max | appends/s | fdatasyncs |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for prewritten in [false, true] {
        let mut latencies = raw_write_fdatasync(dir, count, prewritten);
        latencies.sort_unstable();
        let total: u64 = latencies.iter().sum();
        println!(
            "| raw O_DIRECT 4 KiB pwrite + fdatasync, {} blocks | {} | {} | {} | {:.0} | {count} |",
            if prewritten {
                "pre-written"
            } else {
                "fresh (fallocated)"
            },
            micros(percentile(&latencies, 0.5)),
            micros(percentile(&latencies, 0.99)),
            micros(*latencies.last().unwrap()),
            count as f64 / (total as f64 / 1e9),
        );
    }
    for appenders in [1usize, 16] {
        let (mut latencies, elapsed, syncs) =
            log_sync_latency(dir, appenders, count / appenders.min(4));
        latencies.sort_unstable();
        println!(
            "| riptide log, sync policy, {appenders} appender(s), acks after fdatasync | {} | {} | {} | {:.0} | {syncs} |",
            micros(percentile(&latencies, 0.5)),
            micros(percentile(&latencies, 0.99)),
            micros(*latencies.last().unwrap()),
            latencies.len() as f64 / elapsed.as_secs_f64(),
        );
    }
    println!();
}

fn nanos(value: u64) -> String {
    format!("{value} ns")
}

fn micros(nanos: u64) -> String {
    format!("{:.0} µs", nanos as f64 / 1000.0)
}

/// Per-append latencies (ns), wall time, fdatasyncs.
fn log_sync_latency(
    dir: &Path,
    appenders: usize,
    per_appender: usize,
) -> (Vec<u64>, Duration, u64) {
    let dir = fresh_dir(dir, &format!("sync-{appenders}"));
    let cleanup = dir.clone();
    let result = on_executor(move || async move {
        let config = LogConfig {
            flush_messages: 1,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir, config).await.unwrap();
        let batch = batch_of(1000, 1_700_000_000_000);
        let syncs_before = log.stats().syncs;
        let started = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let log = log.clone();
                let batch = batch.clone();
                glommio::spawn_local(async move {
                    let mut latencies = Vec::with_capacity(per_appender);
                    for _ in 0..per_appender {
                        let begun = Instant::now();
                        let appended = log.append(batch.clone(), 1, 0).await.unwrap();
                        log.wait_durable(appended.last_offset).await.unwrap();
                        latencies.push(begun.elapsed().as_nanos() as u64);
                    }
                    latencies
                })
            })
            .collect();
        let latencies: Vec<u64> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let elapsed = started.elapsed();
        let syncs = log.stats().syncs - syncs_before;
        log.close().await.unwrap();
        (latencies, elapsed, syncs)
    });
    let _ = std::fs::remove_dir_all(cleanup);
    result
}

/// An aligned buffer for O_DIRECT.
struct AlignedBuffer {
    pointer: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuffer {
    fn new(size_bytes: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(size_bytes, 4096).unwrap();
        // SAFETY: non-zero size, valid layout.
        let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!pointer.is_null());
        AlignedBuffer { pointer, layout }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.pointer, self.layout) }
    }
}

/// Latencies (ns) of `count` sequential 4 KiB O_DIRECT pwrite + fdatasync.
fn raw_write_fdatasync(dir: &Path, count: usize, prewritten: bool) -> Vec<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("raw-sync.dat");
    let _ = std::fs::remove_file(&path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let fd = file.as_raw_fd();
    let size = (count as i64 + 1) * 4096;
    // SAFETY: fallocate on an open descriptor.
    assert_eq!(unsafe { libc::fallocate(fd, 0, 0, size) }, 0);
    if prewritten {
        let chunk = AlignedBuffer::new(MIB as usize);
        let mut position = 0i64;
        while position < size {
            // SAFETY: the buffer is valid for its size.
            let written = unsafe { libc::pwrite(fd, chunk.pointer.cast(), MIB as usize, position) };
            assert!(written > 0);
            position += written as i64;
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fdatasync(fd) }, 0);
    }
    let block = AlignedBuffer::new(4096);
    let mut latencies = Vec::with_capacity(count);
    for index in 0..count {
        let begun = Instant::now();
        // SAFETY: the buffer is valid for 4096 bytes.
        let written = unsafe { libc::pwrite(fd, block.pointer.cast(), 4096, index as i64 * 4096) };
        assert_eq!(written, 4096);
        // SAFETY: fdatasync on an open descriptor.
        assert_eq!(unsafe { libc::fdatasync(fd) }, 0);
        latencies.push(begun.elapsed().as_nanos() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    latencies
}

// ---- cold fetch ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FetchMode {
    Sendfile,
    ZeroCopy,
    Copy,
}

fn bench_fetch(dir: &Path, quick: bool) {
    let total = if quick { 512 * MIB } else { 4 * GIB };
    let log_dir = fresh_dir(dir, "fetch");
    let (end_offset, segment_bytes) = prepare_fetch_log(&log_dir, total);
    println!(
        "## Cold fetch to a TCP socket over loopback ({:.1} GiB, page cache evicted before each run)",
        segment_bytes as f64 / GIB as f64
    );
    println!();
    println!("| path | throughput | vs sendfile | user CPU s per GB | system CPU s per GB |");
    println!("| --- | --- | --- | --- | --- |");
    let mut baseline = None;
    let only = std::env::var("STORAGE_BENCH_FETCH_ONLY").ok();
    for mode in [FetchMode::Sendfile, FetchMode::ZeroCopy, FetchMode::Copy] {
        if only
            .as_ref()
            .is_some_and(|only| !format!("{mode:?}").eq_ignore_ascii_case(only))
        {
            continue;
        }
        let (bytes, elapsed, cpu) = fetch_once(&log_dir, end_offset, mode);
        assert_eq!(bytes, segment_bytes, "{mode:?} sent every byte");
        if mode != FetchMode::Sendfile && baseline.is_none() {
            baseline = Some(f64::NAN);
        }
        let rate = bytes as f64 / elapsed.as_secs_f64() / 1e9;
        let base = *baseline.get_or_insert(rate);
        let name = match mode {
            FetchMode::Sendfile => "raw sendfile of the segment files (baseline)",
            FetchMode::ZeroCopy => "riptide read_zero_copy + splice (side io_uring ring)",
            FetchMode::Copy => "riptide read (O_DIRECT into memory) + write",
        };
        println!(
            "| {name} | {rate:.2} GB/s | {:.0}% | {:.3} | {:.3} |",
            100.0 * rate / base,
            cpu.user.as_secs_f64() / (bytes as f64 / 1e9),
            cpu.system.as_secs_f64() / (bytes as f64 / 1e9),
        );
    }
    println!();
    let _ = std::fs::remove_dir_all(log_dir);
}

/// Writes `total` bytes of 64 KiB batches; returns (end offset, bytes in segments).
fn prepare_fetch_log(dir: &Path, total: u64) -> (i64, u64) {
    let dir = dir.to_path_buf();
    let dir_again = dir.clone();
    on_executor(move || async move {
        let config = LogConfig {
            cache_size_bytes: 0,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir, config.clone()).await.unwrap();
        let batch = batch_of(64 * 1024, 1_700_000_000_000);
        let count = total / batch.len() as u64;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let log = log.clone();
                let batch = batch.clone();
                glommio::spawn_local(async move {
                    for _ in 0..count / 8 {
                        log.append(batch.clone(), 1, 0).await.unwrap();
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks).await;
        let result = (log.written_end_offset(), log.size_bytes());
        log.close().await.unwrap();
        // Reopening cuts the active segment's preallocated tail, so the files hold exactly the
        // batches (what the sendfile baseline sends).
        let log = PartitionLog::open(dir_again, config).await.unwrap();
        log.close().await.unwrap();
        result
    })
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn evict_page_cache(dir: &Path) {
    for path in segment_files(dir) {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: fadvise on an open descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// CPU time (user, system) of this thread or of this process (all threads, io_uring workers
/// included).
#[derive(Clone, Copy, Debug)]
struct Cpu {
    user: Duration,
    system: Duration,
}

impl Cpu {
    fn total(self) -> Duration {
        self.user + self.system
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;

    fn sub(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// `who`: `libc::RUSAGE_THREAD` or `libc::RUSAGE_SELF`.
fn rusage(who: libc::c_int) -> Cpu {
    // SAFETY: getrusage fills the struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Cpu {
        user: seconds(usage.ru_utime),
        system: seconds(usage.ru_stime),
    }
}

fn thread_cpu_time() -> Duration {
    rusage(libc::RUSAGE_THREAD).total()
}

fn cpu_time() -> Cpu {
    rusage(libc::RUSAGE_SELF)
}

/// The receiving end, in its own process: prints its port, reads one connection to the end,
/// prints the byte count.
fn sink() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    let mut buffer = vec![0u8; 4 * MIB as usize];
    let mut total = 0u64;
    loop {
        let read = stream.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        total += read as u64;
    }
    println!("{total}");
}

/// (bytes received by the sink, elapsed, CPU time of this process).
fn fetch_once(dir: &Path, end_offset: i64, mode: FetchMode) -> (u64, Duration, Cpu) {
    evict_page_cache(dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("sink")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines.next().unwrap().unwrap().parse().unwrap();
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (elapsed, cpu) = match mode {
        FetchMode::Sendfile => {
            let files: Vec<std::fs::File> = segment_files(dir)
                .iter()
                .map(|p| std::fs::File::open(p).unwrap())
                .collect();
            let cpu_before = cpu_time();
            let started = Instant::now();
            for file in &files {
                let size = file.metadata().unwrap().len() as usize;
                let mut offset: libc::off_t = 0;
                while (offset as usize) < size {
                    // SAFETY: sendfile between open descriptors.
                    let sent = unsafe {
                        libc::sendfile(
                            socket.as_raw_fd(),
                            file.as_raw_fd(),
                            &mut offset,
                            size - offset as usize,
                        )
                    };
                    assert!(sent > 0, "sendfile: {}", std::io::Error::last_os_error());
                }
            }
            (started.elapsed(), cpu_time() - cpu_before)
        }
        FetchMode::ZeroCopy | FetchMode::Copy => {
            let dir = dir.to_path_buf();
            let socket = socket.try_clone().unwrap();
            on_executor(move || async move {
                let config = LogConfig {
                    cache_size_bytes: 0,
                    ..LogConfig::default()
                };
                let log: Rc<PartitionLog> = PartitionLog::open(dir, config).await.unwrap();
                let cpu_before = cpu_time();
                let started = Instant::now();
                let mut cursor = 0i64;
                let mut writer = &socket;
                while cursor < end_offset {
                    if mode == FetchMode::ZeroCopy {
                        let read = log
                            .read_zero_copy(cursor, MIB as usize, end_offset)
                            .await
                            .unwrap();
                        for chunk in &read.chunks {
                            match chunk {
                                ReadChunk::File(region) => {
                                    riptide::log::send_file_region(region, socket.as_raw_fd())
                                        .await
                                        .unwrap()
                                }
                                ReadChunk::Memory(bytes) => writer.write_all(bytes).unwrap(),
                            }
                        }
                        assert!(read.next_offset > cursor);
                        cursor = read.next_offset;
                    } else {
                        let read = log.read(cursor, MIB as usize, end_offset).await.unwrap();
                        for chunk in &read.chunks {
                            writer.write_all(chunk).unwrap();
                        }
                        let last = read.chunks.last().unwrap();
                        cursor = last_offset_after(last);
                    }
                }
                let result = (started.elapsed(), cpu_time() - cpu_before);
                log.close().await.unwrap();
                result
            })
        }
    };
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    drop(socket);
    let received: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    child.wait().unwrap();
    (received, elapsed, cpu)
}

fn last_offset_after(batches: &[u8]) -> i64 {
    use riptide::protocol::record_batch::RecordBatchHeader;
    let mut position = 0;
    let mut next = 0;
    while position < batches.len() {
        let header = RecordBatchHeader::parse(&batches[position..]).unwrap();
        next = header.last_offset() + 1;
        position += header.total_size_bytes();
    }
    next
}

// ---- recovery and lookups ----

fn bench_recovery(dir: &Path, gib: u64) {
    let log_dir = fresh_dir(dir, "recovery");
    let checkpoint_interval = Duration::from_millis(5000);
    let batch_bytes = MIB as usize;
    let run_dir = log_dir.clone();
    // Write, checkpointing on the broker's default interval, then crash (no close).
    let (end_offset, at_crash_unchecked, write_seconds) = on_executor(move || async move {
        let log = PartitionLog::open(run_dir, LogConfig::default())
            .await
            .unwrap();
        let stop = Rc::new(std::cell::Cell::new(false));
        let checkpointer = {
            let log = log.clone();
            let stop = stop.clone();
            glommio::spawn_local(async move {
                let mut next = Instant::now() + checkpoint_interval;
                while !stop.get() {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    if Instant::now() >= next {
                        log.checkpoint().await.unwrap();
                        next = Instant::now() + checkpoint_interval;
                    }
                }
            })
        };
        let count = gib * GIB / batch_bytes as u64;
        let started = Instant::now();
        let appenders = 8u64;
        let tasks: Vec<_> = (0..appenders)
            .map(|appender| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    for index in 0..count / appenders {
                        // Timestamps rise with the offset (one ms per batch).
                        let timestamp = 1_700_000_000_000 + (index * appenders + appender) as i64;
                        log.append(batch_of(batch_bytes, timestamp), 1, 0)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks).await;
        let write_seconds = started.elapsed().as_secs_f64();
        stop.set(true);
        checkpointer.await;
        let end = log.written_end_offset();
        let unchecked = end - log.recovery_point_offset();
        drop(log); // the crash: no flush, no checkpoint, no close
        (end, unchecked, write_seconds)
    });
    println!(
        "## Restart after a crash with {gib} GiB written ({:.1} s of writing, checkpoint every {} s)",
        write_seconds,
        checkpoint_interval.as_secs()
    );
    println!();
    println!("| restart | time to open | data validated |");
    println!("| --- | --- | --- |");
    let run_dir = log_dir.clone();
    let (open_ms, lookups) = on_executor(move || async move {
        let started = Instant::now();
        let log = PartitionLog::open(run_dir, LogConfig::default())
            .await
            .unwrap();
        let open_ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(log.written_end_offset(), end_offset, "nothing lost");
        let lookups = lookup_latencies(&log, end_offset).await;
        log.close().await.unwrap();
        (open_ms, lookups)
    });
    println!(
        "| from the checkpoint (+ index files) | {open_ms:.0} ms | {at_crash_unchecked} MiB written after the last checkpoint |"
    );
    // The same data without checkpoint and indexes: every batch is read and CRC-checked.
    for entry in std::fs::read_dir(&log_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".index") || name == "recovery-checkpoint" {
            std::fs::remove_file(path).unwrap();
        }
    }
    let run_dir = log_dir.clone();
    let full_ms = on_executor(move || async move {
        let started = Instant::now();
        let log = PartitionLog::open(run_dir, LogConfig::default())
            .await
            .unwrap();
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(log.written_end_offset(), end_offset);
        drop(log);
        elapsed
    });
    println!("| without checkpoint and index files (baseline) | {full_ms:.0} ms | all {gib} GiB |");
    println!();
    println!(
        "## Lookups over the {gib} GiB log ({} segments, in-memory sparse indexes)",
        lookups.segments
    );
    println!();
    println!("| lookup | p50 | p99 |");
    println!("| --- | --- | --- |");
    println!(
        "| time index only (binary search over segments and entries, in memory) | {} | {} |",
        nanos(lookups.index_only.0),
        nanos(lookups.index_only.1)
    );
    println!(
        "| offset_for_timestamp (ListOffsets by time): index + header scan + batch decode | {} | {} |",
        micros(lookups.timestamp.0),
        micros(lookups.timestamp.1)
    );
    println!(
        "| read of one batch at a random offset (index + one disk read) | {} | {} |",
        micros(lookups.offset.0),
        micros(lookups.offset.1)
    );
    println!();
    let _ = std::fs::remove_dir_all(log_dir);
}

/// Lookup latencies, (p50, p99) in ns.
struct Lookups {
    timestamp: (u64, u64),
    offset: (u64, u64),
    index_only: (u64, u64),
    segments: usize,
}

async fn lookup_latencies(log: &PartitionLog, end_offset: i64) -> Lookups {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut by_time = Vec::new();
    let mut by_offset = Vec::new();
    let mut in_memory = Vec::new();
    for _ in 0..500 {
        let offset = (next() % end_offset as u64) as i64;
        let timestamp = 1_700_000_000_000 + offset;
        let begun = Instant::now();
        let located = log.locate_timestamp(timestamp);
        in_memory.push(begun.elapsed().as_nanos() as u64);
        assert!(located.is_some());
        let begun = Instant::now();
        let hit = log
            .offset_for_timestamp(timestamp, end_offset)
            .await
            .unwrap();
        by_time.push(begun.elapsed().as_nanos() as u64);
        assert!(hit.is_some());
        let begun = Instant::now();
        let read = log.read(offset, 1, end_offset).await.unwrap();
        by_offset.push(begun.elapsed().as_nanos() as u64);
        assert!(read.size_bytes > 0);
    }
    by_time.sort_unstable();
    by_offset.sort_unstable();
    in_memory.sort_unstable();
    Lookups {
        timestamp: (percentile(&by_time, 0.5), percentile(&by_time, 0.99)),
        offset: (percentile(&by_offset, 0.5), percentile(&by_offset, 0.99)),
        index_only: (percentile(&in_memory, 0.5), percentile(&in_memory, 0.99)),
        segments: log.segment_count(),
    }
}

/// Diagnostics: glommio DMA writes of 1 MiB, `depth` in flight, into a fallocated file, with
/// no log around them (separates glommio's cost from the log's).
fn glommio_raw(depth: usize) {
    let path = PathBuf::from("target/storage-bench/glommio-raw.dat");
    let _ = std::fs::remove_file(&path);
    let rate = on_executor(move || async move {
        let file = Rc::new(glommio::io::DmaFile::create(&path).await.unwrap());
        let total = 512 * MIB;
        file.pre_allocate(total, false).await.unwrap();
        let next = Rc::new(std::cell::Cell::new(0u64));
        let started = Instant::now();
        let tasks: Vec<_> = (0..depth)
            .map(|_| {
                let file = file.clone();
                let next = next.clone();
                glommio::spawn_local(async move {
                    loop {
                        let position = next.get();
                        if position >= total {
                            break;
                        }
                        next.set(position + MIB);
                        let buffer = file.alloc_dma_buffer(MIB as usize);
                        file.write_at(buffer, position).await.unwrap();
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks).await;
        let rate = total as f64 / started.elapsed().as_secs_f64() / 1e9;
        drop(file);
        let _ = std::fs::remove_file(&path);
        rate
    });
    println!("glommio raw 1 MiB writes, depth {depth}: {rate:.2} GB/s");
}
