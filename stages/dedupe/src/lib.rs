//! `dedupe`: the paper trains on CASIA-WebFace "after excluding the images of identities
//! appearing in testing sets". This stage removes every training identity whose normalised
//! name matches a test-set identity, optionally also training images that are perceptual-hash
//! near-duplicates of a test image, and re-indexes the remaining labels densely 0..N-1.

#![warn(missing_docs)]

mod phash;

pub use phash::{hamming, phash};

use anyhow::Context;
use rayon::prelude::*;
use serde_json::{json, Value};
use spherepipe_face_datasets::{normalize_name, read_casia_names, read_landmark_list, write_samples, Sample};
use spherepipe_stage::{InputSpec, ParamSpec, ParamType, Stage, StageContext};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The `dedupe` stage kind.
pub struct Dedupe;

impl Stage for Dedupe {
    fn kind(&self) -> &'static str {
        "dedupe"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn doc(&self) -> &'static str {
        "removes training identities found in the test sets; writes samples.tsv with dense labels"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                "list",
                ParamType::Str,
                "casia_landmark.txt",
                "training landmark list (path class x1 y1 … x5 y5), relative to `train`",
            ),
            ParamSpec::new("images", ParamType::Str, "casia", "training image root, relative to `train`"),
            ParamSpec::new(
                "names",
                ParamType::Str,
                "casia/names.txt",
                "`<id> <name>` file, relative to `train` (empty: folder names are the names)",
            ),
            ParamSpec::new(
                "test_dirs",
                ParamType::list(ParamType::Str),
                vec!["lfw", "ytf", "megaface/facescrub_images"],
                "folders under each `tests` input whose sub-folders are person names",
            ),
            ParamSpec::new(
                "phash",
                ParamType::Bool,
                false,
                "also drop training images within `phash_threshold` bits of a test image",
            ),
            ParamSpec::new(
                "phash_threshold",
                ParamType::int_range(0, 32),
                4,
                "Hamming distance (of 64 bits) that counts as a near-duplicate",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::one("train", "the training set root (CASIA-WebFace layout)"),
            InputSpec::many("tests", "test set roots"),
        ]
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let train = ctx.inputs.one("train")?;
        let image_root = train.join(ctx.params.str("images")?);
        let listing = read_landmark_list(&train.join(ctx.params.str("list")?), &image_root, true)?;
        let names_rel = ctx.params.str("names")?;
        let names = if names_rel.is_empty() {
            BTreeMap::new()
        } else {
            read_casia_names(&train.join(names_rel))?
        };
        let tests = TestSets::scan(ctx)?;
        let (kept, removed_ids) = drop_by_name(listing.samples, &names, &tests.names);
        let (kept, near) = if ctx.params.bool("phash")? {
            drop_near_duplicates(ctx, kept, &tests.images)?
        } else {
            (kept, Vec::new())
        };
        let (kept, dense, identities) = dense_labels(kept);
        write_samples(&ctx.out_dir.join("samples.tsv"), &kept)?;
        std::fs::write(ctx.out_dir.join("identities.tsv"), identities)?;
        let missing: Vec<String> = listing
            .missing
            .iter()
            .map(|p| p.strip_prefix(&image_root).unwrap_or(p).display().to_string())
            .collect();
        let report = json!({
            "images_kept": kept.len(),
            "identities_kept": dense.len(),
            "identities_removed": removed_ids.len(),
            "images_removed_by_name": removed_ids.values().map(|r| r.3).sum::<usize>(),
            "removed": removed_ids.iter().map(|(id, (name, m, set, n))| json!({"identity": id, "name": name, "matches": m, "in": set, "images": n})).collect::<Vec<_>>(),
            "near_duplicates": near,
            "listed_but_missing": missing,
            "test_identities": tests.names.len(),
        });
        std::fs::write(ctx.out_dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        ctx.progress
            .message(&format!("kept {} identities, removed {}", dense.len(), removed_ids.len()));
        Ok(())
    }
}

/// The identities of the test sets, and their images when near-duplicates are looked for.
struct TestSets {
    /// Normalised name -> (name as written, the test folder it was seen in).
    names: BTreeMap<String, (String, String)>,
    /// (image, its path relative to its test root, for the report)
    images: Vec<(PathBuf, String)>,
}

impl TestSets {
    /// Reads the identity folders under each test root's `test_dirs`.
    fn scan(ctx: &StageContext<'_>) -> anyhow::Result<TestSets> {
        let mut sets = TestSets {
            names: BTreeMap::new(),
            images: Vec::new(),
        };
        let dirs: Vec<String> = ctx.params.get("test_dirs")?;
        let with_images = ctx.params.bool("phash")?;
        for root in ctx.inputs.many("tests") {
            for d in &dirs {
                let dir = root.join(d);
                let rd =
                    std::fs::read_dir(&dir).with_context(|| format!("test folder {} (param test_dirs) cannot be read", dir.display()))?;
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    sets.names.entry(normalize_name(&name)).or_insert((name, d.clone()));
                    if with_images {
                        let mut found = Vec::new();
                        collect_images(&e.path(), &mut found);
                        sets.images.extend(found.into_iter().map(|p| {
                            let rel = p.strip_prefix(root).map(|r| r.display().to_string()).unwrap_or_default();
                            (p, rel)
                        }));
                    }
                }
            }
        }
        Ok(sets)
    }
}

/// A removed training identity: its name, the test name it matches, the test folder, and how
/// many of its images were dropped.
type Removed = (String, String, String, usize);

/// Drops every sample whose identity's normalised name is a test identity's.
fn drop_by_name(
    samples: Vec<Sample>,
    names: &BTreeMap<String, String>,
    test_names: &BTreeMap<String, (String, String)>,
) -> (Vec<Sample>, BTreeMap<String, Removed>) {
    let mut removed_ids: BTreeMap<String, Removed> = BTreeMap::new();
    let mut kept: Vec<Sample> = Vec::new();
    for mut s in samples {
        s.name = names.get(&s.identity).cloned().unwrap_or_else(|| s.identity.clone());
        if let Some((test_name, set)) = test_names.get(&normalize_name(&s.name)) {
            removed_ids
                .entry(s.identity.clone())
                .or_insert_with(|| (s.name.clone(), test_name.clone(), set.clone(), 0))
                .3 += 1;
            continue;
        }
        kept.push(s);
    }
    (kept, removed_ids)
}

/// Drops training images whose perceptual hash is within `phash_threshold` bits of a test
/// image's; returns the rest and a report line per dropped image.
fn drop_near_duplicates(
    ctx: &StageContext<'_>,
    kept: Vec<Sample>,
    test_images: &[(PathBuf, String)],
) -> anyhow::Result<(Vec<Sample>, Vec<Value>)> {
    let threshold = ctx.params.i64("phash_threshold")? as u32;
    ctx.progress.set_length((test_images.len() + kept.len()) as u64);
    let hash = |p: &Path| -> Option<u64> {
        let h = image::open(p).ok().map(|i| phash(&i.to_luma8()));
        ctx.progress.inc(1);
        h
    };
    let tests: Vec<(u64, &String)> = test_images.par_iter().filter_map(|(p, rel)| hash(p).map(|h| (h, rel))).collect();
    ctx.cancel.check()?;
    let flags: Vec<Option<(String, u32)>> = kept
        .par_iter()
        .map(|s| {
            let h = hash(&s.path)?;
            tests
                .iter()
                .map(|(t, p)| (hamming(h, *t), p))
                .filter(|(d, _)| *d <= threshold)
                .min_by_key(|(d, _)| *d)
                .map(|(d, p)| (p.to_string(), d))
        })
        .collect();
    ctx.cancel.check()?;
    let (mut keep, mut near) = (Vec::new(), Vec::new());
    for (s, f) in kept.into_iter().zip(flags) {
        match f {
            Some((test, d)) => near.push(json!({"image": s.rel_path, "identity": s.identity, "near": test, "distance": d})),
            None => keep.push(s),
        }
    }
    Ok((keep, near))
}

/// Relabels the kept samples 0..N-1 in order of their original labels; returns them, the
/// original -> dense map, and `identities.tsv`.
fn dense_labels(mut kept: Vec<Sample>) -> (Vec<Sample>, BTreeMap<u32, u32>, String) {
    let mut dense: BTreeMap<u32, u32> = BTreeMap::new();
    let order: Vec<u32> = kept.iter().map(|s| s.label).collect::<BTreeSet<_>>().into_iter().collect();
    for (i, l) in order.iter().enumerate() {
        dense.insert(*l, i as u32);
    }
    let mut identities = String::from("label\toriginal_label\tidentity\tname\timages\n");
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for s in &mut kept {
        s.label = dense[&s.label];
        *counts.entry(s.label).or_default() += 1;
    }
    for (orig, new) in &dense {
        if let Some(s) = kept.iter().find(|s| s.label == *new) {
            identities.push_str(&format!("{new}\t{orig}\t{}\t{}\t{}\n", s.identity, s.name, counts[new]));
        }
    }
    (kept, dense, identities)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                collect_images(&p, out);
            } else if p
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("png"))
            {
                out.push(p);
            }
        }
    }
}
