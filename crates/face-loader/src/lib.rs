//! Training batches from Parquet shards, with bounded memory and deterministic order.
//!
//! A producer thread reads the shards record batch by record batch (only the `image` and
//! `label` columns), in a seeded order per epoch, through a shuffle buffer of fixed size;
//! each batch's PNGs are decoded and normalised ((x − 127.5) / 128) in parallel with rayon,
//! their colour planes put in the network's order (BGR by default, as the published SphereFace
//! models were trained), optionally mirrored, and sent over a bounded crossbeam channel, so decoding runs ahead of
//! the training step. The stream is a pure function of (files, seed, config): a resumed run
//! skips the batches already seen, without decoding them, and continues identically.

#![warn(missing_docs)]

use anyhow::{bail, Context, Result};
use arrow::array::{Array, BinaryArray, Int32Array};
use crossbeam_channel::{bounded, Receiver};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;
use spherepipe_rng::Rng;
use std::path::PathBuf;

/// How the loader reads, orders and prepares batches.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch: usize,
    /// Rows held for shuffling (memory ≈ this × one PNG).
    pub shuffle_buffer: usize,
    /// Probability of mirroring each image.
    pub flip: f64,
    /// Seeds the shard order, the shuffle and the flips: the stream is a function of it.
    pub seed: u64,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// Batches to skip (not decoded) before the first one returned: resuming at a step.
    pub skip_batches: u64,
    /// Crop every image to this patch (the 3-patch ensemble) before normalising.
    pub patch: Option<Patch>,
    /// The order of the colour planes in a batch.
    pub channels: Channels,
}

/// The order of the colour planes the network sees. The published SphereFace models (Caffe
/// training through OpenCV, MATLAB evaluation with `img(:,:,[3,2,1])`, the PyTorch port's
/// `cv2.imdecode`) all take **BGR**, so that is the default; a network fed the other order
/// computes different features from the same weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Blue, green, red: plane 0 is blue (OpenCV's order).
    #[default]
    Bgr,
    /// Red, green, blue: plane 0 is red (the PNG's own order).
    Rgb,
}

impl Channels {
    /// The names a pipeline file uses.
    pub const NAMES: [&'static str; 2] = ["bgr", "rgb"];

    /// The order called `name` in a pipeline file, if any.
    pub fn named(name: &str) -> Option<Channels> {
        match name {
            "bgr" => Some(Channels::Bgr),
            "rgb" => Some(Channels::Rgb),
            _ => None,
        }
    }

    /// The name a pipeline file uses for this order.
    pub fn name(self) -> &'static str {
        match self {
            Channels::Bgr => "bgr",
            Channels::Rgb => "rgb",
        }
    }

    /// Which channel of an interleaved RGB pixel goes to output plane `plane`.
    fn source_of(self, plane: usize) -> usize {
        match self {
            Channels::Bgr => 2 - plane,
            Channels::Rgb => plane,
        }
    }
}

/// A crop box on the aligned face (x, y, width, height, in face pixels, fractional allowed),
/// resized to `out` = [height, width] with bilinear sampling (pixel centres aligned, as
/// OpenCV's `resize`). One patch of the paper's Appendix H ensemble.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patch {
    /// The box [x, y, width, height] on the aligned face.
    pub rect: [f64; 4],
    /// The size [height, width] it is resized to.
    pub out: [usize; 2],
}

impl Patch {
    /// The box of a `patch` param — `null` (the whole face) or `{name: ..., box: [x, y, w, h]}` —
    /// checked for shape only (a stage's `validate`, before the face size is known).
    pub fn parse_box(v: &serde_json::Value) -> std::result::Result<Option<[f64; 4]>, String> {
        if v.is_null() {
            return Ok(None);
        }
        v.get("box")
            .and_then(|b| serde_json::from_value(b.clone()).ok())
            .map(Some)
            .ok_or_else(|| format!("patch {v} needs `box: [x, y, width, height]` (numbers, in aligned-face pixels)"))
    }

    /// Reads a `patch` param and checks its box against the face size [height, width].
    pub fn from_param(v: &serde_json::Value, face: [usize; 2]) -> std::result::Result<Option<Patch>, String> {
        let Some(rect) = Self::parse_box(v)? else {
            return Ok(None);
        };
        let [x, y, w, h] = rect;
        let (fh, fw) = (face[0] as f64, face[1] as f64);
        if !(w >= 1.0 && h >= 1.0 && x >= 0.0 && y >= 0.0 && x + w <= fw + 1e-9 && y + h <= fh + 1e-9) {
            return Err(format!(
                "patch box {rect:?} is not inside the {}x{} (height x width) aligned face; use x + width <= {fw} and y + height <= {fh}",
                face[0], face[1]
            ));
        }
        Ok(Some(Patch { rect, out: face }))
    }

    /// Crops and resizes interleaved RGB (`w` x `h`).
    pub fn apply(&self, rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
        let [x, y, bw, bh] = self.rect;
        let [oh, ow] = self.out;
        let (sx, sy) = (ow as f64 / bw, oh as f64 / bh);
        // Output pixel centre (u + 0.5) corresponds to source x + (u + 0.5) / sx.
        let m = [[sx, 0.0, (0.5 - x) * sx - 0.5], [0.0, sy, (0.5 - y) * sy - 0.5]];
        spherepipe_face_geometry::warp_affine(rgb, w, h, 3, &m, ow, oh).context("image buffer too short for its size")
    }
}

/// One batch: images as [batch, 3, height, width] f32 (CHW, normalised), labels as i64.
#[derive(Debug, Clone)]
pub struct Batch {
    /// batch × 3 × height × width values, normalised to about [−1, 1].
    pub images: Vec<f32>,
    /// One class label per image.
    pub labels: Vec<i64>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// 0-based index of this batch in the stream.
    pub index: u64,
}

/// Raw rows (PNG bytes, label) in a deterministic shuffled order, epoch after epoch.
struct RowStream {
    files: Vec<PathBuf>,
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
    next_file: usize,
    current: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
    pending: Vec<(Vec<u8>, i32)>,
    buffer: Vec<(Vec<u8>, i32)>,
    capacity: usize,
    rng: Rng,
}

impl RowStream {
    fn new(files: Vec<PathBuf>, seed: u64, capacity: usize) -> Self {
        let mut s = RowStream {
            files,
            seed,
            epoch: 0,
            order: Vec::new(),
            next_file: 0,
            current: None,
            pending: Vec::new(),
            buffer: Vec::new(),
            capacity: capacity.max(1),
            rng: Rng::new(0),
        };
        s.start_epoch();
        s
    }

    fn start_epoch(&mut self) {
        let mut r = Rng::new(self.seed ^ self.epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
        self.order = (0..self.files.len()).collect();
        for i in (1..self.order.len()).rev() {
            self.order.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
        }
        self.rng = Rng::new(r.next_u64());
        self.next_file = 0;
    }

    /// Reads more rows into `pending`; false at the end of an epoch.
    fn refill(&mut self) -> Result<bool> {
        loop {
            if let Some(reader) = self.current.as_mut() {
                match reader.next() {
                    Some(b) => {
                        let b = b?;
                        let img = b
                            .column(0)
                            .as_any()
                            .downcast_ref::<BinaryArray>()
                            .context("`image` is not binary")?;
                        let lab = b.column(1).as_any().downcast_ref::<Int32Array>().context("`label` is not int32")?;
                        self.pending
                            .extend((0..b.num_rows()).rev().map(|i| (img.value(i).to_vec(), lab.value(i))));
                        return Ok(true);
                    }
                    None => self.current = None,
                }
            }
            if self.next_file == self.order.len() {
                return Ok(false);
            }
            let path = &self.files[self.order[self.next_file]];
            self.next_file += 1;
            let f = std::fs::File::open(path).with_context(|| format!("opening shard {}", path.display()))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(f)
                .with_context(|| format!("{} is not a readable Parquet shard", path.display()))?;
            let schema = builder.schema().clone();
            let (Ok(i), Ok(l)) = (schema.index_of("image"), schema.index_of("label")) else {
                bail!("{} lacks the `image` and `label` columns of a face shard", path.display());
            };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [i.min(l), i.max(l)]);
            if i > l {
                bail!("{}: expected `image` before `label`", path.display());
            }
            self.current = Some(builder.with_projection(mask).with_batch_size(256).build()?);
        }
    }

    /// The next row: a random pick from the shuffle buffer, refilled from the shards.
    fn next_row(&mut self) -> Result<(Vec<u8>, i32)> {
        loop {
            while self.buffer.len() < self.capacity {
                match self.pending.pop() {
                    Some(r) => self.buffer.push(r),
                    None => {
                        if !self.refill()? {
                            break;
                        }
                    }
                }
            }
            if !self.buffer.is_empty() {
                let i = (self.rng.next_u64() % self.buffer.len() as u64) as usize;
                return Ok(self.buffer.swap_remove(i));
            }
            // Epoch over and buffer drained: next epoch.
            if self.files.is_empty() {
                bail!("no shards to read");
            }
            self.epoch += 1;
            self.start_epoch();
            if !self.refill()? && self.pending.is_empty() {
                bail!("the shards hold no rows");
            }
        }
    }
}

/// Decodes one PNG, crops it to `patch` if given, and returns normalised CHW floats with the
/// colour planes in `channels` order, mirrored (after cropping) if asked.
pub fn decode_patch(png: &[u8], flip: bool, patch: Option<&Patch>, channels: Channels) -> Result<(Vec<f32>, usize, usize)> {
    let (rgb, w, h) = spherepipe_face_table::decode_rgb(png)?;
    let (w, h) = (w as usize, h as usize);
    let (rgb, w, h) = match patch {
        Some(p) => (p.apply(&rgb, w, h)?, p.out[1], p.out[0]),
        None => (rgb, w, h),
    };
    let mut out = vec![0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x };
            for c in 0..3 {
                out[c * h * w + y * w + x] = (rgb[(y * w + sx) * 3 + channels.source_of(c)] as f32 - 127.5) / 128.0;
            }
        }
    }
    Ok((out, h, w))
}

/// A running loader; iterate to get batches. Dropping it stops the producer.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    _producer: std::thread::JoinHandle<()>,
}

impl Loader {
    /// Starts the producer thread over `files`; the first batch is ready when it is decoded.
    pub fn new(files: Vec<PathBuf>, cfg: LoaderConfig) -> Result<Self> {
        if files.is_empty() {
            bail!("no shard files given");
        }
        let (tx, rx) = bounded(cfg.prefetch.max(1));
        let producer = std::thread::Builder::new().name("face-loader".into()).spawn(move || {
            let mut rows = RowStream::new(files, cfg.seed, cfg.shuffle_buffer);
            let mut index = 0u64;
            loop {
                let mut raw = Vec::with_capacity(cfg.batch);
                for _ in 0..cfg.batch {
                    match rows.next_row() {
                        Ok(r) => raw.push(r),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                if index < cfg.skip_batches {
                    index += 1;
                    continue;
                }
                let decoded: Result<Vec<(Vec<f32>, usize, usize)>> = raw
                    .par_iter()
                    .enumerate()
                    .map(|(k, (png, _))| {
                        let mut r = Rng::new(cfg.seed ^ (index * cfg.batch as u64 + k as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                        let flip = r.unit() <= cfg.flip && cfg.flip > 0.0;
                        decode_patch(png, flip, cfg.patch.as_ref(), cfg.channels)
                    })
                    .collect();
                let batch = decoded.and_then(|d| {
                    let (h, w) = (d[0].1, d[0].2);
                    if d.iter().any(|x| x.1 != h || x.2 != w) {
                        bail!("images in one batch differ in size");
                    }
                    Ok(Batch {
                        images: d.into_iter().flat_map(|x| x.0).collect(),
                        labels: raw.iter().map(|r| r.1 as i64).collect(),
                        height: h,
                        width: w,
                        index,
                    })
                });
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
                index += 1;
            }
        })?;
        Ok(Loader { rx, _producer: producer })
    }

    /// The next batch (blocks until decoded).
    pub fn next_batch(&self) -> Result<Batch> {
        self.rx.recv().context("the loader thread stopped")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spherepipe_face_table::{encode_png, write_rows, FaceRow};

    fn shard(dir: &std::path::Path, name: &str, labels: std::ops::Range<i32>) -> PathBuf {
        let rows: Vec<FaceRow> = labels
            .map(|l| {
                // 2x3 image whose pixel (x, y) channel c = 10 l + x + 3 y + c.
                let rgb: Vec<u8> = (0..2)
                    .flat_map(|y| (0..3).flat_map(move |x| (0..3).map(move |c| (10 * l + x + 3 * y + c) as u8)))
                    .collect();
                FaceRow {
                    png: encode_png(&rgb, 3, 2).unwrap(),
                    height: 2,
                    width: 3,
                    label: l,
                    identity: l.to_string(),
                    dataset: "t".into(),
                    source: String::new(),
                    video: None,
                    landmarks: [0.0; 10],
                    flipped: false,
                }
            })
            .collect();
        let p = dir.join(name);
        write_rows(&p, &rows, 4).unwrap();
        p
    }

    fn cfg(skip: u64, flip: f64) -> LoaderConfig {
        LoaderConfig {
            batch: 4,
            shuffle_buffer: 5,
            flip,
            seed: 9,
            prefetch: 2,
            skip_batches: skip,
            patch: None,
            channels: Channels::Rgb,
        }
    }

    #[test]
    fn an_epoch_visits_every_row_once_in_a_seeded_order() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![shard(d.path(), "a.parquet", 0..10), shard(d.path(), "b.parquet", 10..22)];
        let l = Loader::new(files.clone(), cfg(0, 0.0)).unwrap();
        let mut seen: Vec<i64> = (0..6).flat_map(|_| l.next_batch().unwrap().labels).collect();
        let first_epoch = seen[..22].to_vec();
        assert_ne!(first_epoch, (0..22).collect::<Vec<_>>(), "shuffled");
        seen.truncate(22);
        seen.sort();
        assert_eq!(seen, (0..22).collect::<Vec<_>>());
        // The same seed gives the same stream; skipping 3 batches gives its tail.
        let again = Loader::new(files.clone(), cfg(0, 0.0)).unwrap();
        let a: Vec<Vec<i64>> = (0..5).map(|_| again.next_batch().unwrap().labels).collect();
        let skipped = Loader::new(files, cfg(3, 0.0)).unwrap();
        let b = skipped.next_batch().unwrap();
        assert_eq!((b.index, &b.labels), (3, &a[3]));
    }

    #[test]
    fn pixels_are_normalised_chw_and_flips_mirror() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![shard(d.path(), "a.parquet", 5..6)];
        let b = Loader::new(files.clone(), LoaderConfig { batch: 1, ..cfg(0, 0.0) })
            .unwrap()
            .next_batch()
            .unwrap();
        // channel 1, y 1, x 2: value 10*5 + 2 + 3 + 1 = 56 -> (56 - 127.5) / 128
        assert_eq!((b.height, b.width), (2, 3));
        assert!((b.images[6 + 3 + 2] - (56.0 - 127.5) / 128.0).abs() < 1e-6);
        let f = Loader::new(files, LoaderConfig { batch: 1, ..cfg(0, 1.0) })
            .unwrap()
            .next_batch()
            .unwrap();
        assert!(
            (f.images[6 + 3] - b.images[6 + 3 + 2]).abs() < 1e-6,
            "x = 0 of the mirror is x = 2 of the original"
        );
    }

    #[test]
    fn bgr_puts_the_blue_channel_first() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![shard(d.path(), "a.parquet", 5..6)];
        let first = |channels| {
            Loader::new(
                files.clone(),
                LoaderConfig {
                    batch: 1,
                    channels,
                    ..cfg(0, 0.0)
                },
            )
            .unwrap()
            .next_batch()
            .unwrap()
            .images
        };
        let (rgb, bgr) = (first(Channels::Rgb), first(Channels::Bgr));
        // Pixel (x 2, y 1) holds R = 55, G = 56, B = 57 (10 l + x + 3 y + c); a plane is 6 values.
        let at = |img: &[f32], plane: usize| img[plane * 6 + 3 + 2] * 128.0 + 127.5;
        assert_eq!([at(&rgb, 0), at(&rgb, 1), at(&rgb, 2)], [55.0, 56.0, 57.0]);
        assert_eq!([at(&bgr, 0), at(&bgr, 1), at(&bgr, 2)], [57.0, 56.0, 55.0]);
        assert_eq!(Channels::default(), Channels::Bgr);
        assert_eq!(Channels::named("rgb"), Some(Channels::Rgb));
        assert_eq!(Channels::named("BGR"), None);
        assert_eq!(serde_json::to_string(&Channels::Bgr).unwrap(), "\"bgr\"");
    }

    #[test]
    fn patches_crop_and_resize_and_are_checked() {
        // 6x4 image, pixel value 10 y + x in every channel.
        let rgb: Vec<u8> = (0..4).flat_map(|y| (0..6).flat_map(move |x| [(10 * y + x) as u8; 3])).collect();
        // Box (2, 1) 3x2 resized to 2x3 (no scaling): exactly the sub-rectangle.
        let p = Patch {
            rect: [2.0, 1.0, 3.0, 2.0],
            out: [2, 3],
        };
        let out = p.apply(&rgb, 6, 4).unwrap();
        let got: Vec<u8> = out.chunks(3).map(|c| c[0]).collect();
        assert_eq!(got, [12, 13, 14, 22, 23, 24]);
        // Doubling a 2x2 box: output (u, v) samples the source at x + (u + 0.5) / 2 - 0.5;
        // at u = 1 that is 2.25 between 2 and 3 in x -> 12.25, and so on.
        let p = Patch {
            rect: [2.0, 1.0, 2.0, 2.0],
            out: [4, 4],
        };
        let out = p.apply(&rgb, 6, 4).unwrap();
        assert_eq!(out[(4 + 1) * 3], 12 + 3); // (1,1): 10*1.25 + 2.25 = 14.75 -> 15
        let face = [112, 96];
        let v = serde_json::json!({"name": "eyes", "box": [0, 20, 96, 48]});
        assert_eq!(Patch::from_param(&v, face).unwrap().unwrap().rect, [0.0, 20.0, 96.0, 48.0]);
        assert_eq!(Patch::from_param(&serde_json::Value::Null, face).unwrap(), None);
        let e = Patch::from_param(&serde_json::json!({"box": [50, 0, 60, 10]}), face).unwrap_err();
        assert!(e.contains("not inside the 112x96"), "{e}");
        assert!(Patch::from_param(&serde_json::json!({"name": "x"}), face)
            .unwrap_err()
            .contains("needs `box"));
        // Through the PNG path: the crop is mirrored after cropping.
        let png = spherepipe_face_table::encode_png(&rgb, 6, 4).unwrap();
        let p = Patch {
            rect: [2.0, 1.0, 3.0, 2.0],
            out: [2, 3],
        };
        let (f, h, w) = decode_patch(&png, true, Some(&p), Channels::Rgb).unwrap();
        assert_eq!((h, w), (2, 3));
        assert_eq!(f[0], (14.0 - 127.5) / 128.0);
    }
}
