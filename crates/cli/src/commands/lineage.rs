//! `spherepipe lineage`: how an artifact was made, back to the datasets, from the lineages its
//! index entries carry (here, else in the shared store).

use crate::commands::{no_such_stage, with_shared_store};
use crate::failure::Failure;
use anyhow::Context;
use spherepipe_engine::lineage::{chain, fingerprints_of, Link, Origin};
use spherepipe_engine::{open_store, plan};
use spherepipe_pipeline::Pipeline;
use spherepipe_store::Store;
use std::path::PathBuf;

/// Where the chain starts.
pub(crate) enum LineageStart {
    /// A stage of a pipeline, as it resolves now.
    Stage {
        /// The pipeline.
        pipeline: Pipeline,
        /// The stage's name.
        stage: String,
    },
    /// An artifact of a cache, by content hash or directory.
    Artifact {
        /// The cache.
        cache: PathBuf,
        /// Its hash or directory.
        artifact: String,
    },
}

pub(crate) fn lineage(start: LineageStart, store_url: Option<&str>, as_json: bool) -> Result<u8, Failure> {
    let (store, fingerprint) = match start {
        LineageStart::Stage { pipeline: p, stage } => {
            let Some(i) = p.index_of(&stage) else {
                return Err(no_such_stage(&p, &stage));
            };
            let store = with_shared_store(open_store(&p)?, store_url.or(p.store.as_deref()))?;
            let status = plan(&p, &store)?;
            let Some(fp) = status[i].fingerprint.clone().filter(|_| status[i].artifact.is_some()) else {
                return Err(Failure::usage(format!(
                    "stage `{stage}` of {} has no artifact yet ({}), so nothing made one\n  fix: spherepipe run {}",
                    p.file.display(),
                    status[i].state.as_str(),
                    p.file.display()
                )));
            };
            (store, fp)
        }
        LineageStart::Artifact { cache, artifact } => artifact_start(&cache, &artifact, store_url)?,
    };
    let links = chain(&store, &fingerprint).context("reading the lineage")?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&links).context("encoding JSON")?);
    } else {
        for link in &links {
            print_link(link);
        }
    }
    Ok(if links.iter().all(|l| l.problems.is_empty()) { 0 } else { 1 })
}

/// The cache and the fingerprint under which it records `artifact`.
fn artifact_start(cache: &std::path::Path, artifact: &str, store_url: Option<&str>) -> Result<(Store, String), Failure> {
    if !spherepipe_store::CacheLayout::new(cache).index().is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a spherepipe cache (no index/ directory); pass --cache DIR",
            cache.display()
        )));
    }
    let store = with_shared_store(Store::open(cache).context("opening the cache")?, store_url)?;
    let fps = fingerprints_of(&store, artifact).context("reading the index")?;
    match fps.first() {
        Some(fp) => Ok((store, fp.clone())),
        None => Err(Failure::usage(format!(
            "no index entry in {} names artifact `{artifact}`\n  fix: pass the cache that holds it (--cache DIR), or ask by stage: spherepipe lineage PIPELINE STAGE [--store URL]",
            cache.display()
        ))),
    }
}

/// One link, as text: the stage and its artifact, how it was made, and where its inputs came from.
fn print_link(link: &Link) {
    let store_only = if link.in_store_only { " (in the shared store only)" } else { "" };
    let Some(l) = &link.lineage else {
        println!(
            "artifact {}{store_only}\n  fingerprint {}\n  (no lineage recorded: made by an older spherepipe, or a part of a split stage)\n",
            link.artifact, link.fingerprint
        );
        return;
    };
    let m = &l.made;
    println!(
        "{} [{} v{}] of pipeline `{}`{store_only}",
        l.stage, l.material.kind, l.material.version, l.pipeline
    );
    println!("  artifact     {}", link.artifact);
    println!("  fingerprint  {}", link.fingerprint);
    let revision = m.revision.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    let job = m.slurm_job.as_deref().map(|j| format!(", Slurm job {j}")).unwrap_or_default();
    println!(
        "  made         {:.1}s from {} on {} by spherepipe {}{revision}, {} executor{job}",
        m.ended_unix - m.started_unix,
        crate::report::utc_text(m.started_unix.max(0.0) as u64),
        m.host,
        m.spherepipe,
        m.executor
    );
    for (k, v) in &m.facts {
        println!("  {k:<12} {v}");
    }
    let params: Vec<String> = l.material.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  params       {}", params.join(" "));
    if let Some(seed) = l.material.seed {
        println!("  seed         {seed}");
    }
    for (name, origins) in &l.sources {
        for (k, o) in origins.iter().enumerate() {
            let hash = l.material.inputs.get(name).and_then(|h| h.get(k)).map_or("?", String::as_str);
            match o {
                Origin::Dataset { name: d, path } => println!("  input {name:<6} dataset `{d}` ({path}), content {hash}"),
                Origin::Stage { name: s, .. } => println!("  input {name:<6} `{s}`, artifact {hash}"),
            }
        }
    }
    for p in &link.problems {
        println!("  PROBLEM      {p}");
    }
    println!();
}
