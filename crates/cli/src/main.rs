//! The `spherepipe` binary: registers the stage kinds and hands over to the CLI.

/// mimalloc keeps freed buffers for reuse; with the system allocator every training step maps
/// and faults in its tensors' pages afresh (about 9% of a SphereFace-4 step).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, which the bindings do not name: in `mi_option_t`
/// (`include/mimalloc.h` of mimalloc v2 and v3 alike) it comes right before
/// `mi_option_use_numa_nodes`, which they do.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Freed memory stays mapped instead of going back to the OS after 10 ms: otherwise every
/// training step faults its convolution buffers in again and the kernel zeroes them, which
/// perf showed as 11% of a SphereFace-20 step (clear_page_erms). Costs about 80 MB of peak RSS.
fn keep_freed_memory() {
    // SAFETY: setting an option is allowed at any time; the value -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    spherepipe_cli::main_with(spherepipe_cli::default_registry())
}
