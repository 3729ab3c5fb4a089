//! `spherepipe show`, and the message for a stage name the pipeline lacks.

use crate::commands::*;
use crate::failure::Failure;
use crate::report;
use anyhow::Context;
use spherepipe_engine::{open_store, plan, records};
use spherepipe_pipeline::Pipeline;

/// The error for a stage name that names no expanded stage: for the base name of a matrix
/// stage, its expansions; otherwise the nearest name and the list.
pub(crate) fn no_such_stage(p: &Pipeline, stage: &str) -> Failure {
    let expansions: Vec<&str> = p.select(stage).into_iter().map(|i| p.nodes[i].name.as_str()).collect();
    if !expansions.is_empty() {
        return Failure::usage(format!(
            "`{stage}` is a matrix stage of {}: name one of its {} expansions\n  fix: use one of {}",
            p.file.display(),
            expansions.len(),
            expansions.join(", ")
        ));
    }
    let names: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
    Failure::usage(format!(
        "no stage `{stage}` in {}\n  fix: {}stages: {}",
        p.file.display(),
        spherepipe_stage::did_you_mean(stage, names.iter().copied()),
        names.join(", ")
    ))
}

pub(crate) fn show(p: &Pipeline, stage: &str, as_json: bool, store_url: Option<&str>) -> Result<u8, Failure> {
    let Some(i) = p.index_of(stage) else {
        return Err(no_such_stage(p, stage));
    };
    let store = with_shared_store(open_store(p)?, store_url.or(p.store.as_deref()))?;
    let st = plan(p, &store)?;
    let s = &st[i];
    let d = report::details(p, &store, s, i, &records::read_runs(&store))?;
    let node = &p.nodes[i];
    if as_json {
        println!("{}", serde_json::to_string_pretty(&d).context("encoding JSON")?);
        return Ok(0);
    }
    println!("stage        {} [{} v{}]", node.name, node.kind.kind(), node.kind.version());
    println!(
        "state        {}{}",
        s.state.as_str(),
        if s.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.reason())
        }
    );
    println!(
        "fingerprint  {}",
        s.fingerprint.as_deref().unwrap_or("(unknown until its inputs are built)")
    );
    let where_ = match (&d.artifact, &d.in_store) {
        (Some(d), _) => d.display().to_string(),
        (None, Some(key)) => format!("{key} (in the shared store only; `run` fetches it)"),
        (None, None) => "(none)".into(),
    };
    println!("artifact     {where_}");
    println!("params");
    for (k, v) in &node.params.0 {
        println!("  {k}: {v}");
    }
    println!("files");
    for f in &d.files {
        println!("  {:>12}  {}  {}", f.size, f.blake3.get(..16).unwrap_or(&f.blake3), f.path);
    }
    match &d.last_run {
        Some(r) => println!("last run     {} ({}, {:.2}s)", r.run_id, r.state.as_str(), r.wall_s),
        None => println!("last run     (none recorded)"),
    }
    for a in d.last_run.iter().flat_map(|r| &r.attempts) {
        println!(
            "  attempt {}  Slurm job {} asked mem {} time {}: {} ({})",
            a.attempt,
            a.job_id,
            a.mem.as_deref().unwrap_or("default"),
            a.time.as_deref().unwrap_or("default"),
            a.state,
            a.reason
        );
    }
    if let Some(l) = &d.lineage {
        let revision = l.made.revision.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        println!(
            "made         on {} by spherepipe {}{revision}, {} executor (spherepipe lineage shows the chain)",
            l.made.host, l.made.spherepipe, l.made.executor
        );
    }
    Ok(0)
}
