//! The `spherepipe` binary: registers the stage kinds and hands over to the CLI.

fn main() -> std::process::ExitCode {
    let mut registry = spherepipe_stage::Registry::new();
    spherepipe_toy::register(&mut registry);
    spherepipe_cli::main_with(registry)
}
