use super::*;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::TensorData;

/// Three parameters: one longer than a chunk and not a multiple of any vector width, so the
/// chunks and the vector tails both run; one matrix; a few slopes.
#[derive(Module, Debug)]
struct Toy {
    long: Param<Tensor<1>>,
    matrix: Param<Tensor<2>>,
    slopes: Param<Tensor<1>>,
}

const LONG: usize = 2 * CHUNK + 1_001;
const MOMENTUM: f64 = 0.9;
const DECAY: f32 = 5e-4;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = spherepipe_rng::Rng::derive(seed, &[n as u64]);
    (0..n).map(|_| rng.range(-1.0, 1.0) as f32).collect()
}

fn toy(device: &Device) -> Toy {
    let data = TensorData::new;
    Toy {
        long: Param::from_tensor(Tensor::from_data(data(values(LONG, 1), vec![LONG]), device)),
        matrix: Param::from_tensor(Tensor::from_data(data(values(12 * 7, 2), vec![12, 7]), device)),
        slopes: Param::from_tensor(Tensor::from_data(data(vec![0.25; 5], vec![5]), device)),
    }
}

/// The gradients of Σ c · w² over every parameter, c drawn for `step`: a gradient that moves
/// with the weights, as a real loss's does.
fn grads(model: &Toy, step: u64) -> GradientsParams {
    let term = |w: Tensor<1>, seed: u64| {
        let n = w.dims()[0];
        let c = Tensor::<1>::from_data(TensorData::new(values(n, seed), vec![n]), &w.device());
        (w.clone() * w * c).sum()
    };
    let loss =
        term(model.long.val(), 10 + step) + term(model.matrix.val().reshape([12 * 7]), 20 + step) + term(model.slopes.val(), 30 + step);
    GradientsParams::from_grads(loss.backward(), model)
}

fn burns() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: MOMENTUM,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig { penalty: DECAY }))
        .init()
}

fn ours() -> ModuleOptimizer {
    ModuleOptimizer::from(Sgd {
        momentum: MOMENTUM as f32,
        decay: DECAY,
    })
}

/// Every parameter's values, as bits.
fn bits(model: &Toy) -> Vec<u32> {
    struct Bits(Vec<u32>);
    impl ModuleVisitor for Bits {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            self.0
                .extend(data.as_slice::<f32>().expect("f32 weights").iter().map(|v| v.to_bits()));
        }
    }
    let mut b = Bits(Vec::new());
    model.visit(&mut b);
    b.0
}

/// `steps` steps of `optim` from `from`, the learning rate changing on the way.
fn run(optim: &mut ModuleOptimizer, mut model: Toy, from: u64, steps: u64) -> Toy {
    for step in from..from + steps {
        let g = grads(&model, step);
        let lr = if step < 2 { 0.1 } else { 0.01 };
        model = optim.step(lr, model, g);
    }
    model
}

#[test]
fn the_fused_step_gives_the_bits_of_burns_sgd() {
    let device = Device::flex().autodiff();
    let theirs = run(&mut burns(), toy(&device), 0, 4);
    let mine = run(&mut ours(), toy(&device), 0, 4);
    let start = bits(&toy(&device));
    assert_ne!(bits(&theirs), start, "the steps moved nothing");
    assert_eq!(bits(&mine), bits(&theirs));
}

#[test]
fn two_steps_give_the_hand_computed_values() {
    // One weight, w = 1.5, loss c · w² with c = 2 then −1 (gradient 2cw), lr 0.1:
    //   step 1: g = 6, v = 1.5 · 5e-4 + 6 = 6.00075, w = 1.5 − 0.600075 = 0.899925;
    //   step 2: g = −1.79985, v = (0.899925 · 5e-4 − 1.79985) + 0.9 · 6.00075 = 3.6012749625,
    //           w = 0.899925 − 0.36012749625 = 0.53979750375.
    let device = Device::flex().autodiff();
    let w = |v: f32| Param::from_tensor(Tensor::<1>::from_data(TensorData::new(vec![v], vec![1]), &device));
    let mut model = Toy {
        long: w(1.5),
        matrix: Param::from_tensor(Tensor::<2>::from_data(TensorData::new(vec![0f32; 0], vec![0, 1]), &device)),
        slopes: w(0.0),
    };
    let mut optim = ours();
    for c in [2.0f32, -1.0] {
        let x = model.long.val();
        let loss = (x.clone() * x * c).sum();
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.1, model, g);
    }
    let (lr, mom, decay) = (0.1f64, 0.9f64, 5e-4f64);
    let v1 = 1.5 * decay + 2.0 * 2.0 * 1.5;
    let w1 = 1.5 - lr * v1;
    let v2 = (w1 * decay - 2.0 * w1) + mom * v1;
    let w2 = w1 - lr * v2;
    assert!((w1 - 0.899925).abs() < 1e-12 && (w2 - 0.539_797_503_75).abs() < 1e-12, "{w1} {w2}");
    let got = model.long.val().into_data().as_slice::<f32>().expect("f32")[0] as f64;
    assert!((got - w2).abs() < 1e-6, "w after two steps: {got}, by hand {w2}");
}

#[test]
fn a_checkpoint_of_burns_sgd_resumes_in_ours_and_back() {
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let straight = bits(&run(&mut burns(), toy(&device), 0, 5));

    let mut theirs = burns();
    let model = run(&mut theirs, toy(&device), 0, 2);
    theirs.save(dir.path().join("burn.bpk")).expect("burn's state saved");
    let mut mine = ours().load(dir.path().join("burn.bpk")).expect("burn's state loaded into ours");
    let model = run(&mut mine, model, 2, 2);
    mine.save(dir.path().join("ours.bpk")).expect("our state saved");
    let mut theirs = burns().load(dir.path().join("ours.bpk")).expect("our state loaded into burn's");
    let model = run(&mut theirs, model, 4, 1);
    assert_eq!(bits(&model), straight, "the velocity did not travel");
}

#[test]
fn a_parameter_whose_buffer_is_shared_is_copied_not_written_through() {
    let device = Device::flex().autodiff();
    let model = toy(&device);
    let kept = model.clone();
    let before = bits(&kept);
    let moved = run(&mut ours(), model, 0, 2);
    assert_eq!(bits(&kept), before, "a step wrote into another tensor's buffer");
    assert_ne!(bits(&moved), before);
}
