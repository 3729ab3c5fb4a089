//! `detect`: the way in for images that come without landmarks. MTCNN (Zhang et al., 2016) on
//! facenet-pytorch's published weights runs over every JPEG and PNG under a folder, at any
//! depth, and writes:
//!
//! - `samples.tsv`: one face per image (the largest, or the most central: `choose`) with its
//!   five points, in the samples layout `align` reads in place of a landmark list
//!   (`align: {inputs: {images: <the same folder>, samples: detect}}`). The class is the
//!   image's folder (a file at the top is its own class).
//! - `detections.parquet`: every face found, with box, score and points, for inspection.
//! - `report.json`: how many images were listed and had a face, and every image skipped
//!   with why (not decodable, no face at `min_face` and the thresholds).
//!
//! Each image is detected on its own, so the result is the same whatever the thread or part
//! count; parts are contiguous runs of the sorted file list.

#![warn(missing_docs)]

use anyhow::{bail, Context};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use spherepipe_face_datasets::{write_samples, Sample};
use spherepipe_face_detect::{DetectParams, Face};
use spherepipe_face_table::detections::{write_detections, DetectionRow};
use spherepipe_nn::mtcnn::MtcnnNets;
use spherepipe_stage::{Contract, InputSpec, ParamSpec, ParamType, Params, Part, Stage, StageContext};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `detect` stage kind.
pub struct Detect;

/// Images detected at once (in parallel) between cancellation checks.
const BATCH: usize = 64;

/// A file larger than this is not read (no photo needs it; align's decoder bounds the pixels).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// A part's results (inside part artifacts only).
const PART_RESULTS: &str = "part.json";

impl Stage for Detect {
    fn kind(&self) -> &'static str {
        "detect"
    }
    fn version(&self) -> &'static str {
        // With the CPU's vector level: burn-flex's sums (and so MTCNN's scores and boxes) run
        // in another order at another width.
        spherepipe_nn::cpu_version!("1")
    }
    fn doc(&self) -> &'static str {
        "MTCNN over a folder of photos: five landmarks per image for align (samples.tsv), every face (detections.parquet)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("dir", ParamType::Str, "", "under `images`: the folder to scan (empty: all of it)"),
            ParamSpec::new(
                "min_face",
                ParamType::int_range(12, 4096),
                20,
                "the smallest face side searched for, in pixels (the pyramid starts at 12 / min_face)",
            ),
            ParamSpec::new(
                "factor",
                ParamType::float_range(0.3, 0.95),
                0.709,
                "the pyramid's step between scales",
            ),
            ParamSpec::new(
                "thresholds",
                ParamType::list(ParamType::float_range(0.0, 1.0)),
                vec![0.6, 0.7, 0.7],
                "score thresholds of P-Net, R-Net and O-Net",
            ),
            ParamSpec::new(
                "choose",
                ParamType::Choice(&["largest", "central"]),
                "largest",
                "which face of an image goes to samples.tsv: the largest box, or the one nearest the centre",
            ),
        ]
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::one("images", "a folder of photos (a dataset, or a synth artifact)"),
            InputSpec::one(
                "weights",
                "a directory with facenet-pytorch's MTCNN weights: pnet.pt, rnet.pt, onet.pt",
            ),
        ]
    }
    fn validate(&self, p: &Params) -> Result<(), spherepipe_stage::InvalidParams> {
        Settings::from_params(p)?;
        Ok(())
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let job = Job::open(ctx)?;
        let results = job.detect(ctx, &job.files)?;
        job.finish(ctx, results)
    }
    fn splittable(&self) -> bool {
        true
    }
    fn run_part(&self, ctx: &StageContext<'_>, part: Part) -> anyhow::Result<()> {
        let job = Job::open(ctx)?;
        let results = job.detect(ctx, &job.files[part.range(job.files.len())])?;
        PartResults { results }.write(ctx.out_dir)
    }
    fn gather(&self, ctx: &StageContext<'_>, parts: &[PathBuf]) -> anyhow::Result<()> {
        let job = Job::open(ctx)?;
        let mut results = Vec::new();
        for dir in parts {
            let part = PartResults::read(dir)?;
            // Part artifacts may come from a shared store: an index past the faces is refused.
            if let Some(r) = part.results.iter().find(|r| r.chosen.is_some_and(|c| c >= r.faces.len())) {
                bail!(
                    "{}: `{}` chooses a face it does not list (a damaged part)",
                    dir.join(PART_RESULTS).display(),
                    r.source
                );
            }
            results.extend(part.results);
        }
        job.finish(ctx, results)
    }
}

/// Which face of an image is listed for `align`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choose {
    Largest,
    Central,
}

/// `detect`'s params, read once.
struct Settings {
    dir: String,
    mtcnn: DetectParams,
    choose: Choose,
}

impl Settings {
    fn from_params(p: &Params) -> Result<Settings, spherepipe_stage::InvalidParams> {
        let dir = p.str("dir")?.to_owned();
        if dir.split('/').any(|c| c == "..") || dir.starts_with('/') {
            return Err(format!("`dir: {dir}` must stay under `images` (no `..`, not absolute)").into());
        }
        let thresholds: Vec<f64> = p.get("thresholds")?;
        let [t0, t1, t2] = thresholds[..] else {
            return Err(format!("`thresholds` takes three numbers (P-, R-, O-Net), got {}", thresholds.len()).into());
        };
        let choose = if p.str("choose")? == "central" {
            Choose::Central
        } else {
            Choose::Largest
        };
        Ok(Settings {
            dir,
            mtcnn: DetectParams {
                min_face: p.i64("min_face")? as f32,
                factor: p.f64("factor")? as f32,
                thresholds: [t0 as f32, t1 as f32, t2 as f32],
            },
            choose,
        })
    }
}

/// What happened to one image: its faces (best score first) and which was chosen, or why it
/// has none. The contract between parts and the gather.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageResult {
    source: String,
    faces: Vec<Face>,
    chosen: Option<usize>,
    skipped: Option<String>,
}

/// The results of a part's images, in file order (`part.json`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartResults {
    results: Vec<ImageResult>,
}

impl Contract for PartResults {
    const FILE: &'static str = PART_RESULTS;
    const WRITER: &'static str = "detect";
    const BIND: &'static str = "gather a detect stage from its own parts";
}

/// The settings, the folder and its images, and the networks: what the whole run, each part
/// and the gather share.
struct Job {
    settings: Settings,
    root: PathBuf,
    files: Vec<String>,
    weights: PathBuf,
}

impl Job {
    fn open(ctx: &StageContext<'_>) -> anyhow::Result<Job> {
        let settings = Settings::from_params(ctx.params)?;
        let root = ctx.inputs.one("images")?.join(&settings.dir);
        if !root.is_dir() {
            bail!(
                "{} is not a folder: `images` (and `dir` under it) must name a folder of photos",
                root.display()
            );
        }
        let mut files = Vec::new();
        list_images(&root, "", &mut files).with_context(|| format!("listing the photos under {}", root.display()))?;
        files.sort();
        if files.is_empty() {
            bail!(
                "no .jpg, .jpeg or .png files under {}: point `images` (and `dir`) at a folder of photos",
                root.display()
            );
        }
        let weights = ctx.inputs.one("weights")?.to_path_buf();
        Ok(Job {
            settings,
            root,
            files,
            weights,
        })
    }

    /// Detects the faces of `files`, `BATCH` images at a time in parallel, in order.
    fn detect(&self, ctx: &StageContext<'_>, files: &[String]) -> anyhow::Result<Vec<ImageResult>> {
        let nets = MtcnnNets::load(&self.weights, &spherepipe_nn::Device::flex())?;
        ctx.progress.set_length(files.len() as u64);
        let mut out = Vec::with_capacity(files.len());
        for batch in files.chunks(BATCH) {
            ctx.cancel.check()?;
            let results: Vec<anyhow::Result<ImageResult>> = batch
                .par_iter()
                .map(|rel| {
                    let r = detect_one(&nets, &self.root, rel, &self.settings);
                    ctx.progress.inc(1);
                    r
                })
                .collect();
            for r in results {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// Writes `samples.tsv`, `detections.parquet` and `report.json`; an error when no image
    /// had a face.
    fn finish(&self, ctx: &StageContext<'_>, results: Vec<ImageResult>) -> anyhow::Result<()> {
        let samples = samples_of(&self.root, &results);
        if samples.is_empty() {
            bail!(
                "no face found in any of the {} images under {} (first: {}): lower `min_face` or `thresholds`, or check the folder",
                results.len(),
                self.root.display(),
                results.first().and_then(|r| r.skipped.clone()).unwrap_or_default()
            );
        }
        write_samples(&ctx.out_dir.join("samples.tsv"), &samples)?;
        write_detections(&ctx.out_dir.join("detections.parquet"), &detection_rows(&results))?;
        let skipped: Vec<_> = results
            .iter()
            .filter_map(|r| r.skipped.as_ref().map(|why| json!({"source": r.source, "why": why})))
            .collect();
        let s = &self.settings;
        let report = json!({
            "listed": results.len(),
            "with_face": samples.len(),
            "faces": results.iter().map(|r| r.faces.len()).sum::<usize>(),
            "classes": samples.iter().map(|s| s.label).max().map_or(0, |m| m + 1),
            "choose": if s.choose == Choose::Central { "central" } else { "largest" },
            "min_face": s.mtcnn.min_face,
            // As written (0.7, not the f32's 0.699999988...).
            "thresholds": s.mtcnn.thresholds.map(|v| v.to_string().parse::<f64>().unwrap_or(f64::from(v))),
            "skipped": skipped,
        });
        std::fs::write(ctx.out_dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        ctx.progress.message(&format!(
            "{} of {} images with a face; {} skipped (report.json)",
            samples.len(),
            results.len(),
            skipped.len()
        ));
        Ok(())
    }
}

/// The .jpg/.jpeg/.png files under `dir` (relative paths with `/`), at any depth. Symbolic
/// links are not followed, so a link cannot lead outside the folder or round in a loop.
fn list_images(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: cannot be written to samples.tsv faithfully
        };
        if name.contains('\t') || name.contains('\n') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_images(&entry.path(), &rel, out)?;
        } else if kind.is_file() && is_photo(&name) {
            out.push(rel);
        }
    }
    Ok(())
}

fn is_photo(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// One image: read, decoded within align's limits, detected; the face chosen, or why none.
fn detect_one(nets: &MtcnnNets, root: &Path, rel: &str, s: &Settings) -> anyhow::Result<ImageResult> {
    let skip = |why: String| ImageResult {
        source: rel.to_owned(),
        faces: Vec::new(),
        chosen: None,
        skipped: Some(why),
    };
    let path = root.join(rel);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_FILE_BYTES {
        return Ok(skip(format!("a file of {size} bytes, over the {MAX_FILE_BYTES}-byte limit")));
    }
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return Ok(skip(format!("cannot be read: {e}"))),
    };
    let img = match spherepipe_stage_align::decode_rgb(&bytes) {
        Ok(img) => img,
        Err(e) => return Ok(skip(format!("not a decodable image: {e:#}"))),
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let faces = spherepipe_face_detect::detect(nets, img.as_raw(), w, h, &s.mtcnn)
        .with_context(|| format!("detecting faces in {}", path.display()))?;
    if faces.is_empty() {
        let [t0, t1, t2] = s.mtcnn.thresholds;
        let why = if w.min(h) < s.mtcnn.min_face as usize {
            format!("{w} × {h} pixels: smaller than min_face ({})", s.mtcnn.min_face)
        } else {
            format!("no face found (min_face {}, thresholds {t0}/{t1}/{t2})", s.mtcnn.min_face)
        };
        return Ok(skip(why));
    }
    let chosen = choose(&faces, w, h, s.choose);
    Ok(ImageResult {
        source: rel.to_owned(),
        faces,
        chosen: Some(chosen),
        skipped: None,
    })
}

/// The face listed for `align`: the largest box, or the box whose centre is nearest the
/// image's; ties go to the better score (the earlier face).
fn choose(faces: &[Face], w: usize, h: usize, how: Choose) -> usize {
    let key = |f: &Face| match how {
        Choose::Largest => -f.area(),
        Choose::Central => {
            let (cx, cy) = ((f.bbox[0] + f.bbox[2]) / 2.0, (f.bbox[1] + f.bbox[3]) / 2.0);
            (cx - w as f32 / 2.0).powi(2) + (cy - h as f32 / 2.0).powi(2)
        }
    };
    let mut best = 0;
    for (i, f) in faces.iter().enumerate() {
        if key(f) < key(&faces[best]) {
            best = i;
        }
    }
    best
}

/// The class of an image: its folder relative to the scanned one (`alice` for
/// `alice/1.jpg`), or, for a file at the top, its own name without extension.
fn class_of(rel: &str) -> String {
    match rel.rsplit_once('/') {
        Some((folder, _)) => folder.to_owned(),
        None => Path::new(rel)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The chosen faces as samples for `align`, labels dense in the classes' sorted order.
fn samples_of(root: &Path, results: &[ImageResult]) -> Vec<Sample> {
    let classes: BTreeMap<String, u32> = {
        let mut names: Vec<String> = results.iter().filter(|r| r.chosen.is_some()).map(|r| class_of(&r.source)).collect();
        names.sort();
        names.dedup();
        names.into_iter().enumerate().map(|(i, n)| (n, i as u32)).collect()
    };
    results
        .iter()
        .filter_map(|r| {
            let face = &r.faces[r.chosen?];
            let identity = class_of(&r.source);
            Some(Sample {
                rel_path: r.source.clone(),
                path: root.join(&r.source),
                label: classes[&identity],
                name: identity.clone(),
                identity,
                video: None,
                landmarks: face.points.map(|[x, y]| [f64::from(x), f64::from(y)]),
            })
        })
        .collect()
}

fn detection_rows(results: &[ImageResult]) -> Vec<DetectionRow> {
    results
        .iter()
        .flat_map(|r| {
            r.faces.iter().enumerate().map(move |(k, f)| DetectionRow {
                source: r.source.clone(),
                face: k as i32,
                chosen: r.chosen == Some(k),
                bbox: f.bbox,
                score: f.score,
                points: std::array::from_fn(|i| f.points[i / 2][i % 2]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(bbox: [f32; 4], score: f32) -> Face {
        Face {
            bbox,
            score,
            points: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn the_largest_or_the_most_central_face_is_chosen() {
        // A 200 × 100 image: a big face at the left edge, a small one in the middle.
        let faces = [face([0.0, 0.0, 60.0, 60.0], 0.99), face([90.0, 40.0, 110.0, 60.0], 0.95)];
        assert_eq!(choose(&faces, 200, 100, Choose::Largest), 0);
        assert_eq!(choose(&faces, 200, 100, Choose::Central), 1);
        // Equal sizes: the better score (the first).
        let twins = [face([0.0, 0.0, 10.0, 10.0], 0.9), face([20.0, 0.0, 30.0, 10.0], 0.8)];
        assert_eq!(choose(&twins, 200, 100, Choose::Largest), 0);
    }

    #[test]
    fn classes_are_folders_and_top_level_files_their_own() {
        assert_eq!(class_of("alice/1.jpg"), "alice");
        assert_eq!(class_of("trip/2024/bob.png"), "trip/2024");
        assert_eq!(class_of("carol.JPG"), "carol");
    }

    #[test]
    fn labels_are_dense_in_sorted_class_order_and_skipped_images_have_none() {
        let ok = |source: &str| ImageResult {
            source: source.into(),
            faces: vec![face([0.0, 0.0, 10.0, 10.0], 0.9)],
            chosen: Some(0),
            skipped: None,
        };
        let none = ImageResult {
            source: "aaron/x.jpg".into(),
            faces: vec![],
            chosen: None,
            skipped: Some("no face".into()),
        };
        let samples = samples_of(Path::new("/r"), &[ok("zoe/1.jpg"), none, ok("bob/1.jpg"), ok("zoe/2.jpg")]);
        let labels: Vec<(String, u32)> = samples.iter().map(|s| (s.rel_path.clone(), s.label)).collect();
        assert_eq!(labels, [("zoe/1.jpg".into(), 1), ("bob/1.jpg".into(), 0), ("zoe/2.jpg".into(), 1)]);
    }

    #[test]
    fn listing_walks_folders_keeps_photos_and_ignores_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        for f in ["a/1.jpg", "a/b/2.PNG", "top.jpeg", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink("/", dir.path().join("a/escape")).unwrap();
        let mut files = Vec::new();
        list_images(dir.path(), "", &mut files).unwrap();
        files.sort();
        assert_eq!(files, ["a/1.jpg", "a/b/2.PNG", "top.jpeg"]);
    }
}
