//! `spherepipe export P STAGE --out FILE`: the one stage a deployment needs, run with what it
//! depends on (the pipeline cut down to it), its model written where the user asks.

use crate::args::ExportArgs;
use crate::commands::{cancel_on_ctrl_c, print_report};
use crate::failure::Failure;
use crate::progress;
use anyhow::Context;
use spherepipe_engine::{execute, open_store, RunOptions};
use spherepipe_onnx::{Batch, ExportOptions};
use spherepipe_stage::{Contract, Registry};
use spherepipe_stage_export::{Exported, Settings};
use std::path::Path;

/// Runs what STAGE needs, then writes its model to `--out`.
pub(crate) fn export_command(args: ExportArgs, registry: &Registry, quiet: bool) -> Result<u8, Failure> {
    let p = args.pipeline.load(registry)?;
    let file = args.pipeline.pipeline.display();
    let Some(i) = p.index_of(&args.stage) else {
        return Err(Failure::usage(format!(
            "{}: no such stage in {file} (a matrix expansion goes by its full name, e.g. train@patch=face)",
            args.stage
        )));
    };
    let kind = p.nodes[i].kind.kind();
    if kind != "export" && kind != "train" {
        return Err(Failure::usage(format!(
            "{} is of kind `{kind}`: name an `export` stage, or a `train` stage to export with --format/--opset/--batch/--preprocess",
            args.stage
        )));
    }
    let settings = settings_of(&args)?;
    let sub = p.up_to(i);
    let store = open_store(&sub)?;
    let opts = RunOptions {
        cancel: cancel_on_ctrl_c(),
        overrides: args.pipeline.set.clone(),
        ..RunOptions::default()
    };
    let reporter = progress::Reporter::new(sub.nodes.len(), quiet);
    let report = execute(&sub, &store, &opts, &reporter)?;
    reporter.finish();
    let outcome = report.outcomes.iter().find(|o| o.stage == args.stage);
    let (Some(hash), true) = (outcome.and_then(|o| o.artifact.clone()), report.ok()) else {
        print_report(&sub, &store, &report);
        return Ok(1);
    };
    let dir = store.artifact_dir(&hash);
    if let Some(parent) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let written = if kind == "export" {
        copy_export(&dir, &args.out)?
    } else {
        let fingerprint = outcome.and_then(|o| o.fingerprint.clone()).unwrap_or_default();
        let extra = [("spherepipe.train_fingerprint".to_owned(), fingerprint)];
        let out_dir = args.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        spherepipe_stage_export::export(&dir, None, &settings, &args.out, &extra)?
            .files
            .iter()
            .map(|f| out_dir.join(f).display().to_string())
            .collect()
    };
    println!("wrote {}", written.join(", "));
    Ok(0)
}

/// The flags, as the export stage's settings (for a train stage).
fn settings_of(args: &ExportArgs) -> Result<Settings, Failure> {
    let batch = Batch::parse(&args.batch)
        .ok_or_else(|| Failure::usage(format!("--batch {}: `dynamic` or a number of images (1 or more)", args.batch)))?;
    if !(13..=21).contains(&args.opset) {
        return Err(Failure::usage(format!("--opset {}: use 13 to 21 (17 is the default)", args.opset)));
    }
    Ok(Settings {
        onnx: args.format == "onnx",
        options: ExportOptions {
            opset: args.opset,
            batch,
            preprocess: args.preprocess,
            ..ExportOptions::default()
        },
    })
}

/// Copies an export artifact's model to `out`; an external-data file goes beside it under its
/// own name, which the model refers to.
fn copy_export(dir: &Path, out: &Path) -> anyhow::Result<Vec<String>> {
    let exported = Exported::read(dir)?;
    let out_dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut written = Vec::new();
    for (k, name) in exported.files.iter().enumerate() {
        // export.json may come from a shared store: only plain file names, read and written
        // beside the artifact and --out.
        if name.is_empty() || name.contains(['/', '\\']) || name == ".." || name == "." {
            anyhow::bail!(
                "{}: lists `{name}`, not a plain file name (a damaged artifact)",
                dir.join("export.json").display()
            );
        }
        let target = if k == 0 { out.to_path_buf() } else { out_dir.join(name) };
        std::fs::copy(dir.join(name), &target).with_context(|| format!("copying {name} to {}", target.display()))?;
        written.push(target.display().to_string());
    }
    Ok(written)
}
