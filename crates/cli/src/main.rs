//! The `spherepipe` binary: registers the stage kinds and hands over to the CLI.

/// mimalloc keeps freed buffers for reuse; with the system allocator every training step maps
/// and faults in its tensors' pages afresh (about 9% of a SphereFace-4 step).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    spherepipe_cli::keep_freed_memory();
    spherepipe_cli::main_with(spherepipe_cli::default_registry())
}
