//! A synthetic face corpus in the on-disk layouts of the public datasets, so that the real
//! readers, the demo and the tests run on something shaped exactly like the real thing.
//!
//! ```text
//! OUT/
//!   casia/<7-digit id>/<3-digit>.jpg      CASIA-WebFace style, 250x250
//!   casia/names.txt                        "<7-digit id> <Name>" per line
//!   casia_landmark.txt                     "<id>/<nnn>.jpg \t class \t x1 y1 ... x5 y5" (integers)
//!   lfw/<Name>/<Name>_<nnnn>.jpg           LFW style, 250x250
//!   lfw_landmark.txt                       "<Name>/<Name>_<nnnn>.jpg \t x1 y1 ... x5 y5"
//!   lfw/pairs.txt                          LFW View 2: "10\tN", then per fold N matched + N mismatched
//!   ytf/<Name>/<video>/<frame>.jpg         YouTube Faces style, 320x240
//!   ytf_landmark.txt                       "<Name>/<video>/<frame>.jpg \t x1 y1 ... x5 y5"
//!   ytf/splits.txt                         "split number, first video, second video, is same, is physically the same"
//!   megaface/facescrub_images/<Name>/<Name>_<k>.jpg (+ .json sidecar)     probes
//!   megaface/megaface_images/<a>/<id>@N00/<photo>_<k>.jpg (+ .json)       distractors
//!   megaface/templatelists/facescrub_features_list.json, megaface_features_list.json_<size>_1
//!   synth.json                             what was generated, from which seed and preset
//! ```
//! Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth
//! corner (left/right as seen in the image), in pixels.

#![warn(missing_docs)]

mod face;
mod names;

pub use face::{render, Identity, Rendered, Variation};
pub use names::{name_for, Spelling};
pub use spherepipe_rng::Rng;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Sizes of the generated sets. `*_images` ranges are (min, max) per identity, drawn from a
/// long-tailed distribution: most identities near the minimum, a few near the maximum, as in
/// CASIA-WebFace.
#[derive(Debug, Clone, Serialize)]
pub struct Preset {
    /// The preset's name.
    pub name: &'static str,
    /// Training identities (CASIA-WebFace).
    pub casia_identities: usize,
    /// Images per training identity.
    pub casia_images: (usize, usize),
    /// LFW identities.
    pub lfw_identities: usize,
    /// Images per LFW identity.
    pub lfw_images: (usize, usize),
    /// N in pairs.txt: matched (and mismatched) pairs per fold.
    pub pairs_per_fold: usize,
    /// YouTube Faces identities.
    pub ytf_identities: usize,
    /// Videos per YTF identity.
    pub ytf_videos: (usize, usize),
    /// Frames per video.
    pub ytf_frames: (usize, usize),
    /// Matched (and mismatched) video pairs per split in splits.txt.
    pub ytf_pairs_per_split: usize,
    /// MegaFace probe identities (FaceScrub).
    pub facescrub_identities: usize,
    /// Images per FaceScrub identity.
    pub facescrub_images: (usize, usize),
    /// MegaFace distractor images.
    pub distractors: usize,
    /// Training identities whose names (spelt differently) also appear in a test set.
    pub shared_identities: usize,
    /// 0..1: how much pose, lighting, blur, noise and occlusion vary.
    pub difficulty: f64,
}

impl Preset {
    /// The presets by name, smallest first.
    pub const NAMES: [&'static str; 3] = ["tiny", "demo", "bench"];

    /// The preset called `name`.
    pub fn named(name: &str) -> Option<Preset> {
        let base = Preset {
            name: "demo",
            casia_identities: 40,
            casia_images: (10, 40),
            lfw_identities: 40,
            lfw_images: (2, 6),
            pairs_per_fold: 6,
            ytf_identities: 16,
            ytf_videos: (2, 3),
            ytf_frames: (4, 8),
            ytf_pairs_per_split: 6,
            facescrub_identities: 8,
            facescrub_images: (3, 6),
            distractors: 200,
            shared_identities: 6,
            difficulty: 0.8,
        };
        match name {
            "demo" => Some(base),
            "tiny" => Some(Preset {
                name: "tiny",
                casia_identities: 8,
                casia_images: (3, 8),
                lfw_identities: 20,
                lfw_images: (2, 3),
                pairs_per_fold: 1,
                ytf_identities: 10,
                ytf_videos: (2, 2),
                ytf_frames: (2, 3),
                ytf_pairs_per_split: 2,
                facescrub_identities: 3,
                facescrub_images: (2, 3),
                distractors: 12,
                shared_identities: 3,
                ..base
            }),
            "bench" => Some(Preset {
                name: "bench",
                casia_identities: 200,
                casia_images: (10, 60),
                lfw_identities: 100,
                lfw_images: (2, 8),
                pairs_per_fold: 20,
                ytf_identities: 40,
                ytf_videos: (2, 4),
                ytf_frames: (8, 16),
                ytf_pairs_per_split: 20,
                facescrub_identities: 20,
                facescrub_images: (4, 10),
                distractors: 2000,
                shared_identities: 10,
                ..base
            }),
            _ => None,
        }
    }
}

/// Per-field overrides of a preset (a `sizes:` mapping in a pipeline). Unknown keys are errors.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Overrides `casia_identities`.
    pub casia_identities: Option<usize>,
    /// Overrides `casia_images`.
    pub casia_images: Option<(usize, usize)>,
    /// Overrides `lfw_identities`.
    pub lfw_identities: Option<usize>,
    /// Overrides `lfw_images`.
    pub lfw_images: Option<(usize, usize)>,
    /// Overrides `pairs_per_fold`.
    pub pairs_per_fold: Option<usize>,
    /// Overrides `ytf_identities`.
    pub ytf_identities: Option<usize>,
    /// Overrides `ytf_videos`.
    pub ytf_videos: Option<(usize, usize)>,
    /// Overrides `ytf_frames`.
    pub ytf_frames: Option<(usize, usize)>,
    /// Overrides `ytf_pairs_per_split`.
    pub ytf_pairs_per_split: Option<usize>,
    /// Overrides `facescrub_identities`.
    pub facescrub_identities: Option<usize>,
    /// Overrides `facescrub_images`.
    pub facescrub_images: Option<(usize, usize)>,
    /// Overrides `distractors`.
    pub distractors: Option<usize>,
    /// Overrides `shared_identities`.
    pub shared_identities: Option<usize>,
}

impl Sizes {
    /// Applies the overrides and checks the ranges are ordered.
    pub fn apply(&self, p: &mut Preset) -> Result<()> {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { p.$f = v; } )* };
        }
        set!(
            casia_identities,
            casia_images,
            lfw_identities,
            lfw_images,
            pairs_per_fold,
            ytf_identities,
            ytf_videos,
            ytf_frames,
            ytf_pairs_per_split,
            facescrub_identities,
            facescrub_images,
            distractors,
            shared_identities
        );
        for (name, (lo, hi)) in [
            ("casia_images", p.casia_images),
            ("lfw_images", p.lfw_images),
            ("ytf_videos", p.ytf_videos),
            ("ytf_frames", p.ytf_frames),
            ("facescrub_images", p.facescrub_images),
        ] {
            if lo > hi || lo == 0 {
                bail!("sizes.{name}: [{lo}, {hi}] must be [min, max] with 1 <= min <= max");
            }
        }
        if p.shared_identities > p.casia_identities {
            bail!(
                "sizes.shared_identities ({}) exceeds casia_identities ({})",
                p.shared_identities,
                p.casia_identities
            );
        }
        Ok(())
    }
}

/// What a generation produced (also written to `synth.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The sizes used.
    pub preset: Preset,
    /// The seed.
    pub seed: u64,
    /// Training images written.
    pub casia_images: usize,
    /// LFW images written.
    pub lfw_images: usize,
    /// Pairs in pairs.txt.
    pub lfw_pairs: usize,
    /// YTF videos written.
    pub ytf_videos: usize,
    /// YTF frames written.
    pub ytf_frames: usize,
    /// Video pairs in splits.txt.
    pub ytf_pairs: usize,
    /// FaceScrub probe images written.
    pub facescrub_images: usize,
    /// MegaFace distractors written.
    pub distractor_images: usize,
    /// (CASIA spelling, test-set spelling, test set) of every shared identity.
    pub shared: Vec<(String, String, String)>,
}

/// One image to draw.
struct Job {
    rel: String,
    person: u64,
    variation: Variation,
    size: (usize, usize),
    zoom: f64,
    noise_seed: u64,
}

/// Long-tailed count in [lo, hi]: lo + (hi - lo) * u^3.
fn long_tail(r: &mut Rng, (lo, hi): (usize, usize)) -> usize {
    lo + ((hi - lo) as f64 * r.unit().powi(3)).round() as usize
}

fn fmt_marks(m: &[[f64; 2]; 5], integer: bool) -> String {
    m.iter()
        .flat_map(|p| p.iter())
        .map(|v| {
            if integer {
                format!("{}", v.round() as i64)
            } else {
                format!("{v:.2}")
            }
        })
        .collect::<Vec<_>>()
        .join("\t")
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes the whole corpus under `out` (which must not exist or be empty). `tick` is called
/// once per image written, from any thread.
pub fn generate(out: &Path, p: &Preset, seed: u64, tick: &(dyn Fn() + Sync)) -> Result<Summary> {
    if out.exists() && fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose a new directory", out.display());
    }
    if p.lfw_images.0 < 2 || p.lfw_identities < 10 || p.ytf_identities < 10 || p.ytf_videos.0 < 2 {
        bail!(
            "preset `{}` is too small: LFW and YTF need at least 10 identities (one per fold) with 2 images or videos each",
            p.name
        );
    }
    let mut r = Rng::derive(seed, &[0xC0]);
    let mut next_person = 0u64;
    let mut person = || {
        next_person += 1;
        next_person
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut summary = Summary {
        preset: p.clone(),
        seed,
        casia_images: 0,
        lfw_images: 0,
        lfw_pairs: 0,
        ytf_videos: 0,
        ytf_frames: 0,
        ytf_pairs: 0,
        facescrub_images: 0,
        distractor_images: 0,
        shared: Vec::new(),
    };
    let var = |tags: &[u64]| Variation::draw(&mut Rng::derive(seed, tags), p.difficulty);

    // CASIA-WebFace: the first `shared` training identities reappear in the test sets.
    let casia: Vec<u64> = (0..p.casia_identities).map(|_| person()).collect();
    let mut names_txt = String::new();
    let mut casia_marks: Vec<(String, usize, String)> = Vec::new();
    for (class, &pid) in casia.iter().enumerate() {
        let dir = format!("{:07}", 100 + class * 37);
        let shared = class < p.shared_identities;
        writeln!(
            names_txt,
            "{dir} {}",
            name_for(seed, pid, if shared { Spelling::Training } else { Spelling::Plain })
        )?;
        for k in 0..long_tail(&mut r, p.casia_images) {
            let rel = format!("{dir}/{:03}.jpg", k + 1);
            casia_marks.push((rel.clone(), class, String::new()));
            jobs.push(Job {
                rel: format!("casia/{rel}"),
                person: pid,
                variation: var(&[1, pid, k as u64]),
                size: (250, 250),
                zoom: 1.0,
                noise_seed: r.next_u64(),
            });
        }
    }
    summary.casia_images = casia_marks.len();
    write(&out.join("casia/names.txt"), &names_txt)?;

    // Test-set identities: shared ones round-robin over LFW, YTF and FaceScrub, the rest new.
    let mut lfw_people: Vec<u64> = Vec::new();
    let mut ytf_people: Vec<u64> = Vec::new();
    let mut fs_people: Vec<u64> = Vec::new();
    for (k, &pid) in casia.iter().take(p.shared_identities).enumerate() {
        let (set, list) = match k % 3 {
            0 => ("lfw", &mut lfw_people),
            1 => ("ytf", &mut ytf_people),
            _ => ("megaface", &mut fs_people),
        };
        list.push(pid);
        summary.shared.push((
            name_for(seed, pid, Spelling::Training),
            name_for(seed, pid, Spelling::Plain),
            set.into(),
        ));
    }
    while lfw_people.len() < p.lfw_identities {
        lfw_people.push(person());
    }
    while ytf_people.len() < p.ytf_identities {
        ytf_people.push(person());
    }
    while fs_people.len() < p.facescrub_identities {
        fs_people.push(person());
    }

    // LFW with pairs.txt (folds are identity-disjoint, as in View 2).
    let mut lfw_counts = Vec::new();
    let mut lfw_marks_rel = Vec::new();
    for &pid in &lfw_people {
        let name = name_for(seed, pid, Spelling::Plain);
        let n = long_tail(&mut r, p.lfw_images);
        for k in 1..=n {
            let rel = format!("{name}/{name}_{k:04}.jpg");
            lfw_marks_rel.push(rel.clone());
            jobs.push(Job {
                rel: format!("lfw/{rel}"),
                person: pid,
                variation: var(&[2, pid, k as u64]),
                size: (250, 250),
                zoom: 1.0,
                noise_seed: r.next_u64(),
            });
        }
        lfw_counts.push((name, n));
    }
    summary.lfw_images = lfw_marks_rel.len();
    let mut pairs = format!("10\t{}\n", p.pairs_per_fold);
    for fold in 0..10 {
        let members: Vec<&(String, usize)> = lfw_counts
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 10 == fold)
            .map(|(_, x)| x)
            .collect();
        for _ in 0..p.pairs_per_fold {
            let (name, n) = r.pick(&members);
            let i = r.int(1, *n);
            let j = loop {
                let j = r.int(1, *n);
                if j != i {
                    break j;
                }
            };
            writeln!(pairs, "{name}\t{}\t{}", i.min(j), i.max(j))?;
        }
        for _ in 0..p.pairs_per_fold {
            let a = r.int(0, members.len() - 1);
            let b = (a + r.int(1, members.len() - 1)) % members.len();
            let ((na, ca), (nb, cb)) = (members[a], members[b]);
            writeln!(pairs, "{na}\t{}\t{nb}\t{}", r.int(1, *ca), r.int(1, *cb))?;
        }
    }
    summary.lfw_pairs = 20 * p.pairs_per_fold;
    write(&out.join("lfw/pairs.txt"), &pairs)?;

    // YouTube Faces: frames of one video drift smoothly between two variations.
    let mut videos: Vec<(String, usize)> = Vec::new();
    let mut ytf_rel = Vec::new();
    for &pid in &ytf_people {
        let name = name_for(seed, pid, Spelling::Plain);
        for v in 0..r.int(p.ytf_videos.0, p.ytf_videos.1) {
            let (a, b) = (var(&[3, pid, v as u64, 0]), var(&[3, pid, v as u64, 1]));
            let frames = r.int(p.ytf_frames.0, p.ytf_frames.1);
            for f in 0..frames {
                let t = if frames > 1 { f as f64 / (frames - 1) as f64 } else { 0.0 };
                let rel = format!("{name}/{v}/{}.jpg", 100 + f * 3);
                ytf_rel.push(rel.clone());
                jobs.push(Job {
                    rel: format!("ytf/{rel}"),
                    person: pid,
                    variation: blend(&a, &b, t),
                    size: (320, 240),
                    zoom: 0.8,
                    noise_seed: r.next_u64(),
                });
            }
            videos.push((name.clone(), v));
        }
    }
    summary.ytf_videos = videos.len();
    summary.ytf_frames = ytf_rel.len();
    let mut splits = String::from("split number, first video, second video, is same, is physically the same\n");
    for split in 1..=10 {
        // Same-person pairs first, then different-person pairs, from this split's people.
        let people: Vec<usize> = (0..ytf_people.len()).filter(|i| i % 10 == split - 1).collect();
        let vids_of = |i: usize| -> Vec<&(String, usize)> {
            let name = name_for(seed, ytf_people[i], Spelling::Plain);
            videos.iter().filter(|(n, _)| *n == name).collect()
        };
        for k in 0..p.ytf_pairs_per_split {
            let same = k < p.ytf_pairs_per_split / 2;
            let i = *r.pick(&people);
            let vi = vids_of(i);
            let (a, b) = if same {
                let x = r.int(0, vi.len() - 1);
                (vi[x], vi[(x + r.int(1, vi.len() - 1)) % vi.len()])
            } else {
                let j = if people.len() > 1 {
                    people[(people.iter().position(|&q| q == i).unwrap_or(0) + r.int(1, people.len() - 1)) % people.len()]
                } else {
                    (i + 1) % ytf_people.len()
                };
                let vj = vids_of(j);
                (*r.pick(&vi), *r.pick(&vj))
            };
            let s = u8::from(same);
            writeln!(splits, "{split}, {}/{}, {}/{}, {s}, {s}", a.0, a.1, b.0, b.1)?;
        }
    }
    summary.ytf_pairs = 10 * p.ytf_pairs_per_split;
    write(&out.join("ytf/splits.txt"), &splits)?;

    // MegaFace: FaceScrub probes and single-image distractor identities.
    let mut fs_ids = Vec::new();
    let mut fs_paths = Vec::new();
    for &pid in &fs_people {
        let name = name_for(seed, pid, Spelling::Plain);
        for k in 0..long_tail(&mut r, p.facescrub_images) {
            let rel = format!("facescrub_images/{name}/{name}_{}.jpg", 1000 + k * 7);
            fs_ids.push(name.clone());
            fs_paths.push(rel.clone());
            jobs.push(Job {
                rel: format!("megaface/{rel}"),
                person: pid,
                variation: var(&[4, pid, k as u64]),
                size: (300, 300),
                zoom: 1.1,
                noise_seed: r.next_u64(),
            });
        }
    }
    summary.facescrub_images = fs_paths.len();
    let mut distractor_paths = Vec::new();
    for d in 0..p.distractors {
        let pid = person();
        let rel = format!("megaface_images/{}/{:08}@N00/{}_{}.jpg", d % 10, 1000 + d, 10_000 + d * 13, 1);
        distractor_paths.push(rel.clone());
        jobs.push(Job {
            rel: format!("megaface/{rel}"),
            person: pid,
            variation: var(&[5, pid]),
            size: (300, 300),
            zoom: 1.1,
            noise_seed: r.next_u64(),
        });
    }
    summary.distractor_images = distractor_paths.len();
    let tl = out.join("megaface/templatelists");
    write(
        &tl.join("facescrub_features_list.json"),
        &serde_json::to_string_pretty(&serde_json::json!({"id": fs_ids, "path": fs_paths}))?,
    )?;
    let mut size = 10;
    while size <= p.distractors.min(1_000_000) {
        write(
            &tl.join(format!("megaface_features_list.json_{size}_1")),
            &serde_json::to_string_pretty(&serde_json::json!({"path": distractor_paths[..size]}))?,
        )?;
        size *= 10;
    }

    // Render everything in parallel; each job carries its own seeds.
    let marks: Vec<(String, [[f64; 2]; 5])> = jobs
        .par_iter()
        .map(|j| -> Result<(String, [[f64; 2]; 5])> {
            let img = render(&Identity::new(seed ^ j.person.wrapping_mul(0xA24B_AED4_963E_E407)), &j.variation, j.size.0, j.size.1, j.zoom, j.noise_seed);
            let path = out.join(&j.rel);
            if let Some(d) = path.parent() {
                fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92).encode(&img.rgb, img.width as u32, img.height as u32, image::ExtendedColorType::Rgb8)?;
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            if j.rel.starts_with("megaface/") {
                let m = img.landmarks;
                let xs = m.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
                let ys = m.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min);
                let side = (m[1][0] - m[0][0]).abs().max(10.0) * 2.6;
                let sidecar = serde_json::json!({
                    "bounding_box": {"x": xs - side * 0.3, "y": ys - side * 0.35, "width": side, "height": side * 1.2},
                    "landmarks": (0..5).map(|k| (k.to_string(), serde_json::json!({"x": m[k][0], "y": m[k][1]}))).collect::<serde_json::Map<_, _>>(),
                });
                fs::write(path.with_extension("jpg.json"), serde_json::to_string_pretty(&sidecar)?)?;
            }
            tick();
            Ok((j.rel.clone(), img.landmarks))
        })
        .collect::<Result<_>>()?;
    let lookup: std::collections::HashMap<&str, &[[f64; 2]; 5]> = marks.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let get = |rel: &str| {
        lookup
            .get(rel)
            .copied()
            .with_context(|| format!("internal: no landmarks for {rel}"))
    };
    let mut casia_txt = String::new();
    for (rel, class, _) in &casia_marks {
        writeln!(casia_txt, "{rel}\t{class}\t{}", fmt_marks(get(&format!("casia/{rel}"))?, true))?;
    }
    write(&out.join("casia_landmark.txt"), &casia_txt)?;
    let mut lfw_txt = String::new();
    for rel in &lfw_marks_rel {
        writeln!(lfw_txt, "{rel}\t{}", fmt_marks(get(&format!("lfw/{rel}"))?, true))?;
    }
    write(&out.join("lfw_landmark.txt"), &lfw_txt)?;
    let mut ytf_txt = String::new();
    for rel in &ytf_rel {
        writeln!(ytf_txt, "{rel}\t{}", fmt_marks(get(&format!("ytf/{rel}"))?, false))?;
    }
    write(&out.join("ytf_landmark.txt"), &ytf_txt)?;
    write(&out.join("synth.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}

/// A frame between two variations (pose and lighting interpolated; the rest from `a`).
fn blend(a: &Variation, b: &Variation, t: f64) -> Variation {
    let l = |x: f64, y: f64| x + (y - x) * t;
    Variation {
        angle: l(a.angle, b.angle),
        scale: l(a.scale, b.scale),
        shift: [l(a.shift[0], b.shift[0]), l(a.shift[1], b.shift[1])],
        yaw: l(a.yaw, b.yaw),
        brightness: l(a.brightness, b.brightness),
        light: [l(a.light[0], b.light[0]), l(a.light[1], b.light[1])],
        smile: l(a.smile, b.smile),
        ..a.clone()
    }
}

/// Every file under `dir`, relative, sorted (for tests and reports).
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else if let Ok(r) = p.strip_prefix(base) {
                    out.push(r.to_path_buf());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_writes_the_same_corpus_and_another_seed_another() {
        let d = tempfile::tempdir().unwrap();
        let p = Preset::named("tiny").unwrap();
        let read_all = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            list_files(dir)
                .into_iter()
                .map(|f| (f.clone(), fs::read(dir.join(&f)).unwrap()))
                .collect()
        };
        generate(&d.path().join("a"), &p, 3, &|| {}).unwrap();
        generate(&d.path().join("b"), &p, 3, &|| {}).unwrap();
        generate(&d.path().join("c"), &p, 4, &|| {}).unwrap();
        let (a, b, c) = (
            read_all(&d.path().join("a")),
            read_all(&d.path().join("b")),
            read_all(&d.path().join("c")),
        );
        assert!(a.len() > 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Every listed CASIA image exists and the class ids are 0..identities-1.
        let list = fs::read_to_string(d.path().join("a/casia_landmark.txt")).unwrap();
        let classes: std::collections::BTreeSet<usize> = list.lines().map(|l| l.split('\t').nth(1).unwrap().parse().unwrap()).collect();
        assert_eq!(classes, (0..p.casia_identities).collect());
        assert!(generate(&d.path().join("a"), &p, 3, &|| {})
            .unwrap_err()
            .to_string()
            .contains("not empty"));
    }
}
