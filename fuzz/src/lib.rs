//! Shared harness code for Riptide's fuzz targets.
//!
//! # The allocation guard
//!
//! Several decoders Riptide relies on size an allocation from a length read off the input before
//! checking that the input holds that much (kafka-protocol 0.18's `Array`/`CompactArray`
//! decoders call `Vec::with_capacity(count)`; its Snappy decompressor calls
//! `BytesMut::zeroed(declared_len)`; all its decompressors grow the output without a limit).
//! Under libFuzzer's `-malloc_limit_mb` each of those is reported as a crash on the first input
//! that reaches it, which stops the run and hides everything behind it. These are findings in
//! their own right (see README.md, "Findings") and have reproducers in `regressions/`.
//!
//! To keep fuzzing past them, every target runs its body under [`run`], and this crate installs
//! a global allocator that refuses any single Rust allocation larger than the cap (64 MiB by
//! default, `RIPTIDE_FUZZ_ALLOC_CAP_MB` to change it). A refused allocation goes through
//! `handle_alloc_error`, whose hook panics with an [`AllocRefused`] payload; [`run`] catches
//! that payload and counts it, and every other panic still aborts as libFuzzer expects.
//! `RIPTIDE_FUZZ_NO_ALLOC_GUARD=1` turns the guard off, which is how the reproducers in
//! `regressions/` are replayed against the raw behaviour.
//!
//! The first few refusals of a process are printed to stderr with a backtrace, so a run's log
//! names the allocation sites.
//!
//! A target may also register a panic already recorded as a finding ([`tolerate_panic`]) so
//! that one known bug does not end every run; the guard switch turns that off as well.

#![feature(alloc_error_hook)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// Largest single allocation served while the guard is on (`usize::MAX`: off).
static CAP_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Allocations refused so far in this process.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Refusals printed with a backtrace.
const REPORTED_WITH_BACKTRACE: u64 = 3;

struct CappedAlloc;

impl CappedAlloc {
    #[inline]
    fn allowed(size: usize) -> bool {
        size <= CAP_BYTES.load(Ordering::Relaxed)
    }
}

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::allowed(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::allowed(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// Panic payload of an allocation the guard refused.
#[derive(Debug, Clone, Copy)]
pub struct AllocRefused {
    pub size_bytes: usize,
}

static INIT: Once = Once::new();

/// Panics a target has recorded as findings and lets the run go on past: (source file
/// substring, message substring).
static TOLERATED: Mutex<Vec<(&'static str, &'static str)>> = Mutex::new(Vec::new());
/// Set by the panic hook when the panic in flight is a tolerated one.
static TOLERATED_IN_FLIGHT: AtomicBool = AtomicBool::new(false);
/// Tolerated panics so far in this process.
pub static TOLERATED_COUNT: AtomicU64 = AtomicU64::new(0);

/// Lets panics raised in a file whose path contains `file` with a message containing `message`
/// end the input quietly instead of aborting (counted; the first three are logged). Only for a
/// panic already recorded as a finding with a reproducer in `regressions/`, so the rest of the
/// target can still be fuzzed. `RIPTIDE_FUZZ_NO_ALLOC_GUARD=1` ignores these too.
pub fn tolerate_panic(file: &'static str, message: &'static str) {
    let mut tolerated = TOLERATED.lock().unwrap();
    if !tolerated.contains(&(file, message)) {
        tolerated.push((file, message));
    }
}

fn is_tolerated(info: &panic::PanicHookInfo<'_>) -> bool {
    let Some(location) = info.location() else {
        return false;
    };
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or_default();
    let Ok(tolerated) = TOLERATED.try_lock() else {
        return false;
    };
    tolerated
        .iter()
        .any(|(file, needle)| location.file().contains(file) && message.contains(needle))
}

/// Installs the guard (once per process). Called by [`run`].
pub fn init() {
    INIT.call_once(|| {
        if std::env::var_os("RIPTIDE_FUZZ_NO_ALLOC_GUARD").is_some() {
            eprintln!("riptide-fuzz: allocation guard and panic tolerance OFF (RIPTIDE_FUZZ_NO_ALLOC_GUARD)");
            TOLERATED.lock().unwrap().clear();
            return;
        }
        let cap_mb: usize = std::env::var("RIPTIDE_FUZZ_ALLOC_CAP_MB")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(64);
        let cap = cap_mb << 20;
        CAP_BYTES.store(cap, Ordering::Relaxed);
        eprintln!("riptide-fuzz: allocation guard ON, single allocations over {cap_mb} MiB are refused and counted");
        std::alloc::set_alloc_error_hook(alloc_error_hook);
        // libFuzzer's hook (installed before the first input) aborts on any panic: let the
        // refusal payload through to `run`, abort on everything else as before.
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload().is::<AllocRefused>() {
                return;
            }
            if is_tolerated(info) {
                let count = TOLERATED_COUNT.fetch_add(1, Ordering::Relaxed) + 1;
                if count <= REPORTED_WITH_BACKTRACE || count.is_power_of_two() {
                    eprintln!("riptide-fuzz: TOLERATED panic #{count}: {info}");
                }
                TOLERATED_IN_FLIGHT.store(true, Ordering::Relaxed);
                return;
            }
            previous(info);
        }));
    });
}

/// `handle_alloc_error`'s hook: a refusal of the guard panics (caught by [`run`]); a real
/// failure under the cap is reported and std aborts after the hook returns.
fn alloc_error_hook(layout: Layout) {
    if layout.size() > CAP_BYTES.load(Ordering::Relaxed) {
        let count = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
        if count <= REPORTED_WITH_BACKTRACE {
            eprintln!(
                "riptide-fuzz: REFUSED allocation #{count} of {} bytes; backtrace:\n{}",
                layout.size(),
                std::backtrace::Backtrace::force_capture()
            );
        } else if count.is_power_of_two() {
            eprintln!(
                "riptide-fuzz: REFUSED allocation #{count} of {} bytes",
                layout.size()
            );
        }
        panic::panic_any(AllocRefused {
            size_bytes: layout.size(),
        });
    }
    eprintln!("memory allocation of {} bytes failed", layout.size());
}

/// Runs one input's work: a refused allocation ends the input quietly, any other panic aborts.
pub fn run<F: FnOnce()>(work: F) {
    init();
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(work)) {
        if payload.is::<AllocRefused>() || TOLERATED_IN_FLIGHT.swap(false, Ordering::Relaxed) {
            return;
        }
        panic::resume_unwind(payload);
    }
}

/// Rewrites the CRC-32C of every complete v2 batch laid back to back at the start of `buf`, so
/// the fuzzer's mutations get past the checksum to the code behind it.
pub fn fix_batch_crcs(buf: &mut [u8]) {
    use riptide::protocol::record_batch::RecordBatchHeader;
    let mut position = 0usize;
    while let Ok(header) = RecordBatchHeader::parse(&buf[position..]) {
        let size = header.total_size_bytes();
        let Some(end) = position.checked_add(size).filter(|&end| end <= buf.len()) else {
            break;
        };
        let crc = crc32c::crc32c(&buf[position + 21..end]);
        buf[position + 17..position + 21].copy_from_slice(&crc.to_be_bytes());
        position = end;
    }
}

/// Splits `data` into at most `max` parts at each occurrence of `separator`.
pub fn split_parts<'a>(data: &'a [u8], separator: &[u8], max: usize) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest
            .windows(separator.len())
            .position(|window| window == separator)
        {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + separator.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}
