//! MATLAB's `cp2tform(detected, template, 'similarity')`, the fit behind the crops every
//! published SphereFace model was trained and tested on (`preprocess/code/face_align_demo.m`;
//! the PyTorch port's `matlab_cp2tform.py`).
//!
//! MATLAB does not minimise the error where the crop is made. `findNonreflectiveSimilarity`
//! fits the **detected points from the template points**: it finds (sc, ss, tx, ty) with
//! u ≈ sc·x + ss·y + tx and v ≈ −ss·x + sc·y + ty, (x, y) a template point and (u, v) the
//! detected one, by least squares (`r = X \ U`), and then inverts that map. `'similarity'` also
//! fits the template mirrored in x, un-mirrors the result, and keeps the fit whose residual
//! `norm(tformfwd(T, uv) − xy)` is smaller; MATLAB's `norm` of that M×2 matrix is its largest
//! singular value (numpy's `norm`, used by the Python ports, is the Frobenius norm: the two
//! can pick differently only when the plain and mirrored fits are nearly tied).
//!
//! Compared with Umeyama (least squares in the template's coordinates) the rotation is the
//! same, the scale is never smaller, and the two agree exactly only when the points fit
//! exactly.

use crate::{apply, check_pairs, invert, Affine, Fit, FitError};

/// MATLAB's `'similarity'` (`reflective`) or `'nonreflective similarity'` fit of `src`
/// (detected landmarks) onto `dst` (the template). The result maps `src` to `dst`, in the
/// layout OpenCV's `warpAffine` takes. `'similarity'` needs 3 point pairs, as in MATLAB.
pub fn cp2tform(src: &[[f64; 2]], dst: &[[f64; 2]], reflective: bool) -> Result<Fit, FitError> {
    let n = check_pairs(src, dst, if reflective { 3 } else { 2 })?;
    let (src, dst) = (&src[..n], &dst[..n]);
    let plain = nonreflective(src, dst)?;
    if !reflective {
        return Ok(Fit::new(plain, false, src, dst));
    }
    let mirrored_dst: Vec<[f64; 2]> = dst.iter().map(|p| [-p[0], p[1]]).collect();
    let m = nonreflective(src, &mirrored_dst)?;
    // Undo the mirror on the output side: x' = −x'' (MATLAB's `trans2r * TreflectY`).
    let mirrored = [[-m[0][0], -m[0][1], -m[0][2]], m[1]];
    if residual_norm(&plain, src, dst) <= residual_norm(&mirrored, src, dst) {
        Ok(Fit::new(plain, false, src, dst))
    } else {
        Ok(Fit::new(mirrored, true, src, dst))
    }
}

/// `findNonreflectiveSimilarity(uv = src, xy = dst)`: the least-squares map template → detected,
/// inverted. The normal equations XᵀX r = XᵀU of MATLAB's 2M×4 system decouple once both point
/// sets are centred: with S = Σ(x̃² + ỹ²), sc = Σ(x̃ũ + ỹṽ) / S and ss = Σ(ỹũ − x̃ṽ) / S; the
/// translation follows from the means.
fn nonreflective(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<Affine, FitError> {
    let n = dst.len() as f64;
    let mean = |ps: &[[f64; 2]]| {
        let s = ps.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (mx, mu) = (mean(dst), mean(src));
    let (mut spread, mut raw, mut a, mut b) = (0.0, 0.0, 0.0, 0.0);
    for (p, q) in src.iter().zip(dst) {
        let (x, y) = (q[0] - mx[0], q[1] - mx[1]);
        let (u, v) = (p[0] - mu[0], p[1] - mu[1]);
        spread += x * x + y * y;
        raw += q[0] * q[0] + q[1] * q[1];
        a += x * u + y * v;
        b += y * u - x * v;
    }
    // rank(X) < 4 exactly when the template points coincide (S = 0); allow for rounding.
    if spread <= 1e-20 * (raw + n) {
        return Err(FitError::RankDeficient);
    }
    let (sc, ss) = (a / spread, b / spread);
    let template_to_detected = [
        [sc, ss, mu[0] - sc * mx[0] - ss * mx[1]],
        [-ss, sc, mu[1] + ss * mx[0] - sc * mx[1]],
    ];
    // Coincident detected points give sc = ss = 0: a map with no inverse.
    invert(&template_to_detected).ok_or(FitError::Degenerate)
}

/// MATLAB's `norm(tformfwd(m, src) − dst)`: the spectral norm (largest singular value) of the
/// M×2 residual matrix, i.e. the square root of the larger eigenvalue of its 2×2 Gram matrix.
fn residual_norm(m: &Affine, src: &[[f64; 2]], dst: &[[f64; 2]]) -> f64 {
    let (mut p, mut q, mut r) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let t = apply(m, *s);
        let (dx, dy) = (t[0] - d[0], t[1] - d[1]);
        p += dx * dx;
        q += dx * dy;
        r += dy * dy;
    }
    let half = (p + r) / 2.0;
    (half + (((p - r) / 2.0).powi(2) + q * q).sqrt()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::close;
    use crate::{umeyama, SPHEREFACE_REFERENCE};

    /// Worked on paper: template (0,0), (2,0), (0,2); detected (0,0), (4,0), (0,2).
    /// Centred template: S = 16/3; with the centred detected points Σ(x̃ũ + ỹṽ) = 8 and
    /// Σ(ỹũ − x̃ṽ) = −4/3, so sc = 3/2, ss = −1/4, tx = 1/2, ty = −1/2: template → detected is
    /// [[3/2, −1/4, 1/2], [1/4, 3/2, −1/2]]. Its inverse (det 37/16) is
    /// [[24, 4, −10], [−4, 24, 14]] / 37, which places the detected points at (−10, 14)/37,
    /// (86, −2)/37 and (−2, 62)/37: squared residual (100 + 196 + 144 + 4 + 4 + 144)/37² = 16/37.
    #[test]
    fn a_three_point_example_worked_by_hand() {
        let template = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]];
        let detected = [[0.0, 0.0], [4.0, 0.0], [0.0, 2.0]];
        let want = [[24.0 / 37.0, 4.0 / 37.0, -10.0 / 37.0], [-4.0 / 37.0, 24.0 / 37.0, 14.0 / 37.0]];
        let fit = cp2tform(&detected, &template, false).unwrap();
        assert!(close(&fit.matrix, &want, 1e-12), "{:?}", fit.matrix);
        assert!((fit.rms - (16.0f64 / 37.0 / 3.0).sqrt()).abs() < 1e-12, "{}", fit.rms);
        // The mirrored fit leaves 9 (in detected-space squared units) against the plain fit's 1,
        // so 'similarity' keeps the plain one.
        let refl = cp2tform(&detected, &template, true).unwrap();
        assert!(!refl.reflected && close(&refl.matrix, &want, 1e-12));
        // Umeyama minimises in template space: same rotation (atan 1/6), residual 0.4 < 16/37,
        // and a smaller scale (√0.37 against √592 / 37).
        let u = umeyama(&detected, &template, false).unwrap();
        assert!(close(&u.matrix, &[[0.6, 0.1, -0.2], [-0.1, 0.6, 0.4]], 1e-12), "{:?}", u.matrix);
        assert!((u.rms.powi(2) * 3.0 - 0.4).abs() < 1e-12);
    }

    #[test]
    fn residual_norm_is_the_largest_singular_value() {
        // Residuals (3, 0) and (0, 4): Gram diag(9, 16), so the 2-norm is 4 (Frobenius would be 5).
        let identity = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let n = residual_norm(&identity, &[[3.0, 0.0], [0.0, 4.0]], &[[0.0, 0.0], [0.0, 0.0]]);
        assert!((n - 4.0).abs() < 1e-12, "{n}");
    }

    #[test]
    fn coincident_points_are_errors_not_nans() {
        let same = [[40.0, 40.0]; 5];
        assert_eq!(cp2tform(&SPHEREFACE_REFERENCE, &same, true), Err(FitError::RankDeficient));
        assert_eq!(cp2tform(&same, &SPHEREFACE_REFERENCE, false), Err(FitError::Degenerate));
        assert_eq!(
            cp2tform(&same[..2], &SPHEREFACE_REFERENCE[..2], true),
            Err(FitError::TooFew { got: 2, need: 3 })
        );
        let mut nan = SPHEREFACE_REFERENCE;
        nan[3][1] = f64::NAN;
        assert_eq!(cp2tform(&nan, &SPHEREFACE_REFERENCE, true), Err(FitError::NotFinite(3)));
    }
}
