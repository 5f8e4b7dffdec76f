//! Thin helpers over glommio file I/O: alignment, error conversion, windowed DMA reads, and
//! small metadata files written atomically.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::{LogError, BLOCK_SIZE_BYTES};

pub(crate) fn align_down(value: u64) -> u64 {
    value & !(BLOCK_SIZE_BYTES - 1)
}

pub(crate) fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_SIZE_BYTES - 1)
}

pub(crate) fn io_error<T>(error: glommio::GlommioError<T>) -> io::Error {
    io::Error::from(error)
}

#[cfg(test)]
thread_local! {
    /// Test hook: the next this-many writes on this thread fail with ENOSPC.
    static INJECTED_WRITE_FAILURES: Cell<u32> = const { Cell::new(0) };
}

/// Test hook: makes the next `count` segment writes on this thread fail with ENOSPC.
#[cfg(test)]
pub(crate) fn inject_write_failures(count: u32) {
    INJECTED_WRITE_FAILURES.with(|failures| failures.set(count));
}

/// One O_DIRECT write of an aligned buffer at an aligned position (the only way segment data
/// is written, so tests can inject failures here).
pub(crate) async fn write_at(
    file: &DmaFile,
    buffer: DmaBuffer,
    position_bytes: u64,
) -> io::Result<usize> {
    #[cfg(test)]
    {
        let inject = INJECTED_WRITE_FAILURES.with(|failures| {
            let left = failures.get();
            failures.set(left.saturating_sub(1));
            left > 0
        });
        if inject {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
    }
    debug_assert!(position_bytes.is_multiple_of(BLOCK_SIZE_BYTES));
    file.write_at(buffer, position_bytes)
        .await
        .map_err(io_error)
}

/// Opens a segment file for reading and writing, creating it if asked. Checks that the device
/// alignment divides our block size, so every aligned write we issue is legal.
pub(crate) async fn open_segment_file(path: &Path, create: bool) -> Result<DmaFile, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(io_error)?;
    let alignment = file.alignment();
    if alignment == 0 || alignment > BLOCK_SIZE_BYTES || !BLOCK_SIZE_BYTES.is_multiple_of(alignment)
    {
        return Err(LogError::Io(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("device alignment {alignment} does not divide {BLOCK_SIZE_BYTES}"),
        )));
    }
    Ok(file)
}

/// Grows `file` to `size_bytes` with fallocate. Returns false if the filesystem cannot
/// preallocate (the caller then stops trying); other errors propagate.
pub(crate) async fn preallocate(file: &DmaFile, size_bytes: u64) -> Result<bool, LogError> {
    match file.pre_allocate(size_bytes, false).await {
        Ok(()) => Ok(true),
        Err(error) => {
            let error = io_error(error);
            if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
                Ok(false)
            } else {
                Err(LogError::Io(error))
            }
        }
    }
}

thread_local! {
    /// Devices (`st_dev`) on which this thread's executor already primed glommio's polling
    /// probe (glommio caches the probe result per thread).
    static PRIMED_DEVICES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// Makes concurrent probe file names unique on this thread.
    static PROBE_COUNTER: Cell<u64> = const { Cell::new(0) };
    /// Reads that took the buffered fallback on this thread.
    static FALLBACK_READS: Cell<u64> = const { Cell::new(0) };
}

/// Disk reads on this shard that fell back to buffered I/O because glommio mis-detected
/// polling support (see `read_aligned`); should stay 0. For metrics.
pub fn fallback_read_count() -> u64 {
    FALLBACK_READS.with(Cell::get)
}

/// glommio decides once per device and thread whether io_uring polling works, by reading
/// offset 0 of the first DMA file opened there. On an empty file that read trivially succeeds,
/// polling is wrongly assumed, and from then on every O_DIRECT read on the device fails with
/// EOPNOTSUPP (glommio issue #605). So before opening any segment, open a non-empty file in
/// `dir` once per device. If some other DMA file on the device was opened first, the answer is
/// already cached; `read_aligned` then falls back to buffered reads.
pub(crate) async fn prime_iopoll_probe(dir: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::MetadataExt;
    let dir_for_stat = dir.to_path_buf();
    let device = blocking(move || std::fs::metadata(&dir_for_stat).map(|m| m.dev())).await?;
    if PRIMED_DEVICES.with(|devices| devices.borrow().contains(&device)) {
        return Ok(());
    }
    // The `.tmp` suffix makes recovery delete a leftover.
    let probe_number = PROBE_COUNTER.with(|counter| {
        counter.set(counter.get() + 1);
        counter.get()
    });
    let probe_path = dir.join(format!(".iopoll-probe-{probe_number}.tmp"));
    let probe_for_write = probe_path.clone();
    blocking(move || std::fs::write(&probe_for_write, vec![0u8; BLOCK_SIZE_BYTES as usize]))
        .await?;
    let file = DmaFile::open(&probe_path).await.map_err(io_error)?;
    file.close().await.map_err(io_error)?;
    remove_files(vec![probe_path]).await?;
    PRIMED_DEVICES.with(|devices| {
        let mut devices = devices.borrow_mut();
        if !devices.contains(&device) {
            devices.push(device);
        }
    });
    Ok(())
}

/// Bytes returned by `read_aligned`: the DMA buffer, or an owned copy from the fallback path.
pub(crate) enum ReadBuffer {
    Dma(ReadResult),
    Owned(Vec<u8>),
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer::Owned(Vec::new())
    }
}

impl Deref for ReadBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReadBuffer::Dma(result) => result,
            ReadBuffer::Owned(bytes) => bytes,
        }
    }
}

static FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// An O_DIRECT read of `[position, position + size_bytes)` (both aligned); may return fewer
/// bytes at the end of the file. If glommio mis-detected polling support (see
/// `prime_iopoll_probe`) and the read fails with EOPNOTSUPP, reads through the page cache on
/// glommio's blocking pool instead, which is correct (the kernel keeps the page cache coherent
/// with O_DIRECT writes) but slower.
pub(crate) async fn read_aligned(
    file: &DmaFile,
    position: u64,
    size_bytes: usize,
) -> Result<ReadBuffer, LogError> {
    debug_assert!(
        position.is_multiple_of(BLOCK_SIZE_BYTES)
            && (size_bytes as u64).is_multiple_of(BLOCK_SIZE_BYTES)
    );
    let error = match file.read_at_aligned(position, size_bytes).await {
        Ok(result) => return Ok(ReadBuffer::Dma(result)),
        Err(error) => io_error(error),
    };
    // glommio wraps the OS error in a custom one, so match on the kind too.
    let unsupported = error.raw_os_error() == Some(libc::EOPNOTSUPP)
        || error.kind() == io::ErrorKind::Unsupported;
    if !unsupported {
        return Err(LogError::Io(error));
    }
    let Some(path) = file.path().map(|path| path.to_path_buf()) else {
        return Err(LogError::Io(error));
    };
    FALLBACK_READS.with(|count| count.set(count.get() + 1));
    if !FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(path = %path.display(),
            "O_DIRECT reads fail with EOPNOTSUPP (glommio mis-detected polling support); \
             falling back to buffered reads");
    }
    blocking(move || -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&path)?;
        let mut buffer = vec![0u8; size_bytes];
        let mut filled = 0usize;
        while filled < size_bytes {
            let read = file.read_at(&mut buffer[filled..], position + filled as u64)?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        buffer.truncate(filled);
        Ok(buffer)
    })
    .await
    .map(ReadBuffer::Owned)
    .map_err(LogError::Io)
}

/// Sequential-ish access to `[0, end_bytes)` of a DMA file through aligned read windows, so a
/// scan over many small batches issues few large reads. With read-ahead (long sequential
/// scans: recovery, compaction), the next window is read while the current one is processed,
/// starting a little before the current window's end so a batch straddling the boundary is
/// covered by it.
pub(crate) struct WindowReader {
    file: Rc<DmaFile>,
    end_bytes: u64,
    window_size_bytes: u64,
    window_position: u64,
    window: ReadBuffer,
    readahead: bool,
    /// The next window being read: (position, size, read).
    prefetch: Option<(u64, u64, WindowRead)>,
}

/// A window read in flight.
type WindowRead = glommio::Task<Result<ReadBuffer, LogError>>;

/// How far before a window's end the read-ahead window starts: batches up to this size that
/// straddle the boundary need no extra read.
const READAHEAD_OVERLAP_BYTES: u64 = 1024 * 1024;

impl WindowReader {
    pub(crate) fn new(file: Rc<DmaFile>, end_bytes: u64, window_size_bytes: u64) -> Self {
        assert!(window_size_bytes >= BLOCK_SIZE_BYTES);
        WindowReader {
            file,
            end_bytes,
            window_size_bytes: align_up(window_size_bytes),
            window_position: 0,
            window: ReadBuffer::default(),
            readahead: false,
            prefetch: None,
        }
    }

    /// A reader that keeps the next window's read in flight (two reads at once).
    pub(crate) fn with_readahead(
        file: Rc<DmaFile>,
        end_bytes: u64,
        window_size_bytes: u64,
    ) -> Self {
        assert!(window_size_bytes > 2 * READAHEAD_OVERLAP_BYTES);
        WindowReader {
            readahead: true,
            ..Self::new(file, end_bytes, window_size_bytes)
        }
    }

    /// Returns the bytes `[position, position + size_bytes)`, reading a new window if the
    /// current one does not cover them.
    pub(crate) async fn bytes(
        &mut self,
        position: u64,
        size_bytes: usize,
    ) -> Result<&[u8], LogError> {
        assert!(size_bytes > 0);
        let end = position
            .checked_add(size_bytes as u64)
            .ok_or_else(|| LogError::Corrupt("read range overflows".into()))?;
        if end > self.end_bytes {
            return Err(LogError::Corrupt(format!(
                "read of [{position}, {end}) past the end {}",
                self.end_bytes
            )));
        }
        let window_end = self.window_position + self.window.len() as u64;
        if position < self.window_position || end > window_end {
            let prefetched = match self.prefetch.take() {
                Some((start, size, read)) if position >= start && end <= start + size => {
                    Some((start, read.await?))
                }
                _ => None, // A dropped task is cancelled.
            };
            let (start, window) = match prefetched {
                Some(found) => found,
                None => {
                    let start = align_down(position);
                    let needed = align_up(end) - start;
                    let available = align_up(self.end_bytes) - start;
                    let read_size = needed.max(self.window_size_bytes.min(available));
                    assert!(read_size >= needed && read_size.is_multiple_of(BLOCK_SIZE_BYTES));
                    (
                        start,
                        read_aligned(&self.file, start, read_size as usize).await?,
                    )
                }
            };
            self.window = window;
            self.window_position = start;
            if (self.window.len() as u64) < end - start {
                return Err(LogError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("short read at {start}: {} bytes", self.window.len()),
                )));
            }
            self.start_readahead();
        }
        let offset = (position - self.window_position) as usize;
        Ok(&self.window[offset..offset + size_bytes])
    }

    fn start_readahead(&mut self) {
        let window_end = self.window_position + self.window.len() as u64;
        if !self.readahead || window_end >= self.end_bytes {
            return;
        }
        let start = align_down(window_end - READAHEAD_OVERLAP_BYTES.min(window_end));
        let size = self.window_size_bytes.min(align_up(self.end_bytes) - start);
        let file = self.file.clone();
        let read =
            glommio::spawn_local(async move { read_aligned(&file, start, size as usize).await });
        self.prefetch = Some((start, size, read));
    }
}

/// Runs blocking filesystem metadata work (directory listing, small files) on glommio's
/// blocking thread pool so the shard's executor keeps running.
pub(crate) async fn blocking<R, F>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work).await
}

/// Replaces `dir/name` with `contents` atomically (write a temporary file, rename over). With
/// `durable`, the data and the rename are synced before returning.
pub(crate) async fn write_file_atomic(
    dir: &Path,
    name: &str,
    contents: Vec<u8>,
    durable: bool,
) -> Result<(), LogError> {
    let final_path = dir.join(name);
    let temporary_path = dir.join(format!("{name}.tmp"));
    let dir = dir.to_path_buf();
    blocking(move || -> io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary_path)?;
        file.write_all(&contents)?;
        if durable {
            file.sync_data()?;
        }
        drop(file);
        std::fs::rename(&temporary_path, &final_path)?;
        if durable {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(LogError::Io)
}

/// Reads a small file whole; `None` if it does not exist.
pub(crate) async fn read_file_optional(path: PathBuf) -> Result<Option<Vec<u8>>, LogError> {
    blocking(move || match std::fs::read(&path) {
        Ok(contents) => Ok(Some(contents)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(LogError::Io(error)),
    })
    .await
}

/// fsyncs a directory so entries created, renamed or removed in it survive a crash.
pub(crate) async fn sync_directory(dir: &Path) -> Result<(), LogError> {
    let dir = dir.to_path_buf();
    blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(LogError::Io)
}

/// Removes files, ignoring those already gone; returns how many were removed.
pub(crate) async fn remove_files(paths: Vec<PathBuf>) -> Result<usize, LogError> {
    blocking(move || -> io::Result<usize> {
        let mut removed = 0;
        for path in paths {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(removed)
    })
    .await
    .map_err(LogError::Io)
}
