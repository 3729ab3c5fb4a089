//! The `spherepipe` binary: registers the stage kinds and hands over to the CLI.

fn main() -> std::process::ExitCode {
    spherepipe_cli::main_with(spherepipe_cli::default_registry())
}
