//! Geometry for face alignment: fit a similarity transform from detected landmarks to a
//! reference template, and warp an image with it the way OpenCV's `warpAffine` does.
//!
//! Kept free of image-file and pipeline concerns so the maths can be tested on its own.

mod warp;

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

/// A 2×3 affine matrix `[[a, b, c], [d, e, f]]` mapping (x, y) to (a x + b y + c, d x + e y + f),
/// the layout OpenCV's `warpAffine` takes.
pub type Affine = [[f64; 3]; 2];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error("landmark {0} is not a finite number")]
    NotFinite(usize),
    #[error("need at least 2 point pairs, got {0}")]
    TooFew(usize),
    #[error("the landmarks are degenerate (all at one point), so no scale can be fitted")]
    Degenerate,
}

/// Result of a fit: the transform and its root-mean-square residual in target pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub matrix: Affine,
    pub rms: f64,
    pub reflected: bool,
}

/// Least-squares similarity (rotation, uniform scale, translation) taking `src` onto `dst`:
/// Umeyama's closed form, which in 2D needs no SVD. With `reflective`, the best fit with a
/// mirror is tried too and the better one kept, as MATLAB's `cp2tform(..., 'similarity')`
/// does in the original SphereFace preprocessing.
pub fn fit_similarity(src: &[[f64; 2]], dst: &[[f64; 2]], reflective: bool) -> Result<Fit, FitError> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return Err(FitError::TooFew(n));
    }
    for (i, p) in src.iter().chain(dst.iter()).enumerate() {
        if !p[0].is_finite() || !p[1].is_finite() {
            return Err(FitError::NotFinite(i % n));
        }
    }
    let mean = |ps: &[[f64; 2]]| {
        let (sx, sy) = ps[..n].iter().fold((0.0, 0.0), |(a, b), p| (a + p[0], b + p[1]));
        [sx / n as f64, sy / n as f64]
    };
    let (ms, md) = (mean(src), mean(dst));
    // Covariance terms of centred points and the source variance.
    let (mut sxx, mut sxy, mut syx, mut syy, mut var) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (src[i][0] - ms[0], src[i][1] - ms[1]);
        let (u, v) = (dst[i][0] - md[0], dst[i][1] - md[1]);
        sxx += u * x;
        sxy += u * y;
        syx += v * x;
        syy += v * y;
        var += x * x + y * y;
    }
    if var <= 1e-12 * n as f64 {
        return Err(FitError::Degenerate);
    }
    let build = |a: f64, b: f64, reflect: bool| -> Fit {
        // rotation: [[a, -b], [b, a]]; reflection: [[a, b], [b, -a]] (scale folded in).
        let (m00, m01, m10, m11) = if reflect { (a, b, b, -a) } else { (a, -b, b, a) };
        let matrix = [
            [m00, m01, md[0] - m00 * ms[0] - m01 * ms[1]],
            [m10, m11, md[1] - m10 * ms[0] - m11 * ms[1]],
        ];
        let sq: f64 = (0..n)
            .map(|i| {
                let p = apply(&matrix, src[i]);
                (p[0] - dst[i][0]).powi(2) + (p[1] - dst[i][1]).powi(2)
            })
            .sum();
        Fit {
            matrix,
            rms: (sq / n as f64).sqrt(),
            reflected: reflect,
        }
    };
    // Minimising over (a, b) is linear: a = (sxx + syy) / var, b = (syx - sxy) / var.
    let plain = build((sxx + syy) / var, (syx - sxy) / var, false);
    if !reflective {
        return Ok(plain);
    }
    let mirrored = build((sxx - syy) / var, (sxy + syx) / var, true);
    Ok(if mirrored.rms < plain.rms { mirrored } else { plain })
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
mod tests {
    use super::*;

    fn similarity(s: f64, theta: f64, t: [f64; 2]) -> Affine {
        let (c, si) = (s * theta.cos(), s * theta.sin());
        [[c, -si, t[0]], [si, c, t[1]]]
    }

    fn close(a: &Affine, b: &Affine, tol: f64) -> bool {
        (0..2).all(|r| (0..3).all(|c| (a[r][c] - b[r][c]).abs() < tol))
    }

    #[test]
    fn an_exact_similarity_is_recovered() {
        let truth = similarity(0.37, 0.4, [12.5, -3.25]);
        let src = [[101.0, 120.0], [150.0, 118.0], [127.0, 150.0], [105.0, 180.0], [148.0, 181.0]];
        let dst: Vec<[f64; 2]> = src.iter().map(|p| apply(&truth, *p)).collect();
        let fit = fit_similarity(&src, &dst, false).unwrap();
        assert!(close(&fit.matrix, &truth, 1e-9), "{:?}", fit.matrix);
        assert!(fit.rms < 1e-9);
    }

    #[test]
    fn the_fit_is_a_least_squares_minimum() {
        // Noisy landmarks: no exact fit. Moving any of the 4 parameters a little must not
        // lower the squared residual (checked by finite differences, independent of the formula).
        let src = [[98.3, 121.7], [151.2, 117.4], [125.9, 152.8], [103.1, 179.6], [149.4, 182.9]];
        let dst = SPHEREFACE_REFERENCE;
        let fit = fit_similarity(&src, &dst, false).unwrap();
        let cost = |a: f64, b: f64, tx: f64, ty: f64| -> f64 {
            let m = [[a, -b, tx], [b, a, ty]];
            src.iter()
                .zip(dst.iter())
                .map(|(p, q)| {
                    let r = apply(&m, *p);
                    (r[0] - q[0]).powi(2) + (r[1] - q[1]).powi(2)
                })
                .sum()
        };
        let m = fit.matrix;
        let (a, b, tx, ty) = (m[0][0], m[1][0], m[0][2], m[1][2]);
        let base = cost(a, b, tx, ty);
        let h = 1e-6;
        for (i, g) in [
            (cost(a + h, b, tx, ty) - cost(a - h, b, tx, ty)) / (2.0 * h),
            (cost(a, b + h, tx, ty) - cost(a, b - h, tx, ty)) / (2.0 * h),
            (cost(a, b, tx + h, ty) - cost(a, b, tx - h, ty)) / (2.0 * h),
            (cost(a, b, tx, ty + h) - cost(a, b, tx, ty - h)) / (2.0 * h),
        ]
        .iter()
        .enumerate()
        {
            assert!(g.abs() < 1e-3, "d cost / d param {i} = {g}");
        }
        assert!((fit.rms - (base / 5.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn reflective_fitting_finds_a_mirrored_face() {
        // Mirror the template about x = 48 and shift: only a reflection maps it back exactly.
        let src: Vec<[f64; 2]> = SPHEREFACE_REFERENCE.iter().map(|p| [96.0 - p[0] + 20.0, p[1] + 7.0]).collect();
        let plain = fit_similarity(&src, &SPHEREFACE_REFERENCE, false).unwrap();
        let refl = fit_similarity(&src, &SPHEREFACE_REFERENCE, true).unwrap();
        assert!(refl.reflected && refl.rms < 1e-9, "{refl:?}");
        assert!(!plain.reflected && plain.rms > 1.0);
        // An unmirrored face keeps the plain fit.
        let same = fit_similarity(&SPHEREFACE_REFERENCE, &SPHEREFACE_REFERENCE, true).unwrap();
        assert!(!same.reflected && same.rms < 1e-12);
    }

    #[test]
    fn bad_landmarks_are_errors() {
        let nan = [[f64::NAN, 1.0], [2.0, 3.0]];
        assert_eq!(fit_similarity(&nan, &[[0.0, 0.0], [1.0, 1.0]], false), Err(FitError::NotFinite(0)));
        let same = [[5.0, 5.0]; 5];
        assert_eq!(fit_similarity(&same, &SPHEREFACE_REFERENCE, true), Err(FitError::Degenerate));
        assert_eq!(fit_similarity(&[[1.0, 1.0]], &[[1.0, 1.0]], false), Err(FitError::TooFew(1)));
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
}
