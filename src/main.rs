//! The `switchyard` binary: a thin shell over the library's CLI.

/// mimalloc instead of glibc malloc: the request path allocates small short-lived buffers on every
/// worker thread, and glibc's arena locks showed up as futex waits in profiles (benches/RESULTS.md).
///
/// The `system-alloc` feature keeps the system allocator, so that heap profilers that hook
/// malloc (heaptrack, valgrind) see every allocation (benches/RESULTS.md, idle memory).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
