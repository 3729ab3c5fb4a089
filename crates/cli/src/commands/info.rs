//! Commands that report on things rather than run a pipeline: `speed`, `report`, `metrics`,
//! `synth`, `kinds`.

use crate::failure::Failure;
use crate::{metrics, report, speed};
use spherepipe_engine::{open_store, plan};
use spherepipe_pipeline::Pipeline;
use spherepipe_stage::Registry;
use std::path::{Path, PathBuf};

/// `spherepipe speed`: reads the options as the train stage reads its params, then measures.
pub(crate) fn speed_command(
    net: &str,
    batch: usize,
    device: &str,
    devices: &str,
    slices: Option<usize>,
    steps: usize,
    json: bool,
) -> Result<u8, Failure> {
    let depth = match net.strip_prefix("sphere").and_then(|d| d.parse::<usize>().ok()) {
        Some(d @ (4 | 10 | 20 | 36 | 64)) => d,
        _ => {
            return Err(Failure::usage(format!(
                "--net {net}: use sphere4, sphere10, sphere20, sphere36 or sphere64"
            )))
        }
    };
    let spec: serde_json::Value = serde_yaml::from_str(devices).map_err(|e| Failure::usage(format!("--devices {devices}: {e}")))?;
    let devices = spherepipe_nn::devices::DeviceSpec::parse(&spec, device)
        .and_then(|s| s.resolve(device))
        .map_err(|e| Failure::usage(format!("--devices: {e:#}")))?;
    let slices = slices.unwrap_or(devices.len());
    if slices == 0 || !slices.is_multiple_of(devices.len()) || batch == 0 || !batch.is_multiple_of(slices) {
        return Err(Failure::usage(format!(
            "--batch {batch} in --slices {slices} over {} devices: the device count must divide the slices, and the slices the batch",
            devices.len()
        )));
    }
    let w = speed::Workload {
        depth,
        batch,
        slices,
        steps,
    };
    let r = speed::report(device, &devices, w).map_err(|e| Failure::failed(format!("{e:#}")))?;
    if json {
        println!("{}", serde_json::to_string(&r).map_err(|e| Failure::usage(e.to_string()))?);
    } else {
        println!(
            "SphereFace-{depth} on {} {device} device(s): training step, batch {batch} in {slices} slice(s): median {:.3}s = {:.1} images/s; extraction, {} images per device: median {:.3}s = {:.1} images/s; peak RSS {:.0} MB",
            r.devices,
            r.training.median_s,
            r.training.images_per_s,
            r.extraction_images,
            r.extraction.median_s,
            r.extraction.images_per_s,
            speed::peak_rss_mb()
        );
    }
    Ok(0)
}

/// `spherepipe report`: the pipeline's page, written to `out` or into the cache.
pub(crate) fn report_command(file: &Path, p: &Pipeline, history: bool, out: Option<PathBuf>) -> Result<u8, Failure> {
    let store = open_store(p)?;
    let out = out.unwrap_or_else(|| report::default_path(p, &store));
    let page = report::page(p, file, &store, history)?;
    report::write(&page, &out)?;
    println!("{}", out.display());
    Ok(0)
}

/// `spherepipe metrics`: the headline table of the pipeline's final stages.
pub(crate) fn metrics_table(file: &Path, p: &Pipeline, history: bool) -> Result<u8, Failure> {
    let store = open_store(p)?;
    let st = plan(p, &store)?;
    let (rows, missing) = metrics::rows(&store, &p.name, &st, &report::sinks(p), history);
    if rows.is_empty() {
        println!("no results yet: run `spherepipe run {}` first", file.display());
    } else {
        print!("{}", metrics::table(&rows, "STAGE"));
    }
    for (stage, why) in missing {
        println!("{stage}: no result for these params ({why})");
    }
    Ok(0)
}

/// `spherepipe synth`: writes a synthetic corpus in the public datasets' layouts.
pub(crate) fn synth(out: &Path, preset: &str, seed: u64) -> Result<u8, Failure> {
    let p = spherepipe_synthface::Preset::named(preset).ok_or_else(|| {
        Failure::usage(format!(
            "unknown preset `{preset}`\n  fix: use one of {}",
            spherepipe_synthface::Preset::NAMES.join(", ")
        ))
    })?;
    let n = std::sync::atomic::AtomicUsize::new(0);
    let t = std::time::Instant::now();
    let s = spherepipe_synthface::generate(out, &p, seed, &|| {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .map_err(|e| Failure::usage(format!("{e:#}")))?;
    println!(
        "wrote {} images to {} in {:.1}s: {} CASIA, {} LFW ({} pairs), {} YTF frames in {} videos ({} pairs), {} FaceScrub, {} distractors",
        n.into_inner(),
        out.display(),
        t.elapsed().as_secs_f64(),
        s.casia_images,
        s.lfw_images,
        s.lfw_pairs,
        s.ytf_frames,
        s.ytf_videos,
        s.ytf_pairs,
        s.facescrub_images,
        s.distractor_images
    );
    Ok(0)
}

/// `spherepipe kinds`: every stage kind with its inputs and params.
pub(crate) fn kinds(registry: &Registry) -> Result<u8, Failure> {
    for k in registry.iter() {
        println!("{} (version {}): {}", k.kind(), k.version(), k.doc());
        for i in k.inputs() {
            println!("  input  {:<16} {}{}", i.name, i.doc, if i.optional { " (optional)" } else { "" });
        }
        for p in k.params() {
            let default = p.default.map(|d| format!(" = {d}")).unwrap_or_else(|| " (required)".into());
            let setting = if p.execution {
                " (execution setting: not in the fingerprint)"
            } else {
                ""
            };
            println!("  param  {:<16} {}{default}: {}{setting}", p.name, p.ty, p.doc);
        }
        if k.splittable() {
            println!("  splits into `parts: N` (README: Scaling out)");
        }
    }
    Ok(0)
}
