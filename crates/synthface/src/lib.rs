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

mod balanced;
mod face;
mod names;
mod raster;
mod scene;

pub use face::{render, Identity, Rendered, Variation};
pub use names::{name_for, Spelling};
pub use spherepipe_rng::Rng;

use anyhow::{bail, Context, Result};
use balanced::{draw_fold, Member};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
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
    /// 0..1: how much pose, lighting, blur, noise and occlusion vary (above 1: more still).
    pub difficulty: f64,
    /// What makes the `hard` presets hard beyond `difficulty`; absent from the others, whose
    /// corpora (and `synth.json`) stay byte for byte what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard: Option<Hard>,
}

/// The `hard` presets' extra variation: look-alike families, large head turns, ageing
/// between one person's images, and heavy blur (low-resolution sources).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Hard {
    /// People come in families of this many, ten ids apart, so a family stays inside one
    /// LFW fold and one YTF split, where mismatched pairs are drawn.
    pub family: u64,
    /// Chance that a family member is a look-alike of its founder.
    pub lookalikes: f64,
    /// How close a look-alike is to the founder (see `Identity::relative_of`).
    pub closeness: f64,
    /// One person's images span up to this many years (`Identity::aged`, per image).
    pub age_years: f64,
    /// Standard deviation of the head turn (yaw; 1 is a profile), and its limit.
    pub yaw_sd: f64,
    /// The largest head turn (0.8 is about 60 degrees).
    pub max_yaw: f64,
    /// Chance of a heavy blur (radius 2 to 3.5 px), as from a low-resolution source.
    pub low_res: f64,
    /// Share of an LFW fold's (or YTF split's) different-person pairs that are two members
    /// of one family, the same in every fold (`balanced`).
    pub family_pairs: f64,
}

impl Hard {
    /// The family founder of person `pid` (itself, for a founder).
    pub fn founder(&self, pid: u64) -> u64 {
        pid - ((pid / 10) % self.family.max(1)) * 10
    }
}

impl Preset {
    /// The presets by name, smallest first.
    pub const NAMES: [&'static str; 5] = ["tiny", "demo", "bench", "hard-demo", "hard"];

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
            hard: None,
        };
        let hard = Hard {
            family: 4,
            lookalikes: 0.7,
            closeness: 0.6,
            age_years: 30.0,
            yaw_sd: 0.4,
            max_yaw: 0.8,
            low_res: 0.15,
            family_pairs: 0.05,
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
            // The real protocols' sizes: 6,000 LFW pairs, 5,000 YTF video pairs, 10,000
            // MegaFace distractors; 1,000 training identities in look-alike families. Light,
            // expression, noise and occlusion at the demo's difficulty (0.8, the stage's
            // default); LFW and YTF about as large as the real sets, so their pairs are
            // distinct (`balanced`).
            "hard" => Some(Preset {
                name: "hard",
                casia_identities: 1000,
                casia_images: (10, 40),
                lfw_identities: 2000,
                lfw_images: (2, 6),
                pairs_per_fold: 300,
                ytf_identities: 1000,
                ytf_videos: (2, 4),
                ytf_frames: (3, 6),
                ytf_pairs_per_split: 500,
                facescrub_identities: 80,
                facescrub_images: (4, 10),
                distractors: 10_000,
                shared_identities: 30,
                hard: Some(hard),
                ..base
            }),
            // The same corpus at demo size (minutes on 2 cores).
            "hard-demo" => Some(Preset {
                name: "hard-demo",
                casia_identities: 200,
                casia_images: (10, 40),
                lfw_identities: 300,
                lfw_images: (2, 6),
                pairs_per_fold: 60,
                ytf_identities: 120,
                ytf_videos: (2, 4),
                ytf_frames: (3, 5),
                ytf_pairs_per_split: 40,
                facescrub_identities: 20,
                facescrub_images: (3, 6),
                distractors: 1000,
                shared_identities: 10,
                hard: Some(hard),
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
    check_target(out, p)?;
    let mut c = Corpus::new(out, p, seed);
    // The order of these steps is the order of the generator's draws: changing it changes
    // every byte of the corpus.
    let casia = c.casia()?;
    let (lfw_people, ytf_people, fs_people) = c.test_people(&casia.people);
    let lfw = c.lfw(&lfw_people)?;
    let ytf = c.ytf(&ytf_people)?;
    c.megaface(&fs_people)?;
    let marks = render_all(out, seed, p.hard.as_ref(), &c.jobs, tick)?;
    let landmarks = |prefix: &str, rel: &str| -> Result<&[[f64; 2]; 5]> {
        marks
            .get(&format!("{prefix}/{rel}"))
            .with_context(|| format!("internal: no landmarks for {prefix}/{rel}"))
    };
    let mut casia_txt = String::new();
    for (rel, class) in &casia.images {
        writeln!(casia_txt, "{rel}\t{class}\t{}", fmt_marks(landmarks("casia", rel)?, true))?;
    }
    write(&out.join("casia_landmark.txt"), &casia_txt)?;
    let mut lfw_txt = String::new();
    for rel in &lfw {
        writeln!(lfw_txt, "{rel}\t{}", fmt_marks(landmarks("lfw", rel)?, true))?;
    }
    write(&out.join("lfw_landmark.txt"), &lfw_txt)?;
    let mut ytf_txt = String::new();
    for rel in &ytf {
        writeln!(ytf_txt, "{rel}\t{}", fmt_marks(landmarks("ytf", rel)?, false))?;
    }
    write(&out.join("ytf_landmark.txt"), &ytf_txt)?;
    write(&out.join("synth.json"), &serde_json::to_string_pretty(&c.summary)?)?;
    Ok(c.summary)
}

/// Refuses a non-empty target and presets too small for the protocols' ten folds.
fn check_target(out: &Path, p: &Preset) -> Result<()> {
    if out.exists() && fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose a new directory", out.display());
    }
    // Mismatched pairs need two people in a fold: LFW draws them inside its fold, and so does
    // YTF in the hard presets (the others borrow the next split's person).
    let ytf_min = if p.hard.is_some() { 20 } else { 10 };
    if p.lfw_images.0 < 2 || p.lfw_identities < 20 || p.ytf_identities < ytf_min || p.ytf_videos.0 < 2 {
        bail!(
            "preset `{}` is too small: LFW needs at least 20 identities (two per fold) and YTF {ytf_min}, each with 2 images or videos; raise `sizes:` lfw_identities / ytf_identities",
            p.name
        );
    }
    Ok(())
}

/// The training set's people and images (relative path, class).
struct Casia {
    people: Vec<u64>,
    images: Vec<(String, usize)>,
}

/// A corpus being planned: the protocol files are written as it goes, the images collected as
/// jobs to render at the end.
struct Corpus<'a> {
    out: &'a Path,
    p: &'a Preset,
    seed: u64,
    r: Rng,
    people: u64,
    jobs: Vec<Job>,
    summary: Summary,
}

impl<'a> Corpus<'a> {
    fn new(out: &'a Path, p: &'a Preset, seed: u64) -> Self {
        Corpus {
            out,
            p,
            seed,
            r: Rng::derive(seed, &[0xC0]),
            people: 0,
            jobs: Vec::new(),
            summary: Summary {
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
            },
        }
    }

    /// A new person id.
    fn person(&mut self) -> u64 {
        self.people += 1;
        self.people
    }

    /// The variation seeded by `tags` (independent of the main generator).
    fn var(&self, tags: &[u64]) -> Variation {
        let mut v = Variation::draw(&mut Rng::derive(self.seed, tags), self.p.difficulty);
        if let Some(h) = &self.p.hard {
            // From their own stream, so the draws above stay those of the other presets.
            let mut r = Rng::derive(self.seed ^ 0x4A5D, tags);
            v.yaw = (r.normal() * h.yaw_sd).clamp(-h.max_yaw, h.max_yaw);
            v.age = r.range(0.0, h.age_years);
            if r.chance(h.low_res) {
                v.blur = r.range(2.0, 3.5);
            }
        }
        v
    }

    /// Queues one image of `person`.
    fn image(&mut self, rel: String, person: u64, variation: Variation, size: (usize, usize), zoom: f64) {
        let noise_seed = self.r.next_u64();
        self.jobs.push(Job {
            rel,
            person,
            variation,
            size,
            zoom,
            noise_seed,
        });
    }

    fn name(&self, person: u64) -> String {
        name_for(self.seed, person, Spelling::Plain)
    }

    /// CASIA-WebFace and `names.txt`; the first `shared_identities` names are spelt the
    /// training way, as they reappear in the test sets.
    fn casia(&mut self) -> Result<Casia> {
        let people: Vec<u64> = (0..self.p.casia_identities).map(|_| self.person()).collect();
        let mut names_txt = String::new();
        let mut images = Vec::new();
        for (class, &pid) in people.iter().enumerate() {
            let dir = format!("{:07}", 100 + class * 37);
            let spelling = if class < self.p.shared_identities {
                Spelling::Training
            } else {
                Spelling::Plain
            };
            writeln!(names_txt, "{dir} {}", name_for(self.seed, pid, spelling))?;
            for k in 0..long_tail(&mut self.r, self.p.casia_images) {
                let rel = format!("{dir}/{:03}.jpg", k + 1);
                images.push((rel.clone(), class));
                let v = self.var(&[1, pid, k as u64]);
                self.image(format!("casia/{rel}"), pid, v, (250, 250), 1.0);
            }
        }
        self.summary.casia_images = images.len();
        write(&self.out.join("casia/names.txt"), &names_txt)?;
        Ok(Casia { people, images })
    }

    /// The LFW, YTF and FaceScrub people: shared training identities round-robin over the
    /// three, then new people up to each set's size.
    fn test_people(&mut self, casia: &[u64]) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        let (mut lfw, mut ytf, mut fs) = (Vec::new(), Vec::new(), Vec::new());
        for (k, &pid) in casia.iter().take(self.p.shared_identities).enumerate() {
            let (set, list) = match k % 3 {
                0 => ("lfw", &mut lfw),
                1 => ("ytf", &mut ytf),
                _ => ("megaface", &mut fs),
            };
            list.push(pid);
            let training = name_for(self.seed, pid, Spelling::Training);
            self.summary.shared.push((training, self.name(pid), set.into()));
        }
        for (list, size) in [
            (&mut lfw, self.p.lfw_identities),
            (&mut ytf, self.p.ytf_identities),
            (&mut fs, self.p.facescrub_identities),
        ] {
            while list.len() < size {
                self.people += 1;
                list.push(self.people);
            }
        }
        (lfw, ytf, fs)
    }

    /// LFW images and `pairs.txt`; returns the images' relative paths.
    fn lfw(&mut self, people: &[u64]) -> Result<Vec<String>> {
        let mut counts = Vec::new();
        let mut rels = Vec::new();
        for &pid in people {
            let name = self.name(pid);
            let n = long_tail(&mut self.r, self.p.lfw_images);
            for k in 1..=n {
                let rel = format!("{name}/{name}_{k:04}.jpg");
                rels.push(rel.clone());
                let v = self.var(&[2, pid, k as u64]);
                self.image(format!("lfw/{rel}"), pid, v, (250, 250), 1.0);
            }
            counts.push((name, n));
        }
        self.summary.lfw_images = rels.len();
        let pairs = match &self.p.hard {
            Some(h) => lfw_pairs_balanced(&mut self.r, people, &counts, self.p.pairs_per_fold, h)?,
            None => lfw_pairs(&mut self.r, &counts, self.p.pairs_per_fold)?,
        };
        self.summary.lfw_pairs = 20 * self.p.pairs_per_fold;
        write(&self.out.join("lfw/pairs.txt"), &pairs)?;
        Ok(rels)
    }

    /// YouTube Faces frames (each video drifts smoothly between two variations) and
    /// `splits.txt`; returns the frames' relative paths.
    fn ytf(&mut self, people: &[u64]) -> Result<Vec<String>> {
        let mut videos: Vec<(String, usize)> = Vec::new();
        let mut rels = Vec::new();
        for &pid in people {
            let name = self.name(pid);
            for v in 0..self.r.int(self.p.ytf_videos.0, self.p.ytf_videos.1) {
                let (a, b) = (self.var(&[3, pid, v as u64, 0]), self.var(&[3, pid, v as u64, 1]));
                let frames = self.r.int(self.p.ytf_frames.0, self.p.ytf_frames.1);
                for f in 0..frames {
                    let t = if frames > 1 { f as f64 / (frames - 1) as f64 } else { 0.0 };
                    let rel = format!("{name}/{v}/{}.jpg", 100 + f * 3);
                    rels.push(rel.clone());
                    self.image(format!("ytf/{rel}"), pid, blend(&a, &b, t), (320, 240), 0.8);
                }
                videos.push((name.clone(), v));
            }
        }
        self.summary.ytf_videos = videos.len();
        self.summary.ytf_frames = rels.len();
        let names: Vec<String> = people.iter().map(|&pid| self.name(pid)).collect();
        let splits = match &self.p.hard {
            Some(h) => ytf_splits_balanced(&mut self.r, people, &names, &videos, self.p.ytf_pairs_per_split, h)?,
            None => ytf_splits(&mut self.r, &names, &videos, self.p.ytf_pairs_per_split)?,
        };
        self.summary.ytf_pairs = 10 * self.p.ytf_pairs_per_split;
        write(&self.out.join("ytf/splits.txt"), &splits)?;
        Ok(rels)
    }

    /// MegaFace: FaceScrub probes, single-image distractor identities, and the devkit's
    /// template lists (one per distractor set size, 10 to 1M, that the distractors reach).
    fn megaface(&mut self, people: &[u64]) -> Result<()> {
        let (mut ids, mut paths) = (Vec::new(), Vec::new());
        for &pid in people {
            let name = self.name(pid);
            for k in 0..long_tail(&mut self.r, self.p.facescrub_images) {
                let rel = format!("facescrub_images/{name}/{name}_{}.jpg", 1000 + k * 7);
                ids.push(name.clone());
                paths.push(rel.clone());
                let v = self.var(&[4, pid, k as u64]);
                self.image(format!("megaface/{rel}"), pid, v, (300, 300), 1.1);
            }
        }
        self.summary.facescrub_images = paths.len();
        let mut distractors = Vec::new();
        for d in 0..self.p.distractors {
            let pid = self.person();
            let rel = format!("megaface_images/{}/{:08}@N00/{}_{}.jpg", d % 10, 1000 + d, 10_000 + d * 13, 1);
            distractors.push(rel.clone());
            let v = self.var(&[5, pid]);
            self.image(format!("megaface/{rel}"), pid, v, (300, 300), 1.1);
        }
        self.summary.distractor_images = distractors.len();
        let tl = self.out.join("megaface/templatelists");
        let probes = serde_json::json!({"id": ids, "path": paths});
        write(&tl.join("facescrub_features_list.json"), &serde_json::to_string_pretty(&probes)?)?;
        let mut size = 10;
        while size <= self.p.distractors.min(1_000_000) {
            let list = serde_json::json!({"path": distractors[..size]});
            write(
                &tl.join(format!("megaface_features_list.json_{size}_1")),
                &serde_json::to_string_pretty(&list)?,
            )?;
            size *= 10;
        }
        Ok(())
    }
}

/// `pairs.txt` of LFW View 2: ten identity-disjoint folds of `per_fold` matched pairs, then
/// `per_fold` mismatched pairs; `counts` are (name, images) per person.
fn lfw_pairs(r: &mut Rng, counts: &[(String, usize)], per_fold: usize) -> Result<String> {
    let mut pairs = format!("10\t{per_fold}\n");
    for fold in 0..10 {
        let members: Vec<&(String, usize)> = counts.iter().enumerate().filter(|(i, _)| i % 10 == fold).map(|(_, x)| x).collect();
        for _ in 0..per_fold {
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
        for _ in 0..per_fold {
            let a = r.int(0, members.len() - 1);
            let b = (a + r.int(1, members.len() - 1)) % members.len();
            let ((na, ca), (nb, cb)) = (members[a], members[b]);
            writeln!(pairs, "{na}\t{}\t{nb}\t{}", r.int(1, *ca), r.int(1, *cb))?;
        }
    }
    Ok(pairs)
}

/// [`lfw_pairs`] for the `hard` presets: distinct pairs spread over each fold's people, a
/// fixed share of the mismatched ones within a family (`balanced`).
fn lfw_pairs_balanced(r: &mut Rng, pids: &[u64], counts: &[(String, usize)], per_fold: usize, h: &Hard) -> Result<String> {
    let mut pairs = format!("10\t{per_fold}\n");
    for fold in 0..10 {
        let idx: Vec<usize> = (0..counts.len()).filter(|i| i % 10 == fold).collect();
        let members: Vec<Member> = idx
            .iter()
            .map(|&i| Member {
                founder: h.founder(pids[i]),
                items: counts[i].1,
            })
            .collect();
        let f = draw_fold(r, &members, per_fold, h.family_pairs);
        for &(m, i, j) in &f.same {
            writeln!(pairs, "{}\t{}\t{}", counts[idx[m]].0, i + 1, j + 1)?;
        }
        for &(a, ia, b, ib) in &f.different {
            writeln!(pairs, "{}\t{}\t{}\t{}", counts[idx[a]].0, ia + 1, counts[idx[b]].0, ib + 1)?;
        }
    }
    Ok(pairs)
}

/// [`ytf_splits`] for the `hard` presets, drawn as [`lfw_pairs_balanced`] draws folds.
fn ytf_splits_balanced(
    r: &mut Rng,
    pids: &[u64],
    names: &[String],
    videos: &[(String, usize)],
    per_split: usize,
    h: &Hard,
) -> Result<String> {
    let mut splits = String::from("split number, first video, second video, is same, is physically the same\n");
    let count = |i: usize| videos.iter().filter(|(n, _)| *n == names[i]).count();
    for split in 1..=10 {
        let idx: Vec<usize> = (0..names.len()).filter(|i| i % 10 == split - 1).collect();
        let members: Vec<Member> = idx
            .iter()
            .map(|&i| Member {
                founder: h.founder(pids[i]),
                items: count(i),
            })
            .collect();
        let f = draw_fold(r, &members, per_split - per_split / 2, h.family_pairs);
        for &(m, i, j) in f.same.iter().take(per_split / 2) {
            let name = &names[idx[m]];
            writeln!(splits, "{split}, {name}/{i}, {name}/{j}, 1, 1")?;
        }
        for &(a, ia, b, ib) in &f.different {
            writeln!(splits, "{split}, {}/{ia}, {}/{ib}, 0, 0", names[idx[a]], names[idx[b]])?;
        }
    }
    Ok(splits)
}

/// `splits.txt` of YouTube Faces: ten splits of `per_split` video pairs, same-person pairs
/// first, each split from its own people (`names`, in order); `videos` are (name, video).
fn ytf_splits(r: &mut Rng, names: &[String], videos: &[(String, usize)], per_split: usize) -> Result<String> {
    let mut splits = String::from("split number, first video, second video, is same, is physically the same\n");
    let vids_of = |i: usize| -> Vec<&(String, usize)> { videos.iter().filter(|(n, _)| *n == names[i]).collect() };
    for split in 1..=10 {
        let people: Vec<usize> = (0..names.len()).filter(|i| i % 10 == split - 1).collect();
        for k in 0..per_split {
            let same = k < per_split / 2;
            let i = *r.pick(&people);
            let vi = vids_of(i);
            let (a, b) = if same {
                let x = r.int(0, vi.len() - 1);
                (vi[x], vi[(x + r.int(1, vi.len() - 1)) % vi.len()])
            } else {
                let j = if people.len() > 1 {
                    people[(people.iter().position(|&q| q == i).unwrap_or(0) + r.int(1, people.len() - 1)) % people.len()]
                } else {
                    (i + 1) % names.len()
                };
                (*r.pick(&vi), *r.pick(&vids_of(j)))
            };
            let s = u8::from(same);
            writeln!(splits, "{split}, {}/{}, {}/{}, {s}, {s}", a.0, a.1, b.0, b.1)?;
        }
    }
    Ok(splits)
}

/// Renders every job in parallel (each carries its own seeds), writes the JPEGs (and
/// MegaFace's JSON sidecars); returns each image's landmarks by relative path.
fn render_all(
    out: &Path,
    seed: u64,
    hard: Option<&Hard>,
    jobs: &[Job],
    tick: &(dyn Fn() + Sync),
) -> Result<HashMap<String, [[f64; 2]; 5]>> {
    jobs.par_iter()
        .map(|j| {
            let marks = render_job(out, seed, hard, j)?;
            tick();
            Ok((j.rel.clone(), marks))
        })
        .collect()
}

/// Person `pid`'s identity: their own, or (in a `hard` corpus) perhaps a look-alike of their
/// family's founder; `age` years older when above 0.
pub fn identity_of(seed: u64, hard: Option<&Hard>, pid: u64, age: f64) -> Identity {
    let own = |pid: u64| Identity::new(seed ^ pid.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut id = own(pid);
    if let Some(h) = hard {
        let founder = h.founder(pid);
        if founder != pid && Rng::derive(seed, &[0xFA, pid]).chance(h.lookalikes) {
            id = id.relative_of(&own(founder), h.closeness);
        }
    }
    if age > 0.0 {
        id = id.aged(age);
    }
    id
}

/// One image: rendered, written as JPEG (quality 92), with a MegaFace sidecar where the
/// layout has one.
fn render_job(out: &Path, seed: u64, hard: Option<&Hard>, j: &Job) -> Result<[[f64; 2]; 5]> {
    let id = identity_of(seed, hard, j.person, j.variation.age);
    let img = render(&id, &j.variation, j.size.0, j.size.1, j.zoom, j.noise_seed);
    let path = out.join(&j.rel);
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let bytes = encode_jpeg(&img)?;
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    if j.rel.starts_with("megaface/") {
        let sidecar = megaface_sidecar(&img.landmarks);
        fs::write(path.with_extension("jpg.json"), serde_json::to_string_pretty(&sidecar)?)?;
    }
    Ok(img.landmarks)
}

/// A rendered image as the corpus stores it: a baseline JPEG of quality 92.
pub fn encode_jpeg(img: &Rendered) -> Result<Vec<u8>> {
    // Room for a typical file at this quality, so the output is not copied as it grows.
    let mut bytes = Vec::with_capacity(img.rgb.len() / 8);
    let (w, h) = (u16::try_from(img.width)?, u16::try_from(img.height)?);
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 92);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder.encode(&img.rgb, w, h, jpeg_encoder::ColorType::Rgb)?;
    Ok(bytes)
}

/// The JSON beside a MegaFace image: a face box around the landmarks, and the landmarks.
fn megaface_sidecar(m: &[[f64; 2]; 5]) -> serde_json::Value {
    let xs = m.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
    let ys = m.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min);
    let side = (m[1][0] - m[0][0]).abs().max(10.0) * 2.6;
    serde_json::json!({
        "bounding_box": {"x": xs - side * 0.3, "y": ys - side * 0.35, "width": side, "height": side * 1.2},
        "landmarks": (0..5).map(|k| (k.to_string(), serde_json::json!({"x": m[k][0], "y": m[k][1]}))).collect::<serde_json::Map<_, _>>(),
    })
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
    fn the_hard_preset_has_the_real_protocols_sizes_and_the_others_are_unchanged() {
        let h = Preset::named("hard").unwrap();
        assert_eq!(
            (20 * h.pairs_per_fold, 10 * h.ytf_pairs_per_split, h.distractors),
            (6000, 5000, 10_000)
        );
        // The other presets' synth.json carries no `hard` key, so their bytes are as before.
        for name in ["tiny", "demo", "bench"] {
            let json = serde_json::to_string(&Preset::named(name).unwrap()).unwrap();
            assert!(!json.contains("hard"), "{json}");
        }
        assert!(serde_json::to_string(&h).unwrap().contains("\"lookalikes\":0.7"));
    }

    #[test]
    fn families_are_ten_ids_apart_so_they_share_a_fold() {
        let h = Preset::named("hard").unwrap().hard.unwrap();
        assert_eq!(h.family, 4);
        // Ids 3, 13, 23, 33 are one family (founder 3); 43 starts the next.
        assert_eq!([3, 13, 23, 33, 43, 53].map(|p| h.founder(p)), [3, 3, 3, 3, 43, 43]);
        for pid in 1..500u64 {
            let f = h.founder(pid);
            assert!(f <= pid && f % 10 == pid % 10 && h.founder(f) == f, "{pid} -> {f}");
        }
    }

    #[test]
    fn a_look_alike_renders_closer_to_its_founder_than_a_stranger_does() {
        let h = Preset::named("hard").unwrap().hard.unwrap();
        let seed = 11;
        let plain = Variation::draw(&mut Rng::derive(1, &[1]), 0.0);
        let pixels = |pid: u64| render(&identity_of(seed, Some(&h), pid, 0.0), &plain, 120, 120, 1.0, 0).rgb;
        let dist = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>();
        // Find a family member drawn as a look-alike, and compare with a stranger (another family).
        let member = (1..20u64)
            .map(|k| 7 + 10 * (4 * k + 1))
            .find(|&pid| h.founder(pid) != pid && Rng::derive(seed, &[0xFA, pid]).chance(h.lookalikes))
            .expect("some look-alike");
        let founder = pixels(h.founder(member));
        let stranger = pixels(h.founder(member) + 1);
        assert!(
            dist(&pixels(member), &founder) < 0.7 * dist(&stranger, &founder),
            "a look-alike should be nearer its founder than a stranger is"
        );
        // Without `hard`, the same id is its own person.
        assert_ne!(
            render(&identity_of(seed, None, member, 0.0), &plain, 120, 120, 1.0, 0).rgb,
            pixels(member)
        );
    }

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

    #[test]
    fn a_hard_corpus_lists_distinct_pairs_with_a_fixed_family_share_per_fold() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Preset::named("hard-demo").unwrap();
        Sizes {
            casia_identities: Some(10),
            lfw_identities: Some(200),
            lfw_images: Some((2, 3)),
            pairs_per_fold: Some(20),
            ytf_identities: Some(80),
            ytf_frames: Some((1, 1)),
            ytf_pairs_per_split: Some(10),
            facescrub_identities: Some(2),
            distractors: Some(10),
            shared_identities: Some(2),
            ..Sizes::default()
        }
        .apply(&mut p)
        .unwrap();
        generate(d.path(), &p, 5, &|| {}).unwrap();
        let pairs = fs::read_to_string(d.path().join("lfw/pairs.txt")).unwrap();
        let lines: Vec<&str> = pairs.lines().skip(1).collect();
        assert_eq!(lines.len(), 400);
        // Matched pairs are all distinct (the folds' people are disjoint, so this is per fold too).
        let matched: Vec<&str> = lines.iter().copied().filter(|l| l.split('\t').count() == 3).collect();
        let distinct: std::collections::HashSet<&str> = matched.iter().copied().collect();
        assert_eq!((matched.len(), distinct.len()), (200, 200));
        // No couple of people twice among a fold's mismatched pairs (the family share is
        // tested in `balanced`, where the families are known).
        for fold in lines.chunks(40) {
            let couples: std::collections::HashSet<(&str, &str)> = fold[20..]
                .iter()
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    (f[0].min(f[2]), f[0].max(f[2]))
                })
                .collect();
            assert_eq!(couples.len(), 20);
        }
        let splits = fs::read_to_string(d.path().join("ytf/splits.txt")).unwrap();
        let same: Vec<&str> = splits.lines().skip(1).filter(|l| l.ends_with(", 1, 1")).collect();
        let distinct: std::collections::HashSet<&str> = same.iter().map(|l| l.split_once(", ").unwrap().1).collect();
        assert_eq!((same.len(), distinct.len()), (50, 50));
    }

    #[test]
    fn a_fold_without_two_people_is_refused_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        for (preset, sizes) in [
            (
                "tiny",
                Sizes {
                    lfw_identities: Some(15),
                    ..Sizes::default()
                },
            ),
            (
                "hard-demo",
                Sizes {
                    ytf_identities: Some(12),
                    ..Sizes::default()
                },
            ),
        ] {
            let mut p = Preset::named(preset).unwrap();
            sizes.apply(&mut p).unwrap();
            let err = generate(&d.path().join(preset), &p, 1, &|| {}).unwrap_err().to_string();
            assert!(err.contains("too small") && err.contains("sizes:"), "{err}");
        }
    }
}
