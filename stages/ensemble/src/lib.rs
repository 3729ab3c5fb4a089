//! `ensemble`: the 3-patch ensemble of the paper's Appendix H. Each input is the feature table
//! `extract` wrote with one patch's model; rows must be the same faces in the same order. Each
//! patch's feature (face FC1 + mirror FC1) is optionally L2-normalised, then the patches are
//! concatenated keeping the table's layout — all patches' face halves, then all mirror
//! halves — so every evaluation protocol reads the result like a single model's.

#![warn(missing_docs)]

use anyhow::{bail, Context};
use spherepipe_face_table::features::{FeatureReader, FeatureWriter, Features};
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Stage, StageContext};
use std::path::PathBuf;

/// The `ensemble` stage kind.
pub struct Ensemble;

fn l2(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Concatenates feature tables (see the module doc). `names` label errors.
pub fn combine(parts: &[(String, Features)], normalize: bool) -> anyhow::Result<Features> {
    let Some((first_name, first)) = parts.first() else {
        bail!("no feature tables to combine");
    };
    for (name, f) in &parts[1..] {
        if f.len() != first.len() {
            bail!(
                "{name} has {} faces but {first_name} has {}: extract every patch from the same aligned set",
                f.len(),
                first.len()
            );
        }
        if let Some(i) = (0..f.len()).find(|&i| f.meta[i].source != first.meta[i].source) {
            bail!(
                "row {i} is {} in {name} but {} in {first_name}: extract every patch from the same aligned set",
                f.meta[i].source,
                first.meta[i].source
            );
        }
        if f.dim % 2 != 0 {
            bail!("{name}: features of {} values are not face + mirror", f.dim);
        }
    }
    let dim: usize = parts.iter().map(|p| p.1.dim).sum();
    let mut values = Vec::with_capacity(first.len() * dim);
    for i in 0..first.len() {
        let rows: Vec<(Vec<f32>, usize)> = parts
            .iter()
            .map(|(_, f)| {
                let r = f.row(i);
                let n = if normalize { l2(r).max(1e-12) } else { 1.0 };
                (r.iter().map(|x| x / n).collect(), f.dim / 2)
            })
            .collect();
        for (r, h) in &rows {
            values.extend_from_slice(&r[..*h]);
        }
        for (r, h) in &rows {
            values.extend_from_slice(&r[*h..]);
        }
    }
    Ok(Features {
        dim,
        meta: first.meta.clone(),
        values,
    })
}

impl Stage for Ensemble {
    fn kind(&self) -> &'static str {
        "ensemble"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "concatenate per-patch features (3-patch ensemble), optionally L2-normalising each"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::new(
            "normalize",
            ParamType::Bool,
            true,
            "L2-normalise each patch's feature before concatenating",
        )]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::many("features", "extract artifacts, one per patch, of the same faces")]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let dirs: Vec<PathBuf> = ctx.inputs.many("features").to_vec();
        if dirs.len() < 2 {
            bail!("an ensemble needs at least 2 feature tables, got {}", dirs.len());
        }
        // Read in lockstep, 4096 faces at a time: memory stays bounded for a million faces.
        let mut readers = Vec::new();
        for d in &dirs {
            let r = FeatureReader::open(&d.join("features.parquet"))
                .with_context(|| format!("bind `features` to extract stages ({})", d.display()))?;
            readers.push((d.display().to_string(), r));
        }
        let normalize = ctx.params.bool("normalize")?;
        let mut writer: Option<FeatureWriter> = None;
        let (mut faces, mut dim) = (0, 0);
        loop {
            ctx.cancel.check()?;
            let mut parts = Vec::new();
            for (name, r) in &mut readers {
                parts.push((name.clone(), r.next_rows(4096)?));
            }
            if parts.iter().all(|p| p.1.is_none()) {
                break;
            }
            if let Some((name, _)) = parts.iter().find(|p| p.1.is_none()) {
                bail!("{name} has fewer faces than the other tables ({faces}): extract every patch from the same aligned set");
            }
            let parts: Vec<(String, Features)> = parts.into_iter().map(|(n, f)| (n, f.unwrap_or_default())).collect();
            let out = combine(&parts, normalize).map_err(|e| anyhow::anyhow!("{e} (in the chunk after {faces} faces)"))?;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(FeatureWriter::create(&ctx.out_dir.join("features.parquet"), out.dim)?),
            };
            w.write(&out)?;
            faces += out.len();
            dim = out.dim;
        }
        let Some(w) = writer else {
            bail!("the feature tables are empty");
        };
        w.finish()?;
        let summary = serde_json::json!({
            "faces": faces,
            "dim": dim,
            "patches": dirs.len(),
            "layout": "face halves of every patch, then mirror halves",
            "normalize": normalize,
        });
        std::fs::write(ctx.out_dir.join("features.json"), serde_json::to_string_pretty(&summary)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spherepipe_face_table::features::FeatureMeta;

    fn table(sources: &[&str], dim: usize, values: Vec<f32>) -> Features {
        Features {
            dim,
            meta: sources
                .iter()
                .map(|s| FeatureMeta {
                    source: s.to_string(),
                    identity: "p".into(),
                    dataset: "lfw".into(),
                    video: None,
                })
                .collect(),
            values,
        }
    }

    #[test]
    fn halves_stay_together_and_each_patch_is_normalised() {
        // Patch A: face (3), mirror (4) -> norm 5. Patch B: face (1, 0), mirror (0, 0) -> norm 1.
        let a = table(&["x"], 2, vec![3.0, 4.0]);
        let b = table(&["x"], 4, vec![1.0, 0.0, 0.0, 0.0]);
        let c = combine(&[("a".into(), a.clone()), ("b".into(), b.clone())], true).unwrap();
        assert_eq!(c.dim, 6);
        assert_eq!(c.values, [0.6, 1.0, 0.0, 0.8, 0.0, 0.0]);
        let raw = combine(&[("a".into(), a), ("b".into(), b)], false).unwrap();
        assert_eq!(raw.values, [3.0, 1.0, 0.0, 4.0, 0.0, 0.0]);
    }

    #[test]
    fn mismatched_tables_are_named() {
        let a = table(&["x", "y"], 2, vec![0.0; 4]);
        let b = table(&["x", "z"], 2, vec![0.0; 4]);
        let e = combine(&[("a".into(), a.clone()), ("b".into(), b)], true).unwrap_err().to_string();
        assert!(e.contains("row 1 is z in b but y in a"), "{e}");
        let short = table(&["x"], 2, vec![0.0; 2]);
        assert!(combine(&[("a".into(), a), ("s".into(), short)], true)
            .unwrap_err()
            .to_string()
            .contains("s has 1 faces"));
    }
}
