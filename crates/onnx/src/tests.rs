//! The graph's structure, shapes and metadata for hand-made weights; numbers are checked
//! against onnxruntime in the workspace tests (tests/export.rs).

use super::*;
use spherepipe_model_card::SphereConfig;
use std::collections::BTreeMap;

/// A SphereFace-10 (units 0, 1, 2, 0) of 2/4/4/8 channels on a 16 × 12 input, 5 features.
fn card(depth: usize) -> ModelCard {
    ModelCard {
        net: SphereConfig {
            depth,
            width: 1.0 / 32.0,
            features: 5,
            input: [16, 12],
        },
        patch: serde_json::Value::Null,
        channels: Channels::Bgr,
        softmax_head: false,
        classes: 3,
        loss: "a-softmax".into(),
        params: BTreeMap::new(),
        steps: 1,
        final_loss: None,
        final_accuracy: None,
    }
}

fn weights(units: [usize; 4]) -> Weights {
    let ch = [2, 4, 8, 16];
    let mut w = Weights::new();
    let mut cin = 3;
    let conv = |w: &mut Weights, s: usize, k: usize, cin: usize, cout: usize| {
        w.insert(format!("conv{s}_{k}.weight"), (vec![cout, cin, 3, 3], vec![0.01; cout * cin * 9]));
        w.insert(format!("conv{s}_{k}.bias"), (vec![cout], vec![0.0; cout]));
        w.insert(format!("relu{s}_{k}.weight"), (vec![cout], vec![0.25; cout]));
    };
    for s in 0..4 {
        conv(&mut w, s + 1, 1, cin, ch[s]);
        for u in 0..units[s] {
            conv(&mut w, s + 1, 2 * u + 2, ch[s], ch[s]);
            conv(&mut w, s + 1, 2 * u + 3, ch[s], ch[s]);
        }
        cin = ch[s];
    }
    // 16 × 12 halved four times: 1 × 1.
    w.insert("fc5.weight".into(), (vec![5, 16], vec![0.1; 80]));
    w.insert("fc5.bias".into(), (vec![5], vec![0.0; 5]));
    w.insert("fc6.weight".into(), (vec![5, 3], vec![0.0; 15]));
    w
}

fn shape_of(v: &ValueInfoProto) -> Vec<String> {
    match &v.type_.value {
        Some(type_proto::Value::TensorType(t)) => t
            .shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(DimValue::DimValue(n)) => n.to_string(),
                Some(DimValue::DimParam(p)) => p.clone(),
                None => "?".into(),
            })
            .collect(),
        _ => vec![],
    }
}

#[test]
fn a_sphereface10_graph_has_its_layers_in_order() {
    let m = build(
        &card(10),
        &weights([0, 1, 2, 0]),
        &[("net".into(), "sphere10".into())],
        &ExportOptions::default(),
    )
    .unwrap();
    // 10 convolutions with PReLU, 3 residual additions, flatten, Gemm.
    let ops = op_types(&m);
    assert_eq!(ops.iter().filter(|o| *o == "Conv").count(), 10);
    assert_eq!(ops.iter().filter(|o| *o == "PRelu").count(), 10);
    assert_eq!(ops.iter().filter(|o| *o == "Add").count(), 3);
    assert_eq!(&ops[ops.len() - 2..], ["Flatten", "Gemm"]);
    // Stage 2: stride 2, then the unit's two stride-1 convolutions and the addition.
    assert_eq!(&ops[2..9], ["Conv", "PRelu", "Conv", "PRelu", "Conv", "PRelu", "Add"]);
    let strides: Vec<i64> = m
        .graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| n.attribute.iter().find(|a| a.name == "strides").unwrap().ints[0])
        .collect();
    assert_eq!(strides, [2, 2, 1, 1, 2, 1, 1, 1, 1, 2]);
    assert_eq!(shape_of(&m.graph.input[0]), ["batch", "3", "16", "12"]);
    assert_eq!(shape_of(&m.graph.output[0]), ["batch", "5"]);
    // PReLU slopes broadcast as [C, 1, 1]; the classifier is not in the graph.
    let slope = m.graph.initializer.iter().find(|t| t.name == "relu2_1.weight").unwrap();
    assert_eq!(slope.dims, [4, 1, 1]);
    assert!(m.graph.initializer.iter().all(|t| t.name != "fc6.weight"));
    assert_eq!((m.ir_version, m.opset_import[0].version), (8, 17));
    assert_eq!(m.metadata_props[0].key, "net");
}

#[test]
fn preprocessing_takes_uint8_pixels_and_fixed_batches_are_fixed() {
    let opts = ExportOptions {
        preprocess: true,
        batch: Batch::Fixed(4),
        ..Default::default()
    };
    let m = build(&card(4), &weights([0; 4]), &[], &opts).unwrap();
    assert_eq!(shape_of(&m.graph.input[0]), ["4", "16", "12", "3"]);
    assert_eq!(&op_types(&m)[..5], ["Cast", "Transpose", "Gather", "Sub", "Div"]);
    // RGB models skip the channel swap.
    let rgb = ModelCard {
        channels: Channels::Rgb,
        ..card(4)
    };
    assert_eq!(
        &op_types(&build(&rgb, &weights([0; 4]), &[], &opts).unwrap())[..4],
        ["Cast", "Transpose", "Sub", "Div"]
    );
}

#[test]
fn weights_that_do_not_match_the_card_are_refused() {
    let err = build(&card(20), &weights([0, 1, 2, 0]), &[], &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("10 convolutions") && err.contains("SphereFace-20"), "{err}");
    let mut w = weights([0; 4]);
    w.remove("conv3_1.weight");
    assert!(build(&card(4), &w, &[], &ExportOptions::default())
        .unwrap_err()
        .to_string()
        .contains("conv3_1"));
    let bad = ExportOptions {
        opset: 9,
        ..Default::default()
    };
    assert!(build(&card(4), &weights([0; 4]), &[], &bad)
        .unwrap_err()
        .to_string()
        .contains("opset 9"));
}

#[test]
fn large_weights_go_to_external_data_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let m = build(&card(4), &weights([0; 4]), &[], &ExportOptions::default()).unwrap();
    let inline = dir.path().join("inline.onnx");
    assert_eq!(write(m.clone(), &inline, 1 << 31).unwrap(), std::slice::from_ref(&inline));
    assert_eq!(read(&inline).unwrap(), m);
    // Over a 100-byte threshold: the weights move to model.onnx.data, offsets in the model.
    let path = dir.path().join("model.onnx");
    let files = write(m.clone(), &path, 100).unwrap();
    assert_eq!(files, [path.clone(), dir.path().join("model.onnx.data")]);
    let back = read(&path).unwrap();
    let data = std::fs::read(&files[1]).unwrap();
    for (orig, t) in m.graph.initializer.iter().zip(&back.graph.initializer) {
        if orig.raw_data.is_empty() {
            continue;
        }
        let field = |k: &str| t.external_data.iter().find(|e| e.key == k).unwrap().value.clone();
        assert_eq!(field("location"), "model.onnx.data");
        let (off, len): (usize, usize) = (field("offset").parse().unwrap(), field("length").parse().unwrap());
        assert_eq!(&data[off..off + len], &orig.raw_data[..], "{}", t.name);
    }
}

#[test]
fn burns_onnx_reader_reads_the_graph_back() {
    use onnx_ir::{Node, OnnxGraphBuilder};
    let dir = tempfile::tempdir().unwrap();
    for preprocess in [false, true] {
        let path = dir.path().join(format!("m{preprocess}.onnx"));
        let opts = ExportOptions {
            preprocess,
            ..Default::default()
        };
        write(build(&card(10), &weights([0, 1, 2, 0]), &[], &opts).unwrap(), &path, 1 << 31).unwrap();
        let g = OnnxGraphBuilder::new()
            .simplify(false)
            .parse_file(&path)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let count = |f: fn(&Node) -> bool| g.nodes.iter().filter(|n| f(n)).count();
        assert_eq!(count(|n| matches!(n, Node::Conv2d(_))), 10);
        assert_eq!(count(|n| matches!(n, Node::PRelu(_))), 10);
        assert_eq!(count(|n| matches!(n, Node::Add(_))), 3);
        assert_eq!(
            count(|n| matches!(n, Node::Gemm(_)) || matches!(n, Node::Linear(_))),
            1,
            "{:?}",
            g.nodes.iter().map(|n| n.name()).collect::<Vec<_>>()
        );
        let strides: Vec<usize> = g
            .nodes
            .iter()
            .filter_map(|n| if let Node::Conv2d(c) = n { Some(c.config.stride[0]) } else { None })
            .collect();
        assert_eq!(strides, [2, 2, 1, 1, 2, 1, 1, 1, 1, 2]);
        assert_eq!(g.outputs.len(), 1);
    }
}
