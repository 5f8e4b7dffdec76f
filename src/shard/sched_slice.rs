//! The scheduler slice of a shard thread (`shard_sched_slice_us`).
//!
//! A shard thread is busy for long stretches, and every fdatasync it issues through io_uring
//! runs on an io_uring worker thread pinned to the same core. Under EEVDF a woken thread that
//! finds the core busy waits until the running thread's slice is used up (1.4 ms by default
//! on two CPUs, up to a 4 ms tick), and an acknowledgement under the sync policy waits for
//! that twice (submission and completion). Asking for a short custom slice (Linux 6.12+;
//! inherited by the io_uring workers the shard starts later) bounds that wait. No privilege
//! is needed for a slice on the normal scheduling class.

/// `struct sched_attr` of `sched_setattr(2)` (version 1 layout, 56 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    /// For SCHED_OTHER: the requested slice in ns.
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

fn get_current_thread_attr() -> std::io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: the kernel writes at most `size` bytes into the struct; 0 is this thread.
    let result = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0u32,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr)
}

/// Asks the kernel for a `slice_us` slice for the calling thread, keeping its policy and nice
/// value, and returns the slice the kernel reports afterwards, in µs (0 when it has no custom
/// slices). Only threads of the normal scheduling class have a slice to change.
fn set_current_thread_slice(slice_us: u64) -> std::io::Result<u64> {
    let mut attr = get_current_thread_attr()?;
    if attr.sched_policy != libc::SCHED_OTHER as u32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("scheduling policy {} has no slice", attr.sched_policy),
        ));
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.sched_flags = 0;
    attr.sched_runtime = slice_us.saturating_mul(1000);
    // SAFETY: a valid, correctly sized `sched_attr`; 0 is this thread.
    let result =
        unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(get_current_thread_attr()?.sched_runtime / 1000)
}

/// Applies `shard_sched_slice_us` to the calling shard thread; 0 leaves the kernel default. A
/// kernel that refuses or ignores it is logged, never fatal: only latency depends on it.
pub fn apply_to_current_thread(shard_id: usize, slice_us: u64) {
    if slice_us == 0 {
        return;
    }
    match set_current_thread_slice(slice_us) {
        Ok(applied_us) if applied_us == slice_us => {
            tracing::debug!(shard = shard_id, slice_us, "shard scheduler slice set");
        }
        Ok(applied_us) => tracing::warn!(
            shard = shard_id,
            slice_us,
            applied_us,
            "the kernel did not apply shard_sched_slice_us (custom slices need Linux 6.12+)"
        ),
        Err(error) => tracing::warn!(
            shard = shard_id,
            slice_us,
            %error,
            "could not set shard_sched_slice_us"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_is_applied_to_the_calling_thread_and_inherited_by_its_threads() {
        // On its own thread: the slice stays with the thread that asked for it.
        std::thread::spawn(|| {
            let applied_us = set_current_thread_slice(250).expect("sched_setattr accepted");
            if applied_us == 0 {
                return; // A kernel without custom slices reports none.
            }
            assert_eq!(applied_us, 250);
            // Threads started afterwards (as io_uring starts its workers) inherit it.
            let child_us = std::thread::spawn(|| {
                get_current_thread_attr()
                    .expect("sched_getattr")
                    .sched_runtime
                    / 1000
            })
            .join()
            .unwrap();
            assert_eq!(child_us, 250);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn out_of_range_slices_are_rejected_by_the_config() {
        let mut config = crate::config::BrokerConfig::default();
        for (slice_us, ok) in [
            (0, true),
            (100, true),
            (100_000, true),
            (99, false),
            (100_001, false),
        ] {
            config.shard_sched_slice_us = slice_us;
            assert_eq!(config.validate().is_ok(), ok, "{slice_us}");
        }
    }
}
