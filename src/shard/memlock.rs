//! Locked-memory limit: glommio registers `3 × io_memory` per executor with io_uring.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Extra locked memory for io_uring rings and the rest of the process.
const MEMLOCK_HEADROOM_BYTES: u64 = 16 * 1024 * 1024;

/// Raises RLIMIT_MEMLOCK to what the shards need; fails with the exact setting to change
/// when the process may not raise it.
pub fn ensure_memlock(shard_count: usize, io_memory_bytes: usize) -> anyhow::Result<()> {
    let needed_bytes = (shard_count as u64)
        .saturating_mul(3)
        .saturating_mul(io_memory_bytes as u64)
        .saturating_add(MEMLOCK_HEADROOM_BYTES);
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK)
        .map_err(|e| anyhow::anyhow!("cannot read RLIMIT_MEMLOCK: {e}"))?;
    if soft >= needed_bytes {
        return Ok(());
    }
    let unlimited = nix::sys::resource::RLIM_INFINITY;
    // Root may raise the hard limit too; try the most generous first.
    if setrlimit(Resource::RLIMIT_MEMLOCK, unlimited, unlimited).is_ok() {
        return Ok(());
    }
    if hard >= needed_bytes && setrlimit(Resource::RLIMIT_MEMLOCK, needed_bytes, hard).is_ok() {
        return Ok(());
    }
    if has_ipc_lock_capability() {
        // The kernel does not charge io_uring or mlock against the limit for this process.
        tracing::info!(
            limit_bytes = soft,
            needed_bytes,
            "RLIMIT_MEMLOCK is low but the process has CAP_IPC_LOCK; continuing"
        );
        return Ok(());
    }
    anyhow::bail!(
        "RLIMIT_MEMLOCK is {soft} bytes (hard {hard}) but {shard_count} shards need {needed_bytes} \
         bytes of locked memory; set `LimitMEMLOCK=infinity` in the systemd unit, or run \
         `ulimit -l unlimited` (or at least {} KiB) before starting, or lower --io-memory-bytes / --cores",
        needed_bytes.div_ceil(1024)
    )
}

/// CAP_IPC_LOCK's bit in the capability sets.
const CAP_IPC_LOCK_BIT: u32 = 14;

/// Whether the effective capability set holds CAP_IPC_LOCK (read from /proc, no extra crate).
fn has_ipc_lock_capability() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1u64 << CAP_IPC_LOCK_BIT) != 0)
}
