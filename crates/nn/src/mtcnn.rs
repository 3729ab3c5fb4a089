//! MTCNN's three networks (Zhang et al., 2016) on the published weights: P-Net, R-Net and
//! O-Net as facenet-pytorch defines them (`facenet_pytorch/models/mtcnn.py`), read from its
//! `pnet.pt`, `rnet.pt` and `onet.pt` (a port of the original Caffe models). The cascade
//! around them (pyramid, NMS, box regression) lives in `spherepipe-face-detect`; this module
//! only runs the networks, so every burn line stays in this crate.
//!
//! Facts the weights depend on, as facenet-pytorch has them: input RGB, NCHW, scaled as
//! `(x − 127.5) × 0.0078125`; max pooling rounds its output size up (`ceil_mode`); the dense
//! layers read the last feature map flattened in (width, height, channel) order (PyTorch's
//! `permute(0, 3, 2, 1)`, the transpose the Caffe models were trained with); O-Net's ten
//! points are the five x then the five y, as fractions of the box.

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use burn::tensor::activation::{prelu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::TensorData;
use std::collections::HashMap;
use std::path::Path;

/// The largest tensor a weights file may hold for these networks (O-Net's `dense5.weight`,
/// 256 × 1152, is the largest; a little room for other ports).
const MAX_TENSOR_VALUES: usize = 1 << 20;

/// A weights file's tensors by name: shape and values.
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of a PyTorch state dict (`torch.save(model.state_dict())`, any of
/// torch's container formats) as f32, refusing anything that is not a float tensor of a
/// plausible size. The file is untrusted: pytorch-reader bounds what it allocates by what the
/// file holds.
fn read_state_dict(path: &Path) -> Result<Tensors> {
    let reader =
        pytorch_reader::PytorchReader::new(path).map_err(|e| anyhow::anyhow!("{}: not a PyTorch weights file: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, tensor) in reader.tensors() {
        let shape = tensor.shape().to_vec();
        let count: usize = shape.iter().product();
        if count > MAX_TENSOR_VALUES {
            bail!(
                "{}: tensor `{name}` has {count} values, more than an MTCNN layer holds",
                path.display()
            );
        }
        if !matches!(tensor.dtype(), pytorch_reader::DType::F32) {
            bail!("{}: tensor `{name}` is {:?}, expected float32", path.display(), tensor.dtype());
        }
        let bytes = tensor
            .read()
            .with_context(|| format!("{}: reading tensor `{name}`", path.display()))?;
        if bytes.len() != 4 * count {
            bail!("{}: tensor `{name}` holds {} bytes for {count} values", path.display(), bytes.len());
        }
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name.clone(), (shape, values));
    }
    Ok(out)
}

/// Takes tensor `name` of `want` shape out of `t`, on `device`.
fn take<const D: usize>(t: &mut Tensors, file: &Path, name: &str, want: [usize; D], device: &Device) -> Result<Tensor<D>> {
    let (shape, values) = t
        .remove(name)
        .ok_or_else(|| anyhow::anyhow!("{}: no tensor `{name}` (is this facenet-pytorch's MTCNN file?)", file.display()))?;
    if shape != want {
        bail!("{}: tensor `{name}` has shape {shape:?}, expected {want:?}", file.display());
    }
    Ok(Tensor::<D>::from_data(TensorData::new(values, want), device))
}

/// A convolution (stride 1, no padding) and its per-channel PReLU.
#[derive(Debug, Clone)]
struct ConvPrelu {
    weight: Tensor<4>,
    bias: Tensor<1>,
    alpha: Tensor<1>,
}

impl ConvPrelu {
    fn read(t: &mut Tensors, file: &Path, conv: &str, act: &str, shape: [usize; 4], device: &Device) -> Result<Self> {
        Ok(ConvPrelu {
            weight: take(t, file, &format!("{conv}.weight"), shape, device)?,
            bias: take(t, file, &format!("{conv}.bias"), [shape[0]], device)?,
            alpha: take(t, file, &format!("{act}.weight"), [shape[0]], device)?,
        })
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        prelu(conv(x, &self.weight, &self.bias), self.alpha.clone())
    }
}

fn conv(x: Tensor<4>, weight: &Tensor<4>, bias: &Tensor<1>) -> Tensor<4> {
    conv2d(x, weight.clone(), Some(bias.clone()), ConvOptions::new([1, 1], [0, 0], [1, 1], 1))
}

/// Max pooling, stride 2, with PyTorch's `ceil_mode=True`: the last window may hang over the
/// edge (its max is over the pixels inside) as long as it starts inside. A loop of our own:
/// burn-flex pools through its generic 3-D path with indices, half of MTCNN's time.
fn pool(x: Tensor<4>, kernel: usize) -> Result<Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let (oh, ow) = (pooled(h, kernel), pooled(w, kernel));
    let input = values(x)?;
    let mut out = vec![f32::NEG_INFINITY; n * c * oh * ow];
    for (plane, dst) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            let rows = 2 * oy..(2 * oy + kernel).min(h);
            for ox in 0..ow {
                let cols = 2 * ox..(2 * ox + kernel).min(w);
                let mut m = f32::NEG_INFINITY;
                for y in rows.clone() {
                    for &v in &plane[y * w + cols.start..y * w + cols.end] {
                        m = m.max(v);
                    }
                }
                dst[oy * ow + ox] = m;
            }
        }
    }
    Ok(Tensor::<4>::from_data(TensorData::new(out, [n, c, oh, ow]), &device))
}

/// The output size of a stride-2 `kernel` pooling in ceil mode over `size` (PyTorch's rule).
fn pooled(size: usize, kernel: usize) -> usize {
    let out = (size.saturating_sub(kernel)).div_ceil(2) + 1;
    if (out - 1) * 2 >= size {
        out - 1
    } else {
        out
    }
}

/// A dense layer; `weight` is PyTorch's [out, in].
#[derive(Debug, Clone)]
struct Dense {
    weight: Tensor<2>,
    bias: Tensor<1>,
}

impl Dense {
    fn read(t: &mut Tensors, file: &Path, name: &str, out_in: [usize; 2], device: &Device) -> Result<Self> {
        Ok(Dense {
            weight: take(t, file, &format!("{name}.weight"), out_in, device)?,
            bias: take(t, file, &format!("{name}.bias"), [out_in[0]], device)?,
        })
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight.clone().transpose()) + self.bias.clone().unsqueeze::<2>()
    }
}

/// Flattens [n, c, h, w] in (w, h, c) order, as the published dense weights expect.
fn flatten_whc(x: Tensor<4>) -> Tensor<2> {
    let n = x.dims()[0];
    x.permute([0, 3, 2, 1]).reshape([n as i64, -1])
}

/// Copies a tensor out as f32 values.
fn values<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>> {
    x.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// The three networks with their weights, on one device.
#[derive(Debug, Clone)]
pub struct MtcnnNets {
    device: Device,
    pnet: [ConvPrelu; 3],
    pnet_prob: (Tensor<4>, Tensor<1>),
    pnet_reg: (Tensor<4>, Tensor<1>),
    rnet: [ConvPrelu; 3],
    rnet_dense: (Dense, Tensor<1>),
    rnet_prob: Dense,
    rnet_reg: Dense,
    onet: [ConvPrelu; 4],
    onet_dense: (Dense, Tensor<1>),
    onet_prob: Dense,
    onet_reg: Dense,
    onet_points: Dense,
}

/// P-Net's output for one image: a score and four box offsets per 12 × 12 cell (stride 2).
#[derive(Debug, Clone, PartialEq)]
pub struct PnetMap {
    /// Rows of the map.
    pub height: usize,
    /// Columns of the map.
    pub width: usize,
    /// The face probability of each cell, row-major.
    pub prob: Vec<f32>,
    /// The four offsets (x1, y1, x2, y2), each a row-major plane.
    pub reg: Vec<f32>,
}

/// R-Net's or O-Net's output for a batch of crops, one entry per crop.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CropScores {
    /// The face probability.
    pub prob: Vec<f32>,
    /// Box offsets (x1, y1, x2, y2) as fractions of the box's size, 4 per crop.
    pub reg: Vec<f32>,
    /// O-Net only: five x then five y, as fractions of the box, 10 per crop.
    pub points: Vec<f32>,
}

impl MtcnnNets {
    /// Reads `pnet.pt`, `rnet.pt` and `onet.pt` from `dir` (facenet-pytorch's
    /// `facenet_pytorch/data/`). Every tensor must be present with its shape; the error names
    /// the file and the tensor.
    pub fn load(dir: &Path, device: &Device) -> Result<MtcnnNets> {
        let open = |name: &str| -> Result<(std::path::PathBuf, Tensors)> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} does not exist: the weights directory needs facenet-pytorch's pnet.pt, rnet.pt and onet.pt (from its wheel's facenet_pytorch/data/)",
                    path.display()
                );
            }
            let t = read_state_dict(&path)?;
            Ok((path, t))
        };
        let d = device;
        let (pf, mut p) = open("pnet.pt")?;
        let pnet = [
            ConvPrelu::read(&mut p, &pf, "conv1", "prelu1", [10, 3, 3, 3], d)?,
            ConvPrelu::read(&mut p, &pf, "conv2", "prelu2", [16, 10, 3, 3], d)?,
            ConvPrelu::read(&mut p, &pf, "conv3", "prelu3", [32, 16, 3, 3], d)?,
        ];
        let pnet_prob = (
            take(&mut p, &pf, "conv4_1.weight", [2, 32, 1, 1], d)?,
            take(&mut p, &pf, "conv4_1.bias", [2], d)?,
        );
        let pnet_reg = (
            take(&mut p, &pf, "conv4_2.weight", [4, 32, 1, 1], d)?,
            take(&mut p, &pf, "conv4_2.bias", [4], d)?,
        );
        let (rf, mut r) = open("rnet.pt")?;
        let rnet = [
            ConvPrelu::read(&mut r, &rf, "conv1", "prelu1", [28, 3, 3, 3], d)?,
            ConvPrelu::read(&mut r, &rf, "conv2", "prelu2", [48, 28, 3, 3], d)?,
            ConvPrelu::read(&mut r, &rf, "conv3", "prelu3", [64, 48, 2, 2], d)?,
        ];
        let rnet_dense = (
            Dense::read(&mut r, &rf, "dense4", [128, 576], d)?,
            take(&mut r, &rf, "prelu4.weight", [128], d)?,
        );
        let rnet_prob = Dense::read(&mut r, &rf, "dense5_1", [2, 128], d)?;
        let rnet_reg = Dense::read(&mut r, &rf, "dense5_2", [4, 128], d)?;
        let (of, mut o) = open("onet.pt")?;
        let onet = [
            ConvPrelu::read(&mut o, &of, "conv1", "prelu1", [32, 3, 3, 3], d)?,
            ConvPrelu::read(&mut o, &of, "conv2", "prelu2", [64, 32, 3, 3], d)?,
            ConvPrelu::read(&mut o, &of, "conv3", "prelu3", [64, 64, 3, 3], d)?,
            ConvPrelu::read(&mut o, &of, "conv4", "prelu4", [128, 64, 2, 2], d)?,
        ];
        let onet_dense = (
            Dense::read(&mut o, &of, "dense5", [256, 1152], d)?,
            take(&mut o, &of, "prelu5.weight", [256], d)?,
        );
        let onet_prob = Dense::read(&mut o, &of, "dense6_1", [2, 256], d)?;
        let onet_reg = Dense::read(&mut o, &of, "dense6_2", [4, 256], d)?;
        let onet_points = Dense::read(&mut o, &of, "dense6_3", [10, 256], d)?;
        Ok(MtcnnNets {
            device: device.clone(),
            pnet,
            pnet_prob,
            pnet_reg,
            rnet,
            rnet_dense,
            rnet_prob,
            rnet_reg,
            onet,
            onet_dense,
            onet_prob,
            onet_reg,
            onet_points,
        })
    }

    /// P-Net over one image, `pixels` [3, height, width] already scaled to about ±1.
    /// The image must be at least 12 × 12.
    pub fn pnet(&self, pixels: Vec<f32>, height: usize, width: usize) -> Result<PnetMap> {
        if height < 12 || width < 12 || pixels.len() != 3 * height * width {
            bail!(
                "P-Net needs a 3 × h × w image of at least 12 × 12 (got {} values for {height} × {width})",
                pixels.len()
            );
        }
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, height, width]), &self.device);
        let x = self.pnet[0].forward(x);
        let x = pool(x, 2)?;
        let x = self.pnet[2].forward(self.pnet[1].forward(x));
        let prob = softmax(conv(x.clone(), &self.pnet_prob.0, &self.pnet_prob.1), 1);
        let reg = conv(x, &self.pnet_reg.0, &self.pnet_reg.1);
        let [_, _, mh, mw] = prob.dims();
        let prob = values(prob.narrow(1, 1, 1))?;
        Ok(PnetMap {
            height: mh,
            width: mw,
            prob,
            reg: values(reg)?,
        })
    }

    /// R-Net over `n` crops of 24 × 24, `pixels` [n, 3, 24, 24] scaled to about ±1.
    pub fn rnet(&self, pixels: Vec<f32>, n: usize) -> Result<CropScores> {
        let x = self.crops(pixels, n, 24)?;
        let x = pool(self.rnet[0].forward(x), 3)?;
        let x = pool(self.rnet[1].forward(x), 3)?;
        let x = self.rnet[2].forward(x);
        let x = prelu(self.rnet_dense.0.forward(flatten_whc(x)), self.rnet_dense.1.clone());
        let prob = softmax(self.rnet_prob.forward(x.clone()), 1).narrow(1, 1, 1);
        Ok(CropScores {
            prob: values(prob)?,
            reg: values(self.rnet_reg.forward(x))?,
            points: Vec::new(),
        })
    }

    /// O-Net over `n` crops of 48 × 48, `pixels` [n, 3, 48, 48] scaled to about ±1.
    pub fn onet(&self, pixels: Vec<f32>, n: usize) -> Result<CropScores> {
        let x = self.crops(pixels, n, 48)?;
        let x = pool(self.onet[0].forward(x), 3)?;
        let x = pool(self.onet[1].forward(x), 3)?;
        let x = pool(self.onet[2].forward(x), 2)?;
        let x = self.onet[3].forward(x);
        let x = prelu(self.onet_dense.0.forward(flatten_whc(x)), self.onet_dense.1.clone());
        let prob = softmax(self.onet_prob.forward(x.clone()), 1).narrow(1, 1, 1);
        Ok(CropScores {
            prob: values(prob)?,
            reg: values(self.onet_reg.forward(x.clone()))?,
            points: values(self.onet_points.forward(x))?,
        })
    }

    fn crops(&self, pixels: Vec<f32>, n: usize, side: usize) -> Result<Tensor<4>> {
        if n == 0 || pixels.len() != n * 3 * side * side {
            bail!("expected {n} crops of 3 × {side} × {side}, got {} values", pixels.len());
        }
        Ok(Tensor::<4>::from_data(TensorData::new(pixels, [n, 3, side, side]), &self.device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_mode_pooling_keeps_the_overhanging_window() {
        // PyTorch: MaxPool2d(3, 2, ceil_mode=True) over 5 -> 2, over 6 -> 3; (2, 2) over 5 -> 3.
        assert_eq!((pooled(5, 3), pooled(6, 3), pooled(5, 2), pooled(4, 2)), (2, 3, 3, 2));
        // One 1 x 1 x 3 x 5 plane, 3 x 3 windows at columns 0..3 and 2..5.
        let x = Tensor::<4>::from_data(
            TensorData::new((0..15).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 3, 5]),
            &Device::flex(),
        );
        let y = pool(x, 3).unwrap();
        assert_eq!(y.dims(), [1, 1, 1, 2]);
        assert_eq!(values(y).unwrap(), vec![12.0, 14.0]);
        // A 2 x 2 kernel over 3 x 3: the overhanging windows take what is inside.
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0, 5.0, 2.0, 3.0, 4.0, 9.0, 7.0, 0.0, 6.0], [1, 1, 3, 3]),
            &Device::flex(),
        );
        assert_eq!(values(pool(x, 2).unwrap()).unwrap(), vec![5.0, 9.0, 7.0, 6.0]);
    }
}
