//! Weights files: the `sphere20a` names and shapes, PyTorch's numbers for the same weights,
//! and seeded initialisation, each checked against files read and written by hand here rather
//! than by burn.

use spherepipe_nn::burn::prelude::*;
use spherepipe_nn::margin::{Lambda, Loss};
use spherepipe_nn::sphere::SphereConfig;
use spherepipe_nn::train::{TrainConfig, Trainer};
use std::path::Path;

fn small(loss: Loss) -> TrainConfig {
    TrainConfig {
        net: SphereConfig {
            depth: 4,
            width: 0.125,
            features: 16,
            input: [24, 20],
        },
        classes: 4,
        loss,
        lambda: Lambda::default(),
        lr: 0.05,
        milestones: vec![1000],
        momentum: 0.9,
        weight_decay: 5e-4,
        slices: 1,
    }
}

/// A safetensors file written by hand (8-byte little-endian header length, JSON header,
/// little-endian f32 data), independent of burn's writer.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::Value::Object(header).to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

/// name -> (shape, values) of a safetensors file, read by hand.
fn read_safetensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| {
            assert_eq!(v["dtype"], "F32");
            let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
            let [a, b]: [usize; 2] = serde_json::from_value(v["data_offsets"].clone()).unwrap();
            let vals = data[a..b].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (k, (shape, vals))
        })
        .collect()
}

/// The tensors of PyTorch's `sphere20a` (full width, `classes` outputs), with PyTorch
/// shapes typed out from its layer list, each filled with its own recognisable values.
fn sphere20a_state_dict(classes: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let convs: [(&str, usize, usize); 20] = [
        ("conv1_1", 3, 64),
        ("conv1_2", 64, 64),
        ("conv1_3", 64, 64),
        ("conv2_1", 64, 128),
        ("conv2_2", 128, 128),
        ("conv2_3", 128, 128),
        ("conv2_4", 128, 128),
        ("conv2_5", 128, 128),
        ("conv3_1", 128, 256),
        ("conv3_2", 256, 256),
        ("conv3_3", 256, 256),
        ("conv3_4", 256, 256),
        ("conv3_5", 256, 256),
        ("conv3_6", 256, 256),
        ("conv3_7", 256, 256),
        ("conv3_8", 256, 256),
        ("conv3_9", 256, 256),
        ("conv4_1", 256, 512),
        ("conv4_2", 512, 512),
        ("conv4_3", 512, 512),
    ];
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    for (c, cin, cout) in convs {
        shapes.push((format!("{c}.weight"), vec![cout, cin, 3, 3]));
        shapes.push((format!("{c}.bias"), vec![cout]));
        shapes.push((format!("{}.weight", c.replace("conv", "relu")), vec![cout]));
    }
    shapes.push(("fc5.weight".into(), vec![512, 512 * 7 * 6]));
    shapes.push(("fc5.bias".into(), vec![512]));
    shapes.push(("fc6.weight".into(), vec![512, classes]));
    shapes
        .into_iter()
        .enumerate()
        .map(|(t, (name, shape))| {
            let n: usize = shape.iter().product();
            let vals = (0..n).map(|e| ((t * 7919 + e) % 2003) as f32 * 1e-4 - 0.1).collect();
            (name, shape, vals)
        })
        .collect()
}

fn values(p: &burn::module::Param<Tensor<1>>) -> Vec<f32> {
    p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn the_sphere20a_state_dict_loads_lands_in_place_and_saves_back_unchanged() {
    let classes = 10;
    let cfg = TrainConfig {
        net: SphereConfig::new(20),
        classes,
        ..small(Loss::ASoftmax { m: 4 })
    };
    let mut t = Trainer::new(cfg, &Device::flex(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sphere20a.safetensors");
    let sd = sphere20a_state_dict(classes);
    write_safetensors(&file, &sd);
    t.load_weights(&file).unwrap();
    let get = |n: &str| sd.iter().find(|x| x.0 == n).unwrap().2.clone();

    // Spot checks at known module positions: conv2_2 is stage 2's first unit's first conv,
    // relu3_9 stage 3's fourth unit's second PReLU.
    let m = t.model();
    let w = m.net.stages[1].units[0]
        .a
        .conv
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(w, get("conv2_2.weight"));
    assert_eq!(values(&m.net.stages[2].units[3].b.act.alpha), get("relu3_9.weight"));
    assert_eq!(values(m.net.stages[3].down.conv.bias.as_ref().unwrap()), get("conv4_1.bias"));
    // fc5 is [out, in] in PyTorch and [in, out] in burn.
    let fc5 = m.net.fc5.weight.val();
    assert_eq!(fc5.dims(), [21_504, 512]);
    let fc5 = fc5.into_data().try_to_vec::<f32>().unwrap();
    let file_fc5 = get("fc5.weight");
    for (o, i) in [(0, 0), (3, 17), (511, 21_503), (200, 9_999)] {
        assert_eq!(fc5[i * 512 + o], file_fc5[o * 21_504 + i], "fc5[{o}][{i}]");
    }

    // Saved back: the same names, shapes and values as the file read.
    let out = dir.path().join("saved.safetensors");
    t.save_weights(&out).unwrap();
    let saved = read_safetensors(&out);
    assert_eq!(saved.len(), sd.len());
    for (name, shape, vals) in &sd {
        let (s, v) = &saved[name];
        assert_eq!(s, shape, "{name}");
        assert!(v == vals, "{name} values differ");
    }

    // A missing tensor and a wrong shape are each named, the file's way round.
    let mut bad: Vec<_> = sd.into_iter().filter(|x| x.0 != "conv3_4.bias").collect();
    bad.retain(|x| x.0 != "fc5.weight");
    bad.push(("fc5.weight".into(), vec![512, 100], vec![0.0; 51_200]));
    write_safetensors(&file, &bad);
    let e = t.load_weights(&file).unwrap_err().to_string();
    assert!(e.contains("missing: conv3_4.bias"), "{e}");
    assert!(
        e.contains("wrong shape: fc5.weight is [512, 100] in the file, the network needs [512, 21504]"),
        "{e}"
    );
    assert!(e.contains("SphereFace-20"), "{e}");
}

#[test]
fn a_seed_gives_the_same_initial_weights_and_they_follow_the_prototxt() {
    let cfg = TrainConfig {
        net: SphereConfig {
            depth: 10,
            width: 0.25,
            features: 32,
            input: [112, 96],
        },
        classes: 7,
        ..small(Loss::Softmax)
    };
    let dir = tempfile::tempdir().unwrap();
    let save = |seed: u64, name: &str| {
        let p = dir.path().join(name);
        Trainer::new(cfg.clone(), &Device::flex(), seed).unwrap().save_weights(&p).unwrap();
        read_safetensors(&p)
    };
    // Built concurrently, as a matrix of trainings would be.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| save(3, "a"));
        let b = s.spawn(|| save(3, "b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a == b, "same seed, different weights");
    assert!(save(4, "c")["conv1_1.weight"].1 != a["conv1_1.weight"].1);

    let stats = |v: &[f32]| {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let sd = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let max = v.iter().fold(0f32, |m, &x| m.max(x.abs())) as f64;
        (mean, sd, max)
    };
    // conv2_1: 16 -> 32 channels; Xavier bound sqrt(6 / (16*9 + 32*9)), uniform sd bound/sqrt(3).
    let bound = (6.0f64 / (16.0 * 9.0 + 32.0 * 9.0)).sqrt();
    let (mean, sd, max) = stats(&a["conv2_1.weight"].1);
    assert!(max <= bound && max > 0.95 * bound, "max {max} bound {bound}");
    assert!(mean.abs() < 0.01 && (sd / (bound / 3f64.sqrt()) - 1.0).abs() < 0.05, "{mean} {sd}");
    // conv3_2 sits inside a residual unit: Gaussian(0, 0.01).
    let (mean, sd, _) = stats(&a["conv3_2.weight"].1);
    assert!(mean.abs() < 0.001 && (sd / 0.01 - 1.0).abs() < 0.05, "{mean} {sd}");
    assert!(a["relu2_1.weight"].1.iter().all(|&x| x == 0.25));
    assert!(a["conv1_1.bias"].1.iter().all(|&x| x == 0.0) && a["fc6.bias"].1.iter().all(|&x| x == 0.0));
}

/// PyTorch's FC1 for a SphereFace-10 (width 1/8, input 48x40) with random weights, from
/// `fixtures/make_torch_fixture.py`: loading its state dict and running the same input must
/// give the same features. This pins the names, fc5's transposition, the NCHW flatten order,
/// the residual wiring and the per-channel PReLU against an independent implementation.
#[test]
fn pytorch_weights_give_pytorchs_features() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cfg = TrainConfig {
        net: SphereConfig {
            depth: 10,
            width: 0.125,
            features: 16,
            input: [48, 40],
        },
        classes: 5,
        ..small(Loss::ASoftmax { m: 4 })
    };
    let mut t = Trainer::new(cfg, &Device::flex(), 1).unwrap();
    t.load_weights(&fixtures.join("sphere10_w8.safetensors")).unwrap();
    let io = read_safetensors(&fixtures.join("sphere10_w8_io.safetensors"));
    let (shape, input) = &io["input"];
    assert_eq!(shape, &vec![1, 3, 48, 40]);
    let got = t.features(input, 1, 48, 40).unwrap();
    let want = &io["fc5"].1;
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * scale, "feature {i}: spherepipe {g}, PyTorch {w}");
    }
}
