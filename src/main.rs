//! The `switchyard` binary: a thin shell over the library's CLI.

/// jemalloc instead of glibc malloc: the request path allocates small short-lived buffers on
/// every worker thread, and glibc's arena locks showed up as futex waits in profiles
/// (benches/RESULTS.md). jemalloc's background threads return freed memory to the OS on their own
/// (dirty pages decay in about 10 s), also while the process is idle: after 10,000 keep-alive
/// connections close, RSS is back near its start within 30 s, where mimalloc kept most of it
/// until the worker threads allocated again (benches/RESULTS.md, idle memory).
///
/// The `system-alloc` feature keeps the system allocator, so that heap profilers that hook
/// malloc (heaptrack, valgrind) see every allocation.
#[cfg(not(any(feature = "system-alloc", feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The `mimalloc` feature: mimalloc instead, to measure the two against each other.
#[cfg(all(feature = "mimalloc", not(feature = "system-alloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
