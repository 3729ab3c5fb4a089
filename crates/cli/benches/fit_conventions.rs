//! How much the similarity-fit convention matters: MATLAB `cp2tform` (the `align` default)
//! against Umeyama, over every landmark file of the synthetic corpus.
//!
//! `cargo bench -p spherepipe-cli --bench fit_conventions` (env `PRESET`, default `demo`).
//! For each face, both fits (reflective, as the stage's default) onto the SphereFace template
//! at 112×96; prints, per dataset and over all, the distribution (median, 95th percentile, max)
//! of where the two place each landmark in the crop (pixels apart) and of the ratio of their
//! scales (cp2tform / Umeyama, never below 1).

mod support;

use spherepipe_face_datasets::{read_landmark_list, read_megaface_list, Listing};
use spherepipe_face_geometry::{apply, cp2tform, umeyama, SPHEREFACE_REFERENCE};

/// Landmark placement differences (pixels) and scale ratios of one set of faces.
#[derive(Default)]
struct Differences {
    placement: Vec<f64>,
    scale_ratio: Vec<f64>,
    mirrored_disagree: usize,
    skipped: usize,
}

impl Differences {
    fn add(&mut self, landmarks: &[[f64; 2]; 5]) {
        let (Ok(c), Ok(u)) = (
            cp2tform(landmarks, &SPHEREFACE_REFERENCE, true),
            umeyama(landmarks, &SPHEREFACE_REFERENCE, true),
        ) else {
            self.skipped += 1;
            return;
        };
        for p in landmarks {
            let (a, b) = (apply(&c.matrix, *p), apply(&u.matrix, *p));
            self.placement.push(((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt());
        }
        self.scale_ratio.push(c.scale() / u.scale());
        self.mirrored_disagree += usize::from(c.reflected != u.reflected);
    }

    fn extend(&mut self, other: &Differences) {
        self.placement.extend(&other.placement);
        self.scale_ratio.extend(&other.scale_ratio);
        self.mirrored_disagree += other.mirrored_disagree;
        self.skipped += other.skipped;
    }

    fn print(&self, name: &str) {
        let (p, s) = (quantiles(&self.placement), quantiles(&self.scale_ratio));
        println!(
            "{name:<10} {:>7} faces  placement px: median {:.3}  p95 {:.3}  max {:.3}   scale ratio: median {:.4}  p95 {:.4}  max {:.4}   mirror choice differs {}  skipped {}",
            self.scale_ratio.len(),
            p[0],
            p[1],
            p[2],
            s[0],
            s[1],
            s[2],
            self.mirrored_disagree,
            self.skipped
        );
    }
}

/// Median, 95th percentile (nearest rank) and maximum.
fn quantiles(v: &[f64]) -> [f64; 3] {
    if v.is_empty() {
        return [f64::NAN; 3];
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    [rank(0.5), rank(0.95), s[s.len() - 1]]
}

fn main() -> anyhow::Result<()> {
    if support::listing_only() {
        return Ok(());
    }
    let (preset_name, preset) = support::preset_from_env()?;
    let tmp = tempfile::tempdir()?;
    let corpus = tmp.path().join("corpus");
    spherepipe_synthface::generate(&corpus, &preset, 7, &|| {})?;
    let lists: [(&str, Listing); 4] = [
        (
            "casia",
            read_landmark_list(&corpus.join("casia_landmark.txt"), &corpus.join("casia"), true)?,
        ),
        (
            "lfw",
            read_landmark_list(&corpus.join("lfw_landmark.txt"), &corpus.join("lfw"), false)?,
        ),
        (
            "ytf",
            read_landmark_list(&corpus.join("ytf_landmark.txt"), &corpus.join("ytf"), false)?,
        ),
        (
            "megaface",
            read_megaface_list(
                &corpus.join("megaface/templatelists/facescrub_features_list.json"),
                &corpus.join("megaface"),
            )?,
        ),
    ];
    println!("cp2tform vs Umeyama on the `{preset_name}` corpus (seed 7), crops 112x96:");
    let mut all = Differences::default();
    for (name, listing) in &lists {
        let mut d = Differences::default();
        listing.samples.iter().for_each(|s| d.add(&s.landmarks));
        d.print(name);
        all.extend(&d);
    }
    all.print("all");
    Ok(())
}
