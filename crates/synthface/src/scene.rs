//! A face as an ordered list of layers, painted back to front over a background gradient.
//!
//! Each layer is a shape with a soft (about one canonical pixel) edge, a paint, and optional
//! links to the layers before it (an iris shows only inside its eye's white, a brow only on
//! the face). Every shape knows the box outside which it covers nothing, so the painter
//! (`raster`) visits only the layers that can reach each part of the image: the cost follows
//! the shapes' areas, not their number times the image's.

/// A colour, 0..255 per channel (before brightness, noise and rounding).
pub(crate) type Rgb = [f64; 3];

/// Linear interpolation from `under` to `over` by `a` (0 keeps `under` exactly).
pub(crate) fn mix(under: Rgb, over: Rgb, a: f64) -> Rgb {
    [
        under[0] + (over[0] - under[0]) * a,
        under[1] + (over[1] - under[1]) * a,
        under[2] + (over[2] - under[2]) * a,
    ]
}

/// A box in the canonical frame, [x0, y0, x1, y1], outside which a layer covers nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bounds(pub [f64; 4]);

impl Bounds {
    /// The box around a centre with half extents.
    fn around(c: [f64; 2], half: [f64; 2]) -> Bounds {
        Bounds([c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1]])
    }

    /// Where both boxes are (possibly empty: x0 > x1 or y0 > y1).
    fn and(self, o: Bounds) -> Bounds {
        let (a, b) = (self.0, o.0);
        Bounds([a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3])])
    }

    /// One canonical pixel more on every side: the edge ramps end exactly on the box, and
    /// rounding must not put a covered point outside it.
    fn padded(self) -> Bounds {
        let b = self.0;
        Bounds([b[0] - 1.0, b[1] - 1.0, b[2] + 1.0, b[3] + 1.0])
    }
}

/// `a` if it is smaller, else `b` (a plain compare and select, which vectorises).
#[inline(always)]
fn lo(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// `a` if it is larger, else `b`.
#[inline(always)]
fn hi(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `v` limited to 0..1.
#[inline(always)]
fn unit(v: f32) -> f32 {
    lo(hi(v, 0.0), 1.0)
}

/// Soft coverage of an axis-aligned ellipse at (x, y): 1 inside, 0 outside, a ~1 px ramp at
/// the edge.
#[inline(always)]
fn ellipse(x: f32, y: f32, c: [f32; 2], rx: f32, ry: f32) -> f32 {
    let (dx, dy) = ((x - c[0]) / rx, (y - c[1]) / ry);
    let d = ((dx * dx + dy * dy).sqrt() - 1.0) * lo(rx, ry);
    unit(0.5 - d)
}

/// The box of `ellipse(…, rx, ry)`: the ramp reaches 0 where (r − 1)·min(rx, ry) = 0.5.
fn ellipse_bounds(c: [f64; 2], rx: f64, ry: f64, smallest_radius: f64) -> Bounds {
    let k = 1.0 + 0.5 / smallest_radius;
    Bounds::around(c, [rx * k, ry * k])
}

/// One shape, in canonical pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    /// An axis-aligned ellipse.
    Ellipse { c: [f64; 2], rx: f64, ry: f64 },
    /// The face: an ellipse wider on the side the head turns to (`near` where
    /// (x − cx)·yaw ≥ 0, `far` elsewhere), narrowing below `chin_top` by up to `chin`.
    Face {
        c: [f64; 2],
        near: f64,
        far: f64,
        ry: f64,
        yaw: f64,
        chin: f64,
        chin_top: f64,
    },
    /// A glasses rim: the outer ellipse less the inner one.
    Ring { c: [f64; 2], outer: [f64; 2], inner: [f64; 2] },
    /// A thick segment from a to b.
    Segment { a: [f64; 2], b: [f64; 2], half_width: f64 },
    /// A rectangle [x, y, w, h] (an occluder).
    Rect([f64; 4]),
}

impl Shape {
    /// How much of each canonical point (xs[i], ys[i]) the shape covers, 0..1, into
    /// `cover[i]`. One loop per kind, without branches inside, so that it vectorises.
    #[inline(always)]
    pub(crate) fn cover(&self, xs: &[f32], ys: &[f32], cover: &mut [f32]) {
        let f = |v: f64| v as f32;
        let points = xs.iter().zip(ys).zip(cover.iter_mut());
        match *self {
            Shape::Ellipse { c, rx, ry } => {
                let (c, rx, ry) = (c.map(f), f(rx), f(ry));
                points.for_each(|((&x, &y), a)| *a = ellipse(x, y, c, rx, ry));
            }
            Shape::Face {
                c,
                near,
                far,
                ry,
                yaw,
                chin,
                chin_top,
            } => {
                let (c, near, far, ry, yaw, chin, top) = (c.map(f), f(near), f(far), f(ry), f(yaw), f(chin), f(chin_top));
                points.for_each(|((&x, &y), a)| {
                    let rx = if (x - c[0]) * yaw >= 0.0 { near } else { far };
                    let narrow = if y > top { 1.0 - chin * unit((y - top) / ry) } else { 1.0 };
                    *a = ellipse(x, y, c, rx * hi(narrow, 0.3), ry);
                });
            }
            Shape::Ring { c, outer, inner } => {
                let (c, outer, inner) = (c.map(f), outer.map(f), inner.map(f));
                points.for_each(|((&x, &y), a)| {
                    *a = hi(ellipse(x, y, c, outer[0], outer[1]) - ellipse(x, y, c, inner[0], inner[1]), 0.0);
                });
            }
            Shape::Segment { a, b, half_width } => {
                let (a, b, reach) = (a.map(f), b.map(f), f(half_width + 0.5));
                let (vx, vy) = (b[0] - a[0], b[1] - a[1]);
                let inv = 1.0 / hi(vx * vx + vy * vy, 1e-9);
                points.for_each(|((&x, &y), c)| {
                    let t = unit(((x - a[0]) * vx + (y - a[1]) * vy) * inv);
                    let (px, py) = (a[0] + t * vx - x, a[1] + t * vy - y);
                    *c = unit(reach - (px * px + py * py).sqrt());
                });
            }
            Shape::Rect(r) => {
                let [x0, y0, w, h] = r.map(f);
                points.for_each(|((&x, &y), a)| *a = unit(lo(lo(x - x0, x0 + w - x), lo(y - y0, y0 + h - y)) + 0.5));
            }
        }
    }

    /// The box outside which `cover` is 0.
    fn bounds(&self) -> Bounds {
        match *self {
            Shape::Ellipse { c, rx, ry } => ellipse_bounds(c, rx, ry, rx.min(ry)),
            Shape::Face { c, near, far, ry, .. } => {
                let widest = near.max(far);
                ellipse_bounds(c, widest, ry, (near.min(far) * 0.3).min(ry))
            }
            Shape::Ring { c, outer, .. } => ellipse_bounds(c, outer[0], outer[1], outer[0].min(outer[1])),
            Shape::Segment { a, b, half_width } => {
                let h = half_width + 0.5;
                Bounds([a[0].min(b[0]) - h, a[1].min(b[1]) - h, a[0].max(b[0]) + h, a[1].max(b[1]) + h])
            }
            Shape::Rect(r) => Bounds([r[0] - 0.5, r[1] - 0.5, r[0] + r[2] + 0.5, r[1] + r[3] + 0.5]),
        }
    }
}

/// A layer's colour: `fixed + lit × light`, where the light varies across the face.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Paint {
    fixed: Rgb,
    lit: Rgb,
}

impl Paint {
    /// The same colour everywhere.
    pub(crate) fn solid(c: Rgb) -> Paint {
        Paint { fixed: c, lit: [0.0; 3] }
    }

    /// A colour that takes the light (skin and its shadows).
    pub(crate) fn lit(c: Rgb) -> Paint {
        Paint { fixed: [0.0; 3], lit: c }
    }

    /// `fixed` plus `lit` under the light.
    pub(crate) fn blend(fixed: Rgb, lit: Rgb) -> Paint {
        Paint { fixed, lit }
    }

    /// Mixes the paint into `rgb` by `cover`, under the light `light` at each point.
    #[inline(always)]
    fn mix_into(&self, cover: &[f32], light: &[f32], rgb: &mut [Vec<f32>; 3]) {
        for (k, channel) in rgb.iter_mut().enumerate() {
            let (fixed, lit) = (self.fixed[k] as f32, self.lit[k] as f32);
            for ((c, &a), &l) in channel.iter_mut().zip(cover).zip(light) {
                *c += (fixed + lit * l - *c) * a;
            }
        }
    }
}

/// A vertical fade of a layer's coverage.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fade {
    /// Full everywhere.
    None,
    /// Gone over `ramp` pixels below `from` (hair cut off below the ears).
    Below { from: f64, ramp: f64 },
    /// Only above `until`, full from `ramp` pixels above it (a fringe).
    Above { until: f64, ramp: f64 },
}

impl Fade {
    /// Multiplies each coverage by the fade at its point's y.
    #[inline(always)]
    fn apply(self, ys: &[f32], cover: &mut [f32]) {
        match self {
            Fade::None => {}
            Fade::Below { from, ramp } => {
                let (from, ramp) = (from as f32, ramp as f32);
                cover.iter_mut().zip(ys).for_each(|(a, &y)| *a *= 1.0 - unit((y - from) / ramp));
            }
            Fade::Above { until, ramp } => {
                let (until, ramp) = (until as f32, ramp as f32);
                cover.iter_mut().zip(ys).for_each(|(a, &y)| *a *= unit((until - y) / ramp));
            }
        }
    }
}

/// Which earlier layer's coverage a later layer is limited to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Slot {
    /// The face (brows, nose, mouth, beard, mole).
    Face,
    /// The white of the image-left eye (its iris and pupil).
    LeftWhite,
    /// The white of the image-right eye.
    RightWhite,
}

/// One layer of the scene.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layer {
    pub(crate) shape: Shape,
    pub(crate) paint: Paint,
    /// A constant factor on the coverage.
    pub(crate) opacity: f64,
    pub(crate) fade: Fade,
    /// Coverage multiplied by this earlier layer's coverage at the same point.
    pub(crate) within: Option<Slot>,
    /// This layer's coverage is what later layers `within` this slot are limited to.
    pub(crate) defines: Option<Slot>,
}

impl Layer {
    /// A plain layer: the shape in one paint.
    pub(crate) fn new(shape: Shape, paint: Paint) -> Layer {
        Layer {
            shape,
            paint,
            opacity: 1.0,
            fade: Fade::None,
            within: None,
            defines: None,
        }
    }

    pub(crate) fn opacity(self, opacity: f64) -> Layer {
        Layer { opacity, ..self }
    }

    pub(crate) fn fade(self, fade: Fade) -> Layer {
        Layer { fade, ..self }
    }

    pub(crate) fn within(self, slot: Slot) -> Layer {
        Layer {
            within: Some(slot),
            ..self
        }
    }

    pub(crate) fn defines(self, slot: Slot) -> Layer {
        Layer {
            defines: Some(slot),
            ..self
        }
    }
}

/// Everything needed to colour a canonical point.
pub(crate) struct Scene {
    /// Top and bottom colours of the background gradient.
    pub(crate) background: (Rgb, Rgb),
    /// The light's slope in x and y, per canonical pixel, around the centre `C`.
    pub(crate) light: [f64; 2],
    /// Multiplies the final colour.
    pub(crate) brightness: f64,
    /// Back to front.
    pub(crate) layers: Vec<Layer>,
    /// Per layer, the canonical box outside which it changes nothing (its shape's box, within
    /// the box of the layer it is limited to, above a fade's end).
    pub(crate) bounds: Vec<Bounds>,
}

/// The centre of the canonical 250×250 frame.
pub(crate) const C: f64 = 125.0;

impl Scene {
    /// A scene of `layers` (back to front); works out each layer's box.
    pub(crate) fn new(background: (Rgb, Rgb), light: [f64; 2], brightness: f64, layers: Vec<Layer>) -> Scene {
        let mut bounds: Vec<Bounds> = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let mut b = l.shape.bounds().padded();
            if let Fade::Above { until, .. } = l.fade {
                b = b.and(Bounds([f64::MIN, f64::MIN, f64::MAX, until + 1.0]));
            }
            if let Some(slot) = l.within {
                // The nearest earlier layer defining the slot: where it covers nothing, the
                // slot is 0 and so is this layer.
                let defining = (0..i).rev().find(|&j| layers[j].defines == Some(slot));
                b = match defining {
                    Some(j) => b.and(bounds[j]),
                    None => Bounds([0.0, 0.0, -1.0, -1.0]),
                };
            }
            bounds.push(b);
        }
        Scene {
            background,
            light,
            brightness,
            layers,
            bounds,
        }
    }

    /// Colours the canonical points (xs[i], ys[i]) into `out.rgb`, with the layers listed in
    /// `visible` (indices into `layers`, in order): any layer left out must cover nothing at
    /// these points.
    #[inline(always)]
    pub(crate) fn shade(&self, visible: &[u16], xs: &[f32], ys: &[f32], out: &mut Shading) {
        let n = xs.len();
        out.resize(n);
        let (top, bottom) = self.background;
        for (k, channel) in out.rgb.iter_mut().enumerate() {
            let (t, b) = (top[k] as f32, bottom[k] as f32);
            channel.iter_mut().zip(ys).for_each(|(c, &y)| *c = t + (b - t) * unit(y / 250.0));
        }
        let (lx, ly, centre) = (self.light[0] as f32, self.light[1] as f32, C as f32);
        for ((l, &x), &y) in out.light.iter_mut().zip(xs).zip(ys) {
            *l = 1.0 + lx * (x - centre) + ly * (y - centre);
        }
        out.slots.iter_mut().for_each(|s| s.fill(0.0));
        for &i in visible {
            let layer = &self.layers[i as usize];
            layer.shape.cover(xs, ys, &mut out.cover);
            layer.fade.apply(ys, &mut out.cover);
            if layer.opacity != 1.0 {
                let o = layer.opacity as f32;
                out.cover.iter_mut().for_each(|a| *a *= o);
            }
            if let Some(s) = layer.within {
                out.cover.iter_mut().zip(&out.slots[s as usize]).for_each(|(a, &w)| *a *= w);
            }
            if let Some(s) = layer.defines {
                out.slots[s as usize].copy_from_slice(&out.cover);
            }
            layer.paint.mix_into(&out.cover, &out.light, &mut out.rgb);
        }
        let b = self.brightness as f32;
        out.rgb.iter_mut().for_each(|channel| channel.iter_mut().for_each(|c| *c *= b));
    }
}

/// Working space for `Scene::shade`, reused from batch to batch.
#[derive(Default)]
pub(crate) struct Shading {
    /// The colours, one plane per channel.
    pub(crate) rgb: [Vec<f32>; 3],
    light: Vec<f32>,
    cover: Vec<f32>,
    slots: [Vec<f32>; 3],
}

impl Shading {
    fn resize(&mut self, n: usize) {
        for v in self
            .rgb
            .iter_mut()
            .chain(self.slots.iter_mut())
            .chain([&mut self.light, &mut self.cover])
        {
            v.resize(n, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coverage at one point.
    fn cover(s: &Shape, x: f64, y: f64) -> f64 {
        let mut a = [0f32];
        s.cover(&[x as f32], &[y as f32], &mut a);
        a[0] as f64
    }

    /// The colour at one point, all layers visible.
    fn colour(scene: &Scene, x: f64, y: f64) -> [f32; 3] {
        let every: Vec<u16> = (0..scene.layers.len() as u16).collect();
        let mut out = Shading::default();
        scene.shade(&every, &[x as f32], &[y as f32], &mut out);
        out.rgb.map(|c| c[0])
    }

    /// Every shape covers nothing outside its box as the scene uses it (padded; probed on a
    /// fine grid around it).
    #[test]
    fn shapes_cover_nothing_outside_their_bounds() {
        let shapes = [
            Shape::Ellipse {
                c: [100.0, 90.0],
                rx: 9.0,
                ry: 0.2,
            },
            Shape::Ellipse {
                c: [40.0, 50.0],
                rx: 2.2,
                ry: 1.4,
            },
            Shape::Face {
                c: [130.0, 133.0],
                near: 55.0,
                far: 35.0,
                ry: 60.0,
                yaw: 0.5,
                chin: 0.35,
                chin_top: 125.0,
            },
            Shape::Ring {
                c: [90.0, 110.0],
                outer: [17.0, 13.0],
                inner: [15.4, 11.4],
            },
            Shape::Segment {
                a: [80.0, 90.0],
                b: [70.0, 95.0],
                half_width: 2.0,
            },
            Shape::Rect([60.0, 70.0, 30.0, 12.0]),
        ];
        for s in shapes {
            let b = s.bounds().padded().0;
            let (mut inside, mut y) = (0, b[1] - 20.0);
            while y < b[3] + 20.0 {
                let mut x = b[0] - 20.0;
                while x < b[2] + 20.0 {
                    let a = cover(&s, x, y);
                    let outside = x < b[0] || x > b[2] || y < b[1] || y > b[3];
                    assert!(!(outside && a > 0.0), "{s:?} covers ({x}, {y}) by {a} outside {b:?}");
                    inside += usize::from(a > 0.0);
                    x += 0.05;
                }
                y += 0.05;
            }
            assert!(inside > 0, "{s:?} covers something");
        }
    }

    /// The closed forms: an ellipse is half covered on its rim, fully a pixel and more inside, not at all half a pixel out.
    #[test]
    fn an_ellipse_ramps_over_one_pixel_at_its_rim() {
        let s = Shape::Ellipse {
            c: [0.0, 0.0],
            rx: 10.0,
            ry: 5.0,
        };
        assert!((cover(&s, 10.0, 0.0) - 0.5).abs() < 1e-6);
        assert!((cover(&s, 0.0, 5.0) - 0.5).abs() < 1e-6);
        assert_eq!(cover(&s, 8.0, 0.0), 1.0);
        assert_eq!(cover(&s, 0.0, 5.5), 0.0);
    }

    /// A layer limited to a slot shows only where the defining layer covers, and its box is
    /// inside that layer's.
    #[test]
    fn a_layer_within_a_slot_shows_only_over_it() {
        let white = Layer::new(
            Shape::Ellipse {
                c: [50.0, 50.0],
                rx: 8.0,
                ry: 4.0,
            },
            Paint::solid([235.0; 3]),
        )
        .defines(Slot::LeftWhite);
        let iris = Layer::new(
            Shape::Ellipse {
                c: [50.0, 50.0],
                rx: 6.0,
                ry: 6.0,
            },
            Paint::solid([0.0; 3]),
        )
        .within(Slot::LeftWhite);
        let scene = Scene::new(([100.0; 3], [100.0; 3]), [0.0; 2], 1.0, vec![white, iris]);
        assert_eq!(colour(&scene, 50.0, 50.0), [0.0; 3], "the iris over the white");
        assert_eq!(colour(&scene, 50.0, 55.5), [100.0; 3], "no iris off the white");
        let (w, i) = (scene.bounds[0].0, scene.bounds[1].0);
        assert!(i[1] >= w[1] && i[3] <= w[3], "{i:?} within {w:?}");
    }
}
