/// Per-thread heaps (no contention between shards) and fast size classes for the mix of
/// request frames, batch buffers and 4 KiB-aligned DMA buffers the broker allocates.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(riptide::cli::main());
}
