//! Umeyama's closed-form similarity: least squares **in the template's coordinates**, the
//! convention of insightface and scikit-image (`SimilarityTransform.estimate`).

use crate::{check_pairs, Fit, FitError};

/// Least-squares similarity (rotation, uniform scale, translation) taking `src` onto `dst`,
/// minimising the squared distances in `dst`'s coordinates. Umeyama's closed form needs no SVD
/// in 2D. With `reflective`, the best fit with a mirror is tried too and the one with the
/// smaller residual kept.
pub fn umeyama(src: &[[f64; 2]], dst: &[[f64; 2]], reflective: bool) -> Result<Fit, FitError> {
    let n = check_pairs(src, dst, 2)?;
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
        Fit::new(matrix, reflect, &src[..n], &dst[..n])
    };
    // Minimising over (a, b) is linear: a = (sxx + syy) / var, b = (syx - sxy) / var.
    let plain = build((sxx + syy) / var, (syx - sxy) / var, false);
    if !reflective {
        return Ok(plain);
    }
    let mirrored = build((sxx - syy) / var, (sxy + syx) / var, true);
    Ok(if mirrored.rms < plain.rms { mirrored } else { plain })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply;
    use crate::tests::{close, similarity};
    use crate::SPHEREFACE_REFERENCE;

    #[test]
    fn an_exact_similarity_is_recovered() {
        let truth = similarity(0.37, 0.4, [12.5, -3.25]);
        let src = [[101.0, 120.0], [150.0, 118.0], [127.0, 150.0], [105.0, 180.0], [148.0, 181.0]];
        let dst: Vec<[f64; 2]> = src.iter().map(|p| apply(&truth, *p)).collect();
        let fit = umeyama(&src, &dst, false).unwrap();
        assert!(close(&fit.matrix, &truth, 1e-9), "{:?}", fit.matrix);
        assert!(fit.rms < 1e-9);
    }

    #[test]
    fn the_fit_is_a_least_squares_minimum_in_template_coordinates() {
        // Noisy landmarks: no exact fit. Moving any of the 4 parameters a little must not
        // lower the squared residual (checked by finite differences, independent of the formula).
        let src = [[98.3, 121.7], [151.2, 117.4], [125.9, 152.8], [103.1, 179.6], [149.4, 182.9]];
        let dst = SPHEREFACE_REFERENCE;
        let fit = umeyama(&src, &dst, false).unwrap();
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
        let plain = umeyama(&src, &SPHEREFACE_REFERENCE, false).unwrap();
        let refl = umeyama(&src, &SPHEREFACE_REFERENCE, true).unwrap();
        assert!(refl.reflected && refl.rms < 1e-9, "{refl:?}");
        assert!(!plain.reflected && plain.rms > 1.0);
        // An unmirrored face keeps the plain fit.
        let same = umeyama(&SPHEREFACE_REFERENCE, &SPHEREFACE_REFERENCE, true).unwrap();
        assert!(!same.reflected && same.rms < 1e-12);
    }

    #[test]
    fn bad_landmarks_are_errors() {
        let nan = [[f64::NAN, 1.0], [2.0, 3.0]];
        assert_eq!(umeyama(&nan, &[[0.0, 0.0], [1.0, 1.0]], false), Err(FitError::NotFinite(0)));
        let same = [[5.0, 5.0]; 5];
        assert_eq!(umeyama(&same, &SPHEREFACE_REFERENCE, true), Err(FitError::Degenerate));
        assert_eq!(
            umeyama(&[[1.0, 1.0]], &[[1.0, 1.0]], false),
            Err(FitError::TooFew { got: 1, need: 2 })
        );
    }
}
