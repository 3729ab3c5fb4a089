//! What the face benches share: a harness-less `main` that `cargo test` lists, and the
//! synthetic corpus preset chosen by `PRESET` (default `demo`).

/// `cargo test --benches` runs harness-less benches with `--list`: they should do nothing then.
pub fn listing_only() -> bool {
    std::env::args().any(|a| a == "--list")
}

/// The preset named by `PRESET` (default `demo`), with its name.
pub fn preset_from_env() -> anyhow::Result<(String, spherepipe_synthface::Preset)> {
    let name = std::env::var("PRESET").unwrap_or_else(|_| "demo".into());
    let preset = spherepipe_synthface::Preset::named(&name).ok_or_else(|| anyhow::anyhow!("unknown PRESET `{name}`"))?;
    Ok((name, preset))
}
