//! Zero-copy transfer of cold segment data to sockets: `SPLICE` file → pipe → socket on a side
//! io_uring ring, so the bytes go from the page cache to the socket without passing through user
//! space, and the shard's executor never blocks or spins.
//!
//! Why a side ring on a helper thread: glommio has no splice/sendfile, `sendfile` on the
//! executor thread blocks for the disk read and the whole transfer, and a yield loop on EAGAIN
//! starves the executor's timers (ARCHITECTURE.md, measured facts). Each shard gets one helper
//! thread, started on first use, owning an io_uring ring; it sleeps in `io_uring_enter` until an
//! operation completes. The executor hands it a transfer (a channel send and an eventfd write,
//! neither of which blocks) and awaits a oneshot that the helper completes. The kernel runs
//! the splices asynchronously (io-wq for the file side, internal poll for the socket side), so
//! one slow consumer does not hold up the others' transfers.
//!
//! The socket is `dup`ed for each transfer: if the connection goes away mid-transfer, the
//! helper keeps writing to the old socket, never to a reused descriptor.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;

use futures::channel::oneshot;
use io_uring::{opcode, types, IoUring};

/// A byte range of a segment file, to be sent to a socket as is.
#[derive(Debug, Clone)]
pub struct FileRegion {
    /// Opened without O_DIRECT: splice reads through the page cache.
    pub file: Arc<File>,
    pub position_bytes: u64,
    pub size_bytes: usize,
}

/// Ring size of the helper: transfers in flight at once per shard (one operation each), plus
/// the doorbell.
const RING_ENTRIES: u32 = 256;
const MAX_ACTIVE_TRANSFERS: usize = RING_ENTRIES as usize - 1;
/// Pipe capacity asked for (the default 64 KiB would mean many more operations per MiB).
const PIPE_SIZE_BYTES: i32 = 1024 * 1024;
const DOORBELL: u64 = u64::MAX;
/// Empty pipes kept for the next transfers (creating and sizing one costs three syscalls).
const PIPE_POOL_SIZE: usize = 16;

struct Job {
    file: Arc<File>,
    position_bytes: u64,
    size_bytes: usize,
    socket: OwnedFd,
    reply: oneshot::Sender<io::Result<()>>,
}

enum Message {
    Transfer(Job),
    Stop,
}

struct Engine {
    sender: mpsc::Sender<Message>,
    doorbell: OwnedFd,
}

impl Engine {
    fn start(shard_name: String) -> io::Result<Engine> {
        let ring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: eventfd returns a new descriptor or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let doorbell = unsafe { OwnedFd::from_raw_fd(raw) };
        let helper_doorbell = doorbell.try_clone()?;
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{shard_name}-splice"))
            .spawn(move || {
                if let Err(error) = run_helper(ring, receiver, helper_doorbell) {
                    tracing::error!(%error, "zero-copy helper stopped");
                }
            })?;
        Ok(Engine { sender, doorbell })
    }

    fn ring_doorbell(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd (never blocks: the counter
        // cannot reach its maximum with one increment per message).
        unsafe {
            libc::write(
                self.doorbell.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.sender.send(Message::Stop);
        self.ring_doorbell();
    }
}

thread_local! {
    /// This shard's helper, started on first use.
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
}

fn engine() -> io::Result<Rc<Engine>> {
    ENGINE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(engine) = slot.as_ref() {
            return Ok(engine.clone());
        }
        let name = std::thread::current().name().unwrap_or("shard").to_string();
        let engine = Rc::new(Engine::start(name)?);
        *slot = Some(engine.clone());
        Ok(engine)
    })
}

/// Sends `region` to the socket `socket_fd` without copying it through user space. Whatever
/// the caller wrote to the socket before must already be written (responses stay in order).
pub async fn send_file_region(region: &FileRegion, socket_fd: RawFd) -> io::Result<()> {
    if region.size_bytes == 0 {
        return Ok(());
    }
    let engine = engine()?;
    // SAFETY: dup of a descriptor the caller keeps open for the duration of this call.
    let raw = unsafe { libc::fcntl(socket_fd, libc::F_DUPFD_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let (reply, done) = oneshot::channel();
    engine
        .sender
        .send(Message::Transfer(Job {
            file: region.file.clone(),
            position_bytes: region.position_bytes,
            size_bytes: region.size_bytes,
            socket,
            reply,
        }))
        .map_err(|_| io::Error::other("zero-copy helper is gone"))?;
    engine.ring_doorbell();
    done.await
        .map_err(|_| io::Error::other("zero-copy helper dropped the transfer"))?
}

/// One transfer's progress.
struct Transfer {
    job: Job,
    /// File bytes not yet moved into the pipe.
    file_left_bytes: usize,
    next_position_bytes: u64,
    /// Bytes in the pipe not yet moved to the socket.
    in_pipe_bytes: usize,
    pipe_read: OwnedFd,
    pipe_write: OwnedFd,
    pipe_size_bytes: usize,
}

fn new_pipe() -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Best effort: the limit is /proc/sys/fs/pipe-max-size.
    // SAFETY: fcntl on a descriptor we own.
    let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE_BYTES) };
    let size = if size > 0 {
        size as usize
    } else {
        // SAFETY: as above.
        (unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }).max(4096) as usize
    };
    Ok((read, write, size))
}

fn run_helper(
    mut ring: IoUring,
    receiver: mpsc::Receiver<Message>,
    doorbell: OwnedFd,
) -> io::Result<()> {
    let mut doorbell_buffer = [0u8; 8];
    let mut transfers: HashMap<u64, Transfer> = HashMap::new();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut pipes: Vec<(OwnedFd, OwnedFd, usize)> = Vec::new();
    let mut next_id = 0u64;
    let mut arm_doorbell = true;
    loop {
        if arm_doorbell {
            let read = opcode::Read::new(
                types::Fd(doorbell.as_raw_fd()),
                doorbell_buffer.as_mut_ptr(),
                doorbell_buffer.len() as u32,
            )
            .build()
            .user_data(DOORBELL);
            push(&mut ring, read)?;
            arm_doorbell = false;
        }
        ring.submit_and_wait(1)?;
        let completions: Vec<(u64, i32)> = ring
            .completion()
            .map(|cqe| (cqe.user_data(), cqe.result()))
            .collect();
        for (user_data, result) in completions {
            if user_data == DOORBELL {
                arm_doorbell = true;
                loop {
                    match receiver.try_recv() {
                        Ok(Message::Transfer(job)) => waiting.push_back(job),
                        Ok(Message::Stop) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                        Err(mpsc::TryRecvError::Empty) => break,
                    }
                }
                continue;
            }
            let id = user_data >> 1;
            let Some(mut transfer) = transfers.remove(&id) else {
                continue;
            };
            let outcome = if result < 0 {
                Err(io::Error::from_raw_os_error(-result))
            } else if user_data & 1 == 0 {
                // File → pipe done.
                let moved = result as usize;
                if moved == 0 {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "segment file shorter than the region",
                    ))
                } else {
                    transfer.file_left_bytes -= moved;
                    transfer.next_position_bytes += moved as u64;
                    transfer.in_pipe_bytes += moved;
                    Ok(())
                }
            } else {
                // Pipe → socket done (maybe partly).
                let moved = result as usize;
                if moved == 0 {
                    Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed"))
                } else {
                    transfer.in_pipe_bytes -= moved;
                    Ok(())
                }
            };
            match outcome {
                Err(error) => {
                    let _ = transfer.job.reply.send(Err(error));
                }
                Ok(()) if transfer.in_pipe_bytes == 0 && transfer.file_left_bytes == 0 => {
                    let Transfer {
                        job,
                        pipe_read,
                        pipe_write,
                        pipe_size_bytes,
                        ..
                    } = transfer;
                    let _ = job.reply.send(Ok(()));
                    // Empty, so reusable (a failed transfer's pipe may hold bytes: dropped).
                    if pipes.len() < PIPE_POOL_SIZE {
                        pipes.push((pipe_read, pipe_write, pipe_size_bytes));
                    }
                }
                Ok(()) => {
                    push(&mut ring, next_operation(id, &transfer))?;
                    transfers.insert(id, transfer);
                }
            }
        }
        while transfers.len() < MAX_ACTIVE_TRANSFERS {
            let Some(job) = waiting.pop_front() else {
                break;
            };
            let pipe = match pipes.pop() {
                Some(pipe) => Ok(pipe),
                None => new_pipe(),
            };
            let (pipe_read, pipe_write, pipe_size_bytes) = match pipe {
                Ok(pipe) => pipe,
                Err(error) => {
                    let _ = job.reply.send(Err(error));
                    continue;
                }
            };
            next_id += 1;
            let transfer = Transfer {
                file_left_bytes: job.size_bytes,
                next_position_bytes: job.position_bytes,
                in_pipe_bytes: 0,
                job,
                pipe_read,
                pipe_write,
                pipe_size_bytes,
            };
            push(&mut ring, next_operation(next_id, &transfer))?;
            transfers.insert(next_id, transfer);
        }
    }
}

/// The transfer's next splice: drain the pipe to the socket first, else refill it.
fn next_operation(id: u64, transfer: &Transfer) -> io_uring::squeue::Entry {
    if transfer.in_pipe_bytes > 0 {
        opcode::Splice::new(
            types::Fd(transfer.pipe_read.as_raw_fd()),
            -1,
            types::Fd(transfer.job.socket.as_raw_fd()),
            -1,
            transfer.in_pipe_bytes as u32,
        )
        .flags(libc::SPLICE_F_MOVE)
        .build()
        .user_data(id << 1 | 1)
    } else {
        let len = transfer.file_left_bytes.min(transfer.pipe_size_bytes);
        opcode::Splice::new(
            types::Fd(transfer.job.file.as_raw_fd()),
            transfer.next_position_bytes as i64,
            types::Fd(transfer.pipe_write.as_raw_fd()),
            -1,
            len as u32,
        )
        .flags(libc::SPLICE_F_MOVE)
        .build()
        .user_data(id << 1)
    }
}

fn push(ring: &mut IoUring, entry: io_uring::squeue::Entry) -> io::Result<()> {
    // SAFETY: every buffer and descriptor an entry points at (the doorbell buffer, the
    // transfer's pipe, file and socket) lives until its completion is reaped.
    unsafe {
        if ring.submission().push(&entry).is_err() {
            ring.submit()?;
            ring.submission()
                .push(&entry)
                .map_err(|_| io::Error::other("side ring full"))?;
        }
    }
    Ok(())
}
