//! Geometry for face alignment: fit a similarity transform from detected landmarks to a
//! reference template (MATLAB's `cp2tform`, as the published SphereFace models were trained,
//! or Umeyama's), and warp an image with it the way OpenCV's `warpAffine` does.
//!
//! Kept free of image-file and pipeline concerns so the maths can be tested on its own.

#![warn(missing_docs)]

mod cp2tform;
mod umeyama;
mod warp;

pub use cp2tform::cp2tform;
pub use umeyama::umeyama;
pub use warp::warp_affine;

/// The SphereFace 5-point template for a 96-wide, 112-high crop: left eye, right eye, nose
/// tip, left and right mouth corners (from the paper's public alignment code).
pub const SPHEREFACE_REFERENCE: [[f64; 2]; 5] = [
    [30.2946, 51.6963],
    [65.5318, 51.5014],
    [48.0252, 71.7366],
    [33.5493, 92.3655],
    [62.7299, 92.2041],
];

/// insightface's 5-point template in its 112×112 crops (ArcFace and the packs it distributes):
/// the SphereFace template moved 8 pixels right, so the central 112×96 of such a crop is the
/// SphereFace framing.
pub const ARCFACE_REFERENCE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2×3 affine matrix `[[a, b, c], [d, e, f]]` mapping (x, y) to (a x + b y + c, d x + e y + f),
/// the layout OpenCV's `warpAffine` takes.
pub type Affine = [[f64; 3]; 2];

/// Why no similarity could be fitted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    /// A coordinate is NaN or infinite.
    #[error("landmark {0} is not a finite number")]
    NotFinite(usize),
    /// Fewer point pairs than the fit needs.
    #[error("need at least {need} point pairs, got {got}")]
    TooFew {
        /// Pairs given.
        got: usize,
        /// Pairs the fit needs (2; 3 for MATLAB's reflective `'similarity'`).
        need: usize,
    },
    /// The detected points collapse to one point: no scale can be fitted.
    #[error("the landmarks are degenerate (all at one point), so no scale can be fitted")]
    Degenerate,
    /// The template points coincide, so MATLAB's system `X r = U` has rank below 4.
    #[error("the reference points coincide (rank-deficient system): give at least two distinct reference points")]
    RankDeficient,
}

/// Result of a fit: the transform (detected → template), its root-mean-square residual in
/// template pixels, and whether the mirrored fit won.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Maps detected landmarks to the template.
    pub matrix: Affine,
    /// √(mean squared distance) between mapped landmarks and the template, in template pixels.
    pub rms: f64,
    /// The fit includes a mirror.
    pub reflected: bool,
}

impl Fit {
    fn new(matrix: Affine, reflected: bool, src: &[[f64; 2]], dst: &[[f64; 2]]) -> Fit {
        let sq: f64 = src
            .iter()
            .zip(dst)
            .map(|(p, q)| {
                let t = apply(&matrix, *p);
                (t[0] - q[0]).powi(2) + (t[1] - q[1]).powi(2)
            })
            .sum();
        Fit {
            matrix,
            rms: (sq / src.len() as f64).sqrt(),
            reflected,
        }
    }

    /// The uniform scale of the fit: √|det| of its linear part.
    pub fn scale(&self) -> f64 {
        let m = &self.matrix;
        (m[0][0] * m[1][1] - m[0][1] * m[1][0]).abs().sqrt()
    }
}

/// Which least-squares convention fits the similarity. The two agree when the landmarks fit
/// the template exactly and differ otherwise (by a fraction of a pixel on typical faces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitMethod {
    /// MATLAB's `cp2tform`: least squares of the detected points on the template, inverted.
    /// What the published SphereFace models were trained on.
    Cp2tform,
    /// Umeyama: least squares in the template's coordinates (insightface, scikit-image).
    Umeyama,
}

impl FitMethod {
    /// The names a pipeline file uses.
    pub const NAMES: [&'static str; 2] = ["cp2tform", "umeyama"];

    /// The method called `name` in a pipeline file, if any.
    pub fn named(name: &str) -> Option<FitMethod> {
        match name {
            "cp2tform" => Some(FitMethod::Cp2tform),
            "umeyama" => Some(FitMethod::Umeyama),
            _ => None,
        }
    }

    /// Its name in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            FitMethod::Cp2tform => "cp2tform",
            FitMethod::Umeyama => "umeyama",
        }
    }

    /// Fits the similarity taking `src` (detected) onto `dst` (template); with `reflective`,
    /// a mirrored fit is tried too and kept if it fits better.
    pub fn fit(self, src: &[[f64; 2]], dst: &[[f64; 2]], reflective: bool) -> Result<Fit, FitError> {
        match self {
            FitMethod::Cp2tform => cp2tform(src, dst, reflective),
            FitMethod::Umeyama => umeyama(src, dst, reflective),
        }
    }
}

/// Checks the point pairs a fit gets: at least `need` of them, all finite. Returns how many
/// pairs there are (the shorter list decides).
fn check_pairs(src: &[[f64; 2]], dst: &[[f64; 2]], need: usize) -> Result<usize, FitError> {
    let n = src.len().min(dst.len());
    if n < need {
        return Err(FitError::TooFew { got: n, need });
    }
    match src[..n]
        .iter()
        .chain(&dst[..n])
        .position(|p| !p[0].is_finite() || !p[1].is_finite())
    {
        Some(i) => Err(FitError::NotFinite(i % n)),
        None => Ok(n),
    }
}

/// Applies an affine matrix to a point.
pub fn apply(m: &Affine, p: [f64; 2]) -> [f64; 2] {
    [m[0][0] * p[0] + m[0][1] * p[1] + m[0][2], m[1][0] * p[0] + m[1][1] * p[1] + m[1][2]]
}

/// The inverse of an affine matrix, or `None` if it is singular.
pub fn invert(m: &Affine) -> Option<Affine> {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let (a, b, d, e) = (m[1][1] / det, -m[0][1] / det, -m[1][0] / det, m[0][0] / det);
    Some([[a, b, -(a * m[0][2] + b * m[1][2])], [d, e, -(d * m[0][2] + e * m[1][2])]])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn similarity(s: f64, theta: f64, t: [f64; 2]) -> Affine {
        let (c, si) = (s * theta.cos(), s * theta.sin());
        [[c, -si, t[0]], [si, c, t[1]]]
    }

    pub(crate) fn close(a: &Affine, b: &Affine, tol: f64) -> bool {
        (0..2).all(|r| (0..3).all(|c| (a[r][c] - b[r][c]).abs() < tol))
    }

    #[test]
    fn invert_undoes_apply() {
        let m = similarity(2.5, -1.1, [40.0, -7.0]);
        let inv = invert(&m).unwrap();
        let p = [13.0, 71.5];
        let back = apply(&inv, apply(&m, p));
        assert!((back[0] - p[0]).abs() < 1e-12 && (back[1] - p[1]).abs() < 1e-12);
        assert_eq!(invert(&[[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]]), None);
    }

    #[test]
    fn methods_are_named_as_in_pipeline_files() {
        for name in FitMethod::NAMES {
            assert_eq!(FitMethod::named(name).map(FitMethod::name), Some(name));
            assert!(FitMethod::named(name).is_some(), "{name}");
        }
        assert_eq!(FitMethod::named("procrustes"), None);
        assert!((Fit::new(similarity(2.5, 0.3, [1.0, 2.0]), false, &[], &[]).scale() - 2.5).abs() < 1e-12);
    }
}
