//! MTCNN's cascade (Zhang et al., 2016, "Joint Face Detection and Alignment using Multi-task
//! Cascaded Convolutional Networks") around the three networks of `spherepipe_nn::mtcnn`:
//! an image pyramid, P-Net over every scale, non-maximum suppression within and across
//! scales, box regression, square-up and clipping, R-Net and O-Net on resampled crops, and a
//! last suppression by the smaller box's area. The arithmetic follows facenet-pytorch's
//! `detect_face` (the port whose weights we read), in f32 as it computes, so the boxes and
//! points agree with it to within resampling noise.
//!
//! Steps, each a function below: [`scales`] → [`resample_area`] → P-Net → [`cells_to_boxes`]
//! → [`nms`] → [`regress`]/[`square`] → [`crop_boxes`] → R-Net → … → O-Net → [`points_of`].

#![warn(missing_docs)]

use anyhow::Result;
use spherepipe_nn::mtcnn::MtcnnNets;

/// The detector's settings (facenet-pytorch's defaults in [`Default`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectParams {
    /// The smallest face side searched for, in pixels: the pyramid starts at 12 / min_face.
    pub min_face: f32,
    /// The pyramid's step between scales.
    pub factor: f32,
    /// Score thresholds of P-, R- and O-Net.
    pub thresholds: [f32; 3],
}

impl Default for DetectParams {
    fn default() -> Self {
        DetectParams {
            min_face: 20.0,
            factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
        }
    }
}

/// A face: its box (x1, y1, x2, y2 in image pixels), O-Net's score and the five points (left
/// eye, right eye, nose, left and right mouth corner, as the image shows them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Face {
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// O-Net's face probability.
    pub score: f32,
    /// Five (x, y) points.
    pub points: [[f32; 2]; 5],
}

impl Face {
    /// The box's area in square pixels.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// An RGB image as three f32 planes (0–255), channel-major.
pub struct Planes<'a> {
    /// [3, height, width] values.
    pub data: &'a [f32],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl<'a> Planes<'a> {
    fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }
}

/// Interleaved RGB bytes as three f32 planes.
pub fn planes_of(rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * width * height];
    for (i, px) in rgb.chunks_exact(3).take(width * height).enumerate() {
        for c in 0..3 {
            out[c * width * height + i] = f32::from(px[c]);
        }
    }
    out
}

/// A candidate box: x1, y1, x2, y2, score, and (before regression) four offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// The stage's score.
    pub score: f32,
    /// Offsets still to apply (P-Net's), as fractions of the box's size.
    pub reg: [f32; 4],
}

/// Finds the faces in an RGB image.
pub fn detect(nets: &MtcnnNets, rgb: &[u8], width: usize, height: usize, p: &DetectParams) -> Result<Vec<Face>> {
    let data = planes_of(rgb, width, height);
    let img = Planes {
        data: &data,
        height,
        width,
    };
    let proposals = propose(nets, &img, p)?;
    let refined = refine(nets, &img, proposals, p.thresholds[1])?;
    output(nets, &img, refined, p.thresholds[2])
}

/// The pyramid's scales: from 12 / min_face, times `factor`, while the shorter side scaled
/// stays at least 12 (P-Net's window).
pub fn scales(height: usize, width: usize, p: &DetectParams) -> Vec<f64> {
    let m = 12.0 / f64::from(p.min_face);
    let mut shorter = height.min(width) as f64 * m;
    let mut scale = m;
    let mut out = Vec::new();
    while shorter >= 12.0 {
        out.push(scale);
        scale *= f64::from(p.factor);
        shorter *= f64::from(p.factor);
    }
    out
}

/// Stage 1: P-Net over the pyramid; boxes kept by NMS within each scale (IoU 0.5), then
/// across scales (0.7), regressed and squared.
fn propose(nets: &MtcnnNets, img: &Planes<'_>, p: &DetectParams) -> Result<Vec<Candidate>> {
    let mut all = Vec::new();
    for scale in scales(img.height, img.width, p) {
        let hs = (img.height as f64 * scale + 1.0) as usize;
        let ws = (img.width as f64 * scale + 1.0) as usize;
        let mut x = resample_area(img, 0, 0, img.height, img.width, hs, ws);
        normalise(&mut x);
        let map = nets.pnet(x, hs, ws)?;
        let boxes = cells_to_boxes(&map, scale as f32, p.thresholds[0]);
        let keep = nms(&boxes, 0.5, Overlap::Union);
        all.extend(keep.into_iter().map(|i| boxes[i]));
    }
    let keep = nms(&all, 0.7, Overlap::Union);
    Ok(keep
        .into_iter()
        .map(|i| {
            let c = all[i];
            let (w, h) = (c.bbox[2] - c.bbox[0], c.bbox[3] - c.bbox[1]);
            let b = [
                c.bbox[0] + c.reg[0] * w,
                c.bbox[1] + c.reg[1] * h,
                c.bbox[2] + c.reg[2] * w,
                c.bbox[3] + c.reg[3] * h,
            ];
            Candidate {
                bbox: square(b),
                score: c.score,
                reg: [0.0; 4],
            }
        })
        .collect())
}

/// Stage 2: R-Net on 24 × 24 crops; those over the threshold kept by NMS (0.7), regressed
/// and squared.
fn refine(nets: &MtcnnNets, img: &Planes<'_>, boxes: Vec<Candidate>, threshold: f32) -> Result<Vec<Candidate>> {
    let (boxes, crops) = crop_boxes(img, boxes, 24);
    if boxes.is_empty() {
        return Ok(boxes);
    }
    let out = nets.rnet(crops, boxes.len())?;
    let passed: Vec<Candidate> = boxes
        .iter()
        .enumerate()
        .filter(|&(i, _)| out.prob[i] > threshold)
        .map(|(i, b)| Candidate {
            bbox: b.bbox,
            score: out.prob[i],
            reg: [out.reg[4 * i], out.reg[4 * i + 1], out.reg[4 * i + 2], out.reg[4 * i + 3]],
        })
        .collect();
    let keep = nms(&passed, 0.7, Overlap::Union);
    Ok(keep
        .into_iter()
        .map(|i| {
            let c = passed[i];
            Candidate {
                bbox: square(regress(c.bbox, c.reg)),
                score: c.score,
                reg: [0.0; 4],
            }
        })
        .collect())
}

/// Stage 3: O-Net on 48 × 48 crops: scores, the five points, regressed boxes, and NMS by the
/// smaller area (0.7).
fn output(nets: &MtcnnNets, img: &Planes<'_>, boxes: Vec<Candidate>, threshold: f32) -> Result<Vec<Face>> {
    let (boxes, crops) = crop_boxes(img, boxes, 48);
    if boxes.is_empty() {
        return Ok(Vec::new());
    }
    let out = nets.onet(crops, boxes.len())?;
    let mut faces = Vec::new();
    let mut regressed = Vec::new();
    for (i, b) in boxes.iter().enumerate() {
        if out.prob[i] <= threshold {
            continue;
        }
        let reg = [out.reg[4 * i], out.reg[4 * i + 1], out.reg[4 * i + 2], out.reg[4 * i + 3]];
        let bbox = regress(b.bbox, reg);
        faces.push(Face {
            bbox,
            score: out.prob[i],
            points: points_of(b.bbox, &out.points[10 * i..10 * i + 10]),
        });
        regressed.push(Candidate {
            bbox,
            score: out.prob[i],
            reg: [0.0; 4],
        });
    }
    let keep = nms(&regressed, 0.7, Overlap::Min);
    Ok(keep.into_iter().map(|i| faces[i].clone()).collect())
}

/// O-Net's points (five x then five y, as fractions of the box) in image pixels, for the box
/// O-Net saw (before its regression), as facenet-pytorch places them.
pub fn points_of(bbox: [f32; 4], p: &[f32]) -> [[f32; 2]; 5] {
    let w = bbox[2] - bbox[0] + 1.0;
    let h = bbox[3] - bbox[1] + 1.0;
    std::array::from_fn(|k| [w * p[k] + bbox[0] - 1.0, h * p[5 + k] + bbox[1] - 1.0])
}

/// Scales every value from 0–255 to about ±1, as the networks were trained.
fn normalise(x: &mut [f32]) {
    for v in x {
        *v = (*v - 127.5) * 0.0078125;
    }
}

/// The cells of P-Net's map at or over `threshold`, as boxes in image pixels: a cell at
/// (row, column) covers the 12 × 12 window at twice its position in the scaled image.
pub fn cells_to_boxes(map: &spherepipe_nn::mtcnn::PnetMap, scale: f32, threshold: f32) -> Vec<Candidate> {
    let plane = map.height * map.width;
    let mut out = Vec::new();
    for row in 0..map.height {
        for col in 0..map.width {
            let i = row * map.width + col;
            let score = map.prob[i];
            if score < threshold {
                continue;
            }
            let (x, y) = (col as f32, row as f32);
            out.push(Candidate {
                bbox: [
                    ((2.0 * x + 1.0) / scale).floor(),
                    ((2.0 * y + 1.0) / scale).floor(),
                    ((2.0 * x + 12.0) / scale).floor(),
                    ((2.0 * y + 12.0) / scale).floor(),
                ],
                score,
                reg: std::array::from_fn(|k| map.reg[k * plane + i]),
            });
        }
    }
    out
}

/// How [`nms`] measures two boxes' overlap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Overlap {
    /// Intersection over union, areas as (x2 − x1)(y2 − y1) (torchvision's `nms`).
    Union,
    /// Intersection over the smaller area, areas as (x2 − x1 + 1)(y2 − y1 + 1) (MTCNN's
    /// original "Min", used last).
    Min,
}

/// Greedy non-maximum suppression: the indices kept, best score first. A box is dropped when
/// its overlap with a kept, better box is over `threshold`. Ties keep the earlier box.
pub fn nms(boxes: &[Candidate], threshold: f32, how: Overlap) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score).then(a.cmp(&b)));
    let one = if how == Overlap::Min { 1.0 } else { 0.0 };
    let area = |b: &[f32; 4]| (b[2] - b[0] + one) * (b[3] - b[1] + one);
    let mut dropped = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if dropped[i] {
            continue;
        }
        keep.push(i);
        let a = &boxes[i].bbox;
        for &j in &order[k + 1..] {
            if dropped[j] {
                continue;
            }
            let b = &boxes[j].bbox;
            let iw = (a[2].min(b[2]) - a[0].max(b[0]) + one).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1]) + one).max(0.0);
            let inter = iw * ih;
            let o = match how {
                Overlap::Union => inter / (area(a) + area(b) - inter),
                Overlap::Min => inter / area(a).min(area(b)),
            };
            if o > threshold {
                dropped[j] = true;
            }
        }
    }
    keep
}

/// A box moved by regression offsets, each a fraction of the box's size (+1, inclusive).
pub fn regress(b: [f32; 4], reg: [f32; 4]) -> [f32; 4] {
    let w = b[2] - b[0] + 1.0;
    let h = b[3] - b[1] + 1.0;
    [b[0] + reg[0] * w, b[1] + reg[1] * h, b[2] + reg[2] * w, b[3] + reg[3] * h]
}

/// The square of side max(w, h) with the same centre.
pub fn square(b: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// Each box's pixels (clipped to the image, truncated to whole pixels) resampled to
/// `side` × `side` and normalised, batched; boxes with no pixel inside the image are dropped.
pub fn crop_boxes(img: &Planes<'_>, boxes: Vec<Candidate>, side: usize) -> (Vec<Candidate>, Vec<f32>) {
    let mut kept = Vec::new();
    let mut crops = Vec::new();
    for b in boxes {
        if !b.bbox.iter().all(|v| v.is_finite()) {
            continue;
        }
        // facenet-pytorch's `pad`: 1-based, clipped to [1, w] and [1, h].
        let x = (b.bbox[0].trunc() as i64).max(1);
        let y = (b.bbox[1].trunc() as i64).max(1);
        let ex = (b.bbox[2].trunc() as i64).min(img.width as i64);
        let ey = (b.bbox[3].trunc() as i64).min(img.height as i64);
        if ex < x || ey < y {
            continue;
        }
        let (x0, y0) = ((x - 1) as usize, (y - 1) as usize);
        let mut crop = resample_area(img, y0, x0, ey as usize - y0, ex as usize - x0, side, side);
        normalise(&mut crop);
        crops.extend_from_slice(&crop);
        kept.push(b);
    }
    (kept, crops)
}

/// The window (top, left, rows, cols) of `img` resampled to `out_h` × `out_w` by area
/// averaging (PyTorch's `interpolate(mode="area")`, adaptive average pooling: output cell i
/// averages input rows ⌊i·in/out⌋ to ⌈(i+1)·in/out⌉).
pub fn resample_area(img: &Planes<'_>, top: usize, left: usize, rows: usize, cols: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let span = |i: usize, inp: usize, out: usize| (i * inp / out, ((i + 1) * inp).div_ceil(out));
    let ys: Vec<(usize, usize)> = (0..out_h).map(|i| span(i, rows, out_h)).collect();
    let xs: Vec<(usize, usize)> = (0..out_w).map(|i| span(i, cols, out_w)).collect();
    let mut out = vec![0f32; 3 * out_h * out_w];
    for c in 0..3 {
        for (oy, &(y0, y1)) in ys.iter().enumerate() {
            for (ox, &(x0, x1)) in xs.iter().enumerate() {
                let mut sum = 0f32;
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += img.at(c, top + y, left + x);
                    }
                }
                out[(c * out_h + oy) * out_w + ox] = sum / ((y1 - y0) * (x1 - x0)) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
