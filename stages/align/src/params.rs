//! `align`'s params, read and checked once into [`AlignParams`]; `validate` and `run` both go
//! through it.

use crate::Crop;
use anyhow::{bail, Context};
use spherepipe_face_datasets::{read_landmark_list, read_megaface_list, Listing};
use spherepipe_face_geometry::FitMethod;
use spherepipe_stage::Params;
use std::path::Path;

/// The dataset layouts `align` reads a landmark list of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CASIA-WebFace: `casia_landmark.txt` (path, class, 10 integers).
    Casia,
    /// LFW: `lfw_landmark.txt` (path, 10 numbers).
    Lfw,
    /// YouTube Faces frames: `ytf_landmark.txt`, as LFW's.
    Ytf,
    /// MegaFace / FaceScrub: the devkit's JSON template list with a sidecar per image.
    MegaFace,
}

impl Format {
    /// The `format` param's values.
    pub const NAMES: [&'static str; 4] = ["casia", "lfw", "ytf", "megaface"];

    /// The format called `name`.
    pub fn named(name: &str) -> Option<Format> {
        match name {
            "casia" => Some(Format::Casia),
            "lfw" => Some(Format::Lfw),
            "ytf" => Some(Format::Ytf),
            "megaface" => Some(Format::MegaFace),
            _ => None,
        }
    }

    /// Its name, as the param spells it (and the face table's `dataset` column records it).
    pub fn name(self) -> &'static str {
        match self {
            Format::Casia => "casia",
            Format::Lfw => "lfw",
            Format::Ytf => "ytf",
            Format::MegaFace => "megaface",
        }
    }

    /// Default list file and image root, relative to the dataset root (the layouts
    /// `spherepipe synth` writes and the public datasets use).
    fn defaults(self) -> (&'static str, &'static str) {
        match self {
            Format::Casia => ("casia_landmark.txt", "casia"),
            Format::Lfw => ("lfw_landmark.txt", "lfw"),
            Format::Ytf => ("ytf_landmark.txt", "ytf"),
            Format::MegaFace => ("megaface/templatelists/facescrub_features_list.json", "megaface"),
        }
    }

    /// Reads the landmark list `list` of images under `root`.
    pub fn read(self, list: &Path, root: &Path) -> anyhow::Result<Listing> {
        Ok(match self {
            Format::Casia => read_landmark_list(list, root, true)?,
            Format::Lfw | Format::Ytf => read_landmark_list(list, root, false)?,
            Format::MegaFace => read_megaface_list(list, root)?,
        })
    }
}

/// Every `align` param, checked.
#[derive(Debug, Clone)]
pub struct AlignParams {
    /// The layout of `images`.
    pub format: Format,
    /// The landmark list, relative to the dataset root (the format's default when not given).
    pub list: String,
    /// The image root, relative to the dataset root (likewise).
    pub root: String,
    /// How each face is cropped.
    pub crop: Crop,
}

impl AlignParams {
    /// Reads and checks every param; the errors name the param and what it needs.
    pub fn from_params(p: &Params) -> anyhow::Result<AlignParams> {
        let name = p.str("format")?;
        let format =
            Format::named(name).with_context(|| format!("param `format`: unknown format `{name}` (use one of {:?})", Format::NAMES))?;
        let (list, root) = format.defaults();
        let or_default = |key: &str, default: &str| -> anyhow::Result<String> {
            let v = p.str(key)?;
            Ok(if v.is_empty() { default } else { v }.to_owned())
        };
        Ok(AlignParams {
            format,
            list: or_default("list", list)?,
            root: or_default("root", root)?,
            crop: crop(p)?,
        })
    }
}

/// `size`, `reference`, `fit` and `reflective` as a [`Crop`].
fn crop(p: &Params) -> anyhow::Result<Crop> {
    let size: Vec<i64> = p.get("size")?;
    if size.len() != 2 {
        bail!("`size` needs [height, width], got {} values", size.len());
    }
    let reference: Vec<Vec<f64>> = p.get("reference")?;
    if reference.len() != 5 || reference.iter().any(|q| q.len() != 2) {
        bail!("`reference` needs 5 points, each [x, y]");
    }
    let name = p.str("fit")?;
    let method =
        FitMethod::named(name).with_context(|| format!("param `fit`: unknown method `{name}` (use one of {:?})", FitMethod::NAMES))?;
    Ok(Crop {
        reference: reference.into_iter().map(|q| [q[0], q[1]]).collect(),
        method,
        reflective: p.bool("reflective")?,
        height: size[0] as usize,
        width: size[1] as usize,
    })
}
