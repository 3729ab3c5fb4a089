//! `cp2tform` against a literal transcription of MATLAB's algorithm, written here without
//! calling the code under test: the 2M×4 system `X r = U` of `findNonreflectiveSimilarity`
//! solved by Householder QR (what MATLAB's backslash does for an overdetermined system), `Tinv`
//! as a 3×3 row-vector matrix inverted by Gauss–Jordan elimination, `findSimilarity`'s mirrored
//! fit through `TreflectY`, and `norm` of the residual as the largest singular value (a Jacobi
//! rotation of the 2×2 Gram matrix).

use spherepipe_face_geometry::{cp2tform, umeyama, Affine, FitError, SPHEREFACE_REFERENCE};
use spherepipe_rng::Rng;

type M3 = [[f64; 3]; 3];

/// Least squares of an m×4 system by Householder QR.
fn qr_solve(mut a: Vec<[f64; 4]>, mut b: Vec<f64>) -> [f64; 4] {
    let m = a.len();
    for k in 0..4 {
        let norm = (k..m).map(|i| a[i][k] * a[i][k]).sum::<f64>().sqrt();
        let alpha = if a[k][k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..m).map(|i| a[i][k]).collect();
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv == 0.0 {
            continue;
        }
        // Reflect the remaining columns and the right-hand side: x -= 2 v (v·x) / (v·v).
        for j in k..4 {
            let d: f64 = a[k..].iter().zip(&v).map(|(row, vi)| vi * row[j]).sum::<f64>() * 2.0 / vv;
            for (row, vi) in a[k..].iter_mut().zip(&v) {
                row[j] -= d * vi;
            }
        }
        let d: f64 = b[k..].iter().zip(&v).map(|(bi, vi)| vi * bi).sum::<f64>() * 2.0 / vv;
        for (bi, vi) in b[k..].iter_mut().zip(&v) {
            *bi -= d * vi;
        }
    }
    let mut r = [0.0; 4];
    for k in (0..4).rev() {
        let s: f64 = (k + 1..4).map(|j| a[k][j] * r[j]).sum();
        r[k] = (b[k] - s) / a[k][k];
    }
    r
}

fn inv3(m: &M3) -> M3 {
    let mut a = *m;
    let mut out = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for c in 0..3 {
        let p = (c..3).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        out.swap(c, p);
        let d = a[c][c];
        for j in 0..3 {
            a[c][j] /= d;
            out[c][j] /= d;
        }
        for i in (0..3).filter(|&i| i != c) {
            let f = a[i][c];
            for j in 0..3 {
                a[i][j] -= f * a[c][j];
                out[i][j] -= f * out[c][j];
            }
        }
    }
    out
}

fn mul3(a: &M3, b: &M3) -> M3 {
    let mut o = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            o[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    o
}

/// `findNonreflectiveSimilarity(uv, xy)`: T, mapping uv to xy in MATLAB's row-vector form.
fn find_nonreflective_similarity(uv: &[[f64; 2]], xy: &[[f64; 2]]) -> M3 {
    let mut x_rows = Vec::new();
    let mut u_col = Vec::new();
    for p in xy {
        x_rows.push([p[0], p[1], 1.0, 0.0]);
    }
    for p in xy {
        x_rows.push([p[1], -p[0], 0.0, 1.0]);
    }
    u_col.extend(uv.iter().map(|p| p[0]));
    u_col.extend(uv.iter().map(|p| p[1]));
    let [sc, ss, tx, ty] = qr_solve(x_rows, u_col);
    let tinv = [[sc, -ss, 0.0], [ss, sc, 0.0], [tx, ty, 1.0]];
    let mut t = inv3(&tinv);
    for row in &mut t {
        row[2] = 0.0;
    }
    t[2][2] = 1.0;
    t
}

fn tformfwd(t: &M3, uv: &[[f64; 2]]) -> Vec<[f64; 2]> {
    uv.iter()
        .map(|p| [p[0] * t[0][0] + p[1] * t[1][0] + t[2][0], p[0] * t[0][1] + p[1] * t[1][1] + t[2][1]])
        .collect()
}

/// MATLAB `norm(A)` of an M×2 matrix: the largest singular value.
fn matlab_norm(a: &[[f64; 2]]) -> f64 {
    let g00: f64 = a.iter().map(|r| r[0] * r[0]).sum();
    let g01: f64 = a.iter().map(|r| r[0] * r[1]).sum();
    let g11: f64 = a.iter().map(|r| r[1] * r[1]).sum();
    if g01 == 0.0 {
        return g00.max(g11).sqrt();
    }
    // One Jacobi rotation diagonalises a symmetric 2×2 matrix.
    let theta = (g11 - g00) / (2.0 * g01);
    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
    let (e0, e1) = (g00 - t * g01, g11 + t * g01);
    e0.max(e1).sqrt()
}

/// `findSimilarity(uv, xy)`; returns T and whether the mirrored fit won.
fn find_similarity(uv: &[[f64; 2]], xy: &[[f64; 2]]) -> (M3, bool) {
    let trans1 = find_nonreflective_similarity(uv, xy);
    let xy_r: Vec<[f64; 2]> = xy.iter().map(|p| [-p[0], p[1]]).collect();
    let trans2r = find_nonreflective_similarity(uv, &xy_r);
    let treflect_y = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let trans2 = mul3(&trans2r, &treflect_y);
    let residual = |t: &M3| -> Vec<[f64; 2]> { tformfwd(t, uv).iter().zip(xy).map(|(a, b)| [a[0] - b[0], a[1] - b[1]]).collect() };
    if matlab_norm(&residual(&trans1)) <= matlab_norm(&residual(&trans2)) {
        (trans1, false)
    } else {
        (trans2, true)
    }
}

/// MATLAB's row-vector T as OpenCV's 2×3 (`cvt_tform_mat_for_cv2`: the first two columns, transposed).
fn to_opencv(t: &M3) -> Affine {
    [[t[0][0], t[1][0], t[2][0]], [t[0][1], t[1][1], t[2][1]]]
}

fn max_diff(a: &Affine, b: &Affine) -> f64 {
    (0..2)
        .flat_map(|r| (0..3).map(move |c| (a[r][c] - b[r][c]).abs()))
        .fold(0.0, f64::max)
}

/// Detected landmarks: the template under a random similarity (scale 0.3–3, rotation ±60°,
/// translation), mirrored when asked, plus Gaussian noise of `noise` pixels.
fn random_face(rng: &mut Rng, mirrored: bool, noise: f64) -> Vec<[f64; 2]> {
    let (s, th) = (rng.range(0.3, 3.0), rng.range(-60f64.to_radians(), 60f64.to_radians()));
    let (tx, ty) = (rng.range(-100.0, 300.0), rng.range(-100.0, 300.0));
    SPHEREFACE_REFERENCE
        .iter()
        .map(|p| {
            let x = if mirrored { 96.0 - p[0] } else { p[0] };
            let (c, si) = (s * th.cos(), s * th.sin());
            [
                c * x - si * p[1] + tx + noise * s * rng.normal(),
                si * x + c * p[1] + ty + noise * s * rng.normal(),
            ]
        })
        .collect()
}

#[test]
fn matches_the_matlab_algorithm_on_random_noisy_faces() {
    let mut rng = Rng::new(2017);
    let (mut mirrored_wins, mut worst) = (0, 0.0f64);
    for case in 0..400 {
        let mirrored = case % 4 == 3;
        let noise = [0.0, 0.5, 2.0, 5.0][case % 4];
        let detected = random_face(&mut rng, mirrored, noise);
        let (t, won) = find_similarity(&detected, &SPHEREFACE_REFERENCE);
        let fit = cp2tform(&detected, &SPHEREFACE_REFERENCE, true).unwrap();
        let d = max_diff(&fit.matrix, &to_opencv(&t));
        worst = worst.max(d);
        assert!(d < 1e-9, "case {case}: {:?} vs MATLAB {:?}", fit.matrix, to_opencv(&t));
        assert_eq!(fit.reflected, won, "case {case}");
        if mirrored {
            assert!(fit.reflected, "case {case}: a mirrored face must take the reflective fit");
            mirrored_wins += 1;
        }
        // 'nonreflective similarity' is the first half of the same algorithm.
        let plain = cp2tform(&detected, &SPHEREFACE_REFERENCE, false).unwrap();
        let want = to_opencv(&find_nonreflective_similarity(&detected, &SPHEREFACE_REFERENCE));
        assert!(max_diff(&plain.matrix, &want) < 1e-9, "case {case}");
    }
    assert_eq!(mirrored_wins, 100);
    eprintln!("largest difference from the MATLAB transcription: {worst:.2e}");
}

#[test]
fn exact_similarities_give_the_umeyama_matrix() {
    let mut rng = Rng::new(5);
    for case in 0..100 {
        let detected = random_face(&mut rng, case % 2 == 1, 0.0);
        let c = cp2tform(&detected, &SPHEREFACE_REFERENCE, true).unwrap();
        let u = umeyama(&detected, &SPHEREFACE_REFERENCE, true).unwrap();
        assert!(
            max_diff(&c.matrix, &u.matrix) < 1e-9,
            "case {case}: {:?} vs {:?}",
            c.matrix,
            u.matrix
        );
        assert_eq!(c.reflected, u.reflected);
        assert!(c.rms < 1e-9);
    }
}

#[test]
fn on_noisy_faces_cp2tform_keeps_the_rotation_and_never_shrinks_the_scale() {
    // sc/ss fit in opposite directions are related by Cauchy–Schwarz: the angle is the same and
    // cp2tform's scale is at least Umeyama's, equal only for an exact fit.
    let mut rng = Rng::new(11);
    for case in 0..200 {
        let detected = random_face(&mut rng, false, 3.0);
        let c = cp2tform(&detected, &SPHEREFACE_REFERENCE, false).unwrap();
        let u = umeyama(&detected, &SPHEREFACE_REFERENCE, false).unwrap();
        let angle = |m: &Affine| m[1][0].atan2(m[0][0]);
        assert!((angle(&c.matrix) - angle(&u.matrix)).abs() < 1e-9, "case {case}");
        assert!(c.scale() > u.scale(), "case {case}: {} vs {}", c.scale(), u.scale());
        // Umeyama is the least-squares optimum in template space; cp2tform is not.
        assert!(u.rms <= c.rms + 1e-12, "case {case}");
    }
}

#[test]
fn a_rank_deficient_template_is_an_error() {
    let detected = [[10.0, 20.0], [30.0, 22.0], [19.0, 35.0]];
    let template = [[7.5, 7.5]; 3];
    assert_eq!(cp2tform(&detected, &template, true), Err(FitError::RankDeficient));
    assert_eq!(cp2tform(&detected, &template, false), Err(FitError::RankDeficient));
}
