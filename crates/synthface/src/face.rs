//! Drawing one synthetic face: an identity (stable geometry and colours) under one
//! variation (pose, lighting, expression, blur, noise, occlusion), with its 5 landmarks.
//!
//! Shapes are defined in a canonical 250×250 frame (`scene`) and rendered by mapping each
//! output pixel back into that frame, with soft (anti-aliased) edges (`raster`).

use crate::raster::{self, Frame, Placement};
use crate::scene::{mix, Fade, Layer, Paint, Rgb, Scene, Shape, Slot, C};
use spherepipe_rng::Rng;

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

impl Identity {
    /// A relative of `founder`: this person's geometry and colours moved `closeness` of the
    /// way toward the founder's (0: themselves, 1: a twin), glasses and beard taken from the
    /// founder when closer than half; the mole stays this person's own. The `hard` preset's
    /// look-alike families.
    pub fn relative_of(&self, founder: &Identity, closeness: f64) -> Identity {
        let k = closeness.clamp(0.0, 1.0);
        let f = |own: f64, theirs: f64| own + (theirs - own) * k;
        let c = |own: Rgb, theirs: Rgb| [0, 1, 2].map(|i| f(own[i], theirs[i]));
        let close = k > 0.5;
        Identity {
            face_rx: f(self.face_rx, founder.face_rx),
            face_ry: f(self.face_ry, founder.face_ry),
            chin: f(self.chin, founder.chin),
            skin: c(self.skin, founder.skin),
            hair: c(self.hair, founder.hair),
            hair_top: f(self.hair_top, founder.hair_top),
            hair_side: f(self.hair_side, founder.hair_side),
            eye_dx: f(self.eye_dx, founder.eye_dx),
            eye_y: f(self.eye_y, founder.eye_y),
            eye_rx: f(self.eye_rx, founder.eye_rx),
            eye_ry: f(self.eye_ry, founder.eye_ry),
            iris: c(self.iris, founder.iris),
            brow_gap: f(self.brow_gap, founder.brow_gap),
            brow_thick: f(self.brow_thick, founder.brow_thick),
            brow_tilt: f(self.brow_tilt, founder.brow_tilt),
            nose_y: f(self.nose_y, founder.nose_y),
            nose_w: f(self.nose_w, founder.nose_w),
            mouth_y: f(self.mouth_y, founder.mouth_y),
            mouth_w: f(self.mouth_w, founder.mouth_w),
            mouth_h: f(self.mouth_h, founder.mouth_h),
            lip: c(self.lip, founder.lip),
            mole: self.mole,
            glasses: if close { founder.glasses } else { self.glasses },
            beard: if close { founder.beard } else { self.beard },
        }
    }

    /// The same person `years` older: hair greying and receding, skin paler, brows thinner,
    /// the face a little longer and the eyes narrower (for the age stand-ins of the
    /// verification bins; the corpus itself never ages anyone).
    pub fn aged(&self, years: f64) -> Identity {
        let k = (years / 40.0).clamp(0.0, 1.0);
        let toward = |c: Rgb, to: Rgb, w: f64| [0, 1, 2].map(|i| c[i] + (to[i] - c[i]) * w);
        Identity {
            hair: toward(self.hair, [185.0, 185.0, 185.0], 0.85 * k),
            hair_top: (self.hair_top - 0.2 * k).max(0.0),
            skin: toward(self.skin, [225.0, 205.0, 195.0], 0.25 * k),
            brow_thick: self.brow_thick * (1.0 - 0.4 * k),
            face_ry: self.face_ry + 3.0 * k,
            eye_ry: self.eye_ry * (1.0 - 0.25 * k),
            lip: toward(self.lip, self.skin, 0.3 * k),
            ..self.clone()
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
    /// Years older than the person's own identity (the `hard` presets; 0 elsewhere).
    pub age: f64,
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
            age: 0.0,
        }
    }
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

/// The face as layers, back to front: hair, face, fringe, beard, eyes (white, iris, pupil,
/// brow, glasses rim), the glasses' bridge, nose, mouth, mole, and any occluder.
fn scene(id: &Identity, v: &Variation, l: &Layout) -> Scene {
    let skin = id.skin;
    let mut layers = Vec::with_capacity(24);
    // Hair: a larger ellipse behind the head, cut off below the ears.
    let hair_cy = C - id.face_ry * id.hair_top * 0.9;
    let hair = Shape::Ellipse {
        c: [l.face_cx, hair_cy],
        rx: id.face_rx * (1.08 + 0.25 * id.hair_side),
        ry: id.face_ry * (1.05 + id.hair_top),
    };
    let below_ears = C + id.face_ry * (0.1 + 0.6 * id.hair_side);
    layers.push(Layer::new(hair, Paint::solid(id.hair)).fade(Fade::Below {
        from: below_ears,
        ramp: 4.0,
    }));
    // Face: wider on the near side when turned, pointier chin.
    let face = Shape::Face {
        c: [l.face_cx, C + 8.0],
        near: l.face_rx_near,
        far: l.face_rx_far,
        ry: id.face_ry,
        yaw: v.yaw,
        chin: id.chin,
        chin_top: C,
    };
    layers.push(Layer::new(face, Paint::lit(skin)).defines(Slot::Face));
    // Fringe over the forehead.
    let fringe = Shape::Ellipse {
        c: [l.face_cx, hair_cy - 2.0],
        rx: id.face_rx * 1.02,
        ry: id.face_ry * (0.55 + id.hair_top),
    };
    let fringe_end = C - id.face_ry * 0.55;
    layers.push(
        Layer::new(fringe, Paint::solid(id.hair))
            .fade(Fade::Above {
                until: fringe_end,
                ramp: 3.0,
            })
            .within(Slot::Face),
    );
    if id.beard {
        let beard = Shape::Ellipse {
            c: [l.face_cx, l.mouth[0][1] + 8.0],
            rx: id.mouth_w * 0.9,
            ry: 22.0,
        };
        let colour = Paint::blend(id.hair.map(|c| c * 0.65), skin.map(|c| c * 0.35));
        layers.push(Layer::new(beard, colour).opacity(0.85).within(Slot::Face));
    }
    for (k, e) in l.eyes.iter().enumerate() {
        eye(&mut layers, id, v, *e, k);
    }
    if id.glasses {
        let bridge = Shape::Segment {
            a: [l.eyes[0][0] + id.eye_rx * 1.9, l.eyes[0][1]],
            b: [l.eyes[1][0] - id.eye_rx * 1.9, l.eyes[1][1]],
            half_width: 0.8,
        };
        layers.push(Layer::new(bridge, Paint::solid(FRAME)));
    }
    nose_and_mouth(&mut layers, id, v, l);
    if let Some((mx, my, mr)) = id.mole {
        let mole = Shape::Ellipse {
            c: [l.face_cx + mx, C + my],
            rx: mr,
            ry: mr,
        };
        layers.push(Layer::new(mole, Paint::solid([70.0, 45.0, 35.0])).within(Slot::Face));
    }
    if let Some((r, colour)) = v.occlusion {
        layers.push(Layer::new(Shape::Rect(r), Paint::solid(colour)));
    }
    let light = [v.light[0] / id.face_rx, v.light[1] / id.face_ry];
    Scene::new(v.background, light, v.brightness, layers)
}

/// The colour of glasses' frames.
const FRAME: Rgb = [25.0, 25.0, 30.0];

/// One eye (`k` 0 is the image-left one): white, iris and pupil within it, the brow on the
/// face, and a glasses rim.
fn eye(layers: &mut Vec<Layer>, id: &Identity, v: &Variation, e: [f64; 2], k: usize) {
    let white_slot = if k == 0 { Slot::LeftWhite } else { Slot::RightWhite };
    let open = v.eye_open.clamp(0.05, 1.2);
    let white = Shape::Ellipse {
        c: e,
        rx: id.eye_rx,
        ry: id.eye_ry * open,
    };
    layers.push(Layer::new(white, Paint::solid([235.0, 235.0, 230.0])).defines(white_slot));
    let look = [e[0] + v.yaw * 2.0, e[1]];
    for (size, colour) in [(0.95, id.iris), (0.4, [15.0, 10.0, 10.0])] {
        let disc = Shape::Ellipse {
            c: look,
            rx: id.eye_ry * size,
            ry: id.eye_ry * size,
        };
        layers.push(Layer::new(disc, Paint::solid(colour)).within(white_slot));
    }
    let side = if k == 0 { -1.0 } else { 1.0 };
    let (by, tilt) = (e[1] - id.brow_gap, id.brow_tilt * side * id.eye_rx);
    let brow = Shape::Segment {
        a: [e[0] - id.eye_rx * 1.1, by + tilt],
        b: [e[0] + id.eye_rx * 1.1, by - tilt],
        half_width: id.brow_thick,
    };
    let brow_colour = mix(id.hair, [20.0, 15.0, 10.0], 0.3);
    layers.push(Layer::new(brow, Paint::solid(brow_colour)).within(Slot::Face));
    if id.glasses {
        let (rx, ry) = (id.eye_rx * 1.9, id.eye_rx * 1.5);
        let rim = Shape::Ring {
            c: e,
            outer: [rx, ry],
            inner: [rx - 1.6, ry - 1.6],
        };
        layers.push(Layer::new(rim, Paint::solid(FRAME)));
    }
}

/// The nose (a soft shadow along the bridge, nostrils at the tip) and the mouth (lips between
/// the corners, bowed by the smile, dark inside when open), all on the face.
fn nose_and_mouth(layers: &mut Vec<Layer>, id: &Identity, v: &Variation, l: &Layout) {
    let skin = id.skin;
    let bridge = Shape::Segment {
        a: [l.nose[0] - 2.0, l.eyes[0][1] + 6.0],
        b: [l.nose[0] + v.yaw * 3.0, l.nose[1]],
        half_width: id.nose_w * 0.12,
    };
    layers.push(
        Layer::new(bridge, Paint::lit(skin.map(|c| c * 0.7)))
            .opacity(0.6)
            .within(Slot::Face),
    );
    for s in [-1.0, 1.0] {
        let nostril = Shape::Ellipse {
            c: [l.nose[0] + s * id.nose_w * 0.45, l.nose[1] + 2.0],
            rx: 2.2,
            ry: 1.4,
        };
        let dark = Paint::lit([skin[0] * 0.45, skin[1] * 0.4, skin[2] * 0.4]);
        layers.push(Layer::new(nostril, dark).within(Slot::Face));
    }
    let (m0, m1) = (l.mouth[0], l.mouth[1]);
    let centre = [(m0[0] + m1[0]) / 2.0, (m0[1] + m1[1]) / 2.0 + 3.0 * v.smile];
    let half_w = (m1[0] - m0[0]) / 2.0;
    let open = v.mouth_open * 6.0;
    let lips = Shape::Ellipse {
        c: centre,
        rx: half_w,
        ry: id.mouth_h + open,
    };
    layers.push(Layer::new(lips, Paint::solid(id.lip)).within(Slot::Face));
    if open > 0.0 {
        let inside = Shape::Ellipse {
            c: centre,
            rx: half_w * 0.8,
            ry: open * 0.8,
        };
        layers.push(Layer::new(inside, Paint::solid([50.0, 20.0, 25.0])).within(Slot::Face));
    }
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
/// scaled by `zoom` (1.0 puts the 250-pixel canonical frame on 250 pixels). `noise_seed`
/// draws the pixel noise and the landmark detector's error.
pub fn render(id: &Identity, v: &Variation, width: usize, height: usize, zoom: f64, noise_seed: u64) -> Rendered {
    let l = layout(id, v);
    let origin = [width as f64 / 2.0 + v.shift[0] * zoom, height as f64 / 2.0 + v.shift[1] * zoom];
    let place = Placement::new(v.angle, v.scale * zoom, origin);
    let rgb = raster::pixels(&Frame {
        scene: &scene(id, v, &l),
        place: &place,
        size: [width, height],
        blur: v.blur,
        noise: v.noise,
        seed: noise_seed,
    });
    let mut r = Rng::derive(noise_seed, &[0x1A]);
    let truth = [l.eyes[0], l.eyes[1], l.nose, l.mouth[0], l.mouth[1]];
    let landmarks = truth.map(|q| {
        let p = place.to_image(q);
        [p[0] + r.normal() * v.landmark_noise, p[1] + r.normal() * v.landmark_noise]
    });
    Rendered {
        width,
        height,
        rgb,
        landmarks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ageing_greys_the_hair_by_the_years_and_no_years_change_nothing() {
        let id = Identity::new(11);
        let young = id.aged(0.0);
        assert_eq!(format!("{young:?}"), format!("{id:?}"));
        let old = id.aged(30.0);
        // 30 of 40 years: the hair 0.85 × 0.75 of the way to grey 185.
        for c in 0..3 {
            let want = id.hair[c] + (185.0 - id.hair[c]) * 0.85 * 0.75;
            assert!((old.hair[c] - want).abs() < 1e-9);
        }
        assert!(old.brow_thick < id.brow_thick && old.face_ry > id.face_ry && old.hair_top <= id.hair_top);
        // The rendered pictures differ; the landmarks of the same pose barely move.
        let v = Variation::draw(&mut Rng::new(2), 0.0);
        let (a, b) = (render(&id, &v, 250, 250, 1.0, 0), render(&old, &v, 250, 250, 1.0, 0));
        assert_ne!(a.rgb, b.rgb);
        assert!((a.landmarks[0][0] - b.landmarks[0][0]).abs() < 1e-9);
    }

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

    /// The AVX2 build of the pixel loops gives the portable build's bytes (blur and noise
    /// included), so the corpus does not depend on the machine's CPU.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_portable_pixels_are_the_same_bytes() {
        if !std::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        for k in 0..24u64 {
            let id = Identity::new(k);
            let mut v = Variation::draw(&mut Rng::new(300 + k), 1.0);
            v.blur = [0.0, 0.7, 1.6][k as usize % 3];
            v.noise = [0.0, 3.5][k as usize % 2];
            let l = layout(&id, &v);
            let s = scene(&id, &v, &l);
            let place = Placement::new(v.angle, v.scale, [125.0 + v.shift[0], 125.0 + v.shift[1]]);
            let mut scratch = raster::Scratch::default();
            let frame = Frame {
                scene: &s,
                place: &place,
                size: [250, 250],
                blur: v.blur,
                noise: v.noise,
                seed: k,
            };
            let portable = raster::pixels_portable(&mut scratch, &frame);
            // SAFETY: the CPU has AVX2, checked above.
            let avx2 = unsafe { raster::pixels_avx2(&mut scratch, &frame) };
            assert!(portable == avx2, "face {k}");
        }
    }

    /// Culling by tiles changes nothing: every pixel equals the scene's colour with all its
    /// layers evaluated there (bit for bit), for faces under many variations.
    #[test]
    fn tiles_paint_exactly_what_every_layer_everywhere_paints() {
        for k in 0..40u64 {
            let id = Identity::new(k);
            let mut v = Variation::draw(&mut Rng::new(100 + k), 1.0);
            if k % 5 == 0 {
                v.occlusion = Some(([100.0, 120.0, 50.0, 20.0], [10.0, 200.0, 30.0]));
            }
            let (w, h, zoom) = if k % 2 == 0 { (250, 250, 1.0) } else { (320, 240, 0.8) };
            let l = layout(&id, &v);
            let s = scene(&id, &v, &l);
            let origin = [w as f64 / 2.0 + v.shift[0] * zoom, h as f64 / 2.0 + v.shift[1] * zoom];
            let place = Placement::new(v.angle, v.scale * zoom, origin);
            let (mut tiled, mut every) = (raster::Scratch::default(), raster::Scratch::default());
            raster::paint_tiles(&mut tiled, &s, &place, [w, h], true);
            raster::paint_tiles(&mut every, &s, &place, [w, h], false);
            for (c, (a, b)) in tiled.image().rgb.iter().zip(&every.image().rgb).enumerate() {
                if let Some(p) = (0..a.len()).find(|&p| a[p] != b[p]) {
                    panic!("face {k}, channel {c}, pixel ({}, {}): {} vs {}", p % w, p / w, a[p], b[p]);
                }
            }
        }
    }
}
