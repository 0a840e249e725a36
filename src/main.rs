//! The `switchyard` binary: a thin shell over the library's CLI.

/// mimalloc instead of glibc malloc: the request path allocates small short-lived buffers on every
/// worker thread, and glibc's arena locks showed up as futex waits in profiles (benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
