//! A shard's request memory, and a frame's share of it reserved as the frame's bytes arrive.
//!
//! A frame's size prefix only says how much may come. Reserving it all before the body arrives
//! would let connections that declare frames and send them slowly (or never) hold the memory
//! every other client needs. So a frame reserves `request_memory_step_bytes` before its first
//! body bytes, then at most three times what has arrived ahead of it: a frame sent slowly holds
//! at most four times what it sent plus one step. Once read, the whole frame is reserved until
//! its handler is done (backpressure for large produce requests as before).
//!
//! Reserving in steps means a frame can hold memory while it waits for more. If every part-read
//! frame waited in the pool for its next step, frames holding the pool between them could wait
//! on each other forever. A part-read frame that cannot grow at once therefore waits for the
//! whole rest of it in a finishing reserve the size of one largest frame, outside the pool:
//! whatever holds the finishing reserve has all it needs to complete, so one frame always can.

use glommio::sync::Semaphore;
use std::rc::Rc;

/// Read-ahead over what has arrived, as a multiple of it.
const READ_AHEAD_FACTOR: usize = 3;

/// The request memory pools of one shard.
pub struct RequestMemory {
    /// `max_request_memory_per_shard_bytes`, for every frame.
    shared: Rc<Semaphore>,
    /// `small_request_memory_per_shard_bytes`, for frames up to `small_request_max_bytes`.
    small: Rc<Semaphore>,
    /// One largest frame (request or pre-authentication frame): part-read large frames that
    /// cannot grow in `shared` wait here for the rest of them.
    finishing: Rc<Semaphore>,
    /// One largest small frame: the same for part-read small frames.
    small_finishing: Rc<Semaphore>,
    small_request_max_bytes: usize,
    step_bytes: usize,
}

/// Free bytes of each pool, for the metrics.
pub struct FreeBytes {
    pub shared: u64,
    pub small: u64,
    pub finishing: u64,
    pub small_finishing: u64,
}

impl RequestMemory {
    pub fn new(config: &crate::config::BrokerConfig) -> RequestMemory {
        let largest_frame_bytes = config
            .max_request_size_bytes
            .max(config.sasl_max_receive_size_bytes);
        RequestMemory::with_sizes(
            config.max_request_memory_per_shard_bytes,
            config.small_request_memory_per_shard_bytes,
            largest_frame_bytes,
            config.small_request_max_bytes,
            config.request_memory_step_bytes,
        )
    }

    fn with_sizes(
        shared_bytes: usize,
        small_bytes: usize,
        largest_frame_bytes: usize,
        small_request_max_bytes: usize,
        step_bytes: usize,
    ) -> RequestMemory {
        let semaphore = |bytes: usize| Rc::new(Semaphore::new(bytes as u64));
        RequestMemory {
            shared: semaphore(shared_bytes),
            small: semaphore(small_bytes),
            finishing: semaphore(largest_frame_bytes),
            small_finishing: semaphore(small_request_max_bytes),
            small_request_max_bytes,
            step_bytes: step_bytes.max(1),
        }
    }

    pub fn free_bytes(&self) -> FreeBytes {
        FreeBytes {
            shared: self.shared.available(),
            small: self.small.available(),
            finishing: self.finishing.available(),
            small_finishing: self.small_finishing.available(),
        }
    }
}

/// Units taken from one semaphore, given back on drop.
struct Held {
    semaphore: Rc<Semaphore>,
    units: u64,
}

impl Held {
    fn new(semaphore: &Rc<Semaphore>) -> Held {
        Held {
            semaphore: semaphore.clone(),
            units: 0,
        }
    }

    fn try_take(&mut self, units: u64) -> bool {
        // `Err` only for a closed semaphore; these are never closed.
        let taken = self.semaphore.try_acquire(units).unwrap_or(false);
        if taken {
            self.units += units;
        }
        taken
    }

    async fn take(&mut self, units: u64) -> Result<(), MemoryClosed> {
        self.semaphore
            .acquire(units)
            .await
            .map_err(|_| MemoryClosed)?;
        self.units += units;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.units > 0 {
            self.semaphore.signal(self.units);
        }
    }
}

/// The shard's request memory was closed (it never is while the shard serves).
#[derive(Debug)]
pub struct MemoryClosed;

/// One frame's reservation: grows as the frame arrives, returned to the pools when dropped.
pub struct FrameMemory {
    frame_bytes: usize,
    small_frame: bool,
    step_bytes: usize,
    shared: Held,
    small: Held,
    finishing: Held,
}

impl FrameMemory {
    pub fn new(pools: &RequestMemory, frame_bytes: usize) -> FrameMemory {
        let small_frame = frame_bytes <= pools.small_request_max_bytes;
        FrameMemory {
            frame_bytes,
            small_frame,
            step_bytes: pools.step_bytes,
            shared: Held::new(&pools.shared),
            small: Held::new(&pools.small),
            finishing: Held::new(if small_frame {
                &pools.small_finishing
            } else {
                &pools.finishing
            }),
        }
    }

    /// Bytes reserved: the frame may be read up to here.
    pub fn reserved_bytes(&self) -> usize {
        (self.shared.units + self.small.units + self.finishing.units) as usize
    }

    /// How far the reservation should reach once `arrived` bytes of the frame are in.
    fn target_bytes(&self, arrived: usize) -> usize {
        let ahead = self
            .step_bytes
            .max(arrived.saturating_mul(READ_AHEAD_FACTOR));
        arrived.saturating_add(ahead).min(self.frame_bytes)
    }

    /// Grows the reservation for `arrived` bytes without waiting; false if the pools lack room.
    pub fn try_grow(&mut self, arrived: usize) -> bool {
        let reserved = self.reserved_bytes();
        let target = self.target_bytes(arrived);
        if target <= reserved {
            return true;
        }
        let units = (target - reserved) as u64;
        // Small frames take shared memory while it is free without a queue, then their own pool:
        // they never wait behind large frames.
        self.shared.try_take(units) || (self.small_frame && self.small.try_take(units))
    }

    /// Grows the reservation for `arrived` bytes, waiting for memory (after `try_grow` failed).
    /// A frame holding nothing waits in its pool for its first step; a part-read frame waits in
    /// the finishing reserve for all the rest of it, so part-read frames never wait on each
    /// other.
    pub async fn grow_waiting(&mut self, arrived: usize) -> Result<(), MemoryClosed> {
        let reserved = self.reserved_bytes();
        if reserved == 0 {
            let units = self.target_bytes(arrived) as u64;
            if self.small_frame {
                self.small.take(units).await
            } else {
                self.shared.take(units).await
            }
        } else {
            let rest = (self.frame_bytes - reserved) as u64;
            self.finishing.take(rest).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Duration;

    use crate::test_support::run_local as run;

    const KIB: usize = 1024;

    /// `work`'s output, or `None` if it has not finished within 5 s.
    async fn bounded<T>(work: impl Future<Output = T>) -> Option<T> {
        use futures::FutureExt;
        futures::select! {
            output = work.fuse() => Some(output),
            _ = glommio::timer::sleep(Duration::from_secs(5)).fuse() => None,
        }
    }

    fn pools(shared_bytes: usize, small_bytes: usize) -> RequestMemory {
        // Largest frame 1 MiB, small frames up to 64 KiB, steps of 4 KiB.
        RequestMemory::with_sizes(shared_bytes, small_bytes, 1024 * KIB, 64 * KIB, 4 * KIB)
    }

    #[test]
    fn reservation_follows_what_arrived_and_is_returned() {
        run(|| async {
            let pools = pools(4096 * KIB, 256 * KIB);
            let mut frame = FrameMemory::new(&pools, 1024 * KIB);
            assert!(frame.try_grow(0));
            assert_eq!(frame.reserved_bytes(), 4 * KIB, "one step before the body");
            assert!(frame.try_grow(4 * KIB));
            assert_eq!(
                frame.reserved_bytes(),
                16 * KIB,
                "three times what arrived ahead"
            );
            assert!(frame.try_grow(16 * KIB));
            assert_eq!(frame.reserved_bytes(), 64 * KIB);
            assert!(frame.try_grow(512 * KIB));
            assert_eq!(frame.reserved_bytes(), 1024 * KIB, "never past the frame");
            assert_eq!(pools.free_bytes().shared, 3072 * KIB as u64);
            assert_eq!(pools.free_bytes().small, 256 * KIB as u64, "a large frame");
            drop(frame);
            assert_eq!(pools.free_bytes().shared, 4096 * KIB as u64);
        });
    }

    #[test]
    fn small_frames_fall_back_to_their_pool_large_ones_do_not() {
        run(|| async {
            let pools = pools(1024 * KIB, 256 * KIB);
            let mut hog = FrameMemory::new(&pools, 1024 * KIB);
            assert!(hog.try_grow(1024 * KIB));
            assert_eq!(pools.free_bytes().shared, 0);
            let mut small = FrameMemory::new(&pools, 64 * KIB);
            assert!(small.try_grow(0));
            assert!(small.try_grow(4 * KIB));
            assert_eq!(small.reserved_bytes(), 16 * KIB);
            assert_eq!(pools.free_bytes().small, 240 * KIB as u64);
            let mut large = FrameMemory::new(&pools, 128 * KIB);
            assert!(!large.try_grow(0), "large frames only use the shared pool");
            assert_eq!(large.reserved_bytes(), 0);
            drop(small);
            assert_eq!(pools.free_bytes().small, 256 * KIB as u64);
        });
    }

    #[test]
    fn part_read_frames_that_fill_the_pool_all_complete() {
        run(|| async {
            // Four 1 MiB frames half reserved fill the 2 MiB pool; were each to wait in the pool
            // for its next step, none could ever complete.
            let pools = Rc::new(pools(2048 * KIB, 256 * KIB));
            let mut frames: Vec<FrameMemory> = (0..4)
                .map(|_| {
                    let mut frame = FrameMemory::new(&pools, 1024 * KIB);
                    assert!(frame.try_grow(128 * KIB));
                    assert_eq!(frame.reserved_bytes(), 512 * KIB);
                    frame
                })
                .collect();
            assert_eq!(pools.free_bytes().shared, 0);
            for frame in &mut frames {
                assert!(!frame.try_grow(512 * KIB));
            }
            // Each completes through the finishing reserve, and its handler returns it all.
            let mut done = 0;
            for mut frame in frames {
                let grown = bounded(frame.grow_waiting(512 * KIB)).await;
                assert!(grown.is_some(), "frame {done} waited forever");
                assert_eq!(frame.reserved_bytes(), 1024 * KIB);
                assert_eq!(pools.free_bytes().finishing, 512 * KIB as u64);
                // Its handler is done: everything comes back.
                drop(frame);
                done += 1;
            }
            assert_eq!(done, 4);
            let free = pools.free_bytes();
            assert_eq!(free.shared, 2048 * KIB as u64);
            assert_eq!(free.finishing, 1024 * KIB as u64);
        });
    }

    #[test]
    fn a_frame_holding_nothing_waits_in_its_pool() {
        run(|| async {
            let pools = Rc::new(pools(1024 * KIB, 64 * KIB));
            let mut hog = FrameMemory::new(&pools, 1024 * KIB);
            assert!(hog.try_grow(1024 * KIB));
            let mut small_hog = FrameMemory::new(&pools, 64 * KIB);
            assert!(small_hog.try_grow(64 * KIB));
            let waiter = glommio::spawn_local({
                let pools = pools.clone();
                async move {
                    let mut frame = FrameMemory::new(&pools, 64 * KIB);
                    assert!(!frame.try_grow(0));
                    frame.grow_waiting(0).await.expect("open");
                    frame.reserved_bytes()
                }
            })
            .detach();
            glommio::executor().yield_now().await;
            assert_eq!(
                pools.free_bytes().small_finishing,
                64 * KIB as u64,
                "not the finishing reserve"
            );
            drop(small_hog);
            assert_eq!(bounded(waiter).await, Some(Some(4 * KIB)));
            drop(hog);
        });
    }
}
