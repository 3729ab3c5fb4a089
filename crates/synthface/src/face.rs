//! Drawing one synthetic face: an identity (stable geometry and colours) under one
//! variation (pose, lighting, expression, blur, noise, occlusion), with its 5 landmarks.
//!
//! Shapes are defined in a canonical 250×250 frame and rendered by mapping each output pixel
//! back into that frame, with soft (anti-aliased) edges.

use spherepipe_rng::Rng;

type Rgb = [f64; 3];

/// Everything that stays the same across one person's images.
#[derive(Clone, Debug)]
pub struct Identity {
    face_rx: f64,
    face_ry: f64,
    chin: f64,
    skin: Rgb,
    hair: Rgb,
    hair_top: f64,
    hair_side: f64,
    eye_dx: f64,
    eye_y: f64,
    eye_rx: f64,
    eye_ry: f64,
    iris: Rgb,
    brow_gap: f64,
    brow_thick: f64,
    brow_tilt: f64,
    nose_y: f64,
    nose_w: f64,
    mouth_y: f64,
    mouth_w: f64,
    mouth_h: f64,
    lip: Rgb,
    mole: Option<(f64, f64, f64)>,
    glasses: bool,
    beard: bool,
}

const C: f64 = 125.0; // centre of the canonical frame

fn tone(r: &mut Rng, base: Rgb, spread: f64) -> Rgb {
    let k = r.range(-spread, spread);
    [
        (base[0] + k + r.range(-12.0, 12.0)).clamp(0.0, 255.0),
        (base[1] + k + r.range(-12.0, 12.0)).clamp(0.0, 255.0),
        (base[2] + k + r.range(-12.0, 12.0)).clamp(0.0, 255.0),
    ]
}

impl Identity {
    /// The identity drawn from `seed` (the same seed always gives the same person).
    pub fn new(seed: u64) -> Self {
        let mut r = Rng::derive(seed, &[0x1D]);
        let skins = [
            [236.0, 200.0, 170.0],
            [205.0, 160.0, 125.0],
            [160.0, 110.0, 80.0],
            [110.0, 75.0, 55.0],
            [225.0, 185.0, 150.0],
        ];
        let hairs = [
            [30.0, 25.0, 20.0],
            [90.0, 60.0, 35.0],
            [180.0, 140.0, 80.0],
            [120.0, 120.0, 120.0],
            [60.0, 35.0, 25.0],
            [200.0, 190.0, 170.0],
        ];
        let irises = [[70.0, 45.0, 25.0], [60.0, 100.0, 150.0], [80.0, 110.0, 70.0], [40.0, 30.0, 25.0]];
        let face_rx = r.range(40.0, 52.0);
        let face_ry = r.range(52.0, 64.0);
        let eye_y = C - r.range(8.0, 18.0);
        let nose_y = eye_y + r.range(20.0, 30.0);
        let (skin, hair, iris) = (*r.pick(&skins), *r.pick(&hairs), *r.pick(&irises));
        Identity {
            face_rx,
            face_ry,
            chin: r.range(0.0, 0.35),
            skin: tone(&mut r, skin, 15.0),
            hair: tone(&mut r, hair, 10.0),
            hair_top: r.range(0.05, 0.35),
            hair_side: r.range(0.0, 1.0),
            eye_dx: face_rx * r.range(0.36, 0.46),
            eye_y,
            eye_rx: r.range(6.0, 9.5),
            eye_ry: r.range(3.0, 5.0),
            iris: tone(&mut r, iris, 10.0),
            brow_gap: r.range(7.0, 12.0),
            brow_thick: r.range(1.5, 3.5),
            brow_tilt: r.range(-0.25, 0.25),
            nose_y,
            nose_w: r.range(6.0, 11.0),
            mouth_y: nose_y + r.range(14.0, 22.0),
            mouth_w: r.range(24.0, 36.0),
            mouth_h: r.range(3.0, 6.5),
            lip: tone(&mut r, [170.0, 90.0, 90.0], 25.0),
            mole: r
                .chance(0.4)
                .then(|| (r.range(-30.0, 30.0), r.range(-10.0, 40.0), r.range(1.2, 2.5))),
            glasses: r.chance(0.2),
            beard: r.chance(0.2),
        }
    }
}

/// How one image of a person differs from the others.
#[derive(Clone, Debug)]
pub struct Variation {
    /// In-plane rotation, degrees.
    pub angle: f64,
    /// Size relative to the canonical face.
    pub scale: f64,
    /// Offset of the face centre, in canonical pixels.
    pub shift: [f64; 2],
    /// Head turn, -1..1: features slide sideways and the far side narrows.
    pub yaw: f64,
    /// Overall brightness factor.
    pub brightness: f64,
    /// Direction the light falls from, in the image plane.
    pub light: [f64; 2],
    /// How far the mouth corners rise, 0..1.
    pub smile: f64,
    /// How far the mouth opens, 0..1.
    pub mouth_open: f64,
    /// How open the eyes are, 0..1.
    pub eye_open: f64,
    /// Box-blur radius in pixels.
    pub blur: f64,
    /// Pixel noise, standard deviation in grey levels.
    pub noise: f64,
    /// A rectangle [x, y, w, h] in canonical pixels painted over the face (sunglasses, a hand), and its colour.
    pub occlusion: Option<([f64; 4], Rgb)>,
    /// The background gradient's two colours.
    pub background: (Rgb, Rgb),
    /// Landmark detector error, in pixels (standard deviation).
    pub landmark_noise: f64,
}

impl Variation {
    /// A random variation; `strength` in 0..=1 scales how hard the image is.
    pub fn draw(r: &mut Rng, strength: f64) -> Self {
        let s = strength;
        Variation {
            angle: r.normal() * 0.14 * s,
            scale: (1.0 + r.normal() * 0.08 * s).clamp(0.75, 1.3),
            shift: [r.normal() * 8.0 * s, r.normal() * 8.0 * s],
            yaw: (r.normal() * 0.25 * s).clamp(-0.6, 0.6),
            brightness: (1.0 + r.normal() * 0.15 * s).clamp(0.5, 1.5),
            light: [r.normal() * 0.25 * s, r.normal() * 0.15 * s],
            smile: r.range(-0.3, 1.0) * s,
            mouth_open: if r.chance(0.3 * s) { r.range(0.2, 1.0) } else { 0.0 },
            eye_open: if r.chance(0.08 * s) { r.range(0.1, 0.4) } else { r.range(0.8, 1.1) },
            blur: if r.chance(0.4 * s) { r.range(0.3, 1.6) } else { 0.0 },
            noise: r.range(0.0, 6.0) * s,
            occlusion: r.chance(0.15 * s).then(|| {
                let (w, h) = (r.range(20.0, 70.0), r.range(12.0, 40.0));
                let (x, y) = (r.range(C - 60.0, C + 60.0 - w), r.range(C - 40.0, C + 70.0 - h));
                ([x, y, w, h], [r.range(0.0, 255.0), r.range(0.0, 255.0), r.range(0.0, 255.0)])
            }),
            background: (
                [r.range(40.0, 230.0), r.range(40.0, 230.0), r.range(40.0, 230.0)],
                [r.range(40.0, 230.0), r.range(40.0, 230.0), r.range(40.0, 230.0)],
            ),
            landmark_noise: 0.8 * s,
        }
    }
}

/// Soft inside-ness of an ellipse (1 inside, 0 outside, ~1 px ramp at the edge).
fn ellipse(x: f64, y: f64, cx: f64, cy: f64, rx: f64, ry: f64) -> f64 {
    let (dx, dy) = ((x - cx) / rx, (y - cy) / ry);
    let d = ((dx * dx + dy * dy).sqrt() - 1.0) * rx.min(ry);
    (0.5 - d).clamp(0.0, 1.0)
}

/// Soft coverage of a thick segment from a to b.
fn segment(x: f64, y: f64, a: [f64; 2], b: [f64; 2], half_width: f64) -> f64 {
    let (vx, vy) = (b[0] - a[0], b[1] - a[1]);
    let t = (((x - a[0]) * vx + (y - a[1]) * vy) / (vx * vx + vy * vy).max(1e-9)).clamp(0.0, 1.0);
    let (px, py) = (a[0] + t * vx - x, a[1] + t * vy - y);
    (half_width + 0.5 - (px * px + py * py).sqrt()).clamp(0.0, 1.0)
}

fn mix(under: Rgb, over: Rgb, a: f64) -> Rgb {
    [
        under[0] + (over[0] - under[0]) * a,
        under[1] + (over[1] - under[1]) * a,
        under[2] + (over[2] - under[2]) * a,
    ]
}

/// Feature positions after the yaw shift, in the canonical frame.
struct Layout {
    face_cx: f64,
    face_rx_near: f64,
    face_rx_far: f64,
    eyes: [[f64; 2]; 2],
    nose: [f64; 2],
    mouth: [[f64; 2]; 2],
}

fn layout(id: &Identity, v: &Variation) -> Layout {
    let yaw = v.yaw;
    let sx = |x: f64| C + (x - C) * (1.0 - 0.25 * yaw.abs()) + yaw * 16.0;
    let smile_lift = 3.0 * v.smile;
    Layout {
        face_cx: C + yaw * 6.0,
        face_rx_near: id.face_rx * (1.0 + 0.1 * yaw.abs()),
        face_rx_far: id.face_rx * (1.0 - 0.3 * yaw.abs()),
        eyes: [[sx(C - id.eye_dx), id.eye_y], [sx(C + id.eye_dx), id.eye_y]],
        nose: [sx(C) + yaw * 6.0, id.nose_y],
        mouth: [
            [sx(C - id.mouth_w / 2.0), id.mouth_y - smile_lift],
            [sx(C + id.mouth_w / 2.0), id.mouth_y - smile_lift],
        ],
    }
}

/// Colour of the face scene at canonical point (x, y), before lighting of the background.
fn shade(id: &Identity, v: &Variation, l: &Layout, x: f64, y: f64) -> Rgb {
    let (bg0, bg1) = v.background;
    let mut c = mix(bg0, bg1, (y / 250.0).clamp(0.0, 1.0));
    // Hair: a larger ellipse behind the head, cut off below the ears.
    let hair_rx = id.face_rx * (1.08 + 0.25 * id.hair_side);
    let hair_ry = id.face_ry * (1.05 + id.hair_top);
    let hair_cy = C - id.face_ry * id.hair_top * 0.9;
    let below = ((y - (C + id.face_ry * (0.1 + 0.6 * id.hair_side))) / 4.0).clamp(0.0, 1.0);
    c = mix(c, id.hair, ellipse(x, y, l.face_cx, hair_cy, hair_rx, hair_ry) * (1.0 - below));
    // Face: wider on the near side when turned, pointier chin.
    let rx = if (x - l.face_cx) * v.yaw >= 0.0 {
        l.face_rx_near
    } else {
        l.face_rx_far
    };
    let chin_narrow = if y > C {
        1.0 - id.chin * ((y - C) / id.face_ry).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let face = ellipse(x, y, l.face_cx, C + 8.0, rx * chin_narrow.max(0.3), id.face_ry);
    let light = 1.0 + v.light[0] * (x - C) / id.face_rx + v.light[1] * (y - C) / id.face_ry;
    let skin = [id.skin[0] * light, id.skin[1] * light, id.skin[2] * light];
    c = mix(c, skin, face);
    // Fringe over the forehead.
    let fringe = ellipse(x, y, l.face_cx, hair_cy - 2.0, id.face_rx * 1.02, id.face_ry * (0.55 + id.hair_top))
        * ((C - id.face_ry * 0.55 - y) / 3.0).clamp(0.0, 1.0);
    c = mix(c, id.hair, fringe * face);
    if id.beard {
        let b = ellipse(x, y, l.face_cx, l.mouth[0][1] + 8.0, id.mouth_w * 0.9, 22.0) * face;
        c = mix(c, mix(id.hair, skin, 0.35), b * 0.85);
    }
    // Eyes, irises, pupils, brows.
    for (k, e) in l.eyes.iter().enumerate() {
        let open = v.eye_open.clamp(0.05, 1.2);
        let white = ellipse(x, y, e[0], e[1], id.eye_rx, id.eye_ry * open);
        c = mix(c, [235.0, 235.0, 230.0], white);
        let look = v.yaw * 2.0;
        c = mix(
            c,
            id.iris,
            white * ellipse(x, y, e[0] + look, e[1], id.eye_ry * 0.95, id.eye_ry * 0.95),
        );
        c = mix(
            c,
            [15.0, 10.0, 10.0],
            white * ellipse(x, y, e[0] + look, e[1], id.eye_ry * 0.4, id.eye_ry * 0.4),
        );
        let side = if k == 0 { -1.0 } else { 1.0 };
        let by = e[1] - id.brow_gap;
        let tilt = id.brow_tilt * side * id.eye_rx;
        let brow = segment(
            x,
            y,
            [e[0] - id.eye_rx * 1.1, by + tilt],
            [e[0] + id.eye_rx * 1.1, by - tilt],
            id.brow_thick,
        );
        c = mix(c, mix(id.hair, [20.0, 15.0, 10.0], 0.3), brow * face);
        if id.glasses {
            let outer = ellipse(x, y, e[0], e[1], id.eye_rx * 1.9, id.eye_rx * 1.5);
            let inner = ellipse(x, y, e[0], e[1], id.eye_rx * 1.9 - 1.6, id.eye_rx * 1.5 - 1.6);
            c = mix(c, [25.0, 25.0, 30.0], (outer - inner).max(0.0));
        }
    }
    if id.glasses {
        c = mix(
            c,
            [25.0, 25.0, 30.0],
            segment(
                x,
                y,
                [l.eyes[0][0] + id.eye_rx * 1.9, l.eyes[0][1]],
                [l.eyes[1][0] - id.eye_rx * 1.9, l.eyes[1][1]],
                0.8,
            ),
        );
    }
    // Nose: a soft shadow along the bridge, nostrils at the tip.
    let shadow = [skin[0] * 0.7, skin[1] * 0.7, skin[2] * 0.7];
    let bridge = segment(
        x,
        y,
        [l.nose[0] - 2.0, l.eyes[0][1] + 6.0],
        [l.nose[0] + v.yaw * 3.0, l.nose[1]],
        id.nose_w * 0.12,
    );
    c = mix(c, shadow, bridge * 0.6 * face);
    for s in [-1.0, 1.0] {
        c = mix(
            c,
            [skin[0] * 0.45, skin[1] * 0.4, skin[2] * 0.4],
            ellipse(x, y, l.nose[0] + s * id.nose_w * 0.45, l.nose[1] + 2.0, 2.2, 1.4) * face,
        );
    }
    // Mouth: lips between the corners, bowed by the smile, dark inside when open.
    let (m0, m1) = (l.mouth[0], l.mouth[1]);
    let mcx = (m0[0] + m1[0]) / 2.0;
    let mcy = (m0[1] + m1[1]) / 2.0 + 3.0 * v.smile;
    let half_w = (m1[0] - m0[0]) / 2.0;
    let open = v.mouth_open * 6.0;
    c = mix(c, id.lip, ellipse(x, y, mcx, mcy, half_w, id.mouth_h + open) * face);
    if open > 0.0 {
        c = mix(c, [50.0, 20.0, 25.0], ellipse(x, y, mcx, mcy, half_w * 0.8, open * 0.8) * face);
    }
    if let Some((mx, my, mr)) = id.mole {
        c = mix(c, [70.0, 45.0, 35.0], ellipse(x, y, l.face_cx + mx, C + my, mr, mr) * face);
    }
    c
}

/// A rendered image (interleaved RGB, row-major) and its landmarks: left eye, right eye,
/// nose tip, left mouth corner, right mouth corner (image left/right), in pixels.
pub struct Rendered {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// width × height × 3 bytes.
    pub rgb: Vec<u8>,
    /// The five landmarks, (x, y) in pixels.
    pub landmarks: [[f64; 2]; 5],
}

/// Renders `id` under `v` into a `width`×`height` image, the canonical frame centred and
/// scaled by `zoom` (1.0 puts the 250-pixel canonical frame on 250 pixels).
pub fn render(id: &Identity, v: &Variation, width: usize, height: usize, zoom: f64, noise_seed: u64) -> Rendered {
    let l = layout(id, v);
    let s = v.scale * zoom;
    let (cos, sin) = (v.angle.cos() * s, v.angle.sin() * s);
    let (ox, oy) = (width as f64 / 2.0 + v.shift[0] * zoom, height as f64 / 2.0 + v.shift[1] * zoom);
    // canonical -> image: p = R*s*(q - C) + o
    let fwd = |q: [f64; 2]| [cos * (q[0] - C) - sin * (q[1] - C) + ox, sin * (q[0] - C) + cos * (q[1] - C) + oy];
    let mut buf = vec![0f64; width * height * 3];
    for py in 0..height {
        for px in 0..width {
            let (dx, dy) = (px as f64 - ox, py as f64 - oy);
            // inverse rotation/scale
            let x = (cos * dx + sin * dy) / (s * s) + C;
            let y = (-sin * dx + cos * dy) / (s * s) + C;
            let mut c = shade(id, v, &l, x, y);
            if let Some((r, col)) = &v.occlusion {
                let inside = ((x - r[0]).min(r[0] + r[2] - x).min(y - r[1]).min(r[1] + r[3] - y) + 0.5).clamp(0.0, 1.0);
                c = mix(c, *col, inside);
            }
            let o = (py * width + px) * 3;
            for k in 0..3 {
                buf[o + k] = c[k] * v.brightness;
            }
        }
    }
    if v.blur > 0.0 {
        gaussian_blur(&mut buf, width, height, v.blur);
    }
    let mut r = Rng::new(noise_seed);
    let rgb = buf
        .iter()
        .map(|&x| (x + r.normal() * v.noise).round().clamp(0.0, 255.0) as u8)
        .collect();
    let truth = [l.eyes[0], l.eyes[1], l.nose, l.mouth[0], l.mouth[1]];
    let landmarks = truth.map(|q| {
        let p = fwd(q);
        [p[0] + r.normal() * v.landmark_noise, p[1] + r.normal() * v.landmark_noise]
    });
    Rendered {
        width,
        height,
        rgb,
        landmarks,
    }
}

/// Separable Gaussian blur of an interleaved RGB float image (edges clamped).
fn gaussian_blur(buf: &mut [f64], w: usize, h: usize, sigma: f64) {
    let radius = (sigma * 3.0).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f64 = kernel.iter().sum();
    let mut tmp = vec![0f64; buf.len()];
    // Pass 0: horizontal, buf -> tmp. Pass 1: vertical, tmp -> buf.
    for pass in 0..2 {
        let (src, dst): (&[f64], &mut [f64]) = if pass == 0 { (&*buf, &mut tmp) } else { (&tmp, &mut *buf) };
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut acc = 0.0;
                    for (k, wgt) in kernel.iter().enumerate() {
                        let off = k as isize - radius;
                        let (sx, sy) = if pass == 0 {
                            ((x as isize + off).clamp(0, w as isize - 1) as usize, y)
                        } else {
                            (x, (y as isize + off).clamp(0, h as isize - 1) as usize)
                        };
                        acc += wgt * src[(sy * w + sx) * 3 + c];
                    }
                    dst[(y * w + x) * 3 + c] = acc / norm;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landmarks_follow_the_pose() {
        let id = Identity::new(3);
        let mut v = Variation::draw(&mut Rng::new(1), 0.0);
        v.landmark_noise = 0.0;
        let a = render(&id, &v, 250, 250, 1.0, 0);
        // Rotating by 90 degrees about the image centre maps (x, y) to (250 - y, x) (y down).
        v.angle = std::f64::consts::FRAC_PI_2;
        let b = render(&id, &v, 250, 250, 1.0, 0);
        for k in 0..5 {
            let (p, q) = (a.landmarks[k], b.landmarks[k]);
            assert!(
                (q[0] - (250.0 - p[1])).abs() < 1e-9 && (q[1] - p[0]).abs() < 1e-9,
                "{k}: {p:?} -> {q:?}"
            );
        }
        // Left eye left of right eye, eyes above nose above mouth.
        let m = a.landmarks;
        assert!(m[0][0] < m[1][0] && m[3][0] < m[4][0]);
        assert!(m[0][1] < m[2][1] && m[2][1] < m[3][1]);
    }

    #[test]
    fn the_eye_landmark_sits_on_the_pupil() {
        let id = Identity::new(11);
        let mut v = Variation::draw(&mut Rng::new(2), 0.0);
        v.landmark_noise = 0.0;
        let img = render(&id, &v, 250, 250, 1.0, 0);
        for e in &img.landmarks[..2] {
            let o = ((e[1].round() as usize) * 250 + e[0].round() as usize) * 3;
            let lum: u32 = img.rgb[o..o + 3].iter().map(|&c| c as u32).sum();
            assert!(lum < 3 * 60, "pupil pixel is not dark: {:?}", &img.rgb[o..o + 3]);
        }
    }

    #[test]
    fn identities_differ_and_repeat() {
        let v = Variation::draw(&mut Rng::new(5), 0.5);
        let a = render(&Identity::new(1), &v, 64, 64, 0.25, 9).rgb;
        assert_eq!(a, render(&Identity::new(1), &v, 64, 64, 0.25, 9).rgb);
        assert_ne!(a, render(&Identity::new(2), &v, 64, 64, 0.25, 9).rgb);
    }

    #[test]
    fn blur_preserves_a_constant_image_and_smooths_an_edge() {
        let (w, h) = (9, 3);
        let mut flat = vec![100.0; w * h * 3];
        gaussian_blur(&mut flat, w, h, 1.0);
        assert!(flat.iter().all(|x| (x - 100.0).abs() < 1e-9));
        let mut step: Vec<f64> = (0..w * h * 3).map(|i| if (i / 3) % w < 4 { 0.0 } else { 255.0 }).collect();
        gaussian_blur(&mut step, w, h, 1.0);
        let row: Vec<f64> = (0..w).map(|x| step[(w + x) * 3]).collect();
        assert!(
            row.windows(2).all(|p| p[0] <= p[1] + 1e-9) && row[3] > 0.0 && row[4] < 255.0,
            "{row:?}"
        );
    }
}
