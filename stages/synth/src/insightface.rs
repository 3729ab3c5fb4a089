//! The synthetic corpus in insightface's formats, as its packs are made from the public data:
//! CASIA's images aligned to 112 × 112 on the ArcFace template (`align_one`, cp2tform) and
//! stored as JPEGs in a RecordIO pack (`faces_webface_112x112` in layout), and LFW's View 2
//! pairs in order as `lfw.bin` beside it, as insightface ships `faces_emore/lfw.bin`.

use anyhow::{bail, Context};
use rayon::prelude::*;
use spherepipe_face_bins::{write_bin, VerificationBin};
use spherepipe_face_datasets::{read_landmark_list, read_lfw_pairs, Sample};
use spherepipe_face_geometry::{FitMethod, ARCFACE_REFERENCE};
use spherepipe_recordio::PackWriter;
use spherepipe_stage_align::{align_one, Crop};
use std::collections::HashMap;
use std::path::Path;

/// Where the pack and its bins go, under the corpus.
pub const PACK_DIR: &str = "insightface/faces_synth_112x112";

/// Writes the pack of `out`'s CASIA images and `lfw.bin` of its LFW pairs.
pub fn write_insightface(out: &Path) -> anyhow::Result<()> {
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
    write_lfw_bin(out, &dir.join("lfw.bin"))
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

/// Each sample aligned to 112 × 112 on the ArcFace template, as a JPEG of quality 95.
fn aligned_jpegs(samples: &[Sample], dataset: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let crop = Crop {
        reference: ARCFACE_REFERENCE.to_vec(),
        method: FitMethod::Cp2tform,
        reflective: true,
        height: 112,
        width: 112,
    };
    samples
        .par_iter()
        .map(|s| {
            let row = align_one(s, dataset, &crop).map_err(|(p, _)| anyhow::anyhow!("{p} could not be aligned for the pack"))?;
            let (rgb, w, h) = spherepipe_face_table::decode_rgb_within(&row.png, 1024)?;
            let mut jpeg = Vec::new();
            jpeg_encoder::Encoder::new(&mut jpeg, 95).encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)?;
            Ok(jpeg)
        })
        .collect()
}
