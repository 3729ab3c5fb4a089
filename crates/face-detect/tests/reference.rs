//! The detector against facenet-pytorch's own MTCNN (`fixtures/make_reference.py`, run once
//! with PyTorch; its output committed): the three networks' raw outputs on fixed inputs, then
//! whole detections on real photographs.
//!
//! The weights are facenet-pytorch's `pnet.pt`, `rnet.pt`, `onet.pt`, found through
//! `SPHEREPIPE_MTCNN_WEIGHTS` (a directory; CI downloads the wheel with pip and unpacks them).
//! Without it the tests print why and pass, unless `SPHEREPIPE_REQUIRE_MTCNN=1` (CI).

use spherepipe_face_detect::{detect, DetectParams, Face};
use spherepipe_nn::mtcnn::MtcnnNets;
use spherepipe_nn::Device;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The published weights, or `None` (with the reason printed) where they are not installed.
fn nets() -> Option<MtcnnNets> {
    match std::env::var_os("SPHEREPIPE_MTCNN_WEIGHTS") {
        Some(dir) => Some(MtcnnNets::load(Path::new(&dir), &Device::flex()).expect("the weights load")),
        None => {
            assert!(
                std::env::var("SPHEREPIPE_REQUIRE_MTCNN").as_deref() != Ok("1"),
                "SPHEREPIPE_REQUIRE_MTCNN=1 but SPHEREPIPE_MTCNN_WEIGHTS is not set"
            );
            eprintln!("skipped: set SPHEREPIPE_MTCNN_WEIGHTS to a directory with facenet-pytorch's pnet.pt, rnet.pt, onet.pt");
            None
        }
    }
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).expect("fixture")).expect("json")
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// x[i] = 0.9 sin(0.37 i), as the fixture script makes its inputs.
fn fixed(n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.9 * (0.37 * i as f64).sin()) as f32).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: spherepipe {g}, PyTorch {w}");
    }
}

#[test]
fn the_three_networks_give_pytorchs_outputs() {
    let Some(nets) = nets() else { return };
    let want = json("nets.json");
    let p = nets.pnet(fixed(3 * 20 * 17), 20, 17).expect("pnet");
    assert_eq!(
        [p.height, p.width],
        [
            want["pnet"]["prob_shape"][1].as_u64().unwrap() as usize,
            want["pnet"]["prob_shape"][2].as_u64().unwrap() as usize
        ]
    );
    assert_close("pnet prob", &p.prob, &floats(&want["pnet"]["prob"]), 1e-4);
    assert_close("pnet reg", &p.reg, &floats(&want["pnet"]["reg"]), 1e-4);
    let r = nets.rnet(fixed(2 * 3 * 24 * 24), 2).expect("rnet");
    assert_close("rnet prob", &r.prob, &floats(&want["rnet"]["prob"]), 1e-4);
    assert_close("rnet reg", &r.reg, &floats(&want["rnet"]["reg"]), 1e-4);
    let o = nets.onet(fixed(2 * 3 * 48 * 48), 2).expect("onet");
    assert_close("onet prob", &o.prob, &floats(&want["onet"]["prob"]), 1e-4);
    assert_close("onet reg", &o.reg, &floats(&want["onet"]["reg"]), 1e-4);
    assert_close("onet points", &o.points, &floats(&want["onet"]["points"]), 1e-4);
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    iw * ih / (area(a) + area(b) - iw * ih)
}

fn detect_file(nets: &MtcnnNets, name: &str) -> Vec<Face> {
    let img = image::open(fixtures().join("photos").join(name)).expect("photo").to_rgb8();
    let (w, h) = img.dimensions();
    detect(nets, img.as_raw(), w as usize, h as usize, &DetectParams::default()).expect("detect")
}

#[test]
fn photographs_give_facenet_pytorchs_faces() {
    let Some(nets) = nets() else { return };
    let want = json("detections.json");
    let mut total = 0;
    let (mut worst_iou, mut worst_point) = (1f32, 0f32);
    for (name, faces) in want.as_object().expect("object") {
        let got = detect_file(&nets, name);
        let faces = faces.as_array().expect("array");
        assert_eq!(got.len(), faces.len(), "{name}: spherepipe finds {got:?}");
        for f in faces {
            let b = floats(&f["box"]);
            let b = [b[0], b[1], b[2], b[3]];
            let best = got
                .iter()
                .max_by(|x, y| iou(&x.bbox, &b).total_cmp(&iou(&y.bbox, &b)))
                .expect("a face");
            worst_iou = worst_iou.min(iou(&best.bbox, &b));
            assert!(iou(&best.bbox, &b) >= 0.9, "{name}: box {:?} vs PyTorch's {b:?}", best.bbox);
            assert!(
                (best.score - f["prob"].as_f64().unwrap() as f32).abs() < 0.01,
                "{name}: score {}",
                best.score
            );
            for (k, pt) in f["points"].as_array().unwrap().iter().enumerate() {
                let pt = floats(pt);
                let d = ((best.points[k][0] - pt[0]).powi(2) + (best.points[k][1] - pt[1]).powi(2)).sqrt();
                worst_point = worst_point.max(d);
                assert!(
                    d <= 2.0,
                    "{name}: point {k} at {:?}, PyTorch's at {pt:?} ({d:.2} px apart)",
                    best.points[k]
                );
            }
            total += 1;
        }
    }
    assert_eq!(total, 4, "the fixture's faces: astronaut, cameraman, and the pair");
    eprintln!("against facenet-pytorch: lowest IoU {worst_iou:.4}, farthest point {worst_point:.3} px");
}

#[test]
fn the_same_faces_on_one_thread_and_on_two() {
    let Some(nets) = nets() else { return };
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| detect_file(&nets, "pair.png"))
    };
    let (one, two) = (on(1), on(2));
    assert_eq!(one.len(), 2);
    // Bit for bit: every box, score and point.
    let bits = |faces: &[Face]| -> Vec<u32> {
        faces
            .iter()
            .flat_map(|f| {
                f.bbox
                    .iter()
                    .chain([&f.score])
                    .chain(f.points.iter().flatten())
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(bits(&one), bits(&two));
}

#[test]
fn damaged_or_wrong_weights_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Not a PyTorch file at all.
    std::fs::write(dir.path().join("pnet.pt"), b"\x80\x02garbage that is no pickle").unwrap();
    let err = MtcnnNets::load(dir.path(), &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("pnet.pt") && err.contains("not a PyTorch weights file"), "{err}");
    // A missing file says where the weights come from.
    std::fs::remove_file(dir.path().join("pnet.pt")).unwrap();
    let err = MtcnnNets::load(dir.path(), &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("pnet.pt does not exist") && err.contains("facenet-pytorch"), "{err}");
    let Some(weights) = std::env::var_os("SPHEREPIPE_MTCNN_WEIGHTS") else {
        return;
    };
    // R-Net's file where P-Net's should be: the first tensor of the wrong shape is named.
    std::fs::copy(Path::new(&weights).join("rnet.pt"), dir.path().join("pnet.pt")).unwrap();
    let err = MtcnnNets::load(dir.path(), &Device::flex()).unwrap_err().to_string();
    assert!(
        err.contains("pnet.pt") && err.contains("conv1.weight") && err.contains("[28, 3, 3, 3]"),
        "{err}"
    );
    // A file cut short.
    let onet = std::fs::read(Path::new(&weights).join("onet.pt")).unwrap();
    std::fs::copy(Path::new(&weights).join("pnet.pt"), dir.path().join("pnet.pt")).unwrap();
    std::fs::copy(Path::new(&weights).join("rnet.pt"), dir.path().join("rnet.pt")).unwrap();
    std::fs::write(dir.path().join("onet.pt"), &onet[..onet.len() / 2]).unwrap();
    let err = MtcnnNets::load(dir.path(), &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("onet.pt"), "{err}");
}
