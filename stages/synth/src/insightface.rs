//! The synthetic corpus in insightface's formats, as its packs are made from the public data:
//! CASIA's images aligned to 112 × 112 on the ArcFace template (`align_one`, cp2tform) and
//! stored as JPEGs in a RecordIO pack (`faces_webface_112x112` in layout), and LFW's View 2
//! pairs in order as `lfw.bin` beside it, as insightface ships `faces_emore/lfw.bin`.
//!
//! Beside it, stand-ins for the sets whose defining condition the corpus can reproduce —
//! pose: `cfp_ff.bin` (both faces near frontal), `cfp_fp.bin` and `vgg2_fp.bin` (a near-frontal
//! face against one of the most turned), `cplfw.bin` (the pair's poses far apart). They are
//! drawn from the synthetic LFW identities, ten folds of genuine and impostor pairs each, and
//! are stand-ins with the real sets' pair structure, not the real sets. For the age sets the
//! corpus has no ages to draw from, so new identities are rendered at two ages
//! (`Identity::aged`): `agedb_30.bin` pairs a face with the same person 30 years on, `calfw.bin`
//! (cross-age LFW) 15 years on; impostor pairs are two people at such ages.

use anyhow::{bail, Context};
use rayon::prelude::*;
use spherepipe_face_bins::{write_bin, VerificationBin};
use spherepipe_face_datasets::{read_landmark_list, read_lfw_pairs, Sample};
use spherepipe_face_geometry::{FitMethod, ARCFACE_REFERENCE};
use spherepipe_recordio::PackWriter;
use spherepipe_rng::Rng;
use spherepipe_stage_align::decode_rgb;
use std::collections::HashMap;
use std::path::Path;

/// Where the pack and its bins go, under the corpus.
pub const PACK_DIR: &str = "insightface/faces_synth_112x112";

/// Writes the pack of `out`'s CASIA images, `lfw.bin` of its LFW pairs and the pose
/// stand-ins, drawn with `seed`.
pub fn write_insightface(out: &Path, seed: u64) -> anyhow::Result<()> {
    let dir = out.join(PACK_DIR);
    std::fs::create_dir_all(&dir)?;
    let casia = read_landmark_list(&out.join("casia_landmark.txt"), &out.join("casia"), true)?;
    let mut samples = casia.samples;
    // A pack groups each identity's images (stable: list order within one).
    samples.sort_by_key(|s| s.label);
    let mut pack = PackWriter::new(&dir);
    for (s, jpeg) in samples.iter().zip(aligned_jpegs(&samples, "casia")?) {
        pack.push(s.label, jpeg);
    }
    pack.finish(112, 112).context("writing the pack")?;
    write_lfw_bin(out, &dir.join("lfw.bin"))?;
    write_pose_bins(out, &dir, seed)?;
    let pairs = read_lfw_pairs(&out.join("lfw/pairs.txt"))?.len().max(20);
    for (k, (file, years)) in AGE_SETS.iter().enumerate() {
        write_age_bin(&dir.join(file), *years, pairs, Rng::derive(seed, &[0xA6E, k as u64]).next_u64())?;
    }
    Ok(())
}

/// The age stand-ins: (file, years between a genuine pair's two images).
const AGE_SETS: [(&str, f64); 2] = [("agedb_30.bin", 30.0), ("calfw.bin", 15.0)];

/// `n` pairs of newly rendered people (half genuine: a face and the same person `years` older;
/// half impostor: two people, the second as old), aligned as the pack's faces.
fn write_age_bin(path: &Path, years: f64, n: usize, seed: u64) -> anyhow::Result<()> {
    let sides: Vec<(u64, f64, u64)> = (0..n)
        .flat_map(|i| {
            let person = Rng::derive(seed, &[i as u64]).next_u64();
            let other = if i % 2 == 0 {
                person
            } else {
                Rng::derive(seed, &[i as u64, 1]).next_u64()
            };
            [(person, 0.0, 2 * i as u64), (other, years, 2 * i as u64 + 1)]
        })
        .collect();
    let images = sides
        .par_iter()
        .map(|&(person, age, k)| {
            let id = spherepipe_synthface::Identity::new(person).aged(age);
            let v = spherepipe_synthface::Variation::draw(&mut Rng::derive(seed, &[k, 2]), 0.8);
            let img = spherepipe_synthface::render(&id, &v, 250, 250, 1.0, Rng::derive(seed, &[k, 3]).next_u64());
            arcface_jpeg(&img.rgb, img.width, img.height, &img.landmarks)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let same = (0..n).map(|i| i % 2 == 0).collect();
    write_bin(path, &VerificationBin { images, same }).with_context(|| format!("writing {}", path.display()))
}

/// An image aligned to 112 × 112 on the ArcFace template by its landmarks (cp2tform, as the
/// pack's faces), as a JPEG of quality 95.
fn arcface_jpeg(rgb: &[u8], width: usize, height: usize, marks: &[[f64; 2]; 5]) -> anyhow::Result<Vec<u8>> {
    let fit = FitMethod::Cp2tform.fit(marks, &ARCFACE_REFERENCE, true)?;
    let pixels = spherepipe_face_geometry::warp_affine(rgb, width, height, 3, &fit.matrix, 112, 112)
        .ok_or_else(|| anyhow::anyhow!("the fitted transform is singular"))?;
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 95).encode(&pixels, 112, 112, jpeg_encoder::ColorType::Rgb)?;
    Ok(jpeg)
}

/// How a stand-in set picks the two faces of a pair, by their pose ranks (0: most frontal).
#[derive(Clone, Copy)]
enum PoseRule {
    /// Both in the most frontal half.
    BothFrontal,
    /// One in the most frontal half, one in the most turned quarter.
    FrontalProfile,
    /// Poses at least half the pose range apart.
    FarApart,
}

/// The stand-ins: (file, rule).
const POSE_SETS: [(&str, PoseRule); 4] = [
    ("cfp_ff.bin", PoseRule::BothFrontal),
    ("cfp_fp.bin", PoseRule::FrontalProfile),
    ("vgg2_fp.bin", PoseRule::FrontalProfile),
    ("cplfw.bin", PoseRule::FarApart),
];

/// How turned a face is, from its landmarks: the nose's offset from the eyes' midpoint, in
/// eye distances (0 frontal).
fn yaw(m: &[[f64; 2]; 5]) -> f64 {
    let mid = (m[0][0] + m[1][0]) / 2.0;
    let eyes = ((m[1][0] - m[0][0]).powi(2) + (m[1][1] - m[0][1]).powi(2)).sqrt().max(1e-6);
    ((m[2][0] - mid) / eyes).abs()
}

/// The pose stand-ins, each as many pairs as `lfw.bin` (half genuine), in ten folds.
fn write_pose_bins(out: &Path, dir: &Path, seed: u64) -> anyhow::Result<()> {
    let listing = read_landmark_list(&out.join("lfw_landmark.txt"), &out.join("lfw"), false)?;
    let samples = listing.samples;
    if samples.len() < 2 {
        bail!(
            "the corpus lists {} LFW image(s): the pose stand-ins need two or more",
            samples.len()
        );
    }
    let pairs = read_lfw_pairs(&out.join("lfw/pairs.txt"))?.len().max(20);
    let turned: Vec<f64> = samples.iter().map(|s| yaw(&s.landmarks)).collect();
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by(|&a, &b| turned[a].total_cmp(&turned[b]).then(a.cmp(&b)));
    let mut rank = vec![0usize; samples.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    for (k, (file, rule)) in POSE_SETS.iter().enumerate() {
        let mut rng = Rng::derive(seed, &[0x1f_b1, k as u64]);
        let chosen = draw_pairs(&samples, &rank, *rule, pairs, &mut rng);
        let sides: Vec<Sample> = chosen
            .iter()
            .flat_map(|&(a, b, _)| [samples[a].clone(), samples[b].clone()])
            .collect();
        let images = aligned_jpegs(&sides, "lfw")?;
        let same = chosen.iter().map(|p| p.2).collect();
        write_bin(&dir.join(file), &VerificationBin { images, same }).with_context(|| format!("writing {file}"))?;
    }
    Ok(())
}

/// `n` pairs (ten folds, each half genuine, half impostor) whose poses follow `rule` where the
/// corpus allows (a pair that cannot is drawn without it, so every set has its size).
fn draw_pairs(samples: &[Sample], rank: &[usize], rule: PoseRule, n: usize, rng: &mut Rng) -> Vec<(usize, usize, bool)> {
    let len = samples.len();
    let fits = |a: usize, b: usize| match rule {
        PoseRule::BothFrontal => rank[a] < len / 2 && rank[b] < len / 2,
        PoseRule::FrontalProfile => rank[a] < len / 2 && rank[b] >= len * 3 / 4,
        PoseRule::FarApart => rank[a].abs_diff(rank[b]) >= len / 2,
    };
    let mut by_identity: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_identity.entry(s.identity.as_str()).or_default().push(i);
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let same = i % 2 == 0;
        let mut best = None;
        for _ in 0..200 {
            let a = rng.int(0, len - 1);
            let b = if same {
                *rng.pick(&by_identity[samples[a].identity.as_str()])
            } else {
                rng.int(0, len - 1)
            };
            if a == b || (samples[a].identity == samples[b].identity) != same {
                continue;
            }
            // Either order: the rule is about the pair.
            let (a, b) = if fits(b, a) && !fits(a, b) { (b, a) } else { (a, b) };
            best = Some((a, b));
            if fits(a, b) {
                break;
            }
        }
        if let Some((a, b)) = best {
            out.push((a, b, same));
        }
    }
    out
}

/// `lfw.bin`: both images of every pair of `lfw/pairs.txt`, in file order.
fn write_lfw_bin(out: &Path, bin: &Path) -> anyhow::Result<()> {
    let listing = read_landmark_list(&out.join("lfw_landmark.txt"), &out.join("lfw"), false)?;
    let by_path: HashMap<&str, &Sample> = listing.samples.iter().map(|s| (s.rel_path.as_str(), s)).collect();
    let pairs = read_lfw_pairs(&out.join("lfw/pairs.txt"))?;
    let mut sides = Vec::new();
    for p in &pairs {
        for side in [&p.a, &p.b] {
            let rel = side.rel_path();
            match by_path.get(rel.as_str()) {
                Some(s) => sides.push((*s).clone()),
                None => bail!("lfw/pairs.txt names {rel}, which lfw_landmark.txt does not list"),
            }
        }
    }
    let images = aligned_jpegs(&sides, "lfw")?;
    let same = pairs.iter().map(|p| p.same).collect();
    write_bin(bin, &VerificationBin { images, same }).with_context(|| format!("writing {}", bin.display()))
}

/// Each listed image aligned to 112 × 112 on the ArcFace template, as a JPEG of quality 95.
/// `dataset` names the images in errors.
fn aligned_jpegs(samples: &[Sample], dataset: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    samples
        .par_iter()
        .map(|s| {
            let img = std::fs::read(&s.path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| decode_rgb(&bytes))
                .with_context(|| format!("{dataset} image {}", s.rel_path))?;
            arcface_jpeg(img.as_raw(), img.width() as usize, img.height() as usize, &s.landmarks)
                .with_context(|| format!("{dataset} image {} could not be aligned for the pack", s.rel_path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(identity: usize, nose_x: f64) -> Sample {
        Sample {
            rel_path: format!("{identity}/{nose_x}.jpg"),
            path: Default::default(),
            identity: identity.to_string(),
            name: identity.to_string(),
            label: identity as u32,
            video: None,
            landmarks: [[30.0, 50.0], [70.0, 50.0], [nose_x, 70.0], [35.0, 90.0], [65.0, 90.0]],
        }
    }

    #[test]
    fn yaw_is_the_noses_offset_in_eye_distances() {
        assert_eq!(yaw(&sample(0, 50.0).landmarks), 0.0);
        assert!((yaw(&sample(0, 70.0).landmarks) - 0.5).abs() < 1e-12);
        assert!((yaw(&sample(0, 30.0).landmarks) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn frontal_profile_pairs_put_a_frontal_face_against_a_turned_one() {
        // 40 identities of 4 images, poses from frontal to turned.
        // Each identity has a frontal, two half-turned and a turned image.
        let samples: Vec<Sample> = (0..160)
            .map(|i| sample(i / 4, 50.0 + (i % 4) as f64 * 6.0 + (i / 4) as f64 * 0.01))
            .collect();
        let turned: Vec<f64> = samples.iter().map(|s| yaw(&s.landmarks)).collect();
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by(|&a, &b| turned[a].total_cmp(&turned[b]).then(a.cmp(&b)));
        let mut rank = vec![0; samples.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let pairs = draw_pairs(&samples, &rank, PoseRule::FrontalProfile, 40, &mut Rng::new(5));
        assert_eq!(pairs.len(), 40);
        let genuine = pairs.iter().filter(|p| p.2).count();
        assert_eq!(genuine, 20);
        for &(a, b, same) in &pairs {
            assert_eq!(samples[a].identity == samples[b].identity, same);
        }
        let kept = pairs.iter().filter(|&&(a, b, _)| rank[a] < 80 && rank[b] >= 120).count();
        assert!(kept >= 36, "only {kept} of 40 pairs are frontal against profile");
    }
}
