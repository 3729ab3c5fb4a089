//! ONNX export of a trained SphereFace feature network (issue 27): the graph from the input
//! image to FC1, built from a `train` artifact's `model.safetensors` (the public sphere20a
//! names: `conv{s}_{k}`, `relu{s}_{k}`, `fc5`) and its `model.json`, written as an ONNX
//! `ModelProto` through types generated from the ONNX schema (`proto/onnx.proto`).
//!
//! The graph: per stage a stride-2 3×3 convolution and PReLU, then residual units of two
//! stride-1 convolutions with PReLU added to their input; flatten (NCHW order, as train
//! flattens); `Gemm` with fc5 (stored [out, in], so `transB = 1`). Its input is what `extract`
//! feeds the network: NCHW float32, colour planes in the card's order, `(x − 127.5) / 128`.
//! With `preprocess`, the graph takes uint8 NHWC RGB pixels instead and does the cast, the
//! transpose, the channel order and the scaling itself, as deployment runtimes prefer.
//!
//! The layers are read from the weights file itself (`conv{s}_{k}` for k = 1, 2, … while it
//! exists) and their count checked against the card's depth, so a file that does not match
//! its card is refused rather than exported wrong.

#![warn(missing_docs)]

mod protos {
    include!(concat!(env!("OUT_DIR"), "/onnx-protos/mod.rs"));
}

use anyhow::{bail, Context, Result};
use protobuf::{EnumOrUnknown, Message, MessageField};
use protos::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType, tensor_shape_proto::dimension::Value as DimValue,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use spherepipe_face_loader::Channels;
use spherepipe_model_card::ModelCard;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The batch dimension of the graph's input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Any batch size (a symbolic `batch` dimension).
    Dynamic,
    /// Exactly this many images.
    Fixed(u32),
}

impl Batch {
    /// `dynamic` or a number of images (1 or more), as the stage's `batch` param and
    /// `spherepipe export --batch` take it.
    pub fn parse(s: &str) -> Option<Batch> {
        match s {
            "dynamic" => Some(Batch::Dynamic),
            n => n.parse::<u32>().ok().filter(|&n| n > 0).map(Batch::Fixed),
        }
    }
}

/// How to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// The ONNX operator set (13 to 21).
    pub opset: i64,
    /// The batch dimension.
    pub batch: Batch,
    /// Take uint8 NHWC RGB pixels and normalise inside the graph.
    pub preprocess: bool,
    /// Weights are written beside the model (ONNX external data) once their bytes pass this;
    /// protobuf cannot hold a message over 2 GB.
    pub external_over: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: 17,
            batch: Batch::Dynamic,
            preprocess: false,
            external_over: 1 << 31,
        }
    }
}

/// A weights file's float32 tensors: name → (shape, values).
pub type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads a safetensors file of float32 tensors (a `train` artifact's `model.safetensors`).
pub fn read_weights(path: &Path) -> Result<Weights> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!("{}: tensor `{name}` is {:?}, expected F32", path.display(), view.dtype());
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// The IR version that goes with an operator set (ONNX's versioning table).
fn ir_version(opset: i64) -> Result<i64> {
    Ok(match opset {
        13..=15 => 7,
        16..=17 => 8,
        18..=19 => 9,
        20..=21 => 10,
        _ => bail!("opset {opset} is not supported: use 13 to 21 (17 is the default)"),
    })
}

/// Builds the model: graph, initializers, metadata (`meta`, in order) and opset.
pub fn build(card: &ModelCard, weights: &Weights, meta: &[(String, String)], opts: &ExportOptions) -> Result<ModelProto> {
    let mut g = Graph::default();
    let [h, w] = card.net.input;
    let batch = match opts.batch {
        Batch::Dynamic => Dim::Param("batch"),
        Batch::Fixed(n) if n > 0 => Dim::Value(i64::from(n)),
        Batch::Fixed(_) => bail!("a fixed batch must be at least 1"),
    };
    let mut x = if opts.preprocess {
        g.inputs.push(value_info(
            "image",
            DataType::UINT8,
            &[batch, Dim::Value(h as i64), Dim::Value(w as i64), Dim::Value(3)],
        ));
        preprocess(&mut g, "image", card.channels)
    } else {
        g.inputs.push(value_info(
            "input",
            DataType::FLOAT,
            &[batch, Dim::Value(3), Dim::Value(h as i64), Dim::Value(w as i64)],
        ));
        "input".to_owned()
    };
    let mut convs = 0;
    for s in 1..=4 {
        if !weights.contains_key(&format!("conv{s}_1.weight")) {
            bail!("the weights have no conv{s}_1: not a SphereFace network's file");
        }
        x = g.conv_prelu(weights, &x, s, 1, 2)?;
        convs += 1;
        let mut k = 2;
        while weights.contains_key(&format!("conv{s}_{k}.weight")) {
            let y = g.conv_prelu(weights, &x, s, k, 1)?;
            let y = g.conv_prelu(weights, &y, s, k + 1, 1)?;
            x = g.node("Add", &[&x, &y], vec![]);
            convs += 2;
            k += 2;
        }
    }
    if convs != card.net.depth {
        bail!(
            "the weights hold {convs} convolutions but the model card says SphereFace-{}",
            card.net.depth
        );
    }
    let flat = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    let (fw, fb) = (
        g.initializer(weights, "fc5.weight", None)?,
        g.initializer(weights, "fc5.bias", None)?,
    );
    let features = match weights["fc5.weight"].0.as_slice() {
        [f, _] => *f,
        other => bail!("`fc5.weight` has shape {other:?}, expected [features, inputs]"),
    };
    if features != card.net.features {
        bail!("fc5 gives {features} features but the model card says {}", card.net.features);
    }
    g.nodes
        .push(node("Gemm", &[&flat, &fw, &fb], "embedding", vec![attr_int("transB", 1)]));
    g.outputs
        .push(value_info("embedding", DataType::FLOAT, &[batch, Dim::Value(features as i64)]));
    model(g, card.net.depth, meta, opts.opset)
}

/// uint8 NHWC RGB → float NCHW in the card's channel order, `(x − 127.5) / 128`.
fn preprocess(g: &mut Graph, input: &str, channels: Channels) -> String {
    let f = g.node("Cast", &[input], vec![attr_int("to", DataType::FLOAT as i64)]);
    let nchw = g.node("Transpose", &[&f], vec![attr_ints("perm", &[0, 3, 1, 2])]);
    let ordered = match channels {
        Channels::Bgr => {
            let order = g.constant_i64("bgr_order", &[2, 1, 0]);
            g.node("Gather", &[&nchw, &order], vec![attr_int("axis", 1)])
        }
        Channels::Rgb => nchw,
    };
    let mean = g.constant_f32("mean", 127.5);
    let scale = g.constant_f32("scale", 128.0);
    let centred = g.node("Sub", &[&ordered, &mean], vec![]);
    g.node("Div", &[&centred, &scale], vec![])
}

/// A graph under construction: nodes in order, initializers, inputs and outputs.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    count: usize,
}

impl Graph {
    /// Adds `op` on `inputs` with a fresh output name; returns the name.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.count += 1;
        let out = format!("{}_{}", op.to_ascii_lowercase(), self.count);
        self.nodes.push(node(op, inputs, &out, attrs));
        out
    }

    /// `name` of the weights as an initializer (reshaped to `shape` when given).
    fn initializer(&mut self, weights: &Weights, name: &str, shape: Option<Vec<usize>>) -> Result<String> {
        let (dims, values) = weights.get(name).with_context(|| format!("the weights have no `{name}`"))?;
        let dims = shape.unwrap_or_else(|| dims.clone());
        if dims.iter().product::<usize>() != values.len() {
            bail!("`{name}`: {} values for shape {dims:?}", values.len());
        }
        self.initializers.push(float_tensor(name, &dims, values));
        Ok(name.to_owned())
    }

    /// Conv `conv{s}_{k}` (3×3, padding 1, `stride`) then its PReLU `relu{s}_{k}`.
    fn conv_prelu(&mut self, weights: &Weights, x: &str, s: usize, k: usize, stride: i64) -> Result<String> {
        let w = self.initializer(weights, &format!("conv{s}_{k}.weight"), None)?;
        let b = self.initializer(weights, &format!("conv{s}_{k}.bias"), None)?;
        let channels = match weights[&w].0.as_slice() {
            [c, _, 3, 3] => *c,
            other => bail!("`{w}` has shape {other:?}, expected [out, in, 3, 3]"),
        };
        // The slope broadcast over NCHW: [C, 1, 1].
        let slope = self.initializer(weights, &format!("relu{s}_{k}.weight"), Some(vec![channels, 1, 1]))?;
        let y = self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        );
        Ok(self.node("PRelu", &[&y, &slope], vec![]))
    }

    fn constant_f32(&mut self, name: &str, v: f32) -> String {
        self.initializers.push(float_tensor(name, &[], &[v]));
        name.to_owned()
    }

    fn constant_i64(&mut self, name: &str, v: &[i64]) -> String {
        let mut t = TensorProto::new();
        t.name = name.to_owned();
        t.dims = vec![v.len() as i64];
        t.data_type = DataType::INT64 as i32;
        t.int64_data = v.to_vec();
        self.initializers.push(t);
        name.to_owned()
    }
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_owned();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_owned();
    n.name = output.to_owned();
    n.input = inputs.iter().map(|s| (*s).to_owned()).collect();
    n.output = vec![output.to_owned()];
    n.attribute = attrs;
    n
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_owned();
    a.type_ = EnumOrUnknown::new(AttributeType::INT);
    a.i = v;
    a
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_owned();
    a.type_ = EnumOrUnknown::new(AttributeType::INTS);
    a.ints = v.to_vec();
    a
}

/// One dimension of a value's shape.
#[derive(Debug, Clone, Copy)]
enum Dim {
    Value(i64),
    Param(&'static str),
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|d| {
            let mut dim = Dimension::new();
            dim.value = Some(match *d {
                Dim::Value(v) => DimValue::DimValue(v),
                Dim::Param(p) => DimValue::DimParam(p.to_owned()),
            });
            dim
        })
        .collect();
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = elem as i32;
    tensor.shape = MessageField::some(shape);
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut v = ValueInfoProto::new();
    v.name = name.to_owned();
    v.type_ = MessageField::some(ty);
    v
}

fn model(g: Graph, depth: usize, meta: &[(String, String)], opset: i64) -> Result<ModelProto> {
    let mut graph = GraphProto::new();
    graph.name = format!("sphereface{depth}");
    graph.node = g.nodes;
    graph.initializer = g.initializers;
    graph.input = g.inputs;
    graph.output = g.outputs;
    let mut m = ModelProto::new();
    m.ir_version = ir_version(opset)?;
    m.producer_name = "spherepipe".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.doc_string = "SphereFace feature network (Liu et al., CVPR 2017), input to FC1".into();
    let mut op = OperatorSetIdProto::new();
    op.domain = String::new();
    op.version = opset;
    m.opset_import = vec![op];
    m.metadata_props = meta
        .iter()
        .map(|(k, v)| {
            let mut e = StringStringEntryProto::new();
            e.key = k.clone();
            e.value = v.clone();
            e
        })
        .collect();
    m.graph = MessageField::some(graph);
    Ok(m)
}

/// Writes `model` to `path`; when its weights pass `external_over` bytes they go to
/// `<file name>.data` beside it as ONNX external data (each tensor's offset and length in
/// the model). Returns the files written.
pub fn write(mut model: ModelProto, path: &Path, external_over: u64) -> Result<Vec<PathBuf>> {
    let total: u64 = model.graph.initializer.iter().map(|t| t.raw_data.len() as u64).sum();
    let mut files = vec![path.to_path_buf()];
    if total > external_over {
        let name = format!(
            "{}.data",
            path.file_name()
                .and_then(|n| n.to_str())
                .context("the model's file name is not UTF-8")?
        );
        let data_path = path.with_file_name(&name);
        let mut data = Vec::with_capacity(total as usize);
        for t in model.graph.as_mut().context("no graph")?.initializer.iter_mut() {
            if t.raw_data.is_empty() {
                continue;
            }
            let offset = data.len();
            data.extend_from_slice(&t.raw_data);
            t.raw_data.clear();
            t.data_location = EnumOrUnknown::new(DataLocation::EXTERNAL);
            t.external_data = [
                ("location", name.clone()),
                ("offset", offset.to_string()),
                ("length", (data.len() - offset).to_string()),
            ]
            .into_iter()
            .map(|(k, v)| {
                let mut e = StringStringEntryProto::new();
                e.key = k.into();
                e.value = v;
                e
            })
            .collect();
        }
        std::fs::write(&data_path, data).with_context(|| format!("writing {}", data_path.display()))?;
        files.push(data_path);
    }
    let bytes = model.write_to_bytes().context("encoding the ONNX model")?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(files)
}

/// Reads a model written by [`write`] (tests, and `spherepipe export`'s summary).
pub fn read(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ModelProto::parse_from_bytes(&bytes).with_context(|| format!("{} is not an ONNX model", path.display()))
}

/// The graph's node types in order (tests and summaries).
pub fn op_types(model: &ModelProto) -> Vec<String> {
    model.graph.node.iter().map(|n| n.op_type.clone()).collect()
}

#[cfg(test)]
mod tests;
